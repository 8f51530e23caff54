//! `POST /api/v1/plugins/install` and `DELETE /api/v1/plugins/{name}`. An install takes a
//! `.tar.gz` bundle as the request body (`Content-Type: application/gzip`) or a JSON
//! `{"path": "<folder or bundle on the daemon's machine>"}`; the plugin is validated with the
//! daemon's checksum and signature policy in a hidden staging folder, then moved into place and
//! picked up. `?replace=true` upgrades an installed plugin (hot-reloaded without a failed call).
//! Uninstall drains and stops the plugin, then deletes its folder.
//!
//! A bundle is unpacked as it streams in, never held whole in memory, within the `install`
//! caps of the configuration: a `Content-Length` over the upload cap gets 413 before the body
//! is read, a streamed body is cut off at the cap (413), a bundle over the unpacking caps gets
//! 413, and installs beyond `install.max_concurrent` wait briefly for a turn, then get 503.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use plugsconc_host::HostError;
use plugsconc_host::install::{BundleLimit, Installed, Installer, Limits};
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::StreamExt as _;

use super::extract::Params;
use super::manage::host_error;
use super::types::{ErrorBody, InstallFromPath, Installed as InstalledBody, Plugin, Uninstalled};
use super::{ApiError, ApiState};

/// How long an install waits for a turn when `install.max_concurrent` are running.
const TURN_WAIT: Duration = Duration::from_secs(10);

/// The largest JSON `{"path": ...}` body.
const MAX_JSON_BODY: usize = 64 << 10;

/// The caps of installs through the API, and the turns they take.
#[derive(Debug)]
pub struct InstallGate {
    max_upload: u64,
    limits: Limits,
    turns: Arc<Semaphore>,
}

impl InstallGate {
    /// Caps from the configuration's `install` section.
    pub fn new(config: &crate::config::Install) -> Self {
        Self {
            max_upload: config.max_upload_bytes(),
            limits: config.limits(),
            turns: Arc::new(Semaphore::new(
                usize::try_from(config.max_concurrent).unwrap_or(usize::MAX),
            )),
        }
    }

    /// A turn to install, waiting up to [`TURN_WAIT`] for one. Owned, so that it moves into the
    /// blocking install and is held until that ends, even if the client hangs up first.
    async fn turn(&self) -> Result<OwnedSemaphorePermit, Busy> {
        match tokio::time::timeout(TURN_WAIT, self.turns.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Busy),
        }
    }

    fn too_large(&self) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the bundle is larger than {} bytes (install.max_upload_mib)",
                self.max_upload
            ),
        )
    }
}

/// Every install turn is taken: 503 with `Retry-After`.
struct Busy;

impl IntoResponse for Busy {
    fn into_response(self) -> Response {
        let mut response = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "installs_busy",
            "as many installs as install.max_concurrent allows are running; try again shortly",
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        response
    }
}

/// What an install through the API is checked against.
struct Policy {
    root: PathBuf,
    trust: plugsconc_host::Trust,
    checksum: bool,
    replace: bool,
    limits: Limits,
    scanners: plugsconc_host::Scanners,
}

impl Policy {
    fn installer(&self) -> Installer<'_> {
        Installer::new(&self.root, &self.trust)
            .insecure_skip_checksum(!self.checksum)
            .replace(self.replace)
            .limits(self.limits)
            .scanners(&self.scanners)
    }
}

/// The request body as it arrives, cut off with an error past `left` bytes (and `over` set).
struct Capped<R> {
    inner: R,
    left: u64,
    over: Arc<AtomicBool>,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        match self.left.checked_sub(n as u64) {
            Some(left) => {
                self.left = left;
                Ok(n)
            }
            None => {
                self.over.store(true, Ordering::Relaxed);
                Err(std::io::Error::other("the upload is over its cap"))
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct InstallParams {
    #[serde(default)]
    replace: bool,
}

fn install_error(err: HostError) -> ApiError {
    match err {
        HostError::BundleTooLarge { limit, .. } => {
            let key = match limit {
                BundleLimit::UnpackedBytes => "install.max_unpacked_mib",
                BundleLimit::Files => "install.max_files",
                BundleLimit::Ratio => "install.max_ratio",
                _ => "install",
            };
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "bundle_too_large",
                format!("{err} ({key})"),
            )
        }
        err if err.is_refusal() => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "install_refused",
            err.to_string(),
        ),
        err => host_error(err),
    }
}

#[utoipa::path(post, path = "/api/v1/plugins/install", tag = "manage", security(("bearer" = [])),
    params(("replace" = Option<bool>, Query, description = "Upgrade an installed plugin of the same name")),
    request_body(description = "A .tar.gz bundle (application/gzip), or a folder or bundle on the daemon's machine (application/json)", content(("application/gzip"), (InstallFromPath = "application/json"))),
    responses((status = 200, description = "Installed (validated, checksum and signature policy passed)", body = InstalledBody), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
              (status = 413, description = "Over an install cap (upload size, unpacked size, files, compression ratio); nothing changed", body = ErrorBody),
              (status = 422, description = "Refused, with the reason; nothing changed", body = ErrorBody),
              (status = 503, description = "install.max_concurrent installs are running; try again (Retry-After)", body = ErrorBody)))]
pub async fn install(
    State(state): State<ApiState>,
    Params(params): Params<InstallParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<InstalledBody>, Response> {
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let gate = state.installs.clone();
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if !json_body && declared.is_some_and(|len| len > gate.max_upload) {
        return Err(gate.too_large().into_response());
    }
    let turn = gate.turn().await.map_err(IntoResponse::into_response)?;
    let policy = Policy {
        root: state.plugins_dir.clone(),
        trust: state.registry.trust(),
        checksum: state.require_checksum,
        replace: params.replace,
        limits: gate.limits,
        // The registry's: a verdict given here is found again at the plugin's first launch.
        scanners: state.registry.scanners().clone(),
    };
    let interrupted = |_| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "interrupted").into_response()
    };
    let (source, installed) = if json_body {
        let body = axum::body::to_bytes(body, MAX_JSON_BODY)
            .await
            .map_err(|err| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("expected {{\"path\": ...}} of at most {MAX_JSON_BODY} bytes: {err}"),
                )
                .into_response()
            })?;
        let request: InstallFromPath = serde_json::from_slice(&body).map_err(|err| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("expected {{\"path\": ...}}: {err}"),
            )
            .into_response()
        })?;
        let from = request.path.clone();
        let installed = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            let installer = policy.installer();
            let result = if from.is_dir() {
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
        .map_err(interrupted)?;
        (request.path, installed)
    } else {
        // Unpacked while it streams in: the body is read only as fast as it is unpacked, and
        // no more of it than the cap.
        let stream = body
            .into_data_stream()
            .map(|chunk| chunk.map_err(std::io::Error::other));
        let bridge = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
        let over = Arc::new(AtomicBool::new(false));
        let capped = Capped {
            inner: bridge,
            left: gate.max_upload,
            over: over.clone(),
        };
        let source = PathBuf::from("request body");
        let from = source.clone();
        let installed = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            policy
                .installer()
                .tar_gz(capped, &from)
                .map_err(install_error)
        })
        .await
        .map_err(interrupted)?;
        if over.load(Ordering::Relaxed) {
            return Err(gate.too_large().into_response());
        }
        (source, installed)
    };
    let installed: Installed = installed.map_err(IntoResponse::into_response)?;
    installed_response(&state, &source, installed)
        .await
        .map_err(IntoResponse::into_response)
}

/// Picks the installed plugin up, records and shares the install, and says what was done.
async fn installed_response(
    state: &ApiState,
    source: &std::path::Path,
    installed: Installed,
) -> Result<Json<InstalledBody>, ApiError> {
    let name = installed.plugin.manifest.name.clone();
    // Held until the store's state is applied: a change announced meanwhile waits, then reads
    // the store.
    let guard = state.states.lock(&name).await;
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
    if state.store.shared()
        && let Err(err) = state.states.converge_locked(&name, &guard).await
    {
        tracing::warn!(plugin = %name, error = %err, "cannot read the plugin's state from the store");
    }
    drop(guard);
    Ok(Json(InstalledBody {
        plugin: state.registry.get(&name).map(|i| Plugin::from(&i)),
        replaced: installed.replaced,
        signature: installed.verdict.to_string(),
        change: format!("{change:?}"),
    }))
}

#[utoipa::path(post, path = "/api/v1/plugins/{name}/uninstall", tag = "manage", params(("name" = String, Path, description = "The plugin's name")), security(("bearer" = [])),
    responses((status = 200, description = "Drained, stopped and removed", body = Uninstalled), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody), (status = 404, description = "No such plugin", body = ErrorBody)))]
pub async fn uninstall(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Uninstalled>, ApiError> {
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
    let _guard = state.states.lock(&name).await;
    crate::sharing::uninstall(&state.registry, &name)
        .await
        .map_err(install_error)?;
    state.applied.set(&name, None);
    // On any store, not only a shared one: the recorded state goes with the plugin, so one
    // installed again later starts enabled rather than in the state this one had.
    if let Err(err) = state
        .store
        .share_uninstall(&name, &format!("api@{}", state.origin), &state.origin)
        .await
    {
        tracing::warn!(plugin = %name, error = %err, "uninstalled here, but its state stays in the store and the other daemons were not told");
    }
    if let Err(err) = state
        .store
        .record_action(&name, "uninstall", "", &format!("api@{}", state.origin))
        .await
    {
        tracing::warn!(plugin = %name, error = %err, "cannot record the uninstall in the audit log");
    }
    Ok(Json(Uninstalled { uninstalled: name }))
}
