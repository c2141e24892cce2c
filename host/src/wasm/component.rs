//! Reading, validating, compiling and pre-instantiating one component.
//!
//! A file becomes a [`LoadedComponent`] only if it is no larger than
//! --max-component-size, is a WebAssembly component (not a core module),
//! exports `wasi:http/incoming-handler@0.2.x` or `wasi:http/handler@0.3.0`,
//! and instantiates against this host's linker within its route's limits. Every error names the file and
//! the reason in one line.

use crate::base::digest::Digest;
use crate::config::limits::RequestLimits;
use crate::wasm::cache::{CacheOutcome, CompileCache};
use crate::wasm::engine::{PerComponent, TickerHandle, Wasmtime};
use crate::wasm::footprint::{self, Footprint};
use crate::wasm::sandbox::{self, Grants, HostState, MemoryBudget, MemoryLimit};
use crate::wasm::world::{self, HttpWorld};
use anyhow::{Context, Result, bail};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, UpdateDeadline};
use wasmtime_wasi_http::handler::ProxyPre;
use wasmtime_wasi_http::p3::bindings::ServicePre;

/// The export every 0.2 handler has (any 0.2.x version).
pub const HANDLER_EXPORT: &str = "wasi:http/incoming-handler@0.2";
/// The export of a 0.3 handler.
pub const P3_HANDLER_EXPORT: &str = "wasi:http/handler@0.3.0";

const WASM_MAGIC: &[u8; 4] = b"\0asm";
const CORE_MODULE_VERSION: [u8; 4] = [0x01, 0x00, 0x00, 0x00];
const COMPONENT_VERSION: [u8; 4] = [0x0d, 0x00, 0x01, 0x00];

/// A compiled, validated, pre-instantiated component.
pub struct LoadedComponent {
    pub path: PathBuf,
    /// The sha256 of the wasm file.
    pub digest: Digest,
    pub size: u64,
    /// A p2 (`incoming-handler`) or p3 (`handler`) pre-instance.
    pub pre: ProxyPre<HostState>,
    /// The handler interface it exports.
    pub world: HttpWorld,
    /// What one instance needs from the pool.
    pub footprint: Footprint,
    pub compile_time: Duration,
    pub cache: CacheOutcome,
    pub loaded_at: SystemTime,
}

impl std::fmt::Debug for LoadedComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedComponent")
            .field("path", &self.path)
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

impl LoadedComponent {
    pub fn engine(&self) -> &Engine {
        self.instance_pre().engine()
    }

    /// The names of the instances and functions the component imports.
    pub fn import_names(&self) -> Vec<String> {
        let component = self.instance_pre().component();
        component
            .component_type()
            .imports(self.engine())
            .map(|(name, _)| name.to_string())
            .collect()
    }

    pub fn instance_pre(&self) -> &wasmtime::component::InstancePre<HostState> {
        match &self.pre {
            ProxyPre::P2(pre) => pre.instance_pre(),
            ProxyPre::P3(pre) => pre.instance_pre(),
        }
    }
}

/// A component file read whole from disk, with its digest.
#[derive(Debug, Clone)]
pub struct WasmFile {
    pub path: PathBuf,
    pub bytes: Arc<[u8]>,
    pub digest: Digest,
}

impl WasmFile {
    /// Reads `path`, refusing a file larger than `max_size` bytes (checked
    /// before reading, and again while reading) and a file that changed
    /// while it was read (a writer still copying into it): the next change
    /// event retries.
    pub fn read(path: &Path, max_size: u64) -> Result<WasmFile> {
        let before = stat(path)?;
        let too_large = |size: u64| {
            anyhow::anyhow!(
                "`{}`: {size} bytes or more, larger than --max-component-size ({max_size} bytes)",
                path.display()
            )
        };
        if before.0 > max_size {
            return Err(too_large(before.0));
        }
        let mut bytes = Vec::with_capacity(before.0 as usize);
        std::fs::File::open(path)
            .and_then(|file| {
                file.take(max_size.saturating_add(1))
                    .read_to_end(&mut bytes)
            })
            .with_context(|| format!("`{}`: cannot read", path.display()))?;
        if bytes.len() as u64 > max_size {
            return Err(too_large(bytes.len() as u64));
        }
        let after = stat(path)?;
        if before != after || after.0 != bytes.len() as u64 {
            bail!(
                "`{}`: file changed while being read (still being written?)",
                path.display()
            );
        }
        let digest = Digest::of(&bytes);
        Ok(WasmFile {
            path: path.to_path_buf(),
            bytes: bytes.into(),
            digest,
        })
    }

    /// Checks the header: a component, not a core module or something else.
    pub fn check_header(&self) -> Result<()> {
        let path = self.path.display();
        let bytes = &self.bytes;
        if bytes.len() < 8 || &bytes[..4] != WASM_MAGIC {
            bail!("`{path}`: not a WebAssembly file (no `\\0asm` header)");
        }
        let version = [bytes[4], bytes[5], bytes[6], bytes[7]];
        if version == CORE_MODULE_VERSION {
            bail!(
                "`{path}`: a core WebAssembly module, not a component; build it for wasm32-wasip2 (or wrap it with `wasm-tools component new`)"
            );
        }
        if version != COMPONENT_VERSION {
            bail!("`{path}`: unsupported WebAssembly version/layer {version:02x?}");
        }
        Ok(())
    }
}

fn stat(path: &Path) -> Result<(u64, Option<SystemTime>)> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("`{}`: cannot read", path.display()))?;
    if !meta.is_file() {
        bail!("`{}`: not a file", path.display());
    }
    Ok((meta.len(), meta.modified().ok()))
}

/// Compiles (or loads from the cache) and validates a component, for the
/// engine its wasi:http world needs. Blocking: call it off the request
/// path. A component that would not fit the pool (`per_component`) is
/// refused before it is compiled.
pub fn compile(
    wasmtime: &Wasmtime,
    per_component: &PerComponent,
    cache: &CompileCache,
    file: &WasmFile,
) -> Result<LoadedComponent> {
    file.check_header()?;
    let path = file.path.display();
    let footprint = footprint::of_component(&file.bytes)
        .with_context(|| format!("`{path}`: not a valid component"))?;
    per_component
        .check(&footprint)
        .with_context(|| format!("`{path}`"))?;
    let world = world::of_component(&file.bytes)
        .with_context(|| format!("`{path}`: not a valid component"))?;
    world::check_p3_version(&world).with_context(|| format!("`{path}`"))?;
    let (engine, linker): (&Engine, &Linker<HostState>) = wasmtime.for_world(&world)?;
    let started = Instant::now();
    let (component, outcome) = cache
        .compile(engine, &file.bytes, file.digest.hex())
        .with_context(|| format!("`{path}`: not a valid component"))?;
    let compile_time = started.elapsed();
    check_exports(engine, &component).with_context(|| format!("`{path}`"))?;
    let instance_pre = linker
        .instantiate_pre(&component)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("`{path}`: cannot be instantiated by this host"))?;
    let pre = match &world {
        HttpWorld::P3(_) => ServicePre::new(instance_pre)
            .map(ProxyPre::P3)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("`{path}`: does not export `{P3_HANDLER_EXPORT}`"))?,
        _ => wasmtime_wasi_http::p2::bindings::ProxyPre::new(instance_pre)
            .map(ProxyPre::P2)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("`{path}`: does not export `{HANDLER_EXPORT}.x`"))?,
    };
    Ok(LoadedComponent {
        path: file.path.clone(),
        digest: file.digest,
        size: file.bytes.len() as u64,
        pre,
        world,
        footprint,
        compile_time,
        cache: outcome,
        loaded_at: SystemTime::now(),
    })
}

fn check_exports(engine: &Engine, component: &Component) -> Result<()> {
    let ty = component.component_type();
    if ty
        .exports(engine)
        .any(|(name, _)| name.starts_with(HANDLER_EXPORT) || name == P3_HANDLER_EXPORT)
    {
        return Ok(());
    }
    let exports: Vec<&str> = ty.exports(engine).map(|(name, _)| name).collect();
    bail!(
        "does not export `{HANDLER_EXPORT}.x` or `{P3_HANDLER_EXPORT}` (its exports: [{}]); build it against the wasi:http/proxy world",
        exports.join(", ")
    )
}

/// Instantiates the component once in a throwaway store, proving it can
/// be instantiated here (not only linked), under its route's grants and
/// limits and charged to the memory budget: the store comes from the same
/// factory as a request's. Instantiating runs the core modules' start
/// functions, so it gets the route's time limit: a start function that
/// loops or waits forever fails the load instead of holding up every later
/// reload.
pub async fn trial_instantiate(
    component: &LoadedComponent,
    grants: &Grants,
    limits: &RequestLimits,
    budget: Option<MemoryBudget>,
    ticker: &TickerHandle,
) -> Result<()> {
    let engine = component.engine();
    let mut store = sandbox::new_store(engine, grants, limits, budget, Arc::from("(load)"));
    // Yield at every epoch tick, so a loop gives the timeout a chance.
    let _ticking = ticker.guest_running();
    store.epoch_deadline_callback(|store| {
        sandbox::charge_host_memory(store)?;
        Ok(UpdateDeadline::Yield(1))
    });
    store.set_epoch_deadline(1);
    let path = component.path.display();
    let time_limit = limits.timeout;
    match tokio::time::timeout(time_limit, component.pre.instantiate_async(&mut store)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => {
            let error = anyhow::Error::from(error);
            match store.data().limiter.exceeded {
                Some(MemoryLimit::Instance) => Err(error.context(format!(
                    "`{path}`: cannot be instantiated within its memory limit ({} bytes; the route's max_memory or --max-memory)",
                    store.data().limiter.max()
                ))),
                Some(MemoryLimit::Host) => Err(error.context(format!(
                    "`{path}`: cannot be instantiated: the host's memory budget (--max-total-memory) is used up"
                ))),
                None => Err(error.context(format!("`{path}`: failed to instantiate"))),
            }
        }
        Err(_) => bail!(
            "`{path}`: instantiating did not finish within {time_limit:?} (a start function that never returns?)"
        ),
    }
}

/// Names of the component's imports and exports, for `wasmlet check`.
pub fn interface(engine: &Engine, component: &LoadedComponent) -> (Vec<String>, Vec<String>) {
    let ty = component.instance_pre().component().component_type();
    let imports = ty
        .imports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let exports = ty
        .exports(engine)
        .map(|(name, _)| name.to_string())
        .collect();
    (imports, exports)
}
