//! Issue 17: handlers from an OCI registry. The error paths run against
//! the in-process fake registry (`fake_registry.rs`); pushes and pulls
//! against a real registry (distribution) are in `oci_e2e.rs`.

use crate::common::*;
use crate::fake_registry::{
    Answer, FORGED, FakeRegistry, Fault, Hostile, OCI_INDEX, OCI_MANIFEST, base64,
};
use std::path::Path;
use std::time::Duration;

/// A manifest with one catch-all route serving `component`.
fn manifest(dir: &Path, component: &str) -> String {
    let path = dir.join("wasmlet.toml");
    write(
        &path,
        format!("[[route]]\npath = \"/...\"\ncomponent = \"{component}\"\n"),
    );
    path_str(&path).to_string()
}

fn serve(registry: &FakeRegistry, config: &str, cache: &Path, env: &[(&str, &str)]) -> Wasmlet {
    let insecure = registry.addr.to_string();
    Wasmlet::serve_with_env(
        &[
            "--config",
            config,
            "--cache-dir",
            path_str(cache),
            "--insecure-registry",
            &insecure,
            "--pull-timeout",
            "1s",
        ],
        env,
    )
}

fn wasm(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// The manifest digest `/handlers` shows for the first route.
async fn resolved_digest(host: &Wasmlet) -> String {
    let doc = handlers(host).await;
    doc["routes"][0]["resolved_digest"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A host serving v1, pushed to `registry` under the tag `live`.
struct Live {
    /// Holds the manifest and the cache: bind it (`dir: _dir`), or they
    /// are removed at once.
    #[allow(dead_code)]
    dir: tempfile::TempDir,
    cache: std::path::PathBuf,
    host: Wasmlet,
    /// v1's manifest digest.
    v1: String,
}

async fn serving_v1_from_live(registry: &FakeRegistry) -> Live {
    let v1 = registry.push(Some("live"), &wasm(wasm::V1));
    let dir = tempdir();
    let cache = dir.path().join("cache");
    let config = manifest(dir.path(), &registry.reference(":live"));
    let host = serve(registry, &config, &cache, &[]);
    assert_eq!(get(host.public, "/").await.text(), "v1");
    Live {
        dir,
        cache,
        host,
        v1,
    }
}

fn gets(registry: &FakeRegistry) -> usize {
    registry.log().len()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pinned_digest_is_pulled_once_then_served_from_the_cache() {
    let registry = FakeRegistry::start().await;
    let digest = registry.push(None, &wasm(wasm::V1));
    let dir = tempdir();
    let cache = dir.path().join("cache");
    let reference = registry.reference(&format!("@{digest}"));
    let config = manifest(dir.path(), &reference);

    let host = serve(&registry, &config, &cache, &[]);
    assert_eq!(get(host.public, "/").await.text(), "v1");
    let doc = handlers(&host).await;
    let route = &doc["routes"][0];
    assert_eq!(route["component"], reference.as_str());
    assert_eq!(route["resolved_digest"], digest.as_str());
    let layer = crate::fake_registry::sha256(&wasm(wasm::V1));
    assert_eq!(route["digest"], layer.as_str());
    let metrics = get(host.admin, "/metrics").await.text();
    let series = format!(
        "wasmlet_handler_info{{route=\"/...\",version=\"stable\",component=\"{reference}\",digest=\"{layer}\",resolved_digest=\"{digest}\"}} 1"
    );
    assert!(metrics.contains(&series), "{series}\n{metrics}");
    drop(host);

    // A restart finds manifest and layer in the cache: not one request,
    // so it serves with the registry gone.
    let before = gets(&registry);
    registry.stop();
    let host = serve(&registry, &config, &cache, &[]);
    assert_eq!(get(host.public, "/").await.text(), "v1");
    assert_eq!(gets(&registry), before, "{:?}", registry.log());
    let resolved = host.wait_for_log(Duration::from_secs(10), |l| {
        l.contains("component resolved") && l.contains("from_cache=true")
    });
    assert!(resolved.is_some(), "{:?}", host.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tag_is_resolved_at_each_reload_and_failures_keep_the_last_good_version() {
    let registry = FakeRegistry::start().await;
    let Live {
        dir: _dir,
        cache,
        host,
        v1,
    } = serving_v1_from_live(&registry).await;
    assert_eq!(resolved_digest(&host).await, v1);

    // Each fault in turn, with the tag moved to v2: the reload fails, v1
    // serves, and /handlers says why.
    let v2 = wasm(wasm::V2);
    let cases: Vec<(Fault, &str)> = vec![
        (Fault::CorruptBlob, "digest mismatch"),
        (Fault::TruncatedBlob, "after 3 attempts"),
        (Fault::Slow(Duration::from_secs(3)), "--pull-timeout (1s)"),
        (Fault::GarbageManifest, "not valid JSON"),
        (Fault::Unavailable(10), "503"),
    ];
    for (fault, expected) in cases {
        registry.push(Some("live"), &v2);
        registry.set_fault(fault.clone());
        let r = reload(host.admin).await;
        assert_eq!(r.status, 422, "{fault:?}: {}", r.text());
        assert!(r.text().contains(expected), "{fault:?}: {}", r.text());
        assert_eq!(get(host.public, "/").await.text(), "v1", "{fault:?}");
        let doc = handlers(&host).await;
        let route = &doc["routes"][0];
        assert_eq!(route["resolved_digest"], v1.as_str(), "{fault:?}");
        assert!(
            route["last_error"].as_str().unwrap().contains(expected),
            "{fault:?}: {doc}"
        );
        registry.set_fault(Fault::None);
    }
    // Nothing half-downloaded was kept.
    let blobs = std::fs::read_dir(cache.join("oci/blobs/sha256")).unwrap();
    let names: Vec<String> = blobs
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.starts_with(".temp")), "{names:?}");
    let v2_layer = crate::fake_registry::sha256(&v2);
    assert!(!names.contains(&v2_layer["sha256:".len()..].to_string()));

    // A registry that fails twice and then answers: retried, published.
    registry.set_fault(Fault::Unavailable(2));
    let r = reload(host.admin).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(get(host.public, "/").await.text(), "v2");
    let retried = host.wait_for_log(Duration::from_secs(10), |l| l.contains("retrying"));
    assert!(retried.is_some(), "{:?}", host.logs());

    // The tag moves back: v1 again, from its cached layer.
    let moved = registry.push(Some("live"), &wasm(wasm::V1));
    assert_eq!(moved, v1);
    let r = reload(host.admin).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(get(host.public, "/").await.text(), "v1");
    assert_eq!(resolved_digest(&host).await, v1);
}

/// A registry that answers with a body that never ends: the host reads a
/// manifest only up to 4 MiB and an error answer only up to 16 KiB, so it
/// neither hangs until `--pull-timeout` nor allocates what it is sent.
#[tokio::test(flavor = "multi_thread")]
async fn endless_bodies_are_cut_off_and_the_last_good_version_serves() {
    let registry = FakeRegistry::start().await;
    let Live {
        dir: _dir,
        host,
        v1,
        ..
    } = serving_v1_from_live(&registry).await;

    registry.push(Some("live"), &wasm(wasm::V2));
    let cases = [
        (Fault::EndlessManifest { declared: true }, "not read"),
        (
            Fault::EndlessManifest { declared: false },
            "stopped reading",
        ),
        (Fault::EndlessError, "500"),
    ];
    for (fault, expected) in cases {
        registry.set_fault(fault.clone());
        let r = reload(host.admin).await;
        assert_eq!(r.status, 422, "{fault:?}: {}", r.text());
        assert!(r.text().contains(expected), "{fault:?}: {}", r.text());
        assert!(
            !r.text().contains("--pull-timeout"),
            "{fault:?}: {}",
            r.text()
        );
        assert_eq!(get(host.public, "/").await.text(), "v1", "{fault:?}");
        assert_eq!(resolved_digest(&host).await, v1, "{fault:?}");
    }
    let peak_mib = status_kib(host.pid(), "VmHWM") / 1024;
    assert!(peak_mib < 256, "the host peaked at {peak_mib} MiB");

    registry.set_fault(Fault::None);
    let r = reload(host.admin).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(get(host.public, "/").await.text(), "v2");
}

#[tokio::test(flavor = "multi_thread")]
async fn layouts_sizes_and_redirects() {
    let registry = FakeRegistry::start().await;
    let Live {
        dir: _dir, host, ..
    } = serving_v1_from_live(&registry).await;

    // A layer declared over --max-component-size is not downloaded.
    let v2 = wasm(wasm::V2);
    registry.push_with(Some("live"), &v2, "application/wasm", Some(1 << 40));
    let before = registry.log();
    let r = reload(host.admin).await;
    assert!(
        r.text().contains("larger than --max-component-size"),
        "{}",
        r.text()
    );
    let blob_gets = registry.log()[before.len()..]
        .iter()
        .filter(|l| l.contains("/blobs/"))
        .count();
    assert_eq!(blob_gets, 0, "{:?}", registry.log());

    // A container image is refused, naming what it holds.
    registry.push_with(
        Some("live"),
        &v2,
        "application/vnd.oci.image.layer.v1.tar+gzip",
        None,
    );
    let r = reload(host.admin).await;
    assert!(
        r.text()
            .contains("application/vnd.oci.image.layer.v1.tar+gzip"),
        "{}",
        r.text()
    );

    // Spin's layer type, through an image index, with blobs redirected.
    let image = registry.push_with(
        None,
        &v2,
        "application/vnd.wasm.content.layer.v1+wasm",
        None,
    );
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": "sha256:1111111111111111111111111111111111111111111111111111111111111111",
             "size": 10, "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": OCI_MANIFEST, "digest": image, "size": 10,
             "platform": {"architecture": "wasm", "os": "wasip2"}},
        ],
    });
    let index = registry.put_manifest(
        Some("live"),
        OCI_INDEX,
        &serde_json::to_vec(&index).unwrap(),
    );
    registry.set_fault(Fault::RedirectBlobs);
    let r = reload(host.admin).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(get(host.public, "/").await.text(), "v2");
    assert!(
        registry
            .log()
            .iter()
            .any(|l| l.starts_with("GET /redirected/"))
    );
    assert_eq!(resolved_digest(&host).await, index);
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_come_from_the_docker_config_and_never_show() {
    let registry = FakeRegistry::start().await;
    let secret = "pa55-w0rd-never-shown";
    registry.require_basic(&format!("robot:{secret}"));
    let digest = registry.push(Some("v1"), &wasm(wasm::V1));
    let dir = tempdir();
    let cache = dir.path().join("cache");
    let config = manifest(dir.path(), &registry.reference(":v1"));

    // No credentials: a 401, refused at start-up, not retried.
    let insecure = registry.addr.to_string();
    let (status, _, stderr) = serve_to_exit(
        &[
            "--config",
            &config,
            "--cache-dir",
            path_str(&cache),
            "--insecure-registry",
            &insecure,
        ],
        &[],
    );
    assert!(!status.success());
    assert!(
        stderr.contains(&registry.reference(":v1")) && stderr.contains("Not authorized"),
        "{stderr}"
    );
    assert!(!stderr.contains("retrying"), "{stderr}");

    let docker = dir.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    let auth = base64(format!("robot:{secret}").as_bytes());
    write(
        &docker.join("config.json"),
        format!(r#"{{"auths": {{"{insecure}": {{"auth": "{auth}"}}}}}}"#),
    );
    let host = serve(
        &registry,
        &config,
        &cache,
        &[("DOCKER_CONFIG", path_str(&docker)), ("RUST_LOG", "debug")],
    );
    assert_eq!(get(host.public, "/").await.text(), "v1");
    assert_eq!(resolved_digest(&host).await, digest);

    // The bearer-token flow: the same credentials traded for a token.
    let token = "t0ken-never-shown";
    registry.require_bearer(&format!("robot:{secret}"), token);
    let v2 = registry.push(Some("v1"), &wasm(wasm::V2));
    let r = reload(host.admin).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(get(host.public, "/").await.text(), "v2");
    assert_eq!(resolved_digest(&host).await, v2);
    assert!(registry.log().iter().any(|l| l.starts_with("GET /token")));

    // A bad credential: the error names the registry, not the secret.
    registry.require_basic("robot:another");
    registry.push(Some("v1"), &wasm(wasm::V1));
    let r = reload(host.admin).await;
    assert_eq!(r.status, 422);
    let doc = handlers(&host).await.to_string();
    for text in [r.text(), doc, host.logs().join("\n")] {
        assert!(
            !text.contains(secret) && !text.contains(&auth) && !text.contains(token),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_references_and_setups_fail_start_up() {
    let registry = FakeRegistry::start().await;
    let dir = tempdir();
    let cache = dir.path().join("cache");
    let insecure = registry.addr.to_string();
    let start = |config: &str, extra: &[&str]| {
        let mut args = vec!["--config", config, "--insecure-registry", &insecure];
        args.extend_from_slice(extra);
        let (status, _, stderr) = serve_to_exit(&args, &[]);
        assert!(!status.success(), "{stderr}");
        stderr
    };
    let cache_arg = ["--cache-dir", path_str(&cache)];
    let missing = registry.reference(":missing");
    let e = start(&manifest(dir.path(), &missing), &cache_arg);
    assert!(
        e.contains(&missing) && e.contains("MANIFEST_UNKNOWN"),
        "{e}"
    );
    let e = start(&manifest(dir.path(), &registry.reference(":v1")), &[]);
    assert!(e.contains("need --cache-dir"), "{e}");
    let e = start(
        &manifest(dir.path(), "oci://ghcr.io/acme/hello"),
        &cache_arg,
    );
    assert!(
        e.contains("no tag or digest") && e.contains("wasmlet.toml"),
        "{e}"
    );
    // Not wasm at all: pulled, then refused by the same checks as a file.
    registry.push(Some("text"), b"hello, not wasm");
    let e = start(
        &manifest(dir.path(), &registry.reference(":text")),
        &cache_arg,
    );
    assert!(e.contains("not a WebAssembly file"), "{e}");
    // Plain HTTP only to the registries named insecure.
    let config = manifest(dir.path(), &registry.reference(":v1"));
    let (status, _, stderr) = serve_to_exit(
        &[
            "--config",
            &config,
            "--cache-dir",
            path_str(&cache),
            "--pull-timeout",
            "1s",
        ],
        &[],
    );
    assert!(!status.success());
    assert!(stderr.contains(&registry.reference(":v1")), "{stderr}");
    assert!(
        registry.log().iter().all(|l| !l.contains("/v1")),
        "a TLS hello is not an HTTP request: {:?}",
        registry.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn follow_swaps_when_the_tag_moves_with_one_head_per_interval() {
    let registry = FakeRegistry::start().await;
    registry.push(Some("live"), &wasm(wasm::V1));
    let dir = tempdir();
    // Outside the manifest's (watched) folder: the cache's first write
    // would otherwise be a file event, and its reload a manifest GET.
    let cache_dir = tempdir();
    let cache = cache_dir.path().join("cache");
    let path = dir.path().join("wasmlet.toml");
    write(
        &path,
        format!(
            "[[route]]\npath = \"/...\"\ncomponent = \"{}\"\nfollow = \"1s\"\n",
            registry.reference(":live")
        ),
    );
    let host = serve(&registry, path_str(&path), &cache, &[]);
    assert_eq!(get(host.public, "/").await.text(), "v1");

    // Quiet: only HEADs, about one a second.
    let before = registry.log().len();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let quiet: Vec<String> = registry.log()[before..].to_vec();
    let heads = quiet.iter().filter(|l| l.starts_with("HEAD ")).count();
    assert!((2..=5).contains(&heads), "{quiet:?}");
    assert!(
        quiet
            .iter()
            .all(|l| l.starts_with("HEAD ") || l == "GET /v2/"),
        "{quiet:?}"
    );

    // The tag moves: swapped without a reload request.
    let v2 = registry.push(Some("live"), &wasm(wasm::V2));
    until_body(host.public, "/", "v2", Duration::from_secs(10)).await;
    assert_eq!(resolved_digest(&host).await, v2);

    // A bad push: one failed reload, not one per interval; v2 serves.
    registry.push(Some("live"), b"not wasm");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while metric(&host, "wasmlet_reloads_total{outcome=\"error\"}").await < 1.0 {
        assert!(std::time::Instant::now() < deadline, "no failed reload");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        metric(&host, "wasmlet_reloads_total{outcome=\"error\"}").await,
        1.0
    );
    assert_eq!(get(host.public, "/").await.text(), "v2");
}

/// Stores a cosign signature for `signed` (the tag cosign uses), by
/// `key`, over a payload naming `named`.
fn cosign(registry: &FakeRegistry, signed: &str, named: &str, key: &p256::ecdsa::SigningKey) {
    use base64::Engine;
    use p256::ecdsa::signature::Signer;
    let payload = serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": {"docker-reference": format!("{}/team/hello", registry.addr)},
            "image": {"docker-manifest-digest": named},
            "type": "cosign container image signature"
        },
        "optional": null
    }))
    .unwrap();
    let signature: p256::ecdsa::Signature = key.sign(&payload);
    let signature = base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes());
    let payload_digest = registry.put_blob(&payload);
    let config = registry.put_blob(b"{}");
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": [{
            "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
            "digest": payload_digest, "size": payload.len(),
            "annotations": {"dev.cosignproject.cosign/signature": signature}
        }],
    });
    let tag = format!("{}.sig", signed.replace(':', "-"));
    registry.put_manifest(
        Some(&tag),
        OCI_MANIFEST,
        &serde_json::to_vec(&manifest).unwrap(),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cosign_key_serves_only_what_the_key_signed() {
    use p256::pkcs8::EncodePublicKey;
    let registry = FakeRegistry::start().await;
    let signer = p256::ecdsa::SigningKey::from_slice(&[7; 32]).unwrap();
    let stranger = p256::ecdsa::SigningKey::from_slice(&[8; 32]).unwrap();
    let v1 = registry.push(Some("live"), &wasm(wasm::V1));
    cosign(&registry, &v1, &v1, &signer);
    let dir = tempdir();
    let cache = dir.path().join("cache");
    let pem = signer
        .verifying_key()
        .to_public_key_pem(p256::pkcs8::LineEnding::LF)
        .unwrap();
    write(&dir.path().join("cosign.pub"), pem);
    let with_key = |component: &str| {
        let path = dir.path().join("wasmlet.toml");
        write(
            &path,
            format!(
                "[[route]]\npath = \"/...\"\ncomponent = \"{component}\"\ncosign_key = \"cosign.pub\"\n"
            ),
        );
        path_str(&path).to_string()
    };
    let config = with_key(&registry.reference(":live"));
    let host = serve(&registry, &config, &cache, &[]);
    assert_eq!(get(host.public, "/").await.text(), "v1");

    let v2 = registry.push(Some("live"), &wasm(wasm::V2));
    let refused = |expected: &'static str| {
        let host = &host;
        async move {
            let r = reload(host.admin).await;
            assert_eq!(r.status, 422, "{}", r.text());
            assert!(r.text().contains(expected), "{expected}: {}", r.text());
            assert_eq!(get(host.public, "/").await.text(), "v1");
        }
    };
    refused("no cosign signature").await;
    cosign(&registry, &v2, &v2, &stranger);
    refused("does not verify").await;
    // v1's signature copied onto v2: signed by the key, but for v1.
    cosign(&registry, &v2, &v1, &signer);
    refused("is for").await;
    cosign(&registry, &v2, &v2, &signer);
    let r = reload(host.admin).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(get(host.public, "/").await.text(), "v2");
    drop(host);

    // Pinned and signed: a restart checks the stored signature, offline.
    let pinned = with_key(&registry.reference(&format!("@{v2}")));
    let host = serve(&registry, &pinned, &cache, &[]);
    drop(host);
    let before = registry.log().len();
    registry.stop();
    let host = serve(&registry, &pinned, &cache, &[]);
    assert_eq!(get(host.public, "/").await.text(), "v2");
    assert_eq!(registry.log().len(), before);
    drop(host);

    // An unsigned pin fails start-up.
    let unsigned = FakeRegistry::start().await;
    let digest = unsigned.push(None, &wasm(wasm::V1));
    let config = with_key(&unsigned.reference(&format!("@{digest}")));
    let insecure = unsigned.addr.to_string();
    let other = dir.path().join("other");
    let (status, _, stderr) = serve_to_exit(
        &[
            "--config",
            &config,
            "--cache-dir",
            path_str(&other),
            "--insecure-registry",
            &insecure,
        ],
        &[],
    );
    assert!(!status.success());
    assert!(stderr.contains("no cosign signature"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cached_layer_changed_on_disk_is_refused_then_pulled_again() {
    let registry = FakeRegistry::start().await;
    let digest = registry.push(None, &wasm(wasm::V1));
    let dir = tempdir();
    let cache = dir.path().join("cache");
    let config = manifest(dir.path(), &registry.reference(&format!("@{digest}")));
    drop(serve(&registry, &config, &cache, &[]));

    let layer = crate::fake_registry::sha256(&wasm(wasm::V1));
    let blob = cache
        .join("oci/blobs/sha256")
        .join(&layer["sha256:".len()..]);
    std::fs::copy(wasm::V2, &blob).unwrap();
    let insecure = registry.addr.to_string();
    let args = [
        "--config",
        &config,
        "--cache-dir",
        path_str(&cache),
        "--insecure-registry",
        &insecure,
    ];
    let (status, _, stderr) = serve_to_exit(&args, &[]);
    assert!(!status.success());
    assert!(stderr.contains("no longer matches its digest"), "{stderr}");
    assert!(!blob.exists(), "the bad blob is removed");
    // The next start pulls it again and serves v1, never the v2 written over it.
    let host = serve(&registry, &config, &cache, &[]);
    assert_eq!(get(host.public, "/").await.text(), "v1");
    assert_eq!(std::fs::read(&blob).unwrap(), wasm(wasm::V1));
}

/// Issue 19 meets issue 17: a canary can come from a registry, beside a
/// stable version from a file, and moves with its tag at each reload.
#[tokio::test(flavor = "multi_thread")]
async fn a_canary_from_a_registry_serves_beside_a_local_stable_version() {
    let registry = FakeRegistry::start().await;
    let v2 = registry.push(Some("next"), &wasm(wasm::V2));
    let dir = tempdir();
    let cache = dir.path().join("cache");
    let path = dir.path().join("wasmlet.toml");
    let reference = registry.reference(":next");
    write(
        &path,
        format!(
            "[[route]]\npath = \"/...\"\ncomponent = \"{}\"\ncanary = {{ component = \"{reference}\", weight = 100, version_header = true }}\n",
            wasm::V1
        ),
    );
    let host = serve(&registry, path_str(&path), &cache, &[]);
    let r = get(host.public, "/").await;
    assert_eq!(r.text(), "v2");
    assert_eq!(r.headers["x-wasmlet-version"], "canary");
    let doc = handlers(&host).await;
    let canary = &doc["routes"][0]["canary"];
    assert_eq!(canary["component"], reference.as_str(), "{doc}");
    assert_eq!(canary["resolved_digest"], v2.as_str(), "{doc}");

    // The tag moves to a broken artifact: the reload fails, both versions
    // keep serving as they were.
    registry.push(Some("next"), b"not wasm");
    let r = reload(host.admin).await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("canary"), "{}", r.text());
    assert_eq!(get(host.public, "/").await.text(), "v2");

    // Weight 0 from the manifest: the file serves again.
    write(
        &path,
        format!(
            "[[route]]\npath = \"/...\"\ncomponent = \"{}\"\ncanary = {{ component = \"{}\", weight = 0, version_header = true }}\n",
            wasm::V1,
            registry.reference(&format!("@{v2}"))
        ),
    );
    let r = reload(host.admin).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get(host.public, "/").await;
    assert_eq!(r.text(), "v1");
    assert_eq!(r.headers["x-wasmlet-version"], "stable");
}

/// A host serving v1 from a file on every path, without a file watcher,
/// that may pull from `insecure`; `extra` flags after.
fn serving_v1_from_a_file(dir: &Path, insecure: &[String], extra: &[&str]) -> Wasmlet {
    let config = manifest(dir, wasm::V1);
    let cache = dir.join("cache");
    let mut args = vec![
        "--config",
        &config,
        "--no-watch",
        "--cache-dir",
        path_str(&cache),
    ];
    for registry in insecure {
        args.extend(["--insecure-registry", registry.as_str()]);
    }
    args.extend_from_slice(extra);
    Wasmlet::serve(&args)
}

/// v1 from a file on `/...`, and each reference on its own route.
fn with_oci_routes(dir: &Path, references: &[String]) {
    let mut text = format!("[[route]]\npath = \"/...\"\ncomponent = \"{}\"\n", wasm::V1);
    for (i, reference) in references.iter().enumerate() {
        text.push_str(&format!(
            "\n[[route]]\npath = \"/r{i}/...\"\ncomponent = \"{reference}\"\n"
        ));
    }
    write(&dir.join("wasmlet.toml"), text);
}

/// Issue 26, finding 7: routes are pulled side by side, so two routes on
/// a registry that never answers cost one pull's time (3 attempts of
/// --pull-timeout), not two.
#[tokio::test(flavor = "multi_thread")]
async fn pulls_of_different_routes_do_not_wait_for_each_other() {
    let stalled = crate::fake_registry::StalledRegistry::start().await;
    let dir = tempdir();
    let host = serving_v1_from_a_file(
        dir.path(),
        &[stalled.addr.to_string()],
        &["--pull-timeout", "1s"],
    );
    with_oci_routes(
        dir.path(),
        &[
            stalled.reference("team/a:v1"),
            stalled.reference("team/b:v1"),
        ],
    );
    let started = std::time::Instant::now();
    let r = reload(host.admin).await;
    let took = started.elapsed();
    eprintln!("a reload of two routes on a stalled registry took {took:?}");
    assert_eq!(r.status, 422, "{}", r.text());
    for name in ["team/a:v1", "team/b:v1"] {
        assert!(r.text().contains(name), "{}", r.text());
    }
    // One pull: 3 attempts of 1 s, 0.6 s of backoff. Two in a row: 7.2 s.
    assert!(took >= Duration::from_secs(3), "{took:?}");
    assert!(took < Duration::from_millis(5400), "{took:?}");
    assert_eq!(get(host.public, "/").await.text(), "v1");
}

/// The bound on those pulls: one route more than
/// `reload::MAX_CONCURRENT_PULLS` (8) on a stalled registry waits for a
/// slot, so the reload takes two pulls' time, not one.
#[tokio::test(flavor = "multi_thread")]
async fn at_most_eight_pulls_run_at_once() {
    let stalled = crate::fake_registry::StalledRegistry::start().await;
    let dir = tempdir();
    let host = serving_v1_from_a_file(
        dir.path(),
        &[stalled.addr.to_string()],
        &["--pull-timeout", "1s"],
    );
    let references: Vec<String> = (0..9)
        .map(|i| stalled.reference(&format!("team/r{i}:v1")))
        .collect();
    with_oci_routes(dir.path(), &references);
    let started = std::time::Instant::now();
    let r = reload(host.admin).await;
    let took = started.elapsed();
    eprintln!("a reload of nine routes on a stalled registry took {took:?}");
    assert_eq!(r.status, 422, "{}", r.text());
    // Eight pulls of 3.6 s side by side, then the ninth.
    assert!(took >= Duration::from_millis(7000), "{took:?}");
    assert!(took < Duration::from_millis(10_000), "{took:?}");
}

/// Issue 26, finding 7: a reload has a deadline (--reload-timeout), past
/// which it fails and the serving version stays; the next reload is not
/// held up.
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_past_its_deadline_fails_and_the_next_one_runs() {
    let stalled = crate::fake_registry::StalledRegistry::start().await;
    let dir = tempdir();
    let host = serving_v1_from_a_file(
        dir.path(),
        &[stalled.addr.to_string()],
        &["--pull-timeout", "20s", "--reload-timeout", "2s"],
    );
    with_oci_routes(dir.path(), &[stalled.reference("team/a:v1")]);
    let started = std::time::Instant::now();
    let r = reload(host.admin).await;
    let took = started.elapsed();
    eprintln!("a reload on a stalled registry with --reload-timeout 2s took {took:?}");
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("--reload-timeout"), "{}", r.text());
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert_eq!(get(host.public, "/").await.text(), "v1");

    with_oci_routes(dir.path(), &[]);
    let started = std::time::Instant::now();
    let r = reload(host.admin).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// Issue 26, finding 7: the follow loop resolves each route on its own, so
/// a registry that stops answering does not delay noticing another
/// route's tag move. Before: the stalled route was resolved first, 3
/// attempts of --pull-timeout 3s, at every round.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_route_does_not_hold_up_following_another() {
    let (slow, fast) = (FakeRegistry::start().await, FakeRegistry::start().await);
    slow.push(Some("live"), &wasm(wasm::V1));
    fast.push(Some("live"), &wasm(wasm::V1));
    let dir = tempdir();
    let cache_dir = tempdir();
    let cache = cache_dir.path().join("cache");
    let path = dir.path().join("wasmlet.toml");
    // Same specificity: the routes are visited in this order.
    write(
        &path,
        format!(
            "[[route]]\npath = \"/a/...\"\ncomponent = \"{}\"\nfollow = \"1s\"\n\n\
             [[route]]\npath = \"/b/...\"\ncomponent = \"{}\"\nfollow = \"1s\"\n",
            slow.reference(":live"),
            fast.reference(":live")
        ),
    );
    let (slow_addr, fast_addr) = (slow.addr.to_string(), fast.addr.to_string());
    let host = Wasmlet::serve(&[
        "--config",
        path_str(&path),
        "--cache-dir",
        path_str(&cache),
        "--insecure-registry",
        &slow_addr,
        "--insecure-registry",
        &fast_addr,
        "--pull-timeout",
        "3s",
    ]);
    assert_eq!(get(host.public, "/b/x").await.text(), "v1");
    slow.set_fault(Fault::Slow(Duration::from_secs(3600)));
    // Let the next round start on the stalled route.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    fast.push(Some("live"), &wasm(wasm::V2));
    let moved = std::time::Instant::now();
    let seen = host.wait_for_log(Duration::from_secs(20), |l| {
        l.contains("follow: the tag moved") && l.contains("/b/...")
    });
    let took = moved.elapsed();
    eprintln!("the fast route's move was seen after {took:?}");
    assert!(seen.is_some(), "{:#?}", host.logs());
    assert!(took < Duration::from_secs(3), "{took:?}");
}

/// Restarts `pid`'s peak RSS count (`VmHWM`) at its current RSS and
/// returns that, in KiB: the baseline a later `VmHWM` is compared with.
fn reset_peak(pid: u32) -> u64 {
    // "5" resets the peak (Linux 4.0 and later). Without it the baseline
    // is the start-up peak, and the bound below is looser, never wrong.
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    status_kib(pid, "VmHWM")
}

/// A `Bearer` challenge naming `realm`.
fn bearer_challenge(realm: &str) -> Fault {
    Fault::Challenge(format!("Bearer realm=\"{realm}\",service=\"fake\""))
}

/// Issue 26, finding 1: a token realm that streams an endless answer.
/// The host reads a token answer only up to a few KiB, so its peak RSS
/// stays near idle (before: the whole answer, 256 MiB here, was read).
#[tokio::test(flavor = "multi_thread")]
async fn an_endless_token_answer_is_cut_off_near_idle_memory() {
    let registry = FakeRegistry::start().await;
    let Live {
        dir: _dir, host, ..
    } = serving_v1_from_live(&registry).await;
    let realm = Hostile::start(Answer::EndlessJson(256 << 20)).await;
    registry.push(Some("live"), &wasm(wasm::V2));
    registry.set_fault(bearer_challenge(&realm.url("/token")));

    let idle = reset_peak(host.pid());
    let r = reload(host.admin).await;
    let peak = status_kib(host.pid(), "VmHWM");
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("token"), "{}", r.text());
    assert!(!realm.requests().is_empty());
    let grown_kib = peak.saturating_sub(idle);
    eprintln!("figure: peak RSS +{grown_kib} KiB over idle {idle} KiB");
    assert!(
        grown_kib < 8 << 10,
        "the hostile pull raised the peak RSS by {grown_kib} KiB (idle {idle} KiB)"
    );
    assert_eq!(get(host.public, "/").await.text(), "v1");
}

/// Whether `text` could hold a forged line: a log line of its own.
fn forged_lines(lines: &[String]) -> usize {
    lines
        .iter()
        .filter(|l| l.starts_with("2026-01-01T00:00:00"))
        .count()
}

/// Issue 26, finding 2: what a registry or realm says in an error answer
/// reaches the log, `/reload` and `/handlers` cut to about 1 KiB and on
/// one line, so it can neither flood them nor forge log lines.
#[tokio::test(flavor = "multi_thread")]
async fn remote_error_text_is_cut_and_kept_on_one_line() {
    let registry = FakeRegistry::start().await;
    let Live {
        dir: _dir, host, ..
    } = serving_v1_from_live(&registry).await;
    registry.push(Some("live"), &wasm(wasm::V2));
    let realm = Hostile::start(Answer::LogLines("401 Unauthorized", 20 << 20)).await;
    let line = format!(
        "2026-01-01T00:00:00.000000Z  INFO wasmlet::reload: handlers published generation=99 {FORGED}\n"
    );
    let faults = [
        // The token realm's 401, 20 MiB of log lines.
        bearer_challenge(&realm.url("/token")),
        // The registry's own error envelope (under the 16 KiB read), with
        // lines in its message.
        Fault::ErrorMessage(format!("denied\n{}", line.repeat(100))),
    ];
    for fault in faults {
        registry.set_fault(fault.clone());
        let r = reload(host.admin).await;
        assert_eq!(r.status, 422, "{fault:?}");
        let answer = r.text();
        assert!(
            answer.len() < 4 << 10,
            "{fault:?}: /reload answered {} bytes",
            answer.len()
        );
        let doc: serde_json::Value = serde_json::from_str(&answer).unwrap();
        let error = doc["error"].as_str().unwrap();
        assert!(!error.contains('\n'), "{fault:?}: {error}");
        if matches!(fault, Fault::ErrorMessage(_)) {
            // Quoted, escaped: the message is there, on the error's line.
            assert!(error.contains(&format!("{FORGED}\\n")), "{error}");
        }
        let handlers_text = get(host.admin, "/handlers").await.text();
        eprintln!(
            "figure: /reload {} bytes, /handlers {} bytes",
            answer.len(),
            handlers_text.len()
        );
        assert!(
            handlers_text.len() < 8 << 10,
            "{fault:?}: /handlers answered {} bytes",
            handlers_text.len()
        );
        let doc = handlers(&host).await;
        let last = doc["routes"][0]["last_error"].as_str().unwrap().to_string();
        assert!(
            !last.contains('\n') && last.len() < 4 << 10,
            "{fault:?}: {last}"
        );
        assert_eq!(get(host.public, "/").await.text(), "v1");
    }
    let logs = host.logs();
    assert_eq!(forged_lines(&logs), 0, "forged log lines");
    let longest = logs.iter().map(String::len).max().unwrap_or(0);
    assert!(longest < 8 << 10, "a log line of {longest} bytes");
}

/// Issue 26, finding 3: a manifest answer that redirects is not followed
/// (a registry could otherwise make the host read an internal service
/// and show its answer in `/handlers`).
#[tokio::test(flavor = "multi_thread")]
async fn a_redirected_manifest_is_not_followed() {
    let registry = FakeRegistry::start().await;
    let Live {
        dir: _dir, host, ..
    } = serving_v1_from_live(&registry).await;
    let internal = Hostile::start(Answer::Text("SECRET-internal-token=c0ffee\n".into())).await;
    registry.push(Some("live"), &wasm(wasm::V2));
    registry.set_fault(Fault::RedirectManifests(internal.url("/secret")));
    let r = reload(host.admin).await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("302"), "{}", r.text());
    assert_eq!(internal.requests(), Vec::<String>::new());
    let doc = handlers(&host).await.to_string();
    assert!(!doc.contains("SECRET"), "{doc}");
    assert!(!host.logs().join("\n").contains("SECRET"));
    assert_eq!(get(host.public, "/").await.text(), "v1");
}

/// Issue 26, finding 3: blob redirects are followed a few hops at most,
/// and the error names where the last one led.
#[tokio::test(flavor = "multi_thread")]
async fn blob_redirects_stop_after_a_few_hops() {
    let registry = FakeRegistry::start().await;
    let Live {
        dir: _dir, host, ..
    } = serving_v1_from_live(&registry).await;
    registry.push(Some("live"), &wasm(wasm::V2));
    registry.set_fault(Fault::RedirectLoop);
    let before = registry.log().len();
    let r = reload(host.admin).await;
    assert_eq!(r.status, 422, "{}", r.text());
    let log = registry.log()[before..].to_vec();
    let count = |part: &str| log.iter().filter(|l| l.contains(part)).count();
    // 3 hops per download (a refused redirect is not retried; only an
    // attempt cut by --pull-timeout on a loaded machine would be).
    let (downloads, hops) = (count("/blobs/"), count("/loop/"));
    eprintln!("figure: {hops} hops in {downloads} downloads");
    assert!(downloads >= 1 && hops <= 3 * downloads, "{log:?}");
    assert!(
        r.text().contains("/loop/3 redirected to") && r.text().contains("/loop/4"),
        "{}",
        r.text()
    );
    assert_eq!(get(host.public, "/").await.text(), "v1");
}

/// Issue 26, finding 3: a challenge naming a realm on another origin gets
/// no credentials from the Docker config: the realm is asked for an
/// anonymous token.
#[tokio::test(flavor = "multi_thread")]
async fn credentials_go_only_to_the_registry_itself() {
    let registry = FakeRegistry::start().await;
    registry.push(Some("live"), &wasm(wasm::V1));
    let secret = "pa55-w0rd-for-the-registry-only";
    let dir = tempdir();
    let docker = dir.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    let auth = base64(format!("robot:{secret}").as_bytes());
    write(
        &docker.join("config.json"),
        format!(
            r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#,
            registry.addr
        ),
    );
    let steal = Hostile::start(Answer::Text(r#"{"token":"anonymous"}"#.into())).await;
    registry.set_fault(bearer_challenge(&steal.url("/steal")));
    let cache = dir.path().join("cache");
    let config = manifest(dir.path(), &registry.reference(":live"));
    let host = serve(
        &registry,
        &config,
        &cache,
        &[("DOCKER_CONFIG", path_str(&docker))],
    );
    // Served with the anonymous token the other realm gave.
    assert_eq!(get(host.public, "/").await.text(), "v1");
    let asked = steal.requests();
    assert!(!asked.is_empty());
    assert!(
        asked.iter().all(|r| r.ends_with(" -")),
        "the other realm was sent credentials: {asked:?}"
    );

    // Listed in the Docker config, the realm gets its own entry's, and
    // still never the registry's.
    let realm_auth = base64(b"realm-robot:realm-pass");
    write(
        &docker.join("config.json"),
        format!(
            r#"{{"auths": {{"{}": {{"auth": "{auth}"}}, "{}": {{"auth": "{realm_auth}"}}}}}}"#,
            registry.addr, steal.addr
        ),
    );
    registry.push(Some("live"), &wasm(wasm::V2));
    let r = reload(host.admin).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(get(host.public, "/").await.text(), "v2");
    let asked = steal.requests();
    assert!(
        asked
            .last()
            .unwrap()
            .ends_with(&format!("Basic {realm_auth}")),
        "{asked:?}"
    );
    assert!(!asked.iter().any(|r| r.contains(&auth)), "{asked:?}");
}

/// Issue 26, finding 10: a credential helper that hangs fails the pull
/// within its bound, naming the helper, and is killed; the public port
/// serves the whole time.
#[tokio::test(flavor = "multi_thread")]
async fn a_hung_credential_helper_is_killed_and_the_reload_fails_in_time() {
    use std::os::unix::fs::PermissionsExt;
    let registry = FakeRegistry::start().await;
    registry.push(Some("live"), &wasm(wasm::V1));
    let dir = tempdir();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let pid_file = dir.path().join("helper.pid");
    let helper = bin.join("docker-credential-hang");
    write(
        &helper,
        format!(
            "#!/bin/sh\necho $$ > {}\nexec sleep 30\n",
            pid_file.display()
        ),
    );
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let docker = dir.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let cache = dir.path().join("cache");
    let config = manifest(dir.path(), &registry.reference(":live"));
    let host = serve(
        &registry,
        &config,
        &cache,
        &[("DOCKER_CONFIG", path_str(&docker)), ("PATH", &path)],
    );
    assert_eq!(get(host.public, "/").await.text(), "v1");

    // From now on the registry's credentials come from the helper.
    write(
        &docker.join("config.json"),
        format!(r#"{{"credHelpers": {{"{}": "hang"}}}}"#, registry.addr),
    );
    registry.push(Some("live"), &wasm(wasm::V2));
    let started = std::time::Instant::now();
    let admin = host.admin;
    let pending = tokio::spawn(async move { reload(admin).await });
    for _ in 0..5 {
        let asked = std::time::Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(2), get(host.public, "/"))
            .await
            .expect("the public port stopped answering while the helper hangs");
        assert_eq!(r.text(), "v1");
        assert!(asked.elapsed() < Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = tokio::time::timeout(Duration::from_secs(20), pending)
        .await
        .expect("the reload waited on the hung helper")
        .unwrap();
    let took = started.elapsed();
    eprintln!("figure: the reload failed after {took:?}");
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("docker-credential-hang"), "{}", r.text());
    // --pull-timeout 1s: the helper gets half of it.
    assert!(took < Duration::from_secs(4), "the reload took {took:?}");
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let state = |pid: &str| {
        std::fs::read_to_string(format!("/proc/{}/status", pid.trim()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("State:"))
                    .map(str::to_string)
            })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while state(&pid).is_some_and(|s| !s.contains('Z')) {
        assert!(
            std::time::Instant::now() < deadline,
            "the helper still runs: {:?}",
            state(&pid)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(host.public, "/").await.text(), "v1");
}

/// Issue 31, finding 3: `check --config` pulls an `oci://` component as
/// start-up does, and a second check finds it in --cache-dir with the
/// registry gone; nothing is bound either time.
#[tokio::test(flavor = "multi_thread")]
async fn check_config_pulls_an_oci_component_then_finds_it_in_the_cache() {
    let registry = FakeRegistry::start().await;
    let digest = registry.push(None, &wasm(wasm::V1));
    let dir = tempdir();
    let cache = dir.path().join("cache");
    let reference = registry.reference(&format!("@{digest}"));
    let config = manifest(dir.path(), &reference);
    let insecure = registry.addr.to_string();
    let check = {
        let (config, cache, insecure) = (config.clone(), cache.clone(), insecure.clone());
        move || {
            run(&[
                "check",
                "--config",
                &config,
                "--cache-dir",
                path_str(&cache),
                "--insecure-registry",
                &insecure,
                "--pull-timeout",
                "1s",
            ])
        }
    };
    let (status, stdout, stderr) = tokio::task::spawn_blocking(check.clone()).await.unwrap();
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(!stderr.contains("listening"), "{stderr}");
    assert!(
        stdout.contains(&format!("/...: {reference}"))
            && stdout.contains(&format!("resolved: {digest}")),
        "{stdout}"
    );
    let pulled = gets(&registry);
    assert!(pulled > 0, "it pulled");
    registry.stop();
    let (status, stdout, stderr) = tokio::task::spawn_blocking(check).await.unwrap();
    assert!(status.success(), "from the cache: {stdout}\n{stderr}");
    assert_eq!(gets(&registry), pulled, "{:?}", registry.log());
}

/// Issue 31 (a newcomer's surprise walking docs/oci.md): `wasmlet serve
/// oci://…` took the reference for a file path ("cannot read", and a
/// warning about watching a folder named `oci://…`). The one-file form
/// now serves a reference as a manifest's route would, needing what such
/// a route needs.
#[tokio::test(flavor = "multi_thread")]
async fn serve_takes_an_oci_reference_as_its_one_component() {
    let registry = FakeRegistry::start().await;
    registry.push(Some("v1"), &wasm(wasm::V1));
    let reference = registry.reference(":v1");
    let insecure = registry.addr.to_string();
    let dir = tempdir();
    let cache = dir.path().join("cache");

    let host = Wasmlet::serve(&[
        &reference,
        "--cache-dir",
        path_str(&cache),
        "--insecure-registry",
        &insecure,
    ]);
    assert_eq!(get(host.public, "/").await.text(), "v1");
    assert_eq!(
        handlers(&host).await["routes"][0]["component"],
        reference.as_str()
    );
    assert!(
        !host.logs().iter().any(|l| l.contains("cannot watch")),
        "no folder to watch for a reference: {:?}",
        host.logs()
    );
    drop(host);

    // What a manifest's `oci://` route needs, the one-file form needs too,
    // and a bad reference is named as the argument it came in.
    let (status, _, stderr) = serve_to_exit(&[&reference, "--insecure-registry", &insecure], &[]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("need --cache-dir"), "{stderr}");
    let (status, _, stderr) = serve_to_exit(&["oci://nope", "--cache-dir", path_str(&cache)], &[]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: COMPONENT: `oci://nope`"),
        "{stderr}"
    );
}
