//! The limits the operator sets, and their defaults: clap and serde
//! configuration only. The limiters that enforce them at run time live with
//! what they limit (`run::admission`, `wasm::sandbox::MemoryBudget`).
//!
//! Every number a policy depends on lives here with its unit in its type.
//! Host-wide limits come from the command line; a route in the manifest may
//! override the per-request ones (time, memory, body size).

use clap::Args;
use serde::Deserialize;
use std::num::NonZeroUsize;
use std::time::Duration;

/// Host-wide limits, from flags or environment variables.
#[derive(Debug, Clone, Args)]
pub struct Limits {
    /// Wall-clock time a request may run (guest execution, including
    /// streaming its response body). Past it: 504, or a cut body.
    /// Shorter than the drain timeout so a drain lets requests finish.
    #[arg(long, env = "WASMLET_REQUEST_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// Linear memory one instance may grow to. Past it the guest's
    /// allocation fails and the request ends with 500.
    #[arg(long, env = "WASMLET_MAX_MEMORY", default_value = "128MiB", value_parser = parse_bytes)]
    pub max_memory: u64,

    /// Linear memory all running instances may hold together. An instance
    /// that cannot start or grow within it ends its request with 503, so a
    /// burst of memory-hungry requests fails those requests instead of
    /// getting the whole process killed by a container's memory limit.
    /// Default: no such budget.
    #[arg(long, env = "WASMLET_MAX_TOTAL_MEMORY", value_parser = parse_nonzero_bytes)]
    pub max_total_memory: Option<u64>,

    /// Largest request body accepted. Past it: 413, also for chunked bodies.
    #[arg(long, env = "WASMLET_MAX_BODY_SIZE", default_value = "32MiB", value_parser = parse_bytes)]
    pub max_body_size: u64,

    /// Largest request head (request line and headers) accepted. Past it: 431.
    #[arg(long, env = "WASMLET_MAX_HEADER_SIZE", default_value = "16KiB", value_parser = parse_bytes)]
    pub max_header_size: u64,

    /// How long a client may take to send a request head. Past it the
    /// connection is closed, so a slow client cannot hold it forever.
    #[arg(long, env = "WASMLET_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,

    /// Requests executing at once. Past it a request waits up to
    /// --queue-timeout for a slot, then gets 503 with Retry-After.
    #[arg(long, env = "WASMLET_MAX_IN_FLIGHT", default_value_t = 512)]
    pub max_in_flight: u32,

    /// How long a request waits for a slot when --max-in-flight is reached.
    #[arg(long, env = "WASMLET_QUEUE_TIMEOUT", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub queue_timeout: Duration,

    /// Open client connections. Past it new connections wait in the
    /// kernel's accept backlog.
    #[arg(long, env = "WASMLET_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: u32,

    /// Core module instances one instance of a component may create.
    /// A Rust handler creates 1-4; a Python one (componentize-py) 14. The
    /// pooling allocator only counts these, so the default is generous.
    #[arg(
        long,
        env = "WASMLET_MAX_CORE_INSTANCES_PER_COMPONENT",
        default_value_t = 32
    )]
    pub max_core_instances_per_component: u32,

    /// Linear memories one instance of a component may define. The pool
    /// reserves (but does not touch) address space for this many per
    /// instance that may run at once, so no request waits for a slot.
    #[arg(long, env = "WASMLET_MAX_MEMORIES_PER_COMPONENT", default_value_t = 4)]
    pub max_memories_per_component: u32,

    /// Tables one instance of a component may define.
    #[arg(long, env = "WASMLET_MAX_TABLES_PER_COMPONENT", default_value_t = 16)]
    pub max_tables_per_component: u32,

    /// Elements one table may hold (a function table holds one per
    /// function a guest can call indirectly: JavaScript's holds about 7,800).
    #[arg(long, env = "WASMLET_MAX_TABLE_ELEMENTS", default_value_t = 20_000)]
    pub max_table_elements: u32,

    /// Request worker threads, each serving its share of the connections
    /// on its own single-threaded runtime. Default: one per CPU the
    /// process may use (cgroup CPU limits included).
    #[arg(long, env = "WASMLET_WORKERS")]
    pub workers: Option<NonZeroUsize>,

    /// Requests one instance may serve, one after another, before it is
    /// dropped; a route's `max_instance_reuse` overrides it. 1: a fresh
    /// instance per request. Above 1, globals and linear memory persist
    /// from one request to the next on an instance (see docs/reuse.md).
    #[arg(long, env = "WASMLET_MAX_INSTANCE_REUSE_COUNT", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_instance_reuse_count: u32,

    /// Requests one instance of a wasi:http 0.3 handler may run at once
    /// (they interleave while they wait); a route's `max_concurrent_reuse`
    /// overrides it. No effect on 0.2 handlers, which run one at a time.
    #[arg(long, env = "WASMLET_MAX_INSTANCE_CONCURRENT_REUSE_COUNT", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_instance_concurrent_reuse_count: u32,

    /// How long an instance kept for reuse may wait for its next request
    /// before it is dropped; a route's `idle_instance_timeout` overrides it.
    #[arg(long, env = "WASMLET_IDLE_INSTANCE_TIMEOUT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub idle_instance_timeout: Duration,
}

impl Limits {
    /// The number of request worker threads to run.
    pub fn worker_count(&self) -> usize {
        self.workers
            .or_else(|| std::thread::available_parallelism().ok())
            .map_or(1, NonZeroUsize::get)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_timeout: Duration::from_secs(20),
            max_memory: 128 << 20,
            max_total_memory: None,
            max_body_size: 32 << 20,
            max_header_size: 16 << 10,
            header_read_timeout: Duration::from_secs(10),
            max_in_flight: 512,
            queue_timeout: Duration::from_millis(100),
            max_connections: 4096,
            max_core_instances_per_component: 32,
            max_memories_per_component: 4,
            max_tables_per_component: 16,
            max_table_elements: 20_000,
            workers: None,
            max_instance_reuse_count: 1,
            max_instance_concurrent_reuse_count: 1,
            idle_instance_timeout: Duration::from_secs(1),
        }
    }
}

/// Per-route overrides from the manifest; unset fields use the host's flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteLimits {
    pub timeout: Option<Duration>,
    pub max_memory: Option<u64>,
    pub max_body_size: Option<u64>,
    pub max_instance_reuse: Option<u32>,
    pub max_concurrent_reuse: Option<u32>,
    pub idle_instance_timeout: Option<Duration>,
}

/// The limits one request of one route runs under, resolved at load time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    pub timeout: Duration,
    pub max_memory: u64,
    pub max_body_size: u64,
    /// Requests one instance serves before it is dropped (1: no reuse).
    pub max_instance_reuse: u32,
    /// Requests one wasi:http 0.3 instance runs at once.
    pub max_concurrent_reuse: u32,
    /// How long an instance kept for reuse may sit idle.
    pub idle_instance_timeout: Duration,
}

impl RequestLimits {
    pub fn resolve(host: &Limits, route: &RouteLimits) -> RequestLimits {
        RequestLimits {
            timeout: route.timeout.unwrap_or(host.request_timeout),
            max_memory: route.max_memory.unwrap_or(host.max_memory),
            max_body_size: route.max_body_size.unwrap_or(host.max_body_size),
            max_instance_reuse: route
                .max_instance_reuse
                .unwrap_or(host.max_instance_reuse_count),
            max_concurrent_reuse: route
                .max_concurrent_reuse
                .unwrap_or(host.max_instance_concurrent_reuse_count),
            idle_instance_timeout: route
                .idle_instance_timeout
                .unwrap_or(host.idle_instance_timeout),
        }
    }
}

/// Parses a byte size: `1048576`, `512KiB`, `128MiB`, `1GiB` (also `K`, `M`,
/// `G`, `KB`, `MB`, `GB`, all binary multiples).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a byte size like `128MiB`"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => return Err(format!("unknown size unit `{other}` in `{text}`")),
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// A byte size of at least one byte.
fn parse_nonzero_bytes(text: &str) -> Result<u64, String> {
    match parse_bytes(text)? {
        0 => Err("must be more than 0".into()),
        bytes => Ok(bytes),
    }
}

/// Serde helper: an optional byte size, as a number or a string like `"64MiB"`.
pub fn bytes_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Number(u64),
        Text(String),
    }
    match Option::<Size>::deserialize(d)? {
        None => Ok(None),
        Some(Size::Number(n)) => Ok(Some(n)),
        Some(Size::Text(t)) => parse_bytes(&t).map(Some).map_err(serde::de::Error::custom),
    }
}

/// Serde helper: an optional duration as a string like `"5s"` or `"250ms"`.
pub fn duration_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|t| humantime::parse_duration(&t).map_err(serde::de::Error::custom))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_byte_sizes() {
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("16KiB"), Ok(16 << 10));
        assert_eq!(parse_bytes("128MiB"), Ok(128 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert!(parse_bytes("MiB").is_err());
        assert!(parse_bytes("12 parsecs").is_err());
        assert!(parse_bytes("99999999999999999999GiB").is_err());
        assert!(parse_nonzero_bytes("0MiB").is_err());
        assert_eq!(parse_nonzero_bytes("1KiB"), Ok(1024));
    }

    #[test]
    fn route_overrides_win_over_host_limits() {
        let host = Limits::default();
        let route = RouteLimits {
            timeout: Some(Duration::from_secs(1)),
            ..RouteLimits::default()
        };
        let resolved = RequestLimits::resolve(&host, &route);
        assert_eq!(resolved.timeout, Duration::from_secs(1));
        assert_eq!(resolved.max_memory, host.max_memory);
    }
}
