//! `count`: reads the whole request body in chunks and answers with its
//! length in bytes, in decimal (`10485760`).

use test_programs::{Guest, IncomingRequest, ResponseOutparam};

struct Count;

test_programs::export!(Count);

impl Guest for Count {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let body = request.consume().expect("body consumed once");
        let mut bytes = 0u64;
        test_programs::for_each_chunk(body, |chunk| bytes += chunk.len() as u64);
        test_programs::respond(response_out, 200, bytes.to_string());
    }
}

fn main() {}
