//! The error type of the host crate.

use std::path::PathBuf;
use std::process::ExitStatus;

/// Why a plugin could not be started, reached or stopped.
///
/// A variant that wraps another error prints it in its message (these errors are shown and
/// logged with plain `{}`), so it does not also return it from `source()`: a chain printed with
/// anyhow's `{:#}` names each cause once.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The binary could not be read for its checksum.
    #[error("plugin {plugin:?}: cannot read {path} to check its SHA-256: {cause}")]
    ChecksumRead {
        /// The plugin.
        plugin: String,
        /// Its binary.
        path: PathBuf,
        /// The OS error.
        cause: std::io::Error,
    },
    /// The binary is not the one that was approved; it was not executed.
    #[error(
        "plugin {plugin:?}: {path} has SHA-256 {actual}, expected {expected}; refusing to run it"
    )]
    ChecksumMismatch {
        /// The plugin.
        plugin: String,
        /// Its binary.
        path: PathBuf,
        /// The approved hash.
        expected: String,
        /// The hash of the file on disk.
        actual: String,
    },
    /// A configured checksum is not 64 hex digits.
    #[error("plugin {plugin:?}: checksum {value:?} is not a SHA-256 (64 hex digits)")]
    ChecksumSyntax {
        /// The plugin.
        plugin: String,
        /// The value given.
        value: String,
    },
    /// The process could not be spawned.
    #[error("plugin {plugin:?}: cannot execute {path}: {cause}")]
    Spawn {
        /// The plugin.
        plugin: String,
        /// Its binary.
        path: PathBuf,
        /// The OS error.
        cause: std::io::Error,
    },
    /// The plugin exited before printing its handshake line.
    #[error("plugin {plugin:?} exited before printing its handshake line ({status}){tail}")]
    ExitedBeforeHandshake {
        /// The plugin.
        plugin: String,
        /// How it exited.
        status: String,
        /// Its last stderr lines, formatted.
        tail: StderrTail,
    },
    /// The plugin closed its stdout without printing a handshake line, and was still running
    /// after that (a plugin that exits gets [`HostError::ExitedBeforeHandshake`]).
    #[error(
        "plugin {plugin:?} closed its stdout without printing its handshake line but is still running; the plugin was killed{tail}"
    )]
    StdoutClosed {
        /// The plugin.
        plugin: String,
        /// Its last stderr lines.
        tail: StderrTail,
    },
    /// No handshake line within the start timeout.
    #[error(
        "plugin {plugin:?}: timeout while waiting for the handshake line after {seconds:.1} s; the plugin was killed{tail}"
    )]
    HandshakeTimeout {
        /// The plugin.
        plugin: String,
        /// The timeout.
        seconds: f64,
        /// Its last stderr lines.
        tail: StderrTail,
    },
    /// The first stdout line is not a handshake line (go-plugin: "Unrecognized remote plugin
    /// message").
    #[error(
        "plugin {plugin:?} printed {line} where the handshake line was expected (CORE|APP|NETWORK|ADDRESS|grpc|CERT): {reason}; {status}{tail}"
    )]
    BadHandshake {
        /// What it printed (cut when long).
        line: plugsconc_protocol::Quoted,
        /// The plugin.
        plugin: String,
        /// Why it is not a valid handshake.
        reason: String,
        /// What became of it: killed, or how it had already exited.
        status: String,
        /// Its last stderr lines.
        tail: StderrTail,
    },
    /// The plugin negotiated a version the host does not accept.
    #[error(
        "plugin {plugin:?}: incompatible API version with plugin. Plugin version: {plugin_version}, Client versions: {host_versions:?}"
    )]
    IncompatibleVersion {
        /// The plugin.
        plugin: String,
        /// What it offered.
        plugin_version: u32,
        /// What the host accepts.
        host_versions: Vec<u32>,
    },
    /// The plugin speaks net/rpc, which plugsconc does not.
    #[error(
        "plugin {plugin:?} speaks net/rpc; plugsconc supports gRPC plugins only (in Go: set GRPCServer in plugin.ServeConfig)"
    )]
    NetRpc {
        /// The plugin.
        plugin: String,
    },
    /// AutoMTLS was requested but the plugin sent no certificate.
    #[error(
        "plugin {plugin:?} did not send a certificate in its handshake although AutoMTLS is on (a plugin that does not support AutoMTLS must be run with auto_mtls off)"
    )]
    MissingCertificate {
        /// The plugin.
        plugin: String,
    },
    /// A wire-level problem (bad certificate, TLS set-up).
    #[error("plugin {plugin:?}: {cause}")]
    Protocol {
        /// The plugin.
        plugin: String,
        /// The cause.
        cause: plugsconc_protocol::ProtocolError,
    },
    /// Connecting to the plugin's address failed.
    #[error("plugin {plugin:?}: {cause}{tail}")]
    Connect {
        /// The plugin.
        plugin: String,
        /// The cause.
        cause: plugsconc_transport::TransportError,
        /// Its last stderr lines.
        tail: StderrTail,
    },
    /// The plugin's handshake points at an address another process serves (another plugin's
    /// socket, say): the host refused to connect, and sent nothing there.
    #[error(
        "plugin {plugin:?} (pid {}) printed a handshake pointing at {} address {:?}, which is served by {owner}, not by the plugin; refusing to connect (the plugin was killed){tail}",
        peer.expected, peer.network, peer.address
    )]
    Impersonation {
        /// The plugin.
        plugin: String,
        /// The address, the plugin's pid and who serves the address.
        peer: Box<plugsconc_transport::ForeignPeer>,
        /// Who serves the address, for people: the process, and the plugin it is when known.
        owner: String,
        /// Its last stderr lines.
        tail: StderrTail,
    },
    /// The plugin's health check failed.
    #[error("plugin {plugin:?} is not healthy: {reason}")]
    Unhealthy {
        /// The plugin.
        plugin: String,
        /// The health status or the error.
        reason: String,
    },
    /// A reattach target is not that plugin.
    #[error("cannot reattach to plugin {plugin:?}: {reason}")]
    Reattach {
        /// The plugin.
        plugin: String,
        /// Why the pid or address was refused.
        reason: String,
    },
    /// The plugins folder cannot be listed.
    #[error("cannot read the plugins folder {path}: {cause}")]
    PluginsDir {
        /// The folder.
        path: PathBuf,
        /// The OS error.
        cause: std::io::Error,
    },
    /// No plugin of that name is in the catalog.
    #[error("no plugin named {plugin:?} in the catalog (known: {known})")]
    UnknownPlugin {
        /// The name asked for.
        plugin: String,
        /// The names the catalog has.
        known: String,
    },
    /// The plugin implements another contract than the one asked for.
    #[error("plugin {plugin:?} is of type {kind:?}, not {expected:?}")]
    WrongContract {
        /// The plugin.
        plugin: String,
        /// Its type.
        kind: String,
        /// The contract asked for.
        expected: &'static str,
    },
    /// The plugin cannot take calls in its current status.
    #[error("plugin {plugin:?} is {status} and cannot take calls: {reason}")]
    NotAvailable {
        /// The plugin.
        plugin: String,
        /// Its status.
        status: String,
        /// Why it has that status.
        reason: String,
    },
    /// The plugin is not signed and the policy requires a signature; it was not executed.
    #[error(
        "plugin {plugin:?} is not signed and unsigned plugins are not allowed; sign it with `plugsconc sign {dir}`, or add it to the unsigned allow-list (`security.unsigned_allowed`, `--unsigned {plugin}`), or allow unsigned plugins (development only)",
        dir = dir.display()
    )]
    Unsigned {
        /// The plugin.
        plugin: String,
        /// Its folder.
        dir: PathBuf,
    },
    /// The signature file cannot be read or is not a plugsconc minisign signature; the plugin
    /// was not executed.
    #[error("plugin {plugin:?}: signature {path} refused: {reason}")]
    Signature {
        /// The plugin.
        plugin: String,
        /// The signature file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The plugin's OS sandbox could not be prepared, or is required and incomplete on this
    /// kernel; the plugin was not executed.
    #[error("plugin {plugin:?}: sandbox: {reason}")]
    Sandbox {
        /// The plugin.
        plugin: String,
        /// What failed or is missing.
        reason: String,
    },
    /// The plugin's configuration file (in the registry's `config_dir`) cannot be read or is
    /// not a YAML mapping; the plugin was not started.
    #[error("plugin {plugin:?}: configuration file {}: {reason}", path.display())]
    PluginConfig {
        /// The plugin.
        plugin: String,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A key file cannot be read, parsed or written.
    #[error("key file {path}: {reason}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A plugin could not be installed or removed; nothing was changed.
    #[error("cannot install {source_path}: {reason}")]
    Install {
        /// The folder or bundle.
        source_path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A security scanner refused a plugin folder; it was not installed or not executed.
    #[error("plugin {plugin:?}: the security scanner `{command}` refused it: {reason}{}", scan_output(.output))]
    ScanRefused {
        /// The plugin.
        plugin: String,
        /// The scanner's command line.
        command: String,
        /// How it refused: its exit status, the timeout, or why it could not run.
        reason: String,
        /// The last bytes of its output, trimmed.
        output: String,
    },
    /// A configured scanner command line cannot be used.
    #[error("security scanner {line:?}: {reason}")]
    ScanCommand {
        /// The command line.
        line: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A bundle goes over one of the install caps; nothing was installed.
    #[error("cannot install {source_path}: {reason}")]
    BundleTooLarge {
        /// The bundle.
        source_path: PathBuf,
        /// The cap it went over.
        limit: BundleLimit,
        /// By how much, in words.
        reason: String,
    },
    /// The plugins folder cannot be watched.
    #[error("cannot watch the plugins folder {path}: {reason}")]
    Watch {
        /// The folder.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The checksum sidecar of an entry point is missing or malformed.
    #[error(
        "plugin {plugin:?}: {reason} ({path}); create it with `sha256sum {entrypoint} > {entrypoint}.sha256` in the plugin folder"
    )]
    Sidecar {
        /// The plugin.
        plugin: String,
        /// The sidecar file.
        path: PathBuf,
        /// The entry point's file name.
        entrypoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The plugin did not exit even after SIGKILL.
    #[error("plugin {plugin:?} (pid {pid}) did not exit after SIGKILL")]
    Unkillable {
        /// The plugin.
        plugin: String,
        /// Its pid.
        pid: u32,
    },
    /// The plugin is signed with a key no trusted publisher holds; it was not executed.
    #[error(
        "plugin {plugin:?}: {path} is signed with key {key_id}, which belongs to no trusted publisher (trusted: {trusted}); trust the publisher's .pub file if you trust them, or have the plugin signed with a trusted key"
    )]
    UntrustedKey {
        /// The plugin.
        plugin: String,
        /// The signature file.
        path: PathBuf,
        /// The signing key's id, as `minisign` prints it.
        key_id: String,
        /// The trusted publishers with their key ids, or `none`.
        trusted: String,
    },
    /// The signature does not verify with its publisher's key: the manifest or the signature was
    /// changed after signing; the plugin was not executed.
    #[error(
        "plugin {plugin:?}: {path} does not verify with {publisher}'s key ({reason}): manifest.yaml or the signature was changed after signing; refusing to run it (re-sign the folder if the change is intended)"
    )]
    BadSignature {
        /// The plugin.
        plugin: String,
        /// The signature file.
        path: PathBuf,
        /// The trusted publisher whose key id the signature names.
        publisher: String,
        /// What minisign found wrong.
        reason: String,
    },
    /// A valid signature made for another plugin (its trusted comment names another plugin,
    /// version or entry point); the plugin was not executed.
    #[error(
        "plugin {plugin:?}: {path} was made for {field} {signed:?}, but this plugin's is {actual:?}; sign this folder itself"
    )]
    SignedForOther {
        /// The plugin.
        plugin: String,
        /// The signature file.
        path: PathBuf,
        /// What differs: `plugin`, `version` or `entrypoint`.
        field: &'static str,
        /// The value in the signature.
        signed: String,
        /// The value in the manifest.
        actual: String,
    },
    /// The binary is not the one that was signed: it was replaced after signing; it was not
    /// executed.
    #[error(
        "plugin {plugin:?}: {path} has SHA-256 {actual}, but its signature was made for {signed}: the binary was replaced after signing; refusing to run it (if the new binary is intended, re-sign the folder with `plugsconc sign`)"
    )]
    SignedBinaryMismatch {
        /// The plugin.
        plugin: String,
        /// Its binary.
        path: PathBuf,
        /// The hash in the signature.
        signed: String,
        /// The hash of the binary that would run.
        actual: String,
    },
    /// A plugin folder cannot be signed.
    #[error("cannot sign plugin {plugin:?}: {path}: {reason}")]
    Sign {
        /// The plugin (its folder's name when the manifest is unreadable).
        plugin: String,
        /// The file at fault.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The install cap a bundle went over ([`HostError::BundleTooLarge`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BundleLimit {
    /// The bytes it unpacks to.
    UnpackedBytes,
    /// The files and folders it holds.
    Files,
    /// How much larger it unpacks than it is compressed.
    Ratio,
}

impl HostError {
    /// A failed connection to `plugin`: [`HostError::Impersonation`] when the address belongs
    /// to another process, else [`HostError::Connect`].
    pub(crate) fn connect(
        plugin: &str,
        source: plugsconc_transport::TransportError,
        tail: StderrTail,
    ) -> Self {
        match source {
            plugsconc_transport::TransportError::ForeignPeer(peer) => HostError::Impersonation {
                plugin: plugin.to_owned(),
                owner: peer.found.clone(),
                peer,
                tail,
            },
            cause => HostError::Connect {
                plugin: plugin.to_owned(),
                cause,
                tail,
            },
        }
    }

    /// The plugin itself was refused by an integrity or trust check (checksum, sidecar,
    /// signature policy, install validation): something its publisher or the operator must
    /// fix, as opposed to the host failing.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            HostError::ChecksumMismatch { .. }
                | HostError::ChecksumSyntax { .. }
                | HostError::Sidecar { .. }
                | HostError::Install { .. }
                | HostError::BundleTooLarge { .. }
                | HostError::Unsigned { .. }
                | HostError::Signature { .. }
                | HostError::UntrustedKey { .. }
                | HostError::BadSignature { .. }
                | HostError::SignedForOther { .. }
                | HostError::SignedBinaryMismatch { .. }
                | HostError::ScanRefused { .. }
        )
    }

    /// A start failure that may not happen again: the process died or was killed before it was
    /// ready, did not answer in time, or could not be executed for want of a resource. A
    /// supervised plugin is retried with backoff after these; anything else (a refused
    /// binary, a wrong handshake, a bad configuration) fails it at once.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            HostError::ExitedBeforeHandshake { .. }
                | HostError::HandshakeTimeout { .. }
                | HostError::Connect { .. }
                | HostError::Unhealthy { .. }
                | HostError::Spawn { .. }
                | HostError::ChecksumRead { .. }
        )
    }
}

/// A scanner's output, rendered after the refusal.
fn scan_output(output: &str) -> String {
    if output.is_empty() {
        "; it printed nothing".to_owned()
    } else {
        format!("; its output:\n{output}")
    }
}

/// The last stderr lines of a plugin, rendered after an error message.
#[derive(Debug, Clone, Default)]
pub struct StderrTail(pub Vec<String>);

impl std::fmt::Display for StderrTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("; it wrote nothing on stderr");
        }
        f.write_str("; last stderr lines:")?;
        for line in &self.0 {
            write!(f, "\n    {line}")?;
        }
        Ok(())
    }
}

/// Renders an exit status for messages.
pub(crate) fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    }
}

/// What became of a plugin the host gave up on: `before` is its status when the host decided to
/// stop it, `after` once it was sent SIGKILL.
pub(crate) fn describe_stop(before: Option<ExitStatus>, after: Option<ExitStatus>) -> String {
    match (before, after) {
        (Some(status), _) => format!("it had already exited ({})", describe_status(status)),
        (None, Some(_)) => "the plugin was killed".to_owned(),
        (None, None) => "the plugin was sent SIGKILL but has not exited yet".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt as _;

    use super::*;

    #[test]
    fn stop_descriptions_say_what_happened() {
        let exited = ExitStatus::from_raw(3 << 8);
        let killed = ExitStatus::from_raw(libc::SIGKILL);
        assert_eq!(describe_status(exited), "exit status 3");
        assert_eq!(describe_status(killed), "killed by signal 9");
        assert_eq!(
            describe_stop(Some(exited), Some(exited)),
            "it had already exited (exit status 3)"
        );
        assert_eq!(describe_stop(None, Some(killed)), "the plugin was killed");
        assert!(describe_stop(None, None).contains("has not exited"));
        let closed = HostError::StdoutClosed {
            plugin: "p".into(),
            tail: StderrTail::default(),
        }
        .to_string();
        assert!(
            closed.contains("closed its stdout") && closed.contains("still running"),
            "{closed}"
        );
        assert!(!closed.contains("exited"), "{closed}");
    }

    /// The error and its causes as anyhow's `{:#}` prints them.
    fn chain(err: &dyn std::error::Error) -> String {
        let mut text = err.to_string();
        let mut cause = err.source();
        while let Some(err) = cause {
            text = format!("{text}: {err}");
            cause = err.source();
        }
        text
    }

    #[test]
    fn causes_are_printed_once() {
        let refused = "connection refused by the test";
        let transport = plugsconc_transport::TransportError::ListenUnix {
            dir: PathBuf::from("/run/plugins"),
            cause: std::io::Error::other(refused),
        };
        let err = HostError::connect("kv", transport, StderrTail::default());
        assert!(matches!(err, HostError::Connect { .. }), "{err:?}");
        assert!(err.to_string().contains(refused), "{err}");
        assert_eq!(chain(&err).matches(refused).count(), 1, "{}", chain(&err));
        assert_eq!(
            chain(&err).matches("/run/plugins").count(),
            1,
            "{}",
            chain(&err)
        );

        let err = HostError::Spawn {
            plugin: "kv".into(),
            path: PathBuf::from("/plugins/kv/kv"),
            cause: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied).to_string();
        assert!(err.to_string().contains(&denied), "{err}");
        assert_eq!(chain(&err).matches(&denied).count(), 1, "{}", chain(&err));
    }
}
