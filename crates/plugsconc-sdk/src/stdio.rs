//! `plugin.GRPCStdio`: what the plugin prints on stdout after the handshake goes to the host.
//!
//! The handshake owns the real stdout, so once it is printed fd 1 is replaced by a pipe whose
//! contents are streamed to the host in chunks of at most 1 KiB, as a Go plugin does. A stray
//! `println!` can then never corrupt the protocol. When no host reads the stream the chunks are
//! dropped (with a count) instead of blocking the plugin, as a go-plugin 1.0 host never reads it.

use std::os::fd::{FromRawFd as _, OwnedFd};
use std::pin::Pin;
use std::sync::Mutex;

use futures_util::StreamExt as _;
use plugsconc_protocol::proto::plugin::StdioData;
use plugsconc_protocol::proto::plugin::grpc_stdio_server::GrpcStdio;
use plugsconc_protocol::proto::plugin::stdio_data::Channel;
use tokio::io::AsyncReadExt as _;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::SdkError;

/// Go plugins send at most this much per message.
const CHUNK: usize = 1024;

/// Serves the stdio stream to one host subscriber.
#[derive(Debug)]
pub(crate) struct Stdio {
    rx: Mutex<Option<mpsc::Receiver<StdioData>>>,
    shutdown: CancellationToken,
}

impl Stdio {
    /// Redirects fd 1 into a pipe drained into the stream. Call after the handshake line.
    pub(crate) fn redirect_stdout(shutdown: CancellationToken) -> Result<Self, SdkError> {
        let (tx, rx) = mpsc::channel(64);
        let reader = redirect_fd(libc::STDOUT_FILENO)?;
        let mut reader =
            tokio::net::unix::pipe::Receiver::from_owned_fd(reader).map_err(|source| {
                SdkError::Io {
                    action: "watch the stdout pipe",
                    cause: source,
                }
            })?;
        tokio::spawn(async move {
            let mut buf = vec![0u8; CHUNK];
            let mut dropped = 0u64;
            loop {
                let n = match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let data = StdioData {
                    channel: Channel::Stdout as i32,
                    data: buf[..n].to_vec(),
                };
                if tx.try_send(data).is_err() {
                    dropped += 1;
                    if dropped.is_power_of_two() {
                        tracing::warn!(
                            dropped,
                            "stdout output dropped: the host is not reading it"
                        );
                    }
                }
            }
        });
        Ok(Self {
            rx: Mutex::new(Some(rx)),
            shutdown,
        })
    }
}

/// Points `fd` at the write end of a new pipe and returns the read end.
fn redirect_fd(fd: libc::c_int) -> Result<OwnedFd, SdkError> {
    let mut fds = [0 as libc::c_int; 2];
    let err = |action| SdkError::Io {
        action,
        cause: std::io::Error::last_os_error(),
    };
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(err("create the stdout pipe"));
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // The write end becomes fd 1 in blocking mode, as a normal stdout.
    // SAFETY: `write` is an open descriptor; fcntl and dup2 only act on descriptor numbers.
    unsafe {
        use std::os::fd::AsRawFd as _;
        let flags = libc::fcntl(write.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(write.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK);
        if libc::dup2(write.as_raw_fd(), fd) < 0 {
            return Err(err("redirect stdout"));
        }
    }
    Ok(read)
}

type DataStream = Pin<Box<dyn Stream<Item = Result<StdioData, Status>> + Send>>;

#[tonic::async_trait]
impl GrpcStdio for Stdio {
    type StreamStdioStream = DataStream;

    async fn stream_stdio(
        &self,
        _: Request<()>,
    ) -> Result<Response<Self::StreamStdioStream>, Status> {
        let rx = self
            .rx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .ok_or_else(|| Status::already_exists("stdio is already streamed to a host"))?;
        let stream = ReceiverStream::new(rx)
            .take_until(self.shutdown.clone().cancelled_owned())
            .map(Ok);
        Ok(Response::new(Box::pin(stream)))
    }
}
