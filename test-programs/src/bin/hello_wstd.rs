//! `hello_wstd`: `Hello World!` written with `wstd`, the async standard
//! library for components: `#[wstd::http_server]` exports the handler.

use wstd::http::body::Body;
use wstd::http::{Error, Request, Response};

#[wstd::http_server]
async fn main(_request: Request<Body>) -> Result<Response<Body>, Error> {
    let mut response = Response::new("Hello World!".to_owned().into());
    response.headers_mut().insert(
        "content-type",
        "text/plain; charset=utf-8".parse().expect("valid header"),
    );
    Ok(response)
}
