//! The manifest's key-value stores, `[key_value_store.NAME]` tables:
//!
//! ```toml
//! [key_value_store.default]      # optional: `default` exists anyway, as type = "file"
//! type = "file"                  # "memory" | "file" (under --data-dir) | "redis"
//!
//! [key_value_store.cache]
//! type = "memory"
//! data = { hello = "world" }     # preloaded keys (like `-Skeyvalue-in-memory-data`)
//!
//! [key_value_store.shared]
//! type = "redis"
//! url = "redis://redis:6379/0"
//! password = { file = "/etc/secrets/redis-password" }   # or { env = "NAME" }
//! ```
//!
//! A route opens only the stores its `key_value_stores` names.

use crate::config::secret::{Secret, SourceFile};
use anyhow::{Result, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The store every manifest has; `""` (what `wasmtime serve -Skeyvalue`
/// opens) means this one.
pub const DEFAULT_STORE: &str = "default";

/// Longest store name, in bytes.
pub const MAX_STORE_NAME: usize = 64;

/// One `[key_value_store.NAME]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoreFile {
    #[serde(rename = "type")]
    kind: String,
    data: Option<BTreeMap<String, String>>,
    url: Option<String>,
    password: Option<SourceFile>,
}

/// Where a store keeps its data.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreSpec {
    /// In the process, shared by the routes granted it until the host
    /// stops; `data` is there at start.
    Memory { data: BTreeMap<String, String> },
    /// Embedded and persistent, under `--data-dir`.
    File,
    /// A Redis server; `url` never holds the password.
    Redis {
        url: String,
        password: Option<Secret>,
    },
}

impl StoreSpec {
    /// `type = "…"` as written.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreSpec::Memory { .. } => "memory",
            StoreSpec::File => "file",
            StoreSpec::Redis { .. } => "redis",
        }
    }
}

/// Checks a store's name: not empty, at most [`MAX_STORE_NAME`] bytes of
/// ASCII letters, digits, `-`, `_` and `.`.
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty() {
        bail!("a store name may not be empty (\"\" opens `default`)");
    }
    if name.len() > MAX_STORE_NAME {
        bail!("store name longer than {MAX_STORE_NAME} bytes");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        bail!("store name `{name}` may hold only ASCII letters, digits, `-`, `_` and `.`");
    }
    Ok(())
}

/// Validates one store table; secrets are read now, against `base`.
pub(crate) fn validate_store(name: &str, file: StoreFile, base: &Path) -> Result<StoreSpec> {
    check_name(name)?;
    let kind = file.kind.as_str();
    let only = |key: &str, set: bool, for_kind: &str| -> Result<()> {
        if set && kind != for_kind {
            bail!("`{key}` is only for `type = \"{for_kind}\"`");
        }
        Ok(())
    };
    only("data", file.data.is_some(), "memory")?;
    only("url", file.url.is_some(), "redis")?;
    only("password", file.password.is_some(), "redis")?;
    Ok(match kind {
        "memory" => StoreSpec::Memory {
            data: file.data.unwrap_or_default(),
        },
        "file" => StoreSpec::File,
        "redis" => {
            let Some(url) = file.url else {
                bail!("`type = \"redis\"` needs `url = \"redis://HOST:PORT/DB\"`");
            };
            check_redis_url(&url)?;
            let password = file
                .password
                .map(|p| p.resolve(base))
                .transpose()
                .map_err(|e| anyhow::anyhow!("`password`: {e:#}"))?
                .map(|(_, secret)| secret);
            StoreSpec::Redis { url, password }
        }
        other => bail!("`type` must be \"memory\", \"file\" or \"redis\", not \"{other}\""),
    })
}

/// `redis://HOST[:PORT][/DB]` or `rediss://…`, with no password in it
/// (it goes in `password = { file | env }`). Errors never repeat the URL.
fn check_redis_url(url: &str) -> Result<()> {
    let Some(rest) = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"))
    else {
        bail!("`url` must start with `redis://` or `rediss://`");
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        bail!(
            "`url` may not hold credentials: give the password as `password = {{ file = \"PATH\" }}` or `{{ env = \"NAME\" }}`"
        );
    }
    if authority.is_empty() {
        bail!("`url` has no host");
    }
    Ok(())
}

/// The stores of a manifest, with `default` added as `type = "file"`
/// where it is not declared.
pub fn with_default(mut stores: BTreeMap<String, StoreSpec>) -> BTreeMap<String, StoreSpec> {
    stores
        .entry(DEFAULT_STORE.to_string())
        .or_insert(StoreSpec::File);
    stores
}

/// The one line a route's load fails with when it uses a `file` store and
/// `--data-dir` is not set; `None` when it may load.
pub fn data_dir_missing(
    route: &str,
    granted: &[String],
    stores: &BTreeMap<String, StoreSpec>,
    data_dir: Option<&Path>,
) -> Option<String> {
    if data_dir.is_some() {
        return None;
    }
    let name = granted
        .iter()
        .find(|name| matches!(stores.get(name.as_str()), Some(StoreSpec::File)))?;
    Some(format!(
        "route {route}: key-value store `{name}` is `type = \"file\"`, which needs --data-dir (WASMLET_DATA_DIR): set it, or declare `[key_value_store.{name}] type = \"memory\"`"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(text: &str) -> Result<StoreSpec> {
        let file: StoreFile = toml::from_str(text)?;
        validate_store("s", file, Path::new("/srv"))
    }

    #[test]
    fn the_three_types() {
        assert_eq!(store("type = \"file\"").unwrap(), StoreSpec::File);
        assert_eq!(
            store("type = \"memory\"\ndata = { hello = \"world\" }").unwrap(),
            StoreSpec::Memory {
                data: [("hello".to_string(), "world".to_string())].into()
            }
        );
        let StoreSpec::Redis { url, password } =
            store("type = \"redis\"\nurl = \"redis://127.0.0.1:6379/0\"").unwrap()
        else {
            panic!()
        };
        assert_eq!(url, "redis://127.0.0.1:6379/0");
        assert!(password.is_none());
    }

    #[test]
    fn bad_stores_say_why_and_never_echo_a_password() {
        for (text, want) in [
            (
                "type = \"sqlite\"",
                "must be \"memory\", \"file\" or \"redis\"",
            ),
            ("type = \"file\"\ndata = {}", "`data` is only for"),
            (
                "type = \"memory\"\nurl = \"redis://x\"",
                "`url` is only for",
            ),
            ("type = \"redis\"", "needs `url"),
            ("type = \"redis\"\nurl = \"http://x\"", "must start with"),
            ("type = \"redis\"\nurl = \"redis://\"", "no host"),
            (
                "type = \"redis\"\nurl = \"redis://:hunter2@x:6379\"",
                "may not hold credentials",
            ),
            (
                "type = \"redis\"\nurl = \"redis://x\"\npassword = { file = \"/nonexistent/pw\" }",
                "`password`: cannot read `/nonexistent/pw`",
            ),
            ("type = \"file\"\nsize = 1", "unknown field `size`"),
        ] {
            let e = format!("{:#}", store(text).unwrap_err());
            assert!(e.contains(want), "{text}\n=> {e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
        for bad in ["", "a b", "ä", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        check_name("cache-1.v2_x").unwrap();
    }

    #[test]
    fn a_redis_password_from_a_file_is_a_secret() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "hunter2\n").unwrap();
        let file: StoreFile =
            toml::from_str("type = \"redis\"\nurl = \"redis://x\"\npassword = { file = \"pw\" }")
                .unwrap();
        let spec = validate_store("s", file, dir.path()).unwrap();
        assert!(!format!("{spec:?}").contains("hunter2"));
        let StoreSpec::Redis { password, .. } = spec else {
            panic!()
        };
        assert_eq!(password.unwrap().expose(), "hunter2");
    }

    #[test]
    fn file_stores_need_a_data_dir() {
        let stores = with_default(BTreeMap::from([(
            "m".to_string(),
            StoreSpec::Memory {
                data: BTreeMap::new(),
            },
        )]));
        assert_eq!(stores["default"], StoreSpec::File);
        let granted = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(data_dir_missing("/a", &[], &stores, None), None);
        assert_eq!(
            data_dir_missing("/a", &granted(&["m"]), &stores, None),
            None
        );
        let line = data_dir_missing("/a", &granted(&["m", "default"]), &stores, None).unwrap();
        assert!(
            line.contains("route /a")
                && line.contains("--data-dir")
                && line.contains("type = \"memory\""),
            "{line}"
        );
        assert_eq!(
            data_dir_missing("/a", &granted(&["default"]), &stores, Some(Path::new("/d"))),
            None
        );
    }
}
