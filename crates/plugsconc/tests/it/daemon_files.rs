//! What the daemon keeps in its folders: the `.disabled` markers brought back in line with the
//! store when a kill left them disagreeing, and the `daemon.json` through which the CLI finds a
//! daemon listening where its configuration does not say.

use std::io::Read as _;
use std::process::{Command, Output};

use crate::plugins_cli::plugin;
use crate::serve::{get, libc_kill, request, serve, token};
use crate::support;

#[test]
fn markers_disagreeing_with_the_store_are_corrected_at_start() {
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    plugin(&plugins, "cat", true);
    plugin(&plugins, "dog", true);
    let (mut daemon, address, _stdout) = serve(root.path(), &[]);
    let token = token(root.path());
    for (path, want) in [
        ("/api/v1/plugins/cat/disable", "disabled"),
        ("/api/v1/plugins/dog/enable", "discovered"),
    ] {
        let (status, body) = request(&address, "POST", path, Some(&token));
        assert_eq!(
            (status, body["status"].as_str()),
            (200, Some(want)),
            "{body}"
        );
    }
    daemon.0.kill().unwrap(); // SIGKILL
    daemon.0.wait().unwrap();
    // As if each daemon had been killed between its store write and its marker.
    std::fs::remove_file(plugins.join("cat/.disabled")).unwrap();
    std::fs::write(plugins.join("dog/.disabled"), b"").unwrap();

    let (_daemon, address, _stdout) = serve(root.path(), &[]);
    assert!(
        plugins.join("cat/.disabled").exists(),
        "the store says cat is disabled"
    );
    assert!(
        !plugins.join("dog/.disabled").exists(),
        "the store says dog is enabled"
    );
    assert_eq!(get(&address, "/api/v1/plugins/cat").1["status"], "disabled");
    assert_eq!(
        get(&address, "/api/v1/plugins/dog").1["status"],
        "discovered"
    );
}

/// Runs `plugsconc <args>` in `root`, without the daemon's flags.
fn cli(root: &std::path::Path, args: &[&str]) -> Output {
    Command::new(support::plugsconc_bin())
        .current_dir(root)
        .env_remove("PLUGSCONC_API_LISTEN")
        .env_remove("PLUGSCONC_DAEMON")
        .args(args)
        .output()
        .unwrap()
}

/// The plugin names `plugins list --json` printed, when it listed a daemon's catalog (whose
/// entries count restarts; the folder's do not).
fn listed(out: &Output) -> Vec<String> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    list.iter()
        .filter(|p| p.get("restarts").is_some())
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_cli_finds_a_daemon_listening_where_the_configuration_does_not_say() {
    // Each daemon listens on a port of its own (--set api.listen), which the CLI is not told.
    let here = tempfile::tempdir().unwrap();
    plugin(&here.path().join("plugins"), "cat", true);
    let cow = ["--set", "application.builtins=cow"];
    let (mut daemon, _address, mut stdout) = serve(here.path(), &cow);
    let record = here.path().join("data/daemon.json");
    assert!(record.exists(), "written once the daemon listens");
    let elsewhere = tempfile::tempdir().unwrap();
    plugin(&elsewhere.path().join("plugins"), "dog", true);
    let (_other, other_address, _other_stdout) = serve(elsewhere.path(), &cow);

    assert_eq!(
        listed(&cli(here.path(), &["plugins", "list", "--json"])),
        ["cat", "cow"]
    );
    assert!(
        listed(&cli(here.path(), &["plugins", "--local", "list", "--json"])).is_empty(),
        "--local reads the folder"
    );
    // --daemon wins over daemon.json, before or after the subcommand.
    assert_eq!(
        listed(&cli(
            here.path(),
            &["--daemon", &other_address, "plugins", "list", "--json"]
        )),
        ["cow", "dog"]
    );
    assert_eq!(
        listed(&cli(
            here.path(),
            &[
                "plugins",
                "list",
                "--json",
                "--daemon",
                &format!("http://{other_address}")
            ]
        )),
        ["cow", "dog"]
    );
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = nobody.local_addr().unwrap().to_string();
    let out = cli(here.path(), &["--daemon", &nobody, "plugins", "list"]);
    assert!(
        !out.status.success(),
        "a named daemon that does not answer is an error"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&nobody),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let pid = i32::try_from(daemon.0.id()).unwrap();
    // SAFETY: sending SIGTERM to our own child process.
    assert_eq!(unsafe { libc_kill(pid, 15) }, 0);
    assert!(daemon.0.wait().unwrap().success());
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(!record.exists(), "removed on a graceful stop");
}
