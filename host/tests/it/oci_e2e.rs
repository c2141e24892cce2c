//! Issue 17 end to end: a real registry (Debian's `docker-registry`,
//! distribution 2.8) on a loopback port, `wasmlet push`, an independent
//! client (oras-py, `scripts/oras-push.sh`), and `wasmlet serve` pulling
//! what both pushed; then the same registry behind htpasswd basic auth,
//! and behind TLS with a certificate from a test CA.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

/// `docker-registry serve` on 127.0.0.1, storing in a temp dir; killed
/// (by its PID) on drop.
struct Distribution {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Distribution {
    /// Anonymous access.
    async fn start() -> Distribution {
        Distribution::start_with(None, None).await
    }

    /// With `htpasswd` (bcrypt lines), every request needs basic auth; with
    /// `tls`, the registry speaks HTTPS only.
    async fn start_with(htpasswd: Option<&str>, tls: Option<&TestCa>) -> Distribution {
        let status = Command::new(repo_root().join("scripts/need-command.sh"))
            .args(["docker-registry", "docker-registry"])
            .status()
            .expect("scripts/need-command.sh");
        assert!(status.success(), "cannot install docker-registry");
        let dir = tempdir();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some(htpasswd) = htpasswd {
            let file = dir.path().join("htpasswd");
            write(&file, htpasswd);
            yaml += &format!(
                "auth:\n  htpasswd:\n    realm: wasmlet-e2e\n    path: {}\n",
                file.display()
            );
        }
        if let Some(tls) = tls {
            yaml += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                tls.cert.display(),
                tls.key.display()
            );
        }
        write(&config, yaml);
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry");
        let registry = Distribution {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let sock: std::net::SocketAddr = registry.addr.parse().unwrap();
        loop {
            // A TLS listener is configured before it accepts.
            if tls.is_some() && std::net::TcpStream::connect(sock).is_ok() {
                break;
            }
            if let Ok(r) = send(
                sock,
                http::Request::get("/v2/")
                    .header("host", &registry.addr)
                    .body(String::new())
                    .unwrap(),
            )
            .await
                && (r.status == 200 || (htpasswd.is_some() && r.status == 401))
            {
                break;
            }
            assert!(Instant::now() < deadline, "docker-registry did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        registry
    }
}

/// A CA and a certificate it signed for 127.0.0.1, made with the openssl CLI.
struct TestCa {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl TestCa {
    fn new(dir: &Path) -> TestCa {
        let status = Command::new(repo_root().join("scripts/need-command.sh"))
            .args(["openssl", "openssl"])
            .status()
            .expect("scripts/need-command.sh");
        assert!(status.success(), "cannot install openssl");
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let p256 = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"][..],
                &p256,
                &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"],
                &["-subj", "/CN=wasmlet-test-ca"],
                &["-addext", "basicConstraints=critical,CA:TRUE"],
                &["-addext", "keyUsage=critical,keyCertSign"],
            ]
            .concat(),
        );
        openssl(
            &[
                &["req"][..],
                &p256,
                &["-keyout", "server.key", "-out", "server.csr"],
                &["-subj", "/CN=127.0.0.1"],
            ]
            .concat(),
        );
        write(
            &dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
        );
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        TestCa {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wasmlet_push(file: &str, target: &str, insecure: &str) -> String {
    let (status, stdout, stderr) = run(&["push", file, target, "--insecure-registry", insecure]);
    assert!(status.success(), "{stderr}");
    stdout.trim().to_string()
}

fn oras_push(file: &str, target: &str, media_type: &str) -> String {
    let out = Command::new(repo_root().join("scripts/oras-push.sh"))
        .args([file, target, media_type])
        .output()
        .expect("scripts/oras-push.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn push_and_pull_against_distribution() {
    let registry = Distribution::start().await;
    let addr = registry.addr.clone();
    let sock: std::net::SocketAddr = addr.parse().unwrap();

    // wasmlet push: the CNCF layout, read back by plain HTTP.
    let pushed = wasmlet_push(wasm::V1, &format!("oci://{addr}/e2e/v1:1.0"), &addr);
    assert!(
        pushed.starts_with("sha256:") && pushed.len() == 71,
        "{pushed}"
    );
    let r = send(
        sock,
        http::Request::get("/v2/e2e/v1/manifests/1.0")
            .header("host", &addr)
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .body(String::new())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.header("docker-content-digest"), Some(pushed.as_str()));
    let manifest: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 1);
    assert_eq!(manifest["layers"][0]["mediaType"], "application/wasm");
    let layer = crate::fake_registry::sha256(&std::fs::read(wasm::V1).unwrap());
    assert_eq!(manifest["layers"][0]["digest"], layer.as_str());

    // Refusals: not a component, a digest as the target.
    let (status, _, stderr) = run(&[
        "push",
        wasm::V1,
        &format!("oci://{addr}/e2e/v1@{pushed}"),
        "--insecure-registry",
        &addr,
    ]);
    assert!(
        !status.success() && stderr.contains("push to a tag"),
        "{stderr}"
    );
    let dir = tempdir();
    let text = dir.path().join("not.wasm");
    write(&text, "not wasm");
    let (status, _, stderr) = run(&[
        "push",
        path_str(&text),
        &format!("oci://{addr}/e2e/bad:1"),
        "--insecure-registry",
        &addr,
    ]);
    assert!(
        !status.success() && stderr.contains("not a WebAssembly file"),
        "{stderr}"
    );

    // oras-py: the CNCF layer type and Spin's.
    let cncf = oras_push(wasm::V2, &format!("{addr}/e2e/v2:oras"), "application/wasm");
    assert!(cncf.starts_with("sha256:"), "{cncf}");
    oras_push(
        wasm::HELLO,
        &format!("{addr}/e2e/hello:spin"),
        "application/vnd.wasm.content.layer.v1+wasm",
    );

    write(
        &dir.path().join("wasmlet.toml"),
        format!(
            "[[route]]\npath = \"/v1\"\ncomponent = \"oci://{addr}/e2e/v1@{pushed}\"\n\
             [[route]]\npath = \"/v2\"\ncomponent = \"oci://{addr}/e2e/v2:oras\"\n\
             [[route]]\npath = \"/...\"\ncomponent = \"oci://{addr}/e2e/hello:spin\"\n"
        ),
    );
    let cache = dir.path().join("cache");
    let host = Wasmlet::serve(&[
        "--config",
        path_str(&dir.path().join("wasmlet.toml")),
        "--cache-dir",
        path_str(&cache),
        "--insecure-registry",
        &addr,
    ]);
    assert_eq!(get(host.public, "/v1").await.text(), "v1");
    assert_eq!(get(host.public, "/v2").await.text(), "v2");
    assert_eq!(get(host.public, "/").await.text(), "Hello World!");
    let doc = handlers(&host).await;
    let v2 = doc["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "/v2")
        .unwrap()
        .clone();
    assert_eq!(v2["resolved_digest"], cncf.as_str(), "{doc}");
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_against_distribution() {
    const SECRET: &str = "e2e-pa55-never-shown";
    // bcrypt (the only kind distribution takes) of SECRET, as `htpasswd -B` writes it.
    const HTPASSWD: &str = "robot:$2b$05$wasmletE2eSaltValue01uQMD0uUuN/nX/QBSeKjeUIDwqwGB8x8q\n";
    let registry = Distribution::start_with(Some(HTPASSWD), None).await;
    let addr = registry.addr.clone();
    let dir = tempdir();
    let docker_config = |name: &str, password: &str| {
        let folder = dir.path().join(name);
        std::fs::create_dir_all(&folder).unwrap();
        let auth = crate::fake_registry::base64(format!("robot:{password}").as_bytes());
        write(
            &folder.join("config.json"),
            format!(r#"{{"auths": {{"{addr}": {{"auth": "{auth}"}}}}}}"#),
        );
        folder
    };
    let good = docker_config("good", SECRET);
    let wrong = docker_config("wrong", "wr0ng-pa55");
    let anonymous = dir.path().join("anonymous");
    let secrets = [
        SECRET.to_string(),
        crate::fake_registry::base64(format!("robot:{SECRET}").as_bytes()),
    ];
    let shown = |text: &str| secrets.iter().any(|s| text.contains(s.as_str()));

    let tag = format!("oci://{addr}/private/v1:1.0");
    let push = |config: &Path| {
        run_with_env(
            &["push", wasm::V1, &tag, "--insecure-registry", &addr],
            &[("DOCKER_CONFIG", path_str(config))],
        )
    };
    let (status, _, stderr) = push(&anonymous);
    assert!(!status.success() && stderr.contains(&tag), "{stderr}");
    let (status, stdout, stderr) = push(&good);
    assert!(status.success(), "{stderr}");
    let digest = stdout.trim().to_string();
    assert!(digest.starts_with("sha256:"), "{stdout}");
    assert!(!shown(&stdout) && !shown(&stderr), "{stdout}{stderr}");

    let manifest = dir.path().join("wasmlet.toml");
    write(
        &manifest,
        format!("[[route]]\npath = \"/...\"\ncomponent = \"{tag}\"\n"),
    );
    let caches = ["cache-a", "cache-w", "cache"].map(|c| dir.path().join(c));
    let args = |cache: usize| {
        let cache = path_str(&caches[cache]);
        [
            "--config",
            path_str(&manifest),
            "--cache-dir",
            cache,
            "--insecure-registry",
            &addr,
        ]
    };
    // Without credentials, and with a wrong password: refused at start-up,
    // naming the reference, never the secret.
    for (config, cache) in [(&anonymous, 0), (&wrong, 1)] {
        let env = [("DOCKER_CONFIG", path_str(config)), ("RUST_LOG", "debug")];
        let (status, _, stderr) = serve_to_exit(&args(cache), &env);
        assert!(!status.success() && stderr.contains(&tag), "{stderr}");
        assert!(
            !shown(&stderr) && !stderr.contains("wr0ng-pa55"),
            "{stderr}"
        );
    }
    let host = Wasmlet::serve_with_env(
        &args(2),
        &[("DOCKER_CONFIG", path_str(&good)), ("RUST_LOG", "debug")],
    );
    assert_eq!(get(host.public, "/").await.text(), "v1");
    let doc = handlers(&host).await;
    assert_eq!(
        doc["routes"][0]["resolved_digest"],
        digest.as_str(),
        "{doc}"
    );
    let logs = host.logs().join("\n");
    assert!(!shown(&doc.to_string()) && !shown(&logs), "{logs}");
}

/// HTTPS, verified against the system's roots: a registry whose certificate
/// a test CA signed is refused until that CA is among the roots
/// (`SSL_CERT_FILE`, read on Linux as a pod's mounted CA bundle would be).
#[tokio::test(flavor = "multi_thread")]
async fn https_is_verified_against_the_system_roots() {
    let dir = tempdir();
    let ca = TestCa::new(dir.path());
    let registry = Distribution::start_with(None, Some(&ca)).await;
    let tag = format!("oci://{}/tls/v1:1.0", registry.addr);
    let trusted = [("SSL_CERT_FILE", path_str(&ca.ca))];

    let (status, _, stderr) = run_with_env(&["push", wasm::V1, &tag], &[]);
    assert!(
        !status.success() && stderr.contains(&tag) && stderr.contains("certificate"),
        "{stderr}"
    );
    let (status, stdout, stderr) = run_with_env(&["push", wasm::V1, &tag], &trusted);
    assert!(status.success(), "{stderr}");
    let digest = stdout.trim().to_string();

    let manifest = dir.path().join("wasmlet.toml");
    write(
        &manifest,
        format!("[[route]]\npath = \"/...\"\ncomponent = \"{tag}\"\n"),
    );
    let caches = ["cache-untrusted", "cache"].map(|c| dir.path().join(c));
    let args = |cache: usize| {
        let cache = path_str(&caches[cache]);
        [
            "--config",
            path_str(&manifest),
            "--cache-dir",
            cache,
            "--pull-timeout",
            "5s",
        ]
    };
    let (status, _, stderr) = serve_to_exit(&args(0), &[]);
    assert!(
        !status.success() && stderr.contains(&tag) && stderr.contains("certificate"),
        "{stderr}"
    );
    let host = Wasmlet::serve_with_env(&args(1), &trusted);
    assert_eq!(get(host.public, "/").await.text(), "v1");
    let doc = handlers(&host).await;
    assert_eq!(
        doc["routes"][0]["resolved_digest"],
        digest.as_str(),
        "{doc}"
    );
}
