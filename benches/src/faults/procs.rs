//! What `/proc` says about processes: children in state Z, processes running a given binary, and
//! a process's peak resident memory.

use std::path::Path;

/// The pids of `/proc`.
fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// (state, parent pid) from `/proc/<pid>/stat`.
fn stat(pid: u32) -> Option<(char, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields start after the last `)`.
    let (_, rest) = text.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    Some((state, parent))
}

/// Children of `parent` that exited and were not reaped.
pub fn zombies_of(parent: u32) -> usize {
    pids()
        .into_iter()
        .filter(|&pid| stat(pid).is_some_and(|(state, p)| p == parent && state == 'Z'))
        .count()
}

/// Live (not zombie) processes whose executable is `binary`.
pub fn running(binary: &Path) -> Vec<u32> {
    let binary = binary.canonicalize().unwrap_or_else(|_| binary.to_owned());
    pids()
        .into_iter()
        .filter(|&pid| {
            std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == binary)
                && stat(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
        })
        .collect()
}

/// Live processes whose executable lies under `dir`.
pub fn running_under(dir: &Path) -> Vec<u32> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    pids()
        .into_iter()
        .filter(|&pid| {
            std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe.starts_with(&dir))
                && stat(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
        })
        .collect()
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

/// Peak resident set (`VmHWM`) of `pid`, in bytes.
pub fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `kill -9`.
pub fn kill9(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) with a pid and a signal number has no memory effects.
    unsafe { libc::kill(pid, libc::SIGKILL) == 0 }
}

/// `SIGTERM`.
pub fn terminate(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: as in `kill9`.
    unsafe { libc::kill(pid, libc::SIGTERM) == 0 }
}
