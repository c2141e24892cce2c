//! Key-value stores: the backends and their limits.
//!
//! A store is an [`Arc<dyn Backend>`](Backend): `memory` (in the process,
//! until the host stops), `file` (an embedded redb database under
//! `--data-dir`, one file per store) or `redis` (for several replicas).
//! The wasi:keyvalue host in `wasm/` opens them for the routes granted them;
//! this layer knows nothing of guests, only keys, values and counters.
//!
//! Every backend keeps wasmtime's semantics for `increment`: the value is a
//! decimal UTF-8 `u64`, a missing key counts as 0, an overflow is an error,
//! and the read-modify-write is atomic (one write transaction in `file`,
//! `INCRBY` in `redis`).
//!
//! - [`memory`]: a map in the process, optionally preloaded.
//! - [`file`]: redb, with group commit: one fsync for every write queued meanwhile.
//! - [`redis`]: the `redis` crate's connection manager, created lazily.
//! - [`stores`]: the manifest's stores, opened once and kept across reloads.

pub mod file;
pub mod memory;
pub mod redis;
pub mod stores;

use futures_util::future::BoxFuture;

/// Keys one `list-keys` call returns at most; the cursor gives the rest.
pub const LIST_PAGE_KEYS: usize = 1000;

/// What a backend answers when an operation fails: the interface's own
/// errors. `Other` text is shown to the guest, so it never holds a URL,
/// a password or a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvError {
    /// The store does not exist or is not granted to the route.
    NoSuchStore,
    /// The store refused the operation.
    AccessDenied,
    /// Anything else: a bad value, an overflow, a backend down or slow.
    Other(String),
}

impl KvError {
    /// An `Other` error with `message`.
    pub fn other(message: impl Into<String>) -> Self {
        KvError::Other(message.into())
    }
}

impl std::fmt::Display for KvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KvError::NoSuchStore => f.write_str("no such store"),
            KvError::AccessDenied => f.write_str("access denied"),
            KvError::Other(message) => f.write_str(message),
        }
    }
}

/// A backend's answer, later.
pub type KvFuture<'a, T> = BoxFuture<'a, Result<T, KvError>>;

/// What `get-many` answers: each key with its value, `None` when missing.
pub type Found = Vec<Option<(String, Vec<u8>)>>;

/// One page of `list-keys`: the keys and where the next page starts.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct KeyPage {
    pub keys: Vec<String>,
    pub cursor: Option<u64>,
}

/// A key-value store. Object safe (boxed futures), shared by every request
/// of every route granted it. The caller bounds each call in time.
pub trait Backend: Send + Sync {
    /// The value of `key`, if any.
    fn get(&self, key: String) -> KvFuture<'_, Option<Vec<u8>>>;
    /// Sets `key` to `value`.
    fn set(&self, key: String, value: Vec<u8>) -> KvFuture<'_, ()>;
    /// Removes `key`; a missing key is not an error.
    fn delete(&self, key: String) -> KvFuture<'_, ()>;
    /// Whether `key` has a value.
    fn exists(&self, key: String) -> KvFuture<'_, bool>;
    /// At most [`LIST_PAGE_KEYS`] keys from `cursor` (the start when `None`).
    fn list_keys(&self, cursor: Option<u64>) -> KvFuture<'_, KeyPage>;
    /// Adds `delta` to the decimal counter at `key`, atomically, and
    /// returns the new value (see [`incremented`]).
    fn increment(&self, key: String, delta: u64) -> KvFuture<'_, u64>;

    /// The values of `keys`, `None` for a missing one.
    fn get_many(&self, keys: Vec<String>) -> KvFuture<'_, Found> {
        Box::pin(async move {
            let mut found = Vec::with_capacity(keys.len());
            for key in keys {
                let value = self.get(key.clone()).await?;
                found.push(value.map(|value| (key, value)));
            }
            Ok(found)
        })
    }
    /// Sets every pair.
    fn set_many(&self, pairs: Vec<(String, Vec<u8>)>) -> KvFuture<'_, ()> {
        Box::pin(async move {
            for (key, value) in pairs {
                self.set(key, value).await?;
            }
            Ok(())
        })
    }
    /// Removes every key.
    fn delete_many(&self, keys: Vec<String>) -> KvFuture<'_, ()> {
        Box::pin(async move {
            for key in keys {
                self.delete(key).await?;
            }
            Ok(())
        })
    }
}

/// wasmtime's `increment`: `current` read as a decimal UTF-8 `u64` (a
/// missing key is 0) plus `delta`; not a number or an overflow is an
/// error, with wasmtime's messages.
pub fn incremented(current: Option<&[u8]>, delta: u64) -> Result<u64, KvError> {
    let current = match current {
        None => 0,
        Some(bytes) => std::str::from_utf8(bytes)
            .map_err(|e| KvError::other(e.to_string()))?
            .parse::<u64>()
            .map_err(|e| KvError::other(e.to_string()))?,
    };
    current
        .checked_add(delta)
        .ok_or_else(|| KvError::other("overflow incrementing value"))
}

/// The page of `sorted` keys starting at `cursor` (an offset).
pub fn page_of(sorted: impl Iterator<Item = String>, cursor: Option<u64>) -> KeyPage {
    let start = cursor.unwrap_or(0);
    let mut keys: Vec<String> = sorted
        .skip(usize::try_from(start).unwrap_or(usize::MAX))
        .take(LIST_PAGE_KEYS + 1)
        .collect();
    let cursor = (keys.len() > LIST_PAGE_KEYS).then(|| {
        keys.truncate(LIST_PAGE_KEYS);
        start + LIST_PAGE_KEYS as u64
    });
    KeyPage { keys, cursor }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increment_reads_decimal_text_like_wasmtime() {
        assert_eq!(incremented(None, 1), Ok(1));
        assert_eq!(incremented(Some(b"41"), 1), Ok(42));
        assert_eq!(
            incremented(Some(b"18446744073709551615"), 1),
            Err(KvError::other("overflow incrementing value"))
        );
        assert_eq!(
            incremented(Some(b"abc"), 1),
            Err(KvError::other("invalid digit found in string"))
        );
        assert!(incremented(Some(&[0xff]), 1).is_err());
    }

    #[test]
    fn pages_end_with_no_cursor() {
        let keys = (0..2500).map(|i| format!("{i:05}"));
        let first = page_of(keys.clone(), None);
        assert_eq!(first.keys.len(), LIST_PAGE_KEYS);
        assert_eq!(first.cursor, Some(1000));
        let last = page_of(keys, Some(2000));
        assert_eq!(last.keys.len(), 500);
        assert_eq!(last.cursor, None);
    }
}
