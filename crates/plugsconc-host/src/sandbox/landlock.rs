//! The Landlock ruleset of a plugin: filesystem rules from its grants plus what its runtime
//! needs to start, TCP bind/connect rules from its network grants, and the signal and
//! abstract-socket scopes. Built in the host; the child only calls `landlock_restrict_self`.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, NetPort, PathBeneath, PathFd, Ruleset,
    RulesetAttr as _, RulesetCreated, RulesetCreatedAttr as _, Scope,
};

use super::{Protections, Spec};
use crate::manifest::{FsPermission, NetProtocol, ProcessGrant};

/// Read-only for every plugin: shared libraries, interpreters' standard libraries, name
/// resolution and TLS roots, `/proc` (the kernel's ptrace checks still keep other processes'
/// memory and environment out of reach) and the CPU topology runtimes size their pools from.
const SYSTEM_READ: &[&str] = &[
    "/usr",
    "/lib",
    "/lib64",
    "/lib32",
    "/bin",
    "/sbin",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/etc/localtime",
    "/etc/mime.types",
    "/proc",
    "/sys/devices/system/cpu",
    "/sys/fs/cgroup",
];

/// Devices any program may read and write.
const DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

/// ELF interpreters: exec'ing a dynamically linked binary opens its interpreter as an exec.
const LOADERS: &[&str] = &[
    "/lib64/ld-linux-x86-64.so.2",
    "/lib/ld-linux-aarch64.so.1",
    "/lib/ld-linux-armhf.so.3",
    "/lib/ld-linux.so.2",
];

/// The running kernel's Landlock ABI, 0 when it has none.
pub(super) fn kernel_abi() -> i32 {
    // SAFETY: landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION) only returns a
    // number; no memory is passed.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    };
    i32::try_from(abi).unwrap_or(0).max(0)
}

/// Builds the ruleset (`None` without Landlock) and records what it enforces.
pub(super) fn ruleset(
    spec: &Spec<'_>,
    writable: &[PathBuf],
    protections: &mut Protections,
) -> Result<Option<OwnedFd>, String> {
    let kernel = kernel_abi();
    if kernel < 1 {
        protections
            .missing
            .push("landlock (the kernel has none: filesystem and network grants are not enforced by the OS)".to_owned());
        return Ok(None);
    }
    let abi = ABI::from(kernel);
    let rules = Rules::new(abi);
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .map_err(|e| e.to_string())?;
    let tcp = kernel >= 4;
    if tcp {
        ruleset = ruleset
            .handle_access(AccessNet::from_all(abi))
            .map_err(|e| e.to_string())?;
    }
    let scoped = kernel >= 6;
    if scoped {
        ruleset = ruleset
            .scope(Scope::from_all(abi))
            .map_err(|e| e.to_string())?;
    }
    let mut created = ruleset.create().map_err(|e| e.to_string())?;

    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    for path in SYSTEM_READ {
        created = rules.add_if_present(created, Path::new(path), read)?;
    }
    for path in DEVICES {
        created = rules.add_if_present(
            created,
            Path::new(path),
            AccessFs::ReadFile | AccessFs::WriteFile,
        )?;
    }
    for path in LOADERS {
        created = rules.add_if_present(
            created,
            Path::new(path),
            AccessFs::Execute | AccessFs::ReadFile,
        )?;
    }
    created = rules.add(created, spec.dir, read)?;
    created = rules.add(
        created,
        spec.entrypoint,
        AccessFs::Execute | AccessFs::ReadFile,
    )?;
    for interpreter in interpreters(spec.entrypoint) {
        created = rules.add_if_present(
            created,
            &interpreter,
            AccessFs::Execute | AccessFs::ReadFile,
        )?;
        // A runtime installed under its own prefix (`<prefix>/bin/python3`) reads its standard
        // library from `<prefix>/lib`.
        if let Some(prefix) = std::fs::canonicalize(&interpreter).ok().and_then(|real| {
            real.parent()
                .filter(|bin| bin.ends_with("bin"))
                .and_then(Path::parent)
                .map(Path::to_owned)
        }) {
            for lib in ["lib", "lib64"] {
                created = rules.add_if_present(created, &prefix.join(lib), read)?;
            }
        }
    }
    for folder in writable {
        created = rules.add(created, folder, AccessFs::from_all(abi))?;
    }
    for grant in &spec.capabilities.filesystem {
        let access = grant
            .permissions
            .iter()
            .fold(BitFlags::<AccessFs>::empty(), |all, permission| {
                all | fs_access(*permission)
            });
        if !grant.recursive && grant.path.is_dir() {
            protections.unenforced.push(format!(
                "{}: non-recursive, but the OS rule covers its subfolders (the host service checks depth)",
                grant.path.display()
            ));
        }
        if grant.path.exists() {
            created = rules.add(created, &grant.path, access)?;
        } else {
            protections.unenforced.push(format!(
                "{}: does not exist at start, so the OS grants nothing there",
                grant.path.display()
            ));
        }
    }
    for grant in &spec.capabilities.process {
        if let ProcessGrant::Exec { command, .. } = grant {
            created =
                rules.add_if_present(created, command, AccessFs::Execute | AccessFs::ReadFile)?;
            protections.unenforced.push(format!(
                "exec {}: the OS allows the command, the host service checks its arguments",
                command.display()
            ));
        }
    }
    protections
        .enforced
        .push(format!("landlock filesystem rules (ABI {kernel})"));

    if tcp {
        for egress in &spec.capabilities.egress {
            if egress.protocol == NetProtocol::Tcp {
                for port in &egress.ports {
                    created = created
                        .add_rule(NetPort::new(*port, AccessNet::ConnectTcp))
                        .map_err(|e| e.to_string())?;
                }
                if !egress.hosts.is_empty() {
                    protections.unenforced.push(format!(
                        "egress to {}: the OS checks ports, not hosts",
                        egress.hosts.join(", ")
                    ));
                }
            }
        }
        for ingress in &spec.capabilities.ingress {
            if ingress.protocol == NetProtocol::Tcp {
                for port in &ingress.ports {
                    created = created
                        .add_rule(NetPort::new(*port, AccessNet::BindTcp))
                        .map_err(|e| e.to_string())?;
                }
                if !ingress.allowed_origins.is_empty() {
                    protections
                        .unenforced
                        .push("ingress allowed_origins: the OS checks ports, not peers".to_owned());
                }
            }
        }
        protections
            .enforced
            .push("landlock tcp bind/connect rules".to_owned());
    } else {
        protections.missing.push(format!(
            "landlock tcp rules (need ABI 4, the kernel has {kernel}): any tcp port is reachable"
        ));
    }
    if scoped {
        protections.enforced.push(
            "landlock scopes: no signals or abstract unix sockets outside the plugin".to_owned(),
        );
    } else {
        protections.missing.push(format!(
            "landlock scopes (need ABI 6, the kernel has {kernel}): the plugin can signal other processes of its user"
        ));
    }
    Ok(created.into())
}

/// Landlock rights of one manifest permission.
fn fs_access(permission: FsPermission) -> BitFlags<AccessFs> {
    match permission {
        FsPermission::Read => AccessFs::ReadFile.into(),
        FsPermission::List => AccessFs::ReadDir.into(),
        FsPermission::Write => AccessFs::WriteFile | AccessFs::Truncate,
        FsPermission::Create => AccessFs::MakeReg | AccessFs::MakeDir | AccessFs::MakeSym,
        FsPermission::Delete => AccessFs::RemoveFile | AccessFs::RemoveDir,
    }
}

/// Adds path rules, keeping file rules to the rights a file can carry.
struct Rules {
    abi: ABI,
}

impl Rules {
    fn new(abi: ABI) -> Self {
        Self { abi }
    }

    fn add(
        &self,
        created: RulesetCreated,
        path: &Path,
        access: BitFlags<AccessFs>,
    ) -> Result<RulesetCreated, String> {
        let fd = PathFd::new(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let access = if path.is_dir() {
            access
        } else {
            access & AccessFs::from_file(self.abi)
        };
        let access = access & AccessFs::from_all(self.abi);
        if access.is_empty() {
            return Ok(created);
        }
        created
            .add_rule(PathBeneath::new(fd, access))
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    fn add_if_present(
        &self,
        created: RulesetCreated,
        path: &Path,
        access: BitFlags<AccessFs>,
    ) -> Result<RulesetCreated, String> {
        if path.exists() {
            self.add(created, path, access)
        } else {
            Ok(created)
        }
    }
}

/// The interpreters a script entry point runs through: its `#!` line and, for `env`, the
/// program it looks up in `PATH`.
fn interpreters(entrypoint: &Path) -> Vec<PathBuf> {
    use std::io::Read as _;
    let mut head = [0u8; 256];
    let Ok(read) = std::fs::File::open(entrypoint).and_then(|mut f| f.read(&mut head)) else {
        return Vec::new();
    };
    let Some(line) = head[..read]
        .strip_prefix(b"#!")
        .and_then(|rest| rest.split(|b| *b == b'\n').next())
    else {
        return Vec::new();
    };
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let Some(interpreter) = words.next().map(PathBuf::from) else {
        return Vec::new();
    };
    let mut found = vec![interpreter.clone()];
    if interpreter.file_name().is_some_and(|n| n == "env")
        && let Some(program) = words.find(|w| !w.starts_with('-'))
    {
        // The first match on the PATH the plugin inherits, as env itself will pick.
        let path =
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
        if let Some(candidate) = std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
        {
            found.push(candidate);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shebang_with_env_finds_the_program() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("plugin");
        std::fs::write(&script, "#!/usr/bin/env -S sh -e\necho hi\n").unwrap();
        let found = interpreters(&script);
        assert_eq!(found[0], Path::new("/usr/bin/env"));
        assert!(found[1].ends_with("sh"), "{found:?}");
        std::fs::write(&script, b"\x7fELF").unwrap();
        assert!(interpreters(&script).is_empty());
    }

    #[test]
    fn permissions_map_to_landlock_rights() {
        assert_eq!(fs_access(FsPermission::Read), AccessFs::ReadFile);
        assert!(fs_access(FsPermission::Write).contains(AccessFs::Truncate));
        assert!(fs_access(FsPermission::Delete).contains(AccessFs::RemoveDir));
    }
}
