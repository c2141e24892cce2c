//! The one wasmtime `Engine` and `Linker` of the process, and its epoch ticker.
//!
//! The engine uses the pooling allocator, tuned for these VMs: releasing an
//! instance's memory back to the kernel costs cross-CPU TLB shootdowns, so
//! slots keep their memory resident and are reset in place. Epoch
//! interruption bounds a guest's CPU time; one ticker thread per engine
//! advances the epoch (never a thread per request).

use crate::limits::Limits;
use crate::sandbox::HostState;
use anyhow::{Context, Result};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;
use wasmtime::component::Linker;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances; a running guest yields to other requests
/// at every tick and is interrupted at the first tick past its deadline.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Linear memory bytes per slot reset in place (memset of dirty pages)
/// instead of being decommitted when an instance ends.
const MEMORY_KEEP_RESIDENT: usize = 2 << 20;
/// Table bytes per slot kept resident likewise.
const TABLE_KEEP_RESIDENT: usize = 64 << 10;
/// Slots decommitted together, to batch the TLB shootdowns.
const DECOMMIT_BATCH: usize = 64;
/// Core instances, memories and tables one component instance may use; a
/// Rust guest has a few core modules (its code plus adapter shims).
const CORE_INSTANCES_PER_COMPONENT: u32 = 8;
/// Instances beyond --max-in-flight, for validation instantiations during
/// a reload and requests finishing their response bodies.
const INSTANCE_HEADROOM: u32 = 64;

/// The engine and the linker for it: all that compiling and instantiating
/// components needs.
#[derive(Clone)]
pub struct Wasmtime {
    pub engine: Engine,
    pub linker: Linker<HostState>,
}

impl Wasmtime {
    /// Builds both for the given host limits.
    pub fn new(limits: &Limits) -> Result<Wasmtime> {
        let engine = build(limits)?;
        let linker = linker(&engine)?;
        Ok(Wasmtime { engine, linker })
    }
}

/// Builds the process's engine for the given host limits.
pub fn build(limits: &Limits) -> Result<Engine> {
    let instances = limits.max_in_flight.saturating_add(INSTANCE_HEADROOM);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(instances)
        .total_core_instances(instances.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
        .total_memories(instances.saturating_mul(2))
        .total_tables(instances.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
        .total_stacks(instances)
        .max_memories_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_tables_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memory_size(usize::try_from(limits.max_memory).unwrap_or(usize::MAX))
        .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT)
        .table_keep_resident(TABLE_KEEP_RESIDENT)
        .decommit_batch_size(DECOMMIT_BATCH)
        .pagemap_scan(Enabled::Auto);

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
        .map_err(anyhow::Error::from)
        .context("failed to configure the wasmtime engine")
}

/// The linker every component is pre-instantiated with: WASI p2 (granting
/// nothing unless a route says so) plus wasi:http.
pub fn linker(engine: &Engine) -> Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    Ok(linker)
}

/// A short, stable fingerprint of everything that decides whether a
/// compiled component can be loaded into `engine` (wasmtime version,
/// compiler settings, CPU features).
pub fn fingerprint(engine: &Engine) -> String {
    let mut hasher = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// Advances the engine's epoch every [`EPOCH_TICK`]; stops and joins on drop.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engine: &Engine) -> EpochTicker {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("wasmlet-epoch".into())
            .spawn({
                let engine = engine.clone();
                let stop = stop.clone();
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                }
            })
            .expect("failed to spawn the epoch ticker thread");
        EpochTicker {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
