//! A cgroup v2 per plugin launch, when the host may create one: the plugin is moved in before
//! exec, so it and everything it starts — even processes that left its process group or session
//! — are killed as one (`cgroup.kill`) when it stops. Where the memory, pids and cpu controllers
//! are delegated, the manifest's limits are also set as `memory.max`, `pids.max` and `cpu.max`;
//! many hosts (containers, CI runners) delegate none, and rlimits hold there.

use std::os::fd::{AsRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::manifest::Resources;

/// A plugin's cgroup: killed and removed once the plugin has exited.
#[derive(Debug)]
pub(crate) struct Tree {
    dir: PathBuf,
}

impl Tree {
    /// The cgroup's folder.
    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }

    /// Kills every process in the cgroup (they die asynchronously).
    pub(crate) fn kill(&self) {
        let _ = std::fs::write(self.dir.join("cgroup.kill"), "1");
    }

    /// Kills what is left, waits (bounded) for the cgroup to empty, and removes it.
    pub(crate) async fn remove(&self) {
        self.kill();
        for _ in 0..100 {
            if !populated(&self.dir) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Err(err) = std::fs::remove_dir(&self.dir) {
            tracing::debug!(cgroup = %self.dir.display(), error = %err, "cannot remove the plugin's cgroup");
        }
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        // Normally already removed by `remove`. Otherwise (a plan never used, a background
        // child dropped with its service) kill what is inside and give it a few milliseconds.
        if !self.dir.exists() {
            return;
        }
        self.kill();
        for _ in 0..20 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Kills and removes a plugin cgroup a previous host made and left (`…/plugsconc/<name>`);
/// anything else is left alone.
pub(crate) fn remove_leftover(dir: &Path) {
    let made_here = dir
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|parent| parent == "plugsconc");
    if !made_here || !dir.join("cgroup.kill").exists() {
        return;
    }
    let _ = std::fs::write(dir.join("cgroup.kill"), "1");
    for _ in 0..200 {
        if !populated(dir) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => {
            tracing::info!(cgroup = %dir.display(), "removed a plugin cgroup left by a host that died");
        }
        Err(err) => {
            tracing::warn!(cgroup = %dir.display(), error = %err, "cannot remove a plugin cgroup left by a host that died");
        }
    }
}

fn populated(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.events"))
        .map(|events| events.lines().any(|line| line == "populated 1"))
        .unwrap_or(false)
}

/// The cgroup v2 folder this host runs in: the cgroup2 mount plus the path in `/proc/self/cgroup`.
fn own_cgroup() -> Option<PathBuf> {
    // Read once: a process's cgroup mount and path do not change while it runs, and every
    // launch asks.
    static OWN: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    OWN.get_or_init(read_own_cgroup).clone()
}

fn read_own_cgroup() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = mounts.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        (after.split_whitespace().next() == Some("cgroup2"))
            .then(|| before.split_whitespace().nth(4).map(PathBuf::from))
            .flatten()
    })?;
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = own.lines().find_map(|line| line.strip_prefix("0::"))?;
    Some(mount.join(path.trim_start_matches('/')))
}

/// Creates a cgroup for one launch of `plugin` and opens its `cgroup.procs` for the child to
/// join. `Err` says why the host cannot (no cgroup v2, not writable, no `cgroup.kill`).
pub(crate) fn create(
    plugin: &str,
    resources: &Resources,
) -> Result<(Tree, OwnedFd, Vec<String>), String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = own_cgroup().ok_or("no cgroup v2 hierarchy")?;
    let parent = base.join("plugsconc");
    std::fs::create_dir_all(&parent)
        .map_err(|err| format!("cannot create {}: {err}", parent.display()))?;
    let dir = parent.join(format!(
        "{plugin}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir(&dir).map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
    let tree = Tree { dir };
    if !tree.dir.join("cgroup.kill").exists() {
        let _ = std::fs::remove_dir(&tree.dir);
        return Err("the kernel has no cgroup.kill (Linux 5.14+)".to_owned());
    }
    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(tree.dir.join("cgroup.procs"))
        .map_err(|err| format!("cannot open cgroup.procs: {err}"))?;
    let limits = apply_limits(&parent, &tree.dir, resources);
    Ok((tree, procs.into(), limits))
}

/// Sets `resources` as cgroup limits on `leaf` for each controller `parent` has delegated
/// (enabling it for `parent`'s children first); returns the limits set.
fn apply_limits(parent: &Path, leaf: &Path, resources: &Resources) -> Vec<String> {
    let delegated = std::fs::read_to_string(parent.join("cgroup.controllers")).unwrap_or_default();
    let delegated: Vec<&str> = delegated.split_whitespace().collect();
    let wanted = [
        (
            "memory",
            "memory.max",
            resources.memory_mb.map(|mb| (mb << 20).to_string()),
        ),
        ("pids", "pids.max", resources.threads.map(|n| n.to_string())),
        (
            "cpu",
            "cpu.max",
            // Quota per 100 ms period: 50 % of one core is 50 ms.
            resources
                .cpu_percent
                .map(|pct| format!("{} 100000", (pct * 1000.0).round().max(1000.0) as u64)),
        ),
    ];
    let mut set = Vec::new();
    for (controller, file, value) in wanted {
        let Some(value) = value else { continue };
        if !delegated.contains(&controller) {
            continue;
        }
        let enabled = std::fs::write(
            parent.join("cgroup.subtree_control"),
            format!("+{controller}"),
        );
        if enabled.is_ok() && std::fs::write(leaf.join(file), &value).is_ok() {
            set.push(format!("{file} {value}"));
        }
    }
    set
}

/// Moves the calling process into the cgroup (between fork and exec: one write).
pub(crate) fn enter(procs: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: writes one byte from a static buffer to an fd we own.
    let written = unsafe { libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) };
    if written == 1 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The resource controllers delegated to this host's cgroup.
pub(crate) fn controllers() -> Vec<String> {
    own_cgroup()
        .and_then(|dir| std::fs::read_to_string(dir.join("cgroup.controllers")).ok())
        .map(|list| list.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_go_to_delegated_controllers_only() {
        let parent = tempfile::tempdir().unwrap();
        let leaf = parent.path().join("leaf");
        std::fs::create_dir(&leaf).unwrap();
        std::fs::write(parent.path().join("cgroup.controllers"), "cpu memory\n").unwrap();
        let resources = Resources {
            memory_mb: Some(64),
            cpu_percent: Some(50.0),
            threads: Some(8),
            ..Resources::default()
        };
        let set = apply_limits(parent.path(), &leaf, &resources);
        assert_eq!(set, ["memory.max 67108864", "cpu.max 50000 100000"]);
        assert_eq!(
            std::fs::read_to_string(leaf.join("memory.max")).unwrap(),
            "67108864"
        );
        assert!(!leaf.join("pids.max").exists(), "pids is not delegated");
        // Nothing delegated, nothing set.
        std::fs::write(parent.path().join("cgroup.controllers"), "").unwrap();
        assert!(apply_limits(parent.path(), &leaf, &resources).is_empty());
    }
}
