//! The host side of plugsconc: launch a plugin binary with the go-plugin handshake, connect to it
//! (unix socket or TCP, AutoMTLS), check its health, open the broker and stdio streams, hand out
//! a channel for typed tonic clients, turn its stderr into `tracing` events, and stop it —
//! `Controller.Shutdown`, a bounded grace period, then SIGKILL of its whole process group, always
//! reaped.
//!
//! ```rust,ignore
//! let client = PluginClient::builder("kv", "./plugins/kv/kv")
//!     .handshake(HandshakeConfig::new(1, "BASIC_PLUGIN", "hello"))
//!     .auto_mtls(true)
//!     .start()
//!     .await?;
//! let mut kv = KvClient::new(client.channel());
//! kv.put(PutRequest { key: "a".into(), value: b"1".to_vec() }).await?;
//! client.kill().await?;
//! ```

#![warn(missing_docs)]

mod builder;
mod checksum;
mod client;
mod contract;
mod discovery;
mod error;
pub mod install;
mod launch;
mod ledger;
pub mod manifest;
pub mod monitor;
mod process;
mod reattach;
pub mod registry;
pub mod sandbox;
pub mod scan;
pub mod services;
pub mod signature;
mod stderr;

pub use builder::ClientBuilder;
pub use checksum::{Sha256, sha256_file, verify_entrypoint};
pub use client::{KillOutcome, PluginClient};
pub use contract::{AnyGrpc, Builtin, Contract, builtin_handle, builtins};
pub use discovery::{DISABLED_MARKER, Discovered, Discovery, Found, Invalid, discover, load};
pub use error::HostError;
/// Link-time registration of built-in plugins: `plugsconc_host::inventory::submit!`.
pub use inventory;
pub use reattach::ReattachConfig;
pub use registry::{
    BuiltinSelection, DEFAULT_HOST_ENV, Event, Handle, Lease, PluginInfo, Query, Registry,
    RegistryOptions, Status,
};
pub use scan::{ScanCommand, Scanners};
pub use signature::{Publisher, SignaturePolicy, Trust, Verdict};
