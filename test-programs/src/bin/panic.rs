//! `panic`: panics before setting a response (a Rust panic on wasm aborts,
//! which traps).

use test_programs::{Guest, IncomingRequest, ResponseOutparam};

struct Panic;

test_programs::export!(Panic);

impl Guest for Panic {
    fn handle(_request: IncomingRequest, _response_out: ResponseOutparam) {
        panic!("fixture panic");
    }
}

fn main() {}
