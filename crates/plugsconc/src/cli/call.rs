//! `plugsconc call`: grpcurl for plugins. Launches any go-plugin gRPC plugin (Go, Rust, Python)
//! with the go-plugin handshake, calls one unary method with a JSON body, prints the JSON reply
//! and shuts the plugin down.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use plugsconc_host::PluginClient;
use plugsconc_protocol::env::{HandshakeConfig, Transport};

use plugsconc_daemon::calls::{reflection, transcode};

/// Arguments of `plugsconc call`.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// The plugin executable.
    plugin: PathBuf,
    /// The method, as `package.Service/Method`.
    method: String,
    /// `.proto` file(s) declaring the service (repeatable); without any, the descriptors are
    /// read from the plugin's gRPC reflection.
    #[arg(long = "proto")]
    protos: Vec<PathBuf>,
    /// Extra import paths for the protos (repeatable).
    #[arg(long = "import-path", short = 'I')]
    import_paths: Vec<PathBuf>,
    /// The request as proto3 JSON.
    #[arg(long, short = 'd', default_value = "{}")]
    data: String,
    /// The plugin's magic cookie, `KEY=VALUE`.
    #[arg(long)]
    cookie: String,
    /// Application protocol version to offer.
    #[arg(long, default_value_t = 1)]
    protocol_version: u32,
    /// Use AutoMTLS.
    #[arg(long)]
    automtls: bool,
    /// Ask a plugsconc plugin to listen on TCP rather than a unix socket.
    #[arg(long)]
    tcp: bool,
    /// Seconds to wait for the plugin to start.
    #[arg(long, default_value_t = 30)]
    start_timeout: u64,
}

/// Reads the descriptors from the running plugin, then calls.
async fn reflected_call(
    client: &PluginClient,
    args: &CallArgs,
) -> anyhow::Result<Result<prost_reflect::DynamicMessage, tonic::Status>> {
    let pool = reflection::descriptors(client.channel()).await?;
    let method = transcode::find_method(&pool, &args.method)?;
    let request = transcode::request_from_json(&method, &args.data)?;
    Ok(transcode::call_unary(client.channel(), &method, request).await)
}

/// Runs the call and prints the reply on stdout.
pub async fn run(args: CallArgs) -> anyhow::Result<()> {
    let (key, value) = args
        .cookie
        .split_once('=')
        .context("--cookie must be KEY=VALUE")?;
    // With protos the request is checked before the plugin starts.
    let compiled = if args.protos.is_empty() {
        None
    } else {
        let pool = transcode::load(&args.protos, &args.import_paths)?;
        let method = transcode::find_method(&pool, &args.method)?;
        let request = transcode::request_from_json(&method, &args.data)?;
        Some((method, request))
    };
    let name = args
        .plugin
        .file_name()
        .map_or_else(|| "plugin".to_owned(), |n| n.to_string_lossy().into_owned());
    let client = PluginClient::builder(name, &args.plugin)
        .handshake(HandshakeConfig::new(args.protocol_version, key, value))
        .auto_mtls(args.automtls)
        .transport(if args.tcp {
            Transport::Tcp
        } else {
            Transport::Unix
        })
        .start_timeout(Duration::from_secs(args.start_timeout))
        .start()
        .await?;
    let reply = match compiled {
        Some((method, request)) => {
            Ok(transcode::call_unary(client.channel(), &method, request).await)
        }
        None => reflected_call(&client, &args).await,
    };
    client.kill().await?;
    let reply = reply?;
    let reply = reply.map_err(|status| {
        anyhow::anyhow!(
            "{} failed: {:?}: {}",
            args.method,
            status.code(),
            status.message()
        )
    })?;
    println!(
        "{}",
        serde_json::to_string_pretty(&transcode::response_to_json(&reply))?
    );
    Ok(())
}
