//! Scanning a plugins folder: every `<dir>/<name>/manifest.yaml` (or `manifest.json`) is read and validated in
//! parallel, binaries are not touched (they start lazily). One broken plugin never hides the
//! others: the result holds every valid plugin and every invalid one with its error.

use std::path::{Path, PathBuf};

use sha2::Digest as _;

use crate::HostError;
use crate::checksum::Sha256;
use crate::manifest::{Manifest, ManifestError, has_manifest};

/// A plugin whose manifest is valid.
#[derive(Debug, Clone)]
pub struct Discovered {
    /// Its folder.
    pub dir: PathBuf,
    /// Its validated manifest.
    pub manifest: Manifest,
    /// The file it was read from (`manifest.yaml` or `manifest.json`), which a signature
    /// covers.
    pub manifest_file: PathBuf,
    /// SHA-256 of the manifest's bytes, to notice changes.
    pub manifest_sha256: Sha256,
    /// A [`DISABLED_MARKER`] file is in its folder.
    pub disabled: bool,
}

/// A file of this name in a plugin's folder keeps it disabled (`plugsconc plugins disable`
/// writes it, `enable` removes it).
pub const DISABLED_MARKER: &str = ".disabled";

/// A plugin folder's name, as its catalog name when its manifest cannot say.
pub(crate) fn folder_name(dir: &Path) -> String {
    dir.file_name().map_or_else(
        || dir.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

impl Discovered {
    /// Absolute path of the entry point.
    pub fn entrypoint(&self) -> PathBuf {
        self.dir.join(&self.manifest.entrypoint)
    }

    /// Where its signature is: the manifest file's name with `.minisig` added, as minisign
    /// names it (`manifest.yaml.minisig` or `manifest.json.minisig`).
    pub fn signature_file(&self) -> PathBuf {
        crate::signature::signature_path(&self.manifest_file)
    }
}

/// A folder whose manifest could not be used.
#[derive(Debug, Clone)]
pub struct Invalid {
    /// The folder.
    pub dir: PathBuf,
    /// Why.
    pub error: ManifestError,
}

/// Everything a scan found, sorted by folder name.
#[derive(Debug, Clone, Default)]
pub struct Discovery {
    /// Valid plugins.
    pub plugins: Vec<Discovered>,
    /// Folders with a broken manifest.
    pub invalid: Vec<Invalid>,
    /// Folders whose manifest could not be read (too many open files, an I/O error): a failure
    /// of the system, not of the plugin, so they are neither valid nor invalid; a later scan
    /// reads them again.
    pub unreadable: Vec<Invalid>,
}

/// A plugin of a [`Discovery`], found by name.
#[derive(Debug, Clone, Copy)]
pub enum Found<'a> {
    /// A plugin whose manifest is valid.
    Valid(&'a Discovered),
    /// A folder whose manifest is broken.
    Invalid(&'a Invalid),
}

impl Found<'_> {
    /// The plugin's folder.
    pub fn dir(&self) -> &Path {
        match self {
            Found::Valid(plugin) => &plugin.dir,
            Found::Invalid(invalid) => &invalid.dir,
        }
    }
}

impl Discovery {
    /// The plugin called `name`: a valid one by its manifest's name, else an invalid one by its
    /// folder's name (the name the catalog gives it).
    pub fn find(&self, name: &str) -> Option<Found<'_>> {
        self.plugins
            .iter()
            .find(|p| p.manifest.name == name)
            .map(Found::Valid)
            .or_else(|| {
                self.invalid
                    .iter()
                    .find(|i| folder_name(&i.dir) == name)
                    .map(Found::Invalid)
            })
    }

    /// The names of the valid plugins.
    pub fn names(&self) -> Vec<&str> {
        self.plugins
            .iter()
            .map(|p| p.manifest.name.as_str())
            .collect()
    }
}

/// Scans `root`: each sub-folder holding a `manifest.yaml` or `manifest.json` is a plugin. Blocking (file I/O on
/// worker threads); call it from `spawn_blocking` in async code.
///
/// # Errors
///
/// [`HostError::PluginsDir`] only when `root` itself cannot be listed.
pub fn discover(root: &Path) -> Result<Discovery, HostError> {
    let entries = std::fs::read_dir(root).map_err(|source| HostError::PluginsDir {
        path: root.to_owned(),
        cause: source,
    })?;
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .filter(|dir| has_manifest(dir))
        .collect();
    dirs.sort();
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(dirs.len().max(1));
    let chunk = dirs.len().div_ceil(workers).max(1);
    let results: Vec<Result<Discovered, Invalid>> = std::thread::scope(|scope| {
        let handles: Vec<_> = dirs
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(|dir| load(dir)).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut discovery = Discovery::default();
    for result in results {
        match result {
            Ok(plugin) => discovery.plugins.push(plugin),
            Err(invalid) if invalid.error.is_transient() => discovery.unreadable.push(invalid),
            Err(invalid) => discovery.invalid.push(invalid),
        }
    }
    Ok(discovery)
}

/// Loads one plugin folder. An error that [`ManifestError::is_transient`] says nothing about
/// the plugin: the manifest could not be read.
pub fn load(dir: &Path) -> Result<Discovered, Invalid> {
    match Manifest::load_located(dir) {
        Ok((manifest, bytes, manifest_file)) => Ok(Discovered {
            dir: dir.to_owned(),
            manifest,
            manifest_file,
            manifest_sha256: Sha256(sha2::Sha256::digest(&bytes).into()),
            disabled: dir.join(DISABLED_MARKER).exists(),
        }),
        Err(error) => Err(Invalid {
            dir: dir.to_owned(),
            error,
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::manifest::MANIFEST_FILE;

    pub(crate) fn write_plugin(root: &Path, name: &str, extra: &str) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), b"#!/bin/sh\n").unwrap();
        std::fs::write(
            dir.join(MANIFEST_FILE),
            format!(
                "plugin:\n  name: {name}\n  type: animal\n  version: 1.0.0\n  entrypoint: ./{name}\nhandshake:\n  protocol_version: 1\n  magic_cookie_key: K\n  magic_cookie_value: v\n{extra}"
            ),
        )
        .unwrap();
        dir
    }

    #[test]
    fn valid_and_invalid_side_by_side() {
        let root = tempfile::tempdir().unwrap();
        write_plugin(root.path(), "cat", "");
        write_plugin(root.path(), "dog", "tags: [a]\n");
        write_plugin(root.path(), "broken", "bogus: 1\n");
        std::fs::create_dir(root.path().join("no-manifest")).unwrap();
        std::fs::create_dir(root.path().join(".hidden")).unwrap();
        std::fs::write(root.path().join("stray-file"), b"").unwrap();
        let found = discover(root.path()).unwrap();
        let names: Vec<_> = found
            .plugins
            .iter()
            .map(|p| p.manifest.name.as_str())
            .collect();
        assert_eq!(names, ["cat", "dog"]);
        assert_eq!(found.invalid.len(), 1);
        assert!(
            found.invalid[0]
                .error
                .to_string()
                .contains("unknown field `bogus`")
        );
        assert_ne!(
            found.plugins[0].manifest_sha256,
            found.plugins[1].manifest_sha256
        );
        assert!(found.plugins[0].entrypoint().ends_with("cat/cat"));
    }

    #[test]
    fn an_unreadable_manifest_is_neither_valid_nor_invalid() {
        let root = tempfile::tempdir().unwrap();
        write_plugin(root.path(), "cat", "");
        let dog = write_plugin(root.path(), "dog", "");
        crate::manifest::tests::fail_reads(&dog.join(MANIFEST_FILE), libc::EMFILE, usize::MAX);
        let found = discover(root.path()).unwrap();
        crate::manifest::tests::stop_failing_reads(&dog.join(MANIFEST_FILE));
        assert_eq!(found.names(), ["cat"]);
        assert!(found.invalid.is_empty(), "{:?}", found.invalid);
        assert_eq!(found.unreadable.len(), 1);
        let error = &found.unreadable[0].error;
        assert!(error.is_transient());
        assert!(error.to_string().contains("Too many open files"), "{error}");
    }

    #[test]
    fn unreadable_root_is_an_error() {
        let err = discover(Path::new("/nonexistent/plugins")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/plugins"), "{err}");
    }
}
