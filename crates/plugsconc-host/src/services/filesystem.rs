//! `FilesystemService`: reads, writes, listings, creations and deletions inside the plugin's
//! filesystem grants. Paths are resolved (symlinks and `..` followed to where they really lead)
//! before they are checked, so no link or `..` reaches outside a grant.

use std::io::Write as _;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use plugsconc_protocol::proto::host::filesystem_service_server::FilesystemService;
use plugsconc_protocol::proto::host::{
    CreateRequest, CreateResponse, DeleteRequest, DeleteResponse, Entry, ListRequest, ListResponse,
    ReadRequest, ReadResponse, WriteRequest, WriteResponse,
};
use tonic::{Request, Response, Status};

use super::Grants;
use crate::manifest::{FsGrant, FsPermission};

/// Larger files are refused by `Read` (gRPC's default message limit is 4 MiB).
const MAX_READ: u64 = 4 << 20;

pub(crate) struct Filesystem {
    grants: Arc<Grants>,
}

impl Filesystem {
    pub(crate) fn new(grants: Arc<Grants>) -> Self {
        Self { grants }
    }

    /// Resolves `path` and checks that a grant gives `permission` on it.
    fn check(
        &self,
        operation: &str,
        path: &str,
        permission: FsPermission,
    ) -> Result<PathBuf, Status> {
        let resolved = resolve(path).map_err(|reason| {
            Status::invalid_argument(format!("{operation} {path:?}: {reason}"))
        })?;
        if allows(&self.grants, permission, &resolved) {
            return Ok(resolved);
        }
        let shown = if resolved == Path::new(path) {
            path.to_owned()
        } else {
            format!("{path} (resolved to {})", resolved.display())
        };
        Err(self.grants.deny(
            operation,
            &shown,
            &format!(
                "no filesystem grant gives `{}` on it",
                permission_name(permission)
            ),
        ))
    }
}

fn permission_name(permission: FsPermission) -> &'static str {
    match permission {
        FsPermission::Read => "read",
        FsPermission::Write => "write",
        FsPermission::List => "list",
        FsPermission::Create => "create",
        FsPermission::Delete => "delete",
    }
}

/// The real path `path` names: canonical when it exists, else its canonical parent joined with
/// its last component (which must be a plain name).
fn resolve(path: &str) -> Result<PathBuf, String> {
    let path = Path::new(path);
    if !path.is_absolute() {
        return Err("expected an absolute path".to_owned());
    }
    if let Ok(real) = std::fs::canonicalize(path) {
        return Ok(real);
    }
    let (Some(parent), Some(Component::Normal(name))) =
        (path.parent(), path.components().next_back())
    else {
        return Err("expected a path ending in a file or folder name".to_owned());
    };
    let parent = std::fs::canonicalize(parent)
        .map_err(|err| format!("its folder {} cannot be resolved: {err}", parent.display()))?;
    Ok(parent.join(name))
}

/// Whether `grant` covers `target` (both resolved): the path itself, anything below it when
/// recursive, its direct children otherwise.
fn covers(grant: &FsGrant, target: &Path) -> bool {
    let Ok(root) = std::fs::canonicalize(&grant.path) else {
        return false;
    };
    if target == root {
        return true;
    }
    if !target.starts_with(&root) {
        return false;
    }
    grant.recursive || target.parent() == Some(root.as_path())
}

/// Opens `real` (checked before) without following a final symlink, then checks that the file
/// actually opened is still inside a grant with `permission`: a plugin that swaps a folder or
/// file for a symlink between the check and the open gets an error, not the file it points at.
fn open_within(
    real: &Path,
    grants: &Grants,
    permission: FsPermission,
    options: impl FnOnce(&mut std::fs::OpenOptions),
) -> std::io::Result<std::fs::File> {
    let mut open = std::fs::OpenOptions::new();
    open.custom_flags(libc::O_NOFOLLOW);
    options(&mut open);
    let file = open.open(real)?;
    let opened = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    if allows(grants, permission, &opened) {
        Ok(file)
    } else {
        Err(changed(real, &opened))
    }
}

/// Whether a grant gives `permission` on `target` (resolved).
fn allows(grants: &Grants, permission: FsPermission, target: &Path) -> bool {
    grants
        .capabilities
        .filesystem
        .iter()
        .any(|grant| grant.permissions.contains(&permission) && covers(grant, target))
}

/// The refusal of a path that led elsewhere when it was opened than when it was checked.
fn changed(real: &Path, opened: &Path) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!(
            "{} changed while it was opened (now {}); refused",
            real.display(),
            opened.display()
        ),
    )
}

/// The folder holding `real` (checked before), opened and pinned, and the name in it — once
/// the folder actually opened is known to be one where a grant gives `permission` on that name.
/// What is then created, written or removed through the folder's descriptor (`*at` calls, the
/// name never followed if it is a link) lands there even if a plugin swaps a folder on the way
/// for a symlink between the check and the act.
fn parent_within(
    real: &Path,
    grants: &Grants,
    permission: FsPermission,
) -> std::io::Result<(std::os::fd::OwnedFd, std::ffi::CString)> {
    use std::os::fd::FromRawFd as _;
    use std::os::unix::ffi::OsStrExt as _;
    let invalid = || std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name");
    let (Some(parent), Some(name)) = (real.parent(), real.file_name()) else {
        return Err(invalid());
    };
    let folder = std::ffi::CString::new(parent.as_os_str().as_bytes()).map_err(|_| invalid())?;
    let name = std::ffi::CString::new(name.as_bytes()).map_err(|_| invalid())?;
    // SAFETY: open with a NUL-terminated path we own; the descriptor is owned right after.
    let fd = unsafe {
        libc::open(
            folder.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    let dir = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let opened = std::fs::read_link(format!("/proc/self/fd/{fd}"))?
        .join(real.file_name().unwrap_or_default());
    if allows(grants, permission, &opened) {
        Ok((dir, name))
    } else {
        Err(changed(real, &opened))
    }
}

/// `Ok` for a non-negative result of a libc call, else the OS error.
fn os(result: libc::c_int) -> std::io::Result<libc::c_int> {
    if result < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

/// Opens `name` in `dir` with `flags` (never following a link there).
fn open_at(
    dir: &std::os::fd::OwnedFd,
    name: &std::ffi::CStr,
    flags: libc::c_int,
) -> std::io::Result<std::fs::File> {
    use std::os::fd::FromRawFd as _;
    // SAFETY: openat on a descriptor and a NUL-terminated name we own.
    let fd = os(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o644 as libc::c_uint,
        )
    })?;
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    what: String,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| Status::internal(err.to_string()))?
        .map_err(|err| match err.kind() {
            std::io::ErrorKind::NotFound => Status::not_found(format!("{what}: {err}")),
            std::io::ErrorKind::AlreadyExists => Status::already_exists(format!("{what}: {err}")),
            _ => Status::failed_precondition(format!("{what}: {err}")),
        })
}

#[tonic::async_trait]
impl FilesystemService for Filesystem {
    async fn read(&self, request: Request<ReadRequest>) -> Result<Response<ReadResponse>, Status> {
        let path = request.into_inner().path;
        let real = self.check("read", &path, FsPermission::Read)?;
        let grants = self.grants.clone();
        let data = blocking(
            move || {
                let mut file = open_within(&real, &grants, FsPermission::Read, |o| {
                    o.read(true);
                })?;
                let size = file.metadata()?.len();
                if size > MAX_READ {
                    return Err(std::io::Error::other(format!(
                        "{size} bytes is more than the {MAX_READ} a read may return"
                    )));
                }
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut file, &mut data)?;
                Ok(data)
            },
            format!("read {path}"),
        )
        .await?;
        Ok(Response::new(ReadResponse { data }))
    }

    async fn write(
        &self,
        request: Request<WriteRequest>,
    ) -> Result<Response<WriteResponse>, Status> {
        let WriteRequest { path, data, append } = request.into_inner();
        // Replacing or appending needs `write`; a new file needs `create` (and then `write`).
        let exists = resolve(&path).is_ok_and(|real| real.exists());
        let real = if exists {
            self.check("write", &path, FsPermission::Write)?
        } else {
            self.check("create", &path, FsPermission::Create)?;
            self.check("write", &path, FsPermission::Write)?
        };
        let grants = self.grants.clone();
        blocking(
            move || {
                // Created (or opened) in the folder that was checked; truncated only once open.
                let (dir, name) = parent_within(&real, &grants, FsPermission::Write)?;
                let mode = if append { libc::O_APPEND } else { 0 };
                let mut file = open_at(&dir, &name, libc::O_WRONLY | libc::O_CREAT | mode)?;
                if !append {
                    file.set_len(0)?;
                }
                file.write_all(&data)
            },
            format!("write {path}"),
        )
        .await?;
        Ok(Response::new(WriteResponse {}))
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let path = request.into_inner().path;
        let real = self.check("list", &path, FsPermission::List)?;
        let grants = self.grants.clone();
        let entries = blocking(
            move || {
                let dir = open_within(&real, &grants, FsPermission::List, |o| {
                    o.read(true)
                        .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY);
                })?;
                let mut entries = Vec::new();
                for entry in std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))? {
                    let entry = entry?;
                    // Not followed: a link is listed as what it is.
                    let meta = entry.path().symlink_metadata()?;
                    entries.push(Entry {
                        name: entry.file_name().to_string_lossy().into_owned(),
                        dir: meta.is_dir(),
                        size: meta.len(),
                    });
                }
                entries.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(entries)
            },
            format!("list {path}"),
        )
        .await?;
        Ok(Response::new(ListResponse { entries }))
    }

    async fn create(
        &self,
        request: Request<CreateRequest>,
    ) -> Result<Response<CreateResponse>, Status> {
        let CreateRequest { path, dir } = request.into_inner();
        let real = self.check("create", &path, FsPermission::Create)?;
        let grants = self.grants.clone();
        blocking(
            move || {
                let (folder, name) = parent_within(&real, &grants, FsPermission::Create)?;
                if dir {
                    // SAFETY: mkdirat on a descriptor and a NUL-terminated name we own.
                    os(unsafe { libc::mkdirat(folder.as_raw_fd(), name.as_ptr(), 0o755) }).map(drop)
                } else {
                    open_at(
                        &folder,
                        &name,
                        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                    )
                    .map(drop)
                }
            },
            format!("create {path}"),
        )
        .await?;
        Ok(Response::new(CreateResponse {}))
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let path = request.into_inner().path;
        let real = self.check("delete", &path, FsPermission::Delete)?;
        let grants = self.grants.clone();
        blocking(
            move || {
                let (folder, name) = parent_within(&real, &grants, FsPermission::Delete)?;
                // SAFETY: a zeroed stat is a valid buffer for fstatat to fill.
                let mut stat: libc::stat = unsafe { std::mem::zeroed() };
                // SAFETY: fstatat on a descriptor, a name and a buffer we own; links not followed.
                os(unsafe {
                    libc::fstatat(
                        folder.as_raw_fd(),
                        name.as_ptr(),
                        &raw mut stat,
                        libc::AT_SYMLINK_NOFOLLOW,
                    )
                })?;
                let flags = if stat.st_mode & libc::S_IFMT == libc::S_IFDIR {
                    libc::AT_REMOVEDIR
                } else {
                    0
                };
                // SAFETY: unlinkat on a descriptor and a NUL-terminated name we own.
                os(unsafe { libc::unlinkat(folder.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
            },
            format!("delete {path}"),
        )
        .await?;
        Ok(Response::new(DeleteResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(path: &Path, recursive: bool) -> FsGrant {
        FsGrant {
            path: path.to_owned(),
            permissions: vec![FsPermission::Read],
            recursive,
        }
    }

    #[test]
    fn grants_cover_their_path_and_children_by_recursion() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        assert!(covers(&grant(&root, false), &root));
        assert!(covers(&grant(&root, false), &root.join("a")));
        assert!(!covers(&grant(&root, false), &root.join("a/b")));
        assert!(covers(&grant(&root, true), &root.join("a/b/c")));
        assert!(!covers(&grant(&root.join("a"), true), &root));
        // A sibling whose name merely starts with the grant's is not inside it.
        std::fs::create_dir_all(root.join("ab")).unwrap();
        assert!(!covers(&grant(&root.join("a"), true), &root.join("ab")));
    }

    #[test]
    fn a_path_swapped_for_a_link_after_the_check_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let (granted, outside) = (root.join("granted"), root.join("outside"));
        std::fs::create_dir_all(granted.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(granted.join("sub/f"), "mine").unwrap();
        std::fs::write(outside.join("f"), "secret").unwrap();
        let grants = Grants {
            plugin: "p".into(),
            capabilities: crate::manifest::Capabilities {
                filesystem: vec![FsGrant {
                    path: granted.clone(),
                    permissions: vec![FsPermission::Read],
                    recursive: true,
                }],
                ..Default::default()
            },
            sandbox: None,
            pid: 0,
        };
        let read = |o: &mut std::fs::OpenOptions| {
            o.read(true);
        };
        let checked = granted.join("sub/f");
        assert!(open_within(&checked, &grants, FsPermission::Read, read).is_ok());
        // The folder becomes a link out of the grant after the path was checked.
        std::fs::rename(granted.join("sub"), root.join("old-sub")).unwrap();
        std::os::unix::fs::symlink(&outside, granted.join("sub")).unwrap();
        let err = open_within(&checked, &grants, FsPermission::Read, read).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
        // The file itself becomes a link: not followed at all.
        std::fs::remove_file(granted.join("sub")).unwrap();
        std::fs::create_dir(granted.join("sub")).unwrap();
        std::os::unix::fs::symlink(outside.join("f"), granted.join("sub/f")).unwrap();
        assert!(open_within(&checked, &grants, FsPermission::Read, read).is_err());
    }

    #[test]
    fn a_folder_swapped_for_a_link_after_the_check_creates_nothing_outside() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let (granted, outside) = (root.join("granted"), root.join("outside"));
        std::fs::create_dir_all(granted.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let grants = Grants {
            plugin: "p".into(),
            capabilities: crate::manifest::Capabilities {
                filesystem: vec![FsGrant {
                    path: granted.clone(),
                    permissions: vec![FsPermission::Write, FsPermission::Create],
                    recursive: true,
                }],
                ..Default::default()
            },
            sandbox: None,
            pid: 0,
        };
        let checked = granted.join("sub/new");
        let (folder, name) = parent_within(&checked, &grants, FsPermission::Create).unwrap();
        open_at(&folder, &name, libc::O_WRONLY | libc::O_CREAT).unwrap();
        assert!(checked.exists());
        // The folder becomes a link out of the grant after the path was checked.
        std::fs::rename(granted.join("sub"), root.join("old-sub")).unwrap();
        std::os::unix::fs::symlink(&outside, granted.join("sub")).unwrap();
        let err =
            parent_within(&granted.join("sub/other"), &grants, FsPermission::Create).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
        assert!(!outside.join("other").exists(), "nothing created outside");
        // A link as the last component is not written through.
        std::fs::remove_file(granted.join("sub")).unwrap();
        std::fs::create_dir(granted.join("sub")).unwrap();
        std::os::unix::fs::symlink(outside.join("target"), granted.join("sub/f")).unwrap();
        let (folder, name) =
            parent_within(&granted.join("sub/f"), &grants, FsPermission::Write).unwrap();
        assert!(open_at(&folder, &name, libc::O_WRONLY | libc::O_CREAT).is_err());
        assert!(!outside.join("target").exists());
    }

    #[test]
    fn paths_are_resolved_before_they_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(root.join("inside")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("inside/escape")).unwrap();
        let via_link = format!("{}/inside/escape/hostname", root.display());
        assert_eq!(resolve(&via_link).unwrap(), Path::new("/etc/hostname"));
        let dotdot = format!("{}/inside/../../x", root.display());
        assert!(!resolve(&dotdot).unwrap().starts_with(&root));
        assert!(resolve("relative/path").is_err());
        assert!(resolve(&format!("{}/missing/deeper/file", root.display())).is_err());
    }
}
