//! `spin`: loops forever before setting a response; only the host's time
//! limit (epoch interruption) ends it.

use test_programs::{Guest, IncomingRequest, ResponseOutparam};

struct Spin;

test_programs::export!(Spin);

impl Guest for Spin {
    fn handle(_request: IncomingRequest, _response_out: ResponseOutparam) {
        let mut n = 0u64;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

fn main() {}
