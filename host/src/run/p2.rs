//! Running one request of a wasi:http 0.2 handler.
//!
//! Each request gets a new `Store` (its own WASI context, memory limit and
//! epoch deadline) and a new instance from the route's `ProxyPre`, unless
//! its route reuses instances ([`crate::run::reuse`]): then it may get an idle
//! one, with a new WASI context and deadline, under the same limits. The guest
//! runs in its own task so it can keep streaming the response body after
//! the head is sent. A fault ends that request alone; what it becomes is
//! [`crate::run::fault`]'s to say.
//!
//! A request can also end badly through its client: a refused body (413,
//! 408), a timeout that hit while the guest had waited at least
//! [`CLIENT_STALL`](crate::run::body::CLIENT_STALL) for the client (for
//! request body bytes it asked for, or for the client to take the response
//! body it wrote), or a client that went away before the body's end.
//! [`ResponseBody::on_done`] tells which ([`crate::run::body::Ending`]); a
//! canary does not count these against the version. A client that
//! cancels its request (resets its HTTP/2 stream, hangs up before the
//! response's end) stops the guest as a timeout would ([`Flags::cancel`]):
//! its `--max-in-flight` slot is free at once, and no fault is counted.

use crate::config::limits::RequestLimits;
use crate::observe::metrics::RouteMetrics;
use crate::run::admission::{CpuShare, HeavySlot, InFlight, epoch_policy};
use crate::run::body::{Flags, GuardedBody, ResponseBody, host_response};
use crate::run::fault::{self, Fault, Reporter};
use crate::run::reuse::{Instances, Warm};
use crate::wasm::sandbox::{self, Grants, HostState, MemoryBudget};
use http::{Request, Response, StatusCode};
use opentelemetry::KeyValue;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::time::Instant;
use wasmtime::Store;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};

/// One route version's 0.2 handler: what each of its requests runs with.
pub struct P2Route {
    pub pre: ProxyPre<HostState>,
    /// Instances kept for reuse (none unless the route opts in).
    pub instances: Arc<Instances>,
    /// Where its faults are logged and counted.
    pub reporter: Reporter,
    /// What each request's store is made with.
    pub grants: Grants,
    pub limits: RequestLimits,
}

impl P2Route {
    /// The same version, its faults counted on `metrics` (a canary
    /// promoted to stable counts on the route's stable series).
    pub fn counting_on(&self, metrics: RouteMetrics) -> P2Route {
        P2Route {
            pre: self.pre.clone(),
            instances: self.instances.clone(),
            reporter: Reporter {
                metrics,
                ..self.reporter.clone()
            },
            grants: self.grants.clone(),
            limits: self.limits,
        }
    }
}

/// Runs `request` on `route` in a fresh instance (or a reused one), with
/// the request's `flags`; `in_flight` is held until the guest is done. The
/// guest is told `scheme`, the connection's.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    route: &Arc<P2Route>,
    request: Request<GuardedBody>,
    scheme: &http::uri::Scheme,
    request_id: Arc<str>,
    in_flight: InFlight,
    cpu_share: &CpuShare,
    memory_budget: Option<&MemoryBudget>,
    flags: Arc<Flags>,
) -> Response<ResponseBody> {
    let limits = route.limits;
    // An idle instance of this route when it reuses them, else a new store
    // (the guest task instantiates in it, within the request's deadline).
    let (mut store, proxy, served) = match route.instances.take() {
        Some(warm) => {
            let mut store = warm.store;
            store
                .data_mut()
                .renew_for_request(request_id.clone(), flags.trace.clone());
            (store, Some(warm.proxy), warm.served)
        }
        None => {
            let mut store = sandbox::new_store(
                route.pre.engine(),
                &route.grants,
                &limits,
                memory_budget.cloned(),
                request_id.clone(),
            );
            store.data_mut().trace(flags.trace.clone());
            (store, None, 0)
        }
    };
    flags.trace.set(KeyValue::new(
        "wasmlet.instance",
        if proxy.is_some() { "reused" } else { "fresh" },
    ));
    // The route's `timeout`, or a gRPC client's shorter deadline.
    let deadline = Instant::now() + flags.timeout(limits.timeout);
    let slot = HeavySlot::default();
    store.epoch_deadline_callback(epoch_policy(
        deadline.into_std(),
        cpu_share.clone(),
        slot.clone(),
    ));
    store.set_epoch_deadline(1);

    let (sender, receiver) = tokio::sync::oneshot::channel();
    let incoming = match store.data_mut().http().new_incoming_request(
        if *scheme == http::uri::Scheme::HTTPS {
            Scheme::Https
        } else {
            Scheme::Http
        },
        request,
    ) {
        Ok(incoming) => incoming,
        Err(e) => return host_response(StatusCode::BAD_REQUEST, &format!("bad request: {e}\n")),
    };
    let outparam = match store.data_mut().http().new_response_outparam(sender) {
        Ok(outparam) => outparam,
        Err(e) => return host_response(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
    };

    let guest = tokio::spawn(
        GuestRun {
            route: route.clone(),
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

    // A request dropped before its response head (an HTTP/2 stream reset,
    // a client gone) stops its guest, and so gives back its slot at once.
    let cancel = CancelOnDrop(Some(flags.clone()));
    // No timer here: the guest task enforces the deadline, and a guest
    // that ends without answering drops the sender.
    let response = match receiver.await {
        Ok(Ok(response)) => match flags.refusal() {
            None => response.map(|body| ResponseBody::from_guest(body, flags)),
            Some(refused) => refused,
        },
        // A guest reading a body the host refused answers an error code
        // through no fault of its own: the client gets the refusal, as on
        // the 0.3 path.
        Ok(Err(code)) => flags.refusal().unwrap_or_else(|| {
            route.reporter.error_code(&request_id, &code, &flags);
            fault::handler_error()
        }),
        // The guest ended (its store, and with it the sender, is gone)
        // without a response: its task says why.
        Err(_) => {
            let fault = match guest.await {
                Ok(Err(fault)) => fault,
                Ok(Ok(())) => {
                    let fault = Fault::NoResponse;
                    route.reporter.report(&request_id, &fault, &flags);
                    fault
                }
                Err(join) => Fault::Trap(format!("guest task failed: {join}")),
            };
            fault::answer(&flags, &fault)
        }
    };
    cancel.disarm();
    response
}

/// Cancels its request when dropped armed: the future waiting for the
/// guest's response was dropped (the client is gone); after the head,
/// the response body does the same ([`ResponseBody`]'s drop).
struct CancelOnDrop(Option<Arc<Flags>>);

impl CancelOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(flags) = self.0.take() {
            flags.cancel();
        }
    }
}

/// One request's guest, run in its own task so it can keep streaming the
/// response body after the head is sent.
struct GuestRun {
    route: Arc<P2Route>,
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
            route,
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
                        let _span = flags.trace.child("instantiate");
                        let proxy = route.pre.instantiate_async(&mut store).await?;
                        instantiated.store(true, Ordering::Relaxed);
                        route.instances.created();
                        proxy
                    }
                };
                let _span = flags.trace.child("handler");
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
            // Cancelled first: a guest whose client is gone runs no more.
            tokio::select! {
                biased;
                () = flags.cancelled() => Err(Fault::Cancelled),
                ran = tokio::time::timeout_at(deadline, run) => ran.map_err(|_| Fault::Timeout),
            }
        };
        slot.release();
        let served = served + 1;
        let fault = match outcome {
            Ok(Ok(proxy)) => {
                if route.instances.reuses() && may_reuse(&mut store, &flags) {
                    route.instances.put(Warm {
                        store,
                        proxy,
                        served,
                    });
                } else {
                    route.instances.retired(served);
                }
                return Ok(());
            }
            Ok(Err(error)) => Fault::classify(&error, store.data().limiter.exceeded),
            Err(fault) => fault,
        };
        // A faulted instance is never reused: `store` drops below.
        if instantiated.load(Ordering::Relaxed) {
            route.instances.retired(served);
        }
        flags.fault(fault == Fault::Timeout);
        route.reporter.report(&request_id, &fault, &flags);
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
