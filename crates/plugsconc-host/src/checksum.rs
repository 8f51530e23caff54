//! SHA-256 of a plugin binary, checked before every exec.

use std::path::Path;

use sha2::Digest as _;

use crate::HostError;

/// A SHA-256 digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    /// Parses 64 hex digits (either case).
    pub fn from_hex(hex: &str) -> Option<Self> {
        let hex = hex.trim();
        if hex.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self(out))
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Compares in constant time, so a timing side channel reveals nothing about the digest.
    pub fn matches(&self, other: &Sha256) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// Hashes a file (blocking: call from `spawn_blocking`).
///
/// # Errors
///
/// The I/O error reading the file.
pub fn sha256_file(path: &Path) -> std::io::Result<Sha256> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(Sha256(hasher.finalize().into()))
}

/// Verifies `path` against `expected` off the async threads.
pub(crate) async fn verify(plugin: &str, path: &Path, expected: Sha256) -> Result<(), HostError> {
    let owned = path.to_owned();
    let actual = tokio::task::spawn_blocking(move || sha256_file(&owned))
        .await
        .map_err(|err| std::io::Error::other(err.to_string()))
        .and_then(|r| r)
        .map_err(|source| HostError::ChecksumRead {
            plugin: plugin.to_owned(),
            path: path.to_owned(),
            source,
        })?;
    if actual.matches(&expected) {
        Ok(())
    } else {
        Err(HostError::ChecksumMismatch {
            plugin: plugin.to_owned(),
            path: path.to_owned(),
            expected: expected.to_hex(),
            actual: actual.to_hex(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_validation() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let digest = Sha256::from_hex(hex).unwrap();
        assert_eq!(digest.to_hex(), hex);
        assert_eq!(Sha256::from_hex(&hex.to_uppercase()), Some(digest));
        assert_eq!(Sha256::from_hex("abc"), None);
        assert_eq!(Sha256::from_hex(&"g".repeat(64)), None);
    }

    #[tokio::test]
    async fn verifies_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty");
        std::fs::write(&path, b"").unwrap();
        let empty =
            Sha256::from_hex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
                .unwrap();
        assert_eq!(sha256_file(&path).unwrap(), empty);
        verify("p", &path, empty).await.unwrap();
        std::fs::write(&path, b"x").unwrap();
        let err = verify("p", &path, empty).await.unwrap_err().to_string();
        assert!(
            err.contains("refusing to run it") && err.contains("e3b0c442"),
            "{err}"
        );
        let missing = verify("p", &dir.path().join("nope"), empty)
            .await
            .unwrap_err();
        assert!(matches!(missing, HostError::ChecksumRead { .. }));
    }
}
