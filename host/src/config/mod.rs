//! What the operator writes: the command line, the manifest, the limits and
//! the route patterns. Pure data and parsing; nothing here runs a request.
//!
//! - [`canary`]: a route's canary as the manifest writes it: weight, sticky key, rollback policy.
//! - [`cli`]: the command line (clap), every flag with its env var.
//! - [`limits`]: host-wide and per-request limits and their defaults.
//! - [`manifest`]: `wasmlet.toml`, the routes and their per-route settings.
//! - [`outbound`]: `allowed_outbound_hosts` rules: parsing and matching a name.
//! - [`router`]: route patterns and longest-match lookup (pure logic).

pub mod canary;
pub mod cli;
pub mod limits;
pub mod manifest;
pub mod outbound;
pub mod router;
