//! Black-box tests: the real `wasmlet` binary on port 0, real components,
//! real sockets. One test binary so everything links once.

mod common;

mod bad_input;
mod cache;
mod canary;
mod cli;
mod docs;
mod fake_registry;
mod foundation;
mod grpc;
mod h2;
mod h2_attacks;
mod hostile;
mod inprocess;
mod keyvalue;
mod limits;
mod net;
mod new;
mod observability;
mod oci;
mod oci_disk;
mod oci_e2e;
mod p3;
mod parity;
mod reuse;
mod spin;
mod state;
mod swap;
mod tls;
mod toolchains;
mod traces;
