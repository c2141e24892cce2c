//! Issue 17 end to end: a real registry (Debian's `docker-registry`,
//! distribution 2.8) on a loopback port, `wasmlet push`, an independent
//! client (oras-py, `scripts/oras-push.sh`), and `wasmlet serve` pulling
//! what both pushed; then the same registry behind htpasswd basic auth,
//! behind the bearer-token flow with a token server in the test, and
//! behind TLS with a certificate from a test CA.

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
    /// The registry's stderr (its log), for assertion messages.
    log: PathBuf,
}

/// Who may use the registry.
enum Auth<'a> {
    Anonymous,
    /// htpasswd (bcrypt lines): every request needs basic auth.
    Htpasswd(&'a str),
    /// `auth: token:`: every request needs a bearer token from this realm.
    Token(&'a TokenAuth),
}

/// The registry side of the token flow: where clients get tokens, and what
/// the registry checks in them.
struct TokenAuth {
    realm: String,
    service: String,
    issuer: String,
    /// PEM certificates a token's `x5c` chain must end in.
    rootcertbundle: PathBuf,
}

impl Distribution {
    /// Anonymous access.
    async fn start() -> Distribution {
        Distribution::start_with(Auth::Anonymous, None).await
    }

    /// With `auth`, requests need credentials; with `tls`, the registry
    /// speaks HTTPS only.
    async fn start_with(auth: Auth<'_>, tls: Option<&TestCa>) -> Distribution {
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
        let needs_auth = !matches!(auth, Auth::Anonymous);
        if let Some(tls) = tls {
            yaml += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                tls.cert.display(),
                tls.key.display()
            );
        }
        // After `http:`, whose `tls:` the lines above extend.
        match auth {
            Auth::Anonymous => {}
            Auth::Htpasswd(htpasswd) => {
                let file = dir.path().join("htpasswd");
                write(&file, htpasswd);
                yaml += &format!(
                    "auth:\n  htpasswd:\n    realm: wasmlet-e2e\n    path: {}\n",
                    file.display()
                );
            }
            Auth::Token(token) => {
                yaml += &format!(
                    "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                    token.realm,
                    token.service,
                    token.issuer,
                    token.rootcertbundle.display()
                );
            }
        }
        write(&config, yaml);
        let log = dir.path().join("registry.log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("docker-registry");
        let registry = Distribution {
            child,
            addr,
            _dir: dir,
            log,
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
                && (r.status == 200 || (needs_auth && r.status == 401))
            {
                break;
            }
            assert!(Instant::now() < deadline, "docker-registry did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        registry
    }

    /// What the registry has logged so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
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
        let openssl = |args: &[&str]| openssl(dir, args);
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

/// Runs the openssl CLI (installed if missing) in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new(repo_root().join("scripts/need-command.sh"))
        .args(["openssl", "openssl"])
        .status()
        .expect("scripts/need-command.sh");
    assert!(status.success(), "cannot install openssl");
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
}

/// A token server on a loopback port 0, as `auth: token:` expects one:
/// `GET /token?service=…&scope=repository:NAME:ACTIONS` with the robot's
/// basic credentials answers a JWT granting those actions, ES256-signed by
/// a self-signed certificate that is the registry's whole `rootcertbundle`;
/// anything else answers 401.
struct TokenServer {
    addr: std::net::SocketAddr,
    /// Every token issued so far.
    issued: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

/// What the token server signs with and checks.
struct Issuer {
    key: p256::ecdsa::SigningKey,
    /// Base64 DER of the certificate, as `x5c` carries it.
    x5c: String,
    issuer: String,
    service: String,
    /// `Basic base64(robot:password)`, the only credentials it takes.
    basic: String,
}

impl TokenServer {
    /// Makes the signing certificate (`token.pem` in `dir`) and starts
    /// serving; the registry's [`TokenAuth`] comes from [`TokenServer::auth`].
    async fn start(dir: &Path, service: &str, issuer: &str, password: &str) -> TokenServer {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "token.key",
                "-out",
                "token.pem",
                "-days",
                "2",
                "-subj",
                "/CN=wasmlet-test-token-issuer",
            ],
        );
        use p256::pkcs8::DecodePrivateKey;
        let key_pem = std::fs::read_to_string(dir.join("token.key")).unwrap();
        let key = p256::ecdsa::SigningKey::from_pkcs8_pem(&key_pem).unwrap();
        // A PEM body is the base64 of the DER.
        let x5c: String = std::fs::read_to_string(dir.join("token.pem"))
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let issuer = std::sync::Arc::new(Issuer {
            key,
            x5c,
            issuer: issuer.into(),
            service: service.into(),
            basic: format!(
                "Basic {}",
                crate::fake_registry::base64(format!("robot:{password}").as_bytes())
            ),
        });
        let issued = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = issued.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (issuer, log) = (issuer.clone(), log.clone());
                let service = hyper::service::service_fn(move |req| {
                    let answer = issue(&issuer, &log, &req);
                    async move { Ok::<_, std::convert::Infallible>(answer) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        TokenServer { addr, issued, task }
    }

    /// The registry's side: this server's realm, and `token.pem` as the
    /// only root.
    fn auth(&self, dir: &Path, service: &str, issuer: &str) -> TokenAuth {
        TokenAuth {
            realm: format!("http://{}/token", self.addr),
            service: service.into(),
            issuer: issuer.into(),
            rootcertbundle: dir.join("token.pem"),
        }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One token request: 401 unless it carries the robot's credentials, else
/// `{"token": JWT, "access_token": JWT}` for the scopes it asks.
fn issue<B>(
    issuer: &Issuer,
    log: &std::sync::Mutex<Vec<String>>,
    req: &http::Request<B>,
) -> http::Response<http_body_util::Full<bytes::Bytes>> {
    use base64::Engine;
    use p256::ecdsa::signature::Signer;
    let answer = |status: u16, body: String| {
        http::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap()
    };
    let authorized = req
        .headers()
        .get("authorization")
        .is_some_and(|v| v.as_bytes() == issuer.basic.as_bytes());
    if req.uri().path() != "/token" || !authorized {
        return answer(401, r#"{"details":"wrong credentials"}"#.into());
    }
    let query = req.uri().query().unwrap_or("");
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| percent_decode(v))
            .collect::<Vec<_>>()
    };
    if param("service") != [issuer.service.clone()] {
        return answer(400, r#"{"details":"unknown service"}"#.into());
    }
    // `repository:NAME:ACTIONS`; NAME may hold no colon here (no port).
    let access: Vec<serde_json::Value> = param("scope")
        .iter()
        .flat_map(|scopes| scopes.split(' ').map(str::to_string).collect::<Vec<_>>())
        .filter_map(|scope| {
            let mut parts = scope.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            Some(serde_json::json!({
                "type": kind,
                "name": name,
                "actions": actions.split(',').collect::<Vec<_>>(),
            }))
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [issuer.x5c]});
    let mut log = log.lock().unwrap();
    let claims = serde_json::json!({
        "iss": issuer.issuer,
        "sub": "robot",
        "aud": issuer.service,
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("wasmlet-e2e-{}", log.len()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature: p256::ecdsa::Signature = issuer.key.sign(signing_input.as_bytes());
    let token = format!("{signing_input}.{}", b64(&signature.to_bytes()));
    log.push(token.clone());
    answer(
        200,
        serde_json::json!({"token": token, "access_token": token, "expires_in": 300}).to_string(),
    )
}

/// `%XX` escapes and `+` of a query value.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
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

    // Issue 31 (9): the same file pushes to the same digest, a second
    // later too (the config's `created` is the file's modification time);
    // with SOURCE_DATE_EPOCH, a copy of it does as well.
    std::thread::sleep(Duration::from_millis(1100));
    let again = wasmlet_push(wasm::V1, &format!("oci://{addr}/e2e/v1:again"), &addr);
    assert_eq!(again, pushed, "the same file, pushed again");
    let dir = tempdir();
    let copy = dir.path().join("v1.wasm");
    std::fs::copy(wasm::V1, &copy).unwrap();
    let epoch_push = |file: &str, tag: &str| {
        let (status, stdout, stderr) = run_with_env(
            &[
                "push",
                file,
                &format!("oci://{addr}/e2e/v1:{tag}"),
                "--insecure-registry",
                &addr,
            ],
            &[("SOURCE_DATE_EPOCH", "1700000000")],
        );
        assert!(status.success(), "{stderr}");
        stdout.trim().to_string()
    };
    let epoch = epoch_push(wasm::V1, "epoch");
    assert_eq!(epoch_push(path_str(&copy), "epoch-copy"), epoch);
    assert_ne!(epoch, pushed);
    let (status, _, stderr) = run_with_env(
        &[
            "push",
            wasm::V1,
            &format!("oci://{addr}/e2e/v1:bad"),
            "--insecure-registry",
            &addr,
        ],
        &[("SOURCE_DATE_EPOCH", "yesterday")],
    );
    assert!(
        !status.success() && stderr.contains("SOURCE_DATE_EPOCH"),
        "{stderr}"
    );
    // Issue 31 (8): a plain-HTTP registry not named insecure.
    let (status, _, stderr) = run(&["push", wasm::V1, &format!("oci://{addr}/e2e/v1:tls")]);
    assert!(
        !status.success()
            && stderr.contains("answered in plain HTTP")
            && stderr.contains(&format!("--insecure-registry {addr}")),
        "{stderr}"
    );

    // ... and `serve` says the same at once, without retrying it.
    let dir = tempdir();
    let config = dir.path().join("wasmlet.toml");
    write(
        &config,
        format!("[[route]]\npath = \"/...\"\ncomponent = \"oci://{addr}/e2e/v1@{pushed}\"\n"),
    );
    let cache = dir.path().join("cache");
    let (status, _, stderr) = serve_to_exit(
        &[
            "--config",
            path_str(&config),
            "--cache-dir",
            path_str(&cache),
        ],
        &[],
    );
    assert!(
        !status.success()
            && stderr.contains("answered in plain HTTP")
            && stderr.contains(&format!("--insecure-registry {addr}"))
            && !stderr.contains("retrying"),
        "{stderr}"
    );

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

/// A Docker config folder `dir/name` holding the robot's credentials for
/// `registry`, with `password`.
fn robot_config(dir: &Path, name: &str, registry: &str, password: &str) -> PathBuf {
    robot_config_for(dir, name, &[registry], password)
}

/// The robot's credentials for each of `servers`: a token realm on
/// another host or port gets credentials only when the config lists it.
fn robot_config_for(dir: &Path, name: &str, servers: &[&str], password: &str) -> PathBuf {
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).unwrap();
    let auth = crate::fake_registry::base64(format!("robot:{password}").as_bytes());
    let auths: Vec<String> = servers
        .iter()
        .map(|server| format!(r#""{server}": {{"auth": "{auth}"}}"#))
        .collect();
    write(
        &folder.join("config.json"),
        format!(r#"{{"auths": {{{}}}}}"#, auths.join(", ")),
    );
    folder
}

/// The Docker config folders a credentials test serves with.
struct Robot<'a> {
    /// No credentials at all.
    anonymous: &'a Path,
    /// The robot with `wrong_password`.
    wrong: &'a Path,
    wrong_password: &'a str,
    /// The robot with its real password.
    good: &'a Path,
}

/// `wasmlet serve` of `tag` is refused at start-up without credentials and
/// with a wrong password, naming the reference and never a secret (as
/// `shown` tells them); with the robot's credentials it answers `body` on
/// `/` and `/handlers` shows `digest`, with no secret in `/handlers` or the
/// logs.
async fn serves_only_with_the_robots_credentials(
    dir: &Path,
    tag: &str,
    registry: &str,
    robot: &Robot<'_>,
    body: &str,
    digest: &str,
    shown: &dyn Fn(&str) -> bool,
) {
    let manifest = dir.join("wasmlet.toml");
    write(
        &manifest,
        format!("[[route]]\npath = \"/...\"\ncomponent = \"{tag}\"\n"),
    );
    let caches = ["cache-a", "cache-w", "cache"].map(|c| dir.join(c));
    let args = |cache: usize| {
        let cache = path_str(&caches[cache]);
        [
            "--config",
            path_str(&manifest),
            "--cache-dir",
            cache,
            "--insecure-registry",
            registry,
        ]
    };
    for (config, cache) in [(robot.anonymous, 0), (robot.wrong, 1)] {
        let env = [("DOCKER_CONFIG", path_str(config)), ("RUST_LOG", "debug")];
        let (status, _, stderr) = serve_to_exit(&args(cache), &env);
        assert!(!status.success() && stderr.contains(tag), "{stderr}");
        assert!(
            !shown(&stderr) && !stderr.contains(robot.wrong_password),
            "{stderr}"
        );
    }
    let host = Wasmlet::serve_with_env(
        &args(2),
        &[
            ("DOCKER_CONFIG", path_str(robot.good)),
            ("RUST_LOG", "debug"),
        ],
    );
    assert_eq!(get(host.public, "/").await.text(), body);
    let doc = handlers(&host).await;
    assert_eq!(doc["routes"][0]["resolved_digest"], digest, "{doc}");
    let logs = host.logs().join("\n");
    assert!(!shown(&doc.to_string()) && !shown(&logs), "{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_against_distribution() {
    const SECRET: &str = "e2e-pa55-never-shown";
    // bcrypt (the only kind distribution takes) of SECRET, as `htpasswd -B` writes it.
    const HTPASSWD: &str = "robot:$2b$05$wasmletE2eSaltValue01uQMD0uUuN/nX/QBSeKjeUIDwqwGB8x8q\n";
    let registry = Distribution::start_with(Auth::Htpasswd(HTPASSWD), None).await;
    let addr = registry.addr.clone();
    let dir = tempdir();
    let docker_config =
        |name: &str, password: &str| robot_config(dir.path(), name, &addr, password);
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

    let robot = Robot {
        anonymous: &anonymous,
        wrong: &wrong,
        wrong_password: "wr0ng-pa55",
        good: &good,
    };
    serves_only_with_the_robots_credentials(dir.path(), &tag, &addr, &robot, "v1", &digest, &shown)
        .await;
}

/// The bearer-token flow against a real registry: distribution with
/// `auth: token:` challenges with `WWW-Authenticate: Bearer realm=…`, the
/// client trades the robot's Docker-config credentials at the test's token
/// server for an ES256 JWT, and distribution checks that JWT (issuer,
/// audience, `x5c` chain to its `rootcertbundle`, signature, granted
/// actions). Push and serve work with the credentials, fail without them or
/// with a wrong password (naming the reference), and neither the password
/// nor any issued token is ever shown.
#[tokio::test(flavor = "multi_thread")]
async fn bearer_token_auth_against_distribution() {
    const SECRET: &str = "e2e-t0ken-pa55-never-shown";
    const SERVICE: &str = "wasmlet-e2e-registry";
    const ISSUER: &str = "wasmlet-e2e-token-issuer";
    let dir = tempdir();
    let tokens = TokenServer::start(dir.path(), SERVICE, ISSUER, SECRET).await;
    let auth = tokens.auth(dir.path(), SERVICE, ISSUER);
    let registry = Distribution::start_with(Auth::Token(&auth), None).await;
    let addr = registry.addr.clone();
    // The token server is another origin: the config lists it too.
    let realm = tokens.addr.to_string();
    let docker_config =
        |name: &str, password: &str| robot_config_for(dir.path(), name, &[&addr, &realm], password);
    let good = docker_config("good", SECRET);
    let wrong = docker_config("wrong", "wr0ng-t0ken-pa55");
    let anonymous = dir.path().join("anonymous");
    let shown =
        |text: &str| {
            text.contains(SECRET)
                || text.contains(&crate::fake_registry::base64(
                    format!("robot:{SECRET}").as_bytes(),
                ))
                || tokens.issued.lock().unwrap().iter().any(|t| {
                    text.contains(t.as_str()) || text.contains(t.split('.').nth(2).unwrap())
                })
        };

    let tag = format!("oci://{addr}/private/hello:1.0");
    let push = |config: &Path| {
        run_with_env(
            &["push", wasm::HELLO, &tag, "--insecure-registry", &addr],
            &[("DOCKER_CONFIG", path_str(config)), ("RUST_LOG", "debug")],
        )
    };
    let (status, _, stderr) = push(&anonymous);
    assert!(!status.success() && stderr.contains(&tag), "{stderr}");
    assert!(tokens.issued.lock().unwrap().is_empty());
    let (status, stdout, stderr) = push(&good);
    assert!(
        status.success(),
        "{stderr}\nregistry log:\n{}",
        registry.log()
    );
    let digest = stdout.trim().to_string();
    assert!(digest.starts_with("sha256:"), "{stdout}");
    assert!(
        !tokens.issued.lock().unwrap().is_empty(),
        "no token was asked for"
    );
    assert!(!shown(&stdout) && !shown(&stderr), "{stdout}{stderr}");

    let robot = Robot {
        anonymous: &anonymous,
        wrong: &wrong,
        wrong_password: "wr0ng-t0ken-pa55",
        good: &good,
    };
    let pushed = tokens.issued.lock().unwrap().len();
    serves_only_with_the_robots_credentials(
        dir.path(),
        &tag,
        &addr,
        &robot,
        "Hello World!",
        &digest,
        &shown,
    )
    .await;

    // The host asks for the right to pull and nothing more (the push
    // asked for push too, so the claims are read right).
    let access = |token: &String| {
        use base64::Engine;
        let claims = token.split('.').nth(1).unwrap();
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims)
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&claims).unwrap()["access"].clone()
    };
    let issued = tokens.issued.lock().unwrap().clone();
    assert!(
        issued[..pushed]
            .iter()
            .any(|t| access(t).to_string().contains("push"))
    );
    let pull_only = serde_json::json!([
        {"type": "repository", "name": "private/hello", "actions": ["pull"]}
    ]);
    assert!(issued.len() > pushed, "the host asked for no token");
    for token in &issued[pushed..] {
        assert_eq!(access(token), pull_only);
    }
}

/// HTTPS, verified against the system's roots: a registry whose certificate
/// a test CA signed is refused until that CA is among the roots
/// (`SSL_CERT_FILE`, read on Linux as a pod's mounted CA bundle would be).
#[tokio::test(flavor = "multi_thread")]
async fn https_is_verified_against_the_system_roots() {
    let dir = tempdir();
    let ca = TestCa::new(dir.path());
    let registry = Distribution::start_with(Auth::Anonymous, Some(&ca)).await;
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
