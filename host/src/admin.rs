//! The admin port: never the public one, so probes, metrics and reloads
//! are neither exposed by the Service nor starved by public traffic.
//!
//! - `GET /healthz`: 200 while the process serves.
//! - `GET /readyz`: 200 only when every route is loaded and the host is not draining.
//! - `GET /metrics`: Prometheus text.
//! - `GET /handlers`: JSON, per route: component, digest, generation, loaded_at, last_error.
//! - `POST /reload`: reloads from disk and answers with the outcome.

use crate::app::App;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::net::TcpListener;

/// Serves the admin endpoints until `stop` resolves.
pub async fn serve(listener: TcpListener, app: Arc<App>, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    continue;
                }
            },
            () = &mut stop => return,
        };
        let app = app.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| route(app.clone(), request));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn route(
    app: Arc<App>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = match (request.method(), request.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => readyz(&app),
        (&Method::GET, "/metrics") => {
            let mut response = text(StatusCode::OK, &app.metrics.encode());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        (&Method::GET, "/handlers") => json(StatusCode::OK, &app.registry.describe()),
        (&Method::POST, "/reload") => match app.reloader.reload("admin").await {
            Ok(report) => json(StatusCode::OK, &report),
            Err(e) => json(
                StatusCode::UNPROCESSABLE_ENTITY,
                &serde_json::json!({ "outcome": "error", "error": format!("{e:#}") }),
            ),
        },
        (_, "/healthz" | "/readyz" | "/metrics" | "/handlers") => method_not_allowed("GET"),
        (_, "/reload") => method_not_allowed("POST"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    Ok(response)
}

fn readyz(app: &App) -> Response<Full<Bytes>> {
    if app.draining.load(Ordering::Relaxed) {
        text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else if !app.registry.is_loaded() {
        text(StatusCode::SERVICE_UNAVAILABLE, "loading\n")
    } else {
        text(StatusCode::OK, "ready\n")
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_vec_pretty(value).expect("serialisable");
    body.push(b'\n');
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn method_not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}
