//! Issue 29: gRPC through wasi:http. The `grpc_greeter` fixture is a gRPC
//! service written as a plain 0.2 handler. What the host adds: a client's
//! `grpc-timeout` bounds the call like the route's `timeout`, and the
//! host's own answers reach a gRPC client as gRPC statuses.

use crate::common::*;
use std::time::{Duration, Instant};

/// A gRPC request frame holding HelloRequest { name, count }.
fn hello_request(name: &str, count: u32) -> Vec<u8> {
    let mut message = vec![0x0a, name.len() as u8];
    message.extend_from_slice(name.as_bytes());
    if count > 0 {
        message.push(0x10);
        let mut n = count;
        while n >= 0x80 {
            message.push((n as u8) | 0x80);
            n >>= 7;
        }
        message.push(n as u8);
    }
    let mut frame = vec![0];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    frame
}

fn grpc_headers(timeout: Option<&'static str>) -> Vec<(&'static str, &'static str)> {
    let mut headers = vec![("content-type", "application/grpc"), ("te", "trailers")];
    if let Some(timeout) = timeout {
        headers.push(("grpc-timeout", timeout));
    }
    headers
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grpc_timeout_bounds_the_call_and_the_host_answers_a_grpc_status() {
    let host = Wasmlet::serve(&[wasm::GRPC_GREETER, "--request-timeout", "20s"]);

    // In time: the guest's own answer (its status is in the trailers).
    let r = request_with(
        host.public,
        "POST",
        "/demo.Greeter/Sleep",
        &grpc_headers(Some("5S")),
        hello_request("s", 10),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/grpc"));
    assert!(r.body.ends_with(b"slept 10 ms"), "{:?}", r.body);

    // Past the client's 300 ms, not the route's 20 s: the host ends the
    // call and answers DEADLINE_EXCEEDED in a Trailers-Only response.
    let started = Instant::now();
    let r = request_with(
        host.public,
        "POST",
        "/demo.Greeter/Sleep",
        &grpc_headers(Some("300m")),
        hello_request("s", 10_000),
    )
    .await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the client's deadline bounds it: {took:?}"
    );
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/grpc"));
    assert_eq!(r.header("grpc-status"), Some("4"), "{:?}", r.headers);
    assert!(r.body.is_empty());
    // The metrics and the log keep what the host did: a 504 timeout.
    let line = host
        .wait_for_log(Duration::from_secs(5), |l| {
            l.contains("path=/demo.Greeter/Sleep") && l.contains("status=504")
        })
        .expect("the request line says 504");
    // The deadline was the client's choice: no handler fault to log, count
    // or alert on (a client could raise the fault rate at will otherwise),
    // one info line instead.
    let id = field(&line, "request_id");
    let ended = host.wait_for_log(Duration::from_secs(5), |l| {
        l.contains("the client's deadline") && l.contains(&id)
    });
    assert!(ended.is_some(), "{:#?}", host.logs());
    assert!(
        !host.logs().iter().any(|l| l.contains("handler fault")),
        "{:#?}",
        host.logs()
    );
    let metrics = get(host.admin, "/metrics").await.text();
    let timeouts =
        "wasmlet_handler_faults_total{route=\"/...\",version=\"stable\",kind=\"timeout\"}";
    assert_eq!(sample(&metrics, timeouts), 0.0, "{metrics}");

    // A route the host does not have is UNIMPLEMENTED to a gRPC client.
    let cfg_dir = tempdir();
    let manifest = cfg_dir.path().join("wasmlet.toml");
    write(
        &manifest,
        format!(
            "[[route]]\npath = \"/demo.Greeter/...\"\ncomponent = \"{}\"\n",
            wasm::GRPC_GREETER
        ),
    );
    let routed = Wasmlet::serve(&["--config", path_str(&manifest)]);
    let r = request_with(
        routed.public,
        "POST",
        "/other.Service/Call",
        &grpc_headers(None),
        hello_request("x", 0),
    )
    .await;
    assert_eq!(
        (r.status, r.header("grpc-status")),
        (200, Some("12")),
        "{:?}",
        r.headers
    );
    // Not gRPC: the same miss is a plain 404.
    let r = request(routed.public, "POST", "/other.Service/Call", "x").await;
    assert_eq!(r.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grpc_timeout_means_nothing_on_a_request_that_is_not_grpc() {
    let host = Wasmlet::serve(&[wasm::SLOW]);
    let r = request_with(
        host.public,
        "GET",
        "/?ms=800",
        &[("grpc-timeout", "100m")],
        "",
    )
    .await;
    assert_eq!((r.status, r.text()), (200, "slow done".to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grpc_timeout_bounds_a_p3_handler_too() {
    let host = Wasmlet::serve(&[wasm::P3]);
    let started = Instant::now();
    let r = request_with(
        host.public,
        "POST",
        "/sleep?n=10000",
        &grpc_headers(Some("200m")),
        "",
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        (r.status, r.header("grpc-status")),
        (200, Some("4")),
        "{:?}",
        r.headers
    );
}

/// Runs `grpc_client.py` against `host` (over TLS trusting `ca` when
/// given) and checks the outcomes every transport must give.
async fn grpcio_calls(host: &Wasmlet, ca: Option<&std::path::Path>) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/grpc_client.py");
    let mut command = std::process::Command::new("python3");
    command.arg(script).arg(host.public.to_string());
    if let Some(ca) = ca {
        command.arg("--tls").arg(ca);
    }
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("python3 (grpcio comes from scripts/setup-tools.sh)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let results: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(results["unary"]["ok"], "Hello, wasmlet!", "{results}");
    let stream = results["stream"]["ok"].as_array().expect("a stream");
    assert_eq!(stream.len(), 1000, "{results}");
    assert_eq!(stream[0], "n #1");
    assert_eq!(stream[999], "n #1000");
    assert_eq!(results["error"]["code"], "NOT_FOUND", "{results}");
    assert_eq!(results["error"]["details"], "no such name: nobody");
    assert_eq!(results["unknown"]["code"], "UNIMPLEMENTED");
    assert_eq!(results["deadline"]["code"], "DEADLINE_EXCEEDED");
    assert_eq!(results["in_time"]["ok"], "slept 10 ms");
}

/// The same service as a wasi:http 0.3 handler: its trailers future
/// carries the status, and the client's deadline bounds it too.
#[tokio::test(flavor = "multi_thread")]
async fn grpcio_calls_a_wasi_http_0_3_service() {
    let host = Wasmlet::serve(&[wasm::GRPC_GREETER_P3, "--request-timeout", "3s"]);
    grpcio_calls(&host, None).await;
    // wasmtime cannot stop one 0.3 guest task alone: the expired call's
    // instance, and so its slot, lasts until the route's `timeout` (3 s
    // here; docs/reuse.md), whatever the client's deadline.
    the_expired_call_ended_quietly(&host, Duration::from_secs(5)).await;
}

/// After `grpc_client.py`: its `Sleep` call (5 s of sleep, a 0.3 s
/// deadline) was ended by the host at the deadline (a 504 answered as
/// DEADLINE_EXCEEDED) or by the client resetting its stream at the same
/// moment, whichever came first; its guest gave back its slot `within`;
/// and neither is a handler fault: a client could otherwise raise the
/// fault rate at will.
async fn the_expired_call_ended_quietly(host: &Wasmlet, within: Duration) {
    crate::h2_attacks::in_flight_drops_to_zero(host, within).await;
    let faults: Vec<String> = host.logs_containing("handler fault");
    assert!(faults.is_empty(), "{faults:#?}");
    let metrics = get(host.admin, "/metrics").await.text();
    let timeouts =
        "wasmlet_handler_faults_total{route=\"/...\",version=\"stable\",kind=\"timeout\"}";
    assert_eq!(sample(&metrics, timeouts), 0.0, "{metrics}");
}

/// The same calls over TLS: grpcio checks the host's certificate and
/// picks HTTP/2 by ALPN.
#[tokio::test(flavor = "multi_thread")]
async fn grpcio_calls_the_service_over_tls() {
    let dir = tempdir();
    let (cert, key) = crate::tls::make_pair(dir.path(), "grpc", 30);
    let host = Wasmlet::serve(&[
        wasm::GRPC_GREETER,
        "--tls-cert",
        path_str(&cert),
        "--tls-key",
        path_str(&key),
    ]);
    grpcio_calls(&host, Some(&cert)).await;
    let over_tls = crate::h2::by_protocol(host.admin, "h2", true).await;
    assert!(over_tls >= 6, "{over_tls} requests over HTTP/2 with TLS");
}

/// A real gRPC stack (Python's grpcio, `grpc_client.py`, no stubs) over h2c:
/// a unary call, a 1,000-message server stream, an error status with its
/// message, an unknown method, a call past the client's deadline (ended
/// early, quietly), and a call in time.
#[tokio::test(flavor = "multi_thread")]
async fn grpcio_calls_the_service_over_h2c() {
    let host = Wasmlet::serve(&[wasm::GRPC_GREETER]);
    grpcio_calls(&host, None).await;
    // A 0.2 guest is stopped at once: long before its 5 s sleep ends.
    the_expired_call_ended_quietly(&host, Duration::from_secs(2)).await;
}
