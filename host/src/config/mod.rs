//! What the operator writes: the command line, the manifest, the limits and
//! the route patterns. Pure data and parsing; nothing here runs a request.
//!
//! - [`canary`]: a route's canary as the manifest writes it: weight, sticky key, rollback policy.
//! - [`cli`]: the command line (clap), every flag with its env var.
//! - [`limits`]: per-request limits and their defaults, admission control.
//! - [`manifest`]: `wasmlet.toml`, the routes and their per-route settings.
//! - [`router`]: route patterns and longest-match lookup (pure logic).

pub mod canary;
pub mod cli;
pub mod limits;
pub mod manifest;
pub mod router;
