//! `plugsconc call`: launches a plugin, transcodes JSON, prints the reply, shuts the plugin down.

use std::path::Path;
use std::process::{Command, Output};

use crate::support;

fn call(plugin: &Path, method: &str, proto: &str, data: &str, extra: &[&str]) -> Output {
    Command::new(support::plugsconc_bin())
        .arg("call")
        .arg(plugin)
        .arg(method)
        .arg("--proto")
        .arg(support::proto(proto))
        .args(["--data", data])
        .args(extra)
        .output()
        .expect("plugsconc runs")
}

fn reply(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "call failed: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON reply")
}

#[test]
fn calls_rust_kv_plugin() {
    let kv = support::example_bin("kv");
    let output = call(
        &kv,
        "kv.KV/Echo",
        "kvpb/kv.proto",
        r#"{"data":"aGVsbG8="}"#,
        &["--cookie", "BASIC_PLUGIN=hello"],
    );
    assert_eq!(reply(&output), serde_json::json!({"data": "aGVsbG8="}));
}

#[test]
fn calls_rust_animal_plugin_over_automtls_and_tcp() {
    let cat = support::example_bin("cat");
    let output = call(
        &cat,
        "animal.Animal/Speak",
        "animalpb/animal.proto",
        r#"{"isLoud":true}"#,
        &["--cookie", "ANIMAL_PLUGIN=animal", "--automtls", "--tcp"],
    );
    assert_eq!(reply(&output), serde_json::json!({"message": "MEOW!"}));
}

#[test]
fn calls_go_plugin() {
    let Some(go) = support::go_bins() else {
        support::skip("calls_go_plugin", "the Go toolchain is not installed");
        return;
    };
    let put = call(
        &go.plugin,
        "kv.KV/Get",
        "kvpb/kv.proto",
        r#"{"key":"nothing"}"#,
        &["--cookie", "BASIC_PLUGIN=hello", "--automtls"],
    );
    // Proto3 JSON omits default values: an absent key is `{}`.
    assert_eq!(reply(&put), serde_json::json!({}));
    let echo = call(
        &go.plugin,
        "kv.KV/Echo",
        "kvpb/kv.proto",
        r#"{"data":"AAEC"}"#,
        &["--cookie", "BASIC_PLUGIN=hello"],
    );
    assert_eq!(reply(&echo), serde_json::json!({"data": "AAEC"}));
}

fn failure(output: &Output) -> String {
    assert!(!output.status.success(), "expected a failure");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn unknown_method_lists_the_services() {
    let kv = support::example_bin("kv");
    let output = call(
        &kv,
        "kv.KV/Nope",
        "kvpb/kv.proto",
        "{}",
        &["--cookie", "BASIC_PLUGIN=hello"],
    );
    let stderr = failure(&output);
    assert!(
        stderr.contains("kv.KV/Nope") && stderr.contains("known services: kv.KV"),
        "{stderr}"
    );
}

#[test]
fn bad_json_names_the_message() {
    let kv = support::example_bin("kv");
    let output = call(
        &kv,
        "kv.KV/Put",
        "kvpb/kv.proto",
        r#"{"key": 42}"#,
        &["--cookie", "BASIC_PLUGIN=hello"],
    );
    let stderr = failure(&output);
    assert!(stderr.contains("kv.PutRequest"), "{stderr}");
}

#[test]
fn wrong_cookie_reports_what_the_plugin_said() {
    let kv = support::example_bin("kv");
    let output = call(
        &kv,
        "kv.KV/Echo",
        "kvpb/kv.proto",
        "{}",
        &["--cookie", "BASIC_PLUGIN=nope"],
    );
    let stderr = failure(&output);
    assert!(stderr.contains("This binary is a plugin"), "{stderr}");
}
