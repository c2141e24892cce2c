//! `cosign_key = "key.pub"`: a route is served only if the digest it
//! resolved to carries a valid cosign signature by that key.
//!
//! cosign stores a signature of `REPO@sha256:HEX` as the image
//! `REPO:sha256-HEX.sig`: layers of media type
//! `application/vnd.dev.cosign.simplesigning.v1+json` whose blob is the
//! signed payload (`critical.image.docker-manifest-digest` names the
//! digest) and whose annotation `dev.cosignproject.cosign/signature` is the
//! base64 ECDSA P-256/SHA-256 signature of that blob. One valid layer is
//! enough. Only keys are supported (no keyless/Fulcio, no Rekor check).
//!
//! The signature image comes from the registry, which may be hostile: at
//! most [`MAX_SIGNATURE_LAYERS`] layers of at most [`MAX_PAYLOAD`] bytes
//! are read, into memory, and only the one that verifies is kept (see
//! [`super::store::SignatureRecord`]). The signature is checked before the
//! component's layer is downloaded.
//!
//! A signature says nothing about when: a registry can move a tag back to
//! any build the key ever signed. So a tag's new digest is refused if its
//! config's `created` time (RFC 3339, which `wasmlet push` and `wkg oci
//! push` write, and which the signed manifest digest covers) is older than
//! that of the version serving the route ([`check_not_older`]).

use anyhow::{Context, Result, bail};
use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;
use serde::Deserialize;
use std::path::Path;
use std::time::SystemTime;

pub const SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The largest signed payload read: cosign's are a few hundred bytes.
pub const MAX_PAYLOAD: u64 = 64 << 10;
/// The most simple-signing layers of one signature image that are read:
/// one per key that signed the digest (cosign appends a layer per `sign`);
/// the rest are not fetched.
pub const MAX_SIGNATURE_LAYERS: usize = 8;
/// The largest component config read for its `created` time; `wasmlet
/// push` writes about 200 bytes.
pub const MAX_CONFIG: u64 = 64 << 10;

/// A cosign public key (PEM, P-256).
#[derive(Debug, Clone, PartialEq)]
pub struct CosignKey(VerifyingKey);

impl CosignKey {
    pub fn load(path: &Path) -> Result<CosignKey> {
        let pem = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read cosign_key `{}`", path.display()))?;
        CosignKey::from_pem(&pem).with_context(|| format!("cosign_key `{}`", path.display()))
    }

    pub fn from_pem(pem: &str) -> Result<CosignKey> {
        VerifyingKey::from_public_key_pem(pem.trim())
            .map(CosignKey)
            .map_err(|e| anyhow::anyhow!("not a PEM P-256 public key ({e})"))
    }
}

/// The tag cosign stores the signature of `digest` under.
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replace(':', "-"))
}

/// One simple-signing layer as the signature manifest describes it.
#[derive(Debug, Clone)]
pub struct SignatureLayer {
    /// `sha256:…` of the payload blob.
    pub digest: String,
    pub size: u64,
    /// The base64 signature annotation, if present.
    pub signature: Option<String>,
}

#[derive(Deserialize)]
struct Manifest {
    layers: Vec<Layer>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Layer {
    media_type: String,
    digest: String,
    size: i64,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

/// The simple-signing layers of a signature manifest.
pub fn signature_layers(manifest: &[u8]) -> Result<Vec<SignatureLayer>> {
    let manifest: Manifest =
        serde_json::from_slice(manifest).context("the signature manifest is not valid")?;
    let layers: Vec<SignatureLayer> = manifest
        .layers
        .into_iter()
        .filter(|l| l.media_type == SIMPLESIGNING)
        .map(|l| SignatureLayer {
            digest: l.digest,
            size: u64::try_from(l.size).unwrap_or(u64::MAX),
            signature: l.annotations.get(SIGNATURE_ANNOTATION).cloned(),
        })
        .collect();
    if layers.is_empty() {
        bail!("the signature image has no {SIMPLESIGNING} layer");
    }
    Ok(layers)
}

#[derive(Deserialize)]
struct Payload {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    image: Image,
}

#[derive(Deserialize)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// Checks one signed payload: the signature is `key`'s over exactly these
/// bytes, and they name `digest`.
pub fn verify(key: &CosignKey, digest: &str, payload: &[u8], signature: &str) -> Result<()> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(signature.trim())
        .context("the signature annotation is not base64")?;
    let signature = Signature::from_der(&raw)
        .or_else(|_| Signature::from_slice(&raw))
        .map_err(|_| anyhow::anyhow!("the signature is not an ECDSA P-256 signature"))?;
    key.0
        .verify(payload, &signature)
        .map_err(|_| anyhow::anyhow!("the signature does not verify with cosign_key"))?;
    let payload: Payload = serde_json::from_slice(payload)
        .context("the signed payload is not cosign simple signing")?;
    let signed = payload.critical.image.docker_manifest_digest;
    if signed != digest {
        bail!("the signature is for {signed}, not {digest}");
    }
    Ok(())
}

#[derive(Deserialize)]
struct Config {
    created: Option<String>,
}

/// The `created` time a component's config states, if it states one.
pub fn created(config: &[u8]) -> Option<SystemTime> {
    let config: Config = serde_json::from_slice(config).ok()?;
    humantime::parse_rfc3339_weak(config.created?.trim()).ok()
}

/// Refuses `candidate` (a tag's new digest and its config's `created`) if
/// it is older than `serving`, the version the route serves: a registry
/// moving a signed tag back to an old build. Without a time on the serving
/// version there is nothing to compare; without one on the candidate, its
/// age cannot be told, and it is refused.
pub fn check_not_older(
    candidate: (&str, Option<SystemTime>),
    serving: (&str, Option<SystemTime>),
) -> Result<()> {
    let (Some(serving_time), (digest, time)) = (serving.1, candidate) else {
        return Ok(());
    };
    let rfc3339 = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
    match time {
        Some(time) if time >= serving_time => Ok(()),
        Some(time) => bail!(
            "{digest} was created {}, older than {} which serves (created {}): a signed tag \
             does not move back to an older build; pin `@{digest}` to roll back on purpose",
            rfc3339(time),
            serving.0,
            rfc3339(serving_time)
        ),
        None => bail!(
            "{digest} has no `created` time in its config, so it may be older than {} which \
             serves (created {}); pin `@{digest}` to serve it",
            serving.0,
            rfc3339(serving_time)
        ),
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use p256::ecdsa::SigningKey;
    use p256::ecdsa::signature::Signer;
    use p256::pkcs8::EncodePublicKey;

    pub fn signing_key(seed: u8) -> SigningKey {
        SigningKey::from_slice(&[seed; 32]).unwrap()
    }

    pub fn public_pem(key: &SigningKey) -> String {
        key.verifying_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .unwrap()
    }

    pub fn payload(digest: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "critical": {
                "identity": {"docker-reference": "registry/repo"},
                "image": {"docker-manifest-digest": digest},
                "type": "cosign container image signature"
            },
            "optional": null
        }))
        .unwrap()
    }

    pub fn sign(key: &SigningKey, payload: &[u8]) -> String {
        let signature: Signature = key.sign(payload);
        base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
    }

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_signature_verifies_only_for_its_key_digest_and_bytes() {
        let signer = signing_key(7);
        let key = CosignKey::from_pem(&public_pem(&signer)).unwrap();
        let body = payload(D);
        let sig = sign(&signer, &body);
        verify(&key, D, &body, &sig).unwrap();

        let other = CosignKey::from_pem(&public_pem(&signing_key(8))).unwrap();
        let e = verify(&other, D, &body, &sig).unwrap_err().to_string();
        assert!(e.contains("does not verify"), "{e}");
        let e = verify(&key, "sha256:11", &body, &sig)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is for"), "{e}");
        let mut tampered = body.clone();
        tampered[5] ^= 1;
        assert!(verify(&key, D, &tampered, &sig).is_err());
        assert!(
            verify(&key, D, &body, "***")
                .unwrap_err()
                .to_string()
                .contains("base64")
        );
        // Signed, but not a simple-signing payload.
        let junk = b"{}".to_vec();
        let e = verify(&key, D, &junk, &sign(&signer, &junk))
            .unwrap_err()
            .to_string();
        assert!(e.contains("simple signing"), "{e}");
    }

    #[test]
    fn keys_and_manifests() {
        assert!(CosignKey::from_pem("not a key").is_err());
        assert_eq!(signature_tag(D), format!("sha256-{}.sig", &D[7..]));
        let m = serde_json::json!({"schemaVersion": 2, "layers": [
            {"mediaType": "application/octet-stream", "digest": D, "size": 1},
            {"mediaType": SIMPLESIGNING, "digest": D, "size": 3,
             "annotations": {SIGNATURE_ANNOTATION: "c2ln"}}
        ]});
        let layers = signature_layers(&serde_json::to_vec(&m).unwrap()).unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0].signature.as_deref(), Some("c2ln"));
        let none = serde_json::json!({"schemaVersion": 2, "layers": []});
        assert!(signature_layers(&serde_json::to_vec(&none).unwrap()).is_err());
    }

    #[test]
    fn an_older_build_is_refused_a_newer_or_equal_one_is_not() {
        let time = |text: &str| created(format!(r#"{{"created":"{text}"}}"#).as_bytes());
        let old = time("2026-01-01T00:00:00Z");
        let new = time("2026-06-01T00:00:00.5Z");
        assert!(old.is_some() && new > old);
        assert_eq!(created(br#"{"architecture":"wasm"}"#), None);
        assert_eq!(created(b"not json"), None);
        assert_eq!(time("yesterday"), None);

        let e = check_not_older(("sha256:old", old), ("sha256:new", new))
            .unwrap_err()
            .to_string();
        assert!(e.contains("older than sha256:new"), "{e}");
        assert!(e.contains("2026-01-01T00:00:00Z"), "{e}");
        check_not_older(("sha256:new", new), ("sha256:old", old)).unwrap();
        check_not_older(("sha256:same", new), ("sha256:new", new)).unwrap();
        // Nothing to compare with: accepted. No time on the candidate: refused.
        check_not_older(("sha256:old", old), ("sha256:new", None)).unwrap();
        let e = check_not_older(("sha256:x", None), ("sha256:new", new))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no `created` time"), "{e}");
    }
}
