//! `serve_keyvalue`: opens the key-value store named `""` and answers the
//! value of key `hello`. The behaviour of wasmtime 48's serve test guest
//! `crates/test-programs/src/bin/p2_cli_serve_keyvalue.rs`
//! (bytecodealliance/wasmtime, tag v48.0.0; test `p2_cli_serve_keyvalue` in
//! `tests/all/cli_tests.rs`): under `wasmtime serve -Scli -Skeyvalue
//! -Skeyvalue-in-memory-data=hello=world` it answers `200 world`. Like the
//! original it panics (a trap) when the store or the key is missing.

use test_programs::wasi::keyvalue::store;
use test_programs::{Guest, IncomingRequest, ResponseOutparam};

struct ServeKeyvalue;

test_programs::export!(ServeKeyvalue);

impl Guest for ServeKeyvalue {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        let bucket = store::open("").expect("open the store named \"\"");
        let value = bucket
            .get("hello")
            .expect("get `hello`")
            .expect("`hello` is set");
        test_programs::respond(response_out, 200, value);
    }
}

fn main() {}
