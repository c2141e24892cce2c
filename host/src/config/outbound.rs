//! What the operator writes in `allowed_outbound_hosts`: one
//! [`OutboundRule`] per entry, parsed when the manifest is read, and which
//! scheme, name and port it matches. The check of the address a request
//! would really connect to, done at run time, is `wasm::outbound`.

use std::net::IpAddr;

/// One `allowed_outbound_hosts` entry: `scheme://host[:port]`, where scheme
/// is `http`, `https` or `*`, host is a name, an IP (`[v6]` in brackets),
/// `*` or `*.suffix`, and port is a number or `*` (absent: the scheme's
/// default port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRule {
    scheme: Option<String>,
    host: String,
    /// The host as an IP literal, if it is one: only such a rule may reach
    /// a loopback, link-local or unspecified address.
    ip: Option<IpAddr>,
    port: Option<u16>,
    any_port: bool,
}

impl OutboundRule {
    pub fn parse(text: &str) -> Result<OutboundRule, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("`{text}`: expected `scheme://host[:port]`"))?;
        let scheme = match scheme {
            "http" | "https" => Some(scheme.to_string()),
            "*" => None,
            other => {
                return Err(format!(
                    "`{text}`: unsupported scheme `{other}` (http, https or *)"
                ));
            }
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            return Err(format!("`{text}`: a host may not have a path"));
        }
        // `[v6]`, `[v6]:port`, `host`, `host:port`.
        let (host, port) = match rest.strip_prefix('[') {
            Some(v6) => {
                let (inside, after) = v6
                    .split_once(']')
                    .ok_or_else(|| format!("`{text}`: unclosed `[` in the host"))?;
                let port =
                    match after {
                        "" => None,
                        _ => Some(after.strip_prefix(':').ok_or_else(|| {
                            format!("`{text}`: expected `:port` after `[{inside}]`")
                        })?),
                    };
                (format!("[{inside}]"), port)
            }
            None => match rest.rsplit_once(':') {
                Some((host, port)) => (host.to_string(), Some(port)),
                None => (rest.to_string(), None),
            },
        };
        if host.is_empty() || (host.contains('*') && host != "*" && !host.starts_with("*.")) {
            return Err(format!("`{text}`: invalid host `{host}`"));
        }
        let ip = ip_literal(&host);
        if host.starts_with('[') && ip.is_none_or(|ip| ip.is_ipv4()) {
            return Err(format!("`{text}`: `{host}` is not an IPv6 address"));
        }
        let (port, any_port) = match port {
            None => (None, false),
            Some("*") => (None, true),
            Some(p) => (
                Some(
                    p.parse()
                        .map_err(|_| format!("`{text}`: invalid port `{p}`"))?,
                ),
                false,
            ),
        };
        Ok(OutboundRule {
            scheme,
            host: host.to_ascii_lowercase(),
            ip,
            port,
            any_port,
        })
    }

    /// Whether the rule matches the scheme, host and port a guest asked for
    /// (before any name is resolved).
    pub fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        if self.scheme.as_deref().is_some_and(|s| s != scheme) {
            return false;
        }
        let host = host.to_ascii_lowercase();
        let host_ok = match self.host.strip_prefix("*.") {
            _ if self.host == "*" => true,
            Some(suffix) => host.ends_with(&format!(".{suffix}")),
            None => host == self.host || (self.ip.is_some() && ip_literal(&host) == self.ip),
        };
        let default_port = if scheme == "https" { 443 } else { 80 };
        let port = port.unwrap_or(default_port);
        let port_ok = self.any_port || self.port.unwrap_or(default_port) == port;
        host_ok && port_ok
    }

    /// Whether this rule names `ip` as a literal.
    pub fn names(&self, ip: IpAddr) -> bool {
        self.ip.is_some_and(|own| canonical(own) == canonical(ip))
    }
}

/// `127.0.0.1` or `[::1]` as an address; `None` for a name.
pub fn ip_literal(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> OutboundRule {
        OutboundRule::parse(text).unwrap()
    }

    #[test]
    fn outbound_rules_match_scheme_host_and_port() {
        let r = rule("http://127.0.0.1:8080");
        assert!(r.allows("http", "127.0.0.1", Some(8080)));
        assert!(!r.allows("http", "127.0.0.1", Some(8081)));
        assert!(!r.allows("https", "127.0.0.1", Some(8080)));
        assert!(!r.allows("http", "127.0.0.2", Some(8080)));

        let r = rule("https://api.example.com");
        assert!(r.allows("https", "API.example.com", None));
        assert!(r.allows("https", "api.example.com", Some(443)));
        assert!(!r.allows("https", "api.example.com", Some(8443)));

        let r = rule("http://[::1]");
        assert!(r.allows("http", "[::1]", None));
        assert!(r.allows("http", "[::1]", Some(80)));
        assert!(!r.allows("http", "[::1]", Some(8080)));
        let r = rule("http://[::1]:8080");
        assert!(r.allows("http", "[::1]", Some(8080)));
        assert!(r.allows("http", "[0:0::1]", Some(8080)), "the same address");

        let r = rule("*://*.example.com:*");
        assert!(r.allows("http", "a.example.com", Some(1)));
        assert!(!r.allows("http", "example.com", Some(1)));
        assert!(!r.allows("http", "evil-example.com", Some(1)));
    }

    #[test]
    fn bad_outbound_rules_are_rejected() {
        for bad in [
            "127.0.0.1:80",
            "ftp://x",
            "http://",
            "http://a/b",
            "http://a:x",
            "http://a*b",
            "http://[::1",
            "http://[::1]x",
            "http://[1.2.3.4]",
            "http://[nope]",
        ] {
            assert!(OutboundRule::parse(bad).is_err(), "{bad}");
        }
    }
}
