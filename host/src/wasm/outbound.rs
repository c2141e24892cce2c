//! Outbound HTTP from guests: the check of the address a request would
//! really connect to, against the route's `allowed_outbound_hosts` rules
//! (parsed in [`crate::config::outbound`]).
//!
//! A rule matches the scheme, name and port the guest asked for. Then the
//! name is resolved here, and each address is checked before any connect:
//! loopback, link-local (cloud metadata lives there), unspecified addresses
//! and the host's own listeners are reachable only through a rule naming
//! that IP literal, never through a name or a wildcard. A plain-HTTP request
//! is sent to the checked address itself (the guest's `Host` header is
//! kept), so a name cannot resolve differently between the check and the
//! connect. An HTTPS request keeps its name for the certificate check; a
//! name re-pointed after the check would then have to present a valid
//! certificate for that name from the forbidden address. Every refusal is
//! logged and counted by reason.

use crate::config::outbound::{OutboundRule, canonical, ip_literal};
use crate::observe::metrics::DeniedLabels;
use crate::observe::trace::RequestTrace;
use http::uri::{Authority, Uri};
use http_body_util::BodyExt;
use opentelemetry::KeyValue;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// Longest a name lookup for an outbound request may take.
const DNS_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an address is reachable only through a rule naming it, if it is.
pub fn restricted(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) if v4.is_loopback() => Some("loopback"),
        IpAddr::V4(v4) if v4.is_link_local() => Some("link-local"),
        // 0.0.0.0/8 is "this network": connecting to it reaches this host.
        IpAddr::V4(v4) if v4.octets()[0] == 0 => Some("unspecified"),
        IpAddr::V4(v4) if v4.is_broadcast() => Some("broadcast"),
        IpAddr::V6(v6) if v6.is_loopback() => Some("loopback"),
        IpAddr::V6(v6) if v6.is_unspecified() => Some("unspecified"),
        IpAddr::V6(v6) if v6.is_unicast_link_local() => Some("link-local"),
        _ => None,
    }
}

/// The host's own listening addresses, known once the listeners are bound;
/// a wildcard rule must not lead a guest back into the host. A listener
/// bound to all interfaces (`0.0.0.0`, `[::]`) stands for each address of
/// each interface here.
#[derive(Debug, Clone, Default)]
pub struct OwnAddresses(Arc<OnceLock<Vec<SocketAddr>>>);

impl OwnAddresses {
    /// Records the bound listeners (once; later calls are ignored).
    pub fn set(&self, listeners: &[SocketAddr]) {
        let mut own = Vec::new();
        for listener in listeners {
            if listener.ip().is_unspecified() {
                own.extend(
                    interface_addresses()
                        .into_iter()
                        .map(|ip| SocketAddr::new(ip, listener.port())),
                );
            } else {
                own.push(*listener);
            }
        }
        let _ = self.0.set(own);
    }

    fn contains(&self, target: SocketAddr) -> bool {
        self.0.get().is_some_and(|own| {
            own.iter()
                .any(|a| a.port() == target.port() && canonical(a.ip()) == canonical(target.ip()))
        })
    }
}

/// The addresses of this host's network interfaces.
#[allow(unsafe_code)]
fn interface_addresses() -> Vec<IpAddr> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list that stays valid
    // until freeifaddrs; every node and sockaddr is read only before that.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "cannot list this host's addresses");
            return Vec::new();
        }
        let mut addresses = Vec::new();
        let mut node = list;
        while let Some(ifa) = node.as_ref() {
            if let Some(sa) = ifa.ifa_addr.as_ref() {
                match i32::from(sa.sa_family) {
                    libc::AF_INET => {
                        let sin = &*ifa.ifa_addr.cast::<libc::sockaddr_in>();
                        addresses.push(IpAddr::from(
                            u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                        ));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*ifa.ifa_addr.cast::<libc::sockaddr_in6>();
                        addresses.push(IpAddr::from(sin6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            node = ifa.ifa_next;
        }
        libc::freeifaddrs(list);
        addresses
    }
}

/// What one route's guests may reach, and where refusals are counted.
#[derive(Debug, Clone)]
pub struct OutboundGrant {
    pub rules: Arc<[OutboundRule]>,
    pub own: OwnAddresses,
    pub denied: Family<DeniedLabels, Counter>,
}

impl OutboundGrant {
    /// Nothing allowed; refusals counted nowhere (validation loads).
    pub fn none() -> OutboundGrant {
        OutboundGrant {
            rules: Arc::from([]),
            own: OwnAddresses::default(),
            denied: Family::default(),
        }
    }

    /// The first of `addresses` a rule matching the request lets the guest
    /// reach, or why none may be reached.
    fn pick(
        &self,
        matching: &[&OutboundRule],
        addresses: &[SocketAddr],
    ) -> Result<SocketAddr, String> {
        let mut why = String::from("the name resolved to no address");
        for &address in addresses {
            if matching.iter().any(|rule| rule.names(address.ip())) {
                return Ok(address);
            }
            let reason = restricted(address.ip()).or_else(|| {
                self.own
                    .contains(address)
                    .then_some("this host's own listener")
            });
            match reason {
                None => return Ok(address),
                Some(reason) => {
                    why = format!(
                        "{address} is {reason}; only a rule naming that IP literal may reach it"
                    );
                }
            }
        }
        Err(why)
    }
}

/// The outbound hook: deny by default, check the resolved address, forward
/// with wasmtime-wasi-http's default client. Each request is a span of the
/// guest's request's trace and carries it on in `traceparent`.
pub struct OutboundPolicy {
    pub grant: OutboundGrant,
    pub route: Arc<str>,
    /// The trace of the request the guest serves (on a 0.3 instance
    /// serving several at once, the one that started last).
    pub trace: RequestTrace,
}

impl OutboundPolicy {
    fn deny(&self, uri: &Uri, reason: &'static str, why: &str) -> SendFuture {
        self.grant
            .denied
            .get_or_create(&DeniedLabels {
                route: self.route.to_string(),
                reason: reason.to_string(),
            })
            .inc();
        tracing::warn!(route = %self.route, uri = %uri, reason, why, "outbound request denied");
        Box::new(async { Err(Error::HttpRequestDenied) })
    }
}

type SendFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> SendFuture {
        let uri = request.uri().clone();
        // Before the checks: a denied request is a failed span, not none.
        let mut span = self
            .trace
            .outbound(&request.method().clone(), &uri, request.headers_mut());
        let scheme = uri.scheme_str().unwrap_or("http").to_string();
        let host = uri.host().unwrap_or("").to_string();
        let matching: Vec<OutboundRule> = self
            .grant
            .rules
            .iter()
            .filter(|rule| rule.allows(&scheme, &host, uri.port_u16()))
            .cloned()
            .collect();
        if matching.is_empty() {
            span.fail("denied: not in allowed_outbound_hosts");
            return self.deny(&uri, "host", "not in allowed_outbound_hosts");
        }
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        let policy = OutboundPolicy {
            grant: self.grant.clone(),
            route: self.route.clone(),
            trace: RequestTrace::default(),
        };
        Box::new(async move {
            let addresses = match ip_literal(&host) {
                Some(ip) => vec![SocketAddr::new(ip, port)],
                None => resolve(&host, port).await?,
            };
            let matching: Vec<&OutboundRule> = matching.iter().collect();
            let address = match policy.grant.pick(&matching, &addresses) {
                Ok(address) => address,
                Err(why) => {
                    span.fail("denied: address");
                    return Box::into_pin(policy.deny(&uri, "address", &why)).await;
                }
            };
            if scheme == "http" {
                // Connect to the address just checked, not to the name
                // again. The `Host` header already carries the name.
                let mut parts = uri.into_parts();
                let authority: Authority = address
                    .to_string()
                    .parse()
                    .map_err(|_| Error::HttpRequestUriInvalid)?;
                parts.authority = Some(authority);
                *request.uri_mut() =
                    Uri::from_parts(parts).map_err(|_| Error::HttpRequestUriInvalid)?;
            }
            let sent = wasmtime_wasi_http::default_send_request(request, options).await;
            let (response, io) = match sent {
                Ok(sent) => sent,
                Err(e) => {
                    span.fail(format!("{e:?}"));
                    return Err(e);
                }
            };
            let status = response.status().as_u16();
            span.set(KeyValue::new("http.response.status_code", status as i64));
            if status >= 400 {
                // A client span fails on 4xx too (HTTP semantic conventions).
                span.fail(status.to_string());
            }
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

async fn resolve(host: &str, port: u16) -> wasmtime_wasi_http::Result<Vec<SocketAddr>> {
    let dns_error = |rcode: &str| Error::DnsError {
        rcode: Some(rcode.to_string()),
        info_code: None,
    };
    match tokio::time::timeout(DNS_TIMEOUT, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(addresses)) => Ok(addresses.collect()),
        Ok(Err(e)) => Err(dns_error(&e.to_string())),
        Err(_) => Err(Error::DnsTimeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> OutboundRule {
        OutboundRule::parse(text).unwrap()
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn grant(own: &[&str]) -> OutboundGrant {
        let grant = OutboundGrant::none();
        grant
            .own
            .set(&own.iter().map(|a| addr(a)).collect::<Vec<_>>());
        grant
    }

    /// The policy alone: no address below is ever contacted.
    #[test]
    fn wildcards_never_reach_loopback_link_local_or_unspecified() {
        let wildcard = rule("http://*:*");
        let grant = grant(&[]);
        for target in [
            "127.0.0.1:9090",
            "127.9.9.9:80",
            "169.254.169.254:80",
            "169.254.0.1:8080",
            "0.0.0.0:80",
            "0.1.2.3:80",
            "255.255.255.255:80",
            "[::1]:80",
            "[::]:80",
            "[fe80::1]:80",
            "[febf::1]:80",
            "[::ffff:127.0.0.1]:80",
            "[::ffff:169.254.169.254]:80",
        ] {
            let refused = grant.pick(&[&wildcard], &[addr(target)]);
            assert!(refused.is_err(), "{target} must be refused");
        }
        for target in [
            "10.0.0.1:80",
            "192.168.1.1:80",
            "93.184.216.34:80",
            "[2001:db8::1]:443",
        ] {
            assert_eq!(grant.pick(&[&wildcard], &[addr(target)]), Ok(addr(target)));
        }
    }

    #[test]
    fn only_a_rule_naming_the_literal_reaches_a_restricted_address() {
        let grant = grant(&[]);
        let named = rule("http://169.254.169.254");
        let target = addr("169.254.169.254:80");
        assert_eq!(grant.pick(&[&named], &[target]), Ok(target));
        let by_name = rule("http://metadata.internal");
        assert!(
            grant.pick(&[&by_name], &[target]).is_err(),
            "a name is not enough"
        );
        let v6 = rule("http://[::1]:8080");
        assert_eq!(
            grant.pick(&[&v6], &[addr("[::1]:8080")]),
            Ok(addr("[::1]:8080"))
        );
    }

    #[test]
    fn a_name_resolving_to_a_mix_gets_only_an_allowed_address() {
        let grant = grant(&[]);
        let wildcard = rule("http://*.example.com");
        let mixed = [addr("169.254.169.254:80"), addr("10.1.2.3:80")];
        assert_eq!(grant.pick(&[&wildcard], &mixed), Ok(addr("10.1.2.3:80")));
        assert!(grant.pick(&[&wildcard], &mixed[..1]).is_err());
        assert!(grant.pick(&[&wildcard], &[]).is_err(), "no address at all");
    }

    #[test]
    fn wildcards_never_reach_the_hosts_own_listeners() {
        let wildcard = rule("http://*:*");
        let grant = grant(&["10.0.0.5:5000"]);
        assert!(grant.pick(&[&wildcard], &[addr("10.0.0.5:5000")]).is_err());
        assert!(grant.pick(&[&wildcard], &[addr("10.0.0.5:5001")]).is_ok());
        assert!(grant.pick(&[&wildcard], &[addr("10.0.0.6:5000")]).is_ok());
        let named = rule("http://10.0.0.5:5000");
        assert!(grant.pick(&[&named], &[addr("10.0.0.5:5000")]).is_ok());
    }

    #[test]
    fn a_listener_on_all_interfaces_stands_for_each_of_their_addresses() {
        let own = OwnAddresses::default();
        own.set(&[addr("0.0.0.0:5000")]);
        // The loopback interface is always there.
        assert!(own.contains(addr("127.0.0.1:5000")));
        assert!(!own.contains(addr("127.0.0.1:5001")));
    }
}
