//! Issue 18: wasi:http 0.3 handlers. The `p3` fixture exports
//! `wasi:http/handler@0.3.0`; its `/count` shows reuse and its `/sleep`
//! how many requests its instance was running at once.
//!
//! Each request worker thread drives its own 0.3 instances, and every
//! request here comes on a new connection, which may land on either
//! thread: tests that count requests per instance run one worker
//! (`--workers 1`), so consecutive requests can find the same instance.

use crate::common::*;
use crate::reuse::{counts, each_fault_retires_its_instance};
use std::time::{Duration, Instant};

/// A manifest with one route `/...` serving `p3` with `extra` TOML lines.
fn p3_route(extra: &str) -> (tempfile::TempDir, String) {
    let dir = tempdir();
    let manifest = dir.path().join("wasmlet.toml");
    write(
        &manifest,
        format!(
            "[[route]]\npath = \"/...\"\ncomponent = \"{}\"\n{extra}\n",
            wasm::P3
        ),
    );
    let manifest = path_str(&manifest).to_string();
    (dir, manifest)
}

const CREATED: &str = "wasmlet_instances_created_total{route=\"/...\"}";

/// `n` requests to `path` sent at once; their answers.
async fn at_once(host: &Wasmlet, path: &'static str, n: usize) -> Vec<String> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let addr = host.public;
            tokio::spawn(async move { get(addr, path).await })
        })
        .collect();
    let mut out = Vec::new();
    for task in tasks {
        let r = task.await.unwrap();
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        out.push(r.text());
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_p3_handler_is_checked_and_served_fresh_by_default() {
    let (status, stdout, stderr) = run(&["check", wasm::P3]);
    assert!(status.success(), "{stderr}");
    assert!(
        stdout.contains("wasi:http: 0.3.0 (exports wasi:http/handler@0.3.0)"),
        "{stdout}"
    );

    let host = Wasmlet::serve(&[wasm::P3]);
    let r = get(host.public, "/").await;
    assert_eq!((r.status, r.text()), (200, "Hello World!".into()));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    let body = "a body, streamed back".repeat(1000);
    let r = request(host.public, "POST", "/echo", body.clone()).await;
    assert_eq!((r.status, r.text()), (200, body));
    assert_eq!(counts(&host, "/count", 3).await, ["1", "1", "1"]);
    assert_eq!(
        at_once(&host, "/sleep?n=200", 8).await,
        ["1"; 8],
        "without opting in, no instance runs two requests"
    );
    assert_eq!(metric(&host, CREATED).await, 13.0, "one per request");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_share_one_instance_when_the_route_opts_in() {
    let (_dir, manifest) = p3_route("max_instance_reuse = 1000\nmax_concurrent_reuse = 16");
    let host = Wasmlet::serve(&["--config", &manifest, "--workers", "1"]);
    // One instance, warmed: requests after it find it idle.
    assert_eq!(counts(&host, "/count", 3).await, ["1", "2", "3"]);
    // Eight requests, 50 ms apart, each waiting 1.5 s: each new one finds
    // the instance waiting (a burst in one instant would go to new
    // instances, as the driver spreads requests that may be busy).
    let started = Instant::now();
    let tasks: Vec<_> = (0..8u64)
        .map(|i| {
            let addr = host.public;
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50 * i)).await;
                get(addr, "/sleep?n=1500").await
            })
        })
        .collect();
    let mut sharing = Vec::new();
    for task in tasks {
        let r = task.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        sharing.push(r.text().parse::<u64>().unwrap());
    }
    let elapsed = started.elapsed();
    assert!(
        sharing.iter().max() >= Some(&4),
        "requests did not share an instance: {sharing:?} in flight at once"
    );
    let created = metric(&host, CREATED).await;
    assert!(
        created <= 2.0,
        "{created} instances for 8 requests: {sharing:?}"
    );
    assert_eq!(counts(&host, "/count", 1).await, ["4"], "the same instance");
    // Eight 1.5 s waits, interleaved; in turn they would take 12 s.
    assert!(elapsed < Duration::from_secs(6), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn max_concurrent_reuse_caps_the_requests_an_instance_runs_at_once() {
    let (_dir, manifest) = p3_route("max_instance_reuse = 1000\nmax_concurrent_reuse = 2");
    let host = Wasmlet::serve(&["--config", &manifest, "--workers", "1"]);
    let sharing = at_once(&host, "/sleep?n=300", 12).await;
    assert!(
        sharing.iter().all(|n| n == "1" || n == "2"),
        "{sharing:?}: more than 2 at once"
    );
    assert!(metric(&host, CREATED).await >= 6.0, "12 requests, 2 each");
}

/// A trap, a timeout and a memory limit each fail their request with the
/// status a 0.2 handler gets, and retire the instance they hit: the next
/// request counts from 1 again.
#[tokio::test(flavor = "multi_thread")]
async fn an_instance_that_faults_is_never_reused() {
    let (_dir, manifest) = p3_route(
        "max_instance_reuse = 100\nmax_concurrent_reuse = 4\ntimeout = \"500ms\"\nmax_memory = \"32MiB\"\nidle_instance_timeout = \"30s\"",
    );
    let host = Wasmlet::serve(&["--config", &manifest, "--workers", "1"]);
    let faults = [
        ("/trap", 500),
        ("/spin", 504),
        ("/sleep?n=3000", 504),
        ("/alloc?n=64", 500),
    ];
    each_fault_retires_its_instance(&host, "/count", &faults, "/trap").await;
}

/// A guest spinning on a shared instance takes the requests running beside
/// it down with it: they fail (a 0.3 instance is one unit), and later
/// requests get a new instance.
#[tokio::test(flavor = "multi_thread")]
async fn a_spinning_request_ends_its_instance_and_the_requests_beside_it() {
    let (_dir, manifest) =
        p3_route("max_instance_reuse = 100\nmax_concurrent_reuse = 8\ntimeout = \"1s\"");
    let host = Wasmlet::serve(&["--config", &manifest, "--workers", "1"]);
    assert_eq!(counts(&host, "/count", 1).await, ["1"]);
    let beside = {
        let addr = host.public;
        tokio::spawn(async move { get(addr, "/sleep?n=3000").await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let spin = get(host.public, "/spin").await;
    assert_eq!(spin.status, 504, "{}", spin.text());
    let beside = beside.await.unwrap();
    assert!(beside.status >= 500, "{} {}", beside.status, beside.text());
    assert_eq!(counts(&host, "/count", 1).await, ["1"], "a new instance");
}

/// Body limits hold per request on a reused instance.
#[tokio::test(flavor = "multi_thread")]
async fn body_limits_hold_on_a_reused_instance() {
    let (_dir, manifest) =
        p3_route("max_instance_reuse = 100\nmax_concurrent_reuse = 4\nmax_body_size = \"1KiB\"");
    let host = Wasmlet::serve(&["--config", &manifest, "--workers", "1"]);
    assert_eq!(
        request(host.public, "POST", "/echo", "abc").await.text(),
        "abc"
    );
    let big = http::Request::post("/echo")
        .header("host", "x")
        .body(streamed_body(4096, 512))
        .unwrap();
    let r = send(host.public, big).await.unwrap();
    assert_eq!(r.status, 413, "{}", r.text());
    let r = request(host.public, "POST", "/echo", "x".repeat(2048)).await;
    assert_eq!(r.status, 413, "declared too large: {}", r.text());
    assert_eq!(
        request(host.public, "POST", "/echo", "de").await.text(),
        "de"
    );
}

/// SIGTERM with idle instances and requests in flight on a shared one: the
/// requests finish, the host exits 0 without waiting for idle timeouts.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_with_idle_and_busy_p3_instances() {
    let (_dir, manifest) = p3_route(
        "max_instance_reuse = 100\nmax_concurrent_reuse = 8\nidle_instance_timeout = \"60s\"",
    );
    let mut host = Wasmlet::serve(&[
        "--config",
        &manifest,
        "--drain-timeout",
        "10s",
        "--workers",
        "1",
    ]);
    assert_eq!(counts(&host, "/count", 1).await, ["1"]);
    let busy: Vec<_> = (0..4)
        .map(|_| {
            let addr = host.public;
            tokio::spawn(async move { get(addr, "/sleep?n=1000").await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    host.signal("TERM");
    let started = Instant::now();
    for task in busy {
        let r = task.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
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

/// A swap of a 0.3 route's component lets the old version's idle instance
/// go at once, with its memory charge, instead of at its idle timeout.
#[tokio::test(flavor = "multi_thread")]
async fn a_swap_drops_the_old_versions_idle_instances() {
    let dir = tempdir();
    let component = dir.path().join("handler.wasm");
    copy(wasm::P3, &component);
    let manifest = dir.path().join("wasmlet.toml");
    write(
        &manifest,
        "[[route]]\npath = \"/...\"\ncomponent = \"handler.wasm\"\nmax_instance_reuse = 100\nidle_instance_timeout = \"60s\"\n",
    );
    let host = Wasmlet::serve(&[
        "--config",
        path_str(&manifest),
        "--max-total-memory",
        "256MiB",
        "--workers",
        "1",
    ]);
    assert_eq!(counts(&host, "/count", 2).await, ["1", "2"]);
    let idle = "wasmlet_idle_instances{route=\"/...\"}";
    // The instance turns idle once its response's task is done, just after
    // the response is sent.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&host, idle).await < 1.0 {
        assert!(Instant::now() < deadline, "the instance never turned idle");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(metric(&host, "wasmlet_guest_memory_bytes").await > 0.0);

    copy(wasm::HELLO, &component);
    until_body(host.public, "/", "Hello World!", Duration::from_secs(20)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&host, idle).await > 0.0 || metric(&host, "wasmlet_guest_memory_bytes").await > 0.0
    {
        assert!(Instant::now() < deadline, "the old instance stayed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The same component, the same reuse flags: wasmlet and `wasmtime serve
/// -Sp3` answer the same, one request at a time.
#[tokio::test(flavor = "multi_thread")]
async fn p3_answers_the_same_as_under_wasmtime_serve() {
    async fn paced(addr: std::net::SocketAddr) -> Vec<String> {
        let mut out = vec![get(addr, "/").await.text()];
        out.push(request(addr, "POST", "/echo", "echo me").await.text());
        for _ in 0..5 {
            let r = get(addr, "/count").await;
            assert_eq!(r.status, 200, "{}", r.text());
            out.push(r.text());
            // An instance goes back to its pool after its response is sent.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        out
    }
    for reuse in ["1", "3"] {
        let flags = [
            "--max-instance-reuse-count",
            reuse,
            "--max-instance-concurrent-reuse-count",
            "4",
            "--idle-instance-timeout",
            "30s",
        ];
        let reference =
            crate::parity::start_reference_with(wasm::P3, &[&["-Sp3"][..], &flags].concat());
        let host = Wasmlet::serve(&[&[wasm::P3, "--workers", "1"][..], &flags].concat());
        let want = paced(reference.addr).await;
        assert_eq!(paced(host.public).await, want, "reuse {reuse}");
        // With 3 per instance: `/` and `/echo` are the first instance's
        // first two requests, its third is the first count.
        let counts: &[&str] = if reuse == "1" {
            &["1", "1", "1", "1", "1"]
        } else {
            &["1", "1", "2", "3", "1"]
        };
        assert_eq!(want[0], "Hello World!");
        assert_eq!(want[1], "echo me");
        assert_eq!(&want[2..], counts, "wasmtime serve, reuse {reuse}");
    }
}

/// Instances of the route alive now: made, less those dropped (each
/// dropped instance is observed once in `wasmlet_instance_requests`).
async fn live_instances(host: &Wasmlet) -> f64 {
    let text = get(host.admin, "/metrics").await.text();
    sample(&text, CREATED) - sample(&text, "wasmlet_instance_requests_count{route=\"/...\"}")
}

/// Issue 26 (11): a 0.3 guest can keep running after its response (the
/// task that wrote the body spins on). That work holds the request's slot
/// of --max-in-flight until it ends: past N such guests a request gets
/// 503, and once they are done requests are served again.
/// A request whose guest spins past its deadline gets its 504, and its
/// instance ends then: the guest spinning on (its `handle` never returned)
/// does not keep the request's --max-in-flight slot, or a CPU turn, for
/// another whole timeout.
#[tokio::test(flavor = "multi_thread")]
async fn a_timed_out_requests_instance_ends_at_once_and_gives_its_slot_back() {
    let host = Wasmlet::serve(&[
        wasm::P3,
        "--max-in-flight",
        "1",
        "--queue-timeout",
        "100ms",
        "--request-timeout",
        "1s",
        "--workers",
        "1",
    ]);
    for round in 0..3 {
        let r = get(host.public, "/spin").await;
        assert_eq!(r.status, 504, "round {round}: {}", r.text());
        let r = get(host.public, "/count").await;
        assert_eq!(
            r.status,
            200,
            "round {round}: the slot is back: {}",
            r.text()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn work_after_the_response_counts_against_max_in_flight() {
    let host = Wasmlet::serve(&[
        wasm::P3,
        "--max-in-flight",
        "2",
        "--queue-timeout",
        "50ms",
        "--request-timeout",
        "10s",
    ]);
    // Five in a row, each answered at once, each leaving its guest
    // spinning for 3 s after the response.
    let started = Instant::now();
    let mut statuses = Vec::new();
    let mut most_alive = 0.0f64;
    for _ in 0..5 {
        let r = get(host.public, "/linger?n=3000").await;
        statuses.push(r.status);
        if r.status == 200 {
            assert_eq!(r.text(), "ok");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        most_alive = most_alive.max(live_instances(&host).await);
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        most_alive <= 2.0,
        "{most_alive} guests running at once with --max-in-flight 2: {statuses:?}"
    );
    assert_eq!(statuses, [200, 200, 503, 503, 503]);
    // Their work ends within 3 s: the slots come back.
    let deadline = Instant::now() + Duration::from_secs(10);
    while live_instances(&host).await > 0.0 {
        assert!(
            Instant::now() < deadline,
            "the lingering guests never ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(host.public, "/").await.status, 200);
    assert_eq!(metric(&host, "wasmlet_requests_in_flight").await, 0.0);
}

/// Issue 26: an idle 0.3 instance gives its memory charge up when a new
/// instance cannot start within --max-total-memory: it is asked to leave,
/// and the new instance starts once it has. Route `/alloc` keeps an
/// instance holding nearly all of the budget; `/...` needs a fresh one.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_instance_leaves_when_a_new_one_needs_its_memory() {
    let dir = tempdir();
    let manifest = dir.path().join("wasmlet.toml");
    write(
        &manifest,
        format!(
            "[[route]]\npath = \"/alloc\"\ncomponent = \"{p3}\"\nmax_instance_reuse = 10\nidle_instance_timeout = \"60s\"\n\n\
             [[route]]\npath = \"/...\"\ncomponent = \"{p3}\"\n",
            p3 = wasm::P3
        ),
    );
    let host = Wasmlet::serve(&[
        "--config",
        path_str(&manifest),
        "--max-total-memory",
        "100MiB",
        "--workers",
        "1",
    ]);
    let used = || async { metric(&host, "wasmlet_guest_memory_bytes").await };
    let idle = "wasmlet_idle_instances{route=\"/alloc\"}";
    let r = get(host.public, &format!("/alloc?n={LEAVES_ROOM_MIB}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    crate::reuse::until_metric(&host, idle, 1.0).await;
    let held = used().await;
    assert!(
        held > f64::from(98u32 << 20) && held <= f64::from(100u32 << 20),
        "the idle instance must leave less room than an instance takes: {held}"
    );

    let r = get(host.public, "/").await;
    assert_eq!(
        (r.status, r.text()),
        (200, "Hello World!".into()),
        "the idle instance's {held} bytes were not given up"
    );
    assert_eq!(metric(&host, idle).await, 0.0, "it left");
    let retired = "wasmlet_instance_requests_count{route=\"/alloc\"}";
    assert_eq!(metric(&host, retired).await, 1.0);
}

/// MiB the `/alloc` instance allocates: with the guest's own pages, it then
/// holds all but about one MiB of the 100 MiB budget.
const LEAVES_ROOM_MIB: u32 = 98;

/// How many times the host's request worker threads have slept (their
/// voluntary context switches, from `/proc`). A thread that spins a guest
/// never sleeps; one waiting for a CPU slot does, whatever the machine's
/// load.
fn worker_sleeps(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|name| name.starts_with("wasmlet-worker"))
        })
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .filter_map(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|n| n.trim().parse::<u64>().ok())
        })
        .sum()
}

/// Issue 26: heavy 0.3 guests run under the same CPU share as 0.2 ones:
/// with two workers, two spinning guests, one on each, take turns on the
/// one CPU slot (all but one worker), so each worker sleeps while the
/// other runs, instead of both spinning side by side; and they still
/// reach their time limit.
#[tokio::test(flavor = "multi_thread")]
async fn heavy_p3_guests_leave_a_worker_free() {
    let host = Wasmlet::serve(&[wasm::P3, "--workers", "2", "--request-timeout", "4s"]);
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let addr = host.public;
            tokio::spawn(async move { get(addr, "/spin").await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = worker_sleeps(host.pid());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let turns = worker_sleeps(host.pid()) - before;
    let started = Instant::now();
    assert_eq!(get(host.public, "/").await.status, 200);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    for spinner in spinners {
        let r = tokio::time::timeout(Duration::from_secs(10), spinner)
            .await
            .expect("a heavy guest still reaches its time limit")
            .unwrap();
        assert_eq!(r.status, 504);
    }
    // One turn per epoch tick (1 ms) while both spin; none without a share.
    assert!(
        turns >= 100,
        "the workers slept {turns} times in 2 s: the heavy guests ran side by side"
    );
}
