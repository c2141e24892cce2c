//! Issue 29: TLS on the public port (`--tls-cert`, `--tls-key`): HTTP/2 and
//! HTTP/1.1 by ALPN, the handshake bounded by --header-read-timeout, the
//! pair reloaded when its files change (by rename, and by a Kubernetes
//! Secret volume's `..data` symlink swap), a bad new pair refused while the
//! old one serves, and the certificate's expiry as a metric. Certificates
//! are made here with openssl (P-256, SAN IP:127.0.0.1).

use crate::common::*;
use crate::h2::{by_protocol, curl, need};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// A self-signed P-256 certificate for 127.0.0.1 and its key, valid for
/// `days`, written to `dir/NAME.crt` and `dir/NAME.key`.
pub fn make_pair(dir: &Path, name: &str, days: u32) -> (PathBuf, PathBuf) {
    need("openssl", "openssl");
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let output = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args([
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            &days.to_string(),
        ])
        .args(["-subj", &format!("/CN={name}")])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(["-keyout", path_str(&key), "-out", path_str(&cert)])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (cert, key)
}

/// `openssl x509 -enddate` of `cert`, in seconds since the epoch.
fn enddate(cert: &Path) -> u64 {
    let output = Command::new("openssl")
        .args(["x509", "-enddate", "-noout", "-in", path_str(cert)])
        .output()
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    let date = text.trim().strip_prefix("notAfter=").unwrap();
    let output = Command::new("date")
        .args(["-u", "-d", date, "+%s"])
        .output()
        .unwrap();
    String::from_utf8(output.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The value of the sample `name` (labels included) on `/metrics`.
async fn sample(host: &Wasmlet, name: &str) -> Option<u64> {
    let exposition = get(host.admin, "/metrics").await.text();
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map(|value| value.trim().parse().unwrap())
}

/// Waits until the sample `name` is `value`.
async fn wait_for_sample(host: &Wasmlet, name: &str, value: u64) {
    for _ in 0..100 {
        if sample(host, name).await == Some(value) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{name} is {:?}, not {value}; logs:\n{}",
        sample(host, name).await,
        host.logs().join("\n")
    );
}

fn https(host: &Wasmlet, path: &str) -> String {
    format!("https://127.0.0.1:{}{path}", host.public.port())
}

const LOADED: &str = "wasmlet_tls_reloads_total{outcome=\"loaded\"}";
const REFUSED: &str = "wasmlet_tls_reloads_total{outcome=\"error\"}";
const EXPIRY: &str = "wasmlet_tls_certificate_expiry_timestamp_seconds";

#[tokio::test(flavor = "multi_thread")]
async fn curl_over_tls_gets_hello_world_by_http2_and_http1() {
    let dir = tempdir();
    let (cert, key) = make_pair(dir.path(), "a", 30);
    let manifest = dir.path().join("wasmlet.toml");
    write(
        &manifest,
        format!(
            "[[route]]\npath = \"/spin/...\"\ncomponent = \"{}\"\n\n\
             [[route]]\npath = \"/...\"\ncomponent = \"{}\"\n",
            wasm::SPIN_SDK_HEADERS,
            wasm::HELLO
        ),
    );
    let host = Wasmlet::serve(&[
        "--config",
        path_str(&manifest),
        "--tls-cert",
        path_str(&cert),
        "--tls-key",
        path_str(&key),
        "--header-read-timeout",
        "1s",
    ]);
    let cacert = path_str(&cert);
    let url = https(&host, "/");
    let (body, version) = curl(&["--http2", "--cacert", cacert, &url]).await.unwrap();
    assert_eq!((body.as_str(), version.as_str()), ("Hello World!", "2"));
    let (body, version) = curl(&["--http1.1", "--cacert", cacert, &url])
        .await
        .unwrap();
    assert_eq!((body.as_str(), version.as_str()), ("Hello World!", "1.1"));
    // A handler sees the scheme of the connection.
    for protocol in ["--http2", "--http1.1"] {
        let (body, _) = curl(&[protocol, "--cacert", cacert, &https(&host, "/spin/headers")])
            .await
            .unwrap();
        let expected = format!("spin-full-url: {}", https(&host, "/spin/headers"));
        assert!(body.contains(&expected), "{protocol}: {body}");
    }
    assert_eq!(by_protocol(host.admin, "h2", true).await, 2);
    assert_eq!(by_protocol(host.admin, "http/1.1", true).await, 2);

    // The expiry, as openssl reads it, and the load.
    assert_eq!(sample(&host, EXPIRY).await, Some(enddate(&cert)));
    assert_eq!(sample(&host, LOADED).await, Some(1));
    let line = host
        .wait_for_log(Duration::from_secs(1), |l| {
            l.contains("TLS certificate loaded")
        })
        .unwrap();
    assert!(
        line.contains("not_after=") && line.contains("days_left=29"),
        "{line}"
    );

    // Clear text to the TLS port fails its handshake; a client that sends
    // nothing is closed after --header-read-timeout.
    assert!(
        curl(&["--http1.1", &format!("http://{}/", host.public)])
            .await
            .is_err()
    );
    let mut silent = tokio::net::TcpStream::connect(host.public).await.unwrap();
    let started = std::time::Instant::now();
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut [0u8; 16])).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
    assert!(started.elapsed() >= Duration::from_millis(800));
    wait_for_sample(
        &host,
        "wasmlet_tls_handshake_failures_total{reason=\"timeout\"}",
        1,
    )
    .await;
    wait_for_sample(
        &host,
        "wasmlet_tls_handshake_failures_total{reason=\"error\"}",
        1,
    )
    .await;
    // The admin port stays clear text.
    assert_eq!(get(host.admin, "/healthz").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renamed_pair_is_served_and_a_mismatched_one_refused() {
    let served = tempdir();
    let staged = tempdir();
    let (a_cert, a_key) = make_pair(staged.path(), "a", 30);
    let (b_cert, b_key) = make_pair(staged.path(), "b", 60);
    let (cert, key) = (served.path().join("tls.crt"), served.path().join("tls.key"));
    std::fs::copy(&a_cert, &cert).unwrap();
    std::fs::copy(&a_key, &key).unwrap();
    let host = Wasmlet::serve(&[
        wasm::HELLO,
        "--tls-cert",
        path_str(&cert),
        "--tls-key",
        path_str(&key),
    ]);
    let url = https(&host, "/");
    let trusting = |ca: &Path| {
        let (ca, url) = (path_str(ca).to_string(), url.clone());
        async move { curl(&["--http2", "--cacert", &ca, &url]).await }
    };
    assert_eq!(trusting(&a_cert).await.unwrap().0, "Hello World!");

    // B's key alone: not A's certificate's key, refused; A keeps serving.
    std::fs::rename(&b_key, &key).unwrap();
    wait_for_sample(&host, REFUSED, 1).await;
    let refused = host
        .wait_for_log(Duration::from_secs(1), |l| l.contains("TLS reload refused"))
        .unwrap();
    assert!(
        refused.contains("ERROR") && refused.contains(path_str(&key)),
        "{refused}"
    );
    assert_eq!(trusting(&a_cert).await.unwrap().0, "Hello World!");
    assert_eq!(sample(&host, EXPIRY).await, Some(enddate(&a_cert)));

    // Then B's certificate: the pair is whole, and new handshakes get it.
    std::fs::rename(&b_cert, &cert).unwrap();
    wait_for_sample(&host, LOADED, 2).await;
    assert_eq!(trusting(&cert).await.unwrap().0, "Hello World!");
    assert!(trusting(&a_cert).await.is_err(), "A is no longer served");
    assert_eq!(sample(&host, EXPIRY).await, Some(enddate(&cert)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_volumes_data_symlink_swap_is_served() {
    // What kubelet writes: ..2026_a/tls.{crt,key}, ..data -> ..2026_a, and
    // tls.crt -> ..data/tls.crt; an update swaps ..data by a rename.
    let volume = tempdir();
    let root = volume.path();
    let first = root.join("..2026_a");
    std::fs::create_dir(&first).unwrap();
    make_pair(&first, "tls", 30);
    std::os::unix::fs::symlink("..2026_a", root.join("..data")).unwrap();
    for file in ["tls.crt", "tls.key"] {
        std::os::unix::fs::symlink(format!("..data/{file}"), root.join(file)).unwrap();
    }
    let host = Wasmlet::serve(&[
        wasm::HELLO,
        "--tls-cert",
        path_str(&root.join("tls.crt")),
        "--tls-key",
        path_str(&root.join("tls.key")),
    ]);
    let url = https(&host, "/");
    let first_cert = first.join("tls.crt");
    let (body, _) = curl(&["--cacert", path_str(&first_cert), &url])
        .await
        .unwrap();
    assert_eq!(body, "Hello World!");

    let second = root.join("..2026_b");
    std::fs::create_dir(&second).unwrap();
    let (second_cert, _) = make_pair(&second, "tls", 90);
    std::os::unix::fs::symlink("..2026_b", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    wait_for_sample(&host, LOADED, 2).await;
    let (body, _) = curl(&["--cacert", path_str(&second_cert), &url])
        .await
        .unwrap();
    assert_eq!(body, "Hello World!");
    assert_eq!(sample(&host, EXPIRY).await, Some(enddate(&second_cert)));
}

#[test]
fn a_bad_pair_or_half_a_pair_exits_1_naming_the_file() {
    let dir = tempdir();
    let (a_cert, a_key) = make_pair(dir.path(), "a", 30);
    let (_, b_key) = make_pair(dir.path(), "b", 30);
    let missing = dir.path().join("missing.crt");
    // (flags, environment, the error line's text)
    type Case<'a> = (Vec<&'a str>, &'a [(&'a str, &'a str)], String);
    let cases: [Case; 5] = [
        (
            vec!["--tls-cert", path_str(&a_cert)],
            &[],
            "--tls-cert needs --tls-key".to_string(),
        ),
        (
            vec![],
            &[("WASMLET_TLS_KEY", path_str(&a_key))],
            "--tls-key needs --tls-cert".to_string(),
        ),
        (
            vec![
                "--tls-cert",
                path_str(&a_cert),
                "--tls-key",
                path_str(&b_key),
            ],
            &[],
            format!(
                "--tls-key `{}` is not the key of the certificate in --tls-cert `{}`",
                path_str(&b_key),
                path_str(&a_cert)
            ),
        ),
        (
            vec![
                "--tls-cert",
                path_str(&missing),
                "--tls-key",
                path_str(&a_key),
            ],
            &[],
            format!("--tls-cert `{}`: cannot open", path_str(&missing)),
        ),
        (
            vec![
                "--tls-cert",
                path_str(&a_key),
                "--tls-key",
                path_str(&a_key),
            ],
            &[],
            format!("--tls-cert `{}`: no certificate in it", path_str(&a_key)),
        ),
    ];
    for (args, env, expected) in cases {
        let args: Vec<&str> = std::iter::once(wasm::HELLO).chain(args).collect();
        let (status, _, stderr) = serve_to_exit(&args, env);
        assert_eq!(status.code(), Some(1), "{args:?}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{args:?}: {stderr}");
        assert!(errors[0].contains(&expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("listening"), "{stderr}");
    }
}

/// Completes a TLS handshake with `openssl s_client`, naming `sni` as the
/// server (openssl sends it even when it is an IP address, as some clients
/// do); panics unless the handshake completed.
fn handshake_with_sni(host: &Wasmlet, sni: &str) {
    let output = Command::new("openssl")
        .args(["s_client", "-connect", &host.public.to_string()])
        .args(["-servername", sni])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("TLSv1.3"), "no handshake: {text}");
}

/// rustls logs a WARN for what a client does wrong, once per handshake
/// (here an IP address sent as SNI, as some ordinary clients do): noise any
/// client can make the host write at will, on the log path that never
/// drops. rustls's own lines come only when RUST_LOG names it.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_sending_an_ip_as_sni_writes_no_log_line() {
    need("openssl", "openssl");
    let dir = tempdir();
    let (cert, key) = make_pair(dir.path(), "a", 30);
    let args = [
        wasm::HELLO,
        "--tls-cert",
        path_str(&cert),
        "--tls-key",
        path_str(&key),
    ];
    let quiet = Wasmlet::serve(&args);
    let asked = Wasmlet::serve_with_env(&args, &[("RUST_LOG", "info,rustls=warn")]);
    for _ in 0..5 {
        handshake_with_sni(&quiet, "127.0.0.1");
    }
    handshake_with_sni(&asked, "127.0.0.1");
    // The operator who asked for rustls's lines gets them: the handshakes
    // above were the kind that makes one.
    asked
        .wait_for_log(Duration::from_secs(5), |l| l.contains("SNI"))
        .expect("RUST_LOG=rustls=warn shows rustls's warning");
    let rustls: Vec<String> = quiet.logs_containing("rustls");
    assert!(rustls.is_empty(), "{rustls:#?}");
}
