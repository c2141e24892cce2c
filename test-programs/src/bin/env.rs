//! `env`: answers with the guest's environment, sorted `KEY=VALUE` lines
//! (an empty body when the host grants none).

use test_programs::{Guest, IncomingRequest, ResponseOutparam};

struct Env;

test_programs::export!(Env);

impl Guest for Env {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        let mut vars: Vec<(String, String)> = std::env::vars().collect();
        vars.sort();
        let body: String = vars
            .iter()
            .map(|(key, value)| format!("{key}={value}\n"))
            .collect();
        test_programs::respond(response_out, 200, body);
    }
}

fn main() {}
