//! wasmlet: a serverless-style host for `wasi:http/proxy` WebAssembly components.
//!
//! Every request runs in a fresh, isolated instance of the component its route
//! names. Components are compiled and pre-instantiated once, off the request
//! path; a swap publishes a whole new routing table atomically.
//!
//! # Layout
//!
//! - [`config`]: the command line (clap), every flag with its env var.
//! - [`limits`]: per-request limits and their defaults, admission control.
//! - [`manifest`]: `wasmlet.toml`, the routes and their per-route settings.
//! - [`router`]: route patterns and longest-match lookup (pure logic).
//! - [`engine`]: the one wasmtime `Engine`, `Linker` and epoch ticker.
//! - [`cache`]: the on-disk cache of compiled components.
//! - [`cache_budget`]: keeping `--cache-dir` under `--cache-max-size`, least recently used out first.
//! - [`footprint`]: what one instance of a component needs: core instances, memories, tables.
//! - [`compiler`]: compiling in a child process, so the compiler's heap dies with it.
//! - [`heap`]: giving the heap's free pages back after a compile.
//! - [`oci`]: components from OCI registries: pull, verify, store, push.
//! - [`world`]: which wasi:http handler interface a component exports (0.2.x, or 0.3.0).
//! - [`component`]: reading, validating, compiling and pre-instantiating a component.
//! - [`sandbox`]: what a guest is granted and may hold: the one store factory, environment, stdio, memory.
//! - [`outbound`]: `allowed_outbound_hosts`, checked against the resolved address.
//! - [`canary`]: a route's second version: weighted split, sticky keys, automatic rollback.
//! - [`registry`]: the published routing table and the per-route load status.
//! - [`reload`]: building a new table from disk, watching files, debouncing.
//! - [`invoke`]: running one request in a fresh store and mapping faults to statuses.
//! - [`reuse`]: opt-in instance reuse: a route's instances kept between requests.
//! - [`p3`]: serving wasi:http 0.3 handlers, several requests at once per instance.
//! - [`connection`]: one connection set-up for both ports: caps, timeouts, accept backoff.
//! - [`server`]: the public HTTP listener and graceful drain.
//! - [`workers`]: the per-CPU request threads connections are spread over.
//! - [`admin`]: the admin port: health, readiness, metrics, handlers, reload.
//! - [`metrics`]: Prometheus metrics.
//! - [`cgroup`]: the memory the container's limit counts.
//! - [`shutdown`]: SIGTERM/SIGINT handling and the draining flag.
//! - [`logging`]: tracing set-up, text or JSON.
//! - [`app`]: wires the pieces together for `wasmlet serve`.

pub mod admin;
pub mod app;
pub mod cache;
pub mod cache_budget;
pub mod canary;
pub mod cgroup;
pub mod compiler;
pub mod component;
pub mod config;
pub mod connection;
pub mod engine;
pub mod footprint;
pub mod heap;
pub mod invoke;
pub mod limits;
pub mod logging;
pub mod manifest;
pub mod metrics;
pub mod oci;
pub mod outbound;
pub mod p3;
pub mod registry;
pub mod reload;
pub mod reuse;
pub mod router;
pub mod sandbox;
pub mod server;
pub mod shutdown;
pub mod workers;
pub mod world;
