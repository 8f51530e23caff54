//! Calling a plugin's unary gRPC methods with JSON: the [`Caller`] (catalog, descriptor cache,
//! call metrics), [`invoke`], the lease that starts a stopped plugin, and [`CallError`]. The
//! REST API's call endpoint, the plugins' own HTTP routes and the `call` job task all go through
//! here; `plugsconc call` uses [`transcode`] and [`reflection`] directly.

mod descriptors;
mod error;
pub mod reflection;
pub mod transcode;

use std::sync::Arc;

use plugsconc_host::{AnyGrpc, Handle, HostError, Lease};
use serde_json::Value;

pub use descriptors::DescriptorCache;
pub use error::CallError;

use crate::metrics::Metrics;

/// What calling a plugin needs: the catalog, the descriptor cache and the call metrics (shared
/// by the call endpoint, the plugins' HTTP routes and jobs).
#[derive(Clone)]
pub struct Caller {
    /// The catalog.
    pub registry: plugsconc_host::Registry,
    /// Compiled descriptors.
    pub descriptors: Arc<DescriptorCache>,
    /// Call counters and latencies.
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller").finish_non_exhaustive()
    }
}

/// A lease on the plugin's gRPC channel, starting the plugin if it is not running.
async fn lease<'a>(
    handle: &'a Handle<AnyGrpc>,
    name: &str,
) -> Result<Lease<'a, AnyGrpc>, CallError> {
    handle.get().await.map_err(|err| match err {
        HostError::UnknownPlugin { .. } | HostError::NotAvailable { .. } => {
            CallError::catalog(name, err)
        }
        other => {
            // The detail (paths, exit status, the plugin's last stderr lines) is the operator's:
            // it goes to the log and the plugin's status, not to the caller.
            tracing::warn!(plugin = name, error = %other, "plugin unavailable for a call");
            CallError::Unavailable {
                plugin: name.to_owned(),
            }
        }
    })
}

/// Calls `service/method` of plugin `name` with a JSON body; returns the method's full name
/// and the JSON reply.
///
/// # Errors
///
/// A [`CallError`] saying what the caller can do about it: no such plugin or method, a body
/// that does not fit, a plugin that could not be started, ran out of time or answered with an
/// error status.
pub async fn invoke(
    caller: &Caller,
    name: &str,
    method_path: &str,
    body: &str,
) -> Result<(String, Value), CallError> {
    let info = caller
        .registry
        .get(name)
        .ok_or_else(|| CallError::PluginNotFound {
            plugin: name.to_owned(),
        })?;
    let Some(dir) = info.dir.clone() else {
        return Err(CallError::Builtin {
            plugin: name.to_owned(),
        });
    };
    let pool = descriptors::descriptors(caller, name, &dir, info.manifest_sha256.clone()).await?;
    let transcoding = |err| CallError::transcoding(name, err);
    let method = transcode::find_method(&pool, method_path).map_err(transcoding)?;
    let body = if body.trim().is_empty() { "{}" } else { body };
    let request = transcode::request_from_json(&method, body).map_err(transcoding)?;
    let handle = caller
        .registry
        .grpc(name)
        .map_err(|err| CallError::catalog(name, err))?;
    let lease = lease(&handle, name).await?;
    let channel: tonic::transport::Channel = (*lease).clone();
    let began = std::time::Instant::now();
    let reply = transcode::call_unary(channel, &method, request).await;
    let full_name = format!("{}/{}", method.parent_service().full_name(), method.name());
    caller.metrics.observe_call(
        name,
        &full_name,
        reply.is_ok(),
        began.elapsed().as_secs_f64(),
    );
    let reply = reply.map_err(|status| {
        // What tonic answers when the channel's timeout (the manifest's execution limit) cuts a call.
        if status.code() == tonic::Code::Cancelled && status.message() == "Timeout expired" {
            tracing::warn!(
                plugin = name,
                method = full_name,
                "call cancelled at the plugin's execution limit"
            );
            return CallError::Timeout {
                plugin: name.to_owned(),
                method: full_name.clone(),
            };
        }
        CallError::PluginStatus {
            plugin: name.to_owned(),
            method: full_name.clone(),
            code: status.code(),
            message: status.message().to_owned(),
        }
    })?;
    Ok((full_name, transcode::response_to_json(&reply)))
}
