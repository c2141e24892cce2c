//! Issue 26, findings 4, 5 and 9: what a hostile registry or a local user
//! can do to `--cache-dir` and to a signed route. A registry's cosign
//! signature costs a handful of requests and no file per layer, and is
//! checked before the layer is downloaded; the OCI store lives only in a
//! `--cache-dir` no one else can write to; a followed tag cannot be moved
//! back to an older signed build.

use crate::common::*;
use crate::fake_registry::{FakeRegistry, OCI_MANIFEST};
use p256::ecdsa::SigningKey;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

fn wasm(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

fn signer() -> SigningKey {
    SigningKey::from_slice(&[7; 32]).unwrap()
}

fn stranger() -> SigningKey {
    SigningKey::from_slice(&[8; 32]).unwrap()
}

/// `key`'s signature of `payload`, base64 DER as cosign writes it.
fn sign(key: &SigningKey, payload: &[u8]) -> String {
    use base64::Engine;
    use p256::ecdsa::signature::Signer;
    let signature: p256::ecdsa::Signature = key.sign(payload);
    base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
}

/// A simple-signing payload naming `digest`; `nonce` makes it distinct.
fn payload(registry: &FakeRegistry, digest: &str, nonce: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": {"docker-reference": format!("{}/team/hello", registry.addr)},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature"
        },
        "optional": {"n": nonce.to_string()}
    }))
    .unwrap()
}

/// The signature image of `signed` (cosign's `sha256-HEX.sig` tag) with
/// one layer per key in `keys`, in order, each over its own payload.
fn cosign_layers(registry: &FakeRegistry, signed: &str, keys: &[&SigningKey]) {
    let layers: Vec<serde_json::Value> = keys
        .iter()
        .enumerate()
        .map(|(n, key)| {
            let payload = payload(registry, signed, n);
            let signature = sign(key, &payload);
            let digest = registry.put_blob(&payload);
            serde_json::json!({
                "mediaType": SIMPLESIGNING, "digest": digest, "size": payload.len(),
                "annotations": {"dev.cosignproject.cosign/signature": signature}
            })
        })
        .collect();
    let config = registry.put_blob(b"{}");
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": layers,
    });
    let tag = format!("{}.sig", signed.replace(':', "-"));
    registry.put_manifest(
        Some(&tag),
        OCI_MANIFEST,
        &serde_json::to_vec(&manifest).unwrap(),
    );
}

/// `wasm` in the CNCF layout whose config says it was `created` then
/// (RFC 3339, as `wasmlet push` and `wkg oci push` write it).
/// The same arguments give the same digest.
fn push_created(registry: &FakeRegistry, tag: Option<&str>, wasm: &[u8], created: &str) -> String {
    let config = serde_json::to_vec(&serde_json::json!({
        "created": created, "architecture": "wasm", "os": "wasip2",
    }))
    .unwrap();
    let config_digest = registry.put_blob(&config);
    let layer = registry.put_blob(wasm);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.wasm.config.v0+json",
                   "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/wasm", "digest": layer, "size": wasm.len()}],
    });
    registry.put_manifest(tag, OCI_MANIFEST, &serde_json::to_vec(&manifest).unwrap())
}

/// A manifest with one catch-all route on `component` and `extra` lines,
/// and the signer's public key beside it.
fn routes(dir: &Path, component: &str, extra: &str) -> PathBuf {
    use p256::pkcs8::EncodePublicKey;
    let pem = signer()
        .verifying_key()
        .to_public_key_pem(p256::pkcs8::LineEnding::LF)
        .unwrap();
    write(&dir.join("cosign.pub"), pem);
    let path = dir.join("wasmlet.toml");
    write(
        &path,
        format!("[[route]]\npath = \"/...\"\ncomponent = \"{component}\"\n{extra}"),
    );
    path
}

fn args<'a>(config: &'a Path, cache: &'a Path, insecure: &'a str) -> Vec<&'a str> {
    vec![
        "--config",
        path_str(config),
        "--cache-dir",
        path_str(cache),
        "--insecure-registry",
        insecure,
        "--pull-timeout",
        "5s",
    ]
}

/// Files under `dir` and the bytes they take on disk (allocated blocks).
fn on_disk(dir: &Path) -> (u64, u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    let mut total = (0, 0);
    for entry in entries.map(|e| e.unwrap()) {
        let meta = std::fs::symlink_metadata(entry.path()).unwrap();
        let (files, bytes) = if meta.is_dir() {
            on_disk(&entry.path())
        } else {
            (1, meta.blocks() * 512)
        };
        total.0 += files;
        total.1 += bytes;
    }
    total
}

fn blob_gets(registry: &FakeRegistry, from: usize) -> Vec<String> {
    registry.log()[from..]
        .iter()
        .filter(|l| l.starts_with("GET ") && l.contains("/blobs/"))
        .cloned()
        .collect()
}

/// Finding 4: a signature image listing thousands of simple-signing
/// layers (none valid until the last) costs a handful of blob GETs and no
/// file per layer; the route is refused, the last good version serves.
#[tokio::test(flavor = "multi_thread")]
async fn a_signature_with_thousands_of_layers_costs_a_handful_of_requests_and_no_files() {
    const LAYERS: usize = 2000;
    let registry = FakeRegistry::start().await;
    let (good, bad) = (signer(), stranger());
    let v1 = registry.push(Some("live"), &wasm(wasm::V1));
    cosign_layers(&registry, &v1, &[&good]);
    let dir = tempdir();
    let cache = dir.path().join("cache");
    let config = routes(
        dir.path(),
        &registry.reference(":live"),
        "cosign_key = \"cosign.pub\"\n",
    );
    let insecure = registry.addr.to_string();
    let host = Wasmlet::serve(&args(&config, &cache, &insecure));
    assert_eq!(get(host.public, "/").await.text(), "v1");

    let v2 = registry.push(Some("live"), &wasm(wasm::V2));
    let mut keys = vec![&bad; LAYERS - 1];
    keys.push(&good);
    cosign_layers(&registry, &v2, &keys);
    let (files_before, bytes_before) = on_disk(&cache.join("oci"));
    for round in 1..=2 {
        let from = registry.log().len();
        let r = reload(host.admin).await;
        let gets = blob_gets(&registry, from);
        let (files, bytes) = on_disk(&cache.join("oci"));
        eprintln!(
            "round {round}: reload {} ; blob GETs {} ; oci/ files {files_before} -> {files}, bytes {bytes_before} -> {bytes}",
            r.status,
            gets.len()
        );
        assert!(gets.len() <= 8, "round {round}: {} blob GETs", gets.len());
        assert!(
            files <= files_before + 2,
            "round {round}: {files_before} -> {files} files"
        );
        assert!(
            bytes <= bytes_before + (64 << 10),
            "round {round}: {bytes_before} -> {bytes} bytes"
        );
        assert_eq!(r.status, 422, "{}", r.text());
        assert!(
            r.text().contains("no valid cosign signature"),
            "{}",
            r.text()
        );
        assert_eq!(get(host.public, "/").await.text(), "v1");
    }
}

/// Finding 4: the signature is checked before the layer is downloaded: a
/// digest with a bad signature never has its layer requested.
#[tokio::test(flavor = "multi_thread")]
async fn a_bad_signature_means_the_layer_is_never_requested() {
    let registry = FakeRegistry::start().await;
    let layer = crate::fake_registry::sha256(&wasm(wasm::V1));
    let v1 = registry.push(Some("live"), &wasm(wasm::V1));
    cosign_layers(&registry, &v1, &[&stranger()]);
    let dir = tempdir();
    let cache = dir.path().join("cache");
    let config = routes(
        dir.path(),
        &registry.reference(":live"),
        "cosign_key = \"cosign.pub\"\n",
    );
    let insecure = registry.addr.to_string();
    let (status, _, stderr) = serve_to_exit(&args(&config, &cache, &insecure), &[]);
    assert!(!status.success());
    assert!(stderr.contains("does not verify"), "{stderr}");
    let log = registry.log();
    eprintln!(
        "layer GETs with a bad signature: {}",
        log.iter().filter(|l| l.contains(&layer)).count()
    );
    assert!(!log.iter().any(|l| l.contains(&layer)), "{log:?}");

    // Signed: the same start pulls it.
    cosign_layers(&registry, &v1, &[&signer()]);
    let host = Wasmlet::serve(&args(&config, &cache, &insecure));
    assert_eq!(get(host.public, "/").await.text(), "v1");
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Finding 5: with a `--cache-dir` others may write to, or an `oci/`
/// inside it that is a symlink or others may write to, nothing is pulled
/// into it: the route is refused with a reason, and a file planted links
/// point at is left alone.
#[tokio::test(flavor = "multi_thread")]
async fn an_unsafe_cache_dir_is_never_pulled_into() {
    let registry = FakeRegistry::start().await;
    registry.push(Some("live"), &wasm(wasm::V1));
    let dir = tempdir();
    let victim_dir = dir.path().join("victim");
    std::fs::create_dir(&victim_dir).unwrap();
    let victim = victim_dir.join("secret");
    write(&victim, "root only");
    chmod(&victim, 0o600);
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    let insecure = registry.addr.to_string();
    let config = routes(dir.path(), path_str(&pathbuf(wasm::HELLO)), "");

    // (a) A world-writable --cache-dir; a local user plants oci/ as a
    // folder of their own, full of links named like temporary files.
    chmod(&cache, 0o777);
    let host = Wasmlet::serve(&args(&config, &cache, &insecure));
    let attacker = cache.join("oci");
    let sha = attacker.join("blobs/sha256");
    std::fs::create_dir_all(&sha).unwrap();
    std::fs::create_dir_all(attacker.join("signatures")).unwrap();
    for n in 0..64 {
        for folder in [&sha, &attacker.join("signatures")] {
            let link = folder.join(format!(".temp-{}-{n}", host.pid()));
            std::os::unix::fs::symlink(&victim, link).unwrap();
        }
    }
    routes(dir.path(), &registry.reference(":live"), "");
    let r = reload(host.admin).await;
    eprintln!(
        "mode 777: reload {} ; victim now {} bytes",
        r.status,
        std::fs::metadata(&victim).unwrap().len()
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root only");
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("--cache-dir"), "{}", r.text());
    assert!(r.text().contains("mode 777"), "{}", r.text());
    let doc = handlers(&host).await;
    assert!(
        doc["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("mode 777"),
        "{doc}"
    );
    let planted: usize = std::fs::read_dir(&sha).unwrap().count();
    assert_eq!(planted, 64, "nothing written beside the links");
    drop(host);

    // (b) A private --cache-dir whose oci/ is a symlink to another folder.
    std::fs::remove_dir_all(&cache).unwrap();
    std::fs::create_dir(&cache).unwrap();
    chmod(&cache, 0o700);
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, cache.join("oci")).unwrap();
    let (status, _, stderr) = serve_to_exit(&args(&config, &cache, &insecure), &[]);
    assert!(!status.success());
    assert!(stderr.contains("symlink"), "{stderr}");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);

    // (c) ... or a folder others may write to.
    std::fs::remove_file(cache.join("oci")).unwrap();
    std::fs::create_dir_all(cache.join("oci/blobs")).unwrap();
    chmod(&cache.join("oci/blobs"), 0o777);
    let (status, _, stderr) = serve_to_exit(&args(&config, &cache, &insecure), &[]);
    assert!(!status.success());
    assert!(stderr.contains("mode 777"), "{stderr}");

    // Made private again, the same start pulls and serves.
    chmod(&cache.join("oci/blobs"), 0o700);
    let host = Wasmlet::serve(&args(&config, &cache, &insecure));
    assert_eq!(get(host.public, "/").await.text(), "v1");
}

/// Finding 9: a followed, signed tag moved back to an older build the key
/// once signed is refused (by its config's `created`, which the signed
/// digest covers); the newer version keeps serving and `/handlers` says
/// why. A newer build is still followed.
#[tokio::test(flavor = "multi_thread")]
async fn a_followed_tag_moved_back_to_an_older_signed_build_is_refused() {
    let registry = FakeRegistry::start().await;
    let good = signer();
    let old = push_created(&registry, None, &wasm(wasm::V1), "2026-01-01T00:00:00Z");
    cosign_layers(&registry, &old, &[&good]);
    let new = push_created(
        &registry,
        Some("live"),
        &wasm(wasm::V2),
        "2026-06-01T00:00:00Z",
    );
    cosign_layers(&registry, &new, &[&good]);
    let dir = tempdir();
    let cache_dir = tempdir();
    let cache = cache_dir.path().join("cache");
    let config = routes(
        dir.path(),
        &registry.reference(":live"),
        "cosign_key = \"cosign.pub\"\nfollow = \"1s\"\n",
    );
    let insecure = registry.addr.to_string();
    let host = Wasmlet::serve(&args(&config, &cache, &insecure));
    assert_eq!(get(host.public, "/").await.text(), "v2");

    // The registry moves the tag back to the old, signed build.
    let moved = push_created(
        &registry,
        Some("live"),
        &wasm(wasm::V1),
        "2026-01-01T00:00:00Z",
    );
    assert_eq!(moved, old);
    let deadline = Instant::now() + Duration::from_secs(15);
    let error = loop {
        let doc = handlers(&host).await;
        if let Some(error) = doc["routes"][0]["last_error"].as_str() {
            break error.to_string();
        }
        assert_eq!(
            get(host.public, "/").await.text(),
            "v2",
            "rolled back to the older build"
        );
        assert!(Instant::now() < deadline, "no refusal: {doc}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(error.contains("older"), "{error}");
    assert_eq!(get(host.public, "/").await.text(), "v2");
    let doc = handlers(&host).await;
    assert_eq!(doc["routes"][0]["resolved_digest"], new.as_str());

    // A build newer than the one serving is followed (signed before the
    // tag moves: a digest refused once is not tried again).
    let newer_created = "2026-09-01T00:00:00Z";
    let newer = push_created(&registry, None, &wasm(wasm::V1), newer_created);
    cosign_layers(&registry, &newer, &[&good]);
    push_created(&registry, Some("live"), &wasm(wasm::V1), newer_created);
    until_body(host.public, "/", "v1", Duration::from_secs(15)).await;
    let doc = handlers(&host).await;
    assert_eq!(doc["routes"][0]["resolved_digest"], newer.as_str());
}
