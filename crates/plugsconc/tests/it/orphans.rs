//! No plugin outlives its daemon: after `kill -9` of `plugsconc serve`, its Rust, Go and Python
//! plugins exit (the kernel kills them with their host), and the next daemon on the same data
//! folder ends whatever a dead one left running and removes its socket folders.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use crate::serve::{Daemon, example_plugins, send, serve_env, token};
use crate::support;

/// Starts the daemon on `root` with its temp folder (where socket folders go) in `tmp`.
fn serve_in(root: &Path, tmp: &Path) -> (Daemon, String) {
    let (daemon, address, stdout) = serve_env(root, &[], &[("TMPDIR", tmp.as_os_str())]);
    // Keep reading stdout so the daemon never blocks on a full pipe.
    std::thread::spawn(move || for _ in stdout.lines() {});
    (daemon, address)
}

/// The `/proc/<pid>/stat` fields after the command name: state, ppid, ..., start time.
fn stat(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = text.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|f| f[0] != "Z" && f[0] != "X")
}

/// Live processes whose parent is `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| alive(pid) && stat(pid).is_some_and(|f| f[1] == parent.to_string()))
        .collect()
}

/// Socket folders in `tmp`.
fn socket_folders(tmp: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(tmp)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("plugsconc-"))
        })
        .collect()
}

/// Polls `done` for up to 30 s.
fn eventually(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..600 {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

/// A plugin folder `kv-go` holding the go-plugin kv plugin, with kv's manifest and protos.
fn go_plugin_folder(plugins: &Path, binary: &Path) {
    let dir = plugins.join("kv-go");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(binary, dir.join("kv-go")).unwrap();
    let digest = plugsconc_host::sha256_file(&dir.join("kv-go"))
        .unwrap()
        .to_hex();
    std::fs::write(dir.join("kv-go.sha256"), format!("{digest}  kv-go\n")).unwrap();
    let manifest = std::fs::read_to_string(plugins.join("kv/manifest.yaml"))
        .unwrap()
        .replace("name: kv", "name: kv-go")
        .replace("./kv", "./kv-go");
    std::fs::write(dir.join("manifest.yaml"), manifest).unwrap();
    std::fs::create_dir_all(dir.join("proto/kvpb")).unwrap();
    std::fs::copy(
        support::proto("kvpb/kv.proto"),
        dir.join("proto/kvpb/kv.proto"),
    )
    .unwrap();
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

fn sigterm(daemon: &mut Daemon) {
    let pid = i32::try_from(daemon.0.id()).unwrap();
    // SAFETY: sending SIGTERM to our own child process.
    assert_eq!(unsafe { libc_kill(pid, 15) }, 0);
    assert!(daemon.0.wait().unwrap().success());
}

#[test]
fn plugins_die_with_a_daemon_killed_with_sigkill() {
    let root = tempfile::tempdir().unwrap();
    let tmp = root.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    example_plugins(root.path());
    let plugins = root.path().join("plugins");
    // Plugin, method and JSON request of each plugin to start.
    let mut calls = vec![("kv", "kv.KV/Put", r#"{"key": "a", "value": "aGk="}"#)];
    match support::go_bins() {
        Some(go) => {
            go_plugin_folder(&plugins, &go.plugin);
            calls.push(("kv-go", "kv.KV/Put", r#"{"key": "a", "value": "aGk="}"#));
        }
        None => support::skip(
            "plugins_die_with_a_daemon_killed_with_sigkill (Go plugin)",
            "the Go toolchain with go-plugin is not installed",
        ),
    }
    if support::python_ready() {
        calls.push((
            "python-animal",
            "animal.Animal/Speak",
            r#"{"is_loud": true}"#,
        ));
    } else {
        support::skip(
            "plugins_die_with_a_daemon_killed_with_sigkill (Python plugin)",
            "python3 with grpcio, grpcio-tools and grpcio-health-checking is not installed",
        );
    }

    let (mut daemon, address) = serve_in(root.path(), &tmp);
    let daemon_pid = daemon.0.id();
    let token = token(root.path());
    for (plugin, method, body) in &calls {
        let (status, reply) = send(
            &address,
            "POST",
            &format!("/api/v1/plugins/{plugin}/call/{method}"),
            Some(&token),
            body,
        );
        assert_eq!(status, 200, "{plugin}: {reply}");
    }
    let plugin_pids = children_of(daemon_pid);
    assert!(
        plugin_pids.len() >= calls.len(),
        "expected a process per plugin {calls:?}, found {plugin_pids:?}"
    );
    let folders = socket_folders(&tmp);
    assert!(folders.len() >= calls.len(), "{folders:?}");

    daemon.0.kill().unwrap(); // SIGKILL: nothing runs in the daemon after this.
    daemon.0.wait().unwrap();
    assert!(
        eventually(|| plugin_pids.iter().all(|&pid| !alive(pid))),
        "plugins outlived their daemon: {:?}",
        plugin_pids
            .iter()
            .filter(|&&pid| alive(pid))
            .collect::<Vec<_>>()
    );

    // The next daemon removes the socket folders the dead one could not.
    let (mut daemon, _address) = serve_in(root.path(), &tmp);
    assert!(
        eventually(|| folders.iter().all(|f| !f.exists())),
        "socket folders left: {:?}",
        folders.iter().filter(|f| f.exists()).collect::<Vec<_>>()
    );
    sigterm(&mut daemon);
}

/// A `sleep` in its own process group, standing for a plugin whose host died.
fn stray() -> Child {
    use std::os::unix::process::CommandExt as _;
    Command::new("sleep")
        .arg("1000")
        .process_group(0)
        .spawn()
        .unwrap()
}

fn start_time(pid: u32) -> u64 {
    stat(pid).unwrap()[19].parse().unwrap()
}

#[test]
fn a_restarted_daemon_ends_what_a_dead_one_left() {
    let root = tempfile::tempdir().unwrap();
    let tmp = root.path().join("tmp");
    let records = root.path().join("data/launched");
    std::fs::create_dir_all(&records).unwrap();
    std::fs::create_dir_all(root.path().join("plugins")).unwrap();
    // What a dead daemon left: a plugin process still running (as if its death signal had not
    // been set), its socket folder; and a record whose pid has since been reused by an
    // unrelated process (another start time), which must be left alone.
    let mut left = stray();
    let mut unrelated = stray();
    let folder = tmp.join("plugsconc-4000000-0");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("plugin123"), b"").unwrap();
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let record = serde_json::json!({
        "host": {"pid": 4_000_000, "start_time": 1},
        "boot_id": boot_id.trim(),
        "launches": [
            {
                "plugin": "kv",
                "process": {"pid": left.id(), "start_time": start_time(left.id())},
                "socket_dir": folder,
                "cgroup": null,
            },
            {
                "plugin": "cat",
                "process": {"pid": unrelated.id(), "start_time": start_time(unrelated.id()) + 1},
                "socket_dir": null,
                "cgroup": null,
            },
        ],
    });
    std::fs::write(records.join("4000000-0.json"), record.to_string()).unwrap();

    let (mut daemon, _address) = serve_in(root.path(), &tmp);
    assert!(
        eventually(|| left.try_wait().unwrap().is_some()),
        "the leftover plugin process was not ended"
    );
    assert!(!folder.exists(), "its socket folder was not removed");
    assert!(
        unrelated.try_wait().unwrap().is_none(),
        "a process with a recycled pid was killed"
    );
    assert!(!records.join("4000000-0.json").exists());
    sigterm(&mut daemon);
    unrelated.kill().unwrap();
    unrelated.wait().unwrap();
}
