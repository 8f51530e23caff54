//! `plugsconc plugins verify [name...]`: the checks the host makes before every exec — each
//! entry point against its `.sha256` sidecar, then the signature policy.

use std::path::PathBuf;

use clap::Args;
use plugsconc_host::signature::{Publisher, SignaturePolicy, Trust};
use plugsconc_host::{Discovered, Discovery};
use serde_json::json;

use super::print_table;

/// Arguments of `plugins verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Plugins to verify (all valid ones when none is named).
    names: Vec<String>,
    /// A trusted publisher's public key (repeatable).
    #[arg(long, value_name = "FILE.pub")]
    trust: Vec<PathBuf>,
    /// Accept unsigned plugins (with a warning), as a development host would. By default a
    /// signature from a trusted publisher is required, as in production.
    #[arg(long)]
    allow_unsigned: bool,
    /// Accept this unsigned plugin by name (repeatable).
    #[arg(long, value_name = "NAME")]
    unsigned: Vec<String>,
}

impl VerifyArgs {
    fn trust(&self) -> anyhow::Result<Trust> {
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

struct Outcome {
    name: String,
    sha256: Option<String>,
    signature: Result<String, String>,
}

async fn verify(plugin: &Discovered, trust: &Trust) -> Outcome {
    let name = plugin.manifest.name.clone();
    let digest = match plugsconc_host::verify_entrypoint(plugin).await {
        Ok(digest) => digest,
        Err(err) => {
            return Outcome {
                name,
                sha256: None,
                signature: Err(err.to_string()),
            };
        }
    };
    let (owned, trust) = (plugin.clone(), trust.clone());
    let verdict = tokio::task::spawn_blocking(move || {
        plugsconc_host::signature::check(&owned, &digest, &trust).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r.map(|v| v.to_string()));
    Outcome {
        name,
        sha256: Some(digest.to_hex()),
        signature: verdict,
    }
}

/// Verifies and prints one line per plugin; fails when any plugin fails.
pub async fn run(args: &VerifyArgs, discovery: &Discovery, json: bool) -> anyhow::Result<()> {
    for name in &args.names {
        if !discovery.plugins.iter().any(|p| &p.manifest.name == name) {
            anyhow::bail!("no valid plugin {name:?} in the folder");
        }
    }
    let trust = args.trust()?;
    let mut results = Vec::new();
    for plugin in discovery
        .plugins
        .iter()
        .filter(|p| args.names.is_empty() || args.names.contains(&p.manifest.name))
    {
        results.push(verify(plugin, &trust).await);
    }
    let failed = results.iter().filter(|r| r.signature.is_err()).count();
    if json {
        let view: Vec<_> = results
            .iter()
            .map(|r| match &r.signature {
                Ok(verdict) => {
                    json!({"name": r.name, "ok": true, "sha256": r.sha256, "signature": verdict})
                }
                Err(err) => json!({"name": r.name, "ok": false, "sha256": r.sha256, "error": err}),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        let rows: Vec<Vec<String>> = results
            .iter()
            .map(|r| {
                let checksum = if r.sha256.is_some() { "ok" } else { "FAILED" };
                match &r.signature {
                    Ok(verdict) => vec![
                        r.name.clone(),
                        checksum.into(),
                        "ok".into(),
                        verdict.clone(),
                    ],
                    Err(err) => {
                        let signature = if r.sha256.is_some() { "FAILED" } else { "-" };
                        vec![
                            r.name.clone(),
                            checksum.into(),
                            signature.into(),
                            err.clone(),
                        ]
                    }
                }
            })
            .collect();
        print_table(&["NAME", "CHECKSUM", "SIGNATURE", "DETAIL"], &rows);
    }
    if failed > 0 {
        anyhow::bail!("{failed} plugin(s) failed verification; they will not be started");
    }
    Ok(())
}
