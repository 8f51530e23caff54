//! The error type of the transport crate.

use std::path::PathBuf;

/// Who serves an address that should have been served by another process.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "refusing to connect to {network} address {address:?}: it is served by {found}, not by process {expected} (or its process group) that was started for it"
)]
pub struct ForeignPeer {
    /// `unix` or `tcp`.
    pub network: String,
    /// The address.
    pub address: String,
    /// The process the connection was meant for.
    pub expected: u32,
    /// Who serves the address instead: `process <pid> (<executable>)`.
    pub found: String,
    /// That process's pid, when known.
    pub found_pid: Option<u32>,
}

/// Failures to listen, connect or broker a connection.
///
/// The OS or tonic error behind a variant is part of its message, not its `source()`, so a
/// chain printed with anyhow's `{:#}` names it once.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// A unix socket could not be created.
    #[error("cannot listen on a unix socket in {dir}: {cause}")]
    ListenUnix {
        /// Folder the socket was to be created in.
        dir: PathBuf,
        /// The OS error.
        cause: std::io::Error,
    },
    /// No port of the range could be bound.
    #[error("couldn't bind plugin TCP listener on 127.0.0.1 ports {min}-{max}: {cause}")]
    ListenTcp {
        /// Lowest port tried.
        min: u16,
        /// Highest port tried.
        max: u16,
        /// The last OS error.
        cause: std::io::Error,
    },
    /// The socket group could not be applied.
    #[error("cannot give unix socket {path} to group {group:?}: {reason}")]
    SocketGroup {
        /// The socket.
        path: PathBuf,
        /// The group asked for.
        group: String,
        /// What went wrong.
        reason: String,
    },
    /// The address in a handshake or broker message cannot be dialled.
    // tonic's own message is only "transport error": what went wrong is in its chain.
    #[error("cannot connect to {network} address {address:?}: {}", Causes(&**cause))]
    Connect {
        /// `unix` or `tcp`.
        network: String,
        /// The address.
        address: String,
        /// The cause, with its own causes in the message.
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The address is served by a process other than the one the connection was meant for
    /// (another plugin's socket, say); nothing was sent to it.
    #[error("{0}")]
    ForeignPeer(Box<ForeignPeer>),
    /// The peer announced a network other than unix or tcp.
    #[error("unknown address type {0:?}: expected unix or tcp")]
    UnknownNetwork(String),
    /// No connection info for a broker id arrived in time.
    #[error("timeout waiting for connection info for broker id {0}")]
    BrokerTimeout(u32),
    /// The broker stream is closed.
    #[error("broker closed")]
    BrokerClosed,
}

/// An error followed by its causes, `outer: inner: ...`, leaving out a cause whose text the
/// outer messages already hold: for wrapping a terse error (tonic's "transport error") whose
/// reason is only in its causes.
#[derive(Debug, Clone, Copy)]
pub struct Causes<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Causes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(err) = cause {
            let next = err.to_string();
            if !text.contains(&next) {
                text.push_str(": ");
                text.push_str(&next);
            }
            cause = err.source();
        }
        f.write_str(&text)
    }
}
