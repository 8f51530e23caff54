//! `plugsconc plugins info <name>`: one plugin's manifest, or why it is invalid.

use clap::Args;
use plugsconc_host::{Discovery, Found};

use super::{SHOWN_PROBLEMS, invalid_json, plugin_json};

/// Arguments of `plugins info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The plugin's name (its folder name).
    name: String,
}

/// Prints the plugin.
pub fn run(args: &InfoArgs, discovery: &Discovery, json: bool) -> anyhow::Result<()> {
    let found = discovery.find(&args.name);
    let view = match found {
        Some(Found::Valid(plugin)) => plugin_json(plugin),
        Some(Found::Invalid(invalid)) => invalid_json(invalid),
        None => anyhow::bail!(
            "no plugin {:?} in the folder; known: {}",
            args.name,
            discovery.names().join(", ")
        ),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(());
    }
    if let Some(object) = view.as_object() {
        for (key, value) in object.iter().filter(|(key, _)| *key != "problems") {
            let text = match value {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => "-".to_owned(),
                other => other.to_string(),
            };
            println!("{key:<16} {text}");
        }
    }
    if let Some(Found::Invalid(invalid)) = found {
        println!("problems:");
        for line in invalid.error.summary(SHOWN_PROBLEMS).lines() {
            println!("  {line}");
        }
    }
    Ok(())
}
