//! The descriptor cache: each plugin's compiled descriptors, from the `.proto` files shipped in
//! its folder (`proto/` when present, else the folder itself) or, when it ships none, from the
//! running plugin's gRPC reflection; compiled once per manifest version.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use prost_reflect::DescriptorPool;

use super::{CallError, Caller, lease, reflection, transcode};

/// A plugin's compiled descriptors and the manifest hash they were compiled for.
type Compiled = (Option<String>, Arc<DescriptorPool>);

/// Compiled descriptors by plugin.
#[derive(Debug, Default)]
pub struct DescriptorCache(Mutex<HashMap<String, Compiled>>);

impl DescriptorCache {
    fn cached(&self, plugin: &str, manifest: Option<&String>) -> Option<Arc<DescriptorPool>> {
        let cache = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (hash, pool) = cache.get(plugin)?;
        (hash.as_ref() == manifest).then(|| pool.clone())
    }

    fn insert(&self, plugin: &str, manifest: Option<String>, pool: Arc<DescriptorPool>) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(plugin.to_owned(), (manifest, pool));
    }
}

/// The `.proto` files of a plugin folder and the import root they are relative to.
fn plugin_protos(dir: &Path) -> (PathBuf, Vec<PathBuf>) {
    let proto_dir = dir.join("proto");
    let root = if proto_dir.is_dir() {
        proto_dir
    } else {
        dir.to_owned()
    };
    let mut found = Vec::new();
    let mut pending = vec![(root.clone(), 0)];
    while let Some((folder, depth)) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            // Symlinks are not followed: nothing outside the plugin's folder is read.
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if kind.is_dir() && depth < 4 {
                pending.push((path, depth + 1));
            } else if kind.is_file() && path.extension().is_some_and(|e| e == "proto") {
                found.push(path);
            }
        }
    }
    found.sort();
    (root, found)
}

/// The descriptors of plugin `name` (folder `dir`, manifest hash `manifest`), compiled or read
/// through reflection on a cache miss.
pub(super) async fn descriptors(
    caller: &Caller,
    name: &str,
    dir: &Path,
    manifest: Option<String>,
) -> Result<Arc<DescriptorPool>, CallError> {
    if let Some(pool) = caller.descriptors.cached(name, manifest.as_ref()) {
        return Ok(pool);
    }
    let dir = dir.to_owned();
    let compiled = tokio::task::spawn_blocking(move || {
        let (root, protos) = plugin_protos(&dir);
        (!protos.is_empty()).then(|| transcode::load(&protos, &[root]))
    })
    .await
    .map_err(|_| CallError::Internal {
        message: "interrupted",
    })?;
    let compiled = match compiled {
        Some(compiled) => compiled.map_err(|err| CallError::transcoding(name, err))?,
        None => {
            let handle = caller
                .registry
                .grpc(name)
                .map_err(|err| CallError::catalog(name, err))?;
            let channel: tonic::transport::Channel = (*lease(&handle, name).await?).clone();
            reflection::descriptors(channel)
                .await
                .map_err(|reason| CallError::NoDescriptors {
                    plugin: name.to_owned(),
                    reason,
                })?
        }
    };
    let pool = Arc::new(compiled);
    caller.descriptors.insert(name, manifest, pool.clone());
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protos_come_from_the_proto_folder_when_there_is_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("top.proto"), "").unwrap();
        let (root, found) = plugin_protos(dir.path());
        assert_eq!(root, dir.path());
        assert_eq!(found, [dir.path().join("top.proto")]);
        std::fs::create_dir_all(dir.path().join("proto/kv")).unwrap();
        std::fs::write(dir.path().join("proto/kv/kv.proto"), "").unwrap();
        let (root, found) = plugin_protos(dir.path());
        assert_eq!(root, dir.path().join("proto"));
        assert_eq!(found, [dir.path().join("proto/kv/kv.proto")]);
    }
}
