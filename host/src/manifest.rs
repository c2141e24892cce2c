//! The manifest, `wasmlet.toml`: the routes a host serves.
//!
//! ```toml
//! [[route]]
//! path = "/..."                   # "/exact" or "/prefix/..." (wildcard)
//! component = "hello.wasm"        # relative to the manifest's folder
//! timeout = "5s"                  # optional per-route limits
//! max_memory = "64MiB"
//! max_body_size = "1MiB"
//! max_instance_reuse = 100        # opt-in instance reuse (docs/reuse.md)
//! idle_instance_timeout = "1s"
//! env = { GREETING = "hi" }       # granted environment variables
//! allowed_outbound_hosts = ["http://127.0.0.1:8080"]
//! ```
//!
//! Unknown keys are errors, and every error names the file and the line.

use crate::limits::{self, RouteLimits};
use crate::outbound::OutboundRule;
use crate::router::{Pattern, Router};
use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    #[serde(default)]
    route: Vec<toml::Spanned<RouteFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    /// `path = "/api/..."`
    path: String,
    /// `component = "api.wasm"`
    component: PathBuf,
    /// `timeout = "5s"`
    #[serde(default, deserialize_with = "limits::duration_opt")]
    timeout: Option<Duration>,
    /// `max_memory = "64MiB"`
    #[serde(default, deserialize_with = "limits::bytes_opt")]
    max_memory: Option<u64>,
    /// `max_body_size = "1MiB"`
    #[serde(default, deserialize_with = "limits::bytes_opt")]
    max_body_size: Option<u64>,
    /// `max_instance_reuse = 1000` (at least 1; 1: a fresh instance per request)
    #[serde(default)]
    max_instance_reuse: Option<u32>,
    /// `idle_instance_timeout = "1s"`
    #[serde(default, deserialize_with = "limits::duration_opt")]
    idle_instance_timeout: Option<Duration>,
    /// `env = { NAME = "value" }`
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// `allowed_outbound_hosts = ["https://api.example.com"]`
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
}

/// One validated route.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteSpec {
    pub pattern: Pattern,
    /// The component's path, resolved against the manifest's folder.
    pub component: PathBuf,
    pub limits: RouteLimits,
    pub env: Vec<(String, String)>,
    pub outbound: Vec<OutboundRule>,
}

impl RouteSpec {
    /// The route `wasmlet serve COMPONENT.wasm` serves: every path.
    pub fn catch_all(component: PathBuf) -> RouteSpec {
        RouteSpec {
            pattern: Pattern::Prefix(String::new()),
            component,
            limits: RouteLimits::default(),
            env: Vec::new(),
            outbound: Vec::new(),
        }
    }
}

/// A validated manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub routes: Vec<RouteSpec>,
}

impl Manifest {
    /// Reads and validates the manifest at `path`.
    pub fn load(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read manifest `{}`", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Manifest::parse(&text, base)
            .with_context(|| format!("invalid manifest `{}`", path.display()))
    }

    /// Parses manifest text; component paths are resolved against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Manifest> {
        let file: ManifestFile = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| line_of(text, &s))
                .map(|l| format!("line {l}: "))
                .unwrap_or_default();
            anyhow::anyhow!("{at}{}", e.message().trim_end())
        })?;
        if file.route.is_empty() {
            bail!("no routes: add at least one [[route]] with `path` and `component`");
        }
        let mut routes = Vec::with_capacity(file.route.len());
        for spanned in file.route {
            let line = line_of(text, &spanned.span());
            let route = spanned.into_inner();
            let spec =
                validate_route(route, base).with_context(|| format!("route at line {line}"))?;
            routes.push(spec);
        }
        Router::new(routes.iter().map(|r| (r.pattern.clone(), ()))).map_err(anyhow::Error::msg)?;
        Ok(Manifest { routes })
    }

    /// The one-route manifest of `wasmlet serve COMPONENT.wasm`.
    pub fn single(component: PathBuf) -> Manifest {
        Manifest {
            routes: vec![RouteSpec::catch_all(component)],
        }
    }
}

fn validate_route(route: RouteFile, base: &Path) -> Result<RouteSpec> {
    let pattern = Pattern::parse(&route.path).map_err(anyhow::Error::msg)?;
    if route.component.as_os_str().is_empty() {
        bail!("`component` is empty");
    }
    if route.max_instance_reuse == Some(0) {
        bail!("`max_instance_reuse` must be at least 1 (1: a fresh instance per request)");
    }
    for name in route.env.keys() {
        if name.is_empty() || name.contains(['=', '\0']) {
            bail!("`env`: invalid variable name `{name}`");
        }
    }
    let outbound = route
        .allowed_outbound_hosts
        .iter()
        .map(|rule| OutboundRule::parse(rule).map_err(anyhow::Error::msg))
        .collect::<Result<Vec<_>>>()
        .context("`allowed_outbound_hosts`")?;
    Ok(RouteSpec {
        pattern,
        component: base.join(&route.component),
        limits: RouteLimits {
            timeout: route.timeout,
            max_memory: route.max_memory,
            max_body_size: route.max_body_size,
            max_instance_reuse: route.max_instance_reuse,
            idle_instance_timeout: route.idle_instance_timeout,
        },
        env: route.env.into_iter().collect(),
        outbound,
    })
}

/// 1-based line number of a byte span's start.
fn line_of(text: &str, span: &Range<usize>) -> usize {
    text[..span.start.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest> {
        Manifest::parse(text, Path::new("/srv"))
    }

    fn error(text: &str) -> String {
        format!("{:#}", parse(text).unwrap_err())
    }

    #[test]
    fn parses_routes_and_settings() {
        let m = parse(
            r#"
[[route]]
path = "/..."
component = "hello.wasm"

[[route]]
path = "/api/..."
component = "sub/api.wasm"
timeout = "2s"
max_memory = "64MiB"
max_body_size = 1024
max_instance_reuse = 50
idle_instance_timeout = "250ms"
env = { GREETING = "hi" }
allowed_outbound_hosts = ["http://127.0.0.1:8080"]
"#,
        )
        .unwrap();
        assert_eq!(m.routes.len(), 2);
        assert_eq!(m.routes[0].component, PathBuf::from("/srv/hello.wasm"));
        let api = &m.routes[1];
        assert_eq!(api.pattern, Pattern::Prefix("/api".into()));
        assert_eq!(api.component, PathBuf::from("/srv/sub/api.wasm"));
        assert_eq!(api.limits.timeout, Some(Duration::from_secs(2)));
        assert_eq!(api.limits.max_memory, Some(64 << 20));
        assert_eq!(api.limits.max_body_size, Some(1024));
        assert_eq!(api.limits.max_instance_reuse, Some(50));
        assert_eq!(
            api.limits.idle_instance_timeout,
            Some(Duration::from_millis(250))
        );
        assert_eq!(m.routes[0].limits.max_instance_reuse, None);
        assert_eq!(api.env, vec![("GREETING".to_string(), "hi".to_string())]);
        assert_eq!(api.outbound.len(), 1);
    }

    #[test]
    fn unknown_keys_name_the_line() {
        let e = error("[[route]]\npath = \"/\"\ncomponent = \"a.wasm\"\ncompnent = \"b\"\n");
        assert!(e.contains("line 4"), "{e}");
        assert!(e.contains("unknown field `compnent`"), "{e}");
        let e = error("[routes]\n");
        assert!(e.contains("unknown field `routes`"), "{e}");
    }

    #[test]
    fn missing_fields_and_bad_values_are_errors() {
        assert!(error("[[route]]\npath = \"/\"\n").contains("missing field `component`"));
        let e = error("[[route]]\npath = \"nope\"\ncomponent = \"a.wasm\"\n");
        assert!(
            e.contains("route at line 1") && e.contains("must start with `/`"),
            "{e}"
        );
        let e = error("[[route]]\npath = \"/\"\ncomponent = \"a.wasm\"\ntimeout = \"soon\"\n");
        assert!(e.contains("line 4"), "{e}");
        assert!(error("").contains("no routes"));
        assert!(error("[[route]\n").contains("line 1"));
    }

    #[test]
    fn reuse_keys_are_checked() {
        let e = error("[[route]]\npath = \"/\"\ncomponent = \"a.wasm\"\nmax_instance_reuse = 0\n");
        assert!(
            e.contains("route at line 1") && e.contains("max_instance_reuse"),
            "{e}"
        );
        let e = error("[[route]]\npath = \"/\"\ncomponent = \"a.wasm\"\nmax_instance_reuse = -3\n");
        assert!(e.contains("line 4"), "{e}");
        let e = error(
            "[[route]]\npath = \"/\"\ncomponent = \"a.wasm\"\nidle_instance_timeout = \"later\"\n",
        );
        assert!(e.contains("line 4"), "{e}");
    }

    #[test]
    fn duplicate_routes_are_errors() {
        let e = error(
            "[[route]]\npath = \"/a\"\ncomponent = \"a.wasm\"\n[[route]]\npath = \"/a\"\ncomponent = \"b.wasm\"\n",
        );
        assert!(e.contains("duplicate route `/a`"), "{e}");
    }

    #[test]
    fn bad_outbound_rules_are_errors() {
        let e = error(
            "[[route]]\npath = \"/\"\ncomponent = \"a.wasm\"\nallowed_outbound_hosts = [\"ftp://x\"]\n",
        );
        assert!(e.contains("allowed_outbound_hosts"), "{e}");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// A TOML basic string holding `text`.
    fn quoted(text: &str) -> String {
        let mut out = String::from("\"");
        for c in text.chars() {
            match c {
                '"' | '\\' => {
                    out.push('\\');
                    out.push(c);
                }
                c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    /// One `[[route]]` table: known keys with values drawn from valid and
    /// broken ones, sometimes an unknown key.
    fn size() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "1",
                "64MiB",
                "1KiB",
                "0",
                "-1",
                "1e3",
                "99999999999TiB"
            ])
            .prop_map(String::from),
            ".*",
        ]
    }

    fn route_table() -> impl Strategy<Value = String> {
        let path = prop_oneof![
            prop::sample::select(vec![
                "/", "/...", "/a", "/a/...", "/a/.../b", "a", "/a*", ""
            ])
            .prop_map(String::from),
            "/[a-z./%]{0,12}",
            ".*",
        ];
        let duration = prop_oneof![
            prop::sample::select(vec!["5s", "250ms", "0s", "soon", "1y"]).prop_map(String::from),
            ".*",
        ];
        let outbound = prop_oneof![
            prop::sample::select(vec![
                "http://127.0.0.1:8080",
                "https://*.example.com",
                "http://[::1]",
                "http://*:*",
                "ftp://x",
                "",
            ])
            .prop_map(String::from),
            ".*",
        ];
        (
            path,
            ".{0,8}",
            prop::option::of(duration),
            prop::option::of(size()),
            prop::option::of(size()),
            prop::collection::vec(outbound, 0..3),
            prop::option::of("[a-z_]{1,8}"),
        )
            .prop_map(
                |(path, component, timeout, memory, body, outbound, unknown)| {
                    let mut table = format!(
                        "[[route]]\npath = {}\ncomponent = {}\n",
                        quoted(&path),
                        quoted(&component)
                    );
                    for (key, value) in [
                        ("timeout", timeout),
                        ("max_memory", memory),
                        ("max_body_size", body),
                    ] {
                        if let Some(value) = value {
                            table.push_str(&format!("{key} = {}\n", quoted(&value)));
                        }
                    }
                    let rules: Vec<String> = outbound.iter().map(|r| quoted(r)).collect();
                    table.push_str(&format!(
                        "allowed_outbound_hosts = [{}]\n",
                        rules.join(", ")
                    ));
                    if let Some(key) = unknown {
                        table.push_str(&format!("{key} = 1\n"));
                    }
                    table
                },
            )
    }

    proptest! {
        /// Any text: a manifest or an error, never a panic.
        #[test]
        fn arbitrary_text_never_panics(text in ".*") {
            let _ = Manifest::parse(&text, Path::new("/srv"));
        }

        /// Manifests that are close to valid: either every route parses, in
        /// order, with a router that accepts them all, or the error names
        /// a line.
        #[test]
        fn near_valid_manifests_parse_or_name_a_line(tables in prop::collection::vec(route_table(), 1..4)) {
            let text = tables.concat();
            match Manifest::parse(&text, Path::new("/srv")) {
                Ok(manifest) => {
                    prop_assert_eq!(manifest.routes.len(), tables.len());
                    let router = Router::new(manifest.routes.iter().map(|r| (r.pattern.clone(), ())));
                    prop_assert!(router.is_ok());
                }
                Err(e) => {
                    let e = format!("{e:#}");
                    prop_assert!(e.contains("line ") || e.contains("duplicate route"), "{}", e);
                }
            }
        }
    }
}
