//! Rows changed by hand in a shared PostgreSQL catalog reach every daemon: a plugin disabled
//! and re-enabled with `psql` is disabled and re-enabled on both daemons without an API call;
//! malformed notifications and rows naming no plugin are logged and skipped while the daemons
//! keep following; the plugins' HTTP endpoints are recorded in the store and listed.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::serve::{get, postgres_available, request, serve, shared_store, token};

/// Runs `sql` with `psql`, as an operator would.
fn psql(sql: &str) {
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "test",
            "-v",
            "ON_ERROR_STOP=1",
            "-qAtc",
        ])
        .arg(sql)
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `check` until it holds, up to a generous deadline; `false` if it never does.
fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// `plugin`'s status on the daemon at `address`.
fn status(address: &str, plugin: &str) -> String {
    let (code, body) = get(address, &format!("/api/v1/plugins/{plugin}"));
    assert_eq!(code, 200, "{body}");
    body["status"].as_str().unwrap_or_default().to_owned()
}

/// Whether every daemon shows `plugin` disabled (`true`) or not disabled (`false`).
fn all_disabled(daemons: &[&str], plugin: &str, disabled: bool) -> bool {
    daemons
        .iter()
        .all(|d| (status(d, plugin) == "disabled") == disabled)
}

/// The daemon's warnings, as the log API returns them.
fn warnings(address: &str, token: &str) -> String {
    let (code, body) = request(
        address,
        "GET",
        "/api/v1/logs?level=warn&limit=1000",
        Some(token),
    );
    assert_eq!(code, 200, "{body}");
    body.to_string()
}

#[test]
fn rows_changed_by_hand_reach_every_daemon_and_bad_ones_are_skipped() {
    let test = "rows_changed_by_hand_reach_every_daemon_and_bad_ones_are_skipped";
    if !postgres_available(test) {
        return;
    }
    if Command::new("psql").arg("--version").output().is_err() {
        crate::support::skip(test, "psql is not installed");
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
    let daemons = [a.as_str(), b.as_str()];

    // The endpoints of each manifest's `http` section are recorded and listed, versioned and not.
    let kv_endpoints = serde_json::json!([
        {"method": "GET", "path": "/value"},
        {"method": "POST", "path": "/value"},
    ]);
    for path in ["/api/v1/plugins", "/plugins"] {
        let listed = eventually(|| {
            let (code, body) = get(&a, path);
            code == 200
                && body["plugins"].as_array().is_some_and(|plugins| {
                    plugins
                        .iter()
                        .any(|p| p["name"] == "kv" && p["endpoints"] == kv_endpoints)
                })
        });
        assert!(listed, "{path}: {}", get(&a, path).1);
    }
    assert_eq!(
        get(&b, "/api/v1/plugins/cat").1["endpoints"],
        serde_json::json!([{"method": "GET", "path": "/speak"}])
    );
    // A manifest edited while its plugin is not running (an update, not a reload) records its
    // new endpoints too.
    let manifest = root_b.path().join("plugins/cat/manifest.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("path: /speak", "path: /talk")).unwrap();
    let talk = serde_json::json!([{"method": "GET", "path": "/talk"}]);
    assert!(
        eventually(|| get(&b, "/api/v1/plugins/cat").1["endpoints"] == talk),
        "{}",
        get(&b, "/api/v1/plugins/cat").1
    );

    // Disabled by hand: every daemon disables it, with no API call.
    let table = format!("\"{schema}\".plugin_state");
    psql(&format!(
        "INSERT INTO {table} (name, enabled, updated_ms, updated_by) VALUES ('cat', true, 0, 'psql')"
    ));
    psql(&format!(
        "UPDATE {table} SET enabled = false WHERE name = 'cat'"
    ));
    assert!(
        eventually(|| all_disabled(&daemons, "cat", true)),
        "cat is {} on A and {} on B",
        status(&a, "cat"),
        status(&b, "cat")
    );

    // Garbage on the channel and a row naming no plugin are reported and skipped.
    let channel = format!("{schema}_catalog");
    psql(&format!("SELECT pg_notify('{channel}', 'not json at all')"));
    psql(&format!(
        r#"SELECT pg_notify('{channel}', '{{"table": "plugin_state", "op": "UPDATE", "plugin": null}}')"#
    ));
    psql(&format!(
        "INSERT INTO {table} (name, enabled, updated_ms, updated_by) VALUES ('ghost', false, 0, 'psql')"
    ));
    let (token_a, token_b) = (token(root_a.path()), token(root_b.path()));
    for (daemon, token) in [(&a, &token_a), (&b, &token_b)] {
        let reported = eventually(|| {
            let logged = warnings(daemon, token);
            logged.contains("not json at all")
                && logged.contains("no plugin (null or empty)")
                && logged.contains("ghost")
        });
        assert!(reported, "{daemon}: {}", warnings(daemon, token));
    }

    // Still following: re-enabled by hand, it comes back everywhere.
    psql(&format!(
        "UPDATE {table} SET enabled = true WHERE name = 'cat'"
    ));
    assert!(
        eventually(|| all_disabled(&daemons, "cat", false)),
        "cat is {} on A and {} on B",
        status(&a, "cat"),
        status(&b, "cat")
    );
}
