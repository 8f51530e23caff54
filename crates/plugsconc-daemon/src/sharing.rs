//! Installs, uninstalls and reloads shared by the daemons of one catalog (a PostgreSQL store).
//! The daemon that installs a plugin keeps its folder, packed as a bundle, in the store and
//! announces it; every other daemon installs that bundle into its own plugins folder — through
//! the same staging, checksum and signature policy as any install, under its own trust — and
//! hot-reloads it, then applies the state the store records for it. An uninstall leaves a
//! tombstone (and forgets the plugin's state) and is announced; a reload is announced. A daemon
//! that starts, or whose listener reconnects, installs the bundles it lacks and removes what it
//! had installed from the store and was uninstalled since.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use plugsconc_host::Registry;

use crate::store::{Action, Store};

/// Which shared bundle each plugin here came from (its SHA-256), one file per plugin in a folder
/// of the data folder, so a daemon that restarts still knows what it installed from the store
/// (and removes it when it was uninstalled meanwhile, or upgrades it).
#[derive(Debug, Clone)]
pub struct Applied {
    dir: PathBuf,
}

impl Applied {
    /// The records kept in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The record's file; `None` for a name that is not a plain file name.
    fn file(&self, plugin: &str) -> Option<PathBuf> {
        let plain = !plugin.is_empty()
            && !plugin.starts_with('.')
            && plugin
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        plain.then(|| self.dir.join(plugin))
    }

    fn get(&self, plugin: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.file(plugin)?).ok()?;
        Some(text.trim().to_owned())
    }

    /// Records that `plugin` now comes from the bundle `sha256` (`None`: from no bundle).
    pub fn set(&self, plugin: &str, sha256: Option<&str>) {
        let Some(file) = self.file(plugin) else {
            return;
        };
        let written = match sha256 {
            Some(sha) => {
                std::fs::create_dir_all(&self.dir).and_then(|()| std::fs::write(&file, sha))
            }
            None => match std::fs::remove_file(&file) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
                _ => Ok(()),
            },
        };
        if let Err(err) = written {
            tracing::warn!(plugin, file = %file.display(), error = %err, "cannot record which shared bundle a plugin came from");
        }
    }
}

/// How this daemon installs what others share.
#[derive(Debug, Clone)]
pub struct Sharing {
    /// The plugins' states, kept to the store's.
    pub states: crate::states::States,
    /// The catalog.
    pub registry: Registry,
    /// The shared store.
    pub store: Arc<dyn Store>,
    /// This daemon's plugins folder.
    pub plugins_dir: PathBuf,
    /// Whether installs need the `.sha256` sidecar.
    pub require_checksum: bool,
    /// The caps on what a bundle may unpack to, as for installs through the API.
    pub limits: plugsconc_host::install::Limits,
    /// What it installed from the store.
    pub applied: Applied,
}

/// Packs the installed plugin at `dir` and shares it (a no-op on a store no one shares); records
/// in `applied` that this daemon's copy is that bundle.
///
/// # Errors
///
/// When the folder cannot be packed or the store written.
pub async fn offer(
    store: &dyn Store,
    applied: &Applied,
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
        .with_context(|| format!("cannot share the bundle of {plugin:?}"))?;
    applied.set(plugin, Some(&crate::store::bundle_sha256(&bundle)));
    Ok(())
}

/// Removes plugin `name` from the plugins folder and the catalog (drained, then stopped);
/// `false` when there is no such plugin on disk (unknown, or built in).
///
/// # Errors
///
/// [`plugsconc_host::HostError`] when its folder cannot be moved aside or the catalog cannot
/// drop it.
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

/// Installs (or upgrades) `plugin` from the bundle shared under its name (blocking).
fn install_shared(
    bundle: &[u8],
    plugin: &str,
    root: &Path,
    trust: &plugsconc_host::Trust,
    checksum: bool,
    limits: plugsconc_host::install::Limits,
) -> anyhow::Result<plugsconc_host::install::Installed> {
    let source = PathBuf::from(format!("the shared bundle of {plugin}"));
    // The name is checked on the staged manifest, the one that is installed: a bundle that
    // holds another plugin must not replace that one.
    Ok(plugsconc_host::install::Installer::new(root, trust)
        .insecure_skip_checksum(!checksum)
        .replace(true)
        .expect_name(plugin)
        .limits(limits)
        .tar_gz(bundle, &source)?)
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

    /// Installs what is shared and missing (or upgraded) here, removes what this daemon
    /// installed from the store and was uninstalled since (at start, and after a lost
    /// connection).
    ///
    /// # Errors
    ///
    /// When the store cannot be read (the caller tries again).
    pub async fn resync(&self) -> Result<(), crate::store::StoreError> {
        let bundles = self.store.shared_bundles().await?;
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
        Ok(())
    }

    async fn install(&self, plugin: &str) -> anyhow::Result<()> {
        // Held until the store's state is applied to what was installed: a state change
        // announced meanwhile waits, then reads the store.
        let guard = self.states.lock(plugin).await;
        let Some(bundle) = self.store.shared_bundle(plugin).await? else {
            return Ok(());
        };
        let sha256 = crate::store::bundle_sha256(&bundle);
        let (root, trust, checksum) = (
            self.plugins_dir.clone(),
            self.registry.trust(),
            self.require_checksum,
        );
        let limits = self.limits;
        let expected = plugin.to_owned();
        // Recorded before the plugin lands (the watcher may show it at once), so a daemon killed
        // right after still knows where it came from and applies a later uninstall at start.
        let previous = self.applied.get(plugin);
        self.applied.set(plugin, Some(&sha256));
        let installed = tokio::task::spawn_blocking(move || {
            install_shared(&bundle, &expected, &root, &trust, checksum, limits)
        })
        .await
        .context("the install was interrupted")
        .and_then(|installed| installed);
        let installed = match installed {
            Ok(installed) => installed,
            Err(err) => {
                self.applied.set(plugin, previous.as_deref());
                return Err(err);
            }
        };
        self.registry.sync_dir(&installed.plugin.dir).await?;
        // The bundle may carry the installing daemon's `.disabled` marker, or none.
        self.states.converge_locked(plugin, &guard).await?;
        Ok(())
    }

    async fn remove(&self, plugin: &str) -> anyhow::Result<()> {
        let _guard = self.states.lock(plugin).await;
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

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;
    use plugsconc_host::install::Limits;

    fn manifest(name: &str) -> String {
        format!(
            "plugin:\n  name: {name}\n  type: animal\n  version: 1.0.0\n  entrypoint: ./{name}\nhandshake:\n  protocol_version: 1\n  magic_cookie_key: K\n  magic_cookie_value: v\n"
        )
    }

    fn bundle(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o755);
            header.set_cksum();
            builder.append_data(&mut header, path, *data).unwrap();
        }
        let mut gz = builder.into_inner().unwrap();
        gz.flush().unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn a_shared_bundle_installs_only_the_plugin_it_is_shared_as() {
        let root = tempfile::tempdir().unwrap();
        let kv = root.path().join("kv");
        std::fs::create_dir(&kv).unwrap();
        std::fs::write(kv.join("manifest.yaml"), manifest("kv")).unwrap();
        std::fs::write(kv.join("kv"), b"the real kv").unwrap();
        let trust = plugsconc_host::Trust::allow_unsigned();
        let (pup, kv_manifest) = (manifest("pup"), manifest("kv"));
        let hostile = [
            // A nested manifest naming the plugin it is shared as, before the real one.
            bundle(&[
                ("a/manifest.yaml", pup.as_bytes()),
                ("manifest.yaml", kv_manifest.as_bytes()),
                ("kv", b"impostor"),
            ]),
            // The same top-level file twice: whichever is read, another is unpacked.
            bundle(&[
                ("manifest.yaml", pup.as_bytes()),
                ("manifest.yaml", kv_manifest.as_bytes()),
                ("kv", b"impostor"),
                ("pup", b"impostor"),
            ]),
        ];
        for data in hostile {
            let result =
                install_shared(&data, "pup", root.path(), &trust, false, Limits::default());
            assert!(
                result.is_err(),
                "installed {:?}",
                result.map(|i| i.plugin.dir)
            );
            assert_eq!(std::fs::read(kv.join("kv")).unwrap(), b"the real kv");
            assert!(!root.path().join("pup").exists());
        }
        let honest = bundle(&[("manifest.yaml", pup.as_bytes()), ("pup", b"pup")]);
        let installed = install_shared(
            &honest,
            "pup",
            root.path(),
            &trust,
            false,
            Limits::default(),
        )
        .unwrap();
        assert_eq!(installed.plugin.manifest.name, "pup");
    }
}
