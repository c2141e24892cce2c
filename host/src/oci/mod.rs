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
