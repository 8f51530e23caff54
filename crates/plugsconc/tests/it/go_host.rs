//! A Go host on HashiCorp go-plugin drives the Rust `kv` plugin built with the plugsconc SDK.

use std::process::Command;

use crate::support;

fn run_go_host(test: &str, extra: &[&str]) {
    let Some(go) = support::go_bins() else {
        support::skip(
            test,
            "the Go toolchain (golang-go, golang-github-hashicorp-go-plugin-dev) is not installed",
        );
        return;
    };
    let output = Command::new(&go.host)
        .arg("-plugin")
        .arg(support::example_bin("kv"))
        .args(extra)
        .output()
        .expect("Go host runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "Go host failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
        output.status
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(report["ok"], true, "{report}");
    let checks = report["checks"].to_string();
    for check in ["put", "get", "echo", "callback"] {
        assert!(
            checks.contains(check),
            "check {check} missing from {report}"
        );
    }
}

#[test]
fn go_host_drives_rust_plugin_with_broker_callback() {
    run_go_host(
        "go_host_drives_rust_plugin_with_broker_callback",
        &["-callback"],
    );
}

#[test]
fn go_host_drives_rust_plugin_over_automtls_with_broker_callback() {
    run_go_host(
        "go_host_drives_rust_plugin_over_automtls_with_broker_callback",
        &["-automtls", "-callback"],
    );
}
