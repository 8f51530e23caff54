//! Signing and the policy: every way a signature can fail, each asserting its own error, and
//! each policy on unsigned plugins.

use super::*;
use crate::discovery::tests::write_plugin;
use crate::manifest::MANIFEST_FILE;

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

impl Fixture {
    fn sign(&self) -> Signed {
        sign_plugin(&self.dir, &self.keys.join("acme.key"), None).unwrap()
    }

    /// Signs the manifest with acme's key and a hand-written trusted comment.
    fn sign_with_comment(&self, comment: Option<&str>) {
        let text = std::fs::read_to_string(self.keys.join("acme.key")).unwrap();
        let key = minisign::SecretKeyBox::from_string(&text)
            .unwrap()
            .into_unencrypted_secret_key()
            .unwrap();
        let manifest = std::fs::read(self.dir.join(MANIFEST_FILE)).unwrap();
        let signature = minisign::sign(None, &key, Cursor::new(manifest), comment, None).unwrap();
        std::fs::write(self.dir.join(SIGNATURE_FILE), signature.into_string()).unwrap();
    }

    /// The trust with another policy and allow-list.
    fn with(&self, policy: SignaturePolicy, allowed: &[&str]) -> Trust {
        Trust {
            policy,
            unsigned_allowed: allowed.iter().map(|n| (*n).to_owned()).collect(),
            ..self.trust.clone()
        }
    }

    /// Every policy: a plugin with a signature is verified the same under each.
    fn every_policy(&self) -> [Trust; 3] {
        [
            self.trust.clone(),
            self.with(SignaturePolicy::AllowUnsigned, &[]),
            self.with(SignaturePolicy::RequireSigned, &["cat"]),
        ]
    }
}

fn check_dir(dir: &Path, trust: &Trust) -> Result<Verdict, HostError> {
    let plugin = crate::discovery::load(dir).unwrap();
    let binary = sha256_file(&plugin.entrypoint()).unwrap();
    check(&plugin, &binary, trust)
}

#[test]
fn a_signed_plugin_passes_and_names_its_publisher() {
    let f = fixture();
    let signed = f.sign();
    assert_eq!(signed.plugin, "cat");
    assert_eq!(signed.key_id, f.trust.publishers[0].key_id);
    // The sidecar is written too, so a signed folder is complete.
    let sidecar = crate::checksum::read_sidecar("cat", &f.dir.join("cat")).unwrap();
    assert_eq!(sidecar, signed.sha256);
    for trust in f.every_policy() {
        assert_eq!(
            check_dir(&f.dir, &trust).unwrap(),
            Verdict::Signed {
                publisher: "acme".into(),
                key_id: signed.key_id.clone()
            }
        );
    }
    let text = std::fs::read_to_string(f.dir.join(SIGNATURE_FILE)).unwrap();
    assert!(
        text.contains(&format!(
            "trusted comment: plugsconc plugin=cat version=1.0.0 entrypoint=cat sha256={} timestamp=",
            sidecar.to_hex()
        )),
        "{text}"
    );
    assert!(!f.dir.join("manifest.yaml.minisig.tmp").exists());
}

#[test]
fn a_replaced_binary_is_refused_under_every_policy() {
    let f = fixture();
    let signed = f.sign();
    std::fs::write(f.dir.join("cat"), b"#!/bin/sh\necho evil\n").unwrap();
    let replaced = sha256_file(&f.dir.join("cat")).unwrap();
    for trust in f.every_policy() {
        match check_dir(&f.dir, &trust).unwrap_err() {
            HostError::SignedBinaryMismatch {
                plugin,
                path,
                signed: in_signature,
                actual,
            } => {
                assert_eq!(plugin, "cat");
                assert_eq!(path, f.dir.join("cat"));
                assert_eq!(in_signature, signed.sha256.to_hex());
                assert_eq!(actual, replaced.to_hex());
            }
            other => panic!("expected SignedBinaryMismatch, got {other}"),
        }
    }
    let message = check_dir(&f.dir, &f.trust).unwrap_err().to_string();
    assert!(message.contains("replaced after signing"), "{message}");
}

#[test]
fn an_edited_manifest_is_a_bad_signature() {
    let f = fixture();
    f.sign();
    let manifest = f.dir.join(MANIFEST_FILE);
    let edited = std::fs::read_to_string(&manifest).unwrap() + "tags: [sneaky]\n";
    std::fs::write(&manifest, edited).unwrap();
    for trust in f.every_policy() {
        let err = check_dir(&f.dir, &trust).unwrap_err();
        assert!(
            matches!(&err, HostError::BadSignature { plugin, publisher, .. } if plugin == "cat" && publisher == "acme"),
            "{err}"
        );
    }
}

#[test]
fn another_plugins_signature_is_a_bad_signature() {
    let f = fixture();
    let dog = write_plugin(f.dir.parent().unwrap(), "dog", "");
    sign_plugin(&dog, &f.keys.join("acme.key"), None).unwrap();
    let text = std::fs::read_to_string(dog.join(SIGNATURE_FILE)).unwrap();
    std::fs::write(f.dir.join(SIGNATURE_FILE), text).unwrap();
    let err = check_dir(&f.dir, &f.trust).unwrap_err();
    assert!(matches!(err, HostError::BadSignature { .. }), "{err}");
}

#[test]
fn a_key_of_no_trusted_publisher_is_refused_by_its_id() {
    let f = fixture();
    let (stranger, secret) = keygen(&f.keys, "stranger", None, false).unwrap();
    let stranger = Publisher::load(&stranger).unwrap();
    sign_plugin(&f.dir, &secret, None).unwrap();
    for trust in f.every_policy() {
        match check_dir(&f.dir, &trust).unwrap_err() {
            HostError::UntrustedKey {
                key_id, trusted, ..
            } => {
                assert_eq!(key_id, stranger.key_id);
                assert_eq!(trusted, format!("acme ({})", f.trust.publishers[0].key_id));
            }
            other => panic!("expected UntrustedKey, got {other}"),
        }
    }
    let nobody = Trust::allow_unsigned();
    let err = check_dir(&f.dir, &nobody).unwrap_err();
    assert!(
        matches!(&err, HostError::UntrustedKey { trusted, .. } if trusted == "none"),
        "{err}"
    );
    // Trusting the stranger makes the same signature pass.
    let both = Trust {
        publishers: vec![f.trust.publishers[0].clone(), stranger],
        ..Trust::default()
    };
    assert!(matches!(
        check_dir(&f.dir, &both).unwrap(),
        Verdict::Signed { publisher, .. } if publisher == "stranger"
    ));
}

#[test]
fn a_malformed_signature_file_is_refused_under_every_policy() {
    let f = fixture();
    std::fs::write(f.dir.join(SIGNATURE_FILE), "garbage").unwrap();
    for trust in f.every_policy() {
        match check_dir(&f.dir, &trust).unwrap_err() {
            HostError::Signature { path, reason, .. } => {
                assert_eq!(path, f.dir.join(SIGNATURE_FILE));
                assert!(reason.contains("not a minisign signature"), "{reason}");
            }
            other => panic!("expected Signature, got {other}"),
        }
    }
    // A directory where the file should be: unreadable, not "unsigned".
    std::fs::remove_file(f.dir.join(SIGNATURE_FILE)).unwrap();
    std::fs::create_dir(f.dir.join(SIGNATURE_FILE)).unwrap();
    let err = check_dir(&f.dir, &f.with(SignaturePolicy::AllowUnsigned, &[])).unwrap_err();
    assert!(
        matches!(&err, HostError::Signature { reason, .. } if reason.contains("cannot read it")),
        "{err}"
    );
}

#[test]
fn a_plain_minisign_signature_binds_no_binary() {
    let f = fixture();
    f.sign_with_comment(None);
    let err = check_dir(&f.dir, &f.trust).unwrap_err();
    assert!(
        matches!(&err, HostError::Signature { reason, .. } if reason.contains("binds no binary")),
        "{err}"
    );
}

#[test]
fn a_comment_naming_another_plugin_or_version_is_refused() {
    let f = fixture();
    let binary = sha256_file(&f.dir.join("cat")).unwrap().to_hex();
    for (comment, field, signed) in [
        (
            format!(
                "plugsconc plugin=dog version=1.0.0 entrypoint=cat sha256={binary} timestamp=1"
            ),
            "plugin",
            "dog",
        ),
        (
            format!(
                "plugsconc plugin=cat version=2.0.0 entrypoint=cat sha256={binary} timestamp=1"
            ),
            "version",
            "2.0.0",
        ),
    ] {
        f.sign_with_comment(Some(&comment));
        match check_dir(&f.dir, &f.trust).unwrap_err() {
            HostError::SignedForOther {
                field: got,
                signed: value,
                ..
            } => assert_eq!((got, value.as_str()), (field, signed)),
            other => panic!("expected SignedForOther, got {other}"),
        }
    }
    f.sign_with_comment(Some(
        "plugsconc plugin=cat version=1.0.0 entrypoint=cat sha256=xyz timestamp=1",
    ));
    let err = check_dir(&f.dir, &f.trust).unwrap_err();
    assert!(
        matches!(&err, HostError::Signature { reason, .. } if reason.contains("not 64 hex digits")),
        "{err}"
    );
}

#[test]
fn a_manifest_changed_since_discovery_is_not_vouched_for() {
    let f = fixture();
    f.sign();
    let plugin = crate::discovery::load(&f.dir).unwrap();
    let binary = sha256_file(&plugin.entrypoint()).unwrap();
    let manifest = f.dir.join(MANIFEST_FILE);
    std::fs::write(
        &manifest,
        std::fs::read_to_string(&manifest).unwrap() + "# later\n",
    )
    .unwrap();
    let err = check(&plugin, &binary, &f.trust).unwrap_err();
    assert!(
        matches!(&err, HostError::Signature { reason, .. } if reason.contains("changed since it was read")),
        "{err}"
    );
}

#[test]
fn unsigned_plugins_follow_the_policy() {
    let f = fixture();
    let err = check_dir(&f.dir, &f.trust).unwrap_err();
    assert!(
        matches!(&err, HostError::Unsigned { plugin, dir } if plugin == "cat" && *dir == f.dir),
        "{err}"
    );
    assert!(err.to_string().contains("plugsconc sign"), "{err}");
    // The allow-list names plugins: another one stays refused.
    let err = check_dir(&f.dir, &f.with(SignaturePolicy::RequireSigned, &["dog"])).unwrap_err();
    assert!(matches!(err, HostError::Unsigned { .. }), "{err}");

    for (trust, allowed_by) in [
        (
            f.with(SignaturePolicy::RequireSigned, &["cat"]),
            UnsignedAllowance::AllowList,
        ),
        (
            f.with(SignaturePolicy::AllowUnsigned, &[]),
            UnsignedAllowance::Policy,
        ),
        (Trust::allow_unsigned(), UnsignedAllowance::Policy),
        (
            f.with(SignaturePolicy::AllowUnsigned, &["cat"]),
            UnsignedAllowance::AllowList,
        ),
    ] {
        assert_eq!(
            check_dir(&f.dir, &trust).unwrap(),
            Verdict::Unsigned { allowed_by }
        );
    }
}

#[test]
fn the_binding_survives_an_entry_point_with_spaces() {
    let comment = "plugsconc plugin=cat version=1.0.0-rc.1 entrypoint=bin/my cat sha256=ab sha256=cd timestamp=7";
    let binding = Binding::parse(comment).unwrap();
    assert_eq!(
        binding,
        Binding {
            plugin: "cat",
            version: "1.0.0-rc.1",
            entrypoint: "bin/my cat sha256=ab",
            sha256: "cd",
            timestamp: "7",
        }
    );
    assert_eq!(binding.to_string(), comment);
    for other in [
        "timestamp:1700000000\tfile:manifest.yaml",
        "plugsconc plugin=cat",
        "other plugin=cat version=1 entrypoint=cat sha256=ab timestamp=1",
    ] {
        assert_eq!(Binding::parse(other), None, "{other}");
    }
}

#[test]
fn keygen_refuses_to_overwrite_and_keeps_the_secret_private() {
    let f = fixture();
    let err = keygen(&f.keys, "acme", None, false).unwrap_err();
    assert!(
        matches!(&err, HostError::KeyFile { reason, .. } if reason.contains("--force")),
        "{err}"
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&f.keys.join("acme.key")), 0o600);

    let (public, secret) = keygen(&f.keys, "acme", None, true).unwrap();
    assert_eq!(mode(&secret), 0o600);
    let replaced = Publisher::load(&public).unwrap();
    assert_ne!(replaced.key_id, f.trust.publishers[0].key_id, "a new key");

    for name in ["", "../up", ".hidden", "a/b"] {
        let err = keygen(&f.keys, name, None, false).unwrap_err();
        assert!(err.to_string().contains("publisher name"), "{err}");
    }
}

#[test]
fn keys_given_the_wrong_way_round_say_so() {
    let f = fixture();
    let err = Publisher::load(&f.keys.join("acme.key")).unwrap_err();
    assert!(
        err.to_string().contains("trust the publisher's .pub"),
        "{err}"
    );
    let err = sign_plugin(&f.dir, &f.keys.join("acme.pub"), None).unwrap_err();
    assert!(
        matches!(&err, HostError::KeyFile { reason, .. } if reason.contains("secret .key")),
        "{err}"
    );
    let garbage = f.keys.join("garbage.pub");
    std::fs::write(&garbage, "untrusted comment: x\nnot base64\n").unwrap();
    let err = Publisher::load(&garbage).unwrap_err();
    assert!(
        err.to_string().contains("not a minisign public key"),
        "{err}"
    );
    assert!(!f.dir.join(SIGNATURE_FILE).exists());
}

#[test]
fn a_password_protected_key_needs_its_password() {
    let f = fixture();
    let (public, secret) = keygen(&f.keys, "vault", Some("hunter2".into()), false).unwrap();
    let err = sign_plugin(&f.dir, &secret, None).unwrap_err();
    assert!(
        matches!(&err, HostError::KeyFile { reason, .. } if reason.contains("--password-env")),
        "{err}"
    );
    let err = sign_plugin(&f.dir, &secret, Some("wrong".into())).unwrap_err();
    assert!(
        matches!(&err, HostError::KeyFile { reason, .. } if reason.contains("password given")),
        "{err}"
    );
    assert!(!f.dir.join(SIGNATURE_FILE).exists(), "nothing written");
    sign_plugin(&f.dir, &secret, Some("hunter2".into())).unwrap();
    let trust = Trust {
        publishers: vec![Publisher::load(&public).unwrap()],
        ..Trust::default()
    };
    assert!(matches!(
        check_dir(&f.dir, &trust).unwrap(),
        Verdict::Signed { publisher, .. } if publisher == "vault"
    ));
}

#[test]
fn signing_an_invalid_folder_names_the_problem() {
    let f = fixture();
    let manifest = f.dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("version: 1.0.0", "version: one")).unwrap();
    let err = sign_plugin(&f.dir, &f.keys.join("acme.key"), None).unwrap_err();
    match &err {
        HostError::Sign {
            plugin,
            path,
            reason,
        } => {
            assert_eq!((plugin.as_str(), path), ("cat", &manifest));
            assert!(reason.contains("plugin.version"), "{reason}");
        }
        other => panic!("expected Sign, got {other}"),
    }
    std::fs::write(&manifest, text).unwrap();
    std::fs::remove_file(f.dir.join("cat")).unwrap();
    let err = sign_plugin(&f.dir, &f.keys.join("acme.key"), None).unwrap_err();
    assert!(
        matches!(&err, HostError::Sign { reason, .. } if reason.contains("plugin.entrypoint")),
        "{err}"
    );
}
