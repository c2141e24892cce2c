//! `oci://REGISTRY/REPOSITORY@sha256:HEX` and `oci://REGISTRY/REPOSITORY:TAG`.
//!
//! The registry is always explicit (no implicit Docker Hub) and so is the
//! tag (no implicit `latest`): a manifest says exactly what it serves.

use crate::base::digest::Digest;
use anyhow::{Result, bail};
use oci_client::Reference;

/// The scheme that marks a component as a registry reference.
pub const SCHEME: &str = "oci://";

/// A parsed `oci://` reference.
#[derive(Debug, Clone)]
pub struct OciRef {
    /// As written in the manifest, `oci://` included.
    pub text: String,
    pub reference: Reference,
}

impl PartialEq for OciRef {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl OciRef {
    /// Whether `text` is meant as a registry reference.
    pub fn is_oci(text: &str) -> bool {
        text.starts_with(SCHEME)
    }

    /// Parses `oci://REGISTRY/REPOSITORY@sha256:HEX` or `…:TAG`.
    pub fn parse(text: &str) -> Result<OciRef> {
        let Some(rest) = text.strip_prefix(SCHEME) else {
            bail!("`{text}`: an OCI reference starts with `{SCHEME}`");
        };
        let Some((registry, path)) = rest.split_once('/') else {
            bail!("`{text}`: expected oci://REGISTRY/REPOSITORY:TAG or @sha256:DIGEST");
        };
        if registry.is_empty() || path.is_empty() {
            bail!("`{text}`: expected oci://REGISTRY/REPOSITORY:TAG or @sha256:DIGEST");
        }
        let name = path.rsplit('/').next().unwrap_or(path);
        if !name.contains(['@', ':']) {
            bail!(
                "`{text}`: no tag or digest; add `:TAG` or `@sha256:DIGEST` (there is no implicit `latest`)"
            );
        }
        let reference: Reference = rest
            .parse()
            .map_err(|e| anyhow::anyhow!("`{text}`: invalid OCI reference: {e}"))?;
        if reference.registry() != registry {
            bail!("`{text}`: `{registry}` is not a registry host name (add a domain or a port)");
        }
        if let Some(digest) = reference.digest()
            && Digest::parse(digest).is_err()
        {
            bail!("`{text}`: the digest must be sha256: and 64 hex digits");
        }
        Ok(OciRef {
            text: text.to_string(),
            reference,
        })
    }

    /// The pinned manifest digest (`sha256:…`), if the reference has one.
    pub fn pinned(&self) -> Option<&str> {
        self.reference.digest()
    }

    /// The pinned manifest digest, parsed (it was checked by [`OciRef::parse`]).
    pub fn pinned_digest(&self) -> Option<Digest> {
        self.pinned().and_then(|digest| Digest::parse(digest).ok())
    }

    /// `REGISTRY/REPOSITORY`, for messages.
    pub fn repository(&self) -> String {
        format!(
            "{}/{}",
            self.reference.registry(),
            self.reference.repository()
        )
    }
}

impl std::fmt::Display for OciRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn pinned_and_tagged() {
        let r = OciRef::parse(&format!("oci://127.0.0.1:5000/team/hello@sha256:{HEX}")).unwrap();
        assert_eq!(r.reference.registry(), "127.0.0.1:5000");
        assert_eq!(r.reference.repository(), "team/hello");
        assert_eq!(r.pinned(), Some(format!("sha256:{HEX}").as_str()));
        let r = OciRef::parse("oci://ghcr.io/acme/hello:v1").unwrap();
        assert_eq!(r.reference.tag(), Some("v1"));
        assert_eq!(r.pinned(), None);
        assert_eq!(r.repository(), "ghcr.io/acme/hello");
        let r = OciRef::parse("oci://localhost:5000/hello:1.0").unwrap();
        assert_eq!(r.reference.registry(), "localhost:5000");
    }

    #[test]
    fn refusals_say_why() {
        let e = |t: &str| format!("{:#}", OciRef::parse(t).unwrap_err());
        assert!(e("oci://ghcr.io/acme/hello").contains("no tag or digest"));
        assert!(e("oci://ghcr.io").contains("expected oci://REGISTRY"));
        assert!(e("oci:///hello:v1").contains("expected oci://REGISTRY"));
        assert!(e("oci://acme/hello:v1").contains("not a registry host name"));
        assert!(e("oci://ghcr.io/acme/hello@sha256:abc").contains("invalid OCI reference"));
        assert!(e("oci://ghcr.io/Acme/hello:v1").contains("invalid OCI reference"));
        assert!(e("hello.wasm").contains("starts with `oci://`"));
    }
}
