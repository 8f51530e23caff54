//! Building the test plugin once, starting it in a chosen mode, and checking processes are gone.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use plugsconc_host::{ClientBuilder, PluginClient};
use plugsconc_protocol::env::HandshakeConfig;

/// The binary of workspace package `name` (`misbehave`, `cat`, `dog`), all built once per run.
pub fn example_bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
            let status = Command::new(env!("CARGO"))
                .current_dir(&workspace)
                .args([
                    "build",
                    "-q",
                    "-p",
                    "misbehave",
                    "-p",
                    "cat",
                    "-p",
                    "dog",
                    "-p",
                    "hostile",
                ])
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building the test plugins failed");
            std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| workspace.join("target"), PathBuf::from)
                .join("debug")
        })
        .join(name)
}

/// The `misbehave` test plugin.
pub fn misbehave_bin() -> PathBuf {
    example_bin("misbehave")
}

/// A builder for the test plugin in `mode`, recording its pids in `pid_file`.
pub fn builder(mode: &str, pid_file: &Path) -> ClientBuilder {
    PluginClient::builder(format!("misbehave-{mode}"), misbehave_bin())
        .handshake(HandshakeConfig::new(1, "BASIC_PLUGIN", "hello"))
        .env("MISBEHAVE", mode)
        .env("MISBEHAVE_PID_FILE", pid_file)
        .start_timeout(Duration::from_secs(20))
}

/// The pids the plugin wrote (itself first).
pub fn pids(pid_file: &Path) -> Vec<u32> {
    std::fs::read_to_string(pid_file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// Waits (generously) until every pid is gone, and fails naming the survivors.
pub async fn assert_gone(pids: &[u32]) {
    assert!(!pids.is_empty(), "the plugin recorded no pid");
    for _ in 0..1000 {
        if pids.iter().all(|p| !alive(*p)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let left: Vec<_> = pids.iter().filter(|p| alive(**p)).collect();
    panic!("processes left behind: {left:?}");
}
