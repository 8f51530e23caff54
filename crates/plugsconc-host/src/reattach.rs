//! Reattaching to a plugin another host process started: the address and pid it left behind, and
//! the check that the pid still is that plugin (it must own the listening socket), so a recycled
//! pid is never adopted or killed.

use plugsconc_protocol::Network;

/// Everything needed to reconnect to a running plugin (go-plugin's `ReattachConfig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReattachConfig {
    /// The plugin's name.
    pub name: String,
    /// `unix` or `tcp`.
    pub network: Network,
    /// Socket path or `host:port`.
    pub address: String,
    /// The plugin's pid.
    pub pid: u32,
    /// The negotiated application protocol version.
    pub protocol_version: u32,
}

/// Checks that `pid` is alive and holds the socket listening on `address`.
pub(crate) fn verify_owner(pid: u32, network: Network, address: &str) -> Result<(), String> {
    plugsconc_transport::peer::listener_owner(pid, network, address)
}
