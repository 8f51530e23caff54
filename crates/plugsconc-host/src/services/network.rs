//! `NetworkService`: TCP connections the host opens or accepts for a plugin. Outgoing ones need
//! an egress grant naming the host and port (the OS sandbox can only check ports; this checks the
//! host too); incoming ones an ingress grant for the port, and a peer among its allowed origins.
//! The host then relays bytes both ways.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::Stream;
use plugsconc_protocol::proto::host::network_service_server::NetworkService;
use plugsconc_protocol::proto::host::{
    AcceptRequest, AcceptResponse, DialRequest, DialResponse, ListenRequest, ListenResponse,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::Grants;
use crate::manifest::NetProtocol;

type Replies<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

pub(crate) struct Network {
    grants: Arc<Grants>,
    /// Accepted connections announced to the plugin and not yet taken.
    pending: Arc<Mutex<HashMap<u64, TcpStream>>>,
    next_id: Arc<AtomicU64>,
}

impl Network {
    pub(crate) fn new(grants: Arc<Grants>) -> Self {
        Self {
            grants,
            pending: Arc::default(),
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }

    fn check_egress(&self, host: &str, port: u16) -> Result<(), Status> {
        let granted = self.grants.capabilities.egress.iter().any(|egress| {
            egress.protocol == NetProtocol::Tcp
                && egress.ports.contains(&port)
                && egress.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
        });
        if granted {
            Ok(())
        } else {
            Err(self.grants.deny(
                "connect",
                &format!("tcp {host}:{port}"),
                "no network egress grant names this host and port",
            ))
        }
    }

    /// The allowed origins of the ingress grants for `port` (`None`: no grant at all).
    fn ingress_origins(&self, port: u16) -> Option<Vec<String>> {
        let grants: Vec<_> = self
            .grants
            .capabilities
            .ingress
            .iter()
            .filter(|i| i.protocol == NetProtocol::Tcp && i.ports.contains(&port))
            .collect();
        if grants.is_empty() {
            return None;
        }
        Some(
            grants
                .iter()
                .flat_map(|g| g.allowed_origins.clone())
                .collect(),
        )
    }
}

/// An allowed origin as an address block: from an address, a CIDR block, or a host name
/// (resolved when the listener starts).
#[derive(Debug, Clone, PartialEq)]
struct Origin {
    net: IpAddr,
    bits: u8,
}

impl Origin {
    fn new(net: IpAddr, bits: Option<u8>) -> Self {
        let bits = bits.unwrap_or(if net.is_ipv4() { 32 } else { 128 });
        Self { net, bits }
    }

    fn contains(&self, peer: IpAddr) -> bool {
        let (net, bits) = (&self.net, &self.bits);
        match (net, peer.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(peer)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from((*bits).min(32)))
                    .unwrap_or(0);
                u32::from(*net) & mask == u32::from(peer) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(peer)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from((*bits).min(128)))
                    .unwrap_or(0);
                u128::from(*net) & mask == u128::from(peer) & mask
            }
            _ => false,
        }
    }
}

/// The origins `allowed` names; host names are resolved now.
async fn origins(allowed: &[String]) -> Vec<Origin> {
    let mut found = Vec::new();
    for entry in allowed {
        if let Some((net, bits)) = entry.split_once('/')
            && let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u8>())
        {
            found.push(Origin::new(net, Some(bits)));
        } else if let Ok(ip) = entry.parse::<IpAddr>() {
            found.push(Origin::new(ip, None));
        } else if let Ok(addresses) = tokio::net::lookup_host((entry.as_str(), 0)).await {
            found.extend(addresses.map(|address| Origin::new(address.ip(), None)));
        }
    }
    found
}

/// Relays `stream` both ways: `inbound` messages (their `data`) to the socket, the socket's bytes
/// back as `wrap(data)`. Ends when either side closes.
fn relay<In, Out>(
    stream: TcpStream,
    mut inbound: Streaming<In>,
    data: fn(In) -> Vec<u8>,
    wrap: fn(Vec<u8>) -> Out,
) -> Replies<Out>
where
    In: Send + 'static,
    Out: Send + 'static,
{
    let (mut reader, mut writer) = stream.into_split();
    tokio::spawn(async move {
        while let Ok(Some(message)) = inbound.message().await {
            if writer.write_all(&data(message)).await.is_err() {
                return;
            }
        }
        let _ = writer.shutdown().await;
    });
    let (replies, stream) = mpsc::channel(8);
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let reply = match reader.read(&mut buffer).await {
                Ok(0) => return,
                Ok(n) => Ok(wrap(buffer[..n].to_vec())),
                Err(err) => Err(Status::unavailable(err.to_string())),
            };
            let failed = reply.is_err();
            if replies.send(reply).await.is_err() || failed {
                return;
            }
        }
    });
    Box::pin(ReceiverStream::new(stream))
}

#[tonic::async_trait]
impl NetworkService for Network {
    type DialStream = Replies<DialResponse>;
    type ListenStream = Replies<ListenResponse>;
    type AcceptStream = Replies<AcceptResponse>;

    async fn dial(
        &self,
        request: Request<Streaming<DialRequest>>,
    ) -> Result<Response<Self::DialStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("the first message must name host and port"))?;
        let port = u16::try_from(first.port).map_err(|_| {
            Status::invalid_argument(format!("port {} is not a TCP port", first.port))
        })?;
        self.check_egress(&first.host, port)?;
        let mut stream = TcpStream::connect((first.host.as_str(), port))
            .await
            .map_err(|err| Status::unavailable(format!("connect {}:{port}: {err}", first.host)))?;
        tracing::debug!(plugin = %self.grants.plugin, host = first.host, port, "host service connection opened");
        if !first.data.is_empty() {
            stream
                .write_all(&first.data)
                .await
                .map_err(|err| Status::unavailable(err.to_string()))?;
        }
        Ok(Response::new(relay(
            stream,
            inbound,
            |m: DialRequest| m.data,
            |data| DialResponse { data },
        )))
    }

    async fn listen(
        &self,
        request: Request<ListenRequest>,
    ) -> Result<Response<Self::ListenStream>, Status> {
        let ListenRequest { port, address } = request.into_inner();
        let port = u16::try_from(port)
            .map_err(|_| Status::invalid_argument(format!("port {port} is not a TCP port")))?;
        let Some(allowed) = self.ingress_origins(port) else {
            return Err(self.grants.deny(
                "listen",
                &format!("tcp port {port}"),
                "no network ingress grant names this port",
            ));
        };
        let address = if address.is_empty() {
            "127.0.0.1".to_owned()
        } else {
            address
        };
        let listener = tokio::net::TcpListener::bind((address.as_str(), port))
            .await
            .map_err(|err| {
                Status::failed_precondition(format!("listen on {address}:{port}: {err}"))
            })?;
        let origins = origins(&allowed).await;
        let (announce, stream) = mpsc::channel(16);
        let _ = announce
            .send(Ok(ListenResponse {
                port: u32::from(port),
                ..ListenResponse::default()
            }))
            .await;
        let (grants, pending, next_id) = (
            self.grants.clone(),
            self.pending.clone(),
            self.next_id.clone(),
        );
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                tokio::select! {
                    () = announce.closed() => break,
                    accepted = listener.accept() => {
                        let Ok((socket, peer)) = accepted else { break };
                        // An empty list leaves the origin unrestricted; a list admits only its peers.
                        if !allowed.is_empty() && !origins.iter().any(|o| o.contains(peer.ip())) {
                            let _ = grants.deny("accept", &format!("tcp {peer} on port {port}"), "the peer is not among the ingress grant's allowed origins");
                            continue;
                        }
                        let id = next_id.fetch_add(1, Ordering::Relaxed);
                        pending.lock().unwrap_or_else(PoisonError::into_inner).insert(id, socket);
                        mine.push(id);
                        let message = ListenResponse { port: u32::from(port), connection_id: id, peer: peer.to_string() };
                        if announce.send(Ok(message)).await.is_err() {
                            break;
                        }
                    }
                }
            }
            // The plugin stopped listening: connections it never took are closed.
            let mut pending = pending.lock().unwrap_or_else(PoisonError::into_inner);
            for id in mine {
                pending.remove(&id);
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(stream))))
    }

    async fn accept(
        &self,
        request: Request<Streaming<AcceptRequest>>,
    ) -> Result<Response<Self::AcceptStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound.message().await?.ok_or_else(|| {
            Status::invalid_argument("the first message must name the connection")
        })?;
        let mut stream = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&first.connection_id)
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no pending connection {} (already taken, or its listener ended)",
                    first.connection_id
                ))
            })?;
        if !first.data.is_empty() {
            stream
                .write_all(&first.data)
                .await
                .map_err(|err| Status::unavailable(err.to_string()))?;
        }
        Ok(Response::new(relay(
            stream,
            inbound,
            |m: AcceptRequest| m.data,
            |data| AcceptResponse { data },
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn origins_match_addresses_blocks_and_names() {
        let list = origins(&[
            "10.1.0.0/16".to_owned(),
            "192.168.1.7".to_owned(),
            "localhost".to_owned(),
            "::1".to_owned(),
        ])
        .await;
        let admits = |ip: &str| list.iter().any(|o| o.contains(ip.parse().unwrap()));
        assert!(admits("10.1.200.3"));
        assert!(!admits("10.2.0.1"));
        assert!(admits("192.168.1.7"));
        assert!(!admits("192.168.1.8"));
        assert!(admits("127.0.0.1"));
        assert!(admits("::1"));
        // An IPv4 peer seen on a dual-stack socket.
        assert!(admits("::ffff:192.168.1.7"));
    }
}
