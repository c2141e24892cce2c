//! The two ports: the public listener and the admin port, and the connection
//! set-up they share.
//!
//! - [`connection`]: one connection set-up for both ports: caps, timeouts, accept backoff,
//!   HTTP/1.1 and HTTP/2 settings, closing idle connections and those a guard trips.
//! - [`frame_meter`]: budgets for the HTTP/2 frames hyper does not limit (stream resets,
//!   PING, SETTINGS).
//! - [`server`]: the public HTTP listener and graceful drain.
//! - [`tls`]: the public port's TLS: the served certificate, ALPN, reloads.
//! - [`admin`]: the admin port: health, readiness, metrics, handlers, reload.
//! - [`state`]: the state both ports read ([`state::App`]) and request ids.
//! - [`spin_headers`]: the `spin-*` request headers that say where a request sits in its route.

pub mod admin;
pub mod connection;
pub mod frame_meter;
pub mod server;
pub mod spin_headers;
pub mod state;
pub mod tls;
