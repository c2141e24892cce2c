//! The admin port: never the public one, so probes, metrics and reloads
//! are neither exposed by the Service nor starved by public traffic.
//!
//! - `GET /healthz`: 200 while the process serves.
//! - `GET /readyz`: 200 only when every route is loaded and the host is not draining.
//! - `GET /metrics`: Prometheus text.
//! - `GET /handlers`: JSON, per route: component, digest, generation, loaded_at, last_error,
//!   canary, the key-value stores and wasi:config names it grants (never values).
//! - `POST /reload`: reloads from disk and answers with the outcome; needs
//!   the header [`RELOAD_HEADER`], so a cross-site form or fetch cannot.
//! - `POST /routes/{route}/promote`, `POST /routes/{route}/abort`: the
//!   route's canary becomes its stable version, or gets weight 0 (see
//!   `canary`); `{route}` is the pattern as written (`/routes/api/.../abort`),
//!   and the same header is needed.
//!
//! Every request must name an IP address, `localhost` or a host listed in
//! --admin-allowed-hosts (421 otherwise), so DNS rebinding cannot read it.
//! With --admin-token-file, every POST must also carry `Authorization:
//! Bearer TOKEN` (401 otherwise, before anything is done); GETs need none,
//! so probes and scrapers go on as they were.

use crate::config::cli::NetLimits;
use crate::control::actions::ActionError;
use crate::http::connection::{Connections, Policy};
use crate::http::state::App;
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::net::TcpListener;

/// Connections the admin port serves at once: probes, a scraper and an
/// operator need a handful; past it new ones wait in the accept backlog.
pub const MAX_CONNECTIONS: usize = 16;

/// The header `POST /reload` needs. A browser sends a custom header only
/// after a CORS preflight, which this port never grants, so a web page on
/// another site cannot trigger a reload.
pub const RELOAD_HEADER: &str = "x-wasmlet-reload";

/// The token admin POSTs must carry (--admin-token-file). Only its
/// sha256 is kept; a presented token is hashed and the digests compared in
/// constant time, so neither the comparison's time nor a length check
/// tells an attacker how much of a guess was right.
pub struct AdminToken {
    digest: [u8; 32],
}

impl AdminToken {
    /// Reads `path` (the token, surrounding whitespace dropped). An
    /// unreadable, empty or unsendable token is an error naming the file.
    pub fn load(path: &Path) -> Result<AdminToken> {
        let what = || format!("--admin-token-file {}", path.display());
        let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", what()))?;
        let token = bytes.trim_ascii();
        if token.is_empty() {
            bail!("{}: the file is empty", what());
        }
        // What a client can send in a header after `Bearer `.
        if !token.iter().all(|b| b.is_ascii_graphic()) {
            bail!(
                "{}: the token must be printable ASCII without spaces",
                what()
            );
        }
        Ok(AdminToken {
            digest: Sha256::digest(token).into(),
        })
    }

    /// Whether `authorization` is `Bearer <the token>` (the scheme in any case).
    fn accepts(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some(value) = authorization.map(HeaderValue::as_bytes) else {
            return false;
        };
        let Some(token) = value
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
            .map(|_| &value[7..])
        else {
            return false;
        };
        let presented: [u8; 32] = Sha256::digest(token).into();
        presented
            .iter()
            .zip(&self.digest)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
    }
}

/// Serves the admin endpoints until `stop` resolves, with the same
/// connection set-up as the public port and [`MAX_CONNECTIONS`]; no token
/// on POSTs (see [`serve_with_token`]).
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    net: &NetLimits,
    stop: impl Future<Output = ()>,
) {
    serve_with_token(listener, app, net, None, stop).await
}

/// [`serve`], with every POST needing `token` when one is given.
pub async fn serve_with_token(
    listener: TcpListener,
    app: Arc<App>,
    net: &NetLimits,
    token: Option<AdminToken>,
    stop: impl Future<Output = ()>,
) {
    let token = token.map(Arc::new);
    let connections = Connections::new(Policy {
        port: "admin",
        max_connections: MAX_CONNECTIONS,
        header_read_timeout: app.limits.header_read_timeout,
        write_timeout: net.write_timeout,
        max_header_size: app.limits.max_header_size,
        http2_max_streams: None,
    });
    let hosts: Arc<AllowedHosts> = Arc::new(AllowedHosts::new(&net.admin_allowed_hosts));
    tokio::pin!(stop);
    loop {
        let (stream, permit) = tokio::select! {
            accepted = connections.accept(&listener) => accepted,
            () = &mut stop => return,
        };
        let (app, hosts, token) = (app.clone(), hosts.clone(), token.clone());
        let service =
            service_fn(move |request| route(app.clone(), hosts.clone(), token.clone(), request));
        let connection = connections
            .serve(connections.io(stream), service)
            .into_owned();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = connection.await;
        });
    }
}

async fn route(
    app: Arc<App>,
    hosts: Arc<AllowedHosts>,
    token: Option<Arc<AdminToken>>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    // RFC 9112 section 3.2: a request with more than one Host is a 400.
    // Reading only one of them would let a second name past the check.
    if request.headers().get_all(header::HOST).iter().count() > 1 {
        return Ok(text(
            StatusCode::BAD_REQUEST,
            "admin: more than one Host header\n",
        ));
    }
    if !hosts.allows(request_host(&request)) {
        return Ok(text(
            StatusCode::MISDIRECTED_REQUEST,
            "admin: Host must be an IP address, localhost, or a name in --admin-allowed-hosts\n",
        ));
    }
    if request.method() == Method::POST
        && let Some(token) = &token
        && !token.accepts(request.headers().get(header::AUTHORIZATION))
    {
        let mut response = text(
            StatusCode::UNAUTHORIZED,
            "admin: POST needs `Authorization: Bearer TOKEN` with the token of --admin-token-file\n",
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"wasmlet-admin\""),
        );
        return Ok(response);
    }
    let response = match (request.method(), request.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => readyz(&app),
        (&Method::GET, "/metrics") => {
            let mut response = text(StatusCode::OK, &app.metrics.encode());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        (&Method::GET, "/handlers") => json(StatusCode::OK, &app.registry.describe()),
        (&Method::POST, "/reload") if !request.headers().contains_key(RELOAD_HEADER) => text(
            StatusCode::FORBIDDEN,
            "POST /reload needs the header `x-wasmlet-reload: 1`\n",
        ),
        (&Method::POST, "/reload") => match app.reloader.reload("admin").await {
            Ok(report) => json(StatusCode::OK, &report),
            Err(e) => json(
                StatusCode::UNPROCESSABLE_ENTITY,
                &serde_json::json!({ "outcome": "error", "error": format!("{e:#}") }),
            ),
        },
        (method, path) if canary_action(path).is_some() => {
            let (route, action) = canary_action(path).expect("checked by the guard");
            if method != Method::POST {
                method_not_allowed("POST")
            } else if !request.headers().contains_key(RELOAD_HEADER) {
                text(
                    StatusCode::FORBIDDEN,
                    &format!(
                        "POST /routes{route}/{action} needs the header `x-wasmlet-reload: 1`\n"
                    ),
                )
            } else {
                canary(&app, route, action).await
            }
        }
        (_, "/healthz" | "/readyz" | "/metrics" | "/handlers") => method_not_allowed("GET"),
        (_, "/reload") => method_not_allowed("POST"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    Ok(response)
}

/// `/routes{route}/promote` or `/routes{route}/abort` as `(route, action)`.
fn canary_action(path: &str) -> Option<(&str, &str)> {
    let (route, action) = path.strip_prefix("/routes")?.rsplit_once('/')?;
    (route.starts_with('/') && matches!(action, "promote" | "abort")).then_some((route, action))
}

/// Promotes or aborts `route`'s canary; answers with the route's
/// `/handlers` entry.
async fn canary(app: &App, route: &str, action: &str) -> Response<Full<Bytes>> {
    let done = match action {
        "promote" => app.reloader.promote(route),
        _ => app.reloader.abort(route),
    };
    let status = match &done {
        Ok(()) => StatusCode::OK,
        Err(ActionError::NoRoute(_)) => StatusCode::NOT_FOUND,
        Err(ActionError::NoCanary(_) | ActionError::Finished(..)) => StatusCode::CONFLICT,
    };
    match done {
        Ok(()) => {
            let doc = app.registry.describe();
            let entry = doc.routes.iter().find(|r| r.route == route);
            json(status, &entry)
        }
        Err(e) => json(
            status,
            &serde_json::json!({ "outcome": "error", "error": e.to_string() }),
        ),
    }
}

/// The host a request names: the authority of an absolute-form target,
/// otherwise the `Host` header.
fn request_host<B>(request: &Request<B>) -> Option<&str> {
    match request.uri().authority() {
        Some(authority) => Some(authority.as_str()),
        None => request.headers().get(header::HOST)?.to_str().ok(),
    }
}

/// The `Host` values the admin port answers, against DNS rebinding: a
/// page that rebinds its own name to this address still sends that name.
struct AllowedHosts {
    /// Lowercase, without a trailing dot.
    names: Vec<String>,
}

impl AllowedHosts {
    fn new(names: &[String]) -> AllowedHosts {
        AllowedHosts {
            names: names.iter().map(|n| canonical(n)).collect(),
        }
    }

    /// An IP literal, `localhost`, or a listed name, each with an optional port.
    fn allows(&self, host: Option<&str>) -> bool {
        let Some(name) = host.and_then(strip_port) else {
            return false;
        };
        if let Some(v6) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
            return v6.parse::<Ipv6Addr>().is_ok();
        }
        if name.parse::<IpAddr>().is_ok() {
            return true;
        }
        let name = canonical(name);
        name == "localhost" || self.names.contains(&name)
    }
}

fn canonical(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// `host[:port]` or `[v6][:port]` without the port; `None` if malformed.
fn strip_port(host: &str) -> Option<&str> {
    let (name, port) = match host.rfind(':') {
        // A bracketed v6 literal without a port has colons only inside.
        Some(i) if !host[i..].contains(']') => (&host[..i], Some(&host[i + 1..])),
        _ => (host, None),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    (port_ok && !name.is_empty()).then_some(name)
}

fn readyz(app: &App) -> Response<Full<Bytes>> {
    if app.draining.load(Ordering::Relaxed) {
        text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else if !app.registry.is_loaded() {
        text(StatusCode::SERVICE_UNAVAILABLE, "loading\n")
    } else {
        text(StatusCode::OK, "ready\n")
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_vec_pretty(value).expect("serialisable");
    body.push(b'\n');
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn method_not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_ip_literals_localhost_or_listed() {
        let hosts = AllowedHosts::new(&["Admin.Internal.".to_string()]);
        for ok in [
            "127.0.0.1",
            "10.4.0.7:9090",
            "[::1]",
            "[::1]:9090",
            "[fe80::1]:80",
            "localhost",
            "LOCALHOST:9090",
            "localhost.",
            "admin.internal",
            "admin.internal:9090",
        ] {
            assert!(hosts.allows(Some(ok)), "{ok}");
        }
        for refused in [
            "evil.example",
            "evil.example:9090",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "[::1",
            "[evil]:80",
            "127.0.0.1:",
            "127.0.0.1:x",
            ":9090",
            "",
        ] {
            assert!(!hosts.allows(Some(refused)), "{refused}");
        }
        assert!(!hosts.allows(None));
    }

    #[test]
    fn the_admin_token_is_read_trimmed_and_compared_whole() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "  abc-123\n").unwrap();
        let token = AdminToken::load(&file).unwrap();
        let accepts = |value: &str| token.accepts(Some(&HeaderValue::from_str(value).unwrap()));
        assert!(accepts("Bearer abc-123"));
        assert!(accepts("bearer abc-123"));
        for refused in [
            "Bearer abc-12",
            "Bearer abc-1234",
            "Bearer ABC-123",
            "Bearer  abc-123",
            "Bearer",
            "Basic abc-123",
            "abc-123",
            "",
        ] {
            assert!(!accepts(refused), "{refused}");
        }
        assert!(!token.accepts(None));
        for (content, why) in [("", "empty"), (" \n\t", "empty"), ("a b", "printable")] {
            std::fs::write(&file, content).unwrap();
            let e = format!("{:#}", AdminToken::load(&file).err().unwrap());
            assert!(
                e.contains(why) && e.contains(&file.display().to_string()),
                "{e}"
            );
        }
        let e = format!(
            "{:#}",
            AdminToken::load(&dir.path().join("none")).err().unwrap()
        );
        assert!(
            e.contains("cannot read") && e.contains("--admin-token-file"),
            "{e}"
        );
    }
}
