//! `demo-host`: an application embedding plugsconc-host. It launches the example plugins built
//! next to it (`cat`, `dog`, `kv`, and the Python one when grpcio is installed), calls each over
//! its contract — `kv` over AutoMTLS, with a broker callback into this host — and stops them.
//!
//! `cargo build --workspace && ./target/debug/demo-host`

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use example_contracts::animal::SpeakRequest;
use example_contracts::animal::animal_client::AnimalClient;
use example_contracts::counter::add_helper_server::{AddHelper, AddHelperServer};
use example_contracts::counter::counter_client::CounterClient;
use example_contracts::counter::{
    GetRequest as CounterGet, PutRequest as CounterPut, SumRequest, SumResponse,
};
use example_contracts::kv::kv_client::KvClient;
use example_contracts::kv::{GetRequest, PutRequest};
use plugsconc_host::PluginClient;
use plugsconc_protocol::env::HandshakeConfig;
use plugsconc_transport::Services;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("the demo host has no folder")?
        .to_path_buf();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");

    for (name, path) in [("cat", bin_dir.join("cat")), ("dog", bin_dir.join("dog"))] {
        speak(name, &path).await?;
    }
    if python_ready() {
        speak("python-animal", &repo.join("examples/python-animal/plugin")).await?;
    } else {
        println!("python-animal: skipped (pip install -r examples/python-animal/requirements.txt)");
    }
    kv(&bin_dir.join("kv")).await
}

async fn speak(name: &str, path: &PathBuf) -> anyhow::Result<()> {
    let client = PluginClient::builder(name, path)
        .handshake(HandshakeConfig::new(1, "ANIMAL_PLUGIN", "animal"))
        .start()
        .await?;
    let mut animal = AnimalClient::new(client.channel());
    let quiet = animal
        .speak(SpeakRequest { is_loud: false })
        .await?
        .into_inner()
        .message;
    let loud = animal
        .speak(SpeakRequest { is_loud: true })
        .await?
        .into_inner()
        .message;
    println!("{name} (pid {}): {quiet} / {loud}", client.pid());
    client.kill().await?;
    Ok(())
}

async fn kv(path: &PathBuf) -> anyhow::Result<()> {
    // ANCHOR: embed
    let client = PluginClient::builder("kv", path)
        .handshake(HandshakeConfig::new(1, "BASIC_PLUGIN", "hello"))
        .auto_mtls(true)
        .start()
        .await?;
    let mut kv = KvClient::new(client.channel());
    kv.put(PutRequest {
        key: "greeting".into(),
        value: b"hello from the host".to_vec(),
    })
    .await?;
    let value = kv
        .get(GetRequest {
            key: "greeting".into(),
        })
        .await?
        .into_inner()
        .value;
    // ANCHOR_END: embed
    println!(
        "kv (pid {}, AutoMTLS): greeting = {:?}",
        client.pid(),
        String::from_utf8_lossy(&value)
    );

    // The plugin adds through the host: for each call the host exposes AddHelper under a fresh
    // broker id, which the plugin dials (one connection info serves one dial, as in go-plugin).
    let mut counter = CounterClient::new(client.channel());
    for value in [20, 22] {
        let id = client.broker().next_id();
        let server = client
            .broker()
            .accept_and_serve(id, Services::new().add_service(AddHelperServer::new(Adder)))?;
        counter
            .put(CounterPut {
                add_server: id,
                key: "answer".into(),
                value,
            })
            .await?;
        server.stop().await;
    }
    let answer = counter
        .get(CounterGet {
            key: "answer".into(),
        })
        .await?
        .into_inner()
        .value;
    println!("kv counter, summed by the host through the broker: answer = {answer}");
    client.kill().await?;
    Ok(())
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

fn python_ready() -> bool {
    Command::new("python3")
        .args(["-c", "import grpc, grpc_tools, grpc_health"])
        .output()
        .is_ok_and(|o| o.status.success())
}
