//! Handlers from OCI registries: `component = "oci://REGISTRY/REPO@sha256:HEX"`
//! (pinned) or `"oci://REGISTRY/REPO:TAG"` (resolved at each load).
//!
//! A pulled component is a file under `--cache-dir` keyed by its digest; the
//! reloader then reads, validates and compiles it exactly as it does a local
//! file. Pushes are `oci-client`'s (run by an operator, at their own
//! registry); pulls are the host's own, token flow included, with a cap on
//! every body, which oci-client has no hook for, and a rule for where a
//! registry may send the host; this module adds what a server needs
//! around them.
//!
//! - [`reference`]: parsing `oci://` references (pure logic).
//! - [`layout`]: which manifests are handlers: layer media types, index platforms.
//! - [`store`]: the blob store under `--cache-dir`, written by streaming and verifying.
//! - [`auth`]: registry credentials from a Docker `config.json`.
//! - [`registry`]: the host's own reads (manifests, blobs, tokens), every body capped.
//! - [`token`]: the bearer-token challenge and answer (pure logic).
//! - [`address`]: where redirects and realms may send the host, and credentials go.
//! - [`untrusted`]: a registry's text quoted in an error: cut short, on one line.
//! - [`pull`]: resolving a reference to a verified local file: timeout, retries, cache.
//! - [`push`]: `wasmlet push FILE oci://…` in the CNCF wasm layout.
//! - [`cosign`]: `cosign_key = "key.pub"`, checking cosign signatures (pure logic).

pub mod address;
pub mod auth;
pub mod cosign;
pub mod layout;
pub mod pull;
pub mod push;
pub mod reference;
pub mod registry;
pub mod store;
pub mod token;
pub mod untrusted;

pub use pull::{Pulled, Puller};
pub use reference::OciRef;

use oci_client::client::{ClientConfig, ClientProtocol};
use std::time::Duration;

/// Whether `error` is this host's TLS client meeting a registry that
/// answered in plain HTTP (rustls reads a first record that is not TLS). It
/// will not pass by retrying; `--insecure-registry` is what the user wants
/// if the registry is meant to speak HTTP.
pub fn is_plain_http(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        // tokio-rustls hands rustls' error up inside an io::Error (which a
        // connector may wrap in another), whose `source()` skips it: look
        // inside each.
        let mut cause: &(dyn std::error::Error + 'static) = cause;
        loop {
            if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
                return matches!(
                    tls,
                    rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)
                );
            }
            match cause
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
            {
                Some(inner) => cause = inner,
                None => return false,
            }
        }
    })
}

/// What to tell the user when [`is_plain_http`] holds for `registry`.
pub fn plain_http_hint(registry: &str) -> String {
    format!(
        "{registry} answered in plain HTTP, not HTTPS: if it serves only HTTP (a local registry), add --insecure-registry {registry}"
    )
}

/// How long connecting to a registry may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const USER_AGENT: &str = concat!("wasmlet/", env!("CARGO_PKG_VERSION"));

/// A registry client for `wasmlet push`: HTTPS with the system's roots
/// (rustls with ring as its crypto provider), plain HTTP only to
/// `insecure` registries. Pulls do not use it; see [`registry`].
pub fn client(insecure: &[String]) -> oci_client::Client {
    // reqwest is built without a provider; the first caller installs ring.
    // A second call finds it installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    oci_client::Client::new(ClientConfig {
        protocol: if insecure.is_empty() {
            ClientProtocol::Https
        } else {
            ClientProtocol::HttpsExcept(insecure.to_vec())
        },
        // Index entries are chosen by `layout`, never by the host's platform.
        platform_resolver: None,
        connect_timeout: Some(CONNECT_TIMEOUT),
        user_agent: USER_AGENT,
        ..ClientConfig::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_http_answer_is_recognised_through_the_io_error() {
        let tls = rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType);
        let wrapped = std::io::Error::other(std::io::Error::other(tls));
        let error = anyhow::Error::from(wrapped)
            .context("error sending request")
            .context("push failed");
        assert!(is_plain_http(&error));
        let other = anyhow::Error::from(std::io::Error::other(rustls::Error::DecryptError));
        assert!(!is_plain_http(&other));
        assert!(!is_plain_http(&anyhow::anyhow!(
            "InvalidContentType, said as text"
        )));
        assert!(plain_http_hint("r:5000").ends_with("add --insecure-registry r:5000"));
    }
}
