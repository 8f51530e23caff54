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

mod hostile {
    //! Arbitrary bundles (names with `..`, absolute, empty or repeated; links, devices, fifos,
    //! odd modes and sizes; cut short) never panic the installer, never write outside the
    //! staging folder, and either install a valid plugin or give an error, leaving nothing
    //! hidden behind. `PROPTEST_CASES` sets how many (64 unless told).

    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    struct Entry {
        name: Vec<u8>,
        kind: u8,
        mode: u32,
        data: Vec<u8>,
        link: Vec<u8>,
    }

    fn name() -> impl Strategy<Value = Vec<u8>> {
        let part = prop::sample::select(vec![
            "manifest.yaml",
            "pup",
            "pup.sha256",
            "a",
            "..",
            ".",
            "",
            ".hidden",
        ]);
        (any::<bool>(), prop::collection::vec(part, 1..4)).prop_map(|(absolute, parts)| {
            let joined = parts.join("/");
            let name = if absolute {
                format!("/{joined}")
            } else {
                joined
            };
            name.into_bytes()
        })
    }

    fn entry() -> impl Strategy<Value = Entry> {
        let kind = prop::sample::select(vec![
            b'0', b'0', b'0', b'5', b'5', b'1', b'2', b'3', b'4', b'6', b'7', b'L', b'x', b'g',
        ]);
        let data = prop_oneof![
            Just(manifest("pup").into_bytes()),
            Just(b"#!/bin/sh\n".to_vec()),
            prop::collection::vec(any::<u8>(), 0..2048),
        ];
        let link = prop::sample::select(vec!["/etc/passwd", "../outside", "pup", "a/../.."]);
        (name(), kind, any::<u32>(), data, link).prop_map(|(name, kind, mode, data, link)| Entry {
            name,
            kind,
            mode: mode & 0o7777,
            data,
            link: link.as_bytes().to_vec(),
        })
    }

    /// The tar, with each header written as given (the builder would refuse these names).
    fn pack(entries: &[Entry], cut: Option<usize>) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for entry in entries {
            let mut header = tar::Header::new_gnu();
            let gnu = header.as_gnu_mut().unwrap();
            let name = &entry.name[..entry.name.len().min(100)];
            gnu.name[..name.len()].copy_from_slice(name);
            let link = &entry.link[..entry.link.len().min(100)];
            gnu.linkname[..link.len()].copy_from_slice(link);
            header.set_entry_type(tar::EntryType::new(entry.kind));
            header.set_mode(entry.mode);
            header.set_size(entry.data.len() as u64);
            header.set_cksum();
            builder.append(&header, &entry.data[..]).unwrap();
        }
        let tar = builder.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let mut data = gz.finish().unwrap();
        if let Some(cut) = cut {
            data.truncate(cut % (data.len() + 1));
        }
        data
    }

    fn cases() -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(64)
    }

    /// Everything under `dir`: no links or special files, modes normalised.
    fn check_tree(dir: &Path) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            let mode = entry.metadata().unwrap().permissions().mode() & 0o7777;
            assert!(
                !kind.is_symlink() && !kind.is_fifo() && !kind.is_char_device(),
                "{}",
                entry.path().display()
            );
            if kind.is_dir() {
                assert_eq!(mode, 0o755, "{}", entry.path().display());
                check_tree(&entry.path());
            } else {
                assert!(
                    mode == 0o755 || mode == 0o644,
                    "{} {mode:o}",
                    entry.path().display()
                );
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bundles_install_a_plugin_or_fail_cleanly(
            entries in prop::collection::vec(entry(), 0..12),
            top in any::<bool>(),
            cut in prop::option::weighted(0.1, any::<usize>()),
            small in any::<bool>(),
            valid in any::<bool>(),
        ) {
            let mut entries = entries;
            if valid {
                // A valid plugin first, so that what follows it decides the outcome.
                let file = |name: &str, data: Vec<u8>, mode| Entry {
                    name: name.as_bytes().to_vec(),
                    kind: b'0',
                    mode,
                    data,
                    link: Vec::new(),
                };
                entries.splice(0..0, [
                    file("manifest.yaml", manifest("pup").into_bytes(), 0o644),
                    file("pup", b"#!/bin/sh\n".to_vec(), 0o755),
                ]);
            }
            let entries: Vec<Entry> = if top {
                // Inside one top-level folder, as `tar czf pup.tar.gz pup` makes them.
                entries.into_iter().map(|mut e| {
                    e.name = [b"pkg/".as_slice(), &e.name].concat();
                    e
                }).collect()
            } else {
                entries
            };
            let data = pack(&entries, cut);
            let outer = tempfile::tempdir().unwrap();
            let root = outer.path().join("plugins");
            std::fs::create_dir(&root).unwrap();
            let limits = if small {
                Limits { unpacked_bytes: 8 << 10, files: 6, ratio: 4, ratio_grace_bytes: 1 << 10 }
            } else {
                Limits::default()
            };
            let result = Installer::new(&root, &dev())
                .insecure_skip_checksum(true)
                .limits(limits)
                .tar_gz(&data[..], Path::new("arbitrary.tar.gz"));
            let beside: Vec<_> = std::fs::read_dir(outer.path()).unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            prop_assert_eq!(beside, vec![std::ffi::OsString::from("plugins")]);
            prop_assert!(leftovers(&root).is_empty(), "{:?}", leftovers(&root));
            let installed: Vec<_> = std::fs::read_dir(&root).unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            match result {
                Ok(done) => {
                    prop_assert_eq!(&done.plugin.manifest.name, "pup");
                    prop_assert_eq!(installed, vec![std::ffi::OsString::from("pup")]);
                    prop_assert!(crate::discovery::load(&root.join("pup")).is_ok());
                    check_tree(&root);
                }
                Err(_) => prop_assert!(installed.is_empty(), "{:?}", installed),
            }
        }
    }
}

/// [`manifest`] written as JSON.
fn json_manifest(name: &str) -> String {
    let value: serde_json::Value = serde_saphyr::from_str(&manifest(name)).unwrap();
    serde_json::to_string_pretty(&value).unwrap()
}

#[test]
fn json_manifests_install_from_folders_and_bundles() {
    let root = tempfile::tempdir().unwrap();
    let binary = b"#!/bin/sh\n";
    let digest = {
        use sha2::Digest as _;
        crate::checksum::Sha256(sha2::Sha256::digest(binary).into()).to_hex()
    };
    let dog_sidecar = format!("{digest}  dog\n");
    // A bundle with one top folder holding manifest.json.
    let data = bundle(
        &[
            ("pkg/manifest.json", json_manifest("dog").as_bytes()),
            ("pkg/dog", binary),
            ("pkg/dog.sha256", dog_sidecar.as_bytes()),
        ],
        None,
        None,
    );
    let installed = Installer::new(root.path(), &dev())
        .tar_gz(&data[..], Path::new("dog.tar.gz"))
        .unwrap();
    assert_eq!(installed.plugin.manifest.name, "dog");
    assert_eq!(
        installed.plugin.manifest_file,
        root.path().join("dog/manifest.json")
    );
    assert!(!root.path().join("dog/manifest.yaml").exists());

    // A folder.
    let src = tempfile::tempdir().unwrap();
    let dir = src.path().join("cat");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("cat"), binary).unwrap();
    sidecar(&dir, "cat");
    std::fs::write(dir.join("manifest.json"), json_manifest("cat")).unwrap();
    let installed = Installer::new(root.path(), &dev())
        .replace(false)
        .dir(&dir)
        .unwrap();
    assert_eq!(installed.plugin.manifest.name, "cat");
    assert!(root.path().join("cat/manifest.json").exists());

    // Both manifests: refused, naming both, nothing left behind.
    std::fs::write(dir.join("manifest.yaml"), manifest("cat")).unwrap();
    let err = Installer::new(root.path(), &dev())
        .replace(true)
        .dir(&dir)
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("manifest.yaml") && message.contains("manifest.json"),
        "{message}"
    );
    assert!(leftovers(root.path()).is_empty());
    assert!(!root.path().join("cat/manifest.yaml").exists());
}
