//! A per-connection meter of the HTTP/2 frames a client sends, for the
//! floods hyper and h2 do not limit: PING, SETTINGS and RST_STREAM.
//!
//! h2 answers every PING and SETTINGS (one pending answer at a time, so
//! memory stays bounded, CPU and bandwidth do not) and counts only the
//! resets of streams it has not yet handed to the host; a stream reset
//! after hyper started its request (the "rapid reset" of CVE-2023-44487)
//! costs a request each time. hyper shows no frames, so [`FrameMeter`]
//! reads them below it: it wraps the connection's clear-text bytes (above
//! TLS), and once the first 24 bytes are the HTTP/2 preface it walks the
//! 9-byte frame headers in whatever each read returned, skipping payloads
//! without copying them. Each kind of frame draws from a token bucket
//! ([`Budget`]); a client past one has its next read fail, which ends the
//! connection, and [`FrameMeter::tripped`] says why. HTTP/1 bytes are
//! passed through untouched.

use crate::observe::metrics::CLOSE_REASONS;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Bytes of a frame header: length (24 bits), type, flags, stream id.
const FRAME_HEADER: usize = 9;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
/// The ACK flag of SETTINGS and PING: an answer, not a request.
const ACK: u8 = 0x1;

/// A token bucket: `burst` frames at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub burst: u32,
    pub per_second: u32,
}

/// RST_STREAM frames one client may send: Node.js's defaults
/// (`streamResetBurst` 1000, `streamResetRate` 33/s). A browser or a gRPC
/// client cancels a few streams now and then; a rapid-reset attack sends
/// thousands a second.
pub const HTTP2_RESETS: Budget = Budget {
    burst: 1000,
    per_second: 33,
};
/// PING frames (not answers) one client may send: headroom for grpc-core's
/// BDP pings (at most one per round trip while data flows, backing off)
/// and keepalive pings (one per minute or slower).
pub const HTTP2_PINGS: Budget = Budget {
    burst: 100,
    per_second: 10,
};
/// SETTINGS frames (not acknowledgements) one client may send: one at the
/// start, then a rare change.
pub const HTTP2_SETTINGS: Budget = Budget {
    burst: 100,
    per_second: 10,
};

/// Why a meter closed a connection: the `reason` label of
/// `wasmlet_connections_closed_total`.
pub const RESET_FLOOD: &str = CLOSE_REASONS[0];
pub const PING_FLOOD: &str = CLOSE_REASONS[1];
pub const SETTINGS_FLOOD: &str = CLOSE_REASONS[2];

/// What a [`FrameMeter`] allows one connection.
#[derive(Debug, Clone, Copy)]
pub struct Budgets {
    pub resets: Budget,
    pub pings: Budget,
    pub settings: Budget,
}

impl Default for Budgets {
    fn default() -> Budgets {
        Budgets {
            resets: HTTP2_RESETS,
            pings: HTTP2_PINGS,
            settings: HTTP2_SETTINGS,
        }
    }
}

/// A token bucket's state.
struct Bucket {
    budget: Budget,
    tokens: f64,
    refilled: Instant,
}

impl Bucket {
    fn new(budget: Budget, now: Instant) -> Bucket {
        Bucket {
            budget,
            tokens: f64::from(budget.burst),
            refilled: now,
        }
    }

    /// Takes one token; false when none is left.
    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + elapsed * f64::from(self.budget.per_second))
            .min(f64::from(self.budget.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Where the meter is in the byte stream.
enum Position {
    /// Matching the preface: this many bytes matched so far.
    Preface(usize),
    /// Not HTTP/2: nothing to meter.
    Off,
    /// Inside a frame header: its bytes so far.
    Header([u8; FRAME_HEADER], usize),
    /// Skipping this many payload bytes.
    Payload(usize),
}

/// An I/O stream whose reads are metered (see the module docs).
pub struct FrameMeter<T> {
    inner: T,
    position: Position,
    resets: Bucket,
    pings: Bucket,
    settings: Bucket,
    tripped: Arc<OnceLock<&'static str>>,
}

impl<T> FrameMeter<T> {
    pub fn new(inner: T, budgets: Budgets) -> FrameMeter<T> {
        let now = Instant::now();
        FrameMeter {
            inner,
            position: Position::Preface(0),
            resets: Bucket::new(budgets.resets, now),
            pings: Bucket::new(budgets.pings, now),
            settings: Bucket::new(budgets.settings, now),
            tripped: Arc::new(OnceLock::new()),
        }
    }

    /// Set to the reason once the client went past a budget.
    pub fn tripped(&self) -> Arc<OnceLock<&'static str>> {
        self.tripped.clone()
    }

    /// Walks `bytes`, just read; the reason when a budget ran out.
    fn meter(&mut self, mut bytes: &[u8]) -> Option<&'static str> {
        let now = Instant::now();
        while !bytes.is_empty() {
            match &mut self.position {
                Position::Off => return None,
                Position::Preface(matched) => {
                    let want = &PREFACE[*matched..];
                    let n = want.len().min(bytes.len());
                    if bytes[..n] != want[..n] {
                        self.position = Position::Off;
                        return None;
                    }
                    *matched += n;
                    bytes = &bytes[n..];
                    if *matched == PREFACE.len() {
                        self.position = Position::Header([0; FRAME_HEADER], 0);
                    }
                }
                Position::Header(header, have) => {
                    let n = (FRAME_HEADER - *have).min(bytes.len());
                    header[*have..*have + n].copy_from_slice(&bytes[..n]);
                    *have += n;
                    bytes = &bytes[n..];
                    if *have < FRAME_HEADER {
                        continue;
                    }
                    let header = *header;
                    let length = (usize::from(header[0]) << 16)
                        | (usize::from(header[1]) << 8)
                        | usize::from(header[2]);
                    let (kind, flags) = (header[3], header[4]);
                    let over = match kind {
                        RST_STREAM if !self.resets.take(now) => Some(RESET_FLOOD),
                        PING if flags & ACK == 0 && !self.pings.take(now) => Some(PING_FLOOD),
                        SETTINGS if flags & ACK == 0 && !self.settings.take(now) => {
                            Some(SETTINGS_FLOOD)
                        }
                        _ => None,
                    };
                    if over.is_some() {
                        return over;
                    }
                    self.position = if length == 0 {
                        Position::Header([0; FRAME_HEADER], 0)
                    } else {
                        Position::Payload(length)
                    };
                }
                Position::Payload(left) => {
                    let n = (*left).min(bytes.len());
                    *left -= n;
                    bytes = &bytes[n..];
                    if *left == 0 {
                        self.position = Position::Header([0; FRAME_HEADER], 0);
                    }
                }
            }
        }
        None
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for FrameMeter<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(reason) = self.tripped.get() {
            return Poll::Ready(Err(flooded(reason)));
        }
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &poll
            && !matches!(self.position, Position::Off)
            && let Some(reason) = self.meter(&buf.filled()[before..])
        {
            let _ = self.tripped.set(reason);
            return Poll::Ready(Err(flooded(reason)));
        }
        poll
    }
}

fn flooded(reason: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        format!("the client went past its HTTP/2 frame budget ({reason})"),
    )
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FrameMeter<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut bytes = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        bytes.extend_from_slice(&[0, 0, 0, 1]);
        bytes.extend_from_slice(payload);
        bytes
    }

    fn small() -> Budgets {
        let budget = Budget {
            burst: 3,
            per_second: 1,
        };
        Budgets {
            resets: budget,
            pings: budget,
            settings: budget,
        }
    }

    /// Feeds `bytes` in pieces of `step`: the reason of the first trip.
    fn feed(bytes: &[u8], step: usize) -> Option<&'static str> {
        let mut meter = FrameMeter::new((), small());
        bytes.chunks(step).find_map(|piece| meter.meter(piece))
    }

    #[test]
    fn floods_trip_their_budget_however_the_reads_split_them() {
        for step in [1, 5, 9, 10, 4096] {
            let mut bytes = PREFACE.to_vec();
            bytes.extend(frame(SETTINGS, 0, &[0; 6]));
            // Acknowledgements are free, and so is everything else.
            for _ in 0..10 {
                bytes.extend(frame(PING, ACK, &[0; 8]));
                bytes.extend(frame(SETTINGS, ACK, &[]));
                bytes.extend(frame(0x0, 0, &[b'a'; 100]));
            }
            bytes.extend(frame(PING, 0, &[0; 8]));
            bytes.extend(frame(PING, 0, &[0; 8]));
            bytes.extend(frame(RST_STREAM, 0, &[0; 4]));
            assert_eq!(feed(&bytes, step), None, "step {step}");
            bytes.extend(frame(PING, 0, &[0; 8]));
            bytes.extend(frame(PING, 0, &[0; 8]));
            assert_eq!(feed(&bytes, step), Some(PING_FLOOD), "step {step}");
            let mut resets = PREFACE.to_vec();
            for _ in 0..4 {
                resets.extend(frame(RST_STREAM, 0, &[0; 4]));
            }
            assert_eq!(feed(&resets, step), Some(RESET_FLOOD), "step {step}");
            let mut settings = PREFACE.to_vec();
            for _ in 0..4 {
                settings.extend(frame(SETTINGS, 0, &[]));
            }
            assert_eq!(feed(&settings, step), Some(SETTINGS_FLOOD), "step {step}");
        }
    }

    #[test]
    fn http1_is_not_metered() {
        let mut bytes = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n".to_vec();
        for _ in 0..10 {
            bytes.extend(frame(PING, 0, &[0; 8]));
        }
        assert_eq!(feed(&bytes, 7), None);
    }

    #[test]
    fn a_budget_refills_over_time() {
        let start = Instant::now();
        let mut bucket = Bucket::new(
            Budget {
                burst: 2,
                per_second: 10,
            },
            start,
        );
        assert!(bucket.take(start) && bucket.take(start));
        assert!(!bucket.take(start));
        let later = start + std::time::Duration::from_millis(100);
        assert!(bucket.take(later));
        assert!(!bucket.take(later));
    }
}
