//! The host side of the `animal` contract: the [`Animal`] trait host code calls, the
//! [`AnimalContract`] that ties it to `plugin.type: animal`, and the adapter that makes a
//! process plugin's gRPC connection an [`Animal`]. A built-in plugin implements [`Animal`]
//! directly (see the `builtin-cow` example).
//!
//! ```rust,ignore
//! let cat = registry.handle::<AnimalContract>("cat")?;
//! let said = cat.get().await?.speak(true).await?; // "MEOW!", whether cat is a process or built in
//! ```

use std::sync::Arc;

use example_contracts::animal::SpeakRequest;
use example_contracts::animal::animal_client::AnimalClient;
use plugsconc_host::Contract;
use tonic::transport::Channel;

/// What every animal plugin does.
#[tonic::async_trait]
pub trait Animal: Send + Sync {
    /// The animal's sound; `loud` asks for upper case.
    async fn speak(&self, loud: bool) -> Result<String, tonic::Status>;
}

/// The `animal` contract.
#[derive(Debug)]
pub struct AnimalContract;

impl Contract for AnimalContract {
    const KIND: &'static str = "animal";
    type Handle = dyn Animal;

    fn connect(channel: Channel) -> Arc<dyn Animal> {
        Arc::new(Remote(AnimalClient::new(channel)))
    }
}

/// An animal in another process, over gRPC.
#[derive(Debug, Clone)]
struct Remote(AnimalClient<Channel>);

#[tonic::async_trait]
impl Animal for Remote {
    async fn speak(&self, loud: bool) -> Result<String, tonic::Status> {
        // Tonic clients take `&mut self`; a clone shares the connection and costs a few
        // reference counts.
        let mut client = self.0.clone();
        let reply = client.speak(SpeakRequest { is_loud: loud }).await?;
        Ok(reply.into_inner().message)
    }
}
