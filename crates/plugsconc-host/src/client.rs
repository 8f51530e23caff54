//! [`PluginClient`]: a started plugin — its channel for typed clients, its broker, its health,
//! reattaching to one another host started, and how it is stopped. Starting one from a
//! [`crate::ClientBuilder`] is the `launch` module's job.

use std::process::ExitStatus;
use std::sync::Mutex;
use std::time::Duration;

use plugsconc_protocol::proto::plugin::Empty;
use plugsconc_protocol::proto::plugin::grpc_controller_client::GrpcControllerClient;
use plugsconc_protocol::{HEALTH_SERVICE, HandshakeLine};
use plugsconc_transport::{Broker, ChannelOptions, ExpectedPeer, SocketDir, connect};
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::HostError;
use crate::process::Process;
use crate::reattach::{self, ReattachConfig};
use crate::sandbox::Protections;
use crate::stderr::Tail;

/// Bound on waiting for a SIGKILLed process to be reaped.
const REAP_LIMIT: Duration = Duration::from_secs(5);

/// A running plugin. Dropping it without [`PluginClient::kill`] SIGKILLs its process group.
#[derive(Debug)]
pub struct PluginClient {
    name: String,
    process: Process,
    channel: Channel,
    broker: Broker,
    handshake: HandshakeLine,
    kill_grace: Duration,
    tail: Tail,
    stderr_task: Mutex<Option<JoinHandle<()>>>,
    socket_dir: Mutex<Option<SocketDir>>,
    /// Stdout drain and stdio stream: they end with the process, and are aborted with the client.
    background: Vec<JoinHandle<()>>,
    protections: Option<Protections>,
    /// The connection for calls, bounded by the execution limit (when one is set).
    call_channel: Option<Channel>,
    /// The launch's entry in the host's record of launched plugins.
    _record: Option<crate::ledger::Entry>,
}

pub(crate) struct Parts {
    pub(crate) name: String,
    pub(crate) process: Process,
    pub(crate) channel: Channel,
    pub(crate) broker: Broker,
    pub(crate) handshake: HandshakeLine,
    pub(crate) kill_grace: Duration,
    pub(crate) tail: Tail,
    pub(crate) stderr_task: Option<JoinHandle<()>>,
    pub(crate) socket_dir: Option<SocketDir>,
    pub(crate) background: Vec<JoinHandle<()>>,
    pub(crate) protections: Option<Protections>,
    pub(crate) call_channel: Option<Channel>,
    pub(crate) record: Option<crate::ledger::Entry>,
}

impl PluginClient {
    pub(crate) fn new(parts: Parts) -> Self {
        Self {
            name: parts.name,
            process: parts.process,
            channel: parts.channel,
            broker: parts.broker,
            handshake: parts.handshake,
            kill_grace: parts.kill_grace,
            tail: parts.tail,
            stderr_task: Mutex::new(parts.stderr_task),
            socket_dir: Mutex::new(parts.socket_dir),
            background: parts.background,
            protections: parts.protections,
            call_channel: parts.call_channel,
            _record: parts.record,
        }
    }

    /// The connection for application calls: bounded by the execution limit given to the
    /// builder (`call_timeout`), else the same as [`PluginClient::channel`].
    pub fn call_channel(&self) -> Channel {
        self.call_channel
            .clone()
            .unwrap_or_else(|| self.channel.clone())
    }

    /// What the OS sandbox enforces on this plugin (`None`: not sandboxed).
    pub fn protections(&self) -> Option<&Protections> {
        self.protections.as_ref()
    }

    /// Connects to a plugin another host process started, after checking that `config.pid`
    /// really owns the plugin's listening socket (a recycled pid is refused).
    ///
    /// # Errors
    ///
    /// [`HostError::Reattach`] when the pid is not that plugin, or connection errors.
    pub async fn reattach(config: ReattachConfig) -> Result<Self, HostError> {
        reattach::verify_owner(config.pid, config.network, &config.address).map_err(|reason| {
            HostError::Reattach {
                plugin: config.name.clone(),
                reason,
            }
        })?;
        let options = ChannelOptions {
            peer: Some(ExpectedPeer::process_group(config.pid)),
            ..ChannelOptions::default()
        };
        let channel = connect(config.network, &config.address, &options)
            .await
            .map_err(|source| {
                HostError::connect(&config.name, source, crate::error::StderrTail::default())
            })?;
        check_health(channel.clone())
            .await
            .map_err(|reason| HostError::Unhealthy {
                plugin: config.name.clone(),
                reason,
            })?;
        let broker = Broker::expecting(
            plugsconc_transport::ListenOptions::default(),
            None,
            Some(ExpectedPeer::process_group(config.pid)),
        );
        broker.run_client(channel.clone());
        let mut handshake = HandshakeLine::grpc(
            config.protocol_version,
            config.network,
            config.address.clone(),
        );
        handshake.server_cert = None;
        Ok(Self::new(Parts {
            name: config.name,
            process: Process::foreign(config.pid),
            channel,
            broker,
            handshake,
            kill_grace: Duration::from_secs(2),
            tail: Tail::default(),
            stderr_task: None,
            socket_dir: None,
            background: Vec::new(),
            protections: None,
            call_channel: None,
            record: None,
        }))
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The negotiated application protocol version.
    pub fn protocol_version(&self) -> u32 {
        self.handshake.app_version
    }

    /// The handshake line the plugin printed.
    pub fn handshake_line(&self) -> &HandshakeLine {
        &self.handshake
    }

    /// What another host needs to reattach to this plugin (no AutoMTLS: certificates are per
    /// process and not persisted, as in go-plugin).
    pub fn reattach_config(&self) -> ReattachConfig {
        ReattachConfig {
            name: self.name.clone(),
            network: self.handshake.network,
            address: self.handshake.address.clone(),
            pid: self.pid(),
            protocol_version: self.handshake.app_version,
        }
    }

    /// The connection to the plugin, for typed clients: `KvClient::new(client.channel())`.
    /// Cloning is cheap; all clones share one HTTP/2 connection.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Sugar for `make(self.channel())`.
    pub fn dispense<C>(&self, make: impl FnOnce(Channel) -> C) -> C {
        make(self.channel())
    }

    /// The host side of the broker: expose servers the plugin can dial back.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// The exit status once the plugin has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.process.exit_status()
    }

    /// Waits until the plugin exits.
    pub async fn exited(&self) -> Option<ExitStatus> {
        self.process.exited().await
    }

    /// `grpc.health.v1.Health/Check` for service `plugin`.
    ///
    /// # Errors
    ///
    /// [`HostError::Unhealthy`] when it is not SERVING or does not answer.
    pub async fn health(&self) -> Result<(), HostError> {
        check_health(self.channel())
            .await
            .map_err(|reason| HostError::Unhealthy {
                plugin: self.name.clone(),
                reason,
            })
    }

    /// Stops the plugin: `Controller.Shutdown`, up to the grace period for it to exit, then
    /// SIGKILL of its process group. Always reaped; idempotent.
    ///
    /// # Errors
    ///
    /// [`HostError::Unkillable`] if it survives SIGKILL (a process stuck in the kernel).
    pub async fn kill(&self) -> Result<KillOutcome, HostError> {
        self.broker.close();
        let mut graceful = true;
        if self.process.exit_status().is_none() {
            // The answer does not matter: a Go plugin stops its server hard inside Shutdown, so
            // the reply may never arrive. What counts is whether it exits within the grace.
            let mut controller = GrpcControllerClient::new(self.channel());
            let _ = tokio::time::timeout(self.kill_grace, controller.shutdown(Empty {})).await;
            if self.process.wait_for(self.kill_grace).await.is_none() {
                tracing::warn!(plugin = %self.name, "plugin failed to exit gracefully; killing it");
                graceful = false;
                self.process.kill_now();
            }
        }
        let status = self.process.wait_for(REAP_LIMIT).await;
        if status.is_none() {
            return Err(HostError::Unkillable {
                plugin: self.name.clone(),
                pid: self.pid(),
            });
        }
        // Let the last stderr lines reach the log before reporting the plugin stopped.
        let stderr_task = self.stderr_task.lock().map(|mut t| t.take()).ok().flatten();
        if let Some(task) = stderr_task {
            let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
        }
        if let Ok(mut dir) = self.socket_dir.lock() {
            dir.take();
        }
        Ok(KillOutcome { status, graceful })
    }

    /// The last lines the plugin wrote on stderr.
    pub fn stderr_tail(&self) -> Vec<String> {
        self.tail.snapshot().0
    }
}

impl Drop for PluginClient {
    fn drop(&mut self) {
        // The process itself is killed by `Process`'s own drop; stop what reads from it.
        self.broker.close();
        for task in &self.background {
            task.abort();
        }
    }
}

/// How a plugin stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KillOutcome {
    /// Its exit status (a reattached process reports a clean exit: its real status is unknown).
    pub status: Option<ExitStatus>,
    /// It exited by itself (after `Shutdown`, or before), without SIGKILL.
    pub graceful: bool,
}

impl KillOutcome {
    /// Exited with status 0 after a graceful shutdown.
    pub fn success(&self) -> bool {
        self.graceful && self.status.is_some_and(|s| s.success())
    }
}

/// Health check of service `plugin`, as go-plugin's `Ping`.
pub(crate) async fn check_health(channel: Channel) -> Result<(), String> {
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: HEALTH_SERVICE.to_owned(),
        })
        .await
        .map_err(|status| {
            // The message is the plugin's: quoted, and cut when long.
            format!(
                "health check failed: {:?}: {}",
                status.code(),
                plugsconc_protocol::Quoted::new(status.message())
            )
        })?;
    let status = response.into_inner().status();
    if status == ServingStatus::Serving {
        Ok(())
    } else {
        Err(format!("health status of service \"plugin\" is {status:?}"))
    }
}
