//! The `capabilities` section: what a plugin may do through the host services (and what the OS
//! sandbox allows underneath). Anything not granted is denied.

use std::path::PathBuf;

use serde_saphyr::{Location, Spanned};

use super::Checker;
use super::raw::{RawCapabilities, RawFsGrant, RawProcessGrant};

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

pub(super) fn convert(c: &Checker<'_>, raw: Option<RawCapabilities>) -> Option<Capabilities> {
    let Some(raw) = raw else {
        return Some(Capabilities::default());
    };
    let mut caps = Capabilities::default();
    let mut ok = true;
    for (i, grant) in raw.filesystem.unwrap_or_default().into_iter().enumerate() {
        let section = format!("capabilities.filesystem[{i}]");
        match fs_grant(c, &grant, &section) {
            Some(grant) => caps.filesystem.push(grant),
            None => ok = false,
        }
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
        let protocol = protocol(c, rule.protocol.as_ref(), &rule.at, &section);
        let hosts = c
            .required_list(
                rule.hosts.as_ref(),
                &rule.at,
                &section,
                "hosts",
                "a list of host names or IP addresses",
            )
            .filter(|hosts| {
                let mut fine = true;
                for host in *hosts {
                    if host.value.trim().is_empty() || host.value.contains(char::is_whitespace) {
                        c.report(
                            &host.referenced,
                            &format!("{section}.hosts"),
                            format!("{:?}: expected a host name or IP address", host.value),
                        );
                        fine = false;
                    }
                }
                fine
            });
        let ports = ports(c, rule.ports.as_ref(), &rule.at, &section);
        match (protocol, hosts, ports) {
            (Some(protocol), Some(hosts), Some(ports)) => caps.egress.push(Egress {
                protocol,
                hosts: hosts.iter().map(|h| h.value.clone()).collect(),
                ports,
            }),
            _ => ok = false,
        }
    }
    for (i, rule) in network
        .as_ref()
        .and_then(|n| n.ingress.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        let section = format!("capabilities.network.ingress[{i}]");
        let protocol = protocol(c, rule.protocol.as_ref(), &rule.at, &section);
        let ports = ports(c, rule.ports.as_ref(), &rule.at, &section);
        match (protocol, ports) {
            (Some(protocol), Some(ports)) => caps.ingress.push(Ingress {
                protocol,
                ports,
                allowed_origins: rule
                    .allowed_origins
                    .as_ref()
                    .map(|o| o.iter().map(|s| s.value.clone()).collect())
                    .unwrap_or_default(),
            }),
            _ => ok = false,
        }
    }
    for (i, grant) in raw.process.unwrap_or_default().into_iter().enumerate() {
        match process_grant(c, grant, &format!("capabilities.process[{i}]")) {
            Some(grant) => caps.process.push(grant),
            None => ok = false,
        }
    }
    ok.then_some(caps)
}

fn fs_grant(c: &Checker<'_>, grant: &RawFsGrant, section: &str) -> Option<FsGrant> {
    let path = c
        .required(
            grant.path.as_ref(),
            &grant.at,
            section,
            "path",
            "an absolute path",
        )
        .and_then(|path| {
            let as_path = PathBuf::from(&path.value);
            if !as_path.is_absolute()
                || as_path
                    .components()
                    .any(|p| p == std::path::Component::ParentDir)
            {
                c.report(
                    &path.referenced,
                    &format!("{section}.path"),
                    format!("{:?}: expected an absolute path without `..`", path.value),
                );
                return None;
            }
            Some(as_path)
        });
    let permissions = c
        .required_list(
            grant.permissions.as_ref(),
            &grant.at,
            section,
            "permissions",
            "a list of read, write, list, create, delete",
        )
        .and_then(|perms| {
            let mut permissions = Vec::new();
            let mut fine = true;
            for perm in perms {
                match perm.value.as_str() {
                    "read" => permissions.push(FsPermission::Read),
                    "write" => permissions.push(FsPermission::Write),
                    "list" => permissions.push(FsPermission::List),
                    "create" => permissions.push(FsPermission::Create),
                    "delete" => permissions.push(FsPermission::Delete),
                    other => {
                        c.report(
                            &perm.referenced,
                            &format!("{section}.permissions"),
                            format!("{other:?}: expected read, write, list, create or delete"),
                        );
                        fine = false;
                    }
                }
            }
            permissions.sort();
            permissions.dedup();
            fine.then_some(permissions)
        });
    Some(FsGrant {
        path: path?,
        permissions: permissions?,
        recursive: grant.recursive.unwrap_or(false),
    })
}

impl Checker<'_> {
    /// A required, non-empty list; when absent or empty, reported at `parent`.
    fn required_list<'v, T>(
        &self,
        value: Option<&'v Vec<Spanned<T>>>,
        parent: &Location,
        section: &str,
        field: &str,
        expected: &str,
    ) -> Option<&'v Vec<Spanned<T>>> {
        let path = format!("{section}.{field}");
        match value {
            Some(list) if !list.is_empty() => Some(list),
            Some(_) => {
                // An empty list is at the list itself, but it has no element to point at.
                self.report(parent, &path, format!("is empty; expected {expected}"));
                None
            }
            None => {
                if !self.reported(&path) && !self.misspelt(section, field) {
                    self.report(
                        parent,
                        &path,
                        format!("missing or empty; expected {expected}"),
                    );
                }
                None
            }
        }
    }
}

fn protocol(
    c: &Checker<'_>,
    value: Option<&Spanned<String>>,
    parent: &Location,
    section: &str,
) -> Option<NetProtocol> {
    let value = c.required(value, parent, section, "protocol", "tcp or udp")?;
    match value.value.as_str() {
        "tcp" => Some(NetProtocol::Tcp),
        "udp" => Some(NetProtocol::Udp),
        other => {
            c.report(
                &value.referenced,
                &format!("{section}.protocol"),
                format!("{other:?}: expected tcp or udp"),
            );
            None
        }
    }
}

fn ports(
    c: &Checker<'_>,
    value: Option<&Vec<Spanned<i64>>>,
    parent: &Location,
    section: &str,
) -> Option<Vec<u16>> {
    let list = c.required_list(value, parent, section, "ports", "a list of ports 1-65535")?;
    let mut ports = Vec::new();
    let mut fine = true;
    for p in list {
        match u16::try_from(p.value).ok().filter(|port| *port > 0) {
            Some(port) => ports.push(port),
            None => {
                c.report(
                    &p.referenced,
                    &format!("{section}.ports"),
                    format!("{}: expected a port 1-65535", p.value),
                );
                fine = false;
            }
        }
    }
    fine.then_some(ports)
}

fn scopes(c: &Checker<'_>, list: &[Spanned<String>], field: &str) -> Option<Vec<ProcessScope>> {
    let mut scopes = Vec::new();
    let mut fine = true;
    for s in list {
        match s.value.as_str() {
            "children" => scopes.push(ProcessScope::Children),
            "self" => scopes.push(ProcessScope::Own),
            other => {
                c.report(
                    &s.referenced,
                    field,
                    format!("{other:?}: expected `children` or `self`"),
                );
                fine = false;
            }
        }
    }
    fine.then_some(scopes)
}

fn process_grant(c: &Checker<'_>, raw: RawProcessGrant, section: &str) -> Option<ProcessGrant> {
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
        c.report(
            &raw.at,
            section,
            format!(
                "has {present} operations; expected exactly one of exec, kill, list, signal per entry"
            ),
        );
        return None;
    }
    if let Some(exec) = raw.exec {
        let command = c.required(
            exec.command.as_ref(),
            &exec.at,
            &format!("{section}.exec"),
            "command",
            "an absolute path",
        )?;
        let path = PathBuf::from(&command.value);
        if !path.is_absolute() {
            c.report(
                &command.referenced,
                &format!("{section}.exec.command"),
                format!("{:?}: expected an absolute path", command.value),
            );
            return None;
        }
        return Some(ProcessGrant::Exec {
            command: path,
            args: exec.args.unwrap_or_default(),
        });
    }
    if let Some(kill) = raw.kill {
        return scopes(c, &kill, &format!("{section}.kill")).map(ProcessGrant::Kill);
    }
    if let Some(list) = raw.list {
        return scopes(c, &list, &format!("{section}.list")).map(ProcessGrant::List);
    }
    let signal = raw.signal.unwrap_or_default();
    scopes(c, &signal, &format!("{section}.signal")).map(ProcessGrant::Signal)
}
