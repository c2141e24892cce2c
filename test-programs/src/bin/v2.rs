//! `v2`: answers `v2` to every request; hot-swap tests replace it with
//! the other version and watch the answer change.

use test_programs::{Guest, IncomingRequest, ResponseOutparam};

struct Version;

test_programs::export!(Version);

impl Guest for Version {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        test_programs::respond(response_out, 200, "v2");
    }
}

fn main() {}
