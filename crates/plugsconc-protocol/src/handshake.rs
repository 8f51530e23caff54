//! The handshake line a plugin prints on stdout once it listens, and the host parses.
//!
//! `CORE|APP|NETWORK|ADDRESS|PROTOCOL|CERT[|MUX]`, e.g. `1|1|unix|/tmp/plugin1234|grpc|`.
//! Field 6 is always printed (empty without AutoMTLS), as go-plugin does; field 7 only when the
//! host set `PLUGIN_MULTIPLEX_GRPC`, because hosts older than go-plugin 1.6 split the line into at
//! most 6 fields and would glue a 7th onto the certificate.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;

use crate::ProtocolError;

/// The core protocol version; go-plugin has only ever had version 1.
pub const CORE_PROTOCOL_VERSION: u32 = 1;

/// go-plugin only treats field 6 as a certificate when it is longer than this, to ignore junk
/// some old non-Go plugins printed there.
const MIN_CERT_FIELD_LEN: usize = 50;

/// The most a handshake line may hold before its newline. go-plugin's scanner stops at 64 KiB
/// too; a host reads no further, so a plugin cannot make it buffer more.
pub const MAX_LINE: usize = 64 * 1024;

/// The longest address accepted: far above a unix socket path (108 bytes) or a `host:port`.
const MAX_ADDRESS: usize = 1024;

/// The transport a plugin listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Network {
    /// A unix domain socket; the address is its path.
    Unix,
    /// TCP; the address is `host:port`.
    Tcp,
}

impl Network {
    /// The word used on the wire (Go's `net.Addr.Network()`).
    pub fn as_str(self) -> &'static str {
        match self {
            Network::Unix => "unix",
            Network::Tcp => "tcp",
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The RPC protocol a plugin serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// gRPC over HTTP/2: the only protocol plugsconc speaks.
    Grpc,
    /// Go's net/rpc over yamux: recognised so the host can refuse it with a clear error.
    NetRpc,
}

impl Protocol {
    /// The word used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::NetRpc => "netrpc",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One parsed or to-be-printed handshake line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeLine {
    /// Field 1: always [`CORE_PROTOCOL_VERSION`] for a valid plugin.
    pub core_version: u32,
    /// Field 2: the negotiated application protocol version.
    pub app_version: u32,
    /// Field 3.
    pub network: Network,
    /// Field 4: socket path or `host:port`.
    pub address: String,
    /// Field 5 (missing means net/rpc, as in go-plugin).
    pub protocol: Protocol,
    /// Field 6: the DER of the plugin's AutoMTLS certificate.
    pub server_cert: Option<Vec<u8>>,
    /// Field 7: whether the plugin supports broker multiplexing; `None` when not printed.
    pub mux: Option<bool>,
}

impl HandshakeLine {
    /// A gRPC handshake line without certificate or multiplexing field.
    pub fn grpc(app_version: u32, network: Network, address: impl Into<String>) -> Self {
        Self {
            core_version: CORE_PROTOCOL_VERSION,
            app_version,
            network,
            address: address.into(),
            protocol: Protocol::Grpc,
            server_cert: None,
            mux: None,
        }
    }

    /// Parses a line the way a current go-plugin host does: whitespace trimmed, at least 4 fields,
    /// field 6 decoded as unpadded standard base64 when longer than 50 characters.
    ///
    /// # Errors
    ///
    /// [`ProtocolError`] naming the field that is wrong and what it should look like.
    pub fn parse(line: &str) -> Result<Self, ProtocolError> {
        let trimmed = line.trim();
        let fields: Vec<&str> = trimmed.split('|').collect();
        if fields.len() < 4 {
            return Err(ProtocolError::TooFewFields {
                line: trimmed.into(),
                found: fields.len(),
            });
        }
        let core_version = parse_number("core protocol version", fields[0])?;
        if core_version != CORE_PROTOCOL_VERSION {
            return Err(ProtocolError::CoreVersion {
                found: core_version,
            });
        }
        let app_version = parse_number("app protocol version", fields[1])?;
        let network = match fields[2] {
            "unix" => Network::Unix,
            "tcp" => Network::Tcp,
            other => {
                return Err(ProtocolError::UnknownNetwork {
                    value: other.into(),
                });
            }
        };
        if fields[3].len() > MAX_ADDRESS {
            return Err(ProtocolError::AddressTooLong {
                address: fields[3].into(),
                length: fields[3].len(),
                max: MAX_ADDRESS,
            });
        }
        let address = fields[3].to_owned();
        let protocol = match fields.get(4).copied() {
            None | Some("netrpc") => Protocol::NetRpc,
            Some("grpc") => Protocol::Grpc,
            Some(other) => {
                return Err(ProtocolError::UnknownProtocol {
                    value: other.into(),
                });
            }
        };
        let server_cert = match fields.get(5) {
            Some(cert) if cert.len() > MIN_CERT_FIELD_LEN => Some(decode_cert_field(cert)?),
            _ => None,
        };
        let mux = match fields.get(6) {
            None => None,
            Some(value) => Some(
                parse_go_bool(value).ok_or_else(|| ProtocolError::InvalidMux {
                    value: (*value).into(),
                })?,
            ),
        };
        Ok(Self {
            core_version,
            app_version,
            network,
            address,
            protocol,
            server_cert,
            mux,
        })
    }
}

/// Formats the line without its trailing newline: always 6 fields, a 7th when `mux` is set.
impl fmt::Display for HandshakeLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cert = self
            .server_cert
            .as_deref()
            .map(|der| STANDARD_NO_PAD.encode(der))
            .unwrap_or_default();
        write!(
            f,
            "{}|{}|{}|{}|{}|{}",
            self.core_version, self.app_version, self.network, self.address, self.protocol, cert
        )?;
        if let Some(mux) = self.mux {
            write!(f, "|{mux}")?;
        }
        Ok(())
    }
}

fn parse_number(field: &'static str, value: &str) -> Result<u32, ProtocolError> {
    value.parse().map_err(|_| ProtocolError::InvalidNumber {
        field,
        value: value.into(),
    })
}

/// Decodes handshake field 6: base64 with the standard alphabet and no padding, as Go's
/// `base64.RawStdEncoding` (padding breaks a Go host, so it is refused here as well).
///
/// # Errors
///
/// [`ProtocolError::InvalidCertificate`] when the text is not unpadded base64.
pub fn decode_cert_field(field: &str) -> Result<Vec<u8>, ProtocolError> {
    STANDARD_NO_PAD
        .decode(field)
        .map_err(|err| ProtocolError::InvalidCertificate {
            place: "handshake field 6",
            reason: format!("not unpadded standard base64: {err}"),
        })
}

/// Go's `strconv.ParseBool`: `1 t T TRUE true True 0 f F FALSE false False`.
pub fn parse_go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_plain_line_with_empty_cert_field() {
        let line = HandshakeLine::grpc(1, Network::Unix, "/tmp/plugin123");
        assert_eq!(line.to_string(), "1|1|unix|/tmp/plugin123|grpc|");
    }

    #[test]
    fn formats_cert_without_padding_and_mux_when_asked() {
        let mut line = HandshakeLine::grpc(3, Network::Tcp, "127.0.0.1:1234");
        line.server_cert = Some(vec![0xde, 0xad, 0xbe, 0xef]); // base64 "3q2+7w==" padded
        line.mux = Some(true);
        assert_eq!(line.to_string(), "1|3|tcp|127.0.0.1:1234|grpc|3q2+7w|true");
    }

    #[test]
    fn parses_go_plugin_lines() {
        let line = HandshakeLine::parse("1|1|unix|/tmp/plugin1234567|grpc|\n").unwrap();
        assert_eq!(
            line,
            HandshakeLine::grpc(1, Network::Unix, "/tmp/plugin1234567")
        );

        let python = HandshakeLine::parse("1|1|tcp|127.0.0.1:1234|grpc").unwrap();
        assert_eq!(python.network, Network::Tcp);
        assert_eq!(python.server_cert, None);
        assert_eq!(python.mux, None);

        let mux = HandshakeLine::parse("1|1|unix|/tmp/p|grpc||true").unwrap();
        assert_eq!(mux.mux, Some(true));
        let no_mux = HandshakeLine::parse("1|1|unix|/tmp/p|grpc||false").unwrap();
        assert_eq!(no_mux.mux, Some(false));
    }

    #[test]
    fn missing_protocol_means_netrpc() {
        let line = HandshakeLine::parse("1|2|tcp|:1234").unwrap();
        assert_eq!(line.protocol, Protocol::NetRpc);
        assert_eq!(line.app_version, 2);
        assert_eq!(line.address, ":1234");
    }

    #[test]
    fn round_trips_a_certificate() {
        let der: Vec<u8> = (0..=255u8).cycle().take(600).collect();
        let mut line = HandshakeLine::grpc(1, Network::Unix, "/s");
        line.server_cert = Some(der.clone());
        let parsed = HandshakeLine::parse(&line.to_string()).unwrap();
        assert_eq!(parsed.server_cert, Some(der));
    }

    #[test]
    fn short_cert_field_is_ignored_like_go() {
        let line = HandshakeLine::parse("1|1|unix|/s|grpc|junk").unwrap();
        assert_eq!(line.server_cert, None);
    }

    #[test]
    fn padded_cert_is_rejected() {
        let padded = format!("{}==", "A".repeat(62));
        let err = HandshakeLine::parse(&format!("1|1|unix|/s|grpc|{padded}")).unwrap_err();
        assert!(
            matches!(err, ProtocolError::InvalidCertificate { .. }),
            "{err}"
        );
    }

    #[test]
    fn rejects_malformed_lines_with_the_field_named() {
        let cases = [
            ("hello world", "at least 4"),
            ("1|1|unix", "at least 4"),
            ("x|1|unix|/s|grpc|", "core protocol version"),
            ("2|1|unix|/s|grpc|", "core protocol version 2"),
            ("1|v1|unix|/s|grpc|", "app protocol version"),
            ("1|1|udp|/s|grpc|", "`unix` or `tcp`"),
            ("1|1|unix|/s|http|", "`grpc` or `netrpc`"),
            ("1|1|unix|/s|grpc||maybe", "true or false"),
            (
                &format!("1|1|unix|/{}|grpc|", "s".repeat(5000)),
                "5001 bytes long",
            ),
            (
                &format!("{}|1|unix|/s|grpc|", "9".repeat(5000)),
                "(cut, 5000 bytes in all)",
            ),
        ];
        for (line, expected) in cases {
            let err = HandshakeLine::parse(line).unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{line:?}: {err:?} lacks {expected:?}"
            );
        }
    }

    #[test]
    fn go_bool_matches_strconv() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_go_bool(t), Some(true), "{t}");
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_go_bool(f), Some(false), "{f}");
        }
        for bad in ["", "yes", "tRUE", " true"] {
            assert_eq!(parse_go_bool(bad), None, "{bad}");
        }
    }
}

/// Properties over generated lines: parsing never panics, and a valid line round-trips.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Lines shaped like handshake lines, with each field sometimes wrong.
    fn lineish() -> impl Strategy<Value = String> {
        (
            "[0-9]{0,3}|1",
            "[0-9]{0,11}",
            "unix|tcp|udp|",
            "[^|]{0,30}",
            proptest::option::of("grpc|netrpc|http"),
            proptest::option::of("[A-Za-z0-9+/=]{0,90}"),
            proptest::option::of("true|false|1|0|maybe"),
        )
            .prop_map(|(core, app, net, address, protocol, cert, mux)| {
                let mut line = format!("{core}|{app}|{net}|{address}");
                for field in [protocol, cert, mux].into_iter().flatten() {
                    line.push('|');
                    line.push_str(&field);
                }
                line
            })
    }

    fn valid() -> impl Strategy<Value = HandshakeLine> {
        (
            any::<u32>(),
            prop_oneof![Just(Network::Unix), Just(Network::Tcp)],
            "[A-Za-z0-9/._:-]{1,40}",
            prop_oneof![Just(Protocol::Grpc), Just(Protocol::NetRpc)],
            // Field 6 is read as a certificate only when longer than 50 characters.
            proptest::option::of(proptest::collection::vec(any::<u8>(), 38..300)),
            proptest::option::of(any::<bool>()),
        )
            .prop_map(
                |(app_version, network, address, protocol, server_cert, mux)| HandshakeLine {
                    core_version: CORE_PROTOCOL_VERSION,
                    app_version,
                    network,
                    address,
                    protocol,
                    server_cert,
                    mux,
                },
            )
    }

    #[test]
    fn any_text_parses_or_fails_without_panicking() {
        proptest!(|(line in any::<String>())| {
            let _ = HandshakeLine::parse(&line);
        });
        proptest!(|(line in lineish())| {
            let _ = HandshakeLine::parse(&line);
        });
    }

    #[test]
    fn a_formatted_valid_line_round_trips() {
        proptest!(|(line in valid())| {
            let text = line.to_string();
            let parsed = HandshakeLine::parse(&text).map_err(|err| TestCaseError::fail(format!("{text}: {err}")))?;
            prop_assert_eq!(parsed, line.clone(), "{}", text);
            let padded = HandshakeLine::parse(&format!("  {text}\n")).map_err(|err| TestCaseError::fail(format!("{text}: {err}")))?;
            prop_assert_eq!(padded, line, "{}", text);
        });
    }
}
