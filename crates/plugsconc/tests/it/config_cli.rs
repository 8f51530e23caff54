//! `plugsconc config show`: effective values, their sources, errors, no secrets printed.

use std::process::Command;

use crate::support;

#[test]
fn show_reports_values_sources_and_hides_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(
        &file,
        "logging:\n  log_level: debug\napi:\n  token: s3cret\n",
    )
    .unwrap();
    let out = Command::new(support::plugsconc_bin())
        .args([
            "config",
            "show",
            "--json",
            "--set",
            "worker_pool.wp_max_workers=3",
            "--config",
        ])
        .arg(&file)
        .env("PLUGSCONC_DIRECTORIES_PLUGINS_DIR", "/srv/plugins")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("s3cret"), "{text}");
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(view["logging.log_level"]["value"], "debug");
    assert!(
        view["logging.log_level"]["source"]
            .as_str()
            .unwrap()
            .starts_with("file ")
    );
    assert_eq!(view["directories.plugins_dir"]["value"], "/srv/plugins");
    assert_eq!(
        view["directories.plugins_dir"]["source"],
        "env PLUGSCONC_DIRECTORIES_PLUGINS_DIR"
    );
    assert_eq!(view["worker_pool.wp_max_workers"]["value"], 3);
    assert_eq!(view["api.token"]["value"], "<set>");

    std::fs::write(&file, "file_watcher:\n  fw_enabeld: false\n").unwrap();
    let out = Command::new(support::plugsconc_bin())
        .args(["config", "show", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("did you mean `file_watcher.fw_enabled`?"),
        "{err}"
    );
}

#[test]
fn a_log_level_filter_other_than_the_five_names_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(support::plugsconc_bin())
        .args(["logs", "--level", "loud"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("loud") && stderr.contains("trace, debug, info, warn, error"),
        "{stderr}"
    );
}
