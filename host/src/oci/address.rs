//! Where a registry may send the host, and where its credentials may go.
//!
//! A registry is trusted with the bytes it serves (they are verified by
//! digest and, with `cosign_key`, by signature), not with the host's
//! network position: a redirect or a token realm must not turn a pull into
//! a request to the cloud metadata service or an internal port, and the
//! Docker config's password must not follow a challenge to another host.
//!
//! - Redirects are followed only for blob downloads (registries send
//!   those to storage), at most [`MAX_BLOB_REDIRECTS`] hops, over HTTPS
//!   (plain HTTP only from an `--insecure-registry`); a manifest, token or
//!   `/v2/` answer that redirects is an error.
//! - A redirect or a token realm may reach an internal address
//!   ([`is_internal`]: loopback, private, link-local, unspecified, …) only
//!   when the registry itself is on one. Names are checked by what they
//!   resolve to ([`Resolver`]), before any connection.
//! - The registry's credentials (basic, or the token they buy) go to its
//!   own host and port only; a token realm elsewhere gets the credentials
//!   the Docker config lists for that realm's host, if any. Credentials
//!   travel over HTTPS only, unless the registry is `--insecure-registry`.

use anyhow::{Result, anyhow};
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::untrusted::quote;

/// The most redirects one blob download follows.
pub const MAX_BLOB_REDIRECTS: usize = 3;

/// Whether `ip` is inside a network rather than on the internet: loopback,
/// private (10/8, 172.16/12, 192.168/16, fc00::/7), link-local
/// (169.254/16, the metadata services' address, and fe80::/10),
/// unspecified, shared (100.64/10), multicast, broadcast or reserved.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => internal_v4(v4),
            None => internal_v6(v6),
        },
    }
}

fn internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240
}

fn internal_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00
        || (s[0] & 0xffc0) == 0xfe80
        || (s[0] & 0xffc0) == 0xfec0
        || (s[0] == 0x2001 && s[1] == 0x0db8)
        // NAT64 and the deprecated IPv4-compatible form carry a v4 address.
        || (s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || s[..6] == [0; 6])
            && internal_v4(Ipv4Addr::from(ip.to_bits() as u32))
}

/// Whether a URL's host is an internal address written out: an IP literal
/// that [`is_internal`], or `localhost`.
pub fn host_is_internal(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => is_internal(ip),
        Err(_) => {
            let name = bare.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
    }
}

/// The registry a session speaks to: its origin, whether it is insecure,
/// and whether it is itself at an internal address (then redirects and
/// realms may be too).
#[derive(Clone, Debug)]
pub struct Origin {
    /// `SCHEME://HOST:PORT/`.
    pub base: Url,
    pub insecure: bool,
    internal: Arc<AtomicBool>,
}

impl Origin {
    /// `registry` as `HOST[:PORT]`, over plain HTTP when `insecure`.
    pub fn new(registry: &str, insecure: bool) -> Result<Origin> {
        let scheme = if insecure { "http" } else { "https" };
        let base = Url::parse(&format!("{scheme}://{registry}/"))
            .map_err(|e| anyhow!("`{registry}` is not a registry address: {e}"))?;
        let internal = base.host_str().is_some_and(host_is_internal);
        Ok(Origin {
            base,
            insecure,
            internal: Arc::new(AtomicBool::new(internal)),
        })
    }

    /// Whether the registry is at an internal address: written as one, or
    /// a name that resolved to one.
    pub fn is_internal(&self) -> bool {
        self.internal.load(Ordering::Relaxed)
    }

    /// Whether `url` is on the registry's own host and port.
    pub fn is_same(&self, url: &Url) -> bool {
        let host = |u: &Url| u.host_str().map(str::to_ascii_lowercase);
        host(url) == host(&self.base)
            && url.port_or_known_default() == self.base.port_or_known_default()
    }

    /// Why the host may not send a request to `url` on the registry's
    /// word (a redirect, a realm), if it may not.
    pub fn refuse(&self, url: &Url) -> Option<String> {
        match url.scheme() {
            "https" => {}
            "http" if self.insecure => {}
            other => {
                return Some(format!(
                    "`{other}:` is not allowed (HTTPS, or plain HTTP from an --insecure-registry)"
                ));
            }
        }
        let host = url.host_str().unwrap_or_default();
        if host_is_internal(host) && !self.is_internal() && !self.is_same(url) {
            return Some(format!(
                "`{}` is an internal address and the registry is not on one",
                quote(host)
            ));
        }
        None
    }

    /// Whether credentials may travel to `url` at all: over HTTPS, unless
    /// the registry is insecure. (Whose credentials: the registry's only
    /// to its own host and port, [`Origin::is_same`].)
    pub fn may_send_credentials(&self, url: &Url) -> bool {
        url.scheme() == "https" || self.insecure
    }

    /// The redirect policy of a session: see the module's doc.
    pub fn redirects(&self) -> reqwest::redirect::Policy {
        let origin = self.clone();
        reqwest::redirect::Policy::custom(move |attempt| {
            let first = &attempt.previous()[0];
            let from = attempt.previous().last().unwrap_or(first).clone();
            let is_blob = origin.is_same(first) && first.path().contains("/blobs/");
            let why = if !is_blob {
                return attempt.stop();
            } else if attempt.previous().len() > MAX_BLOB_REDIRECTS {
                format!("more than {MAX_BLOB_REDIRECTS} redirects")
            } else if let Some(why) = origin.refuse(attempt.url()) {
                why
            } else {
                return attempt.follow();
            };
            let error = RedirectRefused {
                from: quote(from.as_str()),
                to: quote(attempt.url().as_str()),
                why,
            };
            attempt.error(error)
        })
    }

    /// A resolver that holds names to the same rule as written addresses.
    pub fn resolver(&self) -> Arc<Resolver> {
        Arc::new(Resolver {
            origin: self.clone(),
        })
    }
}

/// A redirect the policy refused: where from, where to, and why.
#[derive(Debug)]
pub struct RedirectRefused {
    pub from: String,
    pub to: String,
    pub why: String,
}

impl std::fmt::Display for RedirectRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} redirected to {}: {}; not followed",
            self.from, self.to, self.why
        )
    }
}

impl std::error::Error for RedirectRefused {}

/// The system resolver, then the rule: the registry's own name may
/// resolve to anything (and marks the registry internal when it resolves
/// to an internal address); any other name only to addresses the registry
/// may send the host to.
pub struct Resolver {
    origin: Origin,
}

impl Resolve for Resolver {
    fn resolve(&self, name: Name) -> Resolving {
        let origin = self.origin.clone();
        let name = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let own = origin
                .base
                .host_str()
                .is_some_and(|h| h.eq_ignore_ascii_case(&name));
            if own && addrs.iter().any(|a| is_internal(a.ip())) {
                origin.internal.store(true, Ordering::Relaxed);
            }
            if own || origin.is_internal() {
                return Ok(Box::new(addrs.into_iter()) as Addrs);
            }
            let public: Vec<SocketAddr> =
                addrs.into_iter().filter(|a| !is_internal(a.ip())).collect();
            if public.is_empty() {
                return Err(format!(
                    "`{}` resolves only to internal addresses, and the registry is not on one",
                    quote(&name)
                )
                .into());
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_addresses() {
        for internal in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "0.0.0.0",
            "::",
            "10.0.0.1",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.254",
            "192.168.1.1",
            "fc00::1",
            "fd12:3456::1",
            "127.0.0.1",
            "::1",
            "100.64.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "224.0.0.1",
            "255.255.255.255",
        ] {
            assert!(is_internal(ip(internal)), "{internal}");
        }
        for public in [
            "8.8.8.8",
            "172.32.0.1",
            "172.15.255.255",
            "192.169.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_internal(ip(public)), "{public}");
        }
        assert!(host_is_internal("[fe80::1]"));
        assert!(host_is_internal("LOCALHOST."));
        assert!(host_is_internal("a.localhost"));
        assert!(!host_is_internal("storage.example.com"));
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    /// The policy is a function of the URL: nothing is sent anywhere.
    #[test]
    fn a_public_registry_may_not_send_the_host_inside() {
        let public = Origin::new("registry.example", false).unwrap();
        assert!(!public.is_internal());
        for inside in [
            "https://169.254.169.254/latest/meta-data/",
            "https://[fe80::1]/x",
            "https://0.0.0.0/x",
            "https://10.1.2.3/x",
            "https://172.16.0.9/x",
            "https://192.168.0.1/x",
            "https://[fc00::1]/x",
            "https://localhost/x",
        ] {
            let why = public.refuse(&url(inside)).expect(inside);
            assert!(why.contains("internal address"), "{why}");
        }
        assert_eq!(public.refuse(&url("https://storage.example.com/b")), None);
        let plain = public.refuse(&url("http://storage.example.com/b")).unwrap();
        assert!(plain.contains("HTTPS"), "{plain}");
        assert!(public.refuse(&url("file:///etc/passwd")).is_some());
    }

    #[test]
    fn an_internal_registry_may_redirect_inside() {
        let local = Origin::new("127.0.0.1:5000", true).unwrap();
        assert!(local.is_internal());
        assert_eq!(local.refuse(&url("http://10.1.2.3:9000/blob")), None);
        assert_eq!(local.refuse(&url("http://127.0.0.1:9/x")), None);
    }

    #[test]
    fn credentials_go_to_the_registry_only() {
        let secure = Origin::new("registry.example", false).unwrap();
        assert!(secure.is_same(&url("https://registry.example/token")));
        assert!(secure.is_same(&url("https://REGISTRY.example:443/t")));
        assert!(!secure.is_same(&url("https://registry.example:8443/t")));
        assert!(!secure.is_same(&url("https://auth.example/token")));
        assert!(secure.may_send_credentials(&url("https://auth.example/token")));
        assert!(!secure.may_send_credentials(&url("http://registry.example/token")));
        let insecure = Origin::new("127.0.0.1:5000", true).unwrap();
        assert!(insecure.is_same(&url("http://127.0.0.1:5000/token")));
        assert!(!insecure.is_same(&url("http://127.0.0.1:5001/steal")));
        assert!(insecure.may_send_credentials(&url("http://127.0.0.1:5001/t")));
    }

    /// `localhost` resolves from /etc/hosts: no query leaves the machine.
    #[tokio::test]
    async fn names_are_held_to_the_rule_by_what_they_resolve_to() {
        let public = Origin::new("registry.example", false).unwrap();
        let name: Name = "localhost".parse().unwrap();
        let refused = public.resolver().resolve(name).await;
        let e = refused.err().expect("localhost is internal").to_string();
        assert!(e.contains("internal"), "{e}");
        let local = Origin::new("localhost:5000", true).unwrap();
        let name: Name = "localhost".parse().unwrap();
        assert!(local.resolver().resolve(name).await.is_ok());
    }
}
