//! Reads from a registry, with a cap on every body.
//!
//! oci-client reads a manifest, a token answer and the body of every error
//! answer whole into memory with no limit: a registry (or a token realm)
//! that answers with an endless body would make the host allocate until
//! the kernel kills it. So pulls do not use it: the host makes its reads
//! itself, the `/v2/` challenge and the token flow included. A manifest is
//! refused past [`MAX_MANIFEST_SIZE`], before a byte is read when its
//! Content-Length says so; a token answer past [`MAX_TOKEN_ANSWER`]; an
//! error answer is read only up to [`MAX_ERROR_BODY`], for its message,
//! quoted through [`quote`]; a blob is handed on as a stream that the
//! store caps and hashes on its way to disk. Where requests may go
//! (redirects, realms) and where credentials may go is [`super::address`]'s.

use super::address::{Origin, RedirectRefused};
use super::auth::Lookup;
use super::store::MAX_MANIFEST_SIZE;
use super::token::{self, MAX_TOKEN_ANSWER};
use super::untrusted::{quote, quote_bytes};
use crate::base::digest::Digest;
use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};
use oci_client::Reference;
use oci_client::secrets::RegistryAuth;
use reqwest::{Method, StatusCode, header};
use tokio::sync::OnceCell;

/// The most of an error answer read, for the message it carries.
pub const MAX_ERROR_BODY: usize = 16 << 10;

/// An answer other than success, with what the registry said about it.
#[derive(Debug)]
pub struct Refused {
    pub status: StatusCode,
    pub url: String,
    pub detail: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} answered {}", self.url, self.status)?;
        if self.status == StatusCode::UNAUTHORIZED {
            write!(
                f,
                " (Not authorized: check the credentials in DOCKER_CONFIG)"
            )?;
        }
        if self.status.is_redirection() {
            write!(f, " (a redirect, followed only for blob downloads)")?;
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

impl std::error::Error for Refused {}

impl Refused {
    /// Whether asking again later may succeed.
    pub fn may_pass(&self) -> bool {
        self.status.is_server_error()
            || self.status == StatusCode::TOO_MANY_REQUESTS
            || self.status == StatusCode::REQUEST_TIMEOUT
    }
}

/// The credentials a session's requests carry.
enum Authorization {
    Anonymous,
    Bearer(String),
    Basic(String, String),
}

/// Requests to one registry for one pull; it negotiates credentials once.
pub struct Session {
    http: reqwest::Client,
    origin: Origin,
    auth: RegistryAuth,
    /// For a token realm on another host or port: its own entry.
    lookup: Lookup,
    authorization: OnceCell<Authorization>,
}

impl Session {
    /// A session with `registry` (as `Reference::resolve_registry` names
    /// it) with its credentials `auth`, spoken to over plain HTTP if it is
    /// among `insecure`; `lookup` finds a token realm's own credentials.
    pub fn new(
        registry: &str,
        insecure: &[String],
        auth: RegistryAuth,
        lookup: Lookup,
    ) -> Result<Session> {
        // reqwest is built without a provider; the first caller installs ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let origin = Origin::new(registry, insecure.iter().any(|i| i == registry))?;
        // rustls with the system's roots, as oci-client builds it.
        let http = reqwest::Client::builder()
            .connect_timeout(super::CONNECT_TIMEOUT)
            .user_agent(super::USER_AGENT)
            .redirect(origin.redirects())
            .dns_resolver(origin.resolver())
            .build()
            .context("cannot set up the registry client")?;
        Ok(Session {
            http,
            origin,
            auth,
            lookup,
            authorization: OnceCell::new(),
        })
    }

    /// The manifest `image` names and its digest: the sha256 of its bytes,
    /// which must equal a pinned digest and the registry's
    /// `Docker-Content-Digest`, when either is given.
    pub async fn manifest(&self, image: &Reference, accept: &[&str]) -> Result<(Bytes, Digest)> {
        let url = self.manifest_url(image);
        let response = self.send(image, Method::GET, &url, accept).await?;
        if let Some(length) = response.content_length()
            && length > MAX_MANIFEST_SIZE
        {
            bail!(
                "the manifest at {url} is {length} bytes, more than a manifest may be \
                 ({MAX_MANIFEST_SIZE}); not read"
            );
        }
        let announced = digest_header(&response);
        let body = read_capped(response, MAX_MANIFEST_SIZE as usize)
            .await?
            .ok_or_else(|| {
                anyhow!(
                    "the manifest at {url} is more than a manifest may be \
                     ({MAX_MANIFEST_SIZE} bytes); stopped reading"
                )
            })?;
        let digest = Digest::of(&body);
        if let Some(pinned) = image.digest()
            && pinned != digest.to_string()
        {
            bail!("digest mismatch: {url} sent a manifest whose sha256 is {digest}");
        }
        if let Some(announced) = announced
            && announced.starts_with("sha256:")
            && announced != digest.to_string()
        {
            bail!(
                "digest mismatch: {url} says its manifest is {}, its bytes hash to {digest}",
                quote(&announced)
            );
        }
        Ok((body, digest))
    }

    /// The digest `image` resolves to: the `Docker-Content-Digest` of a
    /// HEAD, else the hash of the manifest itself.
    pub async fn resolve(&self, image: &Reference, accept: &[&str]) -> Result<Digest> {
        let url = self.manifest_url(image);
        let response = self.send(image, Method::HEAD, &url, accept).await?;
        match digest_header(&response) {
            Some(digest) => Digest::parse(&digest).map_err(|_| {
                anyhow!(
                    "{url}: Docker-Content-Digest `{}` is not a sha256 digest",
                    quote(&digest)
                )
            }),
            None => Ok(self.manifest(image, accept).await?.1),
        }
    }

    /// The blob `digest` of `image`'s repository as it streams in, with the
    /// Content-Length the registry declared.
    pub async fn blob(
        &self,
        image: &Reference,
        digest: &Digest,
    ) -> Result<(
        Option<u64>,
        impl Stream<Item = std::io::Result<Bytes>> + use<>,
    )> {
        let url = format!(
            "{}v2/{}/blobs/{digest}",
            self.origin.base,
            image.repository()
        );
        let response = self.send(image, Method::GET, &url, &["*/*"]).await?;
        let length = response.content_length();
        Ok((
            length,
            response.bytes_stream().map_err(std::io::Error::other),
        ))
    }

    fn manifest_url(&self, image: &Reference) -> String {
        let reference = image.digest().or_else(|| image.tag()).unwrap_or("latest");
        format!(
            "{}v2/{}/manifests/{reference}",
            self.origin.base,
            image.repository()
        )
    }

    /// One request with the session's credentials; an answer other than
    /// success is an error carrying the start of its body.
    async fn send(
        &self,
        image: &Reference,
        method: Method,
        url: &str,
        accept: &[&str],
    ) -> Result<reqwest::Response> {
        let request = self
            .http
            .request(method, url)
            .header(header::ACCEPT, accept.join(", "));
        let request = match self.authorization(image).await? {
            Authorization::Anonymous => request,
            Authorization::Bearer(token) => request.bearer_auth(token),
            Authorization::Basic(user, password) => request.basic_auth(user, Some(password)),
        };
        let response = request.send().await.map_err(|e| http_error(e, url))?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(refused(response).await.into())
    }

    /// The credentials for pulling from `image`'s repository, negotiated
    /// once: a token when `/v2/` challenges for one, the configured basic
    /// credentials, or none.
    async fn authorization(&self, image: &Reference) -> Result<&Authorization> {
        self.authorization
            .get_or_try_init(|| self.negotiate(image))
            .await
    }

    async fn negotiate(&self, image: &Reference) -> Result<Authorization> {
        let url = format!("{}v2/", self.origin.base);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| http_error(e, &url))?;
        let challenge = response
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(token::parse_challenge);
        match (response.status(), challenge) {
            (StatusCode::UNAUTHORIZED, Some(c)) if c.scheme == "bearer" => {
                Ok(Authorization::Bearer(self.token(&c, image).await?))
            }
            (status, _) if status.is_success() || status == StatusCode::UNAUTHORIZED => {
                Ok(match &self.auth {
                    RegistryAuth::Basic(user, password) => {
                        Authorization::Basic(user.clone(), password.clone())
                    }
                    _ => Authorization::Anonymous,
                })
            }
            _ => Err(refused(response).await.into()),
        }
    }

    /// A token from the challenge's realm. It is asked with the
    /// registry's basic credentials when it is on the registry's own host
    /// and port, with the ones the Docker config lists for it when it is
    /// elsewhere, and always over HTTPS unless the registry is insecure.
    async fn token(&self, challenge: &token::Challenge, image: &Reference) -> Result<String> {
        let url = token::request_url(challenge, image.repository())?;
        let shown = quote(url.as_str());
        if let Some(why) = self.origin.refuse(&url) {
            bail!("the registry's token realm {shown} is refused: {why}");
        }
        let elsewhere;
        let credentials = if self.origin.is_same(&url) {
            &self.auth
        } else {
            elsewhere = self.lookup.for_server(&server(&url)).await?;
            &elsewhere
        };
        let request = self.http.get(url.clone());
        let request = match credentials {
            RegistryAuth::Basic(user, password) if self.origin.may_send_credentials(&url) => {
                request.basic_auth(user, Some(password))
            }
            _ => request,
        };
        let response = request.send().await.map_err(|e| http_error(e, &shown))?;
        if !response.status().is_success() {
            return Err(refused(response).await.into());
        }
        let body = read_capped(response, MAX_TOKEN_ANSWER)
            .await?
            .ok_or_else(|| {
                anyhow!(
                    "the token answer from {shown} is more than {MAX_TOKEN_ANSWER} bytes; stopped reading"
                )
            })?;
        token::read_token(&body, &shown)
    }
}

/// `HOST[:PORT]` of `url`, as a Docker config names a server.
fn server(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// A request that failed on its way: its URL named by the host (quoted
/// when it came from a redirect), never the one reqwest carries.
fn http_error(error: reqwest::Error, url: &str) -> anyhow::Error {
    let refused = std::error::Error::source(&error)
        .and_then(|e| e.downcast_ref::<RedirectRefused>())
        .map(ToString::to_string);
    let error = error.without_url();
    match refused {
        Some(refused) => anyhow::Error::new(error).context(refused),
        None => anyhow::Error::new(error).context(format!("request to {url} failed")),
    }
}

/// An answer other than success, as an error: the final URL (after any
/// redirect, quoted) and the start of the body, quoted.
async fn refused(response: reqwest::Response) -> Refused {
    let status = response.status();
    let url = quote(response.url().as_str());
    let location = response
        .headers()
        .get(header::LOCATION)
        .map(|l| quote_bytes(l.as_bytes()));
    let detail = match (location, read_capped(response, MAX_ERROR_BODY).await) {
        (Some(location), _) if status.is_redirection() => format!("to {location}"),
        (_, Ok(Some(body))) => error_detail(&body),
        (_, Ok(None)) => format!("(an error body of more than {MAX_ERROR_BODY} bytes, not read)"),
        (_, Err(_)) => String::new(),
    };
    Refused {
        status,
        url,
        detail,
    }
}

/// The body, or `None` if it is longer than `max` (not read past that).
async fn read_capped(mut response: reqwest::Response, max: usize) -> Result<Option<Bytes>> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > max {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body.into()))
}

fn digest_header(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("Docker-Content-Digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// What an error body says: the distribution spec's `errors` list
/// (`CODE: message`), else its first line of text.
fn error_detail(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Envelope {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(envelope) = serde_json::from_slice::<Envelope>(body) {
        let all = envelope
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.code, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        return quote(&all);
    }
    let text = String::from_utf8_lossy(body);
    let line = text.lines().next().unwrap_or("").trim();
    quote(&line.chars().take(200).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_summed_up() {
        let envelope =
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#;
        assert_eq!(error_detail(envelope), "MANIFEST_UNKNOWN: manifest unknown");
        assert_eq!(
            error_detail(b"<html>bad gateway</html>\nmore"),
            "<html>bad gateway</html>"
        );
        assert_eq!(error_detail(&[b'x'; 1000]).len(), 200);
        // A message with lines of its own stays on one line, cut short.
        let forged = format!(
            r#"{{"errors":[{{"code":"DENIED","message":"no{}"}}]}}"#,
            "\\n2026-01-01 INFO forged".repeat(1000)
        );
        let detail = error_detail(forged.as_bytes());
        assert!(!detail.contains('\n') && detail.len() < 1100, "{detail}");
    }

    #[test]
    fn which_refusals_may_pass() {
        let refused = |status| Refused {
            status,
            url: "http://r/v2/".into(),
            detail: String::new(),
        };
        assert!(refused(StatusCode::SERVICE_UNAVAILABLE).may_pass());
        assert!(refused(StatusCode::TOO_MANY_REQUESTS).may_pass());
        assert!(!refused(StatusCode::NOT_FOUND).may_pass());
        assert!(!refused(StatusCode::UNAUTHORIZED).may_pass());
        assert!(
            refused(StatusCode::UNAUTHORIZED)
                .to_string()
                .contains("Not authorized")
        );
    }
}
