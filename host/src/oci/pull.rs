//! Resolving an `oci://` reference to a verified component file on disk.
//!
//! A pinned reference whose manifest and layer are in the store is served
//! from it without a single request, so a restart with the registry down
//! serves at once. Anything else is pulled: the manifest (checked against
//! the pinned digest, or the registry's `Docker-Content-Digest`); with a
//! `cosign_key`, its signature (and for a tag, that it is not an older
//! build than the one serving); for an index the wasm platform's manifest;
//! then the one layer, whose declared
//! size is capped before the download and whose bytes are capped, hashed
//! and written to disk while they stream (see [`super::store`]). Every
//! read goes through [`super::registry`], which caps manifests and error
//! answers too.
//!
//! Each attempt is bounded by `--pull-timeout`; a failure that may pass
//! (connection refused or reset, a timeout, a 5xx or 429, a download cut
//! short) is retried with a doubling backoff. A refusal that will not pass
//! (401, 404, a digest mismatch, a wrong layout, over the size cap) is not.

use super::auth;
use super::cosign::{self, CosignKey};
use super::layout::{self, ACCEPTED_MANIFESTS, Selected, WasmLayer};
use super::reference::OciRef;
use super::registry::{Refused, Session};
use super::store::{BlobStore, SignatureRecord};
use super::untrusted::quote_within;
use crate::base::digest::Digest;
use anyhow::{Result, anyhow};
use std::path::PathBuf;
use std::time::Duration;

/// Attempts per pull, the first included.
pub const PULL_ATTEMPTS: u32 = 3;
/// The wait before the first retry; doubled before each next one.
pub const FIRST_RETRY_DELAY: Duration = Duration::from_millis(200);
/// The longest a pull's error is logged, stored or answered, in bytes: the
/// last guard, over the whole chain, for what quotes a registry's text
/// (each quote is already cut to [`super::untrusted::MAX_QUOTED`]).
pub const MAX_ERROR_TEXT: usize = 4 << 10;

/// A component pulled (or found in the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    /// The verified layer on disk.
    pub path: PathBuf,
    /// The manifest (or index) digest the reference resolved to.
    pub manifest_digest: Digest,
    /// The layer's digest: the sha256 of the component file.
    pub layer_digest: Digest,
    /// Whether the store had it all, so no request was made.
    pub from_cache: bool,
}

/// How pulls are made.
#[derive(Debug, Clone)]
pub struct PullSettings {
    /// Where manifests and layers are kept (`--cache-dir`/oci).
    pub store: PathBuf,
    /// `HOST:PORT`s spoken to over plain HTTP.
    pub insecure: Vec<String>,
    /// One attempt's time limit.
    pub timeout: Duration,
    /// The largest layer accepted (`--max-component-size`).
    pub max_size: u64,
    /// The Docker config folder with registry credentials.
    pub docker_config: Option<PathBuf>,
}

/// What a route with a `cosign_key` trusts.
pub struct Trust<'a> {
    /// The key its versions must be signed by.
    pub key: &'a CosignKey,
    /// The manifest digest serving the route now, if any: a tag's new
    /// digest must not be an older build.
    pub serving: Option<&'a Digest>,
}

pub struct Puller {
    store: BlobStore,
    settings: PullSettings,
}

impl Puller {
    pub fn new(settings: PullSettings) -> Puller {
        Puller {
            store: BlobStore::new(settings.store.clone()),
            settings,
        }
    }

    /// A fresh session per attempt: a mounted Secret may have rotated the
    /// credentials, and a token may have expired. A credential helper gets
    /// half the attempt's time at most, so its own error is the one shown.
    async fn session(&self, reference: &OciRef) -> Result<Session, Failure> {
        let registry = reference.reference.resolve_registry();
        let lookup = auth::Lookup {
            dir: self.settings.docker_config.clone(),
            helper_timeout: auth::CREDENTIAL_HELPER_TIMEOUT.min(self.settings.timeout / 2),
        };
        let auth = lookup.for_server(registry).await.map_err(Failure::stop)?;
        Session::new(registry, &self.settings.insecure, auth, lookup).map_err(Failure::stop)
    }

    pub fn store(&self) -> &BlobStore {
        &self.store
    }

    /// The component `reference` names, from the store or the registry.
    /// With `trust`, its digest must carry a valid signature by the key,
    /// checked before its layer is downloaded, and a tag's digest must not
    /// be older than the version serving (see [`cosign::check_not_older`]).
    pub async fn fetch(&self, reference: &OciRef, trust: Option<&Trust<'_>>) -> Result<Pulled> {
        self.store.ready().map_err(|e| {
            anyhow!(
                "`{reference}`: not pulled: --cache-dir and its oci/ folders must be \
                 directories (not symlinks) owned by this user that no one else may \
                 write to, like the compile cache's: {e:#}"
            )
        })?;
        if let Some(digest) = reference.pinned_digest()
            && let Some(pulled) = self.cached(&digest)?
        {
            if let Some(trust) = trust {
                self.check_signature(reference, &digest, trust.key).await?;
            }
            return Ok(pulled);
        }
        self.retrying(reference, "pull", || self.pull_once(reference, trust))
            .await
    }

    /// The digest a tag points to now: one manifest HEAD (GET if the
    /// registry sends no digest header).
    pub async fn resolve(&self, reference: &OciRef) -> Result<Digest> {
        self.retrying(reference, "resolve", || async {
            let session = self.session(reference).await?;
            Ok(session
                .resolve(&reference.reference, &ACCEPTED_MANIFESTS)
                .await?)
        })
        .await
    }

    async fn retrying<T, F, Fut>(&self, reference: &OciRef, what: &str, attempt: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        let timeout = self.settings.timeout;
        let mut delay = FIRST_RETRY_DELAY;
        let mut tries = 0;
        loop {
            tries += 1;
            let Failure { error, retry } = match tokio::time::timeout(timeout, attempt()).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(failure)) => failure,
                Err(_) => Failure {
                    error: anyhow!(
                        "no answer within --pull-timeout ({})",
                        humantime::format_duration(timeout)
                    ),
                    retry: true,
                },
            };
            if super::is_plain_http(&error) {
                let hint = super::plain_http_hint(reference.reference.resolve_registry());
                let error = one_line(&error);
                return Err(anyhow!("`{reference}`: {what} failed: {hint} ({error})"));
            }
            if !retry || tries >= PULL_ATTEMPTS {
                let attempts = if retry {
                    format!(" after {tries} attempts")
                } else {
                    String::new()
                };
                let error = one_line(&error);
                return Err(anyhow!("`{reference}`: {what} failed{attempts}: {error}"));
            }
            tracing::warn!(
                reference = %reference,
                attempt = tries,
                retry_in_ms = delay.as_millis() as u64,
                error = %one_line(&error),
                "registry {what} failed; retrying"
            );
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }

    /// Checks that `digest` (what `reference` resolved to) carries a valid
    /// cosign signature by `key`: from the store when a signature checked
    /// before is there, else from the registry (`REPO:sha256-HEX.sig`).
    pub async fn check_signature(
        &self,
        reference: &OciRef,
        digest: &Digest,
        key: &CosignKey,
    ) -> Result<()> {
        if self.verify_stored(digest, key).is_ok() {
            return Ok(());
        }
        self.retrying(reference, "signature check", || async {
            let session = self.session(reference).await?;
            self.fetch_signature(&session, reference, digest, key).await
        })
        .await
    }

    /// Verifies the signature recorded for `digest` with today's key.
    fn verify_stored(&self, digest: &Digest, key: &CosignKey) -> Result<()> {
        let record = self
            .store
            .signature(digest)
            .ok_or_else(|| anyhow!("no signature recorded"))?;
        cosign::verify(key, &digest.to_string(), &record.payload, &record.signature)
    }

    /// Reads the signature image of `digest` and its first
    /// [`cosign::MAX_SIGNATURE_LAYERS`] payloads, each into memory and
    /// capped; records the first that verifies.
    async fn fetch_signature(
        &self,
        session: &Session,
        reference: &OciRef,
        digest: &Digest,
        key: &CosignKey,
    ) -> Result<(), Failure> {
        let image = &reference.reference;
        // cosign's payloads and tags spell the digest out.
        let signed = digest.to_string();
        let tag = cosign::signature_tag(&signed);
        let signature_ref = oci_client::Reference::with_tag(
            image.registry().to_string(),
            image.repository().to_string(),
            tag.clone(),
        );
        let manifest = match session.manifest(&signature_ref, &ACCEPTED_MANIFESTS).await {
            Ok((manifest, _)) => manifest,
            Err(e) if is_not_found(&e) => {
                return Err(Failure::stop(anyhow!(
                    "no cosign signature: `{}:{tag}` does not exist (sign with `cosign sign --key`; \
                     cosign 3 and later write this tag only with `--new-bundle-format=false \
                     --use-signing-config=false`)",
                    reference.repository()
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let layers = cosign::signature_layers(&manifest).map_err(Failure::stop)?;
        let total = layers.len();
        drop(manifest);
        let mut reasons = Vec::new();
        for layer in layers.into_iter().take(cosign::MAX_SIGNATURE_LAYERS) {
            let Some(sig) = &layer.signature else {
                reasons.push(format!(
                    "{}: no {} annotation",
                    layer.digest,
                    cosign::SIGNATURE_ANNOTATION
                ));
                continue;
            };
            if layer.size > cosign::MAX_PAYLOAD {
                reasons.push(format!(
                    "{}: payload of {} bytes, more than {}",
                    layer.digest,
                    layer.size,
                    cosign::MAX_PAYLOAD
                ));
                continue;
            }
            let blob = layout::check_digest(&layer.digest).map_err(Failure::stop)?;
            let payload = self
                .blob_in_memory(session, image, &blob, layer.size)
                .await?;
            match cosign::verify(key, &signed, &payload, sig) {
                Ok(()) => {
                    let record = SignatureRecord {
                        payload,
                        signature: sig.clone(),
                    };
                    self.store.set_signature(digest, &record)?;
                    return Ok(());
                }
                Err(e) => reasons.push(format!("{}: {e}", layer.digest)),
            }
        }
        if total > cosign::MAX_SIGNATURE_LAYERS {
            reasons.push(format!(
                "{} more layers not read: at most {} are",
                total - cosign::MAX_SIGNATURE_LAYERS,
                cosign::MAX_SIGNATURE_LAYERS
            ));
        }
        Err(Failure::stop(anyhow!(
            "no valid cosign signature for {digest} in `{}:{tag}` ({})",
            reference.repository(),
            reasons.join("; ")
        )))
    }

    /// A small blob read whole into memory, refused past `max` bytes or if
    /// it does not hash to `digest`.
    async fn blob_in_memory(
        &self,
        session: &Session,
        image: &oci_client::Reference,
        digest: &Digest,
        max: u64,
    ) -> Result<Vec<u8>, Failure> {
        use futures_util::StreamExt;
        let (_, stream) = session.blob(image, digest).await?;
        let mut stream = std::pin::pin!(stream);
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| anyhow::Error::from(e).context("download interrupted"))?;
            if (bytes.len() + chunk.len()) as u64 > max {
                return Err(Failure::stop(anyhow!(
                    "{digest}: more than {max} bytes, larger than its limit"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(Failure::stop(anyhow!(
                "digest mismatch: expected {digest}, the registry sent {} bytes of {actual}",
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    /// The `created` time of the image manifest `manifest`'s config, from
    /// the store or (then stored) the registry.
    async fn created(
        &self,
        session: &Session,
        image: &oci_client::Reference,
        manifest: &[u8],
    ) -> Result<Option<std::time::SystemTime>, Failure> {
        let Some((config, size)) = layout::config(manifest) else {
            return Ok(None);
        };
        if size > cosign::MAX_CONFIG {
            return Ok(None);
        }
        if let Some(path) = self.store.get(&config)? {
            let bytes = std::fs::read(&path)?;
            if Digest::of(&bytes) == config {
                return Ok(cosign::created(&bytes));
            }
            self.store.remove(&config);
        }
        let bytes = self.blob_in_memory(session, image, &config, size).await?;
        self.store.put(&config, &bytes).await?;
        Ok(cosign::created(&bytes))
    }

    /// The image manifest `digest` leads to (through an index's wasm
    /// entry), from the store or the registry.
    async fn image_manifest(
        &self,
        session: &Session,
        image: &oci_client::Reference,
        digest: &Digest,
    ) -> Result<Vec<u8>, Failure> {
        let mut digest = *digest;
        for _ in 0..2 {
            let manifest = match self.store.read_manifest(&digest)? {
                Some(manifest) => manifest,
                None => session
                    .manifest(
                        &image.clone_with_digest(digest.to_string()),
                        &ACCEPTED_MANIFESTS,
                    )
                    .await?
                    .0
                    .to_vec(),
            };
            match layout::select(&manifest).map_err(Failure::stop)? {
                Selected::Layer(_) => return Ok(manifest),
                Selected::Platform(child) => digest = child,
            }
        }
        Err(Failure::stop(anyhow!("{digest}: an index within an index")))
    }

    /// Refuses `digest` (whose image manifest is `manifest`) if its build
    /// is older than `serving`'s.
    async fn check_not_older(
        &self,
        session: &Session,
        reference: &OciRef,
        digest: &Digest,
        manifest: &[u8],
        serving: &Digest,
    ) -> Result<(), Failure> {
        let image = &reference.reference;
        let candidate = self.created(session, image, manifest).await?;
        let serving_manifest = self.image_manifest(session, image, serving).await?;
        let serving_time = self.created(session, image, &serving_manifest).await?;
        let (digest, serving) = (digest.to_string(), serving.to_string());
        cosign::check_not_older((&digest, candidate), (&serving, serving_time))
            .map_err(Failure::stop)
    }

    /// The pinned `digest`, if its manifest (and index entry) and layer are
    /// all in the store.
    fn cached(&self, digest: &Digest) -> Result<Option<Pulled>> {
        let Some(manifest) = self.store.read_manifest(digest)? else {
            return Ok(None);
        };
        let layer = match layout::select(&manifest)? {
            Selected::Layer(layer) => layer,
            Selected::Platform(child) => {
                let Some(manifest) = self.store.read_manifest(&child)? else {
                    return Ok(None);
                };
                match layout::select(&manifest)? {
                    Selected::Layer(layer) => layer,
                    Selected::Platform(_) => return Ok(None),
                }
            }
        };
        Ok(self.store.get(&layer.digest)?.map(|path| Pulled {
            path,
            manifest_digest: *digest,
            layer_digest: layer.digest,
            from_cache: true,
        }))
    }

    async fn pull_once(
        &self,
        reference: &OciRef,
        trust: Option<&Trust<'_>>,
    ) -> Result<Pulled, Failure> {
        let session = self.session(reference).await?;
        let image = &reference.reference;
        let (manifest, digest) = session.manifest(image, &ACCEPTED_MANIFESTS).await?;
        // Signed, and not older than what serves, before anything of it is
        // stored or its layer requested.
        if let Some(trust) = trust
            && self.verify_stored(&digest, trust.key).is_err()
        {
            self.fetch_signature(&session, reference, &digest, trust.key)
                .await?;
        }
        let (layer, child) = match layout::select(&manifest).map_err(Failure::stop)? {
            Selected::Layer(layer) => (layer, None),
            Selected::Platform(child) => {
                let (child_manifest, child) = session
                    .manifest(
                        &image.clone_with_digest(child.to_string()),
                        &ACCEPTED_MANIFESTS,
                    )
                    .await?;
                match layout::select(&child_manifest).map_err(Failure::stop)? {
                    Selected::Layer(layer) => (layer, Some((child, child_manifest))),
                    Selected::Platform(_) => {
                        return Err(Failure::stop(anyhow!(
                            "the index's wasm entry {child} is itself an index"
                        )));
                    }
                }
            }
        };
        if let Some(Trust {
            serving: Some(serving),
            ..
        }) = trust
            && reference.pinned().is_none()
            && **serving != digest
        {
            let image_manifest = child.as_ref().map_or(&manifest, |(_, m)| m);
            self.check_not_older(&session, reference, &digest, image_manifest, serving)
                .await?;
        }
        self.store.put(&digest, &manifest).await?;
        if let Some((child, child_manifest)) = &child {
            self.store.put(child, child_manifest).await?;
        }
        let path = match self.store.get(&layer.digest)? {
            Some(path) => path,
            None => self.download(&session, reference, &layer).await?,
        };
        Ok(Pulled {
            path,
            manifest_digest: digest,
            layer_digest: layer.digest,
            from_cache: false,
        })
    }

    async fn download(
        &self,
        session: &Session,
        reference: &OciRef,
        layer: &WasmLayer,
    ) -> Result<PathBuf, Failure> {
        let max = self.settings.max_size;
        if layer.size > max {
            return Err(Failure::stop(anyhow!(
                "layer {} is {} bytes, larger than --max-component-size ({max} bytes); not downloaded",
                layer.digest,
                layer.size
            )));
        }
        let (length, stream) = session.blob(&reference.reference, &layer.digest).await?;
        if let Some(length) = length
            && length > layer.size
        {
            return Err(Failure::stop(anyhow!(
                "layer {}: the registry sends {length} bytes, its manifest says {}",
                layer.digest,
                layer.size
            )));
        }
        // Capped at the declared size: a blob longer than its descriptor
        // is wrong however it hashes.
        let written = self.store.write(&layer.digest, layer.size, stream).await;
        match written {
            Err(e) if !is_io(&e) => Err(Failure::stop(e)),
            other => Ok(other?),
        }
    }
}

/// A failed attempt, and whether another could succeed.
#[derive(Debug)]
struct Failure {
    error: anyhow::Error,
    retry: bool,
}

impl Failure {
    /// A refusal retrying will not cure.
    fn stop(error: anyhow::Error) -> Failure {
        Failure {
            error,
            retry: false,
        }
    }
}

/// Any other error is classified by what it is.
impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(error: E) -> Failure {
        let error = error.into();
        Failure {
            retry: transient(&error),
            error,
        }
    }
}

/// The error's whole chain on one line of at most [`MAX_ERROR_TEXT`] bytes:
/// whatever quotes a registry's text, and whatever forgot to.
fn one_line(error: &anyhow::Error) -> String {
    quote_within(&format!("{error:#}"), MAX_ERROR_TEXT)
}

fn is_not_found(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<Refused>()
        .is_some_and(|r| r.status == reqwest::StatusCode::NOT_FOUND)
}

fn is_io(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|e| e.downcast_ref::<std::io::Error>().is_some())
}

/// Whether `error` may pass on its own (network trouble, a registry
/// overloaded or restarting), so a retry is worth it.
fn transient(error: &anyhow::Error) -> bool {
    for cause in error.chain() {
        if let Some(refused) = cause.downcast_ref::<Refused>() {
            return refused.may_pass();
        }
        // Connecting, sending or a body cut short; not a request the host
        // built wrong, nor a redirect the host refused.
        if let Some(http) = cause.downcast_ref::<reqwest::Error>() {
            return !http.is_builder() && !http.is_redirect();
        }
    }
    // A stream cut short: an io::Error in the chain.
    is_io(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_failures_are_retried() {
        let cut =
            anyhow::Error::from(std::io::Error::other("reset")).context("download interrupted");
        assert!(transient(&cut));
        assert!(!transient(&anyhow!("digest mismatch")));
        let refused = |status| {
            anyhow::Error::from(Refused {
                status,
                url: "http://x/v2/".into(),
                detail: String::new(),
            })
            .context("pull")
        };
        assert!(transient(&refused(reqwest::StatusCode::BAD_GATEWAY)));
        assert!(!transient(&refused(reqwest::StatusCode::FORBIDDEN)));
        assert!(transient(&refused(reqwest::StatusCode::TOO_MANY_REQUESTS)));
        assert!(!transient(&refused(reqwest::StatusCode::FOUND)));
        assert!(is_not_found(&refused(reqwest::StatusCode::NOT_FOUND)));
    }

    #[test]
    fn errors_are_one_bounded_line() {
        let forged = "x\n2026-01-01T00:00:00Z  INFO forged\n".repeat(10_000);
        let error = anyhow!("{forged}").context("pull");
        let line = one_line(&error);
        assert!(line.starts_with("pull: x\\n2026"), "{line}");
        assert!(!line.contains('\n') && line.len() <= MAX_ERROR_TEXT + 3);
    }
}
