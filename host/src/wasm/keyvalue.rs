//! wasi:keyvalue@0.2.0-draft (`store`, `atomics`, `batch`) for guests, on
//! the stores in `kv/`, from our own bindings: wasmtime-wasi-keyvalue has
//! only a per-open copy of an in-memory map and sync host functions.
//!
//! A route opens only the stores it was granted (`key_value_stores`); `""`
//! opens its `default`, as `wasmtime serve -Skeyvalue` names its one store.
//! Any other name is the interface's `no-such-store` (logged and counted,
//! not a trap). Each operation is checked against [`MAX_KEY_BYTES`],
//! [`MAX_VALUE_BYTES`] and [`MAX_OPERATIONS`] before the backend sees it,
//! and bounded by the request's deadline: a slow or absent backend gives
//! the guest `other(..)`, never a trap and never a hung request.

use crate::kv::{Backend, KvError, KvFuture};
use crate::observe::metrics::{KvDurationLabels, KvLabels};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable, ResourceTableError};

/// Bytes a key may have.
pub const MAX_KEY_BYTES: usize = 4 * 1024;
/// Bytes a value may have.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Key-value operations one request may make (a batch counts one per key).
pub const MAX_OPERATIONS: u32 = 1000;
/// The `store` label of a refused `open` (the guest's name is not a label).
const NOT_GRANTED: &str = "(not granted)";

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "wasi:keyvalue/imports",
        imports: { default: async | trappable },
        with: { "wasi:keyvalue/store.bucket": super::Bucket },
        trappable_error_type: { "wasi:keyvalue/store.error" => super::KvError },
    });
}
use bindings::wasi::keyvalue::{atomics, batch, store};

/// What a guest's bucket handle points to.
pub struct Bucket {
    store: Arc<str>,
    backend: Arc<dyn Backend>,
}

/// The stores a route was granted, and where its operations are counted.
pub struct KvGrant {
    pub route: Arc<str>,
    /// By store name; `""` opens `default`.
    pub stores: HashMap<String, Arc<dyn Backend>>,
    pub operations: Family<KvLabels, Counter>,
    pub durations: Family<KvDurationLabels, Histogram, fn() -> Histogram>,
}

impl std::fmt::Debug for KvGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut stores: Vec<&String> = self.stores.keys().collect();
        stores.sort();
        f.debug_struct("KvGrant")
            .field("route", &self.route)
            .field("stores", &stores)
            .finish()
    }
}

impl KvGrant {
    fn record(
        &self,
        store: &str,
        operation: &'static str,
        outcome: &'static str,
        took: Option<Duration>,
    ) {
        self.operations
            .get_or_create(&KvLabels {
                route: self.route.to_string(),
                store: store.to_string(),
                operation: operation.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        if let Some(took) = took {
            self.durations
                .get_or_create(&KvDurationLabels {
                    route: self.route.to_string(),
                    store: store.to_string(),
                    operation: operation.to_string(),
                })
                .observe(took.as_secs_f64());
        }
    }
}

/// One store's key-value state: the route's grant and this request's
/// budget and deadline.
pub struct KvState {
    grant: Option<Arc<KvGrant>>,
    timeout: Duration,
    deadline: Instant,
    operations: u32,
}

impl KvState {
    /// The state of a new store: `grant` (none: every open is
    /// `no-such-store`), each request bounded by `timeout`.
    pub fn new(grant: Option<Arc<KvGrant>>, timeout: Duration) -> KvState {
        KvState {
            grant,
            timeout,
            deadline: Instant::now() + timeout,
            operations: 0,
        }
    }

    /// A new request on a reused instance: a fresh budget and deadline.
    pub fn renew(&mut self) {
        self.deadline = Instant::now() + self.timeout;
        self.operations = 0;
    }
}

/// What the bindings see: the state and the store's resource table.
pub struct KvView<'a> {
    pub state: &'a mut KvState,
    pub table: &'a mut ResourceTable,
}

struct HasKv;
impl HasData for HasKv {
    type Data<'a> = KvView<'a>;
}

/// Links wasi:keyvalue into `linker`; `view` gives a store's [`KvView`].
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> KvView<'_>,
) -> wasmtime::Result<()> {
    store::add_to_linker::<T, HasKv>(linker, view)?;
    atomics::add_to_linker::<T, HasKv>(linker, view)?;
    batch::add_to_linker::<T, HasKv>(linker, view)?;
    Ok(())
}

impl From<ResourceTableError> for KvError {
    fn from(e: ResourceTableError) -> Self {
        KvError::other(e.to_string())
    }
}

/// One admitted operation: owned, so that its future is `Send`.
struct Call {
    grant: Arc<KvGrant>,
    store: Arc<str>,
    backend: Arc<dyn Backend>,
    operation: &'static str,
    deadline: Instant,
}

impl Call {
    /// Runs `op` within the request's deadline, counted and timed.
    async fn finish<T>(&self, op: KvFuture<'_, T>) -> Result<T, KvError> {
        let start = std::time::Instant::now();
        let result = match tokio::time::timeout_at(self.deadline, op).await {
            Ok(result) => result,
            Err(_) => Err(KvError::other("the store did not answer in time")),
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(KvError::Other(message)) if message.ends_with("in time") => "timeout",
            Err(_) => "error",
        };
        self.grant
            .record(&self.store, self.operation, outcome, Some(start.elapsed()));
        result
    }
}

impl KvView<'_> {
    fn grant(&self) -> Result<&Arc<KvGrant>, KvError> {
        self.state.grant.as_ref().ok_or(KvError::NoSuchStore)
    }

    /// Checks the budget and sizes of an operation on `bucket` that costs
    /// `cost` operations, with `keys` and `values`; refused ones are
    /// counted here.
    fn begin<'k>(
        &mut self,
        bucket: &Resource<Bucket>,
        operation: &'static str,
        keys: impl IntoIterator<Item = &'k String>,
        values: impl IntoIterator<Item = usize>,
    ) -> Result<Call, KvError> {
        let grant = self.grant()?.clone();
        let entry = self.table.get(bucket)?;
        let (store, backend) = (entry.store.clone(), entry.backend.clone());
        let refuse = |why: String| {
            grant.record(&store, operation, "refused", None);
            Err(KvError::Other(why))
        };
        let mut cost = 1u32;
        for (i, key) in keys.into_iter().enumerate() {
            cost = u32::try_from(i + 1).unwrap_or(u32::MAX);
            if key.len() > MAX_KEY_BYTES {
                return refuse(format!("key longer than {MAX_KEY_BYTES} bytes"));
            }
        }
        if values.into_iter().any(|len| len > MAX_VALUE_BYTES) {
            return refuse(format!("value longer than {MAX_VALUE_BYTES} bytes"));
        }
        if self.state.operations.saturating_add(cost) > MAX_OPERATIONS {
            return refuse(format!(
                "more than {MAX_OPERATIONS} key-value operations in one request"
            ));
        }
        self.state.operations += cost;
        Ok(Call {
            grant,
            store,
            backend,
            operation,
            deadline: self.state.deadline,
        })
    }
}

impl store::Host for KvView<'_> {
    async fn open(&mut self, identifier: String) -> Result<Resource<Bucket>, KvError> {
        let name = if identifier.is_empty() {
            "default"
        } else {
            identifier.as_str()
        };
        let Some(grant) = self.state.grant.clone() else {
            tracing::warn!(store = ?truncated(&identifier), "key-value store not granted: the route has no key_value_stores");
            return Err(KvError::NoSuchStore);
        };
        let Some(backend) = grant.stores.get(name).cloned() else {
            tracing::warn!(route = %grant.route, store = ?truncated(&identifier), "key-value store not granted to the route");
            grant.record(NOT_GRANTED, "open", "no_such_store", None);
            return Err(KvError::NoSuchStore);
        };
        if self.state.operations >= MAX_OPERATIONS {
            grant.record(name, "open", "refused", None);
            return Err(KvError::Other(format!(
                "more than {MAX_OPERATIONS} key-value operations in one request"
            )));
        }
        self.state.operations += 1;
        grant.record(name, "open", "ok", None);
        Ok(self.table.push(Bucket {
            store: name.into(),
            backend,
        })?)
    }

    fn convert_error(&mut self, err: KvError) -> wasmtime::Result<store::Error> {
        Ok(match err {
            KvError::NoSuchStore => store::Error::NoSuchStore,
            KvError::AccessDenied => store::Error::AccessDenied,
            KvError::Other(message) => store::Error::Other(message),
        })
    }
}

/// At most 64 characters of a guest's store name, for the log.
fn truncated(name: &str) -> &str {
    match name.char_indices().nth(64) {
        Some((end, _)) => &name[..end],
        None => name,
    }
}

impl store::HostBucket for KvView<'_> {
    async fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Result<Option<Vec<u8>>, KvError> {
        let call = self.begin(&bucket, "get", [&key], [])?;
        call.finish(call.backend.get(key)).await
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), KvError> {
        let call = self.begin(&bucket, "set", [&key], [value.len()])?;
        call.finish(call.backend.set(key, value)).await
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> Result<(), KvError> {
        let call = self.begin(&bucket, "delete", [&key], [])?;
        call.finish(call.backend.delete(key)).await
    }

    async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> Result<bool, KvError> {
        let call = self.begin(&bucket, "exists", [&key], [])?;
        call.finish(call.backend.exists(key)).await
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> Result<store::KeyResponse, KvError> {
        let call = self.begin(&bucket, "list_keys", [], [])?;
        let page = call.finish(call.backend.list_keys(cursor)).await?;
        Ok(store::KeyResponse {
            keys: page.keys,
            cursor: page.cursor,
        })
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for KvView<'_> {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> Result<u64, KvError> {
        let call = self.begin(&bucket, "increment", [&key], [])?;
        call.finish(call.backend.increment(key, delta)).await
    }
}

impl batch::Host for KvView<'_> {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<Vec<Option<(String, Vec<u8>)>>, KvError> {
        let call = self.begin(&bucket, "get_many", &keys, [])?;
        call.finish(call.backend.get_many(keys)).await
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        pairs: Vec<(String, Vec<u8>)>,
    ) -> Result<(), KvError> {
        let call = self.begin(
            &bucket,
            "set_many",
            pairs.iter().map(|(key, _)| key),
            pairs.iter().map(|(_, value)| value.len()),
        )?;
        call.finish(call.backend.set_many(pairs)).await
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<(), KvError> {
        let call = self.begin(&bucket, "delete_many", &keys, [])?;
        call.finish(call.backend.delete_many(keys)).await
    }
}
