//! What a request reads to find its handler: the published routing table,
//! the per-route load status, and a route's canary.
//!
//! - [`registry`]: the published routing table and the per-route load status.
//! - [`canary`]: a route's second version: weighted split, sticky keys, automatic rollback.

pub mod canary;
pub mod registry;
