//! An in-process OCI registry for the error paths a real one will not
//! produce on demand: it serves manifests and blobs over plain HTTP on a
//! loopback port 0 (raw HTTP/1.1, one request per connection, so it can
//! also cut a body short), with switchable faults, and records every
//! request it answers.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const REPO: &str = "team/hello";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// What blob and manifest requests get besides the plain answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Fault {
    #[default]
    None,
    /// Blob bytes that do not hash to their digest.
    CorruptBlob,
    /// A blob response with its full Content-Length and half its body.
    TruncatedBlob,
    /// Every answer waits this long first.
    Slow(Duration),
    /// Blobs answer 307 to a second URL on this server.
    RedirectBlobs,
    /// The next N requests answer 503.
    Unavailable(usize),
    /// Manifests are not JSON.
    GarbageManifest,
    /// Manifest GETs answer 200 with a body that never ends, declared as
    /// 1 TiB when `declared`, else delimited by the close; HEADs send no
    /// digest header, so a client must GET to learn the digest.
    EndlessManifest { declared: bool },
    /// Blob GETs answer 500 with an error body that never ends.
    EndlessError,
    /// Every request without a bearer token answers 401 with this
    /// `WWW-Authenticate` challenge.
    Challenge(String),
    /// Manifest requests answer 302 to this absolute URL.
    RedirectManifests(String),
    /// Blobs answer 302 to `/loop/1`, which answers 302 to `/loop/2`, …
    RedirectLoop,
    /// Manifests answer 404 with an error envelope whose message is this.
    ErrorMessage(String),
}

#[derive(Default)]
struct State {
    manifests: HashMap<String, (String, Vec<u8>)>,
    blobs: HashMap<String, Vec<u8>>,
    fault: Fault,
    /// `user:password` that requests must carry as HTTP basic auth.
    basic: Option<String>,
    /// With `basic`: the bearer-token flow instead. `/v2/` challenges
    /// with `Bearer realm=…/token`, `/token` trades the basic credentials
    /// for this token, and everything else needs the token.
    bearer: Option<String>,
    log: Vec<String>,
}

#[derive(Clone)]
pub struct FakeRegistry {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

pub fn sha256(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

impl FakeRegistry {
    pub async fn start() -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(answer(stream, shared.clone(), addr));
            }
        });
        FakeRegistry {
            addr,
            state,
            task: Arc::new(task),
        }
    }

    /// Stops accepting: later connections are refused.
    pub fn stop(&self) {
        self.task.abort();
    }

    /// `oci://ADDR/team/hello` + `suffix` (`:tag` or `@sha256:…`).
    pub fn reference(&self, suffix: &str) -> String {
        format!("oci://{}/{REPO}{suffix}", self.addr)
    }

    pub fn set_fault(&self, fault: Fault) {
        self.state.lock().unwrap().fault = fault;
    }

    pub fn require_basic(&self, credentials: &str) {
        let mut state = self.state.lock().unwrap();
        state.basic = Some(credentials.to_string());
        state.bearer = None;
    }

    /// The token flow: `credentials` get `token` from `/token`.
    pub fn require_bearer(&self, credentials: &str, token: &str) {
        let mut state = self.state.lock().unwrap();
        state.basic = Some(credentials.to_string());
        state.bearer = Some(token.to_string());
    }

    /// Every request answered so far, as `METHOD PATH`.
    pub fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn put_blob(&self, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        self.state
            .lock()
            .unwrap()
            .blobs
            .insert(digest.clone(), bytes.to_vec());
        digest
    }

    /// Stores a manifest under its digest and, if given, a tag; returns
    /// the digest.
    pub fn put_manifest(&self, tag: Option<&str>, media_type: &str, body: &[u8]) -> String {
        let digest = sha256(body);
        let mut state = self.state.lock().unwrap();
        let entry = (media_type.to_string(), body.to_vec());
        state.manifests.insert(digest.clone(), entry.clone());
        if let Some(tag) = tag {
            state.manifests.insert(tag.to_string(), entry);
        }
        digest
    }

    /// An image manifest with one layer of `layer_type` holding `wasm`
    /// (declared as `declared_size` when given); returns its digest.
    pub fn push_with(
        &self,
        tag: Option<&str>,
        wasm: &[u8],
        layer_type: &str,
        declared_size: Option<u64>,
    ) -> String {
        let config = br#"{"architecture":"wasm","os":"wasip2"}"#;
        let config_digest = self.put_blob(config);
        let layer_digest = self.put_blob(wasm);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.wasm.config.v0+json",
                       "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": layer_type, "digest": layer_digest,
                        "size": declared_size.unwrap_or(wasm.len() as u64)}],
        });
        self.put_manifest(tag, OCI_MANIFEST, &serde_json::to_vec(&manifest).unwrap())
    }

    /// `wasm` in the CNCF layout under `tag`; returns the manifest digest.
    pub fn push(&self, tag: Option<&str>, wasm: &[u8]) -> String {
        self.push_with(tag, wasm, "application/wasm", None)
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        if Arc::strong_count(&self.task) == 1 {
            self.task.abort();
        }
    }
}

struct Response {
    status: &'static str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send only this many body bytes, then close.
    cut_at: Option<usize>,
}

fn response(status: &'static str, body: Vec<u8>) -> Response {
    Response {
        status,
        headers: Vec::new(),
        body,
        cut_at: None,
    }
}

fn redirect(to: &str) -> Response {
    let mut r = response("302 Found", Vec::new());
    r.headers.push(("Location".into(), to.to_string()));
    r
}

fn error(status: &'static str, code: &str) -> Response {
    let body = format!(r#"{{"errors":[{{"code":"{code}","message":"{code}"}}]}}"#);
    let mut r = response(status, body.into_bytes());
    r.headers
        .push(("Content-Type".into(), "application/json".into()));
    r
}

async fn answer(mut stream: TcpStream, state: Arc<Mutex<State>>, addr: SocketAddr) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 << 10 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (method, path) = (
        first.next().unwrap_or("").to_string(),
        first.next().unwrap_or("").to_string(),
    );
    let authorization = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.trim().to_string());
    let bearer = authorization
        .as_deref()
        .is_some_and(|a| a.starts_with("Bearer "));
    let (fault, reply) = {
        let mut state = state.lock().unwrap();
        state.log.push(format!("{method} {path}"));
        let fault = state.fault.clone();
        if let Fault::Unavailable(n) = fault {
            state.fault = if n > 1 {
                Fault::Unavailable(n - 1)
            } else {
                Fault::None
            };
        }
        (fault, route(&state, &method, &path, authorization, addr))
    };
    let mut reply = reply;
    match &fault {
        Fault::Slow(delay) => tokio::time::sleep(*delay).await,
        Fault::Unavailable(_) => reply = error("503 Service Unavailable", "UNAVAILABLE"),
        Fault::Challenge(challenge) if !bearer => {
            reply = error("401 Unauthorized", "UNAUTHORIZED");
            reply
                .headers
                .push(("WWW-Authenticate".into(), challenge.clone()));
        }
        Fault::RedirectManifests(to) if path.contains("/manifests/") => {
            reply = redirect(to);
        }
        Fault::ErrorMessage(message) if path.contains("/manifests/") => {
            let body = serde_json::json!({"errors": [{"code": "DENIED", "message": message}]});
            reply = response("404 Not Found", serde_json::to_vec(&body).unwrap());
        }
        Fault::RedirectLoop if path.contains("/blobs/") || path.starts_with("/loop/") => {
            let hop: u32 = path
                .strip_prefix("/loop/")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            reply = redirect(&format!("/loop/{}", hop + 1));
        }
        _ => {}
    }
    let is_blob = path.contains("/blobs/") || path.starts_with("/redirected/");
    if is_blob && reply.status.starts_with("200") {
        match fault {
            Fault::CorruptBlob => {
                if let Some(b) = reply.body.last_mut() {
                    *b ^= 0xff;
                }
            }
            Fault::TruncatedBlob => reply.cut_at = Some(reply.body.len() / 2),
            Fault::RedirectBlobs if !path.starts_with("/redirected/") => {
                let digest = path.rsplit('/').next().unwrap_or("");
                reply = response("307 Temporary Redirect", Vec::new());
                reply
                    .headers
                    .push(("Location".into(), format!("/redirected/{digest}")));
            }
            _ => {}
        }
    }
    if path.contains("/manifests/")
        && fault == Fault::GarbageManifest
        && reply.status.starts_with("200")
    {
        reply.body = b"<html>proxy error</html>".to_vec();
        reply.headers.retain(|(k, _)| k != "Docker-Content-Digest");
    }
    let endless = match fault {
        Fault::EndlessManifest { declared }
            if path.contains("/manifests/") && reply.status.starts_with("200") =>
        {
            reply.headers.retain(|(k, _)| k != "Docker-Content-Digest");
            if method == "GET" {
                Some(("200 OK", declared.then_some(1u64 << 40)))
            } else {
                None
            }
        }
        Fault::EndlessError if is_blob && method == "GET" => {
            Some(("500 Internal Server Error", None))
        }
        _ => None,
    };
    if let Some((status, declared)) = endless {
        endless_body(stream, status, declared, &reply.headers).await;
        return;
    }
    let mut out = format!(
        "HTTP/1.1 {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (k, v) in &reply.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let _ = stream.write_all(out.as_bytes()).await;
    if method != "HEAD" {
        let end = reply.cut_at.unwrap_or(reply.body.len());
        let _ = stream.write_all(&reply.body[..end]).await;
    }
    let _ = stream.shutdown().await;
}

/// A head, then JSON-looking bytes until the client hangs up.
async fn endless_body(
    mut stream: TcpStream,
    status: &str,
    declared: Option<u64>,
    headers: &[(String, String)],
) {
    let mut out = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    if let Some(length) = declared {
        out.push_str(&format!("Content-Length: {length}\r\n"));
    }
    for (k, v) in headers.iter().filter(|(k, _)| k != "Content-Length") {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n{\"errors\":[{\"message\":\"");
    if stream.write_all(out.as_bytes()).await.is_err() {
        return;
    }
    let chunk = vec![b'a'; 64 << 10];
    while stream.write_all(&chunk).await.is_ok() {}
}

fn route(
    state: &State,
    method: &str,
    path: &str,
    authorization: Option<String>,
    addr: SocketAddr,
) -> Response {
    if let (Some(credentials), Some(token)) = (&state.basic, &state.bearer) {
        let basic = format!("Basic {}", base64(credentials.as_bytes()));
        if path.starts_with("/token") {
            if authorization.as_deref() != Some(basic.as_str()) {
                return error("401 Unauthorized", "UNAUTHORIZED");
            }
            let mut r = response("200 OK", format!(r#"{{"token":"{token}"}}"#).into_bytes());
            r.headers
                .push(("Content-Type".into(), "application/json".into()));
            return r;
        }
        if authorization.as_deref() != Some(format!("Bearer {token}").as_str()) {
            let mut r = error("401 Unauthorized", "UNAUTHORIZED");
            r.headers.push((
                "WWW-Authenticate".into(),
                format!("Bearer realm=\"http://{addr}/token\",service=\"fake\""),
            ));
            return r;
        }
    } else if let Some(credentials) = &state.basic {
        let expected = format!("Basic {}", base64(credentials.as_bytes()));
        if authorization.as_deref() != Some(expected.as_str()) {
            let mut r = error("401 Unauthorized", "UNAUTHORIZED");
            r.headers
                .push(("WWW-Authenticate".into(), "Basic realm=\"fake\"".into()));
            return r;
        }
    }
    if path == "/v2/" {
        return response("200 OK", b"{}".to_vec());
    }
    if let Some(digest) = path.strip_prefix("/redirected/") {
        return blob(state, digest);
    }
    let Some(rest) = path.strip_prefix(&format!("/v2/{REPO}/")) else {
        return error("404 Not Found", "NAME_UNKNOWN");
    };
    if let Some(reference) = rest.strip_prefix("manifests/") {
        if method != "GET" && method != "HEAD" {
            return error("405 Method Not Allowed", "UNSUPPORTED");
        }
        let Some((media_type, body)) = state.manifests.get(reference) else {
            return error("404 Not Found", "MANIFEST_UNKNOWN");
        };
        let mut r = response("200 OK", body.clone());
        r.headers.push(("Content-Type".into(), media_type.clone()));
        r.headers
            .push(("Docker-Content-Digest".into(), sha256(body)));
        return r;
    }
    if let Some(digest) = rest.strip_prefix("blobs/") {
        return blob(state, digest);
    }
    error("404 Not Found", "NAME_UNKNOWN")
}

fn blob(state: &State, digest: &str) -> Response {
    match state.blobs.get(digest) {
        Some(bytes) => {
            let mut r = response("200 OK", bytes.clone());
            r.headers
                .push(("Content-Type".into(), "application/octet-stream".into()));
            r
        }
        None => error("404 Not Found", "BLOB_UNKNOWN"),
    }
}

pub fn base64(input: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A "registry" that accepts connections and never answers: each socket
/// is held open, unread, until it is dropped (issue 26, finding 7).
pub struct StalledRegistry {
    pub addr: SocketAddr,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl StalledRegistry {
    pub async fn start() -> StalledRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(stream);
            }
        });
        StalledRegistry {
            addr,
            accepted,
            task,
        }
    }

    /// `oci://ADDR/` + `name` (`team/a:v1`).
    pub fn reference(&self, name: &str) -> String {
        format!("oci://{}/{name}", self.addr)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits (at most `timeout`) until a client has connected.
    pub async fn wait_for_a_connection(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.accepted() == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nothing connected to the stalled registry within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for StalledRegistry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a [`Hostile`] server answers to every request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// 200 with a JSON string that goes on for this many bytes (no
    /// Content-Length), then the connection closes.
    EndlessJson(usize),
    /// This status, with a body of this many bytes of forged log lines,
    /// each `… INFO wasmlet::reload: handlers published … FORGED`.
    LogLines(&'static str, usize),
    /// 200 with this body.
    Text(String),
}

/// The forged log line's marker, for tests to look for.
pub const FORGED: &str = "FORGED";

/// A token realm or an "internal service" on a loopback port: it answers
/// every request the same way and records `METHOD PATH` and the
/// Authorization header it carried (`-` for none).
#[derive(Clone)]
pub struct Hostile {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl Hostile {
    pub async fn start(answer: Answer) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(hostile_answer(stream, answer.clone(), log.clone()));
            }
        });
        Hostile {
            addr,
            requests,
            task: Arc::new(task),
        }
    }

    /// `http://ADDR` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far, as `METHOD PATH AUTHORIZATION`.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        if Arc::strong_count(&self.task) == 1 {
            self.task.abort();
        }
    }
}

/// The body's next chunk, given how many bytes went before; empty at the end.
type Chunks = Box<dyn Fn(usize) -> Vec<u8> + Send>;

async fn hostile_answer(mut stream: TcpStream, answer: Answer, log: Arc<Mutex<Vec<String>>>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 << 10 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or("").to_string();
    let authorization = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .map_or("-".to_string(), |(_, v)| v.trim().to_string());
    let request: Vec<&str> = first.split(' ').take(2).collect();
    log.lock()
        .unwrap()
        .push(format!("{} {authorization}", request.join(" ")));
    let (status, length, body): (&str, Option<usize>, Chunks) = match answer {
        Answer::EndlessJson(total) => (
            "200 OK",
            None,
            Box::new(move |sent| {
                if sent == 0 {
                    b"{\"token\":\"".to_vec()
                } else if sent < total {
                    vec![b'a'; 64 << 10]
                } else {
                    Vec::new()
                }
            }),
        ),
        Answer::LogLines(status, total) => {
            let line = format!(
                "2026-01-01T00:00:00.000000Z  INFO wasmlet::reload: handlers published generation=99 {FORGED}\n"
            );
            let chunk = line.repeat((64 << 10) / line.len()).into_bytes();
            let whole = total / chunk.len() * chunk.len();
            (
                status,
                Some(whole),
                Box::new(move |sent| {
                    if sent < whole {
                        chunk.clone()
                    } else {
                        Vec::new()
                    }
                }),
            )
        }
        Answer::Text(text) => {
            let bytes = text.into_bytes();
            let len = bytes.len();
            (
                "200 OK",
                Some(len),
                Box::new(move |sent| if sent == 0 { bytes.clone() } else { Vec::new() }),
            )
        }
    };
    let mut out = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    if let Some(length) = length {
        out.push_str(&format!("Content-Length: {length}\r\n"));
    }
    out.push_str("Content-Type: application/json\r\n\r\n");
    if stream.write_all(out.as_bytes()).await.is_err() {
        return;
    }
    let mut sent = 0;
    loop {
        let chunk = body(sent);
        if chunk.is_empty() || stream.write_all(&chunk).await.is_err() {
            break;
        }
        sent += chunk.len();
    }
    let _ = stream.shutdown().await;
}
