//! What the operator writes: the command line, the manifest, the limits and
//! the route patterns. Pure data and parsing; nothing here runs a request.
//!
//! - [`canary`]: a route's canary as the manifest writes it: weight, sticky key, rollback policy.
//! - [`cli`]: the command line (clap), every flag with its env var.
//! - [`keyvalue`]: `[key_value_store.NAME]`: the key-value stores routes may be granted.
//! - [`limits`]: host-wide and per-request limits and their defaults.
//! - [`manifest`]: `wasmlet.toml`, the routes and their per-route settings.
//! - [`outbound`]: `allowed_outbound_hosts` rules: parsing and matching a name.
//! - [`router`]: route patterns and longest-match lookup (pure logic).
//! - [`secret`]: values read from `{ file }` or `{ env }`, never printed.
//! - [`tls`]: `--tls-cert` and `--tls-key`: the PEM pair, checked, and its expiry.

pub mod canary;
pub mod cli;
pub mod keyvalue;
pub mod limits;
pub mod manifest;
pub mod outbound;
pub mod router;
pub mod secret;
pub mod tls;
