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

/// How to reach the peer.
#[derive(Debug, Clone)]
pub struct ChannelOptions {
    /// mTLS client config (pinning the peer); plain text when `None`.
    pub tls: Option<Arc<ClientConfig>>,
    /// Bound on establishing the connection.
    pub connect_timeout: Duration,
    /// Bound on each request: a call still running after it is cancelled (`None`: unbounded).
    pub request_timeout: Option<Duration>,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        Self {
            tls: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: None,
        }
    }
}

/// Connects now and returns a channel that reconnects through the same dialler if needed.
///
/// # Errors
///
/// [`TransportError::Connect`] with the address and the cause.
pub async fn connect(
    network: Network,
    address: &str,
    options: &ChannelOptions,
) -> Result<Channel, TransportError> {
    let target = Target {
        network,
        address: normalise(network, address),
        tls: options.tls.clone(),
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
        .map_err(|err| TransportError::Connect {
            network: network.to_string(),
            address: address.to_owned(),
            source: Box::new(err),
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
}

impl Target {
    async fn dial(&self) -> std::io::Result<Conn> {
        let conn = match self.network {
            Network::Unix => Conn::Unix(UnixStream::connect(&self.address).await?),
            Network::Tcp => {
                let stream = TcpStream::connect(&self.address).await?;
                stream.set_nodelay(true)?;
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
}
