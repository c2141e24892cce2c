//! `status`: answers with the status `?code=N` (default 200) and no other
//! behaviour, so tests can tell a guest's own status from the host's.

use test_programs::{Guest, IncomingRequest, ResponseOutparam};

struct Status;

test_programs::export!(Status);

impl Guest for Status {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let code = test_programs::query_u64(&request, "code", 200);
        let code = u16::try_from(code).unwrap_or(500);
        test_programs::respond(response_out, code, format!("guest says {code}\n"));
    }
}

fn main() {}
