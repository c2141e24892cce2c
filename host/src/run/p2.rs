//! Running one request in a fresh instance, and mapping faults to statuses.
//!
//! Each request gets a new `Store` (its own WASI context, memory limit and
//! epoch deadline) and a new instance from the route's `ProxyPre`, unless
//! its route reuses instances ([`crate::run::reuse`]): then it may get an idle
//! one, with a new WASI context and deadline, under the same limits. The guest
//! runs in its own task so it can keep streaming the response body after
//! the head is sent. A fault ends that request alone:
//!
//! | fault                                             | status                 |
//! |---------------------------------------------------|------------------------|
//! | trap, panic, stack overflow                       | 500                    |
//! | memory limit hit (linear memories + host memory)  | 500                    |
//! | host's memory budget (--max-total-memory) used up | 503 with `Retry-After` |
//! | no free instance slot in the pooling allocator    | 503 with `Retry-After` |
//! | wall-clock limit hit                              | 504                    |
//! | returned without setting a response               | 500                    |
//! | request body over the limit                       | 413                    |
//! | request body slower than --min-body-rate          | 408                    |
//! | any of these after the response head was sent     | the body is cut        |
//!
//! Faults are logged once, naming the route, the component digest, the
//! request id and the cause, and counted by kind.
//!
//! A request can also end badly through its client: a refused body (413,
//! 408), a timeout that hit while the guest had waited at least
//! [`CLIENT_STALL`] for the client (for request body bytes it asked for, or
//! for the client to take the response body it wrote), or a client that
//! went away before the body's end. [`ResponseBody::on_done`] tells which
//! ([`Ending`]); a canary does not count these against the version.

use crate::config::limits::{CpuShare, HEAVY_AFTER};
use crate::observe::metrics::RouteMetrics;
use crate::routing::registry::Handler;
use crate::run::reuse::Warm;
use crate::wasm::engine::{EPOCH_TICK, GuestRunning, TickerHandle};
use crate::wasm::sandbox::MemoryBudget;
use crate::wasm::sandbox::{self, MemoryLimit};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};
use wasmtime::{PoolConcurrencyLimitError, Store, Trap, UpdateDeadline};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::handler::ProxyPre;
use wasmtime_wasi_http::p2::bindings::Proxy;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::wasm::sandbox::HostState;

/// Seconds a client is told to wait after a host 503 (no request slot, no
/// memory budget or pool slot left).
const RETRY_AFTER_SECONDS: &str = "1";

/// Time a client may spend on a request body before --min-body-rate
/// applies: covers a connection's slow start and a client's pause between
/// head and body, and is short against the 20 s default request timeout.
const BODY_RATE_GRACE: Duration = Duration::from_secs(5);

/// How long the host must have been waiting on the client when a request
/// times out for the timeout to be the client's doing: waiting for request
/// body bytes the guest asked for, or for the client to take the response
/// body the guest wrote (its receive window full, so the guest is blocked
/// on its write). A client keeping up never makes the host wait this long
/// between two body frames; a guest spinning or sleeping on its own is
/// not waiting on the client at all.
pub const CLIENT_STALL: Duration = Duration::from_millis(100);

/// Per-request flags shared by the request side, the guest task and the
/// response body.
pub struct Flags {
    /// The request body went past the route's limit.
    too_large: AtomicBool,
    /// The request body arrived slower than --min-body-rate.
    too_slow: AtomicBool,
    /// The guest faulted; set before its store (and so the response body
    /// stream) is dropped, so a body that ends after it is cut, not finished.
    faulted: AtomicBool,
    /// The guest timed out while the host waited on the client (see
    /// [`CLIENT_STALL`]).
    stalled_by_client: AtomicBool,
    /// The origin of the two waits below.
    started: std::time::Instant,
    /// Since when the host has waited for request body bytes the guest
    /// asked for: nanoseconds after `started`, plus 1; 0 while not waiting.
    upload_wait: AtomicU64,
    /// Since when the connection has held the response body's last frame
    /// without asking for the next (same encoding).
    download_wait: AtomicU64,
}

impl Default for Flags {
    fn default() -> Flags {
        Flags {
            too_large: AtomicBool::new(false),
            too_slow: AtomicBool::new(false),
            faulted: AtomicBool::new(false),
            stalled_by_client: AtomicBool::new(false),
            started: std::time::Instant::now(),
            upload_wait: AtomicU64::new(0),
            download_wait: AtomicU64::new(0),
        }
    }
}

/// Why a request's guest failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// A trap: `unreachable` (Rust panics end here), stack overflow, ...
    Trap(String),
    /// The request's wall-clock limit passed.
    Timeout,
    /// The guest's memory could not start or grow within a limit.
    Memory(MemoryLimit),
    /// The guest returned without setting a response.
    NoResponse,
    /// The pooling allocator had no free slot (instance, memory, table or
    /// stack) for the guest's instance.
    Pool(String),
}

impl Flags {
    /// The host's answer when the request body was refused, if it was.
    fn body_refusal(&self, limit: u64, min_rate: u64) -> Option<Response<ResponseBody>> {
        if self.too_large.load(Ordering::Acquire) {
            Some(body_too_large(limit))
        } else if self.too_slow.load(Ordering::Acquire) {
            Some(host_response(
                StatusCode::REQUEST_TIMEOUT,
                &format!("request body arrived slower than {min_rate} bytes/s\n"),
            ))
        } else {
            None
        }
    }

    /// Whether the response body must be cut rather than ended.
    fn cut(&self) -> bool {
        self.faulted.load(Ordering::Acquire)
            || self.too_large.load(Ordering::Acquire)
            || self.too_slow.load(Ordering::Acquire)
    }

    /// Whether the guest faulted.
    pub fn faulted(&self) -> bool {
        self.faulted.load(Ordering::Acquire)
    }

    /// Records that the guest faulted, and whether a timeout was the
    /// client's doing: it hit while the host had waited at least
    /// [`CLIENT_STALL`] on the client. Call before the guest's store (and
    /// so its response body stream) is dropped.
    pub fn fault(&self, fault: &Fault) {
        if *fault == Fault::Timeout && self.waited_on_client() >= CLIENT_STALL {
            self.stalled_by_client.store(true, Ordering::Release);
        }
        self.faulted.store(true, Ordering::Release);
    }

    /// Whether the request ended badly through its client: a body refused
    /// (too large, too slow), or a timeout while the host waited on it.
    pub fn client_caused(&self) -> bool {
        self.stalled_by_client.load(Ordering::Acquire)
            || self.too_large.load(Ordering::Acquire)
            || self.too_slow.load(Ordering::Acquire)
    }

    /// How long the host has been waiting on the client now (the longer
    /// of the two waits).
    fn waited_on_client(&self) -> Duration {
        let now = self.started.elapsed();
        [&self.upload_wait, &self.download_wait]
            .into_iter()
            .map(|wait| match wait.load(Ordering::Acquire) {
                0 => Duration::ZERO,
                since => now.saturating_sub(Duration::from_nanos(since - 1)),
            })
            .max()
            .unwrap_or_default()
    }

    /// Marks the start of a wait on the client, unless one is marked.
    fn wait_starts(&self, wait: &AtomicU64) {
        let since = (self.started.elapsed().as_nanos() as u64).saturating_add(1);
        let _ = wait.compare_exchange(0, since, Ordering::AcqRel, Ordering::Acquire);
    }
}

impl Fault {
    /// The metric label of this kind of fault.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Trap(_) => "trap",
            Fault::Timeout => "timeout",
            Fault::Memory(MemoryLimit::Instance) => "memory",
            Fault::Memory(MemoryLimit::Host) => "memory_budget",
            Fault::NoResponse => "no_response",
            Fault::Pool(_) => "pool",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Fault::Timeout => StatusCode::GATEWAY_TIMEOUT,
            // Not the handler's doing: other requests hold the memory or
            // the pool's slots.
            Fault::Memory(MemoryLimit::Host) | Fault::Pool(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn cause(&self) -> String {
        match self {
            Fault::Trap(cause) => cause.clone(),
            Fault::Timeout => "exceeded its time limit".into(),
            Fault::Memory(MemoryLimit::Instance) => "exceeded its memory limit".into(),
            Fault::Memory(MemoryLimit::Host) => {
                "found the host's memory budget for guests (--max-total-memory) used up".into()
            }
            Fault::NoResponse => "returned without setting a response".into(),
            Fault::Pool(cause) => format!("found no free instance slot: {cause}"),
        }
    }

    pub fn classify(error: &wasmtime::Error, memory_exceeded: Option<MemoryLimit>) -> Fault {
        if let Some(limit) = memory_exceeded {
            return Fault::Memory(limit);
        }
        if let Some(pool) = error
            .chain()
            .find_map(|e| e.downcast_ref::<PoolConcurrencyLimitError>())
        {
            return Fault::Pool(pool.to_string());
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => Fault::Timeout,
            Some(trap) => Fault::Trap(format!("trap: {trap}")),
            None => Fault::Trap(error.to_string()),
        }
    }
}

/// One request slot from admission control; counted in the in-flight gauge
/// and keeping the epoch ticker going while held. It moves into the guest
/// task, so a request streaming its response body still holds its slot.
pub struct InFlight {
    _permit: OwnedSemaphorePermit,
    _ticking: GuestRunning,
    gauge: Gauge,
}

impl InFlight {
    pub fn new(permit: OwnedSemaphorePermit, gauge: &Gauge, ticker: &TickerHandle) -> InFlight {
        gauge.inc();
        InFlight {
            _permit: permit,
            _ticking: ticker.guest_running(),
            gauge: gauge.clone(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Runs `request` on `handler` in a fresh instance. `min_body_rate` is
/// --min-body-rate in bytes per second (0: no minimum).
pub async fn invoke(
    handler: Arc<Handler>,
    request: Request<Incoming>,
    request_id: Arc<str>,
    in_flight: InFlight,
    cpu_share: &CpuShare,
    memory_budget: Option<&MemoryBudget>,
    min_body_rate: u64,
) -> Response<ResponseBody> {
    let flags = Arc::new(Flags::default());
    let response = run(
        handler,
        request,
        request_id,
        in_flight,
        cpu_share,
        memory_budget,
        min_body_rate,
        flags.clone(),
    )
    .await;
    let length = declared_length(response.headers());
    response.map(|body| body.of_request(flags, length))
}

/// [`invoke`], with the request's flags made by the caller.
#[allow(clippy::too_many_arguments)]
async fn run(
    handler: Arc<Handler>,
    request: Request<Incoming>,
    request_id: Arc<str>,
    in_flight: InFlight,
    cpu_share: &CpuShare,
    memory_budget: Option<&MemoryBudget>,
    min_body_rate: u64,
    flags: Arc<Flags>,
) -> Response<ResponseBody> {
    let limits = handler.limits;
    if declared_length(request.headers()).is_some_and(|len| len > limits.max_body_size) {
        flags.too_large.store(true, Ordering::Release);
        return body_too_large(limits.max_body_size);
    }
    let request = request.map(|body| GuardedBody {
        inner: body,
        remaining: limits.max_body_size,
        limit: limits.max_body_size,
        flags: flags.clone(),
        counter: handler.metrics.body_in.clone(),
        pace: BodyPace::new(min_body_rate),
    });

    if let Some(p3) = &handler.p3 {
        let refusal = move |flags: &Flags| flags.body_refusal(limits.max_body_size, min_body_rate);
        return p3
            .invoke(
                request.map(BodyExt::boxed_unsync),
                request_id,
                flags,
                in_flight,
                refusal,
            )
            .await;
    }

    // An idle instance of this route when it reuses them, else a new store
    // (the guest task instantiates in it, within the request's deadline).
    let (mut store, proxy, served) = match handler.instances.take() {
        Some(warm) => {
            let mut store = warm.store;
            store.data_mut().renew_for_request(request_id.clone());
            (store, Some(warm.proxy), warm.served)
        }
        None => {
            let store = sandbox::new_store(
                handler.component.engine(),
                &handler.grants,
                &limits,
                memory_budget.cloned(),
                request_id.clone(),
            );
            (store, None, 0)
        }
    };
    let deadline = Instant::now() + limits.timeout;
    let slot = HeavySlot::default();
    store.epoch_deadline_callback(epoch_policy(
        deadline.into_std(),
        cpu_share.clone(),
        slot.clone(),
    ));
    store.set_epoch_deadline(1);

    let (sender, receiver) = tokio::sync::oneshot::channel();
    let incoming = match store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, request)
    {
        Ok(incoming) => incoming,
        Err(e) => return host_response(StatusCode::BAD_REQUEST, &format!("bad request: {e}\n")),
    };
    let outparam = match store.data_mut().http().new_response_outparam(sender) {
        Ok(outparam) => outparam,
        Err(e) => return host_response(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
    };

    let guest = tokio::spawn(
        GuestRun {
            handler: handler.clone(),
            store,
            proxy,
            served,
            incoming,
            outparam,
            deadline,
            request_id: request_id.clone(),
            flags: flags.clone(),
            slot,
            _in_flight: in_flight,
        }
        .run(),
    );

    // No timer here: the guest task enforces the deadline, and a guest
    // that ends without answering drops the sender.
    let refusal = |flags: &Flags| flags.body_refusal(limits.max_body_size, min_body_rate);
    match receiver.await {
        Ok(Ok(response)) => match refusal(&flags) {
            None => response.map(|body| ResponseBody::from_guest(body, flags)),
            Some(refused) => refused,
        },
        Ok(Err(code)) => {
            tracing::warn!(route = %handler.label, digest = %handler.component.digest.hex(), request_id = %request_id, error_code = ?code, "handler answered with an error code");
            host_response(StatusCode::INTERNAL_SERVER_ERROR, "handler error\n")
        }
        // The guest ended (its store, and with it the sender, is gone)
        // without a response: its task says why.
        Err(_) => {
            let fault = match guest.await {
                Ok(Err(fault)) => fault,
                Ok(Ok(())) => {
                    let fault = Fault::NoResponse;
                    report_on(&handler, &request_id, &fault);
                    fault
                }
                Err(join) => Fault::Trap(format!("guest task failed: {join}")),
            };
            refusal(&flags).unwrap_or_else(|| {
                host_response(fault.status(), &format!("{}\n", fault_text(&fault)))
            })
        }
    }
}

/// One request's guest, run in its own task so it can keep streaming the
/// response body after the head is sent.
struct GuestRun {
    handler: Arc<Handler>,
    store: Store<HostState>,
    /// The instance, when an idle one was reused.
    proxy: Option<Proxy>,
    /// Requests the instance served before this one.
    served: u32,
    incoming: wasmtime::component::Resource<wasmtime_wasi_http::p2::types::HostIncomingRequest>,
    outparam: wasmtime::component::Resource<wasmtime_wasi_http::p2::types::HostResponseOutparam>,
    deadline: Instant,
    request_id: Arc<str>,
    flags: Arc<Flags>,
    slot: HeavySlot,
    /// Held until the guest is done, body included.
    _in_flight: InFlight,
}

impl GuestRun {
    /// Runs the guest to completion; a fault is reported here, once.
    async fn run(self) -> Result<(), Fault> {
        let GuestRun {
            handler,
            mut store,
            proxy,
            served,
            incoming,
            outparam,
            deadline,
            request_id,
            flags,
            slot,
            _in_flight,
        } = self;
        let instantiated = AtomicBool::new(proxy.is_some());
        let outcome = {
            let run = async {
                let proxy = match proxy {
                    Some(proxy) => proxy,
                    None => {
                        let ProxyPre::P2(pre) = &handler.component.pre else {
                            // Routes with a 0.3 handler never get here.
                            wasmtime::bail!("not a wasi:http 0.2 handler");
                        };
                        let proxy = pre.instantiate_async(&mut store).await?;
                        instantiated.store(true, Ordering::Relaxed);
                        handler.instances.created();
                        proxy
                    }
                };
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, incoming, outparam)
                    .await?;
                wasmtime::Result::<_>::Ok(proxy)
            };
            // Only a guest that is running holds a CPU slot: give it back
            // whenever the guest waits (for I/O, a timer, or a slot).
            let mut run = std::pin::pin!(run);
            let run = std::future::poll_fn(|cx| {
                let poll = run.as_mut().poll(cx);
                if poll.is_pending() {
                    slot.release();
                }
                poll
            });
            tokio::time::timeout_at(deadline, run).await
        };
        slot.release();
        let served = served + 1;
        let fault = match outcome {
            Ok(Ok(proxy)) => {
                if handler.instances.reuses() && may_reuse(&mut store, &flags) {
                    handler.instances.put(Warm {
                        store,
                        proxy,
                        served,
                    });
                } else {
                    handler.instances.retired(served);
                }
                return Ok(());
            }
            Ok(Err(error)) => Fault::classify(&error, store.data().limiter.exceeded),
            Err(_) => Fault::Timeout,
        };
        // A faulted instance is never reused: `store` drops below.
        if instantiated.load(Ordering::Relaxed) {
            handler.instances.retired(served);
        }
        flags.fault(&fault);
        report_on(&handler, &request_id, &fault);
        Err(fault)
        // `store` drops here, closing the response body stream.
    }
}

/// Whether an instance whose request ended without a fault may serve
/// another: not if it ran into a memory limit (even one it survived), if its
/// request body was refused mid-read, or if it left one of its request's
/// HTTP resources open (a body it never finished would otherwise stay open
/// into the next request).
fn may_reuse(store: &mut Store<HostState>, flags: &Flags) -> bool {
    let state = store.data_mut();
    state.limiter.exceeded.is_none() && !flags.cut() && !state.holds_request_resources()
}

/// The CPU slot a heavy guest holds while it runs (see [`CpuShare`]).
#[derive(Clone, Default)]
struct HeavySlot(Arc<Mutex<Option<OwnedSemaphorePermit>>>);

impl HeavySlot {
    fn release(&self) {
        self.0.lock().unwrap().take();
    }
}

/// What the guest does at each epoch tick: past its deadline it is
/// interrupted (a CPU loop never reaches an await); before that it yields to
/// other tasks, and once it counts as heavy it also queues for a CPU slot.
///
/// This runs only while the guest runs, at the first tick boundary after
/// it was (re)scheduled, so the number of calls is the guest's running
/// time in ticks, give or take one per turn; waiting for its turn behind
/// other guests does not count towards [`HEAVY_AFTER`].
fn epoch_policy(
    deadline: std::time::Instant,
    cpu_share: CpuShare,
    slot: HeavySlot,
) -> impl FnMut(wasmtime::StoreContextMut<'_, HostState>) -> wasmtime::Result<UpdateDeadline>
+ Send
+ Sync
+ 'static {
    let heavy_after_ticks = HEAVY_AFTER.as_nanos() / EPOCH_TICK.as_nanos().max(1);
    let mut ticks_run: u128 = 0;
    move |store| {
        sandbox::charge_host_memory(store)?;
        if std::time::Instant::now() >= deadline {
            return Ok(UpdateDeadline::Interrupt);
        }
        ticks_run += 1;
        if ticks_run < heavy_after_ticks {
            return Ok(UpdateDeadline::Yield(1));
        }
        slot.release();
        let (share, slot) = (cpu_share.clone(), slot.clone());
        Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(async move {
                let permit = share.take().await;
                *slot.0.lock().unwrap() = Some(permit);
            }),
        ))
    }
}

/// Logs a fault once, and counts it on the route version's series.
pub fn report(label: &str, digest: &str, metrics: &RouteMetrics, request_id: &str, fault: &Fault) {
    metrics.fault(fault.kind());
    tracing::error!(
        route = %label,
        digest = %digest,
        request_id = %request_id,
        kind = %fault.kind(),
        cause = %fault.cause(),
        "handler fault"
    );
}

fn report_on(handler: &Handler, request_id: &str, fault: &Fault) {
    report(
        &handler.label,
        handler.component.digest.hex(),
        &handler.metrics,
        request_id,
        fault,
    );
}

pub fn fault_text(fault: &Fault) -> &'static str {
    match fault {
        Fault::Trap(_) => "handler trapped",
        Fault::Timeout => "handler timed out",
        Fault::Memory(MemoryLimit::Instance) => "handler exceeded its memory limit",
        Fault::Memory(MemoryLimit::Host) => "no memory left for handlers, try again",
        Fault::NoResponse => "handler did not respond",
        Fault::Pool(_) => "no instance slot free, try again",
    }
}

/// The `content-length` of a request or response, when it has a valid one.
fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn body_too_large(limit: u64) -> Response<ResponseBody> {
    host_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("request body larger than {limit} bytes\n"),
    )
}

/// A plain-text response produced by the host itself.
pub fn host_response(status: StatusCode, text: &str) -> Response<ResponseBody> {
    let body = http_body_util::Full::new(Bytes::copy_from_slice(text.as_bytes()))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = Response::new(ResponseBody::from_host(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    // The host answers 503 only for a passing shortage: a slot or memory.
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECONDS),
        );
    }
    response
}

/// The request body as the guest reads it: counted, and cut off with an
/// error past the route's limit (whatever `content-length` claimed) or
/// when the client sends it too slowly.
struct GuardedBody {
    inner: Incoming,
    remaining: u64,
    limit: u64,
    flags: Arc<Flags>,
    counter: Counter,
    pace: BodyPace,
}

/// The client's pace on a request body: the time the host has spent
/// waiting for body bytes, against what the minimum rate allows for the
/// bytes received so far (after [`BODY_RATE_GRACE`]). Only waiting counts,
/// so a guest that reads slowly never makes its client look slow.
struct BodyPace {
    /// Bytes per second; 0: no minimum.
    min_rate: u64,
    received: u64,
    waited: Duration,
    waiting_since: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl BodyPace {
    fn new(min_rate: u64) -> BodyPace {
        BodyPace {
            min_rate,
            received: 0,
            waited: Duration::ZERO,
            waiting_since: None,
            timer: None,
        }
    }

    /// The waiting time allowed for the bytes received so far.
    fn allowed(&self) -> Duration {
        let secs = self.received as f64 / self.min_rate as f64;
        BODY_RATE_GRACE.saturating_add(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))
    }

    /// Called while the client has sent nothing new: ready once it has
    /// taken longer than the rate allows.
    fn poll_waiting(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.min_rate == 0 {
            return Poll::Pending;
        }
        let since = *self.waiting_since.get_or_insert_with(Instant::now);
        let Some(deadline) = since.checked_add(self.allowed().saturating_sub(self.waited)) else {
            return Poll::Pending;
        };
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx)
    }

    /// Called when the client sent something (`len` body bytes).
    fn arrived(&mut self, len: u64) {
        if let Some(since) = self.waiting_since.take() {
            self.waited += since.elapsed();
        }
        self.received += len;
    }
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if polled.is_pending() {
            self.flags.wait_starts(&self.flags.upload_wait);
            ready!(self.pace.poll_waiting(cx));
            self.flags.too_slow.store(true, Ordering::Release);
            return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::ConnectionReadTimeout)));
        }
        self.flags.upload_wait.store(0, Ordering::Release);
        let frame = match ready!(polled) {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
            None => return Poll::Ready(None),
        };
        self.pace
            .arrived(frame.data_ref().map_or(0, |data| data.len() as u64));
        if let Some(data) = frame.data_ref() {
            let len = data.len() as u64;
            if len > self.remaining {
                self.flags.too_large.store(true, Ordering::Release);
                self.remaining = 0;
                return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpRequestBodySize(
                    Some(self.limit),
                ))));
            }
            self.remaining -= len;
            self.counter.inc_by(len);
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How a response ended, for whoever counts outcomes (a canary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Its body ended: the status tells.
    Whole,
    /// The guest faulted after the head: a failure of the handler.
    Faulted,
    /// The client caused the bad end: its request body was refused, or the
    /// guest timed out waiting on it (see [`CLIENT_STALL`]).
    ClientCaused,
    /// Dropped before its end with no fault: the client went away, or
    /// hyper never asked for a body (HEAD, 204, 304).
    Abandoned,
}

/// The body of every response the public server sends: counts the bytes
/// it sends, and for a guest's body, turns an end caused by a guest fault
/// into an error so the client sees a cut body, not a complete one.
pub struct ResponseBody {
    inner: HyperOutgoingBody,
    counter: Option<Counter>,
    guest: Option<Arc<Flags>>,
    /// The flags of the request it answers, when a handler was invoked.
    request: Option<Arc<Flags>>,
    /// The body reached its end (its last frame, or trailers).
    ended: bool,
    /// Data bytes handed to the connection, and the response's declared
    /// `content-length`: hyper stops asking once that many went out.
    sent: u64,
    length: Option<u64>,
    /// Told, when the body is dropped, how it ended.
    on_done: Option<Box<dyn FnOnce(Ending) + Send + Sync>>,
    /// Whatever must live as long as the body (a request slot).
    _held: Option<Box<dyn Send + Sync>>,
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Some(done) = self.on_done.take() {
            done(self.ending());
        }
    }
}

impl ResponseBody {
    pub fn from_guest(inner: HyperOutgoingBody, flags: Arc<Flags>) -> ResponseBody {
        ResponseBody {
            inner,
            counter: None,
            guest: Some(flags),
            request: None,
            ended: false,
            sent: 0,
            length: None,
            on_done: None,
            _held: None,
        }
    }

    /// Ties the body to the flags of the request it answers, and to the
    /// response's declared length.
    fn of_request(mut self, flags: Arc<Flags>, length: Option<u64>) -> ResponseBody {
        self.request = Some(flags);
        self.length = length;
        self
    }

    /// Whether the client caused the request's bad end so far (a refused
    /// body, a timeout while waiting on it).
    pub fn client_caused(&self) -> bool {
        self.request.as_ref().is_some_and(|f| f.client_caused())
    }

    /// How the body ended, or would if it were dropped now.
    fn ending(&self) -> Ending {
        if self.client_caused() {
            Ending::ClientCaused
        } else if self.guest.as_ref().is_some_and(|f| f.faulted()) {
            Ending::Faulted
        } else if self.ended
            || self.inner.is_end_stream()
            || self.length.is_some_and(|length| self.sent >= length)
        {
            Ending::Whole
        } else {
            Ending::Abandoned
        }
    }

    /// Keeps `held` until the body is done.
    pub fn holding(mut self, held: Box<dyn Send + Sync>) -> ResponseBody {
        self._held = Some(held);
        self
    }

    fn from_host(inner: HyperOutgoingBody) -> ResponseBody {
        ResponseBody {
            inner,
            counter: None,
            guest: None,
            request: None,
            ended: false,
            sent: 0,
            length: None,
            on_done: None,
            _held: None,
        }
    }

    /// Whether the host made this response itself (a guest may answer
    /// with the same statuses for its own reasons).
    pub fn is_from_host(&self) -> bool {
        self.guest.is_none()
    }

    /// Calls `done` once, when the body is dropped (sent whole, cut, or
    /// abandoned by the client), with how it ended: a fault after a
    /// successful head is known only then.
    pub fn on_done(mut self, done: impl FnOnce(Ending) + Send + Sync + 'static) -> ResponseBody {
        self.on_done = Some(Box::new(done));
        self
    }

    /// Counts the bytes sent into `counter`.
    pub fn count_into(mut self, counter: Counter) -> ResponseBody {
        self.counter = Some(counter);
        self
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        // Asked for the next frame: the client is keeping up (for now).
        if let Some(flags) = &self.guest {
            flags.download_wait.store(0, Ordering::Release);
        }
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                let len = frame.data_ref().map_or(0, |data| data.len() as u64);
                if let Some(counter) = &self.counter {
                    counter.inc_by(len);
                }
                self.sent += len;
                self.ended |= frame.is_trailers();
                // Until the connection asks again, the guest waits on the
                // client to take this one.
                if let Some(flags) = &self.guest {
                    flags.wait_starts(&flags.download_wait);
                }
            }
            // A fault, or a request body refused, after the head went out.
            None if self.guest.as_ref().is_some_and(|f| f.cut()) => {
                return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpResponseIncomplete)));
            }
            None => self.ended = true,
            Some(Err(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request that finds no free slot in the pooling allocator gets 503
    /// (a passing shortage), not 500 as if its guest had trapped.
    #[test]
    fn an_exhausted_pool_is_a_503_not_a_trap() {
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        pool.total_component_instances(1)
            .total_core_instances(1)
            .total_memories(1)
            .total_tables(1)
            .max_memory_size(1 << 16);
        let mut config = wasmtime::Config::new();
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        let engine = wasmtime::Engine::new(&config).unwrap();
        let wasm = wat::parse_str("(component)").unwrap();
        let component = wasmtime::component::Component::new(&engine, &wasm).unwrap();
        let linker = wasmtime::component::Linker::<()>::new(&engine);
        let mut first = Store::new(&engine, ());
        let _held = linker.instantiate(&mut first, &component).unwrap();
        let mut second = Store::new(&engine, ());
        let error = linker.instantiate(&mut second, &component).unwrap_err();
        let fault = Fault::classify(&error, None);
        assert_eq!(fault.status(), StatusCode::SERVICE_UNAVAILABLE, "{fault:?}");
        assert_eq!(fault.kind(), "pool");
    }

    /// A timeout is the client's doing only when it hit while the host had
    /// waited CLIENT_STALL or more on the client; any other fault, or a
    /// timeout while the client kept up, is the handler's.
    #[test]
    fn a_timeout_while_waiting_on_the_client_is_the_clients() {
        let waited = || {
            let flags = Flags::default();
            flags.wait_starts(&flags.download_wait);
            std::thread::sleep(CLIENT_STALL + Duration::from_millis(20));
            flags
        };
        let flags = waited();
        flags.fault(&Fault::Timeout);
        assert!(flags.faulted() && flags.client_caused());

        let flags = waited();
        flags.fault(&Fault::Trap("trap: unreachable".into()));
        assert!(flags.faulted() && !flags.client_caused());

        // The connection asked for the next frame: no longer waiting.
        let flags = waited();
        flags.download_wait.store(0, Ordering::Release);
        flags.fault(&Fault::Timeout);
        assert!(!flags.client_caused());

        // Waiting on the upload counts the same; a short wait does not.
        let flags = Flags::default();
        flags.wait_starts(&flags.upload_wait);
        flags.fault(&Fault::Timeout);
        assert!(!flags.client_caused(), "waited less than CLIENT_STALL");
        let flags = Flags::default();
        flags.wait_starts(&flags.upload_wait);
        std::thread::sleep(CLIENT_STALL + Duration::from_millis(20));
        flags.fault(&Fault::Timeout);
        assert!(flags.client_caused());
    }

    /// What a canary is told when a guest's body is dropped: whole once it
    /// ended, or once its declared length went out (hyper asks no further);
    /// abandoned when the client left before; faulted or client-caused as
    /// the flags say.
    #[tokio::test]
    async fn a_response_body_reports_how_it_ended() {
        async fn ending(length: Option<u64>, frames: usize, flags: Flags) -> Ending {
            let chunks = (0..2).map(|_| {
                Ok::<_, wasmtime_wasi_http::Error>(Frame::data(Bytes::from_static(b"12345")))
            });
            let inner =
                http_body_util::StreamBody::new(futures_util::stream::iter(chunks)).boxed_unsync();
            let flags = Arc::new(flags);
            let seen = Arc::new(Mutex::new(None));
            let record = seen.clone();
            let mut body = ResponseBody::from_guest(inner, flags.clone())
                .of_request(flags, length)
                .on_done(move |ending| *record.lock().unwrap() = Some(ending));
            for _ in 0..frames {
                body.frame().await;
            }
            drop(body);
            seen.lock().unwrap().take().unwrap()
        }
        assert_eq!(ending(None, 3, Flags::default()).await, Ending::Whole);
        assert_eq!(ending(Some(10), 2, Flags::default()).await, Ending::Whole);
        assert_eq!(ending(None, 2, Flags::default()).await, Ending::Abandoned);
        assert_eq!(
            ending(Some(10), 1, Flags::default()).await,
            Ending::Abandoned
        );
        let faulted = Flags::default();
        faulted.fault(&Fault::Timeout);
        assert_eq!(ending(None, 1, faulted).await, Ending::Faulted);
        let refused = Flags::default();
        refused.too_slow.store(true, Ordering::Release);
        assert_eq!(ending(None, 1, refused).await, Ending::ClientCaused);
    }
}
