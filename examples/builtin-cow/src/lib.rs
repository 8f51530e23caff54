//! `cow`: a built-in plugin of the `animal` contract. It is registered at link time, shows up in
//! the catalog beside the process plugins with the same statuses, and a call through its handle
//! is a virtual call: no process, no IPC.
//!
//! A binary that wants it must name this crate somewhere (`use builtin_cow as _;`); a
//! dependency that is never referenced is not linked, and its registration silently vanishes.

use std::sync::Arc;

use example_animal::Animal;
use plugsconc_host::{Builtin, builtin_handle};

/// The cow.
#[derive(Debug, Default)]
pub struct Cow;

#[tonic::async_trait]
impl Animal for Cow {
    async fn speak(&self, loud: bool) -> Result<String, tonic::Status> {
        Ok(if loud { "MOO!" } else { "Moo." }.to_owned())
    }
}

// ANCHOR: builtin
plugsconc_host::inventory::submit! {
    Builtin {
        name: "cow",
        kind: "animal",
        version: "1.0.0",
        description: "A built-in cow that moos (no process, no IPC)",
        tags: &["example", "animal", "builtin"],
        make: || builtin_handle::<dyn Animal>(Arc::new(Cow)),
    }
}
// ANCHOR_END: builtin

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn moos() {
        assert_eq!(Cow.speak(true).await.ok().as_deref(), Some("MOO!"));
    }
}
