//! `spin_sdk_headers`: a Spin HTTP component written with the Spin SDK 7
//! (`#[http_service]`, wasi:http 0.3.0), unchanged from what runs on Spin.
//! It routes on `spin-path-info`, the path below its route, as Spin
//! components do:
//!
//! - `` or `/`: `Hello World!`;
//! - `/headers`: the seven `spin-*` headers it received, one `name: value`
//!   line each (values a client repeated joined with ` | `, `(absent)` for
//!   none);
//! - anything else: 404; no `spin-path-info` at all: 500.

use spin_sdk::http::{IntoResponse, Request, StatusCode};
use spin_sdk::http_service;

const HEADERS: [&str; 7] = [
    "spin-path-info",
    "spin-matched-route",
    "spin-base-path",
    "spin-component-route",
    "spin-raw-component-route",
    "spin-full-url",
    "spin-client-addr",
];

#[http_service]
async fn handle(request: Request) -> impl IntoResponse {
    let path_info = request
        .headers()
        .get("spin-path-info")
        .map(|v| v.to_str().unwrap_or("?"));
    match path_info {
        Some("" | "/") => (StatusCode::OK, "Hello World!".to_string()),
        Some("/headers") => (
            StatusCode::OK,
            HEADERS.iter().map(|name| line(&request, name)).collect(),
        ),
        Some(_) => (StatusCode::NOT_FOUND, "not found\n".to_string()),
        None => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "no spin-path-info header: not run by Spin or a host that sets it\n".to_string(),
        ),
    }
}

fn line(request: &Request, name: &str) -> String {
    let values: Vec<&str> = request
        .headers()
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap_or("?"))
        .collect();
    if values.is_empty() {
        format!("{name}: (absent)\n")
    } else {
        format!("{name}: {}\n", values.join(" | "))
    }
}

// A bin needs one; the host never calls it.
fn main() {}
