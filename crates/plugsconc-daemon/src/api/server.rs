//! The API's HTTP/1.1 server: an accept loop that holds at most `api.max_connections`
//! connections, closes a connection whose request head does not arrive within
//! `api.header_read_timeout_secs` or that sits without a request for `api.idle_timeout_secs`,
//! and stops gracefully (no new connections, idle ones closed, requests in flight finished).
//!
//! At the cap, a new connection is accepted and the connection idle the longest — no request in
//! flight, only waiting or sending a request head — is closed to make room, so idle and
//! slow clients cannot keep the health check (or anyone) out. When every connection has a
//! request in flight, the new one waits until one finishes; the listener's backlog holds the
//! rest, and the daemon never holds more than the cap plus one socket for the API.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use axum::response::IntoResponse as _;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use super::ApiError;

/// How long, and how many, connections the server keeps.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From the first byte of a request (or from accepting the connection) to its whole head.
    pub header_read_timeout: Duration,
    /// Without a request in flight and without a byte of the next one.
    pub idle_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
    /// While a handler reads a request's body, the longest wait for its next byte.
    pub body_idle_timeout: Duration,
}

/// Serves `app` on `listener` until `stop` resolves, then drains: stops accepting, closes the
/// idle connections, lets the requests in flight finish, and returns once every connection is
/// closed (the caller bounds how long that may take).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    stop: impl Future<Output = ()>,
) {
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let permits = Arc::new(Semaphore::new(max));
    let table = Arc::new(Table::default());
    let draining = CancellationToken::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    // The head's timeout is ours (below), counted from the head's first byte.
    http.header_read_timeout(None);
    let mut accept_errors = AcceptErrors::default();
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    accept_errors.seen(&err);
                    // Out of descriptors, most likely: give closing connections a moment
                    // instead of spinning on the error.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if !table.close_idlest() {
                    tracing::debug!(
                        max,
                        "every API connection has a request in flight; the next waits"
                    );
                }
                tokio::select! {
                    () = &mut stop => break,
                    permit = permits.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                }
            }
        };
        let connection = table.insert();
        let io = TokioIo::new(Watched {
            stream,
            connection: connection.clone(),
            limits,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        });
        let service = {
            let connection = connection.clone();
            let app = app.clone();
            hyper::service::service_fn(move |request: Request<Incoming>| {
                respond(
                    app.clone(),
                    connection.begin(),
                    request,
                    limits.body_idle_timeout,
                )
            })
        };
        let serving = http.serve_connection(io, service);
        let (table, draining) = (table.clone(), draining.clone());
        tokio::spawn(async move {
            tokio::pin!(serving);
            let mut asked_to_drain = false;
            loop {
                tokio::select! {
                    served = serving.as_mut() => {
                        if let Err(err) = served {
                            tracing::debug!(error = %err, "API connection ended");
                        }
                        break;
                    }
                    // Closed to make room: nothing is in flight on it.
                    () = connection.close.cancelled() => break,
                    () = draining.cancelled(), if !asked_to_drain => {
                        asked_to_drain = true;
                        serving.as_mut().graceful_shutdown();
                    }
                }
            }
            table.remove(connection.id);
            drop(permit);
        });
    }
    drop(listener);
    draining.cancel();
    // Every connection has ended when every permit is back.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let _ = permits.acquire_many(all).await;
}

/// The router's response to `request`, holding the connection busy until its body is sent.
async fn respond(
    app: Router,
    busy: Option<Busy>,
    request: Request<Incoming>,
    body_idle_timeout: Duration,
) -> Result<Response<Body>, Infallible> {
    let Some(busy) = busy else {
        // Closed to make room as this request's head arrived.
        let mut response = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the daemon is at its connection limit; try again",
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Ok(response);
    };
    let request = request.map(|body| {
        Body::new(Trickle {
            body,
            limit: body_idle_timeout,
            stall: None,
        })
    });
    let response = match tower::ServiceExt::oneshot(app, request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    Ok(response.map(|body| Body::new(Tracked { body, _busy: busy })))
}

/// A request body that fails once no byte of it arrived for `limit` while its handler waited
/// for one, so a client trickling a body cannot hold its connection (or an install's turn)
/// forever. The clock runs only while the handler is reading.
struct Trickle {
    body: Incoming,
    limit: Duration,
    stall: Option<Pin<Box<Sleep>>>,
}

impl hyper::body::Body for Trickle {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            this.stall = None;
            return Poll::Ready(frame.map(|result| result.map_err(io::Error::other)));
        }
        let limit = this.limit;
        let stall = this
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if stall.as_mut().poll(cx).is_ready() {
            this.stall = None;
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no byte of the request body arrived for {} s (api.body_idle_timeout_secs)",
                    limit.as_secs()
                ),
            ))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The open connections, for closing the idlest at the cap.
#[derive(Debug, Default)]
struct Table {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Connection>>>,
}

impl Table {
    fn open(&self) -> MutexGuard<'_, HashMap<u64, Arc<Connection>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert(&self) -> Arc<Connection> {
        let connection = Arc::new(Connection {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            state: Mutex::new(State {
                busy: 0,
                since: Instant::now(),
                partial: false,
                closing: false,
                reader: None,
            }),
            close: CancellationToken::new(),
        });
        self.open().insert(connection.id, connection.clone());
        connection
    }

    fn remove(&self, id: u64) {
        self.open().remove(&id);
    }

    /// Closes the connection without a request in flight that has waited the longest; `false`
    /// when every connection has one.
    fn close_idlest(&self) -> bool {
        // Lock order: the table, then a connection's state.
        let open = self.open();
        let idlest = open
            .values()
            .filter_map(|connection| {
                let state = connection.state();
                (state.busy == 0 && !state.closing).then_some((state.since, connection))
            })
            .min_by_key(|(since, _)| *since)
            .map(|(_, connection)| connection.clone());
        drop(open);
        let Some(connection) = idlest else {
            return false;
        };
        let mut state = connection.state();
        if state.busy > 0 || state.closing {
            // A request arrived meanwhile; the next accept tries again.
            return false;
        }
        state.closing = true;
        drop(state);
        tracing::debug!(
            connection = connection.id,
            "closing the idlest API connection to make room"
        );
        connection.close.cancel();
        true
    }
}

/// One connection's activity.
#[derive(Debug)]
struct Connection {
    id: u64,
    state: Mutex<State>,
    close: CancellationToken,
}

#[derive(Debug)]
struct State {
    /// Requests in flight (their responses not yet sent).
    busy: usize,
    /// When it last became idle, or when the head being read began.
    since: Instant,
    /// A request head has begun and not been read whole.
    partial: bool,
    /// Closed to make room; takes no more requests.
    closing: bool,
    /// The task last waiting to read while a request was in flight: hyper may not read again
    /// by itself once the response is sent, and the idle deadline needs that read to be armed.
    reader: Option<Waker>,
}

impl Connection {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A request's head has arrived; `None` when the connection is being closed.
    fn begin(self: &Arc<Self>) -> Option<Busy> {
        let mut state = self.state();
        if state.closing {
            return None;
        }
        state.busy += 1;
        state.partial = false;
        Some(Busy(self.clone()))
    }

    /// Bytes arrived: between requests, they start the next head and its timeout.
    fn received(&self) {
        let mut state = self.state();
        if state.busy == 0 && !state.partial {
            state.partial = true;
            state.since = Instant::now();
        }
    }

    /// When reading should give up; `None` while a request is in flight (its handler and
    /// the client's body have no bound here), and then `waker` is woken when it ends.
    fn deadline(&self, limits: &Limits, waker: &Waker) -> Option<Instant> {
        let mut state = self.state();
        if state.busy > 0 {
            if !state.reader.as_ref().is_some_and(|w| w.will_wake(waker)) {
                state.reader = Some(waker.clone());
            }
            return None;
        }
        let timeout = if state.partial {
            limits.header_read_timeout
        } else {
            limits.idle_timeout
        };
        Some(state.since + timeout)
    }
}

/// A request in flight, until its response's body is dropped (sent, or the connection gone).
#[derive(Debug)]
struct Busy(Arc<Connection>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.busy = state.busy.saturating_sub(1);
        if state.busy == 0 {
            state.since = Instant::now();
            if let Some(reader) = state.reader.take() {
                reader.wake();
            }
        }
    }
}

/// A response body that keeps its connection busy while it is being sent.
#[derive(Debug)]
struct Tracked {
    body: Body,
    _busy: Busy,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The socket, failing a read that waits past the connection's deadline (which makes hyper
/// close the connection).
#[derive(Debug)]
struct Watched {
    stream: TcpStream,
    connection: Arc<Connection>,
    limits: Limits,
    timer: Pin<Box<Sleep>>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.connection.received();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => {
                let Some(deadline) = this.connection.deadline(&this.limits, cx.waker()) else {
                    return Poll::Pending;
                };
                if this.timer.deadline() != deadline {
                    this.timer.as_mut().reset(deadline);
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        tracing::debug!(
                            connection = this.connection.id,
                            "closing an API connection: no request head in time"
                        );
                        Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no request in time",
                        )))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Failed accepts, logged at most every ten seconds with how many there were meanwhile.
#[derive(Debug, Default)]
struct AcceptErrors {
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl AcceptErrors {
    fn seen(&mut self, err: &io::Error) {
        self.unlogged += 1;
        let now = Instant::now();
        if self
            .last_logged
            .is_none_or(|last| now - last >= Duration::from_secs(10))
        {
            tracing::warn!(error = %err, failures = self.unlogged, "cannot accept API connections");
            self.last_logged = Some(now);
            self.unlogged = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4,
            body_idle_timeout: Duration::from_secs(30),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_follows_the_connections_phase() {
        let table = Table::default();
        let connection = table.insert();
        let accepted = Instant::now();
        assert_eq!(
            connection.deadline(&limits(), Waker::noop()),
            Some(accepted + Duration::from_secs(60)),
            "idle until a byte arrives"
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        connection.received();
        let head = Instant::now();
        assert_eq!(
            connection.deadline(&limits(), Waker::noop()),
            Some(head + Duration::from_secs(10))
        );
        connection.received();
        assert_eq!(
            connection.deadline(&limits(), Waker::noop()),
            Some(head + Duration::from_secs(10)),
            "more of the same head keeps its start"
        );
        let busy = connection.begin().unwrap();
        assert_eq!(
            connection.deadline(&limits(), Waker::noop()),
            None,
            "a request in flight"
        );
        tokio::time::advance(Duration::from_secs(500)).await;
        drop(busy);
        assert_eq!(
            connection.deadline(&limits(), Waker::noop()),
            Some(Instant::now() + Duration::from_secs(60)),
            "idle again from the response"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_idlest_connection_without_a_request_is_closed_first() {
        let table = Table::default();
        let oldest_busy = table.insert();
        let _busy = oldest_busy.begin().unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        let idle = table.insert();
        tokio::time::advance(Duration::from_secs(1)).await;
        let newer = table.insert();
        assert!(table.close_idlest());
        assert!(idle.close.is_cancelled());
        assert!(!oldest_busy.close.is_cancelled() && !newer.close.is_cancelled());
        assert!(
            idle.begin().is_none(),
            "a closing connection takes no request"
        );
        assert!(table.close_idlest());
        assert!(newer.close.is_cancelled());
        assert!(!table.close_idlest(), "only a busy connection is left");
        table.remove(idle.id);
        table.remove(newer.id);
        assert_eq!(table.open().len(), 1);
    }
}
