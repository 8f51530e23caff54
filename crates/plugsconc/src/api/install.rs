//! `POST /api/v1/plugins/install` and `DELETE /api/v1/plugins/{name}`. An install takes a
//! `.tar.gz` bundle as the request body (`Content-Type: application/gzip`) or a JSON
//! `{"path": "<folder or bundle on the daemon's machine>"}`; the plugin is validated with the
//! daemon's checksum and signature policy in a hidden staging folder, then moved into place and
//! picked up. `?replace=true` upgrades an installed plugin (hot-reloaded without a failed call).
//! Uninstall drains and stops the plugin, then deletes its folder.

use std::path::PathBuf;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use plugsconc_host::HostError;
use plugsconc_host::install::{Installed, Installer};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::Params;
use super::manage::host_error;
use super::{ApiError, ApiState, plugin_json};

#[derive(Debug, Deserialize)]
pub struct InstallParams {
    #[serde(default)]
    replace: bool,
}

#[derive(Debug, Deserialize)]
struct FromPath {
    path: PathBuf,
}

fn install_error(err: HostError) -> ApiError {
    if err.is_refusal() {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "install_refused",
            err.to_string(),
        )
    } else {
        host_error(err)
    }
}

#[utoipa::path(post, path = "/api/v1/plugins/install", tag = "manage", security(("bearer" = [])),
    params(("replace" = Option<bool>, Query, description = "Upgrade an installed plugin of the same name")),
    request_body(description = "A .tar.gz bundle (application/gzip), or JSON {\"path\": \"<folder or bundle on the daemon's machine>\"}", content_type = "application/gzip"),
    responses((status = 200, description = "Installed (validated, checksum and signature policy passed)", body = Value), (status = 401, description = "Missing or wrong bearer token", body = Value),
              (status = 422, description = "Refused, with the reason; nothing changed", body = Value)))]
pub async fn install(
    State(state): State<ApiState>,
    Params(params): Params<InstallParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let (root, trust, checksum) = (
        state.plugins_dir.clone(),
        state.registry.trust(),
        state.require_checksum,
    );
    let replace = params.replace;
    let source = if json_body {
        let request: FromPath = serde_json::from_slice(&body).map_err(|err| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("expected {{\"path\": ...}}: {err}"),
            )
        })?;
        request.path
    } else {
        PathBuf::from("request body")
    };
    let from = source.clone();
    let installed: Installed = tokio::task::spawn_blocking(move || {
        let installer = Installer::new(&root, &trust)
            .insecure_skip_checksum(!checksum)
            .replace(replace);
        let result = if !json_body {
            installer.tar_gz(&body[..], &from)
        } else if from.is_dir() {
            installer.dir(&from)
        } else {
            match std::fs::File::open(&from) {
                Ok(file) => installer.tar_gz(file, &from),
                Err(err) => Err(HostError::Install {
                    source_path: from.clone(),
                    reason: err.to_string(),
                }),
            }
        };
        result.map_err(install_error)
    })
    .await
    .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "interrupted"))??;
    let name = installed.plugin.manifest.name.clone();
    let change = state
        .registry
        .sync_dir(&installed.plugin.dir)
        .await
        .map_err(host_error)?;
    let detail = format!(
        "{} from {} ({})",
        installed.plugin.manifest.version,
        source.display(),
        installed.verdict
    );
    let action = if installed.replaced {
        "upgrade"
    } else {
        "install"
    };
    if let Err(err) = state
        .store
        .record_action(&name, action, &detail, &format!("api@{}", state.origin))
        .await
    {
        tracing::warn!(plugin = %name, error = %err, "cannot record the install in the audit log");
    }
    tracing::info!(plugin = %name, %detail, "plugin installed");
    // The daemons sharing the catalog install it too, from its bundle in the store.
    if let Err(err) = crate::sharing::offer(
        state.store.as_ref(),
        &state.applied,
        &name,
        &installed.plugin.dir,
        &format!("api@{}", state.origin),
        &state.origin,
    )
    .await
    {
        tracing::warn!(plugin = %name, error = %format!("{err:#}"), "installed here, but not shared with the other daemons");
    }
    let info = state.registry.get(&name).map(|i| plugin_json(&i));
    Ok(Json(json!({
        "plugin": info,
        "replaced": installed.replaced,
        "signature": installed.verdict.to_string(),
        "change": format!("{change:?}"),
    })))
}

#[utoipa::path(post, path = "/api/v1/plugins/{name}/uninstall", tag = "manage", params(("name" = String, Path, description = "The plugin's name")), security(("bearer" = [])),
    responses((status = 200, description = "Drained, stopped and removed", body = Value), (status = 401, description = "Missing or wrong bearer token", body = Value), (status = 404, description = "No such plugin", body = Value)))]
pub async fn uninstall(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let info = state.registry.get(&name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "plugin_not_found",
            format!("no plugin named {name:?}"),
        )
    })?;
    if info.dir.is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "builtin_plugin",
            format!("{name:?} is built into the daemon; disable it instead"),
        ));
    }
    crate::sharing::uninstall(&state.registry, &name)
        .await
        .map_err(install_error)?;
    state.applied.set(&name, None);
    if state.store.shared()
        && let Err(err) = state
            .store
            .share_uninstall(&name, &format!("api@{}", state.origin), &state.origin)
            .await
    {
        tracing::warn!(plugin = %name, error = %err, "uninstalled here, but not on the other daemons");
    }
    if let Err(err) = state
        .store
        .record_action(&name, "uninstall", "", &format!("api@{}", state.origin))
        .await
    {
        tracing::warn!(plugin = %name, error = %err, "cannot record the uninstall in the audit log");
    }
    Ok(Json(json!({"uninstalled": name})))
}
