//! `plugsconc call`: launches a plugin, transcodes JSON, prints the reply, shuts the plugin down.

use std::path::Path;
use std::process::{Command, Output};

use crate::support;

/// Runs `plugsconc call`; without a proto the descriptors come from the plugin's reflection.
fn call(plugin: &Path, method: &str, proto: Option<&str>, data: &str, extra: &[&str]) -> Output {
    let mut command = Command::new(support::plugsconc_bin());
    command.arg("call").arg(plugin).arg(method);
    if let Some(proto) = proto {
        command.arg("--proto").arg(support::proto(proto));
    }
    command
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
        Some("kvpb/kv.proto"),
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
        Some("animalpb/animal.proto"),
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
        Some("kvpb/kv.proto"),
        r#"{"key":"nothing"}"#,
        &["--cookie", "BASIC_PLUGIN=hello", "--automtls"],
    );
    // Proto3 JSON omits default values: an absent key is `{}`.
    assert_eq!(reply(&put), serde_json::json!({}));
    let echo = call(
        &go.plugin,
        "kv.KV/Echo",
        Some("kvpb/kv.proto"),
        r#"{"data":"AAEC"}"#,
        &["--cookie", "BASIC_PLUGIN=hello"],
    );
    assert_eq!(reply(&echo), serde_json::json!({"data": "AAEC"}));
    // Without protos: grpc-go's reflection (v1alpha only in this grpc-go) serves them.
    let reflected = call(
        &go.plugin,
        "kv.KV/Echo",
        None,
        r#"{"data":"AAEC"}"#,
        &["--cookie", "BASIC_PLUGIN=hello"],
    );
    assert_eq!(reply(&reflected), serde_json::json!({"data": "AAEC"}));
}

#[test]
fn calls_rust_plugins_through_reflection() {
    let cat = support::example_bin("cat");
    let speak = call(
        &cat,
        "animal.Animal/Speak",
        None,
        r#"{"isLoud":true}"#,
        &["--cookie", "ANIMAL_PLUGIN=animal", "--automtls"],
    );
    assert_eq!(reply(&speak), serde_json::json!({"message": "MEOW!"}));
    // Reflection advertises the services the plugin serves, not the whole descriptor set: the
    // kv plugin's descriptors hold kv and counter, not animal.
    let kv = support::example_bin("kv");
    let output = call(
        &kv,
        "animal.Animal/Speak",
        None,
        "{}",
        &["--cookie", "BASIC_PLUGIN=hello"],
    );
    let stderr = failure(&output);
    let known = stderr
        .split_once("known services: ")
        .map(|(_, known)| known.lines().next().unwrap_or_default())
        .unwrap_or_else(|| panic!("no service list in {stderr}"));
    let mut known: Vec<&str> = known.split(", ").collect();
    known.sort_unstable();
    assert_eq!(known, ["counter.AddHelper", "counter.Counter", "kv.KV"]);
}

#[test]
fn plugin_without_reflection_or_protos_is_explained() {
    let misbehave = support::example_bin("misbehave");
    let output = call(
        &misbehave,
        "kv.KV/Echo",
        None,
        "{}",
        &["--cookie", "BASIC_PLUGIN=hello"],
    );
    let stderr = failure(&output);
    assert!(
        stderr.contains("does not serve grpc.reflection"),
        "{stderr}"
    );
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
        Some("kvpb/kv.proto"),
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
        Some("kvpb/kv.proto"),
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
        Some("kvpb/kv.proto"),
        "{}",
        &["--cookie", "BASIC_PLUGIN=nope"],
    );
    let stderr = failure(&output);
    assert!(stderr.contains("This binary is a plugin"), "{stderr}");
}
