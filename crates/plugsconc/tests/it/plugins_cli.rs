//! `plugsconc plugins list|info|verify` on a plugins folder (signing has its own module).

use std::path::Path;
use std::process::{Command, Output};

use crate::support;

/// Writes plugin `name` (a shell script) under `root`, with its `.sha256` sidecar or not.
pub(crate) fn plugin(root: &Path, name: &str, sidecar: bool) {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), format!("#!/bin/sh\necho {name}\n")).unwrap();
    std::fs::write(
        dir.join("manifest.yaml"),
        format!(
            "plugin:\n  name: {name}\n  type: animal\n  version: 1.0.0\n  entrypoint: ./{name}\nabout:\n  description: the {name}\nhandshake:\n  protocol_version: 1\n  magic_cookie_key: ANIMAL_PLUGIN\n  magic_cookie_value: animal\ntags: [pet]\n"
        ),
    )
    .unwrap();
    if sidecar {
        let digest = plugsconc_host::sha256_file(&dir.join(name))
            .unwrap()
            .to_hex();
        std::fs::write(
            dir.join(format!("{name}.sha256")),
            format!("{digest}  {name}\n"),
        )
        .unwrap();
    }
}

/// Runs `plugsconc plugins --dir <root> <args>`.
pub(crate) fn plugins(root: &Path, args: &[&str]) -> Output {
    Command::new(support::plugsconc_bin())
        .arg("plugins")
        .arg("--dir")
        .arg(root)
        .args(args)
        .output()
        .expect("plugsconc runs")
}

/// A folder with `cat` (sidecar), `dog` (no sidecar) and `broken` (invalid manifest).
pub(crate) fn folder() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    plugin(root.path(), "cat", true);
    plugin(root.path(), "dog", false);
    let broken = root.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(
        broken.join("manifest.yaml"),
        "plugin:\n  name: broken\n  verison: 1.0.0\n",
    )
    .unwrap();
    root
}

#[test]
fn list_shows_valid_and_invalid_plugins() {
    let root = folder();
    let out = plugins(root.path(), &["list"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("NAME"), "{text}");
    assert!(text.contains("cat") && text.contains("the dog"), "{text}");
    assert!(
        text.contains("broken") && text.contains("did you mean `version`?"),
        "{text}"
    );

    let out = plugins(root.path(), &["list", "--json"]);
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        list.len(),
        3,
        "cat, dog and broken; no built-in unless configured"
    );
    let out = plugins(
        root.path(),
        &["list", "--json", "--set", "application.builtins=cow"],
    );
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.len(), 4, "cat, dog, broken and the built-in cow");
    let cow = list.iter().find(|p| p["name"] == "cow").unwrap();
    assert_eq!(
        (&cow["runtime"], &cow["status"]),
        (&"builtin".into(), &"ready".into())
    );
    let broken = list.iter().find(|p| p["status"] == "invalid").unwrap();
    // Every problem, sorted: what is missing (at the mapping it belongs in), then the misspelt
    // field at its own line.
    assert_eq!(broken["problem_count"], 4, "{broken}");
    assert_eq!(broken["line"], 1);
    assert_eq!(broken["problems"][3]["line"], 3);
    assert!(
        broken["problems"][3]["message"]
            .as_str()
            .unwrap()
            .contains("did you mean `version`?")
    );

    let out = plugins(root.path(), &["list", "--json", "--tag", "pet"]);
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.len(), 2, "filters leave invalid plugins out");

    let out = plugins(root.path(), &["list", "--json", "--status", "invalid"]);
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.len(), 1);
}

#[test]
fn disable_and_enable_write_the_marker() {
    let root = folder();
    let out = plugins(root.path(), &["disable", "cat"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(root.path().join("cat/.disabled").exists());
    let out = plugins(root.path(), &["list", "--json", "--status", "disabled"]);
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["name"], "cat");

    let out = plugins(root.path(), &["enable", "cat"]);
    assert!(out.status.success());
    assert!(!root.path().join("cat/.disabled").exists());

    let out = plugins(root.path(), &["disable", "nope"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no plugin named \"nope\"") && err.contains("cat"),
        "{err}"
    );
    let out = plugins(root.path(), &["disable", "cow"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("built-in"));
}

#[test]
fn info_and_verify_show_the_first_problems_and_their_count() {
    let root = folder();
    let mut manifest = String::from("plugin:\n  name: broken\n");
    for i in 0..7 {
        manifest.push_str(&format!("  extra{i}: x\n"));
    }
    std::fs::write(root.path().join("broken/manifest.yaml"), manifest).unwrap();
    let out = plugins(root.path(), &["info", "broken"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let problems: Vec<&str> = text
        .lines()
        .skip_while(|l| *l != "problems:")
        .skip(1)
        .collect();
    // 11 problems: type, version, entrypoint and handshake missing, 7 unknown fields.
    assert_eq!(problems.len(), 6, "{text}");
    assert_eq!(problems[5].trim(), "... and 6 more", "{text}");
    assert!(text.contains("(and 10 more)"), "{text}");

    let out = plugins(root.path(), &["verify", "broken"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("11 problem(s)") && err.contains("... and 6 more"),
        "{err}"
    );
}

#[test]
fn info_and_verify() {
    let root = folder();
    let out = plugins(root.path(), &["info", "cat", "--json"]);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["version"], "1.0.0");
    assert_eq!(info["handshake"]["magic_cookie_key"], "ANIMAL_PLUGIN");
    let missing = plugins(root.path(), &["info", "cow"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("known: cat, dog"));

    let unsigned = plugins(root.path(), &["verify", "cat"]);
    assert!(
        !unsigned.status.success(),
        "signatures are required by default"
    );
    assert!(String::from_utf8_lossy(&unsigned.stdout).contains("is not signed"));
    let ok = plugins(root.path(), &["verify", "cat", "--unsigned", "cat"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let all = plugins(root.path(), &["verify", "--json", "--allow-unsigned"]);
    assert!(!all.status.success(), "dog has no sidecar");
    let results: Vec<serde_json::Value> = serde_json::from_slice(&all.stdout).unwrap();
    let dog = results.iter().find(|r| r["name"] == "dog").unwrap();
    assert_eq!(dog["ok"], false);
    // Both checks are reported: the missing sidecar, and the policy letting it run unsigned.
    assert_eq!(dog["checksum"]["ok"], false);
    assert_eq!(
        (&dog["signature"]["ok"], &dog["signature"]["status"]),
        (&true.into(), &"unsigned".into())
    );
    let cat = results.iter().find(|r| r["name"] == "cat").unwrap();
    assert_eq!(cat["ok"], true);
    assert_eq!(cat["checksum"]["sha256"].as_str().map(str::len), Some(64));
    assert!(
        dog["error"]
            .as_str()
            .unwrap()
            .contains("sha256sum dog > dog.sha256")
    );
}

#[test]
fn install_and_uninstall_on_a_folder() {
    let source = folder();
    let target = tempfile::tempdir().unwrap();
    let cat = source.path().join("cat");
    let cat_arg = cat.to_str().unwrap();
    let out = plugins(target.path(), &["install", cat_arg]);
    assert!(!out.status.success(), "unsigned is refused by default");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not signed"));
    let out = plugins(target.path(), &["install", cat_arg, "--allow-unsigned"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("installed cat 1.0.0"));
    assert!(target.path().join("cat/cat.sha256").exists());
    let out = plugins(target.path(), &["install", cat_arg, "--allow-unsigned"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("already installed"));
    let out = plugins(
        target.path(),
        &["install", cat_arg, "--allow-unsigned", "--replace"],
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("upgraded cat"));
    // dog has no sidecar: refused, nothing left behind.
    let dog = source.path().join("dog");
    let out = plugins(
        target.path(),
        &["install", dog.to_str().unwrap(), "--allow-unsigned"],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("sha256sum dog > dog.sha256"));
    let left: Vec<_> = std::fs::read_dir(target.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, ["cat"]);
    // `plugsconc install` is the same command under its own name.
    let out = Command::new(support::plugsconc_bin())
        .args(["install", "--dir"])
        .arg(target.path())
        .args([cat_arg, "--allow-unsigned", "--replace", "--local"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("upgraded cat"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = plugins(target.path(), &["uninstall", "cat"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!target.path().join("cat").exists());
}

#[test]
fn plugins_reads_the_configuration_given_by_config_and_set() {
    let root = folder();
    let work = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(support::plugsconc_bin())
            .current_dir(work.path())
            .env_remove("PLUGSCONC_PLUGINS_DIR")
            .env_remove("PLUGSCONC_CONFIG")
            .args(args)
            .output()
            .unwrap()
    };
    let names = |out: &Output| -> Vec<String> {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        let mut names: Vec<String> = list
            .iter()
            .map(|p| p["name"].as_str().unwrap_or_default().to_owned())
            .collect();
        names.sort();
        names
    };
    let folder_set = format!("directories.plugins_dir={}", root.path().display());
    // After the nested subcommand, without --dir: the folder and the built-ins are the
    // configuration's.
    let out = run(&[
        "plugins",
        "list",
        "--local",
        "--json",
        "--set",
        &folder_set,
        "--set",
        "application.builtins=cow",
    ]);
    assert_eq!(names(&out), ["broken", "cat", "cow", "dog"]);
    let out = run(&["plugins", "--set", &folder_set, "list", "--local", "--json"]);
    assert_eq!(names(&out), ["broken", "cat", "dog"]);

    // The same from a file named with --config, a YAML list.
    let file = work.path().join("elsewhere.yaml");
    std::fs::write(
        &file,
        format!(
            "directories:\n  plugins_dir: {}\napplication:\n  builtins: [cow]\n",
            root.path().display()
        ),
    )
    .unwrap();
    let file = file.display().to_string();
    let out = run(&["plugins", "list", "--local", "--json", "--config", &file]);
    assert_eq!(names(&out), ["broken", "cat", "cow", "dog"]);

    let out = run(&[
        "plugins",
        "list",
        "--local",
        "--set",
        "application.builtins=horse",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("`application.builtins` (--set)")
            && err.contains("linked into this binary are cow"),
        "{err}"
    );
}
