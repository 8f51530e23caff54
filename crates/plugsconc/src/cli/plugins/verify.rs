//! `plugsconc plugins verify [name...]`: the checks the host makes before every exec — each
//! entry point against its `.sha256` sidecar, and the signature policy — reported separately
//! for every plugin.

use clap::Args;
use plugsconc_host::signature::{Trust, Verdict};
use plugsconc_host::{Discovered, Discovery, Sha256};
use serde_json::{Value, json};

use super::print_table;

/// Arguments of `plugins verify` (the signature policy is on `plugins` itself).
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Plugins to verify (all valid ones when none is named).
    names: Vec<String>,
}

/// What became of the signature check.
enum SignatureCheck {
    Passed(Verdict),
    Failed(String),
    /// The binary could not be hashed, so there was nothing to check the signature against.
    NotChecked(String),
}

struct Outcome {
    name: String,
    checksum: Result<Sha256, String>,
    signature: SignatureCheck,
}

impl Outcome {
    fn ok(&self) -> bool {
        self.checksum.is_ok() && matches!(self.signature, SignatureCheck::Passed(_))
    }

    /// Every failure, checksum first, for the table and the JSON `error`.
    fn failures(&self) -> Vec<&str> {
        let mut failures = Vec::new();
        if let Err(err) = &self.checksum {
            failures.push(err.as_str());
        }
        if let SignatureCheck::Failed(err) | SignatureCheck::NotChecked(err) = &self.signature {
            failures.push(err.as_str());
        }
        failures
    }

    fn json(&self) -> Value {
        let checksum = match &self.checksum {
            Ok(digest) => json!({"ok": true, "sha256": digest.to_hex()}),
            Err(err) => json!({"ok": false, "error": err}),
        };
        let signature = match &self.signature {
            SignatureCheck::Passed(verdict @ Verdict::Signed { publisher, key_id }) => json!({
                "ok": true, "status": "signed", "publisher": publisher, "key_id": key_id,
                "detail": verdict.to_string(),
            }),
            SignatureCheck::Passed(verdict @ Verdict::Unsigned { allowed_by }) => json!({
                "ok": true, "status": "unsigned", "allowed_by": allowed_by.to_string(),
                "detail": verdict.to_string(),
            }),
            SignatureCheck::Failed(err) => json!({"ok": false, "status": "refused", "error": err}),
            SignatureCheck::NotChecked(err) => {
                json!({"ok": false, "status": "not checked", "error": err})
            }
        };
        let mut view = json!({
            "name": self.name,
            "ok": self.ok(),
            "checksum": checksum,
            "signature": signature,
        });
        if let Some(first) = self.failures().first() {
            view["error"] = json!(first);
        }
        view
    }

    fn row(&self) -> Vec<String> {
        let checksum = if self.checksum.is_ok() {
            "ok"
        } else {
            "FAILED"
        };
        let signature = match &self.signature {
            SignatureCheck::Passed(_) => "ok",
            SignatureCheck::Failed(_) => "FAILED",
            SignatureCheck::NotChecked(_) => "-",
        };
        let mut detail: Vec<String> = self.failures().iter().map(|s| (*s).to_owned()).collect();
        if let SignatureCheck::Passed(verdict) = &self.signature {
            detail.push(verdict.to_string());
        }
        vec![
            self.name.clone(),
            checksum.into(),
            signature.into(),
            detail.join("; "),
        ]
    }
}

async fn verify(plugin: &Discovered, trust: &Trust) -> Outcome {
    let checksum = plugsconc_host::verify_entrypoint(plugin)
        .await
        .map_err(|err| err.to_string());
    // The signature binds the binary itself: when the sidecar is missing or stale, check it
    // against the file's own hash, so both results are reported.
    let digest = match &checksum {
        Ok(digest) => Ok(*digest),
        Err(_) => {
            let path = plugin.entrypoint();
            tokio::task::spawn_blocking(move || {
                plugsconc_host::sha256_file(&path)
                    .map_err(|err| format!("cannot read {} to check it: {err}", path.display()))
            })
            .await
            .unwrap_or_else(|err| Err(err.to_string()))
        }
    };
    let signature = match digest {
        Ok(digest) => {
            let (owned, trust) = (plugin.clone(), trust.clone());
            let checked = tokio::task::spawn_blocking(move || {
                plugsconc_host::signature::check(&owned, &digest, &trust)
                    .map_err(|err| err.to_string())
            })
            .await
            .unwrap_or_else(|err| Err(err.to_string()));
            match checked {
                Ok(verdict) => SignatureCheck::Passed(verdict),
                Err(err) => SignatureCheck::Failed(err),
            }
        }
        Err(why) => SignatureCheck::NotChecked(why),
    };
    Outcome {
        name: plugin.manifest.name.clone(),
        checksum,
        signature,
    }
}

/// Verifies and prints one line per plugin; fails when any plugin fails either check.
pub async fn run(
    args: &VerifyArgs,
    discovery: &Discovery,
    trust: &Trust,
    json: bool,
) -> anyhow::Result<()> {
    for name in &args.names {
        if !discovery.plugins.iter().any(|p| &p.manifest.name == name) {
            if let Some(plugsconc_host::Found::Invalid(invalid)) = discovery.find(name) {
                anyhow::bail!(
                    "plugin {name:?} has an invalid manifest ({} problem(s)):\n{}",
                    invalid.error.problems().len(),
                    invalid.error.summary(super::SHOWN_PROBLEMS)
                );
            }
            anyhow::bail!("no valid plugin {name:?} in the folder");
        }
    }
    if args.names.is_empty() {
        for invalid in &discovery.invalid {
            eprintln!(
                "note: {} is not verified, its manifest is invalid: {}",
                invalid.dir.display(),
                invalid.error
            );
        }
    }
    let mut results = Vec::new();
    for plugin in discovery
        .plugins
        .iter()
        .filter(|p| args.names.is_empty() || args.names.contains(&p.manifest.name))
    {
        results.push(verify(plugin, trust).await);
    }
    if json {
        let view: Vec<Value> = results.iter().map(Outcome::json).collect();
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        let rows: Vec<Vec<String>> = results.iter().map(Outcome::row).collect();
        print_table(&["NAME", "CHECKSUM", "SIGNATURE", "DETAIL"], &rows);
    }
    let failed = results.iter().filter(|r| !r.ok()).count();
    if failed > 0 {
        anyhow::bail!("{failed} plugin(s) failed verification; a host would refuse to start them");
    }
    Ok(())
}
