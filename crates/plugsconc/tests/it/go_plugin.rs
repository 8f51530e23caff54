//! The plugsconc host drives a Go `kv` plugin built on HashiCorp go-plugin: plain, AutoMTLS, a
//! broker callback into the host, and the plugin's hclog levels arriving as tracing levels.

use std::sync::{Arc, Mutex};

use example_contracts::counter::add_helper_server::{AddHelper, AddHelperServer};
use example_contracts::counter::counter_client::CounterClient;
use example_contracts::counter::{
    GetRequest as CounterGet, PutRequest as CounterPut, SumRequest, SumResponse,
};
use example_contracts::kv::kv_client::KvClient;
use example_contracts::kv::{EchoRequest, GetRequest, PutRequest};
use plugsconc_host::PluginClient;
use plugsconc_protocol::env::HandshakeConfig;
use plugsconc_transport::Services;
use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};

use crate::support;

async fn start(go: &support::GoBins, auto_mtls: bool) -> PluginClient {
    PluginClient::builder("kv-go", &go.plugin)
        .handshake(HandshakeConfig::new(1, "BASIC_PLUGIN", "hello"))
        .auto_mtls(auto_mtls)
        .start()
        .await
        .expect("Go plugin starts")
}

async fn kv_round_trip(client: &PluginClient) {
    let mut kv = KvClient::new(client.channel());
    kv.put(PutRequest {
        key: "hello".into(),
        value: b"world".to_vec(),
    })
    .await
    .expect("put");
    let got = kv
        .get(GetRequest {
            key: "hello".into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert!(got.found);
    assert_eq!(got.value, b"world");
    let echoed = kv
        .echo(EchoRequest { data: vec![7; 16] })
        .await
        .expect("echo")
        .into_inner();
    assert_eq!(echoed.data, vec![7; 16]);
}

#[tokio::test]
async fn host_drives_go_plugin_plain_with_broker_callback() {
    let Some(go) = support::go_bins() else {
        support::skip(
            "host_drives_go_plugin_plain_with_broker_callback",
            "Go is not installed",
        );
        return;
    };
    let client = start(go, false).await;
    client.health().await.expect("health SERVING");
    kv_round_trip(&client).await;

    // The Go plugin dials the host's AddHelper through the broker to do each sum; one broker id
    // per call, as in go-plugin's bidirectional example.
    let mut counter = CounterClient::new(client.channel());
    for value in [2, 3] {
        let broker = client.broker();
        let id = broker.next_id();
        let server = broker
            .accept_and_serve(id, Services::new().add_service(AddHelperServer::new(Adder)))
            .expect("serve AddHelper");
        counter
            .put(CounterPut {
                add_server: id,
                key: "c".into(),
                value,
            })
            .await
            .expect("counter put calls the host back");
        server.stop().await;
    }
    let total = counter
        .get(CounterGet { key: "c".into() })
        .await
        .expect("counter get")
        .into_inner()
        .value;
    assert_eq!(total, 5);
    let status = client.kill().await.expect("kill");
    assert!(status.success(), "Go plugin exit status {status:?}");
}

#[tokio::test]
async fn host_drives_go_plugin_over_automtls() {
    let Some(go) = support::go_bins() else {
        support::skip("host_drives_go_plugin_over_automtls", "Go is not installed");
        return;
    };
    let client = start(go, true).await;
    kv_round_trip(&client).await;
    client.kill().await.expect("kill");
}

#[derive(Debug)]
struct Adder;

#[tonic::async_trait]
impl AddHelper for Adder {
    async fn sum(
        &self,
        request: tonic::Request<SumRequest>,
    ) -> Result<tonic::Response<SumResponse>, tonic::Status> {
        let SumRequest { a, b } = request.into_inner();
        Ok(tonic::Response::new(SumResponse { r: a + b }))
    }
}

/// Records (level, message) of events carrying a `plugin` field.
#[derive(Clone, Default)]
struct PluginEvents(Arc<Mutex<Vec<(tracing::Level, String)>>>);

impl<S: Subscriber> Layer<S> for PluginEvents {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        #[derive(Default)]
        struct Message(String, bool);
        impl Visit for Message {
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                match field.name() {
                    "message" => self.0 = format!("{value:?}"),
                    "plugin" => self.1 = true,
                    _ => {}
                }
            }
            fn record_str(&mut self, field: &Field, value: &str) {
                match field.name() {
                    "message" => self.0 = value.to_owned(),
                    "plugin" => self.1 = true,
                    _ => {}
                }
            }
        }
        let mut message = Message::default();
        event.record(&mut message);
        if message.1 {
            self.0
                .lock()
                .unwrap()
                .push((*event.metadata().level(), message.0));
        }
    }
}

#[tokio::test]
async fn go_plugin_log_levels_arrive_as_tracing_levels() {
    let Some(go) = support::go_bins() else {
        support::skip(
            "go_plugin_log_levels_arrive_as_tracing_levels",
            "Go is not installed",
        );
        return;
    };
    let events = PluginEvents::default();
    let subscriber = tracing_subscriber::registry().with(events.clone());
    // The test runtime is single-threaded, so the host's stderr task runs under this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);
    let client = start(go, false).await;
    kv_round_trip(&client).await;
    client.kill().await.expect("kill");
    let seen = events.0.lock().unwrap().clone();
    for (level, message) in [
        (tracing::Level::TRACE, "kv put trace"),
        (tracing::Level::DEBUG, "kv put debug"),
        (tracing::Level::INFO, "kv put info"),
        (tracing::Level::WARN, "kv put warn"),
        (tracing::Level::ERROR, "kv put error"),
    ] {
        assert!(
            seen.iter().any(|(l, m)| *l == level && m.contains(message)),
            "no {level} event {message:?} among {seen:?}"
        );
    }
}
