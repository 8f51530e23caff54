//! The record of what a host launched — each running plugin's process, socket folder and
//! cgroup — kept in a file of its own in a record folder, so that what a host that died without
//! stopping its plugins (SIGKILL, a crash, a power cut) left behind is ended and removed by the
//! next host that opens the folder.
//!
//! A record names its host by pid and start time, and each process by pid and start time: a
//! process is signalled only while it still is the one recorded, never a recycled pid, and the
//! records of a host that is still running are left alone. The file is rewritten whole (to a
//! temporary file, then renamed) whenever a plugin starts or stops.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use plugsconc_transport::peer::ProcessStat;
use serde::{Deserialize, Serialize};

/// Prefix of the socket folders a host creates (see `SocketDir`): nothing else is removed.
const SOCKET_DIR_PREFIX: &str = "plugsconc-";
/// Bound on waiting for a killed leftover to be gone before its folders are removed.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// One process, named so that a recycled pid does not match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Identity {
    pub(crate) pid: u32,
    /// Clock ticks after boot, from `/proc/<pid>/stat`.
    pub(crate) start_time: u64,
}

impl Identity {
    /// The identity of `pid` now; `None` when it does not exist.
    pub(crate) fn of(pid: u32) -> Option<Self> {
        ProcessStat::read(pid).map(|stat| Self {
            pid,
            start_time: stat.start_time,
        })
    }

    /// Whether the recorded process is still running (same pid, same start time, not a zombie).
    fn still_running(self) -> bool {
        ProcessStat::read(self.pid)
            .is_some_and(|stat| stat.start_time == self.start_time && stat.alive())
    }
}

/// What a host launched for one plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Launch {
    pub(crate) plugin: String,
    /// The plugin process, which leads its own process group (`None` until it is spawned: its
    /// folders are recorded first, so a host dying in between leaves none unrecorded).
    pub(crate) process: Option<Identity>,
    pub(crate) socket_dir: Option<PathBuf>,
    pub(crate) cgroup: Option<PathBuf>,
}

/// The file's content.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    host: Identity,
    /// `/proc/sys/kernel/random/boot_id`: processes of another boot are all gone.
    boot_id: String,
    launches: Vec<Launch>,
}

/// A host's record of its launches. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Ledger {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    file: PathBuf,
    host: Identity,
    boot_id: String,
    launches: Mutex<BTreeMap<u64, Launch>>,
    next: AtomicU64,
}

/// Keeps a launch recorded; dropping it takes the launch off the record.
#[derive(Debug)]
pub(crate) struct Entry {
    ledger: Ledger,
    id: u64,
}

impl Entry {
    /// Records the process spawned for the launch.
    pub(crate) fn set_process(&self, process: Identity) {
        let mut launches = self.ledger.lock();
        if let Some(launch) = launches.get_mut(&self.id) {
            launch.process = Some(process);
            self.ledger.save(&launches);
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.ledger.remove(self.id);
    }
}

impl Ledger {
    /// Ends and removes what dead hosts recorded in `dir`, then starts this host's record there.
    ///
    /// # Errors
    ///
    /// The folder cannot be created or this host's own record cannot be written.
    pub(crate) fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let boot_id = boot_id();
        let host = Identity::of(std::process::id())
            .ok_or_else(|| std::io::Error::other("cannot read this process's /proc/self/stat"))?;
        clean_up(dir, host, &boot_id);
        // One file per registry: a process may hold several.
        static OPENED: AtomicU64 = AtomicU64::new(0);
        let n = OPENED.fetch_add(1, Ordering::Relaxed);
        let ledger = Self {
            inner: Arc::new(Inner {
                file: dir.join(format!("{}-{n}.json", host.pid)),
                host,
                boot_id,
                launches: Mutex::new(BTreeMap::new()),
                next: AtomicU64::new(0),
            }),
        };
        ledger.write(&BTreeMap::new())?;
        Ok(ledger)
    }

    /// Records `launch` until the returned entry is dropped.
    pub(crate) fn record(&self, launch: Launch) -> Entry {
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let mut launches = self.lock();
        launches.insert(id, launch);
        self.save(&launches);
        drop(launches);
        Entry {
            ledger: self.clone(),
            id,
        }
    }

    fn remove(&self, id: u64) {
        let mut launches = self.lock();
        if launches.remove(&id).is_some() {
            self.save(&launches);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Launch>> {
        self.inner
            .launches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn save(&self, launches: &BTreeMap<u64, Launch>) {
        if let Err(err) = self.write(launches) {
            tracing::warn!(file = %self.inner.file.display(), error = %err, "cannot update the record of launched plugins");
        }
    }

    /// Writes the record beside the file, then renames it over (a reader never sees half).
    fn write(&self, launches: &BTreeMap<u64, Launch>) -> std::io::Result<()> {
        let record = Record {
            host: self.inner.host,
            boot_id: self.inner.boot_id.clone(),
            launches: launches.values().cloned().collect(),
        };
        let text = serde_json::to_vec_pretty(&record).map_err(std::io::Error::other)?;
        let temporary = self.inner.file.with_extension("json.new");
        std::fs::write(&temporary, text)?;
        std::fs::rename(&temporary, &self.inner.file)
    }
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|id| id.trim().to_owned())
        .unwrap_or_default()
}

/// Ends what each record of a host no longer running lists, and removes the record.
fn clean_up(dir: &Path, host: Identity, boot_id: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for path in entries.filter_map(Result::ok).map(|entry| entry.path()) {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.ends_with(".json.new") {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        if !name.ends_with(".json") {
            continue;
        }
        let record = std::fs::read(&path)
            .map_err(|err| err.to_string())
            .and_then(|bytes| serde_json::from_slice::<Record>(&bytes).map_err(|e| e.to_string()));
        let record = match record {
            Ok(record) => record,
            Err(err) => {
                tracing::warn!(file = %path.display(), error = %err, "removing an unreadable record of launched plugins");
                let _ = std::fs::remove_file(&path);
                continue;
            }
        };
        let same_boot = record.boot_id == boot_id;
        if same_boot && (record.host == host || record.host.still_running()) {
            // A host that is alive (another process sharing the folder, or another registry of
            // this one): its plugins are its own.
            continue;
        }
        for launch in &record.launches {
            end(launch, same_boot);
        }
        let _ = std::fs::remove_file(&path);
    }
}

/// Whether any process has this pid.
fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Kills what is left of `launch` (only if it still is the recorded process) and removes its
/// cgroup and socket folder.
fn end(launch: &Launch, same_boot: bool) {
    if let Some(process) = launch.process
        && same_boot
        && !process.still_running()
        && !process_exists(process.pid)
        && let Ok(group) = libc::pid_t::try_from(process.pid)
    {
        // The leader died with its host, but what it forked (a wrapper's child) may live on in
        // its group. The kernel never hands out a pid that is still a live group's id, so a group
        // of that id can only be the recorded one.
        // SAFETY: a plain syscall.
        unsafe {
            libc::killpg(group, libc::SIGKILL);
        }
    }
    if let Some(process) = launch.process
        && same_boot
        && process.still_running()
    {
        tracing::warn!(plugin = %launch.plugin, pid = process.pid, "ending a plugin process left by a host that died");
        if let Ok(pid) = libc::pid_t::try_from(process.pid) {
            // SAFETY: plain syscalls; the pid was checked to still be the recorded process,
            // which leads its own group.
            unsafe {
                libc::killpg(pid, libc::SIGKILL);
                libc::kill(pid, libc::SIGKILL);
            }
        }
        let deadline = std::time::Instant::now() + KILL_WAIT;
        while process.still_running() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    if let Some(cgroup) = &launch.cgroup {
        crate::sandbox::remove_leftover_cgroup(cgroup);
    }
    if let Some(dir) = &launch.socket_dir {
        let ours = dir
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(SOCKET_DIR_PREFIX));
        if ours && dir.is_dir() {
            match std::fs::remove_dir_all(dir) {
                Ok(()) => {
                    tracing::info!(plugin = %launch.plugin, dir = %dir.display(), "removed a socket folder left by a host that died");
                }
                Err(err) => {
                    tracing::warn!(plugin = %launch.plugin, dir = %dir.display(), error = %err, "cannot remove a socket folder left by a host that died");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeper() -> std::process::Child {
        use std::os::unix::process::CommandExt as _;
        std::process::Command::new("sleep")
            .arg("1000")
            .process_group(0)
            .spawn()
            .unwrap()
    }

    fn write_record(dir: &Path, host: Identity, launches: Vec<Launch>) {
        let record = Record {
            host,
            boot_id: boot_id(),
            launches,
        };
        std::fs::write(
            dir.join(format!("{}.json", host.pid)),
            serde_json::to_vec(&record).unwrap(),
        )
        .unwrap();
    }

    /// A host that has exited: a pid that is not running with that start time.
    fn dead_host() -> Identity {
        Identity {
            pid: u32::MAX - 1,
            start_time: 1,
        }
    }

    fn wait_exit(child: &mut std::process::Child) -> bool {
        for _ in 0..500 {
            if child.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn leftovers_of_a_dead_host_are_ended_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let records = dir.path().join("launched");
        std::fs::create_dir(&records).unwrap();
        let socket_dir = dir.path().join("plugsconc-999-0");
        std::fs::create_dir(&socket_dir).unwrap();
        std::fs::write(socket_dir.join("plugin1"), b"").unwrap();
        let not_ours = dir.path().join("keep-me");
        std::fs::create_dir(&not_ours).unwrap();
        let mut left = sleeper();
        let mut recycled = sleeper();
        let recycled_identity = Identity::of(recycled.id()).unwrap();
        write_record(
            &records,
            dead_host(),
            vec![
                Launch {
                    plugin: "kv".into(),
                    process: Identity::of(left.id()),
                    socket_dir: Some(socket_dir.clone()),
                    cgroup: None,
                },
                // The same pid, started at another time: a recycled pid, never signalled.
                Launch {
                    plugin: "cat".into(),
                    process: Some(Identity {
                        start_time: recycled_identity.start_time + 1,
                        ..recycled_identity
                    }),
                    socket_dir: Some(not_ours.clone()),
                    cgroup: None,
                },
            ],
        );
        let ledger = Ledger::open(&records).unwrap();
        assert!(wait_exit(&mut left), "the leftover plugin was not ended");
        assert!(!socket_dir.exists());
        assert!(
            recycled.try_wait().unwrap().is_none(),
            "a recycled pid was hit"
        );
        assert!(not_ours.exists(), "only socket folders are removed");
        let names: Vec<_> = std::fs::read_dir(&records)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(
            names[0]
                .to_string_lossy()
                .starts_with(&format!("{}-", std::process::id())),
            "{names:?}"
        );
        drop(ledger);
        recycled.kill().unwrap();
        recycled.wait().unwrap();
    }

    #[test]
    fn what_a_dead_leader_forked_is_ended_with_its_group() {
        use std::io::BufRead as _;
        use std::os::unix::process::CommandExt as _;
        let dir = tempfile::tempdir().unwrap();
        let records = dir.path().join("launched");
        std::fs::create_dir(&records).unwrap();
        // A wrapper that forks the real plugin, as a script would, then waits.
        let mut leader = std::process::Command::new("sh")
            .args(["-c", "sleep 1000 & echo $!; wait"])
            .stdout(std::process::Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(leader.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let forked: u32 = line.trim().parse().unwrap();
        let identity = Identity::of(leader.id());
        // The leader dies with its host (its death signal); what it forked lives on.
        leader.kill().unwrap();
        leader.wait().unwrap();
        let alive = |pid: u32| ProcessStat::read(pid).is_some_and(|stat| stat.alive());
        assert!(alive(forked));
        write_record(
            &records,
            dead_host(),
            vec![Launch {
                plugin: "wrapped".into(),
                process: identity,
                socket_dir: None,
                cgroup: None,
            }],
        );
        let _ledger = Ledger::open(&records).unwrap();
        let mut ended = false;
        for _ in 0..500 {
            if !alive(forked) {
                ended = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(ended, "the process the dead leader forked was left running");
    }

    #[test]
    fn a_running_hosts_record_is_left_alone_and_entries_come_and_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut other_host = sleeper();
        let mut its_plugin = sleeper();
        let other = Identity::of(other_host.id()).unwrap();
        write_record(
            dir.path(),
            other,
            vec![Launch {
                plugin: "kv".into(),
                process: Identity::of(its_plugin.id()),
                socket_dir: None,
                cgroup: None,
            }],
        );
        let ledger = Ledger::open(dir.path()).unwrap();
        assert!(its_plugin.try_wait().unwrap().is_none());
        assert!(dir.path().join(format!("{}.json", other.pid)).exists());

        let own = ledger.inner.file.clone();
        let launch = Launch {
            plugin: "cat".into(),
            process: Identity::of(its_plugin.id()),
            socket_dir: None,
            cgroup: None,
        };
        let entry = ledger.record(launch.clone());
        let record: Record = serde_json::from_slice(&std::fs::read(&own).unwrap()).unwrap();
        assert_eq!(record.launches, [launch]);
        drop(entry);
        let record: Record = serde_json::from_slice(&std::fs::read(&own).unwrap()).unwrap();
        assert!(record.launches.is_empty());
        for child in [&mut other_host, &mut its_plugin] {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}
