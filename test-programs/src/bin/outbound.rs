//! `outbound`: `GET`s the URL in `?url=http://HOST:PORT/path` through
//! `wasi:http/outgoing-handler` and answers `upstream <status>: <body>`, or
//! 502 `outbound error: <error-code>` when the request fails (for example
//! because the host does not allow that destination). With
//! `&traceparent=VALUE` it sends that `traceparent` header itself, as a
//! guest that propagates its own trace would.

use test_programs::wasi::http::outgoing_handler;
use test_programs::wasi::http::types::{
    ErrorCode, FutureIncomingResponse, IncomingResponse, Method, OutgoingRequest, Scheme,
};
use test_programs::{Fields, Guest, IncomingRequest, ResponseOutparam};

struct Outbound;

test_programs::export!(Outbound);

impl Guest for Outbound {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let Some(url) = test_programs::query_param(&request, "url") else {
            return test_programs::respond(response_out, 400, "missing ?url=\n");
        };
        let Some((scheme, authority, path)) = split_url(&url) else {
            return test_programs::respond(response_out, 400, format!("bad url: {url}\n"));
        };
        let traceparent = test_programs::query_param(&request, "traceparent");
        match get(scheme, authority, path, traceparent) {
            Ok(upstream) => {
                let status = upstream.status();
                let mut body = Vec::new();
                let upstream_body = upstream.consume().expect("body consumed once");
                test_programs::for_each_chunk(upstream_body, |chunk| body.extend_from_slice(chunk));
                let body = String::from_utf8_lossy(&body);
                test_programs::respond(response_out, 200, format!("upstream {status}: {body}"));
            }
            Err(error) => {
                test_programs::respond(response_out, 502, format!("outbound error: {error:?}"));
            }
        }
    }
}

/// `http://host:port/path?q` → (`Http`, `host:port`, `/path?q`).
fn split_url(url: &str) -> Option<(Scheme, &str, &str)> {
    let (scheme, rest) = match url.split_once("://")? {
        ("http", rest) => (Scheme::Http, rest),
        ("https", rest) => (Scheme::Https, rest),
        _ => return None,
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, "/"),
    };
    Some((scheme, authority, path))
}

fn get(
    scheme: Scheme,
    authority: &str,
    path: &str,
    traceparent: Option<String>,
) -> Result<IncomingResponse, ErrorCode> {
    let headers = Fields::new();
    if let Some(value) = traceparent {
        headers
            .append("traceparent", &value.into_bytes())
            .expect("a valid header");
    }
    let request = OutgoingRequest::new(headers);
    request.set_method(&Method::Get).expect("valid method");
    request.set_scheme(Some(&scheme)).expect("valid scheme");
    request
        .set_authority(Some(authority))
        .expect("valid authority");
    request.set_path_with_query(Some(path)).expect("valid path");
    wait(outgoing_handler::handle(request, None)?)
}

fn wait(response: FutureIncomingResponse) -> Result<IncomingResponse, ErrorCode> {
    loop {
        match response.get() {
            Some(result) => return result.expect("response taken once"),
            None => response.subscribe().block(),
        }
    }
}

fn main() {}
