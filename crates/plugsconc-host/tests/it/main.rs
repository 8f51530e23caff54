//! Integration tests of the host against real plugin processes: the well-behaved path, integrity,
//! reattach, and every way a plugin can misbehave;
//! the registry: lazy launch, built-ins, supervision and hot reload.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod impersonation;
mod misbehaving;
mod normal;
mod registry;
mod sandbox;
mod support;
