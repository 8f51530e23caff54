//! The launch sequence: from a [`ClientBuilder`] to a running [`PluginClient`] — checksum, OS
//! sandbox, spawn, handshake line, version and protocol checks, AutoMTLS, connect, health, then
//! the broker and the stdio streams. Every failure on the way kills and reaps the process.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use plugsconc_protocol::env::{self, HostEnv};
use plugsconc_protocol::mtls::{self, CertificateDer, CertifiedKey, Curve};
use plugsconc_protocol::proto::plugin::grpc_stdio_client::GrpcStdioClient;
use plugsconc_protocol::proto::plugin::stdio_data::Channel as StdioChannel;
use plugsconc_protocol::{HandshakeLine, Protocol, Quoted, handshake};
use plugsconc_transport::{
    Broker, BrokerTls, ChannelOptions, ExpectedPeer, ListenOptions, SocketDir, connect,
};
use tokio::io::BufReader;
use tokio::process::{ChildStdout, Command};
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::HostError;
use crate::builder::{Checked, ClientBuilder};
use crate::checksum;
use crate::client::{self, PluginClient};
use crate::error::{describe_status, describe_stop};
use crate::ledger::{self, Identity, Launch};
use crate::process::Process;
use crate::sandbox::{Plan, Protections};
use crate::stderr::{self, Tail};

impl PluginClient {
    /// How to launch the plugin `name` (used in logs and errors) from the binary at `path`.
    pub fn builder(name: impl Into<String>, path: impl Into<PathBuf>) -> ClientBuilder {
        ClientBuilder::new(name, path)
    }
}

impl ClientBuilder {
    /// Launches the plugin and connects to it.
    ///
    /// # Errors
    ///
    /// [`HostError`] saying what went wrong, with what the plugin printed and its last stderr
    /// lines. The process is always killed and reaped before an error is returned.
    pub async fn start(self) -> Result<PluginClient, HostError> {
        let started = Instant::now();
        let Checked { versions, sha256 } = self.validate()?;
        if let Some(expected) = sha256 {
            checksum::verify(&self.name, &self.path, expected).await?;
        }
        let host_cert = if self.auto_mtls {
            Some(
                host_cert(self.curve)
                    .await
                    .map_err(|source| HostError::Protocol {
                        plugin: self.name.clone(),
                        cause: source,
                    })?,
            )
        } else {
            None
        };
        let socket_dir = SocketDir::create().map_err(|source| spawn_error(&self, source))?;
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
            .map_err(|source| spawn_error(&self, source))?;
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
}

/// The process could not be spawned (or its socket folder made).
fn spawn_error(builder: &ClientBuilder, source: std::io::Error) -> HostError {
    HostError::Spawn {
        plugin: builder.name.clone(),
        path: builder.path.clone(),
        cause: source,
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
        let stdout_task = drain_stdout(name.clone(), stdout);

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
                            cause: source,
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
        let stdio_task = stream_stdio(name.clone(), channel.clone());
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

/// Discards stdout after the handshake, logging it at debug (go-plugin discards it silently);
/// lines are read in bounded pieces, so a plugin printing no newline costs no memory.
fn drain_stdout(plugin: String, mut stdout: BufReader<ChildStdout>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut line = Vec::new();
        loop {
            line.clear();
            match stderr::read_line(&mut stdout, &mut line, stderr::MAX_LINE).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    tracing::debug!(target: "plugsconc::plugin", plugin, stream = "stdout", "{}", text.trim_end());
                }
            }
        }
    })
}

/// Follows `plugin.GRPCStdio` in the background; plugins without it (go-plugin < 1.1, Python
/// examples that only keep it open) are fine.
fn stream_stdio(plugin: String, channel: Channel) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut client = GrpcStdioClient::new(channel);
        let mut stream = match client.stream_stdio(()).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                tracing::debug!(plugin, code = ?status.code(), "plugin does not stream stdio");
                return;
            }
        };
        while let Ok(Some(data)) = stream.message().await {
            let stream_name = match data.channel() {
                StdioChannel::Stdout => "stdout",
                StdioChannel::Stderr => "stderr",
                StdioChannel::Invalid => continue,
            };
            let text = String::from_utf8_lossy(&data.data);
            for line in text.lines().filter(|l| !l.is_empty()) {
                tracing::info!(target: "plugsconc::plugin", plugin, stream = stream_name, "{line}");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configuration and the running plugin stay separate layers: only this module joins
    /// them, so neither imports the other (nor this module).
    #[test]
    fn builder_and_client_do_not_import_each_other() {
        let uses = |text: &str| -> Vec<String> {
            text.lines()
                .map(str::trim_start)
                .filter(|line| line.starts_with("use ") || line.starts_with("pub use "))
                .map(str::to_owned)
                .collect()
        };
        for line in uses(include_str!("builder.rs")) {
            assert!(
                !line.contains("crate::client") && !line.contains("crate::launch"),
                "builder imports {line}"
            );
        }
        for line in uses(include_str!("client.rs")) {
            assert!(
                !line.contains("crate::builder") && !line.contains("crate::launch"),
                "client imports {line}"
            );
        }
    }

    #[test]
    fn validation_defaults_the_versions_and_parses_the_checksum() {
        let builder = PluginClient::builder("kv", "/nonexistent/kv")
            .handshake(env::HandshakeConfig::new(3, "COOKIE", "value"));
        let checked = builder.validate().expect("valid");
        assert_eq!(checked.versions, vec![3]);
        assert!(checked.sha256.is_none());

        let checked = builder
            .clone()
            .versions([2, 4])
            .sha256("ab".repeat(32))
            .validate()
            .expect("valid");
        assert_eq!(checked.versions, vec![2, 4]);
        assert_eq!(checked.sha256, Some(checksum::Sha256([0xab; 32])));

        let err = builder
            .sha256("not hex")
            .validate()
            .expect_err("bad checksum");
        assert!(
            matches!(err, HostError::ChecksumSyntax { ref plugin, .. } if plugin == "kv"),
            "{err}"
        );
    }

    /// A bad checksum is refused before anything is spawned: the binary does not even exist.
    #[tokio::test]
    async fn start_refuses_a_malformed_checksum_before_spawning() {
        let err = PluginClient::builder("kv", "/nonexistent/kv")
            .sha256("xyz")
            .start()
            .await
            .expect_err("refused");
        assert!(matches!(err, HostError::ChecksumSyntax { .. }), "{err}");
    }
}
