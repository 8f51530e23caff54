//! The manifest exactly as written: every field optional, positions kept for what is checked
//! after reading. It is read from the YAML node tree by hand rather than by serde so that one
//! mistake (an unknown field, a value of the wrong type) does not hide the others: each is
//! reported where it is and reading goes on. Only [`super::Manifest::parse`] reads it.

use std::collections::BTreeMap;

use serde_saphyr::{Location, Spanned};

use super::Checker;
use super::syntax::{Node, Value};

#[derive(Debug)]
pub(crate) struct RawManifest {
    pub at: Location,
    pub plugin: Option<RawPlugin>,
    pub about: Option<RawAbout>,
    pub handshake: Option<RawHandshake>,
    pub security: Option<RawSecurity>,
    pub capabilities: Option<RawCapabilities>,
    pub tags: Option<Vec<Spanned<String>>>,
    pub dependencies: Option<Vec<RawDependency>>,
    pub config: Option<BTreeMap<String, serde_json::Value>>,
    pub resources: Option<RawResources>,
    pub http: Option<Vec<RawHttpRoute>>,
}

#[derive(Debug)]
pub(crate) struct RawHttpRoute {
    pub at: Location,
    pub method: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub grpc: Option<Spanned<String>>,
}

#[derive(Debug)]
pub(crate) struct RawPlugin {
    pub at: Location,
    pub name: Option<Spanned<String>>,
    pub kind: Option<Spanned<String>>,
    pub version: Option<Spanned<String>>,
    pub format: Option<Spanned<String>>,
    pub entrypoint: Option<Spanned<String>>,
    pub language: Option<String>,
}

#[derive(Debug)]
pub(crate) struct RawAbout {
    pub description: Option<String>,
    pub maintainer: Option<String>,
    pub url: Option<String>,
}

#[derive(Debug)]
pub(crate) struct RawHandshake {
    pub at: Location,
    pub protocol_version: Option<Spanned<u64>>,
    pub magic_cookie_key: Option<Spanned<String>>,
    pub magic_cookie_value: Option<Spanned<String>>,
}

#[derive(Debug)]
pub(crate) struct RawSecurity {
    pub auto_mtls: Option<bool>,
    pub checksum: Option<Spanned<String>>,
}

#[derive(Debug)]
pub(crate) struct RawCapabilities {
    pub filesystem: Option<Vec<RawFsGrant>>,
    pub network: Option<RawNetwork>,
    pub process: Option<Vec<RawProcessGrant>>,
}

#[derive(Debug)]
pub(crate) struct RawFsGrant {
    pub at: Location,
    pub path: Option<Spanned<String>>,
    pub permissions: Option<Vec<Spanned<String>>>,
    pub recursive: Option<bool>,
}

#[derive(Debug)]
pub(crate) struct RawNetwork {
    pub egress: Option<Vec<RawEgress>>,
    pub ingress: Option<Vec<RawIngress>>,
}

#[derive(Debug)]
pub(crate) struct RawEgress {
    pub at: Location,
    pub protocol: Option<Spanned<String>>,
    pub hosts: Option<Vec<Spanned<String>>>,
    pub ports: Option<Vec<Spanned<i64>>>,
}

#[derive(Debug)]
pub(crate) struct RawIngress {
    pub at: Location,
    pub protocol: Option<Spanned<String>>,
    pub ports: Option<Vec<Spanned<i64>>>,
    pub allowed_origins: Option<Vec<Spanned<String>>>,
}

#[derive(Debug)]
pub(crate) struct RawProcessGrant {
    pub at: Location,
    pub exec: Option<RawExec>,
    pub kill: Option<Vec<Spanned<String>>>,
    pub list: Option<Vec<Spanned<String>>>,
    pub signal: Option<Vec<Spanned<String>>>,
}

#[derive(Debug)]
pub(crate) struct RawExec {
    pub at: Location,
    pub command: Option<Spanned<String>>,
    pub args: Option<Vec<String>>,
}

#[derive(Debug)]
pub(crate) struct RawDependency {
    pub at: Location,
    pub name: Option<Spanned<String>>,
    pub version: Option<Spanned<String>>,
}

#[derive(Debug)]
pub(crate) struct RawResources {
    pub memory_mb: Option<Spanned<u64>>,
    pub cpu_percent: Option<Spanned<f64>>,
    pub threads: Option<Spanned<u64>>,
    pub open_files: Option<Spanned<u64>>,
    pub execution_ms: Option<Spanned<u64>>,
    pub policy: Option<Spanned<String>>,
}

impl RawManifest {
    fn empty(at: Location) -> Self {
        Self {
            at,
            plugin: None,
            about: None,
            handshake: None,
            security: None,
            capabilities: None,
            tags: None,
            dependencies: None,
            config: None,
            resources: None,
            http: None,
        }
    }
}

const SECTIONS: &[&str] = &[
    "plugin",
    "about",
    "handshake",
    "security",
    "capabilities",
    "tags",
    "dependencies",
    "config",
    "resources",
    "http",
];

/// Reads the document's root node, reporting every unknown field and mistyped value.
pub(crate) fn read(c: &Checker<'_>, root: &Node) -> RawManifest {
    if matches!(root.value, Value::Null) {
        // Blank lines and comments only: the whole file is the problem, from its start.
        c.report_at(
            super::Position { line: 1, column: 1 },
            "",
            format!(
                "the manifest is empty; expected a mapping of sections ({})",
                SECTIONS.join(", ")
            ),
        );
        return RawManifest::empty(root.at);
    }
    let Some(m) = c.mapping(root, &root.at, "", SECTIONS) else {
        return RawManifest::empty(root.at);
    };
    RawManifest {
        at: root.at,
        plugin: m
            .map(
                c,
                "plugin",
                &[
                    "name",
                    "type",
                    "version",
                    "format",
                    "entrypoint",
                    "language",
                ],
            )
            .map(|p| RawPlugin {
                at: p.at,
                name: p.string(c, "name"),
                kind: p.string(c, "type"),
                version: p.string(c, "version"),
                format: p.string(c, "format"),
                entrypoint: p.string(c, "entrypoint"),
                language: p.string(c, "language").map(|s| s.value),
            }),
        about: m
            .map(c, "about", &["description", "maintainer", "url"])
            .map(|a| RawAbout {
                description: a.string(c, "description").map(|s| s.value),
                maintainer: a.string(c, "maintainer").map(|s| s.value),
                url: a.string(c, "url").map(|s| s.value),
            }),
        handshake: m
            .map(
                c,
                "handshake",
                &["protocol_version", "magic_cookie_key", "magic_cookie_value"],
            )
            .map(|h| RawHandshake {
                at: h.at,
                protocol_version: h.uint(c, "protocol_version", "a positive integer"),
                magic_cookie_key: h.string(c, "magic_cookie_key"),
                magic_cookie_value: h.string(c, "magic_cookie_value"),
            }),
        security: m
            .map(c, "security", &["auto_mtls", "checksum"])
            .map(|s| RawSecurity {
                auto_mtls: s.boolean(c, "auto_mtls"),
                checksum: s.string(c, "checksum"),
            }),
        capabilities: m
            .map(c, "capabilities", &["filesystem", "network", "process"])
            .map(|caps| capabilities(c, &caps)),
        tags: m.strings(c, "tags"),
        dependencies: m.maps(c, "dependencies", &["name", "version"], |d| RawDependency {
            at: d.at,
            name: d.string(c, "name"),
            version: d.string(c, "version"),
        }),
        config: m.get("config").and_then(|(_, node)| config(c, node)),
        resources: m
            .map(
                c,
                "resources",
                &[
                    "memory_mb",
                    "cpu_percent",
                    "threads",
                    "open_files",
                    "execution_ms",
                    "policy",
                ],
            )
            .map(|r| {
                let limit = "a positive number (omit it for no limit)";
                RawResources {
                    memory_mb: r.uint(c, "memory_mb", limit),
                    cpu_percent: r.float(c, "cpu_percent", "a positive percentage"),
                    threads: r.uint(c, "threads", limit),
                    open_files: r.uint(c, "open_files", limit),
                    execution_ms: r.uint(c, "execution_ms", limit),
                    policy: r.string(c, "policy"),
                }
            }),
        http: m.maps(c, "http", &["method", "path", "grpc"], |r| RawHttpRoute {
            at: r.at,
            method: r.string(c, "method"),
            path: r.string(c, "path"),
            grpc: r.string(c, "grpc"),
        }),
    }
}

fn capabilities(c: &Checker<'_>, caps: &Fields<'_>) -> RawCapabilities {
    RawCapabilities {
        filesystem: caps.maps(
            c,
            "filesystem",
            &["path", "permissions", "recursive"],
            |g| RawFsGrant {
                at: g.at,
                path: g.string(c, "path"),
                permissions: g.strings(c, "permissions"),
                recursive: g.boolean(c, "recursive"),
            },
        ),
        network: caps
            .map(c, "network", &["egress", "ingress"])
            .map(|n| RawNetwork {
                egress: n.maps(c, "egress", &["protocol", "hosts", "ports"], |e| {
                    RawEgress {
                        at: e.at,
                        protocol: e.string(c, "protocol"),
                        hosts: e.strings(c, "hosts"),
                        ports: e.ports(c, "ports"),
                    }
                }),
                ingress: n.maps(
                    c,
                    "ingress",
                    &["protocol", "ports", "allowed_origins"],
                    |i| RawIngress {
                        at: i.at,
                        protocol: i.string(c, "protocol"),
                        ports: i.ports(c, "ports"),
                        allowed_origins: i.strings(c, "allowed_origins"),
                    },
                ),
            }),
        process: caps.maps(c, "process", &["exec", "kill", "list", "signal"], |p| {
            RawProcessGrant {
                at: p.at,
                exec: p.map(c, "exec", &["command", "args"]).map(|e| RawExec {
                    at: e.at,
                    command: e.string(c, "command"),
                    args: e
                        .strings(c, "args")
                        .map(|args| args.into_iter().map(|a| a.value).collect()),
                }),
                kill: p.strings(c, "kill"),
                list: p.strings(c, "list"),
                signal: p.strings(c, "signal"),
            }
        }),
    }
}

/// The `config` section as JSON values, for the plugin.
fn config(c: &Checker<'_>, node: &Node) -> Option<BTreeMap<String, serde_json::Value>> {
    match &node.value {
        Value::Map(entries) => Some(
            entries
                .iter()
                .filter_map(|(key, value)| {
                    let key = c.key_text(key, "config")?;
                    let json = json(c, value, &format!("config.{key}"))?;
                    Some((key, json))
                })
                .collect(),
        ),
        _ => {
            c.report(
                &node.at,
                "config",
                format!("expected a mapping, found {}", node.describe(c.source)),
            );
            None
        }
    }
}

fn json(c: &Checker<'_>, node: &Node, field: &str) -> Option<serde_json::Value> {
    use serde_json::Value as J;
    Some(match &node.value {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::UInt(u) => J::from(*u),
        Value::Int(i) => J::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::Str(s) => J::String(s.clone()),
        Value::Seq(items) => J::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| json(c, item, &format!("{field}[{i}]")))
                .collect::<Option<_>>()?,
        ),
        Value::Map(entries) => J::Object(
            entries
                .iter()
                .map(|(key, value)| {
                    let key = c.key_text(key, field)?;
                    let value = json(c, value, &format!("{field}.{key}"))?;
                    Some((key, value))
                })
                .collect::<Option<_>>()?,
        ),
    })
}

/// A mapping whose keys were checked, with the dotted path to it.
pub(crate) struct Fields<'n> {
    /// Where the mapping is owned: its key (`plugin:`), or the list item it is.
    pub at: Location,
    path: String,
    entries: Vec<(String, Location, &'n Node)>,
}

impl<'n> Fields<'n> {
    fn field(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value of `key` and where the key is; an empty value counts as absent.
    fn get(&self, key: &str) -> Option<(Location, &'n Node)> {
        self.entries
            .iter()
            .find(|(k, _, node)| k == key && !matches!(node.value, Value::Null))
            .map(|(_, at, node)| (*at, *node))
    }

    fn map(&self, c: &Checker<'_>, key: &str, known: &[&str]) -> Option<Fields<'n>> {
        let (key_at, node) = self.get(key)?;
        c.mapping(node, &key_at, &self.field(key), known)
    }

    /// A list of mappings, each read by `read`.
    fn maps<T>(
        &self,
        c: &Checker<'_>,
        key: &str,
        known: &[&str],
        read: impl Fn(Fields<'n>) -> T,
    ) -> Option<Vec<T>> {
        let items = self.list(c, key)?;
        let field = self.field(key);
        Some(
            items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| c.mapping(item, &item.at, &format!("{field}[{i}]"), known))
                .map(read)
                .collect(),
        )
    }

    fn list(&self, c: &Checker<'_>, key: &str) -> Option<&'n [Node]> {
        let (_, node) = self.get(key)?;
        match &node.value {
            Value::Seq(items) => Some(items),
            _ => {
                c.report(
                    &node.at,
                    &self.field(key),
                    format!("expected a list, found {}", node.describe(c.source)),
                );
                None
            }
        }
    }

    fn string(&self, c: &Checker<'_>, key: &str) -> Option<Spanned<String>> {
        let (_, node) = self.get(key)?;
        c.text(node, &self.field(key))
    }

    fn strings(&self, c: &Checker<'_>, key: &str) -> Option<Vec<Spanned<String>>> {
        let items = self.list(c, key)?;
        let field = self.field(key);
        // A bad item is reported and left out; the list is kept so the rest is still checked.
        Some(
            items
                .iter()
                .filter_map(|item| c.text(item, &field))
                .collect(),
        )
    }

    fn uint(&self, c: &Checker<'_>, key: &str, expected: &str) -> Option<Spanned<u64>> {
        let (_, node) = self.get(key)?;
        match node.value {
            Value::UInt(u) => Some(spanned(u, node.at)),
            _ => {
                c.mistyped(node, &self.field(key), expected);
                None
            }
        }
    }

    fn float(&self, c: &Checker<'_>, key: &str, expected: &str) -> Option<Spanned<f64>> {
        let (_, node) = self.get(key)?;
        #[allow(clippy::cast_precision_loss)] // Percentages are far below 2^52.
        let value = match node.value {
            Value::UInt(u) => u as f64,
            Value::Int(i) => i as f64,
            Value::Float(f) => f,
            _ => {
                c.mistyped(node, &self.field(key), expected);
                return None;
            }
        };
        Some(spanned(value, node.at))
    }

    fn boolean(&self, c: &Checker<'_>, key: &str) -> Option<bool> {
        let (_, node) = self.get(key)?;
        match node.value {
            Value::Bool(b) => Some(b),
            _ => {
                c.mistyped(node, &self.field(key), "true or false");
                None
            }
        }
    }

    fn ports(&self, c: &Checker<'_>, key: &str) -> Option<Vec<Spanned<i64>>> {
        let items = self.list(c, key)?;
        let field = self.field(key);
        Some(
            items
                .iter()
                .filter_map(|item| match item.value {
                    Value::UInt(u) => Some(spanned(i64::try_from(u).unwrap_or(i64::MAX), item.at)),
                    Value::Int(i) => Some(spanned(i, item.at)),
                    _ => {
                        c.mistyped(item, &field, "a port 1-65535");
                        None
                    }
                })
                .collect(),
        )
    }
}

fn spanned<T>(value: T, at: Location) -> Spanned<T> {
    Spanned::new(value, at, at)
}

impl Checker<'_> {
    /// `node` as a mapping with only `known` keys; every unknown key is reported at the key.
    /// `owner` is where a missing field of the mapping is reported.
    fn mapping<'n>(
        &self,
        node: &'n Node,
        owner: &Location,
        path: &str,
        known: &[&str],
    ) -> Option<Fields<'n>> {
        let Value::Map(entries) = &node.value else {
            self.report(
                &node.at,
                path,
                format!(
                    "expected a mapping ({}), found {}",
                    known.join(", "),
                    node.describe(self.source)
                ),
            );
            return None;
        };
        let mut fields = Vec::new();
        for (key, value) in entries {
            let Some(name) = self.key_text(key, path) else {
                continue;
            };
            if known.contains(&name.as_str()) {
                fields.push((name, key.at, value));
            } else {
                let candidates: Vec<String> = known.iter().map(|k| (*k).to_owned()).collect();
                let hint = super::did_you_mean(&name, &candidates)
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                self.report(
                    &key.at,
                    path,
                    format!(
                        "unknown field `{name}`{hint} (expected one of: {})",
                        known.join(", ")
                    ),
                );
            }
        }
        Some(Fields {
            at: *owner,
            path: path.to_owned(),
            entries: fields,
        })
    }

    /// A key as text (`1.10: x` keys by its text, not by the number 1.1).
    fn key_text(&self, key: &Node, path: &str) -> Option<String> {
        match &key.value {
            Value::Str(s) => Some(s.clone()),
            Value::Null => Some(String::new()),
            Value::Bool(_) | Value::UInt(_) | Value::Int(_) | Value::Float(_) => {
                key.span_text(self.source).map(str::to_owned)
            }
            Value::Seq(_) | Value::Map(_) => {
                self.report(
                    &key.at,
                    path,
                    format!("expected a plain key, found {}", key.describe(self.source)),
                );
                None
            }
        }
    }

    /// A scalar as text, as written.
    fn text(&self, node: &Node, field: &str) -> Option<Spanned<String>> {
        let text = match &node.value {
            Value::Str(s) => s.clone(),
            Value::Bool(_) | Value::UInt(_) | Value::Int(_) | Value::Float(_) => {
                node.span_text(self.source)?.to_owned()
            }
            Value::Null => String::new(),
            Value::Seq(_) | Value::Map(_) => {
                self.mistyped(node, field, "text");
                return None;
            }
        };
        Some(spanned(text, node.at))
    }

    fn mistyped(&self, node: &Node, field: &str, expected: &str) {
        self.report(
            &node.at,
            field,
            format!("expected {expected}, found {}", node.describe(self.source)),
        );
    }
}
