//! Which registry artifacts are handlers.
//!
//! An OCI image manifest with exactly one layer of a wasm media type is
//! one, whatever its config's media type; an image index is followed to
//! its `wasm` platform entry. Anything else is refused, naming the media
//! types found, so a wrong push is diagnosed without a registry browser.

use crate::base::digest::Digest;
use anyhow::{Result, bail};
use serde::Deserialize;

/// Layer media types that hold a component, as the tools in use write them.
pub const WASM_LAYER_TYPES: [&str; 4] = [
    // The CNCF TAG-Runtime layout (`wkg oci push`, `wash push`, `wasmlet push`).
    "application/wasm",
    // Spin.
    "application/vnd.wasm.content.layer.v1+wasm",
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
    "application/vnd.module.wasm.content.layer.v1+wasm",
];

/// The config media type of the CNCF layout, as `wasmlet push` writes it.
pub const WASM_CONFIG_TYPE: &str = "application/vnd.wasm.config.v0+json";

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// What the host asks a registry for (`Accept`).
pub const ACCEPTED_MANIFESTS: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// The layer to download: its digest and declared size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WasmLayer {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

/// A manifest, read as far as choosing the layer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selected {
    /// An image manifest with its one wasm layer.
    Layer(WasmLayer),
    /// An image index: follow this manifest digest.
    Platform(Digest),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    schema_version: u32,
    media_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: i64,
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

/// Reads a manifest or an index and picks what to fetch next.
pub fn select(manifest: &[u8]) -> Result<Selected> {
    let doc: Document = serde_json::from_slice(manifest)
        .map_err(|e| anyhow::anyhow!("the registry's manifest is not valid JSON: {e}"))?;
    if doc.schema_version != 2 {
        bail!(
            "unsupported manifest schemaVersion {} (expected 2)",
            doc.schema_version
        );
    }
    if let Some(entries) = doc.manifests {
        return platform(&entries).map(Selected::Platform);
    }
    let (Some(config), Some(layers)) = (doc.config, doc.layers) else {
        bail!(
            "not an image manifest or index (media type {})",
            doc.media_type.as_deref().unwrap_or("not given")
        );
    };
    let wasm: Vec<&Descriptor> = layers
        .iter()
        .filter(|l| WASM_LAYER_TYPES.contains(&l.media_type.as_str()))
        .collect();
    match (wasm.as_slice(), layers.len()) {
        ([layer], 1) => {
            let size = u64::try_from(layer.size)
                .map_err(|_| anyhow::anyhow!("layer {}: negative size", layer.digest))?;
            Ok(Selected::Layer(WasmLayer {
                media_type: layer.media_type.clone(),
                digest: check_digest(&layer.digest)?,
                size,
            }))
        }
        _ => {
            let found: Vec<&str> = layers.iter().map(|l| l.media_type.as_str()).collect();
            bail!(
                "not a wasm component artifact: expected exactly one layer of media type {}; found config {} and layers [{}]",
                WASM_LAYER_TYPES.join(" or "),
                config.media_type,
                found.join(", ")
            )
        }
    }
}

/// An image manifest's config blob: its digest and declared size (none
/// for an index, or a descriptor that is not sha256).
pub fn config(manifest: &[u8]) -> Option<(Digest, u64)> {
    let doc: Document = serde_json::from_slice(manifest).ok()?;
    let config = doc.config?;
    let digest = check_digest(&config.digest).ok()?;
    Some((digest, u64::try_from(config.size).ok()?))
}

/// The index entry for the wasm platform (`architecture: wasm`, `os:
/// wasip2`, or `os: wasip1`/`wasi` as older tools wrote it).
fn platform(entries: &[Descriptor]) -> Result<Digest> {
    let wasm = |os: &str| {
        entries.iter().find(|e| {
            e.platform
                .as_ref()
                .is_some_and(|p| p.architecture == "wasm" && p.os == os)
        })
    };
    let Some(entry) = wasm("wasip2").or_else(|| wasm("wasi")) else {
        let found: Vec<String> = entries
            .iter()
            .map(|e| match &e.platform {
                Some(p) => format!("{}/{}", p.os, p.architecture),
                None => "no platform".to_string(),
            })
            .collect();
        bail!(
            "the image index has no wasm entry (architecture `wasm`, os `wasip2`); found [{}]",
            found.join(", ")
        );
    };
    check_digest(&entry.digest)
}

/// A descriptor's digest: only sha256 is accepted, the store and the
/// caches key on it.
pub fn check_digest(digest: &str) -> Result<Digest> {
    Digest::parse(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn manifest(config: &str, layers: &[&str]) -> Vec<u8> {
        let layers: Vec<serde_json::Value> = layers
            .iter()
            .map(|t| serde_json::json!({"mediaType": t, "digest": D, "size": 42}))
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": config, "digest": D, "size": 2},
            "layers": layers,
        }))
        .unwrap()
    }

    #[test]
    fn every_wasm_layer_type_with_any_config() {
        for t in WASM_LAYER_TYPES {
            for config in [WASM_CONFIG_TYPE, "application/vnd.oci.image.config.v1+json"] {
                let s = select(&manifest(config, &[t])).unwrap();
                assert_eq!(
                    s,
                    Selected::Layer(WasmLayer {
                        media_type: t.into(),
                        digest: D.parse().unwrap(),
                        size: 42
                    })
                );
            }
        }
    }

    #[test]
    fn other_layouts_are_refused_naming_the_types() {
        let e = format!(
            "{:#}",
            select(&manifest(
                "application/vnd.oci.image.config.v1+json",
                &["application/vnd.oci.image.layer.v1.tar+gzip"]
            ))
            .unwrap_err()
        );
        assert!(
            e.contains("application/vnd.oci.image.layer.v1.tar+gzip"),
            "{e}"
        );
        assert!(
            e.contains("config application/vnd.oci.image.config.v1+json"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            select(&manifest(
                WASM_CONFIG_TYPE,
                &["application/wasm", "application/wasm"]
            ))
            .unwrap_err()
        );
        assert!(e.contains("exactly one layer"), "{e}");
        assert!(select(&manifest(WASM_CONFIG_TYPE, &[])).is_err());
        assert!(select(b"{}").is_err());
        assert!(
            select(b"<html>")
                .unwrap_err()
                .to_string()
                .contains("not valid JSON")
        );
        let schema1 = br#"{"schemaVersion": 1, "layers": []}"#;
        assert!(
            select(schema1)
                .unwrap_err()
                .to_string()
                .contains("schemaVersion 1")
        );
    }

    #[test]
    fn an_index_is_followed_to_its_wasm_entry() {
        let other = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
        let index = |entries: serde_json::Value| {
            serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries
            }))
            .unwrap()
        };
        let both = index(serde_json::json!([
            {"mediaType": OCI_MANIFEST, "digest": other, "size": 1,
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": OCI_MANIFEST, "digest": D, "size": 1,
             "platform": {"architecture": "wasm", "os": "wasip2"}},
        ]));
        assert_eq!(
            select(&both).unwrap(),
            Selected::Platform(D.parse().unwrap())
        );
        let linux = index(serde_json::json!([
            {"mediaType": OCI_MANIFEST, "digest": other, "size": 1,
             "platform": {"architecture": "amd64", "os": "linux"}},
        ]));
        let e = select(&linux).unwrap_err().to_string();
        assert!(
            e.contains("no wasm entry") && e.contains("linux/amd64"),
            "{e}"
        );
    }

    #[test]
    fn digests_must_be_sha256() {
        assert!(check_digest(D).is_ok());
        assert!(check_digest("sha512:00").is_err());
        assert!(check_digest("sha256:../../etc/passwd").is_err());
    }
}
