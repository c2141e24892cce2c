//! Issue 29: HTTP/2 on the public port beside HTTP/1.1, in clear text
//! (prior knowledge, h2c): curl, many streams on one connection, per-stream
//! refusals, the drain, and connections that send nothing (or half a
//! preface) closed after --header-read-timeout.

use crate::common::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Installs `command` from Debian's `package` when it is missing.
pub fn need(command: &str, package: &str) {
    let status = Command::new("scripts/need-command.sh")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args([command, package])
        .status()
        .unwrap();
    assert!(status.success(), "{command} is needed");
}

/// `curl -sS ARGS -w '\n%{http_version}'`: (the body, the HTTP version
/// curl used), or what it printed on a failure.
pub async fn curl(args: &[&str]) -> Result<(String, String), String> {
    need("curl", "curl");
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["-sS", "--max-time", "20", "-w", "\n%{http_version}"])
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, version) = stdout.rsplit_once('\n').unwrap();
    Ok((body.to_string(), version.to_string()))
}

/// One HTTP/2 connection (prior knowledge) to `addr`; the connection task
/// ends when the server closes it.
pub async fn h2_connect(
    addr: SocketAddr,
) -> (
    http2::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .unwrap();
    (sender, tokio::spawn(connection))
}

/// `method path` with `body` on an HTTP/2 connection: the status and body.
pub async fn h2_request(
    sender: &mut http2::SendRequest<Full<Bytes>>,
    method: &str,
    uri: &str,
    body: impl Into<Bytes>,
) -> Result<(u16, String), String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    // With `:authority`, as real clients send it (without it, and without
    // `host`, a wasi:http request is a 400).
    let request = http::Request::builder()
        .method(method)
        .uri(format!("http://wasmlet.test{uri}"))
        .body(Full::new(body.into()))
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    assert_eq!(response.version(), http::Version::HTTP_2);
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A sample of `wasmlet_requests_by_protocol_total`.
pub async fn by_protocol(admin: SocketAddr, protocol: &str, tls: bool) -> u64 {
    let exposition = get(admin, "/metrics").await.text();
    let prefix =
        format!("wasmlet_requests_by_protocol_total{{protocol=\"{protocol}\",tls=\"{tls}\"}} ");
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |value| value.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_with_http2_prior_knowledge_gets_hello_world() {
    let host = Wasmlet::serve(&[wasm::HELLO]);
    let url = host.url("/");
    let (body, version) = curl(&["--http2-prior-knowledge", &url]).await.unwrap();
    assert_eq!((body.as_str(), version.as_str()), ("Hello World!", "2"));
    // HTTP/1.1 on the same port, as before.
    let (body, version) = curl(&["--http1.1", &url]).await.unwrap();
    assert_eq!((body.as_str(), version.as_str()), ("Hello World!", "1.1"));
    assert_eq!(by_protocol(host.admin, "h2", false).await, 1);
    assert_eq!(by_protocol(host.admin, "http/1.1", false).await, 1);
    // The admin port stays HTTP/1 only.
    let admin = format!("http://{}/healthz", host.admin);
    assert!(curl(&["--http2-prior-knowledge", &admin]).await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn many_requests_run_at_once_on_one_connection() {
    let (_dir, manifest) = routes(&[("/...", wasm::HELLO, ""), ("/slow", wasm::SLOW, "")]);
    let host = Wasmlet::serve(&["--config", &manifest]);
    let (sender, _connection) = h2_connect(host.public).await;
    // 50 requests of 500 ms each, all at once: multiplexed, not queued.
    let started = Instant::now();
    let slow: Vec<_> = (0..50)
        .map(|_| {
            let mut sender = sender.clone();
            tokio::spawn(async move { h2_request(&mut sender, "GET", "/slow?ms=500", "").await })
        })
        .collect();
    for request in slow {
        assert_eq!(
            request.await.unwrap().unwrap(),
            (200, "slow done".to_string())
        );
    }
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    // And 300 short ones, 100 at a time (the default stream limit).
    let hellos: Vec<_> = (0..300)
        .map(|_| {
            let mut sender = sender.clone();
            tokio::spawn(async move { h2_request(&mut sender, "GET", "/", "").await })
        })
        .collect();
    for request in hellos {
        assert_eq!(
            request.await.unwrap().unwrap(),
            (200, "Hello World!".to_string())
        );
    }
    assert_eq!(by_protocol(host.admin, "h2", false).await, 350);
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_are_per_stream_and_the_connection_serves_on() {
    let (_dir, manifest) = routes(&[
        ("/...", wasm::HELLO, ""),
        ("/slow", wasm::SLOW, "timeout = \"300ms\""),
        ("/count", wasm::COUNT, ""),
    ]);
    let host = Wasmlet::serve(&["--config", &manifest, "--max-body-size", "1KiB"]);
    let (sender, connection) = h2_connect(host.public).await;
    let cases = [
        ("GET", "/", 0, 200),
        ("GET", "/slow?ms=5000", 0, 504),
        ("POST", "/count", 2048, 413),
        ("POST", "/count", 1024, 200),
        ("GET", "/a/%2e%2e/b", 0, 400),
        ("GET", "/", 0, 200),
    ];
    let requests: Vec<_> = cases
        .iter()
        .map(|&(method, path, size, status)| {
            let mut sender = sender.clone();
            tokio::spawn(async move {
                let (got, body) = h2_request(&mut sender, method, path, vec![b'a'; size])
                    .await
                    .unwrap();
                assert_eq!(got, status, "{method} {path}: {body}");
            })
        })
        .collect();
    for request in requests {
        request.await.unwrap();
    }
    // The same connection still serves.
    let mut sender = sender;
    assert_eq!(
        h2_request(&mut sender, "GET", "/", "").await.unwrap(),
        (200, "Hello World!".to_string())
    );
    assert!(!connection.is_finished());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_an_http2_connection() {
    let (_dir, manifest) = routes(&[("/...", wasm::SLOW, "")]);
    let mut host = Wasmlet::serve(&["--config", &manifest, "--drain-timeout", "10s"]);
    let (sender, connection) = h2_connect(host.public).await;
    let in_flight: Vec<_> = (0..5)
        .map(|_| {
            let mut sender = sender.clone();
            tokio::spawn(async move { h2_request(&mut sender, "GET", "/?ms=1500", "").await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    host.signal("TERM");
    // Streams in progress finish; the connection then closes (GOAWAY).
    for request in in_flight {
        assert_eq!(
            request.await.unwrap().unwrap(),
            (200, "slow done".to_string())
        );
    }
    let closed = tokio::time::timeout(Duration::from_secs(5), connection).await;
    assert!(closed.is_ok(), "the HTTP/2 connection must be closed");
    let status = host
        .wait(Duration::from_secs(10))
        .expect("exits after draining");
    assert_eq!(status.code(), Some(0));
}

/// Reads until the server closes the connection; how long that took.
async fn time_to_close(stream: &mut tokio::net::TcpStream) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("the connection is still open after 10 s"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_with_no_request_in_progress_are_closed_after_the_header_read_timeout() {
    let (_dir, manifest) = routes(&[("/...", wasm::HELLO, ""), ("/slow", wasm::SLOW, "")]);
    let host = Wasmlet::serve(&["--config", &manifest, "--header-read-timeout", "1s"]);
    let bound = |elapsed: Duration, what: &str| {
        assert!(
            elapsed >= Duration::from_millis(800) && elapsed < Duration::from_secs(4),
            "{what}: closed after {elapsed:?}"
        );
    };
    // Sends nothing: hyper's sniff for the HTTP/2 preface has no timer.
    let mut silent = tokio::net::TcpStream::connect(host.public).await.unwrap();
    // Half the preface: neither HTTP/1 nor HTTP/2 yet.
    let mut half = tokio::net::TcpStream::connect(host.public).await.unwrap();
    half.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    // The whole preface, then nothing (no SETTINGS).
    let mut preface = tokio::net::TcpStream::connect(host.public).await.unwrap();
    preface
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let (silent, half, preface) = tokio::join!(
        time_to_close(&mut silent),
        time_to_close(&mut half),
        time_to_close(&mut preface)
    );
    bound(silent, "a silent connection");
    bound(half, "half a preface");
    bound(preface, "a preface and nothing else");

    // An HTTP/2 connection is idle between requests only: a request
    // longer than the timeout is not cut, and the idle time counts from
    // its end.
    let (mut sender, connection) = h2_connect(host.public).await;
    assert_eq!(
        h2_request(&mut sender, "GET", "/slow?ms=2500", "")
            .await
            .unwrap(),
        (200, "slow done".to_string())
    );
    let ended = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), connection)
        .await
        .expect("an idle HTTP/2 connection is closed")
        .unwrap()
        .ok();
    bound(ended.elapsed(), "an idle HTTP/2 connection");
}
