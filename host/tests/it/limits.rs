//! Issue 4: limits, fault isolation, admission control, graceful shutdown
//! and the guest sandbox.

use crate::common::*;
use bytes::Bytes;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn digest_of(path: &str) -> String {
    crate::foundation::sha256_hex(&std::fs::read(path).unwrap())
}

/// The one fault log line for `route`, waiting for it to appear.
fn fault_line(host: &Wasmlet, route: &str) -> String {
    host.wait_for_log(Duration::from_secs(5), |l| {
        l.contains("handler fault") && l.contains(&format!("route={route} "))
    })
    .unwrap_or_else(|| panic!("no fault line for {route}:\n{}", host.logs().join("\n")))
}

#[tokio::test(flavor = "multi_thread")]
async fn each_fault_fails_its_request_alone() {
    let (_dir, manifest) = routes(&[
        ("/...", wasm::HELLO, ""),
        ("/trap", wasm::TRAP, ""),
        ("/panic", wasm::PANIC, ""),
        ("/spin", wasm::SPIN, "timeout = \"300ms\""),
        ("/memory", wasm::MEMORY_HOG, "max_memory = \"32MiB\""),
        ("/recursion", wasm::RECURSION, ""),
        ("/slow", wasm::SLOW, "timeout = \"300ms\""),
        ("/never", wasm::NEVER_RESPONDS, ""),
    ]);
    let host = Wasmlet::serve(&["--config", &manifest]);
    let cases = [
        ("/trap", 500, "trap", "unreachable", wasm::TRAP),
        ("/panic", 500, "trap", "unreachable", wasm::PANIC),
        ("/spin", 504, "timeout", "time limit", wasm::SPIN),
        ("/memory", 500, "memory", "memory limit", wasm::MEMORY_HOG),
        (
            "/recursion",
            500,
            "trap",
            "call stack exhausted",
            wasm::RECURSION,
        ),
        ("/slow?ms=5000", 504, "timeout", "time limit", wasm::SLOW),
        (
            "/never",
            500,
            "no_response",
            "without setting a response",
            wasm::NEVER_RESPONDS,
        ),
    ];
    for (path, status, kind, cause, component) in cases {
        let started = Instant::now();
        let r = get(host.public, path).await;
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{path} took {:?}",
            started.elapsed()
        );
        let route = path.split('?').next().unwrap();
        let line = fault_line(&host, route);
        assert!(line.contains(&format!("kind={kind}")), "{line}");
        assert!(line.contains(cause), "{path}: {line}");
        assert!(line.contains(&digest_of(component)), "{line}");
        assert!(line.contains("request_id="), "{line}");
        // Every fault leaves the host healthy.
        assert_eq!(get(host.public, "/").await.text(), "Hello World!");
    }
    let panic = host.wait_for_log(Duration::from_secs(2), |l| l.contains("fixture panic"));
    assert!(
        panic.is_some_and(|l| l.contains("route=/panic")),
        "the guest's panic message reaches the log"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_a_request_grew_goes_back_when_it_ends() {
    let host = Wasmlet::serve(&[wasm::MEMORY_HOG]);
    // Each request touches 128 MiB before its limit stops it. Were freed
    // slots left resident (waiting for a batch to decommit), the process
    // would grow by that much per request: in a 512 MiB container the
    // fourth request got it OOM-killed.
    for round in 1..=4 {
        assert_eq!(get(host.public, "/").await.status, 500);
        let rss = status_kib(host.pid(), "VmRSS");
        assert!(rss < 96 << 10, "after request {round}: RSS {rss} KiB");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_memory_budget_caps_what_all_guests_hold_together() {
    let (_dir, manifest) = routes(&[("/...", wasm::HELLO, ""), ("/memory", wasm::MEMORY_HOG, "")]);
    let host = Wasmlet::serve(&[
        "--config",
        &manifest,
        "--max-memory",
        "256MiB",
        "--max-total-memory",
        "48MiB",
    ]);
    // Alone, the hog grows until the budget, not its own 256 MiB, stops it.
    let r = get(host.public, "/memory").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    let line = fault_line(&host, "/memory");
    assert!(
        line.contains("kind=memory_budget") && line.contains("--max-total-memory"),
        "{line}"
    );
    // Six at once: each is refused with 503, and none takes the host down.
    let hogs: Vec<_> = (0..6)
        .map(|_| {
            let addr = host.public;
            tokio::spawn(async move { get(addr, "/memory").await.status })
        })
        .collect();
    for hog in hogs {
        assert_eq!(hog.await.unwrap(), 503);
    }
    // Every store gave its share back: a new instance still fits.
    for _ in 0..3 {
        assert_eq!(get(host.public, "/").await.text(), "Hello World!");
    }
    let refused =
        "wasmlet_handler_faults_total{route=\"/memory\",version=\"stable\",kind=\"memory_budget\"}";
    assert_eq!(metric(&host, refused).await, 7.0);
    assert_eq!(
        metric(&host, "wasmlet_guest_memory_limit_bytes").await,
        f64::from(48u32 << 20)
    );
    // A store drops just after its response ends; then nothing is held.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let exposition = get(host.admin, "/metrics").await.text();
        if exposition
            .lines()
            .any(|l| l == "wasmlet_guest_memory_bytes 0")
        {
            break;
        }
        assert!(Instant::now() < deadline, "still held:\n{exposition}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // One hog alone would have held 256 MiB; together they stayed within
    // the 48 MiB budget (plus the host itself).
    let peak = status_kib(host.pid(), "VmHWM");
    assert!(peak < 160 << 10, "peak RSS {peak} KiB");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_looping_handler_does_not_starve_others() {
    let (_dir, manifest) = routes(&[
        ("/...", wasm::HELLO, ""),
        ("/spin", wasm::SPIN, "timeout = \"3s\""),
    ]);
    let host = Wasmlet::serve(&["--config", &manifest]);
    // Four loops on two cores, then healthy requests must still be quick.
    let spinners: Vec<_> = (0..4)
        .map(|_| {
            let addr = host.public;
            tokio::spawn(async move { get(addr, "/spin").await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..20 {
        let started = Instant::now();
        assert_eq!(get(host.public, "/").await.text(), "Hello World!");
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "took {:?}",
            started.elapsed()
        );
    }
    for s in spinners {
        assert_eq!(s.await.unwrap().status, 504);
    }
}

/// The epoch ticker parks while no guest runs; each guest after an idle
/// spell must wake it, or a loop would never reach its time limit.
#[tokio::test(flavor = "multi_thread")]
async fn a_loop_after_an_idle_spell_still_hits_its_time_limit() {
    let (_dir, manifest) = routes(&[("/spin", wasm::SPIN, "timeout = \"300ms\"")]);
    let host = Wasmlet::serve(&["--config", &manifest]);
    for _ in 0..2 {
        // Well past the 100 idle ticks (of 1 ms) after which it parks.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let r = tokio::time::timeout(Duration::from_secs(10), get(host.public, "/spin"))
            .await
            .expect("the loop is interrupted");
        assert_eq!(r.status, 504, "{}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fault_mid_body_cuts_the_body() {
    let (_dir, manifest) = routes(&[
        ("/...", wasm::HELLO, ""),
        ("/mid", wasm::FAILS_MID_BODY, ""),
    ]);
    let host = Wasmlet::serve(&["--config", &manifest]);
    for _ in 0..3 {
        let request = http::Request::get("/mid")
            .header("host", "x")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let result = send(host.public, request).await;
        assert!(
            result.is_err(),
            "the body must be cut, not ended cleanly: {result:?}"
        );
        assert_eq!(get(host.public, "/").await.text(), "Hello World!");
    }
    fault_line(&host, "/mid");
}

#[tokio::test(flavor = "multi_thread")]
async fn request_bodies_over_the_limit_get_413() {
    let host = Wasmlet::serve(&[wasm::COUNT, "--max-body-size", "1KiB"]);
    let ok = request(host.public, "POST", "/", vec![b'a'; 1024]).await;
    assert_eq!((ok.status, ok.text().as_str()), (200, "1024"));
    // Declared too large: refused before the guest runs.
    let r = request(host.public, "POST", "/", vec![b'a'; 1025]).await;
    assert_eq!(r.status, 413);
    // Chunked, no length declared: cut off at the limit.
    let chunked = http::Request::post("/")
        .header("host", "x")
        .body(streamed_body(4096, 512))
        .unwrap();
    assert_eq!(send(host.public, chunked).await.unwrap().status, 413);
    assert_eq!(
        metric(
            &host,
            "wasmlet_requests_rejected_total{reason=\"body_too_large\"}"
        )
        .await,
        2.0
    );
}

/// Issue 31, finding 5: a handler that fails because the host refused its
/// request body (a chunked body past --max-body-size) is not the handler's
/// fault: no `handler fault` line, no `kind="trap"`, for a 0.2 and a 0.3
/// handler alike; the refusal counts as what it is, a 413.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_body_is_not_counted_as_a_handler_fault() {
    let (_dir, manifest) = routes(&[("/...", wasm::COUNT, ""), ("/echo", wasm::P3, "")]);
    let host = Wasmlet::serve(&["--config", &manifest, "--max-body-size", "1KiB"]);
    for path in ["/count", "/echo"] {
        let chunked = http::Request::post(path)
            .header("host", "x")
            .body(streamed_body(64 << 10, 512))
            .unwrap();
        let r = send(host.public, chunked).await.unwrap();
        assert_eq!(r.status, 413, "{path}: {}", r.text());
    }
    // The guests end after the 413 is sent: give them the time to.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = get(host.admin, "/metrics").await.text();
    for route in ["/...", "/echo"] {
        for kind in ["trap", "no_response"] {
            let series = format!(
                "wasmlet_handler_faults_total{{route=\"{route}\",version=\"stable\",kind=\"{kind}\"}}"
            );
            assert_eq!(sample(&text, &series), 0.0, "{series}\n{text}");
        }
    }
    assert_eq!(
        sample(
            &text,
            "wasmlet_requests_rejected_total{reason=\"body_too_large\"}"
        ),
        2.0
    );
    let faults: Vec<String> = host
        .logs()
        .into_iter()
        .filter(|l| l.contains("handler fault") || l.contains("ERROR"))
        .collect();
    assert!(faults.is_empty(), "{faults:#?}");
}

/// Issue 31, finding 5: a client that goes away mid-body makes the 0.2
/// handler reading it fail; that is the client's doing, logged as such,
/// and no handler fault.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_gone_mid_body_is_not_counted_as_a_handler_fault() {
    let host = Wasmlet::serve(&[wasm::COUNT]);
    let mut stream = tokio::net::TcpStream::connect(host.public).await.unwrap();
    let head = "POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n";
    let chunk = format!("400\r\n{}\r\n", "a".repeat(1024));
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(chunk.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(stream);
    let line = host
        .wait_for_log(Duration::from_secs(5), |l| {
            l.contains("handler ended after the host refused its request")
        })
        .unwrap_or_else(|| panic!("no refusal line:\n{}", host.logs().join("\n")));
    assert!(line.contains("refused=client_gone"), "{line}");
    let series = "wasmlet_handler_faults_total{route=\"/...\",version=\"stable\",kind=\"trap\"}";
    assert_eq!(metric(&host, series).await, 0.0);
    assert!(
        !host.logs().iter().any(|l| l.contains("handler fault")),
        "{:#?}",
        host.logs()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_headers_get_431() {
    let host = Wasmlet::serve(&[wasm::HELLO, "--max-header-size", "16KiB"]);
    let big = "x".repeat(32 << 10);
    let mut stream = tokio::net::TcpStream::connect(host.public).await.unwrap();
    stream
        .write_all(format!("GET / HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply)).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_client_cannot_hold_a_connection() {
    let host = Wasmlet::serve(&[wasm::HELLO, "--header-read-timeout", "500ms"]);
    let mut stream = tokio::net::TcpStream::connect(host.public).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the host must close the connection");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_in_flight_cap_requests_get_503_quickly() {
    let (_dir, manifest) = routes(&[("/...", wasm::SLOW, "")]);
    let host = Wasmlet::serve(&[
        "--config",
        &manifest,
        "--max-in-flight",
        "2",
        "--queue-timeout",
        "50ms",
    ]);
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let addr = host.public;
            tokio::spawn(async move { get(addr, "/?ms=1500").await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let r = get(host.public, "/?ms=1").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    for b in busy {
        assert_eq!(b.await.unwrap().status, 200);
    }
    assert_eq!(
        get(host.public, "/?ms=1").await.status,
        200,
        "slots free up again"
    );
    assert_eq!(
        metric(
            &host,
            "wasmlet_requests_rejected_total{reason=\"overloaded\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_connection_cap_new_connections_wait() {
    let host = Wasmlet::serve(&[wasm::HELLO, "--max-connections", "1"]);
    let ask = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";
    let mut first = tokio::net::TcpStream::connect(host.public).await.unwrap();
    first.write_all(ask).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = first.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );

    // The first connection stays open (keep-alive), so the second waits.
    let mut second = tokio::net::TcpStream::connect(host.public).await.unwrap();
    second.write_all(ask).await.unwrap();
    let early = tokio::time::timeout(Duration::from_millis(500), second.read(&mut buf)).await;
    assert!(early.is_err(), "served past the connection cap");

    drop(first);
    let n = tokio::time::timeout(Duration::from_secs(5), second.read(&mut buf))
        .await
        .expect("served once the first connection closed")
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread")]
async fn mixed_traffic_a_fifth_misbehaving() {
    let (_dir, manifest) = routes(&[
        ("/...", wasm::HELLO, ""),
        ("/trap", wasm::TRAP, ""),
        ("/spin", wasm::SPIN, "timeout = \"100ms\""),
        ("/memory", wasm::MEMORY_HOG, "max_memory = \"16MiB\""),
        ("/never", wasm::NEVER_RESPONDS, ""),
    ]);
    let host = Wasmlet::serve_with_env(
        &["--config", &manifest],
        &[("RUST_LOG", "warn,wasmlet::app=info")],
    );
    const TOTAL: usize = 3000;
    const CONCURRENCY: usize = 32;
    let bad = ["/trap", "/spin", "/memory", "/never"];
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let next = next.clone();
            let addr = host.public;
            tokio::spawn(async move {
                let mut healthy = 0;
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= TOTAL {
                        return healthy;
                    }
                    if i.is_multiple_of(5) {
                        let r = get(addr, bad[(i / 5) % bad.len()]).await;
                        assert!(r.status == 500 || r.status == 504, "{}", r.status);
                    } else {
                        let r = get(addr, "/").await;
                        assert_eq!((r.status, r.text().as_str()), (200, "Hello World!"));
                        healthy += 1;
                    }
                }
            })
        })
        .collect();
    let mut healthy = 0;
    for w in workers {
        healthy += w.await.unwrap();
    }
    assert_eq!(healthy, TOTAL - TOTAL / 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_requests_in_flight_then_exits_0() {
    let (_dir, manifest) = routes(&[("/...", wasm::SLOW, "")]);
    let mut host = Wasmlet::serve(&["--config", &manifest, "--drain-timeout", "10s"]);
    // An idle keep-alive connection, which the drain must close.
    let idle = tokio::net::TcpStream::connect(host.public).await.unwrap();
    let (mut idle_sender, idle_conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(idle))
            .await
            .unwrap();
    let idle_task = tokio::spawn(idle_conn);
    let warm = http::Request::get("/?ms=1")
        .header("host", "x")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(idle_sender.send_request(warm).await.unwrap().status(), 200);

    let in_flight: Vec<_> = (0..10)
        .map(|_| {
            let addr = host.public;
            tokio::spawn(async move { get(addr, "/?ms=1500").await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    host.signal("TERM");

    let started = Instant::now();
    loop {
        if get(host.admin, "/readyz").await.status == 503 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "readyz did not turn 503 at once"
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        tokio::net::TcpStream::connect(host.public).await.is_err(),
        "the listener must be closed"
    );
    let closed = tokio::time::timeout(Duration::from_secs(2), idle_task).await;
    assert!(
        closed.is_ok(),
        "the idle keep-alive connection must be closed"
    );

    for r in in_flight {
        let r = r.await.unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "slow done"));
    }
    let status = host
        .wait(Duration::from_secs(10))
        .expect("exits after draining");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_drain_timeout_interrupts_what_is_left() {
    let (_dir, manifest) = routes(&[("/...", wasm::SLOW, "timeout = \"60s\"")]);
    let mut host = Wasmlet::serve(&["--config", &manifest, "--drain-timeout", "500ms"]);
    let addr = host.public;
    let stuck = tokio::spawn(async move {
        let request = http::Request::get("/?ms=30000")
            .header("host", "x")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        send(addr, request).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    host.signal("TERM");
    let status = host
        .wait(Duration::from_secs(10))
        .expect("exits at the drain timeout");
    assert_eq!(status.code(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(stuck.await.unwrap().is_err(), "the stuck request is cut");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_guest_sees_no_host_environment_unless_granted() {
    let (_dir, manifest) = routes(&[
        ("/plain", wasm::ENV, ""),
        (
            "/granted",
            wasm::ENV,
            "env = { GREETING = \"hi\", ANSWER = \"42\" }",
        ),
    ]);
    let host = Wasmlet::serve_with_env(&["--config", &manifest], &[("HOST_SECRET", "do-not-leak")]);
    let r = get(host.public, "/plain").await;
    assert_eq!((r.status, r.text().as_str()), (200, ""));
    let r = get(host.public, "/granted").await;
    assert_eq!(r.text(), "ANSWER=42\nGREETING=hi\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn outbound_http_is_denied_unless_the_host_is_allowed() {
    let allowed = upstream().await;
    let other = upstream().await;
    let (_dir, manifest) = routes(&[
        ("/none/...", wasm::OUTBOUND, ""),
        (
            "/some/...",
            wasm::OUTBOUND,
            &format!("allowed_outbound_hosts = [\"http://{allowed}\"]"),
        ),
    ]);
    let host = Wasmlet::serve(&["--config", &manifest]);
    let ask = |route: &str, target: std::net::SocketAddr| format!("{route}?url=http://{target}/x");

    let r = get(host.public, &ask("/some/", allowed)).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "upstream 200: upstream says hi")
    );
    let r = get(host.public, &ask("/some/", other)).await;
    assert_eq!(r.status, 502);
    assert!(r.text().contains("HttpRequestDenied"), "{}", r.text());
    let r = get(host.public, &ask("/none/", allowed)).await;
    assert_eq!(r.status, 502, "deny by default: {}", r.text());
    assert!(r.text().contains("HttpRequestDenied"), "{}", r.text());
    let denied = host.wait_for_log(Duration::from_secs(5), |l| {
        l.contains("outbound request denied") && l.contains(&other.to_string())
    });
    assert!(denied.is_some_and(|l| l.contains("route=/some/...")));
}

#[tokio::test(flavor = "multi_thread")]
async fn guest_stdout_and_stderr_go_to_the_log_tagged() {
    let host = Wasmlet::serve(&[wasm::STDOUT]);
    let r = request_with(
        host.public,
        "GET",
        "/",
        &[("x-request-id", "req-stdout-1")],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.text(), "printed");
    for text in ["hello from stdout", "hello from stderr"] {
        let line = host
            .wait_for_log(Duration::from_secs(5), |l| l.contains(text))
            .unwrap_or_else(|| panic!("no `{text}` in the log"));
        assert!(line.contains("request_id=req-stdout-1"), "{line}");
        assert!(line.contains("route=/..."), "{line}");
    }
}
