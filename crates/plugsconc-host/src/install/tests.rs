//! Installing from folders and bundles: what is accepted, what is refused, and that a refusal
//! leaves nothing behind.

use std::io::{Read as _, Write as _};

use super::*;
use crate::discovery::tests::write_plugin;

fn sidecar(dir: &Path, name: &str) {
    let digest = sha256_file(&dir.join(name)).unwrap().to_hex();
    std::fs::write(
        dir.join(format!("{name}.sha256")),
        format!("{digest}  {name}\n"),
    )
    .unwrap();
}

fn leftovers(root: &Path) -> Vec<String> {
    std::fs::read_dir(root)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

fn dev() -> Trust {
    Trust::allow_unsigned()
}

#[test]
fn a_folder_is_validated_then_moved_into_place() {
    let src = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let dir = write_plugin(src.path(), "cat", "");
    // Without a sidecar: refused, nothing left.
    let err = Installer::new(root.path(), &dev())
        .replace(false)
        .dir(&dir)
        .unwrap_err();
    assert!(
        err.to_string().contains("sha256sum cat > cat.sha256"),
        "{err}"
    );
    assert!(leftovers(root.path()).is_empty() && !root.path().join("cat").exists());

    sidecar(&dir, "cat");
    let installed = Installer::new(root.path(), &dev())
        .replace(false)
        .dir(&dir)
        .unwrap();
    assert_eq!(installed.plugin.manifest.name, "cat");
    assert!(!installed.replaced);
    assert!(root.path().join("cat/manifest.yaml").exists());
    assert!(leftovers(root.path()).is_empty());

    // Again: refused unless replacing.
    let err = Installer::new(root.path(), &dev())
        .replace(false)
        .dir(&dir)
        .unwrap_err();
    assert!(err.to_string().contains("already installed"), "{err}");
    let installed = Installer::new(root.path(), &dev())
        .replace(true)
        .dir(&dir)
        .unwrap();
    assert!(installed.replaced);
    assert!(leftovers(root.path()).is_empty());

    // Unsigned under the production policy: refused.
    let err = Installer::new(root.path(), &Trust::default())
        .replace(true)
        .dir(&dir)
        .unwrap_err();
    assert!(matches!(err, HostError::Unsigned { .. }), "{err}");

    let aside = uninstall_dir(&root.path().join("cat")).unwrap();
    assert!(!root.path().join("cat").exists() && aside.exists());
}

fn bundle(entries: &[(&str, &[u8])], link: Option<&str>, raw_name: Option<&str>) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (path, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o755);
        header.set_cksum();
        builder.append_data(&mut header, path, *data).unwrap();
    }
    if let Some(target) = link {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        builder
            .append_link(&mut header, "pkg/escape", target)
            .unwrap();
    }
    if let Some(name) = raw_name {
        let mut header = tar::Header::new_gnu();
        header.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_size(1);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append(&header, &b"x"[..]).unwrap();
    }
    let mut gz = builder.into_inner().unwrap();
    gz.flush().unwrap();
    gz.finish().unwrap()
}

fn manifest(name: &str) -> String {
    format!(
        "plugin:\n  name: {name}\n  type: animal\n  version: 1.0.0\n  entrypoint: ./{name}\nhandshake:\n  protocol_version: 1\n  magic_cookie_key: K\n  magic_cookie_value: v\n"
    )
}

#[test]
fn a_bundle_with_one_top_folder_installs() {
    let root = tempfile::tempdir().unwrap();
    let binary = b"#!/bin/sh\n";
    let digest = {
        use sha2::Digest as _;
        crate::checksum::Sha256(sha2::Sha256::digest(binary).into()).to_hex()
    };
    let sidecar = format!("{digest}  dog\n");
    let data = bundle(
        &[
            ("pkg/manifest.yaml", manifest("dog").as_bytes()),
            ("pkg/dog", binary),
            ("pkg/dog.sha256", sidecar.as_bytes()),
        ],
        None,
        None,
    );
    let installed = Installer::new(root.path(), &dev())
        .tar_gz(&data[..], Path::new("dog.tar.gz"))
        .unwrap();
    assert_eq!(installed.plugin.manifest.name, "dog");
    assert!(root.path().join("dog/dog").exists());
    assert!(
        leftovers(root.path()).is_empty(),
        "{:?}",
        leftovers(root.path())
    );
}

#[test]
fn bundles_that_escape_or_hold_links_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let data = bundle(
        &[("pkg/manifest.yaml", manifest("x").as_bytes())],
        Some("/etc/passwd"),
        None,
    );
    let err = Installer::new(root.path(), &dev())
        .tar_gz(&data[..], Path::new("x.tar.gz"))
        .unwrap_err();
    assert!(err.to_string().contains("link or special file"), "{err}");
    assert!(leftovers(root.path()).is_empty());

    let data = bundle(
        &[("pkg/manifest.yaml", manifest("x").as_bytes())],
        None,
        Some("../evil"),
    );
    let err = Installer::new(root.path(), &dev())
        .tar_gz(&data[..], Path::new("x.tar.gz"))
        .unwrap_err();
    assert!(
        err.to_string().contains("escapes the plugin folder"),
        "{err}"
    );
    assert!(!root.path().parent().unwrap().join("evil").exists());
    assert!(leftovers(root.path()).is_empty());

    let err = Installer::new(root.path(), &dev())
        .tar_gz(&b"not gzip"[..], Path::new("x.tar.gz"))
        .unwrap_err();
    assert!(err.to_string().contains("x.tar.gz"), "{err}");
    assert!(leftovers(root.path()).is_empty());
}

#[test]
fn a_packed_folder_installs_elsewhere_the_same_without_setuid_bits() {
    use std::os::unix::fs::PermissionsExt as _;
    let src = tempfile::tempdir().unwrap();
    let dir = write_plugin(src.path(), "cat", "");
    sidecar(&dir, "cat");
    std::fs::create_dir(dir.join("proto")).unwrap();
    std::fs::write(dir.join("proto/animal.proto"), "syntax = \"proto3\";").unwrap();
    std::fs::set_permissions(dir.join("cat"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    let bundle = bundle_dir(&dir).unwrap();
    let root = tempfile::tempdir().unwrap();
    let installed = Installer::new(root.path(), &dev())
        .tar_gz(&bundle[..], Path::new("bundle"))
        .unwrap();
    assert_eq!(installed.plugin.manifest.name, "cat");
    let copy = root.path().join("cat");
    assert_eq!(
        std::fs::read(copy.join("proto/animal.proto")).unwrap(),
        b"syntax = \"proto3\";"
    );
    let mode = std::fs::metadata(copy.join("cat"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755, "executable, not setuid: {mode:o}");

    std::os::unix::fs::symlink("/etc/passwd", dir.join("link")).unwrap();
    let err = bundle_dir(&dir).unwrap_err();
    assert!(err.to_string().contains("link or special file"), "{err}");
}

#[test]
fn the_expected_name_is_checked_on_the_staged_manifest_and_duplicates_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let (pup, kv) = (manifest("pup"), manifest("kv"));
    let source = Path::new("the shared bundle of pup");
    // A nested manifest naming the expected plugin, before the top-level one naming another.
    let nested = bundle(
        &[
            ("a/manifest.yaml", pup.as_bytes()),
            ("manifest.yaml", kv.as_bytes()),
            ("kv", b"impostor"),
        ],
        None,
        None,
    );
    let err = Installer::new(root.path(), &dev())
        .insecure_skip_checksum(true)
        .expect_name("pup")
        .tar_gz(&nested[..], source)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("a plugin named \"kv\", not \"pup\""),
        "{err}"
    );
    assert!(!root.path().join("kv").exists() && leftovers(root.path()).is_empty());

    for twice in ["manifest.yaml", "./manifest.yaml"] {
        let duplicated = bundle(
            &[
                ("manifest.yaml", pup.as_bytes()),
                (twice, kv.as_bytes()),
                ("kv", b"impostor"),
                ("pup", b"impostor"),
            ],
            None,
            None,
        );
        let err = Installer::new(root.path(), &dev())
            .insecure_skip_checksum(true)
            .tar_gz(&duplicated[..], source)
            .unwrap_err();
        assert!(err.to_string().contains("appears twice"), "{err}");
        assert!(leftovers(root.path()).is_empty());
    }
    assert!(!root.path().join("kv").exists() && !root.path().join("pup").exists());

    let honest = bundle(
        &[("manifest.yaml", pup.as_bytes()), ("pup", b"pup")],
        None,
        None,
    );
    let installed = Installer::new(root.path(), &dev())
        .insecure_skip_checksum(true)
        .expect_name("pup")
        .tar_gz(&honest[..], source)
        .unwrap();
    assert_eq!(installed.plugin.manifest.name, "pup");
}

/// A bundle of the plugin `pup` (unsigned, no sidecar) with `extra` entries: (path, size, mode),
/// each file `size` bytes of `fill`.
fn pup_with(extra: &[(&str, u64, u32)], fill: u8) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::best(),
    ));
    let manifest = manifest("pup");
    let mut entries: Vec<(&str, u64, u32, Option<&[u8]>)> = vec![
        (
            "manifest.yaml",
            manifest.len() as u64,
            0o644,
            Some(manifest.as_bytes()),
        ),
        ("pup", 3, 0o755, Some(b"pup")),
    ];
    entries.extend(extra.iter().map(|&(p, s, m)| (p, s, m, None)));
    for (path, size, mode, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_mode(mode);
        if path.ends_with('/') {
            header.set_entry_type(tar::EntryType::Directory);
        }
        header.set_cksum();
        match data {
            Some(data) => builder.append_data(&mut header, path, data),
            None => builder.append_data(&mut header, path, std::io::repeat(fill).take(size)),
        }
        .unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

fn install_pup(data: &[u8], root: &Path, limits: Limits) -> Result<Installed, HostError> {
    Installer::new(root, &dev())
        .insecure_skip_checksum(true)
        .limits(limits)
        .tar_gz(data, Path::new("pup.tar.gz"))
}

fn over(result: Result<Installed, HostError>) -> BundleLimit {
    match result {
        Err(HostError::BundleTooLarge { limit, .. }) => limit,
        other => panic!(
            "expected a cap refusal, got {:?}",
            other.map(|i| i.plugin.dir)
        ),
    }
}

#[test]
fn a_compression_bomb_is_stopped_by_the_ratio() {
    let root = tempfile::tempdir().unwrap();
    let limits = Limits {
        ratio_grace_bytes: 1 << 20,
        ..Limits::default()
    };
    // 16 MiB of zeros compress about a thousand times.
    let bomb = pup_with(&[("zeros", 16 << 20, 0o644)], 0);
    assert!(bomb.len() < 64 << 10, "{}", bomb.len());
    assert_eq!(
        over(install_pup(&bomb, root.path(), limits)),
        BundleLimit::Ratio
    );
    assert!(leftovers(root.path()).is_empty() && !root.path().join("pup").exists());
    // The same bytes within the grace install.
    let small = pup_with(&[("zeros", 512 << 10, 0o644)], 0);
    install_pup(&small, root.path(), limits).unwrap();
}

#[test]
fn too_many_files_or_bytes_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let limits = Limits {
        files: 20,
        unpacked_bytes: 1 << 20,
        ..Limits::default()
    };
    let names: Vec<String> = (0..19).map(|i| format!("data/{i}")).collect();
    let many: Vec<(&str, u64, u32)> = names.iter().map(|n| (n.as_str(), 1, 0o644)).collect();
    // manifest, pup, 19 files: 21 entries.
    let err = install_pup(&pup_with(&many, b'x'), root.path(), limits).unwrap_err();
    assert!(err.to_string().contains("more than 20 files"), "{err}");
    assert_eq!(over(Err(err)), BundleLimit::Files);
    assert!(leftovers(root.path()).is_empty());
    install_pup(&pup_with(&many[1..], b'x'), root.path(), limits).unwrap();

    // Declared larger than the cap: refused on the header.
    let root = tempfile::tempdir().unwrap();
    let large = pup_with(&[("big", 2 << 20, 0o644)], b'x');
    assert_eq!(
        over(install_pup(&large, root.path(), limits)),
        BundleLimit::UnpackedBytes
    );
    // A long name the tar reader reads on its own counts as well.
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::GNULongName);
    header.set_path("././@LongLink").unwrap();
    header.set_size(2 << 20);
    header.set_cksum();
    builder
        .append(&header, std::io::repeat(b'a').take(2 << 20))
        .unwrap();
    let long = builder.into_inner().unwrap().finish().unwrap();
    assert_eq!(
        over(install_pup(&long, root.path(), limits)),
        BundleLimit::UnpackedBytes
    );
    assert!(leftovers(root.path()).is_empty() && !root.path().join("pup").exists());
}

#[test]
fn unpacked_modes_are_normalised() {
    use std::os::unix::fs::PermissionsExt as _;
    let root = tempfile::tempdir().unwrap();
    let data = pup_with(
        &[
            ("open/", 0, 0o777),
            ("open/all", 1, 0o777),
            ("open/rw", 1, 0o666),
            ("implied/user-exec", 1, 0o100),
            ("implied/none", 1, 0o000),
            ("sticky", 1, 0o7777),
        ],
        b'x',
    );
    let installed = install_pup(&data, root.path(), Limits::default()).unwrap();
    let mode = |path: &str| {
        std::fs::metadata(installed.plugin.dir.join(path))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    for (path, want) in [
        ("", 0o755),
        ("open", 0o755),
        ("implied", 0o755),
        ("open/all", 0o755),
        ("open/rw", 0o644),
        ("implied/user-exec", 0o755),
        ("implied/none", 0o644),
        ("sticky", 0o755),
        ("manifest.yaml", 0o644),
        ("pup", 0o755),
    ] {
        assert_eq!(mode(path), want, "{path}: {:o}", mode(path));
    }
}

#[test]
fn errors_name_files_relative_to_the_plugins_folder() {
    let root = tempfile::tempdir().unwrap();
    let staged = |err: &HostError| {
        let text = err.to_string();
        assert!(
            !text.contains(".install-") && !text.contains(&*root.path().to_string_lossy()),
            "{text}"
        );
        text
    };
    let broken = manifest("pup").replace("version: 1.0.0", "version: one");
    let data = bundle(
        &[
            ("pkg/manifest.yaml", broken.as_bytes()),
            ("pkg/pup", b"pup"),
        ],
        None,
        None,
    );
    let err = Installer::new(root.path(), &dev())
        .tar_gz(&data[..], Path::new("pup.tar.gz"))
        .unwrap_err();
    assert!(staged(&err).contains("pup/manifest.yaml"), "{err}");

    let sidecar = format!("{}  pup\n", "0".repeat(64));
    let data = bundle(
        &[
            ("manifest.yaml", manifest("pup").as_bytes()),
            ("pup", b"pup"),
            ("pup.sha256", sidecar.as_bytes()),
        ],
        None,
        None,
    );
    let err = Installer::new(root.path(), &dev())
        .tar_gz(&data[..], Path::new("pup.tar.gz"))
        .unwrap_err();
    assert!(matches!(err, HostError::ChecksumMismatch { .. }), "{err}");
    assert!(staged(&err).contains(" pup/pup"), "{err}");

    let err = Installer::new(root.path(), &Trust::default())
        .insecure_skip_checksum(true)
        .tar_gz(&data[..], Path::new("pup.tar.gz"))
        .unwrap_err();
    assert!(matches!(err, HostError::Unsigned { .. }), "{err}");
    assert!(staged(&err).contains("plugsconc sign pup`"), "{err}");
    assert!(leftovers(root.path()).is_empty());
}

#[test]
fn leftovers_of_killed_installs_are_cleared_but_not_those_of_running_ones() {
    let root = tempfile::tempdir().unwrap();
    let stale = root.path().join(".install-00000000000000aa");
    std::fs::create_dir_all(stale.join("pkg/deep")).unwrap();
    std::fs::write(stale.join("pkg/deep/big"), b"left by a kill -9").unwrap();
    std::fs::write(stale.join(STAGING_LOCK), b"").unwrap();
    let removed = root.path().join(".removed-00000000000000bb");
    std::fs::create_dir(&removed).unwrap();
    // An upgrade killed between its renames: the old version is put back.
    let aside = root.path().join(".replaced-00000000000000cc-pup");
    std::fs::create_dir(&aside).unwrap();
    std::fs::write(aside.join("manifest.yaml"), manifest("pup")).unwrap();
    // One killed after them: the old version goes.
    write_plugin(root.path(), "cat", "");
    std::fs::create_dir(root.path().join(".replaced-00000000000000dd-cat")).unwrap();

    let mut cleared = remove_leftovers(root.path()).unwrap();
    cleared.sort();
    assert_eq!(cleared.len(), 4, "{cleared:?}");
    assert!(
        leftovers(root.path()).is_empty(),
        "{:?}",
        leftovers(root.path())
    );
    assert!(root.path().join("pup/manifest.yaml").exists());
    assert!(root.path().join("cat/manifest.yaml").exists());

    // A running install's staging folder (locked) is left alone, and so is what it moved aside.
    let running = Staging::new(root.path(), Path::new("x")).unwrap();
    std::fs::create_dir(root.path().join(".replaced-00000000000000ee-dog")).unwrap();
    assert!(remove_leftovers(root.path()).unwrap().is_empty());
    assert!(running.pkg().exists());
    drop(running);
    assert_eq!(remove_leftovers(root.path()).unwrap().len(), 1);
    assert!(root.path().join("dog").exists() && leftovers(root.path()).is_empty());
}
