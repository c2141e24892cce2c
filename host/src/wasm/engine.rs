//! The process's wasmtime engines and linkers, and their epoch ticker.
//!
//! The engine uses the pooling allocator, tuned for these VMs: releasing an
//! instance's memory back to the kernel costs cross-CPU TLB shootdowns, so
//! slots keep their memory resident and are reset in place. Epoch
//! interruption bounds a guest's CPU time; one ticker thread advances the
//! epoch (never a thread per request), and parks while no guest runs. The
//! same settings render as `wasmtime serve` flags, for the benchmark's
//! like-for-like comparison.
//!
//! wasi:http 0.2 handlers run on an engine without the component model's
//! concurrency support: with it on, wasmtime 48 sends every call, 0.2's
//! included, through its concurrent-call machinery, which cost the 0.2
//! hello a quarter more CPU per request. wasi:http 0.3 handlers need it, so
//! they get a second engine with the same settings plus concurrency, built
//! when the first one is loaded ([`Wasmtime::for_world`]).

use crate::config::limits::Limits;
use crate::wasm::footprint::Footprint;
use crate::wasm::keyvalue;
use crate::wasm::sandbox::HostState;
use crate::wasm::world::HttpWorld;
use anyhow::{Context, Result, bail};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{JoinHandle, Thread};
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
/// Slots whose memory past [`MEMORY_KEEP_RESIDENT`] is decommitted
/// together. One: a slot waiting in a batch keeps all its pages resident and
/// is not reused, so with batches of 64 a few requests that each grew to
/// 128 MiB, one after another, held it all and got a 512 MiB container
/// OOM-killed. A handler that stays within the resident size (hello does)
/// decommits nothing, so this costs it nothing.
const DECOMMIT_BATCH: usize = 1;
/// Instances beyond --max-in-flight, for validation instantiations during
/// a reload and requests finishing their response bodies.
const INSTANCE_HEADROOM: u32 = 64;
/// Fiber stacks beyond --max-in-flight. A store keeps its stack until it is
/// dropped, and every store is a request holding an in-flight slot or a
/// reload's trial instantiation (reloads run one at a time). Stacks are
/// sized apart from instances because each costs start-up time: the pool
/// protects every stack's guard page with its own `mprotect`, about 2.5 µs
/// apiece here, so the 60 extra stacks of the instance headroom cost 0.15 ms.
const STACK_HEADROOM: u32 = 4;
/// Instances kept idle for reuse, host-wide (see [`crate::run::reuse`]). An idle
/// instance holds a pool slot and its store's fiber stack, so both the
/// instance and the stack totals make room for this many beyond the rest.
pub const MAX_IDLE_INSTANCES: u32 = 64;

/// The engines and their linkers: all that compiling and instantiating
/// components needs.
#[derive(Clone)]
pub struct Wasmtime {
    /// For wasi:http 0.2 handlers.
    pub engine: Engine,
    pub linker: Linker<HostState>,
    /// For wasi:http 0.3 handlers, built on first use.
    concurrent: Arc<Concurrent>,
}

struct Concurrent {
    limits: Limits,
    built: OnceLock<(Engine, Linker<HostState>)>,
    /// Held while building, so two loads never build two.
    building: Mutex<()>,
}

impl Wasmtime {
    /// Builds the 0.2 engine and its linker for the given host limits.
    pub fn new(limits: &Limits) -> Result<Wasmtime> {
        let engine = build(limits)?;
        let linker = linker(&engine)?;
        Ok(Wasmtime {
            engine,
            linker,
            concurrent: Arc::new(Concurrent {
                limits: limits.clone(),
                built: OnceLock::new(),
                building: Mutex::new(()),
            }),
        })
    }

    /// The engine and linker for a component exporting `world`.
    pub fn for_world(&self, world: &HttpWorld) -> Result<(&Engine, &Linker<HostState>)> {
        if !matches!(world, HttpWorld::P3(_)) {
            return Ok((&self.engine, &self.linker));
        }
        let concurrent = &*self.concurrent;
        if concurrent.built.get().is_none() {
            let _building = concurrent.building.lock().unwrap();
            if concurrent.built.get().is_none() {
                let engine = build_concurrent(&concurrent.limits)?;
                let linker = concurrent_linker(&engine)?;
                let _ = concurrent.built.set((engine, linker));
            }
        }
        let (engine, linker) = concurrent.built.get().expect("built above");
        Ok((engine, linker))
    }

    /// Every engine built so far.
    pub fn engines(&self) -> impl Iterator<Item = &Engine> {
        std::iter::once(&self.engine).chain(self.concurrent.built.get().map(|(engine, _)| engine))
    }
}

/// Builds the engine for wasi:http 0.2 handlers for the given host limits.
pub fn build(limits: &Limits) -> Result<Engine> {
    build_with(limits, false)
}

/// Builds the engine for wasi:http 0.3 handlers: the same, with the
/// component model's concurrency support and async features.
pub fn build_concurrent(limits: &Limits) -> Result<Engine> {
    build_with(limits, true)
}

/// The engine for a component exporting `world` (for the compiler child,
/// which sees only the wasm).
pub fn build_for(limits: &Limits, world: &HttpWorld) -> Result<Engine> {
    build_with(limits, matches!(world, HttpWorld::P3(_)))
}

fn build_with(limits: &Limits, concurrency: bool) -> Result<Engine> {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .concurrency_support(concurrency)
        .wasm_component_model_async(concurrency)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(
            Pool::for_limits(limits).config(),
        ));
    Engine::new(&config)
        .map_err(anyhow::Error::from)
        .context("failed to configure the wasmtime engine")
}

/// The pooling allocator's sizes for given host limits. The engine is
/// configured from it, and the benchmark's pooled `wasmtime serve` gets the
/// same settings from [`wasmtime_serve_flags`].
///
/// Every instance that may run at once gets room for the most core
/// instances, memories and tables one component may have, so a pool never
/// runs out before --max-in-flight does. The generous per-component
/// defaults cost no resident memory: core instances are only counted,
/// memory slots are address space reserved with no access until an
/// instance maps its memory, and tables are untouched pages.
#[derive(Debug)]
struct Pool {
    component_instances: u32,
    stacks: u32,
    max_memory: usize,
    per_component: PerComponent,
}

impl Pool {
    fn for_limits(limits: &Limits) -> Pool {
        Pool {
            component_instances: limits
                .max_in_flight
                .saturating_add(INSTANCE_HEADROOM)
                .saturating_add(MAX_IDLE_INSTANCES),
            stacks: limits
                .max_in_flight
                .saturating_add(STACK_HEADROOM)
                .saturating_add(MAX_IDLE_INSTANCES),
            max_memory: usize::try_from(limits.max_memory).unwrap_or(usize::MAX),
            per_component: PerComponent::for_limits(limits),
        }
    }

    fn core_instances(&self) -> u32 {
        self.component_instances
            .saturating_mul(self.per_component.core_instances)
    }

    fn memories(&self) -> u32 {
        self.component_instances
            .saturating_mul(self.per_component.memories)
    }

    fn tables(&self) -> u32 {
        self.component_instances
            .saturating_mul(self.per_component.tables)
    }

    fn config(&self) -> PoolingAllocationConfig {
        let per_component = &self.per_component;
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(self.component_instances)
            .total_core_instances(self.core_instances())
            .total_memories(self.memories())
            .total_tables(self.tables())
            .total_stacks(self.stacks)
            .max_memories_per_component(per_component.memories)
            .max_tables_per_component(per_component.tables)
            .max_core_instances_per_component(per_component.core_instances)
            .table_elements(per_component.table_elements as usize)
            .max_memory_size(self.max_memory)
            .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT)
            .table_keep_resident(TABLE_KEEP_RESIDENT)
            .decommit_batch_size(DECOMMIT_BATCH)
            .pagemap_scan(Enabled::Auto);
        pool
    }

    /// The same pool as `wasmtime serve -O` options, in the order
    /// [`Pool::config`] sets them.
    fn wasmtime_options(&self) -> Vec<(&'static str, String)> {
        let per_component = &self.per_component;
        let sizes: [(&str, u64); 13] = [
            (
                "pooling-total-component-instances",
                self.component_instances.into(),
            ),
            ("pooling-total-core-instances", self.core_instances().into()),
            ("pooling-total-memories", self.memories().into()),
            ("pooling-total-tables", self.tables().into()),
            ("pooling-total-stacks", self.stacks.into()),
            (
                "pooling-max-memories-per-component",
                per_component.memories.into(),
            ),
            (
                "pooling-max-tables-per-component",
                per_component.tables.into(),
            ),
            (
                "pooling-max-core-instances-per-component",
                per_component.core_instances.into(),
            ),
            (
                "pooling-table-elements",
                per_component.table_elements.into(),
            ),
            ("pooling-max-memory-size", self.max_memory as u64),
            ("pooling-memory-keep-resident", MEMORY_KEEP_RESIDENT as u64),
            ("pooling-table-keep-resident", TABLE_KEEP_RESIDENT as u64),
            ("pooling-decommit-batch-size", DECOMMIT_BATCH as u64),
        ];
        std::iter::once(("pooling-allocator", "y".to_string()))
            .chain(sizes.map(|(name, value)| (name, value.to_string())))
            .chain([("pooling-pagemap-scan", "auto".to_string())])
            .collect()
    }
}

/// What one instance of a component may use, from the pool's
/// per-component limits; a component over any of them is refused at load
/// with the flag that raises it ([`PerComponent::check`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerComponent {
    pub core_instances: u32,
    pub memories: u32,
    pub tables: u32,
    pub table_elements: u32,
}

impl PerComponent {
    pub fn for_limits(limits: &Limits) -> PerComponent {
        PerComponent {
            core_instances: limits.max_core_instances_per_component,
            memories: limits.max_memories_per_component,
            tables: limits.max_tables_per_component,
            table_elements: limits.max_table_elements,
        }
    }

    /// Whether a component with this footprint fits; if not, the error
    /// names what it needs, the limit and the flag that raises it.
    pub fn check(&self, needs: &Footprint) -> Result<()> {
        let over = [
            (
                "core instances",
                u64::from(needs.core_instances),
                self.core_instances,
                "--max-core-instances-per-component",
            ),
            (
                "memories",
                needs.memories.into(),
                self.memories,
                "--max-memories-per-component",
            ),
            (
                "tables",
                needs.tables.into(),
                self.tables,
                "--max-tables-per-component",
            ),
            (
                "elements in its largest table",
                needs.largest_table,
                self.table_elements,
                "--max-table-elements",
            ),
        ];
        for (what, needed, limit, flag) in over {
            if needed > u64::from(limit) {
                bail!(
                    "needs {needed} {what}, over the limit of {limit} per component instance (raise it with {flag})"
                );
            }
        }
        Ok(())
    }
}

/// What wasmlet runs a request under, for `limits`, as `wasmtime serve`
/// flags: the pool as `-O` options, then the request timeout (epoch
/// interruption) and the memory limit as `-W` options. `bench/run.sh` gives
/// its pooled `wasmtime serve` exactly these; a test below holds it to that.
pub fn wasmtime_serve_flags(limits: &Limits) -> Vec<String> {
    let pool = Pool::for_limits(limits).wasmtime_options();
    let store = [
        (
            "timeout",
            format!("{}ms", limits.request_timeout.as_millis()),
        ),
        ("max-memory-size", limits.max_memory.to_string()),
    ];
    let flag =
        |kind: &str, (name, value): (&str, String)| [kind.to_string(), format!("{name}={value}")];
    pool.into_iter()
        .flat_map(|option| flag("-O", option))
        .chain(store.into_iter().flat_map(|option| flag("-W", option)))
        .collect()
}

/// The linker 0.2 handlers are pre-instantiated with: WASI p2 (granting
/// nothing unless a route says so) plus wasi:http and wasi:config (whose
/// import a route must grant: [`crate::wasm::sandbox::Grants::check_imports`]).
pub fn linker(engine: &Engine) -> Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    keyvalue::add_to_linker(&mut linker, HostState::kv)?;
    wasmtime_wasi_config::add_to_linker(&mut linker, |h: &mut HostState| {
        wasmtime_wasi_config::WasiConfig::new(&h.config)
    })?;
    Ok(linker)
}

/// The linker 0.3 handlers are pre-instantiated with: everything of
/// [`linker`] plus WASI p3 and wasi:http 0.3 (a p3 guest built by Rust's
/// wasm32-wasip2 target imports p2 interfaces for its standard library too).
pub fn concurrent_linker(engine: &Engine) -> Result<Linker<HostState>> {
    let mut linker = linker(engine)?;
    wasmtime_wasi::p3::add_to_linker(&mut linker)?;
    wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
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

/// Ticks without a running guest before the ticker parks.
const PARK_AFTER_IDLE_TICKS: u32 = 100;

/// Advances the engine's epoch every [`EPOCH_TICK`] while guests run;
/// stops and joins on drop.
///
/// Only a running guest needs the epoch (for its deadline and its turns),
/// so after [`PARK_AFTER_IDLE_TICKS`] ticks without one the thread parks
/// until the next guest starts: an idle host would otherwise spend about
/// 3% of a core waking up a thousand times a second.
pub struct EpochTicker {
    shared: Arc<TickerShared>,
    thread: Option<JoinHandle<()>>,
}

struct TickerShared {
    stop: AtomicBool,
    /// Guests holding a [`GuestRunning`].
    running: AtomicUsize,
    parked: AtomicBool,
}

impl EpochTicker {
    /// Ticks every engine of `wasmtime`, those built later included.
    pub fn start(wasmtime: &Wasmtime) -> EpochTicker {
        let shared = Arc::new(TickerShared {
            stop: AtomicBool::new(false),
            running: AtomicUsize::new(0),
            parked: AtomicBool::new(false),
        });
        let thread = std::thread::Builder::new()
            .name("wasmlet-epoch".into())
            .spawn({
                let wasmtime = wasmtime.clone();
                let shared = shared.clone();
                move || tick(&wasmtime, &shared)
            })
            .expect("failed to spawn the epoch ticker thread");
        EpochTicker {
            shared,
            thread: Some(thread),
        }
    }

    /// What request slots use to keep the ticker going.
    pub fn handle(&self) -> TickerHandle {
        TickerHandle {
            shared: self.shared.clone(),
            thread: self
                .thread
                .as_ref()
                .expect("the ticker thread runs until drop")
                .thread()
                .clone(),
        }
    }

    /// Whether the ticker is parked (no guest ran for a while).
    pub fn is_parked(&self) -> bool {
        self.shared.parked.load(Ordering::SeqCst)
    }
}

fn tick(wasmtime: &Wasmtime, shared: &TickerShared) {
    let mut idle_ticks = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        std::thread::sleep(EPOCH_TICK);
        for engine in wasmtime.engines() {
            engine.increment_epoch();
        }
        if shared.running.load(Ordering::SeqCst) > 0 {
            idle_ticks = 0;
            continue;
        }
        idle_ticks += 1;
        if idle_ticks < PARK_AFTER_IDLE_TICKS {
            continue;
        }
        // Announce the park before checking for guests; a guest that
        // starts after the check sees the flag and unparks this thread
        // (see `TickerHandle::guest_running`).
        shared.parked.store(true, Ordering::SeqCst);
        while shared.running.load(Ordering::SeqCst) == 0 && !shared.stop.load(Ordering::SeqCst) {
            std::thread::park();
        }
        shared.parked.store(false, Ordering::SeqCst);
        idle_ticks = 0;
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// Lets request slots wake a parked [`EpochTicker`].
#[derive(Clone)]
pub struct TickerHandle {
    shared: Arc<TickerShared>,
    thread: Thread,
}

impl TickerHandle {
    /// Keeps the ticker running until the returned guard drops. Costs two
    /// atomic operations, and an unpark only when the ticker is parked.
    pub fn guest_running(&self) -> GuestRunning {
        let shared = &self.shared;
        if shared.running.fetch_add(1, Ordering::SeqCst) == 0
            && shared.parked.load(Ordering::SeqCst)
        {
            self.thread.unpark();
        }
        GuestRunning(shared.clone())
    }
}

/// A guest that needs the epoch to advance; see [`TickerHandle`].
pub struct GuestRunning(Arc<TickerShared>);

impl Drop for GuestRunning {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn wait_until(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn the_benchmark_gives_wasmtime_serve_wasmlets_settings() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/run.sh");
        let script = std::fs::read_to_string(path).expect("bench/run.sh");
        let block = script
            .split_once("\nPOOLING_FLAGS=(\n")
            .and_then(|(_, rest)| rest.split_once("\n)"))
            .expect("a POOLING_FLAGS=( ... ) array in bench/run.sh")
            .0;
        let flags: Vec<&str> = block
            .lines()
            .flat_map(|line| line.split('#').next().unwrap_or("").split_whitespace())
            .collect();
        assert_eq!(
            flags,
            wasmtime_serve_flags(&Limits::default()),
            "bench/run.sh's POOLING_FLAGS differ from the engine's settings"
        );
    }

    #[test]
    fn wasmtime_serve_flags_follow_the_limits() {
        let limits = Limits {
            max_in_flight: 8,
            max_memory: 1 << 20,
            request_timeout: Duration::from_millis(1500),
            ..Limits::default()
        };
        let flags = wasmtime_serve_flags(&limits);
        for want in [
            "pooling-total-component-instances=136",
            "pooling-total-stacks=76",
            "pooling-max-memory-size=1048576",
            "timeout=1500ms",
            "max-memory-size=1048576",
        ] {
            assert!(flags.iter().any(|f| f == want), "{want} not in {flags:?}");
        }
        // Every value follows its -O or -W.
        assert!(
            flags
                .chunks(2)
                .all(|pair| pair[0] == "-O" || pair[0] == "-W")
        );
    }

    #[test]
    fn the_ticker_parks_while_no_guest_runs_and_wakes_for_one() {
        let wasmtime = Wasmtime::new(&Limits::default()).unwrap();
        let ticker = EpochTicker::start(&wasmtime);
        let handle = ticker.handle();
        wait_until("the idle ticker parks", || ticker.is_parked());

        let guest = handle.guest_running();
        wait_until("a running guest wakes the ticker", || !ticker.is_parked());
        // It keeps ticking while the guest runs, well past the idle limit.
        std::thread::sleep(EPOCH_TICK * PARK_AFTER_IDLE_TICKS * 3);
        assert!(!ticker.is_parked(), "parked while a guest runs");

        drop(guest);
        wait_until("the ticker parks again", || ticker.is_parked());
        // Dropping a parked ticker stops and joins its thread.
        drop(ticker);
    }
}
