//! # hello-counter — "Hello World!" with a visit counter in wasi:keyvalue
//!
//! The step after the seed's hello in the tutorials it comes from (Flask +
//! Redis: "Hello World! I have been seen N times."), as a `wasi:http`
//! handler that keeps its count in `wasi:keyvalue` (world
//! `wasmlet:handler/keyvalue-handler`):
//!
//! - `GET /` answers exactly `Hello World!`, like `hello`;
//! - `GET /count` adds one to key `hits` with `atomics.increment` and
//!   answers `Hello World! I have been seen N times.`
//!
//! It opens the store named `""`: the one store `wasmtime serve -Skeyvalue`
//! has, and the route's `default` store under wasmlet, so the same
//! component runs on both. A store error is answered with 503 and the
//! interface's error, never a trap. It is a sibling of `hello`, not a new
//! route in it: a component that imports wasi:keyvalue cannot be
//! instantiated by a host that does not grant it (`wasmtime serve` without
//! `-Skeyvalue`), and `hello` must keep running everywhere with nothing
//! granted. Build: `cargo build -p hello-counter --target wasm32-wasip2
//! --release` (writes `target/wasm32-wasip2/release/hello_counter.wasm`).

wit_bindgen::generate!({
    world: "wasmlet:handler/keyvalue-handler",
    path: "../../wit",
    generate_all,
});

use exports::wasi::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasi::keyvalue::{atomics, store};

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// The store opened: `""` is `wasmtime serve -Skeyvalue`'s one store and
/// the route's `default` store under wasmlet.
const STORE: &str = "";

/// The key counted, as in the Flask + Redis tutorial (`redis.incr('hits')`).
const HITS: &str = "hits";

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
        (Method::Get, "/count") => count(),
        (_, "/count") => method_not_allowed("GET"),
        _ => not_found(),
    }
}

/// `GET /`: the page the seed's Flask app served.
fn hello() -> Response {
    text(200, "Hello World!")
}

/// `GET /count`: one more visit, counted atomically by the store.
fn count() -> Response {
    match hits() {
        Ok(n) => text(200, &format!("Hello World! I have been seen {n} times.")),
        Err(error) => text(503, &format!("key-value store error: {error:?}\n")),
    }
}

/// Adds one to the visit count and returns the new value.
fn hits() -> Result<u64, store::Error> {
    let bucket = store::open(STORE)?;
    atomics::increment(&bucket, HITS, 1)
}

/// Any path without a route.
fn not_found() -> Response {
    text(404, "Not Found\n")
}

/// A known path asked for with a method it does not support.
fn method_not_allowed(allow: &str) -> Response {
    text(405, "Method Not Allowed\n").header("allow", allow)
}

fn text(status: u16, body: &str) -> Response {
    Response::new(status)
        .header("content-type", TEXT_PLAIN)
        .body(body)
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
