//! `misbehave`: a kv plugin that misbehaves on purpose, chosen by the `MISBEHAVE` variable, so
//! the host's tests can prove each failure gets a clear error in bounded time and leaves no
//! process behind. It writes its pid (and, in `fork-child`, its child's pid) to
//! `MISBEHAVE_PID_FILE` when set, and the configuration a host passed it
//! (`PLUGSCONC_PLUGIN_CONFIG`) to `config-seen.json` beside its binary.
//!
//! | `MISBEHAVE` | behaviour |
//! |---|---|
//! | unset, `normal` | a well-behaved kv plugin that logs one line per level at start |
//! | `exit-before-handshake` | writes an error on stderr and exits 3 |
//! | `malformed` | prints `hello world` instead of a handshake, then hangs |
//! | `bad-version` | offers application protocol version 99 |
//! | `junk-first` | prints a debug line before a valid handshake line |
//! | `silent` | never prints anything |
//! | `crash-mid-call` | serves kv; `Echo` aborts the process |
//! | `hang-shutdown` | serves kv; `Controller.Shutdown` never returns |
//! | `fork-child` | starts a `sleep` child, then serves kv |
//! | `long-line` | prints `MISBEHAVE_LINE_BYTES` bytes (and a newline when `MISBEHAVE_NEWLINE=1`) instead of a handshake, and a 5000-byte line on stderr, then hangs |
//! | `close-stdout` | closes its stdout without printing anything, then hangs |
//! | `impersonate` | prints `MISBEHAVE_LINE` as its handshake line (another plugin's address), then hangs |
//!
//! With `MISBEHAVE_CALL_LOG` set, the kv modes append the name of each kv call and of
//! `Controller.Shutdown` to that file, so a test can tell whether a host talked to this plugin.

use std::io::Write as _;
use std::time::Duration;

use example_contracts::kv::kv_server::{Kv, KvServer};
use example_contracts::kv::{
    EchoRequest, EchoResponse, GetRequest, GetResponse, PutRequest, PutResponse,
};
use plugsconc_protocol::proto::plugin::Empty;
use plugsconc_protocol::proto::plugin::grpc_controller_server::{
    GrpcController, GrpcControllerServer,
};
use plugsconc_sdk::{HandshakeConfig, Plugin};
use tonic::{Request, Response, Status};

#[derive(Debug, Default)]
struct Store {
    crash_on_echo: bool,
}

/// Appends `call` to `MISBEHAVE_CALL_LOG`, when set.
fn log_call(call: &str) {
    use std::io::Write as _;
    let Some(path) = std::env::var_os("MISBEHAVE_CALL_LOG") else {
        return;
    };
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(file, "{call}");
    }
}

#[tonic::async_trait]
impl Kv for Store {
    async fn put(&self, _: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        log_call("Put");
        Ok(Response::new(PutResponse {}))
    }

    async fn get(&self, _: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        log_call("Get");
        Ok(Response::new(GetResponse::default()))
    }

    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        log_call("Echo");
        if self.crash_on_echo {
            std::process::abort();
        }
        Ok(Response::new(EchoResponse {
            data: request.into_inner().data,
        }))
    }
}

/// A controller whose Shutdown never answers.
#[derive(Debug)]
struct Stubborn;

#[tonic::async_trait]
impl GrpcController for Stubborn {
    async fn shutdown(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        std::future::pending::<()>().await;
        Ok(Response::new(Empty {}))
    }
}

/// A controller that records `Shutdown` before exiting.
#[derive(Debug)]
struct Recording;

#[tonic::async_trait]
impl GrpcController for Recording {
    async fn shutdown(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        log_call("Shutdown");
        // Answer first, then exit (as go-plugin plugins do, without waiting for calls).
        std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(50));
            std::process::exit(0);
        });
        Ok(Response::new(Empty {}))
    }
}

/// Lets a test see the manifest `config` the host passed at start.
fn record_config() {
    let Ok(config) = std::env::var(plugsconc_protocol::env::PLUGIN_CONFIG) else {
        return;
    };
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|p| p.to_owned()))
    {
        let _ = std::fs::write(dir.join("config-seen.json"), config);
    }
}

fn record_pids(pids: &[u32]) {
    if let Some(path) = std::env::var_os("MISBEHAVE_PID_FILE") {
        let text: Vec<String> = pids.iter().map(u32::to_string).collect();
        let _ = std::fs::write(path, text.join("\n"));
    }
}

fn hang() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn kv_plugin(store: Store) -> Plugin {
    Plugin::new(
        "misbehave",
        HandshakeConfig::new(1, "BASIC_PLUGIN", "hello"),
    )
    .service(KvServer::new(store))
}

fn main() {
    let mode = std::env::var("MISBEHAVE").unwrap_or_default();
    record_pids(&[std::process::id()]);
    record_config();
    let mut stdout = std::io::stdout();
    match mode.as_str() {
        "exit-before-handshake" => {
            eprintln!("fatal: missing configuration file /etc/misbehave.conf");
            std::process::exit(3);
        }
        "malformed" => {
            let _ = writeln!(stdout, "hello world");
            let _ = stdout.flush();
            hang();
        }
        "bad-version" => {
            let _ = writeln!(stdout, "1|99|unix|/tmp/misbehave-no-socket|grpc|");
            let _ = stdout.flush();
            hang();
        }
        "junk-first" => {
            let _ = writeln!(stdout, "debug: starting up");
            let _ = stdout.flush();
            kv_plugin(Store::default()).serve()
        }
        "impersonate" => {
            let line = std::env::var("MISBEHAVE_LINE").unwrap_or_default();
            let _ = writeln!(stdout, "{line}");
            let _ = stdout.flush();
            hang();
        }
        "long-line" => {
            let bytes = std::env::var("MISBEHAVE_LINE_BYTES")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(10 << 20);
            eprintln!("{}", "e".repeat(5000));
            let mut line = vec![b'x'; bytes];
            if std::env::var_os("MISBEHAVE_NEWLINE").is_some_and(|v| v == "1") {
                line.push(b'\n');
            }
            // The host stops reading at its limit: this may block until the plugin is killed.
            let _ = stdout.write_all(&line);
            let _ = stdout.flush();
            hang();
        }
        "close-stdout" => {
            // SAFETY: closes this process's own stdout, which nothing else here uses afterwards.
            unsafe {
                libc::close(1);
            }
            hang();
        }
        "silent" => hang(),
        "crash-mid-call" => kv_plugin(Store {
            crash_on_echo: true,
        })
        .serve(),
        "hang-shutdown" => kv_plugin(Store::default())
            .service(GrpcControllerServer::new(Stubborn))
            .serve(),
        "fork-child" => {
            let child = std::process::Command::new("sleep").arg("1000").spawn();
            match child {
                Ok(child) => record_pids(&[std::process::id(), child.id()]),
                Err(err) => {
                    eprintln!("cannot start the child: {err}");
                    std::process::exit(4);
                }
            }
            kv_plugin(Store::default()).serve()
        }
        _ => {
            tracing::info!("misbehave starting normally");
            let plugin = if std::env::var_os("MISBEHAVE_CALL_LOG").is_some() {
                kv_plugin(Store::default()).service(GrpcControllerServer::new(Recording))
            } else {
                kv_plugin(Store::default())
            };
            plugin
                .version(1, |_, services| {
                    tracing::trace!("level check trace");
                    tracing::debug!("level check debug");
                    tracing::info!("level check info");
                    tracing::warn!("level check warn");
                    tracing::error!("level check error");
                    services
                })
                .serve()
        }
    }
}
