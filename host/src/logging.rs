//! Tracing set-up: text for people, JSON for `kubectl logs` pipelines.
//! The level comes from `RUST_LOG` (default `info`). Lines are written by a
//! background thread so a slow stderr never stalls a request.

use crate::config::LogFormat;
use std::io::IsTerminal;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Log lines buffered for the writer thread; past it lines are dropped
/// rather than stalling requests. The buffer is allocated up front (about
/// 32 bytes a line), so tracing-appender's default of 128,000 lines would
/// cost 4 MiB of resident memory on an idle server.
const BUFFERED_LINES: usize = 16 * 1024;

/// Installs the global subscriber; keep the guard alive until exit so the
/// last lines are flushed.
pub fn init(format: LogFormat) -> WorkerGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = NonBlockingBuilder::default()
        .buffered_lines_limit(BUFFERED_LINES)
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
    guard
}
