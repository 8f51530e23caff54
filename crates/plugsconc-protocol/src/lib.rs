//! Wire level of plugsconc, shared by hosts and plugins.
//!
//! Everything HashiCorp go-plugin defines on the wire lives here as pure functions over strings
//! and bytes, with no sockets and no processes:
//!
//! - [`handshake`]: the line a plugin prints on stdout (`1|1|unix|/tmp/plugin123|grpc|<cert>`),
//! - [`env`]: the environment variables the host sets and the plugin reads, version negotiation,
//! - [`mtls`]: AutoMTLS certificates as go-plugin makes them, and a verifier pinning the peer's
//!   exact certificate (go-plugin certificates are `CA=true`, which webpki rejects as leaves),
//! - [`hclog`]: hclog JSON log lines, formatted and parsed the way a go-plugin host reads them,
//! - [`quote`]: what a peer sent, quoted in error messages with a bound on its length,
//! - [`proto`]: generated code for go-plugin's internal services (`plugin.GRPCBroker`,
//!   `plugin.GRPCController`, `plugin.GRPCStdio`).

pub mod env;
mod error;
pub mod handshake;
pub mod hclog;
pub mod mtls;
pub mod proto;
pub mod quote;

pub use error::ProtocolError;
pub use handshake::{HandshakeLine, Network, Protocol};
pub use quote::Quoted;

/// The service name go-plugin registers as SERVING in `grpc.health.v1.Health`.
pub const HEALTH_SERVICE: &str = "plugin";
