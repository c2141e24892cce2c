//! Parity with the reference: the same hello component under the real
//! `wasmtime serve` and under wasmlet answers the same status, body and
//! headers (content-type, content-length, allow) for the same requests.

use crate::common::*;
use bytes::Bytes;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The wasmtime version the host links; the reference must match it.
const WASMTIME_VERSION: &str = "48.0.8";

/// `wasmtime serve` as a child process; killed on drop.
pub struct Reference {
    child: Child,
    pub addr: SocketAddr,
}

impl Drop for Reference {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wasmtime_binary() -> String {
    if let Ok(path) = std::env::var("WASMTIME") {
        return path;
    }
    let home = std::env::var("CARGO_HOME")
        .unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_default()));
    let cargo_bin = format!("{home}/bin/wasmtime");
    if std::path::Path::new(&cargo_bin).exists() {
        cargo_bin
    } else {
        "wasmtime".into()
    }
}

fn start_reference(component: &str) -> Reference {
    start_reference_with(component, &[])
}

/// `wasmtime serve -Scli EXTRA... COMPONENT`.
pub fn start_reference_with(component: &str, extra: &[&str]) -> Reference {
    let bin = wasmtime_binary();
    let version = Command::new(&bin)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| {
            panic!("`{bin}` not runnable ({e}); run scripts/setup-tools.sh (scripts/test.sh does)")
        });
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(
        version.contains(WASMTIME_VERSION),
        "reference is `{version}`, want {WASMTIME_VERSION}"
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut child = Command::new(&bin)
        .args(["serve", "-Scli"])
        .args(extra)
        .args(["--addr", &addr.to_string(), component])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("Serving HTTP") {
                let _ = tx.send(());
            }
        }
    });
    // Compiling an 18 MB Python component without a warm cache takes a
    // while on a small, busy machine.
    rx.recv_timeout(Duration::from_secs(300))
        .expect("wasmtime serve did not start");
    Reference { child, addr }
}

#[tokio::test(flavor = "multi_thread")]
async fn hello_answers_the_same_under_wasmtime_serve() {
    let reference = start_reference(wasm::HELLO);
    let host = Wasmlet::serve(&[wasm::HELLO]);
    let cases = [
        ("GET", "/"),
        ("GET", "/?name=x"),
        ("HEAD", "/"),
        ("GET", "/nope"),
        ("GET", "/deeper/path"),
        ("POST", "/"),
        ("PUT", "/"),
        ("DELETE", "/"),
        ("OPTIONS", "/"),
    ];
    for (method, path) in cases {
        let want = request(reference.addr, method, path, Bytes::new()).await;
        let got = request(host.public, method, path, Bytes::new()).await;
        assert_eq!(got.status, want.status, "{method} {path}");
        assert_eq!(got.body, want.body, "{method} {path}");
        for name in ["content-type", "content-length", "allow"] {
            assert_eq!(
                got.header(name),
                want.header(name),
                "{method} {path}: {name}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn python_and_javascript_answer_the_same_under_wasmtime_serve() {
    let upstream = upstream().await;
    let fetch = format!("/fetch?url=http://{upstream}/hello");
    let body = Bytes::from(vec![b'x'; 1 << 20]);
    let cases = [
        ("GET", "/", Bytes::new()),
        ("HEAD", "/", Bytes::new()),
        ("GET", "/nope", Bytes::new()),
        ("POST", "/", Bytes::new()),
        ("POST", "/echo", body),
        ("GET", fetch.as_str(), Bytes::new()),
        ("GET", "/fetch", Bytes::new()),
    ];
    for (language, component, _) in crate::toolchains::HANDLERS {
        let reference = start_reference(component);
        let dir = tempdir();
        let manifest = crate::toolchains::manifest(dir.path(), component, upstream);
        let cache = crate::toolchains::cache_dir(component);
        let host = Wasmlet::serve(&["--config", path_str(&manifest), "--cache-dir", &cache]);
        for (method, path, body) in &cases {
            let want = request(reference.addr, method, path, body.clone()).await;
            let got = request(host.public, method, path, body.clone()).await;
            let what = format!("{language}: {method} {path}");
            assert_eq!(got.status, want.status, "{what}");
            assert!(got.body == want.body, "{what}: bodies differ");
            assert_eq!(
                got.header("content-type"),
                want.header("content-type"),
                "{what}"
            );
        }
    }
}
