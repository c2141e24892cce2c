//! A native hyper 1 + tokio hello world, the reference `bench/run.sh` compares
//! wasmlet against: `native-hello 127.0.0.1:5003`: GET / → 200 "Hello World!", other paths 404
//! (like the hello guest).

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;

async fn hello(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut res = Response::new(Full::new(Bytes::from_static(b"Hello World!")));
    if req.uri().path() == "/" {
        let ct = HeaderValue::from_static("text/plain; charset=utf-8");
        res.headers_mut().insert(CONTENT_TYPE, ct);
    } else {
        *res.status_mut() = StatusCode::NOT_FOUND;
        *res.body_mut() = Full::new(Bytes::new());
    }
    Ok(res)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).expect("usage: native-hello ADDR");
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("native-hello listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let io = TokioIo::new(stream);
            let _ = http1::Builder::new()
                .serve_connection(io, service_fn(hello))
                .await;
        });
    }
}
