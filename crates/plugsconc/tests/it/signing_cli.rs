//! `plugsconc keygen`, `plugsconc sign` and `plugins verify` with trusted publishers: the
//! signing walkthrough end to end, the standard minisign tool on our signatures, and a binary
//! replaced after signing.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};

use crate::plugins_cli::{folder, plugins};
use crate::support;

fn run(args: &[&OsStr], envs: &[(&str, &str)]) -> Output {
    Command::new(support::plugsconc_bin())
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .expect("plugsconc runs")
}

fn keygen(out: &Path, name: &str, extra: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut args: Vec<&OsStr> = vec![
        "keygen".as_ref(),
        "--name".as_ref(),
        name.as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
    ];
    args.extend(extra.iter().map(|a| OsStr::new(*a)));
    run(&args, envs)
}

fn sign(dir: &Path, key: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut args: Vec<&OsStr> = vec![
        "sign".as_ref(),
        dir.as_os_str(),
        "--key".as_ref(),
        key.as_os_str(),
    ];
    args.extend(extra.iter().map(|a| OsStr::new(*a)));
    run(&args, envs)
}

fn succeeded(out: &Output) -> bool {
    if !out.status.success() {
        eprintln!(
            "stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.status.success()
}

fn json(out: &Output) -> Vec<serde_json::Value> {
    serde_json::from_slice(&out.stdout).unwrap()
}

fn find<'a>(results: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    results.iter().find(|r| r["name"] == name).unwrap()
}

/// The standard tool verifies a plugsconc signature (CI installs minisign; skipped loudly
/// elsewhere).
fn minisign_verifies(manifest: &Path, public: &Path) {
    match Command::new("minisign")
        .arg("-Vm")
        .arg(manifest)
        .arg("-p")
        .arg(public)
        .output()
    {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                text.contains("Trusted comment: plugsconc plugin=cat version=1.0.0"),
                "{text}"
            );
        }
        Err(_) => support::skip(
            "minisign_verifies",
            "minisign is not installed; signature compatibility not checked",
        ),
    }
}

#[test]
fn keygen_sign_verify_then_a_replaced_binary_fails() {
    let root = folder();
    let keys = tempfile::tempdir().unwrap();
    assert!(succeeded(&keygen(keys.path(), "acme", &[], &[])));
    let again = keygen(keys.path(), "acme", &[], &[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let (public, secret) = (keys.path().join("acme.pub"), keys.path().join("acme.key"));
    let trust = public.to_str().unwrap();

    // cat has a sidecar, dog has none: signing writes it, so a signed folder is complete.
    let (cat, dog) = (root.path().join("cat"), root.path().join("dog"));
    let out = sign(&cat, &secret, &[], &[]);
    assert!(succeeded(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("signed cat 1.0.0"));
    assert!(succeeded(&sign(&dog, &secret, &[], &[])));
    assert!(dog.join("dog.sha256").exists());

    // Unknown publisher: refused, naming the key id.
    let out = plugins(root.path(), &["verify", "cat"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("belongs to no trusted publisher (trusted: none)"),
        "{text}"
    );

    // The policy flags belong to `plugins`, before or after the subcommand.
    for args in [
        &["--trust", trust, "verify"][..],
        &["verify", "--trust", trust][..],
    ] {
        let out = plugins(root.path(), args);
        assert!(succeeded(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.lines()
                .any(|l| l.starts_with("cat") && l.contains("signed by acme")),
            "{text}"
        );
    }
    minisign_verifies(&cat.join("manifest.yaml"), &public);

    // Replace the binary and its sidecar: the checksum passes, the signature does not, under
    // every policy.
    std::fs::write(cat.join("cat"), "#!/bin/sh\necho evil\n").unwrap();
    let digest = plugsconc_host::sha256_file(&cat.join("cat"))
        .unwrap()
        .to_hex();
    std::fs::write(cat.join("cat.sha256"), format!("{digest}  cat\n")).unwrap();
    for policy in [
        &[][..],
        &["--allow-unsigned"][..],
        &["--unsigned", "cat"][..],
    ] {
        let mut args = vec!["verify", "--json", "--trust", trust];
        args.extend(policy);
        let out = plugins(root.path(), &args);
        assert!(!out.status.success(), "{policy:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("1 plugin(s) failed verification"));
        let results = json(&out);
        let cat = find(&results, "cat");
        assert_eq!(cat["ok"], false);
        assert_eq!(cat["checksum"]["ok"], true);
        assert_eq!(cat["checksum"]["sha256"], digest.as_str());
        assert_eq!(cat["signature"]["status"], "refused");
        let error = cat["signature"]["error"].as_str().unwrap();
        assert!(
            error.contains("replaced after signing") && error.contains(&digest),
            "{error}"
        );
        assert_eq!(cat["error"], cat["signature"]["error"]);
        let dog = find(&results, "dog");
        assert_eq!(
            (&dog["ok"], &dog["signature"]["publisher"]),
            (&true.into(), &"acme".into())
        );
    }

    // Re-signing the new binary is how a publisher vouches for it.
    assert!(succeeded(&sign(&cat, &secret, &[], &[])));
    assert!(succeeded(&plugins(
        root.path(),
        &["verify", "--trust", trust]
    )));
}

#[test]
fn a_password_protected_key_signs_with_its_password_from_the_environment() {
    let root = folder();
    let keys = tempfile::tempdir().unwrap();
    let password = [("SIGNING_PASSWORD", "correct horse")];
    assert!(succeeded(&keygen(
        keys.path(),
        "vault",
        &["--password-env", "SIGNING_PASSWORD"],
        &password
    )));
    let secret = keys.path().join("vault.key");
    let cat = root.path().join("cat");

    let out = sign(&cat, &secret, &[], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--password-env"), "{err}");
    let out = sign(&cat, &secret, &["--password-env", "SIGNING_PASSWORD"], &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("SIGNING_PASSWORD is not set"));

    assert!(succeeded(&sign(
        &cat,
        &secret,
        &["--password-env", "SIGNING_PASSWORD"],
        &password
    )));
    let public = keys.path().join("vault.pub");
    let out = plugins(
        root.path(),
        &[
            "verify",
            "cat",
            "--json",
            "--trust",
            public.to_str().unwrap(),
        ],
    );
    assert!(succeeded(&out));
    assert_eq!(json(&out)[0]["signature"]["publisher"], "vault");
}

/// Replaces the `manifest.yaml` of `dir` (plugin `cat`) with the same manifest written as JSON.
fn to_json_manifest(dir: &Path) {
    let manifest = serde_json::json!({
        "plugin": {"name": "cat", "type": "animal", "version": "1.0.0", "entrypoint": "./cat"},
        "about": {"description": "the cat"},
        "handshake": {
            "protocol_version": 1,
            "magic_cookie_key": "ANIMAL_PLUGIN",
            "magic_cookie_value": "animal"
        },
        "tags": ["pet"]
    });
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_string_pretty(&manifest).unwrap(),
    )
    .unwrap();
    std::fs::remove_file(dir.join("manifest.yaml")).unwrap();
}

#[test]
fn a_json_manifest_folder_is_listed_signed_and_verified() {
    let root = folder();
    let cat = root.path().join("cat");
    to_json_manifest(&cat);
    let out = plugins(root.path(), &["info", "cat", "--json"]);
    assert!(succeeded(&out));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["handshake"]["magic_cookie_key"], "ANIMAL_PLUGIN");
    let out = plugins(root.path(), &["list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("the cat"));

    let keys = tempfile::tempdir().unwrap();
    assert!(succeeded(&keygen(keys.path(), "acme", &[], &[])));
    let (public, secret) = (keys.path().join("acme.pub"), keys.path().join("acme.key"));
    let out = sign(&cat, &secret, &[], &[]);
    assert!(succeeded(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("manifest.json.minisig")
            && text.contains("-Vm ")
            && text.contains("cat/manifest.json -p"),
        "{text}"
    );
    assert!(cat.join("manifest.json.minisig").exists());
    assert!(!cat.join("manifest.yaml.minisig").exists());
    let out = plugins(
        root.path(),
        &["verify", "cat", "--trust", public.to_str().unwrap()],
    );
    assert!(succeeded(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("signed by acme"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    minisign_verifies(&cat.join("manifest.json"), &public);

    // An edit after signing no longer verifies.
    let edited = std::fs::read_to_string(cat.join("manifest.json"))
        .unwrap()
        .replace("the cat", "a cat");
    std::fs::write(cat.join("manifest.json"), edited).unwrap();
    let out = plugins(
        root.path(),
        &["verify", "cat", "--trust", public.to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("does not verify"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // A JSON mistake is shown where it is, as a YAML one is.
    std::fs::write(cat.join("manifest.json"), "{\n  \"plugin\": {,}\n}\n").unwrap();
    let out = plugins(root.path(), &["info", "cat"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("manifest.json:2:14"), "{text}");
}
