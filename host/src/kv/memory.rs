//! The `memory` store: a map in the process, shared by every request of
//! every route granted it, until the host stops. It may be preloaded, as
//! `wasmtime serve -Skeyvalue-in-memory-data=K=V` does.

use super::{Backend, KeyPage, KvFuture, incremented, page_of};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// A map in the process. Each operation holds the lock for one map access,
/// never across an await, so `increment` is atomic.
#[derive(Default)]
pub struct Memory {
    data: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl Memory {
    /// A store holding `data` to begin with.
    pub fn new(data: impl IntoIterator<Item = (String, Vec<u8>)>) -> Self {
        Memory {
            data: Mutex::new(data.into_iter().collect()),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<String, Vec<u8>>) -> T) -> T {
        // A panic while the lock is held cannot leave the map half-changed:
        // each operation is one map call.
        let mut data = self.data.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut data)
    }
}

impl Backend for Memory {
    fn get(&self, key: String) -> KvFuture<'_, Option<Vec<u8>>> {
        let value = self.with(|data| data.get(&key).cloned());
        Box::pin(async move { Ok(value) })
    }

    fn set(&self, key: String, value: Vec<u8>) -> KvFuture<'_, ()> {
        self.with(|data| data.insert(key, value));
        Box::pin(async { Ok(()) })
    }

    fn delete(&self, key: String) -> KvFuture<'_, ()> {
        self.with(|data| data.remove(&key));
        Box::pin(async { Ok(()) })
    }

    fn exists(&self, key: String) -> KvFuture<'_, bool> {
        let found = self.with(|data| data.contains_key(&key));
        Box::pin(async move { Ok(found) })
    }

    fn list_keys(&self, cursor: Option<u64>) -> KvFuture<'_, KeyPage> {
        let page = self.with(|data| page_of(data.keys().cloned(), cursor));
        Box::pin(async move { Ok(page) })
    }

    fn increment(&self, key: String, delta: u64) -> KvFuture<'_, u64> {
        let result = self.with(|data| {
            let next = incremented(data.get(&key).map(Vec::as_slice), delta)?;
            data.insert(key, next.to_string().into_bytes());
            Ok(next)
        });
        Box::pin(async move { result })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::KvError;

    #[tokio::test]
    async fn preloaded_values_and_counters() {
        let store = Memory::new([("hello".to_string(), b"world".to_vec())]);
        assert_eq!(store.get("hello".into()).await, Ok(Some(b"world".to_vec())));
        assert_eq!(store.get("nope".into()).await, Ok(None));
        assert_eq!(store.increment("n".into(), 1).await, Ok(1));
        assert_eq!(store.increment("n".into(), 2).await, Ok(3));
        assert_eq!(store.get("n".into()).await, Ok(Some(b"3".to_vec())));
        assert!(matches!(
            store.increment("hello".into(), 1).await,
            Err(KvError::Other(_))
        ));
        store.delete("hello".into()).await.unwrap();
        assert_eq!(store.exists("hello".into()).await, Ok(false));
        let page = store.list_keys(None).await.unwrap();
        assert_eq!(page.keys, ["n"]);
        store
            .set_many(vec![
                ("a".into(), b"1".to_vec()),
                ("b".into(), b"2".to_vec()),
            ])
            .await
            .unwrap();
        let many = store.get_many(vec!["a".into(), "x".into()]).await.unwrap();
        assert_eq!(many, [Some(("a".to_string(), b"1".to_vec())), None]);
    }

    #[tokio::test]
    async fn concurrent_increments_lose_none() {
        let store = std::sync::Arc::new(Memory::default());
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.increment("n".into(), 1).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(store.get("n".into()).await, Ok(Some(b"200".to_vec())));
    }
}
