//! The canary's manifest syntax: `canary = {…}`, `sticky = "…"` and
//! `rollback = {…}` on a route, as written and as validated. Pure data
//! and checks; what a canary does with a request is
//! [`crate::routing::canary`]'s.

use anyhow::{Result, bail};
use http::HeaderMap;
use http::header::{COOKIE, HeaderName};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Shortest and longest `rollback.window`: a slot must span a few
/// milliseconds, and a day of history outlives any rollout.
const MIN_WINDOW: Duration = Duration::from_secs(1);
const MAX_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// `canary = { component = "hello-v2.wasm", weight = 10 }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryFile {
    /// `component = "hello-v2.wasm"`, resolved like the route's.
    pub component: PathBuf,
    /// `weight = 10`: the percentage of the route's requests it serves.
    pub weight: i64,
    /// `version_header = true`: answers carry `x-wasmlet-version`.
    #[serde(default)]
    pub version_header: bool,
}

/// `rollback = { max_error_rate = 0.05, min_requests = 200, window = "1m" }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackFile {
    /// `max_error_rate = 0.05`: how much higher the canary's failure rate
    /// may be than the stable version's.
    pub max_error_rate: f64,
    /// `min_requests = 200`: canary requests in the window before it is judged.
    pub min_requests: i64,
    /// `window = "1m"`
    pub window: String,
}

/// A validated canary.
#[derive(Debug, Clone, PartialEq)]
pub struct CanarySpec {
    /// The canary's component, resolved against the manifest's folder, or
    /// the `oci://` reference as written.
    pub component: PathBuf,
    /// Set when `component` is an `oci://` reference.
    pub oci: Option<crate::oci::OciRef>,
    /// Percent of requests, 0–100.
    pub weight: u8,
    pub sticky: Option<Sticky>,
    pub rollback: Option<RollbackPolicy>,
    /// Answers name the version that served them (`x-wasmlet-version`):
    /// off unless the manifest asks, since it tells any client which
    /// sticky values reach the canary.
    pub version_header: bool,
}

/// What pins a request to one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sticky {
    Header(HeaderName),
    Cookie(String),
}

impl Sticky {
    /// `header:NAME` or `cookie:NAME`.
    pub fn parse(text: &str) -> Result<Sticky> {
        let bad =
            || anyhow::anyhow!("`sticky` must be `header:NAME` or `cookie:NAME`, not `{text}`");
        match text.split_once(':') {
            Some(("header", name)) => HeaderName::from_bytes(name.as_bytes())
                .map(Sticky::Header)
                .map_err(|_| bad()),
            Some(("cookie", name))
                if !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b)) =>
            {
                Ok(Sticky::Cookie(name.to_string()))
            }
            _ => Err(bad()),
        }
    }

    /// The request's value for this key, if it has one.
    pub fn value<'a>(&self, headers: &'a HeaderMap) -> Option<&'a [u8]> {
        match self {
            Sticky::Header(name) => headers.get(name).map(|v| v.as_bytes()),
            Sticky::Cookie(name) => headers
                .get_all(COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_bytes()),
        }
        .filter(|v| !v.is_empty())
    }
}

impl std::fmt::Display for Sticky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sticky::Header(name) => write!(f, "header:{name}"),
            Sticky::Cookie(name) => write!(f, "cookie:{name}"),
        }
    }
}

/// When a canary is rolled back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RollbackPolicy {
    pub max_error_rate: f64,
    pub min_requests: u64,
    pub window: Duration,
}

impl RollbackPolicy {
    pub fn validate(file: RollbackFile) -> Result<RollbackPolicy> {
        let rate = file.max_error_rate;
        if !(0.0..=1.0).contains(&rate) {
            bail!("`max_error_rate` must be between 0 and 1 (a fraction), not {rate}");
        }
        let Ok(min_requests) = u64::try_from(file.min_requests) else {
            bail!(
                "`min_requests` must be at least 1, not {}",
                file.min_requests
            );
        };
        if min_requests == 0 {
            bail!("`min_requests` must be at least 1, not 0");
        }
        let window = humantime::parse_duration(&file.window)
            .map_err(|e| anyhow::anyhow!("`window`: `{}`: {e}", file.window))?;
        if !(MIN_WINDOW..=MAX_WINDOW).contains(&window) {
            bail!(
                "`window` must be between {} and {}, not `{}`",
                humantime::format_duration(MIN_WINDOW),
                humantime::format_duration(MAX_WINDOW),
                file.window
            );
        }
        Ok(RollbackPolicy {
            max_error_rate: rate,
            min_requests,
            window,
        })
    }

    /// Why the canary must go, if it must: its failure rate is more than
    /// `max_error_rate` above the stable version's, over at least
    /// `min_requests` canary requests.
    pub fn verdict(&self, stable: Counts, canary: Counts) -> Option<String> {
        if canary.total < self.min_requests {
            return None;
        }
        let (s, c) = (stable.rate(), canary.rate());
        (c - s > self.max_error_rate).then(|| {
            format!(
                "canary failed {}/{} requests ({:.1}%), stable {}/{} ({:.1}%): more than {:.1} points worse within {}",
                canary.failed,
                canary.total,
                c * 100.0,
                stable.failed,
                stable.total,
                s * 100.0,
                self.max_error_rate * 100.0,
                humantime::format_duration(self.window)
            )
        })
    }
}

/// Requests and failures of one version.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub total: u64,
    pub failed: u64,
}

impl Counts {
    pub fn rate(self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.failed as f64 / self.total as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RollbackPolicy {
        RollbackPolicy {
            max_error_rate: 0.05,
            min_requests: 200,
            window: Duration::from_secs(60),
        }
    }

    fn counts(total: u64, failed: u64) -> Counts {
        Counts { total, failed }
    }

    #[test]
    fn verdict_waits_for_min_requests_and_compares_with_stable() {
        let p = policy();
        assert_eq!(p.verdict(counts(1000, 0), counts(199, 199)), None);
        assert!(p.verdict(counts(1000, 0), counts(200, 200)).is_some());
        // 6% against 1%: 5 points worse is not more than 5.
        assert_eq!(p.verdict(counts(1000, 10), counts(200, 12)), None);
        assert!(p.verdict(counts(1000, 10), counts(200, 13)).is_some());
        // A stable version that fails as much excuses the canary.
        assert_eq!(p.verdict(counts(1000, 500), counts(500, 270)), None);
        // No stable traffic: the canary is held to 0%.
        assert!(p.verdict(counts(0, 0), counts(200, 20)).is_some());
        let reason = p.verdict(counts(100, 1), counts(200, 200)).unwrap();
        assert!(
            reason.contains("200/200") && reason.contains("1/100"),
            "{reason}"
        );
    }

    #[test]
    fn sticky_keys_parse_and_read_their_value() {
        let header = Sticky::parse("header:X-User").unwrap();
        assert_eq!(header, Sticky::Header(HeaderName::from_static("x-user")));
        let cookie = Sticky::parse("cookie:session").unwrap();
        for bad in [
            "",
            "header:",
            "cookie:",
            "user",
            "query:x",
            "cookie:a;b",
            "header:a b",
        ] {
            assert!(Sticky::parse(bad).is_err(), "{bad}");
        }
        let mut headers = HeaderMap::new();
        headers.insert("x-user", "alice".parse().unwrap());
        headers.append(COOKIE, "theme=dark; session=abc".parse().unwrap());
        assert_eq!(header.value(&headers), Some(&b"alice"[..]));
        assert_eq!(cookie.value(&headers), Some(&b"abc"[..]));
        assert_eq!(Sticky::Cookie("sess".into()).value(&headers), None);
    }

    #[test]
    fn rollback_policies_are_checked() {
        let file = |rate: f64, min: i64, window: &str| RollbackFile {
            max_error_rate: rate,
            min_requests: min,
            window: window.into(),
        };
        assert_eq!(
            RollbackPolicy::validate(file(0.05, 200, "1m")).unwrap(),
            policy()
        );
        for (f, want) in [
            (file(1.5, 200, "1m"), "max_error_rate"),
            (file(-0.1, 200, "1m"), "max_error_rate"),
            (file(f64::NAN, 200, "1m"), "max_error_rate"),
            (file(0.05, 0, "1m"), "min_requests"),
            (file(0.05, -5, "1m"), "min_requests"),
            (file(0.05, 200, "soon"), "window"),
            (file(0.05, 200, "10ms"), "window"),
            (file(0.05, 200, "400d"), "window"),
        ] {
            let e = format!("{:#}", RollbackPolicy::validate(f).unwrap_err());
            assert!(e.contains(want), "{e}");
        }
    }
}
