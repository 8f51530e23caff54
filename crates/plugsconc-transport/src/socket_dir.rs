//! A private folder (mode 0700) for unix sockets, removed with everything in it when dropped.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A private socket folder under the temp dir.
#[derive(Debug)]
pub struct SocketDir(PathBuf);

impl SocketDir {
    /// Creates `<tmp>/plugsconc-<pid>-<n>`; names stay short because unix socket paths are
    /// limited to about 108 bytes.
    ///
    /// # Errors
    ///
    /// The I/O error creating the folder.
    pub fn create() -> std::io::Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let pid = std::process::id();
        Self::create_first_free(|| {
            std::env::temp_dir().join(format!(
                "plugsconc-{pid}-{}",
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ))
        })
    }

    /// Creates the first of `names` that does not exist yet. A name can be taken: a process
    /// killed before it removed its folder leaves it behind, and a later process may get the
    /// same pid.
    fn create_first_free(mut names: impl FnMut() -> PathBuf) -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt as _;
        const ATTEMPTS: usize = 1000;
        let mut last = None;
        for _ in 0..ATTEMPTS {
            let path = names();
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(Self(path)),
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => last = Some(err),
                Err(err) => return Err(err),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no free socket folder name")))
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn private_and_removed() {
        let dir = SocketDir::create().unwrap();
        let path = dir.path().to_owned();
        std::fs::write(path.join("plugin1"), b"").unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_ne!(SocketDir::create().unwrap().path(), path);
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn a_name_left_behind_is_skipped() {
        let base = tempfile::tempdir().unwrap();
        let taken = base.path().join("plugsconc-1-0");
        std::fs::create_dir(&taken).unwrap();
        let mut n = 0;
        let dir = SocketDir::create_first_free(|| {
            n += 1;
            base.path().join(format!("plugsconc-1-{}", n - 1))
        })
        .unwrap();
        assert_eq!(dir.path(), base.path().join("plugsconc-1-1"));
        assert!(taken.exists(), "the folder left behind is not touched");
    }
}
