//! `big_memory`: a 100 MiB zeroed mutable static, so the component's linear
//! memory starts at over 100 MiB (it lands in `.bss`, so the file stays
//! small); answers `big 0`.

use std::sync::atomic::{AtomicU8, Ordering};
use test_programs::{Guest, IncomingRequest, ResponseOutparam};

const SIZE: usize = 100 << 20;
// Writable (atomics), so it goes to `.bss`; a read-only array of zeros
// would be data in the file.
static BIG: [AtomicU8; SIZE] = [const { AtomicU8::new(0) }; SIZE];

struct BigMemory;

test_programs::export!(BigMemory);

impl Guest for BigMemory {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        let big = std::hint::black_box(&BIG);
        let last = big[SIZE - 1].load(Ordering::Relaxed);
        test_programs::respond(response_out, 200, format!("big {last}"));
    }
}

fn main() {}
