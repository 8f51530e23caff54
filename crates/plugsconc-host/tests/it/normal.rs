//! The well-behaved path: calls over every transport, levels of the plugin's logs, checksums,
//! and reattach.

use std::sync::{Arc, Mutex};

use example_contracts::kv::EchoRequest;
use example_contracts::kv::kv_client::KvClient;
use plugsconc_host::{HostError, PluginClient, sha256_file};
use plugsconc_protocol::env::Transport;
use plugsconc_protocol::mtls::Curve;
use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};

use crate::support::{assert_gone, builder, misbehave_bin, pids};

async fn echo(client: &PluginClient) {
    let reply = KvClient::new(client.channel())
        .echo(EchoRequest {
            data: b"ping".to_vec(),
        })
        .await
        .expect("echo")
        .into_inner();
    assert_eq!(reply.data, b"ping");
}

#[tokio::test]
async fn calls_over_unix_tcp_and_automtls() {
    for (transport, tls, curve) in [
        (Transport::Unix, false, Curve::P256),
        (Transport::Tcp, false, Curve::P256),
        (Transport::Unix, true, Curve::P256),
        (Transport::Tcp, true, Curve::P521),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pids");
        let client = builder("normal", &pid_file)
            .transport(transport)
            .auto_mtls(tls)
            .curve(curve)
            .start()
            .await
            .unwrap_or_else(|err| panic!("{transport:?} tls={tls}: {err}"));
        let line = client.handshake_line();
        assert_eq!(line.server_cert.is_some(), tls);
        client.health().await.unwrap();
        echo(&client).await;
        let outcome = client.kill().await.unwrap();
        assert!(outcome.success(), "{outcome:?}");
        assert_gone(&pids(&pid_file)).await;
    }
}

#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<(tracing::Level, String, String)>>>);

impl<S: Subscriber> Layer<S> for Events {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        #[derive(Default)]
        struct Fields {
            message: String,
            plugin: String,
        }
        impl Visit for Fields {
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                match field.name() {
                    "message" => self.message = format!("{value:?}"),
                    "plugin" => self.plugin = format!("{value:?}").trim_matches('"').to_owned(),
                    _ => {}
                }
            }
            fn record_str(&mut self, field: &Field, value: &str) {
                match field.name() {
                    "message" => self.message = value.to_owned(),
                    "plugin" => self.plugin = value.to_owned(),
                    _ => {}
                }
            }
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        self.0
            .lock()
            .unwrap()
            .push((*event.metadata().level(), fields.plugin, fields.message));
    }
}

#[tokio::test]
async fn plugin_log_levels_become_tracing_levels() {
    let events = Events::default();
    // Single-threaded test runtime: the stderr task runs under this thread's subscriber.
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(events.clone()));
    // Callsites cache whether anyone listens; a test on another thread (with another
    // subscriber) may have cached "no one" for the host's per-level callsites first.
    tracing::callsite::rebuild_interest_cache();
    let dir = tempfile::tempdir().unwrap();
    let client = builder("normal", &dir.path().join("pids"))
        .env("RUST_LOG", "trace,h2=info,hyper=info,tower=info,tonic=info")
        .start()
        .await
        .unwrap();
    client.kill().await.unwrap();
    let seen = events.0.lock().unwrap().clone();
    for (level, message) in [
        (tracing::Level::TRACE, "level check trace"),
        (tracing::Level::DEBUG, "level check debug"),
        (tracing::Level::INFO, "level check info"),
        (tracing::Level::WARN, "level check warn"),
        (tracing::Level::ERROR, "level check error"),
    ] {
        assert!(
            seen.iter()
                .any(|(l, p, m)| *l == level && p == "misbehave-normal" && m == message),
            "no {level} {message:?} from the plugin among {seen:?}"
        );
    }
}

#[tokio::test]
async fn checksum_mismatch_is_never_executed() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pids");
    let err = builder("normal", &pid_file)
        .sha256("0".repeat(64))
        .start()
        .await
        .expect_err("wrong checksum");
    assert!(matches!(err, HostError::ChecksumMismatch { .. }), "{err}");
    assert!(!pid_file.exists(), "the binary ran despite its checksum");

    let bad = builder("normal", &pid_file)
        .sha256("xyz")
        .start()
        .await
        .expect_err("bad hex");
    assert!(matches!(bad, HostError::ChecksumSyntax { .. }), "{bad}");

    let good = sha256_file(&misbehave_bin()).unwrap().to_hex();
    let client = builder("normal", &pid_file)
        .sha256(good)
        .start()
        .await
        .unwrap();
    echo(&client).await;
    client.kill().await.unwrap();
}

#[tokio::test]
async fn reattach_checks_the_pid_owns_the_socket() {
    for transport in [Transport::Unix, Transport::Tcp] {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pids");
        let original = builder("normal", &pid_file)
            .transport(transport)
            .start()
            .await
            .unwrap();
        let config = original.reattach_config();

        let mut wrong = config.clone();
        wrong.pid = std::process::id();
        let err = PluginClient::reattach(wrong)
            .await
            .expect_err("not that plugin");
        assert!(matches!(err, HostError::Reattach { .. }), "{err}");
        assert!(err.to_string().contains("does not own the socket"), "{err}");

        let attached = PluginClient::reattach(config).await.unwrap();
        assert_eq!(attached.pid(), original.pid());
        echo(&attached).await;
        attached.kill().await.unwrap();
        assert_gone(&pids(&pid_file)).await;
        original.kill().await.unwrap();
    }
}
