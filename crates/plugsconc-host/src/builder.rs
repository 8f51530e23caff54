//! [`ClientBuilder`]: the configuration of one plugin launch — binary, arguments, environment,
//! handshake, versions, AutoMTLS, checksum, timeouts, sandbox — and its validation. Running it is
//! the `launch` module's job.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use plugsconc_protocol::env::{HandshakeConfig, Transport};
use plugsconc_protocol::mtls::Curve;

use crate::HostError;
use crate::checksum::Sha256;
use crate::ledger::Ledger;
use crate::sandbox::SandboxSpec;

/// How to launch one plugin. Defaults follow go-plugin: 60 s start timeout, 2 s kill grace,
/// unix socket, no AutoMTLS, host environment passed through.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    pub(crate) name: String,
    pub(crate) path: PathBuf,
    pub(crate) args: Vec<OsString>,
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) handshake: HandshakeConfig,
    pub(crate) versions: Vec<u32>,
    pub(crate) auto_mtls: bool,
    pub(crate) curve: Curve,
    pub(crate) sha256: Option<String>,
    pub(crate) start_timeout: Duration,
    pub(crate) kill_grace: Duration,
    pub(crate) transport: Transport,
    pub(crate) skip_host_env: bool,
    pub(crate) sandbox: Option<SandboxSpec>,
    pub(crate) call_timeout: Option<Duration>,
    pub(crate) ledger: Option<Ledger>,
}

impl ClientBuilder {
    pub(crate) fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            path: path.into(),
            args: Vec::new(),
            env: Vec::new(),
            handshake: HandshakeConfig::new(1, "", ""),
            versions: Vec::new(),
            auto_mtls: false,
            curve: Curve::P256,
            sha256: None,
            start_timeout: Duration::from_secs(60),
            kill_grace: Duration::from_secs(2),
            transport: Transport::Unix,
            skip_host_env: false,
            sandbox: None,
            call_timeout: None,
            ledger: None,
        }
    }

    /// Arguments passed to the plugin.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// An environment variable for the plugin (the go-plugin variables always win).
    #[must_use]
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Cookie and protocol version (required: go-plugin plugins refuse to start without them).
    #[must_use]
    pub fn handshake(mut self, handshake: HandshakeConfig) -> Self {
        self.handshake = handshake;
        self
    }

    /// Every application protocol version the host accepts (default: the handshake's).
    #[must_use]
    pub fn versions(mut self, versions: impl IntoIterator<Item = u32>) -> Self {
        self.versions = versions.into_iter().collect();
        self
    }

    /// Mutual TLS with per-process certificates, as go-plugin's AutoMTLS.
    #[must_use]
    pub fn auto_mtls(mut self, on: bool) -> Self {
        self.auto_mtls = on;
        self
    }

    /// Curve of the host's AutoMTLS certificate (made once per process); P-256 by default, which
    /// Go plugins accept and which is far cheaper to generate than go-plugin's P-521.
    #[must_use]
    pub fn curve(mut self, curve: Curve) -> Self {
        self.curve = curve;
        self
    }

    /// The binary's required SHA-256 (hex); checked before every exec, and a mismatch is never
    /// executed.
    #[must_use]
    pub fn sha256(mut self, hex: impl Into<String>) -> Self {
        self.sha256 = Some(hex.into());
        self
    }

    /// Bound on spawn + handshake + connect + health check.
    #[must_use]
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// How long a plugin may take to exit after `Shutdown` before it is killed.
    #[must_use]
    pub fn kill_grace(mut self, grace: Duration) -> Self {
        self.kill_grace = grace;
        self
    }

    /// Ask a plugsconc plugin for TCP instead of a unix socket (Go plugins ignore it).
    #[must_use]
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Do not pass the host's own environment to the plugin.
    #[must_use]
    pub fn skip_host_env(mut self, skip: bool) -> Self {
        self.skip_host_env = skip;
        self
    }

    /// Confines the plugin in an OS sandbox derived from `spec` (Linux: Landlock, seccomp,
    /// rlimits, `no_new_privs`), applied between fork and exec.
    /// [`PluginClient::protections`](crate::PluginClient::protections) then says what is in
    /// force.
    #[must_use]
    pub fn sandbox(mut self, spec: SandboxSpec) -> Self {
        self.sandbox = Some(spec);
        self
    }

    /// Bound on each call made through
    /// [`PluginClient::call_channel`](crate::PluginClient::call_channel): a call still running
    /// after `limit` is cancelled (the plugin sees its request cancelled).
    #[must_use]
    pub fn call_timeout(mut self, limit: Option<Duration>) -> Self {
        self.call_timeout = limit;
        self
    }

    /// Records the launch (process, socket folder, cgroup) in `ledger` while it runs.
    pub(crate) fn ledger(mut self, ledger: Ledger) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// Checks what the setters could not: the checksum's syntax, and the accepted versions
    /// (the handshake's when none were given).
    ///
    /// # Errors
    ///
    /// [`HostError::ChecksumSyntax`] when the configured SHA-256 is not 64 hex digits.
    pub(crate) fn validate(&self) -> Result<Checked, HostError> {
        let versions = if self.versions.is_empty() {
            vec![self.handshake.protocol_version]
        } else {
            self.versions.clone()
        };
        let sha256 = self
            .sha256
            .as_deref()
            .map(|hex| {
                Sha256::from_hex(hex).ok_or_else(|| HostError::ChecksumSyntax {
                    plugin: self.name.clone(),
                    value: hex.to_owned(),
                })
            })
            .transpose()?;
        Ok(Checked { versions, sha256 })
    }
}

/// What [`ClientBuilder::validate`] derived from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Checked {
    /// The application protocol versions the host accepts; never empty.
    pub(crate) versions: Vec<u32>,
    /// The binary's required hash, parsed.
    pub(crate) sha256: Option<Sha256>,
}
