//! Micro-benchmark of the per-request guest path, without the network:
//! a fresh store, instantiation, `handle`, reading the response body, and
//! dropping the store (which resets the instance's pooled memory).
//!
//! ```text
//! cargo run --release -p wasmlet --example guest_path -- target/wasm32-wasip2/release/hello.wasm 30000
//! ```
//!
//! Prints the mean time per request and per phase, on one thread. It is
//! the floor under what `bench/run.sh` measures over HTTP.

use http_body_util::{BodyExt, Empty};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmlet::config::limits::{RequestLimits, RouteLimits};
use wasmlet::wasm::sandbox::{self, Grants};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const PHASES: [&str; 5] = ["store", "request", "instantiate", "handle", "body+drop"];

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: guest_path COMPONENT.wasm [REQUESTS]");
    let requests: u32 = args.next().map_or(Ok(20_000), |n| n.parse())?;

    let limits = wasmlet::config::limits::Limits::default();
    let wasmtime = wasmlet::wasm::engine::Wasmtime::new(&limits)?;
    let engine = wasmtime.engine.clone();
    let cache = wasmlet::wasm::cache::CompileCache::disabled();
    let file = wasmlet::wasm::component::WasmFile::read(std::path::Path::new(&path), u64::MAX)?;
    let per_component = wasmlet::wasm::engine::PerComponent::for_limits(&limits);
    let loaded = wasmlet::wasm::component::compile(&wasmtime, &per_component, &cache, &file)?;
    let grants = Grants {
        log_output: true,
        ..Grants::none("/")
    };
    let request_limits = RequestLimits::resolve(&limits, &RouteLimits::default());
    let request_id: Arc<str> = Arc::from("guest-path");

    let mut phases = [Duration::ZERO; PHASES.len()];
    let started = Instant::now();
    for _ in 0..requests {
        let mut marks = [Instant::now(); PHASES.len() + 1];
        let mut store =
            sandbox::new_store(&engine, &grants, &request_limits, None, request_id.clone());
        store.set_epoch_deadline(u64::MAX / 2);
        marks[1] = Instant::now();

        let body = Empty::<bytes::Bytes>::new()
            .map_err(|never| -> wasmtime_wasi_http::Error { match never {} });
        let request = http::Request::builder()
            .uri("http://localhost/")
            .body(body)?;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let incoming = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)?;
        let outparam = store.data_mut().http().new_response_outparam(sender)?;
        marks[2] = Instant::now();

        let wasmtime_wasi_http::handler::ProxyPre::P2(pre) = &loaded.pre else {
            anyhow::bail!("this profile is of wasi:http 0.2 handlers");
        };
        let proxy = pre.instantiate_async(&mut store).await?;
        marks[3] = Instant::now();
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, incoming, outparam)
            .await?;
        marks[4] = Instant::now();

        let response = receiver.await??;
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::ensure!(!body.is_empty(), "empty response body");
        drop(store);
        marks[5] = Instant::now();
        for (phase, pair) in phases.iter_mut().zip(marks.windows(2)) {
            *phase += pair[1] - pair[0];
        }
    }
    let per_request = |d: Duration| d.as_secs_f64() * 1e6 / f64::from(requests);
    print!("{:.2} us per request:", per_request(started.elapsed()));
    for (name, total) in PHASES.iter().zip(phases) {
        print!(" {name} {:.2}", per_request(total));
    }
    println!();
    Ok(())
}
