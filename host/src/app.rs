//! `wasmlet serve`: wires the engine, the registry, the reloader and the
//! two servers together, and runs them until SIGTERM/SIGINT.
//!
//! Start-up order: everything is loaded and validated before anything is
//! bound, so bad input exits non-zero without ever listening.

use crate::config::cli::{CacheArgs, LoadLimits, ServeArgs};
use crate::config::limits::{Limits, MemoryBudget};
use crate::control::cache_budget::CacheBudget;
use crate::control::reload::{FileWatcher, Reloader, ReloaderParts, Source};
use crate::http::server::RequestIds;
use crate::http::{admin, server};
use crate::observe::metrics::{Metrics, NO_ROUTE, RouteMetrics};
use crate::routing::registry::Registry;
use crate::run::admission::{Admission, CpuShare};
use crate::run::workers::Workers;
use crate::shutdown;
use crate::wasm::cache::CompileCache;
use crate::wasm::compiler::Compiler;
use crate::wasm::engine::{EpochTicker, TickerHandle, Wasmtime};
use crate::wasm::outbound::OwnAddresses;
use anyhow::{Context, Result, bail};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

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
}

impl App {
    /// An app with nothing loaded yet; call `reloader.reload` to load.
    /// `worker_threads` is the number of request workers serving it.
    pub fn new(
        source: Source,
        limits: Limits,
        load_limits: LoadLimits,
        cache: &CacheArgs,
        wasmtime: Wasmtime,
        compiler: Compiler,
        worker_threads: usize,
    ) -> (Arc<App>, EpochTicker) {
        let ticker = EpochTicker::start(&wasmtime);
        let cache_dir = cache.cache_dir.as_deref();
        let compile_cache = CompileCache::new(cache_dir).with_compiler(compiler);
        let registry = Arc::new(Registry::new());
        let memory_budget = limits.max_total_memory.map(MemoryBudget::new);
        let mut metrics = Metrics::new();
        if let Some(budget) = &memory_budget {
            metrics.register_memory_budget(budget);
        }
        let metrics = Arc::new(metrics);
        // A --cache-dir others may write to is not pruned (what is in it may
        // be theirs), and the OCI store refuses to pull into it.
        let private_dir = cache_dir.filter(|dir| match crate::wasm::cache::usable_dir(dir) {
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
        };
        (Arc::new(app), ticker)
    }
}

/// Runs `wasmlet serve` until a shutdown signal, then drains and returns.
/// Components are compiled by `compiler`.
pub async fn run(args: ServeArgs, compiler: Compiler) -> Result<()> {
    if args.listen == args.admin_listen && args.listen.port() != 0 {
        bail!(
            "--admin-listen {} must differ from --listen",
            args.admin_listen
        );
    }
    // Before anything is loaded or bound: a token that cannot be read
    // must not leave the admin POSTs open.
    let admin_token = args
        .net
        .admin_token_file
        .as_deref()
        .map(admin::AdminToken::load)
        .transpose()?;
    let source = match (&args.config, &args.component) {
        (Some(config), _) => Source::Manifest(config.clone()),
        (None, Some(component)) => Source::Component(component.clone()),
        (None, None) => bail!("give a COMPONENT.wasm or --config wasmlet.toml"),
    };
    // The watcher starts before the first load, so that a change made
    // while loading still leads to a reload.
    let worker_threads = args.limits.worker_count();
    let workers =
        Workers::start(worker_threads).context("failed to start the request worker threads")?;
    let watcher = if args.no_watch {
        None
    } else {
        Some(FileWatcher::start(&source)?)
    };
    let (app, _ticker) = App::new(
        source,
        args.limits.clone(),
        args.load.clone(),
        &args.cache,
        Wasmtime::new(&args.limits)?,
        compiler,
        worker_threads,
    );
    app.reloader.reload("startup").await?;
    let _watch = watcher.map(|watcher| watcher.drive(app.reloader.clone()));
    tokio::spawn(crate::control::follow::run(
        app.reloader.clone(),
        app.registry.clone(),
    ));

    let public = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("failed to bind --listen {}", args.listen))?;
    let admin = TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("failed to bind --admin-listen {}", args.admin_listen))?;
    app.own_addresses
        .set(&[public.local_addr()?, admin.local_addr()?]);
    tracing::info!(
        public = %public.local_addr()?,
        admin = %admin.local_addr()?,
        "listening"
    );

    let mut hangup =
        signal(SignalKind::hangup()).context("failed to install the SIGHUP handler")?;
    let reloader = app.reloader.clone();
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            let _ = reloader.reload("sighup").await;
        }
    });

    let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let net = args.net.clone();
    let admin_app = app.clone();
    let admin_task = tokio::spawn(async move {
        admin::serve_with_token(admin, admin_app, &net, admin_token, async {
            let _ = admin_stopped.await;
        })
        .await
    });

    let draining_app = app.clone();
    let shutdown = async move {
        let name = shutdown::signal().await;
        draining_app.draining.store(true, Ordering::Relaxed);
        tracing::info!(signal = name, "shutting down: readiness is now 503");
    };
    server::serve(
        public,
        app.clone(),
        &args.net,
        workers,
        shutdown,
        args.drain_timeout,
    )
    .await;

    let _ = admin_stop.send(());
    let _ = admin_task.await;
    tracing::info!("stopped");
    Ok(())
}
