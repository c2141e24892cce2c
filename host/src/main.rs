//! The `wasmlet` binary: parse the command line, set up logging, run.

use anyhow::Result;
use clap::Parser;
use std::process::ExitCode;
use wasmlet::config::{CheckArgs, Cli, Command, LoadLimits};
use wasmlet::engine::{EpochTicker, Wasmtime};
use wasmlet::limits::{Limits, RequestLimits, RouteLimits};
use wasmlet::sandbox::Grants;
use wasmlet::{app, component, logging};

/// jemalloc: about 10% less CPU per request than glibc malloc on the
/// request path (a fresh store and instance per request allocate and free
/// a lot), at the same idle memory; mimalloc was as fast but doubled the
/// idle RSS (README, "Benchmarks").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log = match &cli.command {
        Command::Serve(args) => &args.log,
        Command::Check(args) => &args.log,
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
            Command::Serve(args) => app::run(args).await,
            Command::Check(args) => check(args).await,
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

/// `wasmlet check`: validate like a reload would, then describe.
async fn check(args: CheckArgs) -> Result<()> {
    let limits = Limits::default();
    let Wasmtime { engine, linker } = Wasmtime::new(&limits)?;
    let ticker = EpochTicker::start(&engine);
    let cache = wasmlet::cache::CompileCache::disabled(&engine);
    let file =
        component::WasmFile::read(&args.component, LoadLimits::default().max_component_size)?;
    let loaded = component::compile(&engine, &linker, &cache, &file)?;
    component::trial_instantiate(
        &loaded,
        &Grants::none("(check)"),
        &RequestLimits::resolve(&limits, &RouteLimits::default()),
        None,
        &ticker.handle(),
    )
    .await?;
    let (imports, exports) = component::interface(&engine, &loaded);
    println!(
        "ok: `{}` is a wasi:http component this host can serve",
        args.component.display()
    );
    println!("sha256: {}", loaded.digest);
    println!("size: {} bytes", loaded.size);
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
