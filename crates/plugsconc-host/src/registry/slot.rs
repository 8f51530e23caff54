//! One catalog entry ([`Slot`]), the running process behind it ([`Instance`]), and what host
//! code holds: a typed [`Handle`] that hands out a [`Lease`] per call.
//!
//! A lease pins the instance it was taken from: a reload swaps the slot's instance, and the old
//! one is stopped only once every lease on it is dropped (its in-flight calls drained). Leases
//! are taken under the slot's read lock and the swap takes the write lock, so no lease can land
//! on an instance after it was swapped out.

use std::any::Any;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::types::{PluginInfo, Status};
use super::{Inner, Registry};
use crate::checksum::Sha256;
use crate::contract::Contract;
use crate::discovery::Discovered;
use crate::{HostError, PluginClient};

/// Where a slot's plugin comes from.
pub(crate) enum Source {
    /// A plugin folder with a valid manifest.
    Process(Arc<Discovered>),
    /// Linked into the host: the handle, boxed as `Arc<C::Handle>`.
    Builtin(Arc<dyn Any + Send + Sync>),
    /// A folder whose manifest is broken.
    Invalid,
}

impl Source {
    /// The plugin folder's validated contents, for a process plugin.
    pub fn clone_process(&self) -> Option<Arc<Discovered>> {
        match self {
            Source::Process(plugin) => Some(plugin.clone()),
            Source::Builtin(_) | Source::Invalid => None,
        }
    }
}

/// The mutable part of a slot.
pub(crate) struct State {
    pub info: PluginInfo,
    pub source: Source,
    /// Dependencies by name and accepted versions, with where each is declared
    /// (`<manifest>:<line>:<column>, dependencies[<i>]`) for the messages about it.
    pub deps: Vec<(String, semver::VersionReq, Option<String>)>,
    /// Made invalid by a dependency problem (not by its own manifest), so it recovers when the
    /// dependency is fixed.
    pub dep_invalid: bool,
    /// SHA-256 of the binary when it was last launched or checked, to notice a replacement.
    pub binary_sha256: Option<Sha256>,
    /// The folder's content hash (manifest, binary, sidecar, signature) when the plugin was
    /// marked `failed`: a rescan retries it only when that changed.
    pub failed_content: Option<Sha256>,
}

/// A running process plugin.
pub(crate) struct Instance {
    pub id: u64,
    pub client: PluginClient,
    pub version: semver::Version,
    pub binary_sha256: Option<Sha256>,
    /// One token per lease; closed and waited on to drain.
    pub leases: TaskTracker,
    pub started: tokio::time::Instant,
    /// The manifest's limits, checked by the supervisor's monitor.
    pub resources: crate::manifest::Resources,
    /// The host services served to this instance; they stop with it.
    pub _host_services: Option<plugsconc_transport::BrokeredServer>,
}

/// One plugin of the catalog.
pub(crate) struct Slot {
    pub name: String,
    pub state: Mutex<State>,
    /// Mirrors `state.info.status.callable()` for the lock-free path of built-in calls.
    pub callable: AtomicBool,
    /// Left the catalog; handles to it fail.
    pub removed: AtomicBool,
    pub current: RwLock<Option<Arc<Instance>>>,
    /// Serialises starts, restarts and reloads, so concurrent first calls start one process.
    pub start: tokio::sync::Mutex<()>,
    /// Milliseconds since the registry's epoch at the last lease.
    pub last_used: AtomicU64,
    /// Wakes a restart waiting out its backoff (disable, removal).
    pub wake: tokio::sync::Notify,
    /// A restart with backoff is under way (set before the start lock is let go, so a caller
    /// never starts a process of its own meanwhile); calls wait on `settled`.
    pub restarting: AtomicUsize,
    /// Notified when a restart ends, well or not.
    pub settled: tokio::sync::Notify,
}

impl Slot {
    pub fn new(state: State) -> Self {
        Self {
            name: state.info.name.clone(),
            callable: AtomicBool::new(state.info.status.callable()),
            state: Mutex::new(state),
            removed: AtomicBool::new(false),
            current: RwLock::new(None),
            start: tokio::sync::Mutex::new(()),
            last_used: AtomicU64::new(0),
            wake: tokio::sync::Notify::new(),
            restarting: AtomicUsize::new(0),
            settled: tokio::sync::Notify::new(),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn info(&self) -> PluginInfo {
        self.state().info.clone()
    }

    pub fn status(&self) -> Status {
        self.state().info.status
    }

    pub fn instance(&self) -> Option<Arc<Instance>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the running instance, returning the previous one.
    pub fn swap(&self, next: Option<Arc<Instance>>) -> Option<Arc<Instance>> {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *current, next)
    }

    /// Takes the instance out only if it is still `id` (a supervisor must not remove a newer one).
    pub fn take_if(&self, id: u64) -> Option<Arc<Instance>> {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if current.as_ref().is_some_and(|i| i.id == id) {
            current.take()
        } else {
            None
        }
    }

    /// Takes the instance out if it has no call in flight (idle stop).
    pub fn take_if_idle(&self, id: u64) -> Option<Arc<Instance>> {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if current
            .as_ref()
            .is_some_and(|i| i.id == id && i.leases.is_empty())
        {
            current.take()
        } else {
            None
        }
    }

    /// A lease on the running instance, if it is alive.
    fn try_lease(&self) -> Option<(Arc<Instance>, TaskTrackerToken)> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        let instance = current.as_ref()?;
        if instance.client.exit_status().is_some() {
            return None;
        }
        Some((instance.clone(), instance.leases.token()))
    }

    /// Whether a restart with backoff is under way.
    pub fn restarting(&self) -> bool {
        self.restarting.load(Ordering::Acquire) > 0
    }

    /// Waits for a restart under way to end; `false` at once when none is.
    pub async fn wait_for_restart(&self) -> bool {
        let settled = self.settled.notified();
        tokio::pin!(settled);
        // Registered before the flag is read, so an end signalled in between is not missed.
        settled.as_mut().enable();
        if !self.restarting() {
            return false;
        }
        settled.await;
        true
    }

    pub fn not_available(&self) -> HostError {
        if self.removed.load(Ordering::Acquire) {
            return HostError::NotAvailable {
                plugin: self.name.clone(),
                status: "removed".into(),
                reason: "its folder was removed from the plugins folder".into(),
            };
        }
        let state = self.state();
        HostError::NotAvailable {
            plugin: self.name.clone(),
            status: state.info.status.to_string(),
            reason: state.info.reason.clone().unwrap_or_default(),
        }
    }
}

/// A plugin of contract `C`, as host code holds it: cheap to clone, valid across restarts and
/// reloads. Each call takes a [`Lease`] with [`Handle::get`].
pub struct Handle<C: Contract> {
    pub(crate) inner: Arc<Inner>,
    pub(crate) slot: Arc<Slot>,
    pub(crate) builtin: Option<Arc<C::Handle>>,
}

impl<C: Contract> Clone for Handle<C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            slot: self.slot.clone(),
            builtin: self.builtin.clone(),
        }
    }
}

impl<C: Contract> std::fmt::Debug for Handle<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("plugin", &self.slot.name)
            .field("contract", &C::KIND)
            .finish_non_exhaustive()
    }
}

impl<C: Contract> Handle<C> {
    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.slot.name
    }

    /// The plugin for one call (or a few): a built-in's implementation, or a client of the
    /// running process, started first if needed (lazy launch, after an idle stop, or while a
    /// crashed plugin is being restarted). Hold it only for the call: a reload waits for
    /// outstanding leases before stopping the old process.
    ///
    /// While a crashed plugin (or one whose start failed for a passing reason) is restarted
    /// with backoff, calls wait for the new process, up to
    /// [`RegistryOptions::restart_wait`](super::RegistryOptions::restart_wait).
    ///
    /// # Errors
    ///
    /// [`HostError::NotAvailable`] (invalid, disabled, failed, removed, or still restarting
    /// after the wait), or why the process could not start (the plugin is then `failed`).
    #[inline]
    pub async fn get(&self) -> Result<Lease<'_, C>, HostError> {
        if let Some(builtin) = &self.builtin {
            // A built-in call borrows the implementation: one atomic load, no reference count.
            return if self.slot.callable.load(Ordering::Acquire) {
                Ok(Lease(Leased::Builtin(&**builtin)))
            } else {
                Err(self.slot.not_available())
            };
        }
        if self.slot.callable.load(Ordering::Acquire)
            && !self.slot.removed.load(Ordering::Acquire)
            && let Some(lease) = self.lease()
        {
            return Ok(lease);
        }
        self.acquire().await
    }

    /// The slow path of [`Handle::get`]: waits out a restart or another call's start (bounded
    /// by `restart_wait`), or starts the plugin. The start itself is not cut short by that
    /// bound (it has its own, `start_timeout`): a start abandoned halfway would leave the plugin
    /// neither restarted nor failed.
    async fn acquire(&self) -> Result<Lease<'static, C>, HostError> {
        let wait = self.inner.options.restart_wait;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if !self.slot.callable.load(Ordering::Acquire)
                || self.slot.removed.load(Ordering::Acquire)
            {
                return Err(self.slot.not_available());
            }
            if let Some(lease) = self.lease() {
                return Ok(lease);
            }
            match tokio::time::timeout_at(deadline, self.slot.wait_for_restart()).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(_) => return Err(self.waited_too_long(wait)),
            }
            let Ok(_starting) = tokio::time::timeout_at(deadline, self.slot.start.lock()).await
            else {
                return Err(self.waited_too_long(wait));
            };
            if let Some(lease) = self.lease() {
                return Ok(lease);
            }
            if !self.slot.callable.load(Ordering::Acquire)
                || self.slot.removed.load(Ordering::Acquire)
            {
                return Err(self.slot.not_available());
            }
            if self.slot.restarting() {
                // A restart began while this call waited for the lock: wait for it instead.
                continue;
            }
            if let Err(err) = Registry::start_locked(&self.inner, &self.slot).await
                && !self.slot.restarting()
            {
                return Err(err);
            }
        }
    }

    fn waited_too_long(&self, wait: std::time::Duration) -> HostError {
        let (status, reason) = {
            let state = self.slot.state();
            let reason = state.info.reason.clone().unwrap_or_default();
            (state.info.status.to_string(), reason)
        };
        HostError::NotAvailable {
            plugin: self.slot.name.clone(),
            status,
            reason: format!(
                "still not running after waiting {:.1} s: {reason}",
                wait.as_secs_f64()
            ),
        }
    }

    fn lease(&self) -> Option<Lease<'static, C>> {
        let (instance, token) = self.slot.try_lease()?;
        self.slot
            .last_used
            .store(self.inner.now_ms(), Ordering::Relaxed);
        Some(Lease(Leased::Process(
            C::connect(instance.client.call_channel()),
            token,
        )))
    }
}

/// The plugin for the duration of a call: dereferences to the contract's handle.
pub struct Lease<'a, C: Contract>(Leased<'a, C>);

enum Leased<'a, C: Contract> {
    Builtin(&'a C::Handle),
    /// The client, and the token that keeps the instance from being stopped under the call.
    Process(Arc<C::Handle>, #[allow(dead_code)] TaskTrackerToken),
}

impl<C: Contract> Deref for Lease<'_, C> {
    type Target = C::Handle;

    fn deref(&self) -> &Self::Target {
        match &self.0 {
            Leased::Builtin(handle) => handle,
            Leased::Process(handle, _) => handle,
        }
    }
}

impl<C: Contract> std::fmt::Debug for Lease<'_, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("contract", &C::KIND)
            .finish_non_exhaustive()
    }
}
