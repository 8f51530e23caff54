//! Listeners as go-plugin makes them: a unix socket `plugin<digits>` in the socket folder (or the
//! temp dir), or the first free loopback TCP port of a range; and the stream of accepted
//! connections, TLS-terminated when AutoMTLS is on.

use std::ffi::CString;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::Stream;
use plugsconc_protocol::Network;
use plugsconc_protocol::env::{PortRange, Transport};
use rustls::ServerConfig;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::TransportError;
use crate::io::Conn;

/// Bound on a TLS handshake of an accepted connection, so a silent peer cannot hold a task.
const TLS_ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how to listen.
#[derive(Debug, Clone, Default)]
pub struct ListenOptions {
    /// Unix socket or TCP.
    pub transport: Transport,
    /// Folder for unix sockets; the temp dir when `None`.
    pub socket_dir: Option<PathBuf>,
    /// Group (name or gid) to own unix sockets, which then get mode 0660.
    pub socket_group: Option<String>,
    /// Ports allowed for TCP; `0..=0` is any free port.
    pub port_range: PortRange,
}

/// A bound listener with its address as the handshake line prints it.
#[derive(Debug)]
pub struct BoundListener {
    inner: Inner,
    network: Network,
    address: String,
}

#[derive(Debug)]
enum Inner {
    Unix(
        UnixListener,
        #[expect(dead_code, reason = "held for its Drop, which removes the socket file")]
        SocketFile,
    ),
    Tcp(TcpListener),
}

/// Removes the socket file when the listener goes away, as Go's listener does on close.
#[derive(Debug)]
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl BoundListener {
    /// Binds per `options`. Must run inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`TransportError`] naming the folder or port range that could not be used.
    pub fn bind(options: &ListenOptions) -> Result<Self, TransportError> {
        match options.transport {
            Transport::Unix => bind_unix(options),
            Transport::Tcp => bind_tcp(options.port_range),
        }
    }

    /// `unix` or `tcp`.
    pub fn network(&self) -> Network {
        self.network
    }

    /// Socket path or `127.0.0.1:port`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The accepted connections, TLS-terminated with `tls` when given. Accepting stops when
    /// `shutdown` is cancelled or the stream is dropped; the socket file is then removed.
    pub fn incoming(
        self,
        tls: Option<Arc<ServerConfig>>,
        shutdown: CancellationToken,
    ) -> impl Stream<Item = std::io::Result<Conn>> + Send + 'static {
        let (tx, rx) = mpsc::channel(16);
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tx.closed() => break,
                    accepted = accept(&self.inner) => accepted,
                };
                let conn = match accepted {
                    Ok(conn) => conn,
                    Err(err) => {
                        tracing::debug!(error = %err, "accept failed");
                        continue;
                    }
                };
                match &acceptor {
                    None => {
                        if tx.send(Ok(conn)).await.is_err() {
                            break;
                        }
                    }
                    Some(acceptor) => {
                        // Handshakes run beside the accept loop so one slow peer blocks no one.
                        let (acceptor, tx) = (acceptor.clone(), tx.clone());
                        tokio::spawn(async move {
                            match tokio::time::timeout(
                                TLS_ACCEPT_TIMEOUT,
                                tls_accept(acceptor, conn),
                            )
                            .await
                            {
                                Ok(Ok(conn)) => {
                                    let _ = tx.send(Ok(conn)).await;
                                }
                                Ok(Err(err)) => tracing::debug!(error = %err, "TLS accept failed"),
                                Err(_) => tracing::debug!("TLS accept timed out"),
                            }
                        });
                    }
                }
            }
            drop(self);
        });
        ReceiverStream::new(rx)
    }
}

async fn accept(inner: &Inner) -> std::io::Result<Conn> {
    match inner {
        Inner::Unix(listener, _) => Ok(Conn::Unix(listener.accept().await?.0)),
        Inner::Tcp(listener) => {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            Ok(Conn::Tcp(stream))
        }
    }
}

async fn tls_accept(acceptor: tokio_rustls::TlsAcceptor, conn: Conn) -> std::io::Result<Conn> {
    Ok(match conn {
        Conn::Unix(s) => Conn::TlsServerUnix(Box::new(acceptor.accept(s).await?)),
        Conn::Tcp(s) => Conn::TlsServerTcp(Box::new(acceptor.accept(s).await?)),
        other => other,
    })
}

fn bind_unix(options: &ListenOptions) -> Result<BoundListener, TransportError> {
    let dir = options
        .socket_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir);
    let mut last_err = None;
    for _ in 0..16 {
        let path = dir.join(format!("plugin{}", unique_digits()));
        match UnixListener::bind(&path) {
            Ok(listener) => {
                let file = SocketFile(path.clone());
                if let Some(group) = &options.socket_group {
                    set_group(&path, group)?;
                }
                return Ok(BoundListener {
                    inner: Inner::Unix(listener, file),
                    network: Network::Unix,
                    address: path.to_string_lossy().into_owned(),
                });
            }
            Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => last_err = Some(err),
            Err(err) => return Err(TransportError::ListenUnix { dir, cause: err }),
        }
    }
    Err(TransportError::ListenUnix {
        dir,
        cause: last_err.unwrap_or_else(|| std::io::Error::other("no free socket name")),
    })
}

fn unique_digits() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    let mixed = nanos
        ^ (u64::from(std::process::id()) << 20)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9);
    mixed % 10_000_000_000
}

fn set_group(path: &Path, group: &str) -> Result<(), TransportError> {
    let fail = |reason: String| TransportError::SocketGroup {
        path: path.to_owned(),
        group: group.to_owned(),
        reason,
    };
    let gid = match group.parse::<libc::gid_t>() {
        Ok(gid) => gid,
        Err(_) => lookup_group(group).ok_or_else(|| fail("no such group".into()))?,
    };
    let c_path = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| fail("path contains a NUL byte".into()))?;
    // SAFETY: c_path is a valid NUL-terminated string; uid -1 leaves the owner unchanged.
    let rc = unsafe { libc::chown(c_path.as_ptr(), libc::uid_t::MAX, gid) };
    if rc != 0 {
        return Err(fail(std::io::Error::last_os_error().to_string()));
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|err| fail(err.to_string()))
}

fn lookup_group(name: &str) -> Option<libc::gid_t> {
    let c_name = CString::new(name).ok()?;
    // SAFETY: `group` is plain old data; all-zero is a valid value that getgrnam_r overwrites.
    let mut group: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: all pointers point to live, correctly sized buffers owned by this frame.
    let rc = unsafe {
        libc::getgrnam_r(
            c_name.as_ptr(),
            &mut group,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    (rc == 0 && !result.is_null()).then_some(group.gr_gid)
}

fn bind_tcp(range: PortRange) -> Result<BoundListener, TransportError> {
    let mut last_err = None;
    for port in range.min..=range.max {
        let std_listener = match std::net::TcpListener::bind(("127.0.0.1", port)) {
            Ok(listener) => listener,
            Err(err) => {
                last_err = Some(err);
                continue;
            }
        };
        let io_err = |source| TransportError::ListenTcp {
            min: range.min,
            max: range.max,
            cause: source,
        };
        std_listener.set_nonblocking(true).map_err(io_err)?;
        let address = std_listener.local_addr().map_err(io_err)?.to_string();
        let listener = TcpListener::from_std(std_listener).map_err(io_err)?;
        return Ok(BoundListener {
            inner: Inner::Tcp(listener),
            network: Network::Tcp,
            address,
        });
    }
    Err(TransportError::ListenTcp {
        min: range.min,
        max: range.max,
        cause: last_err.unwrap_or_else(|| std::io::Error::other("empty port range")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unix_socket_is_named_like_go_and_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let options = ListenOptions {
            socket_dir: Some(dir.path().to_owned()),
            ..ListenOptions::default()
        };
        let listener = BoundListener::bind(&options).unwrap();
        assert_eq!(listener.network(), Network::Unix);
        let path = PathBuf::from(listener.address());
        assert!(
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("plugin")
        );
        assert!(path.exists());
        drop(listener);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn tcp_takes_first_free_port_of_range() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let options = ListenOptions {
            transport: Transport::Tcp,
            port_range: PortRange {
                min: port,
                max: port,
            },
            ..ListenOptions::default()
        };
        let err = BoundListener::bind(&options).unwrap_err();
        assert!(
            err.to_string()
                .contains("couldn't bind plugin TCP listener"),
            "{err}"
        );
        let any = ListenOptions {
            transport: Transport::Tcp,
            ..ListenOptions::default()
        };
        let listener = BoundListener::bind(&any).unwrap();
        assert!(listener.address().starts_with("127.0.0.1:"));
    }

    #[tokio::test]
    async fn socket_group_by_gid() {
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: getgid has no preconditions.
        let gid = unsafe { libc::getgid() };
        let options = ListenOptions {
            socket_dir: Some(dir.path().to_owned()),
            socket_group: Some(gid.to_string()),
            ..ListenOptions::default()
        };
        let listener = BoundListener::bind(&options).unwrap();
        let mode = std::fs::metadata(listener.address())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o660);
        let missing = ListenOptions {
            socket_dir: Some(dir.path().to_owned()),
            socket_group: Some("no-such-group-here".into()),
            ..ListenOptions::default()
        };
        assert!(BoundListener::bind(&missing).is_err());
    }
}
