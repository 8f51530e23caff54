//! The `capabilities` section: what a plugin may do through the host services (and what the OS
//! sandbox allows underneath). Anything not granted is denied.

use std::path::PathBuf;

use serde_saphyr::Spanned;

use super::raw::{RawCapabilities, RawProcessGrant};
use super::{Checker, ManifestError};

/// Every grant of a plugin; empty means it may do nothing beyond computing and answering.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Path-scoped filesystem grants.
    pub filesystem: Vec<FsGrant>,
    /// Outgoing connections allowed.
    pub egress: Vec<Egress>,
    /// Listening sockets allowed.
    pub ingress: Vec<Ingress>,
    /// Process operations allowed.
    pub process: Vec<ProcessGrant>,
}

/// Access to one file or folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsGrant {
    /// Absolute path.
    pub path: PathBuf,
    /// What may be done there.
    pub permissions: Vec<FsPermission>,
    /// Whether the grant covers subfolders.
    pub recursive: bool,
}

/// A filesystem permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FsPermission {
    /// Read files.
    Read,
    /// Modify files.
    Write,
    /// List folders.
    List,
    /// Create files and folders.
    Create,
    /// Delete them.
    Delete,
}

/// A transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetProtocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// Allowed outgoing connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Egress {
    /// Protocol.
    pub protocol: NetProtocol,
    /// Host names or IP addresses.
    pub hosts: Vec<String>,
    /// Ports.
    pub ports: Vec<u16>,
}

/// Allowed listening sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingress {
    /// Protocol.
    pub protocol: NetProtocol,
    /// Ports.
    pub ports: Vec<u16>,
    /// Who may connect (IP, CIDR or host).
    pub allowed_origins: Vec<String>,
}

/// Whose processes an operation may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessScope {
    /// Processes the plugin started through the host.
    Children,
    /// The plugin itself.
    Own,
}

/// One process grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessGrant {
    /// Run `command` with arguments matching `args` (`*` matches any rest).
    Exec {
        /// Absolute path of the command.
        command: PathBuf,
        /// Argument patterns.
        args: Vec<String>,
    },
    /// Kill processes in these scopes.
    Kill(Vec<ProcessScope>),
    /// List processes in these scopes.
    List(Vec<ProcessScope>),
    /// Signal processes in these scopes.
    Signal(Vec<ProcessScope>),
}

pub(super) fn convert(
    c: &Checker<'_>,
    raw: Option<RawCapabilities>,
) -> Result<Capabilities, ManifestError> {
    let Some(raw) = raw else {
        return Ok(Capabilities::default());
    };
    let mut caps = Capabilities::default();
    for (i, grant) in raw.filesystem.unwrap_or_default().into_iter().enumerate() {
        let section = format!("capabilities.filesystem[{i}]");
        let path = c.required(grant.path.as_ref(), &section, "path", "an absolute path")?;
        let as_path = PathBuf::from(&path.value);
        if !as_path.is_absolute()
            || as_path
                .components()
                .any(|p| p == std::path::Component::ParentDir)
        {
            return Err(c.at(
                &path.referenced,
                &format!("{section}.path"),
                format!("{:?}: expected an absolute path without `..`", path.value),
            ));
        }
        let perms = c.required_list(
            grant.permissions.as_ref(),
            &section,
            "permissions",
            "a list of read, write, list, create, delete",
        )?;
        let mut permissions = Vec::new();
        for perm in perms {
            permissions.push(match perm.value.as_str() {
                "read" => FsPermission::Read,
                "write" => FsPermission::Write,
                "list" => FsPermission::List,
                "create" => FsPermission::Create,
                "delete" => FsPermission::Delete,
                other => {
                    return Err(c.at(
                        &perm.referenced,
                        &format!("{section}.permissions"),
                        format!("{other:?}: expected read, write, list, create or delete"),
                    ));
                }
            });
        }
        permissions.sort();
        permissions.dedup();
        caps.filesystem.push(FsGrant {
            path: as_path,
            permissions,
            recursive: grant.recursive.unwrap_or(false),
        });
    }
    let network = raw.network;
    for (i, rule) in network
        .as_ref()
        .and_then(|n| n.egress.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        let section = format!("capabilities.network.egress[{i}]");
        let protocol = protocol(c, rule.protocol.as_ref(), &section)?;
        let hosts = c.required_list(
            rule.hosts.as_ref(),
            &section,
            "hosts",
            "a list of host names or IP addresses",
        )?;
        for host in hosts {
            if host.value.trim().is_empty() || host.value.contains(char::is_whitespace) {
                return Err(c.at(
                    &host.referenced,
                    &format!("{section}.hosts"),
                    format!("{:?}: expected a host name or IP address", host.value),
                ));
            }
        }
        caps.egress.push(Egress {
            protocol,
            hosts: hosts.iter().map(|h| h.value.clone()).collect(),
            ports: ports(c, rule.ports.as_ref(), &section)?,
        });
    }
    for (i, rule) in network
        .as_ref()
        .and_then(|n| n.ingress.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        let section = format!("capabilities.network.ingress[{i}]");
        caps.ingress.push(Ingress {
            protocol: protocol(c, rule.protocol.as_ref(), &section)?,
            ports: ports(c, rule.ports.as_ref(), &section)?,
            allowed_origins: rule
                .allowed_origins
                .as_ref()
                .map(|o| o.iter().map(|s| s.value.clone()).collect())
                .unwrap_or_default(),
        });
    }
    for (i, grant) in raw.process.unwrap_or_default().into_iter().enumerate() {
        caps.process.push(process_grant(
            c,
            grant,
            &format!("capabilities.process[{i}]"),
        )?);
    }
    Ok(caps)
}

impl Checker<'_> {
    fn required_list<'v, T>(
        &self,
        value: Option<&'v Vec<Spanned<T>>>,
        section: &str,
        field: &str,
        expected: &str,
    ) -> Result<&'v Vec<Spanned<T>>, ManifestError> {
        match value {
            Some(list) if !list.is_empty() => Ok(list),
            _ => Err(ManifestError {
                field: format!("{section}.{field}"),
                problem: format!("missing or empty; expected {expected}"),
                ..self.top("", "")
            }),
        }
    }
}

fn protocol(
    c: &Checker<'_>,
    value: Option<&Spanned<String>>,
    section: &str,
) -> Result<NetProtocol, ManifestError> {
    let value = c.required(value, section, "protocol", "tcp or udp")?;
    match value.value.as_str() {
        "tcp" => Ok(NetProtocol::Tcp),
        "udp" => Ok(NetProtocol::Udp),
        other => Err(c.at(
            &value.referenced,
            &format!("{section}.protocol"),
            format!("{other:?}: expected tcp or udp"),
        )),
    }
}

fn ports(
    c: &Checker<'_>,
    value: Option<&Vec<Spanned<i64>>>,
    section: &str,
) -> Result<Vec<u16>, ManifestError> {
    let list = c.required_list(value, section, "ports", "a list of ports 1-65535")?;
    list.iter()
        .map(|p| {
            u16::try_from(p.value)
                .ok()
                .filter(|port| *port > 0)
                .ok_or_else(|| {
                    c.at(
                        &p.referenced,
                        &format!("{section}.ports"),
                        format!("{}: expected a port 1-65535", p.value),
                    )
                })
        })
        .collect()
}

fn scopes(
    c: &Checker<'_>,
    list: &[Spanned<String>],
    field: &str,
) -> Result<Vec<ProcessScope>, ManifestError> {
    list.iter()
        .map(|s| match s.value.as_str() {
            "children" => Ok(ProcessScope::Children),
            "self" => Ok(ProcessScope::Own),
            other => Err(c.at(
                &s.referenced,
                field,
                format!("{other:?}: expected `children` or `self`"),
            )),
        })
        .collect()
}

fn process_grant(
    c: &Checker<'_>,
    raw: RawProcessGrant,
    section: &str,
) -> Result<ProcessGrant, ManifestError> {
    let present = [
        raw.exec.is_some(),
        raw.kill.is_some(),
        raw.list.is_some(),
        raw.signal.is_some(),
    ]
    .iter()
    .filter(|p| **p)
    .count();
    if present != 1 {
        return Err(ManifestError {
            field: section.to_owned(),
            problem: format!(
                "has {present} operations; expected exactly one of exec, kill, list, signal per entry"
            ),
            ..c.top("", "")
        });
    }
    if let Some(exec) = raw.exec {
        let command = c.required(
            exec.command.as_ref(),
            &format!("{section}.exec"),
            "command",
            "an absolute path",
        )?;
        let path = PathBuf::from(&command.value);
        if !path.is_absolute() {
            return Err(c.at(
                &command.referenced,
                &format!("{section}.exec.command"),
                format!("{:?}: expected an absolute path", command.value),
            ));
        }
        return Ok(ProcessGrant::Exec {
            command: path,
            args: exec.args.unwrap_or_default(),
        });
    }
    if let Some(kill) = raw.kill {
        return Ok(ProcessGrant::Kill(scopes(
            c,
            &kill,
            &format!("{section}.kill"),
        )?));
    }
    if let Some(list) = raw.list {
        return Ok(ProcessGrant::List(scopes(
            c,
            &list,
            &format!("{section}.list"),
        )?));
    }
    let signal = raw.signal.unwrap_or_default();
    Ok(ProcessGrant::Signal(scopes(
        c,
        &signal,
        &format!("{section}.signal"),
    )?))
}
