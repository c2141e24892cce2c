//! What `--cache-dir` holds, named in one place, and its folders' rule.
//!
//! Two stores write there: compiled components at the top
//! (`HEX-ENGINE.cwasm`, by the compile cache in `wasm/`) and pulled OCI
//! blobs and signature records under `oci/` (`HEX`, by the OCI store); the
//! cache budget in `control/` reads the same names back to prune them.
//! Writers and the reader share the names here so they cannot drift apart.
//!
//! The folders hold native code the host will run, so each is used only if
//! it is a real directory (not a symlink) that the host's user owns and no
//! one else may write to; temporary files get unguessable names.

use super::digest::{Digest, is_hex_digit};
use anyhow::{Context, Result, bail};
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// What a file name in one of the cache's folders says it is.
pub enum Name {
    /// An entry named by this digest.
    Entry(Digest),
    /// A write in progress (or left by a crash).
    Temp,
    /// Not a name the host writes: neither counted nor removed.
    Foreign,
}

/// The compiled entry for the wasm whose sha256 is `hex`, compiled by the
/// engine whose fingerprint is `engine`: `HEX-ENGINE.cwasm`.
pub fn compiled_entry(hex: &str, engine: &str) -> String {
    format!("{hex}-{engine}.cwasm")
}

/// A fresh temporary file beside the compiled `entry`:
/// `HEX-ENGINE.tmp-RANDOM`.
pub fn compiled_temp(entry: &Path) -> Result<PathBuf> {
    Ok(entry.with_extension(format!("tmp-{}", random_hex()?)))
}

/// A fresh temporary file in one of the store's folders: `.temp-RANDOM`.
pub fn stored_temp(dir: &Path) -> Result<PathBuf> {
    Ok(dir.join(format!(".temp-{}", random_hex()?)))
}

/// Creates `path` for writing, exclusively (never an existing file, never
/// through a symlink), readable by this user only: how every temporary file
/// under --cache-dir is made, so nothing planted there is written through.
pub fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// `HEX-ENGINE.cwasm`, or `HEX-ENGINE.tmp-RANDOM` while it is written.
pub fn compiled_name(name: &str) -> Name {
    let Some((stem, extension)) = name.split_once('.') else {
        return Name::Foreign;
    };
    let Some((digest, engine)) = stem.split_once('-') else {
        return Name::Foreign;
    };
    let Some(digest) = Digest::from_hex(digest) else {
        return Name::Foreign;
    };
    if engine.is_empty() || !engine.bytes().all(is_hex_digit) {
        return Name::Foreign;
    }
    match extension {
        "cwasm" => Name::Entry(digest),
        tmp if tmp.starts_with("tmp-") => Name::Temp,
        _ => Name::Foreign,
    }
}

/// `HEX` (a blob, or the signature record of the manifest `HEX`), or
/// `.temp-RANDOM` while it is written.
pub fn stored_name(name: &str) -> Name {
    if let Some(digest) = Digest::from_hex(name) {
        Name::Entry(digest)
    } else if name.starts_with(".temp-") {
        Name::Temp
    } else {
        Name::Foreign
    }
}

/// Marks a cache entry as used now, so it is among the last to go.
pub fn touch(path: &Path) {
    let _ = std::fs::File::open(path).and_then(|f| f.set_modified(SystemTime::now()));
}

/// Permission bits that let others than the owner write to a directory.
const OTHERS_WRITE: u32 = 0o022;

/// Creates `dir` if needed (private to this user), then checks that this
/// user owns it and no one else may write to it. The OCI store applies the
/// same rule to `--cache-dir` and each of its own folders.
pub fn usable_dir(dir: &Path) -> Result<()> {
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
pub fn private_subdir(dir: &Path) -> Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).context("cannot create it"),
    }
    check_private(dir)
}

/// `dir` itself (not a symlink) is a directory this user owns and no one
/// else may write to.
pub fn check_private(dir: &Path) -> Result<()> {
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

/// 128 random bits as hex, from the kernel.
fn random_hex() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

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
