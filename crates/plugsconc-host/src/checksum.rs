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

/// One hash over several files' contents, each prefixed by its length, a missing file counting
/// as distinct from an empty one (blocking: call from `spawn_blocking`). It tells whether any of
/// them changed.
///
/// # Errors
///
/// An I/O error other than the file not existing.
pub fn sha256_files(paths: &[&Path]) -> std::io::Result<Sha256> {
    let mut hasher = sha2::Sha256::new();
    for path in paths {
        match std::fs::File::open(path) {
            Ok(mut file) => {
                hasher.update([1]);
                let mut counted = Counted(&mut hasher, 0);
                std::io::copy(&mut file, &mut counted)?;
                let length = counted.1;
                hasher.update(length.to_le_bytes());
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => hasher.update([0]),
            Err(err) => return Err(err),
        }
    }
    Ok(Sha256(hasher.finalize().into()))
}

/// A writer into a hasher that counts the bytes it was given.
struct Counted<'a>(&'a mut sha2::Sha256, u64);

impl std::io::Write for Counted<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        self.1 += bytes.len() as u64;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Suffix of the checksum sidecar next to an entry point (`kv` -> `kv.sha256`).
pub const SIDECAR_SUFFIX: &str = ".sha256";

/// Reads `<entrypoint>.sha256` in the standard `sha256sum` format (`<hex>  <file name>`, or
/// `<hex> *<file name>`, or the bare digest); the file name, when present, must be the entry
/// point's.
///
/// # Errors
///
/// [`HostError::Sidecar`] saying what is missing or malformed and how to make it.
pub fn read_sidecar(plugin: &str, entrypoint: &Path) -> Result<Sha256, HostError> {
    let file_name = entrypoint
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut sidecar = entrypoint.as_os_str().to_owned();
    sidecar.push(SIDECAR_SUFFIX);
    let sidecar = std::path::PathBuf::from(sidecar);
    let fail = |reason: String| HostError::Sidecar {
        plugin: plugin.to_owned(),
        path: sidecar.clone(),
        entrypoint: file_name.clone(),
        reason,
    };
    let text = std::fs::read_to_string(&sidecar)
        .map_err(|err| fail(format!("no readable checksum sidecar: {err}")))?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .ok_or_else(|| fail("the checksum sidecar is empty".into()))?;
    let (hex, named) = match line.split_once(char::is_whitespace) {
        Some((hex, rest)) => (hex, Some(rest.trim_start().trim_start_matches('*'))),
        None => (line, None),
    };
    let digest = Sha256::from_hex(hex)
        .ok_or_else(|| fail(format!("{hex:?} is not a SHA-256 (64 hex digits)")))?;
    if let Some(named) = named
        && named != file_name
        && !named.ends_with(&format!("/{file_name}"))
    {
        return Err(fail(format!(
            "the sidecar is for {named:?}, not the entry point {file_name:?}"
        )));
    }
    Ok(digest)
}

/// Verifies a discovered plugin's entry point against its sidecar, returning the digest (to pass
/// to [`crate::ClientBuilder::sha256`] so the same check repeats right before exec).
///
/// # Errors
///
/// [`HostError::Sidecar`] or [`HostError::ChecksumMismatch`].
pub async fn verify_entrypoint(plugin: &crate::Discovered) -> Result<Sha256, HostError> {
    let name = plugin.manifest.name.clone();
    let entrypoint = plugin.entrypoint();
    let expected = {
        let (name, path) = (name.clone(), entrypoint.clone());
        tokio::task::spawn_blocking(move || read_sidecar(&name, &path))
            .await
            .map_err(|err| HostError::Sidecar {
                plugin: plugin.manifest.name.clone(),
                path: entrypoint.clone(),
                entrypoint: String::new(),
                reason: err.to_string(),
            })??
    };
    verify(&name, &entrypoint, expected).await?;
    Ok(expected)
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
            cause: source,
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

    #[test]
    fn sidecar_formats() {
        let dir = tempfile::tempdir().unwrap();
        let entry = dir.path().join("kv");
        std::fs::write(&entry, b"").unwrap();
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let sidecar = dir.path().join("kv.sha256");
        for text in [
            format!("{hex}  kv\n"),
            format!("{hex} *kv\n"),
            format!("{hex}\n"),
            format!("\n{hex}  ./kv\n"),
        ] {
            std::fs::write(&sidecar, text).unwrap();
            assert_eq!(read_sidecar("kv", &entry).unwrap().to_hex(), hex);
        }
        for (text, expected) in [
            (format!("{hex}  other\n"), "not the entry point"),
            ("abc  kv\n".to_owned(), "not a SHA-256"),
            (String::new(), "empty"),
        ] {
            std::fs::write(&sidecar, text).unwrap();
            let err = read_sidecar("kv", &entry).unwrap_err().to_string();
            assert!(
                err.contains(expected) && err.contains("sha256sum kv > kv.sha256"),
                "{err}"
            );
        }
        std::fs::remove_file(&sidecar).unwrap();
        let err = read_sidecar("kv", &entry).unwrap_err().to_string();
        assert!(err.contains("no readable checksum sidecar"), "{err}");
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

    #[test]
    fn a_content_hash_changes_with_any_file_and_tells_missing_from_empty() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"ab").unwrap();
        std::fs::write(&b, b"c").unwrap();
        let first = sha256_files(&[&a, &b]).unwrap();
        assert_eq!(sha256_files(&[&a, &b]).unwrap(), first, "stable");
        // The same bytes split differently between the files is a different content.
        std::fs::write(&a, b"a").unwrap();
        std::fs::write(&b, b"bc").unwrap();
        assert_ne!(sha256_files(&[&a, &b]).unwrap(), first);
        std::fs::write(&b, b"").unwrap();
        let empty = sha256_files(&[&a, &b]).unwrap();
        std::fs::remove_file(&b).unwrap();
        assert_ne!(
            sha256_files(&[&a, &b]).unwrap(),
            empty,
            "missing is not empty"
        );
    }
}
