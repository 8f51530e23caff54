//! Installing a plugin into a plugins folder — from another folder or a `.tar.gz` bundle — and
//! uninstalling one. The files are staged in a hidden folder inside the plugins folder (the
//! watcher and discovery ignore hidden folders), validated there exactly as the host would before
//! exec (manifest, contained entry point, checksum sidecar, signature policy), and only then
//! renamed into place, so a running host never sees a half-copied plugin. Archives may not
//! escape: absolute paths, `..`, links, special files and paths given twice are refused. A
//! bundle is unpacked as it is read, within [`Limits`] (unpacked size, files, compression
//! ratio), and what it unpacks gets normalised modes: files 0755 when executable by anyone,
//! else 0644, folders 0755 — never setuid, setgid, sticky or writable by others. What an
//! install killed midway leaves behind is cleared by [`remove_leftovers`], which whoever opens
//! the plugins folder for installs calls first.

use std::cell::Cell;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crate::HostError;
use crate::checksum::{read_sidecar, sha256_file};
use crate::discovery::{Discovered, load};
pub use crate::error::BundleLimit;
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

/// Name prefixes of what an install or uninstall keeps, hidden, in the plugins folder while it
/// runs: the staging folder, an old version moved aside by an upgrade, an uninstalled plugin
/// moved aside before its files are deleted.
const STAGING_PREFIX: &str = ".install-";
const REPLACED_PREFIX: &str = ".replaced-";
const REMOVED_PREFIX: &str = ".removed-";

/// The file in a staging folder that its install holds locked while it runs (the kernel drops
/// the lock when the process dies, however it dies).
const STAGING_LOCK: &str = ".lock";

/// A hidden staging folder in `root` (removed on drop) with the files in `pkg/` inside it,
/// locked while it is in use.
struct Staging {
    dir: PathBuf,
    /// Held for as long as the folder is in use.
    _lock: std::fs::File,
}

impl Staging {
    fn new(root: &Path, source: &Path) -> Result<Self, HostError> {
        let dir = root.join(format!("{STAGING_PREFIX}{:016x}", fastrand::u64(..)));
        let lock = std::fs::create_dir_all(root)
            .and_then(|()| std::fs::create_dir(&dir))
            .and_then(|()| std::fs::File::create(dir.join(STAGING_LOCK)))
            .and_then(|lock| lock.lock().map(|()| lock))
            .and_then(|lock| make_dirs(&dir, Path::new("pkg")).map(|()| lock));
        match lock {
            Ok(lock) => Ok(Self { dir, _lock: lock }),
            Err(err) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(fail(
                    source,
                    format!("cannot stage in {}: {err}", root.display()),
                ))
            }
        }
    }

    fn pkg(&self) -> PathBuf {
        self.dir.join("pkg")
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether the staging folder `dir` belongs to an install still running (its lock is held).
fn in_use(dir: &Path) -> bool {
    std::fs::File::open(dir.join(STAGING_LOCK))
        .is_ok_and(|lock| matches!(lock.try_lock(), Err(std::fs::TryLockError::WouldBlock)))
}

/// Clears what installs and uninstalls that were killed midway left in plugins folder `root`
/// (blocking): their staging folders and the plugins they had moved aside to delete are
/// removed; an old version an upgrade had moved aside is put back when the new one never took
/// its place. Staging folders of installs still running (in another process) are left alone,
/// and so is everything moved aside while one runs. Returns what was removed or put back.
///
/// # Errors
///
/// [`HostError::PluginsDir`] when the folder cannot be read; a leftover that cannot be removed
/// is skipped (and tried again next time).
pub fn remove_leftovers(root: &Path) -> Result<Vec<PathBuf>, HostError> {
    let entries = std::fs::read_dir(root).map_err(|source| HostError::PluginsDir {
        path: root.to_owned(),
        cause: source,
    })?;
    let hidden: Vec<(String, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .filter(|(name, _)| {
            [STAGING_PREFIX, REPLACED_PREFIX, REMOVED_PREFIX]
                .iter()
                .any(|prefix| name.starts_with(prefix))
        })
        .collect();
    let mut cleared = Vec::new();
    let mut running = false;
    for (name, path) in &hidden {
        if name.starts_with(STAGING_PREFIX) {
            if in_use(path) {
                running = true;
            } else if std::fs::remove_dir_all(path).is_ok() {
                cleared.push(path.clone());
            }
        }
    }
    // An install running elsewhere may be between its two renames: what it moved aside is its.
    if running {
        return Ok(cleared);
    }
    for (name, path) in &hidden {
        if let Some(rest) = name.strip_prefix(REPLACED_PREFIX) {
            // `.replaced-<16 hex digits>-<plugin>`.
            let plugin = rest
                .get(17..)
                .filter(|p| !p.is_empty() && !p.starts_with('.'));
            if let Some(plugin) = plugin
                && !root.join(plugin).exists()
                && std::fs::rename(path, root.join(plugin)).is_ok()
            {
                cleared.push(root.join(plugin));
                continue;
            }
        } else if !name.starts_with(REMOVED_PREFIX) {
            continue;
        }
        if std::fs::remove_dir_all(path).is_ok() {
            cleared.push(path.clone());
        }
    }
    Ok(cleared)
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
    limits: Limits,
    scanners: Option<&'a crate::scan::Scanners>,
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
            limits: Limits::default(),
            scanners: None,
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

    /// Caps on what a bundle may unpack to (default: [`Limits::default`]).
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Runs `scanners` over the staged plugin folder after the checksum and signature checks,
    /// before it is moved into place; a refusal fails the install (default: no scanner).
    #[must_use]
    pub fn scanners(mut self, scanners: &'a crate::scan::Scanners) -> Self {
        self.scanners = Some(scanners);
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
        copy_tree(source, &staging.pkg(), source, 0)
            .and_then(|()| self.finish(&staging, &staging.pkg(), source))
            .map_err(|err| relative(err, &staging.dir, self.root))
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
        self.unpack_and_finish(archive, source, &staging)
            .map_err(|err| relative(err, &staging.dir, self.root))
    }

    fn unpack_and_finish(
        &self,
        archive: impl Read,
        source: &Path,
        staging: &Staging,
    ) -> Result<Installed, HostError> {
        unpack(archive, source, &staging.pkg(), self.limits)?;
        // One top-level folder holding the manifest: use it as the plugin folder.
        let pkg = staging.pkg();
        let top: Vec<PathBuf> = std::fs::read_dir(&pkg)
            .map_err(|err| fail(source, err.to_string()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        let plugin_dir = match top.as_slice() {
            [only] if only.is_dir() && !crate::manifest::has_manifest(&pkg) => only.clone(),
            _ => pkg,
        };
        self.finish(staging, &plugin_dir, source)
    }
}

/// Caps on what a bundle may unpack to, so that a small upload cannot fill the disk or stall
/// the host: its unpacked size, its number of files and folders, and how much larger it
/// unpacks than it is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes the bundle may unpack to (its tar stream: the files and their headers).
    pub unpacked_bytes: u64,
    /// Files and folders it may hold.
    pub files: u64,
    /// Unpacked bytes per compressed byte, at most, once `ratio_grace_bytes` are unpacked.
    pub ratio: u64,
    /// Bytes unpacked before the ratio is checked (a small bundle of text compresses well).
    pub ratio_grace_bytes: u64,
}

impl Default for Limits {
    /// 1 GiB unpacked, 10,000 files and folders, a ratio of 100 after the first 4 MiB.
    fn default() -> Self {
        Self {
            unpacked_bytes: 1 << 30,
            files: 10_000,
            ratio: 100,
            ratio_grace_bytes: 4 << 20,
        }
    }
}

/// What has gone through the two readers of a bundle, and the cap it went over, if any.
#[derive(Debug)]
struct Meter {
    limits: Limits,
    compressed: Cell<u64>,
    unpacked: Cell<u64>,
    over: Cell<Option<BundleLimit>>,
}

impl Meter {
    fn trip(&self, limit: BundleLimit) -> std::io::Error {
        self.over.set(Some(limit));
        std::io::Error::other("the bundle goes over an install cap")
    }

    /// Records that the bundle goes over `limit`, found by the unpacking itself.
    fn over(&self, limit: BundleLimit, source: &Path) -> HostError {
        self.over.set(Some(limit));
        fail(source, "over an install cap")
    }

    /// The error for the cap that was gone over, if one was.
    fn refusal(&self, source: &Path) -> Option<HostError> {
        let limits = &self.limits;
        let (limit, reason) = match self.over.get()? {
            BundleLimit::UnpackedBytes => (
                BundleLimit::UnpackedBytes,
                format!("it unpacks to more than {} bytes", limits.unpacked_bytes),
            ),
            BundleLimit::Files => (
                BundleLimit::Files,
                format!("it holds more than {} files and folders", limits.files),
            ),
            BundleLimit::Ratio => (
                BundleLimit::Ratio,
                format!(
                    "it unpacks to more than {} times its compressed size",
                    limits.ratio
                ),
            ),
        };
        Some(HostError::BundleTooLarge {
            source_path: source.to_owned(),
            limit,
            reason,
        })
    }
}

/// Counts the compressed bytes read.
struct Compressed<'m, R> {
    inner: R,
    meter: &'m Meter,
}

impl<R: Read> Read for Compressed<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let total = self.meter.compressed.get().saturating_add(n as u64);
        self.meter.compressed.set(total);
        Ok(n)
    }
}

/// Counts the unpacked bytes read and stops at the size and ratio caps — below the tar reader,
/// so that nothing it reads on its own (long names, extension headers) escapes them.
struct Unpacked<'m, R> {
    inner: R,
    meter: &'m Meter,
}

impl<R: Read> Read for Unpacked<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let meter = self.meter;
        let n = self.inner.read(buf)?;
        let total = meter.unpacked.get().saturating_add(n as u64);
        meter.unpacked.set(total);
        let limits = &meter.limits;
        if total > limits.unpacked_bytes {
            return Err(meter.trip(BundleLimit::UnpackedBytes));
        }
        if total > limits.ratio_grace_bytes
            && total > meter.compressed.get().saturating_mul(limits.ratio)
        {
            return Err(meter.trip(BundleLimit::Ratio));
        }
        Ok(n)
    }
}

/// The mode an unpacked or copied file gets: executable by all if it was executable by anyone,
/// else readable by all; writable by its owner only, never setuid, setgid or sticky.
fn file_mode(mode: u32) -> u32 {
    if mode & 0o111 == 0 { 0o644 } else { 0o755 }
}

/// The mode of every installed folder.
const DIR_MODE: u32 = 0o755;

/// Creates `relative`'s folders under `pkg` that do not exist yet, each with [`DIR_MODE`]
/// whatever the umask.
fn make_dirs(pkg: &Path, relative: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    let mut here = pkg.to_owned();
    for part in relative.components() {
        here.push(part);
        match std::fs::symlink_metadata(&here) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!("{} is a file, not a folder", relative.display()),
                ));
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new().mode(DIR_MODE).create(&here)?;
                std::fs::set_permissions(&here, std::fs::Permissions::from_mode(DIR_MODE))?;
            }
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// Writes `content` to the new file `target` with [`file_mode`] of `mode`.
fn write_file(target: &Path, content: &mut impl Read, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let mode = file_mode(mode);
    // create_new: never through a file (or link) already there.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(target)?;
    std::io::copy(content, &mut file)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))
}

/// Unpacks the `.tar.gz` read from `archive` into the empty folder `pkg`, within `limits`.
fn unpack(archive: impl Read, source: &Path, pkg: &Path, limits: Limits) -> Result<(), HostError> {
    let meter = Meter {
        limits,
        compressed: Cell::new(0),
        unpacked: Cell::new(0),
        over: Cell::new(None),
    };
    let unpacked = Unpacked {
        inner: flate2::read::GzDecoder::new(Compressed {
            inner: archive,
            meter: &meter,
        }),
        meter: &meter,
    };
    unpack_entries(unpacked, source, pkg, &meter)
        .map_err(|err| meter.refusal(source).unwrap_or(err))
}

fn unpack_entries(
    unpacked: impl Read,
    source: &Path,
    pkg: &Path,
    meter: &Meter,
) -> Result<(), HostError> {
    let mut tar = tar::Archive::new(unpacked);
    let entries = tar
        .entries()
        .map_err(|err| fail(source, format!("not a .tar.gz bundle: {err}")))?;
    let mut seen = std::collections::HashSet::new();
    let mut declared: u64 = 0;
    for entry in entries {
        let mut entry = entry.map_err(|err| fail(source, format!("corrupt bundle: {err}")))?;
        if seen.len() as u64 >= meter.limits.files {
            return Err(meter.over(BundleLimit::Files, source));
        }
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
        let cannot = |err: std::io::Error| {
            fail(
                source,
                format!("cannot unpack {}: {err}", relative.display()),
            )
        };
        if kind.is_dir() {
            make_dirs(pkg, &relative).map_err(cannot)?;
        } else if kind.is_file() {
            // Refused on its header, before a byte of it is written.
            declared = declared.saturating_add(entry.size());
            if declared > meter.limits.unpacked_bytes {
                return Err(meter.over(BundleLimit::UnpackedBytes, source));
            }
            let mode = entry
                .header()
                .mode()
                .map_err(|err| fail(source, format!("corrupt bundle: {err}")))?;
            if let Some(parent) = relative.parent() {
                make_dirs(pkg, parent).map_err(cannot)?;
            }
            write_file(&pkg.join(&relative), &mut entry, mode).map_err(cannot)?;
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

/// `err` with the paths inside plugins folder `root` shown relative to it and without the
/// staging folder (`pup/manifest.yaml`; `<bundle>/...` before the plugin folder has its name):
/// what the operator needs is the plugin's file, not the installer's scratch space.
fn relative(mut err: HostError, staging: &Path, root: &Path) -> HostError {
    let pkg = staging.join("pkg");
    let bundle = Path::new("<bundle>");
    let path = |path: &mut PathBuf| {
        let shown = if let Ok(rest) = path.strip_prefix(&pkg) {
            bundle.join(rest)
        } else if let Ok(rest) = path.strip_prefix(staging) {
            rest.to_owned()
        } else if let Ok(rest) = path.strip_prefix(root) {
            rest.to_owned()
        } else {
            return;
        };
        *path = shown;
    };
    let text = |text: &mut String| {
        for (from, to) in [(pkg.as_path(), "<bundle>/"), (staging, ""), (root, "")] {
            *text = text.replace(&format!("{}/", from.display()), to);
        }
    };
    match &mut err {
        HostError::Install { reason, .. } => text(reason),
        HostError::Sidecar {
            path: p, reason, ..
        }
        | HostError::Signature {
            path: p, reason, ..
        }
        | HostError::Sign {
            path: p, reason, ..
        } => {
            path(p);
            text(reason);
        }
        HostError::ChecksumMismatch { path: p, .. }
        | HostError::ChecksumRead { path: p, .. }
        | HostError::UntrustedKey { path: p, .. }
        | HostError::BadSignature { path: p, .. }
        | HostError::SignedForOther { path: p, .. }
        | HostError::SignedBinaryMismatch { path: p, .. }
        | HostError::Unsigned { dir: p, .. } => path(p),
        _ => {}
    }
    err
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
            make_dirs(to, Path::new(&entry.file_name()))
                .map_err(|err| fail(source, err.to_string()))?;
            copy_tree(&entry.path(), &target, source, depth + 1)?;
        } else if kind.is_file() {
            let copied = std::fs::File::open(entry.path()).and_then(|mut file| {
                let mode = std::os::unix::fs::PermissionsExt::mode(&file.metadata()?.permissions());
                write_file(&target, &mut file, mode)
            });
            copied.map_err(|err| {
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
    let file = crate::manifest::manifest_path(dir);
    let shown = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let text = std::fs::read_to_string(&file)
        .map_err(|err| fail(source, format!("no readable {shown}: {err}")))?;
    // YAML reads a JSON manifest too; the full checks come after, with positions.
    let value: serde_json::Value =
        serde_saphyr::from_str(&text).map_err(|err| fail(source, format!("{shown}: {err}")))?;
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
            format!("{shown}: plugin.name {name:?} is not a plain name"),
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
        let named = staging.dir.join(&name);
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
        if let Some(scanners) = self.scanners {
            scanners.check(&name, &named)?;
        }
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
            // Named after the plugin, so that if the process dies before the new version
            // takes its place, `remove_leftovers` puts the old one back.
            let aside = root.join(format!(
                "{REPLACED_PREFIX}{:016x}-{name}",
                fastrand::u64(..)
            ));
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
    let aside = root.join(format!("{REMOVED_PREFIX}{:016x}", fastrand::u64(..)));
    std::fs::rename(dir, &aside).map_err(|err| fail(dir, format!("cannot remove it: {err}")))?;
    Ok(aside)
}

#[cfg(test)]
mod tests;
