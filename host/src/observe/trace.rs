//! OpenTelemetry traces: a span per request, its children (admission, the
//! instance's start, the handler's run, the response body, each outbound
//! call), exported over OTLP HTTP/protobuf.
//!
//! Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is
//! set; configured by the standard `OTEL_*` variables, each checked at
//! start-up so a typo is an error naming the variable, not a silent
//! default. Spans go through a bounded queue to one export task: a request
//! never waits for the collector, and a span that finds the queue full, or
//! whose export fails, is dropped and counted
//! (`wasmlet_trace_spans_dropped_total{reason}`); the SDK's own batch
//! processor keeps that count private. Spans are made with the SDK's
//! sampler, id generator and propagator and leave as its `SpanData`
//! through its OTLP exporter, but without its tracer (see [`Spans`]).

use http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, ShouldSample, SpanData, SpanEvents,
    SpanExporter, SpanLinks,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tracing::field::{DisplayValue, display};

use crate::observe::metrics::{ReasonLabel, SPAN_DROP_REASONS};

/// The W3C header carrying a span's context to the next hop.
pub const TRACEPARENT: &str = "traceparent";

/// How long shutdown waits for the last spans to go out.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);

/// Traces' settings, from the standard `OTEL_*` variables.
#[derive(Debug, Clone)]
pub struct TraceConfig {
    /// Where spans are posted (the `/v1/traces` URL).
    pub endpoint: String,
    pub sampler: SamplerSpec,
    /// `OTEL_BSP_SCHEDULE_DELAY`: the longest a span waits for its batch.
    pub schedule_delay: Duration,
    /// `OTEL_BSP_MAX_QUEUE_SIZE`: spans waiting for export, past which
    /// new ones are dropped.
    pub max_queue: usize,
    /// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`.
    pub max_batch: usize,
    /// `OTEL_BSP_EXPORT_TIMEOUT`: one export's longest wait.
    pub export_timeout: Duration,
    /// Whether `service.name` was given (else it is `wasmlet`).
    service_named: bool,
}

/// `OTEL_TRACES_SAMPLER` and its argument.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerSpec {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedRatio(f64),
}

impl SamplerSpec {
    fn sampler(self) -> Sampler {
        let parent_based = |root| Sampler::ParentBased(Box::new(root));
        match self {
            SamplerSpec::AlwaysOn => Sampler::AlwaysOn,
            SamplerSpec::AlwaysOff => Sampler::AlwaysOff,
            SamplerSpec::Ratio(r) => Sampler::TraceIdRatioBased(r),
            SamplerSpec::ParentBasedAlwaysOn => parent_based(Sampler::AlwaysOn),
            SamplerSpec::ParentBasedAlwaysOff => parent_based(Sampler::AlwaysOff),
            SamplerSpec::ParentBasedRatio(r) => parent_based(Sampler::TraceIdRatioBased(r)),
        }
    }
}

impl std::fmt::Display for SamplerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SamplerSpec::AlwaysOn => write!(f, "always_on"),
            SamplerSpec::AlwaysOff => write!(f, "always_off"),
            SamplerSpec::Ratio(r) => write!(f, "traceidratio {r}"),
            SamplerSpec::ParentBasedAlwaysOn => write!(f, "parentbased_always_on"),
            SamplerSpec::ParentBasedAlwaysOff => write!(f, "parentbased_always_off"),
            SamplerSpec::ParentBasedRatio(r) => write!(f, "parentbased_traceidratio {r}"),
        }
    }
}

impl TraceConfig {
    /// The settings from the process's environment; `None` when tracing
    /// is off (no endpoint, or `OTEL_SDK_DISABLED=true`).
    pub fn from_env() -> Result<Option<TraceConfig>, String> {
        TraceConfig::from_vars(|name| std::env::var(name).ok())
    }

    /// The settings from `var` (a variable's value, if set); an error
    /// names the variable and says what it takes.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<TraceConfig>, String> {
        let var = |name: &str| {
            var(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        if let Some(disabled) = var("OTEL_SDK_DISABLED") {
            match disabled.to_ascii_lowercase().as_str() {
                "true" => return Ok(None),
                "false" => {}
                _ => {
                    return Err(format!(
                        "OTEL_SDK_DISABLED={disabled:?}: expected true or false"
                    ));
                }
            }
        }
        let endpoint = match (
            var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            var("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(url), _) => endpoint("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &url, false)?,
            (None, Some(url)) => endpoint("OTEL_EXPORTER_OTLP_ENDPOINT", &url, true)?,
            (None, None) => return Ok(None),
        };
        for name in [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ] {
            if let Some(protocol) = var(name) {
                if protocol != "http/protobuf" {
                    return Err(format!(
                        "{name}={protocol:?}: wasmlet exports http/protobuf only"
                    ));
                }
                break;
            }
        }
        let sampler = sampler(var("OTEL_TRACES_SAMPLER"), var("OTEL_TRACES_SAMPLER_ARG"))?;
        let millis = |name: &str, default: u64| -> Result<Duration, String> {
            match var(name) {
                None => Ok(Duration::from_millis(default)),
                Some(v) => v
                    .parse::<u64>()
                    .map(Duration::from_millis)
                    .map_err(|_| format!("{name}={v:?}: expected milliseconds, a whole number")),
            }
        };
        let count = |name: &str, default: usize| -> Result<usize, String> {
            match var(name) {
                None => Ok(default),
                Some(v) => match v.parse::<usize>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(format!("{name}={v:?}: expected a whole number above 0")),
                },
            }
        };
        let max_queue = count("OTEL_BSP_MAX_QUEUE_SIZE", 2048)?;
        let service_named = var("OTEL_SERVICE_NAME").is_some()
            || var("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|attrs| {
                attrs
                    .split(',')
                    .any(|kv| kv.trim().starts_with("service.name="))
            });
        Ok(Some(TraceConfig {
            endpoint,
            sampler,
            schedule_delay: millis("OTEL_BSP_SCHEDULE_DELAY", 5000)?,
            max_queue,
            // A batch bigger than the queue could never fill.
            max_batch: count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)?.min(max_queue),
            export_timeout: millis("OTEL_BSP_EXPORT_TIMEOUT", 30_000)?,
            service_named,
        }))
    }
}

/// The traces URL from an endpoint variable: a base (`/v1/traces` is
/// appended, as the OTLP spec says) or, for the traces variable, whole.
fn endpoint(name: &str, url: &str, base: bool) -> Result<String, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{name}={url:?}: not a URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(format!(
            "{name}={url:?}: expected an http:// or https:// URL with a host"
        ));
    }
    Ok(if base {
        format!("{}/v1/traces", url.trim_end_matches('/'))
    } else {
        url.to_string()
    })
}

/// `OTEL_TRACES_SAMPLER` (default `parentbased_always_on`, as the spec
/// says) and, for the ratio samplers, `OTEL_TRACES_SAMPLER_ARG` (default 1).
fn sampler(name: Option<String>, arg: Option<String>) -> Result<SamplerSpec, String> {
    let ratio = || -> Result<f64, String> {
        match &arg {
            None => Ok(1.0),
            Some(v) => match v.parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                _ => Err(format!(
                    "OTEL_TRACES_SAMPLER_ARG={v:?}: expected a ratio from 0 to 1"
                )),
            },
        }
    };
    Ok(match name.as_deref().unwrap_or("parentbased_always_on") {
        "always_on" => SamplerSpec::AlwaysOn,
        "always_off" => SamplerSpec::AlwaysOff,
        "traceidratio" => SamplerSpec::Ratio(ratio()?),
        "parentbased_always_on" => SamplerSpec::ParentBasedAlwaysOn,
        "parentbased_always_off" => SamplerSpec::ParentBasedAlwaysOff,
        "parentbased_traceidratio" => SamplerSpec::ParentBasedRatio(ratio()?),
        other => {
            return Err(format!(
                "OTEL_TRACES_SAMPLER={other:?}: expected always_on, always_off, traceidratio, \
                 parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
            ));
        }
    })
}

/// What tracing counts: `Metrics::trace_spans_exported` and
/// `Metrics::trace_spans_dropped`.
#[derive(Clone, Default)]
pub struct SpanCounters {
    pub exported: Counter,
    pub dropped: Family<ReasonLabel, Counter>,
}

impl SpanCounters {
    /// The dropped counter for `reason`, looked up once: a span dropped
    /// on a full queue costs an increment, not a label lookup.
    fn dropped(&self, reason: &str) -> Counter {
        self.dropped
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .clone()
    }
}

/// Tracing, when on: what every request's spans are made with, and the
/// export task.
pub struct Tracing {
    pub counters: SpanCounters,
    spans: Arc<Spans>,
    stop: watch::Sender<bool>,
    exporting: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// How spans are made and where ended ones wait: the SDK's sampler, id
/// generator and `SpanData`, without its tracer. A span here is the few
/// fields a request knows, turned into `SpanData` once, when it ends. With
/// the SDK's `Span` (a `Context`, a locked `SpanData` moved through a chain
/// of processors) the request side took 5.7% of the host's CPU samples at
/// 100% sampling, nearly the export's 6.6%; made here, 3.1% (perf, hello,
/// bench/tracing.sh's load).
struct Spans {
    sampler: Sampler,
    scope: InstrumentationScope,
    queue: SpanQueue,
    /// `dropped{reason="queue_full"}`.
    queue_full: Counter,
}

impl Spans {
    /// Queues an ended span for export, without waiting; a span finding
    /// the queue full is dropped and counted.
    fn end(&self, span: SpanData) {
        let queue = &self.queue;
        let mut spans = queue.spans.lock().unwrap();
        if spans.len() >= queue.capacity {
            drop(spans);
            self.queue_full.inc();
            return;
        }
        spans.push(span);
        let full = spans.len() == queue.batch;
        drop(spans);
        if full {
            queue.full_batch.notify_one();
        }
    }
}

impl Tracing {
    /// Starts the export task on the current tokio runtime.
    pub fn start(config: &TraceConfig) -> anyhow::Result<Tracing> {
        let counters = SpanCounters::default();
        // reqwest's rustls needs a process-wide provider; ring, as elsewhere.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(config.endpoint.clone())
            .build()
            .map_err(|e| anyhow::anyhow!("OTLP exporter for {}: {e}", config.endpoint))?;
        let mut resource = Resource::builder();
        if !config.service_named {
            resource = resource.with_service_name("wasmlet");
        }
        let resource = resource
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        exporter.set_resource(&resource);
        let spans = Arc::new(Spans {
            sampler: config.sampler.sampler(),
            scope: InstrumentationScope::builder("wasmlet")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            queue: SpanQueue {
                spans: std::sync::Mutex::new(Vec::with_capacity(config.max_batch)),
                capacity: config.max_queue,
                batch: config.max_batch,
                full_batch: tokio::sync::Notify::new(),
            },
            queue_full: counters.dropped(SPAN_DROP_REASONS[0]),
        });
        let (stop, stopped) = watch::channel(false);
        let exporting = tokio::spawn(export_loop(
            spans.clone(),
            exporter,
            config.clone(),
            counters.clone(),
            stopped,
        ));
        Ok(Tracing {
            counters,
            spans,
            stop,
            exporting: std::sync::Mutex::new(Some(exporting)),
        })
    }

    /// A request's span, begun at `start`, the child of the `traceparent`
    /// in `headers` when there is a valid one, sampled as the sampler
    /// says. Its `name` and `attributes` are made only when it is sampled:
    /// the samplers here read neither, and an unsampled request should
    /// cost next to nothing.
    pub fn request(
        &self,
        headers: &HeaderMap,
        start: SystemTime,
        name: impl FnOnce() -> String,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> RequestTrace {
        let spans = &self.spans;
        // Most requests carry no traceparent: they skip the propagator.
        let parent_cx = if headers.contains_key(TRACEPARENT) {
            TraceContextPropagator::new().extract(&HeaderExtractor(headers))
        } else {
            Context::new()
        };
        let parent = parent_cx.span().span_context().clone();
        let trace_id = if parent.is_valid() {
            parent.trace_id()
        } else {
            RandomIdGenerator::default().new_trace_id()
        };
        let sampled = spans.sampler.should_sample(
            Some(&parent_cx),
            trace_id,
            "request",
            &SpanKind::Server,
            &[],
            &[],
        );
        let recording = sampled.decision == SamplingDecision::RecordAndSample;
        let context = SpanContext::new(
            trace_id,
            RandomIdGenerator::default().new_span_id(),
            if recording {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            },
            false,
            sampled.trace_state,
        );
        if !recording {
            // Its ids only, to pass on: no allocation, no shared counts.
            return RequestTrace(Trace::Unsampled(context));
        }
        let mut attributes = attributes();
        attributes.extend(sampled.attributes);
        let open = OpenSpan {
            name: name().into(),
            kind: SpanKind::Server,
            start,
            attributes,
            status: Status::Unset,
        };
        RequestTrace(Trace::Sampled(Arc::new(Traced {
            spans: spans.clone(),
            parent: parent
                .is_valid()
                .then(|| (parent.span_id(), parent.is_remote())),
            context,
            open: std::sync::Mutex::new(Some(open)),
        })))
    }

    /// Exports what is queued (for at most [`SHUTDOWN_FLUSH`]) and stops.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let exporting = self.exporting.lock().unwrap().take();
        if let Some(exporting) = exporting
            && tokio::time::timeout(SHUTDOWN_FLUSH, exporting)
                .await
                .is_err()
        {
            tracing::warn!("traces: the last spans were not exported in time");
        }
    }
}

/// Ended, sampled spans waiting for the export task: at most `capacity`.
/// A plain locked list, not a channel: a channel would wake the export
/// task (another thread) for every span, and those wake-ups cost more than
/// the spans; here it is woken once a batch is full, or by its timer.
struct SpanQueue {
    spans: std::sync::Mutex<Vec<SpanData>>,
    capacity: usize,
    batch: usize,
    full_batch: tokio::sync::Notify,
}

impl SpanQueue {
    /// All that waits, at most `limit` spans.
    fn take(&self, limit: usize) -> Vec<SpanData> {
        let mut spans = self.spans.lock().unwrap();
        if spans.len() <= limit {
            // Room for a whole batch: growing the list span by span would
            // move every span waiting in it, again and again.
            std::mem::replace(&mut *spans, Vec::with_capacity(self.batch))
        } else {
            spans.drain(..limit).collect()
        }
    }
}

/// Exports what waits in `spans`' queue, a batch (at most `max_batch`
/// spans) at a time: when a batch is full, else every `schedule_delay`; on
/// `stop`, what is left, and ends.
async fn export_loop(
    spans: Arc<Spans>,
    exporter: opentelemetry_otlp::SpanExporter,
    config: TraceConfig,
    counters: SpanCounters,
    mut stop: watch::Receiver<bool>,
) {
    let queue = &spans.queue;
    let export_failed = counters.dropped(SPAN_DROP_REASONS[1]);
    let mut failures = 0u64;
    loop {
        let stopping = tokio::select! {
            () = queue.full_batch.notified() => false,
            () = tokio::time::sleep(config.schedule_delay) => false,
            _ = stop.wait_for(|stop| *stop) => true,
        };
        loop {
            let batch = queue.take(config.max_batch);
            if batch.is_empty() {
                break;
            }
            let n = batch.len() as u64;
            match tokio::time::timeout(config.export_timeout, exporter.export(batch)).await {
                Ok(Ok(())) => {
                    counters.exported.inc_by(n);
                    failures = 0;
                }
                failed => {
                    export_failed.inc_by(n);
                    // One line per outage, not one per batch.
                    if failures == 0 {
                        let error = match failed {
                            Ok(Err(e)) => e.to_string(),
                            _ => format!("no answer within {:?}", config.export_timeout),
                        };
                        tracing::warn!(endpoint = %config.endpoint, error = %error, "traces: export failed; spans are dropped until the collector answers");
                    }
                    failures += 1;
                }
            }
            // Between timer ticks, only full batches go.
            if !stopping && queue.spans.lock().unwrap().len() < config.max_batch {
                break;
            }
        }
        if stopping {
            return;
        }
    }
}

/// A span while it is open: what becomes its `SpanData` when it ends.
struct OpenSpan {
    name: Cow<'static, str>,
    kind: SpanKind,
    start: SystemTime,
    attributes: Vec<KeyValue>,
    status: Status,
}

impl OpenSpan {
    /// Sets `status` unless an error was set already: the first reason a
    /// span failed is the one it keeps.
    fn fail(&mut self, status: Status) {
        if self.status == Status::Unset {
            self.status = status;
        }
    }

    /// The span as the exporter takes it: `context`'s, ended at `end`.
    fn ended(
        self,
        spans: &Spans,
        context: SpanContext,
        parent: Option<(SpanId, bool)>,
        end: SystemTime,
    ) -> SpanData {
        let (parent_span_id, parent_span_is_remote) = parent.unwrap_or((SpanId::INVALID, false));
        SpanData {
            span_context: context,
            parent_span_id,
            parent_span_is_remote,
            span_kind: self.kind,
            name: self.name,
            start_time: self.start,
            end_time: end,
            attributes: self.attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: self.status,
            instrumentation_scope: spans.scope.clone(),
        }
    }
}

/// One request's trace: its span, and where its children go; empty when
/// tracing is off (every call is then a no-op).
#[derive(Clone, Default)]
pub struct RequestTrace(Trace);

#[derive(Clone, Default)]
enum Trace {
    #[default]
    Off,
    /// Not sampled: the request span's ids, passed on to outbound calls
    /// (unsampled, so the next hop drops its spans too); no attributes,
    /// no children, nothing exported.
    Unsampled(SpanContext),
    Sampled(Arc<Traced>),
}

struct Traced {
    spans: Arc<Spans>,
    /// The request span's ids.
    context: SpanContext,
    /// Its parent's span id, and whether that came from the client.
    parent: Option<(SpanId, bool)>,
    /// The span until it ends.
    open: std::sync::Mutex<Option<OpenSpan>>,
}

impl Traced {
    /// Ends the request span at `end` (once; later calls do nothing).
    fn end(&self, end: SystemTime, last: impl FnOnce(&mut OpenSpan)) {
        let open = self.open.lock().unwrap().take();
        if let Some(mut open) = open {
            last(&mut open);
            let parent = self.parent;
            self.spans
                .end(open.ended(&self.spans, self.context.clone(), parent, end));
        }
    }
}

/// A new span's context, a child of `parent`'s (sampled as it is).
fn child_context(parent: &SpanContext) -> SpanContext {
    SpanContext::new(
        parent.trace_id(),
        RandomIdGenerator::default().new_span_id(),
        parent.trace_flags(),
        false,
        parent.trace_state().clone(),
    )
}

impl Drop for Traced {
    /// A request span still open when its request is forgotten ends then,
    /// as the SDK's spans do.
    fn drop(&mut self) {
        self.end(SystemTime::now(), |_| {});
    }
}

/// A trace's and a span's ids, as a log record carries them: kept as ids
/// and written as hex only when a line is logged (most requests log
/// nothing at the default level, and formatting them cost every request).
#[derive(Clone, Copy)]
pub struct LogIds {
    pub trace_id: TraceId,
    pub span_id: SpanId,
}

/// `trace_id` and `span_id` log fields, when there are ids.
pub type LogFields = (Option<DisplayValue<TraceId>>, Option<DisplayValue<SpanId>>);

impl LogIds {
    /// `ids` as the two log fields (absent when `None`).
    pub fn fields(ids: Option<LogIds>) -> LogFields {
        ids.map(|ids| (display(ids.trace_id), display(ids.span_id)))
            .unzip()
    }
}

impl RequestTrace {
    /// The trace, when its span is sampled: children follow their request
    /// span's decision (every sampler here would make the same one).
    fn recording(&self) -> Option<&Traced> {
        match &self.0 {
            Trace::Sampled(traced) => Some(traced),
            Trace::Off | Trace::Unsampled(_) => None,
        }
    }

    /// Runs `change` on the request's span while it is open.
    fn with_open(&self, change: impl FnOnce(&mut OpenSpan)) {
        if let Some(traced) = self.recording()
            && let Some(open) = traced.open.lock().unwrap().as_mut()
        {
            change(open);
        }
    }

    /// Sets `attribute` on the request's span.
    pub fn set(&self, attribute: KeyValue) {
        self.with_open(|open| open.attributes.push(attribute));
    }

    /// Ends the request's span at `end`, with `status` (an error when 5xx,
    /// as the HTTP conventions say of a server's spans).
    pub fn end(&self, status: u16, end: SystemTime) {
        if let Some(traced) = self.recording() {
            traced.end(end, |open| {
                open.attributes
                    .push(KeyValue::new("http.response.status_code", status as i64));
                if status >= 500 {
                    open.fail(Status::error(status.to_string()));
                }
            });
        }
    }

    /// Marks the request failed, saying why (a response body cut short).
    pub fn fail(&self, why: &'static str) {
        self.with_open(|open| open.fail(Status::error(why)));
    }

    /// A finished child span, from `start` to `end`.
    pub fn record(&self, name: &'static str, start: SystemTime, end: SystemTime) {
        if let Some(traced) = self.recording() {
            let span = OpenSpan {
                name: name.into(),
                kind: SpanKind::Internal,
                start,
                attributes: Vec::new(),
                status: Status::Unset,
            };
            let parent = Some((traced.context.span_id(), false));
            traced.spans.end(span.ended(
                &traced.spans,
                child_context(&traced.context),
                parent,
                end,
            ));
        }
    }

    /// A child span begun now; it ends when [`ChildSpan`] is dropped.
    pub fn child(&self, name: &'static str) -> ChildSpan {
        self.open_child(name.into(), SpanKind::Internal, Vec::new)
    }

    fn open_child(
        &self,
        name: Cow<'static, str>,
        kind: SpanKind,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> ChildSpan {
        ChildSpan(self.recording().map(|traced| OpenChild {
            context: child_context(&traced.context),
            parent: traced.context.span_id(),
            spans: traced.spans.clone(),
            span: OpenSpan {
                name,
                kind,
                start: SystemTime::now(),
                attributes: attributes(),
                status: Status::Unset,
            },
        }))
    }

    /// A client span for an outbound request, whose headers get its
    /// `traceparent` (and `tracestate`) unless they carry a `traceparent`
    /// already: a guest that propagates its own keeps it. An unsampled
    /// request passes its ids on unsampled, so the next hop drops its
    /// spans too (parent-based sampling keeps or drops a trace whole).
    pub fn outbound(
        &self,
        method: &http::Method,
        uri: &http::Uri,
        headers: &mut HeaderMap,
    ) -> ChildSpan {
        let parent = match &self.0 {
            Trace::Off => return ChildSpan(None),
            Trace::Unsampled(context) => context,
            Trace::Sampled(traced) => &traced.context,
        };
        let span = self.open_child(method.as_str().to_string().into(), SpanKind::Client, || {
            let mut attributes = vec![
                KeyValue::new("http.request.method", method.as_str().to_string()),
                KeyValue::new("url.full", uri.to_string()),
            ];
            if let Some(host) = uri.host() {
                attributes.push(KeyValue::new("server.address", host.to_string()));
            }
            if let Some(port) = uri.port_u16() {
                attributes.push(KeyValue::new("server.port", port as i64));
            }
            attributes
        });
        if !headers.contains_key(TRACEPARENT) {
            let context = match &span.0 {
                Some(open) => open.context.clone(),
                None => child_context(parent),
            };
            let cx = Context::new().with_remote_span_context(context);
            TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
        }
        span
    }

    /// The ids a log record of this request carries: only when its span is
    /// sampled (an unsampled trace is exported nowhere to join).
    pub fn log_ids(&self) -> Option<LogIds> {
        let traced = self.recording()?;
        Some(LogIds {
            trace_id: traced.context.trace_id(),
            span_id: traced.context.span_id(),
        })
    }

    /// The `trace_id` and `span_id` fields of this request's log records.
    pub fn log_fields(&self) -> LogFields {
        LogIds::fields(self.log_ids())
    }
}

/// A child span while it lasts: ended when dropped.
pub struct ChildSpan(Option<OpenChild>);

struct OpenChild {
    context: SpanContext,
    parent: SpanId,
    spans: Arc<Spans>,
    span: OpenSpan,
}

impl ChildSpan {
    pub fn set(&mut self, attribute: KeyValue) {
        if let Some(open) = &mut self.0 {
            open.span.attributes.push(attribute);
        }
    }

    /// Marks the span failed, saying why.
    pub fn fail(&mut self, why: impl Into<Cow<'static, str>>) {
        if let Some(open) = &mut self.0 {
            open.span.fail(Status::error(why));
        }
    }
}

impl Drop for ChildSpan {
    fn drop(&mut self) {
        if let Some(open) = self.0.take() {
            let span = open.span.ended(
                &open.spans,
                open.context,
                Some((open.parent, false)),
                SystemTime::now(),
            );
            open.spans.end(span);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Option<TraceConfig>, String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        TraceConfig::from_vars(|name| vars.get(name).cloned())
    }

    #[test]
    fn off_without_an_endpoint_or_when_disabled() {
        assert!(config(&[]).unwrap().is_none());
        assert!(
            config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])
                .unwrap()
                .is_none()
        );
        let disabled = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_SDK_DISABLED", "true"),
        ];
        assert!(config(&disabled).unwrap().is_none());
    }

    #[test]
    fn the_endpoint_gets_the_traces_path_and_the_traces_one_is_whole() {
        let base = config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")]);
        assert_eq!(
            base.unwrap().unwrap().endpoint,
            "http://collector:4318/v1/traces"
        );
        let whole = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://b/custom"),
        ]);
        assert_eq!(whole.unwrap().unwrap().endpoint, "https://b/custom");
    }

    #[test]
    fn the_default_sampler_is_parent_based_always_on() {
        let c = config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]);
        assert_eq!(
            c.unwrap().unwrap().sampler,
            SamplerSpec::ParentBasedAlwaysOn
        );
        let c = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.01"),
        ]);
        assert_eq!(
            c.unwrap().unwrap().sampler,
            SamplerSpec::ParentBasedRatio(0.01)
        );
    }

    #[test]
    fn bad_values_are_errors_naming_the_variable() {
        let with = |name: &'static str, value: &'static str| {
            config(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                (name, value),
            ])
            .unwrap_err()
        };
        for (name, value) in [
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "lots"),
            ("OTEL_BSP_SCHEDULE_DELAY", "-5"),
            ("OTEL_BSP_EXPORT_TIMEOUT", "1s"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_SDK_DISABLED", "yes"),
        ] {
            let error = with(name, value);
            assert!(error.starts_with(name), "{name}={value}: {error}");
        }
        let ratio = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
        ]);
        assert!(ratio.unwrap_err().starts_with("OTEL_TRACES_SAMPLER_ARG"));
        for url in ["collector:4318", "ftp://c", "not a url", "http://"] {
            let error = config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", url)]).unwrap_err();
            assert!(
                error.starts_with("OTEL_EXPORTER_OTLP_ENDPOINT"),
                "{url}: {error}"
            );
        }
    }

    #[test]
    fn the_service_name_is_wasmlet_unless_given() {
        let named = |vars: &[(&str, &str)]| {
            let mut all = vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")];
            all.extend_from_slice(vars);
            config(&all).unwrap().unwrap().service_named
        };
        assert!(!named(&[]));
        assert!(named(&[("OTEL_SERVICE_NAME", "hello")]));
        assert!(named(&[(
            "OTEL_RESOURCE_ATTRIBUTES",
            "a=b, service.name=hello"
        )]));
        assert!(!named(&[("OTEL_RESOURCE_ATTRIBUTES", "my.service.name=x")]));
    }

    /// Tracing to nowhere (a refused port on loopback), with `vars` too;
    /// its export task exports nothing before `schedule_delay`, so what a
    /// test ends stays in the queue to be read.
    fn started(vars: &[(&str, &str)]) -> Tracing {
        let mut all = vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")];
        all.extend_from_slice(vars);
        Tracing::start(&config(&all).unwrap().unwrap()).unwrap()
    }

    /// A `GET` that came with no `traceparent`, its span named `GET`.
    fn untraced_get(tracing: &Tracing) -> RequestTrace {
        tracing.request(
            &HeaderMap::new(),
            SystemTime::now(),
            || "GET".into(),
            Vec::new,
        )
    }

    fn queued(tracing: &Tracing) -> Vec<SpanData> {
        std::mem::take(&mut *tracing.spans.queue.spans.lock().unwrap())
    }

    #[tokio::test]
    async fn a_request_span_ends_once_with_its_children_under_it() {
        let tracing = started(&[("OTEL_TRACES_SAMPLER", "always_on")]);
        let trace = tracing.request(
            &HeaderMap::new(),
            SystemTime::now(),
            || "GET /".into(),
            || vec![KeyValue::new("url.path", "/")],
        );
        trace.record("admission", SystemTime::now(), SystemTime::now());
        drop(trace.child("handler"));
        trace.fail("response body cut short");
        trace.end(503, SystemTime::now());
        trace.end(200, SystemTime::now());
        trace.set(KeyValue::new("late", true));
        drop(trace);
        let spans = queued(&tracing);
        let names: Vec<&str> = spans.iter().map(|s| &*s.name).collect();
        assert_eq!(names, ["admission", "handler", "GET /"]);
        let request = &spans[2];
        for child in &spans[..2] {
            assert_eq!(child.parent_span_id, request.span_context.span_id());
            assert_eq!(
                child.span_context.trace_id(),
                request.span_context.trace_id()
            );
            assert_ne!(child.span_context.span_id(), request.span_context.span_id());
        }
        assert_eq!(request.parent_span_id, SpanId::INVALID);
        assert_eq!(request.span_kind, SpanKind::Server);
        // The first reason it failed is kept; the second end, and what
        // came after it, did nothing.
        assert_eq!(request.status, Status::error("response body cut short"));
        let keys: Vec<&str> = request
            .attributes
            .iter()
            .map(|kv| kv.key.as_str())
            .collect();
        assert_eq!(keys, ["url.path", "http.response.status_code"]);
        tracing.shutdown().await;
    }

    #[tokio::test]
    async fn an_unsampled_request_records_nothing_and_passes_its_decision_on() {
        let tracing = started(&[("OTEL_TRACES_SAMPLER", "always_off")]);
        let trace = tracing.request(
            &HeaderMap::new(),
            SystemTime::now(),
            || unreachable!("an unsampled span is not named"),
            || unreachable!("nor given attributes"),
        );
        drop(trace.child("handler"));
        let mut headers = HeaderMap::new();
        drop(trace.outbound(
            &http::Method::GET,
            &"http://127.0.0.1:1/".parse().unwrap(),
            &mut headers,
        ));
        trace.end(200, SystemTime::now());
        assert!(trace.log_ids().is_none());
        drop(trace);
        assert!(queued(&tracing).is_empty());
        let traceparent = headers[TRACEPARENT].to_str().unwrap();
        assert!(traceparent.ends_with("-00"), "{traceparent}");
        tracing.shutdown().await;
    }

    #[tokio::test]
    async fn a_request_forgotten_unended_ends_when_dropped() {
        let tracing = started(&[("OTEL_TRACES_SAMPLER", "always_on")]);
        let trace = untraced_get(&tracing);
        let outbound = trace.outbound(
            &http::Method::POST,
            &"http://127.0.0.1:1/x".parse().unwrap(),
            &mut HeaderMap::new(),
        );
        let names = |tracing: &Tracing| -> Vec<String> {
            queued(tracing).iter().map(|s| s.name.to_string()).collect()
        };
        // The last clone of a request's trace gone, its span ends.
        drop(trace);
        assert_eq!(names(&tracing), ["GET"]);
        drop(outbound);
        assert_eq!(names(&tracing), ["POST"]);
        tracing.shutdown().await;
    }

    #[tokio::test]
    async fn spans_past_the_queues_bound_are_dropped_and_counted() {
        let tracing = started(&[
            ("OTEL_TRACES_SAMPLER", "always_on"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "3"),
            // Never a full batch, so the export task takes nothing.
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4"),
        ]);
        let trace = untraced_get(&tracing);
        for _ in 0..10 {
            trace.record("admission", SystemTime::now(), SystemTime::now());
        }
        trace.end(200, SystemTime::now());
        assert_eq!(queued(&tracing).len(), 3);
        assert_eq!(tracing.counters.dropped(SPAN_DROP_REASONS[0]).get(), 8);
        tracing.shutdown().await;
    }

    #[tokio::test]
    async fn a_hostile_traceparent_starts_a_new_trace_and_a_valid_one_is_continued() {
        let config = config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")])
            .unwrap()
            .unwrap();
        let tracing = Tracing::start(&config).unwrap();
        let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let trace_of = |value: &str| {
            let mut headers = HeaderMap::new();
            if let Ok(value) = http::HeaderValue::from_str(value) {
                headers.insert(TRACEPARENT, value);
                headers.insert(
                    "tracestate",
                    http::HeaderValue::from_str(&"k=v,".repeat(2000)).unwrap(),
                );
            }
            tracing
                .request(&headers, SystemTime::now(), || "GET /".into(), Vec::new)
                .log_ids()
                .unwrap()
                .trace_id
                .to_string()
        };
        assert_eq!(trace_of(parent), "0af7651916cd43dd8448eb211c80319c");
        for hostile in [
            "",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            &"0".repeat(10_000),
        ] {
            let trace_id = trace_of(hostile);
            assert_ne!(
                trace_id, "0af7651916cd43dd8448eb211c80319c",
                "{hostile:.60}"
            );
            assert_ne!(trace_id, "00000000000000000000000000000000");
        }
        tracing.shutdown().await;
    }
}
