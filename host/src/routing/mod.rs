//! What a request reads to find its handler: the published routing table,
//! the per-route load status, and a route's canary.
//!
//! - [`registry`]: the published routing table (a [`registry::Route`] per pattern) and the per-route load status.
//! - [`handler`]: one version of a route, ready to serve: its component and its 0.2 or 0.3 runner.
//! - [`canary`]: a route's second version at request time: weighted split, sticky keys, automatic rollback.

pub mod canary;
pub mod handler;
pub mod registry;
