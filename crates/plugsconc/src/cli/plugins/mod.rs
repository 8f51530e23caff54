//! `plugsconc plugins ...`: the catalog of a plugins folder, read directly (no daemon needed).

mod info;
mod install;
mod list;
mod remote;
mod toggle;
mod verify;

use std::path::PathBuf;

use clap::{Args, Subcommand};
use plugsconc_host::signature::{Publisher, SignaturePolicy, Trust};
use plugsconc_host::{Discovered, Discovery, Invalid};
use serde_json::{Value, json};

/// Arguments shared by every `plugins` subcommand.
#[derive(Debug, Args)]
pub struct PluginsArgs {
    /// The plugins folder (one sub-folder with a manifest.yaml or manifest.json per plugin; by
    /// default the configuration's directories.plugins_dir, `plugins`).
    #[arg(long, global = true, env = "PLUGSCONC_PLUGINS_DIR")]
    dir: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Work on the folder even when a daemon is running (by default list, enable, disable,
    /// install and uninstall go through the running daemon, when one answers: --daemon, else the
    /// one the data folder's daemon.json names, else the configuration's api.listen).
    #[arg(long, global = true)]
    local: bool,
    #[command(flatten)]
    trust: TrustArgs,
    /// The configuration (the daemon's address and data folder, the plugins folder, the
    /// built-in plugins listed).
    #[command(flatten)]
    config: crate::cli::ConfigFlags,
    #[command(subcommand)]
    command: PluginsCommand,
}

/// Which signatures `verify` accepts; the same choices as the daemon's `security` section.
#[derive(Debug, Args)]
#[command(next_help_heading = "Signature policy (used by verify and install)")]
pub struct TrustArgs {
    /// A trusted publisher's public key, as written by `plugsconc keygen` (repeatable).
    #[arg(long, global = true, value_name = "FILE.pub")]
    trust: Vec<PathBuf>,
    /// Accept unsigned plugins (with a warning), as a development host does. Without it an
    /// unsigned plugin fails, as on a production host.
    #[arg(long, global = true)]
    allow_unsigned: bool,
    /// Accept this unsigned plugin by name (repeatable): an explicit allow-list.
    #[arg(long, global = true, value_name = "NAME")]
    unsigned: Vec<String>,
}

impl TrustArgs {
    /// Loads the trusted keys into the host's trust settings.
    fn load(&self) -> anyhow::Result<Trust> {
        Ok(Trust {
            policy: if self.allow_unsigned {
                SignaturePolicy::AllowUnsigned
            } else {
                SignaturePolicy::RequireSigned
            },
            publishers: self
                .trust
                .iter()
                .map(|path| Publisher::load(path).map_err(anyhow::Error::from))
                .collect::<Result<_, _>>()?,
            unsigned_allowed: self.unsigned.iter().cloned().collect(),
        })
    }
}

#[derive(Debug, Subcommand)]
enum PluginsCommand {
    /// List every plugin of the folder, valid or not.
    List(list::ListArgs),
    /// Show one plugin's manifest, or why it is invalid.
    Info(info::InfoArgs),
    /// Check plugins as the host does before exec: the binary against its `.sha256` sidecar,
    /// and the signature against the trusted publishers (--trust).
    ///
    /// A signature from a trusted publisher is required by default, as on a production host, so
    /// an unsigned plugin fails: --unsigned NAME accepts one by name, --allow-unsigned accepts
    /// them all, as a development host does. A plugin that has a signature is always verified,
    /// whatever the policy. Both results are reported for every plugin; the exit status is
    /// non-zero when any plugin fails either check.
    Verify(verify::VerifyArgs),
    /// Turn a plugin on again (removes its `.disabled` marker).
    Enable(toggle::ToggleArgs),
    /// Turn a plugin off (writes a `.disabled` marker in its folder).
    Disable(toggle::ToggleArgs),
    /// Install a plugin from a folder or a .tar.gz bundle: validated (manifest, checksum,
    /// signature policy) in a staging folder, then moved into place.
    Install(install::InstallArgs),
    /// Remove a plugin's folder.
    Uninstall(install::UninstallArgs),
    /// Ask the running daemon to rescan a plugin (or the folder): changed plugins are validated,
    /// started beside the old version and swapped in.
    Reload(remote::ReloadArgs),
    /// Call a unary method of a plugin through the running daemon, JSON in and out.
    Call(remote::CallArgs),
}

/// Runs a `plugins` subcommand; `address` is the daemon `--daemon` names.
pub async fn run(args: PluginsArgs, address: Option<&str>) -> anyhow::Result<()> {
    use PluginsCommand as C;
    let PluginsArgs {
        dir,
        json,
        local,
        trust,
        config,
        command,
    } = args;
    // Reload and call need the daemon; list and the changes go through it when one answers,
    // unless --local; info and verify read the folder.
    let ask_daemon = match &command {
        C::Reload(_) | C::Call(_) => true,
        C::List(_) | C::Enable(_) | C::Disable(_) | C::Install(_) | C::Uninstall(_) => !local,
        C::Info(_) | C::Verify(_) => false,
    };
    // Read only when something needs it: info and verify on a named folder work whatever the
    // configuration file holds.
    let config = if ask_daemon || dir.is_none() || matches!(command, C::List(_)) {
        Some(config.load()?.config)
    } else {
        None
    };
    let daemon = match &config {
        Some(config) if ask_daemon => crate::cli::client::Daemon::find(config, address).await?,
        _ => None,
    };
    let dir = match (dir, &config) {
        (Some(dir), _) => dir,
        (None, Some(config)) => config.directories.plugins_dir.clone(),
        (None, None) => PathBuf::from("plugins"),
    };
    let builtins = plugsconc_host::BuiltinSelection::Only(
        config
            .iter()
            .flat_map(|c| c.application.builtins.iter().cloned())
            .collect(),
    );
    match (command, daemon) {
        (C::Reload(reload), daemon) => remote::reload(&reload, daemon.as_ref(), json).await,
        (C::Call(call), daemon) => remote::call(&call, daemon.as_ref()).await,
        (C::List(list), Some(daemon)) => list::run_remote(&list, &daemon, json).await,
        (C::List(list), None) => list::run(&list, &scan(&dir).await?, builtins, json),
        (C::Info(info), _) => info::run(&info, &scan(&dir).await?, json),
        (C::Verify(verify), _) => {
            verify::run(&verify, &scan(&dir).await?, &trust.load()?, json).await
        }
        (C::Enable(toggle), Some(daemon)) => toggle::run_remote(&toggle, &daemon, false).await,
        (C::Enable(toggle), None) => toggle::run(&toggle, &scan(&dir).await?, false),
        (C::Disable(toggle), Some(daemon)) => toggle::run_remote(&toggle, &daemon, true).await,
        (C::Disable(toggle), None) => toggle::run(&toggle, &scan(&dir).await?, true),
        (C::Install(install), Some(daemon)) => install::install_remote(install, &daemon).await,
        (C::Install(install), None) => {
            // The configured scanners, sharing the daemon's verdicts: what passes here is not
            // scanned again at its first launch.
            let scanners = match &config {
                Some(config) => config.security.scanners(&config.directories.data_dir)?,
                None => plugsconc_host::Scanners::default(),
            };
            install::install(install, &dir, trust.load()?, scanners).await
        }
        (C::Uninstall(uninstall), Some(daemon)) => {
            install::uninstall_remote(&uninstall, &daemon).await
        }
        (C::Uninstall(uninstall), None) => install::uninstall(&uninstall, &scan(&dir).await?).await,
    }
}

/// Discovers the plugins folder off the async threads.
async fn scan(dir: &std::path::Path) -> anyhow::Result<Discovery> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || plugsconc_host::discover(&dir).map_err(anyhow::Error::from))
        .await?
}

/// The JSON view of a valid plugin.
fn plugin_json(plugin: &Discovered) -> Value {
    let m = &plugin.manifest;
    json!({
        "name": m.name,
        "type": m.kind,
        "version": m.version.to_string(),
        "status": "discovered",
        "dir": plugin.dir,
        "entrypoint": m.entrypoint,
        "language": m.language,
        "description": m.about.description,
        "maintainer": m.about.maintainer,
        "url": m.about.url,
        "tags": m.tags,
        "handshake": {
            "protocol_version": m.handshake.protocol_version,
            "magic_cookie_key": m.handshake.magic_cookie_key,
        },
        "auto_mtls": m.security.auto_mtls,
        "dependencies": m.dependencies.iter().map(|d| json!({"name": d.name, "version": d.version.to_string()})).collect::<Vec<_>>(),
        "manifest_sha256": plugin.manifest_sha256.to_hex(),
    })
}

/// The JSON view of an invalid plugin folder.
fn invalid_json(invalid: &Invalid) -> Value {
    let mut view = json!({
        "name": invalid.dir.file_name().map(|n| n.to_string_lossy().into_owned()),
        "status": "invalid",
        "dir": invalid.dir,
    });
    add_problems(&mut view, &invalid.error);
    view
}

/// How many problems of an invalid manifest the text output shows.
const SHOWN_PROBLEMS: usize = 5;

/// Adds a manifest error to a JSON view: the first problem (`error`, `line`, `column`,
/// `field`), then every problem and their count.
fn add_problems(view: &mut Value, error: &plugsconc_host::manifest::ManifestError) {
    let problems = error.problems();
    let first = problems.first();
    view["error"] = json!(error.to_string());
    view["line"] = json!(first.map_or(0, |p| p.line));
    view["column"] = json!(first.map_or(0, |p| p.column));
    view["field"] = json!(first.map_or("", |p| p.field.as_str()));
    view["problem_count"] = json!(problems.len());
    view["problems"] = problems
        .iter()
        .map(
            |p| json!({"line": p.line, "column": p.column, "field": p.field, "message": p.message}),
        )
        .collect();
}

/// Prints rows as aligned columns under a header.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let text: Vec<String> = cells
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    c
                } else {
                    format!("{c:<width$}", width = widths[i])
                }
            })
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(row.clone());
    }
}

/// `plugsconc install`: `plugins install` under its own name.
#[derive(Debug, Args)]
pub struct InstallCommand {
    /// The plugins folder to install into when no daemon is running (by default the
    /// configuration's directories.plugins_dir, `plugins`).
    #[arg(long, env = "PLUGSCONC_PLUGINS_DIR")]
    dir: Option<PathBuf>,
    /// Install into the folder even when a daemon is running.
    #[arg(long)]
    local: bool,
    #[command(flatten)]
    install: install::InstallArgs,
    #[command(flatten)]
    trust: TrustArgs,
    #[command(flatten)]
    config: crate::cli::ConfigFlags,
}

/// Runs `plugsconc install`.
pub async fn install_command(args: InstallCommand, address: Option<&str>) -> anyhow::Result<()> {
    run(
        PluginsArgs {
            dir: args.dir,
            json: false,
            local: args.local,
            trust: args.trust,
            config: args.config,
            command: PluginsCommand::Install(args.install),
        },
        address,
    )
    .await
}
