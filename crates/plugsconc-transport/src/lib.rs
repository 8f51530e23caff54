//! Sockets, TLS and the gRPC broker: the I/O both a plugsconc host and a plugsconc plugin need.
//!
//! - [`listener`]: unix sockets named like go-plugin's (`plugin<digits>` in the socket folder),
//!   or loopback TCP within a port range; TLS termination on accepted connections,
//! - [`connector`]: a tonic [`tonic::transport::Channel`] to a unix or TCP address, with mTLS,
//!   refusing a peer that is not the process it was meant for ([`peer`]),
//! - [`broker`]: go-plugin's `GRPCBroker` (non-multiplexed): either side serves extra gRPC
//!   servers under numeric ids that the other side dials.

pub mod broker;
pub mod connector;
mod error;
pub mod io;
pub mod listener;
pub mod peer;
pub mod services;
pub mod socket_dir;

pub use broker::{Broker, BrokerTls, BrokeredServer};
pub use connector::{ChannelOptions, connect};
pub use error::{Causes, ForeignPeer, TransportError};
pub use listener::{BoundListener, ListenOptions};
pub use peer::ExpectedPeer;
pub use services::{GrpcService, Services};
pub use socket_dir::SocketDir;
