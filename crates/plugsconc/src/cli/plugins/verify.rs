//! `plugsconc plugins verify [name...]`: each entry point against its `.sha256` sidecar, the
//! check the host repeats before every exec.

use clap::Args;
use plugsconc_host::Discovery;
use serde_json::json;

use super::print_table;

/// Arguments of `plugins verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Plugins to verify (all valid ones when none is named).
    names: Vec<String>,
}

/// Verifies and prints one line per plugin; fails when any plugin fails.
pub async fn run(args: &VerifyArgs, discovery: &Discovery, json: bool) -> anyhow::Result<()> {
    for name in &args.names {
        if !discovery.plugins.iter().any(|p| &p.manifest.name == name) {
            anyhow::bail!("no valid plugin {name:?} in the folder");
        }
    }
    let mut results = Vec::new();
    for plugin in discovery
        .plugins
        .iter()
        .filter(|p| args.names.is_empty() || args.names.contains(&p.manifest.name))
    {
        let outcome = plugsconc_host::verify_entrypoint(plugin).await;
        results.push((plugin.manifest.name.clone(), outcome));
    }
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    if json {
        let view: Vec<_> = results
            .iter()
            .map(|(name, r)| match r {
                Ok(digest) => json!({"name": name, "ok": true, "sha256": digest.to_hex()}),
                Err(err) => json!({"name": name, "ok": false, "error": err.to_string()}),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        let rows: Vec<Vec<String>> = results
            .iter()
            .map(|(name, r)| match r {
                Ok(digest) => vec![name.clone(), "ok".into(), digest.to_hex()],
                Err(err) => vec![name.clone(), "FAILED".into(), err.to_string()],
            })
            .collect();
        print_table(&["NAME", "CHECKSUM", "DETAIL"], &rows);
    }
    if failed > 0 {
        anyhow::bail!("{failed} plugin(s) failed verification; they will not be started");
    }
    Ok(())
}
