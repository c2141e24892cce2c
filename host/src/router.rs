//! Route patterns and longest-match lookup.
//!
//! A pattern is either exact (`/hello`) or a wildcard prefix in Spin's
//! convention (`/api/...` matches `/api`, `/api/` and everything below it;
//! `/...` matches every path). The most specific match wins: a longer base
//! beats a shorter one, and an exact pattern beats a wildcard with the same
//! base. The router is built once per routing table, never per request.

use std::fmt;

/// A parsed route pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Pattern {
    /// Matches this path only.
    Exact(String),
    /// Matches the base itself and every path below it; `""` matches all.
    Prefix(String),
}

const WILDCARD: &str = "/...";

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, String> {
        if !text.starts_with('/') {
            return Err(format!("route path `{text}` must start with `/`"));
        }
        if text.contains(['?', '#', '*']) {
            return Err(format!(
                "route path `{text}` may not contain `?`, `#` or `*` (use `/prefix/...` for a wildcard)"
            ));
        }
        let (base, wildcard) = match text.strip_suffix(WILDCARD) {
            Some(base) => (base, true),
            None => (text, false),
        };
        if base.contains("...") {
            return Err(format!(
                "route path `{text}`: `...` is only allowed as a final `/...` segment"
            ));
        }
        Ok(if wildcard {
            Pattern::Prefix(base.to_string())
        } else {
            Pattern::Exact(base.to_string())
        })
    }

    pub fn matches(&self, path: &str) -> bool {
        match self {
            Pattern::Exact(exact) => path == exact,
            Pattern::Prefix(base) => path
                .strip_prefix(base.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
        }
    }

    /// Sort key: higher is more specific.
    fn specificity(&self) -> (usize, bool) {
        match self {
            Pattern::Exact(p) => (p.len(), true),
            Pattern::Prefix(p) => (p.len(), false),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Exact(p) => f.write_str(p),
            Pattern::Prefix(p) => write!(f, "{p}{WILDCARD}"),
        }
    }
}

/// Routes ordered from most to least specific.
#[derive(Debug, Clone)]
pub struct Router<T> {
    routes: Vec<(Pattern, T)>,
}

impl<T> Router<T> {
    /// Builds the router; a pattern given twice is an error naming it.
    pub fn new(routes: impl IntoIterator<Item = (Pattern, T)>) -> Result<Router<T>, String> {
        let mut routes: Vec<(Pattern, T)> = routes.into_iter().collect();
        routes.sort_by_key(|(pattern, _)| std::cmp::Reverse(pattern.specificity()));
        if let Some(pair) = routes.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(format!("duplicate route `{}`", pair[0].0));
        }
        Ok(Router { routes })
    }

    /// The most specific route matching `path`.
    pub fn find(&self, path: &str) -> Option<&T> {
        self.routes
            .iter()
            .find(|(pattern, _)| pattern.matches(path))
            .map(|(_, value)| value)
    }

    pub fn iter(&self) -> impl Iterator<Item = &(Pattern, T)> {
        self.routes.iter()
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(paths: &[&'static str]) -> Router<&'static str> {
        Router::new(paths.iter().map(|p| (Pattern::parse(p).unwrap(), *p))).unwrap()
    }

    #[test]
    fn parses_exact_and_wildcard() {
        assert_eq!(
            Pattern::parse("/hello"),
            Ok(Pattern::Exact("/hello".into()))
        );
        assert_eq!(
            Pattern::parse("/api/..."),
            Ok(Pattern::Prefix("/api".into()))
        );
        assert_eq!(Pattern::parse("/..."), Ok(Pattern::Prefix("".into())));
        assert_eq!(Pattern::parse("/"), Ok(Pattern::Exact("/".into())));
        assert!(Pattern::parse("hello").is_err());
        assert!(Pattern::parse("/a/.../b").is_err());
        assert!(Pattern::parse("/a*").is_err());
        assert!(Pattern::parse("/a?x=1").is_err());
    }

    #[test]
    fn wildcard_matches_its_base_and_below_only() {
        let p = Pattern::parse("/api/...").unwrap();
        assert!(p.matches("/api"));
        assert!(p.matches("/api/"));
        assert!(p.matches("/api/users/7"));
        assert!(!p.matches("/apis"));
        assert!(!p.matches("/"));
        assert!(Pattern::parse("/...").unwrap().matches("/anything/at/all"));
    }

    #[test]
    fn longest_match_wins_and_exact_beats_wildcard() {
        let r = router(&["/...", "/api/...", "/api/users/...", "/api", "/static/..."]);
        assert_eq!(r.find("/"), Some(&"/..."));
        assert_eq!(r.find("/api"), Some(&"/api"));
        assert_eq!(r.find("/api/x"), Some(&"/api/..."));
        assert_eq!(r.find("/api/users/7"), Some(&"/api/users/..."));
        assert_eq!(r.find("/static"), Some(&"/static/..."));
        assert_eq!(r.find("/other"), Some(&"/..."));
    }

    #[test]
    fn no_match_without_a_catch_all() {
        let r = router(&["/hello", "/api/..."]);
        assert_eq!(r.find("/"), None);
        assert_eq!(r.find("/hello/"), None);
        assert_eq!(r.find("/hello"), Some(&"/hello"));
    }

    #[test]
    fn duplicates_are_reported() {
        let err = Router::new([
            (Pattern::parse("/a/...").unwrap(), 1),
            (Pattern::parse("/b").unwrap(), 2),
            (Pattern::parse("/a/...").unwrap(), 3),
        ])
        .unwrap_err();
        assert_eq!(err, "duplicate route `/a/...`");
    }
}
