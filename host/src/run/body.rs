//! The bodies of a request and its response, and the host's own answers.
//!
//! [`GuardedBody`] is the request body as a guest reads it: counted, cut
//! off past the route's limit (413) or when the client sends it slower
//! than --min-body-rate (408). [`ResponseBody`] is every response's body:
//! it counts what goes out, cuts a guest's body that a fault ended, and
//! tells a canary how the response ended ([`Ending`]). [`Flags`] are what
//! the two share with the guest's run. Both wasi:http versions use them.

use crate::observe::trace::RequestTrace;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use prometheus_client::metrics::counter::Counter;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// Seconds a client is told to wait after a host 503 (no request slot, no
/// memory budget or pool slot left).
const RETRY_AFTER_SECONDS: &str = "1";

/// Time a client may spend on a request body before --min-body-rate
/// applies: covers a connection's slow start and a client's pause between
/// head and body, and is short against the 20 s default request timeout.
const BODY_RATE_GRACE: Duration = Duration::from_secs(5);

/// After the host refused a request body (413), how much more of it the
/// host reads and throws away, and for how long at most, before it closes
/// the connection: a client still sending its body then reads the answer,
/// where closing on unread bytes would reset the connection under it and
/// the answer with it (the "lingering close" of nginx and Apache).
const LINGER_BYTES: usize = 1 << 20;
const LINGER_TIME: Duration = Duration::from_secs(2);

/// How long the host must have been waiting on the client when a request
/// times out for the timeout to be the client's doing: waiting for request
/// body bytes the guest asked for, or for the client to take the response
/// body the guest wrote (its receive window full, so the guest is blocked
/// on its write). A client keeping up never makes the host wait this long
/// between two body frames; a guest spinning or sleeping on its own is
/// not waiting on the client at all.
pub const CLIENT_STALL: Duration = Duration::from_millis(100);

/// Per-request flags shared by the request side, the guest task and the
/// response body.
pub struct Flags {
    /// The route's request body limit, in bytes.
    body_limit: u64,
    /// --min-body-rate in bytes per second (0: no minimum).
    min_body_rate: u64,
    /// The request body went past the route's limit.
    too_large: AtomicBool,
    /// The request body arrived slower than --min-body-rate.
    too_slow: AtomicBool,
    /// The client went away (or broke the request body) before the
    /// body's end, or cancelled the request ([`Flags::cancel`]).
    client_gone: AtomicBool,
    /// Wakes the guest's run when the request is cancelled.
    cancel: Notify,
    /// The guest faulted; set before its store (and so the response body
    /// stream) is dropped, so a body that ends after it is cut, not finished.
    faulted: AtomicBool,
    /// The guest timed out while the host waited on the client (see
    /// [`CLIENT_STALL`]).
    stalled_by_client: AtomicBool,
    /// A deadline the client asked for (a gRPC `grpc-timeout`); the
    /// route's `timeout` applies when it is longer.
    client_timeout: Option<Duration>,
    /// The origin of the two waits below.
    started: std::time::Instant,
    /// Since when the host has waited for request body bytes the guest
    /// asked for: nanoseconds after `started`, plus 1; 0 while not waiting.
    upload_wait: AtomicU64,
    /// Since when the connection has held the response body's last frame
    /// without asking for the next (same encoding).
    download_wait: AtomicU64,
    /// The request's trace: the runner's spans are its children.
    pub trace: RequestTrace,
}

impl Flags {
    /// The flags of a request whose body may hold `body_limit` bytes and
    /// must arrive at `min_body_rate` bytes per second or faster.
    pub fn new(body_limit: u64, min_body_rate: u64) -> Flags {
        Flags {
            body_limit,
            min_body_rate,
            too_large: AtomicBool::new(false),
            too_slow: AtomicBool::new(false),
            client_gone: AtomicBool::new(false),
            cancel: Notify::new(),
            faulted: AtomicBool::new(false),
            stalled_by_client: AtomicBool::new(false),
            client_timeout: None,
            started: std::time::Instant::now(),
            upload_wait: AtomicU64::new(0),
            download_wait: AtomicU64::new(0),
            trace: RequestTrace::default(),
        }
    }

    /// Under `trace`, the request's trace.
    pub fn with_trace(mut self, trace: RequestTrace) -> Flags {
        self.trace = trace;
        self
    }

    /// With a deadline the client asked for (`None`: none), kept only when
    /// it is shorter than the route's `timeout`.
    pub fn with_client_timeout(mut self, client: Option<Duration>, route: Duration) -> Flags {
        self.client_timeout = client.filter(|client| *client < route);
        self
    }

    /// How long this request may run: the route's `timeout`, or the
    /// client's, when it asked for less.
    pub fn timeout(&self, route: Duration) -> Duration {
        self.client_timeout.unwrap_or(route)
    }

    /// Whether the request's deadline is one its client chose: a timeout
    /// then is the client's doing, not the handler's fault.
    pub fn client_deadline(&self) -> bool {
        self.client_timeout.is_some()
    }

    /// The client gave up on the request (reset its HTTP/2 stream, closed
    /// the connection, or left before the response body's end): its guest
    /// is stopped like a timeout stops it, and what follows is the
    /// client's doing (`client_gone`), not the handler's fault.
    pub fn cancel(&self) {
        self.client_gone.store(true, Ordering::Release);
        self.cancel.notify_one();
    }

    /// Resolves once the request is cancelled (one waiter: the guest's run).
    pub async fn cancelled(&self) {
        self.cancel.notified().await
    }

    /// How long the connection has held the response body's last frame
    /// without asking for the next: an HTTP/2 client that keeps its flow-
    /// control window shut makes this grow.
    pub fn download_waited(&self) -> Duration {
        match self.download_wait.load(Ordering::Acquire) {
            0 => Duration::ZERO,
            since => self
                .started
                .elapsed()
                .saturating_sub(Duration::from_nanos(since - 1)),
        }
    }
}

#[cfg(test)]
impl Default for Flags {
    fn default() -> Flags {
        Flags::new(u64::MAX, 0)
    }
}

impl Flags {
    /// The host's answer when the request body was refused, if it was.
    pub fn refusal(&self) -> Option<Response<ResponseBody>> {
        if self.too_large.load(Ordering::Acquire) {
            Some(body_too_large(self.body_limit))
        } else if self.too_slow.load(Ordering::Acquire) {
            Some(host_response(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "request body arrived slower than {} bytes/s\n",
                    self.min_body_rate
                ),
            ))
        } else {
            None
        }
    }

    /// Why the host refused the request, if it did: its body too large
    /// (`body_too_large`), too slow (`body_too_slow`), or its client gone
    /// before the body's end (`client_gone`). A guest's failure after
    /// that is not its own.
    pub fn refused(&self) -> Option<&'static str> {
        if self.too_large.load(Ordering::Acquire) {
            Some("body_too_large")
        } else if self.too_slow.load(Ordering::Acquire) {
            Some("body_too_slow")
        } else if self.client_gone.load(Ordering::Acquire) {
            Some("client_gone")
        } else {
            None
        }
    }

    /// Whether the response body must be cut rather than ended.
    pub fn cut(&self) -> bool {
        self.faulted.load(Ordering::Acquire)
            || self.too_large.load(Ordering::Acquire)
            || self.too_slow.load(Ordering::Acquire)
    }

    /// Whether the guest faulted.
    pub fn faulted(&self) -> bool {
        self.faulted.load(Ordering::Acquire)
    }

    /// Records that the guest faulted (`timed_out`: by its wall-clock
    /// limit), and whether a timeout was the client's doing: a deadline the
    /// client chose, or it hit while the host had waited at least
    /// [`CLIENT_STALL`] on the client. Call
    /// before the guest's store (and so its response body stream) is
    /// dropped.
    pub fn fault(&self, timed_out: bool) {
        if timed_out && (self.client_deadline() || self.waited_on_client() >= CLIENT_STALL) {
            self.stalled_by_client.store(true, Ordering::Release);
        }
        self.faulted.store(true, Ordering::Release);
    }

    /// Whether the request ended badly through its client: a body refused
    /// (too large, too slow) or broken off, or a timeout while the host
    /// waited on it.
    pub fn client_caused(&self) -> bool {
        self.stalled_by_client.load(Ordering::Acquire) || self.refused().is_some()
    }

    /// How long the host has been waiting on the client now (the longer
    /// of the two waits).
    fn waited_on_client(&self) -> Duration {
        let now = self.started.elapsed();
        [&self.upload_wait, &self.download_wait]
            .into_iter()
            .map(|wait| match wait.load(Ordering::Acquire) {
                0 => Duration::ZERO,
                since => now.saturating_sub(Duration::from_nanos(since - 1)),
            })
            .max()
            .unwrap_or_default()
    }

    /// Marks the start of a wait on the client, unless one is marked.
    fn wait_starts(&self, wait: &AtomicU64) {
        let since = (self.started.elapsed().as_nanos() as u64).saturating_add(1);
        let _ = wait.compare_exchange(0, since, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// The `content-length` of a request or response, when it has a valid one.
pub fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

pub fn body_too_large(limit: u64) -> Response<ResponseBody> {
    host_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("request body larger than {limit} bytes\n"),
    )
}

/// A plain-text response produced by the host itself.
pub fn host_response(status: StatusCode, text: &str) -> Response<ResponseBody> {
    let body = http_body_util::Full::new(Bytes::copy_from_slice(text.as_bytes()))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = Response::new(ResponseBody::from_host(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    // The host answers 503 only for a passing shortage: a slot or memory.
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECONDS),
        );
    }
    response
}

/// The request body as the guest reads it: counted, and cut off with an
/// error past the route's limit (whatever `content-length` claimed) or
/// when the client sends it too slowly.
pub struct GuardedBody {
    /// Taken by [`linger`] when the body is dropped refused.
    inner: Option<Incoming>,
    remaining: u64,
    limit: u64,
    flags: Arc<Flags>,
    counter: Counter,
    pace: BodyPace,
}

/// `request` with its body guarded by `flags` (counted into `counter`),
/// or the host's 413 when its declared length is over the limit.
#[allow(clippy::result_large_err)]
pub fn guard(
    request: Request<Incoming>,
    flags: &Arc<Flags>,
    counter: &Counter,
) -> Result<Request<GuardedBody>, Response<ResponseBody>> {
    let limit = flags.body_limit;
    if declared_length(request.headers()).is_some_and(|len| len > limit) {
        flags.too_large.store(true, Ordering::Release);
        linger(request.into_body());
        return Err(body_too_large(limit));
    }
    Ok(request.map(|body| GuardedBody {
        inner: Some(body),
        remaining: limit,
        limit,
        flags: flags.clone(),
        counter: counter.clone(),
        pace: BodyPace::new(flags.min_body_rate),
    }))
}

/// The client's pace on a request body: the time the host has spent
/// waiting for body bytes, against what the minimum rate allows for the
/// bytes received so far (after [`BODY_RATE_GRACE`]). Only waiting counts,
/// so a guest that reads slowly never makes its client look slow.
struct BodyPace {
    /// Bytes per second; 0: no minimum.
    min_rate: u64,
    received: u64,
    waited: Duration,
    waiting_since: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl BodyPace {
    fn new(min_rate: u64) -> BodyPace {
        BodyPace {
            min_rate,
            received: 0,
            waited: Duration::ZERO,
            waiting_since: None,
            timer: None,
        }
    }

    /// The waiting time allowed for the bytes received so far.
    fn allowed(&self) -> Duration {
        let secs = self.received as f64 / self.min_rate as f64;
        BODY_RATE_GRACE.saturating_add(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))
    }

    /// Called while the client has sent nothing new: ready once it has
    /// taken longer than the rate allows.
    fn poll_waiting(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.min_rate == 0 {
            return Poll::Pending;
        }
        let since = *self.waiting_since.get_or_insert_with(Instant::now);
        let Some(deadline) = since.checked_add(self.allowed().saturating_sub(self.waited)) else {
            return Poll::Pending;
        };
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx)
    }

    /// Called when the client sent something (`len` body bytes).
    fn arrived(&mut self, len: u64) {
        if let Some(since) = self.waiting_since.take() {
            self.waited += since.elapsed();
        }
        self.received += len;
    }
}

/// Reads and throws away what is left of a refused request body, up to
/// [`LINGER_BYTES`] and for [`LINGER_TIME`] at most, on a task of its own
/// (nothing when no runtime runs, or the body has ended).
fn linger(mut body: Incoming) {
    if body.is_end_stream() {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let drain = async {
            let mut read = 0;
            while let Some(Ok(frame)) = body.frame().await {
                read += frame.data_ref().map_or(0, Bytes::len);
                if read > LINGER_BYTES {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(LINGER_TIME, drain).await;
    });
}

impl Drop for GuardedBody {
    fn drop(&mut self) {
        if self.flags.too_large.load(Ordering::Acquire)
            && let Some(body) = self.inner.take()
        {
            linger(body);
        }
    }
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if polled.is_pending() {
            self.flags.wait_starts(&self.flags.upload_wait);
            ready!(self.pace.poll_waiting(cx));
            self.flags.too_slow.store(true, Ordering::Release);
            return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::ConnectionReadTimeout)));
        }
        self.flags.upload_wait.store(0, Ordering::Release);
        let frame = match ready!(polled) {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                self.flags.client_gone.store(true, Ordering::Release);
                return Poll::Ready(Some(Err(e.into())));
            }
            None => return Poll::Ready(None),
        };
        self.pace
            .arrived(frame.data_ref().map_or(0, |data| data.len() as u64));
        if let Some(data) = frame.data_ref() {
            let len = data.len() as u64;
            if len > self.remaining {
                self.flags.too_large.store(true, Ordering::Release);
                self.remaining = 0;
                return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpRequestBodySize(
                    Some(self.limit),
                ))));
            }
            self.remaining -= len;
            self.counter.inc_by(len);
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Incoming::size_hint)
    }
}

/// How a response ended, for whoever counts outcomes (a canary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Its body ended: the status tells.
    Whole,
    /// The guest faulted after the head: a failure of the handler.
    Faulted,
    /// The client caused the bad end: its request body was refused, or the
    /// guest timed out waiting on it (see [`CLIENT_STALL`]).
    ClientCaused,
    /// Dropped before its end with no fault: the client went away, or
    /// hyper never asked for a body (HEAD, 204, 304).
    Abandoned,
}

/// The body of every response the public server sends: counts the bytes
/// it sends, and for a guest's body, turns an end caused by a guest fault
/// into an error so the client sees a cut body, not a complete one.
pub struct ResponseBody {
    inner: HyperOutgoingBody,
    counter: Option<Counter>,
    guest: Option<Arc<Flags>>,
    /// The flags of the request it answers, when a handler was invoked.
    request: Option<Arc<Flags>>,
    /// The body reached its end (its last frame, or trailers).
    ended: bool,
    /// Data bytes handed to the connection, and the response's declared
    /// `content-length`: hyper stops asking once that many went out.
    sent: u64,
    length: Option<u64>,
    /// Told, when the body is dropped, how it ended.
    on_done: Option<Box<dyn FnOnce(Ending) + Send + Sync>>,
    /// Whatever must live as long as the body (a request slot).
    _held: Option<Box<dyn Send + Sync>>,
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        let ending = self.ending();
        if let Some(done) = self.on_done.take() {
            done(ending);
        }
        if let Some(flags) = &self.guest {
            // Gone: nothing waits on the client for it any more.
            flags.download_wait.store(0, Ordering::Release);
            // Dropped before its end: nobody reads what the guest writes on.
            if ending == Ending::Abandoned {
                flags.cancel();
            }
        }
    }
}

impl ResponseBody {
    pub fn from_guest(inner: HyperOutgoingBody, flags: Arc<Flags>) -> ResponseBody {
        ResponseBody {
            inner,
            counter: None,
            guest: Some(flags),
            request: None,
            ended: false,
            sent: 0,
            length: None,
            on_done: None,
            _held: None,
        }
    }

    /// Ties the body to the flags of the request it answers, and to the
    /// response's declared length.
    pub fn of_request(mut self, flags: Arc<Flags>, length: Option<u64>) -> ResponseBody {
        self.request = Some(flags);
        self.length = length;
        self
    }

    /// Whether the client caused the request's bad end so far (a refused
    /// body, a timeout while waiting on it).
    pub fn client_caused(&self) -> bool {
        self.request.as_ref().is_some_and(|f| f.client_caused())
    }

    /// How the body ended, or would if it were dropped now.
    fn ending(&self) -> Ending {
        if self.client_caused() {
            Ending::ClientCaused
        } else if self.guest.as_ref().is_some_and(|f| f.faulted()) {
            Ending::Faulted
        } else if self.ended
            || self.inner.is_end_stream()
            || self.length.is_some_and(|length| self.sent >= length)
        {
            Ending::Whole
        } else {
            Ending::Abandoned
        }
    }

    /// Keeps `held` until the body is done.
    pub fn holding(mut self, held: Box<dyn Send + Sync>) -> ResponseBody {
        self._held = Some(held);
        self
    }

    pub fn from_host(inner: HyperOutgoingBody) -> ResponseBody {
        ResponseBody {
            inner,
            counter: None,
            guest: None,
            request: None,
            ended: false,
            sent: 0,
            length: None,
            on_done: None,
            _held: None,
        }
    }

    /// The flags of the guest writing this body, if a guest does.
    pub fn guest_flags(&self) -> Option<&Arc<Flags>> {
        self.guest.as_ref()
    }

    /// Whether the host made this response itself (a guest may answer
    /// with the same statuses for its own reasons).
    pub fn is_from_host(&self) -> bool {
        self.guest.is_none()
    }

    /// Calls `done` once, when the body is dropped (sent whole, cut, or
    /// abandoned by the client), with how it ended: a fault after a
    /// successful head is known only then.
    pub fn on_done(mut self, done: impl FnOnce(Ending) + Send + Sync + 'static) -> ResponseBody {
        self.on_done = Some(Box::new(done));
        self
    }

    /// Counts the bytes sent into `counter`.
    pub fn count_into(mut self, counter: Counter) -> ResponseBody {
        self.counter = Some(counter);
        self
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        // Asked for the next frame: the client is keeping up (for now).
        if let Some(flags) = &self.guest {
            flags.download_wait.store(0, Ordering::Release);
        }
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                let len = frame.data_ref().map_or(0, |data| data.len() as u64);
                if let Some(counter) = &self.counter {
                    counter.inc_by(len);
                }
                self.sent += len;
                self.ended |= frame.is_trailers();
                // Until the connection asks again, the guest waits on the
                // client to take this one.
                if let Some(flags) = &self.guest {
                    flags.wait_starts(&flags.download_wait);
                }
            }
            // A fault, or a request body refused, after the head went out.
            None if self.guest.as_ref().is_some_and(|f| f.cut()) => {
                return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpResponseIncomplete)));
            }
            None => self.ended = true,
            Some(Err(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A timeout is the client's doing only when it hit while the host had
    /// waited CLIENT_STALL or more on the client; any other fault, or a
    /// timeout while the client kept up, is the handler's.
    #[test]
    fn a_timeout_while_waiting_on_the_client_is_the_clients() {
        let waited = || {
            let flags = Flags::default();
            flags.wait_starts(&flags.download_wait);
            std::thread::sleep(CLIENT_STALL + Duration::from_millis(20));
            flags
        };
        let flags = waited();
        flags.fault(true);
        assert!(flags.faulted() && flags.client_caused());

        let flags = waited();
        flags.fault(false);
        assert!(flags.faulted() && !flags.client_caused());

        // The connection asked for the next frame: no longer waiting.
        let flags = waited();
        flags.download_wait.store(0, Ordering::Release);
        flags.fault(true);
        assert!(!flags.client_caused());

        // Waiting on the upload counts the same; a short wait does not.
        let flags = Flags::default();
        flags.wait_starts(&flags.upload_wait);
        flags.fault(true);
        assert!(!flags.client_caused(), "waited less than CLIENT_STALL");
        let flags = Flags::default();
        flags.wait_starts(&flags.upload_wait);
        std::thread::sleep(CLIENT_STALL + Duration::from_millis(20));
        flags.fault(true);
        assert!(flags.client_caused());
    }

    /// What a canary is told when a guest's body is dropped: whole once it
    /// ended, or once its declared length went out (hyper asks no further);
    /// abandoned when the client left before; faulted or client-caused as
    /// the flags say.
    #[tokio::test]
    async fn a_response_body_reports_how_it_ended() {
        async fn ending(length: Option<u64>, frames: usize, flags: Flags) -> Ending {
            let chunks = (0..2).map(|_| {
                Ok::<_, wasmtime_wasi_http::Error>(Frame::data(Bytes::from_static(b"12345")))
            });
            let inner =
                http_body_util::StreamBody::new(futures_util::stream::iter(chunks)).boxed_unsync();
            let flags = Arc::new(flags);
            let seen = Arc::new(Mutex::new(None));
            let record = seen.clone();
            let mut body = ResponseBody::from_guest(inner, flags.clone())
                .of_request(flags, length)
                .on_done(move |ending| *record.lock().unwrap() = Some(ending));
            for _ in 0..frames {
                body.frame().await;
            }
            drop(body);
            seen.lock().unwrap().take().unwrap()
        }
        assert_eq!(ending(None, 3, Flags::default()).await, Ending::Whole);
        assert_eq!(ending(Some(10), 2, Flags::default()).await, Ending::Whole);
        assert_eq!(ending(None, 2, Flags::default()).await, Ending::Abandoned);
        assert_eq!(
            ending(Some(10), 1, Flags::default()).await,
            Ending::Abandoned
        );
        let faulted = Flags::default();
        faulted.fault(true);
        assert_eq!(ending(None, 1, faulted).await, Ending::Faulted);
        let refused = Flags::default();
        refused.too_slow.store(true, Ordering::Release);
        assert_eq!(ending(None, 1, refused).await, Ending::ClientCaused);
    }
}
