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
        use std::os::unix::fs::DirBuilderExt as _;
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "plugsconc-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(Self(path))
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
}
