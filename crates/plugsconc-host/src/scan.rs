//! Security scanning hooks: commands an operator names that look at a plugin folder before it is
//! installed and before a new version of it is first launched, and may refuse it.
//!
//! Each command line is split like a POSIX shell word list (quotes and backslashes, no
//! expansion) and the plugin folder's absolute path is appended as its last argument:
//! `clamscan -r --no-summary` runs `clamscan -r --no-summary /srv/plugins/kv`. It runs with no
//! stdin, in its own process group, its stdout and stderr captured together (bounded); it
//! passes by exiting 0. Any other exit, a failure to start, or running past the timeout (the
//! whole group is then killed) refuses the plugin. Commands run in order; the first refusal
//! stops the run.
//!
//! Verdicts are cached per content of the folder (every file's relative path, executable bit
//! and bytes) together with the command list, in memory and, when given a folder, on disk, so
//! unchanged content is never scanned twice — across reloads and restarts alike, and refusals
//! too, until the content changes. An empty command list costs nothing.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sha2::Digest as _;

use crate::HostError;

/// Bytes of a scanner's output kept in the reason of a refusal (its last ones).
pub const OUTPUT_TAIL: usize = 2048;

/// Bytes of a scanner's output held while it runs; older ones are dropped.
const CAPTURE: usize = 64 << 10;

/// How long the captured output is waited for once the scanner is gone: a descendant that left
/// its process group may hold the pipe open.
const DRAIN: Duration = Duration::from_secs(1);

/// One scanner: a command line and the words it splits into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanCommand {
    line: String,
    argv: Vec<String>,
}

impl ScanCommand {
    /// Splits `line` like a shell word list.
    ///
    /// # Errors
    ///
    /// [`HostError::ScanCommand`] when the line is empty or its quotes do not close.
    pub fn parse(line: &str) -> Result<Self, HostError> {
        let bad = |reason: &str| HostError::ScanCommand {
            line: line.to_owned(),
            reason: reason.to_owned(),
        };
        let argv = shlex::split(line).ok_or_else(|| bad("an unclosed quote or trailing \\"))?;
        if argv.is_empty() {
            return Err(bad("it names no program"));
        }
        Ok(Self {
            line: line.to_owned(),
            argv,
        })
    }

    /// The command line as configured.
    pub fn line(&self) -> &str {
        &self.line
    }
}

/// What the scanners said of one content.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum ScanVerdict {
    /// Every scanner passed it.
    Passed,
    /// A scanner refused it.
    Refused {
        /// The scanner's command line.
        command: String,
        /// How it refused: its exit status, the timeout, or why it could not run.
        reason: String,
        /// The last [`OUTPUT_TAIL`] bytes of its output, trimmed.
        output: String,
    },
}

/// The security scanners of a host, with their cache. Cheap to clone: clones share the cache.
/// The default runs nothing.
#[derive(Clone)]
pub struct Scanners {
    inner: Arc<Inner>,
}

struct Inner {
    commands: Vec<ScanCommand>,
    timeout: Duration,
    cache_dir: Option<PathBuf>,
    memory: Mutex<HashMap<[u8; 32], ScanVerdict>>,
    runs: AtomicU64,
}

impl std::fmt::Debug for Scanners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scanners")
            .field("commands", &self.inner.commands)
            .field("timeout", &self.inner.timeout)
            .field("cache_dir", &self.inner.cache_dir)
            .finish_non_exhaustive()
    }
}

impl Default for Scanners {
    /// No scanner; a timeout of [`Scanners::DEFAULT_TIMEOUT`].
    fn default() -> Self {
        Self::new(Vec::new(), Self::DEFAULT_TIMEOUT, None)
    }
}

impl Scanners {
    /// How long one scanner may run by default.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

    /// `commands`, each bounded by `timeout`, their verdicts also kept in `cache_dir` (created
    /// when first written) when given.
    pub fn new(commands: Vec<ScanCommand>, timeout: Duration, cache_dir: Option<PathBuf>) -> Self {
        Self {
            inner: Arc::new(Inner {
                commands,
                timeout,
                cache_dir,
                memory: Mutex::new(HashMap::new()),
                runs: AtomicU64::new(0),
            }),
        }
    }

    /// Whether there is no scanner (then checks pass at once).
    pub fn is_empty(&self) -> bool {
        self.inner.commands.is_empty()
    }

    /// The scanners' command lines.
    pub fn commands(&self) -> impl Iterator<Item = &str> {
        self.inner.commands.iter().map(ScanCommand::line)
    }

    /// How many scanner processes these scanners (and their clones) have started.
    pub fn runs(&self) -> u64 {
        self.inner.runs.load(Ordering::Relaxed)
    }

    /// Scans plugin folder `dir` (of plugin `plugin`) unless its content has a verdict already
    /// (blocking: hashes the folder and runs the scanners on this thread).
    ///
    /// # Errors
    ///
    /// [`HostError::ScanRefused`] when a scanner refuses it, now or before.
    pub fn check(&self, plugin: &str, dir: &Path) -> Result<(), HostError> {
        if self.is_empty() {
            return Ok(());
        }
        let verdict = self.verdict(dir);
        match verdict {
            ScanVerdict::Passed => Ok(()),
            ScanVerdict::Refused {
                command,
                reason,
                output,
            } => Err(HostError::ScanRefused {
                plugin: plugin.to_owned(),
                command,
                reason,
                output,
            }),
        }
    }

    /// [`Scanners::check`] on a blocking thread.
    ///
    /// # Errors
    ///
    /// As [`Scanners::check`].
    pub async fn check_async(&self, plugin: &str, dir: &Path) -> Result<(), HostError> {
        if self.is_empty() {
            return Ok(());
        }
        let (this, owned, folder) = (self.clone(), plugin.to_owned(), dir.to_owned());
        tokio::task::spawn_blocking(move || this.check(&owned, &folder))
            .await
            .map_err(|err| HostError::ScanRefused {
                plugin: plugin.to_owned(),
                command: String::new(),
                reason: format!("the scan was interrupted: {err}"),
                output: String::new(),
            })?
    }

    fn verdict(&self, dir: &Path) -> ScanVerdict {
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
        let content = match content_hash(&dir) {
            Ok(content) => content,
            // Not cached: the folder may be readable next time.
            Err(err) => {
                return ScanVerdict::Refused {
                    command: String::new(),
                    reason: format!("cannot read {} to scan it: {err}", dir.display()),
                    output: String::new(),
                };
            }
        };
        let key = self.key(&content);
        if let Some(verdict) = self.cached(&key) {
            return verdict;
        }
        let (verdict, settled) = self.run_all(&dir);
        // A timeout or a scanner that could not run says nothing about the content: the next
        // check runs it again (after the timeout was raised or the scanner installed, say).
        if settled {
            self.remember(&key, &verdict);
        }
        verdict
    }

    /// The cache key: the content and the command list (a new scanner rescans everything).
    fn key(&self, content: &[u8; 32]) -> [u8; 32] {
        let mut hasher = sha2::Sha256::new();
        hasher.update(content);
        for command in &self.inner.commands {
            for word in &command.argv {
                hasher.update(word.as_bytes());
                hasher.update([0]);
            }
            hasher.update([1]);
        }
        hasher.finalize().into()
    }

    fn cache_file(&self, key: &[u8; 32]) -> Option<PathBuf> {
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        Some(self.inner.cache_dir.as_ref()?.join(format!("{hex}.json")))
    }

    fn cached(&self, key: &[u8; 32]) -> Option<ScanVerdict> {
        let memory = self
            .inner
            .memory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned();
        if memory.is_some() {
            return memory;
        }
        let text = std::fs::read(self.cache_file(key)?).ok()?;
        let verdict: ScanVerdict = serde_json::from_slice(&text).ok()?;
        self.inner
            .memory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(*key, verdict.clone());
        Some(verdict)
    }

    fn remember(&self, key: &[u8; 32], verdict: &ScanVerdict) {
        self.inner
            .memory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(*key, verdict.clone());
        let Some(file) = self.cache_file(key) else {
            return;
        };
        // Written aside then renamed: a reader never sees half a verdict.
        let aside = file.with_extension(format!("tmp-{:016x}", fastrand::u64(..)));
        let written = file
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&aside, serde_json::to_vec(verdict).unwrap_or_default()))
            .and_then(|()| std::fs::rename(&aside, &file));
        if let Err(err) = written {
            let _ = std::fs::remove_file(&aside);
            tracing::warn!(file = %file.display(), error = %err, "cannot keep a scan verdict on disk; the next start scans again");
        }
    }

    /// The verdict, and whether it is settled: every scanner that ran exited on its own.
    fn run_all(&self, dir: &Path) -> (ScanVerdict, bool) {
        for command in &self.inner.commands {
            self.inner.runs.fetch_add(1, Ordering::Relaxed);
            let started = Instant::now();
            let (verdict, settled) = run(command, dir, self.inner.timeout);
            tracing::info!(command = %command.line, dir = %dir.display(), passed = verdict == ScanVerdict::Passed, ms = started.elapsed().as_millis(), "security scan");
            if verdict != ScanVerdict::Passed {
                return (verdict, settled);
            }
        }
        (ScanVerdict::Passed, true)
    }
}

/// The hash of what is in folder `dir`: each file's path relative to it, executable bit and
/// bytes, and each link's target with, when it leads to a file, that file's bytes; in a fixed
/// order.
fn content_hash(dir: &Path) -> std::io::Result<[u8; 32]> {
    fn walk(
        hasher: &mut sha2::Sha256,
        dir: &Path,
        relative: &Path,
        depth: usize,
    ) -> std::io::Result<()> {
        use std::os::unix::ffi::OsStrExt as _;
        if depth > 32 {
            return Err(std::io::Error::other("folders nested too deep"));
        }
        let mut entries: Vec<_> =
            std::fs::read_dir(dir.join(relative))?.collect::<Result<_, _>>()?;
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for entry in entries {
            let name = relative.join(entry.file_name());
            let meta = std::fs::symlink_metadata(entry.path())?;
            hasher.update(name.as_os_str().as_bytes());
            if meta.is_dir() {
                hasher.update(b"\0d");
                walk(hasher, dir, &name, depth + 1)?;
            } else if meta.is_symlink() {
                hasher.update(b"\0l");
                hasher.update(std::fs::read_link(entry.path())?.as_os_str().as_bytes());
                // What the link leads to is what runs: a file's bytes count, wherever it is
                // (a linked folder is not followed; a dangling link is its target path alone).
                if let Ok(target) = std::fs::metadata(entry.path())
                    && target.is_file()
                {
                    file_content(hasher, &entry.path(), &target)?;
                }
            } else {
                file_content(hasher, &entry.path(), &meta)?;
            }
            hasher.update([0]);
        }
        Ok(())
    }
    /// A file's executable bit, length and bytes.
    fn file_content(
        hasher: &mut sha2::Sha256,
        path: &Path,
        meta: &std::fs::Metadata,
    ) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let exec = meta.permissions().mode() & 0o111 != 0;
        hasher.update(if exec { b"\0x" } else { b"\0f" });
        hasher.update(meta.len().to_le_bytes());
        let mut file = std::fs::File::open(path)?;
        std::io::copy(&mut file, hasher)?;
        Ok(())
    }
    let mut hasher = sha2::Sha256::new();
    walk(&mut hasher, dir, Path::new(""), 0)?;
    Ok(hasher.finalize().into())
}

/// Runs one scanner on `dir` within `timeout` (blocking); says whether the verdict is the
/// scanner's own (it exited) rather than a failure to run it or a timeout.
fn run(command: &ScanCommand, dir: &Path, timeout: Duration) -> (ScanVerdict, bool) {
    use std::os::unix::process::CommandExt as _;
    let refused = |reason: String, output: String| ScanVerdict::Refused {
        command: command.line.clone(),
        reason,
        output,
    };
    let (mut reader, writer) = match std::io::pipe() {
        Ok(pipe) => pipe,
        Err(err) => {
            return (
                refused(format!("cannot capture its output: {err}"), String::new()),
                false,
            );
        }
    };
    let spawned = writer.try_clone().and_then(|stderr| {
        // The command (holding the pipe's write ends) is dropped right after the spawn, so the
        // pipe closes when the scanner and its children are done.
        std::process::Command::new(&command.argv[0])
            .args(&command.argv[1..])
            .arg(dir)
            .stdin(std::process::Stdio::null())
            .stdout(writer)
            .stderr(stderr)
            .process_group(0)
            .spawn()
    });
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) => {
            return (
                refused(format!("cannot run it: {err}"), String::new()),
                false,
            );
        }
    };
    let captured = Arc::new(Mutex::new(Vec::<u8>::new()));
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    {
        let captured = Arc::clone(&captured);
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut out = captured.lock().unwrap_or_else(PoisonError::into_inner);
                out.extend_from_slice(&buf[..n]);
                if out.len() > 2 * CAPTURE {
                    let cut = out.len() - CAPTURE;
                    out.drain(..cut);
                }
            }
            let _ = done_tx.send(());
        });
    }
    let pgid = i32::try_from(child.id()).unwrap_or(0);
    let kill_group = || {
        if pgid > 0 {
            // SAFETY: killpg only sends a signal; the group is the scanner's own, made at
            // spawn.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    };
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                // The group first, while its leader (unreaped) still holds the group id.
                kill_group();
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!(
                    "it did not finish within {}s (security.scan_timeout_secs) and was killed",
                    timeout.as_secs_f64()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(err) => {
                kill_group();
                let _ = child.kill();
                let _ = child.wait();
                break Err(format!("cannot wait for it: {err}"));
            }
        }
    };
    // What the scanner left running in its group would hold the pipe open: ended too. A group
    // id is not handed out again while any member of the group lives.
    kill_group();
    let _ = done_rx.recv_timeout(DRAIN);
    let output = tail(&captured.lock().unwrap_or_else(PoisonError::into_inner));
    match status {
        Ok(status) if status.success() => (ScanVerdict::Passed, true),
        Ok(status) => (refused(format!("it exited with {status}"), output), true),
        Err(reason) => (refused(reason, output), false),
    }
}

/// The last [`OUTPUT_TAIL`] bytes of `output` (cut at a character), trimmed.
fn tail(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let text = text.trim();
    let mut start = text.len().saturating_sub(OUTPUT_TAIL);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].trim_start().to_owned()
}

#[cfg(test)]
mod tests;
