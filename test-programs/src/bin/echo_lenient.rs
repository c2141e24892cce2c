//! `echo_lenient`: sends its response head first, then streams the request
//! body back; when reading the body fails it stops and finishes its
//! response normally, as a handler that does not check errors would.

use test_programs::{Guest, IncomingRequest, OutgoingBody, ResponseOutparam};

struct EchoLenient;

test_programs::export!(EchoLenient);

impl Guest for EchoLenient {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let headers: &[(&str, &[u8])] = &[("content-type", b"application/octet-stream")];
        let (out_body, out) = test_programs::start_response(response_out, 200, headers);
        let in_body = request.consume().expect("body consumed once");
        let stream = in_body.stream().expect("stream taken once");
        // Any error, a closed stream or the host refusing the body, ends
        // the echo without a trap.
        while let Ok(chunk) = stream.blocking_read(test_programs::READ_CHUNK) {
            test_programs::write_all(&out, &chunk);
        }
        drop(stream);
        drop(in_body);
        drop(out);
        OutgoingBody::finish(out_body, None).expect("finish body");
    }
}

fn main() {}
