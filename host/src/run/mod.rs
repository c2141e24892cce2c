//! One request inside a guest: a fresh or reused instance, the 0.2 and 0.3
//! handler interfaces, and the threads requests run on.
//!
//! - [`p2`]: running one request in a fresh store and mapping faults to statuses.
//! - [`reuse`]: opt-in instance reuse: a route's instances kept between requests.
//! - [`p3`]: serving wasi:http 0.3 handlers, several requests at once per instance.
//! - [`workers`]: the per-CPU request threads connections are spread over.

pub mod p2;
pub mod p3;
pub mod reuse;
pub mod workers;
