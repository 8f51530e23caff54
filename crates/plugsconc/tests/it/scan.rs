//! `security.scan_commands` through the daemon: a folder install a scanner refuses is answered
//! 422 with the scanner's output and installs nothing; a plugin in the folder that a scanner
//! refuses is failed with that output and never started; one it passes runs, and is not
//! scanned again after a restart.

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use crate::serve::{get, libc_kill, pup_folder, send, serve, token};

/// A scanner script in `dir` that logs the folder it is given to `runs.log` beside it, then
/// refuses (printing a finding) when `refuse` is set.
fn scanner(dir: &Path, refuse: bool) -> PathBuf {
    let path = dir.join("scan.sh");
    let verdict = if refuse {
        "echo \"trojan found in $(basename \"$1\")/pup\" >&2\nexit 1"
    } else {
        "echo clean\nexit 0"
    };
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\necho \"$1\" >> '{}'\n{verdict}\n",
            dir.join("runs.log").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn runs(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("runs.log"))
        .map(|log| log.lines().count())
        .unwrap_or(0)
}

fn scan_flag(script: &Path) -> String {
    format!("security.scan_commands={}", script.display())
}

const SPEAK: &str = "/api/v1/plugins/pup/call/animal.Animal/Speak";

#[test]
fn an_install_a_scanner_refuses_is_422_with_its_output_and_installs_nothing() {
    let root = tempfile::tempdir().unwrap();
    let tools = tempfile::tempdir().unwrap();
    let sources = tempfile::tempdir().unwrap();
    let script = scanner(tools.path(), true);
    let (_daemon, address, _) = serve(root.path(), &["--set", &scan_flag(&script)]);
    let token = token(root.path());
    let pup = pup_folder(sources.path());
    let (status, body) = send(
        &address,
        "POST",
        "/api/v1/plugins/install",
        Some(&token),
        &format!(r#"{{"path": "{}"}}"#, pup.display()),
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "install_refused", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("trojan found in pup/pup"), "{body}");
    assert!(message.contains(&script.display().to_string()), "{body}");
    assert_eq!(runs(tools.path()), 1);
    let left: Vec<_> = std::fs::read_dir(root.path().join("plugins"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(get(&address, "/api/v1/plugins/pup").0, 404);
}

#[test]
fn a_plugin_a_scanner_refuses_fails_with_its_output_and_never_starts() {
    let root = tempfile::tempdir().unwrap();
    let tools = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("plugins")).unwrap();
    pup_folder(&root.path().join("plugins"));
    let script = scanner(tools.path(), true);
    let (_daemon, address, _) = serve(root.path(), &["--set", &scan_flag(&script)]);
    let token = token(root.path());
    let (status, body) = send(&address, "POST", SPEAK, Some(&token), "{}");
    assert_ne!(status, 200, "{body}");
    let (_, info) = get(&address, "/api/v1/plugins/pup");
    assert_eq!(info["status"], "failed", "{info}");
    assert!(info["pid"].is_null(), "{info}");
    let reason = info["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("trojan found in pup/pup"), "{info}");
    assert!(reason.contains("security scanner"), "{info}");
    // Asked again: still failed, and the refusal is not scanned twice.
    let (status, _) = send(&address, "POST", SPEAK, Some(&token), "{}");
    assert_ne!(status, 200);
    assert_eq!(runs(tools.path()), 1);
}

#[test]
fn a_passing_scanner_lets_the_plugin_run_and_is_not_rerun_after_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let tools = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("plugins")).unwrap();
    pup_folder(&root.path().join("plugins"));
    let script = scanner(tools.path(), false);
    let flag = scan_flag(&script);
    for round in 0..2 {
        let (mut daemon, address, mut stdout) = serve(root.path(), &["--set", &flag]);
        let token = token(root.path());
        let (status, body) = send(&address, "POST", SPEAK, Some(&token), "{}");
        assert_eq!(
            (status, &body["response"]),
            (200, &serde_json::json!({"message": "Woof!"})),
            "round {round}: {body}"
        );
        assert_eq!(get(&address, "/api/v1/plugins/pup").1["status"], "ready");
        assert_eq!(runs(tools.path()), 1, "round {round}");
        let pid = i32::try_from(daemon.0.id()).unwrap();
        // SAFETY: sending SIGTERM to our own child process.
        assert_eq!(unsafe { libc_kill(pid, 15) }, 0);
        assert!(daemon.0.wait().unwrap().success());
        let mut rest = String::new();
        stdout.read_to_string(&mut rest).unwrap();
    }
    let log = std::fs::read_to_string(tools.path().join("runs.log")).unwrap();
    assert!(log.trim().ends_with("plugins/pup"), "{log}");
}
