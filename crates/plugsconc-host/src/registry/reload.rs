//! Hot reload: bringing the catalog in line with a plugin folder that was added, changed
//! (manifest, binary, `.disabled` marker) or removed, and the debounced watcher that triggers it.
//!
//! A running plugin is replaced without a failed call: the new version is validated, started
//! and health-checked beside the old one, the slot's instance is swapped under its write lock,
//! and the old instance drains its leases before it is stopped. A new version that fails any
//! step leaves the old one serving, and the reason is on the plugin and in a
//! [`Event::ReloadRejected`].

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use notify_debouncer_full::notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, new_debouncer};

use super::slot::{Slot, Source};
use super::supervisor::{content_hash, drain_and_stop, install, launch};
use super::{Event, Registry, Status};
use crate::HostError;
use crate::discovery::{Discovered, load};
use crate::manifest::{MANIFEST_FILE, MANIFEST_JSON_FILE};

/// What a rescan of one plugin folder did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Nothing that matters changed.
    Unchanged,
    /// A new plugin entered the catalog.
    Added(String),
    /// The plugin's folder is gone; it was drained and stopped.
    Removed(String),
    /// The catalog entry of a plugin that was not running was replaced.
    Updated(String),
    /// A running plugin was replaced by its new version.
    Reloaded(String),
    /// The new version could not be used; the running one keeps serving.
    Rejected {
        /// The plugin.
        name: String,
        /// Why.
        reason: String,
    },
    /// The manifest could not be read (an I/O failure): the catalog entry is kept as it was,
    /// or a new plugin stays out, until the folder's next change or rescan.
    Deferred {
        /// The plugin (its folder's name when it is not in the catalog).
        name: String,
        /// The read error.
        reason: String,
    },
}

impl Registry {
    /// Brings the plugin in folder `dir` up to date with what is on disk.
    ///
    /// # Errors
    ///
    /// Only when the folder cannot be read at all; a broken or rejected plugin is a
    /// [`Change`], not an error.
    pub async fn sync_dir(&self, dir: &Path) -> Result<Change, HostError> {
        let inner = self.inner();
        let existing = inner
            .slots()
            .into_iter()
            .find(|s| s.state().info.dir.as_deref() == Some(dir));
        let scan = dir.to_owned();
        let loaded = tokio::task::spawn_blocking(move || {
            [MANIFEST_FILE, MANIFEST_JSON_FILE]
                .iter()
                .any(|file| scan.join(file).is_file())
                .then(|| load(&scan))
        })
        .await
        .map_err(|err| HostError::PluginsDir {
            path: dir.to_owned(),
            cause: std::io::Error::other(err.to_string()),
        })?;
        let change = match (existing, loaded) {
            (existing, Some(Err(invalid))) if invalid.error.is_transient() => {
                let name = existing.map_or_else(
                    || crate::discovery::folder_name(&invalid.dir),
                    |slot| slot.name.clone(),
                );
                tracing::warn!(plugin = %name, error = %invalid.error, "cannot read the manifest; the catalog keeps what it had and reads it again on the next change or rescan");
                return Ok(Change::Deferred {
                    name,
                    reason: invalid.error.to_string(),
                });
            }
            (None, None) => Change::Unchanged,
            (Some(slot), None) => {
                self.remove(&slot).await;
                Change::Removed(slot.name.clone())
            }
            (None, Some(Ok(plugin))) => {
                let name = plugin.manifest.name.clone();
                self.add_process(plugin);
                Change::Added(name)
            }
            (None, Some(Err(invalid))) => {
                let name = crate::discovery::folder_name(&invalid.dir);
                self.add_invalid(invalid);
                Change::Added(name)
            }
            (Some(slot), Some(Err(invalid))) => {
                let _starting = slot.start.lock().await;
                if slot.instance().is_some() {
                    let reason = format!(
                        "the changed manifest is invalid; the running version keeps serving: {}",
                        invalid.error
                    );
                    self.reject(&slot, reason)
                } else {
                    let mut state = Self::invalid_state(invalid);
                    state.info.name.clone_from(&slot.name);
                    let reason = state.info.reason.clone();
                    *slot.state() = state;
                    inner.set_status(&slot, Status::Invalid, reason);
                    Change::Updated(slot.name.clone())
                }
            }
            (Some(slot), Some(Ok(plugin))) if plugin.manifest.name != slot.name => {
                self.remove(&slot).await;
                let name = plugin.manifest.name.clone();
                self.add_process(plugin);
                Change::Added(name)
            }
            (Some(slot), Some(Ok(plugin))) => self.update(&slot, plugin).await,
        };
        if change != Change::Unchanged {
            self.check_dependencies();
        }
        Ok(change)
    }

    /// An operator's reload of one plugin: a rescan of its folder ([`Registry::sync_dir`]),
    /// and for a `failed` plugin whose folder did not change, another chance (it starts again
    /// on its next call).
    ///
    /// # Errors
    ///
    /// [`HostError::UnknownPlugin`], or as [`Registry::sync_dir`].
    pub async fn reload(&self, name: &str) -> Result<Change, HostError> {
        let slot = self.inner().slot(name)?;
        let Some(dir) = slot.state().info.dir.clone() else {
            // Built in: nothing on disk to reload.
            return Ok(Change::Unchanged);
        };
        let change = self.sync_dir(&dir).await?;
        if change == Change::Unchanged && slot.status() == Status::Failed {
            let _starting = slot.start.lock().await;
            if slot.status() == Status::Failed && !slot.removed.load(Ordering::Acquire) {
                {
                    let mut state = slot.state();
                    state.info.restarts = 0;
                    state.failed_content = None;
                }
                self.inner().set_status(
                    &slot,
                    Status::Discovered,
                    Some("retry asked by an operator".into()),
                );
                return Ok(Change::Updated(slot.name.clone()));
            }
        }
        Ok(change)
    }

    /// Rescans the whole plugins folder the catalog was opened from: every sub-folder and every
    /// folder the catalog knows.
    ///
    /// # Errors
    ///
    /// [`HostError::PluginsDir`] when the folder cannot be listed.
    pub async fn sync_all(&self) -> Result<Vec<Change>, HostError> {
        let Some(root) = self.root().map(Path::to_owned) else {
            return Ok(Vec::new());
        };
        let listed = root.clone();
        let mut dirs: BTreeSet<PathBuf> = tokio::task::spawn_blocking(move || {
            std::fs::read_dir(&listed).map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .map(|e| e.path())
                    .collect::<BTreeSet<_>>()
            })
        })
        .await
        .map_err(|err| HostError::PluginsDir {
            path: root.clone(),
            cause: std::io::Error::other(err.to_string()),
        })?
        .map_err(|source| HostError::PluginsDir {
            path: root.clone(),
            cause: source,
        })?;
        dirs.extend(
            self.inner()
                .slots()
                .iter()
                .filter_map(|s| s.state().info.dir.clone()),
        );
        let mut changes = Vec::new();
        for dir in dirs {
            let change = self.sync_dir(&dir).await?;
            if change != Change::Unchanged {
                changes.push(change);
            }
        }
        Ok(changes)
    }

    /// Watches the plugins folder and applies every change after `debounce` of quiet; also
    /// rescans everything every `rescan` as a safety net for missed events. Runs until
    /// [`Registry::shutdown`].
    ///
    /// # Errors
    ///
    /// [`HostError::Watch`] when the folder cannot be watched, or the catalog has no folder.
    pub fn watch(&self, debounce: Duration, rescan: Option<Duration>) -> Result<(), HostError> {
        let root = self
            .root()
            .map(Path::to_owned)
            .ok_or_else(|| HostError::Watch {
                path: PathBuf::new(),
                reason: "the catalog was not opened from a plugins folder".into(),
            })?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<DebounceEventResult>();
        let mut debouncer = new_debouncer(debounce, None, move |result| {
            let _ = tx.send(result);
        })
        .map_err(|err| HostError::Watch {
            path: root.clone(),
            reason: err.to_string(),
        })?;
        debouncer
            .watch(&root, RecursiveMode::Recursive)
            .map_err(|err| HostError::Watch {
                path: root.clone(),
                reason: err.to_string(),
            })?;
        let registry = self.clone();
        let cancel = self.inner().cancel.clone();
        self.inner().tasks.spawn(async move {
            // Owned by the task: dropping it stops the watch.
            let _debouncer = debouncer;
            let mut rescan_timer = tokio::time::interval(rescan.unwrap_or(Duration::from_secs(86_400)));
            rescan_timer.tick().await;
            loop {
                let dirs = tokio::select! {
                    () = cancel.cancelled() => return,
                    _ = rescan_timer.tick(), if rescan.is_some() => None,
                    result = rx.recv() => match result {
                        None => return,
                        Some(Ok(events)) => Some(plugin_dirs(&root, events.iter().flat_map(|e| e.paths.iter()))),
                        Some(Err(errors)) => {
                            for err in errors {
                                tracing::warn!(error = %err, "plugins folder watch error; rescanning");
                            }
                            None
                        }
                    },
                };
                match dirs {
                    // A new folder's files can be created before inotify watches it: reading the
                    // whole folder on its event catches them.
                    Some(Some(dirs)) => {
                        for dir in dirs {
                            if let Err(err) = registry.sync_dir(&dir).await {
                                tracing::warn!(dir = %dir.display(), error = %err, "cannot rescan plugin folder");
                            }
                        }
                    }
                    Some(None) | None => {
                        if let Err(err) = registry.sync_all().await {
                            tracing::warn!(error = %err, "cannot rescan the plugins folder");
                        }
                    }
                }
            }
        });
        Ok(())
    }

    async fn update(&self, slot: &Arc<Slot>, plugin: Discovered) -> Change {
        let inner = self.inner();
        let _starting = slot.start.lock().await;
        let (was_marked_disabled, status, old_manifest, old_binary) = {
            let state = slot.state();
            let marked = matches!(&state.source, Source::Process(p) if p.disabled);
            (
                marked,
                state.info.status,
                state.info.manifest_sha256.clone(),
                state.binary_sha256,
            )
        };
        let manifest_same =
            old_manifest.as_deref() == Some(plugin.manifest_sha256.to_hex().as_str());
        let running = slot.instance();

        if plugin.disabled && status != Status::Disabled {
            let reason = slot_state_replace(slot, plugin);
            inner.set_status(slot, Status::Disabled, reason);
            slot.wake.notify_waiters();
            if let Some(old) = slot.swap(None) {
                drain_and_stop(inner, &slot.name, old).await;
            }
            return Change::Updated(slot.name.clone());
        }
        let Some(running) = running else {
            let marker_removed = was_marked_disabled && !plugin.disabled;
            if manifest_same && !marker_removed && status != Status::Invalid {
                // A failed plugin gets another chance only when what decides its start really
                // changed (a fixed binary, sidecar or signature), not on any rescan.
                if status != Status::Failed {
                    return Change::Unchanged;
                }
                let failed_content = slot.state().failed_content;
                if failed_content.is_some() && content_hash(&plugin).await == failed_content {
                    return Change::Unchanged;
                }
            }
            let keep_disabled = status == Status::Disabled && !marker_removed;
            let reason = slot_state_replace(slot, plugin);
            if status == Status::Failed {
                let mut state = slot.state();
                state.info.restarts = 0;
                state.failed_content = None;
            }
            if keep_disabled {
                inner.set_status(slot, Status::Disabled, reason);
            } else {
                inner.set_status(slot, Status::Discovered, Some("updated on disk".into()));
            }
            inner.emit(Event::Updated {
                name: slot.name.clone(),
            });
            return Change::Updated(slot.name.clone());
        };

        // Running: has anything that matters changed?
        let entrypoint = plugin.entrypoint();
        let binary = tokio::task::spawn_blocking(move || crate::sha256_file(&entrypoint).ok())
            .await
            .ok()
            .flatten();
        let known = running.binary_sha256.or(old_binary);
        if manifest_same && (binary.is_none() || binary == known) {
            return Change::Unchanged;
        }
        let began = tokio::time::Instant::now();
        match launch(inner, &plugin).await {
            Ok(instance) => {
                let (from, to) = (running.version.clone(), instance.version.clone());
                let reloads = slot.state().info.reloads + 1;
                slot_state_replace(slot, plugin);
                {
                    let mut state = slot.state();
                    state.info.reloads = reloads;
                }
                let previous = install(
                    inner,
                    slot,
                    instance,
                    Some(format!("reloaded ({from} -> {to})")),
                );
                let took = began.elapsed();
                tracing::info!(plugin = %slot.name, %from, %to, took_ms = took.as_secs_f64() * 1e3, "plugin reloaded");
                inner.emit(Event::Reloaded {
                    name: slot.name.clone(),
                    from,
                    to,
                    took,
                });
                if let Some(old) = previous {
                    let (inner2, name) = (inner.clone(), slot.name.clone());
                    inner
                        .tasks
                        .spawn(async move { drain_and_stop(&inner2, &name, old).await });
                }
                Change::Reloaded(slot.name.clone())
            }
            Err(err) => {
                let reason = format!(
                    "version {} could not be started, version {} keeps serving: {err}",
                    plugin.manifest.version, running.version
                );
                self.reject(slot, reason)
            }
        }
    }

    fn reject(&self, slot: &Slot, reason: String) -> Change {
        tracing::warn!(plugin = %slot.name, "{reason}");
        slot.state().info.reason = Some(reason.clone());
        self.inner().emit(Event::ReloadRejected {
            name: slot.name.clone(),
            reason: reason.clone(),
        });
        Change::Rejected {
            name: slot.name.clone(),
            reason,
        }
    }

    /// Takes a plugin out of the catalog: handles to it fail from now on, its process drains
    /// in the background and stops.
    async fn remove(&self, slot: &Arc<Slot>) {
        let inner = self.inner();
        slot.removed.store(true, Ordering::Release);
        slot.callable.store(false, Ordering::Release);
        slot.wake.notify_waiters();
        inner
            .slots
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&slot.name);
        let _starting = slot.start.lock().await;
        if let Some(old) = slot.swap(None) {
            let (inner2, name) = (inner.clone(), slot.name.clone());
            inner
                .tasks
                .spawn(async move { drain_and_stop(&inner2, &name, old).await });
        }
        tracing::info!(plugin = %slot.name, "plugin removed");
        inner.emit(Event::Removed {
            name: slot.name.clone(),
        });
    }
}

/// Replaces a slot's catalog data with a new manifest's, keeping its counters; returns the
/// reason a disabled marker gives, if any.
fn slot_state_replace(slot: &Slot, plugin: Discovered) -> Option<String> {
    let fresh = Registry::process_state(plugin);
    let mut state = slot.state();
    let (status, restarts, reloads, pid, binary) = (
        state.info.status,
        state.info.restarts,
        state.info.reloads,
        state.info.pid,
        state.binary_sha256,
    );
    let sandbox = state.info.sandbox.take();
    let reason = fresh.info.reason.clone();
    *state = fresh;
    state.info.status = status;
    state.info.restarts = restarts;
    state.info.reloads = reloads;
    state.info.pid = pid;
    state.info.sandbox = sandbox;
    state.binary_sha256 = binary;
    reason
}

/// The plugin folders (direct children of `root`) that the changed paths are in; `None` when
/// `root` itself changed in a way that needs a full rescan.
fn plugin_dirs<'a>(
    root: &Path,
    paths: impl Iterator<Item = &'a PathBuf>,
) -> Option<BTreeSet<PathBuf>> {
    let mut dirs = BTreeSet::new();
    for path in paths {
        let Ok(relative) = path.strip_prefix(root) else {
            continue;
        };
        match relative.components().next() {
            Some(Component::Normal(first)) if !first.to_string_lossy().starts_with('.') => {
                dirs.insert(root.join(first));
            }
            Some(Component::Normal(_)) => {}
            _ => return None,
        }
    }
    Some(dirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_paths_map_to_plugin_folders() {
        let root = Path::new("/p");
        let paths = [
            PathBuf::from("/p/cat/cat"),
            PathBuf::from("/p/cat/manifest.yaml"),
            PathBuf::from("/p/dog"),
            PathBuf::from("/p/.tmp/x"),
            PathBuf::from("/elsewhere/x"),
        ];
        let dirs = plugin_dirs(root, paths.iter()).unwrap();
        assert_eq!(
            dirs.into_iter().collect::<Vec<_>>(),
            [PathBuf::from("/p/cat"), PathBuf::from("/p/dog")]
        );
        assert_eq!(plugin_dirs(root, [PathBuf::from("/p")].iter()), None);
    }
}
