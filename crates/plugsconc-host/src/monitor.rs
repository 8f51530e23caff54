//! Resource usage of plugin processes, sampled from `/proc`, and the check of samples against
//! the manifest's `resources`. The supervisor samples each running plugin on an interval and
//! acts on a violation by the plugin's policy (warn, restart, stop).

use std::time::Instant;

use serde::Serialize;

use crate::manifest::Resources;

/// One sample of a plugin process.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Usage {
    /// CPU time used so far, user + system, seconds.
    pub cpu_seconds: f64,
    /// CPU use since the previous sample, percent of one core (`None` on the first sample).
    pub cpu_percent: Option<f64>,
    /// Resident memory, bytes.
    pub rss_bytes: u64,
    /// Threads.
    pub threads: u64,
    /// Open file descriptors.
    pub open_files: u64,
    /// Direct child processes.
    pub children: u64,
}

/// A limit a sample exceeds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Violation {
    /// `memory_mb`, `cpu_percent`, `threads` or `open_files`.
    pub resource: &'static str,
    /// The value seen, in the limit's unit.
    pub value: f64,
    /// The manifest's limit.
    pub limit: f64,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:.0} over its limit of {:.0}",
            self.resource, self.value, self.limit
        )
    }
}

/// Samples one process, keeping the previous sample to compute CPU percent.
#[derive(Debug, Clone, Copy)]
pub struct Sampler {
    pid: u32,
    previous: Option<(Instant, f64)>,
}

impl Sampler {
    /// A sampler of process `pid`.
    #[must_use]
    pub fn new(pid: u32) -> Self {
        Self {
            pid,
            previous: None,
        }
    }

    /// Reads the process now; `None` once it is gone.
    pub fn sample(&mut self) -> Option<Usage> {
        let mut usage = read(self.pid)?;
        let now = Instant::now();
        if let Some((at, cpu)) = self.previous {
            let wall = now.duration_since(at).as_secs_f64();
            if wall > 0.0 {
                usage.cpu_percent = Some((usage.cpu_seconds - cpu).max(0.0) / wall * 100.0);
            }
        }
        self.previous = Some((now, usage.cpu_seconds));
        Some(usage)
    }
}

/// The limits of `resources` that `usage` exceeds.
#[must_use]
pub fn check(resources: &Resources, usage: &Usage) -> Vec<Violation> {
    let mut found = Vec::new();
    let mut over = |resource, value: f64, limit: Option<f64>| {
        if let Some(limit) = limit
            && value > limit
        {
            found.push(Violation {
                resource,
                value,
                limit,
            });
        }
    };
    over(
        "memory_mb",
        usage.rss_bytes as f64 / f64::from(1u32 << 20),
        resources.memory_mb.map(|m| m as f64),
    );
    if let Some(cpu) = usage.cpu_percent {
        over("cpu_percent", cpu, resources.cpu_percent);
    }
    over(
        "threads",
        usage.threads as f64,
        resources.threads.map(|t| t as f64),
    );
    over(
        "open_files",
        usage.open_files as f64,
        resources.open_files.map(|f| f as f64),
    );
    found
}

/// Reads `/proc/<pid>`: stat (CPU, threads), statm (RSS), fd (open files), task children.
fn read(pid: u32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces and parentheses), from field 3 on.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let threads: u64 = fields.get(17)?.parse().ok()?;
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let resident: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads configuration values.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let ticks = u64::try_from(ticks).ok().filter(|t| *t > 0)?;
    let page = u64::try_from(page).ok()?;
    let open_files = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| entries.count() as u64)
        .unwrap_or(0);
    let children = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .filter_map(Result::ok)
                .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
                .map(|list| list.split_whitespace().count() as u64)
                .sum()
        })
        .unwrap_or(0);
    Some(Usage {
        cpu_seconds: (utime + stime) as f64 / ticks as f64,
        cpu_percent: None,
        rss_bytes: resident * page,
        threads,
        open_files,
        children,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_its_own_process() {
        let mut sampler = Sampler::new(std::process::id());
        let first = sampler.sample().unwrap();
        assert!(first.rss_bytes > 0 && first.threads >= 1 && first.open_files >= 1);
        assert!(first.cpu_percent.is_none());
        assert!(sampler.sample().unwrap().cpu_percent.is_some());
        assert!(Sampler::new(u32::MAX).sample().is_none());
    }

    #[test]
    fn reports_each_limit_exceeded() {
        let usage = Usage {
            cpu_seconds: 1.0,
            cpu_percent: Some(80.0),
            rss_bytes: 300 << 20,
            threads: 4,
            open_files: 10,
            children: 0,
        };
        let resources = Resources {
            memory_mb: Some(256),
            cpu_percent: Some(50.0),
            threads: Some(8),
            open_files: Some(10),
            ..Resources::default()
        };
        let found = check(&resources, &usage);
        let names: Vec<_> = found.iter().map(|v| v.resource).collect();
        assert_eq!(names, ["memory_mb", "cpu_percent"]);
        assert_eq!(found[0].to_string(), "memory_mb 300 over its limit of 256");
        assert!(check(&Resources::default(), &usage).is_empty());
    }
}
