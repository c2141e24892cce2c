//! Shutdown signals. Kubernetes sends SIGTERM; a terminal sends SIGINT.

use tokio::signal::unix::{SignalKind, signal as listen};

/// Resolves with the signal's name when SIGTERM or SIGINT arrives.
pub async fn signal() -> &'static str {
    let mut terminate =
        listen(SignalKind::terminate()).expect("failed to install the SIGTERM handler");
    let mut interrupt =
        listen(SignalKind::interrupt()).expect("failed to install the SIGINT handler");
    tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    }
}
