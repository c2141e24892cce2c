//! Issue 30: OpenTelemetry traces. Each test starts an OTLP/HTTP receiver
//! on loopback (`otlp_receiver.py`, decoding with OpenTelemetry's own
//! protobuf definitions) and reads the spans it got.

use crate::common::*;
use bytes::Bytes;
use http_body_util::Full;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const RECEIVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/otlp_receiver.py");
/// A W3C parent: trace 0af7…319c, span b7ad…3331, sampled.
const PARENT_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT_SPAN: &str = "b7ad6b7169203331";

/// The receiver, killed on drop.
struct Receiver {
    child: Child,
    port: u16,
    spans: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    fn start(args: &[&str]) -> Receiver {
        let mut child = Command::new("python3")
            .arg(RECEIVER)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 (opentelemetry-proto comes from scripts/setup-tools.sh)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().expect("the receiver's first line").unwrap();
        let port = first
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("receiver: {first}"))
            .parse()
            .unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = spans.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                kept.lock()
                    .unwrap()
                    .push(serde_json::from_str(&line).unwrap());
            }
        });
        Receiver { child, port, spans }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spans(&self) -> Vec<Value> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the spans received so far.
    fn wait_for(&self, timeout: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            if Instant::now() > deadline {
                panic!(
                    "spans received in {timeout:?}:\n{}",
                    spans
                        .iter()
                        .map(Value::to_string)
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The environment of a host exporting to `endpoint`, in batches of at
/// most 50 ms, plus `more`.
fn otel<'a>(endpoint: &'a str, more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ];
    env.extend_from_slice(more);
    env
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    &span["attributes"][key]
}

fn named<'a>(spans: &'a [Value], name: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["name"] == name).collect()
}

fn servers(spans: &[Value]) -> Vec<&Value> {
    spans.iter().filter(|s| s["kind"] == "SERVER").collect()
}

async fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut builder = http::Request::get(format!("http://{addr}{path}"));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    send(addr, builder.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_is_a_server_span_continuing_its_traceparent_with_children_for_each_step() {
    let receiver = Receiver::start(&[]);
    let endpoint = receiver.endpoint();
    let host = Wasmlet::serve_with_env(
        &[wasm::HELLO, "--log-format", "json"],
        &otel(&endpoint, &[("OTEL_SERVICE_NAME", "hello-svc")]),
    );
    let parent = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01");
    let r = get_with(host.public, "/", &[("traceparent", &parent)]).await;
    assert_eq!((r.status, r.text().as_str()), (200, "Hello World!"));

    let spans = receiver.wait_for(Duration::from_secs(10), |s| {
        named(s, "GET /...").len() == 1 && named(s, "response body").len() == 1
    });
    // One component on every path: the route `/...`.
    let server = named(&spans, "GET /...")[0];
    assert_eq!(server["path"], "/v1/traces");
    assert_eq!(server["content_type"], "application/x-protobuf");
    assert_eq!(server["service"], "hello-svc");
    assert_eq!(server["kind"], "SERVER");
    assert_eq!(
        server["trace_id"], PARENT_TRACE,
        "the incoming trace continues"
    );
    assert_eq!(server["parent_span_id"], PARENT_SPAN);
    for (key, want) in [
        ("http.request.method", "GET"),
        ("http.route", "/..."),
        ("url.path", "/"),
        ("url.scheme", "http"),
        ("network.protocol.version", "1.1"),
        ("wasmlet.route", "/..."),
        ("wasmlet.version", "stable"),
        ("wasmlet.instance", "fresh"),
    ] {
        assert_eq!(attr(server, key), want, "{key} in {server}");
    }
    assert_eq!(attr(server, "http.response.status_code"), 200);
    let digest = attr(server, "wasmlet.component.digest").as_str().unwrap();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    assert_eq!(
        attr(server, "wasmlet.request_id"),
        r.header("x-request-id").unwrap()
    );
    assert!(attr(server, "wasmlet.fault").is_null(), "{server}");
    assert!(
        named(&spans, "admission").is_empty(),
        "admitted at once: no wait to show"
    );

    // Each step is a child of the request's span, within its time.
    for name in ["instantiate", "handler", "response body"] {
        let child = named(&spans, name);
        assert_eq!(child.len(), 1, "{name}");
        let child = child[0];
        assert_eq!(child["trace_id"], PARENT_TRACE, "{name}");
        assert_eq!(child["parent_span_id"], server["span_id"], "{name}");
        assert_eq!(child["kind"], "INTERNAL", "{name}");
        let (start, end) = (
            child["start"].as_u64().unwrap(),
            child["end"].as_u64().unwrap(),
        );
        assert!(start <= end, "{name}: {child}");
        assert!(
            start >= server["start"].as_u64().unwrap() && end <= server["end"].as_u64().unwrap(),
            "{name} within its request: {child} {server}"
        );
    }

    // The request's log record joins the trace.
    let line = host
        .wait_for_log(Duration::from_secs(5), |l| {
            l.contains("\"message\":\"request\"")
        })
        .unwrap();
    let record: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(record["trace_id"], PARENT_TRACE, "{line}");
    assert_eq!(record["span_id"], server["span_id"], "{line}");

    // A second request on the same route starts a trace of its own.
    get(host.public, "/").await;
    let spans = receiver.wait_for(Duration::from_secs(10), |s| named(s, "GET /...").len() == 2);
    let second = named(&spans, "GET /...")[1];
    assert_ne!(second["trace_id"], PARENT_TRACE);
    assert_eq!(second["parent_span_id"], "");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guests_output_and_its_fault_are_logged_with_the_requests_trace() {
    let receiver = Receiver::start(&[]);
    let endpoint = receiver.endpoint();
    let (_dir, manifest) = routes(&[("/print", wasm::STDOUT, ""), ("/trap", wasm::TRAP, "")]);
    let host = Wasmlet::serve_with_env(
        &["--config", &manifest, "--log-format", "json"],
        &otel(&endpoint, &[]),
    );
    assert_eq!(get(host.public, "/print").await.text(), "printed");
    assert_eq!(get(host.public, "/trap").await.status, 500);
    let spans = receiver.wait_for(Duration::from_secs(10), |s| {
        named(s, "GET /print").len() == 1 && named(s, "GET /trap").len() == 1
    });
    let record = |needle: &str| -> Value {
        let line = host
            .wait_for_log(Duration::from_secs(5), |l| l.contains(needle))
            .unwrap_or_else(|| panic!("no `{needle}` in the log"));
        serde_json::from_str(&line).unwrap()
    };
    let print = named(&spans, "GET /print")[0];
    for text in ["hello from stdout", "hello from stderr"] {
        let line = record(text);
        assert_eq!(line["trace_id"], print["trace_id"], "{line}");
        assert_eq!(line["span_id"], print["span_id"], "{line}");
    }
    let trap = named(&spans, "GET /trap")[0];
    let fault = record("handler fault");
    assert_eq!(fault["trace_id"], trap["trace_id"], "{fault}");
    assert_eq!(fault["span_id"], trap["span_id"], "{fault}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_an_endpoint_nothing_is_traced_and_logs_carry_no_ids() {
    let host = Wasmlet::serve(&[wasm::HELLO, "--log-format", "json"]);
    let parent = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01");
    get_with(host.public, "/", &[("traceparent", &parent)]).await;
    let line = host
        .wait_for_log(Duration::from_secs(5), |l| {
            l.contains("\"message\":\"request\"")
        })
        .unwrap();
    assert!(!line.contains("trace_id"), "{line}");
    assert_eq!(
        metric(&host, "wasmlet_trace_spans_exported_total").await,
        0.0
    );
}

/// An upstream answering the `traceparent` it was sent (or `none`).
async fn traceparent_echo() -> SocketAddr {
    upstream_answering(|headers| {
        headers
            .get("traceparent")
            .map_or(Bytes::from_static(b"none"), |v| {
                Bytes::copy_from_slice(v.as_bytes())
            })
    })
    .await
}

/// A receiver, a `traceparent` echo upstream, and a host exporting to the
/// receiver whose route `/call` (the `outbound` guest) may reach it.
async fn outbound_setup() -> (Receiver, SocketAddr, Wasmlet, tempfile::TempDir) {
    let receiver = Receiver::start(&[]);
    let endpoint = receiver.endpoint();
    let upstream = traceparent_echo().await;
    let (dir, manifest) = routes(&[(
        "/call",
        wasm::OUTBOUND,
        &format!("allowed_outbound_hosts = [\"http://{upstream}\"]"),
    )]);
    let host = Wasmlet::serve_with_env(&["--config", &manifest], &otel(&endpoint, &[]));
    (receiver, upstream, host, dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guests_outbound_call_is_a_client_span_whose_traceparent_reaches_the_upstream() {
    let (receiver, upstream, host, _dir) = outbound_setup().await;
    let r = get(host.public, &format!("/call?url=http://{upstream}/x")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = r.text();
    let sent = sent.strip_prefix("upstream 200: ").unwrap();
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!((parts.len(), parts[0], parts[3]), (4, "00", "01"), "{sent}");

    let spans = receiver.wait_for(Duration::from_secs(10), |s| {
        named(s, "GET").len() == 1 && named(s, "response body").len() == 1
    });
    let server = named(&spans, "GET /call")[0];
    let client = named(&spans, "GET")[0];
    assert_eq!(client["kind"], "CLIENT");
    assert_eq!(client["trace_id"], server["trace_id"]);
    assert_eq!(client["parent_span_id"], server["span_id"]);
    assert_eq!(
        (parts[1], parts[2]),
        (
            client["trace_id"].as_str().unwrap(),
            client["span_id"].as_str().unwrap()
        ),
        "the upstream's parent is the client span"
    );
    assert_eq!(attr(client, "http.request.method"), "GET");
    assert_eq!(attr(client, "http.response.status_code"), 200);
    assert_eq!(attr(client, "server.port"), upstream.port() as i64);

    // A denied call is a failed client span; the guest's answer is its own.
    let r = get(host.public, "/call?url=http://127.0.0.1:1/").await;
    assert_eq!(r.status, 502, "{}", r.text());
    let spans = receiver.wait_for(Duration::from_secs(10), |s| named(s, "GET").len() == 2);
    let denied = named(&spans, "GET")[1];
    assert_eq!(denied["status"], 2, "STATUS_CODE_ERROR: {denied}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_that_sets_its_own_traceparent_keeps_it() {
    // The `outbound` guest sends `?traceparent=` as its own header.
    let (_receiver, upstream, host, _dir) = outbound_setup().await;
    let own = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01");
    let r = get(
        host.public,
        &format!("/call?url=http://{upstream}/x&traceparent={own}"),
    )
    .await;
    assert_eq!(r.text(), format!("upstream 200: {own}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_handlers_calling_through_wasmlet_form_one_trace() {
    let receiver = Receiver::start(&[]);
    let endpoint = receiver.endpoint();
    // The back end: hello, on a host of its own.
    let back = Wasmlet::serve_with_env(
        &[wasm::HELLO],
        &otel(&endpoint, &[("OTEL_SERVICE_NAME", "back")]),
    );
    // The front end calls it through its public port.
    let (_dir, manifest) = routes(&[(
        "/front",
        wasm::OUTBOUND,
        &format!("allowed_outbound_hosts = [\"http://{}\"]", back.public),
    )]);
    let front = Wasmlet::serve_with_env(
        &["--config", &manifest],
        &otel(&endpoint, &[("OTEL_SERVICE_NAME", "front")]),
    );
    let r = get(front.public, &format!("/front?url=http://{}/", back.public)).await;
    assert_eq!(r.text(), "upstream 200: Hello World!");

    let spans = receiver.wait_for(Duration::from_secs(10), |s| {
        servers(s).len() == 2 && named(s, "response body").len() == 2
    });
    let trace = spans[0]["trace_id"].clone();
    assert!(
        spans.iter().all(|s| s["trace_id"] == trace),
        "one trace: {spans:#?}"
    );
    let front_span = named(&spans, "GET /front")[0];
    let client = named(&spans, "GET")[0];
    let back_span = named(&spans, "GET /...")[0];
    assert_eq!(
        front_span["parent_span_id"], "",
        "the front end is the root"
    );
    assert_eq!(front_span["service"], "front");
    assert_eq!(client["parent_span_id"], front_span["span_id"]);
    assert_eq!(back_span["parent_span_id"], client["span_id"]);
    assert_eq!(back_span["service"], "back");
    // Every span has its parent in the trace, but the root.
    let ids: Vec<&Value> = spans.iter().map(|s| &s["span_id"]).collect();
    for span in &spans {
        assert!(
            span["parent_span_id"] == "" || ids.contains(&&span["parent_span_id"]),
            "orphan: {span}"
        );
    }
    assert_eq!(
        spans.iter().filter(|s| s["parent_span_id"] == "").count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_request_says_its_version_and_a_fault_its_kind() {
    let receiver = Receiver::start(&[]);
    let endpoint = receiver.endpoint();
    let (_dir, manifest) = routes(&[
        (
            "/c",
            wasm::V1,
            &format!("canary = {{ component = \"{}\", weight = 100 }}", wasm::V2),
        ),
        ("/trap", wasm::TRAP, ""),
    ]);
    let host = Wasmlet::serve_with_env(&["--config", &manifest], &otel(&endpoint, &[]));
    assert_eq!(get(host.public, "/c").await.text(), "v2");
    assert_eq!(get(host.public, "/trap").await.status, 500);
    let spans = receiver.wait_for(Duration::from_secs(10), |s| {
        named(s, "GET /c").len() == 1 && named(s, "GET /trap").len() == 1
    });
    let canary = named(&spans, "GET /c")[0];
    assert_eq!(attr(canary, "wasmlet.version"), "canary");
    let trap = named(&spans, "GET /trap")[0];
    assert_eq!(attr(trap, "wasmlet.fault"), "trap");
    assert_eq!(attr(trap, "http.response.status_code"), 500);
    assert_eq!(trap["status"], 2, "a 5xx is an error: {trap}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_collector_that_is_down_or_slow_costs_requests_nothing_and_drops_are_counted() {
    // Down: refused exports are counted as export_failed.
    let mut receiver = Receiver::start(&[]);
    let endpoint = receiver.endpoint();
    receiver.stop();
    let host = Wasmlet::serve_with_env(&[wasm::HELLO], &otel(&endpoint, &[]));
    for _ in 0..20 {
        assert_eq!(get(host.public, "/").await.status, 200);
    }
    let failed = "wasmlet_trace_spans_dropped_total{reason=\"export_failed\"}";
    let deadline = Instant::now() + Duration::from_secs(10);
    // 4 spans a request: its own, instantiate, handler, response body.
    while metric(&host, failed).await < 20.0 * 4.0 {
        assert!(
            Instant::now() < deadline,
            "{failed}: {}",
            metric(&host, failed).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    host.wait_for_log(Duration::from_secs(5), |l| {
        l.contains("traces: export failed") && l.contains(&endpoint)
    })
    .expect("one warning names the collector");

    // Slow: a collector that takes 3 s per export, and a queue of 10 spans.
    let slow = Receiver::start(&["--delay", "3", "--quiet"]);
    let endpoint = slow.endpoint();
    let host = Wasmlet::serve_with_env(
        &[wasm::HELLO],
        &otel(&endpoint, &[("OTEL_BSP_MAX_QUEUE_SIZE", "10")]),
    );
    let started = Instant::now();
    let load = Load::start(host.public, "/", 8);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stats = load.finish().await;
    assert!(stats.ok > 50 && stats.failures.is_empty(), "{stats:?}");
    // Over 50 answers from 8 clients in 2 s: none waited for a 3 s export.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "nobody waited for the collector"
    );
    let full = "wasmlet_trace_spans_dropped_total{reason=\"queue_full\"}";
    assert!(metric(&host, full).await > 0.0, "{full}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sampling_ratio_holds_and_a_sampled_parent_keeps_its_trace_whole() {
    let receiver = Receiver::start(&[]);
    let endpoint = receiver.endpoint();
    let host = Wasmlet::serve_with_env(
        &[wasm::HELLO],
        &otel(
            &endpoint,
            &[
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ],
        ),
    );
    const N: usize = 800;
    let load = burst_get(host.public, N).await;
    assert_eq!(load, N);
    let exported = "wasmlet_trace_spans_exported_total";
    // Wait for the queue to drain: the host's count stops moving and the
    // receiver holds every span it counts.
    let mut last = -1.0;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = metric(&host, exported).await;
        if now == last && receiver.spans().len() as f64 == now {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{exported} {now}, received {}",
            receiver.spans().len()
        );
        last = now;
    }
    let sampled = servers(&receiver.spans()).len() as f64;
    // Binomial: mean N/4, standard deviation sqrt(N * 1/4 * 3/4) ≈ 12.2;
    // 5 deviations either side.
    let (mean, sd) = (N as f64 * 0.25, (N as f64 * 0.25 * 0.75).sqrt());
    assert!(
        (sampled - mean).abs() <= 5.0 * sd,
        "{sampled} of {N} sampled, want {mean} ± {:.0}",
        5.0 * sd
    );

    // Parent-based: a sampled caller's trace is kept, an unsampled one's is not.
    let before = servers(&receiver.spans()).len();
    for flags in ["01", "00"] {
        for _ in 0..20 {
            let parent = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-{flags}");
            get_with(host.public, "/", &[("traceparent", &parent)]).await;
        }
    }
    let spans = receiver.wait_for(Duration::from_secs(10), |s| servers(s).len() >= before + 20);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let continued = servers(&receiver.spans())
        .iter()
        .filter(|s| s["trace_id"] == PARENT_TRACE)
        .count();
    assert_eq!(continued, 20, "{} spans", spans.len());
}

/// `n` GETs of `/`, 16 at a time; how many answered 200.
async fn burst_get(addr: SocketAddr, n: usize) -> usize {
    let ok = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (ok, next) = (ok.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                if get(addr, "/").await.status == 200 {
                    ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    ok.load(std::sync::atomic::Ordering::Relaxed)
}

#[test]
fn a_bad_otel_variable_fails_start_up_naming_it() {
    for (name, value) in [
        ("OTEL_TRACES_SAMPLER", "sometimes"),
        ("OTEL_TRACES_SAMPLER_ARG", "2"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "none"),
    ] {
        let mut env = vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")];
        if name == "OTEL_TRACES_SAMPLER_ARG" {
            env.push(("OTEL_TRACES_SAMPLER", "traceidratio"));
        }
        env.push((name, value));
        let (status, _, stderr) = serve_to_exit(&[wasm::HELLO], &env);
        assert_eq!(status.code(), Some(1), "{name}={value}: {stderr}");
        assert!(stderr.contains(name), "{name}={value}: {stderr}");
    }
    let (status, _, stderr) = serve_to_exit(
        &[wasm::HELLO],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")],
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{stderr}");
}
