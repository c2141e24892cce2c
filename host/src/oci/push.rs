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

/// The manifest `push` writes for `wasm`, and its config blob.
pub fn artifact(wasm: &[u8]) -> (ImageLayer, Config, OciImageManifest) {
    let layer = ImageLayer::new(wasm.to_vec(), WASM_LAYER_TYPES[0].to_string(), None);
    let config = serde_json::json!({
        "created": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
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
    target: &OciRef,
    insecure: &[String],
    docker_config: Option<&Path>,
) -> Result<Digest> {
    let (layer, config, manifest) = artifact(wasm);
    // The manifest goes up as these exact bytes, so their digest is the
    // one the registry stores.
    let body = serde_json::to_vec(&OciManifest::Image(manifest.clone()))?;
    let digest = Digest::of(&body);
    let registry = target.reference.resolve_registry();
    let helper_timeout = super::auth::CREDENTIAL_HELPER_TIMEOUT;
    let auth = super::auth::for_registry(docker_config, registry, helper_timeout).await?;
    let client = super::client(insecure);
    let image = &target.reference;
    let failed = || format!("`{target}`: push failed");
    client
        .store_auth_if_needed(image.resolve_registry(), &auth)
        .await;
    client
        .push_blob(image, layer.data, &manifest.layers[0].digest)
        .await
        .with_context(failed)?;
    client
        .push_blob(image, config.data, &manifest.config.digest)
        .await
        .with_context(failed)?;
    client
        .push_manifest_raw(image, body, OCI_MANIFEST.parse().expect("valid header"))
        .await
        .with_context(failed)?;
    Ok(digest)
}
