//! Everything that changes what is served: building and publishing a new
//! routing table, watching files, following tags, keeping the cache in budget.
//!
//! - [`reload`]: building a new table from disk and publishing it, all or nothing.
//! - [`source`]: what the host serves (a manifest or one component) and where a reload reads it.
//! - [`watch`]: the file watcher: a debounced reload after each burst of changes.
//! - [`actions`]: the admin's edits of a canary: abort, promote.
//! - [`follow`]: `follow = "30s"`, re-resolving a tag on a timer.
//! - [`cache_budget`]: keeping `--cache-dir` under `--cache-max-size`, least recently used out first.

pub mod actions;
pub mod cache_budget;
pub mod follow;
pub mod reload;
pub mod source;
pub mod watch;
