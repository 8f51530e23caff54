//! The plugin process: spawned in its own process group, reaped by exactly one task, signalled
//! only while it has not been reaped (so a recycled pid is never hit), and killed by the kernel
//! if the host dies (even by SIGKILL).
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process. A
//! tokio host forks from whatever thread runs the task — a blocking-pool thread that exits after
//! being idle, or a worker of a runtime that is later dropped — and its plugins would be killed
//! then. So every plugin is forked by one spawner thread that lives as long as the host.

use std::process::ExitStatus;
use std::sync::{Arc, OnceLock, mpsc};
use std::time::Duration;

use tokio::process::{Child, ChildStderr, ChildStdout, Command};
use tokio::sync::{oneshot, watch};

use crate::sandbox::CgroupTree;

/// A running (or exited) plugin process.
#[derive(Debug)]
pub(crate) struct Process {
    pid: u32,
    exit: watch::Receiver<Option<ExitStatus>>,
    /// `true` for our own child (its group can be signalled), `false` for a reattached process.
    own: bool,
    /// The plugin's cgroup, when the sandbox made one: killed with the process.
    cgroup: Option<Arc<CgroupTree>>,
}

impl Process {
    /// Spawns `command` as the leader of a new process group, set to die with the host, and
    /// starts its reaper.
    pub(crate) async fn spawn(
        mut command: Command,
        cgroup: Option<Arc<CgroupTree>>,
    ) -> std::io::Result<(Self, ChildStdout, ChildStderr)> {
        command.process_group(0).kill_on_drop(true);
        die_with_host(&mut command);
        let mut child = spawn_from_spawner(command).await?;
        let (Some(stdout), Some(stderr), Some(pid)) =
            (child.stdout.take(), child.stderr.take(), child.id())
        else {
            return Err(std::io::Error::other(
                "spawned plugin has no stdout, stderr or pid",
            ));
        };
        let (tx, exit) = watch::channel(None);
        tokio::spawn(reap(child, pid, tx, cgroup.clone()));
        Ok((
            Self {
                pid,
                exit,
                own: true,
                cgroup,
            },
            stdout,
            stderr,
        ))
    }

    /// A process this host did not start (reattach): watched by polling, signalled by pid only.
    pub(crate) fn foreign(pid: u32) -> Self {
        let (tx, exit) = watch::channel(None);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = tx.closed() => return,
                }
                if !alive(pid) {
                    use std::os::unix::process::ExitStatusExt as _;
                    // Not our child: its real status is unknowable; report a clean exit.
                    let _ = tx.send(Some(ExitStatus::from_raw(0)));
                    return;
                }
            }
        });
        Self {
            pid,
            exit,
            own: false,
            cgroup: None,
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    pub(crate) fn exit_status(&self) -> Option<ExitStatus> {
        *self.exit.borrow()
    }

    /// Waits for the exit, at most `limit`.
    pub(crate) async fn wait_for(&self, limit: Duration) -> Option<ExitStatus> {
        let mut exit = self.exit.clone();
        let waited = tokio::time::timeout(limit, exit.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(status)) => *status,
            _ => self.exit_status(),
        }
    }

    /// Waits for the exit.
    pub(crate) async fn exited(&self) -> Option<ExitStatus> {
        let mut exit = self.exit.clone();
        exit.wait_for(Option::is_some).await.ok().and_then(|s| *s)
    }

    /// SIGKILL to the whole group (our child) or the pid (reattached), unless already reaped.
    pub(crate) fn kill_now(&self) {
        if self.exit_status().is_some() {
            return;
        }
        let pid = self.pid as libc::pid_t;
        // SAFETY: plain syscalls on a pid we own and have not reaped (checked above).
        unsafe {
            if self.own {
                libc::killpg(pid, libc::SIGKILL);
            } else {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        if let Some(cgroup) = &self.cgroup {
            cgroup.kill();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Nobody will kill it later: do it now. The reaper task still reaps it.
        self.kill_now();
    }
}

/// Has the kernel SIGKILL the child when the thread that forked it (the spawner thread, which
/// lives as long as the host) ends. Registered last, so it runs after any sandbox set-up whose
/// credential changes would clear it.
fn die_with_host(command: &mut Command) {
    let host = std::process::id();
    // SAFETY: the closure makes two raw syscalls and builds an io::Error from a constant: no
    // allocation, no locks, as required between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The host may have died between fork and prctl: then the signal will never come,
            // and the child has been re-parented already.
            if u32::try_from(libc::getppid()).ok() != Some(host) {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// A command for the spawner thread, with the runtime its child belongs to.
struct Job {
    command: Command,
    runtime: tokio::runtime::Handle,
    reply: oneshot::Sender<std::io::Result<Child>>,
}

/// Forks `command` from the spawner thread, for the caller's runtime.
async fn spawn_from_spawner(command: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let started = std::thread::Builder::new()
            .name("plugsconc-spawner".to_owned())
            .spawn(move || {
                for job in rx {
                    // The child registers with the caller's runtime (its reaper, its pipes).
                    let spawned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let _runtime = job.runtime.enter();
                        let mut command = job.command;
                        command.spawn()
                    }));
                    let result = spawned.unwrap_or_else(|_| {
                        Err(std::io::Error::other("spawning the plugin panicked"))
                    });
                    // A caller that gave up drops the child, which kills it.
                    let _ = job.reply.send(result);
                }
            });
        if let Err(err) = started {
            tracing::error!(error = %err, "cannot start the plugin spawner thread");
        }
        tx
    });
    let (reply, answer) = oneshot::channel();
    let job = Job {
        command,
        runtime: tokio::runtime::Handle::current(),
        reply,
    };
    spawner
        .send(job)
        .map_err(|_| std::io::Error::other("the plugin spawner thread is gone"))?;
    answer
        .await
        .map_err(|_| std::io::Error::other("the plugin spawner thread is gone"))?
}

async fn reap(
    mut child: Child,
    pid: u32,
    tx: watch::Sender<Option<ExitStatus>>,
    cgroup: Option<Arc<CgroupTree>>,
) {
    let status = child.wait().await;
    // Whatever the plugin forked is in its group: take it down with it. The group id cannot be
    // reused while members remain, and with none left this is ESRCH.
    // SAFETY: plain syscall.
    unsafe {
        libc::killpg(pid as libc::pid_t, libc::SIGKILL);
    }
    // And whatever left the group (setsid, double fork) is still in the cgroup.
    if let Some(cgroup) = cgroup {
        cgroup.remove().await;
    }
    match status {
        Ok(status) => {
            let _ = tx.send(Some(status));
        }
        Err(err) => {
            use std::os::unix::process::ExitStatusExt as _;
            tracing::warn!(pid, error = %err, "cannot wait for plugin process");
            let _ = tx.send(Some(ExitStatus::from_raw(libc::SIGKILL)));
        }
    }
}

/// Whether `pid` exists and is not a zombie.
pub(crate) fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn group_kill_reaps_leader_and_children() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("child");
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!(
                "sleep 1000 & echo $! > {}; exec sleep 1000",
                pid_file.display()
            ))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let (process, _out, _err) = Process::spawn(command, None).await.unwrap();
        let child_pid = loop {
            if let Ok(text) = std::fs::read_to_string(&pid_file)
                && let Ok(pid) = text.trim().parse::<u32>()
            {
                break pid;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(alive(process.pid()) && alive(child_pid));
        process.kill_now();
        let status = process.exited().await.unwrap();
        assert!(!status.success());
        // The orphaned child is reparented and reaped by init; wait until it is gone.
        for _ in 0..500 {
            if !alive(child_pid) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!alive(child_pid), "forked child {child_pid} survived");
        assert!(!alive(process.pid()));
    }

    #[test]
    fn alive_reads_proc() {
        assert!(alive(std::process::id()));
        assert!(!alive(u32::MAX - 1));
    }
}
