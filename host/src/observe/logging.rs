//! Tracing set-up: text for people, JSON for `kubectl logs` pipelines.
//! The level comes from `RUST_LOG` (default `info`; rustls only at `error`
//! unless `RUST_LOG` names it, see [`QUIET_RUSTLS`]). Lines are written by
//! background threads so a slow stderr never stalls a request.
//!
//! Guests' output (target [`GUEST_TARGET`]) and the host's own lines take
//! separate paths: guest lines go through a lossy buffer that drops them
//! when full, host lines (requests, faults, reloads) through one that never
//! drops and waits instead. A flood of guest output can lose only guest
//! output, never the host's record of what happened.

use clap::ValueEnum;
use std::io::IsTerminal;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::MakeWriterExt;

/// The tracing target of guest stdout/stderr lines.
pub const GUEST_TARGET: &str = "guest";

/// How log lines are written (--log-format).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Host log lines buffered for the writer thread; past it a request waits
/// for room rather than losing its line. The buffer is allocated up front
/// (about 32 bytes a line), so tracing-appender's default of 128,000 lines
/// would cost 4 MiB of resident memory on an idle server.
const BUFFERED_LINES: usize = 16 * 1024;
/// Guest output lines buffered for their writer thread; past it guest
/// lines are dropped. Each request may log at most
/// `wasm::sandbox::GUEST_OUTPUT_LINES`.
const BUFFERED_GUEST_LINES: usize = 8 * 1024;

/// rustls warns about what a peer does wrong (an IP address sent as SNI, as
/// some ordinary clients do; an alert it sent), once per handshake: noise
/// that buries the host's own lines, and that any client can make at will
/// on the path that never drops. The host counts failed handshakes itself
/// (`wasmlet_tls_handshake_failures_total`, and a debug line); rustls's own
/// lines come when `RUST_LOG` names rustls.
const QUIET_RUSTLS: &str = "rustls=error";

/// Flushes the last lines when dropped; keep it alive until exit.
pub struct LogGuards {
    _host: WorkerGuard,
    _guest: WorkerGuard,
}

/// Installs the global subscriber; keep the guard alive until exit so the
/// last lines are flushed.
pub fn init(format: LogFormat) -> LogGuards {
    let rust_log = std::env::var(EnvFilter::DEFAULT_ENV).ok();
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if !rust_log.is_some_and(|directives| directives.contains("rustls")) {
        filter = filter.add_directive(QUIET_RUSTLS.parse().expect("a valid directive"));
    }
    let (host, host_guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("wasmlet-log")
        .finish(std::io::stderr());
    let (guest, guest_guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(BUFFERED_GUEST_LINES)
        .thread_name("wasmlet-guest-log")
        .finish(std::io::stderr());
    let writer = guest
        .with_filter(|meta| meta.target() == GUEST_TARGET)
        .or_else(host);
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
    LogGuards {
        _host: host_guard,
        _guest: guest_guard,
    }
}
