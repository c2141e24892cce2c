//! The `redis` store, for several replicas: the `redis` crate's connection
//! manager (one multiplexed connection per store, reconnecting in the
//! background), made on first use so that the host starts without Redis
//! and recovers when it comes back. `increment` is `INCRBY`, atomic across
//! replicas. The password goes into the connection settings, never into a
//! URL, a log line or an error.

use super::{Backend, Found, KeyPage, KvError, KvFuture, LIST_PAGE_KEYS};
use anyhow::{Context, Result};
use redis::IntoConnectionInfo;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// How long connecting to Redis may take.
pub const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long one Redis command may take (the request's deadline may cut it
/// shorter).
pub const REDIS_RESPONSE_TIMEOUT: Duration = Duration::from_millis(1000);
/// The longest pause between two reconnection attempts.
pub const REDIS_MAX_RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// A store in a Redis database.
pub struct Redis {
    name: Arc<str>,
    client: redis::Client,
    manager: OnceLock<Result<ConnectionManager, String>>,
}

impl Redis {
    /// A store `name` at `url` (`redis://host:port/db`), with `password` if
    /// given. Connects on first use, not here.
    pub fn new(name: &str, url: &str, password: Option<&str>) -> Result<Redis> {
        let info = url
            .into_connection_info()
            .with_context(|| format!("key-value store {name:?}: the url is not a Redis URL"))?;
        let info = match password {
            Some(password) => {
                let settings = info.redis_settings().clone().set_password(password);
                info.set_redis_settings(settings)
            }
            None => info,
        };
        let client = redis::Client::open(info)
            .with_context(|| format!("key-value store {name:?}: the url is not usable"))?;
        Ok(Redis {
            name: name.into(),
            client,
            manager: OnceLock::new(),
        })
    }

    /// The connection manager, made on first use (it needs the runtime).
    fn connection(&self) -> Result<ConnectionManager, KvError> {
        let manager = self.manager.get_or_init(|| {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(REDIS_CONNECT_TIMEOUT))
                .set_response_timeout(Some(REDIS_RESPONSE_TIMEOUT))
                .set_number_of_retries(1)
                .set_max_delay(REDIS_MAX_RECONNECT_DELAY);
            ConnectionManager::new_lazy_with_config(self.client.clone(), config)
                .map_err(|e| format!("{:?}", e.kind()))
        });
        manager.clone().map_err(|kind| {
            tracing::warn!(store = %self.name, error = %kind, "redis store unusable");
            KvError::other("the store is unavailable")
        })
    }

    fn query<T: redis::FromRedisValue + Send + 'static>(&self, cmd: redis::Cmd) -> KvFuture<'_, T> {
        Box::pin(async move {
            let mut connection = self.connection()?;
            cmd.query_async(&mut connection)
                .await
                .map_err(|e| self.failed(&e))
        })
    }

    /// The guest's error for `error`: Redis' own reply (an overflow, a
    /// wrong type) is passed on; a connection failure is "unavailable".
    /// Neither holds the URL or the password.
    fn failed(&self, error: &redis::RedisError) -> KvError {
        tracing::warn!(store = %self.name, kind = ?error.kind(), code = ?error.code(), "redis store error");
        match (error.code(), error.detail()) {
            (Some(code), detail) if !error.is_io_error() => KvError::other(
                format!("store error: {code} {}", detail.unwrap_or(""))
                    .trim_end()
                    .to_string(),
            ),
            _ => KvError::other("the store is unavailable"),
        }
    }
}

impl Backend for Redis {
    fn get(&self, key: String) -> KvFuture<'_, Option<Vec<u8>>> {
        self.query(redis::cmd("GET").arg(key).clone())
    }

    fn set(&self, key: String, value: Vec<u8>) -> KvFuture<'_, ()> {
        self.query(redis::cmd("SET").arg(key).arg(value).clone())
    }

    fn delete(&self, key: String) -> KvFuture<'_, ()> {
        let deleted = self.query::<u64>(redis::cmd("DEL").arg(key).clone());
        Box::pin(async move { deleted.await.map(drop) })
    }

    fn exists(&self, key: String) -> KvFuture<'_, bool> {
        self.query(redis::cmd("EXISTS").arg(key).clone())
    }

    fn list_keys(&self, cursor: Option<u64>) -> KvFuture<'_, KeyPage> {
        let scan = self.query::<(u64, Vec<String>)>(
            redis::cmd("SCAN")
                .arg(cursor.unwrap_or(0))
                .arg("COUNT")
                .arg(LIST_PAGE_KEYS)
                .clone(),
        );
        Box::pin(async move {
            let (next, keys) = scan.await?;
            Ok(KeyPage {
                keys,
                cursor: (next != 0).then_some(next),
            })
        })
    }

    fn increment(&self, key: String, delta: u64) -> KvFuture<'_, u64> {
        // Redis counts in i64: a larger delta is refused before it is sent.
        let Ok(delta) = i64::try_from(delta) else {
            return Box::pin(async { Err(KvError::other("overflow incrementing value")) });
        };
        let incremented = self.query::<i64>(redis::cmd("INCRBY").arg(key).arg(delta).clone());
        Box::pin(async move {
            let value = incremented.await?;
            u64::try_from(value).map_err(|_| KvError::other("the counter is negative"))
        })
    }

    fn get_many(&self, keys: Vec<String>) -> KvFuture<'_, Found> {
        if keys.is_empty() {
            return Box::pin(async { Ok(Vec::new()) });
        }
        let values = self.query::<Vec<Option<Vec<u8>>>>(redis::cmd("MGET").arg(&keys).clone());
        Box::pin(async move {
            let values = values.await?;
            Ok(keys
                .into_iter()
                .zip(values)
                .map(|(key, value)| value.map(|value| (key, value)))
                .collect())
        })
    }

    fn set_many(&self, pairs: Vec<(String, Vec<u8>)>) -> KvFuture<'_, ()> {
        if pairs.is_empty() {
            return Box::pin(async { Ok(()) });
        }
        let mut mset = redis::cmd("MSET");
        for (key, value) in pairs {
            mset.arg(key).arg(value);
        }
        self.query(mset)
    }

    fn delete_many(&self, keys: Vec<String>) -> KvFuture<'_, ()> {
        if keys.is_empty() {
            return Box::pin(async { Ok(()) });
        }
        let deleted = self.query::<u64>(redis::cmd("DEL").arg(keys).clone());
        Box::pin(async move { deleted.await.map(drop) })
    }
}
