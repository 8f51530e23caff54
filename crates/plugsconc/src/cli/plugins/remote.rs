//! `plugins reload` and `plugins call`: actions only a running daemon can take (a reload
//! validates and swaps a running plugin; a call goes through the daemon's catalog and JSON
//! transcoding).

use clap::Args;
use tonic::codegen::http::Method;

use plugsconc_daemon::api::types::{CallReply, Change, ChangeList, ChangedPlugin};

use crate::cli::client::{Daemon, encode};

/// Arguments of `plugins reload`.
#[derive(Debug, Args)]
pub struct ReloadArgs {
    /// The plugin to rescan; the whole folder when omitted.
    name: Option<String>,
}

/// Arguments of `plugins call`.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// The plugin.
    name: String,
    /// `package.Service/Method`.
    method: String,
    /// The request message in proto3 JSON.
    #[arg(long, default_value = "{}")]
    data: String,
}

fn need(daemon: Option<&Daemon>) -> anyhow::Result<&Daemon> {
    daemon.ok_or_else(|| {
        anyhow::anyhow!(
            "no daemon answers (at the address in the data folder's daemon.json or the configured api.listen), or its api-token is missing: start `plugsconc serve`, or name it with --daemon host:port"
        )
    })
}

/// Rescans one plugin or the folder through the daemon.
pub async fn reload(args: &ReloadArgs, daemon: Option<&Daemon>, json: bool) -> anyhow::Result<()> {
    let daemon = need(daemon)?;
    let changes = match &args.name {
        Some(name) => {
            let path = format!("/api/v1/plugins/{}/reload", encode(name));
            let change: Change = daemon
                .call(Method::POST, &path, None, Default::default())
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&change)?);
                return Ok(());
            }
            vec![change]
        }
        None => {
            let list: ChangeList = daemon
                .call(Method::POST, "/api/v1/reload", None, Default::default())
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            list.changes
        }
    };
    for change in changes {
        let what = change.change.as_str();
        // A built-in plugin's reload names its whole entry; the line then names none.
        let plugin = match &change.plugin {
            Some(ChangedPlugin::Name(name)) => name.as_str(),
            Some(ChangedPlugin::Entry(_)) | None => "",
        };
        match &change.reason {
            Some(reason) => println!("{plugin}: {what}: {reason}"),
            None => println!(
                "{plugin}{}{what}",
                if plugin.is_empty() { "" } else { ": " }
            ),
        }
    }
    Ok(())
}

/// Calls a unary method of a plugin through the daemon; prints the reply's JSON.
pub async fn call(args: &CallArgs, daemon: Option<&Daemon>) -> anyhow::Result<()> {
    let daemon = need(daemon)?;
    let (service, method) = args
        .method
        .trim_start_matches('/')
        .split_once('/')
        .ok_or_else(|| anyhow::anyhow!("{:?}: expected package.Service/Method", args.method))?;
    let path = format!(
        "/api/v1/plugins/{}/call/{}/{}",
        encode(&args.name),
        encode(service),
        encode(method)
    );
    // The request is the plugin's own JSON, passed on as the user wrote it.
    let reply: CallReply = daemon
        .call(
            Method::POST,
            &path,
            Some("application/json"),
            args.data.clone().into(),
        )
        .await?;
    println!("{}", serde_json::to_string_pretty(&reply.response)?);
    Ok(())
}
