//! Test a plugin without a host: [`crate::Plugin::test_server`] serves its services, with the
//! health, controller and broker services a host would see, on a private unix socket, and
//! [`TestServer::channel`] connects typed clients to it.

use plugsconc_transport::{BoundListener, ChannelOptions, Services, SocketDir, connect};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Server};

use crate::SdkError;

/// A plugin served in-process for tests; stops when dropped.
#[derive(Debug)]
pub struct TestServer {
    channel: Channel,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
    _dir: SocketDir,
}

impl TestServer {
    pub(crate) async fn start(
        listener: BoundListener,
        services: Services,
        shutdown: CancellationToken,
        dir: SocketDir,
    ) -> Result<Self, SdkError> {
        let (network, address) = (listener.network(), listener.address().to_owned());
        let incoming = listener.incoming(None, shutdown.clone());
        let signal = shutdown.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            if let Err(err) = Server::builder()
                .serve_with_incoming_shutdown(services, incoming, signal)
                .await
            {
                tracing::warn!(error = %err, "test server failed");
            }
        });
        let channel = connect(network, &address, &ChannelOptions::default()).await?;
        Ok(Self {
            channel,
            shutdown,
            task: Some(task),
            _dir: dir,
        })
    }

    /// A connection to the plugin, for generated clients.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Whether the plugin was asked to stop (for example by `Controller.Shutdown`).
    pub fn is_stopping(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Stops serving and waits for the server to finish.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[cfg(test)]
mod tests {
    use plugsconc_protocol::proto::plugin::Empty;
    use plugsconc_protocol::proto::plugin::grpc_controller_client::GrpcControllerClient;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    use crate::{HandshakeConfig, Plugin};

    #[tokio::test]
    async fn serves_health_and_controller_in_process() {
        // A plugin with no service of its own still answers what a host asks first.
        let server = Plugin::new("demo", HandshakeConfig::new(1, "K", "V"))
            .without_logging()
            .version(1, |_, services| services)
            .test_server()
            .await
            .unwrap();
        let response = HealthClient::new(server.channel())
            .check(HealthCheckRequest {
                service: "plugin".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.status(), ServingStatus::Serving);
        GrpcControllerClient::new(server.channel())
            .shutdown(Empty {})
            .await
            .unwrap();
        assert!(server.is_stopping());
        server.stop().await;
    }
}
