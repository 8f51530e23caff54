//! Exit when the host dies: a plugin must never outlive the process that started it.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the plugin exits, which in a tokio host
//! is any blocking-pool thread, so the parent pid is polled instead.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

const POLL: Duration = Duration::from_secs(1);

/// The parent pid now; taken first thing so a host that dies during start-up is still noticed.
pub(crate) fn current() -> libc::pid_t {
    // SAFETY: getppid has no preconditions and cannot fail.
    unsafe { libc::getppid() }
}

/// Cancels `shutdown` once the process is no longer the child of `parent` (it was re-parented).
pub(crate) fn watch(parent: libc::pid_t, shutdown: CancellationToken) {
    if parent <= 1 {
        // Started by init or a subreaper that is already our parent: nothing to watch.
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => return,
            }
            // SAFETY: as above.
            if unsafe { libc::getppid() } != parent {
                tracing::warn!(host_pid = parent, "host process is gone; shutting down");
                shutdown.cancel();
                return;
            }
        }
    });
}
