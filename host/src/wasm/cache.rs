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

use crate::wasm::compiler::Compiler;
use crate::wasm::engine;
use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
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
        Some(dir.join(format!("{digest}-{}.cwasm", engine::fingerprint(engine))))
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

/// Permission bits that let others than the owner write to a directory.
const OTHERS_WRITE: u32 = 0o022;

/// Creates `dir` if needed (private to this user), then checks that this
/// user owns it and no one else may write to it. The OCI store applies the
/// same rule to `--cache-dir` and each of its own folders.
pub(crate) fn usable_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .context("cannot create it")?;
    check_private(dir)
}

/// Creates the one folder `dir` if it is missing (its parent must exist and
/// is not created: a symlink on the way is never followed into), then
/// checks it as [`usable_dir`] does.
pub(crate) fn private_subdir(dir: &Path) -> Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).context("cannot create it"),
    }
    check_private(dir)
}

/// `dir` itself (not a symlink) is a directory this user owns and no one
/// else may write to.
pub(crate) fn check_private(dir: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(dir).context("cannot read it")?;
    if !meta.is_dir() {
        bail!("not a directory (a symlink is not accepted)");
    }
    let uid = effective_uid();
    if meta.uid() != uid {
        bail!(
            "owned by uid {}, not by this process's uid {uid}",
            meta.uid()
        );
    }
    if meta.mode() & OTHERS_WRITE != 0 {
        bail!(
            "writable by its group or others (mode {:o})",
            meta.mode() & 0o7777
        );
    }
    Ok(())
}

#[allow(unsafe_code)]
fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
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
        Ok(component) => {
            // Recently used entries are the last `--cache-max-size` prunes.
            crate::control::cache_budget::touch(entry);
            Some(component)
        }
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
    // Write beside the entry, then rename: readers never see half an
    // entry. A fresh, unguessable name, created exclusively and not through
    // a symlink, so nothing planted in the directory is written through.
    let tmp = entry.with_extension(format!("tmp-{}", random_hex()?));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .and_then(|mut file| file.write_all(&bytes));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("failed to write `{}`", tmp.display()));
    }
    std::fs::rename(&tmp, entry).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("failed to rename into `{}`", entry.display())
    })
}

/// 128 random bits as hex, from the kernel.
pub(crate) fn random_hex() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
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

    #[test]
    fn a_directory_owned_by_someone_else_or_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        assert!(usable_dir(&link).is_err(), "a symlink is refused");
        if effective_uid() == 0 {
            // Root can hand a directory to another user to test ownership.
            let other = dir.path().join("other");
            std::fs::create_dir(&other).unwrap();
            std::os::unix::fs::chown(&other, Some(65534), None).unwrap();
            let e = usable_dir(&other).unwrap_err();
            assert!(format!("{e:#}").contains("owned by uid 65534"), "{e:#}");
        }
    }
}
