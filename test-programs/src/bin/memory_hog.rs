//! `memory_hog`: allocates and touches 1 MiB at a time, forever, until the
//! host's memory limit makes an allocation fail (which aborts, so traps).

use test_programs::{Guest, IncomingRequest, ResponseOutparam};

const CHUNK: usize = 1024 * 1024;
const PAGE: usize = 4096;

struct MemoryHog;

test_programs::export!(MemoryHog);

impl Guest for MemoryHog {
    fn handle(_request: IncomingRequest, _response_out: ResponseOutparam) {
        let mut held: Vec<Vec<u8>> = Vec::new();
        loop {
            let mut chunk = vec![0u8; CHUNK];
            for byte in chunk.iter_mut().step_by(PAGE) {
                *byte = 1;
            }
            held.push(std::hint::black_box(chunk));
        }
    }
}

fn main() {}
