//! Issue 3: routes, hot swap under load with the writes that happen in real
//! life, bad new versions, and the admin port.

use crate::common::*;
use bytes::Bytes;
use std::path::Path;
use std::time::Duration;

/// After a write, the new version must answer within this time.
const SWAP_BOUND: Duration = Duration::from_secs(5);
/// Swaps per write pattern.
const SWAPS: usize = 20;
const CLIENTS: usize = 4;

fn manifest(dir: &Path, routes: &[(&str, &str)]) {
    let text: String = routes
        .iter()
        .map(|(path, component)| {
            format!("[[route]]\npath = \"{path}\"\ncomponent = \"{component}\"\n\n")
        })
        .collect();
    write(&dir.join("wasmlet.toml"), text);
}

fn version(name: &str) -> &'static str {
    match name {
        "v1" => wasm::V1,
        _ => wasm::V2,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_pick_the_longest_match() {
    let dir = tempdir();
    copy(wasm::HELLO, &dir.path().join("hello.wasm"));
    copy(wasm::ECHO, &dir.path().join("echo.wasm"));
    copy(wasm::V1, &dir.path().join("v1.wasm"));
    manifest(
        dir.path(),
        &[
            ("/...", "hello.wasm"),
            ("/echo/...", "echo.wasm"),
            ("/v1", "v1.wasm"),
        ],
    );
    let host = Wasmlet::serve(&["--config", path_str(&dir.path().join("wasmlet.toml"))]);
    assert_eq!(get(host.public, "/").await.text(), "Hello World!");
    assert_eq!(get(host.public, "/v1").await.text(), "v1");
    assert_eq!(
        get(host.public, "/v1/deeper").await.status,
        404,
        "hello answers 404 below /"
    );
    let r = request(host.public, "POST", "/echo/x", Bytes::from_static(b"ping")).await;
    assert_eq!((r.status, r.text().as_str()), (200, "ping"));
    let r = request(host.public, "POST", "/echo", Bytes::from_static(b"pong")).await;
    assert_eq!(r.text(), "pong");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_route_is_a_host_404() {
    let dir = tempdir();
    copy(wasm::V1, &dir.path().join("v1.wasm"));
    manifest(dir.path(), &[("/only", "v1.wasm")]);
    let host = Wasmlet::serve(&["--config", path_str(&dir.path().join("wasmlet.toml"))]);
    assert_eq!(get(host.public, "/only").await.text(), "v1");
    let r = get(host.public, "/other").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "no route for this path\n");
}

/// How a new component version reaches the handler file.
#[derive(Debug, Clone, Copy)]
enum Write {
    /// An editor saving in place: truncate and write.
    InPlace,
    /// `cp` over the file, slowly: half, a pause longer than the debounce, the rest.
    SlowCopy,
    /// Write a temporary file, rename it over the handler.
    Rename,
    /// Kubernetes ConfigMap volume: a new timestamped dir, `..data` re-pointed.
    ConfigMap,
}

/// The handler directory for a write pattern; the handler is `handler.wasm`.
struct HandlerDir {
    dir: tempfile::TempDir,
    write: Write,
    serial: usize,
}

impl HandlerDir {
    fn new(write: Write, first: &str) -> HandlerDir {
        let mut this = HandlerDir {
            dir: tempdir(),
            write,
            serial: 0,
        };
        let toml = "[[route]]\npath = \"/...\"\ncomponent = \"handler.wasm\"\n";
        match write {
            Write::ConfigMap => {
                this.configmap_publish(&[
                    ("wasmlet.toml", toml.as_bytes()),
                    ("handler.wasm", &std::fs::read(version(first)).unwrap()),
                ]);
                for name in ["wasmlet.toml", "handler.wasm"] {
                    std::os::unix::fs::symlink(
                        format!("..data/{name}"),
                        this.dir.path().join(name),
                    )
                    .unwrap();
                }
            }
            _ => {
                write_file(&this.dir.path().join("wasmlet.toml"), toml.as_bytes());
                copy(version(first), &this.dir.path().join("handler.wasm"));
            }
        }
        this
    }

    fn manifest(&self) -> String {
        path_str(&self.dir.path().join("wasmlet.toml")).to_string()
    }

    /// Writes `bytes` as the new handler.wasm using this dir's pattern.
    async fn put(&mut self, bytes: &[u8]) {
        let target = self.dir.path().join("handler.wasm");
        match self.write {
            Write::InPlace => write_file(&target, bytes),
            Write::SlowCopy => {
                use std::io::Write as _;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(&target)
                    .unwrap();
                let half = bytes.len() / 2;
                f.write_all(&bytes[..half]).unwrap();
                f.flush().unwrap();
                tokio::time::sleep(Duration::from_millis(300)).await;
                f.write_all(&bytes[half..]).unwrap();
            }
            Write::Rename => {
                let tmp = self.dir.path().join(".handler.wasm.tmp");
                write_file(&tmp, bytes);
                std::fs::rename(&tmp, &target).unwrap();
            }
            Write::ConfigMap => {
                let toml = std::fs::read(self.dir.path().join("wasmlet.toml")).unwrap();
                self.configmap_publish(&[("wasmlet.toml", &toml), ("handler.wasm", bytes)]);
            }
        }
    }

    /// kubelet's AtomicWriter: write a new timestamped directory, point
    /// `..data_tmp` at it, rename it over `..data`, remove the old one.
    fn configmap_publish(&mut self, files: &[(&str, &[u8])]) {
        self.serial += 1;
        let root = self.dir.path();
        let name = format!("..2026_11_25_21_00_00.{:09}", self.serial);
        let data = root.join(&name);
        std::fs::create_dir(&data).unwrap();
        for (file, bytes) in files {
            write_file(&data.join(file), bytes);
        }
        let old = std::fs::read_link(root.join("..data")).ok();
        std::os::unix::fs::symlink(&name, root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        if let Some(old) = old {
            std::fs::remove_dir_all(root.join(old)).unwrap();
        }
    }
}

fn write_file(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

async fn swap_under_load(write: Write) {
    let mut dir = HandlerDir::new(write, "v1");
    let host = Wasmlet::serve(&["--config", &dir.manifest()]);
    assert_eq!(get(host.public, "/").await.text(), "v1");
    let load = Load::start(host.public, "/", CLIENTS);
    let mut took = Vec::new();
    for i in 0..SWAPS {
        let next = if i % 2 == 0 { "v2" } else { "v1" };
        dir.put(&std::fs::read(version(next)).unwrap()).await;
        took.push(until_body(host.public, "/", next, SWAP_BOUND).await);
    }
    let stats = load.finish().await;
    assert!(
        stats.failures.is_empty(),
        "{write:?}: {} failures, first: {:?}",
        stats.failures.len(),
        stats.failures.first()
    );
    assert!(stats.ok > 0);
    assert!(
        stats.bodies.keys().all(|b| b == "v1" || b == "v2"),
        "{:?}",
        stats.bodies
    );
    took.sort();
    eprintln!(
        "{write:?}: {} swaps, {} requests, swap visible after median {:?}, max {:?}",
        SWAPS,
        stats.ok,
        took[took.len() / 2],
        took.last().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn swap_under_load_editor_save_in_place() {
    swap_under_load(Write::InPlace).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn swap_under_load_slow_copy_never_loads_half_a_file() {
    swap_under_load(Write::SlowCopy).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn swap_under_load_atomic_rename() {
    swap_under_load(Write::Rename).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn swap_under_load_configmap_volume() {
    swap_under_load(Write::ConfigMap).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn manifest_and_two_components_publish_together() {
    let dir = tempdir();
    let root = dir.path();
    copy(wasm::V1, &root.join("a.wasm"));
    copy(wasm::V1, &root.join("b.wasm"));
    manifest(root, &[("/a", "a.wasm"), ("/b", "b.wasm")]);
    let host = Wasmlet::serve(&["--config", path_str(&root.join("wasmlet.toml"))]);
    let before = handlers(&host).await["generation"].as_u64().unwrap();

    // New components under new names, and the manifest pointing at them.
    copy(wasm::V2, &root.join("a2.wasm"));
    copy(wasm::V2, &root.join("b2.wasm"));
    manifest(
        root,
        &[("/a", "a2.wasm"), ("/b", "b2.wasm"), ("/hello", "a2.wasm")],
    );

    until_body(host.public, "/a", "v2", SWAP_BOUND).await;
    assert_eq!(get(host.public, "/b").await.text(), "v2");
    assert_eq!(get(host.public, "/hello").await.text(), "v2");
    let after = handlers(&host).await["generation"].as_u64().unwrap();
    assert_eq!(after, before + 1, "one publish for the three files");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_writes_is_debounced() {
    let mut dir = HandlerDir::new(Write::InPlace, "v1");
    let host = Wasmlet::serve(&["--config", &dir.manifest()]);
    let before = handlers(&host).await["generation"].as_u64().unwrap();
    let (v1, v2) = (
        std::fs::read(wasm::V1).unwrap(),
        std::fs::read(wasm::V2).unwrap(),
    );
    for i in 0..50 {
        dir.put(if i % 2 == 0 { &v1 } else { &v2 }).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    until_body(host.public, "/", "v2", SWAP_BOUND).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = handlers(&host).await["generation"].as_u64().unwrap();
    assert!(
        after - before <= 3,
        "50 writes caused {} publishes",
        after - before
    );
}

/// A bad new version under load: nothing fails, the old version answers,
/// `/handlers` and the metrics show the error, then a good write recovers.
async fn bad_version(bad: &[u8], expect_in_error: &str) {
    bad_version_with(bad, expect_in_error, &[]).await;
}

async fn bad_version_with(bad: &[u8], expect_in_error: &str, args: &[&str]) {
    let mut dir = HandlerDir::new(Write::Rename, "v1");
    let manifest = dir.manifest();
    let host = Wasmlet::serve(&[&["--config", manifest.as_str()], args].concat());
    let errors_before = metric(&host, "wasmlet_reloads_total{outcome=\"error\"}").await;
    let load = Load::start(host.public, "/", CLIENTS);

    dir.put(bad).await;
    let deadline = std::time::Instant::now() + SWAP_BOUND;
    let doc = loop {
        let doc = handlers(&host).await;
        if !doc["last_error"].is_null() {
            break doc;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no error reported: {doc}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let error = doc["last_error"].as_str().unwrap();
    assert!(
        error.contains("handler.wasm") && error.contains(expect_in_error),
        "{error}"
    );
    assert_eq!(doc["routes"][0]["last_error"].as_str(), Some(error));
    assert_eq!(doc["ready"], true, "the old version still serves");
    assert_eq!(get(host.public, "/").await.text(), "v1");
    assert_eq!(
        metric(&host, "wasmlet_reloads_total{outcome=\"error\"}").await,
        errors_before + 1.0
    );
    let logged = host.wait_for_log(Duration::from_secs(5), |l| {
        l.contains("reload failed") && l.contains(expect_in_error)
    });
    assert!(logged.is_some(), "the failed reload is logged");

    dir.put(&std::fs::read(wasm::V2).unwrap()).await;
    until_body(host.public, "/", "v2", SWAP_BOUND).await;
    assert!(handlers(&host).await["last_error"].is_null());
    let stats = load.finish().await;
    assert!(stats.failures.is_empty(), "{:?}", stats.failures.first());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_version_not_wasm() {
    bad_version(b"#!/bin/sh\necho hello\n", "not a WebAssembly file").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_version_truncated() {
    let hello = std::fs::read(wasm::V2).unwrap();
    bad_version(&hello[..hello.len() / 3], "not a valid component").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_version_core_module() {
    bad_version(CORE_MODULE, "not a component").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_version_wrong_exports() {
    bad_version(EMPTY_COMPONENT, "does not export").await;
}

/// A wasi:http component whose core module's start function never
/// returns: instantiating it loops.
const LOOPING_START: &str = r#"
(component
  (import "wasi:http/types@0.2.0" (instance $types
    (export "incoming-request" (type (sub resource)))
    (export "response-outparam" (type (sub resource)))))
  (alias export $types "incoming-request" (type $req))
  (alias export $types "response-outparam" (type $out))
  (core module $m
    (func $spin (loop $forever (br $forever)))
    (func (export "handle") (param i32 i32))
    (start $spin))
  (core instance $i (instantiate $m))
  (func $handle (param "request" (own $req)) (param "response-out" (own $out))
    (canon lift (core func $i "handle")))
  (instance $handler
    (export "incoming-request" (type $req))
    (export "response-outparam" (type $out))
    (export "handle" (func $handle)))
  (export "wasi:http/incoming-handler@0.2.0" (instance $handler)))
"#;

/// Validating a new version instantiates it once; a start function that
/// never returns must fail that reload within the request time limit, not
/// hang it (and every reload after it).
#[tokio::test(flavor = "multi_thread")]
async fn bad_version_start_function_never_returns() {
    let looping = wat::parse_str(LOOPING_START).unwrap();
    bad_version_with(
        &looping,
        "did not finish within",
        &["--request-timeout", "1s"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_manifest_keeps_the_old_routes() {
    let dir = tempdir();
    copy(wasm::V1, &dir.path().join("v1.wasm"));
    manifest(dir.path(), &[("/...", "v1.wasm")]);
    let toml = dir.path().join("wasmlet.toml");
    let host = Wasmlet::serve(&["--config", path_str(&toml)]);
    let load = Load::start(host.public, "/", CLIENTS);
    write(
        &toml,
        "[[route]]\npath = \"/...\"\ncomponent = \"v1.wasm\"\nbogus = 1\n",
    );
    let r = reload(host.admin).await;
    assert_eq!(r.status, 422);
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("wasmlet.toml") && error.contains("unknown field `bogus`"),
        "{error}"
    );
    assert!(
        handlers(&host).await["last_error"]
            .as_str()
            .unwrap()
            .contains("bogus")
    );
    assert_eq!(get(host.public, "/").await.text(), "v1");

    copy(wasm::V2, &dir.path().join("v2.wasm"));
    manifest(dir.path(), &[("/...", "v2.wasm")]);
    until_body(host.public, "/", "v2", SWAP_BOUND).await;
    let stats = load.finish().await;
    assert!(stats.failures.is_empty(), "{:?}", stats.failures.first());
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_and_post_reload_pick_up_changes_without_watching() {
    let dir = tempdir();
    copy(wasm::V1, &dir.path().join("handler.wasm"));
    manifest(dir.path(), &[("/...", "handler.wasm")]);
    let host = Wasmlet::serve(&[
        "--config",
        path_str(&dir.path().join("wasmlet.toml")),
        "--no-watch",
    ]);

    copy(wasm::V2, &dir.path().join("handler.wasm"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        get(host.public, "/").await.text(),
        "v1",
        "--no-watch does not watch"
    );
    host.signal("HUP");
    until_body(host.public, "/", "v2", SWAP_BOUND).await;

    copy(wasm::V1, &dir.path().join("handler.wasm"));
    let r = reload(host.admin).await;
    assert_eq!(r.status, 200);
    let report: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(report["outcome"], "published");
    assert_eq!(get(host.public, "/").await.text(), "v1");
    let r = reload(host.admin).await;
    let report: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(report["outcome"], "unchanged");
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_endpoints() {
    let dir = tempdir();
    copy(wasm::HELLO, &dir.path().join("hello.wasm"));
    manifest(dir.path(), &[("/...", "hello.wasm")]);
    let host = Wasmlet::serve(&["--config", path_str(&dir.path().join("wasmlet.toml"))]);

    assert_eq!(get(host.admin, "/healthz").await.status, 200);
    assert_eq!(get(host.admin, "/readyz").await.status, 200);
    let r = get(host.admin, "/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("wasmlet_handler_info"), "{}", r.text());

    let doc = handlers(&host).await;
    let route = &doc["routes"][0];
    assert_eq!(route["route"], "/...");
    assert!(route["component"].as_str().unwrap().ends_with("hello.wasm"));
    let digest = crate::foundation::sha256_hex(&std::fs::read(wasm::HELLO).unwrap());
    assert_eq!(route["digest"], format!("sha256:{digest}"));
    assert_eq!(route["generation"], 1);
    assert!(route["loaded_at"].as_str().unwrap().starts_with("20"));
    assert!(route["last_error"].is_null());

    assert_eq!(
        request(host.admin, "GET", "/reload", Bytes::new())
            .await
            .status,
        405
    );
    assert_eq!(
        request(host.admin, "POST", "/healthz", Bytes::new())
            .await
            .status,
        405
    );
    assert_eq!(get(host.admin, "/nope").await.status, 404);
    // The admin endpoints are not on the public port.
    assert_eq!(
        get(host.public, "/healthz").await.status,
        404,
        "hello answers it, not the host"
    );
    assert_eq!(get(host.public, "/metrics").await.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_compile_cache_is_reused_and_survives_corruption() {
    let cache = tempdir();
    let cache_dir = path_str(cache.path()).to_string();
    let serve = || Wasmlet::serve(&[wasm::HELLO, "--cache-dir", &cache_dir]);
    let cache_outcome = |host: &Wasmlet| {
        let line = host
            .wait_for_log(Duration::from_secs(5), |l| l.contains("component loaded"))
            .unwrap();
        field(&line, "cache")
    };

    let host = serve();
    assert_eq!(cache_outcome(&host), "miss");
    drop(host);
    let entries: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");

    let host = serve();
    assert_eq!(cache_outcome(&host), "hit");
    assert_eq!(get(host.public, "/").await.text(), "Hello World!");
    drop(host);

    // Flip bytes in the middle of the entry: ignored, rebuilt, still serving.
    let mut bytes = std::fs::read(&entries[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&entries[0], &bytes).unwrap();
    let host = serve();
    assert_eq!(cache_outcome(&host), "miss");
    assert!(
        host.logs()
            .iter()
            .any(|l| l.contains("corrupt compile cache entry"))
    );
    assert_eq!(get(host.public, "/").await.text(), "Hello World!");
    drop(host);
    let host = serve();
    assert_eq!(cache_outcome(&host), "hit");
}

/// The watcher starts before the first load: a handler replaced while the
/// host is still compiling the first one is picked up, not missed. (When
/// the rename lands before the first read, v2 is simply loaded first.)
#[tokio::test(flavor = "multi_thread")]
async fn a_swap_during_the_first_load_is_not_missed() {
    let dir = tempdir();
    let target = dir.path().join("handler.wasm");
    copy(wasm::V1, &target);
    let staged = dir.path().join("staged.tmp");
    copy(wasm::V2, &staged);
    // Compiling v1 without a cache takes about 150 ms; rename inside it.
    let swap = std::thread::spawn({
        let target = target.clone();
        move || {
            std::thread::sleep(Duration::from_millis(40));
            std::fs::rename(&staged, &target).unwrap();
        }
    });
    let host = Wasmlet::serve(&[path_str(&target)]);
    swap.join().unwrap();
    until_body(host.public, "/", "v2", SWAP_BOUND).await;
}
