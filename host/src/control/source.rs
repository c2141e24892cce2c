//! What the host serves, and where a reload reads it: a manifest (with the
//! components it names) or one component on every path.
//!
//! In a Kubernetes ConfigMap volume the manifest is read through the
//! `..data` link resolved once per reload, so a swap in mid-read cannot mix
//! two versions; the file watcher watches the folders [`Source::watch_dirs`]
//! names.

use crate::config::manifest::{Manifest, OneFileGrants};
use crate::oci::OciRef;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// What the host serves: a manifest, or one component on every path.
#[derive(Debug, Clone)]
pub enum Source {
    Manifest(PathBuf),
    /// `wasmlet serve COMPONENT.wasm`, with what its flags grant.
    Component(PathBuf, OneFileGrants),
}

impl Source {
    /// The manifest this source serves (one route, `/...`, for a component).
    pub fn manifest(&self) -> Result<Manifest> {
        match self {
            Source::Manifest(path) => Manifest::load(&snapshot(path)),
            Source::Component(path, grants) => Manifest::single(path, grants),
        }
    }

    /// The directory holding the manifest (or the single component); none
    /// for an `oci://` component, which no file change can move.
    fn home(&self) -> Option<PathBuf> {
        let file = match self {
            Source::Component(p, _) if p.to_str().is_some_and(OciRef::is_oci) => return None,
            Source::Manifest(p) | Source::Component(p, _) => p,
        };
        Some(match file.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        })
    }

    /// Directories to watch: the manifest's and every component's
    /// (canaries included).
    pub fn watch_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self.home().into_iter().collect();
        if let Ok(manifest) = self.manifest() {
            let components = manifest.routes.into_iter().flat_map(|route| {
                let canary = route
                    .canary
                    .filter(|c| c.oci.is_none())
                    .map(|c| c.component);
                let stable = route.oci.is_none().then_some(route.component);
                stable.into_iter().chain(canary)
            });
            for component in components {
                if let Some(dir) = component.parent() {
                    let dir = if dir.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        dir
                    };
                    dirs.push(dir.to_path_buf());
                }
            }
        }
        dirs.sort();
        dirs.dedup();
        dirs
    }
}

/// The manifest's path inside one version of a Kubernetes ConfigMap
/// volume: when its folder has a `..data` link (kubelet's AtomicWriter
/// re-points it at a new timestamped folder on each update), the link is
/// resolved once and the manifest, and so every component named relative
/// to it, is read from that folder. Otherwise `manifest` itself.
fn snapshot(manifest: &Path) -> PathBuf {
    let home = manifest.parent().unwrap_or(Path::new("."));
    let (Ok(version), Some(name)) = (
        std::fs::read_link(home.join("..data")),
        manifest.file_name(),
    ) else {
        return manifest.to_path_buf();
    };
    home.join(version).join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// kubelet's AtomicWriter: a new folder, `..data` re-pointed at it.
    fn publish(root: &Path, name: &str, component: &[u8]) {
        let data = root.join(name);
        std::fs::create_dir(&data).unwrap();
        std::fs::write(
            data.join("wasmlet.toml"),
            "[[route]]\npath = \"/...\"\ncomponent = \"handler.wasm\"\n",
        )
        .unwrap();
        std::fs::write(data.join("handler.wasm"), component).unwrap();
        std::os::unix::fs::symlink(name, root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    }

    #[test]
    fn a_configmap_swap_after_the_manifest_is_read_does_not_mix_versions() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        publish(root, "..2026_12_03_00_00_00.1", b"one");
        for name in ["wasmlet.toml", "handler.wasm"] {
            std::os::unix::fs::symlink(format!("..data/{name}"), root.join(name)).unwrap();
        }
        let source = Source::Manifest(root.join("wasmlet.toml"));
        let manifest = source.manifest().unwrap();
        // The swap lands between reading the manifest and its components.
        publish(root, "..2026_12_03_00_00_00.2", b"two");
        let component = std::fs::read(&manifest.routes[0].component).unwrap();
        assert_eq!(
            component, b"one",
            "a component of the manifest's own version"
        );
    }
}
