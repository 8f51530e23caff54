//! `plugsconc config show`: the effective configuration, and where each value came from.

use clap::{Args, Subcommand};

use super::ConfigFlags;

/// Arguments of `config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(flatten)]
    config: ConfigFlags,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print every key with its effective value and its source (default, file, env, --set).
    Show,
}

/// Runs a `config` subcommand.
pub fn run(args: &ConfigArgs) -> anyhow::Result<()> {
    let ConfigCommand::Show = args.command;
    let mut loaded = args.config.load()?;
    // Secrets are shown as set or not, never printed.
    if let Some((value, _)) = loaded.keys.get_mut("api.token")
        && value.as_str().is_some_and(|t| !t.is_empty())
    {
        *value = serde_json::json!("<set>");
    }
    let signatures = if loaded.config.allow_unsigned() {
        "unsigned plugins allowed (with a warning)"
    } else {
        "signatures from trusted publishers required"
    };
    if args.json {
        let mut view: serde_json::Map<String, serde_json::Value> = loaded
            .keys
            .iter()
            .map(|(key, (value, source))| {
                (
                    key.clone(),
                    serde_json::json!({"value": value, "source": source.to_string()}),
                )
            })
            .collect();
        view.insert("effective.signatures".into(), serde_json::json!(signatures));
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(());
    }
    let width = loaded.keys.keys().map(String::len).max().unwrap_or(0);
    let values: Vec<String> = loaded.keys.values().map(|(v, _)| v.to_string()).collect();
    let value_width = values.iter().map(String::len).max().unwrap_or(0);
    for ((key, (_, source)), value) in loaded.keys.iter().zip(&values) {
        println!("{key:<width$}  {value:<value_width$}  {source}");
    }
    println!("\neffective signature policy: {signatures}");
    Ok(())
}
