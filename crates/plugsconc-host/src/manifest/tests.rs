//! A valid manifest, and a corpus of broken ones, each with the error it must produce.

use super::*;

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
            1,
            "hosts: missing or empty",
        ),
        (
            "two operations in one process entry",
            replace(
                "    - kill: [children]",
                "    - kill: [children]\n      list: [children]",
            ),
            1,
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
    for (what, text, line, expected) in cases {
        let err = parse(&text).expect_err(what);
        let message = err.to_string();
        assert!(
            message.contains("manifest.yaml"),
            "{what}: no file in {message:?}"
        );
        if line > 0 {
            assert_eq!(err.line, line, "{what}: wrong line in {message:?}");
        }
        assert!(err.line >= 1, "{what}: no line in {message:?}");
        assert!(err.column >= 1, "{what}: no column in {message:?}");
        assert!(
            message.contains(expected),
            "{what}: {message:?} lacks {expected:?}"
        );
    }
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
