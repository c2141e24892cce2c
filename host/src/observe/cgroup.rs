//! The memory a container's limit counts, read from the process's cgroup.
//!
//! A pod's memory limit is enforced on its cgroup's usage, and kubelet,
//! `kubectl top` and cAdvisor's `container_memory_working_set_bytes` report
//! the *working set*: usage less the inactive file cache the kernel can drop
//! at once. The process's RSS differs from it both ways (it leaves out
//! kernel memory and page cache, and counts shared pages in full), so the
//! metrics expose the working set itself. Both cgroup versions are read: v2
//! (`memory.current`, `memory.stat` `inactive_file`) and v1
//! (`memory.usage_in_bytes`, `memory.stat` `total_inactive_file`).

use std::path::{Path, PathBuf};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Where the process's memory cgroup is, and which version it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryCgroup {
    dir: PathBuf,
    v2: bool,
}

impl MemoryCgroup {
    /// The process's memory cgroup, if one can be read.
    pub fn find() -> Option<MemoryCgroup> {
        let membership = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        candidates(Path::new(CGROUP_ROOT), &membership)
            .into_iter()
            .find(|cgroup| cgroup.usage_file().is_file())
    }

    fn usage_file(&self) -> PathBuf {
        self.dir.join(if self.v2 {
            "memory.current"
        } else {
            "memory.usage_in_bytes"
        })
    }

    /// Usage less inactive file pages, in bytes (what kubelet calls the
    /// working set), or `None` if the files cannot be read.
    pub fn working_set_bytes(&self) -> Option<u64> {
        let usage: u64 = std::fs::read_to_string(self.usage_file())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let stat = std::fs::read_to_string(self.dir.join("memory.stat")).ok()?;
        let key = if self.v2 {
            "inactive_file"
        } else {
            "total_inactive_file"
        };
        Some(usage.saturating_sub(stat_value(&stat, key).unwrap_or(0)))
    }
}

/// The places the memory cgroup may be, most specific first: the path
/// `/proc/self/cgroup` names under the mount (a host, or a container
/// without its own cgroup namespace), then the mount itself (a container
/// whose cgroup namespace makes its own cgroup the root).
fn candidates(root: &Path, membership: &str) -> Vec<MemoryCgroup> {
    let mut found = Vec::new();
    for line in membership.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let relative = path.trim_start_matches('/');
        if id == "0" && controllers.is_empty() {
            found.push(MemoryCgroup {
                dir: root.join(relative),
                v2: true,
            });
            found.push(MemoryCgroup {
                dir: root.join("unified").join(relative),
                v2: true,
            });
        } else if controllers.split(',').any(|c| c == "memory") {
            found.push(MemoryCgroup {
                dir: root.join("memory").join(relative),
                v2: false,
            });
        }
    }
    // A v1 memory controller, when there is one, is the one that counts.
    found.sort_by_key(|cgroup| cgroup.v2);
    found.push(MemoryCgroup {
        dir: root.join("memory"),
        v2: false,
    });
    found.push(MemoryCgroup {
        dir: root.to_path_buf(),
        v2: true,
    });
    found
}

fn stat_value(stat: &str, key: &str) -> Option<u64> {
    stat.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (name == key).then(|| value.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_v1_memory_controller_before_the_v2_hierarchy() {
        let membership = "9:name=systemd:/\n4:memory:/pods/abc\n1:cpu:/\n0::/\n";
        let found = candidates(Path::new("/cg"), membership);
        assert_eq!(
            found[0],
            MemoryCgroup {
                dir: "/cg/memory/pods/abc".into(),
                v2: false
            }
        );
        assert!(found.iter().any(|c| c.v2 && c.dir == Path::new("/cg/")));
    }

    #[test]
    fn finds_a_v2_cgroup_and_falls_back_to_the_mount() {
        let found = candidates(Path::new("/cg"), "0::/kubepods/pod1/c1\n");
        assert_eq!(found[0].dir, Path::new("/cg/kubepods/pod1/c1"));
        assert!(found[0].v2);
        let last = found.last().unwrap();
        assert_eq!((last.dir.as_path(), last.v2), (Path::new("/cg"), true));
    }

    #[test]
    fn working_set_is_usage_less_inactive_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("memory.current"), "1000000\n").unwrap();
        std::fs::write(
            dir.path().join("memory.stat"),
            "anon 600000\nactive_file 100000\ninactive_file 250000\n",
        )
        .unwrap();
        let cgroup = MemoryCgroup {
            dir: dir.path().to_path_buf(),
            v2: true,
        };
        assert_eq!(cgroup.working_set_bytes(), Some(750_000));

        std::fs::write(dir.path().join("memory.usage_in_bytes"), "5000\n").unwrap();
        std::fs::write(
            dir.path().join("memory.stat"),
            "inactive_file 9\ntotal_inactive_file 1000\n",
        )
        .unwrap();
        let v1 = MemoryCgroup {
            dir: dir.path().to_path_buf(),
            v2: false,
        };
        assert_eq!(v1.working_set_bytes(), Some(4000));
    }
}
