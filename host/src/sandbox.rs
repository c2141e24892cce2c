//! What a guest is granted, per request: by default nothing.
//!
//! A fresh [`HostState`] is the whole world one instance can see: no host
//! environment variables, no files, no sockets. A route may grant
//! environment variables (`env`) and outbound HTTP to listed hosts
//! (`allowed_outbound_hosts`, enforced in the outbound hook). The guest's
//! stdout and stderr go to the host log, tagged with the route and the
//! request id, and bounded in size.

use crate::limits::MemoryBudget;
use bytes::Bytes;
use http_body_util::BodyExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// Bytes of stdout plus stderr one request may log; the rest is dropped.
pub const GUEST_OUTPUT_LIMIT: usize = 64 * 1024;
/// A guest line longer than this is logged in pieces.
const GUEST_LINE_LIMIT: usize = 4096;

/// The data of one request's `Store`.
pub struct HostState {
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub table: ResourceTable,
    pub outbound: OutboundPolicy,
    pub limiter: MemoryLimiter,
}

impl HostState {
    /// A store's data for one request of `route`, whose memories may grow
    /// to `max_memory` each, within `budget` all together.
    pub fn new(
        grants: &Grants,
        max_memory: u64,
        budget: Option<MemoryBudget>,
        request_id: Arc<str>,
    ) -> HostState {
        let mut wasi = WasiCtx::builder();
        wasi.envs(&grants.env);
        if grants.log_output {
            let log = GuestLog::new(grants.route.clone(), request_id);
            wasi.stdout(log.stream("stdout"))
                .stderr(log.stream("stderr"));
        }
        HostState {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            outbound: OutboundPolicy {
                rules: grants.outbound.clone(),
                route: grants.route.clone(),
            },
            limiter: MemoryLimiter {
                max: usize::try_from(max_memory).unwrap_or(usize::MAX),
                budget,
                charged: 0,
                exceeded: None,
            },
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

/// What one route grants its guest, resolved once at load time.
#[derive(Debug, Clone)]
pub struct Grants {
    pub route: Arc<str>,
    pub env: Vec<(String, String)>,
    pub outbound: Arc<[OutboundRule]>,
    /// Whether guest stdout/stderr are logged (otherwise discarded).
    pub log_output: bool,
}

/// Which memory limit a guest ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryLimit {
    /// Its route's `max_memory` (or --max-memory).
    Instance,
    /// --max-total-memory, taken by all running instances together.
    Host,
}

/// Denies memory growth past the route's limit or the host's budget and
/// remembers which it was, so the resulting trap is reported as a memory
/// fault. Gives back what it took from the budget when its store drops.
pub struct MemoryLimiter {
    max: usize,
    budget: Option<MemoryBudget>,
    /// Bytes this store's memories hold against the budget. A grow that
    /// wasmtime still fails after it was allowed stays charged until the
    /// store drops: an overcount, never an undercount.
    charged: u64,
    pub exceeded: Option<MemoryLimit>,
}

/// Table elements one instance may grow to.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.exceeded = Some(MemoryLimit::Instance);
            return Ok(false);
        }
        if let Some(budget) = &self.budget {
            let more = desired.saturating_sub(current) as u64;
            if !budget.try_charge(more) {
                self.exceeded = Some(MemoryLimit::Host);
                return Ok(false);
            }
            self.charged += more;
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

impl Drop for MemoryLimiter {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.release(self.charged);
        }
    }
}

/// One `allowed_outbound_hosts` entry: `scheme://host[:port]`, where scheme
/// is `http`, `https` or `*`, host is a name, an IP, `*` or `*.suffix`, and
/// port is a number or `*` (absent: the scheme's default port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRule {
    scheme: Option<String>,
    host: String,
    port: Option<u16>,
    any_port: bool,
}

impl OutboundRule {
    pub fn parse(text: &str) -> Result<OutboundRule, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("`{text}`: expected `scheme://host[:port]`"))?;
        let scheme = match scheme {
            "http" | "https" => Some(scheme.to_string()),
            "*" => None,
            other => {
                return Err(format!(
                    "`{text}`: unsupported scheme `{other}` (http, https or *)"
                ));
            }
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            return Err(format!("`{text}`: a host may not have a path"));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || rest.starts_with('[') => {
                (host, Some(port))
            }
            _ => (rest, None),
        };
        if host.is_empty() || (host.contains('*') && host != "*" && !host.starts_with("*.")) {
            return Err(format!("`{text}`: invalid host `{host}`"));
        }
        let (port, any_port) = match port {
            None => (None, false),
            Some("*") => (None, true),
            Some(p) => (
                Some(
                    p.parse()
                        .map_err(|_| format!("`{text}`: invalid port `{p}`"))?,
                ),
                false,
            ),
        };
        Ok(OutboundRule {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
            any_port,
        })
    }

    pub fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        if self.scheme.as_deref().is_some_and(|s| s != scheme) {
            return false;
        }
        let host = host.to_ascii_lowercase();
        let host_ok = match self.host.strip_prefix("*.") {
            _ if self.host == "*" => true,
            Some(suffix) => host.ends_with(&format!(".{suffix}")),
            None => host == self.host,
        };
        let default_port = if scheme == "https" { 443 } else { 80 };
        let port = port.unwrap_or(default_port);
        let port_ok = self.any_port || self.port.unwrap_or(default_port) == port;
        host_ok && port_ok
    }
}

/// The outbound hook: deny by default, forward allowed requests with
/// wasmtime-wasi-http's default client.
pub struct OutboundPolicy {
    rules: Arc<[OutboundRule]>,
    route: Arc<str>,
}

type SendFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<wasmtime_wasi_http::WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendFuture {
        let uri = request.uri();
        let scheme = uri.scheme_str().unwrap_or("http");
        let host = uri.host().unwrap_or("");
        let allowed = self
            .rules
            .iter()
            .any(|rule| rule.allows(scheme, host, uri.port_u16()));
        if !allowed {
            tracing::warn!(route = %self.route, uri = %uri, "outbound request denied: host not in allowed_outbound_hosts");
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        Box::new(async move {
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

/// Guest stdout/stderr as host log lines, with a shared per-request budget.
#[derive(Clone)]
struct GuestLog {
    route: Arc<str>,
    request_id: Arc<str>,
    budget: Arc<std::sync::atomic::AtomicUsize>,
}

impl GuestLog {
    fn new(route: Arc<str>, request_id: Arc<str>) -> GuestLog {
        GuestLog {
            route,
            request_id,
            budget: Arc::new(GUEST_OUTPUT_LIMIT.into()),
        }
    }

    fn stream(&self, name: &'static str) -> GuestStream {
        GuestStream {
            log: self.clone(),
            name,
        }
    }
}

struct GuestStream {
    log: GuestLog,
    name: &'static str,
}

impl IsTerminal for GuestStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStream {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            log: self.log.clone(),
            name: self.name,
            pending: Vec::new(),
            truncated: false,
        })
    }
}

/// Splits what the guest writes into lines and logs each one.
struct LineWriter {
    log: GuestLog,
    name: &'static str,
    pending: Vec<u8>,
    truncated: bool,
}

impl LineWriter {
    fn emit(&self, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        tracing::info!(
            target: "guest",
            route = %self.log.route,
            request_id = %self.log.request_id,
            stream = %self.name,
            "{}",
            line.trim_end_matches('\r')
        );
    }

    fn accept(&mut self, buf: &[u8]) {
        use std::sync::atomic::Ordering;
        let granted = self
            .log
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                Some(left.saturating_sub(buf.len()))
            })
            .unwrap_or(0)
            .min(buf.len());
        self.pending.extend_from_slice(&buf[..granted]);
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            self.emit(&line[..line.len() - 1]);
        }
        if self.pending.len() >= GUEST_LINE_LIMIT {
            let line = std::mem::take(&mut self.pending);
            self.emit(&line);
        }
        if granted < buf.len() && !self.truncated {
            self.truncated = true;
            tracing::warn!(
                target: "guest",
                route = %self.log.route,
                request_id = %self.log.request_id,
                stream = %self.name,
                limit_bytes = GUEST_OUTPUT_LIMIT,
                "guest output over the limit; the rest is dropped"
            );
        }
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.accept(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.emit(&line);
        }
    }
}

/// A response body with no data, for guest-less answers.
pub fn empty_body() -> wasmtime_wasi_http::p2::body::HyperOutgoingBody {
    http_body_util::Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> OutboundRule {
        OutboundRule::parse(text).unwrap()
    }

    #[test]
    fn outbound_rules_match_scheme_host_and_port() {
        let r = rule("http://127.0.0.1:8080");
        assert!(r.allows("http", "127.0.0.1", Some(8080)));
        assert!(!r.allows("http", "127.0.0.1", Some(8081)));
        assert!(!r.allows("https", "127.0.0.1", Some(8080)));
        assert!(!r.allows("http", "127.0.0.2", Some(8080)));

        let r = rule("https://api.example.com");
        assert!(r.allows("https", "API.example.com", None));
        assert!(r.allows("https", "api.example.com", Some(443)));
        assert!(!r.allows("https", "api.example.com", Some(8443)));

        let r = rule("*://*.example.com:*");
        assert!(r.allows("http", "a.example.com", Some(1)));
        assert!(!r.allows("http", "example.com", Some(1)));
        assert!(!r.allows("http", "evil-example.com", Some(1)));
    }

    #[test]
    fn bad_outbound_rules_are_rejected() {
        for bad in [
            "127.0.0.1:80",
            "ftp://x",
            "http://",
            "http://a/b",
            "http://a:x",
            "http://a*b",
        ] {
            assert!(OutboundRule::parse(bad).is_err(), "{bad}");
        }
    }
}
