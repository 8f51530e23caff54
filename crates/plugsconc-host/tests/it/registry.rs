//! The registry against real plugin folders: lazy launch, built-ins behind the same trait,
//! enable/disable, integrity before exec, crash restarts, idle stop, and hot reload — including
//! callers running continuously while the binary is replaced, with no failed call.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use builtin_cow as _;
use example_animal::AnimalContract;
use plugsconc_host::registry::{Backoff, Change, Runtime};
use plugsconc_host::sandbox::SandboxOptions;
use plugsconc_host::signature::{Publisher, Trust, keygen, sign_plugin};
use plugsconc_host::{
    BuiltinSelection, Event, HostError, Query, Registry, RegistryOptions, Status,
};
use tokio::sync::broadcast;

use crate::support::{alive, example_bin};

const WAIT: Duration = Duration::from_secs(60);

/// Writes (or replaces, atomically) plugin `name` in `root`: the binary copied from `binary`,
/// its sidecar, and a manifest of `version`.
fn put_plugin(root: &Path, name: &str, binary: &Path, version: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    // A running binary cannot be written to (ETXTBSY): replace it by renaming, as deployments do.
    let tmp = dir.join(format!(".{name}.new"));
    std::fs::copy(binary, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
    write_sidecar(&dir, name);
    write_atomic(
        &dir.join("manifest.yaml"),
        &format!(
            "plugin:\n  name: {name}\n  type: animal\n  version: {version}\n  entrypoint: ./{name}\nabout:\n  description: the {name}\nhandshake:\n  protocol_version: 1\n  magic_cookie_key: ANIMAL_PLUGIN\n  magic_cookie_value: animal\nsecurity:\n  auto_mtls: true\ntags: [pet]\n"
        ),
    );
    dir
}

fn write_sidecar(dir: &Path, name: &str) {
    let digest = plugsconc_host::sha256_file(&dir.join(name))
        .unwrap()
        .to_hex();
    write_atomic(
        &dir.join(format!("{name}.sha256")),
        &format!("{digest}  {name}\n"),
    );
}

fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A shell script as a plugin binary: it records that it ran, then exits.
fn script(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("script-src");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Without the OS sandbox: for tests whose marker file proves a binary never ran, which the
/// sandbox would otherwise stop on its own.
fn unconfined() -> RegistryOptions {
    RegistryOptions {
        sandbox: SandboxOptions::disabled(),
        ..options()
    }
}

fn options() -> RegistryOptions {
    RegistryOptions {
        start_timeout: Duration::from_secs(20),
        idle_timeout: None,
        // Signatures have their own test below; the others run unsigned test plugins.
        trust: Trust::allow_unsigned(),
        ..RegistryOptions::default()
    }
}

/// Restarts `initial_ms` apart, doubling up to `max_ms`, `max_restarts` in a row; the count is
/// never reset during a test.
fn quick_restarts(initial_ms: u64, max_ms: u64, max_restarts: u32) -> Backoff {
    Backoff {
        initial: Duration::from_millis(initial_ms),
        max: Duration::from_millis(max_ms),
        max_restarts,
        reset_after: Duration::from_secs(3600),
    }
}

async fn wait_for(
    events: &mut broadcast::Receiver<Event>,
    what: &str,
    mut pred: impl FnMut(&Event) -> bool,
) -> Event {
    let found = tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(event) if pred(&event) => return event,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("event stream closed"),
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no event: {what}"))
}

fn is_status(name: &'static str, to: Status) -> impl FnMut(&Event) -> bool {
    move |event| matches!(event, Event::StatusChanged { name: n, to: t, .. } if n == name && *t == to)
}

async fn speak(registry: &Registry, name: &str) -> Result<String, String> {
    let handle = registry
        .handle::<AnimalContract>(name)
        .map_err(|e| e.to_string())?;
    let lease = handle.get().await.map_err(|e| e.to_string())?;
    lease.speak(false).await.map_err(|e| e.to_string())
}

fn pid_of(registry: &Registry, name: &str) -> u32 {
    registry.get(name).unwrap().pid.expect("running")
}

#[tokio::test]
async fn the_options_choose_which_linked_built_ins_are_cataloged() {
    let names = |builtins| {
        Registry::new(RegistryOptions {
            builtins,
            ..options()
        })
        .list(&Query::default())
        .into_iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
    };
    assert_eq!(
        names(BuiltinSelection::All),
        ["cow"],
        "all linked by default"
    );
    assert!(names(BuiltinSelection::none()).is_empty());
    let only = |name: &str| BuiltinSelection::Only([name.to_owned()].into());
    assert_eq!(names(only("cow")), ["cow"]);
    assert!(
        names(only("horse")).is_empty(),
        "an unlinked name adds nothing"
    );
}

#[tokio::test]
async fn built_in_and_process_plugins_share_one_catalog_and_one_trait() {
    let root = tempfile::tempdir().unwrap();
    put_plugin(root.path(), "cat", &example_bin("cat"), "1.0.0");
    let registry = Registry::open(root.path(), options()).await.unwrap();

    let cow = registry.get("cow").expect("the built-in cow is linked in");
    assert_eq!((cow.runtime, cow.status), (Runtime::Builtin, Status::Ready));
    let cat = registry.get("cat").unwrap();
    assert_eq!(
        (cat.runtime, cat.status, cat.pid),
        (Runtime::Process, Status::Discovered, None)
    );
    let animals = registry.list(&Query {
        kind: Some("animal".into()),
        ..Query::default()
    });
    assert!(animals.iter().any(|p| p.name == "cat") && animals.iter().any(|p| p.name == "cow"));

    // Lazy launch: the first call starts the process.
    assert_eq!(speak(&registry, "cat").await.unwrap(), "Meow!");
    assert_eq!(speak(&registry, "cow").await.unwrap(), "Moo.");
    assert_eq!(registry.get("cat").unwrap().status, Status::Ready);
    let pid = pid_of(&registry, "cat");
    assert!(alive(pid));

    // Disable stops the process; calls are refused with the reason; enable brings it back.
    registry.disable("cat").await.unwrap();
    assert!(!alive(pid), "a disabled plugin's process is stopped");
    let err = speak(&registry, "cat").await.unwrap_err();
    assert!(err.contains("disabled"), "{err}");
    registry.enable("cat").unwrap();
    assert_eq!(speak(&registry, "cat").await.unwrap(), "Meow!");

    registry.disable("cow").await.unwrap();
    let err = speak(&registry, "cow").await.unwrap_err();
    assert!(err.contains("\"cow\" is disabled"), "{err}");
    registry.enable("cow").unwrap();
    assert_eq!(speak(&registry, "cow").await.unwrap(), "Moo.");

    let err = registry.handle::<AnimalContract>("nope").unwrap_err();
    assert!(matches!(err, HostError::UnknownPlugin { .. }), "{err}");
    let pid = pid_of(&registry, "cat");
    registry.shutdown().await;
    assert!(!alive(pid));
    assert_eq!(registry.get("cat").unwrap().status, Status::Stopped);
}

#[tokio::test]
async fn concurrent_first_calls_start_one_process() {
    let root = tempfile::tempdir().unwrap();
    put_plugin(root.path(), "cat", &example_bin("cat"), "1.0.0");
    let registry = Registry::open(root.path(), options()).await.unwrap();
    let mut events = registry.subscribe();
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let registry = registry.clone();
            tokio::spawn(async move { speak(&registry, "cat").await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), "Meow!");
    }
    let mut starts = 0;
    while let Ok(event) = events.try_recv() {
        if matches!(
            event,
            Event::StatusChanged {
                to: Status::Starting,
                ..
            }
        ) {
            starts += 1;
        }
    }
    assert_eq!(starts, 1);
    registry.shutdown().await;
}

#[tokio::test]
async fn a_binary_that_fails_its_checksum_is_never_executed() {
    let root = tempfile::tempdir().unwrap();
    let marker = root.path().join("it-ran");
    let dir = put_plugin(root.path(), "cat", &example_bin("cat"), "1.0.0");
    // Replace the binary after the sidecar was written.
    let evil = script(root.path(), &format!("touch {}", marker.display()));
    std::fs::copy(evil, dir.join("cat")).unwrap();
    let registry = Registry::open(root.path(), unconfined()).await.unwrap();
    let err = speak(&registry, "cat").await.unwrap_err();
    assert!(err.contains("refusing to run it"), "{err}");
    assert!(!marker.exists(), "the replaced binary was executed");
    let info = registry.get("cat").unwrap();
    assert_eq!(info.status, Status::Failed);
    assert!(info.reason.unwrap().contains("SHA-256"));

    // Without a sidecar at all, the error says how to make one.
    std::fs::remove_file(dir.join("cat.sha256")).unwrap();
    registry.enable("cat").unwrap();
    let err = speak(&registry, "cat").await.unwrap_err();
    assert!(err.contains("sha256sum cat > cat.sha256"), "{err}");
    assert!(!marker.exists());
}

#[tokio::test]
async fn a_crashed_plugin_is_restarted_and_a_crash_loop_ends_failed() {
    let root = tempfile::tempdir().unwrap();
    let dir = put_plugin(root.path(), "cat", &example_bin("cat"), "1.0.0");
    let registry = Registry::open(
        root.path(),
        RegistryOptions {
            backoff: quick_restarts(1, 5, 2),
            ..options()
        },
    )
    .await
    .unwrap();
    assert_eq!(speak(&registry, "cat").await.unwrap(), "Meow!");
    let first = pid_of(&registry, "cat");
    let mut events = registry.subscribe();

    unsafe_kill(first);
    wait_for(
        &mut events,
        "cat restarted",
        is_status("cat", Status::Ready),
    )
    .await;
    let info = registry.get("cat").unwrap();
    assert_eq!(info.restarts, 1, "{info:?}");
    assert!(
        info.reason
            .unwrap()
            .contains("restarted after: exited unexpectedly")
    );
    let second = pid_of(&registry, "cat");
    assert_ne!(first, second);
    assert_eq!(speak(&registry, "cat").await.unwrap(), "Meow!");

    // From now on the binary cannot start: the restarts run out and the plugin is failed.
    let broken = script(root.path(), "exit 3");
    std::fs::copy(broken, dir.join(".cat.new")).unwrap();
    std::fs::rename(dir.join(".cat.new"), dir.join("cat")).unwrap();
    write_sidecar(&dir, "cat");
    unsafe_kill(second);
    wait_for(&mut events, "cat failed", is_status("cat", Status::Failed)).await;
    let reason = registry.get("cat").unwrap().reason.unwrap();
    assert!(reason.contains("gave up after 2 restarts"), "{reason}");
    assert!(reason.contains("exit status 3"), "{reason}");
    let err = speak(&registry, "cat").await.unwrap_err();
    assert!(err.contains("failed"), "{err}");
    registry.shutdown().await;
}

#[tokio::test]
async fn a_failed_plugin_stays_failed_until_its_folder_changes_or_an_operator_retries() {
    let root = tempfile::tempdir().unwrap();
    let dir = put_plugin(root.path(), "cat", &example_bin("cat"), "1.0.0");
    let broken = script(root.path(), "exit 3");
    let replace = |binary: &Path| {
        std::fs::copy(binary, dir.join(".cat.new")).unwrap();
        std::fs::rename(dir.join(".cat.new"), dir.join("cat")).unwrap();
        write_sidecar(&dir, "cat");
    };
    replace(&broken);
    let registry = Registry::open(
        root.path(),
        RegistryOptions {
            backoff: quick_restarts(1, 5, 2),
            ..options()
        },
    )
    .await
    .unwrap();
    // The first call waits out the restarts, then learns that the plugin failed.
    let err = speak(&registry, "cat").await.unwrap_err();
    assert!(
        err.contains("failed") && err.contains("gave up after 2 restarts"),
        "{err}"
    );
    let failed = registry.get("cat").unwrap();
    assert_eq!(failed.status, Status::Failed);

    // Rescans of an unchanged folder, and rewriting the same bytes, leave it failed.
    assert!(
        registry
            .sync_all()
            .await
            .unwrap()
            .iter()
            .all(|c| *c == Change::Unchanged),
        "a rescan changed something"
    );
    replace(&broken);
    assert_eq!(registry.sync_dir(&dir).await.unwrap(), Change::Unchanged);
    let info = registry.get("cat").unwrap();
    assert_eq!((info.status, info.reason), (Status::Failed, failed.reason));

    // An operator's reload gives it another chance (it fails again: the binary is the same).
    assert_eq!(
        registry.reload("cat").await.unwrap(),
        Change::Updated("cat".into())
    );
    let info = registry.get("cat").unwrap();
    assert_eq!(info.status, Status::Discovered);
    assert_eq!(info.reason.as_deref(), Some("retry asked by an operator"));
    assert!(
        speak(&registry, "cat")
            .await
            .unwrap_err()
            .contains("failed")
    );

    // A fixed binary is a real change: retried, and it serves.
    replace(&example_bin("cat"));
    assert_eq!(
        registry.sync_dir(&dir).await.unwrap(),
        Change::Updated("cat".into())
    );
    assert_eq!(registry.get("cat").unwrap().status, Status::Discovered);
    assert_eq!(speak(&registry, "cat").await.unwrap(), "Meow!");
    registry.shutdown().await;
}

#[tokio::test]
async fn a_call_waits_for_the_restart_of_a_plugin_whose_start_failed() {
    let root = tempfile::tempdir().unwrap();
    let marker = root.path().join("started-once");
    // The first start dies before its handshake (as when a plugin is killed while starting);
    // the next ones run the real plugin.
    let flaky = script(
        root.path(),
        &format!(
            "if [ -e {m} ]; then exec {cat}; fi\ntouch {m}\nexit 3",
            m = marker.display(),
            cat = example_bin("cat").display()
        ),
    );
    let dir = put_plugin(root.path(), "cat", &example_bin("cat"), "1.0.0");
    std::fs::copy(&flaky, dir.join("cat")).unwrap();
    write_sidecar(&dir, "cat");
    let registry = Registry::open(
        root.path(),
        RegistryOptions {
            backoff: quick_restarts(50, 100, 3),
            ..unconfined()
        },
    )
    .await
    .unwrap();
    let mut events = registry.subscribe();
    // Several callers at once: none gets an error, all are answered by the restarted plugin.
    let calls = (0..4).map(|_| speak(&registry, "cat"));
    for result in futures_util::future::join_all(calls).await {
        assert_eq!(result.as_deref(), Ok("Meow!"));
    }
    assert!(marker.exists(), "the first start did not run");
    let info = registry.get("cat").unwrap();
    assert_eq!(info.status, Status::Ready);
    assert_eq!(info.restarts, 1, "{info:?}");
    // It never went through `failed` on the way.
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(
                event,
                Event::StatusChanged {
                    to: Status::Failed,
                    ..
                }
            ),
            "{event:?}"
        );
    }
    registry.shutdown().await;
}

#[tokio::test]
async fn a_start_that_outlasts_the_callers_wait_still_ends_restarted_or_failed() {
    let root = tempfile::tempdir().unwrap();
    let dir = put_plugin(root.path(), "cat", &example_bin("cat"), "1.0.0");
    // Never prints a handshake: each start runs into the start timeout.
    let hangs = script(root.path(), "exec sleep 600");
    std::fs::copy(&hangs, dir.join("cat")).unwrap();
    write_sidecar(&dir, "cat");
    let registry = Registry::open(
        root.path(),
        RegistryOptions {
            start_timeout: Duration::from_secs(2),
            // Shorter than a start: the caller gives up waiting, the start goes on.
            restart_wait: Duration::from_millis(200),
            backoff: quick_restarts(1, 5, 1),
            ..unconfined()
        },
    )
    .await
    .unwrap();
    let mut events = registry.subscribe();
    assert!(speak(&registry, "cat").await.is_err());
    wait_for(&mut events, "cat failed", is_status("cat", Status::Failed)).await;
    let reason = registry.get("cat").unwrap().reason.unwrap();
    assert!(reason.contains("gave up after 1 restarts"), "{reason}");
    registry.shutdown().await;
}

fn unsafe_kill(pid: u32) {
    signal(pid, "-KILL");
}

fn signal(pid: u32, which: &str) {
    let status = std::process::Command::new("kill")
        .args([which, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn a_plugin_that_stops_answering_health_checks_is_degraded_then_restarted() {
    let root = tempfile::tempdir().unwrap();
    put_plugin(root.path(), "cat", &example_bin("cat"), "1.0.0");
    let registry = Registry::open(
        root.path(),
        RegistryOptions {
            health_interval: Duration::from_millis(50),
            health_timeout: Duration::from_millis(200),
            health_failures: 2,
            kill_grace: Duration::from_millis(100),
            backoff: Backoff {
                initial: Duration::from_millis(1),
                ..Backoff::default()
            },
            ..options()
        },
    )
    .await
    .unwrap();
    assert_eq!(speak(&registry, "cat").await.unwrap(), "Meow!");
    let frozen = pid_of(&registry, "cat");
    let mut events = registry.subscribe();
    // A stopped process keeps its socket but answers nothing: a hung plugin.
    signal(frozen, "-STOP");
    let degraded = wait_for(
        &mut events,
        "cat degraded",
        is_status("cat", Status::Degraded),
    )
    .await;
    let Event::StatusChanged { reason, .. } = degraded else {
        unreachable!()
    };
    assert!(reason.unwrap().contains("health check"));
    wait_for(
        &mut events,
        "cat restarted",
        is_status("cat", Status::Ready),
    )
    .await;
    let info = registry.get("cat").unwrap();
    assert_eq!(info.restarts, 1, "{info:?}");
    assert_ne!(info.pid, Some(frozen));
    crate::support::assert_gone(&[frozen]).await;
    assert_eq!(speak(&registry, "cat").await.unwrap(), "Meow!");
    registry.shutdown().await;
}

#[tokio::test]
async fn an_idle_plugin_stops_and_the_next_call_starts_it() {
    let root = tempfile::tempdir().unwrap();
    put_plugin(root.path(), "cat", &example_bin("cat"), "1.0.0");
    let registry = Registry::open(
        root.path(),
        RegistryOptions {
            idle_timeout: Some(Duration::from_millis(50)),
            ..options()
        },
    )
    .await
    .unwrap();
    let mut events = registry.subscribe();
    assert_eq!(speak(&registry, "cat").await.unwrap(), "Meow!");
    let pid = pid_of(&registry, "cat");
    wait_for(
        &mut events,
        "cat stopped when idle",
        is_status("cat", Status::Stopped),
    )
    .await;
    crate::support::assert_gone(&[pid]).await;
    assert!(
        registry
            .get("cat")
            .unwrap()
            .reason
            .unwrap()
            .contains("without calls")
    );
    assert_eq!(speak(&registry, "cat").await.unwrap(), "Meow!");
    assert_ne!(pid_of(&registry, "cat"), pid);
    registry.shutdown().await;
}

#[tokio::test]
async fn reload_under_continuous_calls_fails_no_call() {
    let root = tempfile::tempdir().unwrap();
    let (cat, dog) = (example_bin("cat"), example_bin("dog"));
    put_plugin(root.path(), "pet", &cat, "1.0.0");
    let registry = Registry::open(root.path(), options()).await.unwrap();
    registry.watch(Duration::from_millis(100), None).unwrap();
    let mut events = registry.subscribe();
    assert_eq!(speak(&registry, "pet").await.unwrap(), "Meow!");
    let first_pid = pid_of(&registry, "pet");

    let stop = Arc::new(AtomicBool::new(false));
    let (calls, meows, woofs) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let handle = registry.handle::<AnimalContract>("pet").unwrap();
            let (stop, calls, meows, woofs) =
                (stop.clone(), calls.clone(), meows.clone(), woofs.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let said = match handle.get().await {
                        Ok(lease) => lease.speak(false).await.map_err(|e| e.to_string()),
                        Err(err) => Err(err.to_string()),
                    };
                    calls.fetch_add(1, Ordering::Relaxed);
                    match said.as_deref() {
                        Ok("Meow!") => meows.fetch_add(1, Ordering::Relaxed),
                        Ok("Woof!") => woofs.fetch_add(1, Ordering::Relaxed),
                        _ => {
                            failures.push(format!("{said:?}"));
                            0
                        }
                    };
                }
                failures
            })
        })
        .collect();

    let mut pids = vec![first_pid];
    for (round, version) in ["1.0.1", "1.0.2", "1.0.3", "1.0.4"].into_iter().enumerate() {
        let binary = if round % 2 == 0 { &dog } else { &cat };
        let before = calls.load(Ordering::Relaxed);
        put_plugin(root.path(), "pet", binary, version);
        // How long the swap took is the benchmark's business (benches/catalog.sh), not a test's.
        wait_for(&mut events, "pet reloaded", |e| {
            matches!(e, Event::Reloaded { name, to, .. } if name == "pet" && to.to_string() == version)
        })
        .await;
        pids.push(pid_of(&registry, "pet"));
        // Let calls reach the new version before the next swap.
        while calls.load(Ordering::Relaxed) < before + 50 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for caller in callers {
        failures.extend(caller.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} failed calls: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(calls.load(Ordering::Relaxed) > 200);
    assert!(meows.load(Ordering::Relaxed) > 0 && woofs.load(Ordering::Relaxed) > 0);
    let info = registry.get("pet").unwrap();
    assert!(info.reloads >= 4, "{info:?}");
    assert_eq!(info.version.unwrap().to_string(), "1.0.4");
    registry.shutdown().await;
    crate::support::assert_gone(&pids).await;
}

#[tokio::test]
async fn a_bad_new_version_leaves_the_old_one_serving() {
    let root = tempfile::tempdir().unwrap();
    let dir = put_plugin(root.path(), "cat", &example_bin("cat"), "1.0.0");
    let registry = Registry::open(root.path(), options()).await.unwrap();
    assert_eq!(speak(&registry, "cat").await.unwrap(), "Meow!");
    let pid = pid_of(&registry, "cat");

    // A new binary that exits at once, with a correct sidecar.
    put_plugin(
        root.path(),
        "cat",
        &script(root.path(), "echo broken >&2; exit 1"),
        "2.0.0",
    );
    let change = registry.sync_dir(&dir).await.unwrap();
    let Change::Rejected { reason, .. } = change else {
        panic!("expected a rejection, got {change:?}");
    };
    assert!(
        reason.contains("version 2.0.0 could not be started, version 1.0.0 keeps serving"),
        "{reason}"
    );
    assert_eq!(speak(&registry, "cat").await.unwrap(), "Meow!");
    assert_eq!(pid_of(&registry, "cat"), pid);
    let info = registry.get("cat").unwrap();
    assert_eq!(info.status, Status::Ready);
    assert!(info.reason.unwrap().contains("keeps serving"));

    // A broken manifest is rejected the same way.
    std::fs::write(
        dir.join("manifest.yaml"),
        "plugin:\n  name: cat\n  verison: 3\n",
    )
    .unwrap();
    let change = registry.sync_dir(&dir).await.unwrap();
    assert!(matches!(change, Change::Rejected { .. }), "{change:?}");
    assert_eq!(speak(&registry, "cat").await.unwrap(), "Meow!");

    // Nothing changed, nothing happens.
    put_plugin(root.path(), "cat", &example_bin("cat"), "1.0.0");
    assert_eq!(registry.sync_dir(&dir).await.unwrap(), Change::Unchanged);
    registry.shutdown().await;
}

#[tokio::test]
async fn the_watcher_sees_plugins_added_disabled_and_removed() {
    let root = tempfile::tempdir().unwrap();
    let registry = Registry::open(root.path(), options()).await.unwrap();
    registry.watch(Duration::from_millis(50), None).unwrap();
    let mut events = registry.subscribe();

    // Files created right after their folder: inotify may miss them, a folder rescan does not.
    put_plugin(root.path(), "cat", &example_bin("cat"), "1.0.0");
    wait_for(
        &mut events,
        "cat added",
        |e| matches!(e, Event::Added { name } if name == "cat"),
    )
    .await;
    assert_eq!(speak(&registry, "cat").await.unwrap(), "Meow!");
    let pid = pid_of(&registry, "cat");

    std::fs::write(
        root.path()
            .join("cat")
            .join(plugsconc_host::DISABLED_MARKER),
        b"",
    )
    .unwrap();
    wait_for(
        &mut events,
        "cat disabled",
        is_status("cat", Status::Disabled),
    )
    .await;
    crate::support::assert_gone(&[pid]).await;
    std::fs::remove_file(
        root.path()
            .join("cat")
            .join(plugsconc_host::DISABLED_MARKER),
    )
    .unwrap();
    wait_for(
        &mut events,
        "cat enabled",
        is_status("cat", Status::Discovered),
    )
    .await;
    assert_eq!(speak(&registry, "cat").await.unwrap(), "Meow!");
    let pid = pid_of(&registry, "cat");

    let handle = registry.handle::<AnimalContract>("cat").unwrap();
    std::fs::remove_dir_all(root.path().join("cat")).unwrap();
    wait_for(
        &mut events,
        "cat removed",
        |e| matches!(e, Event::Removed { name } if name == "cat"),
    )
    .await;
    assert!(registry.get("cat").is_none());
    let err = handle.get().await.unwrap_err();
    assert!(err.to_string().contains("removed"), "{err}");
    registry.shutdown().await;
    crate::support::assert_gone(&[pid]).await;
}

#[tokio::test]
async fn only_plugins_signed_by_a_trusted_publisher_run() {
    let root = tempfile::tempdir().unwrap();
    let marker = root.path().join("it-ran");
    let plugins = root.path().join("plugins");
    let dir = put_plugin(&plugins, "cat", &example_bin("cat"), "1.0.0");
    let (public, secret) = keygen(&root.path().join("keys"), "acme", None, false).unwrap();
    let trust = Trust {
        publishers: vec![Publisher::load(&public).unwrap()],
        ..Trust::default()
    };
    let registry = Registry::open(
        &plugins,
        RegistryOptions {
            trust,
            ..unconfined()
        },
    )
    .await
    .unwrap();

    // Unsigned under the default policy: refused, with what to do.
    let err = speak(&registry, "cat").await.unwrap_err();
    assert!(
        err.contains("not signed") && err.contains("plugsconc sign"),
        "{err}"
    );
    assert_eq!(registry.get("cat").unwrap().status, Status::Failed);

    // Signing changes the folder: the failed plugin gets another chance.
    sign_plugin(&dir, &secret, None).unwrap();
    registry.sync_dir(&dir).await.unwrap();
    assert_eq!(registry.get("cat").unwrap().status, Status::Discovered);
    assert_eq!(speak(&registry, "cat").await.unwrap(), "Meow!");
    registry.disable("cat").await.unwrap();

    // A binary replaced after signing (sidecar updated too) never runs.
    let evil = script(root.path(), &format!("touch {}", marker.display()));
    std::fs::copy(evil, dir.join("cat")).unwrap();
    write_sidecar(&dir, "cat");
    registry.enable("cat").unwrap();
    let err = speak(&registry, "cat").await.unwrap_err();
    assert!(err.contains("replaced after signing"), "{err}");
    assert!(!marker.exists(), "the replaced binary was executed");
    registry.shutdown().await;
}

#[tokio::test]
async fn the_manifest_config_reaches_the_plugin_and_start_all_follows_dependencies() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("store");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(example_bin("misbehave"), dir.join("store")).unwrap();
    write_sidecar(&dir, "store");
    std::fs::write(
        dir.join("manifest.yaml"),
        format!(
            // The plugin records what it saw in its own folder, read-only unless granted.
            "plugin:\n  name: store\n  type: kv\n  version: 1.0.0\n  entrypoint: ./store\nhandshake:\n  protocol_version: 1\n  magic_cookie_key: BASIC_PLUGIN\n  magic_cookie_value: hello\nconfig:\n  greeting: hello\n  retries: 3\n  nested: {{a: [1, 2]}}\ncapabilities:\n  filesystem:\n    - {{path: {}, permissions: [write, create]}}\n",
            dir.display()
        ),
    )
    .unwrap();
    let app = put_plugin(root.path(), "app", &example_bin("cat"), "1.0.0");
    let manifest = std::fs::read_to_string(app.join("manifest.yaml")).unwrap()
        + "dependencies:\n  - name: store\n    version: ^1\n";
    std::fs::write(app.join("manifest.yaml"), manifest).unwrap();
    let registry = Registry::open(root.path(), options()).await.unwrap();
    let mut events = registry.subscribe();
    let failures = registry.start_all().await;
    assert!(failures.is_empty(), "{failures:?}");
    let mut ready = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let Event::StatusChanged {
            name,
            to: Status::Ready,
            ..
        } = event
        {
            ready.push(name);
        }
    }
    assert_eq!(ready, ["store", "app"], "dependencies start first");
    let seen: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config-seen.json")).unwrap())
            .unwrap();
    assert_eq!(
        seen,
        serde_json::json!({"greeting": "hello", "retries": 3, "nested": {"a": [1, 2]}})
    );
    registry.shutdown().await;
}

/// Replaces plugin folder `dir`'s `manifest.yaml` with the same manifest written as JSON.
fn to_json_manifest(dir: &Path) {
    let yaml = std::fs::read_to_string(dir.join("manifest.yaml")).unwrap();
    let value: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
    write_atomic(
        &dir.join("manifest.json"),
        &serde_json::to_string_pretty(&value).unwrap(),
    );
    std::fs::remove_file(dir.join("manifest.yaml")).unwrap();
}

#[tokio::test]
async fn a_json_manifest_plugin_is_signed_verified_started_and_called() {
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    let dir = put_plugin(&plugins, "cat", &example_bin("cat"), "1.0.0");
    to_json_manifest(&dir);
    // A folder with both manifests is refused, naming both; the others are unaffected.
    let both = put_plugin(&plugins, "dog", &example_bin("cat"), "1.0.0");
    std::fs::copy(dir.join("manifest.json"), both.join("manifest.json")).unwrap();
    let (public, secret) = keygen(&root.path().join("keys"), "acme", None, false).unwrap();
    let signed = sign_plugin(&dir, &secret, None).unwrap();
    assert_eq!(signed.path, dir.join("manifest.json.minisig"));
    assert!(!dir.join("manifest.yaml.minisig").exists());
    let trust = Trust {
        publishers: vec![Publisher::load(&public).unwrap()],
        ..Trust::default()
    };
    let registry = Registry::open(&plugins, RegistryOptions { trust, ..options() })
        .await
        .unwrap();

    let cat = registry.get("cat").unwrap();
    assert_eq!(
        (cat.status, cat.tags.as_slice(), cat.description.as_deref()),
        (Status::Discovered, &["pet".to_owned()][..], Some("the cat"))
    );
    assert_eq!(speak(&registry, "cat").await.unwrap(), "Meow!");
    let dog = registry.get("dog").unwrap();
    let reason = dog.reason.unwrap_or_default();
    assert_eq!(dog.status, Status::Invalid);
    assert!(
        reason.contains("manifest.yaml") && reason.contains("manifest.json"),
        "{reason}"
    );

    // The signature covers the JSON manifest: an edit after signing is caught before exec.
    registry.disable("cat").await.unwrap();
    let edited = std::fs::read_to_string(dir.join("manifest.json"))
        .unwrap()
        .replace("the cat", "a cat");
    write_atomic(&dir.join("manifest.json"), &edited);
    registry.sync_dir(&dir).await.unwrap();
    registry.enable("cat").unwrap();
    let err = speak(&registry, "cat").await.unwrap_err();
    assert!(err.contains("does not verify"), "{err}");
    registry.shutdown().await;
}
