//! Installs, uninstalls and reloads shared by the daemons of one catalog (a PostgreSQL store).
//! The daemon that installs a plugin keeps its folder, packed as a bundle, in the store and
//! announces it; every other daemon installs that bundle into its own plugins folder — through
//! the same staging, checksum and signature policy as any install, under its own trust — and
//! hot-reloads it. An uninstall leaves a tombstone and is announced; a reload is announced. A
//! daemon that starts, or whose listener reconnects, installs the bundles it lacks and removes
//! what it had installed from the store and was uninstalled since.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context as _;
use plugsconc_host::Registry;

use crate::store::{Action, Store};

/// What one daemon installed from the store, by plugin: the bundle's SHA-256.
#[derive(Debug, Default)]
pub struct Applied(Mutex<BTreeMap<String, String>>);

impl Applied {
    fn get(&self, plugin: &str) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(plugin)
            .cloned()
    }

    fn set(&self, plugin: &str, sha256: Option<String>) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match sha256 {
            Some(sha) => map.insert(plugin.to_owned(), sha),
            None => map.remove(plugin),
        };
    }
}

/// How this daemon installs what others share.
#[derive(Debug, Clone)]
pub struct Sharing {
    /// The catalog.
    pub registry: Registry,
    /// The shared store.
    pub store: Arc<dyn Store>,
    /// This daemon's plugins folder.
    pub plugins_dir: PathBuf,
    /// Whether installs need the `.sha256` sidecar.
    pub require_checksum: bool,
    /// What it installed from the store.
    pub applied: Arc<Applied>,
}

/// Packs the installed plugin at `dir` and shares it (a no-op on a store no one shares).
///
/// # Errors
///
/// When the folder cannot be packed or the store written.
pub async fn offer(
    store: &dyn Store,
    plugin: &str,
    dir: &Path,
    actor: &str,
    origin: &str,
) -> anyhow::Result<()> {
    if !store.shared() {
        return Ok(());
    }
    let dir = dir.to_owned();
    let bundle = tokio::task::spawn_blocking(move || {
        plugsconc_host::install::bundle_dir(&dir).map_err(anyhow::Error::from)
    })
    .await
    .context("packing the bundle was interrupted")??;
    store
        .share_install(plugin, &bundle, actor, origin)
        .await
        .with_context(|| format!("cannot share the bundle of {plugin:?}"))
}

/// Removes plugin `name` from the plugins folder and the catalog (drained, then stopped).
///
/// # Errors
///
/// [`plugsconc_host::HostError`] when it is built in, or its folder cannot be moved.
pub async fn uninstall(registry: &Registry, name: &str) -> Result<bool, plugsconc_host::HostError> {
    let Some(dir) = registry.get(name).and_then(|info| info.dir) else {
        return Ok(false);
    };
    let moved = dir.clone();
    // Boxed across the thread: the error is large.
    let aside = tokio::task::spawn_blocking(move || {
        plugsconc_host::install::uninstall_dir(&moved).map_err(Box::new)
    })
    .await
    .map_err(|_| plugsconc_host::HostError::Install {
        source_path: dir.clone(),
        reason: "interrupted".into(),
    })?
    .map_err(|err| *err)?;
    // Gone from the folder: the registry drains and stops it, then the files go.
    registry.sync_dir(&dir).await?;
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(aside)).await;
    Ok(true)
}

impl Sharing {
    /// Does what another daemon announced it did to `plugin`.
    pub async fn apply(&self, plugin: &str, action: Action) {
        let result = match action {
            Action::Install => self.install(plugin).await,
            Action::Uninstall => self.remove(plugin).await,
            Action::Reload => self.reload(plugin).await,
        };
        match result {
            Ok(()) => tracing::info!(plugin, ?action, "applied a change from another daemon"),
            Err(err) => {
                tracing::warn!(plugin, ?action, error = %format!("{err:#}"), "cannot apply a change from another daemon")
            }
        }
    }

    /// Installs what is shared and missing here, removes what this daemon installed from the
    /// store and was uninstalled since (at start, and after a lost connection).
    pub async fn resync(&self) {
        let bundles = match self.store.shared_bundles().await {
            Ok(bundles) => bundles,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the shared bundles");
                return;
            }
        };
        for bundle in bundles {
            let applied = self.applied.get(&bundle.plugin);
            let present = self.registry.get(&bundle.plugin).is_some();
            if bundle.removed {
                if applied.is_some() && present {
                    self.apply(&bundle.plugin, Action::Uninstall).await;
                }
            } else if !present || applied.is_some_and(|sha| sha != bundle.sha256) {
                self.apply(&bundle.plugin, Action::Install).await;
            }
        }
    }

    async fn install(&self, plugin: &str) -> anyhow::Result<()> {
        let Some(bundle) = self.store.shared_bundle(plugin).await? else {
            return Ok(());
        };
        let sha256 = {
            use sha2::Digest as _;
            sha2::Sha256::digest(&bundle)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        let (root, trust, checksum) = (
            self.plugins_dir.clone(),
            self.registry.trust(),
            self.require_checksum,
        );
        let source = PathBuf::from(format!("the shared bundle of {plugin}"));
        let installed = tokio::task::spawn_blocking(move || {
            plugsconc_host::install::install_tar_gz(
                &bundle[..],
                &source,
                &root,
                &trust,
                checksum,
                true,
            )
            .map_err(anyhow::Error::from)
        })
        .await
        .context("the install was interrupted")??;
        anyhow::ensure!(
            installed.plugin.manifest.name == plugin,
            "the shared bundle of {plugin:?} holds {:?}",
            installed.plugin.manifest.name
        );
        self.registry.sync_dir(&installed.plugin.dir).await?;
        self.applied.set(plugin, Some(sha256));
        Ok(())
    }

    async fn remove(&self, plugin: &str) -> anyhow::Result<()> {
        uninstall(&self.registry, plugin).await?;
        self.applied.set(plugin, None);
        Ok(())
    }

    async fn reload(&self, plugin: &str) -> anyhow::Result<()> {
        if let Some(dir) = self.registry.get(plugin).and_then(|info| info.dir) {
            self.registry.sync_dir(&dir).await?;
        }
        Ok(())
    }
}
