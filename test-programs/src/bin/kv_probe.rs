//! `kv_probe`: probes the host's wasi:keyvalue limits and grants. Opens the
//! store `?store=NAME` (default `""`), then by `?op=`:
//! - `set` (default): sets a key of `?key=N` bytes (default 1) to a value
//!   of `?value=N` bytes (default 1), `?times=N` times (default 1);
//! - `incr`: increments key `n` `?times=N` times and answers the last value.
//!
//! Answers `200 ok` (or the count), or `200 error: E` with the interface's
//! error (`no-such-store`, `access-denied`, `other: TEXT`): never a trap.

use test_programs::wasi::keyvalue::{atomics, store};
use test_programs::{Guest, IncomingRequest, ResponseOutparam};

struct KvProbe;

test_programs::export!(KvProbe);

fn shown(error: store::Error) -> String {
    match error {
        store::Error::NoSuchStore => "error: no-such-store".into(),
        store::Error::AccessDenied => "error: access-denied".into(),
        store::Error::Other(text) => format!("error: other: {text}"),
    }
}

fn probe(request: &IncomingRequest) -> Result<String, store::Error> {
    let name = test_programs::query_param(request, "store").unwrap_or_default();
    let op = test_programs::query_param(request, "op").unwrap_or_else(|| "set".into());
    let times = test_programs::query_u64(request, "times", 1);
    let bucket = store::open(&name)?;
    if op == "incr" {
        let mut last = 0;
        for _ in 0..times {
            last = atomics::increment(&bucket, "n", 1)?;
        }
        return Ok(last.to_string());
    }
    let key = "k".repeat(test_programs::query_u64(request, "key", 1) as usize);
    let value = vec![b'v'; test_programs::query_u64(request, "value", 1) as usize];
    for _ in 0..times {
        bucket.set(&key, &value)?;
    }
    Ok("ok".into())
}

impl Guest for KvProbe {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let body = probe(&request).unwrap_or_else(shown);
        test_programs::respond(response_out, 200, body);
    }
}

fn main() {}
