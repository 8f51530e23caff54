//! `plugsconc plugins install <folder|bundle.tar.gz>` and `plugins uninstall <name>` on a
//! plugins folder: the same staged, validated, renamed-into-place install the daemon's API does,
//! under the signature policy given to `plugins` (--trust, --unsigned, --allow-unsigned) and the
//! configured `security.scan_commands`. A
//! daemon watching the folder picks the change up (an upgrade is hot-reloaded, an uninstalled
//! plugin is drained and stopped).

use std::path::{Path, PathBuf};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use plugsconc_host::Discovery;
use plugsconc_host::install::{Installer, uninstall_dir};
use plugsconc_host::signature::Trust;

/// Arguments of `plugins install`.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// A plugin folder, or a `.tar.gz` bundle of one.
    source: PathBuf,
    /// Replace an installed plugin of the same name (an upgrade).
    #[arg(long)]
    replace: bool,
    /// Install without a matching `.sha256` sidecar. Insecure.
    #[arg(long)]
    insecure_skip_checksum: bool,
}

/// Arguments of `plugins uninstall`.
#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// The plugin's name.
    name: String,
}

/// Installs, with a progress bar while a bundle is unpacked.
pub async fn install(
    args: InstallArgs,
    root: &Path,
    trust: Trust,
    scanners: plugsconc_host::Scanners,
) -> anyhow::Result<()> {
    let root = root.to_owned();
    let installed = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        std::fs::create_dir_all(&root)?;
        plugsconc_host::install::remove_leftovers(&root)?;
        let installer = Installer::new(&root, &trust)
            .insecure_skip_checksum(args.insecure_skip_checksum)
            .replace(args.replace)
            .scanners(&scanners);
        if args.source.is_dir() {
            return Ok(installer.dir(&args.source)?);
        }
        let file = std::fs::File::open(&args.source)
            .map_err(|err| anyhow::anyhow!("cannot read {}: {err}", args.source.display()))?;
        let size = file.metadata().map_or(0, |m| m.len());
        let bar = ProgressBar::new(size).with_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message(format!("unpacking {}", args.source.display()));
        let result = installer.tar_gz(bar.wrap_read(file), &args.source);
        bar.finish_and_clear();
        Ok(result?)
    })
    .await??;
    println!(
        "{} {} {} in {} ({})",
        if installed.replaced {
            "upgraded"
        } else {
            "installed"
        },
        installed.plugin.manifest.name,
        installed.plugin.manifest.version,
        installed.plugin.dir.display(),
        installed.verdict
    );
    Ok(())
}

/// Removes a plugin's folder.
pub async fn uninstall(args: &UninstallArgs, discovery: &Discovery) -> anyhow::Result<()> {
    let dir = discovery
        .find(&args.name)
        .map(|found| found.dir().to_owned())
        .ok_or_else(|| anyhow::anyhow!("no plugin named {:?} in the plugins folder", args.name))?;
    let aside =
        tokio::task::spawn_blocking(move || uninstall_dir(&dir).map_err(anyhow::Error::from))
            .await??;
    tokio::task::spawn_blocking(move || std::fs::remove_dir_all(aside)).await??;
    println!("uninstalled {}", args.name);
    Ok(())
}

/// Installs through a running daemon: a folder by its path, a bundle uploaded.
pub async fn install_remote(
    args: InstallArgs,
    daemon: &crate::cli::client::Daemon,
) -> anyhow::Result<()> {
    use plugsconc_daemon::api::types::{InstallFromPath, Installed};
    use tonic::codegen::http::Method;
    let path = format!("/api/v1/plugins/install?replace={}", args.replace);
    let body: Installed = if args.source.is_dir() {
        // The daemon has its own working folder.
        let absolute = std::path::absolute(&args.source)?;
        daemon
            .call_json(Method::POST, &path, &InstallFromPath { path: absolute })
            .await?
    } else {
        let source = args.source.clone();
        let bytes = tokio::task::spawn_blocking(move || std::fs::read(&source))
            .await?
            .map_err(|err| anyhow::anyhow!("cannot read {}: {err}", args.source.display()))?;
        let bar = ProgressBar::new_spinner();
        bar.set_message(format!(
            "uploading {} ({} bytes) to {}",
            args.source.display(),
            bytes.len(),
            daemon.base()
        ));
        bar.enable_steady_tick(std::time::Duration::from_millis(100));
        let result = daemon
            .call(Method::POST, &path, Some("application/gzip"), bytes.into())
            .await;
        bar.finish_and_clear();
        result?
    };
    println!(
        "{} {} {} through the daemon at {} ({})",
        if body.replaced {
            "upgraded"
        } else {
            "installed"
        },
        body.plugin.as_ref().map_or("?", |p| p.name.as_str()),
        body.plugin
            .as_ref()
            .and_then(|p| p.version.as_deref())
            .unwrap_or("?"),
        daemon.base(),
        body.signature
    );
    Ok(())
}

/// Uninstalls through a running daemon.
pub async fn uninstall_remote(
    args: &UninstallArgs,
    daemon: &crate::cli::client::Daemon,
) -> anyhow::Result<()> {
    let path = format!(
        "/api/v1/plugins/{}/uninstall",
        crate::cli::client::encode(&args.name)
    );
    let _: plugsconc_daemon::api::types::Uninstalled = daemon
        .call(
            tonic::codegen::http::Method::POST,
            &path,
            None,
            Default::default(),
        )
        .await?;
    println!(
        "uninstalled {} through the daemon at {}",
        args.name,
        daemon.base()
    );
    Ok(())
}
