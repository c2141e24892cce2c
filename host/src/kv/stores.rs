//! The stores the manifest declares, opened once and kept across reloads:
//! a `memory` store keeps its data and a `file` store its open database
//! (redb allows one handle per file) while its spec does not change.

use super::Backend;
use super::file::File;
use super::memory::Memory;
use super::redis::Redis;
use crate::config::keyvalue::StoreSpec;
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// A store's spec and the backend opened for it.
type Opened = (StoreSpec, Arc<dyn Backend>);

/// Every store opened so far, by name, with the spec it was opened with.
#[derive(Default)]
pub struct Stores {
    open: Mutex<HashMap<String, Opened>>,
}

impl Stores {
    /// The store `name` if it is open.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Backend>> {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(name).map(|(_, backend)| backend.clone())
    }

    /// The store `name` as `spec` says, the one already open if its spec is
    /// the same; a `file` store lives in `data_dir`.
    pub fn open(
        &self,
        name: &str,
        spec: &StoreSpec,
        data_dir: Option<&Path>,
    ) -> Result<Arc<dyn Backend>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((opened, backend)) = open.get(name)
            && opened == spec
        {
            return Ok(backend.clone());
        }
        let backend: Arc<dyn Backend> = match spec {
            StoreSpec::Memory { data } => Arc::new(Memory::new(
                data.iter()
                    .map(|(key, value)| (key.clone(), value.clone().into_bytes())),
            )),
            StoreSpec::File => {
                let dir = data_dir.with_context(|| {
                    format!("key-value store {name:?} is a file store: set --data-dir")
                })?;
                // A store that was of another type may hold the file open.
                open.remove(name);
                Arc::new(File::open(dir, name)?)
            }
            StoreSpec::Redis { url, password } => Arc::new(Redis::new(
                name,
                url,
                password.as_ref().map(|p| p.expose()),
            )?),
        };
        open.insert(name.to_string(), (spec.clone(), backend.clone()));
        Ok(backend)
    }
}
