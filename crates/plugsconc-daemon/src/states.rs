//! Each plugin's enabled/disabled status here, brought in line with the state the catalog store
//! records, one plugin at a time. A notification from another daemon is only a hint that a
//! plugin changed: what is applied is the row read from the store after the hint arrived, so a
//! late or reordered notification never leaves an older state last. Everything that changes a
//! plugin's state here (an API change: store write, then marker and status; applying a hint; an
//! install or uninstall) holds that plugin's lock, so the last status applied is always read (or
//! written) after every store write that came before it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use plugsconc_host::registry::Status;
use plugsconc_host::{DISABLED_MARKER, Registry};

use crate::store::{Store, StoreError};

/// Past this many plugin locks, those no one holds are dropped.
const KEEP_LOCKS: usize = 256;

/// The plugins' states here, kept to the store's.
#[derive(Debug, Clone)]
pub struct States {
    registry: Registry,
    store: Arc<dyn Store>,
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// Held while a plugin's state is changed or applied.
pub type StateGuard = tokio::sync::OwnedMutexGuard<()>;

impl States {
    /// The states of `registry`'s plugins, kept to those `store` records.
    pub fn new(registry: Registry, store: Arc<dyn Store>) -> Self {
        Self {
            registry,
            store,
            locks: Arc::default(),
        }
    }

    /// Waits for `plugin`'s lock.
    pub async fn lock(&self, plugin: &str) -> StateGuard {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
            if locks.len() > KEEP_LOCKS {
                locks.retain(|_, lock| Arc::strong_count(lock) > 1);
            }
            locks.entry(plugin.to_owned()).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// Reads `plugin`'s recorded state and applies it here, under its lock.
    ///
    /// # Errors
    ///
    /// When the store cannot be read (nothing is changed).
    pub async fn converge(&self, plugin: &str) -> Result<(), StoreError> {
        let guard = self.lock(plugin).await;
        self.converge_locked(plugin, &guard).await
    }

    /// [`Self::converge`] for a caller that holds the plugin's lock already.
    ///
    /// # Errors
    ///
    /// When the store cannot be read (nothing is changed).
    pub async fn converge_locked(
        &self,
        plugin: &str,
        _held: &StateGuard,
    ) -> Result<(), StoreError> {
        // No state recorded: the plugin keeps what its folder says.
        if let Some(enabled) = self.store.state(plugin).await? {
            apply(&self.registry, plugin, enabled).await;
        }
        Ok(())
    }

    /// Reads every recorded state and applies it, one plugin at a time, each read under its
    /// lock (after a lost listener connection, and once listening at start).
    ///
    /// # Errors
    ///
    /// When the store cannot be read.
    pub async fn converge_all(&self) -> Result<(), StoreError> {
        for plugin in self.store.states().await?.into_keys() {
            self.converge(&plugin).await?;
        }
        Ok(())
    }
}

/// Makes `name`'s status and its `.disabled` marker say `enabled`; a plugin not here is left
/// alone (its install applies the state).
pub async fn apply(registry: &Registry, name: &str, enabled: bool) {
    let Some(info) = registry.get(name) else {
        return;
    };
    if let Some(dir) = info.dir.clone() {
        // The marker too: a rescan of the folder reads it and would undo the status.
        let marker = dir.join(DISABLED_MARKER);
        let written = tokio::task::spawn_blocking(move || {
            if enabled {
                match std::fs::remove_file(&marker) {
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    other => other,
                }
            } else if marker.exists() {
                Ok(())
            } else {
                std::fs::write(&marker, b"disabled as recorded in the catalog store\n")
            }
        })
        .await;
        if let Ok(Err(err)) = written {
            tracing::warn!(plugin = name, error = %err, "cannot make the .disabled marker match the store");
        }
    }
    let disabled = info.status == Status::Disabled;
    let result = if enabled && disabled {
        registry.enable(name)
    } else if !enabled && !disabled {
        registry.disable(name).await
    } else {
        Ok(())
    };
    if let Err(err) = result {
        tracing::warn!(plugin = name, error = %err, "cannot apply the stored state");
    }
}
