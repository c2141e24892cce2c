//! Handlers from other toolchains: the Python hello (componentize-py) and
//! the JavaScript hello (componentize-js), built from `guest/python` and
//! `guest/javascript` by their pinned toolchains, served by wasmlet: all
//! four routes, the pool's per-component limits, what `wasmlet check`
//! reports, and the memory a first compile leaves behind.
//!
//! These components are 13-18 MB, and compiling one takes tens of seconds
//! on a small machine, so every test shares one compile cache, filled once
//! per component (see [`cache_dir`]).

use crate::common::*;
use bytes::Bytes;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use test_programs_artifacts as wasm;

/// The two handlers, with the wasi:http version each exports.
pub const HANDLERS: [(&str, &str, &str); 2] = [
    ("python", wasm::HELLO_PYTHON, "0.2.12"),
    ("javascript", wasm::HELLO_JAVASCRIPT, "0.2.10"),
];

/// A compile cache shared by every test in this binary, with `component`
/// compiled into it: the first caller compiles, the others wait for it.
/// It lives under the target directory, so it is neither left behind in
/// /tmp (a static is never dropped) nor compiled again on the next run:
/// entries are keyed by the wasm's digest and the engine's settings.
pub fn cache_dir(component: &str) -> String {
    static DIR: OnceLock<String> = OnceLock::new();
    static WARMED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let dir = DIR
        .get_or_init(|| {
            use std::os::unix::fs::DirBuilderExt;
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("toolchains-compile-cache");
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .unwrap();
            dir.to_str().unwrap().to_owned()
        })
        .clone();
    let mut warmed = WARMED.lock().unwrap_or_else(|e| e.into_inner());
    if !warmed.iter().any(|c| c == component) {
        let host = Wasmlet::serve(&[component, "--cache-dir", &dir, "--no-watch"]);
        drop(host);
        warmed.push(component.to_owned());
    }
    dir
}

/// A manifest serving `component` on every path, allowed to reach `allowed`.
pub fn manifest(dir: &std::path::Path, component: &str, allowed: std::net::SocketAddr) -> PathBuf {
    let manifest = dir.join("wasmlet.toml");
    write(
        &manifest,
        format!(
            "[[route]]\npath = \"/...\"\ncomponent = \"{component}\"\nallowed_outbound_hosts = [\"http://{allowed}\"]\n"
        ),
    );
    manifest
}

/// A body of `len` bytes that is not one repeated byte.
fn pattern(len: usize) -> Bytes {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn python_and_javascript_handlers_answer_all_four_routes() {
    let allowed = upstream().await;
    let forbidden = upstream().await;
    for (language, component, _) in HANDLERS {
        let dir = tempdir();
        let manifest = manifest(dir.path(), component, allowed);
        let cache = cache_dir(component);
        let host = Wasmlet::serve(&["--config", path_str(&manifest), "--cache-dir", &cache]);

        let hello = get(host.public, "/").await;
        assert_eq!(hello.status, 200, "{language}: GET /");
        assert_eq!(hello.text(), "Hello World!", "{language}: GET /");
        assert_eq!(
            hello.header("content-type"),
            Some("text/plain; charset=utf-8"),
            "{language}"
        );

        // 1.5 MiB, with a declared length and streamed in chunks.
        let body = pattern(3 << 19);
        let echoed = request(host.public, "POST", "/echo", body.clone()).await;
        assert_eq!(echoed.status, 200, "{language}: POST /echo");
        assert!(echoed.body == body, "{language}: the echo differs");
        let streamed = http::Request::post("/echo")
            .header("host", host.public.to_string())
            .header("content-type", "application/x-test")
            .body(streamed_body(1 << 20, 16 << 10))
            .unwrap();
        let echoed = send(host.public, streamed).await.unwrap();
        assert_eq!(echoed.status, 200, "{language}: chunked POST /echo");
        assert_eq!(echoed.body.len(), 1 << 20, "{language}: chunked echo");
        assert_eq!(echoed.header("content-type"), Some("application/x-test"));

        let fetched = get(host.public, &format!("/fetch?url=http://{allowed}/")).await;
        assert_eq!(
            (fetched.status, fetched.text().as_str()),
            (200, "upstream 200: upstream says hi"),
            "{language}: an allowed outbound call"
        );
        let refused = get(host.public, &format!("/fetch?url=http://{forbidden}/")).await;
        assert_eq!(refused.status, 502, "{language}: {}", refused.text());
        assert!(
            refused.text().starts_with("outbound error"),
            "{language}: {}",
            refused.text()
        );

        let missing = get(host.public, "/nope").await;
        assert_eq!(missing.status, 404, "{language}: GET /nope");
        assert_eq!(missing.text(), "Not Found\n", "{language}");
    }
}

#[test]
fn check_reports_what_python_and_javascript_handlers_need() {
    for (language, component, version) in HANDLERS {
        let (status, stdout, stderr) = run(&["check", component]);
        assert!(status.success(), "{language}: {stderr}");
        assert!(
            stdout.contains(&format!("wasi:http: {version}")),
            "{language}: {stdout}"
        );
        let core_instances = match language {
            "python" => "core instances: 14 (32,",
            _ => "core instances: 4 (32,",
        };
        for line in [
            core_instances,
            "memories: 1 (4,",
            "tables: 2 (16,",
            "largest table: ",
            "initial memory: ",
            "maximum memory: ",
        ] {
            assert!(stdout.contains(line), "{language}: no `{line}` in {stdout}");
        }
    }
}

#[test]
fn a_component_over_the_pools_limits_is_refused_naming_the_flag() {
    let (status, stdout, stderr) = run(&[
        "serve",
        wasm::HELLO_PYTHON,
        "--max-core-instances-per-component",
        "8",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(status.code(), Some(1), "{stdout}{stderr}");
    assert!(!stdout.contains("listening"), "bound before failing");
    let error = stderr.lines().last().unwrap_or_default();
    for want in [
        "hello_python.wasm",
        "needs 14 core instances",
        "limit of 8",
        "--max-core-instances-per-component",
    ] {
        assert!(error.contains(want), "no `{want}` in: {stderr}");
    }

    let (status, _, stderr) = run(&[
        "check",
        wasm::HELLO_JAVASCRIPT,
        "--max-table-elements",
        "5000",
    ]);
    assert!(!status.success());
    assert!(
        stderr.contains("largest table") && stderr.contains("--max-table-elements"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_to_a_component_that_does_not_fit_keeps_the_last_good_one() {
    let dir = tempdir();
    let handler = dir.path().join("handler.wasm");
    copy(wasm::HELLO, &handler);
    let host = Wasmlet::serve(&[
        path_str(&handler),
        "--max-core-instances-per-component",
        "8",
        "--no-watch",
    ]);
    assert_eq!(get(host.public, "/").await.text(), "Hello World!");

    copy(wasm::HELLO_PYTHON, &handler);
    let reload = reload(host.admin).await;
    assert_eq!(reload.status, 422, "{}", reload.text());
    assert!(
        reload.text().contains("--max-core-instances-per-component"),
        "{}",
        reload.text()
    );
    let hello = get(host.public, "/").await;
    assert_eq!((hello.status, hello.text().as_str()), (200, "Hello World!"));
}

/// Proportional set size of a process, in KiB.
fn pss_kib(pid: u32) -> u64 {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    rollup
        .lines()
        .find_map(|line| line.strip_prefix("Pss:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("Pss in smaps_rollup")
}

/// Compiling a 13 MB component allocates a few hundred MiB that an idle
/// host would otherwise keep; a first start must end up within 1.5x of a
/// start that loaded the same component from the cache.
#[tokio::test(flavor = "multi_thread")]
async fn a_first_start_gives_back_what_compiling_took() {
    let cache = tempdir();
    let cache = path_str(cache.path()).to_owned();
    let mut pss = Vec::new();
    for start in ["empty cache", "warm cache"] {
        let host = Wasmlet::serve(&[wasm::HELLO_JAVASCRIPT, "--cache-dir", &cache]);
        assert_eq!(get(host.public, "/").await.status, 200, "{start}");
        // Let the threads that compiled settle.
        tokio::time::sleep(Duration::from_millis(500)).await;
        pss.push(pss_kib(host.pid()));
    }
    let (cold, warm) = (pss[0], pss[1]);
    assert!(
        cold * 2 <= warm * 3,
        "PSS after a compile: {cold} KiB, after a cached start: {warm} KiB (over 1.5x)"
    );
}

/// Every Rust toolchain, and every wasi:http 0.2 version from the oldest
/// to the host's own: wit-bindgen (0.2.12), the `wasip2` crate (0.2.12),
/// `wstd` (0.2.12), the `wasi` crate 0.13 (0.2.0), and JavaScript (0.2.10).
#[tokio::test(flavor = "multi_thread")]
async fn every_toolchain_and_wasi_http_version_from_0_2_0_is_served() {
    let handlers = [
        ("wit-bindgen", wasm::HELLO, "0.2.12"),
        ("wasip2", wasm::HELLO_WASIP2, "0.2.12"),
        ("wstd", wasm::HELLO_WSTD, "0.2.12"),
        ("wasi 0.13", wasm::HELLO_WASI_0_2_0, "0.2.0"),
        ("componentize-js", wasm::HELLO_JAVASCRIPT, "0.2.10"),
    ];
    for (toolchain, component, version) in handlers {
        let (_, check, _) = run(&["check", component]);
        assert!(
            check.contains(&format!("wasi:http: {version} ")),
            "{toolchain}: {check}"
        );
        let cache = cache_dir(component);
        let host = Wasmlet::serve(&[component, "--cache-dir", &cache]);
        let hello = get(host.public, "/").await;
        assert_eq!(
            (hello.status, hello.text().as_str()),
            (200, "Hello World!"),
            "{toolchain}"
        );
    }
}
