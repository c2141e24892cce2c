//! Paths to the wasm components that wasmlet's tests load.
//!
//! `build.rs` builds `test-programs` (one component per `src/bin/<name>.rs`),
//! `hello` (`guest/`) and `hello-counter` (`guest/counter/`) for
//! `wasm32-wasip2` in release mode, in its own
//! target directory, and generates one constant per component: the absolute
//! path of `<name>.wasm`, named in upper case (`ECHO`, `MEMORY_HOG`, `HELLO`).
//! A host test loads them with, e.g., `std::fs::read(test_programs_artifacts::ECHO)`.

include!(concat!(env!("OUT_DIR"), "/components.rs"));

include!("scrubbed_env.rs");
