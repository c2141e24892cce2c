//! `big_response`: streams `?mib=N` MiB (default 16) of `x` in 64 KiB chunks,
//! with no `content-length`.

use test_programs::{Guest, IncomingRequest, OutgoingBody, ResponseOutparam};

const DEFAULT_MIB: u64 = 16;
static CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];

struct BigResponse;

test_programs::export!(BigResponse);

impl Guest for BigResponse {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let mib = test_programs::query_u64(&request, "mib", DEFAULT_MIB);
        let chunks = mib * 1024 * 1024 / CHUNK.len() as u64;
        let headers: &[(&str, &[u8])] = &[("content-type", b"application/octet-stream")];
        let (body, stream) = test_programs::start_response(response_out, 200, headers);
        for _ in 0..chunks {
            test_programs::write_all_when_ready(&stream, &CHUNK);
        }
        stream.blocking_flush().expect("flush body");
        drop(stream);
        OutgoingBody::finish(body, None).expect("finish body");
    }
}

fn main() {}
