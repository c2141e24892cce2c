//! Pulled manifests and layers on disk under `--cache-dir`, keyed by digest.
//!
//! A blob is written to a temporary file while it streams in, hashed and
//! counted on the way, and renamed to `blobs/sha256/HEX` only once its
//! digest matches: a reader never sees a partial or unverified blob, and
//! a crash leaves only a temporary file behind. Nothing is held in memory
//! but one chunk.
//!
//! The store follows the compile cache's rule ([`crate::base::cache_dir`]): it is
//! used only if `--cache-dir` and each of the store's folders are real
//! directories (not symlinks) that the host's user owns and no one else
//! may write to, checked before every write ([`BlobStore::ready`]);
//! otherwise `oci://` components are refused, naming the folder. Temporary
//! files get unguessable names and are created exclusively, never through
//! a symlink.

use crate::base::cache_dir;
use crate::base::digest::{Digest, Hasher};
use anyhow::{Context, Result, bail};
use base64::Engine;
use futures_util::{Stream, StreamExt};
use std::io::{Read, Write};
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

    /// Where the blob `digest` lives, present or not.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join("sha256").join(digest.hex())
    }

    /// The blob's path if it is in the store. Marks it used (its mtime),
    /// so `--cache-max-size` prunes it among the last.
    pub fn get(&self, digest: &Digest) -> Result<Option<PathBuf>> {
        let path = self.path(digest);
        if !path.is_file() {
            return Ok(None);
        }
        cache_dir::touch(&path);
        Ok(Some(path))
    }

    /// Reads a stored manifest back, checking its digest again (a cached
    /// manifest decides which layer is served).
    pub fn read_manifest(&self, digest: &Digest) -> Result<Option<Vec<u8>>> {
        let Some(path) = self.get(digest)? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_MANIFEST_SIZE + 1).read_to_end(&mut bytes))
            .with_context(|| format!("cannot read `{}`", path.display()))?;
        if Digest::of(&bytes) != *digest {
            // Corrupted on disk: forget it, the next pull fetches it again.
            let _ = std::fs::remove_file(&path);
            return Ok(None);
        }
        Ok(Some(bytes))
    }

    /// Stores bytes already checked against `digest`.
    pub async fn put(&self, digest: &Digest, bytes: &[u8]) -> Result<PathBuf> {
        let chunk = bytes::Bytes::copy_from_slice(bytes);
        let stream = futures_util::stream::iter([Ok::<_, std::io::Error>(chunk)]);
        self.write(digest, bytes.len() as u64, stream).await
    }

    /// Checks that the store may be written: `--cache-dir` (the root's
    /// parent) and the store's folders, created if missing, are
    /// directories of this user's that no one else may write to.
    pub fn ready(&self) -> Result<()> {
        let Some(cache_dir) = self.root.parent() else {
            bail!("`{}` has no parent folder", self.root.display());
        };
        cache_dir::check_private(cache_dir)
            .with_context(|| format!("`{}`", cache_dir.display()))?;
        let blobs = self.root.join("blobs");
        for dir in [
            self.root.clone(),
            blobs.clone(),
            blobs.join("sha256"),
            self.root.join("signatures"),
        ] {
            cache_dir::private_subdir(&dir).with_context(|| format!("`{}`", dir.display()))?;
        }
        Ok(())
    }

    /// Streams a blob to disk, refusing more than `max` bytes and any
    /// content whose sha256 is not `digest`.
    pub async fn write<S>(&self, digest: &Digest, max: u64, stream: S) -> Result<PathBuf>
    where
        S: Stream<Item = std::io::Result<bytes::Bytes>>,
    {
        let target = self.path(digest);
        self.ready()?;
        let dir = target.parent().expect("blobs/sha256");
        let (temp, file) = create_temp(dir)?;
        let result = write_verified(&temp, file, digest, max, stream).await;
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

    /// Records a verified cosign signature of the manifest `signed`: the
    /// signed payload and its signature, so a restart checks it again
    /// (with the key then configured) without the registry. One small
    /// file per signed digest, whatever the signature image held.
    pub fn set_signature(&self, signed: &Digest, record: &SignatureRecord) -> Result<()> {
        self.ready()?;
        let dir = self.root.join("signatures");
        let body = serde_json::to_vec(&StoredRecord {
            payload: base64::engine::general_purpose::STANDARD.encode(&record.payload),
            signature: record.signature.clone(),
        })?;
        let (temp, mut file) = create_temp(&dir)?;
        let written = file
            .write_all(&body)
            .and_then(|()| std::fs::rename(&temp, dir.join(signed.hex())));
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written.with_context(|| format!("cannot write in `{}`", dir.display()))
    }

    /// The signature recorded for `signed`, if any (unchecked: verify it).
    pub fn signature(&self, signed: &Digest) -> Option<SignatureRecord> {
        let path = self.root.join("signatures").join(signed.hex());
        let mut text = Vec::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_SIGNATURE_RECORD + 1).read_to_end(&mut text))
            .ok()?;
        let stored: StoredRecord = serde_json::from_slice(&text).ok()?;
        let payload = base64::engine::general_purpose::STANDARD
            .decode(stored.payload)
            .ok()?;
        cache_dir::touch(&path);
        Some(SignatureRecord {
            payload,
            signature: stored.signature,
        })
    }

    /// Removes a blob (one found corrupted when read).
    pub fn remove(&self, digest: &Digest) {
        let _ = std::fs::remove_file(self.path(digest));
    }
}

/// A verified cosign signature: the signed payload and the base64
/// signature of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureRecord {
    pub payload: Vec<u8>,
    pub signature: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredRecord {
    /// base64
    payload: String,
    signature: String,
}

/// The largest signature record read back: a payload of
/// [`super::cosign::MAX_PAYLOAD`] in base64, and its signature.
const MAX_SIGNATURE_RECORD: u64 = 2 * super::cosign::MAX_PAYLOAD;

/// A new file `.temp-RANDOM` in `dir` (beside the target, so the rename
/// stays on one filesystem): an unguessable name, created exclusively and
/// not through a symlink, readable by this user only.
fn create_temp(dir: &Path) -> Result<(PathBuf, std::fs::File)> {
    let temp = cache_dir::stored_temp(dir)?;
    let file = cache_dir::create_private(&temp)
        .with_context(|| format!("cannot create `{}`", temp.display()))?;
    Ok((temp, file))
}

async fn write_verified<S>(
    temp: &Path,
    file: std::fs::File,
    digest: &Digest,
    max: u64,
    stream: S,
) -> Result<()>
where
    S: Stream<Item = std::io::Result<bytes::Bytes>>,
{
    let mut file = tokio::fs::File::from_std(file);
    let mut hasher = Hasher::default();
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
    let actual = hasher.finish();
    if actual != *digest {
        bail!("digest mismatch: expected {digest}, the registry sent {written} bytes of {actual}");
    }
    Ok(())
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

    /// A store in a private temporary folder, and that folder.
    fn store() -> (BlobStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        (BlobStore::new(dir.path().join("oci")), dir)
    }

    fn leftovers(dir: &Path) -> usize {
        std::fs::read_dir(dir.join("oci/blobs/sha256"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn stores_verified_blobs_and_nothing_else() {
        let (store, dir) = store();
        let digest = Digest::of(b"hello world");
        let path = store
            .write(&digest, 100, chunks(&[b"hello ", b"world"]))
            .await
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"hello world");
        assert_eq!(store.get(&digest).unwrap(), Some(path));

        let other = Digest::of(b"other");
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
        assert_eq!(leftovers(dir.path()), 1);
    }

    #[tokio::test]
    async fn a_corrupted_manifest_is_forgotten() {
        let (store, dir) = store();
        let digest = Digest::of(b"{}");
        let path = store.put(&digest, b"{}").await.unwrap();
        assert_eq!(store.read_manifest(&digest).unwrap().unwrap(), b"{}");
        std::fs::write(&path, b"{\"x\":1}").unwrap();
        assert_eq!(store.read_manifest(&digest).unwrap(), None);
        assert!(!path.exists());
        drop(dir);
    }

    #[tokio::test]
    async fn signature_records_round_trip() {
        let (store, _dir) = store();
        let signed = Digest::of(b"manifest");
        assert_eq!(store.signature(&signed), None);
        let record = SignatureRecord {
            payload: b"{\"critical\":{}}".to_vec(),
            signature: "c2ln".into(),
        };
        store.set_signature(&signed, &record).unwrap();
        assert_eq!(store.signature(&signed), Some(record));
    }

    fn chmod(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[tokio::test]
    async fn an_unsafe_folder_or_a_planted_link_is_never_written_through() {
        let (store, dir) = store();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "victim").unwrap();
        let digest = Digest::of(b"blob");
        store.put(&digest, b"blob").await.unwrap();
        let sha = dir.path().join("oci/blobs/sha256");

        // Others may write to --cache-dir, or to one of the store's folders.
        for folder in [
            dir.path().to_path_buf(),
            dir.path().join("oci"),
            sha.clone(),
        ] {
            chmod(&folder, 0o777);
            let e = format!("{:#}", store.ready().unwrap_err());
            assert!(e.contains("mode 777"), "{e}");
            assert!(e.contains(&folder.display().to_string()), "{e}");
            let other = Digest::of(b"other");
            assert!(store.put(&other, b"other").await.is_err());
            assert!(store.get(&other).unwrap().is_none());
            chmod(&folder, 0o700);
        }
        // A folder replaced by a symlink.
        let signatures = dir.path().join("oci/signatures");
        std::fs::remove_dir(&signatures).unwrap();
        std::os::unix::fs::symlink(dir.path(), &signatures).unwrap();
        let e = format!("{:#}", store.ready().unwrap_err());
        assert!(e.contains("symlink"), "{e}");
        std::fs::remove_file(&signatures).unwrap();
        store.ready().unwrap();

        // Links planted under the names the store used to pick.
        for n in 0..16 {
            let name = format!(".temp-{}-{n}", std::process::id());
            std::os::unix::fs::symlink(&victim, sha.join(&name)).unwrap();
            std::os::unix::fs::symlink(&victim, signatures.join(name)).unwrap();
        }
        store.put(&Digest::of(b"more"), b"more").await.unwrap();
        let record = SignatureRecord {
            payload: b"p".to_vec(),
            signature: "s".into(),
        };
        store.set_signature(&digest, &record).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "victim");
    }
}
