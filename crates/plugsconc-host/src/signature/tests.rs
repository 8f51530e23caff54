//! Signing and the policy: every way a signature can fail, and each policy on unsigned plugins.

use super::*;
use crate::discovery::tests::write_plugin;

struct Fixture {
    _root: tempfile::TempDir,
    dir: PathBuf,
    keys: PathBuf,
    trust: Trust,
}

fn fixture() -> Fixture {
    let root = tempfile::tempdir().unwrap();
    let dir = write_plugin(root.path(), "cat", "");
    let keys = root.path().join("keys");
    let (public, _) = keygen(&keys, "acme", None, false).unwrap();
    let trust = Trust {
        publishers: vec![Publisher::load(&public).unwrap()],
        ..Trust::default()
    };
    Fixture {
        _root: root,
        dir,
        keys,
        trust,
    }
}

fn check_dir(dir: &Path, trust: &Trust) -> Result<Verdict, HostError> {
    let plugin = crate::discovery::load(dir).unwrap();
    let binary = sha256_file(&plugin.entrypoint()).unwrap();
    check(&plugin, &binary, trust)
}

fn reason(err: HostError) -> String {
    match err {
        HostError::Signature { reason, .. } => reason,
        other => panic!("expected a signature error, got {other}"),
    }
}

#[test]
fn a_signed_plugin_passes_and_names_its_publisher() {
    let f = fixture();
    let signed = sign_plugin(&f.dir, &f.keys.join("acme.key"), None).unwrap();
    assert_eq!(signed.plugin, "cat");
    assert_eq!(signed.key_id, f.trust.publishers[0].key_id);
    // The sidecar is written too, so a signed folder is complete.
    let sidecar = crate::checksum::read_sidecar("cat", &f.dir.join("cat")).unwrap();
    assert_eq!(sidecar, signed.sha256);
    let verdict = check_dir(&f.dir, &f.trust).unwrap();
    assert_eq!(
        verdict,
        Verdict::Signed {
            publisher: "acme".into(),
            key_id: signed.key_id
        }
    );
    let text = std::fs::read_to_string(f.dir.join(SIGNATURE_FILE)).unwrap();
    assert!(
        text.contains("trusted comment: plugsconc plugin=cat version=1.0.0 entrypoint="),
        "{text}"
    );
    assert!(
        text.contains(&format!("sha256={}", sidecar.to_hex())),
        "{text}"
    );
}

#[test]
fn a_replaced_binary_an_edited_manifest_and_a_stranger_key_are_refused() {
    let f = fixture();
    sign_plugin(&f.dir, &f.keys.join("acme.key"), None).unwrap();

    std::fs::write(f.dir.join("cat"), b"#!/bin/sh\necho evil\n").unwrap();
    let why = reason(check_dir(&f.dir, &f.trust).unwrap_err());
    assert!(why.contains("replaced after signing"), "{why}");

    sign_plugin(&f.dir, &f.keys.join("acme.key"), None).unwrap();
    let manifest = f.dir.join(MANIFEST_FILE);
    let edited = std::fs::read_to_string(&manifest).unwrap() + "tags: [sneaky]\n";
    std::fs::write(&manifest, edited).unwrap();
    let why = reason(check_dir(&f.dir, &f.trust).unwrap_err());
    assert!(why.contains("edited after signing"), "{why}");

    let (_, other) = keygen(&f.keys, "stranger", None, false).unwrap();
    sign_plugin(&f.dir, &other, None).unwrap();
    let why = reason(check_dir(&f.dir, &f.trust).unwrap_err());
    assert!(
        why.contains("not a trusted publisher's (trusted: acme ("),
        "{why}"
    );

    std::fs::write(f.dir.join(SIGNATURE_FILE), "garbage").unwrap();
    let why = reason(check_dir(&f.dir, &f.trust).unwrap_err());
    assert!(why.contains("not a minisign signature"), "{why}");
    // A bad signature fails even when unsigned plugins are allowed.
    let lax = Trust {
        policy: SignaturePolicy::AllowUnsigned,
        ..f.trust.clone()
    };
    assert!(check_dir(&f.dir, &lax).is_err());
}

#[test]
fn a_signature_for_another_plugin_is_refused() {
    let f = fixture();
    let dog = write_plugin(f.dir.parent().unwrap(), "dog", "");
    sign_plugin(&dog, &f.keys.join("acme.key"), None).unwrap();
    // Another plugin's signature covers another manifest.
    let text = std::fs::read_to_string(dog.join(SIGNATURE_FILE)).unwrap();
    std::fs::write(f.dir.join(SIGNATURE_FILE), text).unwrap();
    assert!(check_dir(&f.dir, &f.trust).is_err());
}

#[test]
fn unsigned_plugins_follow_the_policy() {
    let f = fixture();
    let err = check_dir(&f.dir, &f.trust).unwrap_err();
    assert!(matches!(err, HostError::Unsigned { .. }));
    assert!(err.to_string().contains("plugsconc sign"), "{err}");

    let listed = Trust {
        unsigned_allowed: ["cat".to_owned()].into(),
        ..f.trust.clone()
    };
    assert_eq!(
        check_dir(&f.dir, &listed).unwrap(),
        Verdict::Unsigned {
            allowed_by: "the unsigned allow-list"
        }
    );
    assert_eq!(
        check_dir(&f.dir, &Trust::allow_unsigned()).unwrap(),
        Verdict::Unsigned {
            allowed_by: "the allow-unsigned policy"
        }
    );
}

#[test]
fn keygen_refuses_to_overwrite_and_keeps_the_secret_private() {
    let f = fixture();
    let err = keygen(&f.keys, "acme", None, false).unwrap_err();
    assert!(err.to_string().contains("--force"), "{err}");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(f.keys.join("acme.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let err = Publisher::load(&f.keys.join("acme.key")).unwrap_err();
    assert!(
        err.to_string().contains("not a minisign public key"),
        "{err}"
    );
}
