//! The catalog of every known plugin, external and built-in, with its status and the reason for
//! it: queries, enable/disable, the dependency graph, lifecycle events, and typed handles that
//! start a process plugin on first use (lazy launch). Supervision lives in [`supervisor`], hot
//! reload in [`reload`].

mod reload;
mod slot;
mod supervisor;
mod types;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use reload::Change;
pub use slot::{Handle, Lease};
use slot::{Slot, Source, State};
pub use types::{
    Backoff, BuiltinSelection, DEFAULT_HOST_ENV, Event, PluginInfo, Query, RegistryOptions,
    Runtime, Status,
};

use crate::HostError;
use crate::contract::{Builtin, Contract, builtins};
use crate::discovery::{Discovered, Discovery, Invalid};

/// The thread-safe catalog. Cheap to clone: clones share one catalog.
///
/// ```no_run
/// # use std::time::Duration;
/// # use plugsconc_host::{Query, Registry, RegistryOptions};
/// use builtin_cow as _; // links the built-in plugins of that crate
/// use example_animal::{Animal as _, AnimalContract}; // trait Animal + how a gRPC channel becomes one
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
///
/// let registry = Registry::open("plugins", RegistryOptions::default()).await?;
/// registry.watch(Duration::from_millis(250), Some(Duration::from_secs(60)))?; // hot reload
///
/// let cat = registry.handle::<AnimalContract>("cat")?; // nothing starts yet
/// let said = cat.get().await?.speak(true).await?; // first call starts the process: "MEOW!"
/// let cow = registry.handle::<AnimalContract>("cow")?; // built in: same trait, no IPC
/// registry.disable("cat").await?; // drained, then stopped
/// for plugin in registry.list(&Query { tag: Some("animal".into()), ..Query::default() }) {
///     println!("{} {:?}", plugin.name, plugin.status);
/// }
/// let mut events = registry.subscribe(); // Added, StatusChanged, Reloaded, ...
/// registry.shutdown().await; // drain and stop everything, bounded
/// # let _ = (said, cow, events.try_recv());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    slots: RwLock<BTreeMap<String, Arc<Slot>>>,
    events: broadcast::Sender<Event>,
    options: RegistryOptions,
    /// The plugins folder, when the catalog was opened from one (for rescans).
    root: Option<PathBuf>,
    /// Supervisors, drains and the watcher: cancelled and awaited on shutdown.
    tasks: TaskTracker,
    cancel: CancellationToken,
    epoch: tokio::time::Instant,
    next_instance: AtomicU64,
    /// The signature policy, replaceable while the host runs (publishers added or removed).
    trust: RwLock<crate::signature::Trust>,
    /// The record of launched plugins, when the options name a folder for it.
    pub(crate) ledger: Option<crate::ledger::Ledger>,
}

impl Inner {
    pub(crate) fn trust(&self) -> crate::signature::Trust {
        self.trust
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn slot(&self, name: &str) -> Result<Arc<Slot>, HostError> {
        let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
        slots
            .get(name)
            .cloned()
            .ok_or_else(|| HostError::UnknownPlugin {
                plugin: name.to_owned(),
                known: slots.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }

    fn slots(&self) -> Vec<Arc<Slot>> {
        self.slots
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    fn emit(&self, event: Event) {
        // No subscriber is fine.
        let _ = self.events.send(event);
    }

    /// Sets a slot's status and reason, emitting an event when the status changes.
    pub(crate) fn set_status(&self, slot: &Slot, to: Status, reason: Option<String>) {
        let from = {
            let mut state = slot.state();
            let from = state.info.status;
            state.info.status = to;
            state.info.reason.clone_from(&reason);
            if !matches!(to, Status::Ready | Status::Degraded | Status::Starting) {
                state.info.pid = None;
            }
            slot.callable.store(to.callable(), Ordering::Release);
            from
        };
        if from != to {
            tracing::info!(plugin = %slot.name, %from, %to, reason = reason.as_deref().unwrap_or(""), "plugin status");
            self.emit(Event::StatusChanged {
                name: slot.name.clone(),
                from,
                to,
                reason,
            });
        }
    }

    fn insert(&self, slot: Slot) {
        let name = slot.name.clone();
        self.slots
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.clone(), Arc::new(slot));
        self.emit(Event::Added { name });
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.inner.slots().iter().map(|s| s.name.clone()).collect();
        f.debug_struct("Registry")
            .field("plugins", &names)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// A catalog holding only the built-in plugins linked into the binary (those
    /// [`RegistryOptions::builtins`] selects).
    pub fn new(options: RegistryOptions) -> Self {
        Self::with_root(None, options)
    }

    fn with_root(root: Option<PathBuf>, options: RegistryOptions) -> Self {
        let (events, _) = broadcast::channel(1024);
        // Before anything is launched: what a dead host left is ended first.
        let ledger = options.launch_record.as_deref().and_then(|dir| {
            crate::ledger::Ledger::open(dir)
                .inspect_err(|err| {
                    tracing::warn!(dir = %dir.display(), error = %err, "cannot keep a record of launched plugins; plugins left by a host that dies will not be cleaned up");
                })
                .ok()
        });
        let registry = Self {
            inner: Arc::new(Inner {
                slots: RwLock::new(BTreeMap::new()),
                events,
                root,
                tasks: TaskTracker::new(),
                cancel: CancellationToken::new(),
                epoch: tokio::time::Instant::now(),
                next_instance: AtomicU64::new(1),
                trust: RwLock::new(options.trust.clone()),
                ledger,
                options,
            }),
        };
        for builtin in builtins().filter(|b| registry.inner.options.builtins.selects(b.name)) {
            registry.add_builtin(builtin);
        }
        registry
    }

    /// Scans `root` and catalogs what it holds plus the built-in plugins. Folders holding a
    /// `.disabled` marker start disabled. Dependencies are checked.
    ///
    /// # Errors
    ///
    /// [`HostError::PluginsDir`] when `root` cannot be listed.
    pub async fn open(
        root: impl Into<PathBuf>,
        options: RegistryOptions,
    ) -> Result<Self, HostError> {
        let root: PathBuf = root.into();
        // Absolute, so watcher events (absolute paths) map back to plugin folders.
        let root = std::fs::canonicalize(&root).unwrap_or(root);
        let scan_root = root.clone();
        let discovery = tokio::task::spawn_blocking(move || crate::discover(&scan_root))
            .await
            .map_err(|err| HostError::PluginsDir {
                path: root.clone(),
                cause: std::io::Error::other(err.to_string()),
            })??;
        let registry = Self::with_root(Some(root), options);
        registry.add_discovery(discovery);
        Ok(registry)
    }

    /// A catalog of a discovery plus the built-in plugins; dependencies are checked.
    pub fn from_discovery(discovery: Discovery, options: RegistryOptions) -> Self {
        let registry = Self::new(options);
        registry.add_discovery(discovery);
        registry
    }

    fn add_discovery(&self, discovery: Discovery) {
        for plugin in discovery.plugins {
            self.add_process(plugin);
        }
        for invalid in discovery.invalid {
            self.add_invalid(invalid);
        }
        for unreadable in discovery.unreadable {
            tracing::warn!(dir = %unreadable.dir.display(), error = %unreadable.error, "plugin left out of the catalog until its manifest can be read");
        }
        self.check_dependencies();
    }

    /// The security scanners launches run ([`RegistryOptions::scanners`]); installs into this
    /// registry's folder run them too, sharing their cache.
    pub fn scanners(&self) -> &crate::scan::Scanners {
        &self.inner.options.scanners
    }

    /// The signature policy in force.
    pub fn trust(&self) -> crate::signature::Trust {
        self.inner.trust()
    }

    /// Replaces the signature policy (publishers added or removed); it applies to every launch
    /// from now on, including restarts and reloads. Running plugins are not stopped.
    pub fn set_trust(&self, trust: crate::signature::Trust) {
        *self
            .inner
            .trust
            .write()
            .unwrap_or_else(PoisonError::into_inner) = trust;
    }

    /// The plugins folder this catalog was opened from.
    pub fn root(&self) -> Option<&Path> {
        self.inner.root.as_deref()
    }

    fn add_builtin(&self, builtin: &'static Builtin) {
        let version = semver::Version::parse(builtin.version).ok();
        let status = if version.is_some() {
            Status::Ready
        } else {
            Status::Invalid
        };
        let info = PluginInfo {
            name: builtin.name.to_owned(),
            kind: Some(builtin.kind.to_owned()),
            reason: version
                .is_none()
                .then(|| format!("built-in version {:?} is not semantic", builtin.version)),
            version,
            status,
            tags: builtin.tags.iter().map(|t| (*t).to_owned()).collect(),
            description: Some(builtin.description.to_owned()),
            runtime: Runtime::Builtin,
            dir: None,
            manifest_sha256: None,
            pid: None,
            restarts: 0,
            reloads: 0,
            http: Vec::new(),
            sandbox: None,
            usage: None,
        };
        self.inner.insert(Slot::new(State {
            info,
            source: Source::Builtin(Arc::from((builtin.make)())),
            deps: Vec::new(),
            dep_invalid: false,
            binary_sha256: None,
            failed_content: None,
        }));
    }

    pub(crate) fn process_state(plugin: Discovered) -> State {
        let m = &plugin.manifest;
        let (status, reason) = if plugin.disabled {
            (
                Status::Disabled,
                Some(format!(
                    "disabled (a {} file is in its folder)",
                    crate::discovery::DISABLED_MARKER
                )),
            )
        } else {
            (Status::Discovered, None)
        };
        State {
            info: PluginInfo {
                name: m.name.clone(),
                kind: Some(m.kind.clone()),
                version: Some(m.version.clone()),
                tags: m.tags.clone(),
                description: m.about.description.clone(),
                runtime: Runtime::Process,
                status,
                reason,
                dir: Some(plugin.dir.clone()),
                manifest_sha256: Some(plugin.manifest_sha256.to_hex()),
                pid: None,
                restarts: 0,
                reloads: 0,
                http: m.http.clone(),
                sandbox: None,
                usage: None,
            },
            deps: m
                .dependencies
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    let file = &plugin.manifest_file;
                    let site = format!("{}:{}, dependencies[{i}]", file.display(), d.position);
                    (d.name.clone(), d.version.clone(), Some(site))
                })
                .collect(),
            source: Source::Process(Arc::new(plugin)),
            dep_invalid: false,
            binary_sha256: None,
            failed_content: None,
        }
    }

    fn add_process(&self, plugin: Discovered) {
        let name = plugin.manifest.name.clone();
        if let Ok(existing) = self.inner.slot(&name) {
            let existing = existing.info();
            tracing::warn!(
                plugin = %name,
                dir = %plugin.dir.display(),
                "a plugin named {name} is already in the catalog ({}); this folder is ignored",
                existing
                    .dir
                    .map_or_else(|| "built in".to_owned(), |d| d.display().to_string())
            );
            return;
        }
        self.inner.insert(Slot::new(Self::process_state(plugin)));
    }

    pub(crate) fn invalid_state(invalid: Invalid) -> State {
        State {
            info: PluginInfo {
                name: crate::discovery::folder_name(&invalid.dir),
                kind: None,
                version: None,
                tags: Vec::new(),
                description: None,
                runtime: Runtime::Process,
                status: Status::Invalid,
                reason: Some(invalid.error.to_string()),
                dir: Some(invalid.dir),
                manifest_sha256: None,
                pid: None,
                restarts: 0,
                reloads: 0,
                http: Vec::new(),
                sandbox: None,
                usage: None,
            },
            source: Source::Invalid,
            deps: Vec::new(),
            dep_invalid: false,
            binary_sha256: None,
            failed_content: None,
        }
    }

    fn add_invalid(&self, invalid: Invalid) {
        let name = crate::discovery::folder_name(&invalid.dir);
        if self.inner.slot(&name).is_ok() {
            tracing::warn!(plugin = %name, error = %invalid.error, "invalid plugin folder shadowed by a plugin of the same name");
            return;
        }
        self.inner.insert(Slot::new(Self::invalid_state(invalid)));
    }

    /// One plugin.
    pub fn get(&self, name: &str) -> Option<PluginInfo> {
        self.inner.slot(name).ok().map(|s| s.info())
    }

    /// Every plugin matching `query`, by name.
    pub fn list(&self, query: &Query) -> Vec<PluginInfo> {
        self.inner
            .slots()
            .iter()
            .map(|s| s.info())
            .filter(|info| query.matches(info))
            .collect()
    }

    /// Lifecycle events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// The handle of plugin `name` for contract `C`. Nothing starts until the first
    /// [`Handle::get`].
    ///
    /// # Errors
    ///
    /// [`HostError::UnknownPlugin`], or [`HostError::WrongContract`] when the plugin's type is
    /// not `C::KIND`.
    pub fn handle<C: Contract>(&self, name: &str) -> Result<Handle<C>, HostError> {
        let slot = self.inner.slot(name)?;
        let wrong = |kind: Option<String>| HostError::WrongContract {
            plugin: name.to_owned(),
            kind: kind.unwrap_or_else(|| "unknown (invalid manifest)".into()),
            expected: C::KIND,
        };
        let builtin = {
            let state = slot.state();
            if state.info.kind.as_deref() != Some(C::KIND) {
                return Err(wrong(state.info.kind.clone()));
            }
            match &state.source {
                Source::Builtin(any) => Some(
                    any.downcast_ref::<Arc<C::Handle>>()
                        .cloned()
                        .ok_or_else(|| wrong(state.info.kind.clone()))?,
                ),
                Source::Process(_) | Source::Invalid => None,
            }
        };
        Ok(Handle {
            inner: self.inner.clone(),
            slot,
            builtin,
        })
    }

    /// The gRPC connection of process plugin `name`, whatever its type, for generic callers;
    /// leases work as for typed handles (lazy start, drained on reload).
    ///
    /// # Errors
    ///
    /// [`HostError::UnknownPlugin`], or [`HostError::WrongContract`] for a built-in plugin (it
    /// has no connection).
    pub fn grpc(&self, name: &str) -> Result<Handle<crate::AnyGrpc>, HostError> {
        let slot = self.inner.slot(name)?;
        if matches!(slot.state().source, Source::Builtin(_)) {
            return Err(HostError::WrongContract {
                plugin: name.to_owned(),
                kind: "built-in".into(),
                expected: "a process plugin (gRPC)",
            });
        }
        Ok(Handle {
            inner: self.inner.clone(),
            slot,
            builtin: None,
        })
    }

    /// Starts a process plugin now rather than on its first call (no-op when running or
    /// built in).
    ///
    /// # Errors
    ///
    /// As [`Handle::get`].
    pub async fn start(&self, name: &str) -> Result<(), HostError> {
        let slot = self.inner.slot(name)?;
        if !matches!(slot.state().source, Source::Process(_)) {
            return if slot.status().callable() {
                Ok(())
            } else {
                Err(slot.not_available())
            };
        }
        let _starting = slot.start.lock().await;
        if slot
            .instance()
            .is_some_and(|i| i.client.exit_status().is_none())
        {
            return Ok(());
        }
        if !slot.status().callable() {
            return Err(slot.not_available());
        }
        Self::start_locked(&self.inner, &slot).await
    }

    /// Starts every callable process plugin, dependencies first; returns the failures.
    pub async fn start_all(&self) -> Vec<(String, HostError)> {
        let mut failures = Vec::new();
        for name in self.check_dependencies() {
            if let Err(err) = self.start(&name).await {
                failures.push((name, err));
            }
        }
        failures
    }

    /// Turns a plugin off: a running process is drained (bounded) and stopped.
    ///
    /// # Errors
    ///
    /// [`HostError::UnknownPlugin`].
    pub async fn disable(&self, name: &str) -> Result<(), HostError> {
        let slot = self.inner.slot(name)?;
        self.inner.set_status(
            &slot,
            Status::Disabled,
            Some("disabled by an operator".into()),
        );
        slot.wake.notify_waiters();
        let _starting = slot.start.lock().await;
        if let Some(instance) = slot.swap(None) {
            supervisor::drain_and_stop(&self.inner, &slot.name, instance).await;
        }
        // A start that was under way when the status changed may have set it back.
        self.inner.set_status(
            &slot,
            Status::Disabled,
            Some("disabled by an operator".into()),
        );
        self.check_dependencies();
        Ok(())
    }

    /// Turns a disabled (or failed) plugin back on; process plugins start again on first use.
    ///
    /// # Errors
    ///
    /// [`HostError::UnknownPlugin`], or [`HostError::NotAvailable`] for an invalid plugin.
    pub fn enable(&self, name: &str) -> Result<(), HostError> {
        let slot = self.inner.slot(name)?;
        let (status, runtime) = {
            let mut state = slot.state();
            state.info.restarts = 0;
            (state.info.status, state.info.runtime)
        };
        match status {
            Status::Disabled | Status::Failed => {
                let to = if runtime == Runtime::Builtin {
                    Status::Ready
                } else {
                    Status::Discovered
                };
                self.inner
                    .set_status(&slot, to, Some("enabled by an operator".into()));
                self.check_dependencies();
                Ok(())
            }
            Status::Invalid => Err(slot.not_available()),
            _ => Ok(()),
        }
    }

    /// Re-evaluates dependencies: a plugin whose dependency is missing, unusable, of a version
    /// that does not match, or part of a cycle becomes invalid with the reason; one whose
    /// problem went away recovers. Returns the start order of the usable plugins, dependencies
    /// first.
    pub fn check_dependencies(&self) -> Vec<String> {
        let slots = self.inner.slots();
        // A snapshot: (status, version, deps, dep_invalid) by name.
        let snapshot: BTreeMap<String, Snapshot> = slots
            .iter()
            .map(|s| {
                let state = s.state();
                (
                    s.name.clone(),
                    (
                        state.info.status,
                        state.info.version.clone(),
                        state.deps.clone(),
                        state.dep_invalid,
                    ),
                )
            })
            .collect();
        let (order, problems) = dependency_order(&snapshot);
        for slot in &slots {
            let (status, _, _, dep_invalid) = &snapshot[&slot.name];
            match problems.get(&slot.name) {
                Some(reason) => {
                    slot.state().dep_invalid = true;
                    self.inner
                        .set_status(slot, Status::Invalid, Some(reason.clone()));
                }
                None if *dep_invalid && *status == Status::Invalid => {
                    slot.state().dep_invalid = false;
                    let to = if slot.info().runtime == Runtime::Builtin {
                        Status::Ready
                    } else {
                        Status::Discovered
                    };
                    self.inner
                        .set_status(slot, to, Some("dependencies satisfied".into()));
                }
                None => {}
            }
        }
        order
    }

    /// Drains and stops every running process plugin and every background task, bounded by
    /// the drain timeout plus the kill grace.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.cancel.cancel();
        let stops = inner.slots().into_iter().map(|slot| async move {
            let _starting = slot.start.lock().await;
            if let Some(instance) = slot.swap(None) {
                supervisor::drain_and_stop(inner, &slot.name, instance).await;
                inner.set_status(&slot, Status::Stopped, Some("host shutdown".into()));
            }
        });
        futures_util::future::join_all(stops).await;
        inner.tasks.close();
        let bound = inner.options.drain_timeout + inner.options.kill_grace * 2;
        if tokio::time::timeout(bound, inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("background tasks still running after the shutdown bound");
        }
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }
}

type Snapshot = (
    Status,
    Option<semver::Version>,
    Vec<(String, semver::VersionReq, Option<String>)>,
    bool,
);

/// The start order (Kahn's algorithm, dependencies first, ties by name) and each plugin's
/// dependency problem. A plugin made invalid only by a dependency is evaluated again.
fn dependency_order(
    plugins: &BTreeMap<String, Snapshot>,
) -> (Vec<String>, BTreeMap<String, String>) {
    let considered = |(status, _, _, dep_invalid): &Snapshot| {
        !matches!(status, Status::Invalid | Status::Disabled)
            || (*status == Status::Invalid && *dep_invalid)
    };
    let usable = |name: &str| plugins.get(name).is_some_and(&considered);
    let mut problems: BTreeMap<String, String> = BTreeMap::new();
    // Problems propagate: a plugin whose dependency has a problem has one too.
    loop {
        let before = problems.len();
        let pending: Vec<(&String, &Snapshot)> = plugins
            .iter()
            .filter(|(n, p)| considered(p) && !problems.contains_key(*n))
            .collect();
        for (name, plugin) in pending {
            for (dep, req, site) in &plugin.2 {
                let declared = site
                    .as_ref()
                    .map(|s| format!(" (declared at {s})"))
                    .unwrap_or_default();
                let problem = match plugins.get(dep) {
                    None => Some(format!("dependency {dep} ({req}) is missing{declared}")),
                    Some(_) if problems.contains_key(dep) => {
                        Some(format!("dependency {dep} is unusable: {}", problems[dep]))
                    }
                    Some(d) if !usable(dep) => {
                        Some(format!("dependency {dep} is {}{declared}", d.0))
                    }
                    Some(d) if !d.1.as_ref().is_some_and(|v| req.matches(v)) => Some(format!(
                        "dependency {dep} is version {}, which does not match {req}{declared}",
                        d.1.as_ref()
                            .map_or_else(|| "unknown".to_owned(), ToString::to_string)
                    )),
                    Some(_) => None,
                };
                if let Some(problem) = problem {
                    problems.insert(name.clone(), problem);
                    break;
                }
            }
        }
        if problems.len() == before {
            break;
        }
    }
    let candidates: Vec<&String> = plugins
        .iter()
        .filter(|(n, p)| considered(p) && !problems.contains_key(*n))
        .map(|(n, _)| n)
        .collect();
    let mut indegree: HashMap<&String, usize> = candidates
        .iter()
        .map(|n| (*n, plugins[*n].2.len()))
        .collect();
    let mut ready: Vec<&String> = indegree
        .iter()
        .filter(|(_, d)| **d == 0)
        .map(|(n, _)| *n)
        .collect();
    let mut order = Vec::new();
    while !ready.is_empty() {
        ready.sort_by(|a, b| b.cmp(a));
        let Some(next) = ready.pop() else { break };
        order.push(next.clone());
        for name in &candidates {
            if plugins[*name].2.iter().any(|(d, _, _)| d == next)
                && let Some(d) = indegree.get_mut(*name)
            {
                *d -= 1;
                if *d == 0 {
                    ready.push(name);
                }
            }
        }
    }
    for name in candidates {
        if !order.contains(name) {
            let deps: Vec<&str> = plugins[name].2.iter().map(|(d, _, _)| d.as_str()).collect();
            problems.insert(
                name.clone(),
                format!("dependency cycle through {}", deps.join(", ")),
            );
        }
    }
    (order, problems)
}

#[cfg(test)]
mod tests;
