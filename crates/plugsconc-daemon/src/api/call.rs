//! `POST /api/v1/plugins/{name}/call/{service}/{method}`: any unary method of a process plugin
//! with a JSON body, transcoded as `plugsconc call` does. The descriptors come from the `.proto`
//! files shipped in the plugin's folder (`proto/` when present, else the folder itself) or, when
//! it ships none, from the running plugin's gRPC reflection; either way once per manifest
//! version, then cached.

use std::collections::HashMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use plugsconc_host::{AnyGrpc, Handle, HostError, Lease};
use prost_reflect::DescriptorPool;
use serde_json::Value;

use super::manage::host_error;
use super::types::{CallReply, ErrorBody};
use super::{ApiError, ApiState};
use crate::reflection;
use crate::transcode::{self, TranscodeError};

/// What calling a plugin needs: the catalog, the descriptor cache and the call metrics (shared
/// by the call endpoint, the plugins' HTTP routes and jobs).
#[derive(Clone)]
pub struct Caller {
    /// The catalog.
    pub registry: plugsconc_host::Registry,
    /// Compiled descriptors.
    pub descriptors: Arc<DescriptorCache>,
    /// Call counters and latencies.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller").finish_non_exhaustive()
    }
}

impl ApiState {
    /// The parts of the state a plugin call uses.
    pub fn caller(&self) -> Caller {
        Caller {
            registry: self.registry.clone(),
            descriptors: self.descriptors.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// A plugin's compiled descriptors and the manifest hash they were compiled for.
type Compiled = (Option<String>, Arc<DescriptorPool>);

/// Compiled descriptors by plugin.
#[derive(Debug, Default)]
pub struct DescriptorCache(Mutex<HashMap<String, Compiled>>);

/// The `.proto` files of a plugin folder and the import root they are relative to.
fn plugin_protos(dir: &FsPath) -> (PathBuf, Vec<PathBuf>) {
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

async fn descriptors(
    state: &Caller,
    name: &str,
    dir: &FsPath,
    manifest: Option<String>,
) -> Result<Arc<DescriptorPool>, ApiError> {
    if let Some((hash, pool)) = state
        .descriptors
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(name)
        && *hash == manifest
    {
        return Ok(pool.clone());
    }
    let dir = dir.to_owned();
    let compiled = tokio::task::spawn_blocking(move || {
        let (root, protos) = plugin_protos(&dir);
        (!protos.is_empty()).then(|| transcode::load(&protos, &[root]))
    })
    .await
    .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "interrupted"))?;
    let compiled = match compiled {
        Some(compiled) => compiled.map_err(transcode_error)?,
        None => {
            let handle = state.registry.grpc(name).map_err(host_error)?;
            let channel: tonic::transport::Channel = (*lease(&handle, name).await?).clone();
            reflection::descriptors(channel).await.map_err(|err| {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "no_descriptors",
                    format!("plugin {name:?} ships no .proto files in its folder and {err}"),
                )
            })?
        }
    };
    let pool = Arc::new(compiled);
    state
        .descriptors
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(name.to_owned(), (manifest, pool.clone()));
    Ok(pool)
}

fn transcode_error(err: TranscodeError) -> ApiError {
    match err {
        TranscodeError::UnknownMethod { .. } | TranscodeError::MethodSyntax(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "method_not_found", err.to_string())
        }
        TranscodeError::Streaming(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "streaming_method", err.to_string())
        }
        TranscodeError::Json { .. } => {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_request", err.to_string())
        }
        TranscodeError::Compile { .. } => {
            ApiError::new(StatusCode::CONFLICT, "bad_descriptors", err.to_string())
        }
        TranscodeError::Reflection { .. } => {
            ApiError::new(StatusCode::CONFLICT, "no_descriptors", err.to_string())
        }
    }
}

/// A lease on the plugin's gRPC channel, starting the plugin if it is not running.
async fn lease<'a>(
    handle: &'a Handle<AnyGrpc>,
    name: &str,
) -> Result<Lease<'a, AnyGrpc>, ApiError> {
    handle.get().await.map_err(|err| match err {
        HostError::UnknownPlugin { .. } | HostError::NotAvailable { .. } => host_error(err),
        other => {
            // The detail (paths, exit status, the plugin's last stderr lines) is the operator's:
            // it goes to the log and the plugin's status, not to the caller.
            tracing::warn!(plugin = name, error = %other, "plugin unavailable for a call");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "plugin_unavailable",
                format!(
                    "plugin {name:?} could not be started; its status says why (GET /api/v1/plugins/{name})"
                ),
            )
        }
    })
}

/// Calls `service/method` of plugin `name` with a JSON body; returns the method's full name
/// and the JSON reply. Shared by the call endpoint and the plugins' own HTTP routes.
pub async fn invoke(
    state: &Caller,
    name: &str,
    method_path: &str,
    body: &str,
) -> Result<(String, Value), ApiError> {
    let info = state.registry.get(name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "plugin_not_found",
            format!("no plugin named {name:?}"),
        )
    })?;
    let Some(dir) = info.dir.clone() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "builtin_plugin",
            format!("{name:?} is built into the daemon and has no gRPC methods to call"),
        ));
    };
    let pool = descriptors(state, name, &dir, info.manifest_sha256.clone()).await?;
    let method = transcode::find_method(&pool, method_path).map_err(transcode_error)?;
    let body = if body.trim().is_empty() { "{}" } else { body };
    let request = transcode::request_from_json(&method, body).map_err(transcode_error)?;
    let handle = state.registry.grpc(name).map_err(host_error)?;
    let lease = lease(&handle, name).await?;
    let channel: tonic::transport::Channel = (*lease).clone();
    let began = std::time::Instant::now();
    let reply = transcode::call_unary(channel, &method, request).await;
    let full_name = format!("{}/{}", method.parent_service().full_name(), method.name());
    state.metrics.observe_call(
        name,
        &full_name,
        reply.is_ok(),
        began.elapsed().as_secs_f64(),
    );
    let reply = reply.map_err(|status| {
        if status.code() == tonic::Code::Cancelled && status.message() == "Timeout expired" {
            tracing::warn!(plugin = name, method = full_name, "call cancelled at the plugin's execution limit");
            return ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "plugin_timeout",
                format!("{full_name} of plugin {name:?} ran past its execution limit (resources.execution_ms) and was cancelled"),
            );
        }
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "plugin_error",
            format!("{:?}: {}", status.code(), status.message()),
        )
    })?;
    Ok((full_name, transcode::response_to_json(&reply)))
}

/// Calls the method and answers `{"response": ...}`.
#[utoipa::path(post, path = "/api/v1/plugins/{name}/call/{service}/{method}", tag = "call", security(("bearer" = [])),
    params(("name" = String, Path, description = "The plugin's name"), ("service" = String, Path, description = "package.Service"), ("method" = String, Path, description = "Method")),
    request_body(description = "The request message in proto3 JSON (free-form: the method's input); an empty body is `{}`", content_type = "application/json", content = Value),
    responses((status = 200, description = "The reply in proto3 JSON, under `response`", body = CallReply), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody), (status = 404, description = "No such plugin", body = ErrorBody),
              (status = 502, description = "The plugin answered with a gRPC error", body = ErrorBody), (status = 504, description = "The call ran past the plugin's execution limit and was cancelled", body = ErrorBody)))]
pub async fn call(
    State(state): State<ApiState>,
    Path((name, service, method)): Path<(String, String, String)>,
    body: String,
) -> Result<Json<CallReply>, ApiError> {
    let (full_name, response) = invoke(
        &state.caller(),
        &name,
        &format!("{service}/{method}"),
        &body,
    )
    .await?;
    Ok(Json(CallReply {
        plugin: name,
        method: full_name,
        response,
    }))
}
