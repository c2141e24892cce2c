//! Prometheus metrics, served as text on the admin port.
//!
//! Per-route series are resolved once when a route is loaded
//! ([`RouteMetrics`]), so recording a request is a few atomic adds.

use crate::observe::cgroup::MemoryCgroup;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

/// A request series' route, the version of it that answered, and the
/// status class.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionStatus {
    pub route: String,
    /// [`STABLE`] or [`CANARY`]; [`NO_ROUTE`] for no route.
    pub version: String,
    /// `2xx`, `4xx`, ...
    pub code: String,
}

/// An outcome a canary's rollback policy did not count, and why.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionReason {
    pub route: String,
    pub version: String,
    /// [`CANARY_UNCOUNTED_REASONS`]
    pub reason: String,
}

/// Why a canary's rollback policy left an outcome out: the client caused
/// it, or its client (or sticky value) held its share of the window.
pub const CANARY_UNCOUNTED_REASONS: [&str; 2] = ["client", "share"];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteVersion {
    pub route: String,
    pub version: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FaultLabels {
    pub route: String,
    pub version: String,
    /// `trap`, `timeout`, `memory`, `no_response`.
    pub kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct HandlerLabels {
    pub route: String,
    pub version: String,
    pub component: String,
    pub digest: String,
    /// For an `oci://` component, the manifest digest it resolved to; the
    /// label is left out for files.
    pub resolved_digest: Option<String>,
}

impl prometheus_client::encoding::EncodeLabelSet for HandlerLabels {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelSetEncoder,
    ) -> Result<(), std::fmt::Error> {
        let mut labels = vec![
            ("route", self.route.as_str()),
            ("version", self.version.as_str()),
            ("component", self.component.as_str()),
            ("digest", self.digest.as_str()),
        ];
        if let Some(resolved) = &self.resolved_digest {
            labels.push(("resolved_digest", resolved.as_str()));
        }
        prometheus_client::encoding::EncodeLabelSet::encode(&labels, encoder)
    }
}

/// The labels of `wasmlet_requests_by_protocol_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    /// [`PROTOCOLS`]
    pub protocol: &'static str,
    /// Whether the connection is TLS.
    pub tls: bool,
}

/// The `protocol` label values, by ALPN name.
pub const PROTOCOLS: [&str; 3] = ["http/1.0", "http/1.1", "h2"];

/// Why a TLS handshake failed, as a label value: it took longer than
/// --header-read-timeout, or the client sent something TLS refused.
pub const HANDSHAKE_FAILURES: [&str; 2] = ["timeout", "error"];

/// Why a guard of the public port closed a connection, as a label value:
/// an HTTP/2 client past its budget of stream resets, PINGs or SETTINGS,
/// or one that kept a response waiting on its flow-control window for
/// --write-timeout.
pub const CLOSE_REASONS: [&str; 4] = [
    "h2_reset_flood",
    "h2_ping_flood",
    "h2_settings_flood",
    "h2_window_stall",
];

/// A series with no labels in a family that is absent until it is set
/// (the TLS series, which mean nothing without --tls-cert).
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct NoLabels;

impl EncodeLabelSet for NoLabels {
    fn encode(
        &self,
        _encoder: &mut prometheus_client::encoding::LabelSetEncoder,
    ) -> Result<(), std::fmt::Error> {
        Ok(())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabel {
    pub cache: String,
}

/// The labels of `wasmlet_outbound_denied_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeniedLabels {
    pub route: String,
    /// `host`: no rule matches the name; `address`: the name matched, but
    /// the address it resolves to is reachable only by a rule naming it.
    pub reason: String,
}

/// The labels of `wasmlet_kv_operations_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KvLabels {
    pub route: String,
    /// The store's name (`(not granted)` for an `open` refused).
    pub store: String,
    pub operation: String,
    /// `ok`, `error`, `timeout`, `refused` (a limit) or `no_such_store`.
    pub outcome: String,
}

/// The labels of `wasmlet_kv_operation_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KvDurationLabels {
    pub route: String,
    pub store: String,
    pub operation: String,
}

/// The kinds of handler fault, as metric label values.
pub const FAULT_KINDS: [&str; 6] = [
    "trap",
    "timeout",
    "memory",
    "memory_budget",
    "no_response",
    "pool",
];

/// Why the host refused a request before a handler saw it.
pub const REJECT_REASONS: [&str; 4] = ["overloaded", "body_too_large", "body_too_slow", "bad_path"];

/// Why a guest's outbound request was refused (see `outbound`).
pub const OUTBOUND_DENIED_REASONS: [&str; 2] = ["host", "address"];

/// Route label for requests that matched no route.
pub const NO_ROUTE: &str = "(none)";

/// `version` label of a route's only version, or of its stable one beside
/// a canary.
pub const STABLE: &str = "stable";

/// `version` label of a route's canary.
pub const CANARY: &str = "canary";

/// Why a span was dropped: `wasmlet_trace_spans_dropped_total`'s reasons.
pub const SPAN_DROP_REASONS: [&str; 2] = ["queue_full", "export_failed"];

type FloatGauge = Gauge<f64, AtomicU64>;

pub struct Metrics {
    registry: Registry,
    pub requests: Family<VersionStatus, Counter>,
    pub duration: Family<RouteVersion, Histogram, fn() -> Histogram>,
    pub in_flight: Gauge,
    pub rejected: Family<ReasonLabel, Counter>,
    pub faults: Family<FaultLabels, Counter>,
    pub body_in: Family<RouteVersion, Counter>,
    pub body_out: Family<RouteVersion, Counter>,
    pub reloads: Family<OutcomeLabel, Counter>,
    pub handler_info: Family<HandlerLabels, Gauge>,
    pub compile_seconds: Family<CacheLabel, Histogram, fn() -> Histogram>,
    pub outbound_denied: Family<DeniedLabels, Counter>,
    pub kv_operations: Family<KvLabels, Counter>,
    pub kv_durations: Family<KvDurationLabels, Histogram, fn() -> Histogram>,
    pub canary_requests: Family<VersionStatus, Counter>,
    pub canary_rollbacks: Family<RouteLabel, Counter>,
    pub canary_uncounted: Family<VersionReason, Counter>,
    pub instances_created: Family<RouteLabel, Counter>,
    pub instance_requests: Family<RouteLabel, Histogram, fn() -> Histogram>,
    pub idle_instances: Family<RouteLabel, Gauge>,
    pub requests_by_protocol: Family<ProtocolLabels, Counter>,
    /// The served certificate's `notAfter`, in seconds since the epoch.
    pub tls_certificate_expiry: Family<NoLabels, Gauge>,
    pub tls_reloads: Family<OutcomeLabel, Counter>,
    pub tls_handshake_failures: Family<ReasonLabel, Counter>,
    pub connections_closed: Family<ReasonLabel, Counter>,
    /// What the host's files under --cache-dir hold (see `cache_budget`).
    pub cache_bytes: Gauge<u64, AtomicU64>,
    pub cache_pruned: Counter,
    resident_memory: Gauge,
    open_fds: Gauge,
    /// The cgroup's working set, when the process's cgroup can be read.
    working_set: Option<(MemoryCgroup, Gauge<u64, AtomicU64>)>,
}

fn request_duration_histogram() -> Histogram {
    // 100 µs .. ~26 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 19))
}

fn compile_duration_histogram() -> Histogram {
    // 1 ms .. ~8 s
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

/// One route's series about its instances.
#[derive(Clone)]
pub struct InstanceMetrics {
    /// Instances created (one per request without reuse).
    pub created: Counter,
    /// Requests each instance served, observed when it is dropped.
    pub requests: Histogram,
    /// Instances waiting for their next request now.
    pub idle: Gauge,
}

impl Default for InstanceMetrics {
    fn default() -> Self {
        InstanceMetrics {
            created: Counter::default(),
            requests: requests_per_instance_histogram(),
            idle: Gauge::default(),
        }
    }
}

/// Buckets for requests per instance: 1, 2, 4, ... 65,536.
pub fn requests_per_instance_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();

        // Standard process metrics keep their conventional, unprefixed names.
        let resident_memory = Gauge::default();
        registry.register_with_unit(
            "process_resident_memory",
            "Resident memory size",
            Unit::Bytes,
            resident_memory.clone(),
        );
        let open_fds = Gauge::default();
        registry.register(
            "process_open_fds",
            "Open file descriptors",
            open_fds.clone(),
        );
        let start_time = FloatGauge::default();
        start_time.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
        );
        registry.register_with_unit(
            "process_start_time",
            "Start time of the process since the Unix epoch",
            Unit::Seconds,
            start_time,
        );

        let host = registry.sub_registry_with_prefix("wasmlet");
        let requests = Family::<VersionStatus, Counter>::default();
        host.register(
            "requests",
            "HTTP requests answered, by route, version (stable, canary) and status class",
            requests.clone(),
        );
        let duration: Family<RouteVersion, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(request_duration_histogram);
        host.register_with_unit(
            "request_duration",
            "Time from request head to response head, by route and version",
            Unit::Seconds,
            duration.clone(),
        );
        let in_flight = Gauge::default();
        host.register(
            "requests_in_flight",
            "Requests being executed now",
            in_flight.clone(),
        );
        let rejected = Family::<ReasonLabel, Counter>::default();
        host.register(
            "requests_rejected",
            "Requests refused by the host, by reason (overloaded, body_too_large, body_too_slow, bad_path)",
            rejected.clone(),
        );
        let faults = Family::<FaultLabels, Counter>::default();
        host.register(
            "handler_faults",
            "Requests whose handler trapped, timed out, ran out of memory, never responded or found no pool slot",
            faults.clone(),
        );
        let body_in = Family::<RouteVersion, Counter>::default();
        host.register_with_unit(
            "request_body",
            "Request body bytes read by handlers",
            Unit::Bytes,
            body_in.clone(),
        );
        let body_out = Family::<RouteVersion, Counter>::default();
        host.register_with_unit(
            "response_body",
            "Response body bytes sent",
            Unit::Bytes,
            body_out.clone(),
        );
        let reloads = Family::<OutcomeLabel, Counter>::default();
        host.register(
            "reloads",
            "Reloads of the handler set, by outcome (published, unchanged, error)",
            reloads.clone(),
        );
        let handler_info = Family::<HandlerLabels, Gauge>::default();
        host.register(
            "handler_info",
            "The component each route's version serves now (value 1)",
            handler_info.clone(),
        );
        let compile_seconds: Family<CacheLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(compile_duration_histogram);
        host.register_with_unit(
            "component_compile",
            "Time to compile a component, or to load it from the compile cache",
            Unit::Seconds,
            compile_seconds.clone(),
        );

        let cache_bytes = Gauge::<u64, AtomicU64>::default();
        host.register_with_unit(
            "cache",
            "What the host's files under --cache-dir hold after the last reload: compiled components and pulled blobs (0 without --cache-dir)",
            Unit::Bytes,
            cache_bytes.clone(),
        );
        let cache_pruned = Counter::default();
        host.register(
            "cache_pruned",
            "Files removed from --cache-dir to keep it under --cache-max-size, least recently used first",
            cache_pruned.clone(),
        );

        let working_set = MemoryCgroup::find().map(|cgroup| {
            let gauge = Gauge::<u64, AtomicU64>::default();
            host.register_with_unit(
                "memory_working_set",
                "Memory the container's limit counts: its cgroup's usage less inactive file pages (kubelet's working set)",
                Unit::Bytes,
                gauge.clone(),
            );
            (cgroup, gauge)
        });
        for reason in REJECT_REASONS {
            let _ = rejected.get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            });
        }
        let outbound_denied = Family::<DeniedLabels, Counter>::default();
        host.register(
            "outbound_denied",
            "Outbound requests from guests refused, by route and reason (host: no rule matches; address: the name resolved to an address only a rule naming it may reach)",
            outbound_denied.clone(),
        );
        let kv_operations = Family::<KvLabels, Counter>::default();
        host.register(
            "kv_operations",
            "Key-value operations from guests, by route, store, operation and outcome (ok, error, timeout, refused: a limit, no_such_store: a store not granted)",
            kv_operations.clone(),
        );
        let kv_durations: Family<KvDurationLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(request_duration_histogram);
        host.register_with_unit(
            "kv_operation_duration",
            "Time a key-value store took for one operation, by route, store and operation",
            Unit::Seconds,
            kv_durations.clone(),
        );

        let canary_requests = Family::<VersionStatus, Counter>::default();
        host.register(
            "canary_requests",
            "Outcomes the canary's rollback policy counts, by route, version and status class (a fault after the response head counts as 5xx)",
            canary_requests.clone(),
        );
        let canary_rollbacks = Family::<RouteLabel, Counter>::default();
        host.register(
            "canary_rollbacks",
            "Canaries this replica rolled back on its own (weight set to 0), by route",
            canary_rollbacks.clone(),
        );
        let canary_uncounted = Family::<VersionReason, Counter>::default();
        host.register(
            "canary_uncounted",
            "Outcomes the canary's rollback policy left out, by route, version and reason (client: the client caused the failure; share: the client or sticky value already held its share of the window)",
            canary_uncounted.clone(),
        );
        let instances_created = Family::<RouteLabel, Counter>::default();
        host.register(
            "instances_created",
            "Instances created, by route: one per request unless the route reuses instances",
            instances_created.clone(),
        );
        let instance_requests: Family<RouteLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(requests_per_instance_histogram);
        host.register(
            "instance_requests",
            "Requests each instance served, observed when it is dropped, by route",
            instance_requests.clone(),
        );
        let idle_instances = Family::<RouteLabel, Gauge>::default();
        host.register(
            "idle_instances",
            "Instances kept for reuse that wait for a request now, by route",
            idle_instances.clone(),
        );

        let requests_by_protocol = Family::<ProtocolLabels, Counter>::default();
        host.register(
            "requests_by_protocol",
            "Requests on the public port, by protocol (http/1.0, http/1.1, h2) and whether the connection is TLS",
            requests_by_protocol.clone(),
        );
        let tls_certificate_expiry = Family::<NoLabels, Gauge>::default();
        host.register_with_unit(
            "tls_certificate_expiry_timestamp",
            "With --tls-cert: when the certificate served now expires (its notAfter), since the Unix epoch",
            Unit::Seconds,
            tls_certificate_expiry.clone(),
        );
        let tls_reloads = Family::<OutcomeLabel, Counter>::default();
        host.register(
            "tls_reloads",
            "Loads of --tls-cert and --tls-key, by outcome (loaded, unchanged, error: the old pair keeps serving)",
            tls_reloads.clone(),
        );
        let tls_handshake_failures = Family::<ReasonLabel, Counter>::default();
        host.register(
            "tls_handshake_failures",
            "TLS handshakes on the public port that failed, by reason (timeout: longer than --header-read-timeout; error)",
            tls_handshake_failures.clone(),
        );

        let connections_closed = Family::<ReasonLabel, Counter>::default();
        host.register(
            "connections_closed",
            "Public connections a guard closed, by reason (an HTTP/2 flood of resets, PINGs or SETTINGS; a response stalled on the client's window)",
            connections_closed.clone(),
        );
        for reason in CLOSE_REASONS {
            let _ = connections_closed.get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            });
        }

        Metrics {
            registry,
            connections_closed,
            requests_by_protocol,
            tls_certificate_expiry,
            tls_reloads,
            tls_handshake_failures,
            canary_requests,
            canary_rollbacks,
            canary_uncounted,
            instances_created,
            instance_requests,
            idle_instances,
            cache_bytes,
            cache_pruned,
            working_set,
            requests,
            duration,
            in_flight,
            rejected,
            faults,
            body_in,
            body_out,
            reloads,
            handler_info,
            compile_seconds,
            outbound_denied,
            kv_operations,
            kv_durations,
            resident_memory,
            open_fds,
        }
    }

    /// Adds the guest memory budget's use and size (--max-total-memory).
    /// `used` is the budget's own count (`MemoryBudget::used_gauge`).
    /// Registers tracing's counters: the spans the OTLP collector took
    /// (`exported`), and those `dropped`, by reason (registered even while
    /// tracing is off, at 0, so dashboards need no special case).
    pub fn register_traces(&mut self, exported: Counter, dropped: Family<ReasonLabel, Counter>) {
        for reason in SPAN_DROP_REASONS {
            let _ = dropped.get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            });
        }
        let host = self.registry.sub_registry_with_prefix("wasmlet");
        host.register(
            "trace_spans_exported",
            "Spans the OTLP collector took (0 while tracing is off)",
            exported,
        );
        host.register(
            "trace_spans_dropped",
            "Spans dropped, never exported, by reason (queue_full: more than OTEL_BSP_MAX_QUEUE_SIZE waiting; export_failed: the collector refused, failed or did not answer)",
            dropped,
        );
    }

    pub fn register_memory_budget(&mut self, used: Gauge<u64, AtomicU64>, limit_bytes: u64) {
        let host = self.registry.sub_registry_with_prefix("wasmlet");
        host.register_with_unit(
            "guest_memory",
            "Linear memory all running instances hold, against --max-total-memory",
            Unit::Bytes,
            used,
        );
        let limit = Gauge::<u64, AtomicU64>::default();
        limit.set(limit_bytes);
        host.register_with_unit(
            "guest_memory_limit",
            "The budget for the linear memory of all running instances (--max-total-memory)",
            Unit::Bytes,
            limit,
        );
    }

    /// Counts a request on the public port by its protocol.
    pub fn count_protocol(&self, protocol: &'static str, tls: bool) {
        self.requests_by_protocol
            .get_or_create(&ProtocolLabels { protocol, tls })
            .inc();
    }

    /// The exposition in Prometheus text format.
    pub fn encode(&self) -> String {
        self.resident_memory.set(resident_memory_bytes());
        self.open_fds.set(open_fds());
        if let Some((cgroup, gauge)) = &self.working_set {
            gauge.set(cgroup.working_set_bytes().unwrap_or(0));
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// Series for one version of a route, resolved once at load time.
    pub fn route(&self, route: &str, version: &str) -> RouteMetrics {
        // Series that start at 0, so alerts on their rate see them before
        // the first refusal.
        for reason in OUTBOUND_DENIED_REASONS {
            let _ = self.outbound_denied.get_or_create(&DeniedLabels {
                route: route.to_string(),
                reason: reason.to_string(),
            });
        }
        let status = |class: &str| {
            self.requests
                .get_or_create(&VersionStatus {
                    route: route.to_string(),
                    version: version.to_string(),
                    code: class.to_string(),
                })
                .clone()
        };
        let label = RouteVersion {
            route: route.to_string(),
            version: version.to_string(),
        };
        RouteMetrics {
            status: ["1xx", "2xx", "3xx", "4xx", "5xx"].map(status),
            duration: self.duration.get_or_create(&label).clone(),
            faults: FAULT_KINDS.map(|kind| {
                self.faults
                    .get_or_create(&FaultLabels {
                        route: route.to_string(),
                        version: version.to_string(),
                        kind: kind.to_string(),
                    })
                    .clone()
            }),
            body_in: self.body_in.get_or_create(&label).clone(),
            body_out: self.body_out.get_or_create(&label).clone(),
        }
    }

    /// One version's `wasmlet_canary_requests_total` series, by status class.
    pub fn canary_requests(&self, route: &str, version: &str) -> [Counter; 5] {
        ["1xx", "2xx", "3xx", "4xx", "5xx"].map(|class| {
            self.canary_requests
                .get_or_create(&VersionStatus {
                    route: route.to_string(),
                    version: version.to_string(),
                    code: class.to_string(),
                })
                .clone()
        })
    }

    /// One version's `wasmlet_canary_uncounted_total` series, by
    /// [`CANARY_UNCOUNTED_REASONS`].
    pub fn canary_uncounted(&self, route: &str, version: &str) -> [Counter; 2] {
        CANARY_UNCOUNTED_REASONS.map(|reason| {
            self.canary_uncounted
                .get_or_create(&VersionReason {
                    route: route.to_string(),
                    version: version.to_string(),
                    reason: reason.to_string(),
                })
                .clone()
        })
    }

    /// A route's `wasmlet_canary_rollbacks_total`, there from 0 on.
    pub fn canary_rollbacks(&self, route: &str) -> Counter {
        self.canary_rollbacks
            .get_or_create(&RouteLabel {
                route: route.to_string(),
            })
            .clone()
    }

    /// A route's series about its instances (see `run::reuse`).
    pub fn instances(&self, route: &str) -> InstanceMetrics {
        let label = RouteLabel {
            route: route.to_string(),
        };
        InstanceMetrics {
            created: self.instances_created.get_or_create(&label).clone(),
            requests: self.instance_requests.get_or_create(&label).clone(),
            idle: self.idle_instances.get_or_create(&label).clone(),
        }
    }

    pub fn reload(&self, outcome: &str) {
        self.reloads
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn reject(&self, reason: &str) {
        self.rejected
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }
}

/// One route's series.
#[derive(Clone)]
pub struct RouteMetrics {
    status: [Counter; 5],
    pub duration: Histogram,
    faults: [Counter; FAULT_KINDS.len()],
    pub body_in: Counter,
    pub body_out: Counter,
}

impl RouteMetrics {
    pub fn record(&self, status: u16, seconds: f64) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.status[class].inc();
        self.duration.observe(seconds);
    }

    pub fn fault(&self, kind: &str) {
        if let Some(i) = FAULT_KINDS.iter().position(|k| *k == kind) {
            self.faults[i].inc();
        }
    }
}

fn resident_memory_bytes() -> i64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<i64>().ok())
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

fn open_fds() -> i64 {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as i64)
        .unwrap_or(0)
}
