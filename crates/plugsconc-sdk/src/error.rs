//! The error type of the SDK.

use plugsconc_transport::Causes;

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
    Reflection(tonic_reflection::server::Error),
    /// The host services cannot be reached.
    #[error("host services unavailable: {0}")]
    HostServices(String),
    /// Listening failed.
    #[error(transparent)]
    Transport(#[from] plugsconc_transport::TransportError),
    /// The gRPC server failed.
    // tonic's own message is only "transport error": what went wrong is in its chain.
    #[error("gRPC server failed: {}", Causes(.0))]
    Server(tonic::transport::Error),
    /// Writing the handshake line or redirecting stdout failed.
    #[error("cannot {action}: {cause}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The OS error.
        cause: std::io::Error,
    },
}

// The causes below are part of the messages above, so they are converted by hand rather than
// with `#[from]`, which would also return them from `source()` and print them twice in a chain.

impl From<tonic_reflection::server::Error> for SdkError {
    fn from(err: tonic_reflection::server::Error) -> Self {
        SdkError::Reflection(err)
    }
}

impl From<tonic::transport::Error> for SdkError {
    fn from(err: tonic::transport::Error) -> Self {
        SdkError::Server(err)
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    /// The error and its causes as anyhow's `{:#}` prints them.
    fn chain(err: &dyn Error) -> String {
        let mut text = err.to_string();
        let mut cause = err.source();
        while let Some(err) = cause {
            text = format!("{text}: {err}");
            cause = err.source();
        }
        text
    }

    #[test]
    fn causes_are_printed_once() {
        let err = SdkError::Io {
            action: "print the handshake line",
            cause: std::io::Error::other("the pipe is gone"),
        };
        assert_eq!(
            err.to_string(),
            "cannot print the handshake line: the pipe is gone"
        );
        assert_eq!(
            chain(&err).matches("the pipe is gone").count(),
            1,
            "{}",
            chain(&err)
        );

        let err = SdkError::from(tonic_reflection::server::Error::InvalidFileDescriptorSet(
            "no file".into(),
        ));
        assert_eq!(chain(&err).matches("no file").count(), 1, "{}", chain(&err));
    }

    /// A cause whose own message says little (tonic's "transport error") is followed by its
    /// causes, each once.
    #[test]
    fn a_terse_cause_is_followed_by_its_own_causes() {
        #[derive(Debug, thiserror::Error)]
        #[error("transport error")]
        struct Terse(#[source] std::io::Error);
        let terse = Terse(std::io::Error::other("address in use"));
        assert_eq!(
            Causes(&terse).to_string(),
            "transport error: address in use"
        );
        #[derive(Debug, thiserror::Error)]
        #[error("wrapped: {0}")]
        struct Repeats(#[source] std::io::Error);
        let repeats = Repeats(std::io::Error::other("address in use"));
        assert_eq!(Causes(&repeats).to_string(), "wrapped: address in use");
    }
}
