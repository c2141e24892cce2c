//! One connection setup for both ports: what a client may hold and for how long.
//!
//! The public and the admin server each build a [`Connections`] and call the
//! same two methods: [`Connections::accept`] (a connection cap, and a growing
//! pause after failed accepts) and [`Connections::serve`] (socket options, a
//! header-read timeout, and a write-progress timeout). A client that never
//! sends a full request head is closed by hyper's header timer; a client that
//! stops reading its responses is closed by [`WriteDeadline`], which hyper has
//! no equivalent of; bytes the kernel still holds after that are bounded by
//! `TCP_USER_TIMEOUT`.

use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::HttpService;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
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

/// What one port allows its clients.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Which port, for log lines.
    pub port: &'static str,
    /// Connections open at once; more wait in the kernel's accept backlog.
    pub max_connections: usize,
    /// Time a client has to send a request head, idle keep-alive included.
    pub header_read_timeout: Duration,
    /// Time a write may make no progress before the connection is closed.
    pub write_timeout: Duration,
    /// Largest request head, in bytes.
    pub max_header_size: u64,
}

/// Accepts and serves the connections of one port under its [`Policy`].
pub struct Connections {
    policy: Policy,
    http: http1::Builder,
    open: Arc<Semaphore>,
}

impl Connections {
    pub fn new(policy: Policy) -> Connections {
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(policy.header_read_timeout)
            .max_buf_size(
                usize::try_from(policy.max_header_size)
                    .unwrap_or(usize::MAX)
                    .max(MIN_HEAD_BUFFER),
            )
            .keep_alive(true);
        Connections {
            open: Arc::new(Semaphore::new(policy.max_connections)),
            policy,
            http,
        }
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

    /// The HTTP/1 connection serving `stream` with `service`; run it on
    /// the runtime `stream` is registered with.
    pub fn serve<S>(
        &self,
        stream: TcpStream,
        service: S,
    ) -> http1::Connection<TokioIo<WriteDeadline<TcpStream>>, S>
    where
        S: HttpService<Incoming>,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        S::ResBody: 'static,
        <S::ResBody as Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let io = WriteDeadline::new(stream, self.policy.write_timeout);
        self.http.serve_connection(TokioIo::new(io), service)
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
