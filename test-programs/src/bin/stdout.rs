//! `stdout`: writes a line to stdout and one to stderr, then answers
//! `printed`.

use test_programs::{Guest, IncomingRequest, ResponseOutparam};

struct Stdout;

test_programs::export!(Stdout);

impl Guest for Stdout {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        println!("hello from stdout");
        eprintln!("hello from stderr");
        test_programs::respond(response_out, 200, "printed");
    }
}

fn main() {}
