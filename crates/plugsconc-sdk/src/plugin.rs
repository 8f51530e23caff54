//! [`Plugin`]: the builder a plugin author fills with services, and the serve loop.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use plugsconc_protocol::env::{self, HandshakeConfig, PluginEnv, negotiate};
use plugsconc_protocol::mtls::{self, CertifiedKey, Curve};
use plugsconc_protocol::proto::plugin::grpc_controller_server::GrpcControllerServer;
use plugsconc_protocol::proto::plugin::grpc_stdio_server::GrpcStdioServer;
use plugsconc_protocol::{HEALTH_SERVICE, HandshakeLine, ProtocolError};
use plugsconc_transport::{
    BoundListener, Broker, BrokerTls, GrpcService, ListenOptions, Services, SocketDir,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;

use crate::controller::Controller;
use crate::stdio::Stdio;
use crate::{SdkError, logging, parent};

/// Overrides [`Plugin::worker_threads`] at run time.
const WORKER_THREADS_ENV: &str = "PLUGSCONC_WORKER_THREADS";

/// How long in-flight calls may run after a shutdown request before the plugin exits anyway.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

type Registration = Box<dyn FnOnce(&Broker, Services) -> Services + Send>;

/// A plugin: its handshake, its services per protocol version, and how to serve them.
pub struct Plugin {
    name: String,
    handshake: HandshakeConfig,
    versions: BTreeMap<u32, Vec<Registration>>,
    logging: bool,
    worker_threads: usize,
    reflection: Vec<&'static [u8]>,
    /// Names of the services registered per version, which reflection advertises.
    named: BTreeMap<u32, Vec<&'static str>>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("handshake", &self.handshake)
            .field("versions", &self.versions.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// A plugin named `name` (used as the `@module` of its log lines) with its handshake.
    pub fn new(name: impl Into<String>, handshake: HandshakeConfig) -> Self {
        Self {
            name: name.into(),
            handshake,
            versions: BTreeMap::new(),
            logging: true,
            worker_threads: 1,
            reflection: Vec::new(),
            named: BTreeMap::new(),
        }
    }

    /// Serves `svc` (a tonic-generated server) under the handshake's protocol version.
    pub fn service<S: GrpcService>(mut self, svc: S) -> Self {
        let version = self.handshake.protocol_version;
        self.named.entry(version).or_default().push(S::NAME);
        self.version(version, move |_, services| services.add_service(svc))
    }

    /// Serves the service `make` builds from the plugin's [`Broker`], through which handlers
    /// dial servers the host exposes (`broker.dial(id)`), or expose their own.
    pub fn service_with_broker<S, F>(mut self, make: F) -> Self
    where
        F: FnOnce(Broker) -> S + Send + 'static,
        S: GrpcService,
    {
        let version = self.handshake.protocol_version;
        self.named.entry(version).or_default().push(S::NAME);
        self.version(version, move |broker, services| {
            services.add_service(make(broker.clone()))
        })
    }

    /// Registers services for another protocol version; the host's highest accepted version
    /// that the plugin has wins (go-plugin's `VersionedPlugins`).
    pub fn version<F>(mut self, version: u32, register: F) -> Self
    where
        F: FnOnce(&Broker, Services) -> Services + Send + 'static,
    {
        self.versions
            .entry(version)
            .or_default()
            .push(Box::new(register));
        self
    }

    /// Threads serving calls (default 1: one thread answers small calls fastest, see the book's
    /// benchmarks; give CPU-heavy plugins more). `PLUGSCONC_WORKER_THREADS` overrides it.
    pub fn worker_threads(mut self, threads: usize) -> Self {
        self.worker_threads = threads;
        self
    }

    /// Serves gRPC reflection (`grpc.reflection.v1` and `v1alpha`, as grpc-go's
    /// `reflection.Register`) for the services in `file_descriptor_set`, an encoded
    /// `FileDescriptorSet` (e.g. written by the build script). Hosts and tools then call the
    /// plugin by method name without its `.proto` files. Repeatable. The services registered
    /// with [`Plugin::service`] are advertised (all those in the set if there are none).
    pub fn reflection(mut self, file_descriptor_set: &'static [u8]) -> Self {
        self.reflection.push(file_descriptor_set);
        self
    }

    /// Leaves logging to the plugin: no hclog subscriber is installed.
    pub fn without_logging(mut self) -> Self {
        self.logging = false;
        self
    }

    /// Runs the plugin on a new tokio runtime and exits the process: 0 after a graceful stop,
    /// 1 when not started by a host or on error.
    pub fn serve(self) -> ! {
        let threads = std::env::var(WORKER_THREADS_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(self.worker_threads);
        let mut builder = if threads <= 1 {
            tokio::runtime::Builder::new_current_thread()
        } else {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(threads);
            builder
        };
        let runtime = match builder.enable_all().build() {
            Ok(runtime) => runtime,
            Err(err) => {
                eprintln!("cannot start the tokio runtime: {err}");
                std::process::exit(1);
            }
        };
        let result = runtime.block_on(self.run());
        runtime.shutdown_timeout(Duration::from_secs(1));
        match result {
            Ok(()) => std::process::exit(0),
            Err(SdkError::NotLaunchedByHost { .. }) => std::process::exit(1),
            Err(err) => {
                tracing::error!(error = %err, "plugin failed");
                eprintln!("plugin failed: {err}");
                std::process::exit(1);
            }
        }
    }

    /// Serves until the host asks to stop, SIGTERM arrives, or the host dies.
    ///
    /// # Errors
    ///
    /// [`SdkError::NotLaunchedByHost`] without the magic cookie (the explanation has already
    /// been written to stderr), or why the plugin could not listen or serve.
    pub async fn run(mut self) -> Result<(), SdkError> {
        let host_pid = parent::current();
        let env = match PluginEnv::from_vars(std::env::vars(), &self.handshake) {
            Ok(env) => env,
            Err(ProtocolError::CookieMismatch { key, .. }) => {
                eprint!("{}", env::NOT_A_PLUGIN_MESSAGE);
                return Err(SdkError::NotLaunchedByHost { key });
            }
            Err(err) => return Err(err.into()),
        };
        if self.logging {
            logging::init(&self.name);
        }
        if !env.invalid_versions.is_empty() {
            tracing::warn!(invalid = ?env.invalid_versions, "ignoring malformed PLUGIN_PROTOCOL_VERSIONS items");
        }
        let ours: Vec<u32> = self.versions.keys().copied().collect();
        let negotiated = negotiate(&env.host_versions, &ours).ok_or(SdkError::NoServices {
            plugin: self.name.clone(),
        })?;
        let version = negotiated.version();

        let own_cert = match &env.client_cert_pem {
            None => None,
            Some(pem) => {
                let host_cert = mtls::parse_cert_pem(pem)?;
                let curve = match std::env::var(env::AUTOMTLS_CURVE).as_deref() {
                    Ok("p256") => Curve::P256,
                    _ => Curve::P521,
                };
                let own = tokio::task::spawn_blocking(move || CertifiedKey::generate(curve))
                    .await
                    .map_err(|err| ProtocolError::Tls(err.to_string()))??;
                Some((own, host_cert))
            }
        };
        let tls = match &own_cert {
            None => None,
            Some((own, host)) => Some(BrokerTls {
                server: mtls::server_config(own, host.clone())?,
                client: mtls::client_config(own, host.clone())?,
            }),
        };

        let listen = ListenOptions {
            transport: env.transport,
            socket_dir: env.unix_socket_dir.as_ref().map(PathBuf::from),
            socket_group: env.unix_socket_group.clone(),
            port_range: env.port_range,
        };
        let listener = BoundListener::bind(&listen)?;
        let broker = Broker::new(listen, tls.clone());
        let shutdown = CancellationToken::new();
        // Long-lived streams (broker, stdio) must end for the graceful drain to complete.
        tokio::spawn({
            let (broker, shutdown) = (broker.clone(), shutdown.clone());
            async move {
                shutdown.cancelled().await;
                broker.close();
            }
        });

        let services = self.services(version, &broker, &shutdown).await?;
        let mut line = HandshakeLine::grpc(version, listener.network(), listener.address());
        line.server_cert = own_cert.as_ref().map(|(own, _)| own.cert_der().to_vec());
        // go-plugin prints field 7 whenever the host asked; plugsconc does not multiplex.
        line.mux = env.multiplex_field.then_some(false);
        let incoming = listener.incoming(tls.map(|t| t.server), shutdown.clone());
        print_handshake(&line)?;

        let stdio = Stdio::redirect_stdout(shutdown.clone())?;
        let services = services.add_service(GrpcStdioServer::new(stdio));
        parent::watch(host_pid, shutdown.clone());
        watch_signals(shutdown.clone())?;
        tracing::debug!(version, address = line.address, "plugin serving");

        let drained = shutdown.clone();
        let serve = Server::builder()
            .tcp_nodelay(true)
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(2 << 20)
            .serve_with_incoming_shutdown(services, incoming, shutdown.clone().cancelled_owned());
        tokio::pin!(serve);
        tokio::select! {
            result = &mut serve => result?,
            () = async {
                drained.cancelled().await;
                tokio::time::sleep(DRAIN_LIMIT).await;
            } => tracing::warn!("in-flight calls still running after the drain limit; exiting"),
        }
        broker.close();
        tracing::debug!("plugin stopped");
        Ok(())
    }

    /// The internal services a host expects, then the plugin's own for `version`.
    async fn services(
        &mut self,
        version: u32,
        broker: &Broker,
        shutdown: &CancellationToken,
    ) -> Result<Services, SdkError> {
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status(HEALTH_SERVICE, tonic_health::ServingStatus::Serving)
            .await;
        health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let mut services = Services::new()
            .add_service(health_service)
            .add_service(GrpcControllerServer::new(Controller {
                shutdown: shutdown.clone(),
            }))
            .add_service(broker.service());
        if !self.reflection.is_empty() {
            let named = self.named.remove(&version).unwrap_or_default();
            let builder = || {
                let builder = self.reflection.iter().fold(
                    tonic_reflection::server::Builder::configure(),
                    |builder, set| builder.register_encoded_file_descriptor_set(set),
                );
                named
                    .iter()
                    .fold(builder, |builder, name| builder.with_service_name(*name))
            };
            services = services
                .add_service(builder().build_v1()?)
                .add_service(builder().build_v1alpha()?);
        }
        for register in self.versions.remove(&version).unwrap_or_default() {
            services = register(broker, services);
        }
        Ok(services)
    }

    /// Serves the plugin in-process on a private unix socket, without a host, cookie or
    /// handshake, for the plugin's own tests; its highest protocol version is used.
    ///
    /// # Errors
    ///
    /// [`SdkError`] if the socket cannot be created or connected.
    pub async fn test_server(mut self) -> Result<crate::testing::TestServer, SdkError> {
        let version = self
            .versions
            .keys()
            .next_back()
            .copied()
            .ok_or(SdkError::NoServices {
                plugin: self.name.clone(),
            })?;
        let dir = SocketDir::create().map_err(|source| SdkError::Io {
            action: "create a socket folder",
            cause: source,
        })?;
        let listen = ListenOptions {
            socket_dir: Some(dir.path().to_owned()),
            ..ListenOptions::default()
        };
        let listener = BoundListener::bind(&listen)?;
        let broker = Broker::new(listen, None);
        let shutdown = CancellationToken::new();
        let services = self.services(version, &broker, &shutdown).await?;
        crate::testing::TestServer::start(listener, services, shutdown, dir).await
    }
}

fn print_handshake(line: &HandshakeLine) -> Result<(), SdkError> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .map_err(|source| SdkError::Io {
            action: "print the handshake line",
            cause: source,
        })
}

/// SIGINT is counted and ignored (a Ctrl-C in the host's terminal reaches the whole process
/// group; the host decides when its plugins stop). SIGTERM stops gracefully.
fn watch_signals(shutdown: CancellationToken) -> Result<(), SdkError> {
    use tokio::signal::unix::{SignalKind, signal};
    let io = |source| SdkError::Io {
        action: "install signal handlers",
        cause: source,
    };
    let mut interrupt = signal(SignalKind::interrupt()).map_err(io)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(io)?;
    tokio::spawn(async move {
        let mut count = 0u64;
        loop {
            tokio::select! {
                _ = interrupt.recv() => {
                    count += 1;
                    tracing::trace!(count, "ignoring SIGINT");
                }
                _ = terminate.recv() => {
                    tracing::debug!("SIGTERM: shutting down");
                    shutdown.cancel();
                    return;
                }
                () = shutdown.cancelled() => return,
            }
        }
    });
    Ok(())
}
