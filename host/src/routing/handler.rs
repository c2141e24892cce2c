//! One version of a route, ready to serve: its component and the runner
//! its requests go to.
//!
//! A component exports either wasi:http 0.2 or 0.3, so a handler holds the
//! one runner its component needs ([`Runner`]), as wasmtime's own
//! `ProxyPre::{P2, P3}` does. [`Handler::invoke`] is where a request meets
//! it: its body guarded, then run by that runner.

use crate::base::digest::Digest;
use crate::config::limits::RequestLimits;
use crate::config::manifest::RouteSpec;
use crate::observe::metrics::RouteMetrics;
use crate::observe::trace::RequestTrace;
use crate::run::admission::{CpuShare, InFlight};
use crate::run::body::{self, Flags, ResponseBody};
use crate::run::grpc;
use crate::run::p2::{self, P2Route};
use crate::run::p3::P3Route;
use crate::wasm::component::LoadedComponent;
use crate::wasm::sandbox::MemoryBudget;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::SystemTime;

/// One version of a route, ready to serve.
pub struct Handler {
    pub spec: RouteSpec,
    /// The route's pattern as text, for logs and metric labels.
    pub label: Arc<str>,
    pub component: Arc<LoadedComponent>,
    pub limits: RequestLimits,
    pub metrics: RouteMetrics,
    /// What runs its requests.
    pub runner: Runner,
    /// The table generation in which this route got its current component.
    pub generation: u64,
    /// For an `oci://` component: the manifest digest it resolved to.
    pub resolved: Option<Digest>,
    pub loaded_at: SystemTime,
    /// The component's digest as text (`sha256:HEX`), written once: every
    /// sampled request's span carries it.
    pub digest_text: Arc<str>,
}

/// What runs a handler's requests: one per wasi:http version.
pub enum Runner {
    /// A fresh (or reused) instance per request (see [`crate::run::p2`]).
    P2(Arc<P2Route>),
    /// Instances that take several requests at once (see [`crate::run::p3`]).
    P3(Arc<P3Route>),
}

impl Handler {
    /// A handler for `spec`'s route, serving `component` (for `oci://`,
    /// `resolved` is the manifest digest) through `runner`; loaded now.
    pub fn new(
        spec: RouteSpec,
        label: Arc<str>,
        limits: RequestLimits,
        metrics: RouteMetrics,
        (component, resolved): (Arc<LoadedComponent>, Option<Digest>),
        runner: Runner,
        generation: u64,
    ) -> Handler {
        Handler {
            digest_text: component.digest.to_string().into(),
            spec,
            label,
            component,
            limits,
            metrics,
            runner,
            generation,
            resolved,
            loaded_at: SystemTime::now(),
        }
    }

    /// Runs `request` on this handler. `scheme` is the connection's (a 0.2
    /// guest is told it; a 0.3 one reads the URI's). `min_body_rate` is
    /// --min-body-rate in bytes per second (0: no minimum). The runner's
    /// spans are children of `trace`'s.
    #[allow(clippy::too_many_arguments)]
    pub async fn invoke(
        &self,
        request: Request<Incoming>,
        scheme: &http::uri::Scheme,
        request_id: Arc<str>,
        in_flight: InFlight,
        cpu_share: &CpuShare,
        memory_budget: Option<&MemoryBudget>,
        min_body_rate: u64,
        trace: RequestTrace,
    ) -> Response<ResponseBody> {
        // A gRPC client's deadline bounds the call like the route's own.
        let flags = Arc::new(
            Flags::new(self.limits.max_body_size, min_body_rate)
                .with_client_timeout(grpc::timeout(request.headers()), self.limits.timeout)
                .with_trace(trace),
        );
        let response = match body::guard(request, &flags, &self.metrics.body_in) {
            Err(refused) => refused,
            Ok(request) => match &self.runner {
                Runner::P2(route) => {
                    p2::run(
                        route,
                        request,
                        scheme,
                        request_id,
                        in_flight,
                        cpu_share,
                        memory_budget,
                        flags.clone(),
                    )
                    .await
                }
                Runner::P3(route) => {
                    route
                        .invoke(
                            request.map(BodyExt::boxed_unsync),
                            request_id,
                            flags.clone(),
                            in_flight,
                        )
                        .await
                }
            },
        };
        let length = body::declared_length(response.headers());
        response.map(|body| body.of_request(flags, length))
    }
}

/// `2026-11-25T21:32:49.123Z`
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}
