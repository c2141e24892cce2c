//! `follow = "30s"`: re-resolving a route's tag on a timer.
//!
//! One task for the host. Each due route costs one manifest HEAD, made in
//! a task of its own (at most one per route at a time), so a registry
//! that stops answering delays only its own routes. When the digest
//! differs from the one serving, a reload runs, which pulls the new
//! version and takes it through the same validate-then-publish path as a
//! file change (and keeps the last good version if it fails). A digest
//! whose reload failed is not retried until the tag moves again, so a bad
//! push is compiled once, not once per interval.

use crate::base::digest::Digest;
use crate::control::reload::Reloader;
use crate::oci::OciRef;
use crate::routing::registry::Registry;
use anyhow::Result;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How often the task looks for routes that are due.
pub const TICK: Duration = Duration::from_millis(500);

/// A route's tag resolved: its label, the reference, the outcome.
type Resolved = (String, OciRef, Result<Digest>);

/// Runs until the runtime stops.
pub async fn run(reloader: Arc<Reloader>, registry: Arc<Registry>) {
    let mut due: HashMap<String, Instant> = HashMap::new();
    // Per route: the digest whose reload was tried last.
    let mut tried: HashMap<String, Digest> = HashMap::new();
    // Routes whose tag is being resolved now.
    let mut resolving: HashSet<String> = HashSet::new();
    let (resolved_tx, mut resolved_rx) = tokio::sync::mpsc::unbounded_channel::<Resolved>();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            Some((label, reference, result)) = resolved_rx.recv() => {
                resolving.remove(&label);
                let digest = match result {
                    Ok(digest) => digest,
                    Err(error) => {
                        tracing::warn!(route = %label, error = %format!("{error:#}"), "follow: cannot resolve the tag; the current version keeps serving");
                        continue;
                    }
                };
                let Some(table) = registry.table() else {
                    continue;
                };
                // The route as it serves now, if it still follows this reference.
                let serving = table.router.iter().map(|(_, r)| &r.stable).find(|h| {
                    *h.label == *label && h.spec.oci.as_ref() == Some(&reference)
                });
                let Some(handler) = serving else {
                    continue;
                };
                if handler.resolved == Some(digest)
                    || tried.get(&label) == Some(&digest)
                {
                    continue;
                }
                tracing::info!(route = %label, reference = %reference, digest = %digest, "follow: the tag moved; reloading");
                tried.insert(label, digest);
                let _ = reloader.reload("follow").await;
                continue;
            }
        }
        let Some(table) = registry.table() else {
            continue;
        };
        let now = Instant::now();
        for handler in table.router.iter().map(|(_, r)| &r.stable) {
            let (Some(every), Some(reference)) = (handler.spec.follow, &handler.spec.oci) else {
                continue;
            };
            let label = handler.label.to_string();
            if resolving.contains(&label) {
                continue;
            }
            let next = due.entry(label.clone()).or_insert(now + every);
            if now < *next {
                continue;
            }
            *next = now + every;
            resolving.insert(label.clone());
            let (reloader, reference, tx) =
                (reloader.clone(), reference.clone(), resolved_tx.clone());
            tokio::spawn(async move {
                let result = reloader.resolve(&reference).await;
                let _ = tx.send((label, reference, result));
            });
        }
    }
}
