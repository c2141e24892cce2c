//! Issue 28: wasi:config, granting, and guest stderr written in pieces.
//! Each compared with `wasmtime serve` where it has the feature.

use crate::common::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn manifest(dir: &std::path::Path, component: &str, extra: &str) -> String {
    let path = dir.join("wasmlet.toml");
    write(
        &path,
        format!("[[route]]\npath = \"/...\"\ncomponent = \"{component}\"\n{extra}"),
    );
    path_str(&path).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_config_answers_the_same_under_wasmtime_serve() {
    let reference = crate::parity::start_reference_with(
        wasm::SERVE_CONFIG,
        &["-Sconfig", "-Sconfig-var=hello=world"],
    );
    let dir = tempdir();
    let manifest = manifest(
        dir.path(),
        wasm::SERVE_CONFIG,
        "config = { hello = \"world\" }\n",
    );
    let host = Wasmlet::serve(&["--config", &manifest]);
    let want = get(reference.addr, "/").await;
    let got = get(host.public, "/").await;
    assert_eq!((want.status, want.text().as_str()), (200, "world"));
    assert_eq!(got.status, want.status);
    assert_eq!(got.body, want.body);
    assert_eq!(got.header("content-type"), want.header("content-type"));
}

/// A `{ file }` value reaches the guest and nothing else: not the logs,
/// `/handlers`, `/metrics`, nor a later error of the same manifest.
#[tokio::test(flavor = "multi_thread")]
async fn a_config_secret_is_never_printed() {
    const SECRET: &str = "s3cr3t-7f1c9a-never-print";
    let dir = tempdir();
    write(&dir.path().join("hello.secret"), format!("{SECRET}\n"));
    let manifest = manifest(
        dir.path(),
        wasm::SERVE_CONFIG,
        "config = { hello = { file = \"hello.secret\" } }\n",
    );
    let host = Wasmlet::serve(&["--config", &manifest]);
    assert_eq!(
        get(host.public, "/").await.text(),
        SECRET,
        "the guest gets it"
    );
    // /handlers names the variable, never its value.
    let listed = handlers(&host).await;
    assert_eq!(listed["routes"][0]["config"], serde_json::json!(["hello"]));
    assert!(listed["routes"][0].get("key_value_stores").is_none());
    // A broken reload of the same manifest: its error names the line.
    write(
        &dir.path().join("wasmlet.toml"),
        format!(
            "[[route]]\npath = \"/...\"\ncomponent = \"{}\"\nconfig = {{ hello = {{ file = \"hello.secret\" }} }}\ntimeout = \"soon\"\n",
            wasm::SERVE_CONFIG
        ),
    );
    let reply = reload(host.admin).await;
    assert_ne!(reply.status, 200, "{}", reply.text());
    let handlers = handlers(&host).await.to_string();
    assert!(handlers.contains("line 5"), "{handlers}");
    let metrics = get(host.admin, "/metrics").await.text();
    for (what, text) in [
        ("reload reply", reply.text()),
        ("/handlers", handlers),
        ("/metrics", metrics),
        ("logs", host.logs().join("\n")),
    ] {
        assert!(!text.contains(SECRET), "{what} shows the secret:\n{text}");
    }
    assert_eq!(get(host.public, "/").await.text(), SECRET, "still serving");
}

/// Not granted, not reachable: a component importing wasi:config on a
/// route without `config` fails its load in one line naming the route and
/// the key; on reload the last good version keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn wasi_config_must_be_granted() {
    let dir = tempdir();
    let manifest = manifest(dir.path(), wasm::SERVE_CONFIG, "");
    let (status, _, stderr) = serve_to_exit(&["--config", &manifest], &[]);
    assert!(!status.success());
    assert!(
        stderr.contains("route /...: the component imports wasi:config/store@0.2.0-rc.1")
            && stderr.contains("add `config = {"),
        "{stderr}"
    );

    let manifest = self::manifest(
        dir.path(),
        wasm::SERVE_CONFIG,
        "config = { hello = \"v1\" }\n",
    );
    let host = Wasmlet::serve(&["--config", &manifest]);
    assert_eq!(get(host.public, "/").await.text(), "v1");
    self::manifest(dir.path(), wasm::SERVE_CONFIG, "");
    let reply = reload(host.admin).await;
    assert_ne!(reply.status, 200);
    let doc = handlers(&host).await;
    let error = doc["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("wasi:config") && error.contains("config = {"),
        "{doc}"
    );
    assert_eq!(
        get(host.public, "/").await.text(),
        "v1",
        "the last good version serves"
    );
    // The other grant: wasi:keyvalue without `key_value_stores`. Until the
    // host links wasi:keyvalue the linker refuses it first; with it linked,
    // the grant check names the key to add.
    let manifest = self::manifest(dir.path(), wasm::SERVE_KEYVALUE, "");
    let (status, _, stderr) = serve_to_exit(&["--config", &manifest], &[]);
    assert!(!status.success());
    assert!(
        (stderr.contains("imports wasi:keyvalue/")
            && stderr.contains("key_value_stores = [\"default\"]"))
            || stderr.contains("imports instance `wasi:keyvalue/store@0.2.0-draft`"),
        "{stderr}"
    );
}

/// The guest's stderr lines under `wasmtime serve -Scli COMPONENT`, after
/// one request to it.
async fn reference_stderr(component: &str) -> Vec<String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let bin = std::env::var("WASMTIME").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        let cargo = format!("{home}/.cargo/bin/wasmtime");
        if std::path::Path::new(&cargo).exists() {
            cargo
        } else {
            "wasmtime".into()
        }
    });
    let mut child = Command::new(bin)
        .args(["serve", "-Scli", "--addr", &addr, component])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let stderr = child.stderr.take().unwrap();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let started = std::time::Instant::now();
    while !lines
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("Serving HTTP"))
    {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "wasmtime serve did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get(addr.parse().unwrap(), "/").await.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = child.kill();
    let _ = child.wait();
    let lines = lines.lock().unwrap().clone();
    lines.into_iter().filter(|l| l.contains("stderr")).collect()
}

/// Issue 28 §3: one line written in six pieces, each through a fresh
/// `get-stderr()` handle, is one log line, as under `wasmtime serve`.
#[tokio::test(flavor = "multi_thread")]
async fn a_line_written_in_pieces_is_logged_once() {
    let reference = reference_stderr(wasm::STDERR_PIECES).await;
    assert_eq!(
        reference
            .iter()
            .filter(|l| l.contains("start a print 1234"))
            .count(),
        1,
        "wasmtime serve: {reference:?}"
    );
    let host = Wasmlet::serve(&[wasm::STDERR_PIECES]);
    let reply = get(host.public, "/").await;
    assert_eq!(reply.status, 200);
    let line = host.wait_for_log(Duration::from_secs(5), |l| l.contains("stream=stderr"));
    assert!(line.is_some(), "no guest line: {:?}", host.logs());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let guest: Vec<String> = host.logs_containing("stream=stderr");
    assert_eq!(guest.len(), 1, "{guest:#?}");
    assert!(guest[0].contains("start a print 1234"), "{guest:#?}");
}

/// A `file` store needs --data-dir: without it a route granted one (the
/// implicit `default` here) fails its load in one line saying what to do.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_store_without_data_dir_fails_its_load() {
    let dir = tempdir();
    let manifest = manifest(
        dir.path(),
        wasm::SERVE_KEYVALUE,
        "key_value_stores = [\"default\"]\n",
    );
    let (status, _, stderr) = serve_to_exit(&["--config", &manifest], &[]);
    assert!(!status.success());
    assert!(
        stderr.contains("route /...: key-value store `default`")
            && stderr.contains("--data-dir (WASMLET_DATA_DIR)")
            && stderr.contains("[key_value_store.default] type = \"memory\""),
        "{stderr}"
    );
}
