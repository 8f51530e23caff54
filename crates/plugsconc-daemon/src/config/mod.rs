//! The daemon's configuration: `config.yaml` in sections application, directories, logging,
//! file_watcher, worker_pool, api, install, store, supervisor and security. Every key has a
//! default; the file overrides defaults, `PLUGSCONC_<SECTION>_<KEY>` environment variables
//! override the file, and `--set section.key=value` flags override everything. The layers are
//! merged as trees, each key remembering where its value came from ([`Source`]), then parsed
//! into the typed, validated [`Config`]. Errors name the key, the layer it came from and what
//! was expected.

mod choices;
mod layers;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use choices::{
    AppMode, Choice, LogFormat, LogLevel, QueueFull, Signatures, StopMode, StoreUrl,
};
pub use layers::Source;

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    // The OS error is the source, not part of the message: the CLI prints the chain.
    #[error("cannot read the configuration file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not YAML of the expected shape.
    #[error("{path}: {reason}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        reason: String,
    },
    /// A key no section has.
    #[error("unknown configuration key `{key}` ({origin}){hint}")]
    Unknown {
        /// The dotted key.
        key: String,
        /// Where it was set.
        origin: Source,
        /// A did-you-mean, or the section's keys.
        hint: String,
    },
    /// A value of the wrong type or out of range.
    #[error("configuration key `{key}` ({origin}): {problem}")]
    Invalid {
        /// The dotted key.
        key: String,
        /// Where it was set.
        origin: Source,
        /// What was expected.
        problem: String,
    },
    /// A `--set` flag that is not `section.key=value`.
    #[error("--set {0:?}: expected section.key=value")]
    SetSyntax(String),
}

/// `application`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Application {
    /// Name in logs and the API.
    pub app_name: String,
    /// `dev` or `prod`: `dev` allows unsigned plugins unless `security.signatures` says otherwise.
    pub app_mode: AppMode,
    /// The built-in plugins (linked into the binary) the catalog holds, by name; none by
    /// default. A name that is not linked is a configuration error.
    pub builtins: Vec<String>,
}

impl Default for Application {
    fn default() -> Self {
        Self {
            app_name: "plugsconc".into(),
            app_mode: AppMode::Dev,
            builtins: Vec::new(),
        }
    }
}

/// `directories`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Directories {
    /// The plugins folder.
    pub plugins_dir: PathBuf,
    /// Per-plugin configuration files.
    pub plugin_configs_dir: PathBuf,
    /// Log files.
    pub logs_dir: PathBuf,
    /// The catalog database, the API token, job state.
    pub data_dir: PathBuf,
}

impl Default for Directories {
    fn default() -> Self {
        Self {
            plugins_dir: "plugins".into(),
            plugin_configs_dir: "plugin-configs".into(),
            logs_dir: "logs".into(),
            data_dir: "data".into(),
        }
    }
}

/// `logging`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Logging {
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub log_level: LogLevel,
    /// Console format: `text` (colour on a terminal) or `json`.
    pub log_format: LogFormat,
    /// Log file name in `directories.logs_dir`; empty for no file.
    pub log_filename: String,
    /// Size in MB before a file is rotated.
    pub log_max_size: u64,
    /// Rotated files kept.
    pub log_max_backups: u64,
    /// Days a rotated file is kept.
    pub log_max_age: u64,
    /// gzip rotated files.
    pub log_compress: bool,
    /// Source locations in log lines.
    pub log_include_location: bool,
    /// Every event goes through a persistent queue (a SQLite outbox) before the log file, so
    /// what was acknowledged survives a crash.
    pub log_enable_persistent_queue: bool,
    /// The queue's SQLite file, in `directories.data_dir`.
    pub log_db_file: String,
    /// The queue's name (several daemons may share one file).
    pub log_queue: String,
    /// Delete records once written to the log file, instead of keeping them (newest
    /// `log_queue_keep`) for `plugsconc logs` and `GET /api/v1/logs`.
    pub log_remove_on_complete: bool,
    /// Records waiting for the log file, at most.
    pub log_queue_max: u64,
    /// When that many wait: `drop_oldest` (with a counted warning) or `block` (logging slows
    /// down to the queue's pace).
    pub log_queue_full: QueueFull,
    /// Written records kept for reading (when not removed on completion).
    pub log_queue_keep: u64,
    /// Milliseconds between drains into the log file (0: as soon as records are committed).
    pub log_drain_interval_ms: u64,
}

impl Default for Logging {
    fn default() -> Self {
        Self {
            log_level: LogLevel::Info,
            log_format: LogFormat::Text,
            log_filename: "plugsconc.log".into(),
            log_max_size: 10,
            log_max_backups: 5,
            log_max_age: 30,
            log_compress: true,
            log_include_location: false,
            log_enable_persistent_queue: true,
            log_db_file: "logs.db".into(),
            log_queue: "app_logs".into(),
            log_remove_on_complete: false,
            log_queue_max: 100_000,
            log_queue_full: QueueFull::DropOldest,
            log_queue_keep: 100_000,
            log_drain_interval_ms: 0,
        }
    }
}

/// `file_watcher`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileWatcher {
    /// Watch at all.
    pub fw_enabled: bool,
    /// Reload plugins when their folder changes.
    pub fw_watch_plugins: bool,
    /// Quiet time before a change is applied, in ms.
    pub fw_debounce_ms: u64,
    /// Full rescan interval in seconds (a safety net for missed events); 0 for none.
    pub fw_rescan_secs: u64,
}

impl Default for FileWatcher {
    fn default() -> Self {
        Self {
            fw_enabled: true,
            fw_watch_plugins: true,
            fw_debounce_ms: 250,
            fw_rescan_secs: 60,
        }
    }
}

/// `worker_pool`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerPool {
    /// Workers; 0 means one per CPU.
    pub wp_max_workers: u64,
    /// Queued jobs at most (in the whole queue); submissions beyond are refused.
    pub wp_queue_max: u64,
    /// How long a running job stays this daemon's without renewal (renewed every third of it);
    /// the jobs of a daemon that died are taken over after it, milliseconds.
    pub wp_job_lease_ms: u64,
    /// How often idle workers look for jobs submitted to other daemons, milliseconds.
    pub wp_poll_ms: u64,
    /// How long running jobs may take to finish at shutdown before they are given up (and
    /// handled as after a crash), seconds.
    pub wp_shutdown_grace_secs: u64,
    /// How the pool stops with the daemon: `shutdown` (finish the running jobs, leave the
    /// queued ones for the next start), `stop` (also run the queued jobs submitted here first)
    /// or `terminate` (cancel them all now).
    pub wp_stop_mode: StopMode,
}

impl Default for WorkerPool {
    fn default() -> Self {
        Self {
            wp_max_workers: 0,
            wp_queue_max: 10_000,
            wp_job_lease_ms: 30_000,
            wp_poll_ms: 500,
            wp_shutdown_grace_secs: 10,
            wp_stop_mode: StopMode::Shutdown,
        }
    }
}

/// `api`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Api {
    /// Address of the REST API.
    pub listen: String,
    /// Bearer token for changes; empty: generated on first start into the data folder.
    pub token: String,
    /// Seconds a client may take to send a request's head, from its first byte; the
    /// connection is closed after that.
    pub header_read_timeout_secs: u64,
    /// Seconds a handler reading a request's body may wait for its next byte before the request
    /// fails (and its connection is closed).
    pub body_idle_timeout_secs: u64,
    /// Seconds a connection may stay open without a request in flight (a new one, or a kept-alive
    /// one between requests) before it is closed.
    pub idle_timeout_secs: u64,
    /// Open API connections at most. At the cap a new connection is accepted and the connection
    /// idle the longest is closed to make room; when every one has a request in flight, the new
    /// one waits for one to finish.
    pub max_connections: u64,
}

impl Default for Api {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7400".into(),
            token: String::new(),
            header_read_timeout_secs: 10,
            body_idle_timeout_secs: 30,
            idle_timeout_secs: 60,
            max_connections: 1024,
        }
    }
}

/// `install`: caps on plugin installs through the API and on bundles shared by other daemons.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Install {
    /// Largest bundle upload, MiB; a larger `Content-Length` gets 413 before the body is read,
    /// and a streamed body is cut off there.
    pub max_upload_mib: u64,
    /// Most a bundle may unpack to, MiB.
    pub max_unpacked_mib: u64,
    /// Most files and folders a bundle may hold.
    pub max_files: u64,
    /// Most unpacked bytes per compressed byte, once `ratio_grace_mib` are unpacked.
    pub max_ratio: u64,
    /// MiB a bundle may unpack before its compression ratio is checked.
    pub ratio_grace_mib: u64,
    /// Installs at once; another waits up to 10 s for a turn, then gets 503.
    pub max_concurrent: u64,
}

impl Default for Install {
    fn default() -> Self {
        Self {
            max_upload_mib: 256,
            max_unpacked_mib: 1024,
            max_files: 10_000,
            max_ratio: 100,
            ratio_grace_mib: 4,
            max_concurrent: 2,
        }
    }
}

impl Install {
    /// The unpacking caps, in the installer's units.
    pub fn limits(&self) -> plugsconc_host::install::Limits {
        plugsconc_host::install::Limits {
            unpacked_bytes: self.max_unpacked_mib.saturating_mul(1 << 20),
            files: self.max_files,
            ratio: self.max_ratio,
            ratio_grace_bytes: self.ratio_grace_mib.saturating_mul(1 << 20),
        }
    }

    /// The upload cap in bytes.
    pub fn max_upload_bytes(&self) -> u64 {
        self.max_upload_mib.saturating_mul(1 << 20)
    }
}

/// `store`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Store {
    /// `sqlite://...` or `postgres://...`; empty: SQLite in the data folder.
    pub url: StoreUrl,
    /// PostgreSQL schema holding the catalog (daemons sharing a catalog use the same one).
    pub schema: String,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            url: StoreUrl::DataDir,
            schema: "plugsconc".into(),
        }
    }
}

/// `supervisor`: how crashed plugin processes are restarted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Supervisor {
    /// Restarts in a row before a plugin is marked `failed`.
    pub restart_max: u32,
    /// Delay before the first restart, ms; doubled on each restart in a row.
    pub restart_initial_ms: u64,
    /// Ceiling of the delay between restarts, ms.
    pub restart_max_ms: u64,
    /// A plugin that ran this long since its last start has its restart count reset, seconds.
    pub restart_reset_secs: u64,
    /// How long a call waits for a plugin being restarted before it is refused, seconds.
    pub restart_wait_secs: u64,
}

/// Whether `section.key = value`, over the defaults, makes a valid [`Config`].
fn fits_alone(key: &str, value: &serde_json::Value) -> bool {
    let Ok(mut tree) = serde_json::to_value(Config::default()) else {
        return false;
    };
    let Some((section, name)) = key.split_once('.') else {
        return false;
    };
    match tree.get_mut(section).and_then(|s| s.get_mut(name)) {
        Some(slot) => *slot = value.clone(),
        None => return false,
    }
    serde_json::from_value::<Config>(tree).is_ok()
}

impl Default for Supervisor {
    fn default() -> Self {
        let backoff = plugsconc_host::registry::Backoff::default();
        Self {
            restart_max: backoff.max_restarts,
            restart_initial_ms: duration_ms(backoff.initial),
            restart_max_ms: duration_ms(backoff.max),
            restart_reset_secs: backoff.reset_after.as_secs(),
            restart_wait_secs: plugsconc_host::RegistryOptions::default()
                .restart_wait
                .as_secs(),
        }
    }
}

impl Supervisor {
    /// The registry's restart schedule.
    pub fn backoff(&self) -> plugsconc_host::registry::Backoff {
        use std::time::Duration;
        plugsconc_host::registry::Backoff {
            initial: Duration::from_millis(self.restart_initial_ms),
            max: Duration::from_millis(self.restart_max_ms),
            max_restarts: self.restart_max,
            reset_after: Duration::from_secs(self.restart_reset_secs),
        }
    }
}

fn duration_ms(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// `security`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Security {
    /// `require`, `allow-unsigned`, or empty: `require` in prod mode, `allow-unsigned` in dev.
    pub signatures: Signatures,
    /// Public key files of trusted publishers.
    pub trusted_publishers: Vec<PathBuf>,
    /// Unsigned plugins accepted by name.
    pub unsigned_allowed: Vec<String>,
    /// Run binaries without checking their `.sha256` sidecar. Insecure.
    pub insecure_skip_checksum: bool,
    /// Refuse to start a plugin when a sandbox protection is not available on this kernel.
    pub require_sandbox: bool,
    /// Run process plugins without the OS sandbox (Landlock, seccomp, rlimits). Insecure.
    pub disable_sandbox: bool,
    /// Environment variables of the daemon that plugins get besides the defaults (`PATH`,
    /// `HOME`, the locale, `TZ`, TLS roots, `RUST_LOG`); the rest stays with the daemon.
    pub plugin_env: Vec<String>,
    /// Security scanners: command lines split like shell words, each run with the plugin
    /// folder's path appended as its last argument, on every install and before a new version
    /// of a plugin first launches; a non-zero exit refuses the plugin.
    pub scan_commands: Vec<String>,
    /// Seconds one scanner may run before it is killed (with its process group) and the
    /// plugin refused.
    pub scan_timeout_secs: u64,
}

impl Default for Security {
    fn default() -> Self {
        Self {
            signatures: Signatures::default(),
            trusted_publishers: Vec::new(),
            unsigned_allowed: Vec::new(),
            insecure_skip_checksum: false,
            require_sandbox: false,
            disable_sandbox: false,
            plugin_env: Vec::new(),
            scan_commands: Vec::new(),
            scan_timeout_secs: 60,
        }
    }
}

impl Security {
    /// The configured scanners, their verdicts kept in `<data_dir>/scans`.
    ///
    /// # Errors
    ///
    /// A command line that cannot be split (checked when the configuration loads).
    pub fn scanners(
        &self,
        data_dir: &Path,
    ) -> Result<plugsconc_host::Scanners, plugsconc_host::HostError> {
        let commands = self
            .scan_commands
            .iter()
            .map(|line| plugsconc_host::ScanCommand::parse(line))
            .collect::<Result<_, _>>()?;
        Ok(plugsconc_host::Scanners::new(
            commands,
            std::time::Duration::from_secs(self.scan_timeout_secs),
            Some(data_dir.join("scans")),
        ))
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `application`.
    pub application: Application,
    /// `directories`.
    pub directories: Directories,
    /// `logging`.
    pub logging: Logging,
    /// `file_watcher`.
    pub file_watcher: FileWatcher,
    /// `worker_pool`.
    pub worker_pool: WorkerPool,
    /// `api`.
    pub api: Api,
    /// `install`.
    pub install: Install,
    /// `store`.
    pub store: Store,
    /// `supervisor`.
    pub supervisor: Supervisor,
    /// `security`.
    pub security: Security,
}

/// The effective configuration and where each key's value came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The typed configuration.
    pub config: Config,
    /// Dotted key → (value, source), for `config show`.
    pub keys: BTreeMap<String, (serde_json::Value, Source)>,
}

impl Config {
    /// Loads defaults, then `file` (when given, or `config.yaml` when it exists), then the
    /// `PLUGSCONC_*` variables in `env`, then `sets` (`section.key=value`).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the key, its source and what was expected.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        sets: &[String],
    ) -> Result<Loaded, ConfigError> {
        let defaults =
            serde_json::to_value(Config::default()).map_err(|err| ConfigError::Invalid {
                key: String::new(),
                origin: Source::Default,
                problem: err.to_string(),
            })?;
        let mut tree = layers::Tree::new(defaults);
        let default_file = Path::new("config.yaml");
        let file = file.or_else(|| default_file.is_file().then_some(default_file));
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            if !text.trim().is_empty() {
                let value: serde_json::Value =
                    serde_saphyr::from_str(&text).map_err(|err| ConfigError::Syntax {
                        path: path.to_owned(),
                        reason: err.to_string(),
                    })?;
                tree.merge_file(&value, path)?;
            }
        }
        tree.merge_env(env)?;
        for set in sets {
            let (key, value) = set
                .split_once('=')
                .ok_or_else(|| ConfigError::SetSyntax(set.clone()))?;
            tree.set_text(key.trim(), value, Source::Flag)?;
        }
        tree.check_choices()?;
        let config: Config = serde_json::from_value(tree.value().clone()).map_err(|err| {
            // The layers checked each value's type; what is left is a range (a number too large
            // for its key): find the key by trying each value set, alone, over the defaults.
            let key = tree
                .keys()
                .into_iter()
                .filter(|(_, (_, source))| !matches!(source, Source::Default))
                .find(|(key, (value, _))| !fits_alone(key, value))
                .map(|(key, _)| key)
                .unwrap_or_default();
            ConfigError::Invalid {
                origin: tree.source(&key),
                key,
                problem: err.to_string(),
            }
        })?;
        config.validate(&tree)?;
        Ok(Loaded {
            config,
            keys: tree.keys(),
        })
    }

    fn validate(&self, tree: &layers::Tree) -> Result<(), ConfigError> {
        self.check_builtins(tree)?;
        if self.logging.log_enable_persistent_queue && self.logging.log_queue_max == 0 {
            return Err(ConfigError::Invalid {
                key: "logging.log_queue_max".into(),
                origin: tree.source("logging.log_queue_max"),
                problem: "must be at least 1 record".into(),
            });
        }
        if self.api.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::Invalid {
                key: "api.listen".into(),
                origin: tree.source("api.listen"),
                problem: format!(
                    "{:?} is not an address such as 127.0.0.1:7400",
                    self.api.listen
                ),
            });
        }
        let schema = &self.store.schema;
        let mut chars = schema.chars();
        if !(chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && schema.len() <= 48)
        {
            return Err(ConfigError::Invalid {
                key: "store.schema".into(),
                origin: tree.source("store.schema"),
                problem: format!(
                    "{schema:?} is not a plain identifier (lower-case letters, digits, _; at most 48)"
                ),
            });
        }
        let at_least = |key: &str, value: u64, min: u64, unit: &str| {
            if value >= min {
                Ok(())
            } else {
                Err(ConfigError::Invalid {
                    key: key.to_owned(),
                    origin: tree.source(key),
                    problem: format!("must be at least {min} {unit}"),
                })
            }
        };
        at_least("logging.log_max_size", self.logging.log_max_size, 1, "(MB)")?;
        let pool = &self.worker_pool;
        at_least("worker_pool.wp_queue_max", pool.wp_queue_max, 1, "job")?;
        // A lease is renewed every third of it: shorter would make renewals the main load.
        at_least(
            "worker_pool.wp_job_lease_ms",
            pool.wp_job_lease_ms,
            300,
            "ms",
        )?;
        at_least("worker_pool.wp_poll_ms", pool.wp_poll_ms, 10, "ms")?;
        at_least(
            "api.header_read_timeout_secs",
            self.api.header_read_timeout_secs,
            1,
            "second",
        )?;
        at_least(
            "api.body_idle_timeout_secs",
            self.api.body_idle_timeout_secs,
            1,
            "second",
        )?;
        at_least(
            "api.idle_timeout_secs",
            self.api.idle_timeout_secs,
            1,
            "second",
        )?;
        at_least(
            "api.max_connections",
            self.api.max_connections,
            1,
            "connection",
        )?;
        at_least(
            "security.scan_timeout_secs",
            self.security.scan_timeout_secs,
            1,
            "second",
        )?;
        if let Err(err) = self.security.scanners(Path::new("")) {
            return Err(ConfigError::Invalid {
                key: "security.scan_commands".into(),
                origin: tree.source("security.scan_commands"),
                problem: err.to_string(),
            });
        }
        let install = &self.install;
        at_least("install.max_upload_mib", install.max_upload_mib, 1, "MiB")?;
        at_least(
            "install.max_unpacked_mib",
            install.max_unpacked_mib,
            1,
            "MiB",
        )?;
        at_least("install.max_files", install.max_files, 1, "file")?;
        at_least(
            "install.max_ratio",
            install.max_ratio,
            1,
            "(unpacked bytes per compressed byte)",
        )?;
        at_least(
            "install.max_concurrent",
            install.max_concurrent,
            1,
            "install",
        )?;
        // A zero delay would let a plugin that dies at once spin the host.
        at_least(
            "supervisor.restart_initial_ms",
            self.supervisor.restart_initial_ms,
            1,
            "ms",
        )?;
        at_least(
            "supervisor.restart_wait_secs",
            self.supervisor.restart_wait_secs,
            1,
            "second",
        )?;
        let supervisor = &self.supervisor;
        if supervisor.restart_max_ms < supervisor.restart_initial_ms {
            // Named after the key the operator set (the ceiling when both are set), so the error
            // points at the value to change.
            let (initial, max) = ("supervisor.restart_initial_ms", "supervisor.restart_max_ms");
            let (key, problem) = if matches!(tree.source(max), Source::Default) {
                let problem = format!(
                    "must be at most {max} ({} ms), or raise that",
                    supervisor.restart_max_ms
                );
                (initial, problem)
            } else {
                let problem = format!(
                    "must be at least {initial} ({} ms)",
                    supervisor.restart_initial_ms
                );
                (max, problem)
            };
            return Err(ConfigError::Invalid {
                key: key.into(),
                origin: tree.source(key),
                problem,
            });
        }
        Ok(())
    }

    /// Whether unsigned plugins may run: `security.signatures`, else the application mode.
    pub fn allow_unsigned(&self) -> bool {
        match self.security.signatures {
            Signatures::Require => false,
            Signatures::AllowUnsigned => true,
            Signatures::ByMode => match self.application.app_mode {
                AppMode::Dev => true,
                AppMode::Prod => false,
            },
        }
    }

    /// `application.builtins` names only built-in plugins linked into this binary.
    fn check_builtins(&self, tree: &layers::Tree) -> Result<(), ConfigError> {
        let linked: Vec<&str> = plugsconc_host::builtins().map(|b| b.name).collect();
        let Some(unknown) = self
            .application
            .builtins
            .iter()
            .find(|name| !linked.contains(&name.as_str()))
        else {
            return Ok(());
        };
        let key = "application.builtins";
        let have = if linked.is_empty() {
            "this binary links no built-in plugins".to_owned()
        } else {
            let mut linked = linked;
            linked.sort_unstable();
            format!(
                "the built-in plugins linked into this binary are {}",
                linked.join(", ")
            )
        };
        Err(ConfigError::Invalid {
            key: key.to_owned(),
            origin: tree.source(key),
            problem: format!("{unknown:?} is not a linked built-in plugin; {have}"),
        })
    }
}

#[cfg(test)]
mod tests;
