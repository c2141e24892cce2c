//! Registry credentials from a Docker `config.json` (`$DOCKER_CONFIG`, else
//! `~/.docker`), as a mounted `kubernetes.io/dockerconfigjson` Secret holds
//! them. No entry for a registry means anonymous access.
//!
//! Username and password serve both HTTP basic auth and the bearer-token
//! challenge flow (oci-client trades them for a token when the registry
//! asks). Secrets never reach an error message: only the registry and the
//! kind of failure do.

use anyhow::{Result, bail};
use docker_credential::{CredentialRetrievalError as E, DockerCredential};
use oci_client::secrets::RegistryAuth;
use std::path::{Path, PathBuf};

/// The Docker config folder: `$DOCKER_CONFIG`, else `~/.docker`.
pub fn config_dir() -> Option<PathBuf> {
    std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker")))
}

/// The credentials for `registry` (`HOST` or `HOST:PORT`) in the
/// `config.json` of `dir`; anonymous when there is none.
pub fn for_registry(dir: Option<&Path>, registry: &str) -> Result<RegistryAuth> {
    let Some(file) = dir.map(|d| d.join("config.json")) else {
        return Ok(RegistryAuth::Anonymous);
    };
    let reader = match std::fs::File::open(&file) {
        Ok(f) => std::io::BufReader::new(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RegistryAuth::Anonymous),
        Err(e) => bail!("cannot read the Docker config `{}`: {e}", file.display()),
    };
    match docker_credential::get_credential_from_reader(reader, registry) {
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
        Err(E::HelperFailure { helper, .. }) => bail!(
            "the Docker config's credential helper `docker-credential-{helper}` failed for `{registry}`"
        ),
        Err(E::HelperCommunicationError | E::MalformedHelperResponse) => bail!(
            "the Docker config names a credential helper for `{registry}` that could not be run or answered garbage"
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
    #[test]
    fn reads_the_docker_config() {
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
        let auth = |registry| for_registry(Some(&dir), registry);
        {
            match auth("reg.example:5000").unwrap() {
                RegistryAuth::Basic(u, p) => {
                    assert_eq!((u.as_str(), p.as_str()), ("user", "s3cret"))
                }
                other => panic!("{other:?}"),
            }
            assert!(matches!(
                auth("other.example").unwrap(),
                RegistryAuth::Anonymous
            ));
            let e = auth("tok.example").unwrap_err().to_string();
            assert!(e.contains("identity token") && !e.contains("s3cret"), "{e}");
            let e = auth("bad.example").unwrap_err().to_string();
            assert!(e.contains("bad.example") && !e.contains("!!!"), "{e}");
        }
        let missing = dir.join("nowhere");
        assert!(matches!(
            for_registry(Some(&missing), "reg.example:5000").unwrap(),
            RegistryAuth::Anonymous
        ));
        std::fs::write(dir.join("config.json"), "not json").unwrap();
        let e = auth("reg.example:5000").unwrap_err().to_string();
        assert!(e.contains("reg.example:5000"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
