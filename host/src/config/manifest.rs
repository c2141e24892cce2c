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
//! canary = { component = "hello-v2.wasm", weight = 10 }   # see `canary`; optional
//!                                 # `version_header = true` adds x-wasmlet-version
//! sticky = "header:x-user"        # or "cookie:NAME"; needs a canary
//! rollback = { max_error_rate = 0.05, min_requests = 200, window = "1m" }
//! key_value_stores = ["default"]  # the stores it may open (see `keyvalue`)
//! config = { greeting = "hi", api_key = { file = "/etc/secrets/api-key" } }
//!                                 # wasi:config; or { env = "NAME" } (see `secret`)
//!
//! [[route]]
//! path = "/api/..."
//! component = "oci://ghcr.io/acme/api:v2"  # or @sha256:… (see `oci`)
//! follow = "30s"                  # re-resolve the tag at this interval
//! cosign_key = "keys/cosign.pub"  # serve only what this key signed
//! ```
//!
//! Unknown keys are errors, and every error names the file and the line.

use crate::config::canary::{CanaryFile, CanarySpec, RollbackFile, RollbackPolicy, Sticky};
use crate::config::keyvalue::{self, DEFAULT_STORE, StoreFile, StoreSpec};
use crate::config::limits::{self, RouteLimits};
use crate::config::outbound::OutboundRule;
use crate::config::router::{Pattern, Router};
use crate::config::secret::{Secret, Source, SourceFile};
use crate::oci::OciRef;
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
    /// `[key_value_store.NAME]` tables
    #[serde(default)]
    key_value_store: BTreeMap<String, toml::Spanned<StoreFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteFile {
    /// `path = "/api/..."`
    path: String,
    /// `component = "api.wasm"` or `"oci://REGISTRY/REPO:TAG"` (or `@sha256:HEX`);
    /// optional only to say what a canary lacks
    component: Option<PathBuf>,
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
    /// `max_concurrent_reuse = 16` (wasi:http 0.3 handlers: requests one
    /// instance runs at once; at least 1)
    #[serde(default)]
    max_concurrent_reuse: Option<u32>,
    /// `idle_instance_timeout = "1s"`
    #[serde(default, deserialize_with = "limits::duration_opt")]
    idle_instance_timeout: Option<Duration>,
    /// `env = { NAME = "value" }`
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// `follow = "30s"` (an `oci://…:TAG` component only)
    #[serde(default, deserialize_with = "limits::duration_opt")]
    follow: Option<Duration>,
    /// `allowed_outbound_hosts = ["https://api.example.com"]`
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    /// `canary = { component = "api-v2.wasm", weight = 10 }`
    canary: Option<toml::Spanned<CanaryFile>>,
    /// `sticky = "header:x-user"` or `"cookie:NAME"`
    sticky: Option<toml::Spanned<String>>,
    /// `rollback = { max_error_rate = 0.05, min_requests = 200, window = "1m" }`
    rollback: Option<toml::Spanned<RollbackFile>>,
    /// `cosign_key = "cosign.pub"` (an `oci://` component only)
    cosign_key: Option<PathBuf>,
    /// `key_value_stores = ["default"]`
    key_value_stores: Option<toml::Spanned<Vec<String>>>,
    /// `config = { k = "v", k2 = { file = "PATH" }, k3 = { env = "NAME" } }`
    config: Option<BTreeMap<String, toml::Spanned<toml::Value>>>,
}

/// The shortest `follow` interval: one manifest HEAD per route per second.
pub const MIN_FOLLOW: Duration = Duration::from_secs(1);

/// One validated route.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteSpec {
    pub pattern: Pattern,
    /// The component's path, resolved against the manifest's folder, or
    /// the `oci://` reference as written.
    pub component: PathBuf,
    /// Set when `component` is an `oci://` reference.
    pub oci: Option<OciRef>,
    /// How often to ask the registry whether the tag moved.
    pub follow: Option<Duration>,
    /// The cosign public key whose signature the component needs,
    /// resolved against the manifest's folder.
    pub cosign_key: Option<PathBuf>,
    pub limits: RouteLimits,
    pub env: Vec<(String, String)>,
    pub outbound: Vec<OutboundRule>,
    /// A second version taking a share of the requests.
    pub canary: Option<CanarySpec>,
    /// The key-value stores this route may open (wasi:keyvalue), each
    /// declared in the manifest or `default`; empty: none.
    pub key_value_stores: Vec<String>,
    /// wasi:config variables; `None`: wasi:config is not granted.
    pub config: Option<Vec<ConfigVar>>,
}

/// One wasi:config variable of a route. Its value is a [`Secret`]: only
/// the name and where it came from can be printed.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigVar {
    pub name: String,
    pub source: Source,
    pub value: Secret,
}

impl RouteSpec {
    /// The route `wasmlet serve COMPONENT.wasm` serves: every path.
    pub fn catch_all(component: PathBuf) -> RouteSpec {
        RouteSpec {
            pattern: Pattern::Prefix(String::new()),
            component,
            oci: None,
            follow: None,
            cosign_key: None,
            limits: RouteLimits::default(),
            env: Vec::new(),
            outbound: Vec::new(),
            canary: None,
            key_value_stores: Vec::new(),
            config: None,
        }
    }
}

/// A validated manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub routes: Vec<RouteSpec>,
    /// Every declared store, and `default` (a `file` store unless
    /// declared otherwise).
    pub key_value_stores: BTreeMap<String, StoreSpec>,
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
        let mut stores = BTreeMap::new();
        for (name, spanned) in file.key_value_store {
            let line = line_of(text, &spanned.span());
            let spec = keyvalue::validate_store(&name, spanned.into_inner(), base)
                .with_context(|| format!("line {line}: [key_value_store.{name}]"))?;
            stores.insert(name, spec);
        }
        let stores = keyvalue::with_default(stores);
        let mut routes: Vec<RouteSpec> = Vec::with_capacity(file.route.len());
        let mut lines = Vec::with_capacity(file.route.len());
        for spanned in file.route {
            let line = line_of(text, &spanned.span());
            let route = spanned.into_inner();
            let spec = validate_route(route, base, text, &stores)
                .with_context(|| format!("route at line {line}"))?;
            if let Some(first) = routes.iter().position(|r| r.pattern == spec.pattern) {
                bail!(
                    "duplicate route `{}`: at line {} and at line {line}",
                    spec.pattern,
                    lines[first]
                );
            }
            routes.push(spec);
            lines.push(line);
        }
        Router::new(routes.iter().map(|r| (r.pattern.clone(), ()))).map_err(anyhow::Error::msg)?;
        Ok(Manifest {
            routes,
            key_value_stores: stores,
        })
    }

    /// The one-route manifest of `wasmlet serve COMPONENT`, granting what
    /// its flags grant. `COMPONENT` is a file or, as in a manifest, an
    /// `oci://` reference.
    pub fn single(component: &Path, grants: &OneFileGrants) -> Result<Manifest> {
        let oci = match component.to_str() {
            Some(text) if OciRef::is_oci(text) => Some(OciRef::parse(text).context("COMPONENT")?),
            _ => None,
        };
        let component = component.to_path_buf();
        Ok(Manifest {
            routes: vec![RouteSpec {
                oci,
                env: grants.env.clone(),
                outbound: grants.outbound.clone(),
                ..RouteSpec::catch_all(component)
            }],
            key_value_stores: keyvalue::with_default(BTreeMap::new()),
        })
    }
}

/// What `wasmlet serve COMPONENT.wasm` grants its one route, from its
/// flags: what a manifest's route says with `env` and
/// `allowed_outbound_hosts`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OneFileGrants {
    /// `--env NAME=VALUE`, in order (a later one of a name wins).
    pub env: Vec<(String, String)>,
    /// `--allowed-outbound-host URL`.
    pub outbound: Vec<OutboundRule>,
}

impl OneFileGrants {
    /// Nothing granted: what a route without `env` and
    /// `allowed_outbound_hosts` gets.
    pub fn is_empty(&self) -> bool {
        self.env.is_empty() && self.outbound.is_empty()
    }
}

fn validate_route(
    route: RouteFile,
    base: &Path,
    text: &str,
    stores: &BTreeMap<String, StoreSpec>,
) -> Result<RouteSpec> {
    let pattern = Pattern::parse(&route.path).map_err(anyhow::Error::msg)?;
    let (component, oci) = match route.component {
        Some(component) => component_ref(base, &component)?,
        None if route.canary.is_some() => {
            bail!("a canary needs a stable version: `component` is missing")
        }
        None => bail!("missing field `component`"),
    };
    if route.max_instance_reuse == Some(0) {
        bail!("`max_instance_reuse` must be at least 1 (1: a fresh instance per request)");
    }
    if route.max_concurrent_reuse == Some(0) {
        bail!("`max_concurrent_reuse` must be at least 1 (1: one request at a time per instance)");
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
    let canary = validate_canary(route.canary, route.sticky, route.rollback, base, text)?;
    let key_value_stores = validate_stores(route.key_value_stores, stores, text)?;
    let config = route
        .config
        .map(|config| validate_config(config, base, text))
        .transpose()?;
    if let Some(every) = route.follow {
        match &oci {
            Some(r) if r.pinned().is_none() => {}
            _ => {
                bail!("`follow` needs a tag reference (`component = \"oci://REGISTRY/REPO:TAG\"`)")
            }
        }
        if every < MIN_FOLLOW {
            bail!(
                "`follow` must be at least {}",
                humantime::format_duration(MIN_FOLLOW)
            );
        }
    }
    let any_oci = oci.is_some() || canary.as_ref().is_some_and(|c| c.oci.is_some());
    Ok(RouteSpec {
        pattern,
        component,
        follow: route.follow,
        cosign_key: match route.cosign_key {
            Some(_) if !any_oci => {
                bail!("`cosign_key` needs an `oci://` component (a local file is trusted as it is)")
            }
            Some(key) => Some(base.join(key)),
            None => None,
        },
        oci,
        limits: RouteLimits {
            timeout: route.timeout,
            max_memory: route.max_memory,
            max_body_size: route.max_body_size,
            max_instance_reuse: route.max_instance_reuse,
            max_concurrent_reuse: route.max_concurrent_reuse,
            idle_instance_timeout: route.idle_instance_timeout,
        },
        env: route.env.into_iter().collect(),
        outbound,
        canary,
        key_value_stores,
        config,
    })
}

/// `key_value_stores`: each a declared store or `default`, once.
fn validate_stores(
    names: Option<toml::Spanned<Vec<String>>>,
    stores: &BTreeMap<String, StoreSpec>,
    text: &str,
) -> Result<Vec<String>> {
    let Some(names) = names else {
        return Ok(Vec::new());
    };
    let line = line_of(text, &names.span());
    let names = names.into_inner();
    for (i, name) in names.iter().enumerate() {
        if !stores.contains_key(name) {
            keyvalue::check_name(name)
                .with_context(|| format!("line {line}: `key_value_stores`"))?;
            bail!(
                "line {line}: `key_value_stores`: no store `{name}`: declare [key_value_store.{name}] or use \"{DEFAULT_STORE}\""
            );
        }
        if names[..i].contains(name) {
            bail!("line {line}: `key_value_stores`: `{name}` is named twice");
        }
    }
    Ok(names)
}

/// `config`: each value a string, `{ file = "PATH" }` or `{ env = "NAME" }`,
/// read now; errors name the line and the key, never a value.
fn validate_config(
    config: BTreeMap<String, toml::Spanned<toml::Value>>,
    base: &Path,
    text: &str,
) -> Result<Vec<ConfigVar>> {
    config
        .into_iter()
        .map(|(name, value)| {
            let line = line_of(text, &value.span());
            let at = || format!("line {line}: `config.{name}`");
            if name.is_empty() {
                bail!("line {line}: `config`: a key may not be empty");
            }
            let (source, value) = match value.into_inner() {
                toml::Value::String(text) => (Source::Literal, Secret::new(text)),
                toml::Value::Table(table) => toml::Value::Table(table)
                    .try_into::<SourceFile>()
                    .map_err(|_| {
                        anyhow::anyhow!("must be {{ file = \"PATH\" }} or {{ env = \"NAME\" }}")
                    })
                    .and_then(|from| from.resolve(base))
                    .with_context(at)?,
                _ => bail!(
                    "{}: must be a string, {{ file = \"PATH\" }} or {{ env = \"NAME\" }}",
                    at()
                ),
            };
            Ok(ConfigVar {
                name,
                source,
                value,
            })
        })
        .collect()
}

/// A route's (or a canary's) `component`: an `oci://` reference as
/// written, or a path resolved against `base`.
fn component_ref(base: &Path, component: &Path) -> Result<(PathBuf, Option<OciRef>)> {
    if component.as_os_str().is_empty() {
        bail!("`component` is empty");
    }
    Ok(match component.to_str() {
        Some(text) if OciRef::is_oci(text) => (
            component.to_path_buf(),
            Some(OciRef::parse(text).context("`component`")?),
        ),
        _ => (base.join(component), None),
    })
}

/// `canary`, `sticky` and `rollback`; each error names its own line.
fn validate_canary(
    canary: Option<toml::Spanned<CanaryFile>>,
    sticky: Option<toml::Spanned<String>>,
    rollback: Option<toml::Spanned<RollbackFile>>,
    base: &Path,
    text: &str,
) -> Result<Option<CanarySpec>> {
    let at = |span: Range<usize>| line_of(text, &span);
    let Some(canary) = canary else {
        if let Some(key) = sticky
            .as_ref()
            .map(|s| ("sticky", at(s.span())))
            .or_else(|| rollback.as_ref().map(|r| ("rollback", at(r.span()))))
        {
            bail!("line {}: `{}` needs a `canary`", key.1, key.0);
        }
        return Ok(None);
    };
    let line = at(canary.span());
    let file = canary.into_inner();
    let weight = u8::try_from(file.weight)
        .ok()
        .filter(|w| *w <= 100)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "line {line}: canary `weight` must be between 0 and 100 (percent), not {}",
                file.weight
            )
        })?;
    let (component, oci) =
        component_ref(base, &file.component).with_context(|| format!("line {line}: canary"))?;
    let sticky = sticky
        .map(|s| {
            let line = at(s.span());
            Sticky::parse(s.get_ref()).with_context(|| format!("line {line}"))
        })
        .transpose()?;
    let rollback = rollback
        .map(|r| {
            let line = at(r.span());
            RollbackPolicy::validate(r.into_inner())
                .with_context(|| format!("line {line}: `rollback`"))
        })
        .transpose()?;
    Ok(Some(CanarySpec {
        component,
        oci,
        weight,
        sticky,
        rollback,
        version_header: file.version_header,
    }))
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
    fn oci_references() {
        let m = parse("[[route]]\npath = \"/\"\ncomponent = \"oci://127.0.0.1:5000/hello:v1\"\n")
            .unwrap();
        let route = &m.routes[0];
        assert_eq!(
            route.component,
            PathBuf::from("oci://127.0.0.1:5000/hello:v1")
        );
        assert_eq!(route.oci.as_ref().unwrap().reference.tag(), Some("v1"));
        let m = parse(
            "[[route]]\npath = \"/\"\ncomponent = \"oci://ghcr.io/a/b:v1\"\nfollow = \"30s\"\n",
        )
        .unwrap();
        assert_eq!(m.routes[0].follow, Some(Duration::from_secs(30)));
        for (component, follow, expected) in [
            ("a.wasm", "30s", "needs a tag reference"),
            (
                "oci://ghcr.io/a/b@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "30s",
                "needs a tag reference",
            ),
            ("oci://ghcr.io/a/b:v1", "10ms", "at least 1s"),
        ] {
            let e = error(&format!(
                "[[route]]\npath = \"/\"\ncomponent = \"{component}\"\nfollow = \"{follow}\"\n"
            ));
            assert!(e.contains(expected), "{e}");
        }
        let e = error("[[route]]\npath = \"/\"\ncomponent = \"a.wasm\"\ncosign_key = \"k.pub\"\n");
        assert!(e.contains("`cosign_key` needs an `oci://`"), "{e}");
        let m = parse("[[route]]\npath = \"/\"\ncomponent = \"oci://ghcr.io/a/b:v1\"\ncosign_key = \"k.pub\"\n")
            .unwrap();
        assert_eq!(m.routes[0].cosign_key, Some(PathBuf::from("/srv/k.pub")));
        let e = error("[[route]]\npath = \"/\"\ncomponent = \"oci://ghcr.io/hello\"\n");
        assert!(
            e.contains("route at line 1") && e.contains("`component`") && e.contains("no tag"),
            "{e}"
        );
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
        assert!(
            e.contains("line 1") && e.contains("line 4"),
            "both lines: {e}"
        );
        // The same pattern spelt twice is the same route.
        let e = error(
            "[[route]]\npath = \"/a/...\"\ncomponent = \"a.wasm\"\n\n[[route]]\npath = \"/b\"\ncomponent = \"b.wasm\"\n[[route]]\npath = \"/a/...\"\ncomponent = \"c.wasm\"\n",
        );
        assert!(
            e.contains("duplicate route `/a/...`: at line 1 and at line 8"),
            "{e}"
        );
    }

    const CANARY_ROUTE: &str = "[[route]]\npath = \"/\"\ncomponent = \"a.wasm\"\n";

    #[test]
    fn parses_a_canary() {
        let m = parse(&format!(
            "{CANARY_ROUTE}canary = {{ component = \"b.wasm\", weight = 10 }}\nsticky = \"cookie:user\"\nrollback = {{ max_error_rate = 0.05, min_requests = 200, window = \"1m\" }}\n"
        ))
        .unwrap();
        let canary = m.routes[0].canary.as_ref().unwrap();
        assert_eq!(canary.component, PathBuf::from("/srv/b.wasm"));
        assert_eq!(canary.weight, 10);
        assert_eq!(canary.sticky, Some(Sticky::Cookie("user".into())));
        let rollback = canary.rollback.unwrap();
        assert_eq!(rollback.min_requests, 200);
        assert_eq!(rollback.window, Duration::from_secs(60));
        assert!(!canary.version_header, "x-wasmlet-version is opt-in");
        let m = parse(&format!(
            "{CANARY_ROUTE}canary = {{ component = \"b.wasm\", weight = 10, version_header = true }}\n"
        ))
        .unwrap();
        assert!(m.routes[0].canary.as_ref().unwrap().version_header);
        for weight in [0, 100] {
            let m = parse(&format!(
                "{CANARY_ROUTE}canary = {{ component = \"b.wasm\", weight = {weight} }}\n"
            ))
            .unwrap();
            assert_eq!(m.routes[0].canary.as_ref().unwrap().weight, weight);
        }
    }

    #[test]
    fn bad_canaries_name_their_line() {
        let canary =
            |weight: &str| format!("canary = {{ component = \"b.wasm\", weight = {weight} }}\n");
        for (text, want) in [
            (
                format!("[[route]]\npath = \"/\"\n{}", canary("10")),
                "route at line 1: a canary needs a stable version",
            ),
            (
                format!("{CANARY_ROUTE}{}", canary("101")),
                "line 4: canary `weight` must be between 0 and 100",
            ),
            (
                format!("{CANARY_ROUTE}{}", canary("-1")),
                "line 4: canary `weight`",
            ),
            (format!("{CANARY_ROUTE}{}", canary("\"ten\"")), "line 4"),
            (
                format!("{CANARY_ROUTE}canary = {{ component = \"\", weight = 1 }}\n"),
                "line 4: canary: `component` is empty",
            ),
            (
                format!(
                    "{CANARY_ROUTE}canary = {{ component = \"b.wasm\", weight = 1, extra = 2 }}\n"
                ),
                "unknown field `extra`",
            ),
            (
                format!("{CANARY_ROUTE}sticky = \"header:x-user\"\n"),
                "line 4: `sticky` needs a `canary`",
            ),
            (
                format!("{CANARY_ROUTE}{}sticky = \"query:x\"\n", canary("5")),
                "line 5: `sticky` must be `header:NAME` or `cookie:NAME`",
            ),
            (
                format!(
                    "{CANARY_ROUTE}{}rollback = {{ max_error_rate = 5.0, min_requests = 200, window = \"1m\" }}\n",
                    canary("5")
                ),
                "line 5: `rollback`: `max_error_rate` must be between 0 and 1",
            ),
            (
                format!(
                    "{CANARY_ROUTE}{}rollback = {{ max_error_rate = 0.05, min_requests = 0, window = \"1m\" }}\n",
                    canary("5")
                ),
                "line 5: `rollback`: `min_requests` must be at least 1",
            ),
            (
                format!(
                    "{CANARY_ROUTE}{}rollback = {{ max_error_rate = 0.05, min_requests = 10, window = \"a while\" }}\n",
                    canary("5")
                ),
                "line 5: `rollback`: `window`",
            ),
            (
                format!(
                    "{CANARY_ROUTE}{}rollback = {{ max_error_rate = 0.05, min_requests = 10 }}\n",
                    canary("5")
                ),
                "missing field `window`",
            ),
        ] {
            let e = error(&text);
            assert!(e.contains(want), "{text}\n=> {e}");
        }
    }

    #[test]
    fn key_value_stores_and_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("api-key"), "s3cr3t-api-key\n").unwrap();
        let text = r#"
[key_value_store.cache]
type = "memory"
data = { hello = "world" }

[[route]]
path = "/"
component = "a.wasm"
key_value_stores = ["default", "cache"]
config = { greeting = "hi", api_key = { file = "api-key" }, home = { env = "PATH" } }

[[route]]
path = "/plain"
component = "b.wasm"
"#;
        let m = Manifest::parse(text, dir.path()).unwrap();
        assert_eq!(m.key_value_stores["default"], StoreSpec::File);
        assert_eq!(m.key_value_stores["cache"].kind(), "memory");
        let route = &m.routes[0];
        assert_eq!(route.key_value_stores, ["default", "cache"]);
        let config = route.config.as_ref().unwrap();
        let get = |name: &str| config.iter().find(|v| v.name == name).unwrap();
        assert_eq!(get("greeting").value.expose(), "hi");
        assert_eq!(get("greeting").source, Source::Literal);
        assert_eq!(get("api_key").value.expose(), "s3cr3t-api-key");
        assert_eq!(
            get("api_key").source,
            Source::File(dir.path().join("api-key"))
        );
        assert_eq!(get("home").source, Source::Env("PATH".into()));
        assert!(
            !format!("{m:?}").contains("s3cr3t"),
            "Debug prints a secret"
        );
        assert!(m.routes[1].key_value_stores.is_empty());
        assert!(
            m.routes[1].config.is_none(),
            "wasi:config is not granted by default"
        );
        let m = parse(&format!("{CANARY_ROUTE}config = {{}}\n")).unwrap();
        assert_eq!(m.routes[0].config, Some(Vec::new()));
        let m = parse("[key_value_store.default]\ntype = \"memory\"\n[[route]]\npath = \"/\"\ncomponent = \"a.wasm\"\n").unwrap();
        assert_eq!(m.key_value_stores.len(), 1);
        assert_eq!(m.key_value_stores["default"].kind(), "memory");
    }

    #[test]
    fn bad_stores_and_config_name_their_line() {
        for (text, want) in [
            (
                format!("{CANARY_ROUTE}key_value_stores = [\"cache\"]\n"),
                "line 4: `key_value_stores`: no store `cache`: declare [key_value_store.cache]",
            ),
            (
                format!("{CANARY_ROUTE}key_value_stores = [\"default\", \"default\"]\n"),
                "line 4: `key_value_stores`: `default` is named twice",
            ),
            (
                format!("{CANARY_ROUTE}key_value_stores = [\"\"]\n"),
                "line 4: `key_value_stores`: a store name may not be empty",
            ),
            (
                format!("{CANARY_ROUTE}key_value_stores = \"default\"\n"),
                "line 4",
            ),
            (
                format!("{CANARY_ROUTE}\n[key_value_store.x]\ntype = \"disk\"\n"),
                "line 5: [key_value_store.x]: `type` must be",
            ),
            (
                format!("[key_value_store.x]\ntype = \"file\"\nttl = 3\n{CANARY_ROUTE}"),
                "unknown field `ttl`",
            ),
            (
                format!("{CANARY_ROUTE}config = {{ n = 3 }}\n"),
                "line 4: `config.n`: must be a string",
            ),
            (
                format!("{CANARY_ROUTE}config = {{ k = {{ file = \"x\", env = \"Y\" }} }}\n"),
                "line 4: `config.k`: must be { file",
            ),
            (
                format!("{CANARY_ROUTE}config = {{ k = {{ path = \"x\" }} }}\n"),
                "line 4: `config.k`: must be { file",
            ),
            (
                format!(
                    "{CANARY_ROUTE}\nconfig = {{ k = {{ file = \"/nonexistent/secret\" }} }}\n"
                ),
                "line 5: `config.k`: cannot read `/nonexistent/secret`",
            ),
            (
                format!(
                    "{CANARY_ROUTE}config = {{ k = {{ env = \"WASMLET_TEST_SURELY_UNSET_VAR\" }} }}\n"
                ),
                "line 4: `config.k`: environment variable `WASMLET_TEST_SURELY_UNSET_VAR` is not set",
            ),
        ] {
            let e = error(&text);
            assert!(e.contains(want), "{text}\n=> {e}");
        }
    }

    #[test]
    fn a_secret_never_appears_in_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "s3cr3t-pw").unwrap();
        // A later error in the same route must not carry the value read.
        let text = "[[route]]\npath = \"/\"\ncomponent = \"a.wasm\"\nconfig = { k = { file = \"pw\" } }\ntimeout = \"soon\"\n";
        let e = format!("{:#}", Manifest::parse(text, dir.path()).unwrap_err());
        assert!(!e.contains("s3cr3t"), "{e}");
        let text = "[key_value_store.r]\ntype = \"redis\"\nurl = \"redis://x\"\npassword = { file = \"pw\" }\n[[route]]\npath = \"/\"\ncomponent = \"a.wasm\"\nkey_value_stores = [\"r\", \"nope\"]\n";
        let e = format!("{:#}", Manifest::parse(text, dir.path()).unwrap_err());
        assert!(
            e.contains("no store `nope`") && !e.contains("s3cr3t"),
            "{e}"
        );
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
