//! Registry credentials from a Docker `config.json` (`$DOCKER_CONFIG`, else
//! `~/.docker`), as a mounted `kubernetes.io/dockerconfigjson` Secret holds
//! them. No entry for a registry means anonymous access.
//!
//! Username and password serve both HTTP basic auth and the bearer-token
//! challenge flow (traded for a token when the registry asks). A
//! credential helper (`credHelpers`, `credsStore`) runs off the runtime's
//! threads and is killed past its time limit. Secrets never reach an error
//! message: only the registry, the helper and the kind of failure do.

use anyhow::{Context, Result, anyhow, bail};
use docker_credential::{CredentialRetrievalError as E, DockerCredential};
use oci_client::secrets::RegistryAuth;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// How long a credential helper (`docker-credential-NAME get`) may take
/// before it is killed; a pull gives it at most half its `--pull-timeout`.
pub const CREDENTIAL_HELPER_TIMEOUT: Duration = Duration::from_secs(10);

/// The most of a credential helper's answer read, in bytes.
const MAX_HELPER_ANSWER: u64 = 64 << 10;

/// Where credentials are looked up: the Docker config folder, and the time
/// a credential helper may take.
#[derive(Clone, Debug)]
pub struct Lookup {
    pub dir: Option<PathBuf>,
    pub helper_timeout: Duration,
}

impl Lookup {
    /// The credentials the config lists for `server` (`HOST[:PORT]`).
    pub async fn for_server(&self, server: &str) -> Result<RegistryAuth> {
        for_registry(self.dir.as_deref(), server, self.helper_timeout).await
    }
}

/// The Docker config folder: `$DOCKER_CONFIG`, else `~/.docker`.
pub fn config_dir() -> Option<PathBuf> {
    std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker")))
}

/// The credentials for `registry` (`HOST` or `HOST:PORT`) in the
/// `config.json` of `dir`; anonymous when there is none. A credential
/// helper it names gets `helper_timeout`.
pub async fn for_registry(
    dir: Option<&Path>,
    registry: &str,
    helper_timeout: Duration,
) -> Result<RegistryAuth> {
    let Some(file) = dir.map(|d| d.join("config.json")) else {
        return Ok(RegistryAuth::Anonymous);
    };
    let bytes = match tokio::fs::read(&file).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RegistryAuth::Anonymous),
        Err(e) => bail!("cannot read the Docker config `{}`: {e}", file.display()),
    };
    let invalid = || {
        anyhow!(
            "the Docker config `{}` is not a valid config.json (looking up `{registry}`)",
            file.display()
        )
    };
    let mut config: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    let object = config.as_object_mut().ok_or_else(invalid)?;
    // Helpers are run here, not by docker_credential, which would block
    // the runtime's thread on them with no time limit.
    let helper = |value: Option<&serde_json::Value>| {
        value
            .and_then(serde_json::Value::as_str)
            .filter(|name| !name.is_empty())
            .map(str::to_string)
    };
    let for_this = helper(object.get("credHelpers").and_then(|h| h.get(registry)));
    let store = helper(object.get("credsStore"));
    object.remove("credHelpers");
    object.remove("credsStore");
    if let Some(name) = for_this {
        return run_helper(&name, registry, helper_timeout).await;
    }
    let config = serde_json::to_vec(&config).map_err(|_| invalid())?;
    match docker_credential::get_credential_from_reader(config.as_slice(), registry) {
        Err(E::NoCredentialConfigured) => match store {
            Some(name) => run_helper(&name, registry, helper_timeout).await,
            None => Ok(RegistryAuth::Anonymous),
        },
        found => from_config(found, registry, &file),
    }
}

/// What the config's own entries gave for `registry`.
fn from_config(
    found: Result<DockerCredential, E>,
    registry: &str,
    file: &Path,
) -> Result<RegistryAuth> {
    match found {
        Ok(DockerCredential::UsernamePassword(user, password)) => {
            Ok(RegistryAuth::Basic(user, password))
        }
        Ok(DockerCredential::IdentityToken(_)) => bail!(
            "the Docker config's credentials for `{registry}` are an identity token, which wasmlet does not support; log in with a username and password (a registry access token works as the password)"
        ),
        Err(E::NoCredentialConfigured) => Ok(RegistryAuth::Anonymous),
        Err(E::ConfigReadError | E::ConfigNotFound) => bail!(
            "the Docker config `{}` is not a valid config.json (looking up `{registry}`)",
            file.display()
        ),
        Err(E::CredentialDecodingError) => {
            bail!("the Docker config's `auth` for `{registry}` is not base64 of USER:PASSWORD")
        }
        Err(other) => bail!(
            "cannot read the credentials for `{registry}` from the Docker config: {}",
            kind(&other)
        ),
    }
}

/// `docker-credential-NAME get` for `registry`: its output is read on a
/// blocking thread, and past `timeout` it is killed and the pull fails.
async fn run_helper(name: &str, registry: &str, timeout: Duration) -> Result<RegistryAuth> {
    let program = format!("docker-credential-{name}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| {
            format!("cannot run the credential helper `{program}` for `{registry}`")
        })?;
    // A few bytes into an empty pipe: never blocks. A helper that does not
    // read them is judged by its answer.
    let _ = child
        .stdin
        .take()
        .expect("piped")
        .write_all(registry.as_bytes());
    let mut stdout = child.stdout.take().expect("piped").take(MAX_HELPER_ANSWER);
    let reading = tokio::task::spawn_blocking(move || {
        let mut answer = Vec::new();
        stdout.read_to_end(&mut answer).map(|_| answer)
    });
    let answered = async {
        let answer = reading.await??;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok::<_, anyhow::Error>((status, answer));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let outcome = tokio::time::timeout(timeout, answered).await;
    let (status, answer) = match outcome {
        Ok(done) => done.with_context(|| format!("the credential helper `{program}` failed"))?,
        Err(_) => {
            let _ = child.kill();
            drop(tokio::task::spawn_blocking(move || child.wait()));
            bail!(
                "the credential helper `{program}` did not answer for `{registry}` within {}; killed",
                humantime::format_duration(timeout)
            );
        }
    };
    if !status.success() {
        bail!("the credential helper `{program}` failed for `{registry}` ({status})");
    }
    helper_answer(&answer, &program, registry)
}

/// A helper's `{"Username": …, "Secret": …}`.
fn helper_answer(answer: &[u8], program: &str, registry: &str) -> Result<RegistryAuth> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Answer {
        username: String,
        secret: String,
    }
    let answer: Answer = serde_json::from_slice(answer).map_err(|_| {
        anyhow!("the credential helper `{program}` answered garbage for `{registry}`")
    })?;
    if answer.username == "<token>" {
        bail!(
            "the credential helper `{program}` gives an identity token for `{registry}`, which wasmlet does not support"
        );
    }
    Ok(RegistryAuth::Basic(answer.username, answer.secret))
}

/// The variant's name only: some variants carry a helper's output.
fn kind(error: &E) -> String {
    let debug = format!("{error:?}");
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("unknown error")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test, since it sets the process-wide DOCKER_CONFIG.
    #[tokio::test]
    async fn reads_the_docker_config() {
        let dir = std::env::temp_dir().join(format!("wasmlet-auth-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // "user:s3cret" and an identity token.
        std::fs::write(
            dir.join("config.json"),
            r#"{"auths": {
                "reg.example:5000": {"auth": "dXNlcjpzM2NyZXQ="},
                "tok.example": {"auth": "dXNlcjp4", "identitytoken": "s3cret-token"},
                "bad.example": {"auth": "!!!"}
            }}"#,
        )
        .unwrap();
        let auth = |registry: &'static str| {
            let dir = dir.clone();
            async move { for_registry(Some(&dir), registry, CREDENTIAL_HELPER_TIMEOUT).await }
        };
        {
            match auth("reg.example:5000").await.unwrap() {
                RegistryAuth::Basic(u, p) => {
                    assert_eq!((u.as_str(), p.as_str()), ("user", "s3cret"))
                }
                other => panic!("{other:?}"),
            }
            assert!(matches!(
                auth("other.example").await.unwrap(),
                RegistryAuth::Anonymous
            ));
            let e = auth("tok.example").await.unwrap_err().to_string();
            assert!(e.contains("identity token") && !e.contains("s3cret"), "{e}");
            let e = auth("bad.example").await.unwrap_err().to_string();
            assert!(e.contains("bad.example") && !e.contains("!!!"), "{e}");
        }
        let missing = dir.join("nowhere");
        assert!(matches!(
            for_registry(
                Some(&missing),
                "reg.example:5000",
                CREDENTIAL_HELPER_TIMEOUT
            )
            .await
            .unwrap(),
            RegistryAuth::Anonymous
        ));
        std::fs::write(dir.join("config.json"), "not json").unwrap();
        let e = auth("reg.example:5000").await.unwrap_err().to_string();
        assert!(e.contains("reg.example:5000"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
