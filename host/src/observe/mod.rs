//! What the host tells its operator: metrics, logs, and the memory the
//! container's limit counts.
//!
//! - [`metrics`]: Prometheus metrics.
//! - [`logging`]: tracing set-up, text or JSON.
//! - [`cgroup`]: the memory the container's limit counts.

pub mod cgroup;
pub mod logging;
pub mod metrics;
