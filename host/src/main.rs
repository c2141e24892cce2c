//! The `wasmlet` binary: parse the command line, set up logging, run.

use anyhow::Result;
use clap::Parser;
use std::process::ExitCode;
use wasmlet::app;
use wasmlet::config::cli::{CheckArgs, Cli, Command, LoadLimits, PushArgs};
use wasmlet::config::limits::{RequestLimits, RouteLimits};
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
            Command::Precompile => unreachable!("handled before the runtime starts"),
        }
    });
    drop(runtime);
    drop(guard);
    match result {
        Ok(()) => ExitCode::SUCCESS,
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
    let limits = args.limits;
    let wasmtime = Wasmtime::new(&limits)?;
    let ticker = EpochTicker::start(&wasmtime);
    let cache = wasmlet::wasm::cache::CompileCache::disabled();
    let file =
        component::WasmFile::read(&args.component, LoadLimits::default().max_component_size)?;
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
    println!(
        "ok: `{}` is a wasi:http component this host can serve",
        args.component.display()
    );
    println!("sha256: {}", loaded.digest.hex());
    println!("size: {} bytes", loaded.size);
    let export = loaded.world.export().unwrap_or_else(|| "?".into());
    let version = export.rsplit('@').next().unwrap_or("?");
    println!("wasi:http: {version} (exports {export})");
    print_needs(&loaded.footprint, &per_component);
    println!("exports:");
    for name in exports {
        println!("  {name}");
    }
    println!("imports:");
    for name in imports {
        println!("  {name}");
    }
    Ok(())
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
    println!("{digest}");
    Ok(())
}

/// What one instance needs from the host, beside the host's limits.
fn print_needs(needs: &Footprint, limits: &PerComponent) {
    println!("needs, per instance (limit):");
    println!(
        "  core instances: {} ({}, --max-core-instances-per-component)",
        needs.core_instances, limits.core_instances
    );
    println!(
        "  memories: {} ({}, --max-memories-per-component)",
        needs.memories, limits.memories
    );
    println!(
        "  tables: {} ({}, --max-tables-per-component)",
        needs.tables, limits.tables
    );
    println!(
        "  largest table: {} elements ({}, --max-table-elements)",
        needs.largest_table, limits.table_elements
    );
    println!("  initial memory: {}", human_bytes(needs.initial_memory));
    let max = needs.max_memory.map_or(
        "no maximum declared: up to --max-memory".to_string(),
        human_bytes,
    );
    println!("  maximum memory: {max}");
}
