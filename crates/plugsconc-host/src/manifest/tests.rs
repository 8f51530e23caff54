//! A valid manifest, and a corpus of broken ones, each with the error it must produce.

use std::collections::BTreeMap as Map;
use std::sync::Mutex;

use super::*;

mod json;

/// Manifest files whose reading fails with an OS error, by path; tests use their own temporary
/// folders, so they do not see each other's failures.
static FAILING_READS: Mutex<Map<PathBuf, (i32, usize)>> = Mutex::new(Map::new());

/// Makes the next `times` reads of `file` fail with OS error `errno`.
pub(crate) fn fail_reads(file: &Path, errno: i32, times: usize) {
    FAILING_READS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(file.to_owned(), (errno, times));
}

/// Lets reads of `file` succeed again.
pub(crate) fn stop_failing_reads(file: &Path) {
    FAILING_READS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(file);
}

pub(crate) fn injected_read_failure(file: &Path) -> Option<std::io::Error> {
    let mut failing = FAILING_READS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (errno, left) = failing.get_mut(file)?;
    let err = std::io::Error::from_raw_os_error(*errno);
    *left = left.saturating_sub(1);
    if *left == 0 {
        failing.remove(file);
    }
    Some(err)
}

const VALID: &str = "\
plugin:
  name: kv
  type: kv
  version: 1.2.3
  format: grpc
  entrypoint: ./kv
  language: rust
about:
  description: A key/value store
  maintainer: someone@example.com
  url: https://example.com/kv
handshake:
  protocol_version: 1
  magic_cookie_key: BASIC_PLUGIN
  magic_cookie_value: hello
security:
  auto_mtls: true
  checksum: sha256
capabilities:
  filesystem:
    - path: /var/lib/kv
      permissions: [read, write, list]
      recursive: true
  network:
    egress:
      - protocol: tcp
        hosts: [api.example.com]
        ports: [443]
    ingress:
      - protocol: tcp
        ports: [9000]
        allowed_origins: [127.0.0.1]
  process:
    - exec:
        command: /usr/bin/rsync
        args: [-a, '*']
    - kill: [children]
tags: [example, storage]
dependencies:
  - name: auth
    version: ^1.0
config:
  greeting: hello
  retries: 3
resources:
  memory_mb: 256
  cpu_percent: 50
  execution_ms: 30000
  policy: restart
http:
  - method: get
    path: /value
    grpc: kv.KV/Get
  - method: POST
    path: /value
    grpc: kv.KV/Put
";

/// A plugin folder named `kv` holding an entry point `kv` and a link pointing outside.
fn folder() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("kv");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("kv"), b"#!/bin/sh\n").unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
    std::fs::write(root.path().join("outside"), b"x").unwrap();
    std::os::unix::fs::symlink(root.path().join("outside"), dir.join("escape")).unwrap();
    (root, dir)
}

fn parse(text: &str) -> Result<Manifest, ManifestError> {
    let (_root, dir) = folder();
    Manifest::parse(&dir.join(MANIFEST_FILE), &dir, text.as_bytes())
}

#[test]
fn valid_manifest_converts_fully() {
    let m = parse(VALID).unwrap();
    assert_eq!(m.name, "kv");
    assert_eq!(m.kind, "kv");
    assert_eq!(m.version, semver::Version::new(1, 2, 3));
    assert_eq!(m.entrypoint, PathBuf::from("kv"));
    assert_eq!(
        m.handshake,
        HandshakeConfig::new(1, "BASIC_PLUGIN", "hello")
    );
    assert!(m.security.auto_mtls);
    assert_eq!(
        m.capabilities.filesystem[0].permissions,
        vec![FsPermission::Read, FsPermission::Write, FsPermission::List]
    );
    assert!(m.capabilities.filesystem[0].recursive);
    assert_eq!(m.capabilities.egress[0].ports, vec![443]);
    assert_eq!(
        m.capabilities.ingress[0].allowed_origins,
        vec!["127.0.0.1".to_owned()]
    );
    assert_eq!(
        m.capabilities.process[1],
        ProcessGrant::Kill(vec![ProcessScope::Children])
    );
    assert_eq!(m.dependencies[0].name, "auth");
    assert!(
        m.dependencies[0]
            .version
            .matches(&semver::Version::new(1, 4, 0))
    );
    assert_eq!(m.config["retries"], serde_json::json!(3));
    assert_eq!(m.resources.memory_mb, Some(256));
    assert_eq!(m.resources.policy, LimitPolicy::Restart);
    assert_eq!(m.tags, vec!["example".to_owned(), "storage".to_owned()]);
    assert_eq!(
        m.http[0],
        HttpRoute {
            method: "GET".into(),
            path: "/value".into(),
            grpc: "kv.KV/Get".into()
        }
    );
}

#[test]
fn minimal_manifest_gets_safe_defaults() {
    let m = parse(
        "plugin:\n  name: kv\n  type: kv\n  version: 0.1.0\n  entrypoint: kv\nhandshake:\n  protocol_version: 1\n  magic_cookie_key: K\n  magic_cookie_value: v\n",
    )
    .unwrap();
    assert!(m.security.auto_mtls);
    assert_eq!(m.security.checksum, ChecksumPolicy::Sha256Sidecar);
    assert_eq!(m.capabilities, Capabilities::default());
    assert_eq!(m.resources, Resources::default());
}

/// `(what is broken, the manifest, the line, the text the error must contain)`.
fn corpus() -> Vec<(&'static str, String, u64, &'static str)> {
    let replace = |from: &str, to: &str| {
        assert!(VALID.contains(from), "corpus edit {from:?} does not apply");
        VALID.replacen(from, to, 1)
    };
    vec![
        (
            "http method unknown",
            replace("  - method: get\n", "  - method: FETCH\n"),
            51,
            "http[0].method",
        ),
        (
            "http path escaping",
            replace(
                "    path: /value\n    grpc: kv.KV/Get",
                "    path: /../value\n    grpc: kv.KV/Get",
            ),
            52,
            "expected an absolute path of plain segments",
        ),
        (
            "http grpc method malformed",
            replace("    grpc: kv.KV/Get\n", "    grpc: Get\n"),
            53,
            "expected package.Service/Method",
        ),
        (
            "http route declared twice",
            replace("  - method: POST\n", "  - method: GET\n"),
            55,
            "GET /value is declared twice",
        ),
        (
            "syntax error",
            replace("  type: kv\n", "  type: [kv\n"),
            0,
            "",
        ),
        (
            "tab indentation",
            replace("  type: kv\n", "\ttype: kv\n"),
            0,
            "",
        ),
        (
            "unknown top-level field",
            replace("tags:", "tagz:"),
            38,
            "did you mean `tags`?",
        ),
        (
            "unknown plugin field",
            replace("  language: rust", "  langauge: rust"),
            7,
            "did you mean `language`?",
        ),
        (
            "unknown field far from any",
            replace("  language: rust", "  colour: blue"),
            7,
            "unknown field `colour`",
        ),
        (
            "missing plugin section",
            VALID
                .split_once("about:")
                .map(|(_, r)| format!("about:{r}"))
                .unwrap_or_default(),
            1,
            "plugin: missing section",
        ),
        (
            "missing name",
            replace("  name: kv\n", ""),
            1,
            "plugin.name: missing",
        ),
        (
            "name with capitals",
            replace("  name: kv", "  name: KV"),
            2,
            "not a valid name",
        ),
        (
            "name not the folder",
            replace("  name: kv", "  name: other"),
            2,
            "the plugin's folder is \"kv\"",
        ),
        (
            "missing type",
            replace("  type: kv\n", ""),
            1,
            "plugin.type: missing",
        ),
        (
            "type with spaces",
            replace("  type: kv", "  type: key value"),
            3,
            "not a valid type",
        ),
        (
            "missing version",
            replace("  version: 1.2.3\n", ""),
            1,
            "plugin.version: missing",
        ),
        (
            "version not semver",
            replace("version: 1.2.3", "version: 1.x"),
            4,
            "not a semantic version",
        ),
        (
            "version as a number",
            replace("version: 1.2.3", "version: 1.2"),
            4,
            "not a semantic version",
        ),
        (
            "net/rpc format",
            replace("format: grpc", "format: rpc"),
            5,
            "net/rpc plugins are not supported",
        ),
        (
            "unknown format",
            replace("format: grpc", "format: http"),
            5,
            "expected `grpc`",
        ),
        (
            "missing entrypoint",
            replace("  entrypoint: ./kv\n", ""),
            1,
            "plugin.entrypoint: missing",
        ),
        (
            "absolute entrypoint",
            replace("entrypoint: ./kv", "entrypoint: /bin/sh"),
            6,
            "is absolute",
        ),
        (
            "entrypoint with ..",
            replace("entrypoint: ./kv", "entrypoint: ../outside"),
            6,
            "leaves the plugin folder",
        ),
        (
            "entrypoint symlink out",
            replace("entrypoint: ./kv", "entrypoint: ./escape"),
            6,
            "outside the plugin folder",
        ),
        (
            "entrypoint missing file",
            replace("entrypoint: ./kv", "entrypoint: ./nope"),
            6,
            "does not exist",
        ),
        (
            "entrypoint is a folder",
            replace("entrypoint: ./kv", "entrypoint: ./sub"),
            6,
            "is not a file",
        ),
        (
            "missing handshake",
            replace(
                "handshake:\n  protocol_version: 1\n  magic_cookie_key: BASIC_PLUGIN\n  magic_cookie_value: hello\n",
                "",
            ),
            1,
            "handshake: missing section",
        ),
        (
            "protocol version 0",
            replace("protocol_version: 1", "protocol_version: 0"),
            13,
            "expected a positive integer",
        ),
        (
            "protocol version text",
            replace("protocol_version: 1", "protocol_version: one"),
            13,
            "",
        ),
        (
            "cookie key with dash",
            replace(
                "magic_cookie_key: BASIC_PLUGIN",
                "magic_cookie_key: BASIC-PLUGIN",
            ),
            14,
            "environment variable name",
        ),
        (
            "empty cookie value",
            replace("magic_cookie_value: hello", "magic_cookie_value: ''"),
            15,
            "is empty",
        ),
        (
            "auto_mtls not a bool",
            replace("auto_mtls: true", "auto_mtls: maybe"),
            17,
            "",
        ),
        (
            "unknown checksum policy",
            replace("checksum: sha256", "checksum: md5"),
            18,
            "expected `sha256`",
        ),
        (
            "relative fs path",
            replace("path: /var/lib/kv", "path: var/lib/kv"),
            21,
            "expected an absolute path",
        ),
        (
            "fs path with ..",
            replace("path: /var/lib/kv", "path: /var/../etc"),
            21,
            "without `..`",
        ),
        (
            "unknown permission",
            replace("[read, write, list]", "[read, execute]"),
            22,
            "expected read, write, list, create or delete",
        ),
        (
            "unknown protocol",
            replace(
                "      - protocol: tcp\n        hosts",
                "      - protocol: icmp\n        hosts",
            ),
            26,
            "expected tcp or udp",
        ),
        (
            "port out of range",
            replace("ports: [443]", "ports: [70000]"),
            28,
            "expected a port 1-65535",
        ),
        (
            "port zero",
            replace("ports: [9000]", "ports: [0]"),
            31,
            "expected a port 1-65535",
        ),
        (
            "empty hosts",
            replace("hosts: [api.example.com]", "hosts: []"),
            26,
            "hosts: is empty",
        ),
        (
            "two operations in one process entry",
            replace(
                "    - kill: [children]",
                "    - kill: [children]\n      list: [children]",
            ),
            37,
            "expected exactly one of",
        ),
        (
            "relative exec command",
            replace("command: /usr/bin/rsync", "command: rsync"),
            35,
            "expected an absolute path",
        ),
        (
            "unknown process scope",
            replace("kill: [children]", "kill: [everyone]"),
            37,
            "expected `children` or `self`",
        ),
        (
            "empty tag",
            replace("tags: [example, storage]", "tags: [example, '']"),
            38,
            "an empty tag",
        ),
        (
            "bad dependency requirement",
            replace("version: ^1.0", "version: about one"),
            41,
            "not a version requirement",
        ),
        (
            "self dependency",
            replace("  - name: auth", "  - name: kv"),
            40,
            "cannot depend on itself",
        ),
        (
            "zero memory limit",
            replace("memory_mb: 256", "memory_mb: 0"),
            46,
            "expected a positive number",
        ),
        (
            "negative cpu",
            replace("cpu_percent: 50", "cpu_percent: -5"),
            47,
            "expected a positive percentage",
        ),
        (
            "unknown limit policy",
            replace("policy: restart", "policy: explode"),
            49,
            "expected `warn`, `restart` or `stop`",
        ),
        ("not a mapping", "- just\n- a list\n".to_owned(), 1, ""),
    ]
}

#[test]
fn broken_manifests_say_where_and_why() {
    let cases = corpus();
    assert!(
        cases.len() >= 30,
        "the corpus must hold at least 30 broken manifests"
    );
    let mut failures = Vec::new();
    for (what, text, line, expected) in cases {
        let err = parse(&text).expect_err(what);
        let message = err.to_string();
        let first = &err.problems()[0];
        if !message.contains("manifest.yaml") {
            failures.push(format!("{what}: no file in {message:?}"));
        }
        if line > 0 && first.line != line {
            failures.push(format!(
                "{what}: wrong line in {message:?}, expected {line}"
            ));
        }
        if first.line < 1 || first.column < 1 {
            failures.push(format!("{what}: no position in {message:?}"));
        }
        if !message.contains(expected) {
            failures.push(format!("{what}: {message:?} lacks {expected:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn suggestions_only_for_near_misses() {
    let names = ["name".to_owned(), "type".to_owned(), "version".to_owned()];
    assert_eq!(did_you_mean("nmae", &names), Some("name".to_owned()));
    assert_eq!(did_you_mean("verison", &names), Some("version".to_owned()));
    assert_eq!(did_you_mean("colour", &names), None);
    assert_eq!(edit_distance("", "abc"), 3);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
}

#[test]
fn load_reads_the_file_and_keeps_its_bytes() {
    let (_root, dir) = folder();
    std::fs::write(dir.join(MANIFEST_FILE), VALID).unwrap();
    let (manifest, bytes) = Manifest::load(&dir).unwrap();
    assert_eq!(manifest.name, "kv");
    assert_eq!(bytes, VALID.as_bytes());
    let err = Manifest::load(&dir.join("sub")).unwrap_err();
    assert!(err.to_string().contains("cannot read"), "{err}");
}

/// A broken manifest: what is broken, its text, every problem expected as (line, text it
/// contains).
type MultiCase = (&'static str, String, Vec<(u64, &'static str)>);

fn multi_error_corpus() -> Vec<MultiCase> {
    let edit = |edits: &[(&str, &str)]| {
        let mut text = VALID.to_owned();
        for (from, to) in edits {
            assert!(text.contains(from), "corpus edit {from:?} does not apply");
            text = text.replacen(from, to, 1);
        }
        text
    };
    vec![
        (
            "a bad version, an unknown field, a bad port",
            edit(&[
                ("version: 1.2.3", "version: 1.x"),
                ("  language: rust", "  colour: blue"),
                ("ports: [443]", "ports: [70000]"),
            ]),
            vec![
                (4, "not a semantic version"),
                (7, "unknown field `colour`"),
                (28, "expected a port 1-65535"),
            ],
        ),
        (
            "a mistyped value does not stop the rest",
            edit(&[
                ("protocol_version: 1", "protocol_version: one"),
                ("auto_mtls: true", "auto_mtls: maybe"),
                ("policy: restart", "policy: explode"),
            ]),
            vec![
                (
                    13,
                    "handshake.protocol_version: expected a positive integer",
                ),
                (17, "security.auto_mtls: expected true or false"),
                (49, "expected `warn`, `restart` or `stop`"),
            ],
        ),
        (
            "two missing fields in two list items, each at its item",
            edit(&[
                (
                    "    path: /value\n    grpc: kv.KV/Get\n",
                    "    grpc: kv.KV/Get\n",
                ),
                ("    grpc: kv.KV/Put\n", ""),
            ]),
            vec![(51, "http[0].path: missing"), (53, "http[1].grpc: missing")],
        ),
        (
            "several problems in one list",
            edit(&[("[read, write, list]", "[read, execute, run]")]),
            vec![(22, "\"execute\""), (22, "\"run\"")],
        ),
        (
            "a misspelt field is not also missing",
            edit(&[
                ("  version: 1.2.3", "  verison: 1.2.3"),
                ("  type: kv\n", ""),
            ]),
            vec![(1, "plugin.type: missing"), (3, "did you mean `version`?")],
        ),
    ]
}

#[test]
fn every_problem_is_reported_sorted_by_position() {
    for (what, text, expected) in multi_error_corpus() {
        let err = parse(&text).expect_err(what);
        let problems = err.problems();
        let got: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems.len(), expected.len(), "{what}: {got:#?}");
        for (problem, (line, text)) in got.iter().zip(&expected) {
            assert!(
                problem.starts_with(&format!("{line}:")) && problem.contains(text),
                "{what}: {problem:?} is not at line {line} with {text:?}"
            );
        }
        let mut sorted = problems.to_vec();
        sorted.sort_by_key(|p| (p.line, p.column));
        assert_eq!(sorted, problems, "{what}: not sorted");
        let message = err.to_string();
        assert!(
            message.ends_with(&format!("(and {} more)", expected.len() - 1)),
            "{what}: {message}"
        );
        assert!(
            message.contains(&got[0]),
            "{what}: {message} does not start with the first"
        );
    }
}

#[test]
fn summary_shows_the_first_few_and_the_count() {
    let mut text = VALID.to_owned();
    for tag in 0..8 {
        text.push_str(&format!("bogus{tag}: 1\n"));
    }
    let err = parse(&text).unwrap_err();
    assert_eq!(err.problems().len(), 8);
    let summary = err.summary(5);
    let lines: Vec<&str> = summary.lines().collect();
    assert_eq!(lines.len(), 6, "{summary}");
    assert!(
        lines[0].contains("manifest.yaml:57:1") && lines[0].contains("bogus0"),
        "{summary}"
    );
    assert_eq!(lines[5], "... and 3 more");
}

#[test]
fn a_missing_field_points_at_its_parent_mapping() {
    let text = VALID.replacen(
        "    path: /value\n    grpc: kv.KV/Get\n",
        "    grpc: kv.KV/Get\n",
        1,
    );
    let err = parse(&text).unwrap_err();
    let first = &err.problems()[0];
    // `  - method: get`, the item of http[0]: its mapping starts at `method`.
    assert_eq!((first.line, first.column), (51, 5), "{err}");
    assert_eq!(first.field, "http[0].path");

    let text = VALID.replacen("        command: /usr/bin/rsync\n", "", 1);
    let err = parse(&text).unwrap_err();
    let first = &err.problems()[0];
    assert_eq!(
        (first.line, first.field.as_str()),
        (34, "capabilities.process[0].exec.command"),
        "{err}"
    );
}

#[test]
fn a_value_error_points_at_the_value() {
    let err = parse(&VALID.replacen("version: 1.2.3", "version: 1.x", 1)).unwrap_err();
    let first = &err.problems()[0];
    assert_eq!((first.line, first.column), (4, 12), "{err}");
}

#[test]
fn bad_bytes_are_reported_where_they_are() {
    let mut bytes = VALID.as_bytes().to_vec();
    // Line 10, `  maintainer: someone@example.com`: the `o` of `someone` becomes 0xff.
    let line_start = VALID
        .match_indices('\n')
        .nth(8)
        .map(|(i, _)| i + 1)
        .unwrap();
    let at = line_start + "  maintainer: s".len();
    bytes[at] = 0xff;
    let (_root, dir) = folder();
    let err = Manifest::parse(&dir.join(MANIFEST_FILE), &dir, &bytes).unwrap_err();
    let problems = err.problems();
    assert_eq!(problems.len(), 1, "{err}");
    assert_eq!((problems[0].line, problems[0].column), (10, 16), "{err}");
    assert!(problems[0].message.contains("0xff"), "{err}");

    // A bad byte does not hide the other problems of the file.
    let text = String::from_utf8_lossy(&bytes).replacen("checksum: sha256", "checksum: md5", 1);
    bytes = text.into_bytes();
    bytes[at] = 0xfe;
    let err = Manifest::parse(&dir.join(MANIFEST_FILE), &dir, &bytes).unwrap_err();
    assert!(err.problems().len() >= 2, "{err}");
}

#[test]
fn yaml_errors_are_at_their_place() {
    for (what, text, line) in [
        // The list may go on over lines; the parser sees it is broken at the next key.
        (
            "unclosed flow list",
            VALID.replacen("  type: kv\n", "  type: [kv\n", 1),
            4,
        ),
        (
            "tab indentation",
            VALID.replacen("  type: kv\n", "\ttype: kv\n", 1),
            3,
        ),
        (
            "reserved indicator",
            VALID.replacen("url: https", "url: @https", 1),
            11,
        ),
        // A quoted string may go on over lines; the parser sees it is broken on the next one.
        (
            "unclosed quote",
            VALID.replacen("greeting: hello", "greeting: \"hello", 1),
            44,
        ),
    ] {
        let err = parse(&text).expect_err(what);
        let first = &err.problems()[0];
        assert_eq!(first.line, line, "{what}: {err}");
    }
}

/// Parsing: the library's advice to the program calling it is reworded for a manifest's author.
#[test]
fn yaml_advice_is_about_the_manifest() {
    let advice = [
        "Options",
        "Option<",
        "policy",
        "from_str",
        "Cow<",
        "weak",
        "ignore_binary",
        "budget",
        "String or",
    ];
    let cases = [
        (
            "duplicate key",
            format!("{VALID}tags: [again]\n"),
            "duplicate key `tags`: each key may appear once in a mapping",
        ),
        (
            "second document",
            format!("{VALID}---\nplugin: {{}}\n"),
            "a manifest is one document",
        ),
        (
            "non-finite number",
            VALID.replacen("cpu_percent: 50", "cpu_percent: .nan", 1),
            "`.nan` is not a finite number",
        ),
        (
            "recursive alias",
            format!("{VALID}x: &a [*a]\n"),
            "a manifest cannot be recursive",
        ),
        (
            "unknown anchor",
            VALID.replacen("retries: 3", "retries: *three", 1),
            "refers to no anchor",
        ),
        (
            "too deep",
            format!("{VALID}deep: {}{}\n", "[".repeat(2000), "]".repeat(2000)),
            "limit exceeded",
        ),
    ];
    for (what, text, expected) in cases {
        let err = parse(&text).expect_err(what);
        let message = err.to_string();
        assert!(message.contains(expected), "{what}: {message}");
        for word in advice {
            assert!(
                !message.contains(word),
                "{what}: {message} gives advice ({word})"
            );
        }
    }
}

/// Every library message that carries advice, including those the manifest's reader cannot
/// meet today (a future change of how it reads must not leak them).
#[test]
fn every_library_advice_is_reworded() {
    use serde_saphyr::Error as E;
    use serde_saphyr::budget::BudgetBreach;
    let at = serde_saphyr::Location::UNKNOWN;
    let cases: Vec<(E, &str)> = vec![
        (
            E::DuplicateMappingKey {
                key: Some("name".into()),
                location: at,
            },
            "duplicate key `name`: each key may appear once in a mapping",
        ),
        (
            E::DuplicateMappingKey {
                key: None,
                location: at,
            },
            "each key may appear once",
        ),
        (
            E::MultipleDocuments {
                hint: "use from_str_multiple",
                location: at,
            },
            "one document",
        ),
        (
            E::MergeKeyNotAllowed { location: at },
            "write the fields out",
        ),
        (
            E::TaggedStructFieldName {
                tag: "!x".into(),
                location: at,
            },
            "remove the tag",
        ),
        (E::BinaryNotUtf8 { location: at }, "remove the !!binary tag"),
        (
            E::InvalidCharNull { location: at },
            "a value is required here",
        ),
        (
            E::NullIntoString { location: at },
            "a value is required here",
        ),
        (
            E::NonFiniteFloat {
                value: ".inf".into(),
                location: at,
            },
            "not a finite number",
        ),
        (
            E::RecursiveReferencesRequireWeakTypes { location: at },
            "cannot be recursive",
        ),
        (
            E::InvalidBooleanStrict { location: at },
            "expected true or false",
        ),
        (
            E::Budget {
                breach: BudgetBreach::Depth { depth: 9000 },
                location: at,
            },
            "nested 9000 levels deep",
        ),
        (
            E::Budget {
                breach: BudgetBreach::Events { events: 1 },
                location: at,
            },
            "too large",
        ),
        (
            E::Budget {
                breach: BudgetBreach::Aliases { aliases: 1 },
                location: at,
            },
            "write the values out",
        ),
        (
            E::InvalidOptions {
                msg: "bad Options".into(),
                location: at,
            },
            "could not be read as YAML",
        ),
    ];
    for (err, expected) in cases {
        let message = super::syntax::message(&err);
        assert!(message.contains(expected), "{err:?}: {message}");
        for word in [
            "Options",
            "Option<",
            "policy",
            "from_str",
            "Cow<",
            "weak",
            "ignore_binary",
            "Depth {",
        ] {
            assert!(
                !message.contains(word),
                "{err:?}: {message} gives advice ({word})"
            );
        }
    }
}

#[test]
fn a_read_failure_is_transient_and_retried() {
    let (_root, dir) = folder();
    std::fs::write(dir.join(MANIFEST_FILE), VALID).unwrap();
    // Two failures are absorbed by the short retry.
    fail_reads(&dir.join(MANIFEST_FILE), libc::EMFILE, 2);
    assert!(Manifest::load(&dir).is_ok());
    // More are given back as a read error: transient, not a problem of the manifest.
    fail_reads(&dir.join(MANIFEST_FILE), libc::EIO, 3);
    let err = Manifest::load(&dir).unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.problems().is_empty());
    assert!(err.to_string().contains("cannot read"), "{err}");
    // A missing file is not retried, and is also a read error.
    let err = Manifest::load(&dir.join("sub")).unwrap_err();
    assert!(
        err.is_transient() && err.to_string().contains("cannot read"),
        "{err}"
    );
}

#[test]
fn dependencies_keep_where_they_are_declared() {
    let m = parse(VALID).unwrap();
    assert_eq!(
        m.dependencies[0].position,
        Position {
            line: 40,
            column: 5
        }
    );
}

/// The lines a problem of line `k` (1-based) of `text` may be reported at: `k`, and each mapping
/// that holds it (the nearest line above with less indentation, and so on up).
fn line_and_parents(text: &str, k: usize) -> Vec<u64> {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut allowed = vec![k as u64];
    let mut current = indent(lines[k - 1]);
    if current == 0 {
        // A top-level key belongs to the document's mapping, which starts at 1:1.
        allowed.push(1);
    }
    for j in (1..k).rev() {
        if indent(lines[j - 1]) < current {
            allowed.push(j as u64);
            current = indent(lines[j - 1]);
        }
    }
    allowed
}

/// Mutations of the valid manifest: every line deleted, its first character made an invalid
/// byte or a reserved YAML indicator, each required key dropped. The first problem is where the
/// mutation is or at a mapping that holds it, and nothing is blamed on 1:1 that is not there.
#[test]
fn mutations_are_reported_at_their_line_or_its_parent() {
    let (_root, dir) = folder();
    let file = dir.join(MANIFEST_FILE);
    let lines: Vec<&str> = VALID.lines().collect();
    let mut failures = Vec::new();
    let mut checked = 0;
    let mut check = |what: String, bytes: Vec<u8>, allowed: Vec<u64>, exact: Option<(u64, u64)>| {
        let Err(err) = Manifest::parse(&file, &dir, &bytes) else {
            return;
        };
        checked += 1;
        let first = &err.problems()[0];
        let ok = match exact {
            Some(at) => (first.line, first.column) == at,
            None => allowed.contains(&first.line),
        };
        // A YAML structure error is found where the parser can no longer go on, which for a
        // deleted line can be a few lines further: still near, never at the start.
        let ok = ok
            || (first.field.is_empty()
                && exact.is_none()
                && allowed
                    .first()
                    .is_some_and(|k| (*k..=k + 3).contains(&first.line)));
        let blames_start =
            err.problems().iter().any(|p| (p.line, p.column) == (1, 1)) && !allowed.contains(&1);
        if !ok || blames_start {
            failures.push(format!("{what}: {err} (allowed lines {allowed:?})"));
        }
    };
    for k in 1..=lines.len() {
        let line = lines[k - 1];
        let parents = line_and_parents(VALID, k);

        let mut deleted: Vec<&str> = lines.clone();
        deleted.remove(k - 1);
        let mut allowed = parents.clone();
        // What follows a deleted line moves up to its number; the parser may notice the gap
        // at the end of the line before.
        allowed.push(k as u64 - 1);
        check(
            format!("line {k} deleted"),
            format!("{}\n", deleted.join("\n")).into_bytes(),
            allowed,
            None,
        );

        let column = line.len() - line.trim_start().len();
        let offset: usize = lines[..k - 1].iter().map(|l| l.len() + 1).sum::<usize>() + column;
        let mut bad = VALID.as_bytes().to_vec();
        bad[offset] = 0xff;
        check(
            format!("line {k}: invalid byte"),
            bad,
            parents.clone(),
            Some((k as u64, column as u64 + 1)),
        );
        let mut reserved = VALID.as_bytes().to_vec();
        reserved.insert(offset, b'@');
        check(
            format!("line {k}: reserved indicator"),
            reserved,
            parents,
            None,
        );
    }
    for (key, field, parent) in [
        ("  name: kv\n", "plugin.name", 1),
        (
            "  magic_cookie_key: BASIC_PLUGIN\n",
            "handshake.magic_cookie_key",
            12,
        ),
        (
            "      permissions: [read, write, list]\n",
            "filesystem[0].permissions",
            21,
        ),
        ("        hosts: [api.example.com]\n", "egress[0].hosts", 26),
        ("        ports: [9000]\n", "ingress[0].ports", 30),
        ("        command: /usr/bin/rsync\n", "exec.command", 34),
        ("  - name: auth\n    version", "dependencies[0].name", 40),
        ("    path: /value\n    grpc: kv.KV/Get", "http[0].path", 51),
        ("    grpc: kv.KV/Put\n", "http[1].grpc", 54),
    ] {
        let text = if key.ends_with("version") {
            VALID.replacen(key, "  - version", 1)
        } else if key.contains("grpc: kv.KV/Get") {
            VALID.replacen(key, "    grpc: kv.KV/Get", 1)
        } else {
            VALID.replacen(key, "", 1)
        };
        assert_ne!(text, VALID, "{key:?} does not apply");
        let err = parse(&text).expect_err(field);
        let first = &err.problems()[0];
        if first.line != parent || !first.field.ends_with(field) {
            failures.push(format!("{field} dropped: {err}, expected line {parent}"));
        }
        checked += 1;
    }
    assert!(checked > 100, "only {checked} mutations were errors");
    assert!(
        failures.is_empty(),
        "{} of {checked} misplaced:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Properties over generated manifests: reading never panics, and every problem is somewhere
/// in the file.
mod properties {
    use proptest::prelude::*;

    use super::*;

    fn check(dir: &Path, bytes: &[u8]) -> Result<(), TestCaseError> {
        let file = dir.join(MANIFEST_FILE);
        let Err(err) = Manifest::parse(&file, dir, bytes) else {
            return Ok(());
        };
        let problems = err.problems();
        prop_assert!(!problems.is_empty(), "{err}");
        let text = String::from_utf8_lossy(bytes);
        // YAML ends lines with LF, CRLF or a lone CR.
        let lines = text.replace("\r\n", "\n").split(['\n', '\r']).count() as u64;
        for p in problems {
            prop_assert!(
                p.line >= 1 && p.line <= lines && p.column >= 1,
                "{p} is outside the {lines} lines of {text:?}"
            );
        }
        Ok(())
    }

    fn yamlish() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("plugin:".to_owned()),
            Just("  name: kv".to_owned()),
            Just("  version: 1.2.3".to_owned()),
            Just("handshake:".to_owned()),
            Just("  - method: get".to_owned()),
            Just("http:".to_owned()),
            Just("&a".to_owned()),
            Just("*a".to_owned()),
            Just("<<: *a".to_owned()),
            "[ a-z0-9:#&*!|>'\"{}\\[\\],.\\-\t]{0,16}",
        ];
        proptest::collection::vec(piece, 0..24).prop_map(|lines| lines.join("\n"))
    }

    #[derive(Debug, Clone)]
    enum Mutation {
        Delete(usize),
        Duplicate(usize),
        Insert(usize, String),
        Byte(usize, u8),
        Truncate(usize),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            any::<usize>().prop_map(Mutation::Delete),
            any::<usize>().prop_map(Mutation::Duplicate),
            (any::<usize>(), "[ a-z0-9:#&*!|>'\"{}\\[\\],.\\-\t]{0,16}")
                .prop_map(|(at, text)| Mutation::Insert(at, text)),
            (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Byte(at, byte)),
            any::<usize>().prop_map(Mutation::Truncate),
        ]
    }

    fn apply(mutations: &[Mutation]) -> Vec<u8> {
        let mut lines: Vec<Vec<u8>> = VALID.lines().map(|l| l.as_bytes().to_vec()).collect();
        for m in mutations {
            if lines.is_empty() {
                break;
            }
            let n = lines.len();
            match m {
                Mutation::Delete(at) => {
                    lines.remove(at % n);
                }
                Mutation::Duplicate(at) => lines.insert(at % n, lines[at % n].clone()),
                Mutation::Insert(at, text) => lines.insert(at % n, text.clone().into_bytes()),
                Mutation::Byte(at, byte) => {
                    let line = &mut lines[at % n];
                    if !line.is_empty() {
                        let i = (at / n) % line.len();
                        line[i] = *byte;
                    }
                }
                Mutation::Truncate(at) => {
                    let line = &mut lines[at % n];
                    line.truncate((at / n) % (line.len() + 1));
                }
            }
        }
        lines.join(&b'\n')
    }

    #[test]
    fn yaml_like_text_never_panics_and_problems_are_in_the_file() {
        let (_root, dir) = folder();
        proptest!(|(text in yamlish())| {
            check(&dir, text.as_bytes())?;
        });
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_problems_are_in_the_file() {
        let (_root, dir) = folder();
        proptest!(|(bytes in proptest::collection::vec(any::<u8>(), 0..300))| {
            check(&dir, &bytes)?;
        });
    }

    #[test]
    fn mutated_manifests_never_panic_and_problems_are_in_the_file() {
        let (_root, dir) = folder();
        proptest!(|(mutations in proptest::collection::vec(mutation(), 1..6))| {
            check(&dir, &apply(&mutations))?;
        });
    }
}
