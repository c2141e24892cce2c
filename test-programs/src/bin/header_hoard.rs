//! `header_hoard`: builds `?n=` header maps (default 6400) of `?kib=` KiB
//! each (default 32) with `fields.from-list` and keeps them all, so the
//! host holds them on its heap; then answers `kept N`.

use test_programs::{Fields, Guest, IncomingRequest, ResponseOutparam};

struct HeaderHoard;

test_programs::export!(HeaderHoard);

impl Guest for HeaderHoard {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let n = test_programs::query_u64(&request, "n", 6400);
        let kib = test_programs::query_u64(&request, "kib", 32) as usize;
        let value = vec![b'x'; kib * 1024];
        let mut kept = Vec::new();
        for i in 0..n {
            let entries = [(format!("x-hoard-{i}"), value.clone())];
            match Fields::from_list(&entries) {
                Ok(fields) => kept.push(fields),
                Err(e) => panic!("fields.from-list failed after {i}: {e:?}"),
            }
        }
        test_programs::respond(response_out, 200, format!("kept {}", kept.len()));
    }
}

fn main() {}
