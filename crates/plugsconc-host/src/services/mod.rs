//! Host services: the filesystem, network and process operations a plugin asks its host for
//! instead of touching the OS, each checked against the grants in the plugin's manifest. One set
//! is served per running plugin through its broker (under [`BROKER_ID`], which the plugin gets in
//! `PLUGSCONC_HOST_SERVICES`); it stops, and kills the children it started, with the plugin.
//!
//! Default deny: a request no grant covers fails with `PERMISSION_DENIED` naming the operation,
//! the target and the grant that would allow it, and the host logs the same line.

mod filesystem;
mod network;
mod process;

use std::sync::Arc;

use plugsconc_protocol::proto::host::filesystem_service_server::FilesystemServiceServer;
use plugsconc_protocol::proto::host::network_service_server::NetworkServiceServer;
use plugsconc_protocol::proto::host::process_service_server::ProcessServiceServer;
use plugsconc_transport::Services;

use crate::manifest::Capabilities;
use crate::sandbox::SandboxSpec;

/// The broker id of the host services: far above the ids either side hands out (1, 2, ...).
pub const BROKER_ID: u32 = 0x7000_0000;

/// What the services of one plugin instance check requests against.
#[derive(Debug)]
pub(crate) struct Grants {
    pub(crate) plugin: String,
    pub(crate) capabilities: Capabilities,
    /// Applied to the programs the process service starts, as to the plugin itself.
    pub(crate) sandbox: Option<SandboxSpec>,
    /// The plugin's own pid (scope `own`).
    pub(crate) pid: u32,
}

impl Grants {
    /// Refuses `operation` on `target`, saying which grant would allow it, and logs it.
    pub(crate) fn deny(&self, operation: &str, target: &str, lacking: &str) -> tonic::Status {
        tracing::warn!(
            plugin = %self.plugin,
            operation,
            target,
            lacking,
            "host service request denied"
        );
        tonic::Status::permission_denied(format!(
            "plugin {:?}: {operation} {target} denied: {lacking}",
            self.plugin
        ))
    }
}

/// The host services for one running plugin.
pub(crate) fn for_plugin(grants: Grants) -> Services {
    let grants = Arc::new(grants);
    Services::new()
        .add_service(FilesystemServiceServer::new(filesystem::Filesystem::new(
            grants.clone(),
        )))
        .add_service(NetworkServiceServer::new(network::Network::new(
            grants.clone(),
        )))
        .add_service(ProcessServiceServer::new(process::Process::new(grants)))
}
