//! `log_flood`: writes 64 KiB of empty lines to stdout in one go, then
//! answers `flooded`.

use std::io::Write;
use test_programs::{Guest, IncomingRequest, ResponseOutparam};

const LINES: usize = 64 * 1024;

struct LogFlood;

test_programs::export!(LogFlood);

impl Guest for LogFlood {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&[b'\n'; LINES]);
        let _ = out.flush();
        drop(out);
        test_programs::respond(response_out, 200, "flooded");
    }
}

fn main() {}
