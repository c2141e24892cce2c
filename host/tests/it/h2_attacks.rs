//! Issue 29: the HTTP/2 attacks of recent years, each made by a real
//! HTTP/2 client (`h2_attacks.py`: PyPI's `hyperframe` and `hpack`) on
//! loopback. Each asserts that the attacker loses its connection within a
//! bounded time, that the host's memory stays bounded, and that another
//! client, on a connection of its own, is served all along.

use crate::common::*;
use crate::h2::{h2_connect, h2_request};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// `python3 h2_attacks.py ATTACK ADDR ARGS...`: its JSON result.
async fn attack(host: &Wasmlet, name: &str, args: &[&str]) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/h2_attacks.py");
    let mut command = std::process::Command::new("python3");
    command
        .arg(script)
        .arg(name)
        .arg(host.public.to_string())
        .args(args);
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("python3 (h2 comes from scripts/setup-tools.sh)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name}: {stderr}");
    let result: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let mut shown = result.clone();
    if let Some(shown) = shown.as_object_mut() {
        shown.remove("resets");
        shown.remove("statuses");
    }
    eprintln!("{name}: {shown}");
    result
}

/// A well-behaved client on a connection of its own, asking `GET /` (a
/// hello route) every 20 ms until stopped.
struct Bystander {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(u32, Vec<String>)>,
}

impl Bystander {
    async fn start(host: &Wasmlet) -> Bystander {
        let (mut sender, connection) = h2_connect(host.public).await;
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let _connection = connection;
                let (mut served, mut failed) = (0, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    match h2_request(&mut sender, "GET", "/", "").await {
                        Ok((200, _)) if started.elapsed() < Duration::from_secs(2) => served += 1,
                        other => failed.push(format!("{other:?} after {:?}", started.elapsed())),
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (served, failed)
            }
        });
        Bystander { stop, task }
    }

    /// Stops it: it must have been served, every time, in time.
    async fn check(self) -> u32 {
        self.stop.store(true, Ordering::Relaxed);
        let (served, failed) = self.task.await.unwrap();
        assert!(
            failed.is_empty(),
            "the bystander was not served: {failed:?}"
        );
        assert!(served >= 3, "the bystander was served {served} times");
        served
    }
}

/// Memory before an attack, to check it after.
struct Rss {
    pid: u32,
    before_kib: u64,
}

impl Rss {
    fn before(host: &Wasmlet) -> Rss {
        Rss {
            pid: host.pid(),
            before_kib: status_kib(host.pid(), "VmRSS"),
        }
    }

    /// Asserts the resident set grew by less than `limit_mib`.
    fn check(&self, limit_mib: u64) -> String {
        let after = status_kib(self.pid, "VmRSS");
        let grown = after.saturating_sub(self.before_kib);
        assert!(
            grown < limit_mib << 10,
            "RSS grew {grown} KiB ({} -> {after} KiB)",
            self.before_kib
        );
        format!("RSS {} -> {after} KiB", self.before_kib)
    }
}

async fn closed_by(host: &Wasmlet, reason: &str) -> f64 {
    metric(
        host,
        &format!("wasmlet_connections_closed_total{{reason=\"{reason}\"}}"),
    )
    .await
}

/// Waits until no request is in flight; how long that took.
pub async fn in_flight_drops_to_zero(host: &Wasmlet, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let in_flight = metric(host, "wasmlet_requests_in_flight").await;
        if in_flight == 0.0 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{in_flight} requests still in flight after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn closed_within(result: &Value, limit: f64) -> f64 {
    assert_eq!(
        result["closed"], true,
        "the attacker still has its connection: {result}"
    );
    let seconds = result["seconds"].as_f64().unwrap();
    assert!(seconds < limit, "closed after {seconds} s: {result}");
    seconds
}

const ENHANCE_YOUR_CALM: u64 = 0xb;

/// CVE-2023-44487: streams opened and reset at once, one pair per write,
/// so that the host starts each request before its reset (h2's own limit
/// counts only resets of streams not yet started). Against a slow handler
/// under a small --max-in-flight: a reset request must stop its guest and
/// give back its slot at once, or the bystander would wait; and the reset
/// budget closes the attacker. The same against a 0.3 handler. Against the
/// hello handler: a cancelled
/// request is the client's doing, never a handler fault (no ERROR line).
#[tokio::test(flavor = "multi_thread")]
async fn rapid_reset_closes_the_attacker_and_frees_the_slots() {
    let (_dir, manifest) = routes(&[
        ("/", wasm::HELLO, ""),
        ("/slow", wasm::SLOW, ""),
        ("/sleep", wasm::P3, ""),
    ]);
    let host = Wasmlet::serve(&[
        "--config",
        &manifest,
        "--max-in-flight",
        "16",
        "--queue-timeout",
        "1s",
    ]);
    let bystander = Bystander::start(&host).await;
    let rss = Rss::before(&host);
    let slow = attack(&host, "rapid-reset", &["/slow?ms=10000", "5000", "1"]).await;
    let slow_closed = closed_within(&slow, 15.0);
    let freed = in_flight_drops_to_zero(&host, Duration::from_secs(2)).await;
    // A 0.3 handler: the cancelled request's instance ends with it.
    let p3 = attack(&host, "rapid-reset", &["/sleep?n=10000", "5000", "1"]).await;
    let p3_closed = closed_within(&p3, 15.0);
    let p3_freed = in_flight_drops_to_zero(&host, Duration::from_secs(2)).await;
    let hello = attack(&host, "rapid-reset", &["/", "5000", "1"]).await;
    let hello_closed = closed_within(&hello, 15.0);
    in_flight_drops_to_zero(&host, Duration::from_secs(2)).await;
    let memory = rss.check(64);
    let served = bystander.check().await;
    assert_eq!(closed_by(&host, "h2_reset_flood").await, 3.0);
    // Cancelled requests are nobody's fault: no ERROR line, no fault count.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let errors: Vec<_> = host.logs_containing("ERROR");
    assert!(
        errors.is_empty(),
        "{} ERROR lines: {:?}",
        errors.len(),
        &errors[..errors.len().min(3)]
    );
    let metrics = get(host.admin, "/metrics").await.text();
    let faults: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("wasmlet_handler_faults_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(faults, 0.0, "{metrics}");
    eprintln!(
        "rapid reset: slow (0.2) closed after {slow_closed} s ({} pairs), slots free {freed:?} later; \
         sleep (0.3) closed after {p3_closed} s ({} pairs), slots free {p3_freed:?} later; \
         hello closed after {hello_closed} s ({} pairs); bystander served {served}; {memory}",
        slow["sent"], p3["sent"], hello["sent"]
    );
}

/// What `h2load -D` does at its end, twenty times: a connection with 100
/// requests in flight closed at once. Each cancelled request stops its
/// guest; none is a handler fault (before cancel-on-drop, the hello guests
/// trapped on their dropped responses: hundreds of ERROR lines).
#[tokio::test(flavor = "multi_thread")]
async fn hanging_up_on_requests_in_flight_is_no_handler_fault() {
    let (_dir, manifest) = routes(&[("/", wasm::HELLO, "")]);
    let host = Wasmlet::serve(&["--config", &manifest]);
    attack(&host, "hang-up", &["/", "20", "100"]).await;
    let freed = in_flight_drops_to_zero(&host, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let errors: Vec<_> = host.logs_containing("ERROR");
    assert!(
        errors.is_empty(),
        "{} ERROR lines: {:?}",
        errors.len(),
        &errors[..errors.len().min(3)]
    );
    eprintln!("hang-up: 2000 requests cancelled, none in flight {freed:?} later, no ERROR line");
}

/// CVE-2024-27316's family: a header block continued forever. h2 allows
/// at most 5 CONTINUATION frames with the default 16 KiB header list.
#[tokio::test(flavor = "multi_thread")]
async fn a_continuation_flood_gets_goaway() {
    let (_dir, manifest) = routes(&[("/", wasm::HELLO, "")]);
    let host = Wasmlet::serve(&["--config", &manifest]);
    let bystander = Bystander::start(&host).await;
    let rss = Rss::before(&host);
    let result = attack(&host, "continuation", &["10000"]).await;
    let seconds = closed_within(&result, 3.0);
    assert_eq!(result["goaway"], ENHANCE_YOUR_CALM, "{result}");
    assert!(result["sent"].as_u64().unwrap() < 10_000, "{result}");
    let memory = rss.check(32);
    let served = bystander.check().await;
    eprintln!("continuation: closed after {seconds} s; bystander served {served}; {memory}");
}

/// An HPACK bomb: a 4 KB header put in the dynamic table, then referenced
/// 16,000 times by its one-byte index (64 MB decoded): GOAWAY, memory
/// bounded. Five references (20 KB, over the 16 KiB list) get 431 and the
/// connection lives.
#[tokio::test(flavor = "multi_thread")]
async fn an_hpack_bomb_gets_goaway_and_a_big_header_list_431() {
    let (_dir, manifest) = routes(&[("/", wasm::HELLO, "")]);
    let host = Wasmlet::serve(&["--config", &manifest]);
    let bystander = Bystander::start(&host).await;
    let rss = Rss::before(&host);
    let bomb = attack(&host, "hpack-bomb", &["16000", "4000"]).await;
    let seconds = closed_within(&bomb, 3.0);
    assert_eq!(bomb["goaway"], ENHANCE_YOUR_CALM, "{bomb}");
    let big = attack(&host, "hpack-bomb", &["5", "4000"]).await;
    assert_eq!(big["statuses"]["1"], 431, "{big}");
    assert_eq!(big["closed"], false, "{big}");
    let memory = rss.check(32);
    let served = bystander.check().await;
    eprintln!("hpack bomb: closed after {seconds} s; bystander served {served}; {memory}");
}

/// A client that reads the socket but never opens its flow-control
/// windows (initial window 0, no WINDOW_UPDATE) after asking for big
/// responses: closed once a response waited --write-timeout on it, its
/// guests stopped and their slots free.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_opens_its_window_is_closed() {
    let (_dir, manifest) = routes(&[("/", wasm::HELLO, ""), ("/big", wasm::BIG_RESPONSE, "")]);
    let host = Wasmlet::serve(&["--config", &manifest, "--write-timeout", "1s"]);
    let bystander = Bystander::start(&host).await;
    let rss = Rss::before(&host);
    let result = attack(&host, "never-read", &["/big?mib=16", "8", "10"]).await;
    let seconds = closed_within(&result, 5.0);
    let freed = in_flight_drops_to_zero(&host, Duration::from_secs(2)).await;
    let memory = rss.check(64);
    let served = bystander.check().await;
    assert_eq!(closed_by(&host, "h2_window_stall").await, 1.0);
    eprintln!(
        "never read: closed after {seconds} s, slots free {freed:?} later; bystander served {served}; {memory}"
    );
}

/// More streams at once than --http2-max-concurrent-streams (100): the
/// rest are refused (REFUSED_STREAM) and never run; a client that keeps
/// opening them gets GOAWAY (h2 counts refusals).
#[tokio::test(flavor = "multi_thread")]
async fn streams_past_the_limit_are_refused_and_never_run() {
    let (_dir, manifest) = routes(&[("/", wasm::HELLO, ""), ("/slow", wasm::SLOW, "")]);
    let host = Wasmlet::serve(&["--config", &manifest]);
    let bystander = Bystander::start(&host).await;
    let rss = Rss::before(&host);
    // The most requests in flight while the attack runs.
    let peak = tokio::spawn({
        let admin = host.admin;
        async move {
            let mut peak = 0.0f64;
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(3) {
                let text = get(admin, "/metrics").await.text();
                peak = peak.max(sample(&text, "wasmlet_requests_in_flight"));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peak
        }
    });
    let result = attack(&host, "streams", &["/slow?ms=3000", "150", "1200"]).await;
    let peak = peak.await.unwrap();
    assert_eq!(result["refused_first"], 50, "{result}");
    // The bystander's own request may be in flight too.
    assert!(peak <= 101.0, "{peak} requests in flight");
    let seconds = closed_within(&result, 12.0);
    assert_eq!(result["goaway"], ENHANCE_YOUR_CALM, "{result}");
    let memory = rss.check(64);
    let served = bystander.check().await;
    eprintln!(
        "streams: 50 of the first 150 refused, at most {peak} in flight; closed after {seconds} s; \
         bystander served {served}; {memory}"
    );
}

/// PING and SETTINGS floods: the frame meter closes the connection past
/// its budget (the grpcio test in grpc.rs shows a real client's pings
/// fit in it).
#[tokio::test(flavor = "multi_thread")]
async fn ping_and_settings_floods_are_closed() {
    let (_dir, manifest) = routes(&[("/", wasm::HELLO, "")]);
    let host = Wasmlet::serve(&["--config", &manifest]);
    let bystander = Bystander::start(&host).await;
    let rss = Rss::before(&host);
    let ping = attack(&host, "ping-flood", &["100000"]).await;
    let ping_seconds = closed_within(&ping, 3.0);
    let settings = attack(&host, "settings-flood", &["100000"]).await;
    let settings_seconds = closed_within(&settings, 3.0);
    let memory = rss.check(32);
    let served = bystander.check().await;
    assert_eq!(closed_by(&host, "h2_ping_flood").await, 1.0);
    assert_eq!(closed_by(&host, "h2_settings_flood").await, 1.0);
    eprintln!(
        "floods: pings closed after {ping_seconds} s ({} sent), settings after {settings_seconds} s \
         ({} sent); bystander served {served}; {memory}",
        ping["sent"], settings["sent"]
    );
}
