//! TLS on the public port: the pair from `--tls-cert` and `--tls-key`,
//! offered by ALPN as `h2` and `http/1.1`, and reloaded when its files
//! change.
//!
//! New handshakes get whatever pair [`Tls`] holds now; connections already
//! open keep theirs. A reload reads both files again: a pair that does not
//! load (a missing or bad file, a key of another certificate, a cert
//! written before its key) is refused with an error line naming the file,
//! and the pair before it keeps serving. Like handlers, the files are
//! watched through their directories, since a Kubernetes Secret volume
//! swaps a `..data` symlink rather than writing the files.

use crate::config::tls::{self, KeyPair};
use crate::control::watch;
use crate::observe::metrics::{Metrics, NoLabels, OutcomeLabel};
use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig};
use rustls::sign::CertifiedKey;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio_rustls::TlsAcceptor;

/// A certificate expiring sooner than this is logged as a warning at each
/// load (cert-manager renews at two thirds of a 90-day life, 30 days ahead).
const EXPIRY_WARNING: Duration = Duration::from_secs(7 * 24 * 3600);

/// ALPN protocols offered, preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The public port's TLS: the acceptor, and the pair it serves now.
pub struct Tls {
    acceptor: TlsAcceptor,
    certs: Arc<Certs>,
}

/// The pair new handshakes get, swapped whole by a reload.
struct Certs {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<CertifiedKey>,
    /// The files the current pair was loaded from, to count a reload that
    /// changed nothing as `unchanged`; one reload at a time.
    files: Mutex<(Vec<u8>, Vec<u8>)>,
    provider: Arc<CryptoProvider>,
    metrics: TlsMetrics,
}

#[derive(Debug, Clone)]
struct TlsMetrics {
    expiry: prometheus_client::metrics::gauge::Gauge,
    loaded: prometheus_client::metrics::counter::Counter,
    unchanged: prometheus_client::metrics::counter::Counter,
    error: prometheus_client::metrics::counter::Counter,
}

/// The paths only: the files' bytes hold the private key.
impl std::fmt::Debug for Certs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certs")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl Tls {
    /// Loads the pair (at start-up: an error here exits before binding).
    pub fn load(cert: &Path, key: &Path, metrics: &Metrics) -> Result<Tls> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let pair = tls::load(cert, key, &provider)?;
        let outcome = |outcome: &str| {
            metrics
                .tls_reloads
                .get_or_create(&OutcomeLabel {
                    outcome: outcome.to_string(),
                })
                .clone()
        };
        let metrics = TlsMetrics {
            expiry: metrics
                .tls_certificate_expiry
                .get_or_create(&NoLabels)
                .clone(),
            loaded: outcome("loaded"),
            unchanged: outcome("unchanged"),
            error: outcome("error"),
        };
        let certs = Arc::new(Certs {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: ArcSwap::new(pair.certified.clone()),
            files: Mutex::new((Vec::new(), Vec::new())),
            provider: provider.clone(),
            metrics,
        });
        certs.publish(pair);
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS: no protocol version the crypto provider supports")?
            .with_no_client_auth()
            .with_cert_resolver(certs.clone());
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            certs,
        })
    }

    /// What handshakes the public port's connections.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    /// Reads the pair again: serves it if it loads, else logs why (naming
    /// the file) and keeps the pair before it.
    pub fn reload(&self) {
        self.certs.reload();
    }

    /// Reloads after each settled burst of changes in the directories of
    /// the two files, until the returned handle is dropped.
    pub fn watch(self: &Arc<Tls>) -> Result<TlsWatch> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher =
            watch::change_watcher(tx).context("failed to start the TLS file watcher")?;
        let dirs: BTreeSet<PathBuf> = [&self.certs.cert, &self.certs.key]
            .into_iter()
            .map(|file| match file.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
                _ => PathBuf::from("."),
            })
            .collect();
        for dir in &dirs {
            watcher
                .watch(dir, RecursiveMode::NonRecursive)
                .with_context(|| format!("cannot watch `{}` for TLS changes", dir.display()))?;
        }
        let tls = self.clone();
        let task = tokio::spawn(async move {
            let _watcher = watcher;
            while watch::settled_burst(&mut rx).await {
                tls.reload();
            }
        });
        Ok(TlsWatch { task })
    }
}

/// Keeps the TLS file watcher alive; dropping it stops watching.
pub struct TlsWatch {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Certs {
    fn reload(&self) {
        match tls::load(&self.cert, &self.key, &self.provider) {
            Ok(pair) => self.publish(pair),
            Err(e) => {
                self.metrics.error.inc();
                tracing::error!(error = %format!("{e:#}"), "TLS reload refused; the certificate before it keeps serving");
            }
        }
    }

    /// Serves `pair` from the next handshake on, unless it is the pair
    /// served now.
    fn publish(&self, pair: KeyPair) {
        let mut files = self.files.lock().expect("never poisoned");
        if *files == pair.files {
            self.metrics.unchanged.inc();
            return;
        }
        self.current.store(pair.certified);
        *files = pair.files;
        drop(files);
        self.metrics.loaded.inc();
        let not_after_secs = pair
            .not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.metrics
            .expiry
            .set(i64::try_from(not_after_secs).unwrap_or(i64::MAX));
        let left = pair.not_after.duration_since(SystemTime::now());
        let days_left = left.as_ref().map_or(0, |d| d.as_secs() / 86_400);
        let not_after = humantime::format_rfc3339_seconds(pair.not_after);
        let cert = self.cert.display();
        match left {
            Ok(left) if left >= EXPIRY_WARNING => {
                tracing::info!(%cert, %not_after, days_left, "TLS certificate loaded")
            }
            Ok(_) => {
                tracing::warn!(%cert, %not_after, days_left, "TLS certificate loaded; it expires soon")
            }
            Err(_) => tracing::warn!(%cert, %not_after, "TLS certificate loaded; it has EXPIRED"),
        }
    }
}
