//! Building a routing table from disk and publishing it, all or nothing.
//!
//! A reload reads the manifest and every component it names, compiles what
//! is new (off the request path, on a blocking thread), validates it, and
//! only if every route loaded publishes the new table. Any failure leaves
//! the serving table untouched and is recorded for logs, metrics and
//! `/handlers`. Reloads run one at a time, triggered by the file watcher
//! (debounced, [`crate::control::watch`]), SIGHUP or `POST /reload`.
//!
//! The watcher watches directories, not files: editors and `cp` write in
//! place, tools rename over files, and Kubernetes re-points a `..data`
//! symlink in a ConfigMap volume. A file that changes while it is read is
//! refused, and the debounce waits for writes to settle. In a ConfigMap
//! volume the `..data` link is resolved once per reload and the manifest
//! and its components are read through that one folder, so a swap in
//! mid-read cannot mix two versions ([`crate::control::source`]).
//!
//! Load-time work is bounded: a component file by --max-component-size, and
//! a reload's compile by --compile-timeout. A compile past it is abandoned
//! (it cannot be interrupted; it finishes on its thread and is dropped,
//! and the next compile waits for it), the reload fails, and the serving
//! version stays. What a reload writes under --cache-dir is pruned to
//! --cache-max-size as it goes, sparing the serving table's versions and
//! its own (see [`crate::control::cache_budget`]).
//!
//! A reload's `oci://` pulls run side by side (at most
//! [`MAX_CONCURRENT_PULLS`]), before anything is compiled, so a registry
//! that never answers costs one pull's time, not one per route; the whole
//! reload, the wait for the one before it included, is bounded by
//! --reload-timeout. Only the publish step takes the short `publishing`
//! lock, and builds the new table against the table serving at that
//! moment: promote and abort take the same lock, never the reload's, so
//! they answer at once whatever a pull is doing, and a reload that
//! publishes after them keeps what they decided.

use crate::base::digest::Digest;
use crate::config::cli::LoadLimits;
use crate::config::keyvalue::{self, StoreSpec};
use crate::config::limits::{Limits, RequestLimits};
use crate::config::manifest::RouteSpec;
use crate::config::router::Router;
use crate::control::actions::{self, ActionError};
use crate::control::cache_budget::{CacheBudget, Served};
use crate::control::source::Source;
use crate::kv::stores::Stores;
use crate::observe::metrics::{CANARY, CacheLabel, HandlerLabels, Metrics, STABLE};
use crate::oci::cosign::CosignKey;
use crate::oci::pull::{PullSettings, Trust};
use crate::oci::{OciRef, Pulled, Puller};
use crate::routing::canary::{Canary, CanaryState, Phase};
use crate::routing::handler::{Handler, Runner};
use crate::routing::registry::{Registry, Route, RouteError, RoutingTable};
use crate::run::admission::CpuShare;
use crate::run::fault::Reporter;
use crate::run::p2::P2Route;
use crate::run::p3::{P3Parts, P3Route};
use crate::run::reuse::{IdleSlots, Instances};
use crate::wasm::cache::{CacheOutcome, CompileCache};
use crate::wasm::component::{self, LoadedComponent, WasmFile};
use crate::wasm::engine::{PerComponent, TickerHandle, Wasmtime};
use crate::wasm::keyvalue::KvGrant;
use crate::wasm::outbound::{OutboundGrant, OwnAddresses};
use crate::wasm::sandbox::{ConfigGrant, Grants, MemoryBudget};
use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use wasmtime_wasi_http::handler::ProxyPre;

/// One version of a route as loaded: its component, and for an `oci://`
/// reference the manifest digest it resolved to.
type LoadedVersion = (Arc<LoadedComponent>, Option<Digest>);

/// What a route's stable version and its canary pulled: `None` for a
/// version from a file.
type RoutePulls = (Option<Result<Pulled>>, Option<Result<Pulled>>);

/// `oci://` pulls one reload runs at once (a route's and its canary's
/// count as two); the others wait for a slot.
pub const MAX_CONCURRENT_PULLS: usize = 8;

/// What a successful reload did to the serving table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A new table is serving.
    Published,
    /// Nothing changed: the serving table stays, its generation too.
    Unchanged,
}

impl ReloadOutcome {
    /// The one spelling: the `outcome` label of `wasmlet_reloads_total`
    /// and the `outcome` of `POST /reload`'s JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadOutcome::Published => "published",
            ReloadOutcome::Unchanged => "unchanged",
        }
    }
}

impl Serialize for ReloadOutcome {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// The outcome of a successful reload.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    pub outcome: ReloadOutcome,
    pub generation: u64,
    pub routes: usize,
    /// Components this reload compiled (or loaded from the compile cache)
    /// that the table serving after it uses: 0 when `unchanged`, so the
    /// counts never contradict the outcome (a reload after a promotion
    /// loads the manifest's old stable version again, only to leave it
    /// out).
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
    /// Serialises reloads: one loads at a time.
    running: tokio::sync::Mutex<()>,
    /// Held only to build and publish a table (a reload's last step,
    /// promote): never across a pull, a compile or any other wait.
    publishing: std::sync::Mutex<()>,
    /// Slots for a reload's `oci://` pulls ([`MAX_CONCURRENT_PULLS`]).
    pulls: tokio::sync::Semaphore,
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
    /// The key-value stores opened so far, kept across reloads.
    kv_stores: Stores,
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
            publishing: std::sync::Mutex::new(()),
            pulls: tokio::sync::Semaphore::new(MAX_CONCURRENT_PULLS),
            compiling: Arc::new(tokio::sync::Semaphore::new(1)),
            idle_slots: IdleSlots::for_budget(parts.memory_budget.as_ref()),
            kv_stores: Stores::default(),
            memory_budget: parts.memory_budget,
            cpu_share: parts.cpu_share,
        }
    }

    /// Reloads from disk; on failure the serving table stays as it was.
    /// Fails past --reload-timeout, counted from the call.
    pub async fn reload(&self, trigger: &'static str) -> Result<ReloadReport> {
        let deadline = tokio::time::Instant::now() + self.load_limits.reload_timeout;
        let Ok(_running) = tokio::time::timeout_at(deadline, self.running.lock()).await else {
            let error = self.past_deadline("waiting for the reload before it");
            let message = format!("{error:#}");
            self.log_failure(trigger, &message);
            self.registry.record_failure(message, BTreeMap::new());
            self.metrics.reload("error");
            return Err(error);
        };
        let result = match self.try_reload(deadline).await {
            Ok(report) => {
                self.registry.record_success();
                self.metrics.reload(report.outcome.as_str());
                if report.outcome == ReloadOutcome::Published {
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
                self.log_failure(trigger, &message);
                self.registry.record_failure(message, route_errors);
                self.metrics.reload("error");
                Err(error)
            }
        };
        self.prune_cache().await;
        result
    }

    /// Logs a failed reload. Only once something serves does a failure
    /// leave "the previous handlers" serving; before that (the start-up
    /// load) the caller reports the error, as the one `error:` line the
    /// process exits with.
    fn log_failure(&self, trigger: &str, message: &str) {
        if self.registry.is_loaded() {
            tracing::error!(trigger = %trigger, error = %message, "reload failed; the previous handlers keep serving");
        } else {
            tracing::debug!(trigger = %trigger, error = %message, "load failed; nothing is served yet");
        }
    }

    /// The error of a reload that ran out of --reload-timeout while `doing`.
    fn past_deadline(&self, doing: &str) -> anyhow::Error {
        anyhow!(
            "the reload ran past --reload-timeout ({}) {doing}",
            humantime::format_duration(self.load_limits.reload_timeout)
        )
    }

    async fn try_reload(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<ReloadReport, (anyhow::Error, BTreeMap<String, RouteError>)> {
        let no_routes = BTreeMap::new;
        let manifest = self.source.manifest().map_err(|e| (e, no_routes()))?;
        let current = self.registry.table();

        // Components already loaded, by digest: a swap back is free.
        let known: HashMap<Digest, &Arc<LoadedComponent>> = current
            .iter()
            .flat_map(|t| t.router.iter())
            .flat_map(|(_, r)| {
                std::iter::once(&r.stable.component)
                    .chain(r.canary.as_ref().map(|c| &c.handler.component))
            })
            .map(|c| (c.digest, c))
            .collect();

        // Every route's pulls first, side by side; then each route is
        // read, compiled and validated in turn, as before.
        let pulls = futures_util::future::join_all(
            manifest
                .routes
                .iter()
                .map(|spec| self.pull_versions(spec, deadline)),
        )
        .await;
        let mut loaded = Vec::with_capacity(manifest.routes.len());
        let mut errors = BTreeMap::new();
        let mut compiled = HashSet::new();
        let stores = manifest.key_value_stores;
        for (spec, pulls) in manifest.routes.into_iter().zip(pulls) {
            let label = spec.pattern.to_string();
            if let Some(error) = keyvalue::data_dir_missing(
                &label,
                &spec.key_value_stores,
                &stores,
                self.load_limits.data_dir.as_deref(),
            ) {
                let component = spec.component.clone();
                errors.insert(label, RouteError { component, error });
                continue;
            }
            if let Err(error) = self.open_stores(&label, &spec.key_value_stores, &stores) {
                let component = spec.component.clone();
                errors.insert(label, RouteError { component, error });
                continue;
            }
            let load = tokio::time::timeout_at(deadline, self.load_versions(&spec, pulls, &known));
            match load
                .await
                .unwrap_or_else(|_| Err(self.past_deadline("loading this route")))
            {
                Ok((component, canary, fresh)) => {
                    compiled.extend(fresh);
                    loaded.push((spec, component, canary));
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
        self.publish(loaded, compiled)
            .map_err(|e| (anyhow!(e), no_routes()))
    }

    /// Builds the table of `loaded` routes against the table serving now
    /// (which may have changed since the reload began: a promotion, an
    /// abort) and publishes it, under the short `publishing` lock.
    fn publish(
        &self,
        loaded: Vec<(RouteSpec, LoadedVersion, Option<LoadedVersion>)>,
        fresh: HashSet<Digest>,
    ) -> Result<ReloadReport, String> {
        let _publishing = self
            .publishing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.registry.table();
        let generation = current.as_ref().map_or(1, |t| t.generation + 1);
        let routes: Vec<Arc<Route>> = loaded
            .into_iter()
            .map(|(spec, component, canary)| {
                let previous = current.as_ref().and_then(|t| {
                    t.router
                        .iter()
                        .find(|(p, _)| *p == spec.pattern)
                        .map(|(_, r)| r.clone())
                });
                self.route(spec, component, canary, previous, generation)
            })
            .collect();
        let unchanged = current.as_ref().is_some_and(|t| {
            t.router.len() == routes.len()
                && routes.iter().all(|r| r.stable.generation < generation)
        });
        if unchanged {
            let generation = generation - 1;
            return Ok(ReloadReport {
                outcome: ReloadOutcome::Unchanged,
                generation,
                routes: routes.len(),
                compiled: 0,
            });
        }
        let compiled = routes
            .iter()
            .flat_map(|r| {
                std::iter::once(r.stable.component.digest)
                    .chain(r.canary.iter().map(|c| c.handler.component.digest))
            })
            .filter(|digest| fresh.contains(digest))
            .collect::<HashSet<_>>()
            .len();

        let router = Router::new(
            routes
                .into_iter()
                .map(|r| (r.stable.spec.pattern.clone(), r)),
        )?;
        let routes = router.len();
        self.update_info_metric(&router);
        self.registry.publish(RoutingTable { generation, router });
        Ok(ReloadReport {
            outcome: ReloadOutcome::Published,
            generation,
            routes,
            compiled,
        })
    }

    /// The canary of `spec` as a route of its own: it is loaded as the
    /// route's own component would be, with the same limits and grants,
    /// and for `oci://` the same cosign key; only the stable version's tag
    /// is followed.
    fn canary_spec(spec: &RouteSpec) -> Option<RouteSpec> {
        let canary = spec.canary.as_ref()?;
        Some(RouteSpec {
            component: canary.component.clone(),
            oci: canary.oci.clone(),
            follow: None,
            canary: None,
            ..spec.clone()
        })
    }

    /// The `oci://` pulls of a route and of its canary, side by side,
    /// each within `deadline`: `None` for a version from a file.
    async fn pull_versions(&self, spec: &RouteSpec, deadline: tokio::time::Instant) -> RoutePulls {
        let canary = Self::canary_spec(spec);
        futures_util::future::join(self.pull_by(spec, deadline), async {
            match &canary {
                Some(canary) => self.pull_by(canary, deadline).await,
                None => None,
            }
        })
        .await
    }

    /// [`Self::pull`] within `deadline`, for a version from a registry.
    async fn pull_by(
        &self,
        spec: &RouteSpec,
        deadline: tokio::time::Instant,
    ) -> Option<Result<Pulled>> {
        let reference = spec.oci.as_ref()?;
        let pulled = tokio::time::timeout_at(deadline, self.pull(spec, reference)).await;
        Some(pulled.unwrap_or_else(|_| Err(self.past_deadline(&format!("pulling `{reference}`")))))
    }

    /// A route's component and its canary's, each loaded by [`Self::load_route`]
    /// from what [`Self::pull_versions`] pulled. Returns the digests of those
    /// compiled (not already loaded).
    async fn load_versions(
        &self,
        spec: &RouteSpec,
        (pulled, canary_pulled): RoutePulls,
        known: &HashMap<Digest, &Arc<LoadedComponent>>,
    ) -> Result<(LoadedVersion, Option<LoadedVersion>, Vec<Digest>)> {
        let (stable, fresh, resolved) = self.load_route(spec, pulled, known).await?;
        let mut compiled: Vec<Digest> = fresh.then_some(stable.digest).into_iter().collect();
        let Some(canary_spec) = Self::canary_spec(spec) else {
            return Ok(((stable, resolved), None, compiled));
        };
        let (canary, canary_fresh, canary_resolved) = self
            .load_route(&canary_spec, canary_pulled, known)
            .await
            .context("canary")?;
        compiled.extend(canary_fresh.then_some(canary.digest));
        Ok((
            (stable, resolved),
            Some((canary, canary_resolved)),
            compiled,
        ))
    }

    /// `POST /routes/{route}/promote`: publishes a table in which the
    /// route's canary is its stable version. Takes only the `publishing`
    /// lock, so it never waits for a reload's pulls or compiles.
    pub fn promote(&self, route: &str) -> Result<(), ActionError> {
        let _publishing = self
            .publishing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let table = self.table_for(route)?;
        let promoted = actions::promote(&table, route)?;
        self.update_info_metric(&promoted.router);
        self.registry.publish(promoted);
        Ok(())
    }

    /// `POST /routes/{route}/abort`: the route's canary gets weight 0. The
    /// decision is its digest's, carried into every table built after it
    /// (a reload's included) while that digest stays.
    pub fn abort(&self, route: &str) -> Result<(), ActionError> {
        let _publishing = self
            .publishing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let table = self.table_for(route)?;
        actions::abort(&table, route)
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
        pulled: Option<Result<Pulled>>,
        known: &HashMap<Digest, &Arc<LoadedComponent>>,
    ) -> Result<(Arc<LoadedComponent>, bool, Option<Digest>)> {
        if let Some(max) = spec.limits.max_memory
            && max > self.limits.max_memory
        {
            bail!(
                "route `{}`: max_memory {max} exceeds the host's --max-memory {}",
                spec.pattern,
                self.limits.max_memory
            );
        }
        let pulled = pulled.transpose()?;
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
        let label: Arc<str> = Arc::from(spec.pattern.to_string());
        let grants = self.grants(spec, label);
        if let Some(component) = known.get(&file.digest) {
            grants.check_imports(component.import_names().iter().map(String::as_str))?;
            self.use_cache(file.digest, resolved, downloaded).await;
            return Ok(((*component).clone(), false, resolved));
        }
        let loaded = self.compile(file).await?;
        let compiled = loaded.cache == CacheOutcome::Miss;
        self.use_cache(loaded.digest, resolved, downloaded || compiled)
            .await;
        grants.check_imports(loaded.import_names().iter().map(String::as_str))?;
        component::trial_instantiate(
            &loaded,
            &grants,
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
    async fn use_cache(&self, digest: Digest, resolved: Option<Digest>, wrote: bool) {
        let Some(budget) = self.budget.clone() else {
            return;
        };
        let version = (digest, resolved);
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
            .flat_map(|(_, r)| {
                std::iter::once(&*r.stable).chain(r.canary.iter().map(|c| &*c.handler))
            })
            .map(|h| (h.component.digest, h.resolved))
            .collect()
    }

    /// The digest `reference`'s tag names now (one manifest HEAD).
    pub async fn resolve(&self, reference: &OciRef) -> Result<Digest> {
        let Some(puller) = &self.oci else {
            bail!("`{reference}`: `oci://` components need --cache-dir");
        };
        puller.resolve(reference).await
    }

    /// Fetches an `oci://` component into the store, and checks its
    /// signature when the route names a `cosign_key`; waits for one of
    /// the [`MAX_CONCURRENT_PULLS`] slots first.
    async fn pull(&self, spec: &RouteSpec, reference: &OciRef) -> Result<Pulled> {
        let Some(puller) = &self.oci else {
            bail!(
                "`{reference}`: `oci://` components need --cache-dir, where pulled layers are kept"
            );
        };
        let key = spec
            .cosign_key
            .as_deref()
            .map(CosignKey::load)
            .transpose()?;
        let serving = self.serving_digest(spec, reference);
        let trust = key.as_ref().map(|key| Trust {
            key,
            serving: serving.as_ref(),
        });
        let _slot = self
            .pulls
            .acquire()
            .await
            .context("the pull semaphore is never closed")?;
        let pulled = puller.fetch(reference, trust.as_ref()).await?;
        tracing::info!(
            reference = %reference,
            resolved_digest = %pulled.manifest_digest,
            digest = %pulled.layer_digest,
            from_cache = pulled.from_cache,
            "component resolved"
        );
        Ok(pulled)
    }

    /// The manifest digest `reference` resolved to for the route's stable
    /// version now serving, if it serves from that same reference.
    fn serving_digest(&self, spec: &RouteSpec, reference: &OciRef) -> Option<Digest> {
        let table = self.registry.table()?;
        let (_, route) = table.router.iter().find(|(p, _)| *p == spec.pattern)?;
        let handler = &route.stable;
        let serving = handler.spec.oci.as_ref()?;
        if serving.to_string() != reference.to_string() {
            return None;
        }
        handler.resolved
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
    ) -> Result<Digest> {
        if file.digest != pulled.layer_digest {
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
            env: spec.env.clone(),
            config: spec.config.as_ref().map(|vars| {
                ConfigGrant(Arc::new(
                    vars.iter()
                        .map(|v| (v.name.as_str(), v.value.expose()))
                        .collect(),
                ))
            }),
            log_output: true,
            keyvalue: self.kv_grant(spec, &label),
            route: label,
        }
    }

    /// Opens the stores `granted` to `route` (or finds them open).
    fn open_stores(
        &self,
        route: &str,
        granted: &[String],
        stores: &BTreeMap<String, StoreSpec>,
    ) -> Result<(), String> {
        for name in granted {
            let Some(spec) = stores.get(name) else {
                return Err(format!(
                    "route {route}: key-value store `{name}` is not declared"
                ));
            };
            self.kv_stores
                .open(name, spec, self.load_limits.data_dir.as_deref())
                .map_err(|e| format!("route {route}: {e:#}"))?;
        }
        Ok(())
    }

    /// The stores `spec`'s guests may open; none without `key_value_stores`.
    fn kv_grant(&self, spec: &RouteSpec, label: &Arc<str>) -> Option<Arc<KvGrant>> {
        if spec.key_value_stores.is_empty() {
            return None;
        }
        let stores = spec
            .key_value_stores
            .iter()
            .filter_map(|name| Some((name.clone(), self.kv_stores.get(name)?)))
            .collect();
        Some(Arc::new(KvGrant {
            route: label.clone(),
            stores,
            operations: self.metrics.kv_operations.clone(),
            durations: self.metrics.kv_durations.clone(),
        }))
    }

    /// The route of `spec`; keeps the previous one's identity (generation,
    /// load time) when nothing about the route changed. What was decided
    /// about a canary (rollback, abort, promotion) carries over while its
    /// digest stays.
    fn route(
        &self,
        spec: RouteSpec,
        stable: LoadedVersion,
        canary: Option<LoadedVersion>,
        previous: Option<Arc<Route>>,
        generation: u64,
    ) -> Arc<Route> {
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
                .unwrap_or_else(|| Arc::new(CanaryState::new(canary.digest)))
        });
        let promoted = state
            .clone()
            .filter(|state| state.phase() == Phase::Promoted);
        let ((component, resolved), canary) = match (&promoted, canary) {
            (Some(_), Some(canary)) => (canary, None),
            (_, canary) => (stable, canary),
        };
        if let Some(previous) = previous
            && previous.stable.spec == spec
            && Arc::ptr_eq(&previous.stable.component, &component)
            && match (&previous.canary, &canary) {
                (Some(before), Some(now)) => {
                    Arc::ptr_eq(&before.handler.component, &now.0)
                        && before.handler.resolved == now.1
                }
                (None, None) => true,
                _ => false,
            }
            && previous.promoted.is_some() == promoted.is_some()
            && previous.stable.resolved == resolved
        {
            return previous;
        }
        let label: Arc<str> = Arc::from(spec.pattern.to_string());
        let limits = RequestLimits::resolve(&self.limits, &spec.limits);
        let grants = self.grants(&spec, label.clone());
        let version = |(component, resolved): LoadedVersion, name: &str| {
            let metrics = self.metrics.route(&label, name);
            let reporter = Reporter {
                label: label.clone(),
                digest: component.digest,
                metrics: metrics.clone(),
            };
            let instances = self.metrics.instances(&label);
            // Only the runner the component's wasi:http version needs.
            let runner = match &component.pre {
                ProxyPre::P2(pre) => Runner::P2(Arc::new(P2Route {
                    pre: pre.clone(),
                    grants: grants.clone(),
                    limits,
                    instances: Arc::new(Instances::new(
                        &limits,
                        self.idle_slots.clone(),
                        instances,
                    )),
                    reporter,
                })),
                ProxyPre::P3(pre) => Runner::P3(Arc::new(P3Route::new(P3Parts {
                    pre: pre.clone(),
                    grants: grants.clone(),
                    limits,
                    budget: self.memory_budget.clone(),
                    ticker: self.ticker.clone(),
                    reporter: Arc::new(reporter),
                    instances,
                    idle_slots: self.idle_slots.clone(),
                    cpu_share: self.cpu_share.clone(),
                    workers: self.limits.worker_count(),
                }))),
            };
            Arc::new(Handler::new(
                spec.clone(),
                label.clone(),
                limits,
                metrics,
                (component, resolved),
                runner,
                generation,
            ))
        };
        let canary = match (canary, spec.canary.clone(), state) {
            (Some(canary), Some(canary_spec), Some(state)) => Some(Canary::new(
                version(canary, CANARY),
                canary_spec,
                state,
                &self.metrics,
            )),
            _ => None,
        };
        Arc::new(Route {
            stable: version((component, resolved), STABLE),
            canary,
            promoted,
        })
    }

    fn update_info_metric(&self, router: &Router<Arc<Route>>) {
        self.metrics.handler_info.clear();
        for (_, r) in router.iter() {
            let h = &r.stable;
            let versions = std::iter::once((STABLE, &h.spec.component, &**h)).chain(
                r.canary
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
                        digest: serving.component.digest.to_string(),
                        resolved_digest: serving.resolved.map(|d| d.to_string()),
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
