//! The on-disk cache of compiled components.
//!
//! An entry is named by the wasm's sha256 and the engine's fingerprint, so a
//! restart or a swap back to a known version skips compilation. An entry
//! starts with the sha256 of the rest of the file; a corrupt entry (bad
//! checksum) or a foreign one (wasmtime refuses it) is ignored, removed and
//! rebuilt. The directory must be writable only by the host's user: like
//! wasmtime's own cache, an entry that passes both checks is native code
//! the host will run.

use crate::compiler::Compiler;
use crate::engine;
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

const CHECKSUM_LEN: usize = 32;

/// Whether a compile was served from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Miss,
    Disabled,
}

impl CacheOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Disabled => "disabled",
        }
    }
}

#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: Option<PathBuf>,
    engine_key: String,
    /// What compiles on a miss.
    compiler: Compiler,
}

impl CompileCache {
    /// A cache in `dir`, created if needed; an unusable directory disables
    /// the cache with a warning rather than failing the host.
    pub fn new(dir: Option<&Path>, engine: &Engine) -> CompileCache {
        let dir = dir.and_then(|dir| match std::fs::create_dir_all(dir) {
            Ok(()) => Some(dir.to_path_buf()),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "compile cache disabled: cannot create its directory");
                None
            }
        });
        CompileCache {
            dir,
            engine_key: engine::fingerprint(engine),
            compiler: Compiler::InProcess,
        }
    }

    /// The same cache, compiling with `compiler` on a miss.
    pub fn with_compiler(self, compiler: Compiler) -> CompileCache {
        CompileCache { compiler, ..self }
    }

    pub fn disabled(engine: &Engine) -> CompileCache {
        CompileCache::new(None, engine)
    }

    /// Where the entry for a wasm with this digest lives.
    pub fn entry_path(&self, digest: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        Some(dir.join(format!("{digest}-{}.cwasm", self.engine_key)))
    }

    /// Compiles `wasm` (whose sha256 is `digest`), or loads it from the
    /// cache. After a compile, the heap's free pages go back to the kernel:
    /// the compiler's own (when it ran in-process) and the artifact's.
    pub fn compile(
        &self,
        engine: &Engine,
        wasm: &[u8],
        digest: &str,
    ) -> Result<(Component, CacheOutcome)> {
        let compiled = self.compile_or_load(engine, wasm, digest);
        if !matches!(compiled, Ok((_, CacheOutcome::Hit))) {
            crate::heap::release_free_pages();
        }
        compiled
    }

    fn compile_or_load(
        &self,
        engine: &Engine,
        wasm: &[u8],
        digest: &str,
    ) -> Result<(Component, CacheOutcome)> {
        let Some(entry) = self.entry_path(digest) else {
            return Ok((self.compiler.compile(engine, wasm)?, CacheOutcome::Disabled));
        };
        if let Some(component) = load_entry(engine, &entry) {
            return Ok((component, CacheOutcome::Hit));
        }
        let component = self.compiler.compile(engine, wasm)?;
        if let Err(e) = store_entry(&component, &entry) {
            tracing::warn!(entry = %entry.display(), error = %format!("{e:#}"), "could not write compile cache entry");
        }
        Ok((component, CacheOutcome::Miss))
    }
}

fn load_entry(engine: &Engine, entry: &Path) -> Option<Component> {
    let bytes = std::fs::read(entry).ok()?;
    let verified = bytes.len() > CHECKSUM_LEN
        && Sha256::digest(&bytes[CHECKSUM_LEN..]).as_slice() == &bytes[..CHECKSUM_LEN];
    if !verified {
        tracing::warn!(entry = %entry.display(), "ignoring corrupt compile cache entry (checksum mismatch)");
        let _ = std::fs::remove_file(entry);
        return None;
    }
    match deserialize(engine, &bytes[CHECKSUM_LEN..]) {
        Ok(component) => Some(component),
        Err(e) => {
            tracing::warn!(entry = %entry.display(), error = %e, "ignoring compile cache entry this engine cannot load");
            let _ = std::fs::remove_file(entry);
            None
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

fn store_entry(component: &Component, entry: &Path) -> Result<()> {
    let artifact = component.serialize()?;
    let mut bytes = Vec::with_capacity(CHECKSUM_LEN + artifact.len());
    bytes.extend_from_slice(&Sha256::digest(&artifact));
    bytes.extend_from_slice(&artifact);
    // Write beside the entry, then rename: readers never see half an entry.
    let tmp = entry.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, &bytes).with_context(|| format!("failed to write `{}`", tmp.display()))?;
    std::fs::rename(&tmp, entry)
        .with_context(|| format!("failed to rename into `{}`", entry.display()))
}
