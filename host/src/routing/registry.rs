//! The published routing table and the per-route load status.
//!
//! A request loads the current table once and clones the `Arc` of its
//! route; a swap stores a new table and never mutates one a request
//! holds, so requests in flight finish on the version they started with.

use crate::base::digest::Digest;
use crate::config::router::{Pattern, Router};
use crate::routing::canary::{Canary, CanaryDoc, CanaryState, Client, Version};
use crate::routing::handler::{Handler, rfc3339};
use arc_swap::ArcSwapOption;
use http::HeaderMap;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// One route of the table: its stable version, and the canary that takes
/// a share of its requests. The route owns its canary; the canary runs its
/// own [`Handler`], and neither handler knows of the other.
pub struct Route {
    pub stable: Arc<Handler>,
    /// A second version taking a share of the route's requests.
    pub canary: Option<Canary>,
    /// The canary this route's component was promoted from, kept so that
    /// reloads of the same manifest keep the promotion.
    pub promoted: Option<Arc<CanaryState>>,
}

impl Route {
    /// The version that serves a request with `headers`: the handler to
    /// run and, on a route with a canary, which one it is.
    pub fn choose(&self, headers: &HeaderMap) -> (&Arc<Handler>, Option<Version>) {
        match &self.canary {
            None => (&self.stable, None),
            Some(canary) => match canary.choose(headers) {
                Version::Canary => (&canary.handler, Some(Version::Canary)),
                Version::Stable => (&self.stable, Some(Version::Stable)),
            },
        }
    }

    /// The client of a request with `headers` from `peer`, as the canary's
    /// share cap counts it (no keys on a route without a canary).
    pub fn client(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> Client {
        match &self.canary {
            Some(canary) => Client::of(canary, headers, peer),
            None => Client::default(),
        }
    }
}

/// An immutable set of routes; replaced whole on every swap.
pub struct RoutingTable {
    pub generation: u64,
    pub router: Router<Arc<Route>>,
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

    /// The route for `path` in the current table, with the pattern it
    /// matched (a request's Spin headers are made from it).
    pub fn route(&self, path: &str) -> Option<(Pattern, Arc<Route>)> {
        let table = self.table.load();
        let (pattern, route) = table.as_ref()?.router.find_match(path)?;
        Some((pattern.clone(), route.clone()))
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
            for (_, route) in table.router.iter() {
                let handler = &route.stable;
                let error = status.route_errors.get(&*handler.label);
                routes.push(HandlerDoc {
                    route: handler.label.to_string(),
                    component: handler.spec.component.display().to_string(),
                    digest: Some(handler.component.digest),
                    resolved_digest: handler.resolved,
                    generation: Some(handler.generation),
                    loaded_at: Some(rfc3339(handler.loaded_at)),
                    last_error: error.map(|e| e.error.clone()),
                    canary: route.canary.as_ref().map(Canary::describe),
                    promoted_from_canary: route.promoted.is_some(),
                    key_value_stores: handler.spec.key_value_stores.clone(),
                    config: handler
                        .spec
                        .config
                        .as_ref()
                        .map(|vars| vars.iter().map(|v| v.name.clone()).collect()),
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
                    key_value_stores: Vec::new(),
                    config: None,
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
    /// The key-value stores the route may open (`key_value_stores`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub key_value_stores: Vec<String>,
    /// The names of the route's wasi:config variables, never their values
    /// (some come from secrets); absent when wasi:config is not granted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<Vec<String>>,
}
