//! `plugsconc plugins list`: every plugin of the folder with its status.

use clap::Args;
use plugsconc_host::Discovery;

use super::{invalid_json, plugin_json, print_table};

/// Arguments of `plugins list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only plugins of this type.
    #[arg(long = "type")]
    kind: Option<String>,
    /// Only plugins with this tag.
    #[arg(long)]
    tag: Option<String>,
}

/// Prints the list.
pub fn run(args: &ListArgs, discovery: &Discovery, json: bool) -> anyhow::Result<()> {
    let plugins: Vec<_> = discovery
        .plugins
        .iter()
        .filter(|p| args.kind.as_ref().is_none_or(|k| &p.manifest.kind == k))
        .filter(|p| {
            args.tag
                .as_ref()
                .is_none_or(|t| p.manifest.tags.contains(t))
        })
        .collect();
    // Invalid plugins have no type or tags to filter on; show them only when not filtering.
    let show_invalid = args.kind.is_none() && args.tag.is_none();
    if json {
        let mut all: Vec<_> = plugins.iter().map(|p| plugin_json(p)).collect();
        if show_invalid {
            all.extend(discovery.invalid.iter().map(invalid_json));
        }
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    let mut rows: Vec<Vec<String>> = plugins
        .iter()
        .map(|p| {
            let m = &p.manifest;
            vec![
                m.name.clone(),
                m.version.to_string(),
                m.kind.clone(),
                "discovered".to_owned(),
                m.about.description.clone().unwrap_or_default(),
            ]
        })
        .collect();
    if show_invalid {
        rows.extend(discovery.invalid.iter().map(|i| {
            vec![
                i.dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                "-".to_owned(),
                "-".to_owned(),
                "invalid".to_owned(),
                i.error.to_string(),
            ]
        }));
    }
    print_table(
        &["NAME", "VERSION", "TYPE", "STATUS", "DESCRIPTION / ERROR"],
        &rows,
    );
    Ok(())
}
