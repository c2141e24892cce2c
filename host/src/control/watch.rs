//! The file watcher: which directories to watch, and a debounced reload
//! after each settled burst of changes.
//!
//! It watches directories, not files: editors and `cp` write in place,
//! tools rename over files, and Kubernetes re-points a `..data` symlink in
//! a ConfigMap volume. The watcher drives a [`Reloader`]; the reloader
//! knows nothing of it.

use crate::control::reload::Reloader;
use crate::control::source::Source;
use anyhow::{Context, Result};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// Quiet time after the last file event before a reload starts.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// A reload starts at the latest this long after the first event of a burst.
pub const DEBOUNCE_MAX: Duration = Duration::from_secs(1);

/// The file watcher, started before the first load so that no change
/// made after that load began is missed; [`FileWatcher::drive`] then has
/// the reloader act on what it sees.
pub struct FileWatcher {
    watcher: RecommendedWatcher,
    watched: HashSet<PathBuf>,
    events: UnboundedReceiver<()>,
}

/// A watcher that sends `()` to `tx` for every event that may change a
/// file (not mere reads); it watches nothing until told to.
pub fn change_watcher(tx: UnboundedSender<()>) -> notify::Result<RecommendedWatcher> {
    notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && !matches!(event.kind, EventKind::Access(_) | EventKind::Other)
        {
            let _ = tx.send(());
        }
    })
}

/// Waits for the next burst of events to settle: [`DEBOUNCE`] without one,
/// or [`DEBOUNCE_MAX`] after its first. False once the sender is gone.
pub async fn settled_burst(rx: &mut UnboundedReceiver<()>) -> bool {
    if rx.recv().await.is_none() {
        return false;
    }
    let burst_started = tokio::time::Instant::now();
    loop {
        let quiet = tokio::time::sleep(DEBOUNCE);
        let cap = tokio::time::sleep_until(burst_started + DEBOUNCE_MAX);
        tokio::select! {
            more = rx.recv() => if more.is_none() { return false },
            _ = quiet => return true,
            _ = cap => return true,
        }
    }
}

impl FileWatcher {
    /// Watches the source's directories (the manifest's and every
    /// component's it names).
    pub fn start(source: &Source) -> Result<FileWatcher> {
        let (tx, events) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher = change_watcher(tx).context("failed to start the file watcher")?;
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
            while settled_burst(&mut rx).await {
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
