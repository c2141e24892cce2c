//! `counter`: counts the requests its instance has served in a static and
//! answers the count (`1` on a fresh instance), so instance reuse is
//! visible from outside. After counting, `?then=` makes the request end
//! badly: `trap`, `spin` (until the time limit), `hog` (allocates until the
//! memory limit), or `sleep` (`?ms=N`, default 1000, then answers); or
//! `grow`: asks for 64 MiB more, survives a refusal and answers
//! `refused N` (`grown N` if it got it).

use std::sync::atomic::{AtomicU64, Ordering};
use test_programs::wasi::clocks::monotonic_clock;
use test_programs::{Guest, IncomingRequest, ResponseOutparam};

static SERVED: AtomicU64 = AtomicU64::new(0);

struct Counter;

test_programs::export!(Counter);

impl Guest for Counter {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let served = SERVED.fetch_add(1, Ordering::Relaxed) + 1;
        match test_programs::query_param(&request, "then").as_deref() {
            Some("trap") => test_programs::trap(),
            Some("spin") => spin(),
            Some("hog") => hog(),
            Some("grow") => {
                let mut big: Vec<u8> = Vec::new();
                let answer = match big.try_reserve_exact(64 << 20) {
                    Ok(()) => "grown",
                    Err(_) => "refused",
                };
                let body = format!("{answer} {served}");
                return test_programs::respond(response_out, 200, body);
            }
            Some("sleep") => {
                let ms = test_programs::query_u64(&request, "ms", 1000);
                monotonic_clock::subscribe_duration(ms.saturating_mul(1_000_000)).block();
            }
            _ => {}
        }
        test_programs::respond(response_out, 200, served.to_string());
    }
}

fn spin() -> ! {
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

fn hog() -> ! {
    let mut held: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; 1 << 20];
        for byte in chunk.iter_mut().step_by(4096) {
            *byte = 1;
        }
        held.push(std::hint::black_box(chunk));
    }
}

fn main() {}
