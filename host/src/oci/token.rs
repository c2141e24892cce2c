//! The distribution spec's token flow, in pieces the session puts
//! together: a `WWW-Authenticate` challenge parsed, the realm URL that
//! asks for pull rights, and the token read from an answer of at most
//! [`MAX_TOKEN_ANSWER`] bytes. (oci-client reads a token answer whole: a
//! realm that streams one without end took a host from 36 MiB to 6 GiB.)

use super::untrusted::quote;
use anyhow::{Result, anyhow, bail};
use reqwest::Url;

/// The most of a token answer read: real ones are 1–4 KiB.
pub const MAX_TOKEN_ANSWER: usize = 16 << 10;

/// A `WWW-Authenticate` challenge: its scheme (lowercase) and parameters.
#[derive(Debug, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The first challenge of a `WWW-Authenticate` value:
/// `Bearer realm="…",service="…",scope="…"`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, mut rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = Vec::new();
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => unquote(quoted)?,
            None => {
                let end = after.find(',').unwrap_or(after.len());
                (after[..end].trim().to_string(), &after[end..])
            }
        };
        params.push((key.trim().to_string(), value));
        rest = after;
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

/// A quoted string's value (after its opening quote) and what follows it.
fn unquote(s: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &s[i + 1..])),
            '\\' => value.push(chars.next()?.1),
            c => value.push(c),
        }
    }
    None
}

/// The URL that asks `challenge`'s realm for pull rights on `repository`.
pub fn request_url(challenge: &Challenge, repository: &str) -> Result<Url> {
    let realm = challenge
        .param("realm")
        .ok_or_else(|| anyhow!("the registry's Bearer challenge names no realm"))?;
    let mut url = Url::parse(realm)
        .map_err(|_| anyhow!("the registry's token realm `{}` is not a URL", quote(realm)))?;
    {
        let mut query = url.query_pairs_mut();
        if let Some(service) = challenge.param("service") {
            query.append_pair("service", service);
        }
        query.append_pair("scope", &format!("repository:{repository}:pull"));
    }
    Ok(url)
}

/// The token in a realm's answer (`token`, else `access_token`), which
/// must fit in a header.
pub fn read_token(body: &[u8], url: &str) -> Result<String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        token: Option<String>,
        access_token: Option<String>,
    }
    let answer: Answer = serde_json::from_slice(body)
        .map_err(|_| anyhow!("the token answer from {url} is not JSON"))?;
    let Some(token) = answer.token.or(answer.access_token) else {
        bail!("the token answer from {url} holds no token");
    };
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        bail!("the token answer from {url} holds no usable token");
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_parsed() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.param("realm"), Some("https://auth.example/token"));
        assert_eq!(c.param("scope"), Some("repository:a/b:pull,push"));
        let c = parse_challenge(r#"Basic realm="fake""#).unwrap();
        assert_eq!(
            (c.scheme.as_str(), c.param("realm")),
            ("basic", Some("fake"))
        );
        let c = parse_challenge(r#"Bearer realm=https://r/t, service="s\"x""#).unwrap();
        assert_eq!(c.param("realm"), Some("https://r/t"));
        assert_eq!(c.param("service"), Some("s\"x"));
        assert_eq!(parse_challenge(r#"Bearer realm="unterminated"#), None);
    }

    #[test]
    fn the_realm_is_asked_for_pull_rights() {
        let c = parse_challenge(r#"Bearer realm="https://auth.example/token?x=1",service="reg""#)
            .unwrap();
        let url = request_url(&c, "team/hello").unwrap();
        assert_eq!(
            url.as_str(),
            "https://auth.example/token?x=1&service=reg&scope=repository%3Ateam%2Fhello%3Apull"
        );
        let e = request_url(
            &parse_challenge("Bearer realm=\"not a url\n\"").unwrap(),
            "r",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not a URL") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn tokens_are_read_from_the_answer() {
        assert_eq!(read_token(br#"{"token":"abc"}"#, "u").unwrap(), "abc");
        assert_eq!(
            read_token(br#"{"access_token":"xyz"}"#, "u").unwrap(),
            "xyz"
        );
        for bad in [
            &br#"{}"#[..],
            br#"{"token":""}"#,
            br#"{"token":"a\nb"}"#,
            b"<html>",
        ] {
            assert!(read_token(bad, "u").is_err());
        }
    }
}
