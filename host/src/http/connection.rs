//! One connection setup for both ports: what a client may hold and for how long.
//!
//! The public and the admin server each build a [`Connections`] and call the
//! same methods: [`Connections::accept`] (a connection cap, and a growing
//! pause after failed accepts), then [`Connections::io`] (socket options and
//! a write-progress timeout) and [`Connections::serve`] or
//! [`Connections::run`]. The public port speaks HTTP/1.1 and HTTP/2 (prior
//! knowledge, or ALPN under TLS) on one socket; the admin port HTTP/1 only.
//! A client that never sends a full HTTP/1 request head is closed by hyper's
//! header timer; nothing in hyper times the protocol sniff or an idle HTTP/2
//! connection, so [`Connections::run`] closes a connection with no request
//! in progress for the header-read timeout ([`Activity`]). A client that
//! stops reading its responses is closed by [`WriteDeadline`], which hyper
//! has no equivalent of; bytes the kernel still holds after that are
//! bounded by `TCP_USER_TIMEOUT`. An HTTP/2 client that reads but keeps its
//! flow-control window shut is closed once a response has waited on it for
//! the write timeout ([`Activity::watch`]), and one flooding the host with
//! stream resets, PINGs or SETTINGS by its [`FrameMeter`]; both are counted
//! in `wasmlet_connections_closed_total`.

use crate::http::frame_meter::{Budgets, FrameMeter};
use crate::observe::metrics::{CLOSE_REASONS, ReasonLabel};
use crate::run::body::Flags;
use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::{self, HttpServerConnExec};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// hyper's smallest allowed read buffer, which bounds the request head.
const MIN_HEAD_BUFFER: usize = 8192;
/// First pause after a failed accept (for example out of file descriptors).
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause after failed accepts in a row; each failure doubles it.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// HTTP/2 flow-control window of one stream, in bytes: how much of one
/// request body a client may send ahead of the guest reading it (hyper's
/// default is 1 MiB).
const HTTP2_STREAM_WINDOW: u32 = 256 << 10;
/// HTTP/2 flow-control window of a whole connection, in bytes: what one
/// connection's unread request bodies may hold at most.
const HTTP2_CONNECTION_WINDOW: u32 = 1 << 20;
/// Response bytes hyper buffers per HTTP/2 stream for a client whose window
/// is shut (hyper's default, 400 KiB, is 40 MiB for 100 stalled streams).
const HTTP2_MAX_SEND_BUFFER: usize = 64 << 10;
/// Streams a client may open and reset before the host accepted them; more
/// and the connection gets GOAWAY (h2's own default, said explicitly).
const HTTP2_MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// How long a connection closed for idleness may take to say goodbye (an
/// HTTP/2 GOAWAY and its PING) before it is dropped.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);
/// How often a connection's responses are checked for one stalled on the
/// client's flow-control window, as a share of the write timeout.
const STALL_CHECKS_PER_TIMEOUT: u32 = 4;
/// The `reason` of a connection closed for a stalled response.
const WINDOW_STALL: &str = CLOSE_REASONS[3];

/// What one port allows its clients.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Which port, for log lines.
    pub port: &'static str,
    /// Connections open at once; more wait in the kernel's accept backlog.
    pub max_connections: usize,
    /// Time a client has to send a request head, idle keep-alive included;
    /// also the longest a connection may stay with no request in progress
    /// (before its first request: the TLS handshake and protocol sniff).
    pub header_read_timeout: Duration,
    /// Time a write may make no progress before the connection is closed.
    pub write_timeout: Duration,
    /// Largest request head, in bytes (HTTP/2: the decoded header list).
    pub max_header_size: u64,
    /// Streams one HTTP/2 connection may have open at once; `None`: the
    /// port speaks HTTP/1 only.
    pub http2_max_streams: Option<u32>,
}

/// Accepts and serves the connections of one port under its [`Policy`].
pub struct Connections {
    policy: Policy,
    http: auto::Builder<TokioExecutor>,
    open: Arc<Semaphore>,
    /// Where connections a guard closed are counted, by reason.
    closed: Option<Family<ReasonLabel, Counter>>,
}

impl Connections {
    pub fn new(policy: Policy) -> Connections {
        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(policy.header_read_timeout)
            .max_buf_size(
                usize::try_from(policy.max_header_size)
                    .unwrap_or(usize::MAX)
                    .max(MIN_HEAD_BUFFER),
            )
            .keep_alive(true);
        let max_header_list = u32::try_from(policy.max_header_size).unwrap_or(u32::MAX);
        let http = match policy.http2_max_streams {
            None => http.http1_only(),
            Some(streams) => {
                http.http2()
                    .timer(TokioTimer::new())
                    .max_concurrent_streams(streams)
                    .max_header_list_size(max_header_list)
                    .initial_stream_window_size(HTTP2_STREAM_WINDOW)
                    .initial_connection_window_size(HTTP2_CONNECTION_WINDOW)
                    .adaptive_window(false)
                    .max_send_buf_size(HTTP2_MAX_SEND_BUFFER)
                    .max_pending_accept_reset_streams(HTTP2_MAX_PENDING_ACCEPT_RESETS);
                http
            }
        };
        Connections {
            open: Arc::new(Semaphore::new(policy.max_connections)),
            policy,
            http,
            closed: None,
        }
    }

    /// Counts the connections a guard closes into `closed`, by reason.
    pub fn counting_closes(mut self, closed: Family<ReasonLabel, Counter>) -> Connections {
        self.closed = Some(closed);
        self
    }

    /// Logs and counts a connection a guard closed.
    fn guard_closed(&self, reason: &'static str) {
        tracing::warn!(
            port = self.policy.port,
            reason,
            "closing a connection: the client went past a guard"
        );
        if let Some(closed) = &self.closed {
            closed
                .get_or_create(&ReasonLabel {
                    reason: reason.to_string(),
                })
                .inc();
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The next connection, once fewer than the cap are open. The permit
    /// must live as long as the connection. Failed accepts are logged and
    /// retried after a pause that doubles up to [`ACCEPT_BACKOFF_MAX`].
    /// Cancel-safe: dropping the future loses no connection.
    pub async fn accept(&self, listener: &TcpListener) -> (TcpStream, OwnedSemaphorePermit) {
        let permit = self
            .open
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let mut backoff = ACCEPT_BACKOFF_MIN;
        loop {
            match listener.accept().await {
                Ok((stream, _peer)) => {
                    self.configure(&stream);
                    return (stream, permit);
                }
                Err(e) => {
                    tracing::warn!(port = self.policy.port, error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                }
            }
        }
    }

    /// Socket options: no Nagle delay, and the kernel gives up on data a
    /// peer has not acknowledged within the write timeout (also after the
    /// connection is closed, when the bytes are no longer ours to time).
    fn configure(&self, stream: &TcpStream) {
        let _ = stream.set_nodelay(true);
        let socket = socket2::SockRef::from(stream);
        if let Err(e) = socket.set_tcp_user_timeout(Some(self.policy.write_timeout)) {
            tracing::debug!(error = %e, "failed to set TCP_USER_TIMEOUT");
        }
    }

    /// `stream` under the write timeout: what TLS (if any) and HTTP run on.
    pub fn io(&self, stream: TcpStream) -> WriteDeadline<TcpStream> {
        WriteDeadline::new(stream, self.policy.write_timeout)
    }

    /// The connection serving `io` with `service`; run it on the runtime
    /// `io` is registered with.
    pub fn serve<I, S, B>(
        &self,
        io: I,
        service: S,
    ) -> auto::Connection<'_, TokioIo<I>, S, TokioExecutor>
    where
        I: AsyncRead + AsyncWrite + Unpin + 'static,
        S: Service<http::Request<Incoming>, Response = http::Response<B>>,
        S::Future: 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        B: Body + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        TokioExecutor: HttpServerConnExec<S::Future, B>,
    {
        self.http.serve_connection(TokioIo::new(io), service)
    }

    /// Serves `io` with `service` until the connection ends: closed
    /// gracefully (HTTP/2: GOAWAY, the streams in progress finish) once
    /// `drain` resolves, and also when no request has been in progress on
    /// it for the header-read timeout, counted by `activity`, or when one
    /// of its responses waited the write timeout on the client's window
    /// (then dropped [`IDLE_CLOSE_GRACE`] later if it has not ended). Its
    /// HTTP/2 frames are metered ([`FrameMeter`]): a flood ends it.
    pub async fn run<I, S, B>(
        &self,
        io: I,
        service: S,
        activity: &Activity,
        drain: impl Future<Output = ()>,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
    where
        I: AsyncRead + AsyncWrite + Unpin + 'static,
        S: Service<http::Request<Incoming>, Response = http::Response<B>>,
        S::Future: 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        B: Body + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        TokioExecutor: HttpServerConnExec<S::Future, B>,
    {
        let io = FrameMeter::new(io, Budgets::default());
        let tripped = io.tripped();
        let connection = self.serve(io, service);
        let idle = activity.idle_for(self.policy.header_read_timeout);
        let stall = activity.stalled_for(self.policy.write_timeout);
        let grace = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(connection, drain, idle, stall, grace);
        let (mut draining, mut closing) = (false, false);
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Some(&reason) = tripped.get() {
                        self.guard_closed(reason);
                    }
                    return result;
                }
                () = &mut drain, if !draining => {
                    draining = true;
                    connection.as_mut().graceful_shutdown();
                }
                () = &mut idle, if !closing => {
                    tracing::debug!(port = self.policy.port, "closing a connection with no request in progress");
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                    grace.as_mut().reset(Instant::now() + IDLE_CLOSE_GRACE);
                }
                () = &mut stall, if !closing => {
                    self.guard_closed(WINDOW_STALL);
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                    grace.as_mut().reset(Instant::now() + IDLE_CLOSE_GRACE);
                }
                () = &mut grace, if closing => return Ok(()),
            }
        }
    }
}

/// Requests in progress on one connection, and since when none has been:
/// what [`Connections::run`] closes idle connections by. Each request
/// holds a [`Busy`] from its head until its response body is done.
#[derive(Clone)]
pub struct Activity(Arc<Mutex<Requests>>);

struct Requests {
    busy: usize,
    idle_since: Instant,
    /// The flags of the guest responses sent on it ([`Activity::watch`]).
    responses: Vec<Weak<Flags>>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity::new()
    }
}

impl Activity {
    /// No request yet, idle since now (call it at accept).
    pub fn new() -> Activity {
        Activity(Arc::new(Mutex::new(Requests {
            busy: 0,
            idle_since: Instant::now(),
            responses: Vec::new(),
        })))
    }

    /// Watches a guest's response on this connection for a stall on the
    /// client's flow-control window (see [`Activity::stalled_for`]).
    pub fn watch(&self, flags: &Arc<Flags>) {
        let mut requests = self.0.lock().expect("never poisoned");
        if requests.responses.len() >= requests.responses.capacity() {
            requests.responses.retain(|flags| flags.strong_count() > 0);
        }
        requests.responses.push(Arc::downgrade(flags));
    }

    /// Whether a response still in progress has waited `limit` or longer
    /// for the connection to take its next frame.
    fn stalled(&self, limit: Duration) -> bool {
        let mut requests = self.0.lock().expect("never poisoned");
        requests.responses.retain(|flags| flags.strong_count() > 0);
        requests
            .responses
            .iter()
            .filter_map(Weak::upgrade)
            .any(|flags| flags.download_waited() >= limit)
    }

    /// Resolves once a response has waited `limit` on the client (checked
    /// [`STALL_CHECKS_PER_TIMEOUT`] times per `limit`).
    async fn stalled_for(&self, limit: Duration) {
        let every = (limit / STALL_CHECKS_PER_TIMEOUT).max(Duration::from_millis(10));
        loop {
            tokio::time::sleep(every).await;
            if self.stalled(limit) {
                return;
            }
        }
    }

    /// A request started; it ends when the guard is dropped.
    pub fn busy(&self) -> Busy {
        self.0.lock().expect("never poisoned").busy += 1;
        Busy(self.clone())
    }

    /// Since when no request has been in progress; `None` while one is.
    fn idle_since(&self) -> Option<Instant> {
        let requests = self.0.lock().expect("never poisoned");
        (requests.busy == 0).then_some(requests.idle_since)
    }

    /// Resolves once no request has been in progress for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let wake = match self.idle_since() {
                Some(since) if since + timeout <= Instant::now() => return,
                Some(since) => since + timeout,
                None => Instant::now() + timeout,
            };
            tokio::time::sleep_until(wake).await;
        }
    }
}

/// One request in progress on a connection (see [`Activity`]).
pub struct Busy(Activity);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut requests = (self.0).0.lock().expect("never poisoned");
        requests.busy -= 1;
        if requests.busy == 0 {
            requests.idle_since = Instant::now();
        }
    }
}

/// An I/O stream whose writes fail with `TimedOut` once they have made no
/// progress for `timeout`: the timer is armed when a write or flush would
/// block, and disarmed by any write that moves bytes.
pub struct WriteDeadline<T> {
    inner: T,
    timeout: Duration,
    /// Made on the first blocked write; reset, not reallocated, after it.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl<T> WriteDeadline<T> {
    pub fn new(inner: T, timeout: Duration) -> WriteDeadline<T> {
        WriteDeadline {
            inner,
            timeout,
            timer: None,
            armed: false,
        }
    }

    /// Called when a write would block: arms the timer if it is not
    /// already running, and says whether it has run out.
    fn blocked(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let deadline = Instant::now() + self.timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            timer.as_mut().reset(deadline);
            self.armed = true;
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "the peer read nothing within the write timeout",
            )),
            Poll::Pending => Poll::Pending,
        }
    }

    fn on_write(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match poll {
            Poll::Pending => self.blocked(cx).map(Err),
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.armed = false;
                }
                Poll::Ready(Ok(n))
            }
            ready => ready,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.on_write(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.on_write(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.blocked(cx).map(Err),
            ready => ready,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_shutdown(cx) {
            Poll::Pending => self.blocked(cx).map(Err),
            ready => ready,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const TIMEOUT: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn a_write_that_makes_no_progress_times_out() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut io = WriteDeadline::new(near, TIMEOUT);
        // Fills the pipe, then blocks: nobody reads `far`.
        let started = Instant::now();
        let error = io.write_all(&[0u8; 4096]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        let elapsed = started.elapsed();
        assert!(elapsed >= TIMEOUT && elapsed < TIMEOUT * 5, "{elapsed:?}");
        // Reading frees room: writes go through again, the timer disarmed.
        let mut sink = vec![0u8; 1024];
        far.read_exact(&mut sink).await.unwrap();
        io.write_all(&[0u8; 512]).await.unwrap();
    }

    #[tokio::test]
    async fn a_connection_is_idle_only_with_no_request_in_progress() {
        let activity = Activity::new();
        let busy = activity.busy();
        let idle = activity.idle_for(TIMEOUT);
        tokio::pin!(idle);
        // A long request: never idle while it runs.
        assert!(
            tokio::time::timeout(TIMEOUT * 2, idle.as_mut())
                .await
                .is_err()
        );
        let ended = Instant::now();
        drop(busy);
        idle.await;
        assert!(ended.elapsed() >= TIMEOUT, "{:?}", ended.elapsed());
    }

    #[tokio::test]
    async fn a_slow_reader_that_keeps_reading_is_not_cut() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut io = WriteDeadline::new(near, TIMEOUT);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let mut total = 0;
            while total < 1024 {
                tokio::time::sleep(TIMEOUT / 3).await;
                total += far.read(&mut buf).await.unwrap();
            }
        });
        // 16 steps of 100 ms: far past the timeout in all, never without progress.
        io.write_all(&[0u8; 1024]).await.unwrap();
        reader.await.unwrap();
    }
}
