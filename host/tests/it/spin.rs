//! Issue 31, finding 6: Spin's path headers. A Spin SDK 7 component
//! (`spin_sdk_headers`, `#[http_service]` on wasi:http 0.3.0, built from
//! crates.io's `spin-sdk`) routes on `spin-path-info`, as Spin components
//! do; wasmlet sets the seven `spin-*` headers with Spin's meanings and
//! replaces any a client sent.

use crate::common::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// The component on a wildcard, a catch-all and an exact route.
fn spin_routes() -> (tempfile::TempDir, Wasmlet) {
    let dir = tempdir();
    let manifest = dir.path().join("wasmlet.toml");
    let component = wasm::SPIN_SDK_HEADERS;
    write(
        &manifest,
        format!(
            "[[route]]\npath = \"/api/...\"\ncomponent = \"{component}\"\n\n\
             [[route]]\npath = \"/exact\"\ncomponent = \"{component}\"\n\n\
             [[route]]\npath = \"/...\"\ncomponent = \"{component}\"\n"
        ),
    );
    let host = Wasmlet::serve(&["--config", path_str(&manifest)]);
    (dir, host)
}

/// GET `path` with `headers` on a connection of its own; the reply and the
/// client's address as the host saw it.
async fn get_from(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, SocketAddr) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let client = stream.local_addr().unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut request =
        http::Request::get(path).header("host", format!("wasmlet.test:{}", addr.port()));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned(), client)
}

/// The component's `/headers` answer as a map.
fn lines(body: &str) -> BTreeMap<String, String> {
    body.lines()
        .filter_map(|line| line.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spin_sdk_component_routes_on_the_spin_headers_wasmlet_sets() {
    let (_dir, host) = spin_routes();
    let addr = host.public;

    // It routes on the path below its route: `/api` and `/api/` are its
    // root, `/api/nope` its own 404 (not the host's).
    for path in ["/api", "/api/", "/"] {
        let (status, body, _) = get_from(addr, path, &[]).await;
        assert_eq!((status, body.as_str()), (200, "Hello World!"), "{path}");
    }
    let (status, body, _) = get_from(addr, "/api/nope", &[]).await;
    assert_eq!((status, body.as_str()), (404, "not found\n"));

    // Under the wildcard `/api/...`: Spin's meanings, value for value.
    let (status, body, client) = get_from(addr, "/api/headers?key1=value1&key2=value2", &[]).await;
    assert_eq!(status, 200, "{body}");
    let port = addr.port();
    let want: BTreeMap<String, String> = [
        ("spin-path-info", "/headers".to_string()),
        ("spin-matched-route", "/api/...".into()),
        ("spin-base-path", "/".into()),
        ("spin-component-route", "/api".into()),
        ("spin-raw-component-route", "/api/...".into()),
        (
            "spin-full-url",
            format!("http://wasmlet.test:{port}/api/headers?key1=value1&key2=value2"),
        ),
        ("spin-client-addr", client.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(lines(&body), want, "{body}");

    // The catch-all `/...`: the whole path is below it.
    let (_, body, _) = get_from(addr, "/headers", &[]).await;
    let got = lines(&body);
    assert_eq!(got["spin-path-info"], "/headers");
    assert_eq!(got["spin-matched-route"], "/...");
    assert_eq!(got["spin-component-route"], "");

    // An exact route leaves an empty path info: the component's root.
    let (status, body, _) = get_from(addr, "/exact", &[]).await;
    assert_eq!((status, body.as_str()), (200, "Hello World!"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_cannot_choose_the_spin_headers_a_handler_sees() {
    let (_dir, host) = spin_routes();
    let addr = host.public;
    // A forged path info would reach `/headers` from `/api/secret`: the
    // host's own replaces it, so the component answers its 404.
    let (status, _, _) = get_from(addr, "/api/secret", &[("spin-path-info", "/headers")]).await;
    assert_eq!(status, 404);

    let forged = [
        ("spin-path-info", "/admin"),
        ("spin-client-addr", "10.0.0.1:1"),
        ("spin-client-addr", "10.0.0.2:2"),
        ("spin-full-url", "https://bank.example/"),
        ("spin-matched-route", "/admin/..."),
        ("spin-base-path", "/admin"),
        ("spin-component-route", "/admin"),
        ("spin-raw-component-route", "/admin/..."),
        ("spin-path-match-userid", "0"),
    ];
    let (status, body, client) = get_from(addr, "/api/headers", &forged).await;
    assert_eq!(status, 200, "{body}");
    let got = lines(&body);
    assert_eq!(got["spin-path-info"], "/headers", "{body}");
    assert_eq!(
        got["spin-client-addr"],
        client.to_string(),
        "one value, the real peer: {body}"
    );
    assert_eq!(got["spin-matched-route"], "/api/...");
    assert_eq!(got["spin-base-path"], "/");
    assert_eq!(got["spin-component-route"], "/api");
    assert_eq!(got["spin-raw-component-route"], "/api/...");
    assert!(
        got["spin-full-url"].starts_with("http://wasmlet.test:"),
        "{body}"
    );
    assert!(!body.contains('|'), "no header holds two values: {body}");
}

#[test]
fn a_spin_named_segment_route_is_refused_with_what_to_write() {
    let dir = tempdir();
    let manifest = dir.path().join("wasmlet.toml");
    write(
        &manifest,
        format!(
            "[[route]]\npath = \"/users/:id\"\ncomponent = \"{}\"\n",
            wasm::SPIN_SDK_HEADERS
        ),
    );
    let (status, stdout, stderr) = run(&["check", "--config", path_str(&manifest)]);
    assert_eq!(status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("/users/:id")
            && stderr.contains("spin-path-info")
            && stderr.contains("line 1"),
        "{stderr}"
    );
}
