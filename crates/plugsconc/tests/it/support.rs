//! Shared by the integration tests: building the example plugins and the Go interop binaries
//! once, and skipping loudly (or failing in CI) when a toolchain is missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `target/` folder cargo builds into.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), PathBuf::from)
}

/// A `.proto` of the repository.
pub fn proto(relative: &str) -> PathBuf {
    workspace().join("proto").join(relative)
}

/// Path of an example plugin binary (`kv`, `cat`, `dog`, `misbehave`), built once per run.
pub fn example_bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .current_dir(workspace())
            .args([
                "build",
                "-q",
                "-p",
                "kv",
                "-p",
                "cat",
                "-p",
                "dog",
                "-p",
                "misbehave",
            ])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the example plugins failed");
    });
    target_dir().join("debug").join(name)
}

/// Path of the `plugsconc` binary under test.
pub fn plugsconc_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_plugsconc"))
}

/// The PostgreSQL database of the tests: `PLUGSCONC_TEST_DATABASE_URL`, by default the local
/// server's `test` database (trust auth).
pub fn database_url() -> String {
    std::env::var("PLUGSCONC_TEST_DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// The `host:port` of [`database_url`] (port 5432 when it names none).
pub fn database_address() -> String {
    let url = database_url();
    let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    if host
        .rsplit_once(':')
        .is_some_and(|(_, port)| port.parse::<u16>().is_ok())
    {
        host.to_owned()
    } else {
        format!("{host}:5432")
    }
}

/// Whether a missing toolchain must fail the test instead of skipping it (set in CI).
fn required() -> bool {
    std::env::var_os("PLUGSCONC_REQUIRE_INTEROP").is_some_and(|v| v == "1")
}

/// Says loudly why a test did not run, or fails when interop is required.
pub fn skip(test: &str, why: &str) {
    assert!(
        !required(),
        "{test}: {why} (PLUGSCONC_REQUIRE_INTEROP=1, so this fails)"
    );
    eprintln!("\n*** SKIPPED {test}: {why}. Install it to run the interop tests. ***\n");
}

/// The Go host and plugin on HashiCorp go-plugin, built once; `None` when Go is missing.
pub fn go_bins() -> Option<&'static GoBins> {
    static BINS: OnceLock<Option<GoBins>> = OnceLock::new();
    BINS.get_or_init(|| {
        if Command::new("go").arg("version").output().is_err() {
            return None;
        }
        let out = target_dir().join("interop-go");
        let status = Command::new("bash")
            .arg(workspace().join("interop/go/build.sh"))
            .arg(&out)
            .status()
            .expect("bash runs");
        assert!(status.success(), "interop/go/build.sh failed");
        Some(GoBins {
            host: out.join("kvhost-go"),
            plugin: out.join("kvplugin-go"),
        })
    })
    .as_ref()
}

/// Paths of the Go interop binaries.
#[derive(Debug)]
pub struct GoBins {
    /// go-plugin host driving a kv plugin (`-plugin <path> [-automtls] [-callback]`).
    pub host: PathBuf,
    /// go-plugin kv plugin (cookie `BASIC_PLUGIN=hello`).
    pub plugin: PathBuf,
}

/// Whether python3 with grpcio is available for the Python example plugin.
pub fn python_ready() -> bool {
    Command::new("python3")
        .args(["-c", "import grpc, grpc_tools, grpc_health"])
        .output()
        .is_ok_and(|o| o.status.success())
}
