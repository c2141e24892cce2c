//! Issue 2, point 5: bad input at start-up is one clear line naming the
//! file or address and the reason, a non-zero exit, and no listener.

use crate::common::*;

/// Runs `wasmlet serve ARGS` expecting failure; returns stderr.
fn serve_fails(args: &[&str]) -> String {
    let mut full = vec!["serve"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]);
    let (status, stdout, stderr) = run(&full);
    assert_eq!(status.code(), Some(1), "stdout: {stdout}\nstderr: {stderr}");
    assert!(!stderr.contains("listening"), "it must not bind: {stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "exactly one error line: {stderr}");
    // Issue 31, finding 1: at start-up nothing serves yet, so nothing
    // "keeps serving"; the `error:` line is the only word of it.
    assert!(
        !stderr.contains("keep serving") && !stderr.contains("ERROR"),
        "the error is said once, by the `error:` line: {stderr}"
    );
    errors[0].to_string()
}

#[test]
fn missing_file() {
    let dir = tempdir();
    let path = dir.path().join("nope.wasm");
    let e = serve_fails(&[path_str(&path)]);
    assert!(e.contains("nope.wasm") && e.contains("No such file"), "{e}");
}

#[test]
fn not_wasm() {
    let dir = tempdir();
    let path = dir.path().join("hello.txt.wasm");
    write(&path, "Hello World!");
    let e = serve_fails(&[path_str(&path)]);
    assert!(
        e.contains("hello.txt.wasm") && e.contains("not a WebAssembly file"),
        "{e}"
    );
}

#[test]
fn core_module() {
    let dir = tempdir();
    let path = dir.path().join("core.wasm");
    write(&path, CORE_MODULE);
    let e = serve_fails(&[path_str(&path)]);
    assert!(
        e.contains("core.wasm") && e.contains("core WebAssembly module, not a component"),
        "{e}"
    );
}

#[test]
fn component_without_the_handler_export() {
    let dir = tempdir();
    let path = dir.path().join("empty.wasm");
    write(&path, EMPTY_COMPONENT);
    let e = serve_fails(&[path_str(&path)]);
    assert!(
        e.contains("empty.wasm") && e.contains("does not export `wasi:http/incoming-handler"),
        "{e}"
    );
}

/// A wasi:http 0.3 handler of a later release than wasmtime 48's 0.3.0 is
/// refused before compiling, by `serve` and by `check` alike, with a line
/// saying which release this host links.
#[test]
fn a_wasi_http_0_3_handler_of_a_later_release() {
    let dir = tempdir();
    let path = dir.path().join("p3.wasm");
    let wasm = wat::parse_str(
        r#"(component (instance $i) (export "wasi:http/handler@0.3.2" (instance $i)))"#,
    )
    .unwrap();
    write(&path, wasm);
    let e = serve_fails(&[path_str(&path)]);
    for want in [
        "p3.wasm",
        "wasi:http/handler@0.3.2",
        "implements wasi:http 0.3.0 only",
    ] {
        assert!(e.contains(want), "{want} not in {e}");
    }
    let (status, _, stderr) = run(&["check", path_str(&path)]);
    assert!(!status.success());
    assert!(stderr.contains("wasip3"), "{stderr}");
}

#[test]
fn truncated_component() {
    let dir = tempdir();
    let path = dir.path().join("half.wasm");
    let bytes = std::fs::read(wasm::HELLO).unwrap();
    write(&path, &bytes[..bytes.len() / 2]);
    let e = serve_fails(&[path_str(&path)]);
    assert!(
        e.contains("half.wasm") && e.contains("not a valid component"),
        "{e}"
    );
}

#[test]
fn port_already_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (status, _, stderr) = run(&[
        "serve",
        wasm::HELLO,
        "--listen",
        &addr,
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    let e = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .expect(&stderr);
    assert!(e.contains(&addr) && e.contains("in use"), "{e}");
    assert!(!stderr.contains("listening"), "{stderr}");
    assert!(!stderr.contains("keep serving"), "{stderr}");
}

#[test]
fn a_zero_memory_budget() {
    let (status, _, stderr) = run(&["serve", wasm::HELLO, "--max-total-memory", "0"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--max-total-memory") && stderr.contains("must be more than 0"),
        "{stderr}"
    );
    assert!(!stderr.contains("listening"), "{stderr}");
}

#[test]
fn broken_manifest() {
    let dir = tempdir();
    let manifest = dir.path().join("wasmlet.toml");
    write(
        &manifest,
        "[[route]]\npath = \"/\"\ncomponent = \"hello.wasm\"\ncolour = \"blue\"\n",
    );
    let e = serve_fails(&["--config", path_str(&manifest)]);
    assert!(
        e.contains("wasmlet.toml") && e.contains("line 4") && e.contains("unknown field `colour`"),
        "{e}"
    );
}

#[test]
fn manifest_naming_a_missing_component() {
    let dir = tempdir();
    let manifest = dir.path().join("wasmlet.toml");
    write(
        &manifest,
        "[[route]]\npath = \"/\"\ncomponent = \"gone.wasm\"\n",
    );
    let e = serve_fails(&["--config", path_str(&manifest)]);
    assert!(e.contains("gone.wasm"), "{e}");
}

/// Issue 31, finding 2: a route given twice names both of its lines.
#[test]
fn duplicate_route_names_both_lines() {
    let dir = tempdir();
    let manifest = dir.path().join("dup.toml");
    write(
        &manifest,
        "[[route]]\npath = \"/\"\ncomponent = \"a.wasm\"\n\n[[route]]\npath = \"/\"\ncomponent = \"b.wasm\"\n",
    );
    let e = serve_fails(&["--config", path_str(&manifest)]);
    assert!(
        e.contains("dup.toml") && e.contains("duplicate route `/`: at line 1 and at line 5"),
        "{e}"
    );
}
