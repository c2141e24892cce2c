//! Compiling a component in a child process, so the compiler's heap dies
//! with it.
//!
//! Cranelift allocates a few hundred MiB to compile a 13–18 MB Python or
//! JavaScript component. Freed in the host, most of it comes back to the
//! kernel (see [`crate::wasm::heap`]), but not all: measured with the JavaScript
//! hello, a host that compiled it held 111–119 MiB PSS against 54 MiB for
//! one that loaded the same component from the compile cache, because live
//! objects stay scattered over the pages the compiler used. A child
//! (`wasmlet precompile`, reading wasm on stdin and writing the compiled
//! artifact on stdout) leaves nothing behind: the host only deserialises
//! the artifact, exactly as on a cache hit. If the child cannot be run, or
//! its artifact does not fit this engine, the host compiles in-process.

use anyhow::{Context, Result, bail};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Name of the hidden subcommand the child runs.
pub const SUBCOMMAND: &str = "precompile";

/// Where components are compiled.
#[derive(Debug, Clone, Default)]
pub enum Compiler {
    /// In this process (tests, `wasmlet check`, library users).
    #[default]
    InProcess,
    /// In a child running this executable's [`SUBCOMMAND`].
    Subprocess(PathBuf),
}

impl Compiler {
    /// Compiles `wasm` for `engine`.
    pub fn compile(&self, engine: &Engine, wasm: &[u8]) -> Result<Component> {
        let Compiler::Subprocess(exe) = self else {
            return in_process(engine, wasm);
        };
        match precompile_in_child(exe, wasm) {
            Ok(artifact) => match deserialize(engine, &artifact) {
                Ok(component) => Ok(component),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "the compiler child's artifact does not fit this engine; compiling in-process");
                    in_process(engine, wasm)
                }
            },
            Err(ChildError::Refused(message)) => bail!("{message}"),
            Err(ChildError::Failed(e)) => {
                tracing::warn!(error = %format!("{e:#}"), "could not compile in a child process; compiling in-process");
                in_process(engine, wasm)
            }
        }
    }
}

/// Loads a compiled artifact this host (or its compiler child) wrote.
#[allow(unsafe_code)]
pub(crate) fn deserialize(engine: &Engine, artifact: &[u8]) -> Result<Component> {
    // SAFETY: `Component::deserialize` trusts its input to be a compiled
    // artifact. A cache entry's checksum matched, so these are the exact
    // bytes this host wrote with `Component::serialize`; a compiler child's
    // are what this same executable's `precompile_component` wrote to a
    // pipe only the host reads. wasmtime itself checks that the artifact
    // fits this engine's version and settings.
    unsafe { Component::deserialize(engine, artifact) }.map_err(Into::into)
}

fn in_process(engine: &Engine, wasm: &[u8]) -> Result<Component> {
    Ok(Component::from_binary(engine, wasm)?)
}

enum ChildError {
    /// The child ran and refused the input (not a valid component): its
    /// message is the error.
    Refused(String),
    /// The child could not do its work at all.
    Failed(anyhow::Error),
}

fn precompile_in_child(exe: &PathBuf, wasm: &[u8]) -> Result<Vec<u8>, ChildError> {
    let mut child = Command::new(exe)
        .arg(SUBCOMMAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("RUST_LOG", "warn")
        .spawn()
        .with_context(|| format!("failed to run `{} {SUBCOMMAND}`", exe.display()))
        .map_err(ChildError::Failed)?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    // Feed stdin and drain stderr on their own threads: the child writes
    // its artifact only after reading all of its input, and a pipe holds
    // only 64 KiB.
    let artifact = std::thread::scope(|scope| {
        scope.spawn(move || {
            let _ = stdin.write_all(wasm);
        });
        let errors = scope.spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let mut artifact = Vec::new();
        let read = child
            .stdout
            .take()
            .expect("piped")
            .read_to_end(&mut artifact);
        let status = child.wait();
        let errors = errors.join().unwrap_or_default();
        (read, status, errors, artifact)
    });
    let (read, status, errors, artifact) = artifact;
    let status = status
        .context("the compiler child vanished")
        .map_err(ChildError::Failed)?;
    read.context("failed to read the compiler child's output")
        .map_err(ChildError::Failed)?;
    match status.code() {
        Some(0) => Ok(artifact),
        Some(REFUSED) => Err(ChildError::Refused(
            errors.trim().trim_start_matches("error: ").to_string(),
        )),
        _ => Err(ChildError::Failed(anyhow::anyhow!(
            "the compiler child exited with {status}: {}",
            errors.trim()
        ))),
    }
}

/// The child's exit status when the input is not a valid component.
pub const REFUSED: i32 = 3;

/// The child's side: compiles the wasm on stdin for the engine `engine`
/// builds for it (which engine depends on the component's wasi:http
/// world), writes the artifact to stdout. Returns the exit status.
pub fn run_child(engine: impl FnOnce(&[u8]) -> Result<Engine>) -> i32 {
    let mut wasm = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut wasm) {
        eprintln!("error: reading the component from stdin: {e}");
        return 1;
    }
    let engine = match engine(&wasm) {
        Ok(engine) => engine,
        Err(e) => {
            eprintln!("error: {e:#}");
            return REFUSED;
        }
    };
    let artifact = match engine.precompile_component(&wasm) {
        Ok(artifact) => artifact,
        Err(e) => {
            eprintln!("error: {e:#}");
            return REFUSED;
        }
    };
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(&artifact).and_then(|()| stdout.flush()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: writing the artifact: {e}");
            1
        }
    }
}
