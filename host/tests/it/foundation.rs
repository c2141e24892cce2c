//! Issue 2: the hello handler served end to end, bodies streamed both ways,
//! concurrency, `wasmlet check` and `--help`.

use crate::common::*;
use bytes::Bytes;

#[tokio::test(flavor = "multi_thread")]
async fn hello_answers_like_the_flask_app() {
    let host = Wasmlet::serve(&[wasm::HELLO]);

    let r = get(host.public, "/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "Hello World!");
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    // Declared, as Flask does, so the body is not sent chunked.
    assert_eq!(r.header("content-length"), Some("12"));
    assert_eq!(r.header("transfer-encoding"), None);

    let r = request(host.public, "HEAD", "/", Bytes::new()).await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));

    let r = get(host.public, "/nope").await;
    assert_eq!(r.status, 404);

    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let r = request(host.public, method, "/", Bytes::new()).await;
        assert_eq!(r.status, 405, "{method}");
        let allow = r.header("allow").expect("405 carries allow");
        assert!(allow.contains("GET") && allow.contains("HEAD"), "{allow}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_is_logged_once() {
    let host = Wasmlet::serve(&[wasm::HELLO]);
    get(host.public, "/logged-path").await;
    let line = host
        .wait_for_log(std::time::Duration::from_secs(5), |l| {
            l.contains("/logged-path")
        })
        .expect("a request log line");
    assert!(line.contains("method=GET"), "{line}");
    assert!(line.contains("status=404"), "{line}");
    assert!(line.contains("duration_ms="), "{line}");
    let count = host
        .logs()
        .iter()
        .filter(|l| l.contains("path=/logged-path"))
        .count();
    assert_eq!(count, 1);
}

const TEN_MIB: usize = 10 << 20;

/// POSTs 10 MiB in 64 KiB chunks, without a content-length, to `component`.
async fn post_10_mib(component: &str) -> Reply {
    let host = Wasmlet::serve(&[component]);
    let request = http::Request::post("/")
        .header("host", "localhost")
        .body(streamed_body(TEN_MIB, 64 << 10))
        .unwrap();
    send(host.public, request).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_10_mib_request_body_streams_to_the_guest() {
    let r = post_10_mib(wasm::COUNT).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), TEN_MIB.to_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_10_mib_body_echoes_back_intact() {
    let r = post_10_mib(wasm::ECHO).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), TEN_MIB);
    let expected: Vec<u8> = (0..TEN_MIB)
        .map(|i| b'a' + ((i / (64 << 10)) % 26) as u8)
        .collect();
    assert!(r.body[..] == expected[..], "echoed bytes differ");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_big_response_streams_without_content_length() {
    let host = Wasmlet::serve(&[wasm::BIG_RESPONSE]);
    let r = get(host.public, "/?mib=32").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 32 << 20);
    assert!(r.body.iter().all(|&b| b == b'x'));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_concurrent_requests_all_succeed() {
    let host = Wasmlet::serve(&[wasm::HELLO]);
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let addr = host.public;
            tokio::spawn(async move { get(addr, "/").await })
        })
        .collect();
    for task in tasks {
        let r = task.await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "Hello World!");
    }
}

#[test]
fn check_prints_digest_and_imports() {
    let (status, stdout, stderr) = run(&["check", wasm::HELLO]);
    assert!(status.success(), "{stdout}\n{stderr}");
    let digest = sha256_hex(&std::fs::read(wasm::HELLO).unwrap());
    assert!(stdout.contains(&format!("sha256: {digest}")), "{stdout}");
    assert!(
        stdout.contains("wasi:http/incoming-handler@0.2"),
        "{stdout}"
    );
    assert!(stdout.contains("imports:"), "{stdout}");
    assert!(stdout.contains("wasi:http/types@0.2"), "{stdout}");
}

#[test]
fn help_documents_every_flag() {
    let (status, top, _) = run(&["--help"]);
    assert!(status.success());
    assert!(top.contains("serve") && top.contains("check"), "{top}");
    let (status, serve, _) = run(&["serve", "--help"]);
    assert!(status.success());
    for flag in [
        "--config",
        "--listen",
        "--admin-listen",
        "--cache-dir",
        "--no-watch",
        "--drain-timeout",
        "--request-timeout",
        "--max-memory",
        "--max-body-size",
        "--max-header-size",
        "--header-read-timeout",
        "--max-in-flight",
        "--queue-timeout",
        "--max-connections",
        "--log-format",
        "WASMLET_LISTEN",
        "WASMLET_ADMIN_LISTEN",
    ] {
        assert!(serve.contains(flag), "`serve --help` lacks {flag}");
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
