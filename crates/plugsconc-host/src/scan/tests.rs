//! The scanner runner: passes, refusals with their output, the timeout that kills the whole
//! process group, the verdict cache in memory and on disk, and installs that a scanner refuses.

use std::os::unix::fs::PermissionsExt as _;

use super::*;

/// An executable script `name` in `dir` with this body; it appends its arguments to `runs.log`
/// beside it first, so a test can count its runs.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    let log = dir.join("runs.log");
    std::fs::write(
        &path,
        format!("#!/bin/sh\necho \"$@\" >> '{}'\n{body}\n", log.display()),
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

fn scanners(lines: &[String], timeout: Duration, cache: Option<PathBuf>) -> Scanners {
    let commands = lines
        .iter()
        .map(|line| ScanCommand::parse(line).unwrap())
        .collect();
    Scanners::new(commands, timeout, cache)
}

fn folder(root: &Path) -> PathBuf {
    let dir = root.join("kv");
    std::fs::create_dir_all(dir.join("lib")).unwrap();
    std::fs::write(dir.join("manifest.yaml"), "plugin: {}\n").unwrap();
    std::fs::write(dir.join("lib/data"), "clean").unwrap();
    dir
}

#[test]
fn command_lines_split_like_shell_words() {
    let command = ScanCommand::parse("scan --label 'two words' \"x y\"").unwrap();
    assert_eq!(command.argv, ["scan", "--label", "two words", "x y"]);
    assert_eq!(command.line(), "scan --label 'two words' \"x y\"");
    let err = ScanCommand::parse("scan 'open").unwrap_err();
    assert!(err.to_string().contains("unclosed quote"), "{err}");
    let err = ScanCommand::parse("   ").unwrap_err();
    assert!(err.to_string().contains("names no program"), "{err}");
}

#[test]
fn no_scanner_passes_without_reading_the_folder() {
    let scanners = Scanners::default();
    assert!(scanners.is_empty());
    scanners
        .check("kv", Path::new("/nonexistent/plugin"))
        .unwrap();
    assert_eq!(scanners.runs(), 0);
}

#[test]
fn a_passing_scanner_gets_the_folder_as_its_last_argument() {
    let tools = tempfile::tempdir().unwrap();
    let plugins = tempfile::tempdir().unwrap();
    let dir = folder(plugins.path());
    let pass = script(tools.path(), "pass", "exit 0");
    let scanners = scanners(
        &[format!("{} --quiet", pass.display())],
        Duration::from_secs(30),
        None,
    );
    scanners.check("kv", &dir).unwrap();
    let log = std::fs::read_to_string(tools.path().join("runs.log")).unwrap();
    assert_eq!(log.trim(), format!("--quiet {}", dir.display()));
}

#[test]
fn a_non_zero_exit_refuses_with_the_output_tail() {
    let tools = tempfile::tempdir().unwrap();
    let plugins = tempfile::tempdir().unwrap();
    let dir = folder(plugins.path());
    let pass = script(tools.path(), "pass", "exit 0");
    let long = "x".repeat(3 * OUTPUT_TAIL);
    let refuse = script(
        tools.path(),
        "refuse",
        &format!("echo {long}\necho \"malware found in $1/lib/data\" >&2\nexit 3"),
    );
    let scanners = scanners(
        &[pass.display().to_string(), refuse.display().to_string()],
        Duration::from_secs(30),
        None,
    );
    let err = scanners.check("kv", &dir).unwrap_err();
    let HostError::ScanRefused {
        plugin,
        command,
        reason,
        output,
    } = &err
    else {
        panic!("{err}");
    };
    assert_eq!(plugin, "kv");
    assert_eq!(command, &refuse.display().to_string());
    assert!(reason.contains("exit status: 3"), "{reason}");
    assert!(output.ends_with("/lib/data"), "{output}");
    assert!(output.contains("malware found in"), "{output}");
    assert!(output.len() <= OUTPUT_TAIL, "{}", output.len());
    assert!(err.is_refusal());
    assert!(err.to_string().contains("malware found"), "{err}");
}

#[test]
fn a_scanner_that_cannot_start_refuses() {
    let plugins = tempfile::tempdir().unwrap();
    let dir = folder(plugins.path());
    let scanners = scanners(
        &["/nonexistent/scanner".to_owned()],
        Duration::from_secs(30),
        None,
    );
    let err = scanners.check("kv", &dir).unwrap_err();
    assert!(err.to_string().contains("cannot run it"), "{err}");
}

#[test]
fn a_scanner_past_its_timeout_is_killed_with_its_process_group() {
    let tools = tempfile::tempdir().unwrap();
    let plugins = tempfile::tempdir().unwrap();
    let dir = folder(plugins.path());
    let pidfile = tools.path().join("child.pid");
    let hang = script(
        tools.path(),
        "hang",
        &format!(
            "echo scanning\nsleep 300 &\necho $! > '{}'\nwait",
            pidfile.display()
        ),
    );
    let scanners = scanners(
        &[hang.display().to_string()],
        Duration::from_millis(500),
        None,
    );
    let err = scanners.check("kv", &dir).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("did not finish within 0.5s"), "{text}");
    assert!(text.contains("security.scan_timeout_secs"), "{text}");
    assert!(text.contains("scanning"), "{text}");
    // Its child, in its process group, was killed too (and reaped by whoever adopted it).
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let gone = (0..500).any(|_| {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let dead = state.is_empty() || state.split_whitespace().nth(2) == Some("Z");
        if !dead {
            std::thread::sleep(Duration::from_millis(10));
        }
        dead
    });
    assert!(gone, "the scanner's child {pid} still runs");
    // A timeout is not the content's verdict: the next check runs the scanner again.
    let runs = scanners.runs();
    assert!(scanners.check("kv", &dir).is_err());
    assert_eq!(scanners.runs(), runs + 1, "a timeout is not cached");
}

#[test]
fn verdicts_are_cached_per_content_in_memory_and_on_disk() {
    let tools = tempfile::tempdir().unwrap();
    let plugins = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let dir = folder(plugins.path());
    let pass = script(tools.path(), "pass", "exit 0");
    let lines = [pass.display().to_string()];
    let first = scanners(
        &lines,
        Duration::from_secs(30),
        Some(cache.path().join("scans")),
    );
    first.check("kv", &dir).unwrap();
    first.check("kv", &dir).unwrap();
    assert_eq!(runs(tools.path()), 1);
    assert_eq!(first.runs(), 1);

    // The same content elsewhere (a staged install, then in place) is the same verdict.
    let copy = tempfile::tempdir().unwrap();
    let moved = folder(copy.path());
    first.check("kv", &moved).unwrap();
    assert_eq!(runs(tools.path()), 1);

    // A restart: a new cache in memory, the one on disk.
    let second = scanners(
        &lines,
        Duration::from_secs(30),
        Some(cache.path().join("scans")),
    );
    second.check("kv", &dir).unwrap();
    assert_eq!((runs(tools.path()), second.runs()), (1, 0));

    // New content: scanned again.
    std::fs::write(dir.join("lib/data"), "changed").unwrap();
    second.check("kv", &dir).unwrap();
    assert_eq!(runs(tools.path()), 2);
    // So is a new executable bit.
    std::fs::set_permissions(dir.join("lib/data"), std::fs::Permissions::from_mode(0o755)).unwrap();
    second.check("kv", &dir).unwrap();
    assert_eq!(runs(tools.path()), 3);
    // A link to a file outside the folder: its bytes count, so swapping them rescans.
    let outside = tools.path().join("entry");
    std::fs::write(&outside, "v1").unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("linked")).unwrap();
    second.check("kv", &dir).unwrap();
    assert_eq!(runs(tools.path()), 4);
    std::fs::write(&outside, "v2").unwrap();
    second.check("kv", &dir).unwrap();
    assert_eq!(
        runs(tools.path()),
        5,
        "a swapped link target is scanned again"
    );

    // Another command list: its own verdicts.
    let other = scanners(
        &[format!("{} --strict", pass.display())],
        Duration::from_secs(30),
        Some(cache.path().join("scans")),
    );
    other.check("kv", &dir).unwrap();
    assert_eq!(runs(tools.path()), 6);
}

#[test]
fn refusals_are_cached_until_the_content_changes() {
    let tools = tempfile::tempdir().unwrap();
    let plugins = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let dir = folder(plugins.path());
    let refuse = script(
        tools.path(),
        "refuse",
        "grep -q clean \"$1/lib/data\" && { echo found it; exit 1; }; exit 0",
    );
    let lines = [refuse.display().to_string()];
    let first = scanners(
        &lines,
        Duration::from_secs(30),
        Some(cache.path().to_owned()),
    );
    let err = first.check("kv", &dir).unwrap_err();
    assert!(err.to_string().contains("found it"), "{err}");
    let second = scanners(
        &lines,
        Duration::from_secs(30),
        Some(cache.path().to_owned()),
    );
    let again = second.check("kv", &dir).unwrap_err();
    assert_eq!(again.to_string(), err.to_string());
    assert_eq!(runs(tools.path()), 1);
    std::fs::write(dir.join("lib/data"), "fixed").unwrap();
    second.check("kv", &dir).unwrap();
    assert_eq!(runs(tools.path()), 2);
}

#[test]
fn an_install_a_scanner_refuses_changes_nothing() {
    let tools = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let dir = crate::discovery::tests::write_plugin(src.path(), "cat", "");
    let digest = crate::sha256_file(&dir.join("cat")).unwrap().to_hex();
    std::fs::write(dir.join("cat.sha256"), format!("{digest}  cat\n")).unwrap();
    let refuse = script(tools.path(), "refuse", "echo \"bad: $1\"\nexit 1");
    let trust = crate::signature::Trust::allow_unsigned();
    let refusing = scanners(
        &[refuse.display().to_string()],
        Duration::from_secs(30),
        None,
    );
    let err = crate::install::Installer::new(root.path(), &trust)
        .scanners(&refusing)
        .dir(&dir)
        .unwrap_err();
    assert!(matches!(err, HostError::ScanRefused { .. }), "{err}");
    assert!(err.to_string().contains("bad: "), "{err}");
    let left: Vec<_> = std::fs::read_dir(root.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    // The scanner saw the staged folder, not the source.
    let log = std::fs::read_to_string(tools.path().join("runs.log")).unwrap();
    assert!(log.contains("/.install-"), "{log}");

    let pass = script(tools.path(), "pass", "exit 0");
    let passing = scanners(&[pass.display().to_string()], Duration::from_secs(30), None);
    crate::install::Installer::new(root.path(), &trust)
        .scanners(&passing)
        .dir(&dir)
        .unwrap();
    assert!(root.path().join("cat/manifest.yaml").exists());
    // Installed content is the content that passed: a launch finds the verdict.
    passing.check("cat", &root.path().join("cat")).unwrap();
    assert_eq!(passing.runs(), 1);
}
