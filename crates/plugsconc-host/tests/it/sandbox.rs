//! The OS sandbox against a hostile plugin: every attempt beyond its manifest's grants is denied
//! by the kernel while the host stays up, and the same plugin with the grants added succeeds, so
//! the grants are proven to work and not only the denials.

use std::net::{TcpListener, UdpSocket};
use std::path::Path;

use example_contracts::kv::GetRequest;
use example_contracts::kv::kv_client::KvClient;
use plugsconc_host::sandbox::landlock_abi;
use plugsconc_host::signature::Trust;
use plugsconc_host::{Registry, RegistryOptions, Status};

use crate::support::{alive, example_bin};

/// The hostile plugin in `root/hostile` with `extra` appended to its manifest.
fn put_hostile(root: &Path, extra: &str) {
    let dir = root.join("hostile");
    std::fs::create_dir_all(&dir).unwrap();
    let binary = dir.join("hostile");
    if !binary.exists() {
        std::fs::copy(example_bin("hostile"), &binary).unwrap();
        let digest = plugsconc_host::sha256_file(&binary).unwrap().to_hex();
        std::fs::write(dir.join("hostile.sha256"), format!("{digest}  hostile\n")).unwrap();
    }
    std::fs::write(
        dir.join("manifest.yaml"),
        format!(
            "plugin:\n  name: hostile\n  type: kv\n  version: 1.0.0\n  entrypoint: ./hostile\nhandshake:\n  protocol_version: 1\n  magic_cookie_key: BASIC_PLUGIN\n  magic_cookie_value: hello\n{extra}"
        ),
    )
    .unwrap();
}

/// Registry options for the unsigned test plugin (the sandbox as configured by default).
fn unsigned() -> RegistryOptions {
    RegistryOptions {
        trust: Trust::allow_unsigned(),
        ..RegistryOptions::default()
    }
}

/// A registry over `root` with [`unsigned`] options.
async fn open_registry(root: &Path) -> Registry {
    Registry::open(root, unsigned()).await.unwrap()
}

/// Asks the plugin to try `attempt` and returns what it reports.
async fn attempt(registry: &Registry, attempt: &str) -> String {
    let handle = registry.grpc("hostile").unwrap();
    let lease = handle.get().await.unwrap();
    let reply = KvClient::new((*lease).clone())
        .get(GetRequest {
            key: attempt.to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    String::from_utf8(reply.value).unwrap()
}

fn assert_denied(report: &str, attempt: &str) {
    eprintln!("{attempt} -> {report}");
    assert!(
        report.starts_with("denied:"),
        "{attempt} should be denied: {report}"
    );
}

fn assert_allowed(report: &str, attempt: &str) {
    eprintln!("{attempt} -> {report}");
    assert!(
        report.starts_with("ok:"),
        "{attempt} should be allowed: {report}"
    );
}

struct Targets {
    _outside: tempfile::TempDir,
    secret: String,
    out_dir: String,
    tcp: TcpListener,
    udp: UdpSocket,
}

fn targets() -> Targets {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.txt");
    std::fs::write(&secret, "the host's secret").unwrap();
    let out_dir = outside.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    Targets {
        secret: secret.display().to_string(),
        out_dir: out_dir.display().to_string(),
        _outside: outside,
        tcp: TcpListener::bind("127.0.0.1:0").unwrap(),
        udp: UdpSocket::bind("127.0.0.1:0").unwrap(),
    }
}

#[tokio::test]
async fn a_hostile_plugin_is_held_to_its_grants_and_the_grants_work() {
    if landlock_abi() < 6 {
        // The machines this project runs CI on have ABI 7; a kernel without Landlock is
        // covered by the report test below.
        eprintln!("skipping: the kernel's Landlock ABI is {}", landlock_abi());
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let t = targets();
    let tcp_port = t.tcp.local_addr().unwrap().port();
    let udp_port = t.udp.local_addr().unwrap().port();
    put_hostile(root.path(), "resources:\n  memory_mb: 64\n");
    let mut options = unsigned();
    options.sandbox.data_root = Some(data.path().to_owned());
    let registry = Registry::open(root.path(), options).await.unwrap();

    let own_file = root.path().join("hostile/manifest.yaml");
    let denied = [
        format!("read:{}", t.secret),
        format!("write:{}/stolen", t.out_dir),
        // Its own folder is read-only to it: a plugin cannot rewrite its manifest or binary.
        format!("write:{}", own_file.display()),
        format!("connect:{tcp_port}"),
        format!("udp:{udp_port}"),
        "exec:/bin/true".to_owned(),
        "signal-host:".to_owned(),
        "fork:64".to_owned(),
        "alloc:1024".to_owned(),
        // What a root host's capabilities would allow, had they been kept.
        "raw:".to_owned(),
        "lift-memory:".to_owned(),
        // The host's environment stays with the host (cargo sets this for the test).
        "env:CARGO_MANIFEST_DIR".to_owned(),
    ];
    for attack in &denied {
        assert_denied(&attempt(&registry, attack).await, attack);
    }
    // What it needs to work is there: its own folder to read, a private temp and data folder.
    assert_allowed(
        &attempt(&registry, &format!("read:{}", own_file.display())).await,
        "read own",
    );
    let private = data.path().join("hostile/note");
    assert_allowed(
        &attempt(&registry, &format!("write:{}", private.display())).await,
        "write data",
    );
    assert_allowed(&attempt(&registry, "alloc:16").await, "alloc within limit");
    assert_allowed(&attempt(&registry, "env:PATH").await, "PATH is passed on");

    // Still the same process: every denial was an error to it, not a crash, and the host is up.
    let info = registry.get("hostile").unwrap();
    assert_eq!(info.status, Status::Ready);
    assert_eq!(info.restarts, 0);
    let protections = info.sandbox.expect("sandboxed");
    assert!(protections.missing.is_empty(), "{protections:?}");
    let enforced = protections.enforced.join("; ");
    for expected in [
        "landlock filesystem",
        "landlock tcp",
        "landlock scopes",
        "seccomp: no new processes",
        "seccomp: no udp",
        "address space 320 MiB",
        "no_new_privs",
    ] {
        assert!(
            enforced.contains(expected),
            "{expected} missing from {enforced}"
        );
    }

    // The same plugin, granted what it tried: every attempt now succeeds.
    put_hostile(
        root.path(),
        &format!(
            "resources:\n  memory_mb: 2048\ncapabilities:\n  filesystem:\n    - {{path: {secret}, permissions: [read]}}\n    - {{path: {out}, permissions: [write, create], recursive: true}}\n  network:\n    egress:\n      - {{protocol: tcp, hosts: [127.0.0.1], ports: [{tcp_port}]}}\n      - {{protocol: udp, hosts: [127.0.0.1], ports: [{udp_port}]}}\n  process:\n    - exec: {{command: /bin/true, args: []}}\n",
            secret = t.secret,
            out = t.out_dir,
        ),
    );
    registry
        .sync_dir(&root.path().join("hostile"))
        .await
        .unwrap();
    let granted = [
        format!("read:{}", t.secret),
        format!("write:{}/stolen", t.out_dir),
        format!("connect:{tcp_port}"),
        format!("udp:{udp_port}"),
        "exec:/bin/true".to_owned(),
        "fork:4".to_owned(),
        "alloc:1024".to_owned(),
    ];
    for attack in &granted {
        assert_allowed(&attempt(&registry, attack).await, attack);
    }
    // Read-only stays read-only: the secret is granted `read`, not `write`.
    assert_denied(
        &attempt(&registry, &format!("write:{}", t.secret)).await,
        "write a read-only grant",
    );
    // Signals outside the plugin stay scoped: there is no grant that lets it signal its host.
    assert_denied(&attempt(&registry, "signal-host:").await, "signal-host");
    assert_eq!(
        std::fs::read_to_string(format!("{}/stolen", t.out_dir)).unwrap(),
        "hostile"
    );
    registry.shutdown().await;
}

#[tokio::test]
async fn a_required_sandbox_is_reported_and_refused_when_incomplete() {
    let root = tempfile::tempdir().unwrap();
    put_hostile(root.path(), "");
    let mut options = unsigned();
    options.sandbox.require = true;
    let registry = Registry::open(root.path(), options).await.unwrap();
    let started = registry.start("hostile").await;
    let info = registry.get("hostile").unwrap();
    if landlock_abi() >= 6 {
        // Everything this kernel is asked for is there: a required sandbox starts.
        started.unwrap();
        let protections = info.sandbox.unwrap();
        assert!(protections.missing.is_empty(), "{protections:?}");
    } else {
        let err = started.unwrap_err().to_string();
        assert!(err.contains("sandbox is required"), "{err}");
        assert_eq!(info.status, Status::Failed);
    }
    registry.shutdown().await;
}

#[tokio::test]
async fn a_plugin_over_its_memory_limit_is_reported_and_restarted_by_its_policy() {
    let root = tempfile::tempdir().unwrap();
    put_hostile(
        root.path(),
        // Well above a fresh (debug) plugin's resident size.
        "resources:\n  memory_mb: 160\n  policy: restart\n",
    );
    let mut options = RegistryOptions {
        monitor_interval: Some(std::time::Duration::from_millis(50)),
        ..unsigned()
    };
    // The address-space rlimit would stop the allocation itself; this test is about the monitor.
    options.sandbox.enabled = false;
    let registry = Registry::open(root.path(), options).await.unwrap();
    let mut events = registry.subscribe();
    // The monitor may kill the plugin before it answers (the allocation takes a while in a
    // debug build): whether this reply arrives is not the point, the alert is.
    let handle = registry.grpc("hostile").unwrap();
    let lease = handle.get().await.unwrap();
    let held = KvClient::new((*lease).clone())
        .get(GetRequest {
            key: "hold:320".to_owned(),
        })
        .await;
    drop(lease);
    if let Ok(reply) = held {
        assert_allowed(&String::from_utf8_lossy(&reply.into_inner().value), "hold");
    }
    let alert = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        loop {
            if let Ok(plugsconc_host::Event::ResourceAlert {
                violation, policy, ..
            }) = events.recv().await
            {
                return (violation, policy);
            }
        }
    })
    .await
    .expect("a resource alert");
    assert_eq!(alert.0.resource, "memory_mb");
    assert!(
        alert.0.value > 160.0 && (alert.0.limit - 160.0).abs() < f64::EPSILON,
        "{:?}",
        alert.0
    );
    assert_eq!(alert.1, plugsconc_host::manifest::LimitPolicy::Restart);
    // Restarted with the reason, and serving again from a fresh process.
    assert_allowed(&attempt(&registry, "read:/dev/null").await, "after restart");
    let info = registry.get("hostile").unwrap();
    assert_eq!(info.restarts, 1, "{info:?}");
    let reason = info.reason.unwrap_or_default();
    assert!(
        reason.contains("memory_mb") && reason.contains("over its limit of 160"),
        "{reason}"
    );
    assert!(info.usage.is_some());
    registry.shutdown().await;
}

/// A TCP server that echoes what it reads, for the network service's relay.
fn echo_server(listener: TcpListener) {
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = stream.try_clone().unwrap();
                let mut writer = stream;
                let _ = std::io::copy(&mut reader, &mut writer);
            });
        }
    });
}

#[tokio::test]
async fn host_services_check_every_request_against_the_grants() {
    let root = tempfile::tempdir().unwrap();
    let t = targets();
    let port = t.tcp.local_addr().unwrap().port();
    echo_server(t.tcp.try_clone().unwrap());
    std::os::unix::fs::symlink("/etc", format!("{}/escape", t.out_dir)).unwrap();
    put_hostile(root.path(), "");
    let registry = open_registry(root.path()).await;
    let requests = [
        format!("svc-read:{}", t.secret),
        format!("svc-write:{}/through-host", t.out_dir),
        format!("svc-dial:{port}"),
        "svc-exec:/bin/true".to_owned(),
        "svc-signal-host:".to_owned(),
    ];
    for request in &requests {
        let report = attempt(&registry, request).await;
        assert_denied(&report, request);
        assert!(
            report.contains("PermissionDenied") && report.contains("hostile"),
            "{report}"
        );
    }

    put_hostile(
        root.path(),
        &format!(
            "capabilities:\n  filesystem:\n    - {{path: {secret}, permissions: [read]}}\n    - {{path: {out}, permissions: [read, write, create], recursive: true}}\n  network:\n    egress:\n      - {{protocol: tcp, hosts: [127.0.0.1], ports: [{port}]}}\n  process:\n    - exec: {{command: /bin/true, args: []}}\n    - signal: [children]\n",
            secret = t.secret,
            out = t.out_dir,
        ),
    );
    registry
        .sync_dir(&root.path().join("hostile"))
        .await
        .unwrap();
    assert_eq!(
        attempt(&registry, &requests[0]).await,
        "ok: 17 bytes",
        "read granted"
    );
    assert_allowed(&attempt(&registry, &requests[1]).await, "write granted");
    assert_eq!(
        std::fs::read_to_string(format!("{}/through-host", t.out_dir)).unwrap(),
        "hostile"
    );
    let dial = attempt(&registry, &requests[2]).await;
    assert_eq!(dial, "ok: echoed Some(\"ping\")");
    assert_eq!(attempt(&registry, &requests[3]).await, "ok: exit code 0");
    // Still out of scope: the host is neither the plugin nor one of its children.
    assert_denied(&attempt(&registry, &requests[4]).await, "signal host");
    // Listening needs an ingress grant for the port.
    let free = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    assert_denied(
        &attempt(&registry, &format!("svc-listen:{free}")).await,
        "listen",
    );
    // A link inside a granted folder does not lead out of it.
    let escape = format!("svc-read:{}/escape/hostname", t.out_dir);
    let report = attempt(&registry, &escape).await;
    assert!(
        report.contains("PermissionDenied") && report.contains("resolved to /etc/hostname"),
        "{report}"
    );
    registry.shutdown().await;
}

#[tokio::test]
async fn a_call_past_the_execution_limit_is_cancelled_and_the_plugin_keeps_serving() {
    let root = tempfile::tempdir().unwrap();
    put_hostile(root.path(), "resources:\n  execution_ms: 2000\n");
    let registry = open_registry(root.path()).await;
    assert_eq!(attempt(&registry, "sleep:1").await, "ok: slept 1 ms");
    let handle = registry.grpc("hostile").unwrap();
    let lease = handle.get().await.unwrap();
    let status = KvClient::new((*lease).clone())
        .get(GetRequest {
            key: "sleep:60000".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Cancelled, "{status:?}");
    assert_eq!(status.message(), "Timeout expired");
    drop(lease);
    // The same process answers the next call: only the call was cancelled.
    let pid = registry.get("hostile").unwrap().pid;
    assert_eq!(attempt(&registry, "sleep:1").await, "ok: slept 1 ms");
    assert_eq!(registry.get("hostile").unwrap().pid, pid);
    registry.shutdown().await;
}

#[tokio::test]
async fn what_a_plugin_started_outside_its_process_group_dies_with_it() {
    let root = tempfile::tempdir().unwrap();
    put_hostile(
        root.path(),
        "capabilities:\n  process:\n    - exec: {command: /usr/bin/sleep, args: ['*']}\n",
    );
    let registry = open_registry(root.path()).await;
    let report = attempt(&registry, "escape:/usr/bin/sleep").await;
    let pid: u32 = report
        .strip_prefix("ok: ")
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("{report}"));
    let protections = registry.get("hostile").unwrap().sandbox.unwrap();
    let tree_kill = protections
        .enforced
        .iter()
        .any(|p| p.contains("cgroup.kill"));
    assert!(
        alive(pid),
        "the escaped process should run while the plugin does"
    );
    registry.shutdown().await;
    if !tree_kill {
        eprintln!("skipping the tree-kill check: {:?}", protections.unenforced);
        // Not ours to leave behind.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        return;
    }
    // Killed with the plugin's cgroup, though it left the process group.
    for _ in 0..500 {
        if !alive(pid) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("process {pid}, started by the plugin in a new session, outlived it");
}

#[tokio::test]
async fn the_host_listens_for_a_plugin_with_an_ingress_grant() {
    let root = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    put_hostile(
        root.path(),
        &format!(
            "capabilities:\n  network:\n    ingress:\n      - {{protocol: tcp, ports: [{port}], allowed_origins: [127.0.0.1]}}\n"
        ),
    );
    let registry = open_registry(root.path()).await;
    let listening = {
        let registry = registry.clone();
        tokio::spawn(async move { attempt(&registry, &format!("svc-listen:{port}")).await })
    };
    // The plugin's call returns only once a connection came: connect when the host listens.
    let mut connection = None;
    for _ in 0..600 {
        if let Ok(stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            connection = Some(stream);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut stream = connection.expect("the host listens for the plugin");
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    stream.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    stream.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ping");
    drop(stream);
    let report = listening.await.unwrap();
    assert!(
        report.starts_with("ok: echoed \"ping\" from 127.0.0.1:"),
        "{report}"
    );
    registry.shutdown().await;
}
