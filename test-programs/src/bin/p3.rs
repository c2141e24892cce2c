//! `p3`: a wasi:http 0.3 handler (the `wasip3` crate, 0.9.0+wasi-0.3.0),
//! exporting `wasi:http/handler@0.3.0`. Its paths show what a test needs:
//!
//! - `/count`: a counter in the instance's memory, so reuse shows;
//! - `/sleep?n=MS`: waits MS ms (default 100) without running, so requests
//!   on one instance interleave, and answers how many requests the
//!   instance had in flight when the wait ended (above 1: they shared it);
//! - `/trap`: panics; `/spin`: loops forever;
//! - `/alloc?n=MIB`: holds MIB MiB for the request;
//! - `/echo`: answers the request body;
//! - `/linger?n=MS`: answers `ok` at once, then spins MS ms (default 1000)
//!   after its response body is written and closed (post-return work);
//! - anything else: `Hello World!`.

use std::sync::atomic::{AtomicU64, Ordering};
use wasip3::clocks::monotonic_clock;
use wasip3::http::types::{ErrorCode, Fields, Request, Response};
use wasip3::{wit_bindgen, wit_future, wit_stream};

wasip3::http::service::export!(P3);

struct P3;

static COUNT: AtomicU64 = AtomicU64::new(0);
static IN_FLIGHT: AtomicU64 = AtomicU64::new(0);

impl wasip3::exports::http::handler::Guest for P3 {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let path = request.get_path_with_query().unwrap_or_default();
        let (route, query) = path.split_once('?').unwrap_or((&path, ""));
        let n = |default: u64| {
            query
                .split('&')
                .find_map(|pair| pair.strip_prefix("n="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(default)
        };
        Ok(match route {
            "/count" => {
                let count = COUNT.fetch_add(1, Ordering::Relaxed) + 1;
                text(format!("{count}").into_bytes())
            }
            "/sleep" => {
                IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
                monotonic_clock::wait_for(n(100) * 1_000_000).await;
                let sharing = IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
                text(format!("{sharing}").into_bytes())
            }
            "/trap" => panic!("asked to trap"),
            "/spin" => {
                let mut i = 0u64;
                loop {
                    i = std::hint::black_box(i.wrapping_add(1));
                }
            }
            "/alloc" => {
                let held = vec![1u8; (n(1) as usize) << 20];
                let sum: u64 = held.iter().step_by(4096).map(|&b| u64::from(b)).sum();
                text(format!("held {} pages\n", std::hint::black_box(sum)).into_bytes())
            }
            "/linger" => lingering(n(1000) * 1_000_000),
            "/echo" => {
                let (_, done) = wit_future::new(|| Ok(()));
                let (body, _trailers) = Request::consume_body(request, done);
                text(body.collect().await)
            }
            _ => text(b"Hello World!".to_vec()),
        })
    }
}

/// A 200 with `body`, written by a task of its own after `handle` returns.
fn text(body: Vec<u8>) -> Response {
    let headers = Fields::from_list(&[(
        "content-type".to_string(),
        b"text/plain; charset=utf-8".to_vec(),
    )])
    .expect("valid header");
    let (mut writer, reader) = wit_stream::new();
    let (trailers, trailers_reader) = wit_future::new(|| Ok(None));
    let (response, _sent) = Response::new(headers, Some(reader), trailers_reader);
    drop(trailers);
    wit_bindgen::spawn_local(async move {
        // What is left unwritten when the client goes away is dropped.
        let _ = writer.write_all(body).await;
    });
    response
}

/// A 200 `ok`, then `spin_ns` of busy work in the same task once the
/// body is written and closed: the client has its whole answer, the
/// instance keeps running.
fn lingering(spin_ns: u64) -> Response {
    let (mut writer, reader) = wit_stream::new();
    let (trailers, trailers_reader) = wit_future::new(|| Ok(None));
    let (response, _sent) = Response::new(Fields::new(), Some(reader), trailers_reader);
    drop(trailers);
    wit_bindgen::spawn_local(async move {
        let _ = writer.write_all(b"ok".to_vec()).await;
        drop(writer);
        let until = monotonic_clock::now() + spin_ns;
        while monotonic_clock::now() < until {
            std::hint::black_box(0u64);
        }
    });
    response
}

fn main() {}
