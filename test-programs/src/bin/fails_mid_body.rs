//! `fails_mid_body`: sends a 200 and 1024 bytes of its body, then traps
//! without finishing the body.

use test_programs::{Guest, IncomingRequest, ResponseOutparam};

struct FailsMidBody;

test_programs::export!(FailsMidBody);

impl Guest for FailsMidBody {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        let headers: &[(&str, &[u8])] = &[("content-type", b"application/octet-stream")];
        let (_body, stream) = test_programs::start_response(response_out, 200, headers);
        test_programs::write_all(&stream, &[b'x'; 1024]);
        test_programs::trap();
    }
}

fn main() {}
