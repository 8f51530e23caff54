//! `plugsconc plugins list`: the catalog — every plugin of the folder plus the built-in plugins
//! the configuration's `application.builtins` names — with status and the reason for it.

use clap::Args;
use plugsconc_host::registry::Status;
use plugsconc_host::{BuiltinSelection, Discovery, PluginInfo, Query, Registry, RegistryOptions};
use serde_json::{Value, json};

use super::{SHOWN_PROBLEMS, add_problems, print_table};

/// Arguments of `plugins list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only plugins of this type.
    #[arg(long = "type")]
    kind: Option<String>,
    /// Only plugins with this tag.
    #[arg(long)]
    tag: Option<String>,
    /// Only plugins with this status (discovered, invalid, disabled, ...).
    #[arg(long)]
    status: Option<Status>,
    /// Only plugins whose name or description contains this text.
    #[arg(long)]
    search: Option<String>,
}

/// Prints the list.
pub fn run(
    args: &ListArgs,
    discovery: &Discovery,
    builtins: BuiltinSelection,
    json: bool,
) -> anyhow::Result<()> {
    let registry = Registry::from_discovery(
        discovery.clone(),
        RegistryOptions {
            builtins,
            ..RegistryOptions::default()
        },
    );
    let plugins = registry.list(&Query {
        kind: args.kind.clone(),
        tag: args.tag.clone(),
        status: args.status,
        version: None,
        text: args.search.clone(),
    });
    let all: Vec<Value> = plugins.iter().map(|p| info_json(p, discovery)).collect();
    print(&all, json)?;
    if !json {
        // The table has room for one line per plugin; an invalid manifest's problems follow it.
        for invalid in discovery
            .invalid
            .iter()
            .filter(|i| plugins.iter().any(|p| p.dir.as_ref() == Some(&i.dir)))
        {
            println!();
            println!(
                "{} ({} problem(s)):",
                invalid.dir.display(),
                invalid.error.problems().len()
            );
            for line in invalid.error.summary(SHOWN_PROBLEMS).lines() {
                println!("  {line}");
            }
        }
        for unreadable in &discovery.unreadable {
            eprintln!("warning: {} (left out; try again)", unreadable.error);
        }
    }
    Ok(())
}

/// Prints the local catalog's entries as JSON or as a table.
fn print(plugins: &[Value], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(plugins)?);
        return Ok(());
    }
    table(
        plugins
            .iter()
            .map(|p| Row {
                name: p["name"].as_str(),
                version: p["version"].as_str(),
                kind: p["type"].as_str(),
                runtime: p["runtime"].as_str(),
                status: p["status"].as_str(),
                reason: p["reason"].as_str(),
                description: p["description"].as_str(),
            })
            .collect(),
    );
    Ok(())
}

/// One line of the table, from the local catalog or the daemon's.
struct Row<'a> {
    name: Option<&'a str>,
    version: Option<&'a str>,
    kind: Option<&'a str>,
    runtime: Option<&'a str>,
    status: Option<&'a str>,
    reason: Option<&'a str>,
    description: Option<&'a str>,
}

/// Prints the table: the reason where the status needs one, else the description.
fn table(rows: Vec<Row<'_>>) {
    let text = |v: Option<&str>| v.unwrap_or("-").to_owned();
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|p| {
            let status = text(p.status);
            let detail = match p.reason {
                Some(reason) if matches!(status.as_str(), "invalid" | "disabled" | "failed") => {
                    reason.to_owned()
                }
                _ => p.description.unwrap_or_default().to_owned(),
            };
            vec![
                text(p.name),
                text(p.version),
                text(p.kind),
                text(p.runtime),
                status,
                detail,
            ]
        })
        .collect();
    print_table(
        &[
            "NAME",
            "VERSION",
            "TYPE",
            "RUNTIME",
            "STATUS",
            "DESCRIPTION / REASON",
        ],
        &rows,
    );
}

/// The JSON view of a catalog entry; an invalid manifest adds where the problem is.
fn info_json(info: &PluginInfo, discovery: &Discovery) -> Value {
    let mut value = json!({
        "name": info.name,
        "type": info.kind,
        "version": info.version.as_ref().map(ToString::to_string),
        "runtime": info.runtime.as_str(),
        "status": info.status.as_str(),
        "reason": info.reason,
        "description": info.description,
        "tags": info.tags,
        "dir": info.dir,
        "manifest_sha256": info.manifest_sha256,
    });
    if let Some(invalid) = discovery
        .invalid
        .iter()
        .find(|i| Some(&i.dir) == info.dir.as_ref())
    {
        add_problems(&mut value, &invalid.error);
    }
    value
}

/// Lists through a running daemon.
pub async fn run_remote(
    args: &ListArgs,
    daemon: &crate::cli::client::Daemon,
    json: bool,
) -> anyhow::Result<()> {
    use crate::cli::client::encode;
    let mut query = Vec::new();
    for (key, value) in [
        ("type", &args.kind),
        ("tag", &args.tag),
        ("q", &args.search),
    ] {
        if let Some(value) = value {
            query.push(format!("{key}={}", encode(value)));
        }
    }
    if let Some(status) = args.status {
        query.push(format!("status={status}"));
    }
    let path = format!("/api/v1/plugins?{}", query.join("&"));
    let list: plugsconc_daemon::api::types::PluginList = daemon
        .call(
            tonic::codegen::http::Method::GET,
            &path,
            None,
            Default::default(),
        )
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list.plugins)?);
        return Ok(());
    }
    table(
        list.plugins
            .iter()
            .map(|p| Row {
                name: Some(&p.name),
                version: p.version.as_deref(),
                kind: p.kind.as_deref(),
                runtime: Some(&p.runtime),
                status: Some(&p.status),
                reason: p.reason.as_deref(),
                description: p.description.as_deref(),
            })
            .collect(),
    );
    Ok(())
}
