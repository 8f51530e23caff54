//! `plugsconc keygen` and `plugsconc sign <plugin dir>`: publisher keys and plugin signatures
//! (minisign format, so `minisign -Vm manifest.yaml -p <publisher>.pub` checks them too;
//! `manifest.json` for a folder whose manifest is JSON).

use std::path::PathBuf;

use clap::Args;
use plugsconc_host::signature;

/// Arguments of `keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// The publisher's name: the files are `<name>.pub` and `<name>.key`.
    #[arg(long)]
    name: String,
    /// Folder to write the keys in.
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// Encrypt the secret key with the password in this environment variable (scrypt, as
    /// minisign does). Without it the key is stored unencrypted, readable by its owner only.
    #[arg(long, value_name = "VAR")]
    password_env: Option<String>,
    /// Replace existing key files.
    #[arg(long)]
    force: bool,
}

/// Arguments of `sign`.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The plugin's folder (holding manifest.yaml or manifest.json, and the binary).
    dir: PathBuf,
    /// The publisher's secret key (from `plugsconc keygen`).
    #[arg(long)]
    key: PathBuf,
    /// The key's password is in this environment variable (encrypted keys).
    #[arg(long, value_name = "VAR")]
    password_env: Option<String>,
}

fn password(var: Option<&String>) -> anyhow::Result<Option<String>> {
    var.map(|var| {
        std::env::var(var).map_err(|_| anyhow::anyhow!("environment variable {var} is not set"))
    })
    .transpose()
}

/// Writes a key pair.
pub async fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    let password = password(args.password_env.as_ref())?;
    let (public, secret) = tokio::task::spawn_blocking(move || {
        signature::keygen(&args.out, &args.name, password, args.force).map_err(anyhow::Error::from)
    })
    .await??;
    let key = signature::Publisher::load(&public)?;
    println!("public key: {} (key id {})", public.display(), key.key_id);
    println!(
        "secret key: {} (keep it private; mode 0600)",
        secret.display()
    );
    println!(
        "hosts trust this publisher with: plugsconc plugins --trust {} verify (or security.trusted_publishers)",
        public.display()
    );
    Ok(())
}

/// Signs a plugin folder.
pub async fn sign(args: SignArgs) -> anyhow::Result<()> {
    let password = password(args.password_env.as_ref())?;
    let signed = tokio::task::spawn_blocking(move || {
        signature::sign_plugin(&args.dir, &args.key, password).map_err(anyhow::Error::from)
    })
    .await??;
    println!(
        "signed {} {} (binary sha256 {}) with key {}: {}",
        signed.plugin,
        signed.version,
        signed.sha256.to_hex(),
        signed.key_id,
        signed.path.display()
    );
    println!(
        "the standard tool checks it too: minisign -Vm {} -p <publisher>.pub",
        // The signature sits beside the manifest it covers, named after it.
        signed.path.with_extension("").display()
    );
    Ok(())
}
