//! `manifest.json`: the same schema as `manifest.yaml`, the same checks and positions, and a
//! folder holding both refused.

use super::{VALID, folder};
use crate::manifest::*;

/// The JSON twin of [`VALID`].
fn valid_json() -> String {
    let value: serde_json::Value = serde_saphyr::from_str(VALID).unwrap();
    serde_json::to_string_pretty(&value).unwrap()
}

fn parse_json(text: &str) -> Result<Manifest, ManifestError> {
    let (_root, dir) = folder();
    Manifest::parse(&dir.join(MANIFEST_JSON_FILE), &dir, text.as_bytes())
}

/// Each problem as `line:column: field: message`.
fn problems(err: &ManifestError) -> Vec<String> {
    err.problems().iter().map(ToString::to_string).collect()
}

#[test]
fn a_json_manifest_parses_to_the_same_manifest_as_its_yaml_twin() {
    let (_root, dir) = folder();
    let from_yaml = Manifest::parse(&dir.join(MANIFEST_FILE), &dir, VALID.as_bytes()).unwrap();
    let mut from_json = parse_json(&valid_json()).unwrap();
    // Only where each dependency is written differs.
    for (json, yaml) in from_json
        .dependencies
        .iter_mut()
        .zip(&from_yaml.dependencies)
    {
        assert_ne!(json.position, Position { line: 0, column: 0 });
        json.position = yaml.position;
    }
    assert_eq!(from_json, from_yaml);
    // Written compactly on one line, with tabs, it is the same manifest too.
    let compact =
        serde_json::to_string(&serde_json::from_str::<serde_json::Value>(&valid_json()).unwrap())
            .unwrap()
            .replace(",\"", ",\t\"");
    assert_eq!(parse_json(&compact).unwrap().name, "kv");
}

#[test]
fn a_json_syntax_error_names_its_line_and_column() {
    // A trailing comma: JSON refuses it, though YAML's flow style would read it.
    let text = "{\n  \"plugin\": {\n    \"name\": \"kv\",\n  }\n}\n";
    let err = parse_json(text).unwrap_err();
    let found = problems(&err);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("4:3: not valid JSON: "), "{found:?}");
    assert!(err.to_string().contains("manifest.json:4:3"), "{err}");
    // A YAML comment is not JSON.
    let err = parse_json("{\"plugin\": {}} # done\n").unwrap_err();
    assert!(
        problems(&err)[0].starts_with("1:16: not valid JSON"),
        "{err}"
    );
    // Nothing at all.
    let err = parse_json("").unwrap_err();
    assert!(
        problems(&err)[0].starts_with("1:1: not valid JSON"),
        "{err}"
    );
    // A key twice is refused where the second one is, as in YAML.
    let err = parse_json("{\n  \"tags\": [],\n  \"tags\": []\n}\n").unwrap_err();
    assert!(problems(&err)[0].starts_with("3:3:"), "{err}");
    assert!(problems(&err)[0].contains("duplicate key"), "{err}");
}

#[test]
fn a_json_schema_error_names_its_line_and_column() {
    let text = valid_json()
        .replacen("\"language\"", "\"langauge\"", 1)
        .replacen(
            "\"protocol_version\": 1",
            "\"protocol_version\": \"one\"",
            1,
        );
    let err = parse_json(&text).unwrap_err();
    let found = problems(&err);
    let line_of = |needle: &str| {
        1 + text
            .lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle} in {text}"))
    };
    let (typo, version) = (line_of("\"langauge\""), line_of("\"one\""));
    assert!(
        found.iter().any(|p| p.starts_with(&format!(
            "{typo}:5: plugin: unknown field `langauge`; did you mean `language`?"
        ))),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with(&format!("{version}:25: handshake.protocol_version"))),
        "{found:?}"
    );
}

#[test]
fn a_folder_with_both_manifests_is_refused_naming_both() {
    let (_root, dir) = folder();
    std::fs::write(dir.join(MANIFEST_JSON_FILE), valid_json()).unwrap();
    let (manifest, bytes) = Manifest::load(&dir).unwrap();
    assert_eq!(manifest.name, "kv");
    assert_eq!(bytes, valid_json().into_bytes(), "the JSON file was read");
    assert_eq!(manifest_path(&dir), dir.join(MANIFEST_JSON_FILE));

    std::fs::write(dir.join(MANIFEST_FILE), VALID).unwrap();
    let err = Manifest::load(&dir).unwrap_err();
    assert!(matches!(err, ManifestError::Both { .. }), "{err:?}");
    assert!(!err.is_transient());
    let message = err.to_string();
    assert!(
        message.contains(&dir.join(MANIFEST_FILE).display().to_string())
            && message.contains(&dir.join(MANIFEST_JSON_FILE).display().to_string()),
        "{message}"
    );
    assert_eq!(err.summary(5), message);
}
