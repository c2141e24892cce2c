//! `follow = "30s"`: re-resolving a route's tag on a timer.
//!
//! One task for the host. Each due route costs one manifest HEAD; when the
//! digest differs from the one serving, a reload runs, which pulls the new
//! version and takes it through the same validate-then-publish path as a
//! file change (and keeps the last good version if it fails). A digest
//! whose reload failed is not retried until the tag moves again, so a bad
//! push is compiled once, not once per interval.

use crate::registry::Registry;
use crate::reload::Reloader;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How often the task looks for routes that are due.
pub const TICK: Duration = Duration::from_millis(500);

/// Runs until the runtime stops.
pub async fn run(reloader: Arc<Reloader>, registry: Arc<Registry>) {
    let mut due: HashMap<String, Instant> = HashMap::new();
    // Per route: the digest whose reload was tried last.
    let mut tried: HashMap<String, String> = HashMap::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(table) = registry.table() else {
            continue;
        };
        let now = Instant::now();
        for (_, handler) in table.router.iter() {
            let (Some(every), Some(reference)) = (handler.spec.follow, &handler.spec.oci) else {
                continue;
            };
            let label = handler.label.to_string();
            let next = due.entry(label.clone()).or_insert(now + every);
            if now < *next {
                continue;
            }
            *next = now + every;
            let digest = match reloader.resolve(reference).await {
                Ok(digest) => digest,
                Err(error) => {
                    tracing::warn!(route = %label, error = %format!("{error:#}"), "follow: cannot resolve the tag; the current version keeps serving");
                    continue;
                }
            };
            if handler.resolved.as_deref() == Some(digest.as_str())
                || tried.get(&label) == Some(&digest)
            {
                continue;
            }
            tracing::info!(route = %label, reference = %reference, digest = %digest, "follow: the tag moved; reloading");
            tried.insert(label, digest);
            let _ = reloader.reload("follow").await;
            // The table changed (or the reload failed): look again next tick.
            break;
        }
    }
}
