//! The registry's public vocabulary: statuses, catalog entries, events, queries and options.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Where a plugin is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// Known and valid, not started (process plugins start on first use).
    Discovered,
    /// Its manifest or dependencies are wrong; see the reason.
    Invalid,
    /// Turned off by an operator.
    Disabled,
    /// Being launched, or restarted after a crash.
    Starting,
    /// Serving.
    Ready,
    /// Serving but failing its health checks.
    Degraded,
    /// Was running, stopped on purpose (idle, host shutdown); starts again on the next call.
    Stopped,
    /// Could not start, or kept crashing; see the reason. `enable` gives it another chance.
    Failed,
}

impl Status {
    /// The lower-case name used in listings and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Discovered => "discovered",
            Status::Invalid => "invalid",
            Status::Disabled => "disabled",
            Status::Starting => "starting",
            Status::Ready => "ready",
            Status::Degraded => "degraded",
            Status::Stopped => "stopped",
            Status::Failed => "failed",
        }
    }

    /// Whether calls may be routed to a plugin in this status (starting it if needed).
    pub fn callable(self) -> bool {
        !matches!(self, Status::Invalid | Status::Disabled | Status::Failed)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Status {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Status::Discovered,
            Status::Invalid,
            Status::Disabled,
            Status::Starting,
            Status::Ready,
            Status::Degraded,
            Status::Stopped,
            Status::Failed,
        ]
        .into_iter()
        .find(|status| status.as_str() == s)
        .ok_or_else(|| {
            format!("unknown status {s:?}; expected discovered, invalid, disabled, starting, ready, degraded, stopped or failed")
        })
    }
}

/// How a plugin runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// A separate process over the go-plugin protocol.
    Process,
    /// Rust code linked into the host.
    Builtin,
}

impl Runtime {
    /// `process` or `builtin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Process => "process",
            Runtime::Builtin => "builtin",
        }
    }
}

/// What the catalog knows about one plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginInfo {
    /// Unique name.
    pub name: String,
    /// Contract type; `None` when the manifest could not be read.
    pub kind: Option<String>,
    /// Version; `None` when unknown.
    pub version: Option<semver::Version>,
    /// Labels.
    pub tags: Vec<String>,
    /// One line.
    pub description: Option<String>,
    /// Process or built-in.
    pub runtime: Runtime,
    /// Current status.
    pub status: Status,
    /// Why it has that status (errors, operator actions, a rejected reload).
    pub reason: Option<String>,
    /// Plugin folder (process plugins).
    pub dir: Option<PathBuf>,
    /// Hex SHA-256 of the manifest (process plugins).
    pub manifest_sha256: Option<String>,
    /// Process id while running.
    pub pid: Option<u32>,
    /// Restarts after crashes since the plugin was discovered or enabled.
    pub restarts: u32,
    /// Successful hot reloads.
    pub reloads: u32,
    /// HTTP endpoints the manifest declares (process plugins).
    pub http: Vec<crate::manifest::HttpRoute>,
    /// What the OS sandbox enforces on the running (or last) process, and what this kernel
    /// lacks; `None` for built-ins, plugins not started yet, or with the sandbox off.
    pub sandbox: Option<crate::sandbox::Protections>,
    /// The last resource sample of the running process.
    pub usage: Option<crate::monitor::Usage>,
}

/// A change in the catalog, for subscribers ([`super::Registry::subscribe`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A plugin entered the catalog.
    Added {
        /// Its name.
        name: String,
    },
    /// A plugin left the catalog (its folder was removed); it was drained and stopped.
    Removed {
        /// Its name.
        name: String,
    },
    /// A plugin that was not running took what changed on disk (manifest, binary, sidecars); it
    /// starts with them on its next call. A running plugin is reloaded instead
    /// ([`Event::Reloaded`]).
    Updated {
        /// Its name.
        name: String,
    },
    /// A plugin's status changed.
    StatusChanged {
        /// Its name.
        name: String,
        /// Before.
        from: Status,
        /// After.
        to: Status,
        /// Why.
        reason: Option<String>,
    },
    /// A new version replaced a running one; calls now go to it.
    Reloaded {
        /// Its name.
        name: String,
        /// The version that was serving.
        from: semver::Version,
        /// The version now serving.
        to: semver::Version,
        /// From the start of the reload to the swap (validation, launch, health check).
        took: Duration,
    },
    /// A new version could not be used; the running one keeps serving.
    ReloadRejected {
        /// Its name.
        name: String,
        /// Why.
        reason: String,
    },
    /// A running plugin exceeded a limit of its manifest's `resources`; `policy` was applied.
    ResourceAlert {
        /// Its name.
        name: String,
        /// The limit and what was seen.
        violation: crate::monitor::Violation,
        /// What the host did about it.
        policy: crate::manifest::LimitPolicy,
    },
}

impl Event {
    /// The plugin the event is about.
    pub fn name(&self) -> &str {
        match self {
            Event::Added { name }
            | Event::Removed { name }
            | Event::Updated { name }
            | Event::StatusChanged { name, .. }
            | Event::Reloaded { name, .. }
            | Event::ReloadRejected { name, .. }
            | Event::ResourceAlert { name, .. } => name,
        }
    }
}

/// A filter for [`super::Registry::list`]; empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Contract type.
    pub kind: Option<String>,
    /// Must carry this tag.
    pub tag: Option<String>,
    /// Must have this status.
    pub status: Option<Status>,
    /// Version must match.
    pub version: Option<semver::VersionReq>,
    /// Case-insensitive substring of name or description.
    pub text: Option<String>,
}

impl Query {
    pub(crate) fn matches(&self, info: &PluginInfo) -> bool {
        self.kind
            .as_ref()
            .is_none_or(|k| info.kind.as_ref() == Some(k))
            && self.tag.as_ref().is_none_or(|t| info.tags.contains(t))
            && self.status.is_none_or(|s| info.status == s)
            && self
                .version
                .as_ref()
                .is_none_or(|req| info.version.as_ref().is_some_and(|v| req.matches(v)))
            && self.text.as_ref().is_none_or(|text| {
                let text = text.to_lowercase();
                info.name.to_lowercase().contains(&text)
                    || info
                        .description
                        .as_ref()
                        .is_some_and(|d| d.to_lowercase().contains(&text))
            })
    }
}

/// Restart policy after a crash: exponential backoff with jitter, up to a limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the first restart.
    pub initial: Duration,
    /// Ceiling of the delay.
    pub max: Duration,
    /// Restarts allowed before the plugin is marked `failed`.
    pub max_restarts: u32,
    /// A plugin that ran this long since its last start has its restart count reset.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(30),
            max_restarts: 5,
            reset_after: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The delay before restart number `attempt` (1-based): `initial * 2^(attempt-1)`, capped,
    /// then scaled by a random factor in [0.5, 1) so plugins crashing together do not restart
    /// in lockstep.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .initial
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        exp.min(self.max).mul_f64(0.5 + fastrand::f64() / 2.0)
    }
}

/// How the registry checks, launches, supervises and reloads process plugins.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Skip the `.sha256` sidecar check. Insecure: a replaced binary would run.
    pub insecure_skip_checksum: bool,
    /// Trusted publishers and the policy for unsigned plugins (default: signatures required);
    /// [`super::Registry::set_trust`] replaces it later.
    pub trust: crate::signature::Trust,
    /// Bound on a plugin's start (exec to handshake).
    pub start_timeout: Duration,
    /// Grace between `Shutdown` and SIGKILL.
    pub kill_grace: Duration,
    /// Interval of health checks on running plugins.
    pub health_interval: Duration,
    /// Bound on one health check.
    pub health_timeout: Duration,
    /// Consecutive failed health checks after which the plugin is restarted.
    pub health_failures: u32,
    /// Stop a plugin after this long without calls; the next call starts it again.
    pub idle_timeout: Option<Duration>,
    /// Restart after crashes.
    pub backoff: Backoff,
    /// Bound on how long a call waits for a plugin that is being restarted (after a crash or a
    /// failed start, with backoff) before it gets [`crate::HostError::NotAvailable`].
    pub restart_wait: Duration,
    /// Bound on waiting for in-flight calls before stopping an old or removed plugin.
    pub drain_timeout: Duration,
    /// How often running plugins' resource use is sampled and checked against their limits
    /// (`None`: never).
    pub monitor_interval: Option<Duration>,
    /// The OS sandbox of process plugins (on by default).
    pub sandbox: crate::sandbox::SandboxOptions,
    /// The host's environment variables a process plugin gets (when set); the rest — API
    /// tokens, database URLs, cloud credentials — stays with the host. Plugins also get the
    /// go-plugin contract's variables, their configuration and their sandbox folders.
    pub host_env: Vec<String>,
    /// A folder of per-plugin configuration files: the keys of `<name>.yaml` there (a mapping)
    /// override those of the manifest's `config` the plugin is given at start, so an operator
    /// configures a plugin without editing its (signed) manifest.
    pub config_dir: Option<PathBuf>,
    /// A folder where the registry records the process, socket folder and cgroup of each plugin
    /// it launches (one file per registry). When the registry is made, what the records of
    /// hosts no longer running list is ended and removed: plugins that outlived a host killed
    /// with SIGKILL, and their folders. A process is signalled only if it still is the one
    /// recorded (same pid and start time). `None`: nothing is recorded.
    pub launch_record: Option<PathBuf>,
    /// Which of the built-in plugins linked into the binary the catalog holds (default: all of
    /// them).
    pub builtins: BuiltinSelection,
    /// Security scanners run over a plugin folder before a new version of it is first launched
    /// (default: none); a refusal marks the plugin `failed` and it is not executed.
    pub scanners: crate::scan::Scanners,
}

/// Which linked built-in plugins a registry catalogs. Linking a built-in makes it available;
/// this decides whether a given registry offers it (a daemon offers only those its
/// configuration names).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum BuiltinSelection {
    /// Every built-in plugin linked into the binary.
    #[default]
    All,
    /// Only the linked built-ins of these names (names not linked are ignored; the caller
    /// checks them against [`crate::builtins`]).
    Only(BTreeSet<String>),
}

impl BuiltinSelection {
    /// No built-in plugin at all.
    pub fn none() -> Self {
        Self::Only(BTreeSet::new())
    }

    /// Whether the built-in `name` is selected.
    pub fn selects(&self, name: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(names) => names.contains(name),
        }
    }
}

/// What a plugin gets of the host's environment by default: finding programs and libraries,
/// the locale, the time zone, TLS roots, Rust's logging and backtrace switches.
pub const DEFAULT_HOST_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "TZ",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "RUST_LOG",
    "RUST_BACKTRACE",
];

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            insecure_skip_checksum: false,
            trust: crate::signature::Trust::default(),
            start_timeout: Duration::from_secs(30),
            kill_grace: Duration::from_secs(2),
            health_interval: Duration::from_secs(10),
            health_timeout: Duration::from_secs(5),
            health_failures: 3,
            idle_timeout: Some(Duration::from_secs(600)),
            backoff: Backoff::default(),
            restart_wait: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
            monitor_interval: Some(Duration::from_secs(5)),
            sandbox: crate::sandbox::SandboxOptions::default(),
            host_env: DEFAULT_HOST_ENV
                .iter()
                .map(|&name| name.to_owned())
                .collect(),
            config_dir: None,
            launch_record: None,
            builtins: BuiltinSelection::All,
            scanners: crate::scan::Scanners::default(),
        }
    }
}
