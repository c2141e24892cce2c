//! Spin's request headers: where a request sits in its route.
//!
//! A handler receives the whole request path (`/api/users/7` under the
//! route `/api/...`), as `wasmtime serve` gives it. Spin HTTP components
//! route on the part below their route instead, which Spin passes in
//! `spin-*` request headers; wasmlet sets the same seven with Spin's
//! meanings, so such components run unchanged. Any a client sent are
//! replaced first (and `spin-path-match-*`, which wasmlet never sets: its
//! routes have no named segments), so a handler can trust them.

use crate::config::router::Pattern;
use http::header::{HOST, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::Scheme;
use std::net::SocketAddr;

/// The route-relative path: `/users/7` for `/api/users/7` under `/api/...`.
pub const PATH_INFO: HeaderName = HeaderName::from_static("spin-path-info");
/// The route's pattern as written in the manifest (`/api/...`).
pub const MATCHED_ROUTE: HeaderName = HeaderName::from_static("spin-matched-route");
/// Spin 2's application base; always `/` (Spin 3 removed bases).
pub const BASE_PATH: HeaderName = HeaderName::from_static("spin-base-path");
/// The pattern without its wildcard (`/api`; empty for `/...`).
pub const COMPONENT_ROUTE: HeaderName = HeaderName::from_static("spin-component-route");
/// The pattern as written (`/api/...`); the same as the matched route here.
pub const RAW_COMPONENT_ROUTE: HeaderName = HeaderName::from_static("spin-raw-component-route");
/// `SCHEME://HOST/PATH?QUERY`: `https` under TLS, HOST from the `host`
/// header, else HTTP/2's `:authority` (`localhost` if neither).
pub const FULL_URL: HeaderName = HeaderName::from_static("spin-full-url");
/// The client's address and port (`127.0.0.1:53152`), the TCP peer.
pub const CLIENT_ADDR: HeaderName = HeaderName::from_static("spin-client-addr");

const SET: [HeaderName; 7] = [
    PATH_INFO,
    MATCHED_ROUTE,
    BASE_PATH,
    COMPONENT_ROUTE,
    RAW_COMPONENT_ROUTE,
    FULL_URL,
    CLIENT_ADDR,
];

/// Named-segment headers Spin sets for `/:name` routes; never set here.
const PATH_MATCH_PREFIX: &str = "spin-path-match-";

/// Replaces the request's Spin headers with the ones for `pattern`, the
/// route it matched, `peer`, the client, and `scheme`, the connection's.
pub fn apply(parts: &mut Parts, pattern: &Pattern, peer: Option<SocketAddr>, scheme: &Scheme) {
    let values = values(parts, pattern, peer, scheme);
    let headers = &mut parts.headers;
    remove_client_sent(headers);
    for (name, value) in SET.into_iter().zip(values) {
        if let Some(value) = value {
            headers.insert(name, value);
        }
    }
}

/// The seven values, in [`SET`]'s order; `None` where there is nothing to
/// say (no peer address) or a value could not be a header (never, for
/// paths hyper accepted).
fn values(
    parts: &Parts,
    pattern: &Pattern,
    peer: Option<SocketAddr>,
    scheme: &Scheme,
) -> [Option<HeaderValue>; 7] {
    let path = parts.uri.path();
    let path_and_query = parts.uri.path_and_query().map_or(path, |pq| pq.as_str());
    // Spin's own default when a request has no `host` (HTTP/1.0); a value
    // that is not printable ASCII is no host to build a URL from either.
    let host = parts
        .headers
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .unwrap_or("localhost");
    let full_url = format!("{scheme}://{host}{path_and_query}");
    let route = pattern.to_string();
    let value = |text: &str| HeaderValue::from_str(text).ok();
    [
        value(pattern.path_info(path)),
        value(&route),
        Some(HeaderValue::from_static("/")),
        value(pattern.base()),
        value(&route),
        value(&full_url),
        peer.and_then(|addr| value(&addr.to_string())),
    ]
}

fn remove_client_sent(headers: &mut HeaderMap) {
    for name in SET {
        headers.remove(name);
    }
    let forged: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with(PATH_MATCH_PREFIX))
        .cloned()
        .collect();
    for name in forged {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut request = http::Request::builder().uri(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap().into_parts().0
    }

    fn header<'a>(parts: &'a Parts, name: &HeaderName) -> Vec<&'a str> {
        parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn spins_example_under_a_wildcard() {
        // Spin's own test: route `/foo/...`, request `/foo/bar?key1=value1&key2=value2`.
        let mut p = parts(
            "/foo/bar?key1=value1&key2=value2",
            &[("host", "fermyon.dev")],
        );
        let peer = "127.0.0.1:8777".parse().ok();
        apply(
            &mut p,
            &Pattern::parse("/foo/...").unwrap(),
            peer,
            &Scheme::HTTP,
        );
        assert_eq!(header(&p, &PATH_INFO), ["/bar"]);
        assert_eq!(header(&p, &MATCHED_ROUTE), ["/foo/..."]);
        assert_eq!(header(&p, &BASE_PATH), ["/"]);
        assert_eq!(header(&p, &COMPONENT_ROUTE), ["/foo"]);
        assert_eq!(header(&p, &RAW_COMPONENT_ROUTE), ["/foo/..."]);
        assert_eq!(
            header(&p, &FULL_URL),
            ["http://fermyon.dev/foo/bar?key1=value1&key2=value2"]
        );
        assert_eq!(header(&p, &CLIENT_ADDR), ["127.0.0.1:8777"]);
    }

    #[test]
    fn exact_and_catch_all_routes() {
        let mut p = parts("/hello", &[("host", "h:5000")]);
        apply(
            &mut p,
            &Pattern::parse("/hello").unwrap(),
            None,
            &Scheme::HTTP,
        );
        assert_eq!(header(&p, &PATH_INFO), [""]);
        assert_eq!(header(&p, &COMPONENT_ROUTE), ["/hello"]);
        assert_eq!(header(&p, &MATCHED_ROUTE), ["/hello"]);
        assert_eq!(header(&p, &FULL_URL), ["http://h:5000/hello"]);
        assert!(header(&p, &CLIENT_ADDR).is_empty(), "no peer, no header");

        let mut p = parts("/", &[]);
        let ipv6 = "[::1]:4000".parse().ok();
        apply(
            &mut p,
            &Pattern::parse("/...").unwrap(),
            ipv6,
            &Scheme::HTTP,
        );
        assert_eq!(header(&p, &PATH_INFO), ["/"]);
        assert_eq!(header(&p, &COMPONENT_ROUTE), [""]);
        assert_eq!(header(&p, &FULL_URL), ["http://localhost/"]);
        assert_eq!(header(&p, &CLIENT_ADDR), ["[::1]:4000"]);
    }

    #[test]
    fn client_sent_spin_headers_are_replaced_not_joined() {
        let mut p = parts(
            "/api/users/7",
            &[
                ("spin-path-info", "/admin"),
                ("spin-path-info", "/admin2"),
                ("spin-client-addr", "10.0.0.1:1"),
                ("spin-full-url", "https://bank.example/"),
                ("spin-path-match-userid", "0"),
                ("Spin-Path-Match-Role", "admin"),
                ("spin-other", "kept"),
                ("host", "h"),
            ],
        );
        apply(
            &mut p,
            &Pattern::parse("/api/...").unwrap(),
            None,
            &Scheme::HTTP,
        );
        assert_eq!(header(&p, &PATH_INFO), ["/users/7"]);
        assert!(header(&p, &CLIENT_ADDR).is_empty());
        assert_eq!(header(&p, &FULL_URL), ["http://h/api/users/7"]);
        assert!(p.headers.get("spin-path-match-userid").is_none());
        assert!(p.headers.get("spin-path-match-role").is_none());
        assert_eq!(p.headers.get("spin-other").unwrap(), "kept");
    }

    #[test]
    fn under_tls_and_http2_the_url_says_https_and_the_authority() {
        // HTTP/2: no `host`, the authority in the URI.
        let mut p = parts("http://h2.example:8443/x?y=1", &[]);
        apply(
            &mut p,
            &Pattern::parse("/...").unwrap(),
            None,
            &Scheme::HTTPS,
        );
        assert_eq!(header(&p, &FULL_URL), ["https://h2.example:8443/x?y=1"]);
        let mut p = parts("/x", &[("host", "h")]);
        apply(
            &mut p,
            &Pattern::parse("/...").unwrap(),
            None,
            &Scheme::HTTPS,
        );
        assert_eq!(header(&p, &FULL_URL), ["https://h/x"]);
    }

    #[test]
    fn an_unprintable_host_falls_back_to_localhost() {
        let mut p = parts("/x", &[]);
        p.headers
            .insert(HOST, HeaderValue::from_bytes(b"h\xff").unwrap());
        apply(
            &mut p,
            &Pattern::parse("/...").unwrap(),
            None,
            &Scheme::HTTP,
        );
        assert_eq!(header(&p, &FULL_URL), ["http://localhost/x"]);
    }
}
