//! Dialling a plugin (or a brokered server): a tonic channel over a unix socket or TCP, with the
//! TLS done here rather than by tonic, because tonic refuses TLS over unix sockets and cannot pin
//! a `CA=true` peer certificate.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use plugsconc_protocol::Network;
use plugsconc_protocol::mtls::server_name;
use rustls::ClientConfig;
use tokio::net::{TcpStream, UnixStream};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::TransportError;
use crate::io::Conn;
use crate::peer::{self, ExpectedPeer};

/// How to reach the peer.
#[derive(Debug, Clone)]
pub struct ChannelOptions {
    /// mTLS client config (pinning the peer); plain text when `None`.
    pub tls: Option<Arc<ClientConfig>>,
    /// Bound on establishing the connection.
    pub connect_timeout: Duration,
    /// Bound on each request: a call still running after it is cancelled (`None`: unbounded).
    pub request_timeout: Option<Duration>,
    /// The process the connection must lead to; any other peer is refused before a byte is
    /// sent (`None`: whoever listens).
    pub peer: Option<ExpectedPeer>,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        Self {
            tls: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: None,
            peer: None,
        }
    }
}

/// Connects now and returns a channel that reconnects through the same dialler if needed.
///
/// # Errors
///
/// [`TransportError::ForeignPeer`] when the address is served by a process other than
/// `options.peer`, else [`TransportError::Connect`] with the address and the cause.
pub async fn connect(
    network: Network,
    address: &str,
    options: &ChannelOptions,
) -> Result<Channel, TransportError> {
    let target = Target {
        network,
        address: normalise(network, address),
        tls: options.tls.clone(),
        peer: options.peer,
    };
    let endpoint = Endpoint::from_static("http://localhost")
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true)
        // Larger windows than h2's 64 KiB default: small calls are unaffected, large ones stop
        // waiting for WINDOW_UPDATE round trips.
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(2 << 20);
    let endpoint = match options.request_timeout {
        Some(limit) => endpoint.timeout(limit),
        None => endpoint,
    };
    let connector = tower::service_fn(move |_: Uri| {
        let target = target.clone();
        async move { target.dial().await.map(TokioIo::new) }
    });
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|err| match peer::refusal_in(&err) {
            Some(refused) => TransportError::ForeignPeer(Box::new(crate::ForeignPeer {
                network: network.to_string(),
                address: address.to_owned(),
                expected: refused.expected,
                found: refused.found,
                found_pid: refused.found_pid,
            })),
            None => TransportError::Connect {
                network: network.to_string(),
                address: address.to_owned(),
                cause: Box::new(err),
            },
        })
}

/// Go hosts accept `:1234` for loopback; make it dialable.
fn normalise(network: Network, address: &str) -> String {
    match network {
        Network::Tcp if address.starts_with(':') => format!("127.0.0.1{address}"),
        _ => address.to_owned(),
    }
}

#[derive(Debug, Clone)]
struct Target {
    network: Network,
    address: String,
    tls: Option<Arc<ClientConfig>>,
    peer: Option<ExpectedPeer>,
}

impl Target {
    async fn dial(&self) -> std::io::Result<Conn> {
        // The peer is checked on the raw connection, before TLS: under AutoMTLS the host's
        // certificate is shared by all its plugins, so TLS alone does not tell them apart.
        let conn = match self.network {
            Network::Unix => {
                let stream = UnixStream::connect(&self.address).await?;
                if let Some(expected) = self.peer {
                    peer::check_unix(&stream, expected)?;
                }
                Conn::Unix(stream)
            }
            Network::Tcp => {
                let stream = TcpStream::connect(&self.address).await?;
                stream.set_nodelay(true)?;
                if let Some(expected) = self.peer {
                    let far = stream.peer_addr()?;
                    tokio::task::spawn_blocking(move || peer::check_tcp(far, expected))
                        .await
                        .map_err(std::io::Error::other)??;
                }
                Conn::Tcp(stream)
            }
        };
        let Some(tls) = &self.tls else {
            return Ok(conn);
        };
        let connector = tokio_rustls::TlsConnector::from(tls.clone());
        Ok(match conn {
            Conn::Unix(s) => {
                Conn::TlsClientUnix(Box::new(connector.connect(server_name(), s).await?))
            }
            Conn::Tcp(s) => {
                Conn::TlsClientTcp(Box::new(connector.connect(server_name(), s).await?))
            }
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_shorthand() {
        assert_eq!(normalise(Network::Tcp, ":1234"), "127.0.0.1:1234");
        assert_eq!(normalise(Network::Tcp, "127.0.0.1:1"), "127.0.0.1:1");
        assert_eq!(normalise(Network::Unix, ":x"), ":x");
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

    /// tonic says only "transport error"; the message goes on to the OS error beneath it, and
    /// a chain prints that once.
    #[tokio::test]
    async fn a_failed_connection_says_why_once() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let missing = dir.path().join("absent.sock");
        let err = connect(
            Network::Unix,
            &missing.to_string_lossy(),
            &ChannelOptions::default(),
        )
        .await
        .expect_err("nothing listens there");
        assert!(matches!(err, TransportError::Connect { .. }), "{err:?}");
        let os_error = std::os::unix::net::UnixStream::connect(&missing)
            .expect_err("nothing listens there")
            .to_string();
        let shown = err.to_string();
        assert!(shown.contains(&os_error), "{shown}");
        assert_eq!(chain(&err).matches(&os_error).count(), 1, "{}", chain(&err));
    }
}
