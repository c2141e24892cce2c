//! Reads from a registry, with a cap on every body.
//!
//! oci-client reads a manifest, and the body of every error answer, whole
//! into memory with no limit: a registry that answers with an endless body
//! would make the host allocate until the kernel kills it. So the host
//! makes its reads itself, each one HTTP request carrying the credentials
//! oci-client negotiated (the `WWW-Authenticate` challenge and the token
//! flow stay oci-client's). A manifest is refused past
//! [`MAX_MANIFEST_SIZE`], before a byte is read when its Content-Length
//! says so; an error answer is read only up to [`MAX_ERROR_BODY`], for its
//! message; a blob is handed on as a stream that the store caps and hashes
//! on its way to disk.

use super::layout::check_digest;
use super::store::{MAX_MANIFEST_SIZE, sha256};
use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};
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
    oci: oci_client::Client,
    http: reqwest::Client,
    scheme: &'static str,
    auth: RegistryAuth,
    authorization: OnceCell<Authorization>,
}

impl Session {
    /// A session with `registry` (as `Reference::resolve_registry` names
    /// it), spoken to over plain HTTP if it is among `insecure`.
    pub fn new(registry: &str, insecure: &[String], auth: RegistryAuth) -> Result<Session> {
        let oci = super::client(insecure);
        // The same transport oci-client builds: rustls with the system's roots.
        let http = reqwest::Client::builder()
            .connect_timeout(super::CONNECT_TIMEOUT)
            .user_agent(super::USER_AGENT)
            .build()
            .context("cannot set up the registry client")?;
        let scheme = if insecure.iter().any(|i| i == registry) {
            "http"
        } else {
            "https"
        };
        Ok(Session {
            oci,
            http,
            scheme,
            auth,
            authorization: OnceCell::new(),
        })
    }

    /// The manifest `image` names and its digest: the sha256 of its bytes,
    /// which must equal a pinned digest and the registry's
    /// `Docker-Content-Digest`, when either is given.
    pub async fn manifest(&self, image: &Reference, accept: &[&str]) -> Result<(Bytes, String)> {
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
        let digest = sha256(&body);
        if let Some(pinned) = image.digest()
            && pinned != digest
        {
            bail!("digest mismatch: {url} sent a manifest whose sha256 is {digest}");
        }
        if let Some(announced) = announced
            && announced.starts_with("sha256:")
            && announced != digest
        {
            bail!(
                "digest mismatch: {url} says its manifest is {announced}, its bytes hash to {digest}"
            );
        }
        Ok((body, digest))
    }

    /// The digest `image` resolves to: the `Docker-Content-Digest` of a
    /// HEAD, else the hash of the manifest itself.
    pub async fn resolve(&self, image: &Reference, accept: &[&str]) -> Result<String> {
        let url = self.manifest_url(image);
        let response = self.send(image, Method::HEAD, &url, accept).await?;
        match digest_header(&response) {
            Some(digest) => {
                check_digest(&digest).with_context(|| format!("{url}: Docker-Content-Digest"))?;
                Ok(digest)
            }
            None => Ok(self.manifest(image, accept).await?.1),
        }
    }

    /// The blob `digest` of `image`'s repository as it streams in, with the
    /// Content-Length the registry declared.
    pub async fn blob(
        &self,
        image: &Reference,
        digest: &str,
    ) -> Result<(
        Option<u64>,
        impl Stream<Item = std::io::Result<Bytes>> + use<>,
    )> {
        let url = format!(
            "{}://{}/v2/{}/blobs/{digest}",
            self.scheme,
            image.resolve_registry(),
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
            "{}://{}/v2/{}/manifests/{reference}",
            self.scheme,
            image.resolve_registry(),
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
        let response = request.send().await?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let url = url.to_string();
        let detail = match read_capped(response, MAX_ERROR_BODY).await {
            Ok(Some(body)) => error_detail(&body),
            Ok(None) => format!("(an error body of more than {MAX_ERROR_BODY} bytes, not read)"),
            Err(_) => String::new(),
        };
        Err(Refused {
            status,
            url,
            detail,
        }
        .into())
    }

    /// The credentials for pulling from `image`'s repository: a token
    /// when the registry challenges for one (oci-client's flow), the
    /// configured basic credentials, or none.
    async fn authorization(&self, image: &Reference) -> Result<&Authorization> {
        self.authorization
            .get_or_try_init(|| async {
                let token = self
                    .oci
                    .auth(image, &self.auth, RegistryOperation::Pull)
                    .await?;
                Ok(match (token, &self.auth) {
                    (Some(token), _) => Authorization::Bearer(token),
                    (None, RegistryAuth::Basic(user, password)) => {
                        Authorization::Basic(user.clone(), password.clone())
                    }
                    (None, _) => Authorization::Anonymous,
                })
            })
            .await
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
        return envelope
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.code, e.message))
            .collect::<Vec<_>>()
            .join("; ");
    }
    let text = String::from_utf8_lossy(body);
    let line = text.lines().next().unwrap_or("").trim();
    line.chars().take(200).collect()
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
