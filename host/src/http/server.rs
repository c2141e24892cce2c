//! The public HTTP server: accept loop, connection limits, TLS, graceful
//! drain.
//!
//! The caller owns the listener, the worker threads connections are
//! spread over, and the shutdown future, so tests pass a port-0 listener
//! and start-up fails before binding if the workers cannot start. One port
//! speaks HTTP/1.1 and HTTP/2, in clear text or (with [`Tls`]) TLS; every
//! HTTP/2 stream is a request under the same rules as an HTTP/1 one. On
//! shutdown the listener closes, idle keep-alive connections close (HTTP/2:
//! GOAWAY), requests in flight get up to the drain timeout, and whatever
//! still runs after it is dropped with the workers (interrupting its guest).

use crate::config::cli::NetLimits;
use crate::config::router;
use crate::http::connection::{Activity, Busy, Connections, Policy};
use crate::http::spin_headers;
use crate::http::state::{App, REQUEST_ID};
use crate::http::tls::Tls;
use crate::observe::metrics::{HANDSHAKE_FAILURES, NO_ROUTE, PROTOCOLS, ReasonLabel};
use crate::observe::trace::RequestTrace;
use crate::routing::canary::{Client, Outcome, VERSION_HEADER};
use crate::run::admission::InFlight;
use crate::run::body::{self, Ending, ResponseBody};
use crate::run::grpc;
use crate::run::workers::Workers;
use http::uri::Scheme;
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use opentelemetry::{KeyValue, StringValue};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::net::TcpListener;

/// What a request knows of its connection.
struct Conn {
    /// The client's address: a canary's share cap counts by it, and a
    /// handler sees it in `spin-client-addr`.
    peer: Option<SocketAddr>,
    /// `https` under TLS, else `http`: what a handler is told, whatever
    /// scheme an HTTP/2 client claimed.
    scheme: Scheme,
    activity: Activity,
}

/// Serves `listener` on `workers` until `shutdown` resolves, then drains
/// and stops the workers; with `tls`, every connection is TLS.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    net: &NetLimits,
    tls: Option<Arc<Tls>>,
    workers: Workers,
    shutdown: impl Future<Output = ()>,
    drain_timeout: Duration,
) {
    let connections = Arc::new(
        Connections::new(Policy {
            port: "public",
            max_connections: app.limits.max_connections as usize,
            header_read_timeout: app.limits.header_read_timeout,
            write_timeout: net.write_timeout,
            max_header_size: app.limits.max_header_size,
            http2_max_streams: Some(net.http2_max_concurrent_streams),
        })
        .counting_closes(app.metrics.connections_closed.clone()),
    );
    let min_body_rate = net.min_body_rate;
    let version_header = !net.no_version_header;
    // Each connection holds a receiver: the drain is over when all are gone.
    let (drain, draining) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);

    loop {
        let (stream, permit) = tokio::select! {
            accepted = connections.accept(&listener) => accepted,
            () = &mut shutdown => break,
        };
        let peer = stream.peer_addr().ok();
        // Idle from now: the TLS handshake and the protocol sniff count.
        let activity = Activity::new();
        // Moved to a worker as a plain socket, registered there with that
        // worker's reactor.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "failed to hand a connection to a worker");
                continue;
            }
        };
        let app = app.clone();
        let connections = connections.clone();
        let tls = tls.as_ref().map(|tls| tls.acceptor());
        let mut draining = draining.clone();
        workers.spawn(move || async move {
            let _permit = permit;
            let stream = match tokio::net::TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "failed to register a connection");
                    return;
                }
            };
            let io = connections.io(stream);
            let conn = Arc::new(Conn {
                peer,
                scheme: if tls.is_some() {
                    Scheme::HTTPS
                } else {
                    Scheme::HTTP
                },
                activity,
            });
            let service = {
                let (app, conn) = (app.clone(), conn.clone());
                service_fn(move |request| {
                    // Busy from the head on, before the future first runs.
                    let busy = conn.activity.busy();
                    handle(
                        app.clone(),
                        request,
                        conn.clone(),
                        busy,
                        min_body_rate,
                        version_header,
                    )
                })
            };
            // Borrowed, not moved: the receiver must live as long as the
            // connection, or the drain would count it gone once it began.
            let drain = async {
                let _ = draining.wait_for(|draining| *draining).await;
            };
            let ended = match tls {
                None => connections.run(io, service, &conn.activity, drain).await,
                Some(acceptor) => {
                    let timeout = connections.policy().header_read_timeout;
                    match tokio::time::timeout(timeout, acceptor.accept(io)).await {
                        Ok(Ok(io)) => connections.run(io, service, &conn.activity, drain).await,
                        failed => {
                            let reason = match failed {
                                Ok(Err(e)) => {
                                    tracing::debug!(error = %e, "TLS handshake failed");
                                    HANDSHAKE_FAILURES[1]
                                }
                                _ => HANDSHAKE_FAILURES[0],
                            };
                            app.metrics
                                .tls_handshake_failures
                                .get_or_create(&ReasonLabel {
                                    reason: reason.to_string(),
                                })
                                .inc();
                            return;
                        }
                    }
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }

    drop(listener);
    drop(draining);
    tracing::info!(
        drain_timeout_ms = drain_timeout.as_millis() as u64,
        in_flight = app.metrics.in_flight.get(),
        "draining"
    );
    drain.send_replace(true);
    tokio::select! {
        () = drain.closed() => tracing::info!("drained"),
        () = tokio::time::sleep(drain_timeout) => tracing::warn!(
            in_flight = app.metrics.in_flight.get(),
            "drain timeout passed; interrupting the requests still running"
        ),
    }
    // Stops the workers, dropping (and so interrupting) what still runs.
    drop(workers);
}

/// The `protocol` label of a request's version.
fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_10 => PROTOCOLS[0],
        Version::HTTP_2 => PROTOCOLS[2],
        _ => PROTOCOLS[1],
    }
}

/// An HTTP/2 request's URI (absolute: `:scheme` and `:authority`) with the
/// connection's scheme instead of the client's; an HTTP/1 one (no scheme)
/// as it came.
fn with_scheme(uri: Uri, scheme: &Scheme) -> Uri {
    match uri.scheme() {
        Some(claimed) if claimed != scheme => {
            let mut parts = uri.into_parts();
            parts.scheme = Some(scheme.clone());
            Uri::from_parts(parts).expect("a URI with a scheme has an authority")
        }
        _ => uri,
    }
}

/// One request: route, admit, invoke, log, count. `busy` marks the
/// connection busy until the response body is done.
async fn handle(
    app: Arc<App>,
    request: Request<Incoming>,
    conn: Arc<Conn>,
    busy: Busy,
    min_body_rate: u64,
    version_header: bool,
) -> Result<Response<ResponseBody>, Infallible> {
    let started = Instant::now();
    let started_at = SystemTime::now();
    let peer = conn.peer;
    let http2 = request.version() == Version::HTTP_2;
    app.metrics
        .count_protocol(protocol(request.version()), conn.scheme == Scheme::HTTPS);
    let request = {
        let (mut parts, body) = request.into_parts();
        parts.uri = with_scheme(parts.uri, &conn.scheme);
        Request::from_parts(parts, body)
    };
    let request_id = app.request_ids.take_or_make(&request);
    let method = request.method().clone();
    let path: Box<str> = request.uri().path().into();
    let grpc = grpc::is_grpc(request.headers());

    // A path with a dot segment or an encoded slash could mean one route
    // here and another to a proxy in front: refused, never guessed at.
    let checked = router::check_path(&path);
    let (pattern, handler) = match checked {
        Ok(()) => app.registry.route(&path).unzip(),
        Err(_) => (None, None),
    };
    let request = match &pattern {
        Some(pattern) => {
            let (mut parts, body) = request.into_parts();
            spin_headers::apply(&mut parts, pattern, peer, &conn.scheme);
            Request::from_parts(parts, body)
        }
        None => request,
    };
    // On a route with a canary, the version that serves this request.
    let (serving, version, client) = match &handler {
        Some(route) => {
            let (serving, version) = route.choose(request.headers());
            let client = route.client(request.headers(), peer.map(|addr| addr.ip()));
            (Some(serving), version, client)
        }
        None => (None, None, Client::default()),
    };
    let trace = match &app.traces {
        Some(traces) => {
            let route = handler.as_ref().map(|h| &h.stable.label);
            traces.request(
                request.headers(),
                started_at,
                || match route {
                    Some(route) => format!("{method} {route}"),
                    None => method.to_string(),
                },
                || {
                    span_attributes(
                        &request,
                        &path,
                        &conn,
                        route,
                        serving.map(|h| &h.digest_text),
                        version.map(|v| v.as_str()),
                        &request_id,
                    )
                },
            )
        }
        None => RequestTrace::default(),
    };
    let mut invoked = false;
    // The serving version's series, borrowed from the handler this request
    // holds: no per-request clones.
    let metrics = serving.map_or(&app.no_route, |h| &h.metrics);
    let mut response = match (&checked, &handler) {
        (Err(e), _) => {
            app.metrics.reject("bad_path");
            body::host_response(StatusCode::BAD_REQUEST, &format!("{e}\n"))
        }
        (Ok(()), None) => body::host_response(StatusCode::NOT_FOUND, "no route for this path\n"),
        // A request that waits for a slot has an `admission` span; one
        // admitted at once (nearly all) has none.
        (Ok(()), Some(handler)) => match match app.admission.try_admit() {
            Some(permit) => Some(permit),
            None => {
                let waiting = SystemTime::now();
                let admitted = app.admission.admit().await;
                trace.record("admission", waiting, SystemTime::now());
                admitted
            }
        } {
            Some(permit) => {
                let slot = InFlight::new(permit, &app.metrics.in_flight, &app.ticker);
                invoked = true;
                serving
                    .unwrap_or(&handler.stable)
                    .invoke(
                        request,
                        &conn.scheme,
                        request_id.clone(),
                        slot,
                        &app.cpu_share,
                        app.memory_budget.as_ref(),
                        min_body_rate,
                        trace.clone(),
                    )
                    .await
            }
            None => {
                app.metrics.reject("overloaded");
                body::host_response(StatusCode::SERVICE_UNAVAILABLE, "overloaded, retry later\n")
            }
        },
    };
    // Only the host's own refusals: a guest may answer 413 for its own reasons.
    if response.body().is_from_host() {
        match response.status() {
            StatusCode::PAYLOAD_TOO_LARGE => app.metrics.reject("body_too_large"),
            StatusCode::REQUEST_TIMEOUT => app.metrics.reject("body_too_slow"),
            _ => {}
        }
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }

    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    metrics.record(status, elapsed.as_secs_f64());
    // A refusal before a handler ran (503 overloaded) says nothing about
    // either version; nor does a failure the client caused.
    let mut canary_outcome = None;
    if invoked
        && let (Some(version), Some(route)) = (version, &handler)
        && let Some(canary) = &route.canary
    {
        if response.body().client_caused() {
            canary.record(version, Outcome::ClientCaused, client);
        } else if status >= 500 {
            canary.record(version, Outcome::Status(status), client);
        } else {
            // A guest may fault after a successful head, while its body
            // streams, and a client may stall or leave: the outcome is
            // known when the body is done. hyper asks for no body after
            // HEAD, 1xx, 204 and 304: dropped unread, those are whole.
            let bodiless = method == http::Method::HEAD || matches!(status, 100..=199 | 204 | 304);
            let route = route.clone();
            canary_outcome = Some(move |ending: Ending| {
                let outcome = match ending {
                    Ending::Whole => Outcome::Status(status),
                    Ending::Abandoned if bodiless => Outcome::Status(status),
                    Ending::Faulted => Outcome::Status(500),
                    Ending::ClientCaused | Ending::Abandoned => Outcome::ClientCaused,
                };
                if let Some(canary) = &route.canary {
                    canary.record(version, outcome, client);
                }
            });
        }
        if version_header && canary.spec.version_header {
            response
                .headers_mut()
                .insert(VERSION_HEADER, HeaderValue::from_static(version.as_str()));
        }
    }
    let (trace_id, span_id) = trace.log_fields();
    tracing::info!(
        method = %method,
        path = %path,
        route = %handler.as_ref().map_or(NO_ROUTE, |h| &*h.stable.label),
        status,
        duration_ms = elapsed.as_secs_f64() * 1e3,
        digest = serving.map(|h| tracing::field::display(h.component.digest)),
        version = version.map_or("", |v| v.as_str()),
        request_id = %request_id,
        trace_id,
        span_id,
        "request"
    );
    // A gRPC client reads the host's own answers (413, 503, 504, …) as the
    // call's status; the metrics and the log above keep the HTTP status.
    if grpc && response.body().is_from_host() {
        let empty = body::host_response(StatusCode::OK, "").into_body();
        response = grpc::as_trailers_only(response, empty);
    }
    // A guest's HTTP/2 response stalled on the client's window closes
    // the connection after --write-timeout (`Connections::run`).
    if http2 && let Some(flags) = response.body().guest_flags() {
        conn.activity.watch(flags);
    }
    let body_out = metrics.body_out.clone();
    let head_sent = SystemTime::now();
    Ok(response.map(|body| {
        body.count_into(body_out).on_done(move |ending| {
            drop(busy);
            if let Some(done) = canary_outcome {
                done(ending);
            }
            let done = SystemTime::now();
            trace.record("response body", head_sent, done);
            if ending == Ending::Faulted {
                trace.fail("response body cut short");
            }
            trace.end(status, done);
        })
    }))
}

/// A request span's attributes at its start (so a sampler may read
/// them): OpenTelemetry's HTTP server conventions, and wasmlet's own.
fn span_attributes<B>(
    request: &Request<B>,
    path: &str,
    conn: &Conn,
    route: Option<&Arc<str>>,
    digest: Option<&Arc<str>>,
    version: Option<&'static str>,
    request_id: &Arc<str>,
) -> Vec<KeyValue> {
    // Shared or static strings where there are some: a sampled request
    // pays for every allocation here.
    let shared = |text: &Arc<str>| StringValue::from(text.clone());
    let method: StringValue = match *request.method() {
        http::Method::GET => "GET".into(),
        http::Method::POST => "POST".into(),
        http::Method::HEAD => "HEAD".into(),
        ref other => other.as_str().to_string().into(),
    };
    // Room for those set later too (instance, fault, status code): growing
    // the list would move it.
    let mut attributes = Vec::with_capacity(16);
    attributes.extend([
        KeyValue::new("http.request.method", method),
        KeyValue::new("url.path", path.to_string()),
        KeyValue::new(
            "url.scheme",
            if conn.scheme == Scheme::HTTPS {
                "https"
            } else {
                "http"
            },
        ),
        KeyValue::new(
            "network.protocol.version",
            match request.version() {
                Version::HTTP_10 => "1.0",
                Version::HTTP_2 => "2",
                _ => "1.1",
            },
        ),
        KeyValue::new("wasmlet.request_id", shared(request_id)),
    ]);
    if let Some(peer) = conn.peer {
        attributes.push(KeyValue::new("client.address", peer.ip().to_string()));
    }
    if let Some(route) = route {
        attributes.push(KeyValue::new("http.route", shared(route)));
        attributes.push(KeyValue::new("wasmlet.route", shared(route)));
        attributes.push(KeyValue::new(
            "wasmlet.version",
            version.unwrap_or("stable"),
        ));
    }
    if let Some(digest) = digest {
        attributes.push(KeyValue::new("wasmlet.component.digest", shared(digest)));
    }
    attributes
}
