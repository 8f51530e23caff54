//! Layering, sources, and errors that name the key.

use super::*;

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn defaults_then_file_then_env_then_flags() {
    let (_dir, path) = file(
        "logging:\n  log_level: debug\n  log_max_backups: 9\napi:\n  listen: 127.0.0.1:9000\nsecurity:\n  unsigned_allowed: [cat]\n",
    );
    let loaded = Config::load(
        Some(&path),
        env(&[
            ("PLUGSCONC_LOGGING_LOG_LEVEL", "warn"),
            ("PLUGSCONC_FILE_WATCHER_FW_DEBOUNCE_MS", "50"),
            ("PLUGSCONC_TRANSPORT", "tcp"),
        ]),
        &[
            "logging.log_level=error".into(),
            "security.unsigned_allowed=a, b".into(),
        ],
    )
    .unwrap();
    let c = &loaded.config;
    assert_eq!(c.logging.log_level, LogLevel::Error);
    assert_eq!(c.logging.log_max_backups, 9);
    assert_eq!(c.file_watcher.fw_debounce_ms, 50);
    assert_eq!(c.api.listen, "127.0.0.1:9000");
    assert_eq!(c.security.unsigned_allowed, ["a", "b"]);
    assert_eq!(c.directories.plugins_dir, PathBuf::from("plugins"));
    let source = |k: &str| loaded.keys[k].1.to_string();
    assert_eq!(source("logging.log_level"), "--set");
    assert_eq!(
        source("logging.log_max_backups"),
        format!("file {}", path.display())
    );
    assert_eq!(
        source("file_watcher.fw_debounce_ms"),
        "env PLUGSCONC_FILE_WATCHER_FW_DEBOUNCE_MS"
    );
    assert_eq!(source("directories.plugins_dir"), "default");
    assert!(
        c.allow_unsigned(),
        "dev mode allows unsigned plugins by default"
    );
}

#[test]
fn the_restart_schedule_defaults_to_the_registry_s_and_can_be_set() {
    let c = Config::load(None, env(&[]), &[]).unwrap().config;
    let default = plugsconc_host::registry::Backoff::default();
    assert_eq!(c.supervisor.backoff().max_restarts, default.max_restarts);
    assert_eq!(c.supervisor.backoff().reset_after, default.reset_after);
    assert_eq!(c.supervisor.restart_wait_secs, 30);
    let c = Config::load(
        None,
        env(&[]),
        &[
            "supervisor.restart_max=100000".into(),
            "supervisor.restart_reset_secs=1".into(),
            "supervisor.restart_wait_secs=1".into(),
        ],
    )
    .unwrap()
    .config;
    assert_eq!(c.supervisor.restart_wait_secs, 1);
    let backoff = c.supervisor.backoff();
    assert_eq!(backoff.max_restarts, 100_000);
    assert_eq!(backoff.reset_after, std::time::Duration::from_secs(1));
}

#[test]
fn a_number_too_large_for_its_key_names_the_key() {
    let (_dir, path) = file("supervisor:\n  restart_max: 4300000000\n");
    let err = Config::load(Some(&path), env(&[]), &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`supervisor.restart_max`") && err.contains("config.yaml"),
        "{err}"
    );
}

#[test]
fn errors_name_the_key_the_source_and_the_expectation() {
    let (_dir, path) = file("logging:\n  log_levle: debug\n");
    let err = Config::load(Some(&path), env(&[]), &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`logging.log_levle`") && err.contains("did you mean `logging.log_level`?"),
        "{err}"
    );
    assert!(err.contains("config.yaml"), "{err}");

    let (_dir, path) = file("loging:\n  log_level: debug\n");
    let err = Config::load(Some(&path), env(&[]), &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("did you mean `logging.log_level`?") || err.contains("the sections are"),
        "{err}"
    );

    let (_dir, path) = file("worker_pool:\n  wp_max_workers: lots\n");
    let err = Config::load(Some(&path), env(&[]), &[])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("worker_pool.wp_max_workers") && err.contains("not a whole number"),
        "{err}"
    );

    let err = Config::load(
        None,
        env(&[("PLUGSCONC_FILE_WATCHER_FW_ENABLED", "maybe")]),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("env PLUGSCONC_FILE_WATCHER_FW_ENABLED") && err.contains("not a boolean"),
        "{err}"
    );

    let err = Config::load(None, env(&[]), &["logging.log_level=loud".into()])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`logging.log_level` (--set)")
            && err.contains("trace, debug, info, warn, error"),
        "{err}"
    );

    let err = Config::load(None, env(&[]), &["api.listen=localhost".into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("api.listen"), "{err}");
    let err = Config::load(None, env(&[]), &["api.max_connections=0".into()])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`api.max_connections` (--set)") && err.contains("at least 1"),
        "{err}"
    );
    let c = Config::load(None, env(&[]), &[]).unwrap().config.api;
    assert_eq!(
        (
            c.header_read_timeout_secs,
            c.idle_timeout_secs,
            c.max_connections
        ),
        (10, 60, 1024)
    );
    let err = Config::load(None, env(&[]), &["store.url=mysql://x".into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("postgres://"), "{err}");
    let err = Config::load(
        None,
        env(&[]),
        &[
            "supervisor.restart_initial_ms=500".into(),
            "supervisor.restart_max_ms=100".into(),
        ],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("supervisor.restart_max_ms"), "{err}");
    let err = Config::load(None, env(&[]), &["nonsense".into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("section.key=value"), "{err}");

    let (_dir, path) = file("logging: [1, 2\n");
    let err = Config::load(Some(&path), env(&[]), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("config.yaml"), "{err}");
}

#[test]
fn prod_mode_requires_signatures_unless_told_otherwise() {
    let loaded = Config::load(
        None,
        env(&[("PLUGSCONC_APPLICATION_APP_MODE", "prod")]),
        &[],
    )
    .unwrap();
    assert!(!loaded.config.allow_unsigned());
    let loaded = Config::load(
        None,
        env(&[("PLUGSCONC_APPLICATION_APP_MODE", "prod")]),
        &["security.signatures=allow-unsigned".into()],
    )
    .unwrap();
    assert!(loaded.config.allow_unsigned());
}

#[test]
fn every_key_of_fixed_words_rejects_another_naming_the_allowed_words() {
    let cases = [
        ("application.app_mode", "dev, prod"),
        ("logging.log_level", "trace, debug, info, warn, error"),
        ("logging.log_format", "text, json"),
        ("logging.log_queue_full", "drop_oldest, block"),
        ("worker_pool.wp_stop_mode", "shutdown, stop, terminate"),
        ("security.signatures", "\"\", require, allow-unsigned"),
    ];
    for (key, words) in cases {
        let err = Config::load(None, env(&[]), &[format!("{key}=sometimes")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("`{key}` (--set)"))
                && err.contains(&format!("\"sometimes\" is not one of {words}")),
            "{err}"
        );
        let (section, name) = key.split_once('.').unwrap();
        let (_dir, path) = file(&format!("{section}:\n  {name}: sometimes\n"));
        let err = Config::load(Some(&path), env(&[]), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("`{key}` (file ")) && err.contains(words),
            "{err}"
        );
        let var = format!("PLUGSCONC_{}", key.replace('.', "_").to_uppercase());
        let err = Config::load(None, env(&[(&var, "sometimes")]), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("(env {var})")) && err.contains(words),
            "{err}"
        );
    }
    let err = Config::load(None, env(&[]), &["store.url=mysql://x".into()])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`store.url` (--set)") && err.contains("sqlite://<file> or postgres://"),
        "{err}"
    );
}

#[test]
fn words_are_parsed_once_and_shown_as_written() {
    let loaded = Config::load(
        None,
        env(&[]),
        &[
            "application.app_mode=prod".into(),
            "logging.log_format=json".into(),
            "logging.log_queue_full=block".into(),
            "worker_pool.wp_stop_mode=terminate".into(),
            "security.signatures=allow-unsigned".into(),
            "store.url=sqlite:///tmp/catalog.db".into(),
        ],
    )
    .unwrap();
    let c = &loaded.config;
    assert_eq!(c.application.app_mode, AppMode::Prod);
    assert_eq!(c.logging.log_format, LogFormat::Json);
    assert_eq!(c.logging.log_queue_full, QueueFull::Block);
    assert_eq!(c.worker_pool.wp_stop_mode, StopMode::Terminate);
    assert_eq!(c.security.signatures, Signatures::AllowUnsigned);
    assert_eq!(c.store.url, StoreUrl::Sqlite("/tmp/catalog.db".into()));
    let shown = |key: &str| loaded.keys[key].0.clone();
    assert_eq!(shown("worker_pool.wp_stop_mode"), "terminate");
    assert_eq!(shown("logging.log_queue_full"), "block");
    assert_eq!(shown("store.url"), "sqlite:///tmp/catalog.db");
    // The defaults read as the words `config show` has always printed.
    let defaults = Config::load(None, env(&[]), &[]).unwrap();
    let shown = |key: &str| defaults.keys[key].0.clone();
    assert_eq!(shown("application.app_mode"), "dev");
    assert_eq!(shown("logging.log_level"), "info");
    assert_eq!(shown("security.signatures"), "");
    assert_eq!(shown("store.url"), "");
    assert_eq!(defaults.config.store.url, StoreUrl::DataDir);
    // Each enum's serde spelling is its listed word.
    fn round_trip<T: Choice + serde::Serialize + PartialEq + std::fmt::Debug>() {
        for value in T::ALL {
            assert_eq!(serde_json::to_value(value).unwrap(), value.as_str());
        }
    }
    round_trip::<AppMode>();
    round_trip::<LogLevel>();
    round_trip::<LogFormat>();
    round_trip::<QueueFull>();
    round_trip::<StopMode>();
    round_trip::<Signatures>();
}

#[test]
fn builtins_default_to_none_and_must_be_linked() {
    let c = Config::load(None, env(&[]), &[]).unwrap().config;
    assert!(c.application.builtins.is_empty());
    // This crate's tests link no built-in plugin.
    let err = Config::load(None, env(&[]), &["application.builtins=cow".into()])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`application.builtins` (--set)")
            && err.contains("\"cow\" is not a linked built-in plugin")
            && err.contains("links no built-in plugins"),
        "{err}"
    );
}

/// Properties over generated values: loading never panics, and an error names the key it is
/// about.
mod properties {
    use proptest::prelude::*;

    use super::*;

    fn keys() -> Vec<String> {
        Config::load(None, Vec::new(), &[])
            .map(|loaded| loaded.keys.into_keys().collect())
            .unwrap_or_default()
    }

    /// Values of every shape: numbers, booleans, lists, durations, text, nonsense.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            "-?[0-9]{1,22}",
            "(true|false|yes|no|on|off|1|0)",
            "[a-z0-9_, ]{0,20}",
            "\\[[a-z0-9, ]{0,12}\\]",
            "\\PC{0,16}",
        ]
    }

    /// Checks an error of a value set for `key`: it says which key.
    fn names_the_key(result: Result<Loaded, ConfigError>, key: &str) -> Result<(), TestCaseError> {
        match result {
            Ok(_) | Err(ConfigError::Syntax { .. }) => Ok(()),
            Err(
                ConfigError::Invalid { key: named, .. } | ConfigError::Unknown { key: named, .. },
            ) => {
                prop_assert!(
                    key == named
                        || key.starts_with(&format!("{named}."))
                        || named.starts_with(&format!("{key}.")),
                    "an error about {key} names {named:?}"
                );
                Ok(())
            }
            Err(other) => Err(TestCaseError::fail(format!("{key}: unexpected {other}"))),
        }
    }

    #[test]
    fn set_and_env_values_never_panic_and_errors_name_the_key() {
        let keys = keys();
        assert!(keys.len() > 10, "{keys:?}");
        proptest!(|(key in proptest::sample::select(keys.clone()), text in value())| {
            names_the_key(Config::load(None, Vec::new(), &[format!("{key}={text}")]), &key)?;
            let var = format!("PLUGSCONC_{}", key.replace('.', "_").to_uppercase());
            names_the_key(Config::load(None, env(&[(&var, &text)]), &[]), &key)?;
        });
    }

    #[test]
    fn file_values_never_panic_and_errors_name_the_key() {
        let keys = keys();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        proptest!(|(key in proptest::sample::select(keys.clone()), text in value())| {
            let (section, name) = key.split_once('.').unwrap_or((key.as_str(), ""));
            std::fs::write(&path, format!("{section}:\n  {name}: {text}\n")).map_err(|e| TestCaseError::fail(e.to_string()))?;
            names_the_key(Config::load(Some(&path), Vec::new(), &[]), &key)?;
        });
    }

    #[test]
    fn any_file_text_never_panics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        proptest!(|(text in "[ a-z_:\\-\\[\\]{}#0-9\n]{0,80}")| {
            std::fs::write(&path, &text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let _ = Config::load(Some(&path), Vec::new(), &[]);
        });
    }
}

/// The OS error is the source of a read failure, not part of its message: the CLI prints it
/// once, after the file's name.
#[test]
fn an_unreadable_file_names_its_os_error_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yaml");
    let err = Config::load(Some(&missing), env(&[]), &[]).unwrap_err();
    let os_error = std::fs::read(&missing).unwrap_err().to_string();
    let shown = format!("{:#}", anyhow::Error::from(err));
    assert_eq!(shown.matches(&os_error).count(), 1, "{shown}");
    assert!(shown.contains("missing.yaml"), "{shown}");
}

#[test]
fn a_list_set_as_a_json_array_keeps_the_commas_inside_its_items() {
    let sets =
        [r#"security.scan_commands=["trivy fs --scanners vuln,secret", "clamscan -r"]"#.into()];
    let loaded = Config::load(None, env(&[]), &sets).unwrap();
    assert_eq!(
        loaded.config.security.scan_commands,
        ["trivy fs --scanners vuln,secret", "clamscan -r"]
    );
    let loaded = Config::load(
        None,
        env(&[("PLUGSCONC_SECURITY_SCAN_COMMANDS", r#"["a,b"]"#)]),
        &[],
    )
    .unwrap();
    assert_eq!(loaded.config.security.scan_commands, ["a,b"]);
    // Comma-separated as before when it is not a JSON list.
    let loaded = Config::load(None, env(&[]), &["security.scan_commands=a, b".into()]).unwrap();
    assert_eq!(loaded.config.security.scan_commands, ["a", "b"]);
    let err = Config::load(None, env(&[]), &["security.scan_commands=[\"open".into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a JSON list of strings"), "{err}");
}

#[test]
fn scan_commands_default_to_none_and_are_split_when_loaded() {
    let loaded = Config::load(None, env(&[]), &[]).unwrap();
    assert!(loaded.config.security.scan_commands.is_empty());
    assert_eq!(loaded.config.security.scan_timeout_secs, 60);
    let scanners = loaded
        .config
        .security
        .scanners(Path::new("/var/lib/plugsconc"))
        .unwrap();
    assert!(scanners.is_empty());

    let (_dir, path) = file(
        "security:\n  scan_commands: [\"clamscan --no-summary -r\", \"/opt/check 'a b'\"]\n  scan_timeout_secs: 5\n",
    );
    let loaded = Config::load(Some(&path), env(&[]), &[]).unwrap();
    let scanners = loaded
        .config
        .security
        .scanners(Path::new("/var/lib/plugsconc"))
        .unwrap();
    assert_eq!(
        scanners.commands().collect::<Vec<_>>(),
        ["clamscan --no-summary -r", "/opt/check 'a b'"]
    );

    let err = Config::load(
        None,
        env(&[]),
        &["security.scan_commands=scan 'open".into()],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("security.scan_commands") && err.contains("unclosed quote"),
        "{err}"
    );
    let err = Config::load(None, env(&[]), &["security.scan_timeout_secs=0".into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("security.scan_timeout_secs"), "{err}");
}
