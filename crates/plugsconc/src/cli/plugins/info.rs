//! `plugsconc plugins info <name>`: one plugin's manifest, or why it is invalid.

use clap::Args;
use plugsconc_host::Discovery;

use super::{invalid_json, plugin_json};

/// Arguments of `plugins info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The plugin's name (its folder name).
    name: String,
}

/// Prints the plugin.
pub fn run(args: &InfoArgs, discovery: &Discovery, json: bool) -> anyhow::Result<()> {
    let view = if let Some(plugin) = discovery
        .plugins
        .iter()
        .find(|p| p.manifest.name == args.name)
    {
        plugin_json(plugin)
    } else if let Some(invalid) = discovery.invalid.iter().find(|i| {
        i.dir
            .file_name()
            .is_some_and(|n| n.to_string_lossy() == args.name)
    }) {
        invalid_json(invalid)
    } else {
        let known: Vec<_> = discovery
            .plugins
            .iter()
            .map(|p| p.manifest.name.as_str())
            .collect();
        anyhow::bail!(
            "no plugin {:?} in the folder; known: {}",
            args.name,
            known.join(", ")
        );
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(());
    }
    if let Some(object) = view.as_object() {
        for (key, value) in object {
            let text = match value {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => "-".to_owned(),
                other => other.to_string(),
            };
            println!("{key:<16} {text}");
        }
    }
    Ok(())
}
