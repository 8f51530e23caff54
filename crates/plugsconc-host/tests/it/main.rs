//! Integration tests of the host against real plugin processes: the well-behaved path, integrity,
//! reattach, and every way a plugin can misbehave.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod misbehaving;
mod normal;
mod support;
