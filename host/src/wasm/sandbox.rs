//! What a guest is granted and what it may hold, per request: by default
//! nothing, and within its route's limits.
//!
//! A fresh [`HostState`] is the whole world one instance can see: no host
//! environment variables, no files, no sockets. A route may grant
//! environment variables (`env`) and outbound HTTP to listed hosts
//! (`allowed_outbound_hosts`, see [`crate::wasm::outbound`]), and
//! wasi:config variables (`config`). The guest's stdout
//! and stderr go to the host log, tagged with the route and the request id,
//! and bounded in bytes and lines.
//!
//! [`new_store`] is the one place a store is made, for requests and for
//! the trial instantiation at load alike, so both run under the same
//! limits: the route's memory limit covers all of an instance's linear
//! memories together plus what it makes the host hold for it (header maps
//! and other resources), all of it charged to the host's memory budget.

use crate::config::limits::RequestLimits;
use crate::observe::trace::{LogIds, RequestTrace};
use crate::wasm::keyvalue::{KvGrant, KvState, KvView};
use crate::wasm::outbound::{OutboundGrant, OutboundPolicy};
use prometheus_client::metrics::gauge::Gauge;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, StoreContextMut};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_config::WasiConfigVariables;
use wasmtime_wasi_http::p2::body::{HostFutureTrailers, HostIncomingBody, HostOutgoingBody};
use wasmtime_wasi_http::p2::types::{
    HostFutureIncomingResponse, HostIncomingRequest, HostIncomingResponse, HostOutgoingRequest,
    HostOutgoingResponse, HostResponseOutparam,
};
use wasmtime_wasi_http::{FieldMap, WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Bytes of stdout plus stderr one request may log; the rest is dropped.
pub const GUEST_OUTPUT_LIMIT: usize = 64 * 1024;
/// Lines of stdout plus stderr one request may log; the rest is dropped.
/// Without it 64 KiB of empty lines made 65,536 log lines.
pub const GUEST_OUTPUT_LINES: usize = 256;
/// A guest line longer than this is logged in pieces.
const GUEST_LINE_LIMIT: usize = 4096;
/// The in-memory size one header map (`fields`) may reach, as wasi-http
/// counts it (names, values and their per-entry overhead). wasmtime's own
/// default is 128 KiB; a request head on the wire is at most
/// --max-header-size (16 KiB by default), and 64 KiB leaves room for a
/// guest's own larger response headers.
pub const MAX_FIELDS_SIZE: usize = 64 << 10;
/// Resources (header maps, streams, pollables, ...) one instance may hold
/// at once. wasmtime's default is 1,000,000; a handler needs tens.
pub const MAX_RESOURCES: usize = 10_000;
/// Table elements one instance may grow to.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// The data of one request's `Store`.
pub struct HostState {
    pub wasi: WasiCtx,
    pub http: WasiHttpCtx,
    pub table: ResourceTable,
    pub outbound: OutboundPolicy,
    pub limiter: MemoryLimiter,
    /// The route's key-value stores, and this request's budget for them.
    pub keyvalue: KvState,
    /// The route's wasi:config variables (empty when not granted: then a
    /// component importing wasi:config is refused at load).
    pub config: Arc<WasiConfigVariables>,
    /// Where guest output goes, when the route logs it.
    log: Option<GuestLog>,
}

impl Drop for HostState {
    /// The request's unfinished output lines are logged when its store
    /// goes.
    fn drop(&mut self) {
        if let Some(log) = &self.log {
            log.flush();
        }
    }
}

impl HostState {
    /// Readies a reused instance's state for a new request: its output is
    /// logged under `request_id` (and its trace's ids), with a fresh output
    /// budget, and its outbound requests are spans of `trace`.
    pub fn renew_for_request(&mut self, request_id: Arc<str>, trace: RequestTrace) {
        self.keyvalue.renew();
        if let Some(log) = &self.log {
            log.renew(request_id, trace.log_ids());
        }
        self.outbound.trace = trace;
    }

    /// Makes a new store's outbound requests spans of `trace`, and its
    /// output lines carry the trace's ids.
    pub fn trace(&mut self, trace: RequestTrace) {
        if let Some(log) = &self.log {
            log.scope.lock().unwrap().trace = trace.log_ids();
        }
        self.outbound.trace = trace;
    }

    /// What wasi:keyvalue's bindings see of this store.
    pub fn kv(&mut self) -> KvView<'_> {
        KvView {
            state: &mut self.keyvalue,
            table: &mut self.table,
        }
    }

    /// Whether the last request left any of its HTTP resources (request,
    /// response, bodies, outparam, outgoing requests) in the table: a body
    /// never finished would stay open into the next request. Other
    /// resources, such as the stdout stream Rust's std keeps, may stay.
    pub fn holds_request_resources(&mut self) -> bool {
        self.table.iter_mut().any(|entry| {
            entry.is::<HostIncomingRequest>()
                || entry.is::<HostResponseOutparam>()
                || entry.is::<HostOutgoingResponse>()
                || entry.is::<HostOutgoingRequest>()
                || entry.is::<HostIncomingResponse>()
                || entry.is::<HostFutureIncomingResponse>()
                || entry.is::<HostIncomingBody>()
                || entry.is::<HostOutgoingBody>()
                || entry.is::<HostFutureTrailers>()
        })
    }
}

/// A store for one instance of `grants`' route, under `limits`, charged to
/// `budget`: the one constructor for request stores and trial loads.
/// The caller sets the epoch policy, and calls [`charge_host_memory`] from
/// it.
pub fn new_store(
    engine: &Engine,
    grants: &Grants,
    limits: &RequestLimits,
    budget: Option<MemoryBudget>,
    request_id: Arc<str>,
) -> Store<HostState> {
    let mut http = WasiHttpCtx::new();
    http.set_field_size_limit(MAX_FIELDS_SIZE);
    let mut table = ResourceTable::new();
    table.set_max_capacity(MAX_RESOURCES);
    let log = grants
        .log_output
        .then(|| GuestLog::new(grants.route.clone(), request_id));
    let state = HostState {
        wasi: wasi_ctx(grants, log.as_ref()),
        log,
        http,
        table,
        outbound: OutboundPolicy {
            grant: grants.outbound.clone(),
            route: grants.route.clone(),
            trace: RequestTrace::default(),
        },
        limiter: MemoryLimiter::new(limits.max_memory, budget),
        keyvalue: KvState::new(grants.keyvalue.clone(), limits.timeout),
        config: grants
            .config
            .as_ref()
            .map_or_else(Arc::default, |c| c.0.clone()),
    };
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limiter);
    store
}

/// The WASI context of an instance: the route's environment, and stdout
/// and stderr to `log` (discarded without one).
fn wasi_ctx(grants: &Grants, log: Option<&GuestLog>) -> WasiCtx {
    let mut wasi = WasiCtx::builder();
    wasi.envs(&grants.env);
    if let Some(log) = log {
        wasi.stdout(log.stream("stdout"))
            .stderr(log.stream("stderr"));
    }
    wasi.build()
}

/// Charges what the guest makes the host hold for it (header maps, alone
/// or in requests and responses) against its memory limit and the budget.
/// Called at every epoch tick: wasi-http allocates header maps outside any
/// limiter, so the table is measured instead. Between two ticks a guest can
/// add at most what it copies in a millisecond, each map bounded by
/// [`MAX_FIELDS_SIZE`] and their number by [`MAX_RESOURCES`].
pub fn charge_host_memory(mut store: StoreContextMut<'_, HostState>) -> wasmtime::Result<()> {
    let state = store.data_mut();
    let held = host_bytes(&mut state.table);
    state.limiter.hold_host(held)
}

/// Bytes of header maps in `table`, as wasi-http sizes them.
fn host_bytes(table: &mut ResourceTable) -> u64 {
    let mut total = 0;
    for entry in table.iter_mut() {
        let fields = if let Some(fields) = entry.downcast_ref::<FieldMap>() {
            fields
        } else if let Some(request) = entry.downcast_ref::<HostOutgoingRequest>() {
            &request.headers
        } else if let Some(response) = entry.downcast_ref::<HostOutgoingResponse>() {
            &response.headers
        } else if let Some(response) = entry.downcast_ref::<HostIncomingResponse>() {
            &response.headers
        } else {
            continue;
        };
        total += fields_size(fields);
    }
    total
}

/// wasi-http's measure of a header map: each name and value plus the size
/// of its in-memory type.
fn fields_size(fields: &FieldMap) -> u64 {
    let names: usize = fields
        .keys()
        .map(|name| name.as_str().len() + size_of::<http::HeaderName>())
        .sum();
    let values: usize = fields
        .values()
        .map(|value| value.len() + size_of::<http::HeaderValue>())
        .sum();
    (names + values) as u64
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
    pub outbound: OutboundGrant,
    /// wasi:config variables; `None`: wasi:config not granted.
    pub config: Option<ConfigGrant>,
    /// Whether guest stdout/stderr are logged (otherwise discarded).
    pub log_output: bool,
    /// The opened backends of the route's `key_value_stores`, and where
    /// their operations are counted; `None`: wasi:keyvalue not granted.
    pub keyvalue: Option<Arc<KvGrant>>,
}

/// A route's wasi:config variables, resolved at load. Its `Debug` prints
/// no value (some come from secrets).
#[derive(Clone)]
pub struct ConfigGrant(pub Arc<WasiConfigVariables>);

impl std::fmt::Debug for ConfigGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConfigGrant(..)")
    }
}

/// Interfaces a route must grant before a component may import them:
/// (import name prefix, the manifest key that grants it, an example).
const GRANTED_IMPORTS: [(&str, &str, &str); 2] = [
    ("wasi:config/", "config", "config = { NAME = \"VALUE\" }"),
    (
        "wasi:keyvalue/",
        "key_value_stores",
        "key_value_stores = [\"default\"]",
    ),
];

impl Grants {
    /// Refuses `imports` (a component's import names) that need a grant
    /// this route does not give, in one line naming the route and the key
    /// to add: the linker has wasi:config and wasi:keyvalue for every
    /// route, so this check is what keeps them off by default.
    pub fn check_imports<'a>(
        &self,
        imports: impl IntoIterator<Item = &'a str>,
    ) -> anyhow::Result<()> {
        for name in imports {
            for (prefix, key, example) in GRANTED_IMPORTS {
                let granted = match key {
                    "config" => self.config.is_some(),
                    _ => self.keyvalue.is_some(),
                };
                if name.starts_with(prefix) && !granted {
                    anyhow::bail!(
                        "route {}: the component imports {name}, which this route does not grant: add `{example}` to the route",
                        self.route
                    );
                }
            }
        }
        Ok(())
    }
}

impl Grants {
    /// Nothing granted and nothing logged: what a validation load gets
    /// when no route is at hand (`wasmlet check`).
    pub fn none(route: &str) -> Grants {
        Grants {
            route: Arc::from(route),
            env: Vec::new(),
            outbound: OutboundGrant::none(),
            config: None,
            log_output: false,
            keyvalue: None,
        }
    }
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
/// fault. The limit covers all of the instance's linear memories together
/// plus the host memory it holds ([`charge_host_memory`]). Gives back what
/// it took from the budget when its store drops.
pub struct MemoryLimiter {
    max: u64,
    budget: Option<MemoryBudget>,
    /// Bytes of all this instance's linear memories together.
    linear: u64,
    /// Bytes of host memory held for the guest, as last measured.
    host: u64,
    /// Bytes this store holds against the budget. A grow that wasmtime
    /// still fails after it was allowed stays charged until the store
    /// drops: an overcount, never an undercount.
    charged: u64,
    pub exceeded: Option<MemoryLimit>,
    /// Raised with `exceeded`, for whoever decides about the instance
    /// outside its store (a wasi:http 0.3 worker, see [`crate::run::p3`]).
    signal: Option<Arc<AtomicBool>>,
}

impl MemoryLimiter {
    pub fn new(max: u64, budget: Option<MemoryBudget>) -> MemoryLimiter {
        MemoryLimiter {
            max,
            budget,
            linear: 0,
            host: 0,
            charged: 0,
            exceeded: None,
            signal: None,
        }
    }

    /// A flag raised when a limit refuses this instance memory.
    pub fn exceeded_signal(&mut self) -> Arc<AtomicBool> {
        self.signal
            .get_or_insert_with(|| Arc::new(AtomicBool::new(self.exceeded.is_some())))
            .clone()
    }

    fn refuse(&mut self, limit: MemoryLimit) -> Result<(), MemoryLimit> {
        self.exceeded = Some(limit);
        if let Some(signal) = &self.signal {
            signal.store(true, Ordering::Release);
        }
        Err(limit)
    }

    /// The limit, for error messages.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Moves this store's total from `linear + host` to the given parts,
    /// if the limit and the budget allow; records which refused.
    fn resize(&mut self, linear: u64, host: u64) -> Result<(), MemoryLimit> {
        let total = linear.saturating_add(host);
        if total > self.max {
            return self.refuse(MemoryLimit::Instance);
        }
        if let Some(budget) = &self.budget
            && total > self.charged
        {
            if !budget.try_charge(total - self.charged) {
                return self.refuse(MemoryLimit::Host);
            }
            self.charged = total;
        }
        self.linear = linear;
        self.host = host;
        Ok(())
    }

    /// Records `bytes` of host memory held for the guest; past a limit
    /// the guest traps.
    fn hold_host(&mut self, bytes: u64) -> wasmtime::Result<()> {
        match self.resize(self.linear, bytes) {
            Ok(()) => Ok(()),
            Err(limit) => Err(wasmtime::format_err!(
                "the guest holds {bytes} bytes of host memory (header maps), past {}",
                match limit {
                    MemoryLimit::Instance => "its memory limit",
                    MemoryLimit::Host => "the host's memory budget (--max-total-memory)",
                }
            )),
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let more = desired.saturating_sub(current) as u64;
        Ok(self
            .resize(self.linear.saturating_add(more), self.host)
            .is_ok())
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

/// Guest stdout/stderr as host log lines, with a per-request budget of
/// bytes and lines shared by both streams. The request a line belongs to
/// is looked up as it is written: a reused instance keeps the streams it
/// opened (Rust's std holds on to stdout), so [`GuestLog::renew`] moves
/// them to each new request.
///
/// The line being written is kept here, one per stream, not in each
/// handle: a guest may write one line in pieces through a fresh
/// `get-stderr()` handle each, and that is one line (as under `wasmtime
/// serve`). A partial line is logged when the request ends
/// ([`GuestLog::renew`], or the store's drop).
#[derive(Clone)]
struct GuestLog {
    route: Arc<str>,
    scope: Arc<Mutex<LogScope>>,
    pending: Arc<Mutex<Pending>>,
}

/// The unfinished line of each stream, at most [`GUEST_LINE_LIMIT`] bytes.
#[derive(Default)]
struct Pending {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Pending {
    fn of(&mut self, stream: &str) -> &mut Vec<u8> {
        if stream == "stdout" {
            &mut self.stdout
        } else {
            &mut self.stderr
        }
    }
}

/// The request the output belongs to now, and what is left of its budget.
#[derive(Clone)]
struct LogScope {
    request_id: Arc<str>,
    /// The request's trace's ids, when it is sampled.
    trace: Option<LogIds>,
    budget: Arc<OutputBudget>,
}

/// What is left of one request's output budget.
struct OutputBudget {
    bytes: AtomicUsize,
    lines: AtomicUsize,
    /// Whether the cut has been logged (once per request).
    truncated: AtomicBool,
}

impl OutputBudget {
    /// Takes up to `wanted` from `left`; returns how much it got.
    fn take(left: &AtomicUsize, wanted: usize) -> usize {
        left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
            Some(left.saturating_sub(wanted))
        })
        .unwrap_or(0)
        .min(wanted)
    }
}

impl LogScope {
    fn new(request_id: Arc<str>, trace: Option<LogIds>) -> LogScope {
        LogScope {
            request_id,
            trace,
            budget: Arc::new(OutputBudget {
                bytes: GUEST_OUTPUT_LIMIT.into(),
                lines: GUEST_OUTPUT_LINES.into(),
                truncated: AtomicBool::new(false),
            }),
        }
    }
}

impl GuestLog {
    fn new(route: Arc<str>, request_id: Arc<str>) -> GuestLog {
        GuestLog {
            route,
            scope: Arc::new(Mutex::new(LogScope::new(request_id, None))),
            pending: Arc::default(),
        }
    }

    /// Moves the output to `request_id` (of trace `trace`), with a fresh
    /// budget, after logging what the last request left unfinished.
    fn renew(&self, request_id: Arc<str>, trace: Option<LogIds>) {
        self.flush();
        *self.scope.lock().unwrap() = LogScope::new(request_id, trace);
    }

    /// Logs each stream's unfinished line, if any.
    fn flush(&self) {
        let taken = {
            let mut pending = self.pending.lock().unwrap();
            [
                ("stdout", std::mem::take(&mut pending.stdout)),
                ("stderr", std::mem::take(&mut pending.stderr)),
            ]
        };
        for (stream, line) in taken {
            if !line.is_empty() {
                self.emit(stream, &line);
            }
        }
    }

    /// Logs one line of `stream`, within the request's line budget.
    fn emit(&self, stream: &str, line: &[u8]) {
        let scope = self.scope();
        if OutputBudget::take(&scope.budget.lines, 1) == 0 {
            self.truncated(stream);
            return;
        }
        let line = String::from_utf8_lossy(line);
        let (trace_id, span_id) = LogIds::fields(scope.trace);
        tracing::info!(
            target: crate::observe::logging::GUEST_TARGET,
            route = %self.route,
            request_id = %scope.request_id,
            trace_id,
            span_id,
            stream = %stream,
            "{}",
            line.trim_end_matches('\r')
        );
    }

    /// Adds what a guest wrote to `stream` (within the request's byte
    /// budget) and logs each line it completes.
    fn accept(&self, stream: &str, buf: &[u8]) {
        let granted = OutputBudget::take(&self.scope().budget.bytes, buf.len());
        let mut lines = Vec::new();
        {
            let mut all = self.pending.lock().unwrap();
            let pending = all.of(stream);
            pending.extend_from_slice(&buf[..granted]);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = pending.drain(..=end).collect();
                line.pop();
                lines.push(line);
            }
            if pending.len() >= GUEST_LINE_LIMIT {
                lines.push(std::mem::take(pending));
            }
        }
        for line in lines {
            self.emit(stream, &line);
        }
        if granted < buf.len() {
            self.truncated(stream);
        }
    }

    fn scope(&self) -> LogScope {
        self.scope.lock().unwrap().clone()
    }

    fn stream(&self, name: &'static str) -> GuestStream {
        GuestStream {
            log: self.clone(),
            name,
        }
    }

    /// Logs the cut once per request. A host line (not `target: "guest"`),
    /// so the log writer never drops it.
    fn truncated(&self, stream: &str) {
        let scope = self.scope();
        if !scope.budget.truncated.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                route = %self.route,
                request_id = %scope.request_id,
                stream,
                limit_bytes = GUEST_OUTPUT_LIMIT,
                limit_lines = GUEST_OUTPUT_LINES,
                "guest output truncated: over its limit of bytes or lines; the rest is dropped"
            );
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
        })
    }
}

/// One handle to a guest stream; the line it writes is the stream's,
/// shared by all its handles ([`GuestLog`]).
struct LineWriter {
    log: GuestLog,
    name: &'static str,
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.log.accept(self.name, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Drops idle instances when the budget runs short; true if it dropped one
/// (so a charge may fit now), false when none is left to drop at once.
type Evict = Box<dyn Fn() -> bool + Send + Sync>;

/// The linear memory all running instances hold together, against
/// --max-total-memory. A store's limiter charges what its memories take
/// (their initial size included) and gives it all back when the store is
/// dropped, which is when the pool resets the memory. Instances kept idle
/// for reuse are charged too, so a charge that does not fit first has them
/// dropped ([`MemoryBudget::evict_with`]), oldest first, before it is
/// refused.
#[derive(Clone)]
pub struct MemoryBudget {
    limit: u64,
    /// Bytes charged now; the same atomic is the metrics' gauge.
    used: Gauge<u64, AtomicU64>,
    evict: Arc<OnceLock<Evict>>,
}

impl std::fmt::Debug for MemoryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBudget")
            .field("limit", &self.limit)
            .field("used", &self.used.get())
            .finish()
    }
}

impl MemoryBudget {
    pub fn new(limit: u64) -> MemoryBudget {
        MemoryBudget {
            limit,
            used: Gauge::default(),
            evict: Arc::default(),
        }
    }

    /// Sets what drops idle instances when a charge does not fit (once;
    /// later calls are ignored).
    pub fn evict_with(&self, evict: impl Fn() -> bool + Send + Sync + 'static) {
        let _ = self.evict.set(Box::new(evict));
    }

    /// Takes `bytes` from the budget, dropping idle instances if that
    /// makes room; takes nothing and returns false if it still would pass
    /// the limit.
    pub fn try_charge(&self, bytes: u64) -> bool {
        loop {
            if self.charge(bytes) {
                return true;
            }
            match self.evict.get() {
                Some(evict) if evict() => {}
                _ => return false,
            }
        }
    }

    fn charge(&self, bytes: u64) -> bool {
        self.used
            .inner()
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    /// Bytes charged now.
    pub fn used(&self) -> u64 {
        self.used.get()
    }

    /// Gives back what [`MemoryBudget::try_charge`] took.
    pub fn release(&self, bytes: u64) {
        self.used.inner().fetch_sub(bytes, Ordering::AcqRel);
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The bytes charged now, as a gauge that follows every charge.
    pub fn used_gauge(&self) -> Gauge<u64, AtomicU64> {
        self.used.clone()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn config_and_keyvalue_imports_need_their_grant() {
        let mut grants = super::Grants::none("/count");
        let imports = [
            "wasi:cli/environment@0.2.6",
            "wasi:keyvalue/store@0.2.0-draft",
        ];
        let e = grants.check_imports(imports).unwrap_err().to_string();
        assert_eq!(
            e,
            "route /count: the component imports wasi:keyvalue/store@0.2.0-draft, which this route does not grant: add `key_value_stores = [\"default\"]` to the route"
        );
        fn histogram() -> prometheus_client::metrics::histogram::Histogram {
            prometheus_client::metrics::histogram::Histogram::new([1.0])
        }
        grants.keyvalue = Some(std::sync::Arc::new(crate::wasm::keyvalue::KvGrant {
            route: "/count".into(),
            stores: Default::default(),
            operations: Default::default(),
            durations: prometheus_client::metrics::family::Family::new_with_constructor(histogram),
        }));
        grants.check_imports(imports).unwrap();
        let e = grants
            .check_imports(["wasi:config/store@0.2.0-rc.1"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("add `config = { NAME = \"VALUE\" }`"), "{e}");
        grants.config = Some(super::ConfigGrant(Default::default()));
        grants
            .check_imports(["wasi:config/store@0.2.0-rc.1"])
            .unwrap();
    }

    use super::*;

    #[test]
    fn the_memory_limit_covers_all_memories_together() {
        use wasmtime::ResourceLimiter;
        let mut limiter = MemoryLimiter::new(100, None);
        assert!(limiter.memory_growing(0, 60, None).unwrap());
        assert!(
            !limiter.memory_growing(0, 60, None).unwrap(),
            "a second memory counts against the same limit"
        );
        assert_eq!(limiter.exceeded, Some(MemoryLimit::Instance));
    }

    #[test]
    fn host_memory_and_linear_memory_share_the_limit_and_the_budget() {
        let budget = MemoryBudget::new(1000);
        let mut limiter = MemoryLimiter::new(100, Some(budget.clone()));
        use wasmtime::ResourceLimiter;
        assert!(limiter.memory_growing(0, 50, None).unwrap());
        assert!(limiter.hold_host(40).is_ok());
        assert_eq!(budget.used_gauge().get(), 90);
        assert!(
            !limiter.memory_growing(50, 61, None).unwrap(),
            "50 + 11 + 40 > 100"
        );
        assert!(limiter.hold_host(51).is_err());
        assert_eq!(limiter.exceeded, Some(MemoryLimit::Instance));
        drop(limiter);
        assert_eq!(budget.used_gauge().get(), 0, "all given back");

        let budget = MemoryBudget::new(60);
        let mut limiter = MemoryLimiter::new(100, Some(budget.clone()));
        assert!(limiter.memory_growing(0, 50, None).unwrap());
        assert!(limiter.hold_host(20).is_err(), "over the budget");
        assert_eq!(limiter.exceeded, Some(MemoryLimit::Host));
    }

    #[test]
    fn the_memory_budget_never_passes_its_limit() {
        let budget = MemoryBudget::new(100);
        assert!(budget.try_charge(60));
        assert!(!budget.try_charge(41), "61 + 41 would pass 100");
        assert!(budget.try_charge(40), "a refused charge takes nothing");
        assert!(!budget.try_charge(1));
        assert_eq!(
            budget.used_gauge().get(),
            100,
            "the gauge is the budget's count"
        );
        budget.release(60);
        assert_eq!(budget.used_gauge().get(), 40);
        assert!(budget.try_charge(60));
        assert!(!budget.try_charge(u64::MAX), "no overflow past the limit");
    }

    #[test]
    fn a_charge_that_does_not_fit_drops_idle_instances_first() {
        let budget = MemoryBudget::new(100);
        assert!(budget.try_charge(90), "held by idle instances, say 3 x 30");
        let idle = Arc::new(AtomicU64::new(3));
        let (held, by) = (idle.clone(), budget.clone());
        budget.evict_with(move || {
            let left = held.load(Ordering::Relaxed);
            if left == 0 {
                return false;
            }
            held.store(left - 1, Ordering::Relaxed);
            by.release(30);
            true
        });
        assert!(budget.try_charge(50), "two of them dropped to make room");
        assert_eq!(idle.load(Ordering::Relaxed), 1, "no more than needed");
        assert_eq!(budget.used(), 80);
        assert!(!budget.try_charge(60), "none left to drop: refused");
        assert_eq!(idle.load(Ordering::Relaxed), 0);
        assert_eq!(budget.used(), 50, "the refused charge took nothing");
    }

    #[test]
    fn header_maps_in_the_table_are_measured() {
        let mut table = ResourceTable::new();
        assert_eq!(host_bytes(&mut table), 0);
        let mut fields = FieldMap::new_mutable(MAX_FIELDS_SIZE);
        let mut hooks = OutboundPolicy {
            grant: OutboundGrant::none(),
            route: Arc::from("/"),
            trace: RequestTrace::default(),
        };
        fields
            .append(&mut hooks, "x-big".into(), vec![b'x'; 1000])
            .unwrap();
        table.push(fields).unwrap();
        let held = host_bytes(&mut table);
        assert!((1005..1200).contains(&held), "{held}");
    }
}
