//! `plugins/<name>/manifest.yaml`: parsed once into a raw form ([`raw`]), then converted into a
//! validated [`Manifest`], the only form the rest of the host accepts. Every error names the file,
//! the line and column, the field and what was expected; unknown fields get a did-you-mean.

mod capabilities;
mod raw;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use plugsconc_protocol::env::HandshakeConfig;
use serde_saphyr::{Location, Spanned};

pub use capabilities::{
    Capabilities, Egress, FsGrant, FsPermission, Ingress, NetProtocol, ProcessGrant, ProcessScope,
};

/// The file name of a manifest inside a plugin folder.
pub const MANIFEST_FILE: &str = "manifest.yaml";

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

/// A manifest that could not be read or is invalid, with where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// The manifest file.
    pub file: PathBuf,
    /// 1-based line (0 when the file could not be read).
    pub line: u64,
    /// 1-based column.
    pub column: u64,
    /// Dotted field path (`plugin.version`), empty for file-level problems.
    pub field: String,
    /// What was expected and what was found.
    pub problem: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.problem)
    }
}

impl std::error::Error for ManifestError {}

/// Collects the position context while converting.
pub(crate) struct Checker<'a> {
    file: &'a Path,
}

impl Checker<'_> {
    pub(crate) fn at(
        &self,
        location: &Location,
        field: &str,
        problem: impl Into<String>,
    ) -> ManifestError {
        ManifestError {
            file: self.file.to_owned(),
            line: location.line(),
            column: location.column(),
            field: field.to_owned(),
            problem: problem.into(),
        }
    }

    fn top(&self, field: &str, problem: impl Into<String>) -> ManifestError {
        ManifestError {
            file: self.file.to_owned(),
            line: 1,
            column: 1,
            field: field.to_owned(),
            problem: problem.into(),
        }
    }

    pub(crate) fn required<'v, T>(
        &self,
        value: Option<&'v Spanned<T>>,
        section: &str,
        field: &str,
        expected: &str,
    ) -> Result<&'v Spanned<T>, ManifestError> {
        value.ok_or_else(|| {
            self.top(
                &format!("{section}.{field}"),
                format!("missing; expected {expected}"),
            )
        })
    }
}

impl Manifest {
    /// Reads and validates `<dir>/manifest.yaml`; the folder's name must be the plugin's name.
    ///
    /// # Errors
    ///
    /// [`ManifestError`] for an unreadable file, a syntax error, an unknown or missing field, or
    /// a value that fails its check.
    pub fn load(dir: &Path) -> Result<(Self, Vec<u8>), ManifestError> {
        let file = dir.join(MANIFEST_FILE);
        let bytes = std::fs::read(&file).map_err(|err| ManifestError {
            file: file.clone(),
            line: 0,
            column: 0,
            field: String::new(),
            problem: format!("cannot read: {err}"),
        })?;
        let manifest = Self::parse(&file, dir, &bytes)?;
        Ok((manifest, bytes))
    }

    /// Parses and validates manifest text found at `file` in plugin folder `dir`.
    ///
    /// # Errors
    ///
    /// See [`Manifest::load`].
    pub fn parse(file: &Path, dir: &Path, bytes: &[u8]) -> Result<Self, ManifestError> {
        let checker = Checker { file };
        let text = std::str::from_utf8(bytes)
            .map_err(|err| checker.top("", format!("not UTF-8: {err}")))?;
        let raw: raw::RawManifest =
            serde_saphyr::from_str(text).map_err(|err| syntax_error(file, &err))?;
        convert(&checker, dir, raw)
    }
}

fn syntax_error(file: &Path, err: &serde_saphyr::Error) -> ManifestError {
    let (line, column) = err.location().map_or((1, 1), |l| (l.line(), l.column()));
    // The rendered message carries a snippet; the first line says what is wrong.
    let rendered = err.to_string();
    let first = rendered.lines().next().unwrap_or_default().to_owned();
    let problem = match unknown_field(&first) {
        Some((found, expected)) => {
            let hint = did_you_mean(&found, &expected)
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            format!(
                "unknown field `{found}`{hint} (expected one of: {})",
                expected.join(", ")
            )
        }
        None => first,
    };
    ManifestError {
        file: file.to_owned(),
        line,
        column,
        field: String::new(),
        problem,
    }
}

/// Extracts the unknown field and the expected names from "unknown field `x`, expected one of
/// a, b, c" (serde-saphyr's wording; serde's own puts each name in backticks).
fn unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = &message[message.find("unknown field `")? + "unknown field `".len()..];
    let end = rest.find('`')?;
    let found = rest[..end].to_owned();
    let list = rest[end + 1..]
        .split_once("expected one of ")
        .or_else(|| rest[end + 1..].split_once("expected "))
        .map_or("", |(_, list)| list);
    let expected = list
        .split([',', ' '])
        .map(|name| name.trim_matches(|c: char| c == '`' || c == '.'))
        .filter(|name| !name.is_empty() && *name != "or")
        .map(str::to_owned)
        .collect();
    Some((found, expected))
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

fn convert(c: &Checker<'_>, dir: &Path, raw: raw::RawManifest) -> Result<Manifest, ManifestError> {
    let plugin = raw.plugin.ok_or_else(|| {
        c.top(
            "plugin",
            "missing section; expected name, type, version, entrypoint",
        )
    })?;
    let name = c.required(plugin.name.as_ref(), "plugin", "name", "the plugin's name")?;
    if !valid_name(&name.value) {
        return Err(c.at(
            &name.referenced,
            "plugin.name",
            format!("{:?} is not a valid name; expected {NAME_RULE}", name.value),
        ));
    }
    if let Some(folder) = dir.file_name().and_then(|f| f.to_str())
        && folder != name.value
    {
        return Err(c.at(
            &name.referenced,
            "plugin.name",
            format!(
                "is {:?} but the plugin's folder is {folder:?}; they must be equal",
                name.value
            ),
        ));
    }
    let kind = c.required(
        plugin.kind.as_ref(),
        "plugin",
        "type",
        "the contract it implements, e.g. `animal`",
    )?;
    if !valid_name(&kind.value) {
        return Err(c.at(
            &kind.referenced,
            "plugin.type",
            format!("{:?} is not a valid type; expected {NAME_RULE}", kind.value),
        ));
    }
    let version = c.required(
        plugin.version.as_ref(),
        "plugin",
        "version",
        "a semantic version such as 1.2.3",
    )?;
    let version_value = semver::Version::parse(&version.value).map_err(|err| {
        c.at(
            &version.referenced,
            "plugin.version",
            format!(
                "{:?} is not a semantic version ({err}); expected e.g. 1.2.3",
                version.value
            ),
        )
    })?;
    if let Some(format) = &plugin.format {
        match format.value.as_str() {
            "grpc" => {}
            "rpc" | "netrpc" => {
                return Err(c.at(
                    &format.referenced,
                    "plugin.format",
                    "net/rpc plugins are not supported; expected `grpc`",
                ));
            }
            other => {
                return Err(c.at(
                    &format.referenced,
                    "plugin.format",
                    format!("{other:?}: expected `grpc`"),
                ));
            }
        }
    }
    let entry = c.required(
        plugin.entrypoint.as_ref(),
        "plugin",
        "entrypoint",
        "a path inside the plugin folder, e.g. ./kv",
    )?;
    let entrypoint = contained_entrypoint(dir, &entry.value)
        .map_err(|problem| c.at(&entry.referenced, "plugin.entrypoint", problem))?;

    let handshake = raw.handshake.ok_or_else(|| {
        c.top(
            "handshake",
            "missing section; expected protocol_version, magic_cookie_key, magic_cookie_value",
        )
    })?;
    let protocol_version = c.required(
        handshake.protocol_version.as_ref(),
        "handshake",
        "protocol_version",
        "a positive integer",
    )?;
    if protocol_version.value == 0 {
        return Err(c.at(
            &protocol_version.referenced,
            "handshake.protocol_version",
            "is 0; expected a positive integer",
        ));
    }
    let key = c.required(
        handshake.magic_cookie_key.as_ref(),
        "handshake",
        "magic_cookie_key",
        "an environment variable name",
    )?;
    if key.value.is_empty()
        || !key
            .value
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
    {
        return Err(c.at(
            &key.referenced,
            "handshake.magic_cookie_key",
            format!(
                "{:?}: expected an environment variable name (letters, digits, `_`)",
                key.value
            ),
        ));
    }
    let value = c.required(
        handshake.magic_cookie_value.as_ref(),
        "handshake",
        "magic_cookie_value",
        "a non-empty string",
    )?;
    if value.value.is_empty() {
        return Err(c.at(
            &value.referenced,
            "handshake.magic_cookie_value",
            "is empty; expected a non-empty string",
        ));
    }

    let security = match raw.security {
        None => Security {
            auto_mtls: true,
            checksum: ChecksumPolicy::Sha256Sidecar,
        },
        Some(security) => Security {
            auto_mtls: security.auto_mtls.unwrap_or(true),
            checksum: match &security.checksum {
                None => ChecksumPolicy::Sha256Sidecar,
                Some(policy) if policy.value == "sha256" => ChecksumPolicy::Sha256Sidecar,
                Some(policy) => {
                    return Err(c.at(
                        &policy.referenced,
                        "security.checksum",
                        format!("{:?}: expected `sha256` (the only policy; the host's insecure switch relaxes it)", policy.value),
                    ));
                }
            },
        },
    };

    let capabilities = capabilities::convert(c, raw.capabilities)?;
    let mut tags = Vec::new();
    for tag in raw.tags.unwrap_or_default() {
        if tag.value.trim().is_empty() {
            return Err(c.at(
                &tag.referenced,
                "tags",
                "an empty tag; expected non-empty strings",
            ));
        }
        tags.push(tag.value);
    }
    let mut dependencies = Vec::new();
    for (i, dep) in raw.dependencies.unwrap_or_default().into_iter().enumerate() {
        let section = format!("dependencies[{i}]");
        let dep_name = c.required(
            dep.name.as_ref(),
            &section,
            "name",
            "the name of another plugin",
        )?;
        if !valid_name(&dep_name.value) {
            return Err(c.at(
                &dep_name.referenced,
                &format!("{section}.name"),
                format!("{:?}: expected {NAME_RULE}", dep_name.value),
            ));
        }
        if dep_name.value == name.value {
            return Err(c.at(
                &dep_name.referenced,
                &format!("{section}.name"),
                "a plugin cannot depend on itself",
            ));
        }
        let req = match &dep.version {
            None => semver::VersionReq::STAR,
            Some(v) => semver::VersionReq::parse(&v.value).map_err(|err| {
                c.at(
                    &v.referenced,
                    &format!("{section}.version"),
                    format!(
                        "{:?} is not a version requirement ({err}); expected e.g. ^1.2",
                        v.value
                    ),
                )
            })?,
        };
        dependencies.push(Dependency {
            name: dep_name.value.clone(),
            version: req,
        });
    }
    let resources = resources(c, raw.resources)?;
    let http = http_routes(c, raw.http.unwrap_or_default())?;
    let about = raw.about.map_or_else(About::default, |a| About {
        description: a.description,
        maintainer: a.maintainer,
        url: a.url,
    });
    Ok(Manifest {
        name: name.value.clone(),
        kind: kind.value.clone(),
        version: version_value,
        entrypoint,
        language: plugin.language,
        about,
        handshake: HandshakeConfig::new(
            protocol_version.value,
            key.value.clone(),
            value.value.clone(),
        ),
        security,
        capabilities,
        tags,
        dependencies,
        config: raw.config.unwrap_or_default(),
        resources,
        http,
    })
}

fn http_routes(
    c: &Checker<'_>,
    raw: Vec<raw::RawHttpRoute>,
) -> Result<Vec<HttpRoute>, ManifestError> {
    let mut routes: Vec<HttpRoute> = Vec::new();
    for (i, route) in raw.into_iter().enumerate() {
        let section = format!("http[{i}]");
        let method = c.required(
            route.method.as_ref(),
            &section,
            "method",
            "GET, POST, PUT, PATCH or DELETE",
        )?;
        let upper = method.value.to_ascii_uppercase();
        if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&upper.as_str()) {
            return Err(c.at(
                &method.referenced,
                &format!("{section}.method"),
                format!(
                    "{:?}: expected GET, POST, PUT, PATCH or DELETE",
                    method.value
                ),
            ));
        }
        let path = c.required(
            route.path.as_ref(),
            &section,
            "path",
            "a path such as /hello",
        )?;
        let segments_ok = path.value.starts_with('/')
            && path.value[1..].split('/').all(|seg| {
                !seg.is_empty()
                    && seg != "."
                    && seg != ".."
                    && seg
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || "-._~".contains(ch))
            });
        if !(segments_ok || path.value == "/") {
            return Err(c.at(&path.referenced, &format!("{section}.path"), format!("{:?}: expected an absolute path of plain segments (letters, digits, - . _ ~), such as /hello/world", path.value)));
        }
        let grpc = c.required(
            route.grpc.as_ref(),
            &section,
            "grpc",
            "the unary method serving it, package.Service/Method",
        )?;
        let well_formed = grpc.value.split_once('/').is_some_and(|(service, method)| {
            service.contains('.')
                && !method.is_empty()
                && !method.contains('/')
                && !service.starts_with('.')
        });
        if !well_formed {
            return Err(c.at(
                &grpc.referenced,
                &format!("{section}.grpc"),
                format!("{:?}: expected package.Service/Method", grpc.value),
            ));
        }
        if routes
            .iter()
            .any(|r| r.method == upper && r.path == path.value)
        {
            return Err(c.at(
                &path.referenced,
                &format!("{section}.path"),
                format!("{upper} {} is declared twice", path.value),
            ));
        }
        routes.push(HttpRoute {
            method: upper,
            path: path.value.clone(),
            grpc: grpc.value.clone(),
        });
    }
    Ok(routes)
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

fn resources(c: &Checker<'_>, raw: Option<raw::RawResources>) -> Result<Resources, ManifestError> {
    let Some(raw) = raw else {
        return Ok(Resources::default());
    };
    let positive = |v: &Option<Spanned<u64>>, field: &str| -> Result<Option<u64>, ManifestError> {
        match v {
            Some(s) if s.value == 0 => Err(c.at(
                &s.referenced,
                &format!("resources.{field}"),
                "is 0; expected a positive number (omit it for no limit)",
            )),
            Some(s) => Ok(Some(s.value)),
            None => Ok(None),
        }
    };
    let cpu_percent = match &raw.cpu_percent {
        Some(s) if !(s.value > 0.0 && s.value.is_finite()) => {
            return Err(c.at(
                &s.referenced,
                "resources.cpu_percent",
                format!("{}: expected a positive percentage", s.value),
            ));
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
                return Err(c.at(
                    &p.referenced,
                    "resources.policy",
                    format!("{other:?}: expected `warn`, `restart` or `stop`"),
                ));
            }
        },
    };
    Ok(Resources {
        memory_mb: positive(&raw.memory_mb, "memory_mb")?,
        cpu_percent,
        threads: positive(&raw.threads, "threads")?,
        open_files: positive(&raw.open_files, "open_files")?,
        execution_ms: positive(&raw.execution_ms, "execution_ms")?,
        policy,
    })
}

#[cfg(test)]
mod tests;
