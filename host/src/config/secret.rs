//! Values the manifest reads from a file or the environment: `{ file =
//! "PATH" }` or `{ env = "NAME" }`. They are read when the manifest loads
//! (start-up and every reload), kept in a [`Secret`] whose `Debug` and
//! `Display` print `(secret)`, and never appear in an error: an unreadable
//! file is named, its content never.

use anyhow::{Result, bail};
use std::fmt;
use std::path::{Path, PathBuf};

/// Largest file a `{ file = "PATH" }` value may be, in bytes.
pub const MAX_SECRET_FILE_SIZE: u64 = 64 << 10;

/// A value that must never be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The value itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(secret)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(secret)")
    }
}

/// Where a value came from; printable (it names a file or a variable,
/// never the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Written in the manifest.
    Literal,
    /// `{ file = "PATH" }`, resolved against the manifest's folder.
    File(PathBuf),
    /// `{ env = "NAME" }`: the host's environment.
    Env(String),
}

/// `{ file = "PATH" }` or `{ env = "NAME" }` as written.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceFile {
    file: Option<PathBuf>,
    env: Option<String>,
}

impl SourceFile {
    /// Reads the value now. Errors name the file or the variable, never
    /// what they hold.
    pub fn resolve(self, base: &Path) -> Result<(Source, Secret)> {
        match (self.file, self.env) {
            (Some(file), None) => {
                let path = base.join(file);
                let value = read_file(&path)?;
                Ok((Source::File(path), Secret(value)))
            }
            (None, Some(name)) => {
                if name.is_empty() || name.contains(['=', '\0']) {
                    bail!("invalid environment variable name `{name}`");
                }
                match std::env::var(&name) {
                    Ok(value) => Ok((Source::Env(name), Secret(value))),
                    Err(std::env::VarError::NotPresent) => {
                        bail!("environment variable `{name}` is not set")
                    }
                    Err(std::env::VarError::NotUnicode(_)) => {
                        bail!("environment variable `{name}` is not UTF-8")
                    }
                }
            }
            _ => bail!("must be {{ file = \"PATH\" }} or {{ env = \"NAME\" }}"),
        }
    }
}

/// A secret file's content, without trailing line breaks (as Kubernetes
/// Secrets and `echo` write them).
fn read_file(path: &Path) -> Result<String> {
    use std::io::Read;
    let named = || format!("cannot read `{}`", path.display());
    let file =
        std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{}: {}", named(), e.kind()))?;
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| anyhow::anyhow!("{}: {}", named(), e.kind()))?;
    if bytes.len() as u64 > MAX_SECRET_FILE_SIZE {
        bail!(
            "`{}` is larger than {} bytes",
            path.display(),
            MAX_SECRET_FILE_SIZE
        );
    }
    let Ok(mut text) = String::from_utf8(bytes) else {
        bail!("`{}` is not UTF-8", path.display());
    };
    while text.ends_with(['\n', '\r']) {
        text.pop();
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print_their_value() {
        let s = Secret::new("hunter2".into());
        assert_eq!(format!("{s:?} {s}"), "(secret) (secret)");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn files_are_read_and_errors_never_hold_the_content() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key"), "s3cr3t-value\n").unwrap();
        let from = |file: &str| SourceFile {
            file: Some(file.into()),
            env: None,
        };
        let (source, value) = from("key").resolve(dir.path()).unwrap();
        assert_eq!(value.expose(), "s3cr3t-value");
        assert_eq!(source, Source::File(dir.path().join("key")));
        let e = format!("{:#}", from("missing").resolve(dir.path()).unwrap_err());
        assert!(e.contains("missing") && e.contains("cannot read"), "{e}");
        std::fs::write(dir.path().join("big"), vec![b'x'; 70 << 10]).unwrap();
        let e = format!("{:#}", from("big").resolve(dir.path()).unwrap_err());
        assert!(e.contains("larger than") && !e.contains("xxx"), "{e}");
        std::fs::write(dir.path().join("bin"), b"s3cr3t\xff").unwrap();
        let e = format!("{:#}", from("bin").resolve(dir.path()).unwrap_err());
        assert!(e.contains("not UTF-8") && !e.contains("s3cr3t"), "{e}");
    }

    #[test]
    fn env_and_bad_forms() {
        let e = SourceFile {
            file: None,
            env: Some("WASMLET_TEST_SURELY_UNSET_VAR".into()),
        }
        .resolve(Path::new("/"))
        .unwrap_err();
        assert!(e.to_string().contains("is not set"), "{e}");
        let (source, value) = SourceFile {
            file: None,
            env: Some("PATH".into()),
        }
        .resolve(Path::new("/"))
        .unwrap();
        assert_eq!(source, Source::Env("PATH".into()));
        assert_eq!(value.expose(), std::env::var("PATH").unwrap());
        for (file, env) in [(None, None), (Some("a".into()), Some("B".into()))] {
            let e = SourceFile { file, env }
                .resolve(Path::new("/"))
                .unwrap_err();
            assert!(e.to_string().contains("must be"), "{e}");
        }
    }
}
