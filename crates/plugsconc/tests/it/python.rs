//! The Python example plugin (grpcio) runs under the plugsconc host.

use example_contracts::animal::SpeakRequest;
use example_contracts::animal::animal_client::AnimalClient;
use plugsconc_host::PluginClient;
use plugsconc_protocol::env::HandshakeConfig;

use crate::support;

#[tokio::test]
async fn host_runs_python_plugin() {
    if !support::python_ready() {
        support::skip(
            "host_runs_python_plugin",
            "python3 with grpcio, grpcio-tools and grpcio-health-checking is not installed (pip install -r examples/python-animal/requirements.txt)",
        );
        return;
    }
    let script = support::workspace().join("examples/python-animal/plugin");
    let client = PluginClient::builder("python-animal", &script)
        .handshake(HandshakeConfig::new(1, "ANIMAL_PLUGIN", "animal"))
        .start()
        .await
        .expect("python plugin starts");
    client.health().await.expect("health SERVING");
    let mut animal = AnimalClient::new(client.channel());
    let quiet = animal
        .speak(SpeakRequest { is_loud: false })
        .await
        .expect("speak")
        .into_inner()
        .message;
    let loud = animal
        .speak(SpeakRequest { is_loud: true })
        .await
        .expect("speak loud")
        .into_inner()
        .message;
    assert!(!quiet.is_empty());
    assert_eq!(loud, loud.to_uppercase());
    assert_ne!(quiet, loud);
    let status = client.kill().await.expect("kill");
    assert!(status.success(), "python plugin exit status {status:?}");
}
