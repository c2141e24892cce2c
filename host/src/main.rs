//! The `wasmlet` binary: parse the command line, set up logging, run.

use anyhow::Result;
use clap::Parser;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use wasmlet::app;
use wasmlet::config::cli::{CheckArgs, Cli, Command, LoadLimits, PushArgs};
use wasmlet::config::limits::{RequestLimits, RouteLimits};
use wasmlet::control::source::Source;
use wasmlet::http::state::App;
use wasmlet::observe::logging;
use wasmlet::wasm::compiler::{self, Compiler};
use wasmlet::wasm::component;
use wasmlet::wasm::engine::{EpochTicker, PerComponent, Wasmtime};
use wasmlet::wasm::footprint::{Footprint, human_bytes};
use wasmlet::wasm::sandbox::Grants;

/// jemalloc: about 10% less CPU per request than glibc malloc on the
/// request path (a fresh store and instance per request allocate and free
/// a lot), at the same idle memory; mimalloc was as fast but doubled the
/// idle RSS (bench/README.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log = match &cli.command {
        Command::Serve(args) => &args.log,
        Command::Check(args) => &args.log,
        Command::Push(args) => &args.log,
        Command::Precompile => return precompile(),
        Command::New(args) => {
            return exit_with(
                wasmlet::scaffold::new(&args.lang, &args.name).and_then(|text| print_out(&text)),
            );
        }
    };
    let guard = logging::init(log.log_format);
    // Requests run on the server's worker threads (see `workers`); this
    // runtime only accepts connections and runs the admin port, reloads
    // and signal handling, so one thread is enough.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("failed to start the tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => app::run(args, compiler_child()).await,
            Command::Check(args) => check(args).await,
            Command::Push(args) => push(args).await,
            Command::Precompile | Command::New(_) => {
                unreachable!("handled before the runtime starts")
            }
        }
    });
    drop(runtime);
    drop(guard);
    exit_with(result)
}

/// A command's result as the process's exit: one `error:` line and 1 on a
/// failure.
fn exit_with(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Whoever read stdout wanted no more (`| head -1`): not an error.
        Err(e) if e.is::<StdoutClosed>() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `serve` compiles in a child running this executable (see
/// `wasmlet::wasm::compiler`), or in-process if it cannot tell which that is.
fn compiler_child() -> Compiler {
    match std::env::current_exe() {
        Ok(exe) => Compiler::Subprocess(exe),
        Err(e) => {
            tracing::warn!(error = %e, "cannot find this executable; compiling in-process");
            Compiler::InProcess
        }
    }
}

/// `wasmlet precompile`, the compiler child: with the engine settings
/// `serve` uses by default (wasmtime checks that the artifact fits the
/// host's engine when it loads it).
fn precompile() -> ExitCode {
    let status = compiler::run_child(|wasm| {
        let world = wasmlet::wasm::world::of_component(wasm)?;
        wasmlet::wasm::engine::build_for(&wasmlet::config::limits::Limits::default(), &world)
    });
    ExitCode::from(u8::try_from(status).unwrap_or(1))
}

/// `wasmlet check`: validate like a reload would, then describe.
async fn check(args: CheckArgs) -> Result<()> {
    match (&args.config, &args.component) {
        (Some(config), _) => check_manifest(config, &args).await,
        (None, Some(component)) => check_component(component, &args).await,
        (None, None) => anyhow::bail!("give a COMPONENT.wasm or --config wasmlet.toml"),
    }
}

/// `wasmlet check --config FILE`: loads the manifest as `serve` would at
/// start-up (every route's component, pulled or found in --cache-dir for
/// `oci://`, compiled and trial-instantiated; limits, canaries, key-value
/// stores and config values), then prints one summary per route. Binds
/// nothing.
async fn check_manifest(config: &Path, args: &CheckArgs) -> Result<()> {
    // `serve` would refuse a bad OTEL_* variable at start-up: so does this.
    wasmlet::observe::trace::TraceConfig::from_env().map_err(anyhow::Error::msg)?;
    let (app, _ticker) = App::new(
        Source::Manifest(config.to_path_buf()),
        args.limits.clone(),
        args.load.clone(),
        &args.cache,
        Wasmtime::new(&args.limits)?,
        compiler_child(),
        1,
        None,
    );
    let report = app.reloader.reload("check").await?;
    let doc = app.registry.describe();
    let mut out = String::new();
    writeln!(
        out,
        "ok: `{}`: {} route{} this host can serve",
        config.display(),
        report.routes,
        if report.routes == 1 { "" } else { "s" }
    )?;
    for route in &doc.routes {
        let digest = route.digest.map(|d| d.to_string()).unwrap_or_default();
        writeln!(out, "{}: {} ({digest})", route.route, route.component)?;
        if let Some(resolved) = route.resolved_digest {
            writeln!(out, "  resolved: {resolved}")?;
        }
        if let Some(canary) = &route.canary {
            writeln!(
                out,
                "  canary: {} ({}), weight {}",
                canary.component, canary.digest, canary.weight
            )?;
        }
        if !route.key_value_stores.is_empty() {
            writeln!(
                out,
                "  key_value_stores: {}",
                route.key_value_stores.join(", ")
            )?;
        }
        if let Some(names) = &route.config {
            writeln!(out, "  config: {}", names.join(", "))?;
        }
    }
    print_out(&out)
}

/// `wasmlet check COMPONENT.wasm`: the component alone, against the limits.
async fn check_component(component: &Path, args: &CheckArgs) -> Result<()> {
    let limits = args.limits.clone();
    let wasmtime = Wasmtime::new(&limits)?;
    let ticker = EpochTicker::start(&wasmtime);
    let cache = wasmlet::wasm::cache::CompileCache::disabled();
    let file = component::WasmFile::read(component, args.load.max_component_size)?;
    let per_component = PerComponent::for_limits(&limits);
    let loaded = component::compile(&wasmtime, &per_component, &cache, &file)?;
    component::trial_instantiate(
        &loaded,
        &Grants::none("(check)"),
        &RequestLimits::resolve(&limits, &RouteLimits::default()),
        None,
        &ticker.handle(),
    )
    .await?;
    let (imports, exports) = component::interface(loaded.engine(), &loaded);
    let mut out = String::new();
    writeln!(
        out,
        "ok: `{}` is a wasi:http component this host can serve",
        component.display()
    )?;
    writeln!(out, "sha256: {}", loaded.digest.hex())?;
    writeln!(out, "size: {} bytes", loaded.size)?;
    let export = loaded.world.export().unwrap_or_else(|| "?".into());
    let version = export.rsplit('@').next().unwrap_or("?");
    writeln!(out, "wasi:http: {version} (exports {export})")?;
    write_needs(&mut out, &loaded.footprint, &per_component)?;
    writeln!(out, "exports:")?;
    for name in exports {
        writeln!(out, "  {name}")?;
    }
    writeln!(out, "imports:")?;
    for name in imports {
        writeln!(out, "  {name}")?;
    }
    print_out(&out)
}

/// `wasmlet push`: validate, push, print the digest.
async fn push(args: PushArgs) -> Result<()> {
    let target = wasmlet::oci::push::target(&args.reference)?;
    // Validated as a component first, so what is pushed is what `serve`
    // will accept.
    let wasm =
        component::WasmFile::read(&args.component, LoadLimits::default().max_component_size)?;
    wasm.check_header()?;
    let epoch = std::env::var("SOURCE_DATE_EPOCH").ok();
    let created = wasmlet::oci::push::created(&args.component, epoch.as_deref())?;
    let digest = wasmlet::oci::push::push(
        &wasm.bytes,
        created,
        &target,
        &args.registry.insecure_registries,
        wasmlet::oci::auth::config_dir().as_deref(),
    )
    .await?;
    print_out(&format!("{digest}\n"))
}

/// What one instance needs from the host, beside the host's limits.
fn write_needs(out: &mut String, needs: &Footprint, limits: &PerComponent) -> std::fmt::Result {
    writeln!(out, "needs, per instance (limit):")?;
    writeln!(
        out,
        "  core instances: {} ({}, --max-core-instances-per-component)",
        needs.core_instances, limits.core_instances
    )?;
    writeln!(
        out,
        "  memories: {} ({}, --max-memories-per-component)",
        needs.memories, limits.memories
    )?;
    writeln!(
        out,
        "  tables: {} ({}, --max-tables-per-component)",
        needs.tables, limits.tables
    )?;
    writeln!(
        out,
        "  largest table: {} elements ({}, --max-table-elements)",
        needs.largest_table, limits.table_elements
    )?;
    writeln!(
        out,
        "  initial memory: {}",
        human_bytes(needs.initial_memory)
    )?;
    let max = needs.max_memory.map_or(
        "no maximum declared: up to --max-memory".to_string(),
        human_bytes,
    );
    writeln!(out, "  maximum memory: {max}")
}

/// A subcommand's output, written to stdout at once. A closed stdout
/// (`wasmlet check FILE | head -1`) is [`StdoutClosed`]: the reader wanted
/// no more, so the command ends quietly.
fn print_out(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("failed to write to stdout")),
        Ok(()) => Ok(()),
    }
}

/// Stdout was closed before a command's output was written.
#[derive(Debug)]
struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout was closed")
    }
}

impl std::error::Error for StdoutClosed {}
