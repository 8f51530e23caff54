//! `daemon.json` in the data folder: where the running daemon listens and its pid, so the CLI
//! reaches a daemon whose address came from a flag or a variable the CLI was not given. The
//! daemon writes it once it listens (atomically: a reader never sees half of it) and removes it
//! when it stops gracefully; a daemon killed leaves it behind, which is why readers check that
//! its pid is still alive.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file's name in the data folder.
pub const FILE: &str = "daemon.json";

/// Where a running daemon can be reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Locator {
    /// `host:port` to connect to (a wildcard listen address becomes the loopback).
    pub address: String,
    /// The daemon's process id.
    pub pid: u32,
}

impl Locator {
    /// The locator of this process listening on `listening`.
    pub fn here(listening: SocketAddr) -> Self {
        let mut address = listening;
        if address.ip().is_unspecified() {
            // Bound to every interface: the loopback of the same family reaches it.
            address.set_ip(match address {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        Self {
            address: address.to_string(),
            pid: std::process::id(),
        }
    }

    /// Writes it into `data_dir`, replacing any previous one in a single rename.
    ///
    /// # Errors
    ///
    /// The OS error of creating, writing or renaming the file.
    pub fn write(&self, data_dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(data_dir)?;
        let mut file = tempfile::NamedTempFile::new_in(data_dir)?;
        serde_json::to_writer(&mut file, self)?;
        file.write_all(b"\n")?;
        file.as_file().sync_all()?;
        file.persist(path(data_dir)).map_err(|err| err.error)?;
        Ok(())
    }

    /// The locator in `data_dir`, when there is one and its daemon's process is alive.
    pub fn read(data_dir: &Path) -> Option<Self> {
        let text = std::fs::read(path(data_dir)).ok()?;
        let locator: Self = serde_json::from_slice(&text).ok()?;
        alive(locator.pid).then_some(locator)
    }

    /// Removes the file from `data_dir` if it is still this locator's (a daemon started since
    /// on the same folder has replaced it with its own).
    pub fn remove(&self, data_dir: &Path) {
        let path = path(data_dir);
        let ours = std::fs::read(&path)
            .ok()
            .and_then(|text| serde_json::from_slice::<Self>(&text).ok())
            .is_some_and(|found| found == *self);
        if ours && let Err(err) = std::fs::remove_file(&path) {
            tracing::warn!(file = %path.display(), error = %err, "cannot remove the daemon's locator");
        }
    }
}

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// Whether a process `pid` exists (signal 0 checks without sending anything; EPERM means it
/// exists under another user).
fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        // 0 and negative pids name process groups, not a daemon.
        return false;
    }
    // SAFETY: kill with signal 0 only checks that the process exists and may be signalled.
    let result = unsafe { libc::kill(pid, 0) };
    result == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_read_and_removed() {
        let data = tempfile::tempdir().unwrap();
        let locator = Locator::here("0.0.0.0:7400".parse().unwrap());
        assert_eq!(locator.address, "127.0.0.1:7400");
        assert_eq!(locator.pid, std::process::id());
        locator.write(data.path()).unwrap();
        assert_eq!(Locator::read(data.path()), Some(locator.clone()));

        let other = Locator {
            address: "127.0.0.1:7401".into(),
            pid: std::process::id(),
        };
        other.write(data.path()).unwrap();
        locator.remove(data.path());
        assert_eq!(
            Locator::read(data.path()),
            Some(other.clone()),
            "a newer daemon's file stays"
        );
        other.remove(data.path());
        assert_eq!(Locator::read(data.path()), None);
        let leftovers: Vec<_> = std::fs::read_dir(data.path()).unwrap().collect();
        assert!(
            leftovers.is_empty(),
            "no temporary file left: {leftovers:?}"
        );
    }

    #[test]
    fn a_dead_daemons_file_is_ignored() {
        let data = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        Locator {
            address: "127.0.0.1:7400".into(),
            pid,
        }
        .write(data.path())
        .unwrap();
        assert_eq!(Locator::read(data.path()), None);
        std::fs::write(data.path().join(FILE), b"{half").unwrap();
        assert_eq!(
            Locator::read(data.path()),
            None,
            "a broken file is no daemon"
        );
    }

    #[test]
    fn wildcard_ipv6_becomes_the_loopback() {
        let locator = Locator::here("[::]:7400".parse().unwrap());
        assert_eq!(locator.address, "[::1]:7400");
    }
}
