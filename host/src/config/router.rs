//! Route patterns and longest-match lookup.
//!
//! A pattern is either exact (`/hello`) or a wildcard prefix in Spin's
//! convention (`/api/...` matches `/api`, `/api/` and everything below it;
//! `/...` matches every path). The most specific match wins: a longer base
//! beats a shorter one, and an exact pattern beats a wildcard with the same
//! base. The router is built once per routing table, never per request.
//!
//! Paths are routed as they arrive, not normalised: a request path with a
//! dot segment (`.` or `..`, plain or %-encoded) or an encoded slash
//! (`%2f`) is refused by [`check_path`] before routing, so no path can mean
//! one route here and another to a proxy in front that resolves them.

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
        // Spin's named segments would silently be an exact match on a
        // literal `:id` here: refused, with what to write instead.
        if base.split('/').any(|segment| segment.starts_with(':')) {
            return Err(format!(
                "route path `{text}`: named segments (`/:name`) are not supported; \
                 route the prefix with `/...` and read the rest from the `spin-path-info` header"
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

    /// The part of `path` below this pattern, as Spin's `spin-path-info`
    /// gives it: `/api/...` on `/api/users/7` is `/users/7`, on `/api/` it
    /// is `/`, on `/api` it is empty; an exact pattern leaves nothing.
    /// `path` must be one this pattern matches.
    pub fn path_info<'a>(&self, path: &'a str) -> &'a str {
        match self {
            Pattern::Exact(_) => "",
            Pattern::Prefix(base) => path.get(base.len()..).unwrap_or(""),
        }
    }

    /// The pattern without its wildcard (Spin's `spin-component-route`):
    /// `/api/...` is `/api`, `/...` is empty, `/hello` is itself.
    pub fn base(&self) -> &str {
        match self {
            Pattern::Exact(p) | Pattern::Prefix(p) => p,
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

/// Why a request path is refused before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path has a `.` or `..` segment (plain or %-encoded); send it resolved")]
    DotSegment,
    #[error("path has an encoded slash (`%2f`)")]
    EncodedSlash,
}

/// Refuses a path with a dot segment, `%2e` counted as `.`, or with an
/// encoded slash: the forms a proxy or a guest might resolve differently.
pub fn check_path(path: &str) -> Result<(), PathError> {
    let bytes = path.as_bytes();
    // The dots the current segment has consisted of so far; `None` once it
    // holds anything else (or more than two dots).
    let mut dots = Some(0u8);
    let mut i = 0;
    while i <= bytes.len() {
        let (byte, width) = match bytes.get(i) {
            // The end of the path closes the last segment.
            None => (b'/', 1),
            Some(b'%') => match bytes.get(i + 1..i + 3).and_then(hex_byte) {
                Some(b'/') => return Err(PathError::EncodedSlash),
                Some(decoded) => (decoded, 3),
                None => (b'%', 1),
            },
            Some(&byte) => (byte, 1),
        };
        match byte {
            b'/' if matches!(dots, Some(1 | 2)) => return Err(PathError::DotSegment),
            b'/' => dots = Some(0),
            b'.' => dots = dots.filter(|&n| n < 2).map(|n| n + 1),
            _ => dots = None,
        }
        i += width;
    }
    Ok(())
}

fn hex_byte(hex: &[u8]) -> Option<u8> {
    let hex = std::str::from_utf8(hex).ok()?;
    u8::from_str_radix(hex, 16).ok()
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
        self.find_match(path).map(|(_, value)| value)
    }

    /// The most specific route matching `path`, with the pattern it matched.
    pub fn find_match(&self, path: &str) -> Option<(&Pattern, &T)> {
        self.routes
            .iter()
            .find(|(pattern, _)| pattern.matches(path))
            .map(|(pattern, value)| (pattern, value))
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
        let named = Pattern::parse("/users/:id/...").unwrap_err();
        assert!(
            named.contains("named segments") && named.contains("spin-path-info"),
            "{named}"
        );
        assert!(
            Pattern::parse("/a:b").is_ok(),
            "a colon inside a segment is literal"
        );
    }

    #[test]
    fn path_info_and_base_are_spins() {
        // Spin's own cases (its router's trailing-wildcard tests).
        let test = Pattern::parse("/test/...").unwrap();
        assert_eq!(test.path_info("/test"), "");
        assert_eq!(test.path_info("/test/"), "/");
        assert_eq!(test.path_info("/test/hello"), "/hello");
        assert_eq!(test.path_info("/test/hello/"), "/hello/");
        assert_eq!(test.base(), "/test");
        let all = Pattern::parse("/...").unwrap();
        assert_eq!(all.path_info("/1/2/3"), "/1/2/3");
        assert_eq!(all.path_info("/"), "/");
        assert_eq!(all.base(), "");
        let exact = Pattern::parse("/hello").unwrap();
        assert_eq!(exact.path_info("/hello"), "");
        assert_eq!(exact.base(), "/hello");
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
    fn dot_segments_are_refused_in_every_form() {
        for path in [
            "/admin/../public/x",
            "/admin/%2e%2e/public/x",
            "/admin/%2E%2e/public",
            "/admin/.%2e/public",
            "/a/./b",
            "/a/%2e/b",
            "/..",
            "/.",
            "/a/..",
        ] {
            assert_eq!(check_path(path), Err(PathError::DotSegment), "{path}");
        }
        for path in ["/admin%2f..%2fpublic", "/admin%2F%2E%2E%2Fpublic", "/a%2fb"] {
            assert_eq!(check_path(path), Err(PathError::EncodedSlash), "{path}");
        }
        for path in [
            "/",
            "/a/b",
            "/a/.../b",
            "/a/..b",
            "/a/.b/",
            "/a/b.",
            "/%2",
            "/%zz/..x",
            "/a//b",
            "/%2e%2e%2e",
            "",
        ] {
            assert_eq!(check_path(path), Ok(()), "{path}");
        }
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

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// `%2e` and `%2f` decoded.
    fn decode(path: &str) -> String {
        path.replace("%2e", ".")
            .replace("%2E", ".")
            .replace("%2f", "/")
            .replace("%2F", "/")
    }

    /// RFC 3986 `remove_dot_segments` after [`decode`]: the path a
    /// normalising proxy would see.
    fn normalise(path: &str) -> String {
        let decoded = decode(path);
        let mut out: Vec<&str> = Vec::new();
        let segments: Vec<&str> = decoded.split('/').skip(1).collect();
        for (i, segment) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            match *segment {
                "." if last => out.push(""),
                "." => {}
                ".." => {
                    out.pop();
                    if last {
                        out.push("");
                    }
                }
                other => out.push(other),
            }
        }
        format!("/{}", out.join("/"))
    }

    fn segment() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "", "a", "b", "api", "admin", "public", ".", "..", "%2e", "%2E%2e", ".%2e", "...",
            "a.b", "..a", "%2f", "%41", "%", "%2",
        ])
    }

    fn request_path() -> impl Strategy<Value = String> {
        prop::collection::vec(segment(), 0..6).prop_map(|s| format!("/{}", s.join("/")))
    }

    fn route_table() -> impl Strategy<Value = Vec<&'static str>> {
        prop::sample::subsequence(
            vec![
                "/...",
                "/",
                "/a",
                "/a/...",
                "/a/b",
                "/a/b/...",
                "/admin/...",
                "/public/...",
                "/api",
                "/api/...",
            ],
            0..6,
        )
    }

    proptest! {
        #[test]
        fn nothing_panics(text in ".*", path in ".*") {
            let _ = check_path(&path);
            if let Ok(pattern) = Pattern::parse(&text) {
                let _ = pattern.matches(&path);
                let router = Router::new([(pattern, ())]).unwrap();
                let _ = router.find(&path);
            }
        }

        /// A path is routed only if normalising it would change nothing the
        /// router looks at; so routing agrees with the normalised path.
        #[test]
        fn routing_agrees_with_the_normalised_path(table in route_table(), path in request_path()) {
            let router = Router::new(table.iter().map(|p| (Pattern::parse(p).unwrap(), *p))).unwrap();
            match check_path(&path) {
                Ok(()) => prop_assert_eq!(router.find(&path), router.find(&normalise(&path))),
                // Refused only where a proxy could see another path.
                Err(PathError::DotSegment) => prop_assert_ne!(normalise(&path), decode(&path)),
                Err(PathError::EncodedSlash) => prop_assert_ne!(decode(&path), path),
            }
        }
    }
}
