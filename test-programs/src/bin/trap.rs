//! `trap`: executes `unreachable` before setting a response.

use test_programs::{Guest, IncomingRequest, ResponseOutparam};

struct Trap;

test_programs::export!(Trap);

impl Guest for Trap {
    fn handle(_request: IncomingRequest, _response_out: ResponseOutparam) {
        test_programs::trap();
    }
}

fn main() {}
