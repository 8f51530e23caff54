//! The OS sandbox of a process plugin (Linux): everything is prepared in the host — a Landlock
//! ruleset derived from the manifest's grants, seccomp filters, rlimits — and only applied by raw,
//! async-signal-safe syscalls between fork and exec, so the plugin is confined before its first
//! instruction. What the kernel cannot enforce is reported, never silently skipped.

mod capabilities;
mod cgroup;
mod landlock;
mod limits;
mod seccomp;

pub(crate) use cgroup::Tree as CgroupTree;
pub(crate) use cgroup::remove_leftover as remove_leftover_cgroup;

use std::os::fd::{AsRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::HostError;
use crate::manifest::{Capabilities, Resources};

/// How the registry confines process plugins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxOptions {
    /// Confine plugins at all (default on; off runs them with the host's full rights).
    pub enabled: bool,
    /// Refuse to start a plugin when a protection is not in force on this kernel, instead of
    /// starting it with what is available.
    pub require: bool,
    /// Where each plugin gets a private, persistent read-write folder (`<data_root>/<name>`,
    /// passed as `PLUGSCONC_DATA_DIR`); without it plugins have only a private temp folder.
    pub data_root: Option<PathBuf>,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            require: false,
            data_root: None,
        }
    }
}

impl SandboxOptions {
    /// No confinement: plugins run with the host's rights.
    #[must_use]
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }
}

/// What confines one running plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Protections {
    /// Protections in force.
    pub enforced: Vec<String>,
    /// Protections this kernel lacks (the plugin runs without them unless the sandbox is required).
    pub missing: Vec<String>,
    /// Parts of the grants the OS cannot check (the host services still do).
    pub unenforced: Vec<String>,
}

/// What a plugin's sandbox is derived from: its folder, grants and limits.
#[derive(Debug, Clone, Default)]
pub struct SandboxSpec {
    /// Its folder (read-only for it).
    pub dir: PathBuf,
    /// Its grants.
    pub capabilities: Capabilities,
    /// Its limits.
    pub resources: Resources,
    /// Its private persistent folder, created if missing.
    pub data_dir: Option<PathBuf>,
    /// Refuse to start when a protection is missing on this kernel.
    pub require: bool,
}

/// One launch: the spec plus what the launcher decides.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec<'a> {
    pub(crate) plugin: &'a str,
    pub(crate) entrypoint: &'a Path,
    pub(crate) socket_dir: &'a Path,
    pub(crate) dir: &'a Path,
    pub(crate) capabilities: &'a Capabilities,
    pub(crate) resources: &'a Resources,
    pub(crate) data_dir: Option<&'a Path>,
    pub(crate) require: bool,
}

impl SandboxSpec {
    pub(crate) fn for_launch<'a>(
        &'a self,
        plugin: &'a str,
        entrypoint: &'a Path,
        socket_dir: &'a Path,
    ) -> Spec<'a> {
        Spec {
            plugin,
            entrypoint,
            socket_dir,
            dir: &self.dir,
            capabilities: &self.capabilities,
            resources: &self.resources,
            data_dir: self.data_dir.as_deref(),
            require: self.require,
        }
    }
}

/// A prepared sandbox: applied in the child by [`Plan::apply_in_child`].
#[derive(Debug)]
pub(crate) struct Plan {
    ruleset: Option<OwnedFd>,
    /// The host holds capabilities: the child drops them all.
    drop_capabilities: bool,
    /// `cgroup.procs` of the launch's cgroup, written by the child to join it.
    cgroup_entry: Option<OwnedFd>,
    /// The launch's cgroup, for whoever reaps the plugin to kill and remove.
    pub(crate) cgroup: Option<std::sync::Arc<cgroup::Tree>>,
    filters: Vec<seccompiler::BpfProgram>,
    limits: Vec<limits::Limit>,
    /// What will be in force.
    pub(crate) protections: Protections,
    /// Variables the plugin gets (its temp and data folders).
    pub(crate) env: Vec<(String, String)>,
}

impl Plan {
    /// Builds the ruleset, filters and limits for `spec` (blocking: opens the granted paths).
    ///
    /// # Errors
    ///
    /// [`HostError::Sandbox`] when a folder cannot be prepared or a rule cannot be built, and,
    /// with `require`, when a protection is missing on this kernel.
    pub(crate) fn prepare(spec: &Spec<'_>) -> Result<Self, HostError> {
        let fail = |reason: String| HostError::Sandbox {
            plugin: spec.plugin.to_owned(),
            reason,
        };
        let mut protections = Protections::default();
        let tmp = spec.socket_dir.join("tmp");
        std::fs::create_dir_all(&tmp)
            .map_err(|err| fail(format!("cannot create {}: {err}", tmp.display())))?;
        let mut env = vec![("TMPDIR".to_owned(), tmp.display().to_string())];
        let mut writable = vec![spec.socket_dir.to_owned()];
        if let Some(data) = spec.data_dir {
            let data = std::fs::create_dir_all(data)
                .and_then(|()| std::fs::canonicalize(data))
                .map_err(|err| fail(format!("cannot create {}: {err}", data.display())))?;
            env.push((
                plugsconc_protocol::env::PLUGIN_DATA_DIR.to_owned(),
                data.display().to_string(),
            ));
            writable.push(data);
        }
        let ruleset = landlock::ruleset(spec, &writable, &mut protections).map_err(fail)?;
        let filters = seccomp::filters(spec.capabilities, &mut protections).map_err(fail)?;
        let limits = limits::for_resources(spec.resources, &mut protections);
        // Without an exec grant the plugin cannot create processes (seccomp), so its process
        // group is its whole tree; a cgroup is only worth its cost (moving the child into it
        // takes milliseconds, more on a busy machine) when it can, or when it carries limits.
        let may_spawn = spec
            .capabilities
            .process
            .iter()
            .any(|grant| matches!(grant, crate::manifest::ProcessGrant::Exec { .. }));
        let delegated = cgroup::controllers();
        let has = |controller: &str| delegated.iter().any(|d| d == controller);
        let limited = (spec.resources.memory_mb.is_some() && has("memory"))
            || (spec.resources.threads.is_some() && has("pids"))
            || (spec.resources.cpu_percent.is_some() && has("cpu"));
        let created = if may_spawn || limited {
            cgroup::create(spec.plugin, spec.resources).map(Some)
        } else {
            Ok(None)
        };
        let (cgroup, cgroup_entry) = match created {
            Ok(None) => (None, None),
            Ok(Some((tree, entry, limits))) => {
                protections.enforced.push(
                    "cgroup v2: the plugin's whole process tree is killed with it (cgroup.kill)"
                        .to_owned(),
                );
                if !limits.is_empty() {
                    protections
                        .enforced
                        .push(format!("cgroup v2 limits: {}", limits.join(", ")));
                }
                (Some(std::sync::Arc::new(tree)), Some(entry))
            }
            Err(reason) => {
                protections.unenforced.push(format!(
                    "cgroup v2 unavailable ({reason}): a process that leaves the plugin's process group can outlive it"
                ));
                (None, None)
            }
        };
        if !["memory", "pids", "cpu"].iter().all(|c| has(c)) {
            protections.unenforced.push(
                "cgroup v2 memory/pids/cpu controllers are not delegated here: rlimits and the monitor hold the limits".to_owned(),
            );
        }
        protections.enforced.push("no_new_privs".to_owned());
        let drop_capabilities = capabilities::host_has_any();
        if drop_capabilities {
            protections.enforced.push(
                "capabilities: none (the host's, root's included, are dropped before exec)"
                    .to_owned(),
            );
        }
        if spec.require && !protections.missing.is_empty() {
            return Err(fail(format!(
                "the sandbox is required and this kernel lacks: {}",
                protections.missing.join("; ")
            )));
        }
        Ok(Self {
            ruleset,
            drop_capabilities,
            cgroup_entry,
            cgroup,
            filters,
            limits,
            protections,
            env,
        })
    }

    /// Applies the plan to the calling process. Runs between fork and exec: only raw syscalls,
    /// no allocation, no locks.
    pub(crate) fn apply_in_child(&self) -> std::io::Result<()> {
        // First, while the process may still write anywhere: join the cgroup.
        if let Some(entry) = &self.cgroup_entry {
            cgroup::enter(entry)?;
        }
        for limit in &self.limits {
            limit.apply()?;
        }
        // After the rlimits and the cgroup (which may need them), before anything else.
        if self.drop_capabilities {
            capabilities::drop_all()?;
        }
        // SAFETY: prctl with constant arguments; no memory is passed.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if let Some(ruleset) = &self.ruleset {
            // SAFETY: landlock_restrict_self takes a ruleset fd we own and a flags word.
            let done = unsafe {
                libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0u32)
            };
            if done != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        // Last: the filters must not stand in the way of the calls above.
        for filter in &self.filters {
            seccomp::apply(filter)?;
        }
        Ok(())
    }
}

/// The Landlock ABI the running kernel implements (0: none).
#[must_use]
pub fn landlock_abi() -> i32 {
    landlock::kernel_abi()
}

#[cfg(test)]
mod tests;
