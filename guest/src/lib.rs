//! # hello — the seed's Flask "Hello World!" app as a WebAssembly component
//!
//! A `wasi:http/proxy` handler: the host (`wasmlet serve`, or the reference
//! `wasmtime serve -Scli`) calls `Handler::handle` once per request, each
//! time in a fresh instance, so there is no state to share between requests.
//!
//! `wasmlet new NAME` starts a handler from this file: add a `(method, path)`
//! arm to `route`, write a small function for it, and build with
//! `cargo build --target wasm32-wasip2 --release` in its folder, which writes
//! the component to `target/wasm32-wasip2/release/` (here, in wasmlet's
//! repository: `-p hello`, and `hello.wasm`).

wit_bindgen::generate!({
    world: "wasmlet:handler/handler",
    path: "../wit",
    generate_all,
});

use exports::wasi::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

struct Handler;

/// `export!` (generated above) makes `Handler` the component's
/// `wasi:http/incoming-handler`. Its glue is `unsafe` FFI that the workspace's
/// `unsafe_code = "deny"` would reject, so it is allowed in this module only.
#[allow(unsafe_code)]
mod glue {
    use super::Handler;
    crate::export!(Handler with_types_in crate);
}

impl Guest for Handler {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let method = request.method();
        let path_with_query = request.path_with_query().unwrap_or_default();
        // Route on the path only: `/?name=x` is still `/`.
        let path = path_with_query.split('?').next().unwrap_or("/");
        route(&method, path).send(response_out, !matches!(method, Method::Head));
    }
}

/// The router: one arm per page, each dispatching to a small function.
fn route(method: &Method, path: &str) -> Response {
    match (method, path) {
        (Method::Get | Method::Head, "/") => hello(),
        (_, "/") => method_not_allowed("GET, HEAD"),
        _ => not_found(),
    }
}

/// `GET /`: the page the seed's Flask app served.
fn hello() -> Response {
    Response::new(200)
        .header("content-type", TEXT_PLAIN)
        .body("Hello World!")
}

/// Any path without a route.
fn not_found() -> Response {
    Response::new(404)
        .header("content-type", TEXT_PLAIN)
        .body("Not Found\n")
}

/// A known path asked for with a method it does not support.
fn method_not_allowed(allow: &str) -> Response {
    Response::new(405)
        .header("allow", allow)
        .header("content-type", TEXT_PLAIN)
        .body("Method Not Allowed\n")
}

/// A response built in memory, then sent in one go.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Hands the response to the host. `with_body` is false for `HEAD`: same
    /// status and headers, no body (and so no `content-length` to honour).
    fn send(self, response_out: ResponseOutparam, with_body: bool) {
        let headers = Fields::new();
        for (name, value) in &self.headers {
            headers
                .append(name, value.as_bytes())
                .expect("valid header");
        }
        if with_body {
            // Like Flask, declare the length: the client needs no chunked
            // framing, and the host checks the body against it.
            headers
                .append("content-length", self.body.len().to_string().as_bytes())
                .expect("valid header");
        }
        let response = OutgoingResponse::new(headers);
        response.set_status_code(self.status).expect("valid status");
        let body = response.body().expect("body taken once");
        ResponseOutparam::set(response_out, Ok(response));

        if with_body {
            let stream = body.write().expect("stream taken once");
            // `blocking_write_and_flush` accepts at most 4096 bytes per call.
            for chunk in self.body.chunks(4096) {
                stream.blocking_write_and_flush(chunk).expect("write body");
            }
            // The stream must be dropped before its body is finished.
            drop(stream);
        }
        OutgoingBody::finish(body, None).expect("finish body");
    }
}
