//! `serve_config`: answers the wasi:config value of key `hello`. The
//! behaviour of wasmtime 48's serve test guest
//! `crates/test-programs/src/bin/p2_cli_serve_config.rs`
//! (bytecodealliance/wasmtime, tag v48.0.0; test `p2_cli_serve_config` in
//! `tests/all/cli_tests.rs`): under `wasmtime serve -Scli -Sconfig
//! -Sconfig-var=hello=world` it answers `200 world`. Like the original it
//! panics (a trap) when the key is missing.

use test_programs::wasi::config::store;
use test_programs::{Guest, IncomingRequest, ResponseOutparam};

struct ServeConfig;

test_programs::export!(ServeConfig);

impl Guest for ServeConfig {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        let value = store::get("hello")
            .expect("get `hello`")
            .expect("`hello` is set");
        test_programs::respond(response_out, 200, value);
    }
}

fn main() {}
