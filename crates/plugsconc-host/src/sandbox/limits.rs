//! rlimits from the manifest's `resources`: what the kernel enforces per process without cgroups
//! (on this class of machine cgroup v2 delegates no memory, pids or cpu controller).

use super::Protections;
use crate::manifest::Resources;

/// Address space a runtime reserves beyond what it touches (thread stacks, allocator arenas):
/// added to `memory_mb` so the limit stops runaway allocation, not a normal start.
pub(super) const ADDRESS_SPACE_HEADROOM_MB: u64 = 256;

/// One rlimit, soft = hard.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limit {
    resource: libc::__rlimit_resource_t,
    value: u64,
}

impl Limit {
    /// Sets it on the calling process (between fork and exec: one syscall).
    pub(super) fn apply(self) -> std::io::Result<()> {
        let limit = libc::rlimit {
            rlim_cur: self.value,
            rlim_max: self.value,
        };
        // SAFETY: setrlimit reads the struct we pass and nothing else.
        if unsafe { libc::setrlimit(self.resource, &raw const limit) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

/// The limits for `resources`; a core dump is never written (it would hold the plugin's memory).
pub(super) fn for_resources(resources: &Resources, protections: &mut Protections) -> Vec<Limit> {
    let mut limits = vec![Limit {
        resource: libc::RLIMIT_CORE,
        value: 0,
    }];
    let mut named = vec!["core 0".to_owned()];
    if let Some(files) = resources.open_files {
        limits.push(Limit {
            resource: libc::RLIMIT_NOFILE,
            value: files,
        });
        named.push(format!("open files {files}"));
    }
    if let Some(mb) = resources.memory_mb {
        let total = mb.saturating_add(ADDRESS_SPACE_HEADROOM_MB);
        limits.push(Limit {
            resource: libc::RLIMIT_AS,
            value: total.saturating_mul(1 << 20),
        });
        named.push(format!("address space {total} MiB"));
    }
    if let Some(threads) = resources.threads {
        limits.push(Limit {
            resource: libc::RLIMIT_NPROC,
            value: threads,
        });
        named.push(format!(
            "processes/threads {threads} (per user; not enforced for root)"
        ));
    }
    protections
        .enforced
        .push(format!("rlimits: {}", named.join(", ")));
    limits
}
