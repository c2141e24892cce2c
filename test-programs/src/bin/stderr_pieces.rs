//! `stderr_pieces`: writes one line to stderr in six pieces, each through a
//! fresh `get-stderr()` handle (`"start a print "`, `"1"`, `"2"`, `"3"`,
//! `"4"`, `"\n"`), then answers `200` with an empty body. This is the end of
//! wasmtime 48's serve test guest
//! `crates/test-programs/src/bin/p2_cli_serve_with_print.rs`
//! (bytecodealliance/wasmtime, tag v48.0.0): under `wasmtime serve -Scli`
//! the log shows one line, `stderr [0] :: start a print 1234` (test
//! `p2_cli_serve_with_print` in `tests/all/cli_tests.rs`), so a host must
//! buffer a request's stderr across handles, not per handle.

use test_programs::wasi::cli::stderr::get_stderr;
use test_programs::wasi::http::types::{Fields, OutgoingResponse};
use test_programs::{Guest, IncomingRequest, ResponseOutparam};

struct StderrPieces;

test_programs::export!(StderrPieces);

/// The pieces, in order; each goes through its own handle, dropped at once.
const PIECES: [&[u8]; 6] = [b"start a print ", b"1", b"2", b"3", b"4", b"\n"];

impl Guest for StderrPieces {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        for piece in PIECES {
            // Errors are ignored, as in the original: logging must not fail a request.
            let _ = get_stderr().blocking_write_and_flush(piece);
        }
        // No body, as in the original: the host ends the response.
        ResponseOutparam::set(response_out, Ok(OutgoingResponse::new(Fields::new())));
    }
}

fn main() {}
