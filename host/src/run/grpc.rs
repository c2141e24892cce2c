//! gRPC over wasi:http: what the host itself knows of a gRPC call.
//!
//! A gRPC service is an ordinary handler (its messages and its
//! `grpc-status` trailers are the guest's business); the host reads two
//! things. A client's `grpc-timeout` bounds the request like the route's
//! `timeout` (the shorter wins), so a call the client has given up on
//! stops running. And the host's own refusals (413, 503, 504, …) are
//! answered to a gRPC client as gRPC statuses, in a Trailers-Only response
//! (`grpc/doc/PROTOCOL-HTTP2.md`), which its stack reads as the call's
//! outcome instead of a transport error.

use http::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use std::time::Duration;

/// The request header with the client's deadline.
const TIMEOUT: &str = "grpc-timeout";

/// The spec's limit: at most eight digits before the unit.
const MAX_TIMEOUT_DIGITS: usize = 8;

/// Whether `headers` are a gRPC request's (`application/grpc`, with or
/// without a `+proto`-style suffix or parameters).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let v = v.trim_start();
            v.get(..16)
                .is_some_and(|p| p.eq_ignore_ascii_case("application/grpc"))
                && matches!(v.as_bytes().get(16), None | Some(b'+' | b';'))
        })
}

/// The client's deadline for a gRPC request: `grpc-timeout`, one to eight
/// digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`). `None` for any other
/// request, no header, or one that does not parse (the route's `timeout`
/// still bounds it).
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    if !is_grpc(headers) {
        return None;
    }
    parse_timeout(headers.get(TIMEOUT)?.to_str().ok()?)
}

fn parse_timeout(text: &str) -> Option<Duration> {
    let unit = text.chars().last()?;
    let digits = &text[..text.len() - unit.len_utf8()];
    if digits.is_empty()
        || digits.len() > MAX_TIMEOUT_DIGITS
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n * 3600),
        'M' => Duration::from_secs(n * 60),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The gRPC status for one of the host's own answers (the mapping gRPC's
/// `http-grpc-status-mapping.md` gives clients, made exact where the host
/// knows better: a 504 here is the deadline, a 413 a size limit).
fn status_of(http: StatusCode) -> (u32, &'static str) {
    match http.as_u16() {
        400 => (13, "INTERNAL"),
        404 => (12, "UNIMPLEMENTED"),
        408 | 504 => (4, "DEADLINE_EXCEEDED"),
        413 | 431 => (8, "RESOURCE_EXHAUSTED"),
        429 | 502 | 503 => (14, "UNAVAILABLE"),
        _ => (13, "INTERNAL"),
    }
}

/// Turns a host answer to a gRPC request into a Trailers-Only response:
/// `200`, `content-type: application/grpc`, `grpc-status` and
/// `grpc-message` (the host's text, percent-encoded), no body. Headers the
/// host set (`retry-after`, the request id) stay.
pub fn as_trailers_only<B>(response: Response<B>, empty: B) -> Response<B> {
    let (mut parts, _) = response.into_parts();
    let (code, name) = status_of(parts.status);
    let message = format!("{name}: the host answered {}", parts.status);
    parts.status = StatusCode::OK;
    parts.headers.remove(http::header::CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    parts.headers.insert("grpc-status", HeaderValue::from(code));
    if let Ok(value) = HeaderValue::from_str(&percent_encode(&message)) {
        parts.headers.insert("grpc-message", value);
    }
    Response::from_parts(parts, empty)
}

/// `grpc-message`'s encoding: printable ASCII but `%` as is, the rest `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b' '..=b'~' if byte != b'%' => out.push(byte as char),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn grpc_content_types() {
        for ct in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC;charset=utf-8",
        ] {
            assert!(is_grpc(&headers(&[("content-type", ct)])), "{ct}");
        }
        for ct in ["application/grpc-web", "application/json", "text/plain", ""] {
            assert!(!is_grpc(&headers(&[("content-type", ct)])), "{ct}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn timeouts_parse_as_the_spec_writes_them() {
        let grpc = |t: &str| {
            timeout(&headers(&[
                ("content-type", "application/grpc"),
                ("grpc-timeout", t),
            ]))
        };
        assert_eq!(grpc("1S"), Some(Duration::from_secs(1)));
        assert_eq!(grpc("250m"), Some(Duration::from_millis(250)));
        assert_eq!(grpc("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(grpc("3M"), Some(Duration::from_secs(180)));
        assert_eq!(grpc("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(grpc("5n"), Some(Duration::from_nanos(5)));
        for bad in [
            "",
            "S",
            "123456789m",
            "1s",
            "1.5S",
            "-1S",
            " 1S",
            "1Sx",
            "1é",
        ] {
            assert_eq!(grpc(bad), None, "{bad:?}");
        }
        // Not a gRPC request: its grpc-timeout means nothing.
        let plain = headers(&[("content-type", "text/plain"), ("grpc-timeout", "1S")]);
        assert_eq!(timeout(&plain), None);
    }

    #[test]
    fn host_answers_become_trailers_only() {
        let mut response = Response::new("took too long\n");
        *response.status_mut() = StatusCode::GATEWAY_TIMEOUT;
        response
            .headers_mut()
            .insert("x-request-id", HeaderValue::from_static("r1"));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let grpc = as_trailers_only(response, "");
        assert_eq!(grpc.status(), StatusCode::OK);
        assert_eq!(grpc.headers()["content-type"], "application/grpc");
        assert_eq!(grpc.headers()["grpc-status"], "4");
        assert_eq!(
            grpc.headers()["grpc-message"],
            "DEADLINE_EXCEEDED: the host answered 504 Gateway Timeout"
        );
        assert_eq!(grpc.headers()["x-request-id"], "r1");
        assert_eq!(*grpc.body(), "");
        assert_eq!(status_of(StatusCode::PAYLOAD_TOO_LARGE).0, 8);
        assert_eq!(status_of(StatusCode::SERVICE_UNAVAILABLE).0, 14);
        assert_eq!(status_of(StatusCode::NOT_FOUND).0, 12);
        assert_eq!(percent_encode("a%b\né"), "a%25b%0A%C3%A9");
    }
}
