//! `recursion`: recurses without bound until the stack overflows (a trap).

use test_programs::{Guest, IncomingRequest, ResponseOutparam};

struct Recursion;

test_programs::export!(Recursion);

impl Guest for Recursion {
    fn handle(_request: IncomingRequest, _response_out: ResponseOutparam) {
        std::hint::black_box(recurse(0));
    }
}

/// `black_box` keeps the optimiser from turning this into a loop or proving
/// that it never returns; the addition after the call keeps it from being a
/// tail call.
fn recurse(depth: u64) -> u64 {
    if std::hint::black_box(depth) == u64::MAX {
        return 0;
    }
    recurse(std::hint::black_box(depth + 1)) + std::hint::black_box(1)
}

fn main() {}
