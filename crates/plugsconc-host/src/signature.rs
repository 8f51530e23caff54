//! Plugin signatures and the trust policy applied before every exec: publisher keys, signing a
//! plugin folder, and checking one against trusted publishers.
//!
//! A signed plugin folder holds `manifest.yaml.minisig`: a [minisign] signature (Ed25519) over
//! the exact bytes of `manifest.yaml` (for a JSON manifest, `manifest.json.minisig` over
//! `manifest.json`), whose *trusted comment* — covered by minisign's global
//! signature — binds the binary:
//!
//! ```text
//! plugsconc plugin=kv version=1.2.0 entrypoint=kv sha256=<hex of the binary> timestamp=<unix>
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

use crate::checksum::{SIDECAR_SUFFIX, Sha256};
use crate::discovery::{Discovered, folder_name};
use crate::{HostError, sha256_file};

/// The signature file in a plugin's folder whose manifest is `manifest.yaml`.
pub const SIGNATURE_FILE: &str = "manifest.yaml.minisig";

/// The signature of `manifest`: its path with `.minisig` added, as minisign names it.
pub fn signature_path(manifest: &Path) -> PathBuf {
    let mut path = manifest.as_os_str().to_owned();
    path.push(".minisig");
    PathBuf::from(path)
}

/// First word of the trusted comment; tells a plugsconc signature from a plain minisign one.
const COMMENT_TAG: &str = "plugsconc";

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
    /// Loads a minisign public key file (`untrusted comment: ...` then the base64 key); the
    /// publisher is named after the file's stem.
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

    /// Parses the text of a public key file, or a bare base64 public key.
    ///
    /// # Errors
    ///
    /// Why the text is not a minisign public key.
    pub fn parse(name: &str, text: &str) -> Result<Self, String> {
        let key = minisign::PublicKeyBox::from_string(text)
            .and_then(minisign::PublicKeyBox::into_public_key)
            .or_else(|_| minisign::PublicKey::from_base64(text.trim()))
            .map_err(|err| {
                if looks_like_secret_key(text) {
                    "this is a secret key; trust the publisher's .pub file instead".to_owned()
                } else {
                    format!("not a minisign public key: {err}")
                }
            })?;
        Ok(Self {
            name: name.to_owned(),
            key_id: key_id(key.keynum()),
            key,
        })
    }
}

/// A secret key's base64 line is four times a public key's (56 characters), encrypted or not.
fn looks_like_secret_key(text: &str) -> bool {
    text.lines()
        .nth(1)
        .is_some_and(|line| line.trim().len() > 200)
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
///
/// The default trusts nobody and requires signatures: every plugin is refused until its
/// publisher is added or it is allowed unsigned.
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

    /// The publishers as `name (key id)`, for messages.
    fn describe_publishers(&self) -> String {
        if self.publishers.is_empty() {
            return "none".to_owned();
        }
        let known: Vec<String> = self
            .publishers
            .iter()
            .map(|p| format!("{} ({})", p.name, p.key_id))
            .collect();
        known.join(", ")
    }
}

/// Which rule let an unsigned plugin through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsignedAllowance {
    /// Its name is in [`Trust::unsigned_allowed`].
    AllowList,
    /// The policy is [`SignaturePolicy::AllowUnsigned`].
    Policy,
}

impl fmt::Display for UnsignedAllowance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UnsignedAllowance::AllowList => "the unsigned allow-list",
            UnsignedAllowance::Policy => "the allow-unsigned policy",
        })
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
        allowed_by: UnsignedAllowance,
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

/// What a plugsconc signature's trusted comment binds.
#[derive(Debug, PartialEq, Eq)]
struct Binding<'a> {
    plugin: &'a str,
    version: &'a str,
    entrypoint: &'a str,
    sha256: &'a str,
    timestamp: &'a str,
}

impl<'a> Binding<'a> {
    fn parse(comment: &'a str) -> Option<Self> {
        let rest = comment
            .strip_prefix(COMMENT_TAG)?
            .strip_prefix(" plugin=")?;
        // Names and versions hold no spaces but an entry point may, so the fields after it are
        // cut from the end.
        let (plugin, rest) = rest.split_once(" version=")?;
        let (version, rest) = rest.split_once(" entrypoint=")?;
        let (rest, timestamp) = rest.rsplit_once(" timestamp=")?;
        let (entrypoint, sha256) = rest.rsplit_once(" sha256=")?;
        Some(Self {
            plugin,
            version,
            entrypoint,
            sha256,
            timestamp,
        })
    }
}

impl fmt::Display for Binding<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{COMMENT_TAG} plugin={} version={} entrypoint={} sha256={} timestamp={}",
            self.plugin, self.version, self.entrypoint, self.sha256, self.timestamp
        )
    }
}

/// Applies `trust` to a plugin whose entry point has SHA-256 `entrypoint_sha256` (the digest
/// the caller verified the binary against, so the signature and the exec see the same file).
/// Blocking file I/O: call it from `spawn_blocking` in async code.
///
/// # Errors
///
/// - [`HostError::Unsigned`]: no signature, and the policy refuses unsigned plugins;
/// - [`HostError::UntrustedKey`]: signed with a key no trusted publisher holds;
/// - [`HostError::BadSignature`]: the signature does not verify (manifest or signature edited);
/// - [`HostError::SignedBinaryMismatch`]: the binary was replaced after signing;
/// - [`HostError::SignedForOther`]: the signature names another plugin or version;
/// - [`HostError::Signature`]: the signature file is unreadable or not a plugsconc signature.
pub fn check(
    plugin: &Discovered,
    entrypoint_sha256: &Sha256,
    trust: &Trust,
) -> Result<Verdict, HostError> {
    let name = &plugin.manifest.name;
    let path = plugin.signature_file();
    let malformed = |reason: String| HostError::Signature {
        plugin: name.clone(),
        path: path.clone(),
        reason,
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return unsigned(plugin, trust),
        Err(err) => return Err(malformed(format!("cannot read it: {err}"))),
    };
    let signature = minisign::SignatureBox::from_string(&text).map_err(|err| {
        malformed(format!(
            "not a minisign signature ({err}); sign the folder again with `plugsconc sign`"
        ))
    })?;
    let key_id = key_id(signature.keynum());
    let Some(publisher) = trust.publishers.iter().find(|p| p.key_id == key_id) else {
        return Err(HostError::UntrustedKey {
            plugin: name.clone(),
            path,
            key_id,
            trusted: trust.describe_publishers(),
        });
    };
    let manifest_path = &plugin.manifest_file;
    let manifest = std::fs::read(manifest_path).map_err(|err| {
        malformed(format!(
            "cannot read {} to verify it: {err}",
            manifest_path.display()
        ))
    })?;
    // Verify the bytes the manifest was parsed from: checking a newer file would vouch for
    // settings the plugin does not run with.
    if !Sha256(sha2::Sha256::digest(&manifest).into()).matches(&plugin.manifest_sha256) {
        return Err(malformed(format!(
            "{} changed since it was read; scan the folder again",
            manifest_path.display()
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
    .map_err(|err| HostError::BadSignature {
        plugin: name.clone(),
        path: path.clone(),
        publisher: publisher.name.clone(),
        reason: err.to_string(),
    })?;
    let comment = signature
        .trusted_comment()
        .map_err(|err| malformed(format!("it has no trusted comment ({err})")))?;
    let binding = Binding::parse(&comment).ok_or_else(|| {
        malformed(format!(
            "its trusted comment {comment:?} binds no binary (it was not made by `plugsconc sign`); sign the folder with `plugsconc sign`"
        ))
    })?;
    // The entry point is not compared: the signed manifest already fixes it, and its spelling
    // in the comment is for people reading `minisign -V` output.
    let version = plugin.manifest.version.to_string();
    for (field, signed, actual) in [
        ("plugin", binding.plugin, name.as_str()),
        ("version", binding.version, version.as_str()),
    ] {
        if signed != actual {
            return Err(HostError::SignedForOther {
                plugin: name.clone(),
                path,
                field,
                signed: signed.to_owned(),
                actual: actual.to_owned(),
            });
        }
    }
    let signed = Sha256::from_hex(binding.sha256).ok_or_else(|| {
        malformed(format!(
            "its trusted comment has sha256={:?}, not 64 hex digits",
            binding.sha256
        ))
    })?;
    if !signed.matches(entrypoint_sha256) {
        return Err(HostError::SignedBinaryMismatch {
            plugin: name.clone(),
            path: plugin.entrypoint(),
            signed: signed.to_hex(),
            actual: entrypoint_sha256.to_hex(),
        });
    }
    Ok(Verdict::Signed {
        publisher: publisher.name.clone(),
        key_id,
    })
}

/// The policy's answer for a plugin without a signature file.
fn unsigned(plugin: &Discovered, trust: &Trust) -> Result<Verdict, HostError> {
    let name = &plugin.manifest.name;
    if trust.unsigned_allowed.contains(name) {
        return Ok(Verdict::Unsigned {
            allowed_by: UnsignedAllowance::AllowList,
        });
    }
    match trust.policy {
        SignaturePolicy::AllowUnsigned => {
            tracing::warn!(plugin = %name, "plugin is not signed; running it because unsigned plugins are allowed");
            Ok(Verdict::Unsigned {
                allowed_by: UnsignedAllowance::Policy,
            })
        }
        SignaturePolicy::RequireSigned => Err(HostError::Unsigned {
            plugin: name.clone(),
            dir: plugin.dir.clone(),
        }),
    }
}

/// A publisher name becomes two file names; keep it to one harmless path component.
fn valid_publisher_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Writes a new key pair as `<dir>/<name>.pub` and `<dir>/<name>.key` (mode 0600), creating
/// `dir` if needed. The secret key is encrypted (scrypt, as minisign does) when a password is
/// given, and stored unencrypted otherwise. Returns the public and secret key paths.
///
/// # Errors
///
/// [`HostError::KeyFile`] when the name is not a plain file name, a file exists (and not
/// `force`), or a file cannot be written.
pub fn keygen(
    dir: &Path,
    name: &str,
    password: Option<String>,
    force: bool,
) -> Result<(PathBuf, PathBuf), HostError> {
    let public = dir.join(format!("{name}.pub"));
    let secret = dir.join(format!("{name}.key"));
    let fail = |path: &Path, reason: String| HostError::KeyFile {
        path: path.to_owned(),
        reason,
    };
    if !valid_publisher_name(name) {
        return Err(fail(
            &secret,
            format!(
                "{name:?} is not a usable publisher name; expected 1-64 letters, digits, `-`, `_` or `.`, not starting with `.`"
            ),
        ));
    }
    for path in [&public, &secret] {
        if path.exists() && !force {
            return Err(fail(
                path,
                "already exists; pass --force to replace it".into(),
            ));
        }
    }
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
    write_private(&secret, secret_text.as_bytes(), force)
        .map_err(|err| fail(&secret, err.to_string()))?;
    std::fs::write(&public, public_text).map_err(|err| fail(&public, err.to_string()))?;
    Ok((public, secret))
}

/// Creates `path` readable by its owner only. The mode is set at creation, so the key is never
/// readable by others, even briefly.
fn write_private(path: &Path, bytes: &[u8], replace: bool) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if replace {
        match std::fs::remove_file(path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

/// Replaces `path` by renaming a complete temporary file over it, so a host scanning the
/// folder meanwhile reads the old file or the new one, never half of one.
fn write_replacing(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&temporary);
    })
}

/// Opens a secret key file, decrypting it with `password` when given.
fn open_secret_key(
    path: &Path,
    password: Option<String>,
) -> Result<minisign::SecretKey, HostError> {
    let fail = |reason: String| HostError::KeyFile {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|err| fail(err.to_string()))?;
    if Publisher::parse("", &text).is_ok() {
        return Err(fail(
            "this is a public key; sign with the publisher's secret .key file".into(),
        ));
    }
    let boxed = minisign::SecretKeyBox::from_string(&text)
        .map_err(|err| fail(format!("not a minisign secret key: {err}")))?;
    match password {
        None => boxed.into_unencrypted_secret_key().map_err(|err| {
            fail(format!(
                "cannot open it without a password ({err}); a password-protected key needs its password (`plugsconc sign --password-env VAR`)"
            ))
        }),
        Some(password) => boxed
            .into_secret_key(Some(password))
            .map_err(|err| fail(format!("cannot open it with the password given ({err})"))),
    }
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
/// when it is password-protected): hashes the binary, (re)writes its `.sha256` sidecar so the
/// folder is complete, and writes the signature ([`SIGNATURE_FILE`], or `manifest.json.minisig`
/// for a JSON manifest) binding the manifest to that hash.
///
/// The publisher's name is not part of the signature: a host names the publisher after the
/// trusted `.pub` file whose key verifies it, never after what the signer claims.
///
/// # Errors
///
/// [`HostError::KeyFile`] when the key cannot be read or opened, [`HostError::Sign`] when the
/// manifest is invalid, the binary unreadable or a file cannot be written.
pub fn sign_plugin(
    dir: &Path,
    secret_key: &Path,
    password: Option<String>,
) -> Result<Signed, HostError> {
    let plugin = crate::discovery::load(dir).map_err(|invalid| {
        let error = invalid.error;
        let reason = match &error {
            crate::manifest::ManifestError::Read { io, .. } => format!("cannot read: {io}"),
            crate::manifest::ManifestError::Both { .. } => error.to_string(),
            _ => {
                let problems = error.problems();
                let first = problems.first().map_or_else(String::new, |p| {
                    if p.field.is_empty() {
                        format!("line {}: {}", p.line, p.message)
                    } else {
                        format!("line {}: {}: {}", p.line, p.field, p.message)
                    }
                });
                let more = match problems.len() {
                    0 | 1 => String::new(),
                    n => format!(" (and {} more)", n - 1),
                };
                format!("invalid manifest: {first}{more}")
            }
        };
        HostError::Sign {
            plugin: folder_name(dir),
            path: error.file().to_owned(),
            reason,
        }
    })?;
    let key = open_secret_key(secret_key, password)?;
    let name = plugin.manifest.name.clone();
    let fail = |path: &Path, reason: String| HostError::Sign {
        plugin: name.clone(),
        path: path.to_owned(),
        reason,
    };
    let entrypoint = plugin.entrypoint();
    let spelled = plugin.manifest.entrypoint.to_string_lossy();
    if spelled.chars().any(char::is_control) {
        return Err(fail(
            &entrypoint,
            "the entry point's name holds a control character, which the signature's one-line trusted comment cannot carry; rename the binary".into(),
        ));
    }
    let sha256 = sha256_file(&entrypoint)
        .map_err(|err| fail(&entrypoint, format!("cannot read the binary: {err}")))?;
    let manifest_path = plugin.manifest_file.clone();
    let manifest = std::fs::read(&manifest_path)
        .map_err(|err| fail(&manifest_path, format!("cannot read it: {err}")))?;
    if !Sha256(sha2::Sha256::digest(&manifest).into()).matches(&plugin.manifest_sha256) {
        return Err(fail(
            &manifest_path,
            "changed while it was being signed; sign again".into(),
        ));
    }
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (version, hex, timestamp) = (
        plugin.manifest.version.to_string(),
        sha256.to_hex(),
        timestamp.to_string(),
    );
    let trusted = Binding {
        plugin: &name,
        version: &version,
        entrypoint: &spelled,
        sha256: &hex,
        timestamp: &timestamp,
    }
    .to_string();
    let untrusted = format!("signature of plugin {name} {version}");
    let signature = minisign::sign(
        None,
        &key,
        Cursor::new(&manifest),
        Some(&trusted),
        Some(&untrusted),
    )
    .map_err(|err| HostError::KeyFile {
        path: secret_key.to_owned(),
        reason: format!("cannot sign with it: {err}"),
    })?;

    // The sidecar first: a host that sees the new signature then finds a matching sidecar.
    let file_name = entrypoint
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut sidecar = entrypoint.clone().into_os_string();
    sidecar.push(SIDECAR_SUFFIX);
    let sidecar = PathBuf::from(sidecar);
    write_replacing(&sidecar, format!("{hex}  {file_name}\n").as_bytes())
        .map_err(|err| fail(&sidecar, format!("cannot write it: {err}")))?;
    let path = plugin.signature_file();
    write_replacing(&path, signature.into_string().as_bytes())
        .map_err(|err| fail(&path, format!("cannot write it: {err}")))?;
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
