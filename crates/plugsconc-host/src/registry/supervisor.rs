//! Launching and watching process plugins: integrity checks before exec, a health check before
//! a new instance takes calls, then one supervisor task per instance that runs health checks on
//! an interval, restarts after a crash with exponential backoff and jitter (up to a limit, then
//! `failed`), and stops the plugin after an idle period (the next call starts it again).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use super::slot::{Instance, Slot, Source};
use super::{Event, Inner, Registry, Status};
use crate::checksum::read_sidecar;
use crate::discovery::Discovered;
use crate::manifest::LimitPolicy;
use crate::monitor::Sampler;
use crate::sandbox::SandboxSpec;
use crate::services;
use crate::{HostError, PluginClient};

impl Registry {
    /// Launches the slot's plugin and installs it. The caller holds `slot.start`.
    ///
    /// A start that fails for a passing reason (the process died or hung before it was ready)
    /// hands over to a restart with backoff, which calls wait for; anything else marks the
    /// plugin `failed` at once.
    pub(crate) async fn start_locked(
        inner: &Arc<Inner>,
        slot: &Arc<Slot>,
    ) -> Result<(), HostError> {
        let plugin = match &slot.state().source {
            Source::Process(plugin) => plugin.clone(),
            Source::Builtin(_) | Source::Invalid => return Err(slot.not_available()),
        };
        // A process that died before its supervisor noticed: taken out here, so that the
        // supervisor does not restart it a second time.
        let ran_for = slot
            .instance()
            .filter(|instance| instance.client.exit_status().is_some())
            .and_then(|crashed| slot.take_if(crashed.id))
            .map(|crashed| crashed.started.elapsed());
        inner.set_status(slot, Status::Starting, None);
        match launch(inner, &plugin).await {
            Ok(instance) => {
                install(inner, slot, instance, None);
                Ok(())
            }
            Err(err) if err.is_transient() => {
                begin_restart(inner, slot, ran_for, err.to_string());
                Err(err)
            }
            Err(err) => {
                fail(inner, slot, &plugin, err.to_string()).await;
                Err(err)
            }
        }
    }
}

/// Marks a plugin `failed`, remembering its folder's content so that a rescan retries it only
/// when that content changed (an operator's enable or reload retries it too).
pub(crate) async fn fail(inner: &Inner, slot: &Slot, plugin: &Discovered, reason: String) {
    let content = content_hash(plugin).await;
    slot.state().failed_content = content;
    inner.set_status(slot, Status::Failed, Some(reason));
}

/// The hash of what decides whether a plugin can start: its manifest, binary, checksum
/// sidecar and signature (`None` when they cannot be read).
pub(crate) async fn content_hash(plugin: &Discovered) -> Option<crate::checksum::Sha256> {
    let (manifest, entrypoint, signature) = (
        plugin.manifest_file.clone(),
        plugin.entrypoint(),
        plugin.signature_file(),
    );
    tokio::task::spawn_blocking(move || {
        let mut sidecar = entrypoint.clone().into_os_string();
        sidecar.push(crate::checksum::SIDECAR_SUFFIX);
        let sidecar = std::path::PathBuf::from(sidecar);
        crate::checksum::sha256_files(&[&manifest, &entrypoint, &sidecar, &signature]).ok()
    })
    .await
    .ok()
    .flatten()
}

/// The configuration plugin `name` gets: its manifest's, with the keys of
/// `<config_dir>/<name>.yaml` (when there is one) put over them.
async fn plugin_config(
    name: &str,
    manifest: &std::collections::BTreeMap<String, serde_json::Value>,
    config_dir: Option<&std::path::Path>,
) -> Result<std::collections::BTreeMap<String, serde_json::Value>, HostError> {
    let mut config = manifest.clone();
    let Some(dir) = config_dir else {
        return Ok(config);
    };
    let path = dir.join(format!("{name}.yaml"));
    let fail = |reason: String| HostError::PluginConfig {
        plugin: name.to_owned(),
        path: path.clone(),
        reason,
    };
    let read = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || std::fs::read_to_string(path))
            .await
            .map_err(|err| fail(err.to_string()))?
    };
    let text = match read {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(config),
        Err(err) => return Err(fail(err.to_string())),
    };
    let overrides: std::collections::BTreeMap<String, serde_json::Value> =
        serde_saphyr::from_str(&text)
            .map_err(|err| fail(format!("expected a mapping of configuration keys: {err}")))?;
    config.extend(overrides);
    Ok(config)
}

/// Verifies, starts and health-checks one instance of `plugin`; nothing is installed.
pub(crate) async fn launch(inner: &Inner, plugin: &Discovered) -> Result<Instance, HostError> {
    let options = &inner.options;
    let name = &plugin.manifest.name;
    let mut builder = PluginClient::builder(name.clone(), plugin.entrypoint())
        .handshake(plugin.manifest.handshake.clone())
        .auto_mtls(plugin.manifest.security.auto_mtls)
        .start_timeout(options.start_timeout)
        .kill_grace(options.kill_grace)
        .call_timeout(
            plugin
                .manifest
                .resources
                .execution_ms
                .map(Duration::from_millis),
        );
    let sandbox = options.sandbox.enabled.then(|| SandboxSpec {
        dir: plugin.dir.clone(),
        capabilities: plugin.manifest.capabilities.clone(),
        resources: plugin.manifest.resources,
        data_dir: options
            .sandbox
            .data_root
            .as_ref()
            .map(|root| root.join(name)),
        require: options.sandbox.require,
    });
    if let Some(spec) = &sandbox {
        builder = builder.sandbox(spec.clone());
    }
    if let Some(ledger) = &inner.ledger {
        builder = builder.ledger(ledger.clone());
    }
    // Only the variables the options name: the host's secrets stay with it.
    builder = builder.skip_host_env(true);
    for name in &options.host_env {
        if let Some(value) = std::env::var_os(name) {
            builder = builder.env(name, value);
        }
    }
    builder = builder.env(
        plugsconc_protocol::env::HOST_SERVICES,
        services::BROKER_ID.to_string(),
    );
    let config =
        plugin_config(name, &plugin.manifest.config, options.config_dir.as_deref()).await?;
    if !config.is_empty() {
        let config = serde_json::to_string(&config).unwrap_or_default();
        builder = builder.env(plugsconc_protocol::env::PLUGIN_CONFIG, config);
    }
    let binary_sha256 = if options.insecure_skip_checksum {
        tracing::warn!(plugin = %name, "checksum verification is off (insecure_skip_checksum)");
        // Still hashed, so a reload notices a replaced binary.
        let path = plugin.entrypoint();
        tokio::task::spawn_blocking(move || crate::sha256_file(&path).ok())
            .await
            .ok()
            .flatten()
    } else {
        // The sidecar says what the binary must be; the builder hashes the file right before
        // exec (once: binaries can be large) and refuses a mismatch.
        let (plugin_name, entrypoint) = (name.clone(), plugin.entrypoint());
        let digest = tokio::task::spawn_blocking(move || read_sidecar(&plugin_name, &entrypoint))
            .await
            .map_err(|err| HostError::Sidecar {
                plugin: name.clone(),
                path: plugin.entrypoint(),
                entrypoint: String::new(),
                reason: err.to_string(),
            })??;
        builder = builder.sha256(digest.to_hex());
        Some(digest)
    };
    // The signature binds the binary's hash: the sidecar's, which the builder enforces before
    // exec (or the file's own when sidecars are off).
    let verdict = match binary_sha256 {
        Some(digest) => {
            let (owned, trust) = (plugin.clone(), inner.trust());
            tokio::task::spawn_blocking(move || crate::signature::check(&owned, &digest, &trust))
                .await
                .map_err(|err| HostError::Signature {
                    plugin: name.clone(),
                    path: plugin.signature_file(),
                    reason: err.to_string(),
                })??
        }
        None => {
            return Err(HostError::Signature {
                plugin: name.clone(),
                path: plugin.signature_file(),
                reason: format!(
                    "cannot hash {} to check its signature",
                    plugin.entrypoint().display()
                ),
            });
        }
    };
    tracing::debug!(plugin = %name, %verdict, "signature policy passed");
    // After the cheap checks; a verdict is cached per content, so only a new version waits.
    options.scanners.check_async(name, &plugin.dir).await?;
    let client = builder
        .start()
        .await
        .map_err(|err| name_the_owner(inner, err))?;
    if let Some(protections) = client.protections() {
        if protections.missing.is_empty() {
            tracing::debug!(plugin = %name, enforced = ?protections.enforced, "plugin sandboxed");
        } else {
            // Degrade loudly: the plugin runs, without these.
            tracing::warn!(plugin = %name, missing = ?protections.missing, "plugin runs without some sandbox protections (this kernel lacks them; security.require_sandbox refuses instead)");
        }
        if !protections.unenforced.is_empty() {
            tracing::info!(plugin = %name, unenforced = ?protections.unenforced, "grants the OS cannot check");
        }
    } else if !options.sandbox.enabled {
        tracing::warn!(plugin = %name, "plugin runs without the OS sandbox (disabled)");
    }
    let health = tokio::time::timeout(options.health_timeout, client.health()).await;
    let unhealthy = match health {
        Ok(Ok(())) => None,
        Ok(Err(err)) => Some(err),
        Err(_) => Some(HostError::Unhealthy {
            plugin: name.clone(),
            reason: format!(
                "no answer to the health check within {:.1} s",
                options.health_timeout.as_secs_f64()
            ),
        }),
    };
    if let Some(err) = unhealthy {
        let _ = client.kill().await;
        return Err(err);
    }
    let grants = services::Grants {
        plugin: name.clone(),
        capabilities: plugin.manifest.capabilities.clone(),
        sandbox,
        pid: client.pid(),
    };
    let host_services = match client
        .broker()
        .accept_and_serve(services::BROKER_ID, services::for_plugin(grants))
    {
        Ok(server) => Some(server),
        Err(err) => {
            tracing::warn!(plugin = %name, error = %err, "cannot serve the host services to the plugin");
            None
        }
    };
    Ok(Instance {
        id: inner.next_instance.fetch_add(1, Ordering::Relaxed),
        client,
        version: plugin.manifest.version.clone(),
        binary_sha256,
        leases: TaskTracker::new(),
        started: tokio::time::Instant::now(),
        resources: plugin.manifest.resources,
        _host_services: host_services,
    })
}

/// Says which plugin of the catalog serves the address an impersonating plugin printed.
fn name_the_owner(inner: &Inner, mut err: HostError) -> HostError {
    if let HostError::Impersonation { peer, owner, .. } = &mut err
        && let Some(owner_pid) = peer.found_pid
        && let Some(sibling) = inner
            .slots()
            .into_iter()
            .find(|slot| slot.state().info.pid == Some(owner_pid))
    {
        *owner = format!("plugin {:?}, {owner}", sibling.name);
    }
    err
}

/// Makes `instance` the one serving the slot and starts its supervisor; returns the previous
/// instance (the caller drains it). `reason` explains the new status.
pub(crate) fn install(
    inner: &Arc<Inner>,
    slot: &Arc<Slot>,
    instance: Instance,
    reason: Option<String>,
) -> Option<Arc<Instance>> {
    let instance = Arc::new(instance);
    {
        let mut state = slot.state();
        state.info.pid = Some(instance.client.pid());
        state.info.sandbox = instance.client.protections().cloned();
        state.binary_sha256 = instance.binary_sha256;
    }
    slot.last_used.store(inner.now_ms(), Ordering::Relaxed);
    let previous = slot.swap(Some(instance.clone()));
    inner.set_status(slot, Status::Ready, reason);
    // `set_status` clears the pid only for non-running statuses; make sure it is the new one.
    slot.state().info.pid = Some(instance.client.pid());
    let (inner2, slot2) = (inner.clone(), slot.clone());
    inner
        .tasks
        .spawn(async move { supervise(inner2, slot2, instance).await });
    previous
}

/// Waits (bounded) for the instance's leases to be dropped, then stops it.
pub(crate) async fn drain_and_stop(inner: &Inner, name: &str, instance: Arc<Instance>) {
    instance.leases.close();
    if tokio::time::timeout(inner.options.drain_timeout, instance.leases.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            plugin = %name,
            in_flight = instance.leases.len(),
            "calls still in flight after the drain timeout; stopping the plugin anyway"
        );
    }
    if let Err(err) = instance.client.kill().await {
        tracing::warn!(plugin = %name, error = %err, "plugin did not stop cleanly");
    }
}

/// Watches one instance until it is replaced, stopped, or the host shuts down.
async fn supervise(inner: Arc<Inner>, slot: Arc<Slot>, instance: Arc<Instance>) {
    let options = &inner.options;
    let mut health = tokio::time::interval_at(
        tokio::time::Instant::now() + options.health_interval,
        options.health_interval,
    );
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let idle_period = options.idle_timeout.map_or(Duration::from_secs(3600), |t| {
        (t / 4).max(Duration::from_millis(10))
    });
    let mut idle = tokio::time::interval_at(tokio::time::Instant::now() + idle_period, idle_period);
    idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let monitor_period = options
        .monitor_interval
        .unwrap_or(Duration::from_secs(3600));
    let mut monitor =
        tokio::time::interval_at(tokio::time::Instant::now() + monitor_period, monitor_period);
    monitor.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sampler = Sampler::new(instance.client.pid());
    let mut failures = 0u32;
    loop {
        tokio::select! {
            () = inner.cancel.cancelled() => return,
            status = instance.client.exited() => {
                // Stops on purpose take the instance out of the slot first; finding it still
                // there means it crashed.
                if slot.take_if(instance.id).is_some() {
                    let how = status.map_or_else(|| "unknown status".to_owned(), |s| s.to_string());
                    let tail = instance.client.stderr_tail();
                    let mut why = format!("exited unexpectedly ({how})");
                    if let Some(last) = tail.last() {
                        why.push_str(&format!("; last stderr line: {last}"));
                    }
                    tracing::warn!(plugin = %slot.name, "{why}");
                    slot.restarting.fetch_add(1, Ordering::AcqRel);
                    restart(&inner, &slot, Some(instance.started.elapsed()), why).await;
                }
                return;
            }
            _ = health.tick() => {
                if slot.instance().is_none_or(|i| i.id != instance.id) {
                    return;
                }
                match tokio::time::timeout(options.health_timeout, instance.client.health()).await {
                    Ok(Ok(())) => {
                        failures = 0;
                        if slot.status() == Status::Degraded {
                            inner.set_status(&slot, Status::Ready, Some("health checks pass again".into()));
                        }
                    }
                    result => {
                        failures += 1;
                        let reason = match result {
                            Ok(Err(err)) => err.to_string(),
                            _ => format!("no answer to the health check within {:.1} s", options.health_timeout.as_secs_f64()),
                        };
                        let reason = format!("{reason} ({failures} of {} failures allowed)", options.health_failures);
                        inner.set_status(&slot, Status::Degraded, Some(reason.clone()));
                        if failures >= options.health_failures && slot.take_if(instance.id).is_some() {
                            slot.restarting.fetch_add(1, Ordering::AcqRel);
                            let _ = instance.client.kill().await;
                            restart(&inner, &slot, Some(instance.started.elapsed()), reason).await;
                            return;
                        }
                    }
                }
            }
            _ = monitor.tick(), if options.monitor_interval.is_some() => {
                if slot.instance().is_none_or(|i| i.id != instance.id) {
                    return;
                }
                // procfs reads are short, but they are still file reads: off the async threads.
                let mut taken = sampler;
                let Ok((taken, usage)) = tokio::task::spawn_blocking(move || {
                    let usage = taken.sample();
                    (taken, usage)
                }).await else { continue };
                sampler = taken;
                let Some(usage) = usage else { continue };
                slot.state().info.usage = Some(usage);
                let violations = crate::monitor::check(&instance.resources, &usage);
                if violations.is_empty() {
                    continue;
                }
                let policy = instance.resources.policy;
                let reason = violations.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
                tracing::warn!(plugin = %slot.name, ?policy, "resource limit exceeded: {reason}");
                let alert = |inner: &Inner| {
                    for violation in &violations {
                        inner.emit(Event::ResourceAlert { name: slot.name.clone(), violation: violation.clone(), policy });
                    }
                };
                if policy == LimitPolicy::Warn {
                    alert(&inner);
                    continue;
                }
                // Held across the kill, so a call arriving meanwhile waits for the restart
                // instead of starting a plugin of its own; the alert goes out once the old
                // process no longer takes calls, so whoever reacts to it reaches the new one.
                let _starting = slot.start.lock().await;
                let taken = slot.take_if(instance.id).is_some();
                alert(&inner);
                if taken {
                    let _ = instance.client.kill().await;
                    if policy == LimitPolicy::Restart {
                        restart_locked(&inner, &slot, Some(instance.started.elapsed()), format!("over its resource limits: {reason}")).await;
                    } else {
                        let reason = format!("stopped by its resource policy: {reason}");
                        let plugin = slot.state().source.clone_process();
                        match plugin {
                            Some(plugin) => fail(&inner, &slot, &plugin, reason).await,
                            None => inner.set_status(&slot, Status::Failed, Some(reason)),
                        }
                    }
                }
                return;
            }
            _ = idle.tick(), if options.idle_timeout.is_some() => {
                let Some(limit) = options.idle_timeout else { continue };
                let idle_ms = inner.now_ms().saturating_sub(slot.last_used.load(Ordering::Relaxed));
                if Duration::from_millis(idle_ms) < limit {
                    continue;
                }
                let _starting = slot.start.lock().await;
                if let Some(instance) = slot.take_if_idle(instance.id) {
                    drain_and_stop(&inner, &slot.name, instance).await;
                    inner.set_status(&slot, Status::Stopped, Some(format!(
                        "stopped after {:.1} s without calls; the next call starts it",
                        limit.as_secs_f64()
                    )));
                    return;
                }
            }
        }
    }
}

/// Starts [`restart`] in the background for a plugin whose start failed, flagging it first so
/// that calls wait for it rather than start a process of their own.
fn begin_restart(inner: &Arc<Inner>, slot: &Arc<Slot>, ran_for: Option<Duration>, why: String) {
    slot.restarting.fetch_add(1, Ordering::AcqRel);
    let (inner2, slot2) = (inner.clone(), slot.clone());
    inner
        .tasks
        .spawn(async move { restart(&inner2, &slot2, ran_for, why).await });
}

/// Restarts a crashed (or hopelessly unhealthy) plugin with backoff, holding the slot's start
/// lock, so that calls wait for the new instance instead of racing to start their own. The
/// caller counts the restart in `slot.restarting` before it lets the lock go; this ends that
/// count. `ran_for` is how long the previous instance ran, if there was one.
async fn restart(inner: &Arc<Inner>, slot: &Arc<Slot>, ran_for: Option<Duration>, why: String) {
    {
        let _starting = slot.start.lock().await;
        restart_locked(inner, slot, ran_for, why).await;
    }
    slot.restarting.fetch_sub(1, Ordering::AcqRel);
    slot.settled.notify_waiters();
}

/// [`restart`] with the slot's start lock already held.
async fn restart_locked(
    inner: &Arc<Inner>,
    slot: &Arc<Slot>,
    ran_for: Option<Duration>,
    why: String,
) {
    if slot.instance().is_some() {
        // A reload installed a new version meanwhile.
        return;
    }
    let backoff = inner.options.backoff;
    let mut attempt = {
        let mut state = slot.state();
        if ran_for.is_some_and(|ran| ran >= backoff.reset_after) {
            state.info.restarts = 0;
        }
        state.info.restarts + 1
    };
    let mut last = why;
    loop {
        if attempt > backoff.max_restarts {
            let reason = format!(
                "gave up after {} restarts; last failure: {last}",
                backoff.max_restarts
            );
            let plugin = slot.state().source.clone_process();
            match plugin {
                Some(plugin) => fail(inner, slot, &plugin, reason).await,
                None => inner.set_status(slot, Status::Failed, Some(reason)),
            }
            return;
        }
        let delay = backoff.delay(attempt);
        inner.set_status(
            slot,
            Status::Starting,
            Some(format!(
                "restart {attempt} of {} in {} ms after: {last}",
                backoff.max_restarts,
                delay.as_millis()
            )),
        );
        tokio::select! {
            () = inner.cancel.cancelled() => return,
            () = slot.wake.notified() => {}
            () = tokio::time::sleep(delay) => {}
        }
        if slot.removed.load(Ordering::Acquire) || slot.status() != Status::Starting {
            // Disabled, reloaded or removed meanwhile.
            return;
        }
        let plugin = match &slot.state().source {
            Source::Process(plugin) => plugin.clone(),
            Source::Builtin(_) | Source::Invalid => return,
        };
        slot.state().info.restarts = attempt;
        match launch(inner, &plugin).await {
            Ok(instance) => {
                install(
                    inner,
                    slot,
                    instance,
                    Some(format!("restarted after: {last}")),
                );
                return;
            }
            Err(err) => {
                last = err.to_string();
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_configuration_file_overrides_the_manifests_keys() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = std::collections::BTreeMap::from([
            ("greeting".to_owned(), serde_json::json!("hello")),
            ("kept".to_owned(), serde_json::json!(1)),
        ]);
        assert_eq!(
            plugin_config("p", &manifest, Some(dir.path()))
                .await
                .unwrap(),
            manifest,
            "no file: the manifest's"
        );
        std::fs::write(dir.path().join("p.yaml"), "greeting: hi\nextra: [1, 2]\n").unwrap();
        let config = plugin_config("p", &manifest, Some(dir.path()))
            .await
            .unwrap();
        assert_eq!(config["greeting"], "hi");
        assert_eq!(config["kept"], 1);
        assert_eq!(config["extra"], serde_json::json!([1, 2]));
        std::fs::write(dir.path().join("p.yaml"), "- not\n- a mapping\n").unwrap();
        let err = plugin_config("p", &manifest, Some(dir.path()))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("p.yaml") && err.to_string().contains("mapping"),
            "{err}"
        );
    }
}
