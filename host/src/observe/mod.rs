//! What the host tells its operator: metrics, logs, traces, and the memory the
//! container's limit counts.
//!
//! - [`metrics`]: Prometheus metrics.
//! - [`logging`]: tracing set-up, text or JSON.
//! - [`trace`]: OpenTelemetry spans, exported over OTLP.
//! - [`cgroup`]: the memory the container's limit counts.

pub mod cgroup;
pub mod logging;
pub mod metrics;
pub mod trace;
