//! One connection type for every transport, so servers and clients are not generic over it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tonic::transport::server::Connected;

/// A unix or TCP stream, in clear or under TLS (server or client side).
#[derive(Debug)]
pub enum Conn {
    /// Plain unix socket.
    Unix(UnixStream),
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS accepted on a unix socket.
    TlsServerUnix(Box<tokio_rustls::server::TlsStream<UnixStream>>),
    /// TLS accepted on TCP.
    TlsServerTcp(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// TLS dialled over a unix socket.
    TlsClientUnix(Box<tokio_rustls::client::TlsStream<UnixStream>>),
    /// TLS dialled over TCP.
    TlsClientTcp(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

macro_rules! each {
    ($self:expr, $s:ident => $body:expr) => {
        match $self.get_mut() {
            Conn::Unix($s) => $body,
            Conn::Tcp($s) => $body,
            Conn::TlsServerUnix($s) => $body,
            Conn::TlsServerTcp($s) => $body,
            Conn::TlsClientUnix($s) => $body,
            Conn::TlsClientTcp($s) => $body,
        }
    };
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Unix(s) => s.is_write_vectored(),
            Conn::Tcp(s) => s.is_write_vectored(),
            Conn::TlsServerUnix(s) => s.is_write_vectored(),
            Conn::TlsServerTcp(s) => s.is_write_vectored(),
            Conn::TlsClientUnix(s) => s.is_write_vectored(),
            Conn::TlsClientTcp(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

impl Connected for Conn {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}
