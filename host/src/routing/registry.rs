//! The published routing table and the per-route load status.
//!
//! A request loads the current table once and clones the `Arc` of its
//! handler; a swap stores a new table and never mutates one a request
//! holds, so requests in flight finish on the version they started with.

use crate::base::digest::Digest;
use crate::config::limits::RequestLimits;
use crate::config::manifest::RouteSpec;
use crate::config::router::Router;
use crate::observe::metrics::RouteMetrics;
use crate::routing::canary::{Canary, CanaryDoc, CanaryState};
use crate::run::p3::P3Route;
use crate::run::reuse::Instances;
use crate::wasm::component::LoadedComponent;
use crate::wasm::sandbox::Grants;
use arc_swap::ArcSwapOption;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// One route, ready to serve.
pub struct Handler {
    pub spec: RouteSpec,
    /// The route's pattern as text, for logs and metric labels.
    pub label: Arc<str>,
    pub component: Arc<LoadedComponent>,
    pub limits: RequestLimits,
    pub grants: Grants,
    pub metrics: RouteMetrics,
    /// Instances kept for reuse (none unless the route opts in).
    pub instances: Arc<Instances>,
    /// The instances of a wasi:http 0.3 handler (see [`crate::run::p3`]).
    pub p3: Option<Arc<P3Route>>,
    /// The table generation in which this route got its current component.
    pub generation: u64,
    /// For an `oci://` component: the manifest digest it resolved to.
    pub resolved: Option<Digest>,
    pub loaded_at: SystemTime,
    /// A second version taking a share of the route's requests.
    pub canary: Option<Canary>,
    /// The canary this route's component was promoted from, kept so that
    /// reloads of the same manifest keep the promotion.
    pub promoted: Option<Arc<CanaryState>>,
}

/// An immutable set of routes; replaced whole on every swap.
pub struct RoutingTable {
    pub generation: u64,
    pub router: Router<Arc<Handler>>,
}

/// A route whose latest load failed (the previous version, if any, serves).
#[derive(Debug, Clone, Serialize)]
pub struct RouteError {
    pub component: PathBuf,
    pub error: String,
}

#[derive(Debug, Default)]
struct Status {
    /// The error of the latest reload, if it failed.
    last_error: Option<String>,
    /// Per-route errors of the latest reload, keyed by route pattern.
    route_errors: BTreeMap<String, RouteError>,
}

#[derive(Default)]
pub struct Registry {
    table: ArcSwapOption<RoutingTable>,
    status: Mutex<Status>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// The table serving now, if any has been published.
    pub fn table(&self) -> Option<Arc<RoutingTable>> {
        self.table.load_full()
    }

    /// The handler for `path` in the current table.
    pub fn route(&self, path: &str) -> Option<Arc<Handler>> {
        self.table.load().as_ref()?.router.find(path).cloned()
    }

    /// Whether a table has been published (every route of it loaded).
    pub fn is_loaded(&self) -> bool {
        self.table.load().is_some()
    }

    pub fn publish(&self, table: RoutingTable) {
        self.table.store(Some(Arc::new(table)));
    }

    pub fn record_success(&self) {
        let mut status = self.status.lock().unwrap();
        status.last_error = None;
        status.route_errors.clear();
    }

    pub fn record_failure(&self, error: String, route_errors: BTreeMap<String, RouteError>) {
        let mut status = self.status.lock().unwrap();
        status.last_error = Some(error);
        status.route_errors = route_errors;
    }

    /// The `/handlers` document: every serving route plus every route
    /// whose latest load failed.
    pub fn describe(&self) -> HandlersDoc {
        let table = self.table();
        let status = self.status.lock().unwrap();
        let mut routes: Vec<HandlerDoc> = Vec::new();
        if let Some(table) = &table {
            for (_, handler) in table.router.iter() {
                let error = status.route_errors.get(&*handler.label);
                routes.push(HandlerDoc {
                    route: handler.label.to_string(),
                    component: handler.spec.component.display().to_string(),
                    digest: Some(handler.component.digest),
                    resolved_digest: handler.resolved,
                    generation: Some(handler.generation),
                    loaded_at: Some(rfc3339(handler.loaded_at)),
                    last_error: error.map(|e| e.error.clone()),
                    canary: handler.canary.as_ref().map(Canary::describe),
                    promoted_from_canary: handler.promoted.is_some(),
                });
            }
        }
        for (route, error) in &status.route_errors {
            if !routes.iter().any(|r| &r.route == route) {
                routes.push(HandlerDoc {
                    route: route.clone(),
                    component: error.component.display().to_string(),
                    digest: None,
                    resolved_digest: None,
                    generation: None,
                    loaded_at: None,
                    last_error: Some(error.error.clone()),
                    canary: None,
                    promoted_from_canary: false,
                });
            }
        }
        HandlersDoc {
            generation: table.as_ref().map(|t| t.generation),
            ready: table.is_some(),
            last_error: status.last_error.clone(),
            routes,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct HandlersDoc {
    /// Generation of the table serving now.
    pub generation: Option<u64>,
    pub ready: bool,
    /// Error of the latest reload, if it failed (the previous table serves).
    pub last_error: Option<String>,
    pub routes: Vec<HandlerDoc>,
}

#[derive(Debug, Serialize)]
pub struct HandlerDoc {
    pub route: String,
    /// A file's path, or an `oci://` reference as the manifest gives it.
    pub component: String,
    /// sha256 of the component file (for `oci://`, the layer's digest).
    pub digest: Option<Digest>,
    /// For `oci://`: the manifest digest the reference resolved to.
    pub resolved_digest: Option<Digest>,
    pub generation: Option<u64>,
    pub loaded_at: Option<String>,
    pub last_error: Option<String>,
    /// The route's canary, if it has one.
    pub canary: Option<CanaryDoc>,
    /// Whether `component` is a canary promoted by `POST /routes/{route}/promote`.
    pub promoted_from_canary: bool,
}

/// `2026-11-25T21:32:49.123Z`
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}
