//! `hostile`: a plugin that tries to do what its manifest may not have granted, directly
//! through the OS, and reports what happened. Serves `kv.KV`: `Get` with key `<attempt>:<arg>`
//! answers `ok: ...` or `denied: <OS error>` in `value`.
//!
//! | attempt | what it does |
//! |---|---|
//! | `read:<path>` | reads a file |
//! | `write:<path>` | writes a file |
//! | `connect:<port>` | opens a TCP connection to 127.0.0.1 |
//! | `udp:<port>` | sends a UDP datagram to 127.0.0.1 |
//! | `exec:<path>` | runs a program |
//! | `signal-host:` | `kill(host, 0)`: the permission check a real signal goes through, without killing the test host when it is not contained |
//! | `fork:<n>` | forks up to n children (each exits at once): a bounded fork bomb |
//! | `alloc:<MiB>` | allocates and touches that much memory, then frees it |
//! | `hold:<MiB>` | allocates, touches and keeps that much memory (a leak the monitor should see) |
//! | `sleep:<ms>` | takes that long to answer |
//! | `escape:<path>` | starts `<path> 1000` in a new session (out of its process group) and answers its pid |
//! | `env:<name>` | reads a variable of its environment (the host's should not be there) |
//! | `raw:` | opens a raw ICMP socket (root's `CAP_NET_RAW`, around the TCP rules) |
//! | `lift-memory:` | raises its address-space rlimit's ceiling (root's `CAP_SYS_RESOURCE`) |
//!
//! The same through the host services (`svc-read`, `svc-write`, `svc-dial:<port>`,
//! `svc-exec:<path>`, `svc-signal-host:`), which answer `denied: <status>` when no grant covers
//! the request; and `svc-listen:<port>`, which has the host listen, takes the first connection
//! and echoes its first chunk.

use std::io::Write as _;

use example_contracts::kv::kv_server::{Kv, KvServer};
use example_contracts::kv::{
    EchoRequest, EchoResponse, GetRequest, GetResponse, PutRequest, PutResponse,
};
use plugsconc_sdk::host::pb;
use plugsconc_sdk::{Broker, HandshakeConfig, HostServices, Plugin};
use tonic::{Request, Response, Status};

struct Attempts {
    host: libc::pid_t,
}

/// The plugin's service: direct attempts, and the same through the host services.
struct Hostile {
    host: libc::pid_t,
    broker: Broker,
}

fn status_outcome<T>(result: Result<T, tonic::Status>, done: impl FnOnce(T) -> String) -> String {
    match result {
        Ok(value) => format!("ok: {}", done(value)),
        Err(status) => format!("denied: {:?}: {}", status.code(), status.message()),
    }
}

/// Has the host listen on `port`, takes the first connection and echoes its first chunk.
async fn listen_once(host: &HostServices, port: u32) -> String {
    let mut network = host.network();
    let listening = network
        .listen(pb::ListenRequest {
            port,
            address: String::new(),
        })
        .await;
    let mut announcements = match listening {
        Ok(reply) => reply.into_inner(),
        Err(status) => return status_outcome::<()>(Err(status), |()| String::new()),
    };
    // The first message confirms the listener; the next announces a connection.
    let _ = announcements.message().await;
    let Ok(Some(incoming)) = announcements.message().await else {
        return "no connection".to_owned();
    };
    let (send, requests) = tokio::sync::mpsc::channel(4);
    let _ = send
        .send(pb::AcceptRequest {
            connection_id: incoming.connection_id,
            data: Vec::new(),
        })
        .await;
    let accepted = network
        .accept(tokio_stream::wrappers::ReceiverStream::new(requests))
        .await;
    let mut replies = match accepted {
        Ok(reply) => reply.into_inner(),
        Err(status) => return status_outcome::<()>(Err(status), |()| String::new()),
    };
    let Ok(Some(chunk)) = replies.message().await else {
        return "connection closed".to_owned();
    };
    let _ = send
        .send(pb::AcceptRequest {
            connection_id: incoming.connection_id,
            data: chunk.data.clone(),
        })
        .await;
    // Half-close, then stay on the call until the peer closes: ending it earlier could reset
    // the stream before the echo is through.
    drop(send);
    while let Ok(Some(_)) = replies.message().await {}
    format!(
        "ok: echoed {:?} from {}",
        String::from_utf8_lossy(&chunk.data),
        incoming.peer
    )
}

impl Hostile {
    async fn through_host(&self, what: &str, arg: &str) -> String {
        let host = match HostServices::connect(&self.broker).await {
            Ok(host) => host,
            Err(err) => return format!("no host services: {err}"),
        };
        match what {
            "svc-read" => status_outcome(
                host.filesystem()
                    .read(pb::ReadRequest {
                        path: arg.to_owned(),
                    })
                    .await,
                |r| format!("{} bytes", r.into_inner().data.len()),
            ),
            "svc-write" => status_outcome(
                host.filesystem()
                    .write(pb::WriteRequest {
                        path: arg.to_owned(),
                        data: b"hostile".to_vec(),
                        append: false,
                    })
                    .await,
                |_| "written".to_owned(),
            ),
            "svc-dial" => {
                let first = pb::DialRequest {
                    host: "127.0.0.1".to_owned(),
                    port: arg.parse().unwrap_or(0),
                    data: b"ping".to_vec(),
                };
                let reply = host.network().dial(tokio_stream::once(first)).await;
                match reply {
                    Ok(stream) => {
                        let mut stream = stream.into_inner();
                        status_outcome(stream.message().await, |m| {
                            format!(
                                "echoed {:?}",
                                m.map(|m| String::from_utf8_lossy(&m.data).into_owned())
                            )
                        })
                    }
                    Err(status) => status_outcome::<()>(Err(status), |()| String::new()),
                }
            }
            "svc-listen" => listen_once(&host, arg.parse().unwrap_or(0)).await,
            "svc-exec" => status_outcome(
                host.process()
                    .exec(pb::ExecRequest {
                        command: arg.to_owned(),
                        ..pb::ExecRequest::default()
                    })
                    .await,
                |r| format!("exit code {}", r.into_inner().exit_code),
            ),
            "svc-signal-host" => status_outcome(
                host.process()
                    .signal(pb::SignalRequest {
                        pid: self.host.unsigned_abs(),
                        signal: 0,
                    })
                    .await,
                |_| "signalled".to_owned(),
            ),
            other => format!("unknown attempt {other:?}"),
        }
    }
}

fn outcome(result: std::io::Result<String>) -> String {
    match result {
        Ok(done) => format!("ok: {done}"),
        Err(err) => format!("denied: {err}"),
    }
}

fn errno_result(code: libc::c_long, done: String) -> std::io::Result<String> {
    if code < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(done)
    }
}

impl Attempts {
    fn attempt(&self, what: &str, arg: &str) -> String {
        match what {
            "read" => outcome(std::fs::read(arg).map(|b| format!("{} bytes", b.len()))),
            "write" => outcome(std::fs::write(arg, b"hostile").map(|()| "written".to_owned())),
            "connect" => outcome(
                std::net::TcpStream::connect(("127.0.0.1", arg.parse().unwrap_or(0)))
                    .map(|_| "connected".to_owned()),
            ),
            "udp" => outcome(std::net::UdpSocket::bind("127.0.0.1:0").and_then(|socket| {
                socket
                    .send_to(b"hostile", ("127.0.0.1", arg.parse().unwrap_or(0)))
                    .map(|n| format!("sent {n} bytes"))
            })),
            "exec" => outcome(
                std::process::Command::new(arg)
                    .status()
                    .map(|status| format!("ran, {status}")),
            ),
            "signal-host" => {
                // SAFETY: kill with signal 0 only checks permission.
                let code = unsafe { libc::kill(self.host, 0) };
                outcome(errno_result(
                    code.into(),
                    format!("may signal {}", self.host),
                ))
            }
            "fork" => outcome(fork_bomb(arg.parse().unwrap_or(1))),
            "escape" => outcome(escape(arg)),
            "env" => outcome(std::env::var(arg).map_err(std::io::Error::other)),
            "raw" => {
                // SAFETY: socket with integer arguments; the fd is closed at once.
                let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
                if fd >= 0 {
                    // SAFETY: closing the fd just opened.
                    unsafe { libc::close(fd) };
                }
                outcome(errno_result(fd.into(), "raw socket open".to_owned()))
            }
            "lift-memory" => {
                let unlimited = libc::rlimit {
                    rlim_cur: libc::RLIM_INFINITY,
                    rlim_max: libc::RLIM_INFINITY,
                };
                // SAFETY: setrlimit reads the struct we own.
                let code = unsafe { libc::setrlimit(libc::RLIMIT_AS, &raw const unlimited) };
                outcome(errno_result(
                    code.into(),
                    "address space unlimited".to_owned(),
                ))
            }
            "alloc" => outcome(allocate(arg.parse().unwrap_or(0)).map(|(block, done)| {
                drop(block);
                done
            })),
            "hold" => outcome(allocate(arg.parse().unwrap_or(0)).map(|(block, done)| {
                block.leak();
                done
            })),
            other => format!("unknown attempt {other:?}"),
        }
    }
}

/// Forks up to `n` children that exit at once; stops at the first refusal.
fn fork_bomb(n: u32) -> std::io::Result<String> {
    let mut born = 0;
    for _ in 0..n {
        // SAFETY: the child only calls _exit, which is async-signal-safe.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: as above.
            unsafe { libc::_exit(0) };
        }
        if pid < 0 {
            let err = std::io::Error::last_os_error();
            return if born == 0 {
                Err(err)
            } else {
                Ok(format!("{born} children before {err}"))
            };
        }
        born += 1;
        // SAFETY: reaps the child just forked.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    }
    Ok(format!("{born} children"))
}

/// Starts `program 1000` in a new session, so a kill of the plugin's process group misses it.
fn escape(program: &str) -> std::io::Result<String> {
    let path = std::ffi::CString::new(program).map_err(std::io::Error::other)?;
    let arg = c"1000";
    let argv = [path.as_ptr(), arg.as_ptr(), std::ptr::null()];
    // SAFETY: the child only calls setsid, execv and _exit (async-signal-safe) on data built
    // before the fork.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: as above.
        unsafe {
            libc::setsid();
            libc::execv(path.as_ptr(), argv.as_ptr());
            libc::_exit(127);
        }
    }
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(format!("{pid}"))
}

/// Allocates `mib` MiB and touches every page, so the memory is really used.
fn allocate(mib: usize) -> std::io::Result<(Vec<u8>, String)> {
    let bytes = mib << 20;
    let mut block: Vec<u8> = Vec::new();
    block
        .try_reserve_exact(bytes)
        .map_err(|err| std::io::Error::new(std::io::ErrorKind::OutOfMemory, err.to_string()))?;
    block.resize(bytes, 1);
    let _ = std::io::sink().write_all(&block[..1]);
    Ok((block, format!("{mib} MiB")))
}

#[tonic::async_trait]
impl Kv for Hostile {
    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let key = request.into_inner().key;
        let (what, arg) = key.split_once(':').unwrap_or((&key, ""));
        let (what, arg) = (what.to_owned(), arg.to_owned());
        let host = self.host;
        let report = if what == "sleep" {
            tokio::time::sleep(std::time::Duration::from_millis(arg.parse().unwrap_or(0))).await;
            format!("ok: slept {arg} ms")
        } else if what.starts_with("svc-") {
            self.through_host(&what, &arg).await
        } else {
            tokio::task::spawn_blocking(move || Attempts { host }.attempt(&what, &arg))
                .await
                .map_err(|err| Status::internal(err.to_string()))?
        };
        Ok(Response::new(GetResponse {
            value: report.into_bytes(),
            found: true,
        }))
    }

    async fn put(&self, _: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        Ok(Response::new(PutResponse {}))
    }

    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        Ok(Response::new(EchoResponse {
            data: request.into_inner().data,
        }))
    }
}

fn main() {
    // SAFETY: getppid has no preconditions.
    let host = unsafe { libc::getppid() };
    Plugin::new("hostile", HandshakeConfig::new(1, "BASIC_PLUGIN", "hello"))
        .service_with_broker(move |broker| KvServer::new(Hostile { host, broker }))
        .serve()
}
