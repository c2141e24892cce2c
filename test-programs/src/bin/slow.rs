//! `slow`: sleeps `?ms=N` milliseconds (default 1000) on a
//! `wasi:clocks/monotonic-clock` pollable, then answers `slow done`.

use test_programs::wasi::clocks::monotonic_clock;
use test_programs::{Guest, IncomingRequest, ResponseOutparam};

const DEFAULT_MS: u64 = 1000;

struct Slow;

test_programs::export!(Slow);

impl Guest for Slow {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let ms = test_programs::query_u64(&request, "ms", DEFAULT_MS);
        monotonic_clock::subscribe_duration(ms.saturating_mul(1_000_000)).block();
        test_programs::respond(response_out, 200, "slow done");
    }
}

fn main() {}
