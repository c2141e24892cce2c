//! The on-disk cache of compiled components.
//!
//! An entry is named by the wasm's sha256 and the engine's fingerprint, so a
//! restart or a swap back to a known version skips compilation (while the
//! entry is kept: [`crate::control::cache_budget`] prunes the least recently used). An entry
//! starts with the sha256 of the rest of the file; a corrupt entry (bad
//! checksum) or a foreign one (wasmtime refuses it) is ignored, removed and
//! rebuilt.
//!
//! The directory is trusted: like wasmtime's own cache, an entry that
//! passes both checks is native code the host will run, and the checksum
//! only catches accidents, not an attacker (anyone who can write an entry
//! can write its checksum). So the cache is used only if the directory is
//! owned by the host's user and no one else may write to it; otherwise it
//! is disabled with a warning. Entries are written to a new file with an
//! unpredictable name, created exclusively and never through a symlink,
//! then renamed into place.

use crate::base::cache_dir::{self, usable_dir};
use crate::wasm::compiler::{self, Compiler};
use crate::wasm::engine;
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::io::Write;
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
    /// What compiles on a miss.
    compiler: Compiler,
}

impl CompileCache {
    /// A cache in `dir`, created if needed; an unusable or unsafe
    /// directory disables the cache with a warning rather than failing the
    /// host.
    pub fn new(dir: Option<&Path>) -> CompileCache {
        let dir = dir.and_then(|dir| match usable_dir(dir) {
            Ok(()) => Some(dir.to_path_buf()),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %format!("{e:#}"), "compile cache disabled");
                None
            }
        });
        CompileCache {
            dir,
            compiler: Compiler::InProcess,
        }
    }

    /// The same cache, compiling with `compiler` on a miss.
    pub fn with_compiler(self, compiler: Compiler) -> CompileCache {
        CompileCache { compiler, ..self }
    }

    pub fn disabled() -> CompileCache {
        CompileCache::new(None)
    }

    /// Where the entry for a wasm with this digest, compiled for `engine`,
    /// lives.
    pub fn entry_path(&self, digest: &str, engine: &Engine) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        Some(dir.join(cache_dir::compiled_entry(
            digest,
            &engine::fingerprint(engine),
        )))
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
            crate::wasm::heap::release_free_pages();
        }
        compiled
    }

    fn compile_or_load(
        &self,
        engine: &Engine,
        wasm: &[u8],
        digest: &str,
    ) -> Result<(Component, CacheOutcome)> {
        let Some(entry) = self.entry_path(digest, engine) else {
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
    match compiler::deserialize(engine, &bytes[CHECKSUM_LEN..]) {
        Ok(component) => {
            // Recently used entries are the last `--cache-max-size` prunes.
            cache_dir::touch(entry);
            Some(component)
        }
        Err(e) => {
            tracing::warn!(entry = %entry.display(), error = %e, "ignoring compile cache entry this engine cannot load");
            let _ = std::fs::remove_file(entry);
            None
        }
    }
}

fn store_entry(component: &Component, entry: &Path) -> Result<()> {
    let artifact = component.serialize()?;
    let mut bytes = Vec::with_capacity(CHECKSUM_LEN + artifact.len());
    bytes.extend_from_slice(&Sha256::digest(&artifact));
    bytes.extend_from_slice(&artifact);
    // Write beside the entry, then rename: readers never see half an
    // entry. A fresh, unguessable name, created exclusively and not through
    // a symlink, so nothing planted in the directory is written through.
    let tmp = cache_dir::compiled_temp(entry)?;
    let written = cache_dir::create_private(&tmp).and_then(|mut file| file.write_all(&bytes));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("failed to write `{}`", tmp.display()));
    }
    std::fs::rename(&tmp, entry).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("failed to rename into `{}`", entry.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(dir: &Path, mode: u32) {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_directory_others_can_write_disables_the_cache() {
        let engine = Engine::default();
        let dir = tempfile::tempdir().unwrap();
        for shared in [0o777, 0o775, 0o703] {
            mode(dir.path(), shared);
            let cache = CompileCache::new(Some(dir.path()));
            assert!(cache.entry_path("x", &engine).is_none(), "mode {shared:o}");
        }
        mode(dir.path(), 0o755);
        let cache = CompileCache::new(Some(dir.path()));
        assert!(cache.entry_path("x", &engine).is_some());
    }

    #[test]
    fn an_entry_is_never_written_through_a_planted_symlink() {
        let engine = Engine::default();
        let wasm = wat::parse_str("(component)").unwrap();
        let component = Component::new(&engine, &wasm).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "victim").unwrap();
        let entry = dir.path().join("entry.cwasm");
        // The temporary name the writer used to pick: this pid, predictable.
        let planted = entry.with_extension(format!("tmp{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        let _ = store_entry(&component, &entry);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "victim");
        assert!(
            write_leftovers(dir.path()).is_empty(),
            "no temporary file is left behind"
        );
        assert!(
            load_entry(&engine, &entry).is_some(),
            "the entry was stored"
        );
    }

    fn write_leftovers(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains(".tmp-"))
            .collect()
    }
}
