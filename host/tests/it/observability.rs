//! Issue 7: exact metric values after a known mix, a parseable exposition,
//! request ids, JSON logs.

use crate::common::*;
use bytes::Bytes;
use std::time::Duration;

fn mix_manifest() -> (tempfile::TempDir, String) {
    let dir = tempdir();
    let toml = format!(
        "[[route]]\npath = \"/good\"\ncomponent = \"{}\"\n\n[[route]]\npath = \"/trap\"\ncomponent = \"{}\"\n\n[[route]]\npath = \"/spin\"\ncomponent = \"{}\"\ntimeout = \"200ms\"\n",
        wasm::V1,
        wasm::TRAP,
        wasm::SPIN
    );
    write(&dir.path().join("wasmlet.toml"), toml);
    let path = path_str(&dir.path().join("wasmlet.toml")).to_string();
    (dir, path)
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_match_a_known_mix_of_requests() {
    let (_dir, manifest) = mix_manifest();
    let host = Wasmlet::serve(&["--config", &manifest]);
    for _ in 0..3 {
        assert_eq!(get(host.public, "/good").await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(get(host.public, "/missing").await.status, 404);
    }
    assert_eq!(get(host.public, "/trap").await.status, 500);
    assert_eq!(get(host.public, "/spin").await.status, 504);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let text = get(host.admin, "/metrics").await.text();
    let expect = [
        (
            "wasmlet_requests_total{route=\"/good\",version=\"stable\",code=\"2xx\"}",
            3.0,
        ),
        (
            "wasmlet_requests_total{route=\"/good\",version=\"stable\",code=\"5xx\"}",
            0.0,
        ),
        (
            "wasmlet_requests_total{route=\"(none)\",version=\"(none)\",code=\"4xx\"}",
            2.0,
        ),
        (
            "wasmlet_requests_total{route=\"/trap\",version=\"stable\",code=\"5xx\"}",
            1.0,
        ),
        (
            "wasmlet_requests_total{route=\"/spin\",version=\"stable\",code=\"5xx\"}",
            1.0,
        ),
        (
            "wasmlet_handler_faults_total{route=\"/trap\",version=\"stable\",kind=\"trap\"}",
            1.0,
        ),
        (
            "wasmlet_handler_faults_total{route=\"/spin\",version=\"stable\",kind=\"timeout\"}",
            1.0,
        ),
        (
            "wasmlet_handler_faults_total{route=\"/good\",version=\"stable\",kind=\"trap\"}",
            0.0,
        ),
        (
            "wasmlet_request_duration_seconds_count{route=\"/good\",version=\"stable\"}",
            3.0,
        ),
        (
            "wasmlet_response_body_bytes_total{route=\"/good\",version=\"stable\"}",
            6.0,
        ),
        ("wasmlet_requests_in_flight", 0.0),
        ("wasmlet_reloads_total{outcome=\"published\"}", 1.0),
        (
            "wasmlet_requests_rejected_total{reason=\"overloaded\"}",
            0.0,
        ),
    ];
    for (series, value) in expect {
        assert_eq!(sample(&text, series), value, "{series}\n{text}");
    }
    let digest = crate::foundation::sha256_hex(&std::fs::read(wasm::V1).unwrap());
    assert!(
        text.contains(&format!(
            "wasmlet_handler_info{{route=\"/good\",version=\"stable\",component=\"{}\",digest=\"sha256:{digest}\"}} 1",
            wasm::V1
        )),
        "{text}"
    );
    let rss = sample(&text, "process_resident_memory_bytes");
    assert!(rss > 1e6);
    // The cgroup holds this process (and, here, the test's own), so its
    // working set is at least what the host holds of its own anonymous
    // memory; on a machine without a readable cgroup the series is absent.
    if crate::common::memory_cgroup_readable() {
        let working_set = sample(&text, "wasmlet_memory_working_set_bytes");
        assert!(
            working_set > rss / 2.0,
            "working set {working_set} vs RSS {rss}"
        );
    }
    assert!(sample(&text, "process_open_fds") > 3.0);
    assert!(sample(&text, "process_start_time_seconds") > 1.7e9);
    assert!(
        text.contains("wasmlet_component_compile_seconds_count{cache=\"disabled\"} 3"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_exposition_parses_as_openmetrics() {
    let (_dir, manifest) = mix_manifest();
    let host = Wasmlet::serve(&["--config", &manifest]);
    get(host.public, "/good").await;
    get(host.public, "/trap").await;
    let text = get(host.admin, "/metrics").await.text();
    let script = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
families = {f.name: f for f in text_string_to_metric_families(sys.stdin.read())}
for name in ["wasmlet_requests", "wasmlet_request_duration_seconds", "wasmlet_handler_faults",
             "wasmlet_requests_in_flight", "wasmlet_reloads", "wasmlet_handler_info",
             "process_resident_memory_bytes"]:
    assert name in families, (name, sorted(families))
print("parsed", len(families))
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "parser failed (pip install prometheus-client; scripts/test.sh does):\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn request_ids_are_returned_and_logged_as_json() {
    let host = Wasmlet::serve(&[wasm::HELLO, "--log-format", "json"]);
    let r = request_with(
        host.public,
        "GET",
        "/",
        &[("x-request-id", "trace-abc-123")],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.header("x-request-id"), Some("trace-abc-123"));
    let line = host
        .wait_for_log(Duration::from_secs(5), |l| l.contains("trace-abc-123"))
        .expect("request line in the log");
    let json: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
    assert_eq!(json["message"], "request");
    assert_eq!(json["request_id"], "trace-abc-123");
    assert_eq!(json["method"], "GET");
    assert_eq!(json["path"], "/");
    assert_eq!(json["route"], "/...");
    assert_eq!(json["status"], 200);
    assert!(json["duration_ms"].as_f64().is_some());
    // `sha256:HEX`, as /handlers spells it (issue 31, finding 10).
    let digest = crate::foundation::sha256_hex(&std::fs::read(wasm::HELLO).unwrap());
    assert_eq!(json["digest"], format!("sha256:{digest}"));

    // Without one, a fresh id is made and returned.
    let a = get(host.public, "/").await;
    let b = get(host.public, "/").await;
    let (a, b) = (
        a.header("x-request-id").unwrap(),
        b.header("x-request-id").unwrap(),
    );
    assert_ne!(a, b);
    for line in host.logs() {
        if line.starts_with('{') {
            serde_json::from_str::<serde_json::Value>(&line)
                .unwrap_or_else(|e| panic!("{e}: {line}"));
        }
    }
}
