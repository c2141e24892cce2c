//! The admin's edits of a route's canary: `POST /routes/{route}/abort` and
//! `POST /routes/{route}/promote`. Both work on the published table; the
//! [`crate::control::reload::Reloader`] runs them under its publishing lock.

use crate::config::router::Router;
use crate::routing::canary::{Canary, Phase};
use crate::routing::handler::{Handler, Runner};
use crate::routing::registry::{Route, RoutingTable};
use std::sync::Arc;

/// Why an admin action on a route's canary cannot be done.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("no route `{0}`")]
    NoRoute(String),
    #[error("route `{0}` has no canary")]
    NoCanary(String),
    #[error("the canary of route `{0}` is {1}")]
    Finished(String, Phase),
}

/// `POST /routes/{route}/abort`: the canary's weight becomes 0 until its
/// digest changes.
pub fn abort(table: &RoutingTable, route: &str) -> Result<(), ActionError> {
    let canary = canary_of(table, route)?;
    if !canary.state.leave(
        Phase::Aborted,
        format!("aborted by POST /routes{route}/abort"),
    ) {
        let phase = canary.state.phase();
        return Err(ActionError::Finished(route.into(), phase));
    }
    tracing::warn!(route, canary_digest = %canary.state.digest, "canary aborted: its weight is now 0");
    Ok(())
}

/// `POST /routes/{route}/promote`: a table in which the canary is the
/// route's stable version and there is no canary.
pub fn promote(table: &RoutingTable, route: &str) -> Result<RoutingTable, ActionError> {
    let stable = find(table, route)?;
    let canary = canary_of(table, route)?;
    canary.state.leave(
        Phase::Promoted,
        format!("promoted by POST /routes{route}/promote"),
    );
    let generation = table.generation + 1;
    let promoted = Arc::new(Route {
        stable: Arc::new(promoted_handler(&stable.stable, canary, generation)),
        canary: None,
        promoted: Some(canary.state.clone()),
    });
    tracing::info!(route, digest = %canary.state.digest, generation, "canary promoted to stable");
    let router = Router::new(table.router.iter().map(|(pattern, h)| {
        let h = if Arc::ptr_eq(h, stable) {
            promoted.clone()
        } else {
            h.clone()
        };
        (pattern.clone(), h)
    }))
    .expect("the patterns of a published table are distinct");
    Ok(RoutingTable { generation, router })
}

/// `stable`'s route served by its canary's version: the canary's
/// component and runner, with the route's series.
fn promoted_handler(stable: &Handler, canary: &Canary, generation: u64) -> Handler {
    let runner = match &canary.handler.runner {
        // Instances kept for reuse are the canary's component's: they go
        // on, their faults now counted as the stable version's.
        Runner::P2(route) => Runner::P2(Arc::new(route.counting_on(stable.metrics.clone()))),
        Runner::P3(route) => Runner::P3(route.clone()),
    };
    Handler::new(
        stable.spec.clone(),
        stable.label.clone(),
        stable.limits,
        stable.metrics.clone(),
        (canary.handler.component.clone(), canary.handler.resolved),
        runner,
        generation,
    )
}

fn find<'a>(table: &'a RoutingTable, route: &str) -> Result<&'a Arc<Route>, ActionError> {
    table
        .router
        .iter()
        .find(|(_, r)| &*r.stable.label == route)
        .map(|(_, r)| r)
        .ok_or_else(|| ActionError::NoRoute(route.into()))
}

fn canary_of<'a>(table: &'a RoutingTable, route: &str) -> Result<&'a Canary, ActionError> {
    let found = find(table, route)?;
    found.canary.as_ref().ok_or_else(|| match found.promoted {
        Some(_) => ActionError::Finished(route.into(), Phase::Promoted),
        None => ActionError::NoCanary(route.into()),
    })
}
