//! The error type of the protocol crate.

/// Everything that can be wrong with what a peer sent or what the environment holds.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The handshake line has fewer than the 4 mandatory `|`-separated fields.
    #[error(
        "handshake line {line} has {found} fields, expected at least 4 (core|app|network|address)"
    )]
    TooFewFields {
        /// The line as received (cut when long).
        line: crate::Quoted,
        /// How many fields it had.
        found: usize,
    },
    /// A numeric field is not a decimal number.
    #[error("handshake field `{field}` is {value}, expected a decimal number")]
    InvalidNumber {
        /// Name of the field.
        field: &'static str,
        /// Value as received (cut when long).
        value: crate::Quoted,
    },
    /// The core protocol version is not 1.
    #[error("plugin speaks core protocol version {found}, this host speaks version 1")]
    CoreVersion {
        /// Version the plugin announced.
        found: u32,
    },
    /// The network is neither `unix` nor `tcp`.
    #[error("handshake network is {value}, expected `unix` or `tcp`")]
    UnknownNetwork {
        /// Value as received (cut when long).
        value: crate::Quoted,
    },
    /// The protocol is neither `grpc` nor `netrpc`.
    #[error("handshake protocol is {value}, expected `grpc` or `netrpc`")]
    UnknownProtocol {
        /// Value as received (cut when long).
        value: crate::Quoted,
    },
    /// The certificate field or a PEM certificate could not be decoded.
    #[error("invalid certificate in {place}: {reason}")]
    InvalidCertificate {
        /// Where the certificate came from (handshake field 6, `PLUGIN_CLIENT_CERT`...).
        place: &'static str,
        /// What was wrong with it.
        reason: String,
    },
    /// The multiplexing field is not a boolean Go's `strconv.ParseBool` accepts.
    #[error("handshake multiplex field is {value}, expected true or false")]
    InvalidMux {
        /// Value as received (cut when long).
        value: crate::Quoted,
    },
    /// The address is longer than any socket path or `host:port` can be.
    #[error(
        "handshake address {address} is {length} bytes long; a unix socket path or host:port is at most {max}"
    )]
    AddressTooLong {
        /// The address (cut).
        address: crate::Quoted,
        /// Its length.
        length: usize,
        /// The longest accepted.
        max: usize,
    },
    /// The magic cookie is missing or wrong: the binary was not started by a plugin host.
    #[error("magic cookie {key} is {found:?}, expected the value the plugin was built with")]
    CookieMismatch {
        /// Name of the cookie variable.
        key: String,
        /// What the environment held, if anything.
        found: Option<String>,
    },
    /// An environment variable holds a value of the wrong shape.
    #[error("environment variable {var} is {value:?}: {expected}")]
    InvalidEnv {
        /// Name of the variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// Certificate generation or TLS configuration failed.
    #[error("TLS setup failed: {0}")]
    Tls(String),
}
