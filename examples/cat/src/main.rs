//! `cat`: A cat that meows — the smallest plugin of the `animal` contract.
//!
//! Run it under a host: `plugsconc call target/debug/cat animal.Animal/Speak --proto proto/animalpb/animal.proto --data '{"isLoud":true}' --cookie ANIMAL_PLUGIN=animal`

use example_contracts::animal::animal_server::{Animal, AnimalServer};
use example_contracts::animal::{SpeakRequest, SpeakResponse};
use plugsconc_sdk::{HandshakeConfig, Plugin};
use tonic::{Request, Response, Status};

#[derive(Debug, Default)]
struct Meower;

#[tonic::async_trait]
impl Animal for Meower {
    async fn speak(
        &self,
        request: Request<SpeakRequest>,
    ) -> Result<Response<SpeakResponse>, Status> {
        let loud = request.into_inner().is_loud;
        tracing::debug!(loud, "speaking");
        let message = if loud { "MEOW!" } else { "Meow!" };
        Ok(Response::new(SpeakResponse {
            message: message.to_owned(),
        }))
    }
}

fn main() {
    Plugin::new("cat", HandshakeConfig::new(1, "ANIMAL_PLUGIN", "animal"))
        .service(AnimalServer::new(Meower))
        .reflection(example_contracts::FILE_DESCRIPTOR_SET)
        .serve()
}
