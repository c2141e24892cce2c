//! Building a routing table from disk and publishing it, all or nothing.
//!
//! A reload reads the manifest and every component it names, compiles what
//! is new (off the request path, on a blocking thread), validates it, and
//! only if every route loaded publishes the new table. Any failure leaves
//! the serving table untouched and is recorded for logs, metrics and
//! `/handlers`. Reloads run one at a time, triggered by the file watcher
//! (debounced), SIGHUP or `POST /reload`.
//!
//! The watcher watches directories, not files: editors and `cp` write in
//! place, tools rename over files, and Kubernetes re-points a `..data`
//! symlink in a ConfigMap volume. A file that changes while it is read is
//! refused, and the debounce waits for writes to settle. In a ConfigMap
//! volume the `..data` link is resolved once per reload and the manifest
//! and its components are read through that one folder, so a swap in
//! mid-read cannot mix two versions.
//!
//! Load-time work is bounded: a component file by --max-component-size, and
//! a reload's compile by --compile-timeout. A compile past it is abandoned
//! (it cannot be interrupted; it finishes on its thread and is dropped,
//! and the next compile waits for it), the reload fails, and the serving
//! version stays. What a reload writes under --cache-dir is pruned to
//! --cache-max-size as it goes, sparing the serving table's versions and
//! its own (see [`crate::cache_budget`]).

use crate::cache::{CacheOutcome, CompileCache};
use crate::cache_budget::{CacheBudget, Served};
use crate::canary::{self, ActionError, Canary, CanaryState, Phase};
use crate::component::{self, LoadedComponent, WasmFile};
use crate::config::LoadLimits;
use crate::engine::{PerComponent, TickerHandle, Wasmtime};
use crate::limits::{CpuShare, Limits, MemoryBudget, RequestLimits};
use crate::manifest::{Manifest, RouteSpec};
use crate::metrics::{CANARY, CacheLabel, HandlerLabels, Metrics, STABLE};
use crate::oci::cosign::CosignKey;
use crate::oci::pull::PullSettings;
use crate::oci::{OciRef, Pulled, Puller};
use crate::outbound::{OutboundGrant, OwnAddresses};
use crate::p3::{P3Parts, P3Route, Reporter};
use crate::registry::{Handler, Registry, RouteError, RoutingTable};
use crate::reuse::{IdleSlots, Instances};
use crate::router::Router;
use crate::sandbox::Grants;
use anyhow::{Context, Result, anyhow, bail};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc::UnboundedReceiver;
use wasmtime_wasi_http::handler::ProxyPre;

/// One version of a route's handler: its component, and for an `oci://`
/// reference the manifest digest it resolved to.
type Version = (Arc<LoadedComponent>, Option<String>);

/// Quiet time after the last file event before a reload starts.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// A reload starts at the latest this long after the first event of a burst.
pub const DEBOUNCE_MAX: Duration = Duration::from_secs(1);

/// What the host serves: a manifest, or one component on every path.
#[derive(Debug, Clone)]
pub enum Source {
    Manifest(PathBuf),
    Component(PathBuf),
}

impl Source {
    fn manifest(&self) -> Result<Manifest> {
        match self {
            Source::Manifest(path) => Manifest::load(&snapshot(path)),
            Source::Component(path) => Ok(Manifest::single(path.clone())),
        }
    }

    /// The directory holding the manifest (or the single component).
    fn home(&self) -> PathBuf {
        let file = match self {
            Source::Manifest(p) | Source::Component(p) => p,
        };
        match file.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// Directories to watch: the manifest's and every component's
    /// (canaries included).
    pub fn watch_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.home()];
        if let Ok(manifest) = self.manifest() {
            let components = manifest.routes.into_iter().flat_map(|route| {
                let canary = route
                    .canary
                    .filter(|c| c.oci.is_none())
                    .map(|c| c.component);
                let stable = route.oci.is_none().then_some(route.component);
                stable.into_iter().chain(canary)
            });
            for component in components {
                if let Some(dir) = component.parent() {
                    let dir = if dir.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        dir
                    };
                    dirs.push(dir.to_path_buf());
                }
            }
        }
        dirs.sort();
        dirs.dedup();
        dirs
    }
}

/// The manifest's path inside one version of a Kubernetes ConfigMap
/// volume: when its folder has a `..data` link (kubelet's AtomicWriter
/// re-points it at a new timestamped folder on each update), the link is
/// resolved once and the manifest, and so every component named relative
/// to it, is read from that folder. Otherwise `manifest` itself.
fn snapshot(manifest: &Path) -> PathBuf {
    let home = manifest.parent().unwrap_or(Path::new("."));
    let (Ok(version), Some(name)) = (
        std::fs::read_link(home.join("..data")),
        manifest.file_name(),
    ) else {
        return manifest.to_path_buf();
    };
    home.join(version).join(name)
}

/// The outcome of a successful reload.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    /// `published` or `unchanged`.
    pub outcome: &'static str,
    pub generation: u64,
    pub routes: usize,
    /// Components compiled (or loaded from the cache) by this reload.
    pub compiled: usize,
}

pub struct Reloader {
    source: Source,
    wasmtime: Wasmtime,
    /// Keeps the epoch ticking while a trial instantiation runs.
    ticker: TickerHandle,
    cache: CompileCache,
    limits: Limits,
    load_limits: LoadLimits,
    /// Trial instantiations are charged to it like requests.
    memory_budget: Option<MemoryBudget>,
    /// The host's listeners, out of reach of wildcard outbound rules.
    own_addresses: OwnAddresses,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    /// Serialises reloads: each one sees the table the previous published.
    running: tokio::sync::Mutex<()>,
    /// One compile at a time, an abandoned one included: a reload after a
    /// timed-out compile waits for it (within its own time limit), so slow
    /// compiles cannot pile up on the blocking threads.
    compiling: Arc<tokio::sync::Semaphore>,
    /// Fetches `oci://` components into `--cache-dir`; none without one.
    oci: Option<Puller>,
    /// Keeps `--cache-dir` under `--cache-max-size`; none without one.
    budget: Option<Arc<CacheBudget>>,
    /// The host-wide allowance of instances kept idle for reuse.
    idle_slots: IdleSlots,
    /// Heavy guests' share of the workers, for 0.3 routes' instances.
    cpu_share: CpuShare,
}

/// What a [`Reloader`] needs besides the engine and the registry.
pub struct ReloaderParts {
    pub source: Source,
    pub wasmtime: Wasmtime,
    pub ticker: TickerHandle,
    pub cache: CompileCache,
    /// Keeps `--cache-dir` under `--cache-max-size`; none without one.
    pub cache_budget: Option<Arc<CacheBudget>>,
    pub limits: Limits,
    pub load_limits: LoadLimits,
    pub memory_budget: Option<MemoryBudget>,
    /// The one the 0.2 path uses (`App::cpu_share`).
    pub cpu_share: CpuShare,
    pub own_addresses: OwnAddresses,
    /// Where pulled `oci://` components are kept (`--cache-dir`/oci).
    pub oci_store: Option<PathBuf>,
}

impl Reloader {
    /// A reloader compiling with `parts.wasmtime`'s engine and linker.
    pub fn new(parts: ReloaderParts, registry: Arc<Registry>, metrics: Arc<Metrics>) -> Reloader {
        let oci = parts.oci_store.map(|store| {
            Puller::new(PullSettings {
                store,
                insecure: parts.load_limits.registry.insecure_registries.clone(),
                timeout: parts.load_limits.pull_timeout,
                max_size: parts.load_limits.max_component_size,
                docker_config: crate::oci::auth::config_dir(),
            })
        });
        Reloader {
            oci,
            source: parts.source,
            wasmtime: parts.wasmtime,
            ticker: parts.ticker,
            cache: parts.cache,
            budget: parts.cache_budget,
            limits: parts.limits,
            load_limits: parts.load_limits,
            own_addresses: parts.own_addresses,
            registry,
            metrics,
            running: tokio::sync::Mutex::new(()),
            compiling: Arc::new(tokio::sync::Semaphore::new(1)),
            idle_slots: IdleSlots::for_budget(parts.memory_budget.as_ref()),
            memory_budget: parts.memory_budget,
            cpu_share: parts.cpu_share,
        }
    }

    /// Reloads from disk; on failure the serving table stays as it was.
    pub async fn reload(&self, trigger: &'static str) -> Result<ReloadReport> {
        let _running = self.running.lock().await;
        let result = match self.try_reload().await {
            Ok(report) => {
                self.registry.record_success();
                self.metrics.reload(report.outcome);
                if report.outcome == "published" {
                    tracing::info!(
                        trigger,
                        generation = report.generation,
                        routes = report.routes,
                        compiled = report.compiled,
                        "handlers published"
                    );
                } else {
                    tracing::debug!(
                        trigger,
                        generation = report.generation,
                        "handlers unchanged"
                    );
                }
                Ok(report)
            }
            Err((error, route_errors)) => {
                let message = format!("{error:#}");
                tracing::error!(trigger = %trigger, error = %message, "reload failed; the previous handlers keep serving");
                self.registry.record_failure(message, route_errors);
                self.metrics.reload("error");
                Err(error)
            }
        };
        self.prune_cache().await;
        result
    }

    async fn try_reload(
        &self,
    ) -> Result<ReloadReport, (anyhow::Error, BTreeMap<String, RouteError>)> {
        let no_routes = BTreeMap::new;
        let manifest = self.source.manifest().map_err(|e| (e, no_routes()))?;
        let current = self.registry.table();
        let generation = current.as_ref().map_or(1, |t| t.generation + 1);

        // Components already loaded, by digest: a swap back is free.
        let known: HashMap<&str, &Arc<LoadedComponent>> = current
            .iter()
            .flat_map(|t| t.router.iter())
            .flat_map(|(_, h)| {
                std::iter::once(&h.component).chain(h.canary.as_ref().map(|c| &c.handler.component))
            })
            .map(|c| (c.digest.as_str(), c))
            .collect();

        let mut handlers = Vec::with_capacity(manifest.routes.len());
        let mut errors = BTreeMap::new();
        let mut compiled = 0;
        for spec in manifest.routes {
            let label = spec.pattern.to_string();
            match self.load_versions(&spec, &known).await {
                Ok((component, canary, fresh)) => {
                    compiled += fresh;
                    let previous = current.as_ref().and_then(|t| {
                        t.router
                            .iter()
                            .find(|(p, _)| *p == spec.pattern)
                            .map(|(_, h)| h.clone())
                    });
                    handlers.push(self.handler(spec, component, canary, previous, generation));
                }
                Err(error) => {
                    errors.insert(
                        label,
                        RouteError {
                            component: spec.component.clone(),
                            error: format!("{error:#}"),
                        },
                    );
                }
            }
        }
        if !errors.is_empty() {
            let summary = errors
                .values()
                .map(|e| e.error.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            return Err((anyhow!(summary), errors));
        }

        let unchanged = current.as_ref().is_some_and(|t| {
            t.router.len() == handlers.len() && handlers.iter().all(|h| h.generation < generation)
        });
        if unchanged {
            let generation = generation - 1;
            return Ok(ReloadReport {
                outcome: "unchanged",
                generation,
                routes: handlers.len(),
                compiled,
            });
        }

        let router = Router::new(handlers.into_iter().map(|h| (h.spec.pattern.clone(), h)))
            .map_err(|e| (anyhow!(e), no_routes()))?;
        let routes = router.len();
        self.update_info_metric(&router);
        self.registry.publish(RoutingTable { generation, router });
        Ok(ReloadReport {
            outcome: "published",
            generation,
            routes,
            compiled,
        })
    }

    /// A route's component and its canary's, each loaded by [`Self::load_route`].
    /// Returns how many were compiled.
    async fn load_versions(
        &self,
        spec: &RouteSpec,
        known: &HashMap<&str, &Arc<LoadedComponent>>,
    ) -> Result<(Version, Option<Version>, usize)> {
        let (stable, fresh, resolved) = self.load_route(spec, known).await?;
        let Some(canary) = &spec.canary else {
            return Ok(((stable, resolved), None, usize::from(fresh)));
        };
        // The canary is loaded as the route's own component would be: the
        // same limits and grants, and for `oci://` the same cosign key;
        // only the stable version's tag is followed.
        let canary_spec = RouteSpec {
            component: canary.component.clone(),
            oci: canary.oci.clone(),
            follow: None,
            canary: None,
            ..spec.clone()
        };
        let (canary, canary_fresh, canary_resolved) = self
            .load_route(&canary_spec, known)
            .await
            .context("canary")?;
        Ok((
            (stable, resolved),
            Some((canary, canary_resolved)),
            usize::from(fresh) + usize::from(canary_fresh),
        ))
    }

    /// `POST /routes/{route}/promote`: publishes a table in which the
    /// route's canary is its stable version.
    pub async fn promote(&self, route: &str) -> Result<(), ActionError> {
        let _running = self.running.lock().await;
        let table = self.table_for(route)?;
        let promoted = canary::promote(&table, route)?;
        self.update_info_metric(&promoted.router);
        self.registry.publish(promoted);
        Ok(())
    }

    /// `POST /routes/{route}/abort`: the route's canary gets weight 0.
    pub async fn abort(&self, route: &str) -> Result<(), ActionError> {
        let _running = self.running.lock().await;
        let table = self.table_for(route)?;
        canary::abort(&table, route)
    }

    /// The published table an action on `route` works on.
    fn table_for(&self, route: &str) -> Result<Arc<RoutingTable>, ActionError> {
        self.registry
            .table()
            .ok_or_else(|| ActionError::NoRoute(route.into()))
    }

    /// The component for one route: reused when its digest is known,
    /// compiled and validated otherwise. Returns whether it was compiled,
    /// and for an `oci://` reference the manifest digest it resolved to.
    async fn load_route(
        &self,
        spec: &RouteSpec,
        known: &HashMap<&str, &Arc<LoadedComponent>>,
    ) -> Result<(Arc<LoadedComponent>, bool, Option<String>)> {
        if let Some(max) = spec.limits.max_memory
            && max > self.limits.max_memory
        {
            bail!(
                "route `{}`: max_memory {max} exceeds the host's --max-memory {}",
                spec.pattern,
                self.limits.max_memory
            );
        }
        let pulled = match &spec.oci {
            Some(reference) => Some(self.pull(spec, reference).await?),
            None => None,
        };
        let downloaded = pulled.as_ref().is_some_and(|p| !p.from_cache);
        let path = pulled
            .as_ref()
            .map_or_else(|| spec.component.clone(), |p| p.path.clone());
        let max_size = self.load_limits.max_component_size;
        let mut file = self
            .blocking(move || WasmFile::read(&path, max_size))
            .await??;
        let resolved = match pulled {
            Some(pulled) => Some(self.check_pulled(spec, &mut file, pulled)?),
            None => None,
        };
        if let Some(component) = known.get(file.digest.as_str()) {
            self.use_cache(&file.digest, &resolved, downloaded).await;
            return Ok(((*component).clone(), false, resolved));
        }
        let loaded = self.compile(file).await?;
        let compiled = loaded.cache == CacheOutcome::Miss;
        self.use_cache(&loaded.digest, &resolved, downloaded || compiled)
            .await;
        let label: Arc<str> = Arc::from(spec.pattern.to_string());
        component::trial_instantiate(
            &loaded,
            &self.grants(spec, label),
            &RequestLimits::resolve(&self.limits, &spec.limits),
            self.memory_budget.clone(),
            &self.ticker,
        )
        .await?;
        self.metrics
            .compile_seconds
            .get_or_create(&CacheLabel {
                cache: loaded.cache.as_str().to_string(),
            })
            .observe(loaded.compile_time.as_secs_f64());
        tracing::info!(
            component = %loaded.path.display(),
            digest = %loaded.digest,
            size_bytes = loaded.size,
            compile_ms = loaded.compile_time.as_secs_f64() * 1e3,
            cache = %loaded.cache.as_str(),
            "component loaded"
        );
        Ok((Arc::new(loaded), true, resolved))
    }

    /// Spares what this version uses in `--cache-dir` until the reload
    /// ends, and after a write to it prunes it to `--cache-max-size` right
    /// away: a reload of several new components would otherwise overshoot
    /// the cap by all of them before it ends.
    async fn use_cache(&self, digest: &str, resolved: &Option<String>, wrote: bool) {
        let Some(budget) = self.budget.clone() else {
            return;
        };
        let version = (digest.to_string(), resolved.clone());
        let serving = self.serving();
        let _ = self
            .blocking(move || {
                budget.hold(&version);
                if wrote {
                    budget.enforce(&serving);
                }
            })
            .await;
    }

    /// At the end of a reload, published or not: only the serving table is
    /// spared now, and the cache is pruned to `--cache-max-size`.
    async fn prune_cache(&self) {
        let Some(budget) = self.budget.clone() else {
            return;
        };
        let serving = self.serving();
        let _ = self
            .blocking(move || {
                budget.release();
                budget.enforce(&serving)
            })
            .await;
    }

    /// Every version the published table serves, stable and canary.
    fn serving(&self) -> Vec<Served> {
        let Some(table) = self.registry.table() else {
            return Vec::new();
        };
        table
            .router
            .iter()
            .flat_map(|(_, h)| std::iter::once(&**h).chain(h.canary.iter().map(|c| &*c.handler)))
            .map(|h| (h.component.digest.clone(), h.resolved.clone()))
            .collect()
    }

    /// The digest `reference`'s tag names now (one manifest HEAD).
    pub async fn resolve(&self, reference: &OciRef) -> Result<String> {
        let Some(puller) = &self.oci else {
            bail!("`{reference}`: `oci://` components need --cache-dir");
        };
        puller.resolve(reference).await
    }

    /// Fetches an `oci://` component into the store, and checks its
    /// signature when the route names a `cosign_key`.
    async fn pull(&self, spec: &RouteSpec, reference: &OciRef) -> Result<Pulled> {
        let Some(puller) = &self.oci else {
            bail!(
                "`{reference}`: `oci://` components need --cache-dir, where pulled layers are kept"
            );
        };
        let pulled = puller.fetch(reference).await?;
        if let Some(key) = &spec.cosign_key {
            let key = CosignKey::load(key)?;
            puller
                .check_signature(reference, &pulled.manifest_digest, &key)
                .await?;
        }
        tracing::info!(
            reference = %reference,
            digest = %pulled.manifest_digest,
            layer = %pulled.layer_digest,
            from_cache = pulled.from_cache,
            "component resolved"
        );
        Ok(pulled)
    }

    /// The file read from the store is the layer that was verified (a blob
    /// changed on disk since is dropped, and the next load pulls it again);
    /// from here on it is named by its reference. Returns the manifest
    /// digest.
    fn check_pulled(
        &self,
        spec: &RouteSpec,
        file: &mut WasmFile,
        pulled: Pulled,
    ) -> Result<String> {
        if format!("sha256:{}", file.digest) != pulled.layer_digest {
            if let Some(puller) = &self.oci {
                puller.store().remove(&pulled.layer_digest);
            }
            bail!(
                "`{}`: the stored layer {} no longer matches its digest; removed, the next load pulls it again",
                spec.component.display(),
                pulled.layer_digest
            );
        }
        file.path = spec.component.clone();
        Ok(pulled.manifest_digest)
    }

    /// Compiles `file` off the runtime. Once something is served, a
    /// compile past --compile-timeout is abandoned (at start-up there is
    /// no version to keep serving, and the first load runs inline).
    async fn compile(&self, file: WasmFile) -> Result<LoadedComponent> {
        let (wasmtime, cache) = (self.wasmtime.clone(), self.cache.clone());
        let per_component = PerComponent::for_limits(&self.limits);
        if !self.registry.is_loaded() {
            return component::compile(&wasmtime, &per_component, &cache, &file);
        }
        let timeout = self.load_limits.compile_timeout;
        let path = file.path.clone();
        let abandoned = || {
            anyhow!(
                "`{}`: compiling took longer than --compile-timeout ({}); abandoned",
                path.display(),
                humantime::format_duration(timeout)
            )
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let permit = tokio::time::timeout_at(deadline, self.compiling.clone().acquire_owned())
            .await
            .map_err(|_| abandoned())?
            .context("the compile semaphore is never closed")?;
        let compile = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            component::compile(&wasmtime, &per_component, &cache, &file)
        });
        match tokio::time::timeout_at(deadline, compile).await {
            Ok(joined) => joined.context("compile task failed")?,
            Err(_) => Err(abandoned()),
        }
    }

    /// What `spec`'s guests are granted.
    fn grants(&self, spec: &RouteSpec, label: Arc<str>) -> Grants {
        Grants {
            outbound: OutboundGrant {
                rules: spec.outbound.clone().into(),
                own: self.own_addresses.clone(),
                denied: self.metrics.outbound_denied.clone(),
            },
            route: label,
            env: spec.env.clone(),
            log_output: true,
        }
    }

    /// A handler for `spec`; keeps the previous one's identity (generation,
    /// load time) when nothing about the route changed. What was decided
    /// about a canary (rollback, abort, promotion) carries over while its
    /// digest stays.
    fn handler(
        &self,
        spec: RouteSpec,
        stable: Version,
        canary: Option<Version>,
        previous: Option<Arc<Handler>>,
        generation: u64,
    ) -> Arc<Handler> {
        let state = canary.as_ref().map(|(canary, _)| {
            previous
                .as_ref()
                .and_then(|p| {
                    p.canary
                        .as_ref()
                        .map(|c| c.state.clone())
                        .or(p.promoted.clone())
                })
                .filter(|state| state.digest == canary.digest)
                .unwrap_or_else(|| Arc::new(CanaryState::new(&canary.digest)))
        });
        let promoted = state
            .clone()
            .filter(|state| state.phase() == Phase::Promoted);
        let ((component, resolved), canary) = match (&promoted, canary) {
            (Some(_), Some(canary)) => (canary, None),
            (_, canary) => (stable, canary),
        };
        if let Some(previous) = previous
            && previous.spec == spec
            && Arc::ptr_eq(&previous.component, &component)
            && match (&previous.canary, &canary) {
                (Some(before), Some(now)) => {
                    Arc::ptr_eq(&before.handler.component, &now.0)
                        && before.handler.resolved == now.1
                }
                (None, None) => true,
                _ => false,
            }
            && previous.promoted.is_some() == promoted.is_some()
            && previous.resolved == resolved
        {
            return previous;
        }
        let label: Arc<str> = Arc::from(spec.pattern.to_string());
        let limits = RequestLimits::resolve(&self.limits, &spec.limits);
        let grants = self.grants(&spec, label.clone());
        let version = |(component, resolved): Version, name: &str| {
            let metrics = self.metrics.route(&label, name);
            let instances = self.metrics.instances(&label);
            let p3 = match &component.pre {
                ProxyPre::P3(pre) => Some(Arc::new(P3Route::new(P3Parts {
                    pre: pre.clone(),
                    grants: grants.clone(),
                    limits,
                    budget: self.memory_budget.clone(),
                    ticker: self.ticker.clone(),
                    reporter: Arc::new(Reporter {
                        label: label.clone(),
                        digest: component.digest.clone(),
                        metrics: metrics.clone(),
                    }),
                    instances: instances.clone(),
                    idle_slots: self.idle_slots.clone(),
                    cpu_share: self.cpu_share.clone(),
                    workers: self.limits.worker_count(),
                }))),
                ProxyPre::P2(_) => None,
            };
            Handler {
                instances: Arc::new(Instances::new(&limits, self.idle_slots.clone(), instances)),
                p3,
                spec: spec.clone(),
                label: label.clone(),
                component,
                limits,
                grants: grants.clone(),
                metrics,
                generation,
                resolved,
                loaded_at: SystemTime::now(),
                canary: None,
                promoted: None,
            }
        };
        let canary = match (canary, spec.canary.clone(), state) {
            (Some(canary), Some(canary_spec), Some(state)) => Some(Canary::new(
                Arc::new(version(canary, CANARY)),
                canary_spec,
                state,
                &self.metrics,
            )),
            _ => None,
        };
        Arc::new(Handler {
            canary,
            promoted,
            ..version((component, resolved), STABLE)
        })
    }

    fn update_info_metric(&self, router: &Router<Arc<Handler>>) {
        self.metrics.handler_info.clear();
        for (_, h) in router.iter() {
            let versions = std::iter::once((STABLE, &h.spec.component, &**h)).chain(
                h.canary
                    .iter()
                    .map(|c| (CANARY, &c.spec.component, &*c.handler)),
            );
            for (version, component, serving) in versions {
                self.metrics
                    .handler_info
                    .get_or_create(&HandlerLabels {
                        route: h.label.to_string(),
                        version: version.to_string(),
                        component: component.display().to_string(),
                        digest: format!("sha256:{}", serving.component.digest),
                        resolved_digest: serving.resolved.clone(),
                    })
                    .set(1);
            }
        }
    }

    /// Directories to watch: the manifest's and every component's.
    pub fn watch_dirs(&self) -> Vec<PathBuf> {
        self.source.watch_dirs()
    }

    /// Runs blocking work (file reads, compiles) on a blocking thread so
    /// the runtime keeps serving, except before the first table is
    /// published: nothing is served yet, and the hop to a blocking thread
    /// and back would put two thread wake-ups on the cold-start path.
    async fn blocking<T, F>(&self, work: F) -> Result<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        if self.registry.is_loaded() {
            tokio::task::spawn_blocking(work)
                .await
                .context("blocking load task failed")
        } else {
            Ok(work())
        }
    }
}

/// The file watcher, started before the first load so that no change
/// made after that load began is missed; [`FileWatcher::drive`] then has
/// the reloader act on what it sees.
pub struct FileWatcher {
    watcher: RecommendedWatcher,
    watched: HashSet<PathBuf>,
    events: UnboundedReceiver<()>,
}

impl FileWatcher {
    /// Watches the source's directories (the manifest's and every
    /// component's it names).
    pub fn start(source: &Source) -> Result<FileWatcher> {
        let (tx, events) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event
                    && !matches!(event.kind, EventKind::Access(_) | EventKind::Other)
                {
                    let _ = tx.send(());
                }
            })
            .context("failed to start the file watcher")?;
        let mut watched = HashSet::new();
        watch_new_dirs(&mut watcher, &mut watched, source.watch_dirs());
        Ok(FileWatcher {
            watcher,
            watched,
            events,
        })
    }

    /// Reloads after each settled burst of changes (and once right away
    /// if something changed since [`FileWatcher::start`]), until the
    /// returned handle is dropped.
    pub fn drive(self, reloader: Arc<Reloader>) -> WatchHandle {
        let FileWatcher {
            mut watcher,
            mut watched,
            events: mut rx,
        } = self;
        let task = tokio::spawn(async move {
            while rx.recv().await.is_some() {
                let burst_started = tokio::time::Instant::now();
                loop {
                    let quiet = tokio::time::sleep(DEBOUNCE);
                    let cap = tokio::time::sleep_until(burst_started + DEBOUNCE_MAX);
                    tokio::select! {
                        more = rx.recv() => if more.is_none() { return },
                        _ = quiet => break,
                        _ = cap => break,
                    }
                }
                let _ = reloader.reload("watch").await;
                watch_new_dirs(&mut watcher, &mut watched, reloader.watch_dirs());
            }
        });
        WatchHandle { _task: task }
    }
}

/// Keeps the file watcher alive; dropping it stops watching.
pub struct WatchHandle {
    _task: tokio::task::JoinHandle<()>,
}

fn watch_new_dirs(watcher: &mut impl Watcher, watched: &mut HashSet<PathBuf>, dirs: Vec<PathBuf>) {
    for dir in dirs {
        if watched.contains(&dir) {
            continue;
        }
        match watcher.watch(&dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                tracing::debug!(dir = %dir.display(), "watching");
                watched.insert(dir);
            }
            Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// kubelet's AtomicWriter: a new folder, `..data` re-pointed at it.
    fn publish(root: &Path, name: &str, component: &[u8]) {
        let data = root.join(name);
        std::fs::create_dir(&data).unwrap();
        std::fs::write(
            data.join("wasmlet.toml"),
            "[[route]]\npath = \"/...\"\ncomponent = \"handler.wasm\"\n",
        )
        .unwrap();
        std::fs::write(data.join("handler.wasm"), component).unwrap();
        std::os::unix::fs::symlink(name, root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    }

    #[test]
    fn a_configmap_swap_after_the_manifest_is_read_does_not_mix_versions() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        publish(root, "..2026_12_03_00_00_00.1", b"one");
        for name in ["wasmlet.toml", "handler.wasm"] {
            std::os::unix::fs::symlink(format!("..data/{name}"), root.join(name)).unwrap();
        }
        let source = Source::Manifest(root.join("wasmlet.toml"));
        let manifest = source.manifest().unwrap();
        // The swap lands between reading the manifest and its components.
        publish(root, "..2026_12_03_00_00_00.2", b"two");
        let component = std::fs::read(&manifest.routes[0].component).unwrap();
        assert_eq!(
            component, b"one",
            "a component of the manifest's own version"
        );
    }
}
