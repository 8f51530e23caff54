//! Hostile inputs to the daemon's API, one after another on one daemon: idle connections,
//! connections stuck in their header, concurrent huge uploads streamed from a generator, a gzip
//! bomb, a bundle of very many files, a huge JSON body, deeply nested JSON, invalid UTF-8, and a
//! plugin whose handshake line is 10 MB. For each: what the daemon answered, whether
//! `/api/v1/health` kept answering (fresh connections, polled throughout), and the daemon's peak
//! resident memory during it.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

use crate::daemon::{Daemon, plugins_folder};
use crate::http::Client;
use crate::procs;

/// Sizes of the inputs.
#[derive(Debug)]
pub struct Sizes {
    /// Each of the three concurrent uploads, MiB.
    pub upload_mib: u64,
    /// What the gzip bomb unpacks to, MiB.
    pub bomb_mib: u64,
    /// Files in the many-files bundle.
    pub tar_files: usize,
    /// Connections held idle, and as many with a partial header.
    pub connections: usize,
    /// How long held connections are watched for the daemon closing them, seconds.
    pub hold_secs: u64,
}

/// Polls `/api/v1/health` on fresh connections until stopped.
struct Prober {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Prober {
    fn start(address: &str) -> Self {
        let (stop, ok, failed) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let (s, o, f, address) = (stop.clone(), ok.clone(), failed.clone(), address.to_owned());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let mut client = Client::new(&address, None).timeout(Duration::from_secs(5));
                match client.get("/api/v1/health") {
                    Ok(r) if r.status == 200 => o.fetch_add(1, Ordering::Relaxed),
                    _ => f.fetch_add(1, Ordering::Relaxed),
                };
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Self {
            stop,
            ok,
            failed,
            thread: Some(thread),
        }
    }

    /// (answered, not answered).
    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// Runs one case: resets the daemon's peak memory, probes health throughout, and records.
fn case(
    daemon: &Daemon,
    name: &str,
    input: &str,
    body: impl FnOnce() -> anyhow::Result<String>,
) -> serde_json::Value {
    // Writing 5 to clear_refs resets VmHWM to the current resident set (Linux ≥ 4.0), so each
    // case gets its own peak.
    let reset = std::fs::write(format!("/proc/{}/clear_refs", daemon.pid()), "5").is_ok();
    let before = procs::peak_rss(daemon.pid());
    let prober = Prober::start(&daemon.address);
    let began = Instant::now();
    let outcome = body().unwrap_or_else(|err| format!("harness error: {err:#}"));
    let seconds = began.elapsed().as_secs_f64();
    // One more probe after the case, so a short case still gets one.
    std::thread::sleep(Duration::from_millis(150));
    let (ok, failed) = prober.finish();
    let alive = procs::alive(daemon.pid());
    let peak = procs::peak_rss(daemon.pid());
    let mib = |b: Option<u64>| b.map(|b| (b as f64 / 1048576.0 * 10.0).round() / 10.0);
    let line = json!({
        "suite": "hostile input",
        "case": name,
        "input": input,
        "outcome": outcome,
        "health_answered": ok,
        "health_not_answered": failed,
        "daemon_alive": alive,
        "peak_rss_mib": mib(peak),
        "rss_before_mib": mib(before),
        "peak_is_per_case": reset,
        "seconds": seconds,
    });
    // One line per case as it ends: a case that brings the machine down still left the others.
    println!("{line}");
    line
}

pub async fn run(
    plugsconc: &Path,
    plugins: &Path,
    sizes: Sizes,
) -> anyhow::Result<serde_json::Value> {
    let root = tempfile::tempdir()?;
    plugins_folder(plugins, root.path(), &["cat"])?;
    let chatty = root.path().join("plugins/chatty");
    std::fs::create_dir_all(&chatty)?;
    chatty_plugin(&chatty)?;
    let daemon = Daemon::start(plugsconc, root.path(), &[])?;
    let cases = tokio::task::spawn_blocking(move || {
        let cases = all_cases(&daemon, &sizes);
        // Stopped here so its plugins go with it.
        daemon.stop()?;
        cases
    })
    .await??;
    Ok(json!({"suite": "hostile input", "summary": true, "cases": cases.len()}))
}

fn all_cases(daemon: &Daemon, sizes: &Sizes) -> anyhow::Result<Vec<serde_json::Value>> {
    let address = daemon.address.clone();
    let token = daemon.token.clone();
    let mut cases = Vec::new();
    let n = sizes.connections;
    let hold = Duration::from_secs(sizes.hold_secs);

    cases.push(case(
        daemon,
        "idle connections",
        &format!("{n} connections, nothing sent"),
        || held(&address, n, b"", hold),
    ));
    cases.push(case(
        daemon,
        "partial headers",
        &format!("{n} connections, a request line and one header, never finished"),
        || {
            held(
                &address,
                n,
                b"POST /api/v1/plugins/install HTTP/1.1\r\nHost: x\r\n",
                hold,
            )
        },
    ));

    let mut upload_mib = sizes.upload_mib;
    let available = mem_available_mib().unwrap_or(u64::MAX);
    // A daemon that buffers uploads holds all three at once (at least): keep that within a
    // quarter of the machine's available memory, and say so.
    let capped = upload_mib.saturating_mul(3) > available / 4;
    if capped {
        upload_mib = (available / 12).max(1);
    }
    cases.push(case(
        daemon,
        "3 concurrent huge uploads",
        &format!(
            "3 × {upload_mib} MiB install bodies, streamed{}",
            if capped {
                " (capped to the machine's memory)"
            } else {
                ""
            }
        ),
        || {
            let threads: Vec<_> = (0..3)
                .map(|_| {
                    let (address, token) = (address.clone(), token.clone());
                    std::thread::spawn(move || stream_upload(&address, &token, upload_mib << 20))
                })
                .collect();
            let statuses: Vec<String> = threads
                .into_iter()
                .map(|t| t.join().unwrap_or_else(|_| "panicked".into()))
                .collect();
            Ok(statuses.join(", "))
        },
    ));

    let bomb = gzip_bomb(sizes.bomb_mib << 20)?;
    cases.push(case(
        daemon,
        "gzip bomb",
        &format!(
            "{} .tar.gz unpacking to {} MiB",
            size(bomb.len()),
            sizes.bomb_mib
        ),
        || install(&address, &token, &bomb),
    ));
    drop(bomb);

    let many = many_files(sizes.tar_files)?;
    cases.push(case(
        daemon,
        "many files",
        &format!("{} .tar.gz of {} files", size(many.len()), sizes.tar_files),
        || install(&address, &token, &many),
    ));
    drop(many);

    let big = format!(
        r#"{{"task": "noop", "input": {{"pad": "{}"}}}}"#,
        "a".repeat(10 << 20)
    );
    cases.push(case(daemon, "huge JSON", "10 MiB JSON job", || {
        raw(
            &address,
            &token,
            "/api/v1/jobs",
            "application/json",
            big.as_bytes(),
        )
    }));
    drop(big);

    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    cases.push(case(
        daemon,
        "deep JSON",
        "100,000 nested arrays to a call",
        || {
            answer(
                Client::new(&address, Some(&token))
                    .post("/api/v1/plugins/cat/call/animal.Animal/Speak", &deep),
            )
        },
    ));
    // As a job's input (any JSON is accepted there), so the parser has to descend.
    let deep_job = format!(r#"{{"task": "noop", "input": {deep}}}"#);
    cases.push(case(
        daemon,
        "deep JSON job",
        "100,000 nested arrays as a job's input",
        || answer(Client::new(&address, Some(&token)).post("/api/v1/jobs", &deep_job)),
    ));

    cases.push(case(
        daemon,
        "invalid UTF-8",
        "JSON body with bytes ff fe",
        || {
            let mut body = br#"{"task": "noop", "input": ""#.to_vec();
            body.extend_from_slice(&[0xff, 0xfe, 0xc3, 0x28]);
            body.extend_from_slice(br#""}"#);
            answer(Client::new(&address, Some(&token)).send(
                "POST",
                "/api/v1/jobs",
                "application/json",
                &body,
            ))
        },
    ));

    cases.push(case(
        daemon,
        "10 MB handshake line",
        "a plugin printing a 10 MB first line, then called",
        || {
            answer(
                Client::new(&address, Some(&token))
                    .post("/api/v1/plugins/chatty/call/animal.Animal/Speak", "{}"),
            )
        },
    ));
    Ok(cases)
}

/// Status and error code of a response, with the start of its message.
fn answer(response: anyhow::Result<crate::http::Response>) -> anyhow::Result<String> {
    let response = response?;
    let message: String = response.body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect();
    Ok(format!("{} {} {message}", response.status, response.code())
        .trim_end()
        .to_owned())
}

/// One request on its own connection; the body is written as far as the daemon reads it, and
/// its answer is read even when it answered before the end (as a size limit does).
fn raw(
    address: &str,
    token: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(600)))?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    let cut = stream.write_all(body).err();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    let Some((head, rest)) = text.split_once("\r\n\r\n") else {
        return Ok(match cut {
            Some(err) => format!("no answer (write: {})", err.kind()),
            None => "no answer".to_owned(),
        });
    };
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = serde_json::from_str(rest).unwrap_or(serde_json::Value::Null);
    answer(Ok(crate::http::Response { status, body }))
}

/// Opens `n` connections, writes `prefix` on each, and watches for the daemon closing them.
fn held(address: &str, n: usize, prefix: &[u8], hold: Duration) -> anyhow::Result<String> {
    let mut streams = Vec::new();
    let mut refused = 0;
    for _ in 0..n {
        match TcpStream::connect(address) {
            Ok(mut stream) => {
                let _ = stream.write_all(prefix);
                stream.set_nonblocking(true)?;
                streams.push(stream);
            }
            Err(_) => refused += 1,
        }
    }
    let began = Instant::now();
    let mut closed = vec![None; streams.len()];
    let mut statuses = std::collections::BTreeMap::<String, usize>::new();
    while began.elapsed() < hold && closed.iter().any(Option::is_none) {
        for (stream, closed) in streams.iter_mut().zip(closed.iter_mut()) {
            if closed.is_some() {
                continue;
            }
            let mut buf = [0; 512];
            match stream.read(&mut buf) {
                Ok(0) => *closed = Some(began.elapsed()),
                Ok(read) => {
                    let text = String::from_utf8_lossy(&buf[..read]);
                    let status = text.split_whitespace().nth(1).unwrap_or("?").to_owned();
                    *statuses.entry(status).or_default() += 1;
                    *closed = Some(began.elapsed());
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => *closed = Some(began.elapsed()),
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let ended: Vec<Duration> = closed.iter().flatten().copied().collect();
    let last = ended.iter().max().map(|d| d.as_secs_f64());
    Ok(format!(
        "{} of {} closed by the daemon within {} s{}{}{}",
        ended.len(),
        streams.len(),
        hold.as_secs(),
        last.map_or_else(String::new, |s| format!(" (last after {s:.1} s)")),
        if statuses.is_empty() {
            String::new()
        } else {
            format!(", answers {statuses:?}")
        },
        if refused > 0 {
            format!(", {refused} refused at connect")
        } else {
            String::new()
        }
    ))
}

/// Streams `bytes` of generated data as an install body; the status, or how it ended.
fn stream_upload(address: &str, token: &str, bytes: u64) -> String {
    let run = || -> anyhow::Result<String> {
        let mut stream = TcpStream::connect(address)?;
        stream.set_read_timeout(Some(Duration::from_secs(600)))?;
        write!(
            stream,
            "POST /api/v1/plugins/install HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/gzip\r\nContent-Length: {bytes}\r\nConnection: close\r\n\r\n"
        )?;
        let chunk: Vec<u8> = (0..1 << 16)
            .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let mut sent = 0u64;
        let mut cut = None;
        while sent < bytes {
            let n = (bytes - sent).min(chunk.len() as u64) as usize;
            if let Err(err) = stream.write_all(&chunk[..n]) {
                cut = Some(format!("cut after {} MiB ({})", sent >> 20, err.kind()));
                break;
            }
            sent += n as u64;
        }
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        let text = String::from_utf8_lossy(&response);
        let status = text
            .split_whitespace()
            .nth(1)
            .unwrap_or("no answer")
            .to_owned();
        Ok(match cut {
            Some(cut) => format!("{status} ({cut})"),
            None => status,
        })
    };
    run().unwrap_or_else(|err| format!("error: {err}"))
}

/// POSTs a bundle to the install route.
fn install(address: &str, token: &str, bundle: &[u8]) -> anyhow::Result<String> {
    raw(
        address,
        token,
        "/api/v1/plugins/install",
        "application/gzip",
        bundle,
    )
}

/// A `.tar.gz` holding a manifest and one file of `bytes` zeros, built without holding it.
fn gzip_bomb(bytes: u64) -> anyhow::Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let mut tar = tar::Builder::new(gz);
    let manifest =
        b"plugin:\n  name: bomb\n  type: animal\n  version: 0.1.0\n  entrypoint: ./bomb\n";
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "manifest.yaml", &manifest[..])?;
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes);
    header.set_mode(0o755);
    header.set_cksum();
    tar.append_data(&mut header, "bomb", std::io::repeat(0).take(bytes))?;
    Ok(tar.into_inner()?.finish()?)
}

/// A `.tar.gz` of `files` empty files.
fn many_files(files: usize) -> anyhow::Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for i in 0..files {
        let mut header = tar::Header::new_gnu();
        header.set_size(0);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, format!("f{i:06}"), std::io::empty())?;
    }
    Ok(tar.into_inner()?.finish()?)
}

/// A plugin whose first stdout line (the handshake) is 10 MB, written by the shell's builtins
/// alone: the sandbox lets a plugin exec its interpreter but not fork (no command substitution).
/// The host stops reading long before the end, so the script blocks on its full pipe.
fn chatty_plugin(dir: &Path) -> anyhow::Result<()> {
    let chunk = "0".repeat(1000);
    let script = format!(
        "#!/bin/sh\ni=0\nwhile [ $i -lt 10000 ]; do printf %s {chunk}; i=$((i+1)); done\necho\n"
    );
    let entry = dir.join("chatty");
    std::fs::write(&entry, script)?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o755))?;
    let digest = plugsconc_host::sha256_file(&entry)?.to_hex();
    std::fs::write(dir.join("chatty.sha256"), format!("{digest}  chatty\n"))?;
    std::fs::write(
        dir.join("manifest.yaml"),
        "plugin:\n  name: chatty\n  type: animal\n  version: 0.1.0\n  entrypoint: ./chatty\nhandshake:\n  protocol_version: 1\n  magic_cookie_key: ANIMAL_PLUGIN\n  magic_cookie_value: animal\n",
    )
    .context("writing the chatty manifest")?;
    Ok(())
}

/// A byte count for people.
fn size(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / 1048576.0)
    } else {
        format!("{:.0} KiB", bytes as f64 / 1024.0)
    }
}

fn mem_available_mib() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? / 1024)
}
