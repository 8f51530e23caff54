//! The environment contract between a go-plugin host and its plugin.
//!
//! The host sets the magic cookie, the protocol versions it accepts, a TCP port range, its
//! AutoMTLS certificate and unix socket options; the plugin reads them, checks the cookie and
//! picks a version. Both directions are pure functions over key/value pairs so they can be tested
//! without touching the process environment.

use crate::ProtocolError;
use crate::handshake::parse_go_bool;

/// Comma-separated application protocol versions the host accepts.
pub const PROTOCOL_VERSIONS: &str = "PLUGIN_PROTOCOL_VERSIONS";
/// Lowest TCP port a plugin may bind.
pub const MIN_PORT: &str = "PLUGIN_MIN_PORT";
/// Highest TCP port a plugin may bind.
pub const MAX_PORT: &str = "PLUGIN_MAX_PORT";
/// PEM certificate of the host; its presence asks the plugin for AutoMTLS.
pub const CLIENT_CERT: &str = "PLUGIN_CLIENT_CERT";
/// Folder in which the plugin creates its unix sockets.
pub const UNIX_SOCKET_DIR: &str = "PLUGIN_UNIX_SOCKET_DIR";
/// Group (name or gid) that should own the plugin's unix sockets (mode 0660).
pub const UNIX_SOCKET_GROUP: &str = "PLUGIN_UNIX_SOCKET_GROUP";
/// Asks for broker multiplexing over one connection (go-plugin 1.6+).
pub const MULTIPLEX_GRPC: &str = "PLUGIN_MULTIPLEX_GRPC";
/// Not part of go-plugin: asks a plugsconc plugin to listen on TCP instead of a unix socket.
pub const TRANSPORT: &str = "PLUGSCONC_TRANSPORT";
/// Not part of go-plugin: tells a plugsconc plugin which curve its AutoMTLS key may use (`p256` or
/// `p521`); a plugsconc host sets `p256` because the peer is known to accept it.
pub const AUTOMTLS_CURVE: &str = "PLUGSCONC_AUTOMTLS_CURVE";
/// The manifest's `config` section, as a JSON object, given to the plugin at start.
pub const PLUGIN_CONFIG: &str = "PLUGSCONC_PLUGIN_CONFIG";
/// plugsconc: the plugin's private, persistent read-write folder when the host gives it one.
pub const PLUGIN_DATA_DIR: &str = "PLUGSCONC_DATA_DIR";
/// plugsconc: the broker id under which the host serves the host services to this plugin.
pub const HOST_SERVICES: &str = "PLUGSCONC_HOST_SERVICES";

/// go-plugin hosts default to this port range when none is configured.
pub const DEFAULT_PORT_RANGE: PortRange = PortRange {
    min: 10_000,
    max: 25_000,
};

/// What a plugin prints on stderr when started without its cookie (go-plugin's wording, so
/// users searching for it find the same explanation).
pub const NOT_A_PLUGIN_MESSAGE: &str = "This binary is a plugin. These are not meant to be executed directly.\n\
Please execute the program that consumes these plugins, which will\n\
load any plugins automatically\n";

/// The cookie and version that both sides must agree on before anything else happens. The cookie
/// is a UX guard against running a plugin by hand, not a security feature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeConfig {
    /// Application protocol version (bump it when the contract breaks).
    pub protocol_version: u32,
    /// Name of the cookie environment variable.
    pub magic_cookie_key: String,
    /// Its expected value.
    pub magic_cookie_value: String,
}

impl HandshakeConfig {
    /// A handshake config with one protocol version.
    pub fn new(protocol_version: u32, key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            protocol_version,
            magic_cookie_key: key.into(),
            magic_cookie_value: value.into(),
        }
    }
}

/// An inclusive TCP port range; `0..=0` (the default) means "any free port".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PortRange {
    /// Lowest port.
    pub min: u16,
    /// Highest port.
    pub max: u16,
}

/// Which transport the plugin should listen on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// A unix socket (go-plugin's choice on every OS but Windows).
    #[default]
    Unix,
    /// Loopback TCP within the port range.
    Tcp,
}

/// Everything a plugin learns from its environment, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginEnv {
    /// Versions the host accepts; empty when the host did not say.
    pub host_versions: Vec<u32>,
    /// Items of `PLUGIN_PROTOCOL_VERSIONS` that were not numbers (go-plugin skips them too).
    pub invalid_versions: Vec<String>,
    /// Ports the plugin may bind on TCP.
    pub port_range: PortRange,
    /// The host's PEM certificate: present means AutoMTLS.
    pub client_cert_pem: Option<String>,
    /// Where to put unix sockets (else the temp dir).
    pub unix_socket_dir: Option<String>,
    /// Group owning the unix sockets.
    pub unix_socket_group: Option<String>,
    /// The host asked for multiplexing (the value parsed as true).
    pub multiplex_requested: bool,
    /// The variable was set at all: go-plugin prints field 7 whenever it is non-empty.
    pub multiplex_field: bool,
    /// TCP or unix socket.
    pub transport: Transport,
}

impl PluginEnv {
    /// Reads the environment a host gave the plugin, checking the cookie first.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::CookieMismatch`] when the binary was not started by a host, and
    /// [`ProtocolError::InvalidEnv`] for a malformed port range.
    pub fn from_vars<K, V>(
        vars: impl IntoIterator<Item = (K, V)>,
        handshake: &HandshakeConfig,
    ) -> Result<Self, ProtocolError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut cookie = None;
        let mut env = PluginEnv {
            host_versions: Vec::new(),
            invalid_versions: Vec::new(),
            port_range: PortRange { min: 0, max: 0 },
            client_cert_pem: None,
            unix_socket_dir: None,
            unix_socket_group: None,
            multiplex_requested: false,
            multiplex_field: false,
            transport: Transport::Unix,
        };
        let mut min_port = None;
        let mut max_port = None;
        for (key, value) in vars {
            let (key, value) = (key.as_ref(), value.as_ref());
            if key == handshake.magic_cookie_key {
                cookie = Some(value.to_owned());
            }
            match key {
                PROTOCOL_VERSIONS => {
                    let (ok, bad) = parse_protocol_versions(value);
                    env.host_versions = ok;
                    env.invalid_versions = bad;
                }
                MIN_PORT => min_port = Some(parse_port(MIN_PORT, value)?),
                MAX_PORT => max_port = Some(parse_port(MAX_PORT, value)?),
                CLIENT_CERT if !value.is_empty() => env.client_cert_pem = Some(value.to_owned()),
                UNIX_SOCKET_DIR if !value.is_empty() => {
                    env.unix_socket_dir = Some(value.to_owned());
                }
                UNIX_SOCKET_GROUP if !value.is_empty() => {
                    env.unix_socket_group = Some(value.to_owned());
                }
                MULTIPLEX_GRPC => {
                    env.multiplex_field = !value.is_empty();
                    env.multiplex_requested = parse_go_bool(value).unwrap_or(false);
                }
                TRANSPORT => {
                    env.transport = match value {
                        "tcp" => Transport::Tcp,
                        "unix" | "" => Transport::Unix,
                        _ => {
                            return Err(ProtocolError::InvalidEnv {
                                var: TRANSPORT,
                                value: value.to_owned(),
                                expected: "expected `unix` or `tcp`",
                            });
                        }
                    }
                }
                _ => {}
            }
        }
        if cookie.as_deref() != Some(handshake.magic_cookie_value.as_str()) {
            return Err(ProtocolError::CookieMismatch {
                key: handshake.magic_cookie_key.clone(),
                found: cookie,
            });
        }
        let (min, max) = (min_port.unwrap_or(0), max_port.unwrap_or(0));
        if min > max {
            return Err(ProtocolError::InvalidEnv {
                var: MIN_PORT,
                value: min.to_string(),
                expected: "expected PLUGIN_MIN_PORT <= PLUGIN_MAX_PORT",
            });
        }
        env.port_range = PortRange { min, max };
        Ok(env)
    }
}

fn parse_port(var: &'static str, value: &str) -> Result<u16, ProtocolError> {
    if value.is_empty() {
        return Ok(0);
    }
    value.parse().map_err(|_| ProtocolError::InvalidEnv {
        var,
        value: value.to_owned(),
        expected: "expected a port number 0-65535",
    })
}

/// Splits `PLUGIN_PROTOCOL_VERSIONS` into the valid versions and the items that were not.
pub fn parse_protocol_versions(value: &str) -> (Vec<u32>, Vec<String>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for item in value.split(',').filter(|item| !item.is_empty()) {
        match item.trim().parse() {
            Ok(version) => ok.push(version),
            Err(_) => bad.push(item.to_owned()),
        }
    }
    (ok, bad)
}

/// Outcome of the plugin-side version negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Negotiated {
    /// The highest version both sides support.
    Agreed(u32),
    /// No common version: the plugin answers with its lowest and lets the host refuse it, exactly
    /// as a Go plugin does, so the host reports "incompatible API version".
    Fallback(u32),
}

impl Negotiated {
    /// The version to print in the handshake line.
    pub fn version(self) -> u32 {
        match self {
            Negotiated::Agreed(v) | Negotiated::Fallback(v) => v,
        }
    }
}

/// Picks the plugin's highest version the host also accepts, else its lowest.
///
/// Returns `None` only when the plugin offers no version at all.
pub fn negotiate(host_versions: &[u32], plugin_versions: &[u32]) -> Option<Negotiated> {
    let mut mine = plugin_versions.to_vec();
    mine.sort_unstable();
    mine.dedup();
    let lowest = *mine.first()?;
    Some(
        mine.iter()
            .rev()
            .find(|v| host_versions.contains(v))
            .map_or(Negotiated::Fallback(lowest), |v| Negotiated::Agreed(*v)),
    )
}

/// What the host puts in a plugin's environment, in go-plugin's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEnv {
    /// Cookie and versions.
    pub handshake: HandshakeConfig,
    /// Every version the host accepts (the handshake's one is used when empty).
    pub versions: Vec<u32>,
    /// TCP port range for the plugin's listeners.
    pub port_range: PortRange,
    /// PEM of the host's AutoMTLS certificate.
    pub client_cert_pem: Option<String>,
    /// Unix socket folder.
    pub unix_socket_dir: Option<String>,
    /// Unix socket group.
    pub unix_socket_group: Option<String>,
    /// Ask a plugsconc plugin to listen on TCP (ignored by Go plugins).
    pub transport: Transport,
}

impl HostEnv {
    /// The go-plugin variables; appended after the caller's own variables so they win.
    pub fn vars(&self) -> Vec<(String, String)> {
        let versions = if self.versions.is_empty() {
            vec![self.handshake.protocol_version]
        } else {
            self.versions.clone()
        };
        let mut vars = vec![
            (
                self.handshake.magic_cookie_key.clone(),
                self.handshake.magic_cookie_value.clone(),
            ),
            (MIN_PORT.to_owned(), self.port_range.min.to_string()),
            (MAX_PORT.to_owned(), self.port_range.max.to_string()),
            (
                PROTOCOL_VERSIONS.to_owned(),
                versions
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        ];
        if let Some(pem) = &self.client_cert_pem {
            vars.push((CLIENT_CERT.to_owned(), pem.clone()));
        }
        if let Some(dir) = &self.unix_socket_dir {
            vars.push((UNIX_SOCKET_DIR.to_owned(), dir.clone()));
        }
        if let Some(group) = &self.unix_socket_group {
            vars.push((UNIX_SOCKET_GROUP.to_owned(), group.clone()));
        }
        if self.transport == Transport::Tcp {
            vars.push((TRANSPORT.to_owned(), "tcp".to_owned()));
        }
        vars
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv() -> HandshakeConfig {
        HandshakeConfig::new(1, "BASIC_PLUGIN", "hello")
    }

    #[test]
    fn cookie_must_match_exactly() {
        let ok = PluginEnv::from_vars([("BASIC_PLUGIN", "hello")], &kv());
        assert!(ok.is_ok());
        let missing = PluginEnv::from_vars(Vec::<(&str, &str)>::new(), &kv()).unwrap_err();
        assert!(matches!(
            missing,
            ProtocolError::CookieMismatch { found: None, .. }
        ));
        let wrong = PluginEnv::from_vars([("BASIC_PLUGIN", "hello ")], &kv()).unwrap_err();
        assert!(matches!(
            wrong,
            ProtocolError::CookieMismatch { found: Some(_), .. }
        ));
    }

    #[test]
    fn reads_every_variable() {
        let env = PluginEnv::from_vars(
            [
                ("BASIC_PLUGIN", "hello"),
                (PROTOCOL_VERSIONS, "3,x,1"),
                (MIN_PORT, "10000"),
                (MAX_PORT, "25000"),
                (CLIENT_CERT, "-----BEGIN CERTIFICATE-----\n..."),
                (UNIX_SOCKET_DIR, "/run/p"),
                (UNIX_SOCKET_GROUP, "plugins"),
                (MULTIPLEX_GRPC, "true"),
                (TRANSPORT, "tcp"),
            ],
            &kv(),
        )
        .unwrap();
        assert_eq!(env.host_versions, vec![3, 1]);
        assert_eq!(env.invalid_versions, vec!["x".to_owned()]);
        assert_eq!(
            env.port_range,
            PortRange {
                min: 10_000,
                max: 25_000
            }
        );
        assert!(env.client_cert_pem.is_some());
        assert_eq!(env.unix_socket_dir.as_deref(), Some("/run/p"));
        assert_eq!(env.unix_socket_group.as_deref(), Some("plugins"));
        assert!(env.multiplex_requested && env.multiplex_field);
        assert_eq!(env.transport, Transport::Tcp);
    }

    #[test]
    fn multiplex_field_follows_go_semantics() {
        let env = PluginEnv::from_vars([("BASIC_PLUGIN", "hello"), (MULTIPLEX_GRPC, "no")], &kv())
            .unwrap();
        // Non-empty but not true: Go prints field 7 yet does not multiplex.
        assert!(env.multiplex_field);
        assert!(!env.multiplex_requested);
    }

    #[test]
    fn port_range_is_checked() {
        let inverted = PluginEnv::from_vars(
            [("BASIC_PLUGIN", "hello"), (MIN_PORT, "2"), (MAX_PORT, "1")],
            &kv(),
        )
        .unwrap_err();
        assert!(
            inverted
                .to_string()
                .contains("PLUGIN_MIN_PORT <= PLUGIN_MAX_PORT")
        );
        let junk = PluginEnv::from_vars([("BASIC_PLUGIN", "hello"), (MAX_PORT, "99999")], &kv())
            .unwrap_err();
        assert!(junk.to_string().contains("PLUGIN_MAX_PORT"));
        let bad_transport =
            PluginEnv::from_vars([("BASIC_PLUGIN", "hello"), (TRANSPORT, "udp")], &kv());
        assert!(bad_transport.is_err());
    }

    #[test]
    fn negotiation_picks_highest_common_else_lowest() {
        assert_eq!(
            negotiate(&[1, 2, 3], &[2, 3, 4]),
            Some(Negotiated::Agreed(3))
        );
        assert_eq!(negotiate(&[1], &[1]), Some(Negotiated::Agreed(1)));
        assert_eq!(negotiate(&[5], &[3, 2]), Some(Negotiated::Fallback(2)));
        assert_eq!(negotiate(&[], &[2, 1]), Some(Negotiated::Fallback(1)));
        assert_eq!(negotiate(&[1], &[]), None);
        assert_eq!(Negotiated::Fallback(7).version(), 7);
    }

    #[test]
    fn parses_version_lists() {
        assert_eq!(parse_protocol_versions(""), (vec![], vec![]));
        assert_eq!(parse_protocol_versions("1,2"), (vec![1, 2], vec![]));
        assert_eq!(
            parse_protocol_versions("1,,-1,a"),
            (vec![1], vec!["-1".to_owned(), "a".to_owned()])
        );
    }

    #[test]
    fn host_env_round_trips_through_plugin_env() {
        let host = HostEnv {
            handshake: kv(),
            versions: vec![1, 2],
            port_range: DEFAULT_PORT_RANGE,
            client_cert_pem: Some("PEM".to_owned()),
            unix_socket_dir: Some("/d".to_owned()),
            unix_socket_group: None,
            transport: Transport::Unix,
        };
        let vars = host.vars();
        assert_eq!(vars[0], ("BASIC_PLUGIN".to_owned(), "hello".to_owned()));
        let plugin = PluginEnv::from_vars(vars, &kv()).unwrap();
        assert_eq!(plugin.host_versions, vec![1, 2]);
        assert_eq!(plugin.port_range, DEFAULT_PORT_RANGE);
        assert_eq!(plugin.client_cert_pem.as_deref(), Some("PEM"));
        assert_eq!(plugin.unix_socket_dir.as_deref(), Some("/d"));
        assert!(!plugin.multiplex_field);
    }

    #[test]
    fn host_env_defaults_versions_to_the_handshake_one() {
        let host = HostEnv {
            handshake: HandshakeConfig::new(4, "K", "V"),
            versions: vec![],
            port_range: PortRange { min: 0, max: 0 },
            client_cert_pem: None,
            unix_socket_dir: None,
            unix_socket_group: None,
            transport: Transport::Tcp,
        };
        let vars = host.vars();
        assert!(vars.contains(&(PROTOCOL_VERSIONS.to_owned(), "4".to_owned())));
        assert!(vars.contains(&(TRANSPORT.to_owned(), "tcp".to_owned())));
    }
}
