//! `wasmlet push FILE oci://REGISTRY/REPOSITORY:TAG`: one component in the
//! CNCF TAG-Runtime layout (`wkg oci push` writes the same): an OCI image
//! manifest with config `application/vnd.wasm.config.v0+json` and one
//! `application/wasm` layer. The caller validates the file as a component
//! first, so what is pushed is what `serve` will accept.

use super::layout::{OCI_MANIFEST, WASM_CONFIG_TYPE, WASM_LAYER_TYPES};
use super::reference::OciRef;
use crate::base::digest::Digest;
use anyhow::{Context, Result, bail};
use oci_client::client::{Config, ImageLayer};
use oci_client::manifest::{OciImageManifest, OciManifest};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The manifest `push` writes for `wasm`, and its config blob, which says
/// the component was `created` then (to the second). Nothing else varies:
/// the same bytes and time always give the same manifest digest.
pub fn artifact(wasm: &[u8], created: SystemTime) -> (ImageLayer, Config, OciImageManifest) {
    let layer = ImageLayer::new(wasm.to_vec(), WASM_LAYER_TYPES[0].to_string(), None);
    let config = serde_json::json!({
        "created": humantime::format_rfc3339_seconds(created).to_string(),
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer.sha256_digest()],
    });
    let config = Config::new(
        serde_json::to_vec(&config).expect("json"),
        WASM_CONFIG_TYPE.to_string(),
        None,
    );
    let mut manifest = OciImageManifest::build(std::slice::from_ref(&layer), &config, None);
    manifest.media_type = Some(OCI_MANIFEST.to_string());
    (layer, config, manifest)
}

/// The `created` time of a push of `file`: `source_date_epoch` (the
/// `SOURCE_DATE_EPOCH` of reproducible builds: seconds since 1970) when set
/// and not empty, else the file's modification time. So pushing the same
/// file again gives the same digest (a followed tag does not move for
/// nothing), and a rebuilt one reads as newer, which is what a followed
/// signed tag's freshness check compares (see `cosign`).
pub fn created(file: &Path, source_date_epoch: Option<&str>) -> Result<SystemTime> {
    match source_date_epoch
        .map(str::trim)
        .filter(|text| !text.is_empty())
    {
        Some(text) => {
            let seconds: u64 = text.parse().with_context(|| {
                format!("SOURCE_DATE_EPOCH `{text}`: not a number of seconds since 1970")
            })?;
            Ok(UNIX_EPOCH + Duration::from_secs(seconds))
        }
        None => std::fs::metadata(file)
            .and_then(|meta| meta.modified())
            .with_context(|| format!("`{}`: cannot read its modification time", file.display())),
    }
}

/// Parses where `push` goes: a tag.
pub fn target(text: &str) -> Result<OciRef> {
    let reference = OciRef::parse(text)?;
    if reference.pinned().is_some() {
        bail!("`{text}`: push to a tag (`:TAG`); the digest is what push prints");
    }
    Ok(reference)
}

/// Pushes the component `wasm` (validated by the caller) to `target` and
/// returns the manifest digest.
pub async fn push(
    wasm: &[u8],
    created: SystemTime,
    target: &OciRef,
    insecure: &[String],
    docker_config: Option<&Path>,
) -> Result<Digest> {
    let (layer, config, manifest) = artifact(wasm, created);
    // The manifest goes up as these exact bytes, so their digest is the
    // one the registry stores.
    let body = serde_json::to_vec(&OciManifest::Image(manifest.clone()))?;
    let digest = Digest::of(&body);
    let registry = target.reference.resolve_registry();
    let helper_timeout = super::auth::CREDENTIAL_HELPER_TIMEOUT;
    let auth = super::auth::for_registry(docker_config, registry, helper_timeout).await?;
    let client = super::client(insecure);
    let image = &target.reference;
    let failed = |error: anyhow::Error| {
        let error = error.context(format!("`{target}`: push failed"));
        match super::is_plain_http(&error) {
            true => error.context(super::plain_http_hint(registry)),
            false => error,
        }
    };
    client
        .store_auth_if_needed(image.resolve_registry(), &auth)
        .await;
    client
        .push_blob(image, layer.data, &manifest.layers[0].digest)
        .await
        .map_err(|e| failed(e.into()))?;
    client
        .push_blob(image, config.data, &manifest.config.digest)
        .await
        .map_err(|e| failed(e.into()))?;
    client
        .push_manifest_raw(image, body, OCI_MANIFEST.parse().expect("valid header"))
        .await
        .map_err(|e| failed(e.into()))?;
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(wasm: &[u8], created: SystemTime) -> Digest {
        let (_, _, manifest) = artifact(wasm, created);
        Digest::of(&serde_json::to_vec(&OciManifest::Image(manifest)).unwrap())
    }

    #[test]
    fn the_same_bytes_and_time_give_the_same_digest() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(digest(b"\0asm", t), digest(b"\0asm", t));
        // Only whole seconds count.
        assert_eq!(
            digest(b"\0asm", t),
            digest(b"\0asm", t + Duration::from_millis(400))
        );
        assert_ne!(
            digest(b"\0asm", t),
            digest(b"\0asm", t + Duration::from_secs(1))
        );
        assert_ne!(digest(b"\0asm", t), digest(b"\0asn", t));
    }

    #[test]
    fn created_is_source_date_epoch_or_the_files_time() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let epoch = created(file.path(), Some("1700000000")).unwrap();
        assert_eq!(epoch, UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let modified = std::fs::metadata(file.path()).unwrap().modified().unwrap();
        assert_eq!(created(file.path(), None).unwrap(), modified);
        assert_eq!(created(file.path(), Some(" ")).unwrap(), modified);
        let e = created(file.path(), Some("yesterday"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("SOURCE_DATE_EPOCH `yesterday`"), "{e}");
        let e = created(Path::new("/nonexistent/x.wasm"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/x.wasm"), "{e}");
    }
}
