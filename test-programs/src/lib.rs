//! # Fixture guests for wasmlet's tests
//!
//! Each `src/bin/<name>.rs` is one behaviour (echo, trap, spin, …) and builds
//! to its own component, `target/wasm32-wasip2/release/<name>.wasm`; the
//! `test-programs-artifacts` crate builds them all and exports their paths.
//! A fixture implements [`Guest`] and calls `test_programs::export!` on it,
//! with `fn main() {}` beside it (a bin needs one; the host never calls it).
//!
//! This library holds what they share: the bindings for
//! `wasmlet:handler/fixtures` (the `handler` world of `guest/`, plus
//! `wasi:keyvalue` and `wasi:config` for the fixtures that use them; see
//! `wit/world.wit`) and helpers for requests and responses.

wit_bindgen::generate!({
    world: "wasmlet:handler/fixtures",
    path: "../wit",
    generate_all,
    pub_export_macro: true,
    default_bindings_module: "test_programs",
});

pub use exports::wasi::http::incoming_handler::Guest;
pub use wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, OutgoingBody, OutgoingResponse, OutputStream,
    ResponseOutparam,
};
use wasi::io::streams::{InputStream, StreamError};

/// The most `blocking-write-and-flush` accepts in one call (WASI's limit).
pub const MAX_BLOCKING_WRITE: usize = 4096;

/// How much to ask for per read of a body.
pub const READ_CHUNK: u64 = 64 * 1024;

/// The request's path, without its query string.
pub fn path(request: &IncomingRequest) -> String {
    let path_with_query = request.path_with_query().unwrap_or_default();
    match path_with_query.split_once('?') {
        Some((path, _)) => path.to_owned(),
        None => path_with_query,
    }
}

/// The value of query parameter `name`, `%XX`-decoded (`+` is left alone, so
/// a URL can be passed unencoded: `?url=http://127.0.0.1:8080/x`).
pub fn query_param(request: &IncomingRequest, name: &str) -> Option<String> {
    let path_with_query = request.path_with_query()?;
    let (_, query) = path_with_query.split_once('?')?;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| percent_decode(value))
    })
}

/// A numeric query parameter, or `default` when absent or not a number.
pub fn query_u64(request: &IncomingRequest, name: &str, default: u64) -> u64 {
    query_param(request, name)
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first value of request header `name`, if any.
pub fn header(request: &IncomingRequest, name: &str) -> Option<Vec<u8>> {
    request.headers().get(name).into_iter().next()
}

/// Sets a response with `status` and `headers` and returns its body and the
/// body's stream, for fixtures that stream. Drop the stream, then call
/// [`OutgoingBody::finish`].
pub fn start_response(
    response_out: ResponseOutparam,
    status: u16,
    headers: &[(&str, &[u8])],
) -> (OutgoingBody, OutputStream) {
    let fields = Fields::new();
    for (name, value) in headers {
        fields.append(name, value).expect("valid header");
    }
    let response = OutgoingResponse::new(fields);
    response.set_status_code(status).expect("valid status");
    let body = response.body().expect("body taken once");
    ResponseOutparam::set(response_out, Ok(response));
    let stream = body.write().expect("stream taken once");
    (body, stream)
}

/// Sends a complete response: `status`, a `text/plain` body.
pub fn respond(response_out: ResponseOutparam, status: u16, body: impl AsRef<[u8]>) {
    let headers: &[(&str, &[u8])] = &[("content-type", b"text/plain; charset=utf-8")];
    let (out_body, stream) = start_response(response_out, status, headers);
    write_all(&stream, body.as_ref());
    drop(stream);
    OutgoingBody::finish(out_body, None).expect("finish body");
}

/// Writes `bytes` with `blocking-write-and-flush`, in pieces it accepts.
pub fn write_all(stream: &OutputStream, bytes: &[u8]) {
    for piece in bytes.chunks(MAX_BLOCKING_WRITE) {
        stream.blocking_write_and_flush(piece).expect("write body");
    }
}

/// Writes `bytes` as fast as the host takes them: `check-write` for a
/// permit, `write` that much, wait on the stream when it has none to give.
/// Unlike [`write_all`] this takes chunks of any size; call
/// `blocking_flush` after the last one.
pub fn write_all_when_ready(stream: &OutputStream, mut bytes: &[u8]) {
    let ready = stream.subscribe();
    while !bytes.is_empty() {
        let permit = stream.check_write().expect("check write");
        if permit == 0 {
            ready.block();
            continue;
        }
        let (now, rest) = bytes.split_at(bytes.len().min(permit as usize));
        stream.write(now).expect("write body");
        bytes = rest;
    }
}

/// Reads an incoming body chunk by chunk, calling `each` on every chunk,
/// without ever holding more than one chunk.
pub fn for_each_chunk(body: IncomingBody, mut each: impl FnMut(&[u8])) {
    let stream = body.stream().expect("stream taken once");
    while let Some(chunk) = read_chunk(&stream) {
        each(&chunk);
    }
    // The stream must go before its body.
    drop(stream);
    drop(body);
}

/// One chunk of a stream, `None` at its end.
fn read_chunk(stream: &InputStream) -> Option<Vec<u8>> {
    match stream.blocking_read(READ_CHUNK) {
        Ok(chunk) => Some(chunk),
        Err(StreamError::Closed) => None,
        Err(StreamError::LastOperationFailed(error)) => {
            panic!("reading body failed: {}", error.to_debug_string())
        }
    }
}

/// Aborts the instance with a wasm `unreachable` trap (on a native build,
/// where fixtures only need to compile, a process abort).
pub fn trap() -> ! {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn percent_decode_decodes_escapes_only() {
        assert_eq!(percent_decode("a%20b+c"), "a b+c");
        assert_eq!(
            percent_decode("http%3A%2F%2F127.0.0.1%3A80%2Fx%3Fa%3D1"),
            "http://127.0.0.1:80/x?a=1"
        );
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
