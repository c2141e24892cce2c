//! wasmlet: a serverless-style host for `wasi:http/proxy` WebAssembly components.
//!
//! Every request runs in a fresh, isolated instance of the component its route
//! names. Components are compiled and pre-instantiated once, off the request
//! path; a swap publishes a whole new routing table atomically.
//!
//! # Layout
//!
//! Folders by layer, top to bottom; a layer imports only the ones below it
//! (ARCHITECTURE.md has the map and the request path).
//!
//! - [`app`]: wires the pieces together for `wasmlet serve`.
//! - [`http`]: the two ports: public listener, admin port, connection set-up.
//! - [`control`]: what changes what is served: reload, watch, follow, cache budget.
//! - [`routing`]: what a request reads: the published table, canary choice.
//! - [`run`]: one request inside a guest: 0.2, 0.3, reuse, workers.
//! - [`wasm`]: engine, components, compiling, cache, sandbox, outbound policy.
//! - [`kv`]: key-value stores: the backends (memory, file, redis) and their limits.
//! - [`config`]: what the operator writes: flags, manifest, limits, routes.
//! - [`oci`]: components from OCI registries: pull, verify, store, push.
//! - [`observe`]: metrics, logs, cgroup memory.
//! - [`base`]: the leaf: shared types (`Digest`, cache entry names).
//! - [`scaffold`]: `wasmlet new`: a handler's folder from the guide's hellos.
//! - [`shutdown`]: waiting for SIGTERM or SIGINT, which start the drain.

pub mod app;
pub mod base;
pub mod config;
pub mod control;
pub mod http;
pub mod kv;
pub mod observe;
pub mod oci;
pub mod routing;
pub mod run;
pub mod scaffold;
pub mod shutdown;
pub mod wasm;
