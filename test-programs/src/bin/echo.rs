//! `echo`: streams the request body back unchanged, chunk by chunk (never the
//! whole body in memory), with the request's `content-type` if it had one.

use test_programs::{Guest, IncomingRequest, OutgoingBody, ResponseOutparam};

struct Echo;

test_programs::export!(Echo);

impl Guest for Echo {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let content_type = test_programs::header(&request, "content-type");
        let headers: Vec<(&str, &[u8])> = content_type
            .iter()
            .map(|value| ("content-type", value.as_slice()))
            .collect();
        let (out_body, out) = test_programs::start_response(response_out, 200, &headers);
        let in_body = request.consume().expect("body consumed once");
        test_programs::for_each_chunk(in_body, |chunk| test_programs::write_all(&out, chunk));
        drop(out);
        OutgoingBody::finish(out_body, None).expect("finish body");
    }
}

fn main() {}
