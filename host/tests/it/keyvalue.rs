//! Issue 28: wasi:keyvalue. The same guests as `wasmtime serve -Skeyvalue`,
//! the three backends (memory, file, redis), grants and limits.

use crate::common::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A manifest in a fresh folder: `stores` (TOML tables) then `routes`
/// (`(path, component, key_value_stores)`).
fn manifest(stores: &str, routes: &[(&str, &str, &str)]) -> (tempfile::TempDir, String) {
    let dir = tempdir();
    let mut toml = format!("{stores}\n");
    for (path, component, granted) in routes {
        toml.push_str(&format!(
            "[[route]]\npath = \"{path}\"\ncomponent = \"{component}\"\nkey_value_stores = {granted}\n\n"
        ));
    }
    let file = dir.path().join("wasmlet.toml");
    write(&file, toml);
    let file = path_str(&file).to_string();
    (dir, file)
}

const MEMORY_HELLO: &str =
    "[key_value_store.default]\ntype = \"memory\"\ndata = { hello = \"world\" }\n";

async fn counts(host: &Wasmlet, path: &str, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(get(host.public, path).await.text());
    }
    out
}

fn seen(n: u64) -> String {
    format!("Hello World! I have been seen {n} times.")
}

/// `serve_keyvalue` answers `200 world` under both, with `hello=world` preloaded.
#[tokio::test(flavor = "multi_thread")]
async fn serve_keyvalue_answers_like_wasmtime_serve() {
    let reference = crate::parity::start_reference_with(
        wasm::SERVE_KEYVALUE,
        &["-Skeyvalue", "-Skeyvalue-in-memory-data=hello=world"],
    );
    let want = get(reference.addr, "/").await;
    let (_dir, config) = manifest(
        MEMORY_HELLO,
        &[("/", wasm::SERVE_KEYVALUE, "[\"default\"]")],
    );
    let host = Wasmlet::serve(&["--config", &config]);
    let got = get(host.public, "/").await;
    assert_eq!((want.status, want.text()), (200, "world".to_string()));
    assert_eq!((got.status, got.text()), (want.status, want.text()));
    assert_eq!(got.header("content-type"), want.header("content-type"));
}

/// The counter counts across requests on memory; two routes granted the
/// same store share it.
#[tokio::test(flavor = "multi_thread")]
async fn the_counter_counts_on_memory_and_routes_share_a_store() {
    let (_dir, config) = manifest(
        MEMORY_HELLO,
        &[
            ("/", wasm::HELLO_COUNTER, "[\"default\"]"),
            ("/count", wasm::HELLO_COUNTER, "[\"default\"]"),
            ("/a/...", wasm::KV_PROBE, "[\"default\"]"),
            ("/b/...", wasm::KV_PROBE, "[\"default\"]"),
        ],
    );
    let host = Wasmlet::serve(&["--config", &config]);
    let listed = handlers(&host).await;
    for route in listed["routes"].as_array().unwrap() {
        assert_eq!(route["key_value_stores"], serde_json::json!(["default"]));
        assert!(route.get("config").is_none(), "{route}");
    }
    assert_eq!(get(host.public, "/").await.text(), "Hello World!");
    assert_eq!(
        counts(&host, "/count", 3).await,
        [seen(1), seen(2), seen(3)]
    );
    assert_eq!(counts(&host, "/a/?op=incr", 2).await, ["1", "2"]);
    assert_eq!(counts(&host, "/b/?op=incr", 2).await, ["3", "4"]);
    let ok = metric(
        &host,
        "wasmlet_kv_operations_total{route=\"/count\",store=\"default\",operation=\"increment\",outcome=\"ok\"}",
    )
    .await;
    assert_eq!(ok, 3.0);
}

/// The visit counter in all three languages under wasmlet (`GET /` is still
/// exactly the seed's answer), and the Rust one under `wasmtime serve
/// -Skeyvalue`, which gives every request a fresh copy of its preloaded
/// store: there it answers 42 every time, here 42, 43, 44.
#[tokio::test(flavor = "multi_thread")]
async fn the_three_counters_count_and_the_rust_one_runs_under_wasmtime_serve() {
    let reference = crate::parity::start_reference_with(
        wasm::HELLO_COUNTER,
        &["-Skeyvalue", "-Skeyvalue-in-memory-data=hits=41"],
    );
    let reference_hello = get(reference.addr, "/").await;
    assert_eq!(
        (reference_hello.status, reference_hello.text()),
        (200, "Hello World!".to_string())
    );
    let mut reference_counts = Vec::new();
    for _ in 0..2 {
        reference_counts.push(get(reference.addr, "/count").await.text());
    }
    assert_eq!(reference_counts, [seen(42), seen(42)], "wasmtime serve");
    for (language, component) in [
        ("rust", wasm::HELLO_COUNTER),
        ("python", wasm::HELLO_COUNTER_PYTHON),
        ("javascript", wasm::HELLO_COUNTER_JAVASCRIPT),
    ] {
        let (_dir, config) = manifest(
            "[key_value_store.default]\ntype = \"memory\"\ndata = { hits = \"41\" }\n",
            &[("/...", component, "[\"default\"]")],
        );
        let host = Wasmlet::serve(&["--config", &config, "--cache-dir", &counter_cache()]);
        let hello = get(host.public, "/").await;
        assert_eq!(
            (hello.status, hello.text(), hello.header("content-type")),
            (
                200,
                "Hello World!".to_string(),
                reference_hello.header("content-type")
            ),
            "{language}: GET /"
        );
        assert_eq!(
            counts(&host, "/count", 3).await,
            [seen(42), seen(43), seen(44)],
            "{language}"
        );
        let missing = get(host.public, "/nope").await;
        assert_eq!(missing.status, 404, "{language}: GET /nope");
    }
}

/// A compile cache for the counters (the Python and JavaScript ones take
/// tens of seconds to compile), under the target directory so the next run
/// finds them compiled. Not `toolchains::cache_dir`: that one warms up by
/// serving a component alone, which a key-value component cannot be.
fn counter_cache() -> String {
    use std::os::unix::fs::DirBuilderExt;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("counter-compile-cache");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .unwrap();
    path_str(&dir).to_string()
}

/// On the embedded file store the count survives a restart.
#[tokio::test(flavor = "multi_thread")]
async fn the_file_store_keeps_the_count_across_a_restart() {
    let (dir, config) = manifest("", &[("/...", wasm::HELLO_COUNTER, "[\"default\"]")]);
    let data = dir.path().join("data");
    let data = path_str(&data).to_string();
    {
        let host = Wasmlet::serve(&["--config", &config, "--data-dir", &data]);
        assert_eq!(
            counts(&host, "/count", 3).await,
            [seen(1), seen(2), seen(3)]
        );
    }
    let host = Wasmlet::serve(&["--config", &config, "--data-dir", &data]);
    assert_eq!(counts(&host, "/count", 2).await, [seen(4), seen(5)]);
}

/// 200 concurrent increments on the file store: none lost, none doubled.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_increments_on_the_file_store_lose_none() {
    let (dir, config) = manifest("", &[("/...", wasm::HELLO_COUNTER, "[\"default\"]")]);
    let data = dir.path().join("data");
    let host = Wasmlet::serve(&["--config", &config, "--data-dir", path_str(&data)]);
    let public = host.public;
    let tasks: Vec<_> = (0..200)
        .map(|_| tokio::spawn(async move { get(public, "/count").await.text() }))
        .collect();
    let mut numbers = Vec::new();
    for task in tasks {
        let text = task.await.unwrap();
        let n: u64 = text
            .trim_start_matches("Hello World! I have been seen ")
            .trim_end_matches(" times.")
            .parse()
            .unwrap_or_else(|_| panic!("{text}"));
        numbers.push(n);
    }
    numbers.sort();
    assert_eq!(numbers, (1..=200).collect::<Vec<u64>>());
}

/// A store not granted is `no-such-store`; oversize keys and values and
/// too many operations are the interface's `other` error: never a trap.
#[tokio::test(flavor = "multi_thread")]
async fn stores_not_granted_and_limits_are_the_interfaces_errors() {
    let stores = format!("{MEMORY_HELLO}[key_value_store.other]\ntype = \"memory\"\n");
    let (_dir, config) = manifest(&stores, &[("/...", wasm::KV_PROBE, "[\"default\"]")]);
    let host = Wasmlet::serve(&["--config", &config]);
    let answer = |path: &'static str| async move {
        let reply = get(host.public, path).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        reply.text()
    };
    assert_eq!(answer("/?store=default").await, "ok");
    assert_eq!(answer("/").await, "ok");
    assert_eq!(answer("/?store=other").await, "error: no-such-store");
    assert_eq!(answer("/?store=nope").await, "error: no-such-store");
    assert_eq!(answer("/?key=4096").await, "ok");
    assert_eq!(
        answer("/?key=4097").await,
        "error: other: key longer than 4096 bytes"
    );
    assert_eq!(answer("/?value=1048576").await, "ok");
    assert_eq!(
        answer("/?value=1048577").await,
        "error: other: value longer than 1048576 bytes"
    );
    // open is one operation: 999 more fit, the 1000th set does not.
    assert_eq!(answer("/?times=999").await, "ok");
    assert_eq!(
        answer("/?times=1000").await,
        "error: other: more than 1000 key-value operations in one request"
    );
    assert!(
        host.wait_for_log(Duration::from_secs(5), |l| l.contains("not granted"))
            .is_some()
    );
    let refused = metric(
        &host,
        "wasmlet_kv_operations_total{route=\"/...\",store=\"(not granted)\",operation=\"open\",outcome=\"no_such_store\"}",
    )
    .await;
    assert_eq!(refused, 2.0);
}

/// `GET /count` until it answers 200 (10 s at most): the store is back.
async fn until_counting(host: &Wasmlet) -> Reply {
    let started = std::time::Instant::now();
    loop {
        let reply = get(host.public, "/count").await;
        if reply.status == 200 {
            return reply;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still {}",
            reply.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A `redis-server` on a free loopback port with a password; killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    fn start(port: u16, password: &str) -> RedisServer {
        let status = Command::new("scripts/need-command.sh")
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .args(["redis-server", "redis-server"])
            .status()
            .unwrap();
        assert!(status.success(), "redis-server is needed");
        let dir = tempdir();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--requirepass",
                password,
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--dir", path_str(dir.path())])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = RedisServer {
            child,
            port,
            _dir: dir,
        };
        for _ in 0..250 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start on port {port}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn redis_manifest(port: u16) -> (tempfile::TempDir, String) {
    let stores = format!(
        "[key_value_store.default]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{port}/0\"\npassword = {{ env = \"KV_TEST_REDIS_PASSWORD\" }}\n"
    );
    manifest(&stores, &[("/...", wasm::HELLO_COUNTER, "[\"default\"]")])
}

const REDIS_PASSWORD: &str = "s3cret-redis-pass-7f1c";

/// Two wasmlet processes on one Redis count together; 200 concurrent
/// increments lose none; the password never shows.
#[tokio::test(flavor = "multi_thread")]
async fn redis_counts_across_two_hosts_and_hides_its_password() {
    let redis = RedisServer::start(free_port(), REDIS_PASSWORD);
    let (_dir, config) = redis_manifest(redis.port);
    let env = [("KV_TEST_REDIS_PASSWORD", REDIS_PASSWORD)];
    let one = Wasmlet::serve_with_env(&["--config", &config], &env);
    let two = Wasmlet::serve_with_env(&["--config", &config], &env);
    assert_eq!(counts(&one, "/count", 2).await, [seen(1), seen(2)]);
    assert_eq!(counts(&two, "/count", 1).await, [seen(3)]);
    assert_eq!(counts(&one, "/count", 1).await, [seen(4)]);
    let (a, b) = (one.public, two.public);
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let addr = if i % 2 == 0 { a } else { b };
            tokio::spawn(async move { get(addr, "/count").await.status })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    assert_eq!(counts(&two, "/count", 1).await, [seen(205)]);
    for host in [&one, &two] {
        let metrics = get(host.admin, "/metrics").await.text();
        let handlers = get(host.admin, "/handlers").await.text();
        let logs = host.logs().join("\n");
        for (what, text) in [
            ("metrics", &metrics),
            ("handlers", &handlers),
            ("logs", &logs),
        ] {
            assert!(!text.contains(REDIS_PASSWORD), "the password is in {what}");
        }
    }
}

/// The host starts with Redis down: the guest gets the interface's error
/// (503 from the counter), never a hang; when Redis starts, it counts.
#[tokio::test(flavor = "multi_thread")]
async fn redis_down_at_start_then_up_recovers() {
    let port = free_port();
    let (_dir, config) = redis_manifest(port);
    let host = Wasmlet::serve_with_env(
        &["--config", &config],
        &[("KV_TEST_REDIS_PASSWORD", REDIS_PASSWORD)],
    );
    let start = std::time::Instant::now();
    let down = get(host.public, "/count").await;
    assert_eq!(down.status, 503, "{}", down.text());
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(!down.text().contains(REDIS_PASSWORD) && !down.text().contains("127.0.0.1"));
    let _redis = RedisServer::start(port, REDIS_PASSWORD);
    let reply = until_counting(&host).await;
    assert!(reply.text().starts_with("Hello World! I have been seen"));
    assert!(!host.logs().join("\n").contains(REDIS_PASSWORD));
}

/// A Redis that stops answering (SIGSTOP): the guest gets the interface's
/// error within the response timeout, never a hung request, and other
/// requests keep being served; when it answers again, so does the store.
#[tokio::test(flavor = "multi_thread")]
async fn a_redis_that_hangs_gives_an_error_not_a_hung_request() {
    let redis = RedisServer::start(free_port(), REDIS_PASSWORD);
    let (_dir, config) = redis_manifest(redis.port);
    let host = Wasmlet::serve_with_env(
        &["--config", &config],
        &[("KV_TEST_REDIS_PASSWORD", REDIS_PASSWORD)],
    );
    assert_eq!(counts(&host, "/count", 1).await, [seen(1)]);
    let pid = redis.child.id().to_string();
    let signal = |name: &str| {
        let status = Command::new("kill").args([name, &pid]).status().unwrap();
        assert!(status.success());
    };
    signal("-STOP");
    let started = std::time::Instant::now();
    let hung = get(host.public, "/count").await;
    let took = started.elapsed();
    assert_eq!(hung.status, 503, "{}", hung.text());
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // Requests stuck on the store block no one else: with 32 of them
    // waiting, `/` (no store) is answered before any of them gives up.
    let public = host.public;
    let stuck: Vec<_> = (0..32)
        .map(|_| tokio::spawn(async move { get(public, "/count").await.status }))
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get(host.public, "/").await.text(), "Hello World!");
    let waiting = stuck.iter().filter(|task| !task.is_finished()).count();
    assert!(
        waiting > 0,
        "every stuck request ended before `/` was answered"
    );
    for task in stuck {
        assert_eq!(task.await.unwrap(), 503);
    }
    signal("-CONT");
    until_counting(&host).await;
}
