//! Keeping everything under `--cache-dir` within `--cache-max-size`.
//!
//! Two stores write there and neither removes entries on its own: compiled
//! components (`HEX-ENGINE.cwasm`, see [`crate::wasm::cache`]) and pulled OCI
//! manifests, layers and signature records (`oci/`, see
//! [`crate::oci::store`]). In Kubernetes the folder is an emptyDir with a
//! `sizeLimit`, and past it kubelet evicts the pod. So after a reload writes
//! an entry, and when each reload ends, entries go least recently used
//! first (oldest mtime; reading an entry touches it) until the total fits.
//! What the serving routing table uses, or the reload in progress, is never
//! removed: if that alone is over the cap, the cap gives way and a warning
//! says so, once. Only names the host writes are counted and removed; the
//! temporary file of a write in progress is counted but left alone unless
//! nothing has written to it for [`STALE_TEMP`].
//!
//! A file counts what it takes on disk, as kubelet measures a volume: its
//! allocated blocks, and at least [`MIN_FILE_CHARGE`] (its block and
//! inode), so many small files cannot slip past the cap by their lengths.

use crate::base::cache_dir::{Name, compiled_name, stored_name};
use crate::base::digest::Digest;
use crate::observe::metrics::Metrics;
use crate::oci::layout::{self, Selected};
use crate::oci::store::BlobStore;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// How long a temporary file may go unwritten before it counts as left
/// behind by a crash. A live write renames its file within seconds: a
/// download writes every chunk as it arrives (and an attempt is bounded by
/// --pull-timeout), a compile writes its finished artifact in one go.
pub const STALE_TEMP: Duration = Duration::from_secs(60 * 60);

/// What a file counts for at the least: one 4 KiB block, the smallest a
/// filesystem allocates to a file with any content, which also stands for
/// its inode and directory entry.
pub const MIN_FILE_CHARGE: u64 = 4 << 10;

/// One version a table serves, as the cache knows it: the sha256 of its
/// wasm and, for an `oci://` component, the manifest digest its reference
/// resolved to.
pub type Served = (Digest, Option<Digest>);

/// Digests whose entries are not to be removed.
type InUse = HashSet<Digest>;

/// What one [`CacheBudget::enforce`] left, and removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Bytes on disk under `--cache-dir` (the host's own files, each its
    /// allocated blocks and at least [`MIN_FILE_CHARGE`]) after pruning.
    pub bytes: u64,
    /// Files removed by this call.
    pub removed: u64,
}

pub struct CacheBudget {
    root: PathBuf,
    /// `None`: no cap (`--cache-max-size 0`); the gauge is still kept.
    max: Option<u64>,
    /// Read to follow an in-use manifest to the blobs it needs.
    store: BlobStore,
    /// What the reload in progress has loaded: not yet in a published
    /// table, and not to be pruned before it gets there.
    held: Mutex<InUse>,
    /// Whether the last check found the cache over its cap with nothing
    /// left to remove: the warning is logged once, not at every reload,
    /// until the cache fits again.
    over: AtomicBool,
    bytes: Gauge<u64, AtomicU64>,
    pruned: Counter,
}

impl CacheBudget {
    /// A budget of `max` bytes (0: none) for `root`, the `--cache-dir`.
    pub fn new(root: &Path, max: u64, metrics: &Metrics) -> CacheBudget {
        CacheBudget {
            root: root.to_path_buf(),
            max: (max > 0).then_some(max),
            store: BlobStore::new(root.join("oci")),
            held: Mutex::new(InUse::new()),
            over: AtomicBool::new(false),
            bytes: metrics.cache_bytes.clone(),
            pruned: metrics.cache_pruned.clone(),
        }
    }

    /// Spares what `version` uses until [`CacheBudget::release`]: a reload
    /// holds each version it loads. Blocking (reads manifests).
    pub fn hold(&self, version: &Served) {
        let mut held = self.held.lock().unwrap();
        self.uses(&mut held, version);
    }

    /// Ends a reload's holds: from now on only the published table counts.
    pub fn release(&self) {
        self.held.lock().unwrap().clear();
    }

    /// Removes least recently used entries until the cache fits its cap,
    /// sparing what `serving` (every version of the published table) and
    /// the holds use. Blocking: call it off the request path.
    pub fn enforce(&self, serving: &[Served]) -> Usage {
        let mut in_use = self.held.lock().unwrap().clone();
        for version in serving {
            self.uses(&mut in_use, version);
        }
        let now = SystemTime::now();
        let mut files = scan(&self.root);
        let mut bytes: u64 = files.iter().map(|f| f.bytes).sum();
        let mut removed = 0;
        let mut remove = |file: &CacheFile, bytes: &mut u64| {
            match std::fs::remove_file(&file.path) {
                Ok(()) => {
                    tracing::debug!(file = %file.path.display(), bytes = file.bytes, "cache file removed");
                    removed += 1;
                }
                // Gone already (a corrupt entry dropped by its reader).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(file = %file.path.display(), error = %e, "cannot remove cache file");
                    return;
                }
            }
            *bytes -= file.bytes;
        };

        // A temporary file no one writes to any more was left by a crash.
        files.retain(|file| {
            let stale = file.digest.is_none()
                && now.duration_since(file.modified).unwrap_or_default() > STALE_TEMP;
            if stale {
                remove(file, &mut bytes);
            }
            !stale
        });
        if let Some(max) = self.max
            && bytes > max
        {
            let mut unused: Vec<&CacheFile> = files
                .iter()
                .filter(|f| f.digest.as_ref().is_some_and(|d| !in_use.contains(d)))
                .collect();
            unused.sort_by(|a, b| (a.modified, &a.path).cmp(&(b.modified, &b.path)));
            for file in unused {
                if bytes <= max {
                    break;
                }
                remove(file, &mut bytes);
            }
        }

        if removed > 0 {
            tracing::info!(
                removed,
                cache_bytes = bytes,
                max_bytes = self.max,
                "cache pruned, least recently used first"
            );
        }
        match self.max {
            Some(max) if bytes > max => {
                if !self.over.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        cache_bytes = bytes,
                        max_bytes = max,
                        "--cache-dir is over --cache-max-size, and what is left is in use (by the serving handlers, or a write in progress); kept over the cap: raise --cache-max-size, and the volume's size limit with it"
                    );
                }
            }
            _ => self.over.store(false, Ordering::Relaxed),
        }
        self.bytes.set(bytes);
        self.pruned.inc_by(removed);
        Usage { bytes, removed }
    }

    /// Adds what one version needs: the compiled entry named by its wasm's
    /// digest and, for an `oci://` component, the manifest it resolved to
    /// and what that leads to in the store: an index's platform manifest,
    /// the layer and the config (its `created` time). The signature record
    /// of a manifest is named by the manifest's digest, so it stays too.
    fn uses(&self, in_use: &mut InUse, (digest, resolved): &Served) {
        in_use.insert(*digest);
        let mut manifests: Vec<Digest> = resolved.iter().copied().collect();
        while let Some(manifest) = manifests.pop() {
            if !in_use.insert(manifest) {
                continue;
            }
            let Ok(Some(bytes)) = self.store.read_manifest(&manifest) else {
                continue;
            };
            match layout::select(&bytes) {
                Ok(Selected::Layer(layer)) => {
                    in_use.insert(layer.digest);
                    if let Some((config, _)) = layout::config(&bytes) {
                        in_use.insert(config);
                    }
                }
                Ok(Selected::Platform(child)) => manifests.push(child),
                Err(_) => {}
            }
        }
    }
}

/// A file the host wrote under `--cache-dir`.
#[derive(Debug)]
struct CacheFile {
    path: PathBuf,
    bytes: u64,
    modified: SystemTime,
    /// The digest the entry is named by; `None` for a temporary file.
    digest: Option<Digest>,
}

/// Every file the host wrote under `root`: compiled entries at the top,
/// blobs and signature records under `oci/`.
fn scan(root: &Path) -> Vec<CacheFile> {
    let mut files = Vec::new();
    list(root, compiled_name, &mut files);
    for dir in [
        ["oci", "blobs", "sha256"].as_slice(),
        &["oci", "signatures"],
    ] {
        if let Some(dir) = real_dir(root, dir) {
            list(&dir, stored_name, &mut files);
        }
    }
    files
}

/// `root/a/b/…` if each step is a directory, not a symlink: nothing
/// outside `--cache-dir` is ever listed, let alone removed.
fn real_dir(root: &Path, steps: &[&str]) -> Option<PathBuf> {
    let mut dir = root.to_path_buf();
    for step in steps {
        dir.push(step);
        if !std::fs::symlink_metadata(&dir).ok()?.is_dir() {
            return None;
        }
    }
    Some(dir)
}

fn list(dir: &Path, name: fn(&str) -> Name, files: &mut Vec<CacheFile>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(file_name) = entry.file_name().into_string() else {
            continue;
        };
        let digest = match name(&file_name) {
            Name::Entry(digest) => Some(digest),
            Name::Temp => None,
            Name::Foreign => continue,
        };
        // `DirEntry::metadata` does not follow a symlink: a link is skipped.
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        files.push(CacheFile {
            path: entry.path(),
            bytes: charge(&meta),
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            digest,
        });
    }
}

/// What a file counts for: its allocated blocks (`st_blocks` is in
/// 512-byte units), at least [`MIN_FILE_CHARGE`].
fn charge(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.blocks().saturating_mul(512).max(MIN_FILE_CHARGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENGINE: &str = "0123456789abcdef";
    /// What each small file of these tests counts for: one block.
    const C: u64 = MIN_FILE_CHARGE;

    /// A file of `bytes` bytes, last used `age` ago.
    fn file(path: &Path, bytes: usize, age: Duration) {
        file_with(path, &vec![0u8; bytes], age);
    }

    fn file_with(path: &Path, contents: &[u8], age: Duration) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(SystemTime::now() - age)
            .unwrap();
    }

    fn digest(n: u8) -> Digest {
        Digest::from_hex(&format!("{n:02x}").repeat(32)).unwrap()
    }

    fn compiled(root: &Path, n: u8) -> PathBuf {
        root.join(format!("{}-{ENGINE}.cwasm", digest(n).hex()))
    }

    fn budget(root: &Path, max: u64) -> CacheBudget {
        CacheBudget::new(root, max, &Metrics::new())
    }

    fn minutes(n: u64) -> Duration {
        Duration::from_secs(60 * n)
    }

    #[test]
    fn least_recently_used_entries_go_first_and_entries_in_use_never() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // 1 is the oldest but serving; 4 is held by a reload in progress.
        for (n, age) in [(1, 50), (2, 40), (3, 30), (4, 20), (5, 10)] {
            file(&compiled(root, n), 100, minutes(age));
        }
        let budget = budget(root, 2 * C + C / 2);
        budget.hold(&(digest(4), None));
        let usage = budget.enforce(&[(digest(1), None)]);
        assert_eq!(
            usage,
            Usage {
                bytes: 2 * C,
                removed: 3
            }
        );
        let left: Vec<bool> = (1..=5).map(|n| compiled(root, n).exists()).collect();
        assert_eq!(left, [true, false, false, true, false]);
        assert_eq!(budget.bytes.get(), 2 * C);
        assert_eq!(budget.pruned.get(), 3);

        // Released, the held entry goes before a newer one.
        budget.release();
        file(&compiled(root, 6), 100, Duration::ZERO);
        let usage = budget.enforce(&[(digest(1), None)]);
        assert_eq!(
            usage,
            Usage {
                bytes: 2 * C,
                removed: 1
            }
        );
        assert!(!compiled(root, 4).exists() && compiled(root, 6).exists());
        assert_eq!(budget.pruned.get(), 4);
    }

    #[test]
    fn over_the_cap_with_everything_in_use_everything_stays() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        file(&compiled(root, 1), 100, minutes(2));
        file(&compiled(root, 2), 100, minutes(1));
        let budget = budget(root, C + C / 2);
        let serving = [(digest(1), None), (digest(2), None)];
        assert_eq!(
            budget.enforce(&serving),
            Usage {
                bytes: 2 * C,
                removed: 0
            }
        );
        assert!(budget.over.load(Ordering::Relaxed), "warned");
        // Once 2 is no longer served, the cap holds again.
        assert_eq!(
            budget.enforce(&serving[..1]),
            Usage {
                bytes: C,
                removed: 1
            }
        );
        assert!(!budget.over.load(Ordering::Relaxed));
    }

    #[test]
    fn no_cap_removes_nothing_but_stale_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for n in 1..=3 {
            file(&compiled(root, n), 100, minutes(n.into()));
        }
        let blobs = root.join("oci/blobs/sha256");
        let fresh = blobs.join(".temp-7-0");
        let stale = blobs.join(".temp-7-1");
        let compiling = root.join(format!(
            "{}-{ENGINE}.tmp-{}",
            digest(9).hex(),
            "ab".repeat(16)
        ));
        file(&fresh, 10, minutes(1));
        file(&stale, 10, minutes(61));
        file(&compiling, 10, minutes(1));
        let usage = budget(root, 0).enforce(&[]);
        assert_eq!(
            usage,
            Usage {
                bytes: 5 * C,
                removed: 1
            }
        );
        assert!(!stale.exists() && fresh.exists() && compiling.exists());

        // With a cap, a write in progress is counted but never removed.
        let usage = budget(root, 1).enforce(&[]);
        assert_eq!(
            usage,
            Usage {
                bytes: 2 * C,
                removed: 3
            }
        );
        assert!(fresh.exists() && compiling.exists());
    }

    #[test]
    fn files_the_host_did_not_name_are_neither_counted_nor_removed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = dir.path();
        let foreign = [
            root.join("notes.txt"),
            root.join(format!("{}.cwasm", digest(1).hex())),
            root.join("oci/blobs/sha256/readme"),
            root.join("oci/blobs/sha512").join(digest(2).hex()),
        ];
        for path in &foreign {
            file(path, 100, minutes(60 * 24));
        }
        // A link named like an entry, and a linked folder: never followed.
        let victim = outside.path().join(digest(3).hex());
        file(&victim, 100, minutes(60 * 24));
        std::os::unix::fs::symlink(&victim, compiled(root, 3)).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("oci/signatures")).unwrap();
        let usage = budget(root, 1).enforce(&[]);
        assert_eq!(
            usage,
            Usage {
                bytes: 0,
                removed: 0
            }
        );
        assert!(foreign.iter().all(|p| p.exists()) && victim.exists());
    }

    #[test]
    fn a_file_counts_its_blocks_and_at_least_one() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // Many one-byte blobs: by length 1,000 bytes, on disk 1,000 blocks.
        for n in 0..1000u32 {
            let name = format!("{:064x}", n);
            file(&root.join("oci/blobs/sha256").join(name), 1, minutes(1));
        }
        let usage = budget(root, 0).enforce(&[]);
        assert_eq!(usage.bytes, 1000 * MIN_FILE_CHARGE);
        // A larger file counts what it takes, not less.
        let big: Vec<u8> = (0..100_000u32).map(|n| (n * 7919 % 251) as u8).collect();
        file_with(&compiled(root, 1), &big, minutes(1));
        let usage = budget(root, 0).enforce(&[]);
        assert!(
            usage.bytes >= 1000 * MIN_FILE_CHARGE + 100_000,
            "{}",
            usage.bytes
        );
    }

    /// Stores `bytes` as a blob; returns its digest.
    fn blob(root: &Path, bytes: &[u8], age: Duration) -> Digest {
        let digest = Digest::of(bytes);
        file_with(
            &root.join("oci/blobs/sha256").join(digest.hex()),
            bytes,
            age,
        );
        digest
    }

    fn blob_exists(root: &Path, digest: &Digest) -> bool {
        root.join("oci/blobs/sha256").join(digest.hex()).exists()
    }

    #[test]
    fn an_oci_version_keeps_its_index_manifest_layer_config_and_signature() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let old = minutes(60 * 24);
        let layer = blob(root, b"\0asm the component", old);
        let config = blob(root, br#"{"created":"2026-01-01T00:00:00Z"}"#, old);
        let manifest = blob(
            root,
            serde_json::json!({
                "schemaVersion": 2,
                "config": { "mediaType": layout::WASM_CONFIG_TYPE, "digest": config, "size": 34 },
                "layers": [{ "mediaType": "application/wasm", "digest": layer, "size": 18 }],
            })
            .to_string()
            .as_bytes(),
            old,
        );
        let index = blob(
            root,
            serde_json::json!({
                "schemaVersion": 2,
                "manifests": [{
                    "mediaType": layout::OCI_MANIFEST, "digest": manifest, "size": 1,
                    "platform": { "architecture": "wasm", "os": "wasip2" },
                }],
            })
            .to_string()
            .as_bytes(),
            old,
        );
        // The signature record of the index, named by its digest.
        let record = root.join("oci/signatures").join(index.hex());
        file_with(&record, br#"{"payload":"e30=","signature":"c2ln"}"#, old);
        let unused = blob(root, b"another layer", old);
        let unused_record = root.join("oci/signatures").join(unused.hex());
        file_with(
            &unused_record,
            br#"{"payload":"e30=","signature":"c2ln"}"#,
            old,
        );
        file(&compiled(root, 9), 100, old);

        let served = (layer, Some(index));
        let usage = budget(root, 1).enforce(&[served]);
        assert_eq!(
            usage.removed, 3,
            "the other layer, its signature record and compiled entry"
        );
        assert!(!blob_exists(root, &unused) && !compiled(root, 9).exists());
        assert!(!unused_record.exists());
        for kept in [&layer, &config, &manifest, &index] {
            assert!(blob_exists(root, kept), "{kept}");
        }
        assert!(record.exists());
    }
}
