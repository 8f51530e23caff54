//! [`ClientBuilder`]: how to launch a plugin, and the start sequence — checksum, spawn, handshake,
//! connect, health, broker and stdio.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use plugsconc_protocol::env::{self, HandshakeConfig, HostEnv, Transport};
use plugsconc_protocol::mtls::{self, CertificateDer, CertifiedKey, Curve};
use plugsconc_protocol::{HandshakeLine, Protocol, Quoted, handshake};
use plugsconc_transport::{
    Broker, BrokerTls, ChannelOptions, ExpectedPeer, ListenOptions, SocketDir, connect,
};
use tokio::io::BufReader;
use tokio::process::{ChildStdout, Command};
use tokio::sync::OnceCell;

use crate::HostError;
use crate::checksum::{self, Sha256};
use crate::client::{self, PluginClient};
use crate::error::{describe_status, describe_stop};
use crate::ledger::{self, Identity, Launch, Ledger};
use crate::process::Process;
use crate::sandbox::{Plan, Protections, SandboxSpec};
use crate::stderr::{self, Tail};

/// How to launch one plugin. Defaults follow go-plugin: 60 s start timeout, 2 s kill grace,
/// unix socket, no AutoMTLS, host environment passed through.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    name: String,
    path: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    handshake: HandshakeConfig,
    versions: Vec<u32>,
    auto_mtls: bool,
    curve: Curve,
    sha256: Option<String>,
    start_timeout: Duration,
    kill_grace: Duration,
    transport: Transport,
    skip_host_env: bool,
    sandbox: Option<SandboxSpec>,
    call_timeout: Option<Duration>,
    ledger: Option<Ledger>,
}

impl ClientBuilder {
    pub(crate) fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            path: path.into(),
            args: Vec::new(),
            env: Vec::new(),
            handshake: HandshakeConfig::new(1, "", ""),
            versions: Vec::new(),
            auto_mtls: false,
            curve: Curve::P256,
            sha256: None,
            start_timeout: Duration::from_secs(60),
            kill_grace: Duration::from_secs(2),
            transport: Transport::Unix,
            skip_host_env: false,
            sandbox: None,
            call_timeout: None,
            ledger: None,
        }
    }

    /// Arguments passed to the plugin.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// An environment variable for the plugin (the go-plugin variables always win).
    #[must_use]
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Cookie and protocol version (required: go-plugin plugins refuse to start without them).
    #[must_use]
    pub fn handshake(mut self, handshake: HandshakeConfig) -> Self {
        self.handshake = handshake;
        self
    }

    /// Every application protocol version the host accepts (default: the handshake's).
    #[must_use]
    pub fn versions(mut self, versions: impl IntoIterator<Item = u32>) -> Self {
        self.versions = versions.into_iter().collect();
        self
    }

    /// Mutual TLS with per-process certificates, as go-plugin's AutoMTLS.
    #[must_use]
    pub fn auto_mtls(mut self, on: bool) -> Self {
        self.auto_mtls = on;
        self
    }

    /// Curve of the host's AutoMTLS certificate (made once per process); P-256 by default, which
    /// Go plugins accept and which is far cheaper to generate than go-plugin's P-521.
    #[must_use]
    pub fn curve(mut self, curve: Curve) -> Self {
        self.curve = curve;
        self
    }

    /// The binary's required SHA-256 (hex); checked before every exec, and a mismatch is never
    /// executed.
    #[must_use]
    pub fn sha256(mut self, hex: impl Into<String>) -> Self {
        self.sha256 = Some(hex.into());
        self
    }

    /// Bound on spawn + handshake + connect + health check.
    #[must_use]
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// How long a plugin may take to exit after `Shutdown` before it is killed.
    #[must_use]
    pub fn kill_grace(mut self, grace: Duration) -> Self {
        self.kill_grace = grace;
        self
    }

    /// Ask a plugsconc plugin for TCP instead of a unix socket (Go plugins ignore it).
    #[must_use]
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Do not pass the host's own environment to the plugin.
    #[must_use]
    pub fn skip_host_env(mut self, skip: bool) -> Self {
        self.skip_host_env = skip;
        self
    }

    /// Confines the plugin in an OS sandbox derived from `spec` (Linux: Landlock, seccomp,
    /// rlimits, `no_new_privs`), applied between fork and exec. [`PluginClient::protections`]
    /// then says what is in force.
    #[must_use]
    pub fn sandbox(mut self, spec: SandboxSpec) -> Self {
        self.sandbox = Some(spec);
        self
    }

    /// Bound on each call made through [`PluginClient::call_channel`]: a call still running
    /// after `limit` is cancelled (the plugin sees its request cancelled).
    #[must_use]
    pub fn call_timeout(mut self, limit: Option<Duration>) -> Self {
        self.call_timeout = limit;
        self
    }

    /// Records the launch (process, socket folder, cgroup) in `ledger` while it runs.
    pub(crate) fn ledger(mut self, ledger: Ledger) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// Launches the plugin and connects to it.
    ///
    /// # Errors
    ///
    /// [`HostError`] saying what went wrong, with what the plugin printed and its last stderr
    /// lines. The process is always killed and reaped before an error is returned.
    pub async fn start(self) -> Result<PluginClient, HostError> {
        let started = Instant::now();
        let versions = if self.versions.is_empty() {
            vec![self.handshake.protocol_version]
        } else {
            self.versions.clone()
        };
        if let Some(hex) = &self.sha256 {
            let expected = Sha256::from_hex(hex).ok_or_else(|| HostError::ChecksumSyntax {
                plugin: self.name.clone(),
                value: hex.clone(),
            })?;
            checksum::verify(&self.name, &self.path, expected).await?;
        }
        let host_cert = if self.auto_mtls {
            Some(
                host_cert(self.curve)
                    .await
                    .map_err(|source| HostError::Protocol {
                        plugin: self.name.clone(),
                        source,
                    })?,
            )
        } else {
            None
        };
        let socket_dir = SocketDir::create().map_err(|source| self.spawn_error(source))?;
        let host_env = HostEnv {
            handshake: self.handshake.clone(),
            versions: versions.clone(),
            port_range: env::DEFAULT_PORT_RANGE,
            client_cert_pem: host_cert.map(|c| c.cert_pem().to_owned()),
            unix_socket_dir: Some(socket_dir.path().to_string_lossy().into_owned()),
            unix_socket_group: None,
            transport: self.transport,
        };
        let mut command = Command::new(&self.path);
        command
            .args(&self.args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if !self.skip_host_env {
            command.envs(std::env::vars_os());
        }
        command.envs(host_env.vars());
        if self.auto_mtls {
            let hint = match self.curve {
                Curve::P256 => "p256",
                Curve::P521 => "p521",
            };
            command.env(env::AUTOMTLS_CURVE, hint);
        }
        let mut cgroup = None;
        let protections = match &self.sandbox {
            None => None,
            Some(spec) => {
                let plan = {
                    let (spec, name, path) = (spec.clone(), self.name.clone(), self.path.clone());
                    let socket = socket_dir.path().to_owned();
                    tokio::task::spawn_blocking(move || {
                        Plan::prepare(&spec.for_launch(&name, &path, &socket))
                    })
                    .await
                    .map_err(|err| HostError::Sandbox {
                        plugin: self.name.clone(),
                        reason: err.to_string(),
                    })??
                };
                command.envs(plan.env.iter().map(|(k, v)| (k, v)));
                let protections = plan.protections.clone();
                cgroup.clone_from(&plan.cgroup);
                // SAFETY: the closure only makes raw syscalls on data prepared above (no
                // allocation, no locks), as required between fork and exec.
                unsafe {
                    command.pre_exec(move || plan.apply_in_child());
                }
                Some(protections)
            }
        };
        let record = self.ledger.as_ref().map(|ledger| {
            ledger.record(Launch {
                plugin: self.name.clone(),
                process: None,
                socket_dir: Some(socket_dir.path().to_owned()),
                cgroup: cgroup.as_ref().map(|tree| tree.path().to_owned()),
            })
        });
        let (process, stdout, stderr) = Process::spawn(command, cgroup)
            .await
            .map_err(|source| self.spawn_error(source))?;
        if let (Some(record), Some(identity)) = (&record, Identity::of(process.pid())) {
            record.set_process(identity);
        }
        let tail = Tail::default();
        let stderr_task = stderr::forward(self.name.clone(), stderr, tail.clone());
        let starting = Starting {
            builder: &self,
            process,
            tail,
            stderr_task: Some(stderr_task),
            socket_dir,
            protections,
            record,
        };
        starting.finish(stdout, started, &versions, host_cert).await
    }

    fn spawn_error(&self, source: std::io::Error) -> HostError {
        HostError::Spawn {
            plugin: self.name.clone(),
            path: self.path.clone(),
            source,
        }
    }
}

/// The host's AutoMTLS certificate, made once per process and curve (go-plugin makes one per
/// client, which costs ~10-25 ms of key generation each time).
async fn host_cert(
    curve: Curve,
) -> Result<&'static CertifiedKey, plugsconc_protocol::ProtocolError> {
    static P256: OnceCell<CertifiedKey> = OnceCell::const_new();
    static P521: OnceCell<CertifiedKey> = OnceCell::const_new();
    let cell = match curve {
        Curve::P256 => &P256,
        Curve::P521 => &P521,
    };
    cell.get_or_try_init(|| async move {
        tokio::task::spawn_blocking(move || CertifiedKey::generate(curve))
            .await
            .map_err(|err| plugsconc_protocol::ProtocolError::Tls(err.to_string()))?
    })
    .await
}

/// A spawned plugin that is not yet ready; every failure path kills and reaps it.
struct Starting<'a> {
    builder: &'a ClientBuilder,
    process: Process,
    tail: Tail,
    stderr_task: Option<tokio::task::JoinHandle<()>>,
    socket_dir: SocketDir,
    protections: Option<Protections>,
    /// The launch's entry in the host's record, dropped with the plugin.
    record: Option<ledger::Entry>,
}

impl Starting<'_> {
    async fn finish(
        mut self,
        stdout: ChildStdout,
        started: Instant,
        versions: &[u32],
        host_cert: Option<&'static CertifiedKey>,
    ) -> Result<PluginClient, HostError> {
        let name = self.builder.name.clone();
        let deadline = started + self.builder.start_timeout;
        let mut stdout = BufReader::new(stdout);
        let mut first = Vec::new();
        // Bounded: whatever a plugin prints before its newline is held in memory.
        let read = tokio::time::timeout_at(deadline.into(), async {
            tokio::select! {
                read = stderr::read_line(&mut stdout, &mut first, handshake::MAX_LINE) => {
                    read.ok().filter(|n| *n > 0)
                }
                _ = self.process.exited() => None,
            }
        })
        .await;
        let line = match read {
            Err(_) => {
                let tail = self.abort().await;
                return Err(HostError::HandshakeTimeout {
                    plugin: name,
                    seconds: self.builder.start_timeout.as_secs_f64(),
                    tail,
                });
            }
            Ok(None) => {
                // Stdout ended: the plugin exited, or closed it and runs on. A plugin about to
                // exit gets a moment, so its real status is reported.
                let status = self.process.wait_for(Duration::from_secs(5)).await;
                let tail = self.abort().await;
                return Err(match status {
                    Some(status) => HostError::ExitedBeforeHandshake {
                        plugin: name,
                        status: describe_status(status),
                        tail,
                    },
                    None => HostError::StdoutClosed { plugin: name, tail },
                });
            }
            Ok(Some(_)) if !first.ends_with(b"\n") && first.len() >= handshake::MAX_LINE => {
                let before = self.process.exit_status();
                let tail = self.abort().await;
                return Err(HostError::BadHandshake {
                    plugin: name,
                    line: Quoted::unterminated(&String::from_utf8_lossy(&first), first.len()),
                    reason: format!("no end of line within {} bytes", handshake::MAX_LINE),
                    status: describe_stop(before, self.process.exit_status()),
                    tail,
                });
            }
            Ok(Some(_)) => String::from_utf8_lossy(&first).trim().to_owned(),
        };
        let stdout_task = client::drain_stdout(name.clone(), stdout);

        let handshake = match HandshakeLine::parse(&line) {
            Ok(handshake) => handshake,
            Err(err) => {
                let before = self.process.exit_status();
                let tail = self.abort().await;
                return Err(HostError::BadHandshake {
                    plugin: name,
                    line: Quoted::new(&line),
                    reason: err.to_string(),
                    status: describe_stop(before, self.process.exit_status()),
                    tail,
                });
            }
        };
        if !versions.contains(&handshake.app_version) {
            self.abort().await;
            return Err(HostError::IncompatibleVersion {
                plugin: name,
                plugin_version: handshake.app_version,
                host_versions: versions.to_vec(),
            });
        }
        if handshake.protocol == Protocol::NetRpc {
            self.abort().await;
            return Err(HostError::NetRpc { plugin: name });
        }

        let tls = match host_cert {
            None => None,
            Some(own) => {
                let Some(der) = handshake.server_cert.clone() else {
                    self.abort().await;
                    return Err(HostError::MissingCertificate { plugin: name });
                };
                let peer: CertificateDer<'static> = der.into();
                let configs = mtls::client_config(own, peer.clone())
                    .and_then(|client| Ok((client, mtls::server_config(own, peer)?)));
                match configs {
                    Ok((client, server)) => Some(BrokerTls { server, client }),
                    Err(source) => {
                        self.abort().await;
                        return Err(HostError::Protocol {
                            plugin: name,
                            source,
                        });
                    }
                }
            }
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        // Only the process started here (or its group) may answer: a plugin that printed
        // another process's address is refused before anything is sent there.
        let peer = ExpectedPeer::process_group(self.process.pid());
        let mut options = ChannelOptions {
            tls: tls.as_ref().map(|t| t.client.clone()),
            connect_timeout: remaining.max(Duration::from_millis(1)),
            request_timeout: None,
            peer: Some(peer),
        };
        let channel = match connect(handshake.network, &handshake.address, &options).await {
            Ok(channel) => channel,
            Err(source) => {
                let tail = self.abort().await;
                return Err(HostError::connect(&name, source, tail));
            }
        };
        // Calls get their own connection with the execution limit; health checks, stdio and the
        // broker keep the unbounded one.
        let call_channel = match self.builder.call_timeout {
            None => None,
            Some(limit) => {
                options.request_timeout = Some(limit);
                match connect(handshake.network, &handshake.address, &options).await {
                    Ok(channel) => Some(channel),
                    Err(source) => {
                        let tail = self.abort().await;
                        return Err(HostError::connect(&name, source, tail));
                    }
                }
            }
        };
        let health =
            tokio::time::timeout_at(deadline.into(), client::check_health(channel.clone())).await;
        let health = health.unwrap_or_else(|_| {
            Err("no answer to the health check within the start timeout".into())
        });
        if let Err(reason) = health {
            self.abort().await;
            return Err(HostError::Unhealthy {
                plugin: name,
                reason,
            });
        }
        let broker = Broker::expecting(
            ListenOptions {
                socket_dir: Some(self.socket_dir.path().to_owned()),
                ..ListenOptions::default()
            },
            tls,
            Some(peer),
        );
        broker.run_client(channel.clone());
        let stdio_task = client::stream_stdio(name.clone(), channel.clone());
        Ok(PluginClient::new(client::Parts {
            name,
            process: self.process,
            channel,
            broker,
            handshake,
            kill_grace: self.builder.kill_grace,
            tail: self.tail,
            stderr_task: self.stderr_task,
            socket_dir: Some(self.socket_dir),
            background: vec![stdout_task, stdio_task],
            protections: self.protections,
            call_channel,
            record: self.record,
        }))
    }

    /// Kills the process group, reaps it, lets stderr drain, and returns the stderr tail.
    async fn abort(&mut self) -> crate::error::StderrTail {
        self.process.kill_now();
        self.process.wait_for(Duration::from_secs(5)).await;
        // The pipe closes once the group is gone; let the reader log the last lines.
        if let Some(task) = self.stderr_task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
        }
        self.tail.snapshot()
    }
}
