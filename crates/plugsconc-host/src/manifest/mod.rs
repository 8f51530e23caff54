//! `plugins/<name>/manifest.yaml` (or the same schema as `manifest.json`, never both): parsed
//! once into a tree of positioned nodes ([`syntax`]; JSON is checked as JSON, then read by the
//! YAML parser, of which it is a subset, so both forms get the same positions and checks), read
//! into a raw form ([`raw`]), then converted into a validated [`Manifest`], the only form the
//! rest of the host accepts. Every problem is reported, not only the first, sorted
//! by position; each names the line and column, the field and what was expected (a missing field
//! at the mapping it belongs in, a bad value at the value); unknown fields get a did-you-mean. A
//! file that cannot be read is a [`ManifestError::Read`], never an invalid manifest.

mod capabilities;
mod raw;
mod syntax;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use plugsconc_protocol::env::HandshakeConfig;
use serde_saphyr::{Location, Spanned};

pub use capabilities::{
    Capabilities, Egress, FsGrant, FsPermission, Ingress, NetProtocol, ProcessGrant, ProcessScope,
};

/// The file name of a manifest inside a plugin folder.
pub const MANIFEST_FILE: &str = "manifest.yaml";

/// The other name a manifest may have: the same schema written as JSON, as the older plugin
/// manager's manifests are. A folder holds one or the other.
pub const MANIFEST_JSON_FILE: &str = "manifest.json";

/// The manifest file of plugin folder `dir`: [`MANIFEST_JSON_FILE`] when only that one is
/// there, else [`MANIFEST_FILE`] (whether or not it exists). Blocking: it looks at the folder.
pub fn manifest_path(dir: &Path) -> PathBuf {
    let (yaml, json) = (dir.join(MANIFEST_FILE), dir.join(MANIFEST_JSON_FILE));
    if !yaml.exists() && json.exists() {
        json
    } else {
        yaml
    }
}

/// Whether plugin folder `dir` holds a manifest, in either form. Blocking.
pub fn has_manifest(dir: &Path) -> bool {
    dir.join(MANIFEST_FILE).exists() || dir.join(MANIFEST_JSON_FILE).exists()
}

/// Whether `file` is read as JSON (by its name).
fn is_json(file: &Path) -> bool {
    file.extension().is_some_and(|ext| ext == "json")
}

/// A manifest that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Unique name; equal to the plugin's folder name.
    pub name: String,
    /// The contract it implements (`animal`, `kv`...).
    pub kind: String,
    /// Its version.
    pub version: semver::Version,
    /// Entry point, relative to the plugin folder, checked to stay inside it.
    pub entrypoint: PathBuf,
    /// Implementation language, informative.
    pub language: Option<String>,
    /// Description, maintainer, URL.
    pub about: About,
    /// Cookie and protocol version.
    pub handshake: HandshakeConfig,
    /// AutoMTLS and checksum policy.
    pub security: Security,
    /// What the plugin may do (default deny).
    pub capabilities: Capabilities,
    /// Free-form labels for queries.
    pub tags: Vec<String>,
    /// Other plugins it needs, with version requirements.
    pub dependencies: Vec<Dependency>,
    /// Configuration passed to the plugin at start.
    pub config: BTreeMap<String, serde_json::Value>,
    /// Resource limits (enforced by the supervisor).
    pub resources: Resources,
    /// HTTP endpoints the daemon mounts under `/plugins/<name>/...`, each served by a unary
    /// gRPC method of the plugin.
    pub http: Vec<HttpRoute>,
}

/// One HTTP endpoint of a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRoute {
    /// `GET`, `POST`, `PUT`, `PATCH` or `DELETE`.
    pub method: String,
    /// Path under `/plugins/<name>`, starting with `/`.
    pub path: String,
    /// The unary method serving it, `package.Service/Method`.
    pub grpc: String,
}

/// Human-facing metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct About {
    /// What the plugin does.
    pub description: Option<String>,
    /// Who maintains it.
    pub maintainer: Option<String>,
    /// Where to learn more.
    pub url: Option<String>,
}

/// Transport security and integrity policy of a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Security {
    /// Use AutoMTLS (default true).
    pub auto_mtls: bool,
    /// How the binary is checked before every exec.
    pub checksum: ChecksumPolicy,
}

/// How a plugin's entry point is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumPolicy {
    /// `<entrypoint>.sha256` must exist and match (the default).
    Sha256Sidecar,
}

/// A dependency on another plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// The plugin needed.
    pub name: String,
    /// The versions accepted.
    pub version: semver::VersionReq,
    /// Where the entry is in the manifest (its `- name:` item), for messages about it.
    pub position: Position,
}

/// What to do when a plugin exceeds a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LimitPolicy {
    /// Log and raise an alert.
    #[default]
    Warn,
    /// Restart the plugin.
    Restart,
    /// Stop it.
    Stop,
}

/// Resource limits; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Resources {
    /// Resident memory, MiB.
    pub memory_mb: Option<u64>,
    /// CPU, percent of one core.
    pub cpu_percent: Option<f64>,
    /// Threads.
    pub threads: Option<u64>,
    /// Open file descriptors.
    pub open_files: Option<u64>,
    /// Longest call, milliseconds.
    pub execution_ms: Option<u64>,
    /// What happens on a violation.
    pub policy: LimitPolicy,
}

/// A position in a manifest: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    /// 1-based line.
    pub line: u64,
    /// 1-based column.
    pub column: u64,
}

impl Position {
    fn of(location: &Location) -> Self {
        // A node always has a position; a location the parser could not give is shown at the
        // start rather than as line 0.
        Self {
            line: location.line().max(1),
            column: location.column().max(1),
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One thing wrong in a manifest: where, which field, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line.
    pub line: u64,
    /// 1-based column.
    pub column: u64,
    /// Dotted field path (`plugin.version`, `http[0].path`), empty for the whole file.
    pub field: String,
    /// What was expected and what was found.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A manifest that could not be read, or that is invalid, with every problem found.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The file could not be read (too many open files, an I/O error...): nothing is known
    /// about its content, and reading it again later may succeed.
    #[error("{}: cannot read: {io}", file.display())]
    Read {
        /// The manifest file.
        file: PathBuf,
        /// The OS error (shared, so the error stays cheap to clone).
        io: Arc<std::io::Error>,
    },
    /// The content is invalid. Display shows the first problem and how many more there are.
    #[error("{}:{}{}", file.display(), problems.first().map(ToString::to_string).unwrap_or_default(), more(problems.len()))]
    Invalid {
        /// The manifest file.
        file: PathBuf,
        /// Every problem, sorted by position; never empty.
        problems: Vec<Problem>,
    },
    /// The folder holds both `manifest.yaml` and `manifest.json`: which one describes the
    /// plugin is not guessed.
    #[error(
        "{} and {}: a plugin folder holds one manifest, not both; remove one of them",
        yaml.display(),
        json.display()
    )]
    Both {
        /// The YAML manifest.
        yaml: PathBuf,
        /// The JSON manifest.
        json: PathBuf,
    },
}

fn more(count: usize) -> String {
    if count > 1 {
        format!(" (and {} more)", count - 1)
    } else {
        String::new()
    }
}

impl ManifestError {
    /// The manifest file.
    pub fn file(&self) -> &Path {
        match self {
            ManifestError::Read { file, .. } | ManifestError::Invalid { file, .. } => file,
            ManifestError::Both { yaml, .. } => yaml,
        }
    }

    /// Every problem of an invalid manifest, sorted by position (none for a read failure).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ManifestError::Read { .. } | ManifestError::Both { .. } => &[],
            ManifestError::Invalid { problems, .. } => problems,
        }
    }

    /// The file could not be read: a failure of the system, not of the manifest, worth
    /// retrying.
    pub fn is_transient(&self) -> bool {
        matches!(self, ManifestError::Read { .. })
    }

    /// The first problem and at most `limit - 1` more, one per line, each with the file, then
    /// how many were left out.
    pub fn summary(&self, limit: usize) -> String {
        let ManifestError::Invalid { file, problems } = self else {
            return self.to_string();
        };
        let mut lines: Vec<String> = problems
            .iter()
            .take(limit.max(1))
            .map(|p| format!("{}:{p}", file.display()))
            .collect();
        if problems.len() > lines.len() {
            lines.push(format!("... and {} more", problems.len() - lines.len()));
        }
        lines.join("\n")
    }
}

/// Collects every problem while a manifest is read and converted.
pub(crate) struct Checker<'a> {
    file: &'a Path,
    /// The manifest's text, for scalars that must be read as written.
    source: &'a str,
    problems: RefCell<Vec<Problem>>,
}

impl<'a> Checker<'a> {
    fn new(file: &'a Path, source: &'a str) -> Self {
        Self {
            file,
            source,
            problems: RefCell::new(Vec::new()),
        }
    }

    /// Records a problem at `location`.
    pub(crate) fn report(&self, location: &Location, field: &str, message: impl Into<String>) {
        self.report_at(Position::of(location), field, message);
    }

    fn report_at(&self, at: Position, field: &str, message: impl Into<String>) {
        self.problems.borrow_mut().push(Problem {
            line: at.line,
            column: at.column,
            field: field.to_owned(),
            message: message.into(),
        });
    }

    /// Whether a problem was already recorded for exactly this field (a mistyped value is not
    /// also reported as missing).
    fn reported(&self, field: &str) -> bool {
        self.problems.borrow().iter().any(|p| p.field == field)
    }

    /// Whether `field` of `section` is missing only because it was misspelt: an unknown field
    /// of that mapping was already reported with it as the suggestion.
    fn misspelt(&self, section: &str, field: &str) -> bool {
        let suggestion = format!("did you mean `{field}`?");
        self.problems
            .borrow()
            .iter()
            .any(|p| p.field == section && p.message.contains(&suggestion))
    }

    /// A required value; when absent, it is reported at `parent`, the mapping it belongs in.
    pub(crate) fn required<'v, T>(
        &self,
        value: Option<&'v Spanned<T>>,
        parent: &Location,
        section: &str,
        field: &str,
        expected: &str,
    ) -> Option<&'v Spanned<T>> {
        let path = format!("{section}.{field}");
        if value.is_none() && !self.reported(&path) && !self.misspelt(section, field) {
            self.report(parent, &path, format!("missing; expected {expected}"));
        }
        value
    }

    /// The result: `value` when no problem was found, else every problem, sorted.
    fn finish<T>(self, value: Option<T>) -> Result<T, ManifestError> {
        let mut problems = self.problems.into_inner();
        match value {
            Some(value) if problems.is_empty() => Ok(value),
            _ => {
                if problems.is_empty() {
                    // Conversion stops only where a problem was recorded; keep the error
                    // non-empty should that ever be broken.
                    problems.push(Problem {
                        line: 1,
                        column: 1,
                        field: String::new(),
                        message: "invalid manifest".into(),
                    });
                }
                problems.sort_by_key(|p| (p.line, p.column));
                problems.dedup();
                Err(ManifestError::Invalid {
                    file: self.file.to_owned(),
                    problems,
                })
            }
        }
    }
}

impl Manifest {
    /// Reads and validates `<dir>/manifest.yaml`, or `<dir>/manifest.json` when the folder
    /// has that one instead; the folder's name must be the plugin's name.
    ///
    /// # Errors
    ///
    /// [`ManifestError::Read`] when the file cannot be read, [`ManifestError::Invalid`] with
    /// every syntax error, unknown or missing field and value that fails its check,
    /// [`ManifestError::Both`] when the folder holds both files.
    pub fn load(dir: &Path) -> Result<(Self, Vec<u8>), ManifestError> {
        Self::load_with(dir, read_file).map(|(manifest, bytes, _)| (manifest, bytes))
    }

    /// [`Manifest::load`], also answering the file it read.
    pub(crate) fn load_located(dir: &Path) -> Result<(Self, Vec<u8>, PathBuf), ManifestError> {
        Self::load_with(dir, read_file)
    }

    /// [`Manifest::load_located`], reading the file with `read` (a seam for tests that need
    /// the system to fail).
    pub(crate) fn load_with(
        dir: &Path,
        read: impl Fn(&Path) -> std::io::Result<Vec<u8>>,
    ) -> Result<(Self, Vec<u8>, PathBuf), ManifestError> {
        let (yaml, json) = (dir.join(MANIFEST_FILE), dir.join(MANIFEST_JSON_FILE));
        if yaml.exists() && json.exists() {
            return Err(ManifestError::Both { yaml, json });
        }
        let file = manifest_path(dir);
        let bytes = read_retrying(&file, read).map_err(|io| ManifestError::Read {
            file: file.clone(),
            io: Arc::new(io),
        })?;
        let manifest = Self::parse(&file, dir, &bytes)?;
        Ok((manifest, bytes, file))
    }

    /// Parses and validates manifest text found at `file` in plugin folder `dir`: JSON when
    /// `file` ends in `.json`, YAML otherwise.
    ///
    /// # Errors
    ///
    /// [`ManifestError::Invalid`], see [`Manifest::load`].
    pub fn parse(file: &Path, dir: &Path, bytes: &[u8]) -> Result<Self, ManifestError> {
        let text = String::from_utf8_lossy(bytes);
        let checker = Checker::new(file, &text);
        report_bad_utf8(&checker, bytes);
        let tree = if is_json(file) {
            syntax::parse_json(&text)
        } else {
            syntax::parse(&text)
        };
        let manifest = match tree {
            Ok(root) => {
                let raw = raw::read(&checker, &root);
                convert(&checker, dir, raw)
            }
            Err(err) => {
                let at = if err.line == 0 {
                    end_of(&text)
                } else {
                    Position {
                        line: err.line,
                        column: err.column.max(1),
                    }
                };
                checker.report_at(at, "", err.message);
                None
            }
        };
        checker.finish(manifest)
    }
}

/// Reads the file; an error that may pass (too many open files, interrupted, I/O) is retried a
/// few times, briefly, before it is given up to the next scan.
fn read_retrying(
    file: &Path,
    read: impl Fn(&Path) -> std::io::Result<Vec<u8>>,
) -> std::io::Result<Vec<u8>> {
    const PAUSES_MS: [u64; 2] = [10, 50];
    let mut attempt = 0;
    loop {
        match read(file) {
            Ok(bytes) => return Ok(bytes),
            Err(err) if attempt < PAUSES_MS.len() && may_pass(&err) => {
                std::thread::sleep(std::time::Duration::from_millis(PAUSES_MS[attempt]));
                attempt += 1;
            }
            Err(err) => return Err(err),
        }
    }
}

fn may_pass(err: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        err.kind(),
        K::Interrupted | K::WouldBlock | K::OutOfMemory | K::ResourceBusy | K::TimedOut
    ) || matches!(
        err.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::EIO | libc::ENOMEM | libc::EAGAIN)
    )
}

fn read_file(file: &Path) -> std::io::Result<Vec<u8>> {
    #[cfg(test)]
    if let Some(kind) = tests::injected_read_failure(file) {
        return Err(kind);
    }
    std::fs::read(file)
}

/// Reports every invalid UTF-8 sequence at its line and column (the rest is read with the
/// bad bytes replaced, so its other problems are found too).
fn report_bad_utf8(c: &Checker<'_>, bytes: &[u8]) {
    let mut line = 1u64;
    let mut column = 1u64;
    let mut after_cr = false;
    for chunk in bytes.utf8_chunks() {
        for ch in chunk.valid().chars() {
            // YAML ends lines with LF, CRLF or a lone CR.
            match ch {
                '\n' if after_cr => {}
                '\n' | '\r' => {
                    line += 1;
                    column = 1;
                }
                _ => column += 1,
            }
            after_cr = ch == '\r';
        }
        let invalid = chunk.invalid();
        if !invalid.is_empty() {
            let shown: Vec<String> = invalid.iter().map(|b| format!("{b:#04x}")).collect();
            c.report_at(
                Position { line, column },
                "",
                format!(
                    "bytes {} are not UTF-8; a manifest is UTF-8 text",
                    shown.join(" ")
                ),
            );
            // The replacement character stands for them in the text that is parsed.
            column += 1;
            after_cr = false;
        }
    }
}

/// The last position of `text`, for an error the parser found at the end of the input.
fn end_of(text: &str) -> Position {
    let trimmed = text.trim_end();
    let line = u64::try_from(trimmed.lines().count().max(1)).unwrap_or(u64::MAX);
    let last = trimmed.lines().last().unwrap_or_default();
    Position {
        line,
        column: u64::try_from(last.chars().count() + 1).unwrap_or(u64::MAX),
    }
}

/// The closest candidate within two edits, if any.
fn did_you_mean(found: &str, candidates: &[String]) -> Option<String> {
    candidates
        .iter()
        .map(|c| (edit_distance(found, c), c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.clone())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

const NAME_RULE: &str =
    "1-64 characters: lower-case letters, digits, `-` and `_`, starting with a letter or digit";

fn convert(c: &Checker<'_>, dir: &Path, raw: raw::RawManifest) -> Option<Manifest> {
    let plugin = section(
        c,
        raw.plugin,
        &raw.at,
        "plugin",
        "name, type, version, entrypoint",
    );
    let plugin_at = plugin.as_ref().map_or(raw.at, |p| p.at);
    let name = plugin.as_ref().and_then(|p| {
        let name = c.required(
            p.name.as_ref(),
            &plugin_at,
            "plugin",
            "name",
            "the plugin's name",
        )?;
        if !valid_name(&name.value) {
            c.report(
                &name.referenced,
                "plugin.name",
                format!("{:?} is not a valid name; expected {NAME_RULE}", name.value),
            );
            return None;
        }
        if let Some(folder) = dir.file_name().and_then(|f| f.to_str())
            && folder != name.value
        {
            c.report(
                &name.referenced,
                "plugin.name",
                format!(
                    "is {:?} but the plugin's folder is {folder:?}; they must be equal",
                    name.value
                ),
            );
            return None;
        }
        Some(name.value.clone())
    });
    let kind = plugin.as_ref().and_then(|p| {
        let kind = c.required(
            p.kind.as_ref(),
            &plugin_at,
            "plugin",
            "type",
            "the contract it implements, e.g. `animal`",
        )?;
        if !valid_name(&kind.value) {
            c.report(
                &kind.referenced,
                "plugin.type",
                format!("{:?} is not a valid type; expected {NAME_RULE}", kind.value),
            );
            return None;
        }
        Some(kind.value.clone())
    });
    let version = plugin.as_ref().and_then(|p| {
        let version = c.required(
            p.version.as_ref(),
            &plugin_at,
            "plugin",
            "version",
            "a semantic version such as 1.2.3",
        )?;
        semver::Version::parse(&version.value)
            .map_err(|err| {
                c.report(
                    &version.referenced,
                    "plugin.version",
                    format!(
                        "{:?} is not a semantic version ({err}); expected e.g. 1.2.3",
                        version.value
                    ),
                );
            })
            .ok()
    });
    if let Some(format) = plugin.as_ref().and_then(|p| p.format.as_ref()) {
        match format.value.as_str() {
            "grpc" => {}
            "rpc" | "netrpc" => c.report(
                &format.referenced,
                "plugin.format",
                "net/rpc plugins are not supported; expected `grpc`",
            ),
            other => c.report(
                &format.referenced,
                "plugin.format",
                format!("{other:?}: expected `grpc`"),
            ),
        }
    }
    let entrypoint = plugin.as_ref().and_then(|p| {
        let entry = c.required(
            p.entrypoint.as_ref(),
            &plugin_at,
            "plugin",
            "entrypoint",
            "a path inside the plugin folder, e.g. ./kv",
        )?;
        contained_entrypoint(dir, &entry.value)
            .map_err(|problem| c.report(&entry.referenced, "plugin.entrypoint", problem))
            .ok()
    });

    let handshake = section(
        c,
        raw.handshake,
        &raw.at,
        "handshake",
        "protocol_version, magic_cookie_key, magic_cookie_value",
    )
    .and_then(|h| handshake(c, &h));
    let security = security(c, raw.security);
    let capabilities = capabilities::convert(c, raw.capabilities);
    let mut tags = Vec::new();
    for tag in raw.tags.unwrap_or_default() {
        if tag.value.trim().is_empty() {
            c.report(
                &tag.referenced,
                "tags",
                "an empty tag; expected non-empty strings",
            );
        }
        tags.push(tag.value);
    }
    let dependencies = dependencies(c, raw.dependencies.unwrap_or_default(), name.as_deref());
    let resources = resources(c, raw.resources);
    let http = http_routes(c, raw.http.unwrap_or_default());
    let about = raw.about.map_or_else(About::default, |a| About {
        description: a.description,
        maintainer: a.maintainer,
        url: a.url,
    });
    Some(Manifest {
        name: name?,
        kind: kind?,
        version: version?,
        entrypoint: entrypoint?,
        language: plugin?.language,
        about,
        handshake: handshake?,
        security: security?,
        capabilities: capabilities?,
        tags,
        dependencies: dependencies?,
        config: raw.config.unwrap_or_default(),
        resources: resources?,
        http: http?,
    })
}

/// A required section; when absent, reported at the start of the document.
fn section<T>(
    c: &Checker<'_>,
    value: Option<T>,
    root: &Location,
    name: &str,
    expected: &str,
) -> Option<T> {
    if value.is_none() && !c.reported(name) && !c.misspelt("", name) {
        c.report(root, name, format!("missing section; expected {expected}"));
    }
    value
}

fn handshake(c: &Checker<'_>, h: &raw::RawHandshake) -> Option<HandshakeConfig> {
    let protocol_version = c
        .required(
            h.protocol_version.as_ref(),
            &h.at,
            "handshake",
            "protocol_version",
            "a positive integer",
        )
        .and_then(|v| match u32::try_from(v.value) {
            Ok(0) => {
                c.report(
                    &v.referenced,
                    "handshake.protocol_version",
                    "is 0; expected a positive integer",
                );
                None
            }
            Ok(version) => Some(version),
            Err(_) => {
                c.report(
                    &v.referenced,
                    "handshake.protocol_version",
                    format!(
                        "{} is too large; expected a positive 32-bit integer",
                        v.value
                    ),
                );
                None
            }
        });
    let key = c
        .required(
            h.magic_cookie_key.as_ref(),
            &h.at,
            "handshake",
            "magic_cookie_key",
            "an environment variable name",
        )
        .and_then(|key| {
            if key.value.is_empty()
                || !key
                    .value
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
            {
                c.report(
                    &key.referenced,
                    "handshake.magic_cookie_key",
                    format!(
                        "{:?}: expected an environment variable name (letters, digits, `_`)",
                        key.value
                    ),
                );
                return None;
            }
            Some(key.value.clone())
        });
    let value = c
        .required(
            h.magic_cookie_value.as_ref(),
            &h.at,
            "handshake",
            "magic_cookie_value",
            "a non-empty string",
        )
        .and_then(|value| {
            if value.value.is_empty() {
                c.report(
                    &value.referenced,
                    "handshake.magic_cookie_value",
                    "is empty; expected a non-empty string",
                );
                return None;
            }
            Some(value.value.clone())
        });
    Some(HandshakeConfig::new(protocol_version?, key?, value?))
}

fn security(c: &Checker<'_>, raw: Option<raw::RawSecurity>) -> Option<Security> {
    let Some(security) = raw else {
        return Some(Security {
            auto_mtls: true,
            checksum: ChecksumPolicy::Sha256Sidecar,
        });
    };
    let checksum = match &security.checksum {
        None => ChecksumPolicy::Sha256Sidecar,
        Some(policy) if policy.value == "sha256" => ChecksumPolicy::Sha256Sidecar,
        Some(policy) => {
            c.report(
                &policy.referenced,
                "security.checksum",
                format!(
                    "{:?}: expected `sha256` (the only policy; the host's insecure switch relaxes it)",
                    policy.value
                ),
            );
            return None;
        }
    };
    Some(Security {
        auto_mtls: security.auto_mtls.unwrap_or(true),
        checksum,
    })
}

fn dependencies(
    c: &Checker<'_>,
    raw: Vec<raw::RawDependency>,
    own_name: Option<&str>,
) -> Option<Vec<Dependency>> {
    let mut dependencies = Vec::new();
    let mut ok = true;
    for (i, dep) in raw.into_iter().enumerate() {
        let section = format!("dependencies[{i}]");
        let Some(dep_name) = c.required(
            dep.name.as_ref(),
            &dep.at,
            &section,
            "name",
            "the name of another plugin",
        ) else {
            ok = false;
            continue;
        };
        if !valid_name(&dep_name.value) {
            c.report(
                &dep_name.referenced,
                &format!("{section}.name"),
                format!("{:?}: expected {NAME_RULE}", dep_name.value),
            );
            ok = false;
        } else if own_name == Some(dep_name.value.as_str()) {
            c.report(
                &dep_name.referenced,
                &format!("{section}.name"),
                "a plugin cannot depend on itself",
            );
            ok = false;
        }
        let version = match &dep.version {
            None => semver::VersionReq::STAR,
            Some(v) => match semver::VersionReq::parse(&v.value) {
                Ok(req) => req,
                Err(err) => {
                    c.report(
                        &v.referenced,
                        &format!("{section}.version"),
                        format!(
                            "{:?} is not a version requirement ({err}); expected e.g. ^1.2",
                            v.value
                        ),
                    );
                    ok = false;
                    continue;
                }
            },
        };
        dependencies.push(Dependency {
            name: dep_name.value.clone(),
            version,
            position: Position::of(&dep.at),
        });
    }
    ok.then_some(dependencies)
}

fn http_routes(c: &Checker<'_>, raw: Vec<raw::RawHttpRoute>) -> Option<Vec<HttpRoute>> {
    let mut routes: Vec<HttpRoute> = Vec::new();
    let mut ok = true;
    for (i, route) in raw.into_iter().enumerate() {
        let section = format!("http[{i}]");
        let method = c
            .required(
                route.method.as_ref(),
                &route.at,
                &section,
                "method",
                "GET, POST, PUT, PATCH or DELETE",
            )
            .and_then(|method| {
                let upper = method.value.to_ascii_uppercase();
                if ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&upper.as_str()) {
                    Some(upper)
                } else {
                    c.report(
                        &method.referenced,
                        &format!("{section}.method"),
                        format!(
                            "{:?}: expected GET, POST, PUT, PATCH or DELETE",
                            method.value
                        ),
                    );
                    None
                }
            });
        let path = c
            .required(
                route.path.as_ref(),
                &route.at,
                &section,
                "path",
                "a path such as /hello",
            )
            .filter(|path| {
                let segments_ok = path.value.starts_with('/')
                    && path.value[1..].split('/').all(|seg| {
                        !seg.is_empty()
                            && seg != "."
                            && seg != ".."
                            && seg
                                .chars()
                                .all(|ch| ch.is_ascii_alphanumeric() || "-._~".contains(ch))
                    });
                let fine = segments_ok || path.value == "/";
                if !fine {
                    c.report(&path.referenced, &format!("{section}.path"), format!("{:?}: expected an absolute path of plain segments (letters, digits, - . _ ~), such as /hello/world", path.value));
                }
                fine
            });
        let grpc = c
            .required(
                route.grpc.as_ref(),
                &route.at,
                &section,
                "grpc",
                "the unary method serving it, package.Service/Method",
            )
            .filter(|grpc| {
                let well_formed = grpc.value.split_once('/').is_some_and(|(service, method)| {
                    service.contains('.')
                        && !method.is_empty()
                        && !method.contains('/')
                        && !service.starts_with('.')
                });
                if !well_formed {
                    c.report(
                        &grpc.referenced,
                        &format!("{section}.grpc"),
                        format!("{:?}: expected package.Service/Method", grpc.value),
                    );
                }
                well_formed
            });
        let (Some(method), Some(path), Some(grpc)) = (method, path, grpc) else {
            ok = false;
            continue;
        };
        if routes
            .iter()
            .any(|r| r.method == method && r.path == path.value)
        {
            c.report(
                &path.referenced,
                &format!("{section}.path"),
                format!("{method} {} is declared twice", path.value),
            );
            ok = false;
            continue;
        }
        routes.push(HttpRoute {
            method,
            path: path.value.clone(),
            grpc: grpc.value.clone(),
        });
    }
    ok.then_some(routes)
}

/// Checks that `entry` names a file inside `dir`: relative, no `..`, and, once symlinks are
/// resolved, still inside the folder.
fn contained_entrypoint(dir: &Path, entry: &str) -> Result<PathBuf, String> {
    let path = Path::new(entry);
    if entry.is_empty() {
        return Err("is empty; expected a path inside the plugin folder".into());
    }
    if path.is_absolute() {
        return Err(format!(
            "{entry:?} is absolute; expected a path inside the plugin folder such as ./{}",
            path.file_name()
                .map_or("plugin".into(), |f| f.to_string_lossy())
        ));
    }
    let mut relative = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::Normal(part) => relative.push(part),
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "{entry:?} leaves the plugin folder; expected a path inside it"
                ));
            }
        }
    }
    let full = dir.join(&relative);
    let resolved = full
        .canonicalize()
        .map_err(|err| format!("{entry:?} does not exist in the plugin folder ({err})"))?;
    let root = dir
        .canonicalize()
        .map_err(|err| format!("the plugin folder cannot be resolved ({err})"))?;
    if !resolved.starts_with(&root) {
        return Err(format!(
            "{entry:?} is a link to {} outside the plugin folder",
            resolved.display()
        ));
    }
    if !resolved.is_file() {
        return Err(format!("{entry:?} is not a file"));
    }
    Ok(relative)
}

fn resources(c: &Checker<'_>, raw: Option<raw::RawResources>) -> Option<Resources> {
    let Some(raw) = raw else {
        return Some(Resources::default());
    };
    let mut ok = true;
    let mut positive = |v: &Option<Spanned<u64>>, field: &str| -> Option<u64> {
        match v {
            Some(s) if s.value == 0 => {
                c.report(
                    &s.referenced,
                    &format!("resources.{field}"),
                    "is 0; expected a positive number (omit it for no limit)",
                );
                ok = false;
                None
            }
            Some(s) => Some(s.value),
            None => None,
        }
    };
    let memory_mb = positive(&raw.memory_mb, "memory_mb");
    let threads = positive(&raw.threads, "threads");
    let open_files = positive(&raw.open_files, "open_files");
    let execution_ms = positive(&raw.execution_ms, "execution_ms");
    let cpu_percent = match &raw.cpu_percent {
        Some(s) if !(s.value > 0.0 && s.value.is_finite()) => {
            c.report(
                &s.referenced,
                "resources.cpu_percent",
                format!("{}: expected a positive percentage", s.value),
            );
            ok = false;
            None
        }
        other => other.as_ref().map(|s| s.value),
    };
    let policy = match &raw.policy {
        None => LimitPolicy::Warn,
        Some(p) => match p.value.as_str() {
            "warn" => LimitPolicy::Warn,
            "restart" => LimitPolicy::Restart,
            "stop" => LimitPolicy::Stop,
            other => {
                c.report(
                    &p.referenced,
                    "resources.policy",
                    format!("{other:?}: expected `warn`, `restart` or `stop`"),
                );
                return None;
            }
        },
    };
    ok.then_some(Resources {
        memory_mb,
        cpu_percent,
        threads,
        open_files,
        execution_ms,
        policy,
    })
}

#[cfg(test)]
pub(crate) mod tests;
