//! Library-level tests where the test must control timing: readiness
//! before the first load, and a compile cache entry from another engine.

use crate::common::*;
use sha2::Digest;
use std::sync::Arc;
use wasmlet::config::cli::LoadLimits;
use wasmlet::config::limits::Limits;
use wasmlet::control::source::Source;
use wasmlet::http::state::App;
use wasmlet::wasm::cache::{CacheOutcome, CompileCache};
use wasmlet::wasm::engine::Wasmtime;

#[tokio::test(flavor = "multi_thread")]
async fn readyz_is_503_until_the_first_load_completes() {
    let (app, _ticker) = App::new(
        Source::Component(pathbuf(wasm::HELLO), Default::default()),
        Limits::default(),
        LoadLimits::default(),
        &wasmlet::config::cli::CacheArgs::default(),
        Wasmtime::new(&Limits::default()).unwrap(),
        wasmlet::wasm::compiler::Compiler::InProcess,
        1,
        None,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = listener.local_addr().unwrap();
    let app_ = app.clone();
    tokio::spawn(async move {
        let net = wasmlet::config::cli::NetLimits::default();
        wasmlet::http::admin::serve(listener, app_, &net, std::future::pending()).await
    });

    let r = get(admin, "/readyz").await;
    assert_eq!((r.status, r.text().as_str()), (503, "loading\n"));
    assert_eq!(
        get(admin, "/healthz").await.status,
        200,
        "alive while loading"
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&get(admin, "/handlers").await.body).unwrap();
    assert_eq!(doc["ready"], false);

    app.reloader.reload("test").await.unwrap();
    assert_eq!(get(admin, "/readyz").await.status, 200);

    app.draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let r = get(admin, "/readyz").await;
    assert_eq!((r.status, r.text().as_str()), (503, "draining\n"));
}

#[test]
fn a_cache_entry_from_another_engine_is_rebuilt() {
    let engine = wasmlet::wasm::engine::build(&Limits::default()).unwrap();
    let dir = tempdir();
    let cache = CompileCache::new(Some(dir.path()));
    let wasm = std::fs::read(wasm::HELLO).unwrap();
    let digest: String = sha2::Sha256::digest(&wasm)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();

    // A well-formed entry (valid checksum) compiled by an engine with other settings.
    let mut config = wasmtime::Config::new();
    config.cranelift_opt_level(wasmtime::OptLevel::None);
    let foreign = wasmtime::Engine::new(&config).unwrap();
    let artifact = foreign.precompile_component(&wasm).unwrap();
    let mut entry = sha2::Sha256::digest(&artifact).to_vec();
    entry.extend_from_slice(&artifact);
    let path = cache.entry_path(&digest, &engine).unwrap();
    std::fs::write(&path, &entry).unwrap();

    let (_component, outcome) = cache.compile(&engine, &wasm, &digest).unwrap();
    assert_eq!(
        outcome,
        CacheOutcome::Miss,
        "the foreign entry must not be trusted"
    );
    let (_component, outcome) = cache.compile(&engine, &wasm, &digest).unwrap();
    assert_eq!(
        outcome,
        CacheOutcome::Hit,
        "rebuilt entry is used next time"
    );
    let _ = Arc::new(());
}
