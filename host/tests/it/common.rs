//! Test harness: start `wasmlet` as a child process, talk HTTP to it.

#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use test_programs_artifacts as wasm;

pub const BIN: &str = env!("CARGO_BIN_EXE_wasmlet");
/// How long a test waits for the host to start listening: compiling an
/// 18 MB Python component alone takes 20 s on an idle 2-core machine, and
/// the tests run in parallel.
const START_TIMEOUT: Duration = Duration::from_secs(300);

/// A running `wasmlet serve`; killed on drop.
pub struct Wasmlet {
    child: Child,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

/// Both ports on loopback, port 0.
const ANY_PORTS: [&str; 4] = ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"];

impl Wasmlet {
    /// `wasmlet serve ARGS... --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0`
    pub fn serve(args: &[&str]) -> Wasmlet {
        Wasmlet::serve_with_env(args, &[])
    }

    pub fn serve_with_env(args: &[&str], env: &[(&str, &str)]) -> Wasmlet {
        let mut command = Command::new(BIN);
        command
            .arg("serve")
            .args(args)
            .args(ANY_PORTS)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("failed to start wasmlet");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let logs = logs.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if line.contains("listening") {
                        let _ = tx.send(line.clone());
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        }
        // Only the readers hold a sender now: a host that exits before it
        // listens ends the wait at once instead of after START_TIMEOUT.
        drop(tx);
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "wasmlet did not start listening; output:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        };
        Wasmlet {
            child,
            public: field(&line, "public").parse().expect("public address"),
            admin: field(&line, "admin").parse().expect("admin address"),
            logs,
        }
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// The log lines so far that contain `text`.
    pub fn logs_containing(&self, text: &str) -> Vec<String> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(text))
            .cloned()
            .collect()
    }

    /// Waits until a log line satisfies `pred`.
    pub fn wait_for_log(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(line) = self.logs().into_iter().find(|l| pred(l)) {
                return Some(line);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Waits until `n` log lines satisfy `pred`, and returns those lines
    /// (fewer if `timeout` passes first). The log is read from the host's
    /// stderr by another thread, so a line the host wrote before answering
    /// may not be in [`Self::logs`] yet when the answer arrives.
    pub fn wait_for_logs(
        &self,
        timeout: Duration,
        n: usize,
        pred: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines: Vec<String> = self.logs().into_iter().filter(|l| pred(l)).collect();
            if lines.len() >= n || Instant::now() >= deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.public)
    }
}

impl Drop for Wasmlet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `key=value` (text logs) or `"key":"value"` (JSON logs) from a log line.
pub fn field(line: &str, key: &str) -> String {
    let plain = format!("{key}=");
    if let Some(start) = line.find(&plain) {
        let rest = &line[start + plain.len()..];
        return rest
            .split_whitespace()
            .next()
            .unwrap_or("")
            .trim_matches('"')
            .to_string();
    }
    let quoted = format!("\"{key}\":");
    let start = line
        .find(&quoted)
        .unwrap_or_else(|| panic!("no `{key}` in `{line}`"));
    let rest = line[start + quoted.len()..].trim_start();
    let rest = rest.strip_prefix('"').unwrap_or(rest);
    rest.split(['"', ',', '}']).next().unwrap_or("").to_string()
}

/// Runs the binary to completion: (exit status, stdout, stderr).
pub fn run(args: &[&str]) -> (ExitStatus, String, String) {
    run_with_env(args, &[])
}

/// `wasmlet serve ARGS...` on port 0 as [`Wasmlet::serve_with_env`] starts
/// it, run to completion: for start-ups that must fail.
pub fn serve_to_exit(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let argv: Vec<&str> = std::iter::once("serve")
        .chain(args.iter().copied())
        .chain(ANY_PORTS)
        .collect();
    run_with_env(&argv, env)
}

/// [`run`] with more environment variables.
pub fn run_with_env(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let output = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("failed to run wasmlet");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One request on a new connection.
pub async fn request(addr: SocketAddr, method: &str, path: &str, body: impl Into<Bytes>) -> Reply {
    request_with(addr, method, path, &[], body).await
}

pub async fn request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let mut builder = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let request = builder.body(Full::new(body.into())).unwrap();
    send(addr, request)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Sends any request body type on a new connection.
pub async fn send<B>(addr: SocketAddr, request: http::Request<B>) -> Result<Reply, String>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok(Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}

pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, Bytes::new()).await
}

/// A request body streamed in `chunk`-sized frames, `total` bytes in all,
/// without a content-length (chunked encoding).
pub fn streamed_body(
    total: usize,
    chunk: usize,
) -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, std::convert::Infallible>>> {
    let chunks = (0..total.div_ceil(chunk)).map(move |i| {
        let len = chunk.min(total - i * chunk);
        Ok(Frame::data(Bytes::from(vec![b'a' + (i % 26) as u8; len])))
    });
    StreamBody::new(futures_util::stream::iter(chunks))
}

/// A scratch directory removed on drop.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

pub fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    std::fs::write(path, bytes).unwrap();
}

pub fn copy(from: &str, to: &Path) {
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {from} -> {}: {e}", to.display()));
}

/// An empty but valid core WebAssembly module.
pub const CORE_MODULE: &[u8] = b"\0asm\x01\0\0\0";
/// An empty but valid component: it exports nothing.
pub const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

pub fn pathbuf(p: &str) -> PathBuf {
    PathBuf::from(p)
}

/// Clients sending `GET path` continuously over keep-alive connections,
/// recording every failure, until stopped.
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<LoadStats>>,
}

#[derive(Debug, Default)]
pub struct LoadStats {
    pub ok: u64,
    pub failures: Vec<String>,
    pub bodies: std::collections::BTreeMap<String, u64>,
}

impl Load {
    pub fn start(addr: SocketAddr, path: &'static str, clients: usize) -> Load {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|_| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut stats = LoadStats::default();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let stream = match tokio::net::TcpStream::connect(addr).await {
                            Ok(s) => s,
                            Err(e) => {
                                stats.failures.push(format!("connect: {e}"));
                                continue;
                            }
                        };
                        let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(
                            hyper_util::rt::TokioIo::new(stream),
                        )
                        .await
                        else {
                            stats.failures.push("handshake".into());
                            continue;
                        };
                        tokio::spawn(conn);
                        let mut on_conn = 0u64;
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            on_conn += 1;
                            // A keep-alive connection takes a moment to be idle again
                            // after a response; sending before that fails client-side.
                            if let Err(e) = sender.ready().await {
                                stats.failures.push(format!("connection not reusable: {e}"));
                                break;
                            }
                            let request = http::Request::get(path)
                                .header("host", "localhost")
                                .body(Full::new(Bytes::new()))
                                .unwrap();
                            let response = match sender.send_request(request).await {
                                Ok(r) => r,
                                Err(e) => {
                                    stats.failures.push(format!(
                                        "request {on_conn} on its connection: {e:?}"
                                    ));
                                    break;
                                }
                            };
                            let status = response.status();
                            match response.into_body().collect().await {
                                Ok(body) if status == 200 => {
                                    stats.ok += 1;
                                    let body =
                                        String::from_utf8_lossy(&body.to_bytes()).into_owned();
                                    *stats.bodies.entry(body).or_default() += 1;
                                }
                                Ok(body) => stats.failures.push(format!(
                                    "status {status}: {}",
                                    String::from_utf8_lossy(&body.to_bytes())
                                )),
                                Err(e) => {
                                    stats.failures.push(format!("body: {e}"));
                                    break;
                                }
                            }
                        }
                    }
                    stats
                })
            })
            .collect();
        Load { stop, tasks }
    }

    pub async fn finish(self) -> LoadStats {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut total = LoadStats::default();
        for task in self.tasks {
            let stats = task.await.unwrap();
            total.ok += stats.ok;
            total.failures.extend(stats.failures);
            for (body, n) in stats.bodies {
                *total.bodies.entry(body).or_default() += n;
            }
        }
        total
    }
}

/// Polls `GET path` until the body is `want`; returns how long it took.
pub async fn until_body(addr: SocketAddr, path: &str, want: &str, timeout: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let r = get(addr, path).await;
        if r.status == 200 && r.text() == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < timeout,
            "`{path}` still answers {} `{}`, want `{want}`",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The admin `/handlers` document.
pub async fn handlers(host: &Wasmlet) -> serde_json::Value {
    let r = get(host.admin, "/handlers").await;
    assert_eq!(r.status, 200);
    serde_json::from_slice(&r.body).unwrap()
}

/// The value of one sample in the `/metrics` exposition (0 if absent).
pub async fn metric(host: &Wasmlet, series: &str) -> f64 {
    let text = get(host.admin, "/metrics").await.text();
    sample(&text, series)
}

pub fn sample(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// Whether this machine exposes the process's memory cgroup (v1 or v2),
/// as the host's working-set metric needs.
pub fn memory_cgroup_readable() -> bool {
    let Ok(membership) = std::fs::read_to_string("/proc/self/cgroup") else {
        return false;
    };
    membership.lines().any(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next(), fields.next(), fields.next());
        let path = path.unwrap_or("/").trim_start_matches('/');
        match controllers {
            Some("") => Path::new("/sys/fs/cgroup")
                .join(path)
                .join("memory.current")
                .exists(),
            Some(c) if c.split(',').any(|c| c == "memory") => Path::new("/sys/fs/cgroup/memory")
                .join(path)
                .join("memory.usage_in_bytes")
                .exists(),
            _ => false,
        }
    }) || Path::new("/sys/fs/cgroup/memory/memory.usage_in_bytes").exists()
        || Path::new("/sys/fs/cgroup/memory.current").exists()
}

/// A loopback upstream answering `upstream says hi` to everything.
pub async fn upstream() -> SocketAddr {
    upstream_answering(|_| Bytes::from_static(b"upstream says hi")).await
}

/// A loopback upstream answering each request with `answer(its headers)`.
pub async fn upstream_answering(answer: fn(&http::HeaderMap) -> Bytes) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
                hyper_util::rt::TokioIo::new(stream),
                hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let body = answer(request.headers());
                    async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(body)))
                    }
                }),
            ));
        }
    });
    addr
}

/// `POST /reload` on the admin port, with the header it requires.
pub async fn reload(admin: SocketAddr) -> Reply {
    request_with(
        admin,
        "POST",
        "/reload",
        &[("x-wasmlet-reload", "1")],
        Bytes::new(),
    )
    .await
}

/// A `/proc/PID/status` memory field of process `pid` (`VmRSS`, `VmHWM`), in KiB.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A manifest of `(path, component, extra TOML lines)` in a fresh dir:
/// the dir (keep it alive) and the manifest's path.
pub fn routes(routes: &[(&str, &str, &str)]) -> (tempfile::TempDir, String) {
    let dir = tempdir();
    let mut toml = String::new();
    for (path, component, extra) in routes {
        toml.push_str(&format!(
            "[[route]]\npath = \"{path}\"\ncomponent = \"{component}\"\n{extra}\n\n"
        ));
    }
    write(&dir.path().join("wasmlet.toml"), toml);
    let manifest = path_str(&dir.path().join("wasmlet.toml")).to_string();
    (dir, manifest)
}
