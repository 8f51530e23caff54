//! go-plugin's `GRPCBroker`, non-multiplexed mode, for either side.
//!
//! Both sides hold a [`Broker`] joined by one `plugin.GRPCBroker/StartStream` stream (the host is
//! the stream client, the plugin serves it). To expose a server, a side calls
//! [`Broker::accept_and_serve`]: it opens a new listener and sends `ConnInfo{id, network,
//! address}`; the other side's [`Broker::dial`] waits up to 5 s for that id and connects. Ids
//! come from a per-side counter starting at 1. A `ConnInfo` serves one dial and is forgotten
//! 5 s after it arrived if nobody dials it, as in go-plugin.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt as _};
use plugsconc_protocol::Network;
use plugsconc_protocol::proto::plugin::ConnInfo;
use plugsconc_protocol::proto::plugin::grpc_broker_client::GrpcBrokerClient;
use plugsconc_protocol::proto::plugin::grpc_broker_server::{GrpcBroker, GrpcBrokerServer};
use rustls::{ClientConfig, ServerConfig};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status, Streaming};

use crate::TransportError;
use crate::connector::{ChannelOptions, connect};
use crate::listener::{BoundListener, ListenOptions};
use crate::peer::ExpectedPeer;
use crate::services::Services;

/// How long a dial waits for its connection info, and how long unclaimed info is kept.
const CONN_INFO_TIMEOUT: Duration = Duration::from_secs(5);

/// The TLS configs a side uses for brokered connections under AutoMTLS.
#[derive(Debug, Clone)]
pub struct BrokerTls {
    /// Presented by this side's brokered servers (pins the peer as client).
    pub server: Arc<ServerConfig>,
    /// Used when this side dials the peer's brokered servers (pins the peer as server).
    pub client: Arc<ClientConfig>,
}

/// One side of the broker. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    next_id: AtomicU32,
    outgoing: mpsc::UnboundedSender<ConnInfo>,
    outgoing_rx: Mutex<Option<mpsc::UnboundedReceiver<ConnInfo>>>,
    pending: Mutex<HashMap<u32, Slot>>,
    listen: ListenOptions,
    tls: Option<BrokerTls>,
    /// The process the peer's brokered servers must be served by.
    peer: Option<ExpectedPeer>,
    closed: CancellationToken,
}

#[derive(Debug)]
enum Slot {
    Waiting(oneshot::Sender<ConnInfo>),
    Arrived(ConnInfo, Instant),
}

impl Broker {
    /// A broker whose servers listen per `listen` and use `tls` under AutoMTLS.
    pub fn new(listen: ListenOptions, tls: Option<BrokerTls>) -> Self {
        Self::expecting(listen, tls, None)
    }

    /// As [`Broker::new`], and [`Broker::dial`] refuses a server not run by `peer` (a host
    /// passes the plugin it started, so a plugin cannot point it at another's socket).
    pub fn expecting(
        listen: ListenOptions,
        tls: Option<BrokerTls>,
        peer: Option<ExpectedPeer>,
    ) -> Self {
        let (outgoing, rx) = mpsc::unbounded_channel();
        Self {
            inner: Arc::new(Inner {
                next_id: AtomicU32::new(0),
                outgoing,
                outgoing_rx: Mutex::new(Some(rx)),
                pending: Mutex::new(HashMap::new()),
                listen,
                tls,
                peer,
                closed: CancellationToken::new(),
            }),
        }
    }

    /// The next free id on this side (1, 2, ...).
    pub fn next_id(&self) -> u32 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Serves `services` on a new listener under `id` and tells the peer where it is. The server
    /// stops when the returned handle is dropped or stopped, or when the broker closes.
    ///
    /// # Errors
    ///
    /// [`TransportError`] if no listener could be opened or the broker is closed.
    pub fn accept_and_serve(
        &self,
        id: u32,
        services: Services,
    ) -> Result<BrokeredServer, TransportError> {
        if self.inner.closed.is_cancelled() {
            return Err(TransportError::BrokerClosed);
        }
        let listener = BoundListener::bind(&self.inner.listen)?;
        let info = ConnInfo {
            service_id: id,
            network: listener.network().to_string(),
            address: listener.address().to_owned(),
            knock: None,
        };
        let stop = self.inner.closed.child_token();
        let incoming = listener.incoming(
            self.inner.tls.as_ref().map(|t| t.server.clone()),
            stop.clone(),
        );
        let signal = stop.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            if let Err(err) = Server::builder()
                .serve_with_incoming_shutdown(services, incoming, signal)
                .await
            {
                tracing::debug!(broker_id = id, error = %err, "brokered server ended");
            }
        });
        self.inner
            .outgoing
            .send(info)
            .map_err(|_| TransportError::BrokerClosed)?;
        Ok(BrokeredServer {
            stop,
            task: Some(task),
        })
    }

    /// Connects to the server the peer exposed under `id`, waiting up to 5 s for its address.
    ///
    /// # Errors
    ///
    /// [`TransportError::BrokerTimeout`] when no address came, or a connection error.
    pub async fn dial(&self, id: u32) -> Result<Channel, TransportError> {
        let waiting = {
            let mut pending = lock(&self.inner.pending);
            match pending.remove(&id) {
                Some(Slot::Arrived(info, _)) => Err(info),
                Some(Slot::Waiting(_)) | None => {
                    let (tx, rx) = oneshot::channel();
                    pending.insert(id, Slot::Waiting(tx));
                    Ok(rx)
                }
            }
        };
        let info = match waiting {
            Err(info) => info,
            Ok(rx) => {
                let received = tokio::select! {
                    received = tokio::time::timeout(CONN_INFO_TIMEOUT, rx) => received,
                    () = self.inner.closed.cancelled() => return Err(TransportError::BrokerClosed),
                };
                match received {
                    Ok(Ok(info)) => info,
                    Ok(Err(_)) => return Err(TransportError::BrokerClosed),
                    Err(_) => {
                        lock(&self.inner.pending).remove(&id);
                        return Err(TransportError::BrokerTimeout(id));
                    }
                }
            }
        };
        let network = match info.network.as_str() {
            "unix" => Network::Unix,
            "tcp" => Network::Tcp,
            other => return Err(TransportError::UnknownNetwork(other.to_owned())),
        };
        let options = ChannelOptions {
            tls: self.inner.tls.as_ref().map(|t| t.client.clone()),
            peer: self.inner.peer,
            ..ChannelOptions::default()
        };
        connect(network, &info.address, &options).await
    }

    /// Feeds a message received from the peer.
    pub fn receive(&self, info: ConnInfo) {
        if info.knock.is_some() {
            // Multiplexed mode is never requested by plugsconc; a knock cannot be honoured.
            tracing::debug!(
                broker_id = info.service_id,
                "ignoring broker knock (multiplexing is off)"
            );
            return;
        }
        let mut pending = lock(&self.inner.pending);
        pending.retain(|_, slot| match slot {
            Slot::Arrived(_, at) => at.elapsed() < CONN_INFO_TIMEOUT,
            Slot::Waiting(tx) => !tx.is_closed(),
        });
        match pending.remove(&info.service_id) {
            Some(Slot::Waiting(tx)) => {
                let _ = tx.send(info);
            }
            // One ConnInfo per id: a duplicate is dropped, like go-plugin's 1-slot buffer.
            Some(arrived @ Slot::Arrived(..)) => {
                pending.insert(info.service_id, arrived);
            }
            None => {
                pending.insert(info.service_id, Slot::Arrived(info, Instant::now()));
            }
        }
    }

    /// Closes the broker: brokered servers stop, pending dials fail.
    pub fn close(&self) {
        self.inner.closed.cancel();
        lock(&self.inner.pending).clear();
    }

    /// Whether [`Broker::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.is_cancelled()
    }

    fn take_outgoing(&self) -> Option<mpsc::UnboundedReceiver<ConnInfo>> {
        lock(&self.inner.outgoing_rx).take()
    }

    /// Plugin side: the `plugin.GRPCBroker` service that carries this broker's stream.
    pub fn service(&self) -> GrpcBrokerServer<BrokerService> {
        GrpcBrokerServer::new(BrokerService {
            broker: self.clone(),
        })
    }

    /// Host side: opens the broker stream on `channel` in the background. The stream is not
    /// awaited here because a Go plugin sends no response headers until it has a message.
    pub fn run_client(&self, channel: Channel) {
        let Some(rx) = self.take_outgoing() else {
            return;
        };
        let broker = self.clone();
        tokio::spawn(async move {
            let mut client = GrpcBrokerClient::new(channel);
            let closed = broker.inner.closed.clone();
            let response = tokio::select! {
                response = client.start_stream(UnboundedReceiverStream::new(rx)) => response,
                () = closed.cancelled() => return,
            };
            let mut stream = match response {
                Ok(response) => response.into_inner(),
                Err(status) => {
                    tracing::debug!(code = ?status.code(), message = status.message(), "plugin has no broker");
                    broker.close();
                    return;
                }
            };
            loop {
                tokio::select! {
                    message = stream.message() => match message {
                        Ok(Some(info)) => broker.receive(info),
                        Ok(None) | Err(_) => break,
                    },
                    () = closed.cancelled() => break,
                }
            }
            broker.close();
        });
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock leaves plain data behind; keep using it.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A server exposed through the broker; stops when dropped.
#[derive(Debug)]
pub struct BrokeredServer {
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl BrokeredServer {
    /// Stops the server and waits for its connections to close.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for BrokeredServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The `plugin.GRPCBroker` service of a plugin.
#[derive(Debug)]
pub struct BrokerService {
    broker: Broker,
}

type InfoStream = Pin<Box<dyn Stream<Item = Result<ConnInfo, Status>> + Send>>;

#[tonic::async_trait]
impl GrpcBroker for BrokerService {
    type StartStreamStream = InfoStream;

    async fn start_stream(
        &self,
        request: Request<Streaming<ConnInfo>>,
    ) -> Result<Response<Self::StartStreamStream>, Status> {
        let rx = self
            .broker
            .take_outgoing()
            .ok_or_else(|| Status::already_exists("the broker stream is already open"))?;
        let mut incoming = request.into_inner();
        let broker = self.broker.clone();
        tokio::spawn(async move {
            let closed = broker.inner.closed.clone();
            loop {
                tokio::select! {
                    message = incoming.message() => match message {
                        Ok(Some(info)) => broker.receive(info),
                        Ok(None) | Err(_) => break,
                    },
                    () = closed.cancelled() => break,
                }
            }
        });
        let closed = self.broker.inner.closed.clone();
        let outgoing = UnboundedReceiverStream::new(rx)
            .take_until(closed.cancelled_owned())
            .map(Ok);
        Ok(Response::new(Box::pin(outgoing)))
    }
}
