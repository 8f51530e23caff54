//! Two daemons sharing a PostgreSQL catalog end up agreeing with it: after many quick
//! enable/disable changes made through both at once, and an uninstall and reinstall, each
//! daemon's status of every plugin is the one the store records.

use std::process::Command;

use crate::serve::{
    get, postgres_available, pup_folder, request, send, serve, shared_store, token, wait_status,
};

/// The store's recorded state of `plugin` (`None`: none recorded, which means enabled).
fn stored(schema: &str, plugin: &str) -> Option<bool> {
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qAtc"])
        .arg(format!(
            "SELECT enabled FROM \"{schema}\".plugin_state WHERE name = '{plugin}'"
        ))
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    match String::from_utf8_lossy(&out.stdout).trim() {
        "" => None,
        "t" => Some(true),
        "f" => Some(false),
        other => panic!("unexpected state {other:?}"),
    }
}

/// Where the daemons' statuses differ from the store's states.
fn disagreements(schema: &str, daemons: &[&str], plugins: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for plugin in plugins {
        let enabled = stored(schema, plugin).unwrap_or(true);
        for daemon in daemons {
            let (status, body) = get(daemon, &format!("/api/v1/plugins/{plugin}"));
            let disabled = body["status"] == "disabled";
            if status != 200 || disabled == enabled {
                found.push(format!(
                    "{daemon}: {plugin} answered {status} {}, the store says enabled={enabled}",
                    body["status"]
                ));
            }
        }
    }
    found
}

/// Polls until the daemons agree with the store, bounded (they may still be applying the last
/// notifications); answers the disagreements left.
fn settle(schema: &str, daemons: &[&str], plugins: &[&str]) -> Vec<String> {
    let mut last = Vec::new();
    for _ in 0..1200 {
        last = disagreements(schema, daemons, plugins);
        if last.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    last
}

#[test]
fn daemons_sharing_a_store_agree_after_interleaved_changes() {
    if !postgres_available("daemons_sharing_a_store_agree_after_interleaved_changes") {
        return;
    }
    if Command::new("psql").arg("--version").output().is_err() {
        crate::support::skip(
            "daemons_sharing_a_store_agree_after_interleaved_changes",
            "psql is not installed",
        );
        return;
    }
    let (cleanup, store) = shared_store();
    let schema = cleanup.0.clone();
    let store: Vec<&str> = store.iter().map(String::as_str).collect();
    let (root_a, root_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    crate::serve::example_plugins(root_a.path());
    crate::serve::example_plugins(root_b.path());
    let (_a, a, _) = serve(root_a.path(), &store);
    let (_b, b, _) = serve(root_b.path(), &store);
    let (token_a, token_b) = (token(root_a.path()), token(root_b.path()));
    let sources = tempfile::tempdir().unwrap();
    let install = format!(r#"{{"path": "{}"}}"#, pup_folder(sources.path()).display());
    let (status, body) = send(
        &a,
        "POST",
        "/api/v1/plugins/install",
        Some(&token_a),
        &install,
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        wait_status(&b, "/api/v1/plugins/pup", 200),
        "B never installed pup"
    );

    // Both daemons change the same plugins at once, in opposite orders, so their writes and
    // the notifications of each other's writes interleave.
    let plugins = ["dog", "cat", "pup"];
    std::thread::scope(|scope| {
        for (n, (daemon, token)) in [(&a, &token_a), (&b, &token_b)].into_iter().enumerate() {
            scope.spawn(move || {
                for i in 0..60 {
                    let plugin = plugins[(i + n) % plugins.len()];
                    let verb = if (i / plugins.len() + n).is_multiple_of(2) {
                        "disable"
                    } else {
                        "enable"
                    };
                    let path = format!("/api/v1/plugins/{plugin}/{verb}");
                    let (status, body) = request(daemon, "POST", &path, Some(token));
                    assert_eq!(status, 200, "{path} on {daemon}: {body}");
                }
            });
        }
    });

    let last = settle(&schema, &[&a, &b], &plugins);
    assert!(
        last.is_empty(),
        "after the interleaved changes, the daemons disagree with the store: {last:?}"
    );

    // Disabled, uninstalled through B, installed again through A: it starts enabled, on both
    // daemons and in the store.
    let (status, _) = request(&b, "POST", "/api/v1/plugins/pup/disable", Some(&token_b));
    assert_eq!(status, 200);
    let (status, body) = request(&b, "POST", "/api/v1/plugins/pup/uninstall", Some(&token_b));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        stored(&schema, "pup"),
        None,
        "the uninstall forgets the state"
    );
    assert!(wait_status(&a, "/api/v1/plugins/pup", 404), "A kept pup");
    let (status, body) = send(
        &a,
        "POST",
        "/api/v1/plugins/install",
        Some(&token_a),
        &install,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        stored(&schema, "pup"),
        Some(true),
        "a reinstall starts enabled"
    );
    assert!(
        wait_status(&b, "/api/v1/plugins/pup", 200),
        "B never reinstalled pup"
    );

    let last = settle(&schema, &[&a, &b], &plugins);
    assert!(
        last.is_empty(),
        "after the reinstall, the daemons disagree with the store: {last:?}"
    );
    assert_ne!(
        get(&b, "/api/v1/plugins/pup").1["status"],
        "disabled",
        "reinstalled, pup starts enabled"
    );
}
