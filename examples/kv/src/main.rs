//! `kv`: go-plugin's gRPC KV example plugin, in Rust, drivable by any go-plugin KV host.
//!
//! It also serves `counter.Counter`, go-plugin's bidirectional example: `Put` dials the host's
//! `AddHelper` through the broker (the id is in `add_server`) and stores the sum it returns.
//!
//! Try it: `plugsconc call target/debug/kv kv.KV/Echo --proto proto/kvpb/kv.proto --data '{"data":"aGk="}'`

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use example_contracts::counter::add_helper_client::AddHelperClient;
use example_contracts::counter::counter_server::{Counter, CounterServer};
use example_contracts::counter::{self as counter_pb, SumRequest};
use example_contracts::kv::kv_server::{Kv, KvServer};
use example_contracts::kv::{
    EchoRequest, EchoResponse, GetRequest, GetResponse, PutRequest, PutResponse,
};
use plugsconc_sdk::{Broker, HandshakeConfig, Plugin};
use tonic::{Request, Response, Status};

/// The key/value store.
#[derive(Debug, Default)]
struct Store {
    values: Mutex<HashMap<String, Vec<u8>>>,
}

#[tonic::async_trait]
impl Kv for Store {
    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let PutRequest { key, value } = request.into_inner();
        tracing::info!(key, bytes = value.len(), "put");
        self.values
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, value);
        Ok(Response::new(PutResponse {}))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let key = request.into_inner().key;
        let value = self
            .values
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned();
        Ok(Response::new(GetResponse {
            found: value.is_some(),
            value: value.unwrap_or_default(),
        }))
    }

    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        Ok(Response::new(EchoResponse {
            data: request.into_inner().data,
        }))
    }
}

/// The counter, which asks the host to do its additions.
#[derive(Debug)]
struct HostAddedCounter {
    broker: Broker,
    values: Mutex<HashMap<String, i64>>,
}

#[tonic::async_trait]
impl Counter for HostAddedCounter {
    async fn put(
        &self,
        request: Request<counter_pb::PutRequest>,
    ) -> Result<Response<counter_pb::PutResponse>, Status> {
        let counter_pb::PutRequest {
            add_server,
            key,
            value,
        } = request.into_inner();
        let old = self.current(&key);
        let channel = self.broker.dial(add_server).await.map_err(|err| {
            Status::unavailable(format!(
                "cannot reach the host's AddHelper {add_server}: {err}"
            ))
        })?;
        let sum = AddHelperClient::new(channel)
            .sum(SumRequest { a: old, b: value })
            .await?
            .into_inner()
            .r;
        tracing::debug!(key, old, value, sum, "counter updated by the host");
        self.values
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, sum);
        Ok(Response::new(counter_pb::PutResponse {}))
    }

    async fn get(
        &self,
        request: Request<counter_pb::GetRequest>,
    ) -> Result<Response<counter_pb::GetResponse>, Status> {
        let value = self.current(&request.into_inner().key);
        Ok(Response::new(counter_pb::GetResponse { value }))
    }
}

impl HostAddedCounter {
    fn current(&self, key: &str) -> i64 {
        self.values
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .copied()
            .unwrap_or(0)
    }
}

// ANCHOR: plugin
fn plugin() -> Plugin {
    Plugin::new("kv", HandshakeConfig::new(1, "BASIC_PLUGIN", "hello"))
        .service(KvServer::new(Store::default()))
        .reflection(example_contracts::FILE_DESCRIPTOR_SET)
        .service_with_broker(|broker| {
            CounterServer::new(HostAddedCounter {
                broker,
                values: Mutex::new(HashMap::new()),
            })
        })
}

fn main() {
    plugin().serve()
}
// ANCHOR_END: plugin

#[cfg(test)]
mod tests {
    use example_contracts::kv::kv_client::KvClient;

    use super::*;

    /// The SDK's in-process harness: no host, no process, the same services.
    #[tokio::test]
    async fn stores_and_echoes() {
        let server = plugin().without_logging().test_server().await.unwrap();
        let mut kv = KvClient::new(server.channel());
        kv.put(PutRequest {
            key: "k".into(),
            value: b"v".to_vec(),
        })
        .await
        .unwrap();
        let got = kv
            .get(GetRequest { key: "k".into() })
            .await
            .unwrap()
            .into_inner();
        assert!(got.found);
        assert_eq!(got.value, b"v");
        let missing = kv
            .get(GetRequest { key: "x".into() })
            .await
            .unwrap()
            .into_inner();
        assert!(!missing.found);
        let echoed = kv
            .echo(EchoRequest { data: vec![0, 255] })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(echoed.data, vec![0, 255]);
        server.stop().await;
    }
}
