//! One request inside a guest: a fresh or reused instance, the 0.2 and 0.3
//! handler interfaces, and the threads requests run on.
//!
//! - [`admission`]: admission control, the in-flight slot, the CPU share of heavy guests.
//! - [`body`]: the request and response bodies, their guards, the host's own answers.
//! - [`fault`]: what a failed guest becomes (status, log, metric), for both versions.
//! - [`grpc`]: a gRPC client's deadline, and the host's answers as gRPC statuses.
//! - [`p2`]: running one request of a wasi:http 0.2 handler in a fresh or reused store.
//! - [`reuse`]: opt-in instance reuse: a route's instances kept between requests.
//! - [`p3`]: serving wasi:http 0.3 handlers, several requests at once per instance.
//! - [`workers`]: the per-CPU request threads connections are spread over.

pub mod admission;
pub mod body;
pub mod fault;
pub mod grpc;
pub mod p2;
pub mod p3;
pub mod reuse;
pub mod workers;
