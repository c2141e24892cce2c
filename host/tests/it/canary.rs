//! Issue 19: a weighted canary per route, sticky keys, automatic rollback,
//! promote and abort, over real sockets with real components.

use crate::common::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

const VERSION: &str = "x-wasmlet-version";
const ADMIN_HEADER: (&str, &str) = ("x-wasmlet-reload", "1");

/// Concurrent keep-alive connections the bursts below use, each from its
/// own loopback address: the host caps one client address's share of the
/// rollback window (5%), so traffic meant as many clients comes from many.
const CLIENTS: usize = 64;

/// Client `n`'s own source address: 127.0.1.1, 127.0.1.2, ... (all of
/// 127.0.0.0/8 is loopback on Linux).
fn client_ip(n: usize) -> std::net::IpAddr {
    std::net::Ipv4Addr::new(127, 0, 1 + (n / 200) as u8, 1 + (n % 200) as u8).into()
}

/// A connection to `addr` from client `n`'s address; `recv_buffer` sets
/// SO_RCVBUF before connecting.
async fn connect_as(addr: SocketAddr, n: usize, recv_buffer: Option<u32>) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(client_ip(n), 0)).unwrap();
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    socket.connect(addr).await.unwrap()
}

/// One GET from client `n` on a connection of its own; `(status, body)`.
async fn get_as(addr: SocketAddr, n: usize, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let stream = connect_as(addr, n, None).await;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut request = http::Request::get(path).header("host", "localhost");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// One request of a burst: its path and extra headers.
type Planned = (String, Vec<(&'static str, String)>);

/// Sends `plan` over `CLIENTS` keep-alive connections; the replies come
/// back in the plan's order.
async fn burst(addr: SocketAddr, plan: Vec<Planned>) -> Vec<Reply> {
    let plan = std::sync::Arc::new(plan);
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let plan = plan.clone();
            tokio::spawn(async move {
                let stream = connect_as(addr, client, None).await;
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                        .await
                        .unwrap();
                tokio::spawn(conn);
                let mut replies = Vec::new();
                for i in (client..plan.len()).step_by(CLIENTS) {
                    let (path, headers) = &plan[i];
                    let mut request = http::Request::get(path.as_str()).header("host", "localhost");
                    for (name, value) in headers {
                        request = request.header(*name, value.as_str());
                    }
                    sender.ready().await.unwrap();
                    let response = sender
                        .send_request(request.body(Full::new(Bytes::new())).unwrap())
                        .await
                        .unwrap();
                    let (parts, body) = response.into_parts();
                    let body = body.collect().await.unwrap().to_bytes();
                    replies.push((
                        i,
                        Reply {
                            status: parts.status.as_u16(),
                            headers: parts.headers,
                            body,
                        },
                    ));
                }
                replies
            })
        })
        .collect();
    let mut all = Vec::with_capacity(plan.len());
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, r)| r).collect()
}

fn plain(path: &str, n: usize) -> Vec<Planned> {
    (0..n).map(|_| (path.to_string(), Vec::new())).collect()
}

fn version(reply: &Reply) -> &str {
    reply.header(VERSION).unwrap_or("(none)")
}

fn serve(dir: &Path, manifest: &str, extra: &[&str]) -> Wasmlet {
    write(&dir.join("wasmlet.toml"), manifest);
    let config = dir.join("wasmlet.toml");
    let mut args = vec!["--config", path_str(&config)];
    args.extend_from_slice(extra);
    Wasmlet::serve(&args)
}

/// v1.wasm on every path, canary.wasm as its canary at weight 50, rolled
/// back above a 5-point error-rate gap once it has `min_requests`.
fn rolled_back_at(min_requests: usize) -> String {
    format!(
        "[[route]]\npath = \"/...\"\ncomponent = \"v1.wasm\"\n\
         canary = {{ component = \"canary.wasm\", weight = 50, version_header = true }}\n\
         rollback = {{ max_error_rate = 0.05, min_requests = {min_requests}, window = \"1m\" }}\n"
    )
}

/// `/handlers`' entry for `route`.
async fn route_doc(host: &Wasmlet, route: &str) -> serde_json::Value {
    let doc = handlers(host).await;
    doc["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == route)
        .unwrap_or_else(|| panic!("no route {route} in {doc:#}"))
        .clone()
}

async fn admin_post(host: &Wasmlet, path: &str) -> Reply {
    request_with(host.admin, "POST", path, &[ADMIN_HEADER], Bytes::new()).await
}

fn digest_of(file: &str) -> String {
    use sha2::Digest;
    format!(
        "sha256:{:x}",
        sha2::Sha256::digest(std::fs::read(file).unwrap())
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn weight_10_splits_within_the_binomial_bound() {
    let dir = tempdir();
    copy(wasm::V1, &dir.path().join("v1.wasm"));
    copy(wasm::V2, &dir.path().join("v2.wasm"));
    let host = serve(
        dir.path(),
        "[[route]]\npath = \"/...\"\ncomponent = \"v1.wasm\"\ncanary = { component = \"v2.wasm\", weight = 10, version_header = true }\n",
        &[],
    );
    const N: usize = 2000;
    let replies = burst(host.public, plain("/", N)).await;
    let mut canary = 0;
    for r in &replies {
        assert_eq!(r.status, 200);
        match (r.text().as_str(), version(r)) {
            ("v1", "stable") => {}
            ("v2", "canary") => canary += 1,
            (body, v) => panic!("`{body}` answered as `{v}`"),
        }
    }
    // Binomial(2000, 0.1): mean 200, sd 13.4; 99.9% two-sided is ±3.29 sd.
    let (mean, sd) = (N as f64 * 0.1, (N as f64 * 0.1 * 0.9).sqrt());
    let bound = 3.29 * sd;
    assert!(
        (canary as f64 - mean).abs() <= bound,
        "{canary} of {N} went to the canary, want {mean} ± {bound:.0}"
    );

    let route = route_doc(&host, "/...").await;
    assert_eq!(route["digest"], digest_of(wasm::V1));
    assert_eq!(route["canary"]["digest"], digest_of(wasm::V2));
    assert_eq!(route["canary"]["weight"], 10);
    assert_eq!(route["canary"]["effective_weight"], 10);
    assert_eq!(route["canary"]["state"], "active");
    let series = |v: &str| {
        format!("wasmlet_canary_requests_total{{route=\"/...\",version=\"{v}\",code=\"2xx\"}}")
    };
    assert_eq!(metric(&host, &series("canary")).await, canary as f64);
    assert_eq!(metric(&host, &series("stable")).await, (N - canary) as f64);
    // The route's own series carry the version too.
    let requests =
        |v: &str| format!("wasmlet_requests_total{{route=\"/...\",version=\"{v}\",code=\"2xx\"}}");
    assert_eq!(metric(&host, &requests("canary")).await, canary as f64);
    assert_eq!(
        metric(&host, &requests("stable")).await,
        (N - canary) as f64
    );
    let durations = |v: &str| {
        format!("wasmlet_request_duration_seconds_count{{route=\"/...\",version=\"{v}\"}}")
    };
    assert_eq!(metric(&host, &durations("canary")).await, canary as f64);
    let text = get(host.admin, "/metrics").await.text();
    for (v, file) in [("stable", "v1.wasm"), ("canary", "v2.wasm")] {
        let wasm = if v == "stable" { wasm::V1 } else { wasm::V2 };
        let info = format!(
            "wasmlet_handler_info{{route=\"/...\",version=\"{v}\",component=\"{}\",digest=\"{}\"}} 1",
            dir.path().join(file).display(),
            digest_of(wasm)
        );
        assert!(text.contains(&info), "{info}\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_version_header_is_opt_in_per_canary_and_can_be_turned_off() {
    let dir = tempdir();
    copy(wasm::V1, &dir.path().join("v1.wasm"));
    copy(wasm::V2, &dir.path().join("v2.wasm"));
    let manifest = "[[route]]\npath = \"/c\"\ncomponent = \"v1.wasm\"\ncanary = { component = \"v2.wasm\", weight = 100, version_header = true }\n\n\
                    [[route]]\npath = \"/quiet\"\ncomponent = \"v1.wasm\"\ncanary = { component = \"v2.wasm\", weight = 100 }\n\n\
                    [[route]]\npath = \"/plain\"\ncomponent = \"v1.wasm\"\n";
    let host = serve(dir.path(), manifest, &[]);
    let r = get(host.public, "/c").await;
    assert_eq!((r.text().as_str(), version(&r)), ("v2", "canary"));
    // Issue 26: off unless the canary asks for it.
    let r = get(host.public, "/quiet").await;
    assert_eq!((r.text().as_str(), version(&r)), ("v2", "(none)"));
    let r = get(host.public, "/plain").await;
    assert_eq!((r.text().as_str(), version(&r)), ("v1", "(none)"));
    drop(host);
    let host = serve(dir.path(), manifest, &["--no-version-header"]);
    let r = get(host.public, "/c").await;
    assert_eq!((r.text().as_str(), version(&r)), ("v2", "(none)"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sticky_users_keep_their_version() {
    let dir = tempdir();
    copy(wasm::V1, &dir.path().join("v1.wasm"));
    copy(wasm::V2, &dir.path().join("v2.wasm"));
    let canary = "canary = { component = \"v2.wasm\", weight = 50 }";
    let host = serve(
        dir.path(),
        &format!(
            "[[route]]\npath = \"/h\"\ncomponent = \"v1.wasm\"\n{canary}\nsticky = \"header:x-user\"\n\n\
             [[route]]\npath = \"/c\"\ncomponent = \"v1.wasm\"\n{canary}\nsticky = \"cookie:user\"\n"
        ),
        &[],
    );
    const USERS: usize = 100;
    const ROUNDS: usize = 5;
    for (path, header) in [("/h", "x-user"), ("/c", "cookie")] {
        // Every user asks ROUNDS times, the rounds interleaved.
        let plan: Vec<Planned> = (0..USERS * ROUNDS)
            .map(|i| {
                let user = format!("user-{}", i % USERS);
                let value = match header {
                    "cookie" => format!("theme=dark; user={user}"),
                    _ => user,
                };
                (path.to_string(), vec![(header, value)])
            })
            .collect();
        let replies = burst(host.public, plan).await;
        let mut seen: Vec<Option<String>> = vec![None; USERS];
        for (i, r) in replies.iter().enumerate() {
            assert_eq!(r.status, 200);
            let body = r.text();
            let first = seen[i % USERS].get_or_insert_with(|| body.clone());
            assert_eq!(*first, body, "{path}: user-{} switched versions", i % USERS);
        }
        let on_canary = seen.iter().filter(|b| b.as_deref() == Some("v2")).count();
        // Binomial(100, 0.5): 99.9% within 50 ± 17.
        assert!(
            (33..=67).contains(&on_canary),
            "{path}: {on_canary} of {USERS} users on the canary"
        );
    }
    // Without the key a request is split at random: both versions answer.
    let replies = burst(host.public, plain("/h", 200)).await;
    let v2 = replies.iter().filter(|r| r.text() == "v2").count();
    assert!(
        (50..=150).contains(&v2),
        "{v2} of 200 unkeyed requests on the canary"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_canary_is_rolled_back_and_stays_so_until_its_digest_changes() {
    let dir = tempdir();
    copy(wasm::V1, &dir.path().join("v1.wasm"));
    copy(wasm::STATUS, &dir.path().join("canary.wasm"));
    const MIN_REQUESTS: usize = 50;
    let host = serve(dir.path(), &rolled_back_at(MIN_REQUESTS), &[]);
    // The canary answers 500 to these, the stable version 200.
    let replies = burst(host.public, plain("/?code=500", 600)).await;
    let mut canary_failures = 0;
    for r in &replies {
        match version(r) {
            "stable" => assert_eq!((r.status, r.text().as_str()), (200, "v1")),
            "canary" => {
                assert_eq!(r.status, 500);
                canary_failures += 1;
            }
            other => panic!("version `{other}`"),
        }
    }
    // Rolled back at the MIN_REQUESTS-th failure; requests already sent
    // to the canary on the other connections still finish there.
    assert!(
        (MIN_REQUESTS..MIN_REQUESTS + CLIENTS).contains(&canary_failures),
        "{canary_failures} canary failures"
    );
    let route = route_doc(&host, "/...").await;
    assert_eq!(route["canary"]["state"], "rolled_back", "{route:#}");
    assert_eq!(route["canary"]["effective_weight"], 0);
    assert_eq!(route["canary"]["weight"], 50);
    let reason = route["canary"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("canary failed") && reason.contains("stable 0/"),
        "{reason}"
    );
    assert_eq!(
        metric(&host, "wasmlet_canary_rollbacks_total{route=\"/...\"}").await,
        1.0
    );
    let failed =
        |v: &str| format!("wasmlet_requests_total{{route=\"/...\",version=\"{v}\",code=\"5xx\"}}");
    assert_eq!(
        metric(&host, &failed("canary")).await,
        canary_failures as f64
    );
    assert_eq!(metric(&host, &failed("stable")).await, 0.0);
    assert!(
        host.wait_for_log(Duration::from_secs(5), |l| l.contains("canary rolled back"))
            .is_some()
    );

    // After it: no canary request at all; a reload keeps the rollback.
    let after = |replies: Vec<Reply>| {
        for r in replies {
            assert_eq!(
                (r.status, r.text().as_str(), version(&r)),
                (200, "v1", "stable")
            );
        }
    };
    after(burst(host.public, plain("/?code=500", 200)).await);
    // A changed weight alone does not revive the same canary.
    write(
        &dir.path().join("wasmlet.toml"),
        "[[route]]\npath = \"/...\"\ncomponent = \"v1.wasm\"\ncanary = { component = \"canary.wasm\", weight = 60, version_header = true }\n",
    );
    assert_eq!(reload(host.admin).await.status, 200);
    after(burst(host.public, plain("/?code=500", 200)).await);
    assert_eq!(
        route_doc(&host, "/...").await["canary"]["state"],
        "rolled_back"
    );

    // A new canary digest starts afresh.
    copy(wasm::V2, &dir.path().join("canary.wasm"));
    assert_eq!(reload(host.admin).await.status, 200);
    let route = route_doc(&host, "/...").await;
    assert_eq!(route["canary"]["state"], "active", "{route:#}");
    assert_eq!(route["canary"]["digest"], digest_of(wasm::V2));
    let replies = burst(host.public, plain("/", 200)).await;
    assert!(
        replies
            .iter()
            .any(|r| version(r) == "canary" && r.text() == "v2")
    );
    assert!(replies.iter().all(|r| r.status == 200));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_canary_is_not_rolled_back_at_a_steady_1_percent_error_rate() {
    let dir = tempdir();
    // Both versions answer the status asked for: one request in 100 is a 500.
    copy(wasm::STATUS, &dir.path().join("stable.wasm"));
    copy(wasm::STATUS, &dir.path().join("canary.wasm"));
    let host = serve(
        dir.path(),
        "[[route]]\npath = \"/...\"\ncomponent = \"stable.wasm\"\n\
         canary = { component = \"canary.wasm\", weight = 50, version_header = true }\n\
         rollback = { max_error_rate = 0.05, min_requests = 200, window = \"1m\" }\n",
        &[],
    );
    const N: usize = 5000;
    let plan: Vec<Planned> = (0..N)
        .map(|i| {
            let code = if i % 100 == 0 { 500 } else { 200 };
            (format!("/?code={code}"), Vec::new())
        })
        .collect();
    let replies = burst(host.public, plan).await;
    let failed = |v: &str| {
        replies
            .iter()
            .filter(|r| version(r) == v && r.status == 500)
            .count()
    };
    assert_eq!(failed("stable") + failed("canary"), N / 100);
    let route = route_doc(&host, "/...").await;
    assert_eq!(route["canary"]["state"], "active", "{route:#}");
    assert_eq!(route["canary"]["effective_weight"], 50);
    // Every outcome is counted in the window, or left out because its
    // client ran ahead of the others past its share (MAX_CLIENT_SHARE):
    // how far one of the 64 connections gets ahead depends on scheduling.
    let window = &route["canary"]["window"];
    let mut seen = 0;
    for version in ["stable", "canary"] {
        let counted = window[version]["total"].as_u64().unwrap();
        let over = metric(
            &host,
            &format!(
                "wasmlet_canary_uncounted_total{{route=\"/...\",version=\"{version}\",reason=\"share\"}}"
            ),
        )
        .await as u64;
        eprintln!("{version}: {counted} counted, {over} over a client's share");
        seen += counted + over;
        assert!(window[version]["failed"].as_u64().unwrap() <= failed(version) as u64);
    }
    assert_eq!(seen, N as u64, "{route:#}");
    assert_eq!(
        metric(&host, "wasmlet_canary_rollbacks_total{route=\"/...\"}").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn promote_and_abort_under_load_fail_no_request() {
    let dir = tempdir();
    copy(wasm::V1, &dir.path().join("v1.wasm"));
    copy(wasm::V2, &dir.path().join("v2.wasm"));
    let host = serve(
        dir.path(),
        "[[route]]\npath = \"/a/...\"\ncomponent = \"v1.wasm\"\ncanary = { component = \"v2.wasm\", weight = 50, version_header = true }\n\n\
         [[route]]\npath = \"/p/...\"\ncomponent = \"v1.wasm\"\ncanary = { component = \"v2.wasm\", weight = 50, version_header = true }\n\n\
         [[route]]\npath = \"/plain\"\ncomponent = \"v1.wasm\"\n",
        &[],
    );
    let (load_a, load_p) = (
        Load::start(host.public, "/a/x", 2),
        Load::start(host.public, "/p/x", 2),
    );
    // Both versions answer on both routes before anything changes.
    for path in ["/a/x", "/p/x"] {
        until_body(host.public, path, "v2", Duration::from_secs(5)).await;
        until_body(host.public, path, "v1", Duration::from_secs(5)).await;
    }

    let r = admin_post(&host, "/routes/a/.../abort").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let doc: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(doc["canary"]["state"], "aborted");
    assert_eq!(doc["canary"]["effective_weight"], 0);
    let r = admin_post(&host, "/routes/p/.../promote").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let doc: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(doc["digest"], digest_of(wasm::V2));
    assert_eq!(doc["canary"], serde_json::Value::Null);
    assert_eq!(doc["promoted_from_canary"], true);

    for r in burst(host.public, plain("/a/x", 100)).await {
        assert_eq!((r.text().as_str(), version(&r)), ("v1", "stable"));
    }
    for r in burst(host.public, plain("/p/x", 100)).await {
        assert_eq!((r.text().as_str(), version(&r)), ("v2", "(none)"));
    }
    // A reload of the same manifest keeps both decisions.
    assert_eq!(reload(host.admin).await.status, 200);
    assert_eq!(
        route_doc(&host, "/a/...").await["canary"]["state"],
        "aborted"
    );
    assert_eq!(
        route_doc(&host, "/p/...").await["digest"],
        digest_of(wasm::V2)
    );

    for (load, path) in [(load_a, "/a/x"), (load_p, "/p/x")] {
        let stats = load.finish().await;
        assert!(stats.failures.is_empty(), "{path}: {:?}", stats.failures);
        assert!(stats.ok > 0);
    }
    assert_eq!(get(host.public, "/p/x").await.text(), "v2");
}

#[tokio::test(flavor = "multi_thread")]
async fn promote_and_abort_follow_the_admin_rules() {
    let dir = tempdir();
    copy(wasm::V1, &dir.path().join("v1.wasm"));
    copy(wasm::V2, &dir.path().join("v2.wasm"));
    let host = serve(
        dir.path(),
        "[[route]]\npath = \"/\"\ncomponent = \"v1.wasm\"\ncanary = { component = \"v2.wasm\", weight = 50 }\n\n\
         [[route]]\npath = \"/plain\"\ncomponent = \"v1.wasm\"\n",
        &[],
    );
    // No header: refused like POST /reload, nothing changes.
    let r = request(host.admin, "POST", "/routes//abort", Bytes::new()).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("x-wasmlet-reload"));
    let r = get(host.admin, "/routes//promote").await;
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
    // A Host that is not allowed: 421, as everywhere on the admin port.
    let evil = http::Request::post("/routes//abort")
        .header("host", "evil.example")
        .header(ADMIN_HEADER.0, ADMIN_HEADER.1)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = send(host.admin, evil).await.unwrap();
    assert_eq!(r.status, 421);
    assert_eq!(route_doc(&host, "/").await["canary"]["state"], "active");

    assert_eq!(admin_post(&host, "/routes/nowhere/abort").await.status, 404);
    let r = admin_post(&host, "/routes/plain/promote").await;
    assert_eq!(r.status, 409);
    assert!(r.text().contains("has no canary"), "{}", r.text());
    assert_eq!(admin_post(&host, "/routes//abort").await.status, 200);
    let r = admin_post(&host, "/routes//abort").await;
    assert_eq!(r.status, 409, "aborting twice: {}", r.text());
    // An aborted canary can still be promoted, once.
    assert_eq!(admin_post(&host, "/routes//promote").await.status, 200);
    assert_eq!(admin_post(&host, "/routes//promote").await.status, 409);
    assert_eq!(get(host.public, "/").await.text(), "v2");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_that_fails_to_load_keeps_the_last_good_table() {
    let dir = tempdir();
    copy(wasm::V1, &dir.path().join("v1.wasm"));
    let host = serve(
        dir.path(),
        "[[route]]\npath = \"/...\"\ncomponent = \"v1.wasm\"\n",
        &["--no-watch"],
    );
    write(&dir.path().join("broken.wasm"), CORE_MODULE);
    write(
        &dir.path().join("wasmlet.toml"),
        "[[route]]\npath = \"/...\"\ncomponent = \"v1.wasm\"\ncanary = { component = \"broken.wasm\", weight = 50 }\n",
    );
    let r = reload(host.admin).await;
    assert_eq!(r.status, 422);
    assert!(
        r.text().contains("canary") && r.text().contains("broken.wasm"),
        "{}",
        r.text()
    );
    write(
        &dir.path().join("wasmlet.toml"),
        "[[route]]\npath = \"/...\"\ncomponent = \"v1.wasm\"\ncanary = { component = \"v1.wasm\", weight = 101 }\n",
    );
    let r = reload(host.admin).await;
    assert_eq!(r.status, 422);
    assert!(
        r.text().contains("line 4") && r.text().contains("weight"),
        "{}",
        r.text()
    );
    for r in burst(host.public, plain("/", 50)).await {
        assert_eq!(
            (r.status, r.text().as_str(), version(&r)),
            (200, "v1", "(none)")
        );
    }

    // At start-up the same manifest is refused before binding.
    let (status, _, stderr) = serve_to_exit(
        &["--config", path_str(&dir.path().join("wasmlet.toml"))],
        &[],
    );
    assert!(!status.success());
    assert!(
        stderr.contains("wasmlet.toml") && stderr.contains("line 4"),
        "{stderr}"
    );
}

#[test]
fn the_kubernetes_canary_example_is_a_valid_manifest() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../k8s/canary/wasmlet.toml");
    let manifest = wasmlet::config::manifest::Manifest::load(&path).unwrap();
    let canary = manifest.routes[0].canary.as_ref().expect("a canary");
    assert_eq!(canary.weight, 10);
    assert!(canary.component.ends_with("hello-v2.wasm"));
    assert!(canary.rollback.is_some() && canary.sticky.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_in_another_folder_is_watched_like_a_route_component() {
    let dir = tempdir();
    copy(wasm::V1, &dir.path().join("v1.wasm"));
    std::fs::create_dir(dir.path().join("canaries")).unwrap();
    copy(wasm::V1, &dir.path().join("canaries/next.wasm"));
    let host = serve(
        dir.path(),
        "[[route]]\npath = \"/...\"\ncomponent = \"v1.wasm\"\ncanary = { component = \"canaries/next.wasm\", weight = 100 }\n",
        &[],
    );
    assert_eq!(get(host.public, "/").await.text(), "v1");
    copy(wasm::V2, &dir.path().join("canaries/next.wasm"));
    until_body(host.public, "/", "v2", Duration::from_secs(5)).await;
    let route = route_doc(&host, "/...").await;
    assert_eq!(route["canary"]["digest"], digest_of(wasm::V2));
}

/// A canary that sends a 200 head and then faults mid-body has failed
/// that request, as surely as one that answers 500: it is rolled back.
#[tokio::test(flavor = "multi_thread")]
async fn a_canary_that_faults_after_its_head_is_rolled_back() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempdir();
    copy(wasm::V1, &dir.path().join("v1.wasm"));
    copy(wasm::FAILS_MID_BODY, &dir.path().join("canary.wasm"));
    const MIN_REQUESTS: usize = 10;
    let host = serve(dir.path(), &rolled_back_at(MIN_REQUESTS), &[]);
    // One connection per request: a cut body ends its connection.
    let mut canary = 0;
    for i in 0..200 {
        let mut stream = connect_as(host.public, i, None).await;
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut reply = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply)).await;
        // A cut body resets the connection, which may discard what was
        // received: every reply that is not the stable one whole was the canary's.
        let reply = String::from_utf8_lossy(&reply);
        let stable = reply.starts_with("HTTP/1.1 200")
            && reply.contains("x-wasmlet-version: stable")
            && reply.ends_with("\r\n\r\n2\r\nv1\r\n0\r\n\r\n");
        if !stable {
            assert!(!reply.contains("x-wasmlet-version: stable"), "{reply}");
            canary += 1;
        }
    }
    let route = route_doc(&host, "/...").await;
    assert_eq!(route["canary"]["state"], "rolled_back", "{route:#}");
    assert!(
        (MIN_REQUESTS..MIN_REQUESTS + 2).contains(&canary),
        "{canary} requests reached the canary"
    );
    let reason = route["canary"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("canary failed") && reason.contains("points worse"),
        "{reason}"
    );
}

/// Polls `/handlers` until the route's canary leaves `active` or `done`
/// says the host has dealt with what the test sent (at most 10 s).
async fn canary_settles(host: &Wasmlet, route: &str, done: &str, want: f64) -> serde_json::Value {
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let doc = route_doc(host, route).await;
        if doc["canary"]["state"] != "active"
            || metric(host, done).await >= want
            || std::time::Instant::now() > until
        {
            return doc;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `x-user` value that client `n` finds on the canary of `path`:
/// probes `path` with `user-n-0`, `user-n-1`, ... and looks at the body.
async fn canary_value(addr: SocketAddr, n: usize, path: &str, stable_body: &str) -> String {
    for k in 0..200 {
        let value = format!("user-{n}-{k}");
        let (status, body) = get_as(addr, n, path, &[("x-user", &value)]).await;
        assert_eq!(status, 200, "{body}");
        if body != stable_body {
            return value;
        }
    }
    panic!("no value of 200 landed on the canary");
}

/// Issue 26, finding 6 (the attack as reported, scaled down): clients each
/// pin a sticky value to the canary, ask it for a large answer with a 4 KiB
/// receive buffer and never read. Each guest blocks on its write until
/// --request-timeout: the clients' doing, not the canary's, so a healthy
/// canary stays. Forty clients, forty values: the per-client share cap
/// alone would not save it.
#[tokio::test(flavor = "multi_thread")]
async fn clients_that_stop_reading_cannot_roll_back_a_healthy_canary() {
    use tokio::io::AsyncWriteExt;
    let dir = tempdir();
    copy(wasm::V1, &dir.path().join("v1.wasm"));
    copy(wasm::BIG_RESPONSE, &dir.path().join("big.wasm"));
    const ATTACKERS: usize = 40;
    let host = serve(
        dir.path(),
        &format!(
            "[[route]]\npath = \"/...\"\ncomponent = \"v1.wasm\"\n\
             canary = {{ component = \"big.wasm\", weight = 50 }}\nsticky = \"header:x-user\"\n\
             rollback = {{ max_error_rate = 0.05, min_requests = {ATTACKERS}, window = \"1m\" }}\n"
        ),
        &["--request-timeout", "1s", "--write-timeout", "60s"],
    );
    // Each attacker finds its value by the body (an empty one from the
    // canary with mib=0), then asks the canary for 32 MiB and never reads.
    let mut stalled = Vec::new();
    for n in 0..ATTACKERS {
        let value = canary_value(host.public, n, "/?mib=0", "v1").await;
        let mut stream = connect_as(host.public, n, Some(4096)).await;
        let request =
            format!("GET /?mib=32 HTTP/1.1\r\nhost: localhost\r\nx-user: {value}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        stalled.push(stream);
    }
    let timeouts = || {
        host.logs()
            .iter()
            .filter(|l| l.contains("handler fault") && l.contains("timeout"))
            .count()
    };
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while timeouts() < ATTACKERS && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(timeouts(), ATTACKERS, "every stalled guest timed out");
    // The clients go; their answers end, cut.
    drop(stalled);
    let route = canary_settles(
        &host,
        "/...",
        "wasmlet_canary_uncounted_total{route=\"/...\",version=\"canary\",reason=\"client\"}",
        ATTACKERS as f64,
    )
    .await;
    assert_eq!(route["canary"]["state"], "active", "{route:#}");
    assert_eq!(route["canary"]["effective_weight"], 50);
    // The probes that found the canary count; the stalled answers do not.
    assert_eq!(
        route["canary"]["window"]["canary"]["failed"], 0,
        "{route:#}"
    );
    assert_eq!(
        route["canary"]["window"]["canary"]["total"], ATTACKERS as u64,
        "{route:#}"
    );
    assert_eq!(
        metric(
            &host,
            "wasmlet_canary_uncounted_total{route=\"/...\",version=\"canary\",reason=\"client\"}"
        )
        .await,
        ATTACKERS as f64
    );
}

/// Issue 26, finding 6: the share cap. One sticky value asked from many
/// addresses, or one address with no sticky value, makes the canary answer
/// 500 (the guest answers the status asked for): each counts for at most 5%
/// of the window, so neither alone rolls it back.
#[tokio::test(flavor = "multi_thread")]
async fn one_sticky_value_or_one_client_cannot_fill_the_window() {
    let dir = tempdir();
    copy(wasm::V1, &dir.path().join("v1.wasm"));
    copy(wasm::STATUS, &dir.path().join("canary.wasm"));
    const MIN_REQUESTS: usize = 20;
    let rollback = format!(
        "rollback = {{ max_error_rate = 0.05, min_requests = {MIN_REQUESTS}, window = \"1m\" }}"
    );
    let canary = "canary = { component = \"canary.wasm\", weight = 50 }";
    let host = serve(
        dir.path(),
        &format!(
            "[[route]]\npath = \"/s/...\"\ncomponent = \"v1.wasm\"\n{canary}\nsticky = \"header:x-user\"\n{rollback}\n\n\
             [[route]]\npath = \"/p/...\"\ncomponent = \"v1.wasm\"\n{canary}\n{rollback}\n"
        ),
        &[],
    );
    // One value on the canary, from 3 × MIN_REQUESTS addresses.
    let value = canary_value(host.public, 0, "/s/?code=200", "v1").await;
    let mut failed = 0;
    for n in 0..3 * MIN_REQUESTS {
        let (status, _) = get_as(host.public, n, "/s/?code=500", &[("x-user", &value)]).await;
        failed += usize::from(status == 500);
    }
    // One address, no sticky value: half of these reach the canary.
    let replies = burst_from_one(host.public, "/p/?code=500", 10 * MIN_REQUESTS).await;
    let on_canary = replies.iter().filter(|s| **s == 500).count();

    for route in ["/s/...", "/p/..."] {
        let doc = route_doc(&host, route).await;
        assert_eq!(doc["canary"]["state"], "active", "{doc:#}");
    }
    assert_eq!(
        failed,
        3 * MIN_REQUESTS,
        "the sticky value stayed on the canary"
    );
    assert!(
        on_canary >= 2 * MIN_REQUESTS,
        "{on_canary} reached the canary"
    );
    for route in ["/s/...", "/p/..."] {
        let doc = route_doc(&host, route).await;
        let counted = doc["canary"]["window"]["canary"]["total"].as_u64().unwrap();
        assert!(counted < MIN_REQUESTS as u64, "{route}: {counted} counted");
        let over = metric(
            &host,
            &format!(
                "wasmlet_canary_uncounted_total{{route=\"{route}\",version=\"canary\",reason=\"share\"}}"
            ),
        )
        .await;
        assert!(
            over >= MIN_REQUESTS as f64,
            "{route}: {over} over the share"
        );
    }
}

/// `n` requests for `path` on one keep-alive connection from 127.0.0.1;
/// their statuses.
async fn burst_from_one(addr: SocketAddr, path: &str, n: usize) -> Vec<u16> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut statuses = Vec::with_capacity(n);
    for _ in 0..n {
        sender.ready().await.unwrap();
        let request = http::Request::get(path)
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        statuses.push(response.status().as_u16());
        response.into_body().collect().await.unwrap();
    }
    statuses
}

/// The guard beside the attack test: a canary whose own handler times out
/// (it sleeps past --request-timeout, before any answer, while its clients
/// wait to read) is the canary's failure and rolled back, from many
/// clients as from real traffic.
#[tokio::test(flavor = "multi_thread")]
async fn a_canary_that_times_out_on_its_own_is_rolled_back() {
    let dir = tempdir();
    copy(wasm::V1, &dir.path().join("v1.wasm"));
    copy(wasm::SLOW, &dir.path().join("canary.wasm"));
    const MIN_REQUESTS: usize = 20;
    let host = serve(
        dir.path(),
        &rolled_back_at(MIN_REQUESTS),
        &["--request-timeout", "500ms"],
    );
    let replies = burst(host.public, plain("/?ms=5000", 4 * CLIENTS)).await;
    let timed_out = replies.iter().filter(|r| r.status == 504).count();
    assert!(timed_out >= MIN_REQUESTS, "{timed_out} timed out");
    let route = route_doc(&host, "/...").await;
    assert_eq!(route["canary"]["state"], "rolled_back", "{route:#}");
}

/// Two routes with a canary each, from files: `/a/...` and `/p/...`.
const TWO_CANARIES: &str = "[[route]]\npath = \"/a/...\"\ncomponent = \"v1.wasm\"\ncanary = { component = \"v2.wasm\", weight = 50 }\n\n\
     [[route]]\npath = \"/p/...\"\ncomponent = \"v1.wasm\"\ncanary = { component = \"v2.wasm\", weight = 50 }\n";

/// Issue 26, finding 7: abort and promote answer at once whatever a
/// reload waits for. Before: they waited for the reload's lock, held
/// across a pull from a registry that never answers (3 attempts of
/// --pull-timeout 3s).
#[tokio::test(flavor = "multi_thread")]
async fn abort_and_promote_answer_at_once_while_a_reload_waits_on_a_stalled_registry() {
    use crate::fake_registry::StalledRegistry;
    let stalled = StalledRegistry::start().await;
    let dir = tempdir();
    copy(wasm::V1, &dir.path().join("v1.wasm"));
    copy(wasm::V2, &dir.path().join("v2.wasm"));
    let cache = dir.path().join("cache");
    let insecure = stalled.addr.to_string();
    let host = serve(
        dir.path(),
        TWO_CANARIES,
        &[
            "--no-watch",
            "--cache-dir",
            path_str(&cache),
            "--insecure-registry",
            &insecure,
            "--pull-timeout",
            "3s",
        ],
    );
    write(
        &dir.path().join("wasmlet.toml"),
        format!(
            "{TWO_CANARIES}\n[[route]]\npath = \"/oci/...\"\ncomponent = \"{}\"\n",
            stalled.reference("team/hello:v1")
        ),
    );
    let admin = host.admin;
    let started = std::time::Instant::now();
    let reloading = tokio::spawn(async move { reload(admin).await });
    stalled.wait_for_a_connection(Duration::from_secs(10)).await;

    let at = std::time::Instant::now();
    let r = admin_post(&host, "/routes/a/.../abort").await;
    let abort_took = at.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    let at = std::time::Instant::now();
    let r = admin_post(&host, "/routes/p/.../promote").await;
    let promote_took = at.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    eprintln!(
        "while a reload waited on a stalled registry: abort took {abort_took:?}, promote {promote_took:?}"
    );
    assert!(!reloading.is_finished(), "the reload is still waiting");
    assert!(abort_took < Duration::from_secs(1), "{abort_took:?}");
    assert!(promote_took < Duration::from_secs(1), "{promote_took:?}");

    // The reload fails on the stalled route and publishes nothing; both
    // decisions stand.
    let r = reloading.await.unwrap();
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert_eq!(
        route_doc(&host, "/a/...").await["canary"]["state"],
        "aborted"
    );
    assert_eq!(
        route_doc(&host, "/p/...").await["promoted_from_canary"],
        true
    );
    for r in burst(host.public, plain("/a/x", 50)).await {
        assert_eq!(r.text(), "v1");
    }
    for r in burst(host.public, plain("/p/x", 50)).await {
        assert_eq!(r.text(), "v2");
    }
}

/// Issue 26, finding 7: a reload that publishes after an abort and a
/// promotion made while it pulled keeps both (it applies its routes to
/// the table serving at publish time, not the one it started from).
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_publishing_after_an_abort_and_a_promotion_keeps_them() {
    use crate::fake_registry::{FakeRegistry, Fault};
    let registry = FakeRegistry::start().await;
    registry.push(Some("live"), &std::fs::read(wasm::V1).unwrap());
    let dir = tempdir();
    copy(wasm::V1, &dir.path().join("v1.wasm"));
    copy(wasm::V2, &dir.path().join("v2.wasm"));
    let cache = dir.path().join("cache");
    let insecure = registry.addr.to_string();
    let host = serve(
        dir.path(),
        TWO_CANARIES,
        &[
            "--no-watch",
            "--cache-dir",
            path_str(&cache),
            "--insecure-registry",
            &insecure,
            "--pull-timeout",
            "30s",
        ],
    );
    let generation = handlers(&host).await["generation"].as_u64().unwrap();
    write(
        &dir.path().join("wasmlet.toml"),
        format!(
            "{TWO_CANARIES}\n[[route]]\npath = \"/oci/...\"\ncomponent = \"{}\"\n",
            registry.reference(":live")
        ),
    );
    // Every registry answer waits a second: the pull takes a few.
    registry.set_fault(Fault::Slow(Duration::from_secs(1)));
    let admin = host.admin;
    let reloading = tokio::spawn(async move { reload(admin).await });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while registry.log().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no pull started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let at = std::time::Instant::now();
    assert_eq!(admin_post(&host, "/routes/a/.../abort").await.status, 200);
    assert_eq!(admin_post(&host, "/routes/p/.../promote").await.status, 200);
    let took = at.elapsed();
    eprintln!("abort and promote while a reload pulled from a slow registry took {took:?}");
    assert!(!reloading.is_finished(), "the reload is still pulling");
    assert!(took < Duration::from_secs(1), "{took:?}");

    let r = reloading.await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let report: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(report["outcome"], "published");
    // The promotion published generation + 1; the reload's comes after it.
    assert_eq!(report["generation"].as_u64(), Some(generation + 2));
    assert_eq!(get(host.public, "/oci/x").await.text(), "v1");
    let a = route_doc(&host, "/a/...").await;
    assert_eq!(a["canary"]["state"], "aborted", "{a:#}");
    assert_eq!(a["canary"]["effective_weight"], 0, "{a:#}");
    let p = route_doc(&host, "/p/...").await;
    assert_eq!(p["promoted_from_canary"], true, "{p:#}");
    assert_eq!(p["digest"], digest_of(wasm::V2), "{p:#}");
    for r in burst(host.public, plain("/a/x", 50)).await {
        assert_eq!(r.text(), "v1");
    }
    for r in burst(host.public, plain("/p/x", 50)).await {
        assert_eq!(r.text(), "v2");
    }
}

/// Issue 26, finding 8: with --admin-token-file, every admin POST needs
/// `Authorization: Bearer <the file's content>`; without it or with
/// another token: 401 and nothing changes. GETs stay open (probes,
/// scrapers).
#[tokio::test(flavor = "multi_thread")]
async fn admin_posts_need_the_bearer_token_when_one_is_set() {
    let dir = tempdir();
    copy(wasm::V1, &dir.path().join("v1.wasm"));
    copy(wasm::V2, &dir.path().join("v2.wasm"));
    let secret = tempdir();
    let token_file = secret.path().join("token");
    write(&token_file, "s3cr3t-Admin-token\n");
    let host = serve(
        dir.path(),
        TWO_CANARIES,
        &["--no-watch", "--admin-token-file", path_str(&token_file)],
    );
    let generation = handlers(&host).await["generation"].clone();
    // The routes change on disk: a reload would publish.
    write(
        &dir.path().join("wasmlet.toml"),
        format!("{TWO_CANARIES}\n[[route]]\npath = \"/plain\"\ncomponent = \"v1.wasm\"\n"),
    );
    let wrong = [
        None,
        Some("Bearer s3cr3t-Admin-toke"),
        Some("Bearer s3cr3t-Admin-token-and-more"),
        Some("Bearer S3CR3T-ADMIN-TOKEN"),
        Some("Basic czNjcjN0LUFkbWluLXRva2Vu"),
        Some("s3cr3t-Admin-token"),
    ];
    for authorization in wrong {
        for path in ["/reload", "/routes/a/.../abort", "/routes/p/.../promote"] {
            let mut headers = vec![ADMIN_HEADER];
            headers.extend(authorization.map(|a| ("authorization", a)));
            let r = request_with(host.admin, "POST", path, &headers, Bytes::new()).await;
            assert_eq!(r.status, 401, "{path} with {authorization:?}: {}", r.text());
            assert!(
                r.header("www-authenticate")
                    .is_some_and(|v| v.starts_with("Bearer")),
                "{path}"
            );
            assert!(!r.text().contains("s3cr3t"), "{}", r.text());
        }
    }
    let doc = handlers(&host).await;
    assert_eq!(doc["generation"], generation, "{doc:#}");
    assert_eq!(
        route_doc(&host, "/a/...").await["canary"]["state"],
        "active"
    );
    assert_eq!(
        route_doc(&host, "/p/...").await["canary"]["state"],
        "active"
    );
    // Probes, metrics and /handlers need no token.
    for path in ["/healthz", "/readyz", "/metrics", "/handlers"] {
        assert_eq!(get(host.admin, path).await.status, 200, "{path}");
    }

    let right = [ADMIN_HEADER, ("authorization", "Bearer s3cr3t-Admin-token")];
    let r = request_with(
        host.admin,
        "POST",
        "/routes/a/.../abort",
        &right,
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = request_with(
        host.admin,
        "POST",
        "/routes/p/.../promote",
        &right,
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = request_with(host.admin, "POST", "/reload", &right, Bytes::new()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(get(host.public, "/plain").await.text(), "v1");
    assert_eq!(
        route_doc(&host, "/a/...").await["canary"]["state"],
        "aborted"
    );
    // The custom header is still needed, token or not.
    let r = request_with(
        host.admin,
        "POST",
        "/reload",
        &[("authorization", "Bearer s3cr3t-Admin-token")],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
}

/// Issue 26, finding 8: a token file that cannot be read, or is empty,
/// stops start-up before anything listens, naming the file.
#[test]
fn a_bad_admin_token_file_fails_start_up_naming_it() {
    let dir = tempdir();
    let missing = dir.path().join("no-such-token");
    let empty = dir.path().join("empty-token");
    write(&empty, " \n");
    let folder = dir.path().join("a-folder");
    std::fs::create_dir(&folder).unwrap();
    for (file, why) in [
        (&missing, "cannot read"),
        (&empty, "empty"),
        (&folder, "cannot read"),
    ] {
        for (args, env) in [
            (vec!["--admin-token-file", path_str(file)], vec![]),
            (vec![], vec![("WASMLET_ADMIN_TOKEN_FILE", path_str(file))]),
        ] {
            let mut args = args.clone();
            args.push(wasm::V1);
            let (status, stdout, stderr) = serve_to_exit(&args, &env);
            assert!(!status.success(), "{stdout}{stderr}");
            assert!(stderr.contains(path_str(file)), "{stderr}");
            assert!(stderr.contains("--admin-token-file"), "{stderr}");
            assert!(stderr.contains(why), "{why}: {stderr}");
            assert!(!stdout.contains("listening") && !stderr.contains("listening"));
        }
    }
}

/// Issue 31, finding 10: `/handlers`' canary `window` is there from the
/// start (zero counts), digests are spelt `sha256:HEX` in the logs as in
/// `/handlers`, and a reload after a promotion that changes nothing says
/// so with counts that agree: it loads the manifest's old stable version
/// again only to leave it out, so it compiled nothing that serves.
#[tokio::test(flavor = "multi_thread")]
async fn shapes_hold_from_the_start_and_a_reload_after_a_promotion_agrees_with_itself() {
    let dir = tempdir();
    copy(wasm::V1, &dir.path().join("v1.wasm"));
    copy(wasm::V2, &dir.path().join("canary.wasm"));
    let host = serve(dir.path(), &rolled_back_at(100), &[]);
    let doc = route_doc(&host, "/...").await;
    assert_eq!(
        doc["canary"]["window"],
        serde_json::json!({
            "stable": { "total": 0, "failed": 0 },
            "canary": { "total": 0, "failed": 0 }
        }),
        "{doc:#}"
    );
    let (v1, v2) = (digest_of(wasm::V1), digest_of(wasm::V2));
    let r = get(host.public, "/").await;
    assert_eq!(r.status, 200);
    let request = host
        .wait_for_log(Duration::from_secs(5), |l| l.contains(" request "))
        .unwrap();
    let digest = field(&request, "digest");
    assert!(digest == v1 || digest == v2, "{request}");
    let loaded: Vec<String> = host
        .logs()
        .into_iter()
        .filter(|l| l.contains("component loaded"))
        .map(|l| field(&l, "digest"))
        .collect();
    assert_eq!(loaded.len(), 2, "{:#?}", host.logs());
    assert!(loaded.contains(&v1) && loaded.contains(&v2), "{loaded:?}");

    assert_eq!(admin_post(&host, "/routes/.../promote").await.status, 200);
    let r = reload(host.admin).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let report: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(report["outcome"], "unchanged", "{report}");
    assert_eq!(report["compiled"], 0, "{report}");
    assert_eq!(route_doc(&host, "/...").await["digest"], v2);
}
