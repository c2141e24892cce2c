//! Issue 16, connection level: clients that never read, the admin port,
//! slow uploads, dot segments, and bodies refused after the head went out.
//!
//! Limits are set through their environment variables, so that each test
//! also fails for its real reason against a host without the limit.

use crate::common::*;
use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use std::convert::Infallible;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `raw` on a new connection and reads until the peer closes it or
/// `timeout` passes; returns what came back.
async fn exchange(addr: std::net::SocketAddr, raw: &str, timeout: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(timeout, stream.read_to_end(&mut reply)).await;
    String::from_utf8_lossy(&reply).into_owned()
}

/// A client that pipelines `GET /` for as long as the host reads them, and
/// never reads a response.
fn never_reads(addr: std::net::SocketAddr) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let batch = "GET / HTTP/1.1\r\nhost: x\r\n\r\n".repeat(1000);
        while stream.write_all(batch.as_bytes()).await.is_ok() {}
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_that_never_read_lose_their_connection() {
    let host = Wasmlet::serve_with_env(
        &[wasm::HELLO, "--max-connections", "2"],
        &[("WASMLET_WRITE_TIMEOUT", "1s")],
    );
    let hogs = [never_reads(host.public), never_reads(host.public)];
    // Long enough for both to fill every buffer between them and the host.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(8), get(host.public, "/"))
        .await
        .expect("a third client must get an answer once the stalled ones are cut");
    assert_eq!(r.text(), "Hello World!");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    for hog in hogs {
        hog.abort();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_port_closes_idle_connections() {
    let host = Wasmlet::serve(&[wasm::HELLO, "--header-read-timeout", "500ms"]);
    let mut stream = TcpStream::connect(host.admin).await.unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the admin port must close an idle connection");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_port_serves_at_most_16_connections() {
    let host = Wasmlet::serve(&[wasm::HELLO]);
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(TcpStream::connect(host.admin).await.unwrap());
    }
    // Give the host time to accept all 16.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiting = tokio::spawn({
        let admin = host.admin;
        async move { get(admin, "/healthz").await }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !waiting.is_finished(),
        "a 17th connection must wait for one of the 16"
    );
    held.pop();
    let r = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("served once a connection closed")
        .unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_needs_a_request_a_browser_cannot_send_cross_site() {
    let host = Wasmlet::serve(&[wasm::HELLO]);
    let reloads = "wasmlet_reloads_total{outcome=\"unchanged\"}";
    let before = metric(&host, reloads).await;
    // What a cross-site form post looks like: no custom header.
    let r = request_with(
        host.admin,
        "POST",
        "/reload",
        &[("content-type", "application/x-www-form-urlencoded")],
        "a=1",
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("x-wasmlet-reload"), "{}", r.text());
    assert_eq!(metric(&host, reloads).await, before, "no reload happened");
    let r = reload(host.admin).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(metric(&host, reloads).await, before + 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_port_answers_only_ip_literals_localhost_and_listed_names() {
    let host = Wasmlet::serve_with_env(
        &[wasm::HELLO],
        &[("WASMLET_ADMIN_ALLOWED_HOSTS", "admin.internal")],
    );
    let port = host.admin.port();
    let with_host = |name: String| {
        let admin = host.admin;
        async move {
            let reply = exchange(
                admin,
                &format!("GET /handlers HTTP/1.1\r\nhost: {name}\r\nconnection: close\r\n\r\n"),
                Duration::from_secs(5),
            )
            .await;
            reply.get(9..12).unwrap_or_default().to_string()
        }
    };
    // DNS rebinding: the page's own name, now resolving to this address.
    assert_eq!(with_host(format!("evil.example:{port}")).await, "421");
    assert_eq!(with_host("evil.example".into()).await, "421");
    assert_eq!(with_host(format!("127.0.0.1:{port}")).await, "200");
    assert_eq!(with_host(format!("[::1]:{port}")).await, "200");
    assert_eq!(with_host(format!("localhost:{port}")).await, "200");
    assert_eq!(with_host(format!("admin.internal:{port}")).await, "200");
    let missing = exchange(
        host.admin,
        "GET /handlers HTTP/1.0\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(missing.starts_with("HTTP/1.0 421"), "{missing}");
    // Two Host headers: RFC 9112 section 3.2 says 400, whichever comes first.
    for (first, second) in [
        (format!("127.0.0.1:{port}"), "evil.example".to_string()),
        ("evil.example".to_string(), format!("127.0.0.1:{port}")),
    ] {
        let reply = exchange(
            host.admin,
            &format!(
                "GET /handlers HTTP/1.1\r\nhost: {first}\r\nhost: {second}\r\nconnection: close\r\n\r\n"
            ),
            Duration::from_secs(5),
        )
        .await;
        assert!(
            reply.starts_with("HTTP/1.1 400"),
            "{first} then {second}: {reply}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dot_segments_are_refused_plain_and_encoded() {
    let dir = tempdir();
    let toml = format!(
        "[[route]]\npath = \"/admin/...\"\ncomponent = \"{}\"\n\n[[route]]\npath = \"/public/...\"\ncomponent = \"{}\"\n",
        wasm::STATUS,
        wasm::COUNT
    );
    let manifest = dir.path().join("wasmlet.toml");
    write(&manifest, toml);
    let host = Wasmlet::serve(&["--config", path_str(&manifest)]);
    for path in [
        "/admin/../public/x",
        "/admin/%2e%2e/public/x",
        "/admin/%2E%2e/public/x",
        "/admin/.%2e/public/x",
        "/public/./x",
        "/admin%2f..%2fpublic/x",
    ] {
        let reply = exchange(
            host.public,
            &format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"),
            Duration::from_secs(5),
        )
        .await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{path}: {reply}");
    }
    assert_eq!(get(host.public, "/public/x").await.text(), "0");
    assert_eq!(
        get(host.public, "/admin/x").await.text(),
        "guest says 200\n"
    );
    assert_eq!(
        metric(
            &host,
            "wasmlet_requests_rejected_total{reason=\"bad_path\"}"
        )
        .await,
        6.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_upload_gets_408_and_frees_its_slot() {
    let host = Wasmlet::serve_with_env(
        &[
            wasm::COUNT,
            "--max-in-flight",
            "1",
            "--queue-timeout",
            "100ms",
        ],
        &[("WASMLET_MIN_BODY_RATE", "1KiB")],
    );
    // One byte every 200 ms: 5 B/s, far under 1 KiB/s, and the default
    // 20 s request timeout would let it hold the only slot for 20 s.
    let mut stream = TcpStream::connect(host.public).await.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        let mut reply = Vec::new();
        for _ in 0..1000 {
            if stream.write_all(b"a").await.is_err() {
                break;
            }
            let mut buf = [0u8; 1024];
            match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => reply.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
            if reply.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        String::from_utf8_lossy(&reply).into_owned()
    });
    // Meanwhile the only slot is taken.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get(host.public, "/").await.status, 503);
    let reply = tokio::time::timeout(Duration::from_secs(15), trickle)
        .await
        .expect("the slow upload must be answered")
        .unwrap();
    let elapsed = started.elapsed();
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    // 5 s of grace, plus what 1 KiB/s allows for the few bytes sent.
    assert!(elapsed < Duration::from_secs(8), "{elapsed:?}");
    let r = tokio::time::timeout(
        Duration::from_secs(2),
        request(host.public, "POST", "/", vec![b'a'; 100]),
    )
    .await
    .expect("the slot is free again");
    assert_eq!((r.status, r.text().as_str()), (200, "100"));
    assert_eq!(
        metric(
            &host,
            "wasmlet_requests_rejected_total{reason=\"body_too_slow\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fast_upload_is_not_cut_by_the_minimum_rate() {
    let host = Wasmlet::serve(&[wasm::COUNT, "--max-body-size", "64MiB"]);
    let started = Instant::now();
    let r = request(host.public, "POST", "/", vec![b'a'; 32 << 20]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "33554432"));
    eprintln!("32 MiB upload on loopback: {:?}", started.elapsed());
}

/// A request body sent as `first` bytes, then a pause, then `rest` bytes.
fn paused_body(
    first: usize,
    pause: Duration,
    rest: usize,
) -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>>> {
    let steps = [(first, Duration::ZERO), (rest, pause)];
    StreamBody::new(futures_util::stream::unfold(0, move |i| async move {
        let (len, wait) = *steps.get(i)?;
        tokio::time::sleep(wait).await;
        Some((Ok(Frame::data(Bytes::from(vec![b'a'; len]))), i + 1))
    }))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_the_limit_after_the_head_went_out_is_cut() {
    let host = Wasmlet::serve(&[wasm::ECHO_LENIENT, "--max-body-size", "1KiB"]);
    let request = http::Request::post("/")
        .header("host", "x")
        .body(paused_body(512, Duration::from_millis(300), 4096))
        .unwrap();
    let result = send(host.public, request).await;
    assert!(
        result.is_err(),
        "a body truncated by the limit must be cut, not ended cleanly: {result:?}"
    );
    // Under the limit the same guest answers in full.
    let request = http::Request::post("/")
        .header("host", "x")
        .body(paused_body(512, Duration::from_millis(100), 256))
        .unwrap();
    let reply = send(host.public, request).await.unwrap();
    assert_eq!((reply.status, reply.body.len()), (200, 768));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guests_own_413_is_not_counted_as_a_host_rejection() {
    let host = Wasmlet::serve(&[wasm::STATUS]);
    let r = get(host.public, "/?code=413").await;
    assert_eq!((r.status, r.text().as_str()), (413, "guest says 413\n"));
    let text = get(host.admin, "/metrics").await.text();
    assert_eq!(
        sample(
            &text,
            "wasmlet_requests_rejected_total{reason=\"body_too_large\"}"
        ),
        0.0,
        "{text}"
    );
}

/// Sends `head`, then `chunk` every `pause` for as long as the host takes
/// them (at most 30 s); returns the response head read meanwhile, how long
/// after that head the host stopped taking the body, and the bytes sent.
async fn refused_upload(
    addr: std::net::SocketAddr,
    head: &str,
    chunk: Vec<u8>,
    pause: Duration,
) -> (String, Option<Duration>, usize) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    write.write_all(head.as_bytes()).await.unwrap();
    let writer = tokio::spawn(async move {
        let mut sent = 0;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) && write.write_all(&chunk).await.is_ok() {
            sent += chunk.len();
            tokio::time::sleep(pause).await;
        }
        (Instant::now(), sent)
    });
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while !reply.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), read.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => reply.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let answered = Instant::now();
    // Keep reading (the rest of the answer, then the close) so the host's
    // writes never block on us.
    let drain =
        tokio::spawn(async move { while matches!(read.read(&mut buf).await, Ok(n) if n > 0) {} });
    let (stopped, sent) = writer.await.unwrap();
    drain.abort();
    let closed_after = (stopped.duration_since(answered) < Duration::from_secs(25))
        .then(|| stopped.duration_since(answered));
    (
        String::from_utf8_lossy(&reply).into_owned(),
        closed_after,
        sent,
    )
}

/// A body refused with 413 while the client is still sending it: the host
/// reads on for a while (a lingering close) so the client gets the 413
/// rather than a reset connection, and stops within its bounds (1 MiB, 2 s)
/// however the client goes on: fast, or a chunk at a time.
#[tokio::test(flavor = "multi_thread")]
async fn an_upload_refused_with_413_is_answered_and_drained_within_bounds() {
    let host = Wasmlet::serve_with_env(&[wasm::COUNT], &[("WASMLET_MAX_BODY_SIZE", "1KiB")]);
    let declared = "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000000\r\n\r\n";
    let chunked = "POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n";
    let chunk = |len: usize| {
        let mut c = format!("{len:x}\r\n").into_bytes();
        c.extend(std::iter::repeat_n(b'a', len));
        c.extend_from_slice(b"\r\n");
        c
    };
    for (what, head, body, pause) in [
        (
            "declared, fast",
            declared,
            vec![b'a'; 64 << 10],
            Duration::ZERO,
        ),
        ("chunked, fast", chunked, chunk(64 << 10), Duration::ZERO),
        (
            "declared, slow",
            declared,
            vec![b'a'; 512],
            Duration::from_millis(50),
        ),
        (
            "chunked, slow",
            chunked,
            chunk(512),
            Duration::from_millis(50),
        ),
    ] {
        let (reply, closed_after, sent) = refused_upload(host.public, head, body, pause).await;
        eprintln!("{what}: {sent} bytes sent, closed {closed_after:?} after the answer");
        assert!(reply.starts_with("HTTP/1.1 413"), "{what}: {reply:?}");
        let closed_after = closed_after.unwrap_or_else(|| panic!("{what}: never closed"));
        // 2 s of lingering, and some slack for a loaded machine.
        assert!(
            closed_after < Duration::from_secs(6),
            "{what}: {closed_after:?}"
        );
        // 1 MiB read and thrown away, plus what the two sockets buffer.
        assert!(sent < 32 << 20, "{what}: {sent} bytes taken");
    }
    assert_eq!(get(host.public, "/").await.status, 200);
}
