//! Pulled manifests and layers on disk under `--cache-dir`, keyed by digest.
//!
//! A blob is written to a temporary file while it streams in, hashed and
//! counted on the way, and renamed to `blobs/sha256/HEX` only once its
//! digest matches: a reader never sees a partial or unverified blob, and
//! a crash leaves only a temporary file behind. Nothing is held in memory
//! but one chunk.

use super::layout::check_digest;
use anyhow::{Context, Result, bail};
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// The largest manifest read (from a registry or the store): the 4 MiB the
/// distribution spec asks clients to support; a handler's is a few hundred
/// bytes.
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;

#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    /// A store in `root` (created on first write).
    pub fn new(root: PathBuf) -> BlobStore {
        BlobStore { root }
    }

    /// Where the blob `digest` (`sha256:HEX`) lives, present or not.
    pub fn path(&self, digest: &str) -> Result<PathBuf> {
        check_digest(digest)?;
        let hex = &digest["sha256:".len()..];
        Ok(self.root.join("blobs").join("sha256").join(hex))
    }

    /// The blob's path if it is in the store. Marks it used (its mtime),
    /// so `--cache-max-size` prunes it among the last.
    pub fn get(&self, digest: &str) -> Result<Option<PathBuf>> {
        let path = self.path(digest)?;
        if !path.is_file() {
            return Ok(None);
        }
        crate::cache_budget::touch(&path);
        Ok(Some(path))
    }

    /// Reads a stored manifest back, checking its digest again (a cached
    /// manifest decides which layer is served).
    pub fn read_manifest(&self, digest: &str) -> Result<Option<Vec<u8>>> {
        let Some(path) = self.get(digest)? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_MANIFEST_SIZE + 1).read_to_end(&mut bytes))
            .with_context(|| format!("cannot read `{}`", path.display()))?;
        if sha256(&bytes) != digest {
            // Corrupted on disk: forget it, the next pull fetches it again.
            let _ = std::fs::remove_file(&path);
            return Ok(None);
        }
        Ok(Some(bytes))
    }

    /// Stores bytes already checked against `digest`.
    pub async fn put(&self, digest: &str, bytes: &[u8]) -> Result<PathBuf> {
        let chunk = bytes::Bytes::copy_from_slice(bytes);
        let stream = futures_util::stream::iter([Ok::<_, std::io::Error>(chunk)]);
        self.write(digest, bytes.len() as u64, stream).await
    }

    /// Streams a blob to disk, refusing more than `max` bytes and any
    /// content whose sha256 is not `digest`.
    pub async fn write<S>(&self, digest: &str, max: u64, stream: S) -> Result<PathBuf>
    where
        S: Stream<Item = std::io::Result<bytes::Bytes>>,
    {
        let target = self.path(digest)?;
        let dir = target.parent().expect("blobs/sha256");
        tokio::fs::create_dir_all(dir)
            .await
            .with_context(|| format!("cannot create `{}`", dir.display()))?;
        let temp = temp_path(dir);
        let result = write_verified(&temp, digest, max, stream).await;
        match result {
            Ok(()) => {
                tokio::fs::rename(&temp, &target)
                    .await
                    .with_context(|| format!("cannot store `{}`", target.display()))?;
                Ok(target)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&temp).await;
                Err(e)
            }
        }
    }

    /// Records that the signature of `signed` is the manifest `signature`
    /// (both `sha256:…`), so a restart can check it without the registry.
    pub fn set_signature(&self, signed: &str, signature: &str) -> Result<()> {
        check_digest(signed)?;
        check_digest(signature)?;
        let dir = self.root.join("signatures");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create `{}`", dir.display()))?;
        let temp = temp_path(&dir);
        std::fs::write(&temp, signature)
            .and_then(|()| std::fs::rename(&temp, dir.join(&signed["sha256:".len()..])))
            .with_context(|| format!("cannot write in `{}`", dir.display()))
    }

    /// The signature manifest recorded for `signed`, if any.
    pub fn signature(&self, signed: &str) -> Option<String> {
        check_digest(signed).ok()?;
        let path = self
            .root
            .join("signatures")
            .join(&signed["sha256:".len()..]);
        let text = std::fs::read_to_string(&path).ok()?;
        check_digest(text.trim()).ok()?;
        crate::cache_budget::touch(&path);
        Some(text.trim().to_string())
    }

    /// Removes a blob (one found corrupted when read).
    pub fn remove(&self, digest: &str) {
        if let Ok(path) = self.path(digest) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// `temp-PID-N` beside the target, so the rename stays on one filesystem.
fn temp_path(dir: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".temp-{}-{n}", std::process::id()))
}

async fn write_verified<S>(temp: &Path, digest: &str, max: u64, stream: S) -> Result<()>
where
    S: Stream<Item = std::io::Result<bytes::Bytes>>,
{
    let mut file = tokio::fs::File::create(temp)
        .await
        .with_context(|| format!("cannot create `{}`", temp.display()))?;
    let mut hasher = Sha256::new();
    let mut written: u64 = 0;
    let mut stream = std::pin::pin!(stream);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.context("download interrupted")?;
        written += chunk.len() as u64;
        if written > max {
            bail!("{digest}: more than {max} bytes, larger than its limit; download stopped");
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .await
            .with_context(|| format!("cannot write `{}`", temp.display()))?;
    }
    file.sync_all().await.ok();
    let actual = format!("sha256:{}", crate::component::hex(&hasher.finalize()));
    if actual != digest {
        bail!("digest mismatch: expected {digest}, the registry sent {written} bytes of {actual}");
    }
    Ok(())
}

/// `sha256:HEX` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", crate::component::hex(&Sha256::digest(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = std::io::Result<bytes::Bytes>> {
        futures_util::stream::iter(
            parts
                .iter()
                .map(|p| Ok(bytes::Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    fn store() -> (BlobStore, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "wasmlet-store-test-{}-{}",
            std::process::id(),
            temp_path(Path::new("")).display()
        ));
        (BlobStore::new(dir.clone()), dir)
    }

    fn leftovers(dir: &Path) -> usize {
        std::fs::read_dir(dir.join("blobs/sha256"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn stores_verified_blobs_and_nothing_else() {
        let (store, dir) = store();
        let digest = sha256(b"hello world");
        let path = store
            .write(&digest, 100, chunks(&[b"hello ", b"world"]))
            .await
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"hello world");
        assert_eq!(store.get(&digest).unwrap(), Some(path));

        let other = sha256(b"other");
        let e = store
            .write(&other, 100, chunks(&[b"not other"]))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("digest mismatch"), "{e}");
        let e = store
            .write(&other, 3, chunks(&[b"ot", b"her"]))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("larger than its limit"), "{e}");
        let broken = futures_util::stream::iter(vec![
            Ok(bytes::Bytes::from_static(b"ot")),
            Err(std::io::Error::other("connection reset")),
        ]);
        let e = store.write(&other, 100, broken).await.unwrap_err();
        assert!(format!("{e:#}").contains("connection reset"), "{e:#}");
        assert_eq!(store.get(&other).unwrap(), None);
        // Only the one good blob: failed writes leave no temporary files.
        assert_eq!(leftovers(&dir), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_corrupted_manifest_is_forgotten() {
        let (store, dir) = store();
        let digest = sha256(b"{}");
        let path = store.put(&digest, b"{}").await.unwrap();
        assert_eq!(store.read_manifest(&digest).unwrap().unwrap(), b"{}");
        std::fs::write(&path, b"{\"x\":1}").unwrap();
        assert_eq!(store.read_manifest(&digest).unwrap(), None);
        assert!(!path.exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
