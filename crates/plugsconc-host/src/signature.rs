//! Plugin signatures and the trust policy applied before every exec.
//!
//! A signed plugin folder holds `manifest.yaml.minisig`: a [minisign] signature (Ed25519) over
//! the exact bytes of `manifest.yaml`, whose *trusted comment* — covered by minisign's global
//! signature — binds the binary:
//!
//! ```text
//! plugsconc plugin=kv version=1.2.0 entrypoint=./kv sha256=<hex of the binary> timestamp=<unix>
//! ```
//!
//! so one signature covers the manifest and the binary, and the standard tool checks it:
//! `minisign -Vm plugins/kv/manifest.yaml -p publisher.pub` (then compare the printed sha256
//! with `sha256sum plugins/kv/kv`). Publishers are minisign public keys; the policy says what
//! happens to unsigned plugins. A plugin that has a signature is always verified: a bad one
//! never passes, whatever the policy.
//!
//! [minisign]: https://jedisct1.github.io/minisign/

use std::collections::BTreeSet;
use std::fmt;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use sha2::Digest as _;

use crate::checksum::Sha256;
use crate::discovery::Discovered;
use crate::manifest::MANIFEST_FILE;
use crate::{HostError, sha256_file};

/// The signature file in a plugin's folder.
pub const SIGNATURE_FILE: &str = "manifest.yaml.minisig";

/// A key whose signatures are trusted, named after its file.
#[derive(Clone)]
pub struct Publisher {
    /// Name (the key file's stem, e.g. `acme` for `acme.pub`).
    pub name: String,
    /// minisign key id, 16 upper-case hex digits (as `minisign` prints it).
    pub key_id: String,
    key: minisign::PublicKey,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("name", &self.name)
            .field("key_id", &self.key_id)
            .finish()
    }
}

impl Publisher {
    /// Loads a minisign public key file (`untrusted comment: ...` then the base64 key).
    ///
    /// # Errors
    ///
    /// [`HostError::KeyFile`] naming the file.
    pub fn load(path: &Path) -> Result<Self, HostError> {
        let fail = |reason: String| HostError::KeyFile {
            path: path.to_owned(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|err| fail(err.to_string()))?;
        let name = path.file_stem().map_or_else(
            || "publisher".to_owned(),
            |s| s.to_string_lossy().into_owned(),
        );
        Self::parse(&name, &text).map_err(fail)
    }

    /// Parses the text of a public key file.
    ///
    /// # Errors
    ///
    /// Why the text is not a minisign public key.
    pub fn parse(name: &str, text: &str) -> Result<Self, String> {
        let key = minisign::PublicKeyBox::from_string(text)
            .and_then(minisign::PublicKeyBox::into_public_key)
            .or_else(|_| minisign::PublicKey::from_base64(text.trim()))
            .map_err(|err| format!("not a minisign public key: {err}"))?;
        Ok(Self {
            name: name.to_owned(),
            key_id: key_id(key.keynum()),
            key,
        })
    }
}

/// minisign prints key ids as the 8 key-number bytes read little-endian, in hex.
fn key_id(keynum: &[u8]) -> String {
    keynum.iter().rev().map(|b| format!("{b:02X}")).collect()
}

/// What happens to a plugin without a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignaturePolicy {
    /// Refused, unless its name is in [`Trust::unsigned_allowed`] (the production default).
    #[default]
    RequireSigned,
    /// Started, with a warning in the log.
    AllowUnsigned,
}

/// Trusted publishers and the policy for unsigned plugins.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// What happens to unsigned plugins.
    pub policy: SignaturePolicy,
    /// Keys whose signatures are accepted.
    pub publishers: Vec<Publisher>,
    /// Unsigned plugins accepted by name under [`SignaturePolicy::RequireSigned`].
    pub unsigned_allowed: BTreeSet<String>,
}

impl Trust {
    /// Unsigned plugins run (with a warning); signed ones are still verified. For development.
    pub fn allow_unsigned() -> Self {
        Self {
            policy: SignaturePolicy::AllowUnsigned,
            ..Self::default()
        }
    }
}

/// Why a plugin passed the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Signed by a trusted publisher, over this manifest and this binary.
    Signed {
        /// The publisher's name.
        publisher: String,
        /// Its key id.
        key_id: String,
    },
    /// Unsigned, and the policy lets it run.
    Unsigned {
        /// Which rule let it through.
        allowed_by: &'static str,
    },
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Signed { publisher, key_id } => {
                write!(f, "signed by {publisher} (key {key_id})")
            }
            Verdict::Unsigned { allowed_by } => write!(f, "unsigned, allowed by {allowed_by}"),
        }
    }
}

/// Applies `trust` to a plugin whose binary has SHA-256 `binary` (blocking file I/O).
///
/// # Errors
///
/// [`HostError::Unsigned`] when the policy refuses an unsigned plugin, [`HostError::Signature`]
/// when a signature is malformed, from an untrusted key, does not match the manifest, or was
/// made for another binary or plugin.
pub fn check(plugin: &Discovered, binary: &Sha256, trust: &Trust) -> Result<Verdict, HostError> {
    let name = &plugin.manifest.name;
    let path = plugin.dir.join(SIGNATURE_FILE);
    let fail = |reason: String| HostError::Signature {
        plugin: name.clone(),
        path: path.clone(),
        reason,
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return if trust.unsigned_allowed.contains(name) {
                Ok(Verdict::Unsigned {
                    allowed_by: "the unsigned allow-list",
                })
            } else if trust.policy == SignaturePolicy::AllowUnsigned {
                tracing::warn!(plugin = %name, "plugin is not signed; running it because unsigned plugins are allowed");
                Ok(Verdict::Unsigned {
                    allowed_by: "the allow-unsigned policy",
                })
            } else {
                Err(HostError::Unsigned {
                    plugin: name.clone(),
                    dir: plugin.dir.clone(),
                })
            };
        }
        Err(err) => return Err(fail(format!("cannot read it: {err}"))),
    };
    let signature = minisign::SignatureBox::from_string(&text)
        .map_err(|err| fail(format!("not a minisign signature: {err}")))?;
    let id = key_id(signature.keynum());
    let publisher = trust
        .publishers
        .iter()
        .find(|p| p.key_id == id)
        .ok_or_else(|| {
            let known: Vec<String> = trust
                .publishers
                .iter()
                .map(|p| format!("{} ({})", p.name, p.key_id))
                .collect();
            fail(format!(
                "signed with key {id}, which is not a trusted publisher's (trusted: {})",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ))
        })?;
    let manifest = std::fs::read(plugin.dir.join(MANIFEST_FILE))
        .map_err(|err| fail(format!("cannot read {MANIFEST_FILE}: {err}")))?;
    if Sha256(sha2::Sha256::digest(&manifest).into()) != plugin.manifest_sha256 {
        return Err(fail(format!(
            "{MANIFEST_FILE} changed since it was read; rescan the plugin"
        )));
    }
    minisign::verify(
        &publisher.key,
        &signature,
        Cursor::new(&manifest),
        true,
        false,
        false,
    )
    .map_err(|err| {
        fail(format!(
            "does not match {MANIFEST_FILE} (edited after signing?): {err}"
        ))
    })?;
    let comment = signature
        .trusted_comment()
        .map_err(|err| fail(format!("no trusted comment: {err}")))?;
    let field = |key: &str| {
        comment
            .split_whitespace()
            .find_map(|part| part.strip_prefix(key)?.strip_prefix('='))
    };
    if field("plugin") != Some(name.as_str()) {
        return Err(fail(format!(
            "it was made for plugin {:?}, not {name:?}",
            field("plugin").unwrap_or("?")
        )));
    }
    let signed = field("sha256").unwrap_or("none");
    if !Sha256::from_hex(signed).is_some_and(|s| s == *binary) {
        return Err(fail(format!(
            "it was made for a binary with SHA-256 {signed}, but the binary is {}: it was replaced after signing",
            binary.to_hex()
        )));
    }
    Ok(Verdict::Signed {
        publisher: publisher.name.clone(),
        key_id: id,
    })
}

/// Writes a new key pair as `<dir>/<name>.pub` and `<dir>/<name>.key` (mode 0600); the secret
/// key is encrypted when a password is given. Returns both paths.
///
/// # Errors
///
/// [`HostError::KeyFile`] when a file exists (and not `force`) or cannot be written.
pub fn keygen(
    dir: &Path,
    name: &str,
    password: Option<String>,
    force: bool,
) -> Result<(PathBuf, PathBuf), HostError> {
    let public = dir.join(format!("{name}.pub"));
    let secret = dir.join(format!("{name}.key"));
    for path in [&public, &secret] {
        if path.exists() && !force {
            return Err(HostError::KeyFile {
                path: path.clone(),
                reason: "already exists; pass --force to replace it".into(),
            });
        }
    }
    let fail = |path: &Path, reason: String| HostError::KeyFile {
        path: path.to_owned(),
        reason,
    };
    let pair = match password {
        Some(password) => minisign::KeyPair::generate_encrypted_keypair(Some(password)),
        None => minisign::KeyPair::generate_unencrypted_keypair(),
    }
    .map_err(|err| fail(&secret, err.to_string()))?;
    let comment = format!("plugsconc publisher {name}");
    let public_text = pair
        .pk
        .to_box()
        .map_err(|err| fail(&public, err.to_string()))?
        .into_string();
    let secret_text = pair
        .sk
        .to_box(Some(&comment))
        .map_err(|err| fail(&secret, err.to_string()))?
        .into_string();
    std::fs::create_dir_all(dir).map_err(|err| fail(dir, err.to_string()))?;
    write_private(&secret, secret_text.as_bytes()).map_err(|err| fail(&secret, err.to_string()))?;
    std::fs::write(&public, public_text).map_err(|err| fail(&public, err.to_string()))?;
    Ok((public, secret))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

/// What [`sign_plugin`] signed.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The plugin.
    pub plugin: String,
    /// Its version.
    pub version: semver::Version,
    /// The binary's hash, now also in its `.sha256` sidecar.
    pub sha256: Sha256,
    /// The signing key's id.
    pub key_id: String,
    /// The signature file written.
    pub path: PathBuf,
}

/// Signs the plugin in `dir` with the secret key in `secret_key` (decrypted with `password`
/// when it is encrypted): hashes the binary, (re)writes its `.sha256` sidecar, and writes
/// [`SIGNATURE_FILE`].
///
/// # Errors
///
/// The manifest's own error when it is invalid, [`HostError::KeyFile`] for the key, or
/// [`HostError::Signature`] when the files cannot be written.
pub fn sign_plugin(
    dir: &Path,
    secret_key: &Path,
    password: Option<String>,
) -> Result<Signed, HostError> {
    let plugin = crate::discovery::load(dir).map_err(|invalid| HostError::Signature {
        plugin: crate::discovery::folder_name(dir),
        path: dir.join(MANIFEST_FILE),
        reason: invalid.error.to_string(),
    })?;
    let key_fail = |reason: String| HostError::KeyFile {
        path: secret_key.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(secret_key).map_err(|err| key_fail(err.to_string()))?;
    let boxed = minisign::SecretKeyBox::from_string(&text)
        .map_err(|err| key_fail(format!("not a minisign secret key: {err}")))?;
    let key = match password {
        Some(password) => boxed.into_secret_key(Some(password)),
        None => boxed.into_unencrypted_secret_key(),
    }
    .map_err(|err| {
        key_fail(format!(
            "cannot open the key (encrypted? set its password): {err}"
        ))
    })?;
    let name = plugin.manifest.name.clone();
    let entrypoint = plugin.entrypoint();
    let write_fail = |path: &Path, reason: String| HostError::Signature {
        plugin: name.clone(),
        path: path.to_owned(),
        reason,
    };
    let sha256 =
        sha256_file(&entrypoint).map_err(|err| write_fail(&entrypoint, err.to_string()))?;
    let file_name = entrypoint
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut sidecar = entrypoint.clone().into_os_string();
    sidecar.push(crate::checksum::SIDECAR_SUFFIX);
    let sidecar = PathBuf::from(sidecar);
    std::fs::write(&sidecar, format!("{}  {file_name}\n", sha256.to_hex()))
        .map_err(|err| write_fail(&sidecar, err.to_string()))?;
    let manifest = std::fs::read(dir.join(MANIFEST_FILE))
        .map_err(|err| write_fail(&dir.join(MANIFEST_FILE), err.to_string()))?;
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let trusted = format!(
        "plugsconc plugin={name} version={} entrypoint={} sha256={} timestamp={timestamp}",
        plugin.manifest.version,
        plugin.manifest.entrypoint.display(),
        sha256.to_hex()
    );
    let untrusted = format!("signature of plugin {name} {}", plugin.manifest.version);
    let signature = minisign::sign(
        None,
        &key,
        Cursor::new(&manifest),
        Some(&trusted),
        Some(&untrusted),
    )
    .map_err(|err| key_fail(err.to_string()))?;
    let path = dir.join(SIGNATURE_FILE);
    std::fs::write(&path, signature.into_string())
        .map_err(|err| write_fail(&path, err.to_string()))?;
    Ok(Signed {
        plugin: name,
        version: plugin.manifest.version,
        sha256,
        key_id: key_id(key.keynum()),
        path,
    })
}

#[cfg(test)]
mod tests;
