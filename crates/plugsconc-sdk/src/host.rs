//! Clients of the host services: what a plugin asks its plugsconc host to do instead of touching
//! the OS (files, outgoing connections, programs). The host checks each request against the
//! plugin's manifest grants; a request no grant covers fails with `PERMISSION_DENIED` and a
//! message naming the grant it lacks.
//!
//! ```rust,ignore
//! let host = HostServices::connect(&broker).await?;
//! let config = host.filesystem().read(pb::ReadRequest { path: "/etc/app.json".into() }).await?;
//! ```

use plugsconc_protocol::env::HOST_SERVICES;
pub use plugsconc_protocol::proto::host as pb;
use plugsconc_transport::Broker;
use tonic::transport::Channel;

use crate::SdkError;

/// A connection to the host services of this plugin's host.
#[derive(Debug, Clone)]
pub struct HostServices {
    channel: Channel,
}

impl HostServices {
    /// Dials the host services through the broker, under the id the host passed in
    /// `PLUGSCONC_HOST_SERVICES`. The host announces them once, so the first connection is kept
    /// and every later call shares it.
    ///
    /// # Errors
    ///
    /// [`SdkError::HostServices`] when the host offers none (not a plugsconc host, or an older
    /// one) or the broker cannot reach them.
    pub async fn connect(broker: &Broker) -> Result<Self, SdkError> {
        static CHANNEL: tokio::sync::OnceCell<Channel> = tokio::sync::OnceCell::const_new();
        let channel = CHANNEL.get_or_try_init(|| dial(broker)).await?;
        Ok(Self {
            channel: channel.clone(),
        })
    }

    /// Files and folders within the plugin's filesystem grants.
    pub fn filesystem(&self) -> pb::filesystem_service_client::FilesystemServiceClient<Channel> {
        pb::filesystem_service_client::FilesystemServiceClient::new(self.channel.clone())
    }

    /// TCP connections within the plugin's egress grants.
    pub fn network(&self) -> pb::network_service_client::NetworkServiceClient<Channel> {
        pb::network_service_client::NetworkServiceClient::new(self.channel.clone())
    }

    /// Programs and processes within the plugin's process grants.
    pub fn process(&self) -> pb::process_service_client::ProcessServiceClient<Channel> {
        pb::process_service_client::ProcessServiceClient::new(self.channel.clone())
    }
}

async fn dial(broker: &Broker) -> Result<Channel, SdkError> {
    let id = std::env::var(HOST_SERVICES)
        .ok()
        .and_then(|id| id.parse::<u32>().ok())
        .ok_or_else(|| {
            SdkError::HostServices(format!(
                "{HOST_SERVICES} is not set: the host offers no host services"
            ))
        })?;
    broker
        .dial(id)
        .await
        .map_err(|err| SdkError::HostServices(err.to_string()))
}
