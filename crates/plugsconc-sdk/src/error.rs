//! The error type of the SDK.

/// Why a plugin could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SdkError {
    /// Started without the magic cookie: run by hand rather than by a host.
    #[error("not started by a plugin host (magic cookie {key} missing or wrong)")]
    NotLaunchedByHost {
        /// Name of the cookie variable.
        key: String,
    },
    /// The environment the host set is malformed.
    #[error(transparent)]
    Protocol(#[from] plugsconc_protocol::ProtocolError),
    /// The plugin offers no protocol version at all.
    #[error("plugin {plugin:?} registered no service: call Plugin::service before serve")]
    NoServices {
        /// The plugin's name.
        plugin: String,
    },
    /// The descriptor set given to `Plugin::reflection` does not decode.
    #[error("invalid file descriptor set for gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The host services cannot be reached.
    #[error("host services unavailable: {0}")]
    HostServices(String),
    /// Listening failed.
    #[error(transparent)]
    Transport(#[from] plugsconc_transport::TransportError),
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Server(#[from] tonic::transport::Error),
    /// Writing the handshake line or redirecting stdout failed.
    #[error("cannot {action}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}
