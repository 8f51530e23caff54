//! Merging configuration layers as JSON trees shaped like the defaults: each override is checked
//! against the default's key set (unknown keys get a did-you-mean) and type (text from the
//! environment and flags is parsed as the default's type), and remembers where it came from.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::ConfigError;

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The built-in default.
    Default,
    /// A configuration file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// A `--set` flag.
    Flag,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(path) => write!(f, "file {}", path.display()),
            Source::Env(var) => write!(f, "env {var}"),
            Source::Flag => f.write_str("--set"),
        }
    }
}

/// The merged configuration and each key's source.
pub(super) struct Tree {
    value: Value,
    sources: BTreeMap<String, Source>,
}

impl Tree {
    pub fn new(defaults: Value) -> Self {
        Self {
            value: defaults,
            sources: BTreeMap::new(),
        }
    }

    pub fn value(&self) -> &Value {
        &self.value
    }

    pub fn source(&self, key: &str) -> Source {
        self.sources.get(key).cloned().unwrap_or(Source::Default)
    }

    /// Every `section.key` with its value and source.
    pub fn keys(&self) -> BTreeMap<String, (Value, Source)> {
        let mut keys = BTreeMap::new();
        for (section, entries) in self.value.as_object().into_iter().flatten() {
            for (key, value) in entries.as_object().into_iter().flatten() {
                let dotted = format!("{section}.{key}");
                let source = self.source(&dotted);
                keys.insert(dotted, (value.clone(), source));
            }
        }
        keys
    }

    fn known_keys(&self) -> Vec<String> {
        self.keys().into_keys().collect()
    }

    fn unknown(&self, key: &str, source: Source) -> ConfigError {
        let known = self.known_keys();
        let closest = known
            .iter()
            .map(|k| (strsim::levenshtein(key, k), k))
            .filter(|(d, _)| *d <= 3)
            .min_by_key(|(d, _)| *d)
            .map(|(_, k)| k.clone());
        let hint = match closest {
            Some(k) => format!("; did you mean `{k}`?"),
            None => {
                let section = key.split('.').next().unwrap_or_default();
                let in_section: Vec<&str> = known
                    .iter()
                    .filter(|k| k.starts_with(&format!("{section}.")))
                    .map(String::as_str)
                    .collect();
                if in_section.is_empty() {
                    let sections: Vec<&str> = self
                        .value
                        .as_object()
                        .map(|o| o.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    format!("; the sections are {}", sections.join(", "))
                } else {
                    format!("; {section} has {}", in_section.join(", "))
                }
            }
        };
        ConfigError::Unknown {
            key: key.to_owned(),
            origin: source,
            hint,
        }
    }

    /// The value at `section.key` (the default until a layer overrides it).
    fn default_at(&self, key: &str) -> Option<&Value> {
        let (section, name) = key.split_once('.')?;
        self.value.get(section)?.get(name)
    }

    fn put(&mut self, key: &str, value: Value, source: Source) {
        if let Some((section, name)) = key.split_once('.')
            && let Some(entries) = self.value.get_mut(section).and_then(Value::as_object_mut)
        {
            entries.insert(name.to_owned(), value);
            self.sources.insert(key.to_owned(), source);
        }
    }

    /// Merges a parsed file: sections of keys, each checked.
    pub fn merge_file(&mut self, file: &Value, path: &Path) -> Result<(), ConfigError> {
        let source = Source::File(path.to_owned());
        let Some(sections) = file.as_object() else {
            return Err(ConfigError::Syntax {
                path: path.to_owned(),
                reason: "expected a mapping of sections (application, directories, logging, ...)"
                    .into(),
            });
        };
        for (section, entries) in sections {
            let Some(entries) = entries.as_object() else {
                if self.value.get(section).is_none() {
                    return Err(self.unknown(section, source.clone()));
                }
                return Err(ConfigError::Invalid {
                    key: section.clone(),
                    origin: source.clone(),
                    problem: "expected a mapping of keys".into(),
                });
            };
            for (name, value) in entries {
                let key = format!("{section}.{name}");
                let Some(default) = self.default_at(&key) else {
                    return Err(self.unknown(&key, source.clone()));
                };
                let value =
                    typed(default, value.clone()).map_err(|problem| ConfigError::Invalid {
                        key: key.clone(),
                        origin: source.clone(),
                        problem,
                    })?;
                self.put(&key, value, source.clone());
            }
        }
        Ok(())
    }

    /// Applies `PLUGSCONC_<SECTION>_<KEY>` variables (others, used by other parts of
    /// plugsconc, are left alone).
    pub fn merge_env(
        &mut self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        let by_var: BTreeMap<String, String> = self
            .known_keys()
            .into_iter()
            .map(|k| {
                (
                    format!("PLUGSCONC_{}", k.replace('.', "_").to_uppercase()),
                    k,
                )
            })
            .collect();
        let mut env: Vec<(String, String)> = env.into_iter().collect();
        env.sort();
        for (var, text) in env {
            if let Some(key) = by_var.get(&var) {
                self.set_text(key, &text, Source::Env(var.clone()))?;
            }
        }
        Ok(())
    }

    /// Checks the keys of fixed words (and `store.url`) against what they allow, so their error
    /// names the key, the layer and the allowed words rather than the typed parse's message.
    pub fn check_choices(&self) -> Result<(), ConfigError> {
        for (key, words) in super::choices::keys() {
            if let Some(Value::String(value)) = self.default_at(key)
                && !words.contains(&value.as_str())
            {
                return Err(ConfigError::Invalid {
                    key: key.to_owned(),
                    origin: self.source(key),
                    problem: format!("{value:?} is not one of {}", super::choices::listed(&words)),
                });
            }
        }
        let key = "store.url";
        if let Some(Value::String(url)) = self.default_at(key)
            && let Err(problem) = super::StoreUrl::try_from(url.clone())
        {
            return Err(ConfigError::Invalid {
                key: key.to_owned(),
                origin: self.source(key),
                problem,
            });
        }
        Ok(())
    }

    /// Sets `key` from text, parsed as the default's type (lists are comma-separated, or a JSON
    /// list of strings when an item holds a comma).
    pub fn set_text(&mut self, key: &str, text: &str, source: Source) -> Result<(), ConfigError> {
        let Some(default) = self.default_at(key) else {
            return Err(self.unknown(key, source));
        };
        let value = match default {
            Value::Bool(_) => match text.trim() {
                "true" | "1" | "yes" | "on" => Ok(Value::Bool(true)),
                "false" | "0" | "no" | "off" => Ok(Value::Bool(false)),
                other => Err(format!("{other:?} is not a boolean (true or false)")),
            },
            Value::Number(_) => text
                .trim()
                .parse::<u64>()
                .map(Value::from)
                .map_err(|_| format!("{text:?} is not a whole number")),
            // A JSON array where items hold commas (`["trivy fs --scanners vuln,secret"]`).
            Value::Array(_) if text.trim_start().starts_with('[') => {
                match serde_json::from_str::<Vec<String>>(text) {
                    Ok(items) => Ok(Value::Array(items.into_iter().map(Value::String).collect())),
                    Err(err) => Err(format!("{text:?} is not a JSON list of strings: {err}")),
                }
            }
            Value::Array(_) => Ok(Value::Array(
                text.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Value::String(s.to_owned()))
                    .collect(),
            )),
            _ => Ok(Value::String(text.to_owned())),
        }
        .map_err(|problem| ConfigError::Invalid {
            key: key.to_owned(),
            origin: source.clone(),
            problem,
        })?;
        self.put(key, value, source);
        Ok(())
    }
}

/// Checks a file value against the default's type.
fn typed(default: &Value, value: Value) -> Result<Value, String> {
    let ok = match (default, &value) {
        (Value::Bool(_), Value::Bool(_)) | (Value::String(_), Value::String(_)) => true,
        (Value::Number(_), Value::Number(n)) => n.is_u64(),
        (Value::Array(_), Value::Array(items)) => items.iter().all(Value::is_string),
        _ => false,
    };
    if ok {
        return Ok(value);
    }
    let expected = match default {
        Value::Bool(_) => "a boolean (true or false)",
        Value::Number(_) => "a whole number",
        Value::Array(_) => "a list of strings",
        _ => "a string",
    };
    Err(format!("{value} is not {expected}"))
}
