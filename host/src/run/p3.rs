//! Serving wasi:http 0.3 (WASIp3) handlers.
//!
//! A p3 handler exports `wasi:http/handler@0.3.0`, whose `handle` is async:
//! one instance can run several requests at once, interleaved while they
//! wait. wasmtime-wasi-http's [`ProxyHandler`] drives such instances (the
//! same driver `wasmtime serve -Sp3` uses): it queues requests, hands them
//! to an instance with room, and makes a new instance when none has.
//! This module is wasmlet's side of it, per route version:
//!
//! - each instance's store comes from [`sandbox::new_store`], with the
//!   route's grants, memory limit and the host's memory budget; the limit
//!   covers the instance, so requests running on it at once share it;
//! - an instance takes at most `max_concurrent_reuse` requests at once and
//!   `max_instance_reuse` in all (both 1 unless the route opts in: a fresh
//!   instance per request, as for 0.2 handlers);
//! - each request has its own deadline (504); a guest that spins past the
//!   deadline of the request it runs for is interrupted with its instance,
//!   and every request still on it fails;
//! - an instance that trapped, timed out or was refused memory takes no new
//!   request; idle instances count against the host-wide idle allowance
//!   and leave after `idle_instance_timeout`, as soon as their route
//!   version is replaced, or when the memory budget runs short;
//! - a guest may keep working after it answered (its task runs on after
//!   `handle` returned): the instance keeps the last finished request's
//!   slot of --max-in-flight until that work ends ([`Lingering`]), so it
//!   counts as a request in flight, as a 0.2 guest still running does;
//! - a request its client cancels before its response (an HTTP/2 stream
//!   reset, a hang-up) expires at once; its slot of --max-in-flight stays
//!   with its instance, which is ended as soon as it has no other request
//!   to answer (wasmtime cannot cancel one guest task alone), so a client
//!   resetting streams never has more guests running than slots;
//! - a guest that has run [`crate::run::admission::HEAVY_AFTER`] without its
//!   instance going idle runs only with a [`CpuShare`] slot, as 0.2 ones do;
//! - each request worker thread has its own driver and instances, so a
//!   request and the instance running it stay on one thread, as the 0.2
//!   path does (see [`crate::run::workers`]); the counts apply per instance.

use crate::config::limits::RequestLimits;
use crate::observe::metrics::InstanceMetrics;
use crate::observe::trace::ChildSpan;
use crate::run::admission::{CpuShare, CpuTurn, InFlight};
use crate::run::body::{Flags, ResponseBody};
use crate::run::fault::{self, Fault, Reporter};
use crate::run::reuse::IdleSlots;
use crate::wasm::engine::{EPOCH_TICK, GuestRunning, TickerHandle};
use crate::wasm::sandbox::MemoryBudget;
use crate::wasm::sandbox::{self, Grants, HostState, MemoryLimit};
use http::{Request, Response};
use opentelemetry::KeyValue;
use prometheus_client::metrics::gauge::Gauge;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::{Instant, Sleep};
use wasmtime::component::GuestTaskId;
use wasmtime::{Store, StoreContextMut};
use wasmtime_wasi_http::WasiBody;
use wasmtime_wasi_http::handler::{
    ExpirationError, HandlerState, Instance, InstantiationError, Proxy, ProxyHandler, ShouldAccept,
    TrapOrPanicError, WorkerExpiration, WorkerState, WorkerStatus,
};
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;

/// How long a request whose instance died waits to learn why, before it
/// is answered as a plain trap (the worker records the cause right after
/// it lets go of its requests).
const CAUSE_WAIT: Duration = Duration::from_secs(1);

/// How long a new instance that found the memory budget used up waits for
/// the idle 0.3 instances the budget asked to leave, before it tries once
/// more (and is refused, 503, if that fails too). They leave at their
/// driver's next turn, so this is ample; it bounds what the request waits.
const EVICTION_WAIT: Duration = Duration::from_millis(200);

/// One route version's p3 instances. Dropping it (the route version was
/// replaced) tells its idle instances to leave.
pub struct P3Route {
    /// One driver per request worker thread.
    shards: Vec<ProxyHandler<Shard>>,
    state: Arc<RouteState>,
    closed: watch::Sender<bool>,
}

impl Drop for P3Route {
    fn drop(&mut self) {
        self.closed.send_replace(true);
    }
}

/// Everything a route version's instances are made with.
pub struct P3Parts {
    pub pre: ServicePre<HostState>,
    pub grants: Grants,
    pub limits: RequestLimits,
    pub budget: Option<MemoryBudget>,
    pub ticker: TickerHandle,
    /// Shared by the requests, so none clones it.
    pub reporter: Arc<Reporter>,
    pub instances: InstanceMetrics,
    pub idle_slots: IdleSlots,
    /// Shared with 0.2 guests: heavy guests of both kinds queue for it.
    pub cpu_share: CpuShare,
    /// Request worker threads: one driver each.
    pub workers: usize,
}

impl P3Route {
    pub fn new(parts: P3Parts) -> P3Route {
        let (closed, closed_rx) = watch::channel(false);
        let shards = parts.workers.max(1);
        let state = Arc::new(RouteState {
            parts,
            closed: closed_rx,
            next_instance: AtomicU64::new(0),
        });
        P3Route {
            shards: (0..shards)
                .map(|_| ProxyHandler::new(Shard(state.clone())))
                .collect(),
            state,
            closed,
        }
    }

    /// The driver of the worker thread running the caller.
    fn shard(&self) -> &ProxyHandler<Shard> {
        let index = crate::run::workers::current().unwrap_or(0);
        &self.shards[index % self.shards.len()]
    }

    /// Runs one request on an instance of this route version. `flags` are
    /// the request's (see [`crate::run::body`]); `in_flight` is held until
    /// the response body is done.
    pub async fn invoke(
        &self,
        request: Request<WasiBody>,
        request_id: Arc<str>,
        flags: Arc<Flags>,
        in_flight: InFlight,
    ) -> Response<ResponseBody> {
        let reporter = &self.state.parts.reporter;
        let (cause, cause_rx) = watch::channel(None);
        let task = Arc::new(P3Request {
            request_id: request_id.clone(),
            // The route's `timeout`, or a gRPC client's shorter deadline.
            deadline: Instant::now() + flags.timeout(self.state.parts.limits.timeout),
            flags: flags.clone(),
            cause,
            reported: AtomicBool::new(false),
            reporter: reporter.clone(),
            instance: OnceLock::new(),
            held: Mutex::new(None),
            span: Mutex::new(None),
        });
        // Handed to the instance when the request is done, whichever way;
        // if this future is dropped first, the request is cancelled.
        let pending = Awaiting(Some(RequestSlot {
            in_flight: Some(in_flight),
            task: task.clone(),
        }));
        let handled = self.shard().handle(task.clone(), request).await;
        let slot = pending.done();
        let fault = match handled {
            Ok(response) => {
                return match flags.refusal() {
                    None => response
                        .map(|body| ResponseBody::from_guest(body, flags).holding(Box::new(slot))),
                    Some(refused) => refused,
                };
            }
            Err(error) => match self.fault_of(&error, cause_rx).await {
                Ok(fault) => fault,
                Err(code) => {
                    return flags.refusal().unwrap_or_else(|| {
                        reporter.error_code(&request_id, &code, &flags);
                        fault::handler_error()
                    });
                }
            },
        };
        task.fail(fault.clone());
        fault::answer(&flags, &fault)
    }

    /// What went wrong, from the driver's error: a fault, or the error
    /// code the handler returned instead of a response.
    async fn fault_of(
        &self,
        error: &wasmtime::Error,
        mut cause: watch::Receiver<Option<Fault>>,
    ) -> Result<Fault, ErrorCode> {
        if error.is::<ExpirationError>() {
            return Ok(Fault::Timeout);
        }
        if let Some(failed) = error.downcast_ref::<InstantiationError<Arc<P3Request>>>() {
            return Ok(match failed.error.downcast_ref::<InstanceFault>() {
                Some(InstanceFault(fault)) => fault.clone(),
                None => Fault::classify(&failed.error, None),
            });
        }
        if let Some(code) = error.downcast_ref::<ErrorCode>() {
            return Err(code.clone());
        }
        if error.is::<TrapOrPanicError>() {
            let known = tokio::time::timeout(CAUSE_WAIT, cause.wait_for(Option::is_some)).await;
            if let Ok(Ok(fault)) = known {
                return Ok(fault.clone().expect("waited for it"));
            }
        }
        Ok(Fault::classify(error, None))
    }
}

/// One request handed to the driver.
struct P3Request {
    request_id: Arc<str>,
    deadline: Instant,
    flags: Arc<Flags>,
    /// Set when the request's instance fails, to why it failed.
    cause: watch::Sender<Option<Fault>>,
    reported: AtomicBool,
    reporter: Arc<Reporter>,
    /// The instance that took the request, once one has.
    instance: OnceLock<Arc<Lingering>>,
    /// A cancelled request's slot, until an instance takes the request
    /// (or it is dropped, never taken).
    held: Mutex<Option<InFlight>>,
    /// The `handler` span, from when an instance takes the request until
    /// the request is done (its response body included).
    span: Mutex<Option<ChildSpan>>,
}

/// A request waiting for its response: dropped before (its client is
/// gone), it cancels the request ([`P3Request::cancel`]).
struct Awaiting(Option<RequestSlot>);

impl Awaiting {
    fn done(mut self) -> RequestSlot {
        self.0.take().expect("taken once")
    }
}

impl Drop for Awaiting {
    fn drop(&mut self) {
        if let Some(mut slot) = self.0.take()
            && let Some(in_flight) = slot.in_flight.take()
        {
            slot.task.cancel(in_flight);
        }
    }
}

/// A request's slot of --max-in-flight while the request lasts (its
/// response body included); then its instance's, see [`Lingering`].
struct RequestSlot {
    in_flight: Option<InFlight>,
    task: Arc<P3Request>,
}

impl Drop for RequestSlot {
    fn drop(&mut self) {
        if let (Some(slot), Some(instance)) = (self.in_flight.take(), self.task.instance.get()) {
            instance.keep(slot);
        }
    }
}

/// Keeps an instance counted in --max-in-flight while it works on after
/// its requests are done. A 0.3 guest's task may run on after `handle`
/// returned (post-return work: the driver waits for it, up to the request
/// timeout), and so may a request's task past its deadline; without this,
/// any number of such guests could run once their slots were given back.
/// The slot of the last request to finish stays with the instance until
/// the driver reports it idle, running a request (which holds its own
/// slot), or gone.
#[derive(Default)]
struct Lingering(Mutex<LingerState>);

#[derive(Default)]
struct LingerState {
    /// The driver last reported post-return work.
    working_on: bool,
    held: Option<InFlight>,
    /// A request on it was cancelled: the slot is held until the instance
    /// is gone, and it is ended once it has no request to answer.
    cancelled: bool,
}

impl Lingering {
    /// Takes a finished request's slot if the instance works on; else the
    /// slot is given back at once.
    fn keep(&self, slot: InFlight) {
        let mut state = self.0.lock().unwrap();
        let released = if state.working_on {
            state.held.replace(slot)
        } else {
            Some(slot)
        };
        drop(state);
        drop(released);
    }

    /// Records what the driver reports: post-return work, or not (idle,
    /// running requests). A cancelled request's slot stays until
    /// [`Lingering::gone`].
    fn set_working_on(&self, working_on: bool) {
        let mut state = self.0.lock().unwrap();
        state.working_on = working_on;
        let released = if working_on || state.cancelled {
            None
        } else {
            state.held.take()
        };
        drop(state);
        drop(released);
    }

    /// Takes the slot of a request on it that its client cancelled.
    fn cancel(&self, slot: InFlight) {
        let mut state = self.0.lock().unwrap();
        state.cancelled = true;
        let released = state.held.replace(slot);
        drop(state);
        drop(released);
    }

    /// Whether a request on it was cancelled.
    fn cancelled(&self) -> bool {
        self.0.lock().unwrap().cancelled
    }

    /// The instance is gone: nothing of it runs any more.
    fn gone(&self) {
        let released = self.0.lock().unwrap().held.take();
        drop(released);
    }
}

impl P3Request {
    /// The client cancelled the request before its response: the guest is
    /// told (the request expires: `Worker::on_request_start`), and
    /// `slot` stays with the instance running it until that instance is
    /// gone, or with the request until an instance takes it.
    fn cancel(&self, slot: InFlight) {
        self.flags.cancel();
        match self.instance.get() {
            Some(instance) => instance.cancel(slot),
            None => *self.held.lock().unwrap() = Some(slot),
        }
    }

    /// Records that the request failed: its response body, if one is
    /// streaming, is cut, and the fault is logged and counted once.
    fn fail(&self, fault: Fault) {
        self.flags.fault(fault == Fault::Timeout);
        if !self.reported.swap(true, Ordering::AcqRel) {
            self.reporter.report(&self.request_id, &fault, &self.flags);
        }
        self.cause
            .send_if_modified(|cause| cause.is_none().then(|| *cause = Some(fault)).is_some());
    }
}

/// A fault of an instance that never started, carried through the
/// driver's error.
#[derive(Debug)]
struct InstanceFault(Fault);

impl std::fmt::Display for InstanceFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::error::Error for InstanceFault {}

struct RouteState {
    parts: P3Parts,
    closed: watch::Receiver<bool>,
    next_instance: AtomicU64,
}

/// One worker thread's view of a route version.
struct Shard(Arc<RouteState>);

impl HandlerState for Shard {
    type StoreData = HostState;
    type WorkerExpiration = Expiry;
    type WorkerState = Worker;

    async fn instantiate(&self) -> wasmtime::Result<Instance<HostState, Expiry, Worker>> {
        let idle_slots = &self.0.parts.idle_slots;
        let started = match self.start().await {
            Err(Fault::Memory(MemoryLimit::Host)) if idle_slots.idle_count() > 0 => {
                // The budget asked the idle 0.3 instances to leave (0.2
                // ones it drops at once): they go at their driver's next
                // turn, on this thread or another. Wait for them, then
                // try once more.
                let deadline = Instant::now() + EVICTION_WAIT;
                while idle_slots.idle_count() > 0 && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                self.start().await
            }
            started => started,
        };
        started.map_err(|fault| wasmtime::Error::new(InstanceFault(fault)))
    }
}

impl Shard {
    /// A new instance, or why none could start.
    async fn start(&self) -> Result<Instance<HostState, Expiry, Worker>, Fault> {
        let route = &*self.0;
        let parts = &route.parts;
        let id = route.next_instance.fetch_add(1, Ordering::Relaxed);
        let mut store = sandbox::new_store(
            parts.pre.engine(),
            &parts.grants,
            &parts.limits,
            parts.budget.clone(),
            Arc::from(format!("{}#instance-{id}", parts.reporter.label)),
        );
        // Yield at every tick: the driver checks the deadlines between
        // polls, and a spinning guest never returns to it otherwise. A
        // heavy one also queues for a CPU slot.
        let turn = CpuTurn::new(parts.cpu_share.clone(), EPOCH_TICK);
        let on_tick = turn.clone();
        store.epoch_deadline_callback(move |store| {
            sandbox::charge_host_memory(store)?;
            Ok(on_tick.tick())
        });
        store.set_epoch_deadline(1);
        let ticking = parts.ticker.guest_running();
        let began = SystemTime::now();
        let started = tokio::time::timeout(
            parts.limits.timeout,
            parts.pre.instantiate_async(&mut store),
        )
        .await;
        turn.release();
        let service = match started {
            Ok(Ok(service)) => service,
            Ok(Err(error)) => return Err(Fault::classify(&error, store.data().limiter.exceeded)),
            Err(_) => return Err(Fault::Timeout),
        };
        parts.instances.created.inc();
        let refused_memory = store.data_mut().limiter.exceeded_signal();
        let timed_out = Arc::new(AtomicBool::new(false));
        let lingering = Arc::new(Lingering::default());
        Ok(Instance {
            store,
            proxy: Proxy::P3(service),
            view: wasmtime_wasi_http::WasiHttpView::http,
            expiration: Expiry {
                idle_timeout: parts.limits.idle_instance_timeout,
                request_timeout: parts.limits.timeout,
                sleep: Box::pin(tokio::time::sleep(Duration::MAX)),
                closed: Box::pin(route_closed(route.closed.clone())),
                timed_out: timed_out.clone(),
                idle_slots: parts.idle_slots.clone(),
                idle: None,
                idle_gauge: parts.instances.idle.clone(),
                evicted: None,
                lingering: lingering.clone(),
                turn,
            },
            state: Worker {
                max_reuse: parts.limits.max_instance_reuse.max(1) as usize,
                max_concurrent: parts.limits.max_concurrent_reuse.max(1) as usize,
                refused_memory,
                timed_out,
                requests: Mutex::new(Vec::new()),
                served: AtomicUsize::new(0),
                instances: parts.instances.clone(),
                lingering,
                started: (began, SystemTime::now()),
                _ticking: ticking,
            },
        })
    }
}

/// Resolves once the route version is replaced.
async fn route_closed(mut closed: watch::Receiver<bool>) {
    // An error means the sender is gone: the route version is gone too.
    let _ = closed.wait_for(|closed| *closed).await;
}

/// One instance's bookkeeping, as the driver consults it.
struct Worker {
    max_reuse: usize,
    max_concurrent: usize,
    /// Raised by the instance's memory limiter.
    refused_memory: Arc<AtomicBool>,
    /// Raised by [`Expiry`] when it ends the instance at a deadline.
    timed_out: Arc<AtomicBool>,
    /// The requests it took, while they last (their response bodies
    /// included).
    requests: Mutex<Vec<Weak<P3Request>>>,
    served: AtomicUsize,
    instances: InstanceMetrics,
    lingering: Arc<Lingering>,
    /// When its instantiation began and ended: the first request's
    /// `instantiate` span.
    started: (SystemTime, SystemTime),
    /// Keeps the epoch ticking while the instance lives.
    _ticking: GuestRunning,
}

impl WorkerState for Worker {
    type StoreData = HostState;
    type RequestData = Arc<P3Request>;

    fn should_accept_request(&self, concurrent: usize, total: usize) -> ShouldAccept {
        if total >= self.max_reuse || self.refused_memory.load(Ordering::Acquire) {
            ShouldAccept::Never
        } else if concurrent >= self.max_concurrent {
            ShouldAccept::No
        } else {
            ShouldAccept::Yes
        }
    }

    fn on_request_start(
        &self,
        mut store: StoreContextMut<'_, HostState>,
        request: Arc<P3Request>,
        _task: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
        // Guest output and outbound requests from now on belong to this
        // request: requests running at once on one instance cannot be told
        // apart (its output is one stream, and a host call does not say
        // which guest task made it).
        let trace = &request.flags.trace;
        store
            .data_mut()
            .renew_for_request(request.request_id.clone(), trace.clone());
        let fresh = self.served.fetch_add(1, Ordering::Relaxed) == 0;
        trace.set(KeyValue::new(
            "wasmlet.instance",
            if fresh { "fresh" } else { "reused" },
        ));
        if fresh {
            let (began, ready) = self.started;
            trace.record("instantiate", began, ready);
        }
        *request.span.lock().unwrap() = Some(trace.child("handler"));
        let _ = request.instance.set(self.lingering.clone());
        // Cancelled while queued: its slot comes along.
        if let Some(slot) = request.held.lock().unwrap().take() {
            self.lingering.cancel(slot);
        }
        let mut requests = self.requests.lock().unwrap();
        requests.retain(|r| r.strong_count() > 0);
        requests.push(Arc::downgrade(&request));
        // The request expires at its deadline, or at once when its client
        // cancels it.
        Box::pin(async move {
            tokio::select! {
                () = tokio::time::sleep_until(request.deadline) => {}
                () = request.flags.cancelled() => {}
            }
        })
    }

    fn drop(&self, store: Store<HostState>, result: wasmtime::Result<()>) {
        self.lingering.set_working_on(false);
        self.lingering.gone();
        self.instances
            .requests
            .observe(self.served.load(Ordering::Relaxed) as f64);
        if let Err(error) = result {
            let fault = if self.timed_out.load(Ordering::Acquire) {
                Fault::Timeout
            } else {
                Fault::classify(&error, store.data().limiter.exceeded)
            };
            for request in self.requests.lock().unwrap().drain(..) {
                if let Some(request) = request.upgrade() {
                    request.fail(fault.clone());
                }
            }
        }
        // The store, and with it the memory budget's charge, goes here.
    }
}

/// When an instance leaves: past a request's deadline while busy (the
/// driver checks this between polls, so a guest spinning in a loop is
/// caught at its next epoch yield), after `idle_instance_timeout` idle,
/// at once when idle and its route version was replaced, when idle and
/// the host-wide idle allowance is used up, or when idle and the memory
/// budget ran short ([`IdleSlots::evict`]).
///
/// The driver polls it whenever the instance's event loop waits, so it is
/// also where the instance hears its status ([`Lingering`]) and gives its
/// CPU slot back, as a waiting 0.2 guest does.
struct Expiry {
    idle_timeout: Duration,
    request_timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    closed: Pin<Box<dyn Future<Output = ()> + Send + Sync>>,
    timed_out: Arc<AtomicBool>,
    idle_slots: IdleSlots,
    /// Held while idle.
    idle: Option<OwnedSemaphorePermit>,
    idle_gauge: Gauge,
    /// While idle: resolves when idle instances are asked to leave.
    evicted: Option<Pin<Box<dyn Future<Output = ()> + Send + Sync>>>,
    lingering: Arc<Lingering>,
    turn: CpuTurn,
}

impl Expiry {
    fn set_idle(&mut self, idle: bool) -> bool {
        match (idle, self.idle.is_some()) {
            (true, false) => match self.idle_slots.try_take() {
                Some(slot) => {
                    self.idle = Some(slot);
                    self.idle_gauge.inc();
                    self.evicted = Some(Box::pin(self.idle_slots.eviction()));
                    // It ran its share while busy; it starts afresh.
                    self.turn.reset();
                }
                None => return false,
            },
            (false, true) => {
                self.idle = None;
                self.evicted = None;
                self.idle_gauge.dec();
            }
            _ => {}
        }
        true
    }
}

impl Drop for Expiry {
    fn drop(&mut self) {
        self.set_idle(false);
    }
}

impl WorkerExpiration for Expiry {
    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        status: WorkerStatus,
        start: std::time::Instant,
    ) -> Poll<()> {
        let me = self.get_mut();
        me.turn.release();
        me.lingering
            .set_working_on(status == WorkerStatus::PostReturn);
        // A cancelled request's guest may run on (it cannot be cancelled
        // alone): once no request is left to answer, the instance ends
        // (it takes no new request after an expired one anyway).
        if status != WorkerStatus::Requests && me.lingering.cancelled() {
            return Poll::Ready(());
        }
        let idle = status == WorkerStatus::Idle;
        if idle {
            if me.closed.as_mut().poll(cx).is_ready()
                || !me.set_idle(true)
                || me
                    .evicted
                    .as_mut()
                    .is_some_and(|e| e.as_mut().poll(cx).is_ready())
            {
                return Poll::Ready(());
            }
        } else {
            me.set_idle(false);
        }
        let timeout = if idle {
            me.idle_timeout
        } else {
            me.request_timeout
        };
        let Some(deadline) = start.checked_add(timeout) else {
            return Poll::Pending;
        };
        let deadline = Instant::from_std(deadline);
        if me.sleep.deadline() != deadline {
            me.sleep.as_mut().reset(deadline);
        }
        if me.sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        if !idle {
            me.timed_out.store(true, Ordering::Release);
        }
        Poll::Ready(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn expiry(slots: &IdleSlots, closed: &watch::Sender<bool>, gauge: &Gauge) -> Pin<Box<Expiry>> {
        Box::pin(Expiry {
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_millis(100),
            sleep: Box::pin(tokio::time::sleep(Duration::MAX)),
            closed: Box::pin(route_closed(closed.subscribe())),
            timed_out: Arc::new(AtomicBool::new(false)),
            idle_slots: slots.clone(),
            idle: None,
            idle_gauge: gauge.clone(),
            evicted: None,
            lingering: Arc::new(Lingering::default()),
            turn: CpuTurn::new(CpuShare::new(2), Duration::from_millis(1)),
        })
    }

    fn poll(
        expiry: &mut Pin<Box<Expiry>>,
        status: WorkerStatus,
        start: std::time::Instant,
    ) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        expiry.as_mut().poll(&mut cx, status, start).is_ready()
    }

    #[tokio::test]
    async fn idle_instances_hold_a_slot_and_leave_when_none_is_left_or_the_route_goes() {
        let slots = IdleSlots::new(1);
        let (closed, _) = watch::channel(false);
        let gauge = Gauge::default();
        let now = std::time::Instant::now();
        let mut first = expiry(&slots, &closed, &gauge);
        let mut second = expiry(&slots, &closed, &gauge);

        assert!(
            !poll(&mut first, WorkerStatus::Idle, now),
            "idle, within its timeout"
        );
        assert_eq!(gauge.get(), 1);
        assert!(
            poll(&mut second, WorkerStatus::Idle, now),
            "no idle slot left: it leaves"
        );
        assert!(!poll(&mut first, WorkerStatus::Requests, now), "busy again");
        assert_eq!(gauge.get(), 0, "a busy instance gives its idle slot back");
        assert!(
            !poll(&mut second, WorkerStatus::Idle, now),
            "the slot is free again"
        );

        closed.send_replace(true);
        assert!(
            poll(&mut second, WorkerStatus::Idle, now),
            "its route version is gone"
        );
        assert!(
            !poll(&mut first, WorkerStatus::Requests, now),
            "a busy one finishes first"
        );
        drop(second);
        assert_eq!(gauge.get(), 0, "dropped, its slot and gauge go back");
    }

    #[tokio::test]
    async fn a_busy_instance_past_the_request_timeout_is_ended_as_timed_out() {
        let (closed, _) = watch::channel(false);
        let gauge = Gauge::default();
        let mut expiry = expiry(&IdleSlots::new(1), &closed, &gauge);
        let now = std::time::Instant::now();
        assert!(!poll(&mut expiry, WorkerStatus::Requests, now));
        assert!(!expiry.timed_out.load(Ordering::Acquire));
        let long_ago = now - Duration::from_secs(1);
        assert!(poll(&mut expiry, WorkerStatus::PostReturn, long_ago));
        assert!(expiry.timed_out.load(Ordering::Acquire));
    }
}
