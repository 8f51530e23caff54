//! Contracts and built-in plugins.
//!
//! A [`Contract`] ties a plugin type (`animal`) to the Rust trait host code calls, and says how a
//! process plugin's gRPC connection becomes that trait object. A built-in plugin is Rust code
//! linked into the host and registered at link time with [`inventory`]: it produces the same
//! trait object directly, so a call costs one virtual call and no IPC.
//!
//! Registrations live in whatever crate submits them, and a crate the binary never references is
//! not linked: the binary must name it (`use my_builtins as _;`) or its plugins silently vanish.

use std::any::Any;
use std::sync::Arc;

use tonic::transport::Channel;

/// A plugin type and the handle host code gets for it.
pub trait Contract: 'static {
    /// The `plugin.type` of manifests implementing it.
    const KIND: &'static str;
    /// What host code calls (usually `dyn SomeTrait`).
    type Handle: ?Sized + Send + Sync + 'static;
    /// Wraps a connection to a process plugin into the handle.
    fn connect(channel: Channel) -> Arc<Self::Handle>;
}

/// A plugin compiled into the host, submitted with `inventory::submit!`.
#[derive(Debug)]
pub struct Builtin {
    /// Unique name in the catalog.
    pub name: &'static str,
    /// The contract's [`Contract::KIND`].
    pub kind: &'static str,
    /// Semantic version.
    pub version: &'static str,
    /// One line for listings.
    pub description: &'static str,
    /// Labels for queries.
    pub tags: &'static [&'static str],
    /// Builds the handle, boxed as `Arc<C::Handle>` (see [`builtin_handle`]).
    pub make: fn() -> Box<dyn Any + Send + Sync>,
}

inventory::collect!(Builtin);

/// Every built-in plugin linked into this binary.
pub fn builtins() -> impl Iterator<Item = &'static Builtin> {
    inventory::iter::<Builtin>.into_iter()
}

/// Boxes a handle for [`Builtin::make`].
pub fn builtin_handle<H: ?Sized + Send + Sync + 'static>(
    handle: Arc<H>,
) -> Box<dyn Any + Send + Sync> {
    Box::new(handle)
}

/// Untyped access to a process plugin's gRPC connection, for generic callers (the daemon's JSON
/// call endpoint): [`crate::Registry::grpc`] hands it out for a plugin of any type.
#[derive(Debug)]
pub struct AnyGrpc;

impl Contract for AnyGrpc {
    const KIND: &'static str = "*";
    type Handle = Channel;

    fn connect(channel: Channel) -> Arc<Channel> {
        Arc::new(channel)
    }
}
