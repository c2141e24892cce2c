//! The state both ports read: what is served, how it is counted, and what
//! every request shares (admission, CPU share, memory budget, request ids).
//!
//! It sits below both servers so that neither imports the other or the
//! wiring in `app.rs`: the public server, the admin port and the tests all
//! take an [`App`] built here.

use crate::config::cli::{CacheArgs, LoadLimits};
use crate::config::limits::Limits;
use crate::control::cache_budget::CacheBudget;
use crate::control::reload::{Reloader, ReloaderParts};
use crate::control::source::Source;
use crate::observe::metrics::{Metrics, NO_ROUTE, RouteMetrics};
use crate::observe::trace::{SpanCounters, Tracing};
use crate::routing::registry::Registry;
use crate::run::admission::{Admission, CpuShare};
use crate::wasm::cache::CompileCache;
use crate::wasm::compiler::Compiler;
use crate::wasm::engine::{EpochTicker, TickerHandle, Wasmtime};
use crate::wasm::outbound::OwnAddresses;
use crate::wasm::sandbox::MemoryBudget;
use http::Request;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Longest `x-request-id` taken from a client.
const MAX_REQUEST_ID_LEN: usize = 128;

pub const REQUEST_ID: &str = "x-request-id";

/// State shared by the public and admin servers.
pub struct App {
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub reloader: Arc<Reloader>,
    pub admission: Admission,
    /// Worker threads CPU-heavy guests may occupy at once.
    pub cpu_share: CpuShare,
    /// Linear memory all running instances may hold together, if capped.
    pub memory_budget: Option<MemoryBudget>,
    /// Keeps the epoch ticker going while requests run.
    pub ticker: TickerHandle,
    pub limits: Limits,
    /// Set on SIGTERM/SIGINT: `/readyz` answers 503 from then on.
    pub draining: AtomicBool,
    /// Series for requests that match no route.
    pub no_route: RouteMetrics,
    pub request_ids: RequestIds,
    /// The bound listeners, kept out of wildcard outbound rules' reach.
    pub own_addresses: OwnAddresses,
    /// OpenTelemetry traces, when an OTLP endpoint is set.
    pub traces: Option<Tracing>,
}

impl App {
    /// An app with nothing loaded yet; call `reloader.reload` to load.
    /// `worker_threads` is the number of request workers serving it.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        source: Source,
        limits: Limits,
        load_limits: LoadLimits,
        cache: &CacheArgs,
        wasmtime: Wasmtime,
        compiler: Compiler,
        worker_threads: usize,
        traces: Option<Tracing>,
    ) -> (Arc<App>, EpochTicker) {
        let ticker = EpochTicker::start(&wasmtime);
        let cache_dir = cache.cache_dir.as_deref();
        let compile_cache = CompileCache::new(cache_dir).with_compiler(compiler);
        let registry = Arc::new(Registry::new());
        let memory_budget = limits.max_total_memory.map(MemoryBudget::new);
        let mut metrics = Metrics::new();
        if let Some(budget) = &memory_budget {
            metrics.register_memory_budget(budget.used_gauge(), budget.limit());
        }
        let spans = traces
            .as_ref()
            .map_or_else(SpanCounters::default, |traces| traces.counters.clone());
        metrics.register_traces(spans.exported, spans.dropped);
        let metrics = Arc::new(metrics);
        // A --cache-dir others may write to is not pruned (what is in it may
        // be theirs), and the OCI store refuses to pull into it.
        let private_dir = cache_dir.filter(|dir| match crate::base::cache_dir::usable_dir(dir) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %format!("{e:#}"), "--cache-dir is not private to this user: --cache-max-size is not enforced, and oci:// components are refused");
                false
            }
        });
        let cache_budget =
            private_dir.map(|dir| Arc::new(CacheBudget::new(dir, cache.cache_max_size, &metrics)));
        let own_addresses = OwnAddresses::default();
        let cpu_share = CpuShare::new(worker_threads);
        let reloader = Arc::new(Reloader::new(
            ReloaderParts {
                source,
                wasmtime,
                ticker: ticker.handle(),
                cache: compile_cache,
                cache_budget,
                limits: limits.clone(),
                load_limits,
                memory_budget: memory_budget.clone(),
                cpu_share: cpu_share.clone(),
                own_addresses: own_addresses.clone(),
                oci_store: cache_dir.map(|dir| dir.join("oci")),
            },
            registry.clone(),
            metrics.clone(),
        ));
        let app = App {
            no_route: metrics.route(NO_ROUTE, NO_ROUTE),
            admission: Admission::new(limits.max_in_flight, limits.queue_timeout),
            cpu_share,
            memory_budget,
            ticker: ticker.handle(),
            registry,
            metrics,
            reloader,
            limits,
            draining: AtomicBool::new(false),
            request_ids: RequestIds::new(),
            own_addresses,
            traces,
        };
        (Arc::new(app), ticker)
    }
}

/// Request ids: the client's `x-request-id` when it is sane, otherwise a
/// new one unique to this process (a random prefix and a counter).
pub struct RequestIds {
    prefix: String,
    next: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        RequestIds::new()
    }
}

impl RequestIds {
    pub fn new() -> RequestIds {
        use std::hash::{BuildHasher, Hasher};
        // RandomState is seeded from the OS: a cheap random prefix.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        RequestIds {
            prefix: format!("{:012x}", hasher.finish() & 0xffff_ffff_ffff),
            next: AtomicU64::new(1),
        }
    }

    pub fn take_or_make<B>(&self, request: &Request<B>) -> Arc<str> {
        if let Some(id) = request
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            && !id.is_empty()
            && id.len() <= MAX_REQUEST_ID_LEN
            && id.bytes().all(|b| b.is_ascii_graphic())
        {
            return Arc::from(id);
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Arc::from(format!("{}-{n:08x}", self.prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_taken_when_sane_and_made_otherwise() {
        let ids = RequestIds::new();
        let with = |v: &str| Request::builder().header(REQUEST_ID, v).body(()).unwrap();
        assert_eq!(&*ids.take_or_make(&with("abc-123")), "abc-123");
        let made = ids.take_or_make(&with("has space"));
        assert_ne!(&*made, "has space");
        let long = "x".repeat(MAX_REQUEST_ID_LEN + 1);
        assert_ne!(*ids.take_or_make(&with(&long)), *long);
        let a = ids.take_or_make(&Request::new(()));
        let b = ids.take_or_make(&Request::new(()));
        assert_ne!(a, b);
    }
}
