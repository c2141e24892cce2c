//! `never_responds`: returns without ever setting the response.

use test_programs::{Guest, IncomingRequest, ResponseOutparam};

struct NeverResponds;

test_programs::export!(NeverResponds);

impl Guest for NeverResponds {
    fn handle(_request: IncomingRequest, _response_out: ResponseOutparam) {}
}

fn main() {}
