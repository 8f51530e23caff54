//! The manifest exactly as written: every field optional, unknown fields refused, positions kept
//! for the fields that are checked after parsing. Only [`super::Manifest::parse`] reads it.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawManifest {
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttpRoute {
    pub method: Option<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub grpc: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPlugin {
    pub name: Option<Spanned<String>>,
    #[serde(rename = "type")]
    pub kind: Option<Spanned<String>>,
    pub version: Option<Spanned<String>>,
    pub format: Option<Spanned<String>>,
    pub entrypoint: Option<Spanned<String>>,
    pub language: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAbout {
    pub description: Option<String>,
    pub maintainer: Option<String>,
    pub url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHandshake {
    pub protocol_version: Option<Spanned<u32>>,
    pub magic_cookie_key: Option<Spanned<String>>,
    pub magic_cookie_value: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSecurity {
    pub auto_mtls: Option<bool>,
    pub checksum: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCapabilities {
    pub filesystem: Option<Vec<RawFsGrant>>,
    pub network: Option<RawNetwork>,
    pub process: Option<Vec<RawProcessGrant>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFsGrant {
    pub path: Option<Spanned<String>>,
    pub permissions: Option<Vec<Spanned<String>>>,
    pub recursive: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNetwork {
    pub egress: Option<Vec<RawEgress>>,
    pub ingress: Option<Vec<RawIngress>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEgress {
    pub protocol: Option<Spanned<String>>,
    pub hosts: Option<Vec<Spanned<String>>>,
    pub ports: Option<Vec<Spanned<i64>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIngress {
    pub protocol: Option<Spanned<String>>,
    pub ports: Option<Vec<Spanned<i64>>>,
    pub allowed_origins: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProcessGrant {
    pub exec: Option<RawExec>,
    pub kill: Option<Vec<Spanned<String>>>,
    pub list: Option<Vec<Spanned<String>>>,
    pub signal: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawExec {
    pub command: Option<Spanned<String>>,
    pub args: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDependency {
    pub name: Option<Spanned<String>>,
    pub version: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawResources {
    pub memory_mb: Option<Spanned<u64>>,
    pub cpu_percent: Option<Spanned<f64>>,
    pub threads: Option<Spanned<u64>>,
    pub open_files: Option<Spanned<u64>>,
    pub execution_ms: Option<Spanned<u64>>,
    pub policy: Option<Spanned<String>>,
}
