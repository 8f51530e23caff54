//! Installing a plugin into a plugins folder — from another folder or a `.tar.gz` bundle — and
//! uninstalling one. The files are staged in a hidden folder inside the plugins folder (the
//! watcher and discovery ignore hidden folders), validated there exactly as the host would before
//! exec (manifest, contained entry point, checksum sidecar, signature policy), and only then
//! renamed into place, so a running host never sees a half-copied plugin. Archives may not
//! escape: absolute paths, `..`, links and special files are refused.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crate::HostError;
use crate::checksum::{read_sidecar, sha256_file};
use crate::discovery::{Discovered, load};
use crate::signature::{Trust, Verdict, check};

/// What was installed.
#[derive(Debug, Clone)]
pub struct Installed {
    /// The plugin now in the folder.
    pub plugin: Discovered,
    /// Its signature verdict.
    pub verdict: Verdict,
    /// Whether it replaced a plugin of the same name.
    pub replaced: bool,
}

fn fail(source: &Path, reason: impl Into<String>) -> HostError {
    HostError::Install {
        source_path: source.to_owned(),
        reason: reason.into(),
    }
}

/// A hidden staging folder in `root` (removed on drop) with the files in `pkg/` inside it.
struct Staging(PathBuf);

impl Staging {
    fn new(root: &Path, source: &Path) -> Result<Self, HostError> {
        let dir = root.join(format!(".install-{:016x}", fastrand::u64(..)));
        std::fs::create_dir_all(dir.join("pkg"))
            .map_err(|err| fail(source, format!("cannot stage in {}: {err}", root.display())))?;
        Ok(Self(dir))
    }

    fn pkg(&self) -> PathBuf {
        self.0.join("pkg")
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How a plugin is installed into a plugins folder: under which signature policy, whether it
/// may replace an installed plugin, and which name it must have. Starts from the safe side: the
/// checksum sidecar required, no replacement, any name.
#[derive(Debug, Clone)]
pub struct Installer<'a> {
    root: &'a Path,
    trust: &'a Trust,
    require_checksum: bool,
    replace: bool,
    expected: Option<&'a str>,
}

impl<'a> Installer<'a> {
    /// Installs into plugins folder `root` under `trust`.
    pub fn new(root: &'a Path, trust: &'a Trust) -> Self {
        Self {
            root,
            trust,
            require_checksum: true,
            replace: false,
            expected: None,
        }
    }

    /// Installs without a matching `.sha256` sidecar (the digest is still computed for the
    /// signature check). Insecure.
    #[must_use]
    pub fn insecure_skip_checksum(mut self, skip: bool) -> Self {
        self.require_checksum = !skip;
        self
    }

    /// Replaces an installed plugin of the same name (an upgrade).
    #[must_use]
    pub fn replace(mut self, replace: bool) -> Self {
        self.replace = replace;
        self
    }

    /// Refuses a plugin whose staged manifest names another plugin than `name` — checked on
    /// the very manifest that is installed, so a bundle cannot show one name and install
    /// another.
    #[must_use]
    pub fn expect_name(mut self, name: &'a str) -> Self {
        self.expected = Some(name);
        self
    }

    /// Installs the plugin in folder `source` (blocking).
    ///
    /// # Errors
    ///
    /// [`HostError::Install`] saying what is wrong, or the checksum or signature refusal;
    /// nothing is left in the plugins folder.
    pub fn dir(&self, source: &Path) -> Result<Installed, HostError> {
        let staging = Staging::new(self.root, source)?;
        copy_tree(source, &staging.pkg(), source, 0)?;
        self.finish(&staging, &staging.pkg(), source)
    }

    /// Installs the plugin in the `.tar.gz` bundle read from `archive` (blocking); `source`
    /// names it in errors. The bundle holds the plugin's files at its top level, or inside one
    /// top-level folder.
    ///
    /// # Errors
    ///
    /// [`HostError::Install`] saying what is wrong, or the checksum or signature refusal;
    /// nothing is left in the plugins folder.
    pub fn tar_gz(&self, archive: impl Read, source: &Path) -> Result<Installed, HostError> {
        let staging = Staging::new(self.root, source)?;
        unpack(archive, source, &staging.pkg())?;
        // One top-level folder holding the manifest: use it as the plugin folder.
        let pkg = staging.pkg();
        let top: Vec<PathBuf> = std::fs::read_dir(&pkg)
            .map_err(|err| fail(source, err.to_string()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        let plugin_dir = match top.as_slice() {
            [only] if only.is_dir() && !pkg.join(crate::manifest::MANIFEST_FILE).exists() => {
                only.clone()
            }
            _ => pkg,
        };
        self.finish(&staging, &plugin_dir, source)
    }
}

/// Unpacks the `.tar.gz` read from `archive` into the empty folder `pkg`.
fn unpack(archive: impl Read, source: &Path, pkg: &Path) -> Result<(), HostError> {
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    // Modes as given, without setuid/setgid/sticky bits: a bundle cannot plant a setuid file.
    tar.set_preserve_permissions(false);
    let entries = tar
        .entries()
        .map_err(|err| fail(source, format!("not a .tar.gz bundle: {err}")))?;
    let mut seen = std::collections::HashSet::new();
    for entry in entries {
        let mut entry = entry.map_err(|err| fail(source, format!("corrupt bundle: {err}")))?;
        let path = entry
            .path()
            .map_err(|err| fail(source, format!("corrupt bundle: {err}")))?
            .into_owned();
        let relative = contained(&path).ok_or_else(|| {
            fail(
                source,
                format!(
                    "{} escapes the plugin folder (absolute or `..`)",
                    path.display()
                ),
            )
        })?;
        let kind = entry.header().entry_type();
        if relative.as_os_str().is_empty() {
            continue;
        }
        // Two entries for one path: which one a reader sees would depend on the reader.
        if !seen.insert(relative.clone()) {
            return Err(fail(
                source,
                format!("{} appears twice in the bundle", relative.display()),
            ));
        }
        let target = pkg.join(&relative);
        if kind.is_dir() {
            std::fs::create_dir_all(&target).map_err(|err| fail(source, err.to_string()))?;
        } else if kind.is_file() {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|err| fail(source, err.to_string()))?;
            }
            entry
                .unpack(&target)
                .map_err(|err| fail(source, format!("cannot unpack {}: {err}", path.display())))?;
        } else {
            return Err(fail(
                source,
                format!(
                    "{} is a link or special file; bundles hold plain files and folders only",
                    path.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Packs the plugin folder `dir` as a `.tar.gz` bundle that [`Installer::tar_gz`] installs again
/// (its files at the top level; plain files and folders only) — how a daemon hands an installed
/// plugin to the daemons sharing its catalog (blocking).
///
/// # Errors
///
/// [`HostError::Install`] when a file cannot be read, or the folder holds a link or special
/// file.
pub fn bundle_dir(dir: &Path) -> Result<Vec<u8>, HostError> {
    fn add(
        tar: &mut tar::Builder<flate2::write::GzEncoder<Vec<u8>>>,
        dir: &Path,
        relative: &Path,
        depth: usize,
    ) -> Result<(), HostError> {
        if depth > 16 {
            return Err(fail(dir, "folders nested too deep"));
        }
        let here = dir.join(relative);
        let mut entries: Vec<_> = std::fs::read_dir(&here)
            .map_err(|err| fail(&here, format!("cannot read it: {err}")))?
            .filter_map(Result::ok)
            .collect();
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for entry in entries {
            let kind = entry
                .file_type()
                .map_err(|err| fail(&here, err.to_string()))?;
            let name = relative.join(entry.file_name());
            if kind.is_dir() {
                tar.append_dir(&name, entry.path())
                    .map_err(|err| fail(&entry.path(), err.to_string()))?;
                add(tar, dir, &name, depth + 1)?;
            } else if kind.is_file() {
                tar.append_path_with_name(entry.path(), &name)
                    .map_err(|err| fail(&entry.path(), err.to_string()))?;
            } else {
                return Err(fail(
                    &entry.path(),
                    "a link or special file; bundles hold plain files and folders only",
                ));
            }
        }
        Ok(())
    }
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    add(&mut tar, dir, Path::new(""), 0)?;
    tar.into_inner()
        .and_then(flate2::write::GzEncoder::finish)
        .map_err(|err| fail(dir, format!("cannot pack it: {err}")))
}

/// The path with `.` removed, if it has no root, prefix or `..`.
fn contained(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn copy_tree(from: &Path, to: &Path, source: &Path, depth: usize) -> Result<(), HostError> {
    if depth > 16 {
        return Err(fail(source, "folders nested too deep"));
    }
    let entries = std::fs::read_dir(from)
        .map_err(|err| fail(source, format!("cannot read {}: {err}", from.display())))?;
    for entry in entries.filter_map(Result::ok) {
        let kind = entry
            .file_type()
            .map_err(|err| fail(source, err.to_string()))?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            std::fs::create_dir(&target).map_err(|err| fail(source, err.to_string()))?;
            copy_tree(&entry.path(), &target, source, depth + 1)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target).map_err(|err| {
                fail(
                    source,
                    format!("cannot copy {}: {err}", entry.path().display()),
                )
            })?;
        } else {
            return Err(fail(
                source,
                format!(
                    "{} is a link or special file; plugin folders hold plain files and folders only",
                    entry.path().display()
                ),
            ));
        }
    }
    Ok(())
}

/// The `plugin.name` a manifest claims, read before validation (which needs the folder to
/// carry that name already).
fn claimed_name(dir: &Path, source: &Path) -> Result<String, HostError> {
    let text = std::fs::read_to_string(dir.join(crate::manifest::MANIFEST_FILE))
        .map_err(|err| fail(source, format!("no readable manifest.yaml: {err}")))?;
    let value: serde_json::Value = serde_saphyr::from_str(&text)
        .map_err(|err| fail(source, format!("manifest.yaml: {err}")))?;
    let name = value["plugin"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let simple = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if simple {
        Ok(name)
    } else {
        Err(fail(
            source,
            format!("manifest.yaml: plugin.name {name:?} is not a plain name"),
        ))
    }
}

impl Installer<'_> {
    /// Validates the staged plugin in `plugin_dir` and renames it into place.
    fn finish(
        &self,
        staging: &Staging,
        plugin_dir: &Path,
        source: &Path,
    ) -> Result<Installed, HostError> {
        let (root, trust, require_checksum, replace) =
            (self.root, self.trust, self.require_checksum, self.replace);
        let name = claimed_name(plugin_dir, source)?;
        if let Some(expected) = self.expected
            && name != expected
        {
            return Err(fail(
                source,
                format!("it holds a plugin named {name:?}, not {expected:?}; not installed"),
            ));
        }
        let named = staging.0.join(&name);
        std::fs::rename(plugin_dir, &named).map_err(|err| fail(source, err.to_string()))?;
        let staged = load(&named).map_err(|invalid| fail(source, invalid.error.to_string()))?;
        let entrypoint = staged.entrypoint();
        let digest = if require_checksum {
            let expected = read_sidecar(&name, &entrypoint)?;
            let actual = sha256_file(&entrypoint)
                .map_err(|err| fail(source, format!("cannot read the entry point: {err}")))?;
            if actual != expected {
                return Err(HostError::ChecksumMismatch {
                    plugin: name,
                    path: entrypoint,
                    expected: expected.to_hex(),
                    actual: actual.to_hex(),
                });
            }
            actual
        } else {
            sha256_file(&entrypoint)
                .map_err(|err| fail(source, format!("cannot read the entry point: {err}")))?
        };
        let verdict = check(&staged, &digest, trust)?;
        let target = root.join(&name);
        let replaced = target.exists();
        if replaced && !replace {
            return Err(fail(
                source,
                format!(
                    "a plugin named {name:?} is already installed; uninstall it or ask for a replacement"
                ),
            ));
        }
        if replaced {
            // Swap by renames: the old folder moves aside, the new one takes its name.
            let aside = root.join(format!(".replaced-{:016x}", fastrand::u64(..)));
            std::fs::rename(&target, &aside)
                .map_err(|err| fail(source, format!("cannot move the old version aside: {err}")))?;
            if let Err(err) = std::fs::rename(&named, &target) {
                let _ = std::fs::rename(&aside, &target);
                return Err(fail(
                    source,
                    format!("cannot move the plugin into place: {err}"),
                ));
            }
            let _ = std::fs::remove_dir_all(&aside);
        } else {
            std::fs::rename(&named, &target)
                .map_err(|err| fail(source, format!("cannot move the plugin into place: {err}")))?;
        }
        let plugin = load(&target).map_err(|invalid| fail(source, invalid.error.to_string()))?;
        Ok(Installed {
            plugin,
            verdict,
            replaced,
        })
    }
}

/// Removes plugin folder `dir` from its plugins folder: renamed aside first (so a watching host
/// sees it gone at once), then deleted. A host should drain the plugin (`Registry::sync_dir`)
/// between the two; this function does both steps when given no host.
///
/// # Errors
///
/// [`HostError::Install`] when the folder cannot be moved or removed.
pub fn uninstall_dir(dir: &Path) -> Result<PathBuf, HostError> {
    let root = dir
        .parent()
        .ok_or_else(|| fail(dir, "not inside a plugins folder"))?;
    let aside = root.join(format!(".removed-{:016x}", fastrand::u64(..)));
    std::fs::rename(dir, &aside).map_err(|err| fail(dir, format!("cannot remove it: {err}")))?;
    Ok(aside)
}

#[cfg(test)]
mod tests;
