//! The `file` store, the embedded default: one redb database per store,
//! `DATA_DIR/NAME.redb`, surviving restarts.
//!
//! redb (pure Rust, ACID, copy-on-write B-trees, one file) allows one write
//! transaction at a time, which makes `increment`'s read-modify-write
//! atomic. A commit fsyncs (`Durability::Immediate`), about 600 a second
//! here, so writes go through **group commit**: one writer thread per store
//! takes every write queued meanwhile (up to [`GROUP_COMMIT_MAX`]), applies
//! them in one transaction, commits once and only then answers each: a
//! write is answered once it is durable. Reads use redb's read transactions
//! (no lock, no fsync) on tokio's blocking pool.

use super::{Backend, Found, KeyPage, KvError, KvFuture, incremented, page_of};
use crate::base::cache_dir;
use anyhow::{Context, Result, bail};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::{Arc, mpsc};
use tokio::sync::oneshot;

/// Writes applied in one transaction (one fsync) at most.
pub const GROUP_COMMIT_MAX: usize = 1024;

/// The one table in each store's file.
const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");

/// A store in its own redb file.
pub struct File {
    name: Arc<str>,
    db: Arc<Database>,
    writes: mpsc::Sender<Queued>,
}

enum Write {
    Set(String, Vec<u8>),
    Delete(String),
    Increment(String, u64),
    SetMany(Vec<(String, Vec<u8>)>),
    DeleteMany(Vec<String>),
}

struct Queued {
    write: Write,
    done: oneshot::Sender<Result<u64, KvError>>,
}

impl File {
    /// Opens (or creates) the store `name` in `data_dir`, which must be a
    /// directory only this user may write to, like the cache's.
    pub fn open(data_dir: &Path, name: &str) -> Result<File> {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            bail!(
                "key-value store {name:?}: a file store's name must be ASCII letters, digits, -, _ and ."
            );
        }
        cache_dir::usable_dir(data_dir)
            .with_context(|| format!("--data-dir {}", data_dir.display()))?;
        let path = data_dir.join(format!("{name}.redb"));
        let db = Database::create(&path)
            .with_context(|| format!("key-value store {name:?}: opening {}", path.display()))?;
        let txn = db.begin_write()?;
        txn.open_table(TABLE)?;
        txn.commit()
            .with_context(|| format!("key-value store {name:?}: {}", path.display()))?;
        let db = Arc::new(db);
        let (writes, queue) = mpsc::channel();
        let writer_db = db.clone();
        let writer_name: Arc<str> = name.into();
        std::thread::Builder::new()
            .name(format!("kv-{name}"))
            .spawn(move || writer(&writer_name, &writer_db, &queue))
            .context("starting a key-value writer thread")?;
        Ok(File {
            name: name.into(),
            db,
            writes,
        })
    }

    fn write(&self, write: Write) -> KvFuture<'_, u64> {
        let (done, answer) = oneshot::channel();
        let sent = self.writes.send(Queued { write, done });
        Box::pin(async move {
            sent.map_err(|_| KvError::other("the store is closed"))?;
            answer
                .await
                .map_err(|_| KvError::other("the store is closed"))?
        })
    }

    fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&redb::ReadOnlyTable<&str, &[u8]>) -> Result<T, redb::Error> + Send + 'static,
    ) -> KvFuture<'_, T> {
        let db = self.db.clone();
        Box::pin(async move {
            let answer = tokio::task::spawn_blocking(move || {
                let txn = db.begin_read()?;
                let table = txn.open_table(TABLE)?;
                read(&table)
            })
            .await
            .map_err(|_| KvError::other("the read failed"))?;
            answer.map_err(|e| self.failed(&e))
        })
    }

    fn failed(&self, error: &redb::Error) -> KvError {
        tracing::warn!(store = %self.name, error = %error, "key-value store error");
        KvError::other(format!("store error: {error}"))
    }
}

/// The writer thread: applies what is queued in one transaction per round
/// until the store is dropped.
fn writer(name: &str, db: &Database, queue: &mpsc::Receiver<Queued>) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < GROUP_COMMIT_MAX {
            match queue.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        match apply(db, &group) {
            Ok(answers) => {
                for (queued, answer) in group.into_iter().zip(answers) {
                    let _ = queued.done.send(answer);
                }
            }
            Err(error) => {
                tracing::warn!(store = %name, error = %error, "key-value store write failed");
                let error = KvError::other(format!("store error: {error}"));
                for queued in group {
                    let _ = queued.done.send(Err(error.clone()));
                }
            }
        }
    }
}

/// One transaction for `group`, committed (fsynced) once. An operation's own
/// error (a counter that is not a number) changes nothing and fails only it.
fn apply(db: &Database, group: &[Queued]) -> Result<Vec<Result<u64, KvError>>, redb::Error> {
    let txn = db.begin_write()?;
    let mut answers = Vec::with_capacity(group.len());
    {
        let mut table = txn.open_table(TABLE)?;
        for queued in group {
            answers.push(match &queued.write {
                Write::Set(key, value) => {
                    table.insert(key.as_str(), value.as_slice())?;
                    Ok(0)
                }
                Write::Delete(key) => {
                    table.remove(key.as_str())?;
                    Ok(0)
                }
                Write::SetMany(pairs) => {
                    for (key, value) in pairs {
                        table.insert(key.as_str(), value.as_slice())?;
                    }
                    Ok(0)
                }
                Write::DeleteMany(keys) => {
                    for key in keys {
                        table.remove(key.as_str())?;
                    }
                    Ok(0)
                }
                Write::Increment(key, delta) => {
                    let next = {
                        let current = table.get(key.as_str())?;
                        incremented(current.as_ref().map(|v| v.value()), *delta)
                    };
                    if let Ok(next) = next {
                        table.insert(key.as_str(), next.to_string().as_bytes())?;
                    }
                    next
                }
            });
        }
    }
    txn.commit()?;
    Ok(answers)
}

impl Backend for File {
    fn get(&self, key: String) -> KvFuture<'_, Option<Vec<u8>>> {
        self.read(move |table| Ok(table.get(key.as_str())?.map(|v| v.value().to_vec())))
    }

    fn set(&self, key: String, value: Vec<u8>) -> KvFuture<'_, ()> {
        let done = self.write(Write::Set(key, value));
        Box::pin(async move { done.await.map(drop) })
    }

    fn delete(&self, key: String) -> KvFuture<'_, ()> {
        let done = self.write(Write::Delete(key));
        Box::pin(async move { done.await.map(drop) })
    }

    fn exists(&self, key: String) -> KvFuture<'_, bool> {
        self.read(move |table| Ok(table.get(key.as_str())?.is_some()))
    }

    fn list_keys(&self, cursor: Option<u64>) -> KvFuture<'_, KeyPage> {
        self.read(move |table| {
            let mut keys = Vec::new();
            for entry in table.iter()? {
                keys.push(entry?.0.value().to_string());
            }
            Ok(page_of(keys.into_iter(), cursor))
        })
    }

    fn increment(&self, key: String, delta: u64) -> KvFuture<'_, u64> {
        self.write(Write::Increment(key, delta))
    }

    fn get_many(&self, keys: Vec<String>) -> KvFuture<'_, Found> {
        self.read(move |table| {
            let mut found = Vec::with_capacity(keys.len());
            for key in keys {
                let value = table.get(key.as_str())?.map(|v| v.value().to_vec());
                found.push(value.map(|value| (key, value)));
            }
            Ok(found)
        })
    }

    fn set_many(&self, pairs: Vec<(String, Vec<u8>)>) -> KvFuture<'_, ()> {
        let done = self.write(Write::SetMany(pairs));
        Box::pin(async move { done.await.map(drop) })
    }

    fn delete_many(&self, keys: Vec<String>) -> KvFuture<'_, ()> {
        let done = self.write(Write::DeleteMany(keys));
        Box::pin(async move { done.await.map(drop) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn private_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        dir
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counts_survive_a_reopen_and_concurrent_increments_lose_none() {
        let dir = private_dir();
        {
            let store = Arc::new(File::open(dir.path(), "default").unwrap());
            let tasks: Vec<_> = (0..200)
                .map(|_| {
                    let store = store.clone();
                    tokio::spawn(async move { store.increment("n".into(), 1).await })
                })
                .collect();
            let mut seen = Vec::new();
            for task in tasks {
                seen.push(task.await.unwrap().unwrap());
            }
            seen.sort();
            assert_eq!(seen, (1..=200).collect::<Vec<u64>>());
            store.set("hello".into(), b"world".to_vec()).await.unwrap();
            store.set("abc".into(), b"x".to_vec()).await.unwrap();
            assert!(matches!(
                store.increment("abc".into(), 1).await,
                Err(KvError::Other(_))
            ));
            store.delete("abc".into()).await.unwrap();
        }
        // The writer thread ends with the store; the file can be opened again.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let store = File::open(dir.path(), "default").unwrap();
        assert_eq!(store.increment("n".into(), 1).await, Ok(201));
        assert_eq!(store.get("hello".into()).await, Ok(Some(b"world".to_vec())));
        assert_eq!(store.exists("abc".into()).await, Ok(false));
        assert_eq!(store.list_keys(None).await.unwrap().keys, ["hello", "n"]);
        let many = store
            .get_many(vec!["hello".into(), "x".into()])
            .await
            .unwrap();
        assert_eq!(many, [Some(("hello".to_string(), b"world".to_vec())), None]);
    }

    #[test]
    fn a_data_dir_others_can_write_or_a_bad_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let error = File::open(dir.path(), "default").err().unwrap();
        assert!(format!("{error:#}").contains("--data-dir"), "{error:#}");
        let dir = private_dir();
        assert!(File::open(dir.path(), "../x").is_err());
        assert!(File::open(dir.path(), "").is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement: cargo test --release -p wasmlet --lib group_commit_rate -- --ignored --nocapture"]
    async fn group_commit_rate() {
        let dir = private_dir();
        let store = Arc::new(File::open(dir.path(), "bench").unwrap());
        let start = std::time::Instant::now();
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    for _ in 0..200 {
                        store.increment("n".into(), 1).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let rate = 12_800.0 / start.elapsed().as_secs_f64();
        println!("file store: 12,800 increments from 64 tasks at {rate:.0}/s");
    }
}
