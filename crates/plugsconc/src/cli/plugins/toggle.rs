//! `plugsconc plugins enable|disable <name>`: the `.disabled` marker in a plugin's folder. A
//! host watching the folder applies it at once (a disabled running plugin is drained and
//! stopped); a host that starts later reads it.

use clap::Args;
use plugsconc_host::{DISABLED_MARKER, Discovery};

/// Arguments of `plugins enable` and `plugins disable`.
#[derive(Debug, Args)]
pub struct ToggleArgs {
    /// The plugin's name (or, for an invalid plugin, its folder's name).
    name: String,
}

/// Writes or removes the marker.
pub fn run(args: &ToggleArgs, discovery: &Discovery, disable: bool) -> anyhow::Result<()> {
    let dir = discovery
        .find(&args.name)
        .map(|found| found.dir().to_owned());
    let Some(dir) = dir else {
        if plugsconc_host::builtins().any(|b| b.name == args.name) {
            anyhow::bail!(
                "{} is a built-in plugin: it has no folder to hold its state; disable it through a running daemon",
                args.name
            );
        }
        anyhow::bail!(
            "no plugin named {:?} in the plugins folder (known: {})",
            args.name,
            discovery.names().join(", ")
        );
    };
    let marker = dir.join(DISABLED_MARKER);
    if disable {
        std::fs::write(&marker, b"disabled with `plugsconc plugins disable`\n")
            .map_err(|err| anyhow::anyhow!("cannot write {}: {err}", marker.display()))?;
        println!("{} disabled ({})", args.name, marker.display());
    } else {
        match std::fs::remove_file(&marker) {
            Ok(()) => println!("{} enabled", args.name),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                println!("{} was not disabled", args.name);
            }
            Err(err) => anyhow::bail!("cannot remove {}: {err}", marker.display()),
        }
    }
    Ok(())
}

/// Enables or disables through a running daemon.
pub async fn run_remote(
    args: &ToggleArgs,
    daemon: &crate::cli::client::Daemon,
    disable: bool,
) -> anyhow::Result<()> {
    let action = if disable { "disable" } else { "enable" };
    let path = format!(
        "/api/v1/plugins/{}/{action}",
        crate::cli::client::encode(&args.name)
    );
    let plugin: plugsconc_daemon::api::types::Plugin = daemon
        .call(
            tonic::codegen::http::Method::POST,
            &path,
            None,
            Default::default(),
        )
        .await?;
    println!(
        "{} {} through the daemon at {} (status {})",
        args.name,
        if disable { "disabled" } else { "enabled" },
        daemon.base(),
        plugin.status
    );
    Ok(())
}
