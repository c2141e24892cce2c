//! `--cache-max-size`: what the host writes under `--cache-dir` stays under
//! the cap across swaps, without ever removing what the serving table uses.
//! The cap is set through `WASMLET_CACHE_MAX_SIZE`.

use crate::common::*;
use sha2::Digest;
use std::path::Path;
use std::time::Duration;

/// Distinct small handlers: about 280 KiB compiled each.
const COMPONENTS: [&str; 8] = [
    wasm::HELLO,
    wasm::ECHO,
    wasm::V1,
    wasm::V2,
    wasm::STATUS,
    wasm::COUNT,
    wasm::ENV,
    wasm::STDOUT,
];

/// Room for three of [`COMPONENTS`] compiled, not four.
const CAP: u64 = 1 << 20;

/// What every file under `dir` takes on disk, as the host counts it: its
/// allocated blocks, at least one 4 KiB block.
fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|e| e.unwrap())
        .map(|e| {
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                disk_usage(&e.path())
            } else {
                (meta.blocks() * 512).max(4096)
            }
        })
        .sum()
}

/// The hex sha256 of a component file.
fn digest(component: &str) -> String {
    sha2::Sha256::digest(std::fs::read(component).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether the compile cache in `cache` has an entry for `component`.
fn compiled(cache: &Path, component: &str) -> bool {
    let digest = digest(component);
    std::fs::read_dir(cache).unwrap().any(|e| {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        name.starts_with(&digest) && name.ends_with(".cwasm")
    })
}

/// Replaces `handler` with `component` the way a deploy tool does (a new
/// file renamed over the old one), then reloads.
async fn swap(host: &Wasmlet, handler: &Path, component: &str) {
    let next = handler.with_extension("next");
    copy(component, &next);
    std::fs::rename(&next, handler).unwrap();
    let r = reload(host.admin).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let doc = handlers(host).await;
    assert_eq!(
        doc["routes"][0]["digest"],
        format!("sha256:{}", digest(component)),
        "{doc}"
    );
}

/// One catch-all route serving `handler`, with a cache capped at `cap`.
fn serve(dir: &Path, cap: &str) -> (Wasmlet, std::path::PathBuf, std::path::PathBuf) {
    let handler = dir.join("handler.wasm");
    let cache = dir.join("cache");
    copy(COMPONENTS[0], &handler);
    let host = Wasmlet::serve_with_env(
        &[
            path_str(&handler),
            "--cache-dir",
            path_str(&cache),
            "--no-watch",
        ],
        &[("WASMLET_CACHE_MAX_SIZE", cap)],
    );
    (host, handler, cache)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cache_stays_under_its_cap_across_swaps() {
    let dir = tempdir();
    let (host, handler, cache) = serve(dir.path(), "1MiB");
    let mut largest = disk_usage(&cache);
    for component in COMPONENTS.iter().skip(1) {
        swap(&host, &handler, component).await;
        let used = disk_usage(&cache);
        largest = largest.max(used);
        assert!(
            compiled(&cache, component),
            "the serving component's entry is kept"
        );
        assert!(
            used <= CAP,
            "{used} bytes under --cache-dir after swapping to {component}, over the {CAP} cap"
        );
    }
    eprintln!(
        "{} swaps: at most {largest} bytes under --cache-dir (cap {CAP})",
        COMPONENTS.len() - 1
    );
}

/// Routes `/0`, `/1`, … serving `components` in turn, written as
/// `wasmlet.toml` in `dir`; returns its path.
fn routes(dir: &Path, components: &[&str]) -> String {
    let mut text = String::new();
    for (n, component) in components.iter().enumerate() {
        let file = dir.join(format!("{n}.wasm"));
        copy(component, &file);
        text.push_str(&format!(
            "[[route]]\npath = \"/{n}\"\ncomponent = \"{n}.wasm\"\n\n"
        ));
    }
    let manifest = dir.join("wasmlet.toml");
    write(&manifest, text);
    path_str(&manifest).to_string()
}

fn warnings(host: &Wasmlet) -> usize {
    host.logs()
        .iter()
        .filter(|l| l.contains("WARN") && l.contains("--cache-max-size"))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn entries_in_use_are_never_pruned_even_over_the_cap() {
    let dir = tempdir();
    let cache = dir.path().join("cache");
    let serving = &COMPONENTS[..4];
    let manifest = routes(dir.path(), serving);
    let host = Wasmlet::serve_with_env(
        &[
            "--config",
            &manifest,
            "--cache-dir",
            path_str(&cache),
            "--no-watch",
        ],
        &[("WASMLET_CACHE_MAX_SIZE", "512KiB")],
    );
    // Four entries in use, each over half the cap: all stay, one warning.
    for component in serving {
        assert!(compiled(&cache, component), "{component}");
    }
    let used = disk_usage(&cache);
    assert!(used > 512 << 10, "{used}");
    assert_eq!(metric(&host, "wasmlet_cache_bytes").await, used as f64);
    assert_eq!(warnings(&host), 1, "{:#?}", host.logs());
    assert_eq!(reload(host.admin).await.status, 200);
    assert_eq!(warnings(&host), 1, "warned once, not per reload");
    assert_eq!(
        handlers(&host).await["routes"].as_array().unwrap().len(),
        serving.len()
    );

    // Three routes go: their entries are no longer in use, and are pruned.
    routes(dir.path(), &serving[..1]);
    assert_eq!(reload(host.admin).await.status, 200);
    assert!(compiled(&cache, serving[0]));
    for component in &serving[1..] {
        assert!(!compiled(&cache, component), "{component}");
    }
    assert_eq!(metric(&host, "wasmlet_cache_pruned_total").await, 3.0);
    assert_eq!(
        metric(&host, "wasmlet_cache_bytes").await,
        disk_usage(&cache) as f64
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_least_recently_used_entry_goes_and_is_compiled_again_when_needed() {
    let dir = tempdir();
    let (host, handler, cache) = serve(dir.path(), "1MiB");
    let [a, b, c, d] = [COMPONENTS[0], COMPONENTS[1], COMPONENTS[2], COMPONENTS[3]];
    // a, b and c fit the cap; a and c are used again after b.
    for component in [b, c, a, c] {
        swap(&host, &handler, component).await;
    }
    // d does not fit: b, the least recently used, goes; a stays.
    swap(&host, &handler, d).await;
    assert!(!compiled(&cache, b), "the least recently used is pruned");
    for kept in [a, c, d] {
        assert!(compiled(&cache, kept), "{kept}");
    }
    assert_eq!(metric(&host, "wasmlet_cache_pruned_total").await, 1.0);

    // Back to b: compiled again, without an error.
    swap(&host, &handler, b).await;
    assert_eq!(get(host.public, "/").await.status, 200);
    let misses = host
        .wait_for_logs(Duration::from_secs(10), 2, |l| {
            l.contains("component loaded") && l.contains(&digest(b))
        })
        .iter()
        .map(|l| field(l, "cache"))
        .collect::<Vec<_>>();
    assert_eq!(misses, ["miss", "miss"]);
    assert!(compiled(&cache, b));
    assert!(disk_usage(&cache) <= CAP);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cap_of_zero_keeps_every_entry() {
    let dir = tempdir();
    let (host, handler, cache) = serve(dir.path(), "0");
    for component in COMPONENTS.iter().skip(1) {
        swap(&host, &handler, component).await;
    }
    for component in COMPONENTS {
        assert!(compiled(&cache, component), "{component}");
    }
    assert!(disk_usage(&cache) > CAP);
    assert_eq!(metric(&host, "wasmlet_cache_pruned_total").await, 0.0);
    assert_eq!(
        metric(&host, "wasmlet_cache_bytes").await,
        disk_usage(&cache) as f64
    );
    assert_eq!(warnings(&host), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_served_oci_component_keeps_its_blobs_so_a_restart_needs_no_registry() {
    use crate::fake_registry::FakeRegistry;
    let registry = FakeRegistry::start().await;
    let v1 = registry.push(Some("live"), &std::fs::read(wasm::V1).unwrap());
    let dir = tempdir();
    let cache = dir.path().join("cache");
    let manifest = dir.path().join("wasmlet.toml");
    let route = |reference: &str| {
        write(
            &manifest,
            format!("[[route]]\npath = \"/...\"\ncomponent = \"{reference}\"\n"),
        )
    };
    route(&registry.reference(":live"));
    let insecure = registry.addr.to_string();
    // A cap of one byte: only what is in use may stay.
    let serve = || {
        Wasmlet::serve_with_env(
            &[
                "--config",
                path_str(&manifest),
                "--cache-dir",
                path_str(&cache),
                "--insecure-registry",
                &insecure,
                "--no-watch",
            ],
            &[("WASMLET_CACHE_MAX_SIZE", "1")],
        )
    };
    let host = serve();
    assert_eq!(get(host.public, "/").await.text(), "v1");
    let blobs = |cache: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(cache.join("oci/blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let hex = |digest: &str| digest["sha256:".len()..].to_string();
    let v1_layer = crate::fake_registry::sha256(&std::fs::read(wasm::V1).unwrap());
    let mut expected = vec![hex(&v1), hex(&v1_layer)];
    expected.sort();
    assert_eq!(blobs(&cache), expected, "the manifest and layer in use");

    // The tag moves to v2: v1's manifest, layer and compiled entry go.
    let v2 = registry.push(Some("live"), &std::fs::read(wasm::V2).unwrap());
    assert_eq!(reload(host.admin).await.status, 200);
    assert_eq!(get(host.public, "/").await.text(), "v2");
    let v2_layer = crate::fake_registry::sha256(&std::fs::read(wasm::V2).unwrap());
    let mut expected = vec![hex(&v2), hex(&v2_layer)];
    expected.sort();
    assert_eq!(blobs(&cache), expected);
    assert!(!compiled(&cache, wasm::V1) && compiled(&cache, wasm::V2));
    drop(host);

    // Pinned to what served, a restart with the registry gone serves it.
    registry.stop();
    route(&registry.reference(&format!("@{v2}")));
    let host = serve();
    assert_eq!(get(host.public, "/").await.text(), "v2");
}
