//! Issue 16: hostile guests and hostile components cannot take a replica
//! down or reach what they should not (the guest- and load-level findings).

use crate::common::*;
use bytes::Bytes;
use std::path::Path;
use std::time::{Duration, Instant};

/// Time a reload has to show its outcome.
const RELOAD_BOUND: Duration = Duration::from_secs(10);

/// A manifest of `(path, component, extra TOML lines)` in `dir`.
fn manifest_in(dir: &Path, routes: &[(&str, &str, &str)]) -> String {
    let mut toml = String::new();
    for (path, component, extra) in routes {
        toml.push_str(&format!(
            "[[route]]\npath = \"{path}\"\ncomponent = \"{component}\"\n{extra}\n\n"
        ));
    }
    let manifest = dir.join("wasmlet.toml");
    write(&manifest, toml);
    path_str(&manifest).to_string()
}

/// Runs `wasmlet serve ARGS` expecting a start-up failure; returns the one
/// error line.
fn serve_fails(args: &[&str]) -> String {
    let mut full = vec!["serve"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]);
    let (status, stdout, stderr) = run_for(&full, Duration::from_secs(30));
    assert_eq!(status, Some(1), "stdout: {stdout}\nstderr: {stderr}");
    assert!(!stderr.contains("listening"), "it must not bind: {stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "exactly one error line: {stderr}");
    errors[0].to_string()
}

/// Runs the binary for at most `limit` (then kills it): (exit code, stdout,
/// stderr); a start-up that should fail but serves cannot hang the test.
fn run_for(args: &[&str], limit: Duration) -> (Option<i32>, String, String) {
    use std::io::Read;
    let mut child = std::process::Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("failed to run wasmlet");
    let deadline = Instant::now() + limit;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (code, stdout, stderr)
}

/// Waits until `/handlers` reports a failed reload; returns its error.
async fn reload_error(host: &Wasmlet) -> String {
    let deadline = Instant::now() + RELOAD_BOUND;
    loop {
        let doc = handlers(host).await;
        if let Some(error) = doc["last_error"].as_str() {
            assert_eq!(doc["ready"], true, "the old version still serves");
            return error.to_string();
        }
        assert!(Instant::now() < deadline, "no reload error: {doc}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Replaces `target` with a copy of `from`, atomically.
fn replace(from: &str, target: &Path) {
    let tmp = target.with_extension("tmp");
    copy(from, &tmp);
    std::fs::rename(&tmp, target).unwrap();
}

// Finding 2: what a guest makes the host hold is capped and charged.
#[tokio::test(flavor = "multi_thread")]
async fn a_guest_hoarding_header_maps_gets_500_and_the_host_stays_small() {
    let host = Wasmlet::serve(&[wasm::HEADER_HOARD, "--max-memory", "64MiB"]);
    assert_eq!(get(host.public, "/?n=4").await.text(), "kept 4");
    let before = status_kib(host.pid(), "VmRSS");
    // 12,800 maps of 32 KiB: 400 MiB of host heap if nothing stops it.
    // Checked at each epoch tick, the 64 MiB limit is overshot by what the
    // guest copies between two ticks (about 10 MiB here), hence the margin.
    let r = get(host.public, "/?n=12800&kib=32").await;
    assert_eq!(r.status, 500, "{}", r.text());
    let peak = status_kib(host.pid(), "VmHWM");
    assert!(
        peak < before + (150 << 10),
        "the host grew from {before} KiB to a peak of {peak} KiB"
    );
    let line = host
        .wait_for_log(Duration::from_secs(5), |l| l.contains("handler fault"))
        .unwrap();
    assert!(line.contains("kind=memory"), "{line}");
    // The host is still up and the guest's share was given back.
    assert_eq!(get(host.public, "/?n=4").await.text(), "kept 4");
}

// Finding 3: the trial instantiation runs under the route's limits.
#[test]
fn a_component_too_big_for_its_route_is_refused_at_startup() {
    let dir = tempdir();
    let manifest = manifest_in(
        dir.path(),
        &[("/...", wasm::BIG_MEMORY, "max_memory = \"64MiB\"")],
    );
    let e = serve_fails(&["--config", &manifest]);
    assert!(
        e.contains("big_memory.wasm") && e.contains("memory limit") && e.contains("67108864"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_too_big_for_its_route_keeps_the_last_good() {
    let dir = tempdir();
    let handler = dir.path().join("handler.wasm");
    copy(wasm::V1, &handler);
    let manifest = manifest_in(
        dir.path(),
        &[("/...", "handler.wasm", "max_memory = \"64MiB\"")],
    );
    let host = Wasmlet::serve(&["--config", &manifest]);
    assert_eq!(get(host.public, "/").await.text(), "v1");
    replace(wasm::BIG_MEMORY, &handler);
    let error = reload_error(&host).await;
    assert!(
        error.contains("handler.wasm") && error.contains("memory limit"),
        "{error}"
    );
    assert_eq!(get(host.public, "/").await.text(), "v1");
}

// Finding 7: a wildcard rule never reaches loopback; a rule naming the
// loopback literal does. Only loopback is ever contacted here.
#[tokio::test(flavor = "multi_thread")]
async fn a_wildcard_outbound_rule_never_reaches_loopback_or_the_admin_port() {
    let upstream = upstream().await;
    let dir = tempdir();
    let manifest = manifest_in(
        dir.path(),
        &[
            (
                "/any/...",
                wasm::OUTBOUND,
                "allowed_outbound_hosts = [\"http://*:*\"]",
            ),
            (
                "/named/...",
                wasm::OUTBOUND,
                &format!("allowed_outbound_hosts = [\"http://{upstream}\"]"),
            ),
            (
                "/v6/...",
                wasm::OUTBOUND,
                "allowed_outbound_hosts = [\"http://[::1]\"]",
            ),
        ],
    );
    let host = Wasmlet::serve(&["--config", &manifest]);
    let ask = |route: &str, url: String| format!("{route}?url={url}");

    for target in [
        format!("http://{}/metrics", host.admin),
        format!("http://{upstream}/x"),
        format!("http://localhost:{}/x", upstream.port()),
    ] {
        let r = get(host.public, &ask("/any/", target.clone())).await;
        assert_eq!(r.status, 502, "{target}: {}", r.text());
        assert!(r.text().contains("HttpRequestDenied"), "{}", r.text());
    }
    let r = get(host.public, &ask("/named/", format!("http://{upstream}/x"))).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "upstream 200: upstream says hi")
    );
    let refused = host.wait_for_log(Duration::from_secs(5), |l| {
        l.contains("outbound request denied") && l.contains("loopback")
    });
    assert!(refused.is_some(), "{}", host.logs().join("\n"));
    let counted = metric(
        &host,
        "wasmlet_outbound_denied_total{route=\"/any/...\",reason=\"address\"}",
    )
    .await;
    assert_eq!(counted, 3.0);
}

// Finding 8: a cache directory others can write is not used.
#[tokio::test(flavor = "multi_thread")]
async fn a_cache_dir_others_can_write_is_not_used() {
    use std::os::unix::fs::PermissionsExt;
    let cache = tempdir();
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let host = Wasmlet::serve(&[wasm::HELLO, "--cache-dir", path_str(cache.path())]);
    assert_eq!(get(host.public, "/").await.text(), "Hello World!");
    let warned = host.wait_for_log(Duration::from_secs(5), |l| {
        l.contains("compile cache disabled") && l.contains("writable")
    });
    assert!(warned.is_some(), "{}", host.logs().join("\n"));
    let entries = std::fs::read_dir(cache.path()).unwrap().count();
    assert_eq!(entries, 0, "nothing is written to it");
}

// Finding 9: guest output is capped in lines; the host's lines survive.
#[tokio::test(flavor = "multi_thread")]
async fn guest_output_is_capped_in_lines_and_the_request_line_survives() {
    let host = Wasmlet::serve(&[wasm::LOG_FLOOD]);
    let id = "req-flood-1";
    let r = request_with(
        host.public,
        "GET",
        "/",
        &[("x-request-id", id)],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.text(), "flooded");
    let request_line = host.wait_for_log(Duration::from_secs(5), |l| {
        l.contains("request method=") && l.contains(id)
    });
    assert!(request_line.is_some(), "the host's request line is logged");
    // Give the log writer time to drain what it was given.
    std::thread::sleep(Duration::from_millis(500));
    let guest_lines = host
        .logs()
        .iter()
        .filter(|l| l.contains(id) && l.contains("stream=stdout"))
        .count();
    assert!(
        (1..=257).contains(&guest_lines),
        "{guest_lines} guest lines logged"
    );
    let truncated = host.wait_for_log(Duration::from_secs(5), |l| {
        l.contains(id) && l.contains("guest output truncated")
    });
    assert!(truncated.is_some(), "the cut is said once");
}

// Finding 12: component size and compile time are bounded.
#[test]
fn a_component_over_max_component_size_is_refused() {
    let e = serve_fails(&[wasm::HELLO, "--max-component-size", "1KiB"]);
    assert!(
        e.contains("hello.wasm") && e.contains("--max-component-size"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_whose_compile_is_too_slow_is_abandoned() {
    let dir = tempdir();
    let handler = dir.path().join("handler.wasm");
    copy(wasm::V1, &handler);
    let manifest = manifest_in(dir.path(), &[("/...", "handler.wasm", "")]);
    let host = Wasmlet::serve(&["--config", &manifest, "--compile-timeout", "1ms"]);
    assert_eq!(get(host.public, "/").await.text(), "v1");
    replace(wasm::V2, &handler);
    let error = reload_error(&host).await;
    assert!(
        error.contains("handler.wasm") && error.contains("--compile-timeout"),
        "{error}"
    );
    assert_eq!(get(host.public, "/").await.text(), "v1");
    // The abandoned compile does not hold the reload lock: the next
    // change gets its own (failed) reload.
    let errors = "wasmlet_reloads_total{outcome=\"error\"}";
    assert_eq!(metric(&host, errors).await, 1.0);
    replace(wasm::HELLO, &handler);
    let deadline = Instant::now() + RELOAD_BOUND;
    while metric(&host, errors).await < 2.0 {
        assert!(Instant::now() < deadline, "the next reload never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
