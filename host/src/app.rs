//! `wasmlet serve`: wires the engine, the registry, the reloader and the
//! two servers together, and runs them until SIGTERM/SIGINT.
//!
//! Start-up order: everything is loaded and validated before anything is
//! bound, so bad input exits non-zero without ever listening.

use crate::config::cli::ServeArgs;
use crate::config::manifest::OneFileGrants;
use crate::control::source::Source;
use crate::control::watch::FileWatcher;
use crate::http::state::App;
use crate::http::tls::Tls;
use crate::http::{admin, server};
use crate::observe::trace::{TraceConfig, Tracing};
use crate::run::workers::Workers;
use crate::shutdown;
use crate::wasm::compiler::Compiler;
use crate::wasm::engine::Wasmtime;
use anyhow::{Context, Result, bail};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

/// Runs `wasmlet serve` until a shutdown signal, then drains and returns.
/// Components are compiled by `compiler`.
pub async fn run(args: ServeArgs, compiler: Compiler) -> Result<()> {
    if args.listen == args.admin_listen && args.listen.port() != 0 {
        bail!(
            "--admin-listen {} must differ from --listen",
            args.admin_listen
        );
    }
    let tls_files = args.tls.pair().map_err(anyhow::Error::msg)?;
    let trace_config = TraceConfig::from_env().map_err(anyhow::Error::msg)?;
    // Before anything is loaded or bound: a token that cannot be read
    // must not leave the admin POSTs open.
    let admin_token = args
        .net
        .admin_token_file
        .as_deref()
        .map(admin::AdminToken::load)
        .transpose()?;
    let grants = OneFileGrants {
        env: args.grants.env.clone(),
        outbound: args.grants.allowed_outbound_hosts.clone(),
    };
    let source = match (&args.config, &args.component) {
        (Some(_), _) if !grants.is_empty() => bail!(
            "--env and --allowed-outbound-host grant the one component of `wasmlet serve COMPONENT.wasm`; with --config, grant them per route in the manifest (`env`, `allowed_outbound_hosts`)"
        ),
        (Some(config), _) => Source::Manifest(config.clone()),
        (None, Some(component)) => Source::Component(component.clone(), grants),
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
        trace_config.as_ref().map(Tracing::start).transpose()?,
    );
    if let Some(traces) = &trace_config {
        tracing::info!(
            endpoint = %traces.endpoint,
            sampler = %traces.sampler,
            "traces: exporting spans over OTLP"
        );
    }
    // The certificate before the handlers: a bad pair fails at once.
    let tls = match tls_files {
        Some((cert, key)) => Some(Arc::new(Tls::load(cert, key, &app.metrics)?)),
        None => None,
    };
    let _tls_watch = match &tls {
        Some(tls) if !args.no_watch => Some(tls.watch()?),
        _ => None,
    };
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
        tls = tls.is_some(),
        "listening"
    );

    let mut hangup =
        signal(SignalKind::hangup()).context("failed to install the SIGHUP handler")?;
    let reloader = app.reloader.clone();
    let hangup_tls = tls.clone();
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            if let Some(tls) = &hangup_tls {
                tls.reload();
            }
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
        tls,
        workers,
        shutdown,
        args.drain_timeout,
    )
    .await;

    let _ = admin_stop.send(());
    let _ = admin_task.await;
    if let Some(traces) = &app.traces {
        traces.shutdown().await;
    }
    tracing::info!("stopped");
    Ok(())
}
