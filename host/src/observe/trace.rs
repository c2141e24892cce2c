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
//! (`wasmlet_trace_spans_dropped_total{reason}`). The SDK's own batch
//! processor keeps that count private, hence [`BoundedBatch`].

use http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    Sampler, SdkTracer, SdkTracerProvider, Span, SpanData, SpanExporter, SpanProcessor,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

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
    fn drop_spans(&self, reason: &str, n: usize) {
        self.dropped
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc_by(n as u64);
    }
}

/// Tracing, when on: the tracer every request's spans come from, and the
/// export task.
pub struct Tracing {
    pub counters: SpanCounters,
    tracer: SdkTracer,
    provider: SdkTracerProvider,
    stop: watch::Sender<bool>,
    exporting: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Tracing {
    /// Starts the export task on the current tokio runtime.
    pub fn start(config: &TraceConfig) -> anyhow::Result<Tracing> {
        let counters = SpanCounters::default();
        // reqwest's rustls needs a process-wide provider; ring, as elsewhere.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
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
        let queue = Arc::new(SpanQueue {
            spans: std::sync::Mutex::new(Vec::new()),
            capacity: config.max_queue,
            batch: config.max_batch,
            full_batch: tokio::sync::Notify::new(),
        });
        let (stop, stopped) = watch::channel(false);
        let mut exporter = exporter;
        exporter.set_resource(&resource);
        let exporting = tokio::spawn(export_loop(
            queue.clone(),
            exporter,
            config.clone(),
            counters.clone(),
            stopped,
        ));
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BoundedBatch {
                queue,
                counters: counters.clone(),
            })
            .with_sampler(config.sampler.sampler())
            .with_resource(resource)
            .build();
        Ok(Tracing {
            counters,
            tracer: provider.tracer("wasmlet"),
            provider,
            stop,
            exporting: std::sync::Mutex::new(Some(exporting)),
        })
    }

    /// A request's span, begun at `start`, the child of the `traceparent`
    /// in `headers` when there is a valid one. Its `name` and `attributes`
    /// are made only when the span is sampled: the samplers here read
    /// neither, and an unsampled request should cost next to nothing.
    pub fn request(
        &self,
        headers: &HeaderMap,
        start: SystemTime,
        name: impl FnOnce() -> String,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> RequestTrace {
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        let mut span = self
            .tracer
            .span_builder("request")
            .with_kind(SpanKind::Server)
            .with_start_time(start)
            .start_with_context(&self.tracer, &parent);
        let recording = span.is_recording();
        if recording {
            span.update_name(name());
            span.set_attributes(attributes());
        }
        RequestTrace(Some(Arc::new(Traced {
            cx: parent.with_span(span),
            tracer: self.tracer.clone(),
            recording,
        })))
    }

    /// Exports what is queued (for at most [`SHUTDOWN_FLUSH`]) and stops.
    pub async fn shutdown(&self) {
        let _ = self.provider.shutdown();
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
            std::mem::take(&mut *spans)
        } else {
            spans.drain(..limit).collect()
        }
    }
}

/// The span processor: ended, sampled spans into the bounded queue,
/// without waiting; a span finding it full is dropped and counted.
struct BoundedBatch {
    queue: Arc<SpanQueue>,
    counters: SpanCounters,
}

impl std::fmt::Debug for BoundedBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BoundedBatch")
    }
}

impl SpanProcessor for BoundedBatch {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        let queue = &self.queue;
        let mut spans = queue.spans.lock().unwrap();
        if spans.len() >= queue.capacity {
            drop(spans);
            self.counters.drop_spans(SPAN_DROP_REASONS[0], 1);
            return;
        }
        spans.push(span);
        let full = spans.len() == queue.batch;
        drop(spans);
        if full {
            queue.full_batch.notify_one();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Exports what waits in `queue`, a batch (at most `max_batch` spans) at
/// a time: when a batch is full, else every `schedule_delay`; on `stop`,
/// what is left, and ends.
async fn export_loop(
    queue: Arc<SpanQueue>,
    exporter: opentelemetry_otlp::SpanExporter,
    config: TraceConfig,
    counters: SpanCounters,
    mut stop: watch::Receiver<bool>,
) {
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
            let n = batch.len();
            match tokio::time::timeout(config.export_timeout, exporter.export(batch)).await {
                Ok(Ok(())) => {
                    counters.exported.inc_by(n as u64);
                    failures = 0;
                }
                failed => {
                    counters.drop_spans(SPAN_DROP_REASONS[1], n);
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

/// One request's trace: its span, and the tracer its children come from;
/// empty when tracing is off (every call is then a no-op).
#[derive(Clone, Default)]
pub struct RequestTrace(Option<Arc<Traced>>);

struct Traced {
    /// The request's span, and its parent's context.
    cx: Context,
    tracer: SdkTracer,
    /// Whether the span is sampled: an unsampled one has no children.
    recording: bool,
}

/// A trace's and a span's ids, as a log record carries them.
pub struct LogIds {
    pub trace_id: String,
    pub span_id: String,
}

impl LogIds {
    /// The two ids, as log fields take them.
    pub fn pair(&self) -> (&str, &str) {
        (&self.trace_id, &self.span_id)
    }
}

impl RequestTrace {
    /// The trace, when its span is sampled: an unsampled span takes no
    /// attributes and has no children (it still has ids to propagate).
    fn recording(&self) -> Option<&Traced> {
        self.0.as_deref().filter(|traced| traced.recording)
    }

    /// Sets `attribute` on the request's span.
    pub fn set(&self, attribute: KeyValue) {
        if let Some(traced) = self.recording() {
            traced.cx.span().set_attribute(attribute);
        }
    }

    /// Ends the request's span at `end`, with `status` (an error when 5xx,
    /// as the HTTP conventions say of a server's spans).
    pub fn end(&self, status: u16, end: SystemTime) {
        if let Some(traced) = self.recording() {
            let span = traced.cx.span();
            span.set_attribute(KeyValue::new("http.response.status_code", status as i64));
            if status >= 500 {
                span.set_status(Status::error(status.to_string()));
            }
            span.end_with_timestamp(end);
        }
    }

    /// Marks the request failed, saying why (a response body cut short).
    pub fn fail(&self, why: &'static str) {
        if let Some(traced) = self.recording() {
            traced.cx.span().set_status(Status::error(why));
        }
    }

    /// A finished child span, from `start` to `end`.
    pub fn record(&self, name: &'static str, start: SystemTime, end: SystemTime) {
        if let Some(traced) = self.recording() {
            let mut span = traced
                .tracer
                .span_builder(name)
                .with_kind(SpanKind::Internal)
                .with_start_time(start)
                .start_with_context(&traced.tracer, &traced.cx);
            span.end_with_timestamp(end);
        }
    }

    /// A child span begun now; it ends when [`ChildSpan`] is dropped.
    pub fn child(&self, name: &'static str) -> ChildSpan {
        ChildSpan(self.recording().map(|traced| {
            traced
                .tracer
                .span_builder(name)
                .with_kind(SpanKind::Internal)
                .start_with_context(&traced.tracer, &traced.cx)
        }))
    }

    /// A client span for an outbound request, whose headers get its
    /// `traceparent` (and `tracestate`) unless they carry a `traceparent`
    /// already: a guest that propagates its own keeps it.
    pub fn outbound(
        &self,
        method: &http::Method,
        uri: &http::Uri,
        headers: &mut HeaderMap,
    ) -> ChildSpan {
        let Some(traced) = &self.0 else {
            return ChildSpan(None);
        };
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
        let span = traced
            .tracer
            .span_builder(method.as_str().to_string())
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(&traced.tracer, &traced.cx);
        if !headers.contains_key(TRACEPARENT) {
            let cx = Context::new().with_remote_span_context(span.span_context().clone());
            TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
        }
        ChildSpan(Some(span))
    }

    /// The ids a log record of this request carries: only when its span is
    /// sampled (an unsampled trace is exported nowhere to join).
    pub fn log_ids(&self) -> Option<LogIds> {
        let traced = self.recording()?;
        let span = traced.cx.span();
        let context: &SpanContext = span.span_context();
        context.is_sampled().then(|| LogIds {
            trace_id: context.trace_id().to_string(),
            span_id: context.span_id().to_string(),
        })
    }
}

/// A child span while it lasts: ended when dropped.
pub struct ChildSpan(Option<Span>);

impl ChildSpan {
    pub fn set(&mut self, attribute: KeyValue) {
        if let Some(span) = &mut self.0 {
            span.set_attribute(attribute);
        }
    }

    /// Marks the span failed, saying why.
    pub fn fail(&mut self, why: impl Into<Cow<'static, str>>) {
        if let Some(span) = &mut self.0 {
            span.set_status(Status::error(why));
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
        };
        assert_eq!(
            trace_of(parent).trace_id,
            "0af7651916cd43dd8448eb211c80319c"
        );
        for hostile in [
            "",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            &"0".repeat(10_000),
        ] {
            let ids = trace_of(hostile);
            assert_ne!(
                ids.trace_id, "0af7651916cd43dd8448eb211c80319c",
                "{hostile:.60}"
            );
            assert_ne!(ids.trace_id, "00000000000000000000000000000000");
        }
        tracing.shutdown().await;
    }
}
