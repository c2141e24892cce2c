//! Issue 18: opt-in instance reuse. The `counter` fixture answers how many
//! requests its instance has served, so reuse shows from outside.

use crate::common::*;
use std::time::{Duration, Instant};

/// A manifest of `(path, extra TOML lines)` routes, all serving `counter`.
fn counter_routes(routes: &[(&str, &str)]) -> (tempfile::TempDir, String) {
    let dir = tempdir();
    let mut toml = String::new();
    for (path, extra) in routes {
        toml.push_str(&format!(
            "[[route]]\npath = \"{path}\"\ncomponent = \"{}\"\n{extra}\n\n",
            wasm::COUNTER
        ));
    }
    let manifest = dir.path().join("wasmlet.toml");
    write(&manifest, toml);
    let manifest = path_str(&manifest).to_string();
    (dir, manifest)
}

/// The counts `n` requests to `path`, one after another, answer.
pub async fn counts(host: &Wasmlet, path: &str, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        let r = get(host.public, path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        out.push(r.text());
    }
    out
}

/// Waits up to 10 s for `series` to read `value`.
pub async fn until_metric(host: &Wasmlet, series: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(host, series).await != value {
        assert!(Instant::now() < deadline, "{series} never read {value}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn series(name: &str, route: &str) -> String {
    format!("{name}{{route=\"{route}\"}}")
}

#[tokio::test(flavor = "multi_thread")]
async fn reuse_is_opt_in_per_route_and_bounded_by_its_count() {
    let (_dir, manifest) = counter_routes(&[("/fresh", ""), ("/reused", "max_instance_reuse = 3")]);
    let host = Wasmlet::serve(&["--config", &manifest]);

    assert_eq!(counts(&host, "/fresh", 3).await, ["1", "1", "1"]);
    assert_eq!(
        counts(&host, "/reused", 5).await,
        ["1", "2", "3", "1", "2"],
        "an instance serves 3 requests, then a fresh one takes over"
    );

    let text = get(host.admin, "/metrics").await.text();
    let value = |name: &str, route: &str| sample(&text, &series(name, route));
    assert_eq!(value("wasmlet_instances_created_total", "/fresh"), 3.0);
    assert_eq!(value("wasmlet_instances_created_total", "/reused"), 2.0);
    assert_eq!(value("wasmlet_instance_requests_count", "/fresh"), 3.0);
    assert_eq!(value("wasmlet_instance_requests_sum", "/fresh"), 3.0);
    // Only the first /reused instance has been dropped, after 3 requests.
    assert_eq!(value("wasmlet_instance_requests_count", "/reused"), 1.0);
    assert_eq!(value("wasmlet_instance_requests_sum", "/reused"), 3.0);
    assert_eq!(value("wasmlet_idle_instances", "/reused"), 1.0);
    assert_eq!(value("wasmlet_idle_instances", "/fresh"), 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_host_wide_flag_sets_the_default_and_a_route_can_opt_out() {
    let (_dir, manifest) =
        counter_routes(&[("/default", ""), ("/opt-out", "max_instance_reuse = 1")]);
    let host = Wasmlet::serve_with_env(
        &["--config", &manifest],
        &[("WASMLET_MAX_INSTANCE_REUSE_COUNT", "100")],
    );
    assert_eq!(counts(&host, "/default", 3).await, ["1", "2", "3"]);
    assert_eq!(counts(&host, "/opt-out", 2).await, ["1", "1"]);

    let (status, _, stderr) = run(&["serve", wasm::COUNTER, "--max-instance-reuse-count", "0"]);
    assert!(!status.success());
    assert!(stderr.contains("--max-instance-reuse-count"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_route_asking_for_no_instances_is_refused_naming_the_key() {
    let (dir, manifest) = counter_routes(&[("/", "max_instance_reuse = 0")]);
    let (status, _, stderr) = run(&["serve", "--config", &manifest]);
    assert!(!status.success());
    assert!(stderr.contains("max_instance_reuse"), "{stderr}");
    assert!(stderr.contains("wasmlet.toml"), "{stderr}");
    drop(dir);
}

/// A trap, a timeout and a memory limit each retire the instance they hit
/// (the next request counts from 1 again), and each limit applies to the
/// request on a reused instance as it would on a fresh one.
#[tokio::test(flavor = "multi_thread")]
async fn an_instance_that_faults_is_never_reused() {
    let (_dir, manifest) = counter_routes(&[(
        "/...",
        "max_instance_reuse = 100\ntimeout = \"500ms\"\nmax_memory = \"32MiB\"",
    )]);
    let host = Wasmlet::serve(&["--config", &manifest]);
    let faults = [
        ("/?then=trap", 500),
        ("/?then=spin", 504),
        ("/?then=hog", 500),
    ];
    each_fault_retires_its_instance(&host, "/", &faults, "/?then=trap").await;
}

/// For each `(path, status)` of `faults`: after two requests to `count`
/// (which answers its instance's count) on one instance, `path` gets
/// `status` within 5 s and its instance is gone (the next count is 1);
/// `retire` (a trap) then drops the instance that counted, so each round
/// starts at 1. The route is `/...`; trap, timeout and memory faults are
/// counted on its series.
pub async fn each_fault_retires_its_instance(
    host: &Wasmlet,
    count: &str,
    faults: &[(&str, u16)],
    retire: &str,
) {
    for &(fault, status) in faults {
        assert_eq!(counts(host, count, 2).await, ["1", "2"], "before {fault}");
        let started = Instant::now();
        let r = get(host.public, fault).await;
        assert_eq!(r.status, status, "{fault}: {}", r.text());
        assert!(started.elapsed() < Duration::from_secs(5), "{fault}");
        // A 0.3 instance whose request expired ends when its guest's work
        // does, or a timeout later, holding the request's slot meanwhile:
        // requests sent before then could meet it still winding down.
        let deadline = Instant::now() + Duration::from_secs(5);
        while metric(host, "wasmlet_requests_in_flight").await > 0.0 {
            assert!(
                Instant::now() < deadline,
                "the instance that hit `{fault}` never ended"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            counts(host, count, 1).await,
            ["1"],
            "the instance that hit `{fault}` is gone"
        );
        let r = get(host.public, retire).await;
        assert_eq!(r.status, 500, "{retire} after {fault}: {}", r.text());
    }
    let text = get(host.admin, "/metrics").await.text();
    for kind in ["trap", "timeout", "memory"] {
        let line = format!(
            "wasmlet_handler_faults_total{{route=\"/...\",version=\"stable\",kind=\"{kind}\"}}"
        );
        assert!(sample(&text, &line) >= 1.0, "{kind} not counted:\n{text}");
    }
}

/// A guest that survives a refused memory grow still answers, but its
/// instance has met its memory limit and is not kept.
#[tokio::test(flavor = "multi_thread")]
async fn an_instance_that_met_its_memory_limit_is_dropped_even_if_it_answered() {
    let (_dir, manifest) =
        counter_routes(&[("/...", "max_instance_reuse = 100\nmax_memory = \"32MiB\"")]);
    let host = Wasmlet::serve(&["--config", &manifest]);
    assert_eq!(counts(&host, "/", 2).await, ["1", "2"]);
    let r = get(host.public, "/?then=grow").await;
    assert_eq!((r.status, r.text()), (200, "refused 3".into()));
    assert_eq!(counts(&host, "/", 1).await, ["1"], "a new instance");
}

/// Each request on a reused instance gets the whole time limit: two
/// requests of 300 ms under a 500 ms limit both succeed on one instance.
#[tokio::test(flavor = "multi_thread")]
async fn the_timeout_is_per_request_not_per_instance() {
    let (_dir, manifest) =
        counter_routes(&[("/...", "max_instance_reuse = 10\ntimeout = \"500ms\"")]);
    let host = Wasmlet::serve(&["--config", &manifest]);
    let a = get(host.public, "/?then=sleep&ms=300").await;
    let b = get(host.public, "/?then=sleep&ms=300").await;
    assert_eq!((a.status, a.text()), (200, "1".into()));
    assert_eq!((b.status, b.text()), (200, "2".into()));
    let slow = get(host.public, "/?then=sleep&ms=2000").await;
    assert_eq!(slow.status, 504);
    assert_eq!(counts(&host, "/", 1).await, ["1"]);
}

/// The count fixture reads its body: a chunked body over the route's limit
/// gets 413 on a reused instance, and the instance is not kept.
#[tokio::test(flavor = "multi_thread")]
async fn body_limits_hold_under_reuse() {
    let dir = tempdir();
    let manifest = dir.path().join("wasmlet.toml");
    write(
        &manifest,
        format!(
            "[[route]]\npath = \"/...\"\ncomponent = \"{}\"\nmax_instance_reuse = 10\nmax_body_size = \"1KiB\"\n",
            wasm::COUNT
        ),
    );
    let host = Wasmlet::serve(&["--config", path_str(&manifest)]);
    assert_eq!(request(host.public, "POST", "/", "abc").await.text(), "3");
    let big = http::Request::post("/")
        .header("host", "x")
        .body(streamed_body(4096, 512))
        .unwrap();
    let r = send(host.public, big).await.unwrap();
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(request(host.public, "POST", "/", "abcde").await.text(), "5");
    let created = metric(&host, &series("wasmlet_instances_created_total", "/...")).await;
    assert_eq!(created, 2.0, "one before the refused body, one after");
}

/// With --max-total-memory an instance is charged while it lives: an idle
/// one keeps its charge until it is dropped at its idle timeout.
#[tokio::test(flavor = "multi_thread")]
async fn idle_instances_hold_their_memory_charge_until_they_expire() {
    let (_dir, manifest) = counter_routes(&[
        ("/fresh", ""),
        (
            "/reused",
            "max_instance_reuse = 10\nidle_instance_timeout = \"300ms\"",
        ),
    ]);
    let host = Wasmlet::serve(&["--config", &manifest, "--max-total-memory", "256MiB"]);
    let used = || async { metric(&host, "wasmlet_guest_memory_bytes").await };

    assert_eq!(counts(&host, "/fresh", 1).await, ["1"]);
    assert_eq!(used().await, 0.0, "a fresh instance gives it all back");

    assert_eq!(counts(&host, "/reused", 1).await, ["1"]);
    let held = used().await;
    assert!(held > 0.0, "the idle instance is charged");
    let idle = series("wasmlet_idle_instances", "/reused");
    assert_eq!(metric(&host, &idle).await, 1.0);

    let deadline = Instant::now() + Duration::from_secs(10);
    while used().await > 0.0 {
        assert!(Instant::now() < deadline, "the idle instance never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metric(&host, &idle).await, 0.0);
    assert_eq!(counts(&host, "/reused", 1).await, ["1"], "a new instance");
}

/// Issue 26: idle instances give their memory charge up before a request
/// is refused for memory. An idle instance holding 64 MiB of a 100 MiB
/// budget is dropped (the idle gauge shows it) so that another route's
/// request can grow by 64 MiB.
#[tokio::test(flavor = "multi_thread")]
async fn idle_instances_are_dropped_before_a_request_is_refused_memory() {
    let (_dir, manifest) = counter_routes(&[
        ("/fresh", ""),
        (
            "/reused",
            "max_instance_reuse = 10\nidle_instance_timeout = \"60s\"",
        ),
    ]);
    let host = Wasmlet::serve(&["--config", &manifest, "--max-total-memory", "100MiB"]);
    let used = || async { metric(&host, "wasmlet_guest_memory_bytes").await };
    let idle = series("wasmlet_idle_instances", "/reused");

    assert_eq!(counts(&host, "/reused?then=grow", 1).await, ["grown 1"]);
    until_metric(&host, &idle, 1.0).await;
    let held = used().await;
    assert!(
        held > f64::from(64u32 << 20),
        "the idle instance holds {held}"
    );

    let r = get(host.public, "/fresh?then=grow").await;
    assert_eq!(
        (r.status, r.text()),
        (200, "grown 1".into()),
        "the idle instance's {held} bytes were not given up"
    );
    assert_eq!(metric(&host, &idle).await, 0.0, "dropped to make room");
    let retired = series("wasmlet_instance_requests_count", "/reused");
    assert_eq!(metric(&host, &retired).await, 1.0);
    assert_eq!(counts(&host, "/reused", 1).await, ["1"], "a new instance");
}

/// Concurrent requests never share an instance, and none serves past its
/// count.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_stay_within_the_count() {
    let (_dir, manifest) = counter_routes(&[("/...", "max_instance_reuse = 4")]);
    let host = Wasmlet::serve(&["--config", &manifest]);
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let addr = host.public;
            tokio::spawn(async move { get(addr, "/?then=sleep&ms=20").await })
        })
        .collect();
    let mut ones = 0;
    for task in tasks {
        let r = task.await.unwrap();
        assert_eq!(r.status, 200);
        let n: u32 = r.text().parse().unwrap();
        assert!((1..=4).contains(&n), "{n}");
        ones += usize::from(n == 1);
    }
    let created = metric(&host, &series("wasmlet_instances_created_total", "/...")).await;
    assert_eq!(created, ones as f64, "every new instance answered 1 first");
    assert!(created >= 8.0, "32 requests at 4 each need at least 8");
}

/// SIGTERM with idle instances and requests in flight on reused ones: the
/// requests finish, the host exits 0 without waiting for idle timeouts.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_with_idle_and_busy_reused_instances() {
    let (_dir, manifest) = counter_routes(&[(
        "/...",
        "max_instance_reuse = 100\nidle_instance_timeout = \"60s\"",
    )]);
    let mut host = Wasmlet::serve(&["--config", &manifest, "--drain-timeout", "10s"]);
    // Three instances, each having served one request, left idle.
    let warm: Vec<_> = (0..3)
        .map(|_| {
            let addr = host.public;
            tokio::spawn(async move { get(addr, "/?then=sleep&ms=300").await })
        })
        .collect();
    for task in warm {
        assert_eq!(task.await.unwrap().status, 200);
    }
    let idle = series("wasmlet_idle_instances", "/...");
    assert!(metric(&host, &idle).await >= 2.0, "the warm-up overlapped");

    let busy: Vec<_> = (0..2)
        .map(|_| {
            let addr = host.public;
            tokio::spawn(async move { get(addr, "/?then=sleep&ms=1000").await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    host.signal("TERM");
    let started = Instant::now();
    for task in busy {
        let r = task.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let n: u32 = r.text().parse().unwrap();
        assert!(n >= 2, "ran on a reused instance: {n}");
    }
    let status = host
        .wait(Duration::from_secs(10))
        .expect("exits after draining");
    assert_eq!(status.code(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "idle instances held the exit up: {:?}",
        started.elapsed()
    );
}

/// The same counter, the same reuse count, one request at a time: wasmlet
/// and `wasmtime serve --max-instance-reuse-count` answer the same, with
/// reuse and without.
#[tokio::test(flavor = "multi_thread")]
async fn reuse_counts_the_same_as_under_wasmtime_serve() {
    // One request at a time, with a pause after each: an instance goes back
    // to its pool only after its response is sent, so on a busy machine the
    // next request could find it still busy and get a new one (seen with
    // wasmtime serve). The idle timeout is far longer than the pause.
    async fn paced(addr: std::net::SocketAddr) -> Vec<String> {
        let mut out = Vec::new();
        for _ in 0..5 {
            let r = get(addr, "/").await;
            assert_eq!(r.status, 200, "{}", r.text());
            out.push(r.text());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        out
    }
    for reuse in ["1", "3"] {
        let flags = [
            "--max-instance-reuse-count",
            reuse,
            "--idle-instance-timeout",
            "30s",
        ];
        let reference = crate::parity::start_reference_with(wasm::COUNTER, &flags);
        let host = Wasmlet::serve(&[&[wasm::COUNTER][..], &flags].concat());
        let want = paced(reference.addr).await;
        assert_eq!(paced(host.public).await, want, "reuse {reuse}");
        let expected: &[&str] = if reuse == "1" {
            &["1", "1", "1", "1", "1"]
        } else {
            &["1", "2", "3", "1", "2"]
        };
        assert_eq!(want, expected, "wasmtime serve, reuse {reuse}");
    }
}

/// A reused instance's output is logged under the request that wrote it,
/// and printing does not stop an instance from being reused.
#[tokio::test(flavor = "multi_thread")]
async fn guest_output_is_tagged_with_each_requests_own_id() {
    let host = Wasmlet::serve(&[wasm::STDOUT, "--max-instance-reuse-count", "10"]);
    for id in ["reuse-out-1", "reuse-out-2", "reuse-out-3"] {
        let r = request_with(host.public, "GET", "/", &[("x-request-id", id)], "").await;
        assert_eq!(r.text(), "printed");
    }
    for id in ["reuse-out-1", "reuse-out-2", "reuse-out-3"] {
        let line = host.wait_for_log(Duration::from_secs(5), |l| {
            l.contains("hello from stdout") && l.contains(&format!("request_id={id}"))
        });
        assert!(line.is_some(), "no stdout line for {id}");
    }
    let created = metric(&host, &series("wasmlet_instances_created_total", "/...")).await;
    assert_eq!(created, 1.0, "one instance served all three");
}
