//! The command line. The `///` docs below are the `--help` text; every flag
//! that configures the server also reads an environment variable so the
//! container image and Kubernetes manifests can set it.

use crate::config::limits::{Limits, parse_bytes};
use crate::config::outbound::OutboundRule;
use crate::observe::logging::LogFormat;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A serverless-style host for wasi:http WebAssembly components.
///
/// Each request runs in a fresh, isolated instance of the component its
/// route names. Handlers can be swapped on a running server.
#[derive(Debug, Parser)]
#[command(name = "wasmlet", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at start-up; boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve one component for every path, or a manifest of routes.
    Serve(ServeArgs),
    /// Validate a component and print its digest, imports and exports.
    Check(CheckArgs),
    /// Push a component to an OCI registry (CNCF wasm layout) and print
    /// its manifest digest, for `component = "oci://…@DIGEST"`.
    Push(PushArgs),
    /// Start a handler: write folder NAME with the guide's hello app, its
    /// build files, `wit/` and a `wasmlet.toml`, then print the commands that
    /// build and serve it.
    New(NewArgs),
    /// Internal: compile the component on stdin, write the artifact to
    /// stdout (the host runs this in a child process).
    #[command(hide = true)]
    Precompile,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["component", "config"]))]
#[command(
    after_help = "Traces: OpenTelemetry spans over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set; \
                  OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER and \
                  OTEL_TRACES_SAMPLER_ARG as the OpenTelemetry spec says (docs/operations.md, \"Tracing\")."
)]
pub struct ServeArgs {
    /// The component to serve on every path (`/...`): a file, or an
    /// `oci://REGISTRY/REPO:TAG` (or `@sha256:…`) reference, as in a manifest.
    pub component: Option<PathBuf>,

    /// A manifest (`wasmlet.toml`) listing routes and their components.
    #[arg(long, short = 'c', env = "WASMLET_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address the public HTTP server listens on.
    #[arg(long, env = "WASMLET_LISTEN", default_value = "127.0.0.1:5000")]
    pub listen: SocketAddr,

    /// Address of the admin server (health, readiness, metrics, handlers,
    /// reload). Must differ from --listen.
    #[arg(long, env = "WASMLET_ADMIN_LISTEN", default_value = "127.0.0.1:9090")]
    pub admin_listen: SocketAddr,

    #[command(flatten)]
    pub grants: OneFileArgs,

    #[command(flatten)]
    pub cache: CacheArgs,

    /// Do not watch the manifest and components for changes (reload only on
    /// SIGHUP or POST /reload).
    #[arg(long, env = "WASMLET_NO_WATCH")]
    pub no_watch: bool,

    /// How long to wait, after SIGTERM or SIGINT, for requests in flight
    /// before interrupting them. Fits Kubernetes' default 30 s grace period.
    #[arg(long, env = "WASMLET_DRAIN_TIMEOUT", default_value = "25s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    #[command(flatten)]
    pub limits: Limits,

    #[command(flatten)]
    pub net: NetLimits,

    #[command(flatten)]
    pub tls: TlsArgs,

    #[command(flatten)]
    pub load: LoadLimits,

    #[command(flatten)]
    pub log: LogArgs,
}

/// TLS on the public port (see `http::tls`); the admin port stays clear
/// text on its own address.
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// The public port's certificate chain (PEM, leaf first: a Kubernetes
    /// TLS Secret's `tls.crt`). With --tls-key, the port speaks TLS only,
    /// HTTP/2 or HTTP/1.1 by ALPN. Reloaded when the file changes; a new
    /// pair that does not load is refused and the old one keeps serving.
    #[arg(long, env = "WASMLET_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1; a
    /// Secret's `tls.key`). Reloaded with the certificate.
    #[arg(long, env = "WASMLET_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The certificate and key files, if TLS is on; both or neither.
    pub fn pair(&self) -> Result<Option<(&Path, &Path)>, &'static str> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some((cert.as_path(), key.as_path()))),
            (None, None) => Ok(None),
            (Some(_), None) => Err("--tls-cert needs --tls-key (the certificate's private key)"),
            (None, Some(_)) => Err("--tls-key needs --tls-cert (the certificate it belongs to)"),
        }
    }
}

/// What `wasmlet serve COMPONENT.wasm` grants its component, with
/// `wasmtime serve`'s flag names; a manifest grants per route instead.
#[derive(Debug, Clone, Default, Args)]
pub struct OneFileArgs {
    /// An environment variable the component sees: `NAME=VALUE`, or `NAME`
    /// for the value it has here. Repeatable. Only with COMPONENT.wasm
    /// (a manifest's route says `env = { NAME = "VALUE" }`).
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = parse_env_var)]
    pub env: Vec<(String, String)>,

    /// A host the component may send requests to,
    /// `scheme://host[:port]` (`*` wildcards as in a manifest's
    /// `allowed_outbound_hosts`). Repeatable. Only with COMPONENT.wasm.
    #[arg(long = "allowed-outbound-host", value_name = "URL", value_parser = parse_outbound_rule)]
    pub allowed_outbound_hosts: Vec<OutboundRule>,
}

/// `--env NAME=VALUE`, or `NAME` for this process's value of it.
fn parse_env_var(text: &str) -> Result<(String, String), String> {
    let (name, value) = match text.split_once('=') {
        Some((name, value)) => (name, value.to_string()),
        None => (
            text,
            std::env::var(text)
                .map_err(|_| format!("`{text}` is not set here (give `{text}=VALUE`)"))?,
        ),
    };
    if name.is_empty() || name.contains('\0') || value.contains('\0') {
        return Err(format!("`{text}`: expected NAME=VALUE"));
    }
    Ok((name.to_string(), value))
}

/// `--allowed-outbound-host`: a manifest's `allowed_outbound_hosts` entry.
fn parse_outbound_rule(text: &str) -> Result<OutboundRule, String> {
    OutboundRule::parse(text)
}

/// What a client connection may hold, and whom the admin port answers
/// (see the `connection` and `admin` modules).
#[derive(Debug, Clone, Args)]
pub struct NetLimits {
    /// How long writes to a client may make no progress (a client that
    /// stops reading its responses) before its connection is closed, on
    /// both ports. Also each connection's TCP_USER_TIMEOUT, which bounds
    /// unacknowledged bytes the kernel still holds.
    #[arg(long, env = "WASMLET_WRITE_TIMEOUT", default_value = "30s", value_parser = parse_nonzero_duration)]
    pub write_timeout: Duration,

    /// Slowest request body accepted, in bytes per second: after a 5 s
    /// grace, the time the host spends waiting for body bytes may not
    /// exceed what this rate allows for the bytes received. Slower: 408,
    /// and the request's slot is freed. `0` turns the check off.
    #[arg(long, env = "WASMLET_MIN_BODY_RATE", default_value = "16KiB", value_parser = crate::config::limits::parse_bytes)]
    pub min_body_rate: u64,

    /// Host names the admin port answers to, besides IP addresses and
    /// `localhost` (comma-separated). Any other `Host` gets 421, so a web
    /// page cannot reach the admin port through DNS rebinding.
    #[arg(
        long,
        env = "WASMLET_ADMIN_ALLOWED_HOSTS",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub admin_allowed_hosts: Vec<String>,

    /// A file holding the token every admin POST (/reload, promote, abort)
    /// must send as `Authorization: Bearer TOKEN` (401 otherwise); read
    /// once at start, surrounding whitespace dropped. GETs (probes,
    /// /metrics, /handlers) need none.
    #[arg(long, env = "WASMLET_ADMIN_TOKEN_FILE", value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// Never add `x-wasmlet-version: stable|canary`, even on routes whose
    /// canary sets `version_header = true` (it is off by default).
    #[arg(long, env = "WASMLET_NO_VERSION_HEADER")]
    pub no_version_header: bool,

    /// Requests one HTTP/2 connection may have in progress at once on the
    /// public port (SETTINGS_MAX_CONCURRENT_STREAMS); a client opening
    /// more gets them refused. --max-in-flight still caps all requests.
    #[arg(long, env = "WASMLET_HTTP2_MAX_CONCURRENT_STREAMS", default_value_t = DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS, value_parser = clap::value_parser!(u32).range(1..))]
    pub http2_max_concurrent_streams: u32,
}

/// `--http2-max-concurrent-streams`'s default: the least RFC 9113 section
/// 6.5.2 recommends, half hyper's own 200.
pub const DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS: u32 = 100;

impl Default for NetLimits {
    fn default() -> Self {
        NetLimits {
            write_timeout: Duration::from_secs(30),
            min_body_rate: 16 << 10,
            admin_allowed_hosts: Vec::new(),
            admin_token_file: None,
            no_version_header: false,
            http2_max_concurrent_streams: DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS,
        }
    }
}

/// Where compiled components and pulled `oci://` blobs are kept, and how
/// much of them (see the `cache` and `cache_budget` modules).
#[derive(Debug, Clone, Args)]
pub struct CacheArgs {
    /// Directory for compiled components, keyed by the wasm's sha256 and
    /// the engine's settings, and for pulled `oci://` components. Without
    /// it every start compiles again. It must be owned by the host's user
    /// and not writable by others: otherwise the compile cache is disabled
    /// and `oci://` components are refused.
    #[arg(long, env = "WASMLET_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    // The default fits the Deployment's 256Mi emptyDir with room for one
    // more Python handler, ~55 MB compiled and pulled, written before the
    // next prune: past the emptyDir's sizeLimit kubelet evicts the pod.
    /// Most bytes kept under --cache-dir: compiled components and pulled
    /// blobs together, as allocated on disk. Past it the least recently used are removed, but
    /// never what the serving handlers use (then the cap gives way, with a
    /// warning). `0`: no cap.
    #[arg(long, env = "WASMLET_CACHE_MAX_SIZE", default_value = "192MiB", value_parser = parse_bytes)]
    pub cache_max_size: u64,
}

impl Default for CacheArgs {
    fn default() -> Self {
        CacheArgs {
            cache_dir: None,
            cache_max_size: DEFAULT_CACHE_MAX_SIZE,
        }
    }
}

/// `--cache-max-size`'s default, in bytes.
pub const DEFAULT_CACHE_MAX_SIZE: u64 = 192 << 20;

/// Bounds on the work one load (start-up or reload) may do.
#[derive(Debug, Clone, Args)]
pub struct LoadLimits {
    /// Largest component file accepted; a larger one fails its load before
    /// it is read. Python handlers (componentize-py) are about 18 MB.
    #[arg(long, env = "WASMLET_MAX_COMPONENT_SIZE", default_value = "64MiB", value_parser = parse_bytes)]
    pub max_component_size: u64,

    /// Longest a reload may spend compiling one component. Past it the
    /// reload fails and the serving version stays; the compile cannot be
    /// interrupted, so it finishes in the background, is discarded, and
    /// the next compile waits for it. Start-up loads are not timed.
    #[arg(long, env = "WASMLET_COMPILE_TIMEOUT", default_value = "120s", value_parser = humantime::parse_duration)]
    pub compile_timeout: Duration,

    /// Longest one attempt to pull an `oci://` component may take (its
    /// manifest and layer); a failed attempt is retried twice with backoff.
    #[arg(long, env = "WASMLET_PULL_TIMEOUT", default_value = "60s", value_parser = parse_nonzero_duration)]
    pub pull_timeout: Duration,

    /// Longest one reload (or the start-up load) may take, from its
    /// trigger to its outcome: waiting for the reload before it, pulls,
    /// compiles and trial instantiations included. Past it the reload
    /// fails and the serving version stays.
    #[arg(long, env = "WASMLET_RELOAD_TIMEOUT", default_value = "10m", value_parser = parse_nonzero_duration)]
    pub reload_timeout: Duration,

    #[command(flatten)]
    pub registry: RegistryArgs,

    /// Directory for the `file` key-value stores (`default` is one unless
    /// the manifest declares it otherwise). Without it a route granted a
    /// `file` store fails its load; routes that use no store are
    /// unaffected.
    #[arg(long, env = "WASMLET_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

impl Default for LoadLimits {
    fn default() -> Self {
        LoadLimits {
            max_component_size: 64 << 20,
            compile_timeout: Duration::from_secs(120),
            pull_timeout: Duration::from_secs(60),
            reload_timeout: Duration::from_secs(600),
            registry: RegistryArgs::default(),
            data_dir: None,
        }
    }
}

/// How OCI registries are reached (see the `oci` module). Credentials come
/// from the Docker config in $DOCKER_CONFIG (default ~/.docker).
#[derive(Debug, Clone, Default, Args)]
pub struct RegistryArgs {
    /// A registry (HOST:PORT) reached over plain HTTP instead of HTTPS.
    /// Repeatable; comma-separated in the environment variable.
    #[arg(
        long = "insecure-registry",
        env = "WASMLET_INSECURE_REGISTRIES",
        value_delimiter = ',',
        value_name = "HOST:PORT"
    )]
    pub insecure_registries: Vec<String>,
}

/// `wasmlet new [--lang LANG] NAME`. Both are checked by the command, not
/// by clap, so a bad one is a single `error:` line like every other.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// The language of the handler: `rust`, `python` or `javascript`.
    #[arg(long, default_value = "rust", value_name = "LANG")]
    pub lang: String,

    /// The handler's name: the folder made in the current directory, its
    /// package and its component. Lowercase letters, digits and single
    /// hyphens, starting with a letter (`my-handler`).
    pub name: String,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The component to push.
    pub component: PathBuf,

    /// Where to: oci://REGISTRY/REPOSITORY:TAG.
    pub reference: String,

    #[command(flatten)]
    pub registry: RegistryArgs,

    #[command(flatten)]
    pub log: LogArgs,
}

/// A duration above zero: a zero timeout would close every connection.
fn parse_nonzero_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("must be more than 0".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["component", "config"]))]
pub struct CheckArgs {
    /// The component to validate.
    pub component: Option<PathBuf>,

    /// A manifest to validate as `serve --config` loads it at start-up:
    /// every route's component (`oci://` ones pulled into --cache-dir, or
    /// found there), limits, canaries, key-value stores and config values.
    /// Prints one summary per route; binds nothing.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The limits to validate against, as `serve` takes them.
    #[command(flatten)]
    pub limits: Limits,

    #[command(flatten)]
    pub load: LoadLimits,

    #[command(flatten)]
    pub cache: CacheArgs,

    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log format; the level comes from RUST_LOG (default `info`).
    #[arg(long, env = "WASMLET_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_needs_a_component_or_a_config() {
        assert!(Cli::try_parse_from(["wasmlet", "serve"]).is_err());
        let cli = Cli::try_parse_from(["wasmlet", "serve", "x.wasm"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("expected serve")
        };
        assert_eq!(args.listen, "127.0.0.1:5000".parse().unwrap());
        assert_eq!(args.admin_listen, "127.0.0.1:9090".parse().unwrap());
        assert_eq!(args.drain_timeout, Duration::from_secs(25));
        assert_eq!(
            args.load.max_component_size,
            LoadLimits::default().max_component_size
        );
        assert_eq!(
            args.load.compile_timeout,
            LoadLimits::default().compile_timeout
        );
        assert_eq!(args.net.write_timeout, NetLimits::default().write_timeout);
        assert_eq!(args.net.min_body_rate, NetLimits::default().min_body_rate);
        assert!(args.net.admin_allowed_hosts.is_empty());
        assert_eq!(args.net.admin_token_file, None);
        assert_eq!(
            args.load.reload_timeout,
            LoadLimits::default().reload_timeout
        );
        assert_eq!(args.cache.cache_max_size, DEFAULT_CACHE_MAX_SIZE);
        assert_eq!(args.cache.cache_max_size, 192 << 20);
    }

    #[test]
    fn cache_max_size_parses_units_and_zero() {
        let parse = |size: &str| {
            let cli =
                Cli::try_parse_from(["wasmlet", "serve", "x.wasm", "--cache-max-size", size])?;
            let Command::Serve(args) = cli.command else {
                panic!("expected serve")
            };
            Ok::<_, clap::Error>(args.cache.cache_max_size)
        };
        assert_eq!(parse("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse("0").unwrap(), 0, "no cap");
        assert!(parse("lots").is_err());
    }

    #[test]
    fn net_limits_parse() {
        let cli = Cli::try_parse_from([
            "wasmlet",
            "serve",
            "x.wasm",
            "--write-timeout",
            "2s",
            "--min-body-rate",
            "0",
            "--admin-allowed-hosts",
            "admin.internal,Wasmlet.Example",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("expected serve")
        };
        assert_eq!(args.net.write_timeout, Duration::from_secs(2));
        assert_eq!(args.net.min_body_rate, 0);
        assert_eq!(
            args.net.admin_allowed_hosts,
            ["admin.internal", "Wasmlet.Example"]
        );
        let zero = Cli::try_parse_from(["wasmlet", "serve", "x.wasm", "--write-timeout", "0s"]);
        assert!(zero.is_err());
    }

    #[test]
    fn reload_timeout_and_admin_token_file_parse() {
        let cli = Cli::try_parse_from([
            "wasmlet",
            "serve",
            "x.wasm",
            "--reload-timeout",
            "90s",
            "--admin-token-file",
            "/run/token",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("expected serve")
        };
        assert_eq!(args.load.reload_timeout, Duration::from_secs(90));
        assert_eq!(args.net.admin_token_file, Some(PathBuf::from("/run/token")));
        let zero = Cli::try_parse_from(["wasmlet", "serve", "x.wasm", "--reload-timeout", "0s"]);
        assert!(zero.is_err());
    }

    #[test]
    fn one_file_grants_parse() {
        let cli = Cli::try_parse_from([
            "wasmlet",
            "serve",
            "x.wasm",
            "--env",
            "GREETING=hi=there",
            "--env",
            "EMPTY=",
            "--allowed-outbound-host",
            "http://127.0.0.1:8080",
            "--allowed-outbound-host",
            "https://*.example.com",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("expected serve")
        };
        assert_eq!(
            args.grants.env,
            [
                ("GREETING".to_string(), "hi=there".to_string()),
                ("EMPTY".to_string(), String::new())
            ]
        );
        assert_eq!(args.grants.allowed_outbound_hosts.len(), 2);
        for bad in [
            ["--env", "=x"],
            ["--env", "WASMLET_TEST_SURELY_UNSET_VAR"],
            ["--allowed-outbound-host", "example.com"],
            ["--allowed-outbound-host", "ftp://example.com"],
        ] {
            let parsed = Cli::try_parse_from(["wasmlet", "serve", "x.wasm", bad[0], bad[1]]);
            let e = parsed.unwrap_err().to_string();
            assert!(e.contains(bad[0]), "{bad:?}: {e}");
        }
    }

    #[test]
    fn registry_flags_parse() {
        let cli = Cli::try_parse_from([
            "wasmlet",
            "serve",
            "x.wasm",
            "--insecure-registry",
            "127.0.0.1:5000",
            "--insecure-registry",
            "a:1,b:2",
            "--pull-timeout",
            "5s",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("expected serve")
        };
        assert_eq!(
            args.load.registry.insecure_registries,
            ["127.0.0.1:5000", "a:1", "b:2"]
        );
        assert_eq!(args.load.pull_timeout, Duration::from_secs(5));
        assert_eq!(args.load.reload_timeout, Duration::from_secs(600));
        let zero = Cli::try_parse_from(["wasmlet", "serve", "x.wasm", "--pull-timeout", "0s"]);
        assert!(zero.is_err());
        let defaults = Cli::try_parse_from(["wasmlet", "serve", "x.wasm"]).unwrap();
        let Command::Serve(args) = defaults.command else {
            panic!("expected serve")
        };
        assert_eq!(args.load.pull_timeout, LoadLimits::default().pull_timeout);
        assert!(args.load.registry.insecure_registries.is_empty());
        let push = Cli::try_parse_from([
            "wasmlet",
            "push",
            "x.wasm",
            "oci://r:5000/a:1",
            "--insecure-registry",
            "r:5000",
        ])
        .unwrap();
        assert!(matches!(push.command, Command::Push(_)));
    }

    #[test]
    fn http2_streams_and_tls_flags() {
        let serve = |extra: &[&str]| -> Result<ServeArgs, clap::Error> {
            let argv = ["wasmlet", "serve", "x.wasm"].iter().chain(extra);
            match Cli::try_parse_from(argv)?.command {
                Command::Serve(args) => Ok(args),
                _ => panic!("expected serve"),
            }
        };
        let defaults = serve(&[]).unwrap();
        assert_eq!(
            defaults.net.http2_max_concurrent_streams,
            NetLimits::default().http2_max_concurrent_streams
        );
        assert_eq!(defaults.net.http2_max_concurrent_streams, 100);
        assert_eq!(defaults.tls.pair(), Ok(None));
        assert!(serve(&["--http2-max-concurrent-streams", "0"]).is_err());
        let args = serve(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]).unwrap();
        assert_eq!(
            args.tls.pair(),
            Ok(Some((Path::new("c.pem"), Path::new("k.pem"))))
        );
        let half = serve(&["--tls-cert", "c.pem"]).unwrap();
        assert!(half.tls.pair().unwrap_err().contains("--tls-key"));
    }
}
