//! WebAssembly itself: the engine, reading and compiling components, the
//! compile cache, and what a guest is granted.
//!
//! - [`engine`]: the one wasmtime `Engine`, `Linker` and epoch ticker.
//! - [`world`]: which wasi:http handler interface a component exports (0.2.x, or 0.3.0).
//! - [`component`]: reading, validating, compiling and pre-instantiating a component.
//! - [`footprint`]: what one instance of a component needs: core instances, memories, tables.
//! - [`compiler`]: compiling in a child process, so the compiler's heap dies with it.
//! - [`heap`]: giving the heap's free pages back after a compile.
//! - [`cache`]: the on-disk cache of compiled components.
//! - [`sandbox`]: what a guest is granted and may hold: the one store factory, environment, stdio, memory.
//! - [`keyvalue`]: wasi:keyvalue for guests, on the route's granted stores (`kv/`), with its limits.
//! - [`outbound`]: `allowed_outbound_hosts`, checked against the resolved address.

pub mod cache;
pub mod compiler;
pub mod component;
pub mod engine;
pub mod footprint;
pub mod heap;
pub mod keyvalue;
pub mod outbound;
pub mod sandbox;
pub mod world;
