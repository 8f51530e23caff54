//! `ApiState`: what the REST API's handlers share — the catalog, the store, the job pool, the
//! token and the caps — built once by the daemon and cloned into every request.

use std::sync::Arc;
use std::time::Instant;

use plugsconc_host::Registry;

use super::{InstallGate, logs};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    /// The catalog.
    pub registry: Registry,
    /// When the daemon started, for uptime.
    pub started: Instant,
    /// The bearer token that state changes require.
    pub token: Arc<str>,
    /// Compiled descriptors of the plugins called through the API.
    pub descriptors: Arc<crate::calls::DescriptorCache>,
    /// The persistent catalog state.
    pub store: Arc<dyn crate::store::Store>,
    /// This daemon's id in the shared catalog (audit actors, notifications).
    pub origin: Arc<str>,
    /// Calls, latencies, plugin states.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Where installs go.
    pub plugins_dir: std::path::PathBuf,
    /// The signature policy of the configuration; publishers kept in the store are added to it.
    pub base_trust: plugsconc_host::signature::Trust,
    /// Whether installs need a matching `.sha256` sidecar.
    pub require_checksum: bool,
    /// Which shared bundle each plugin here came from (daemons sharing a catalog).
    pub applied: crate::sharing::Applied,
    /// Serialises each plugin's state changes with those other daemons announce.
    pub states: crate::states::States,
    /// The persistent log queue's records, when the daemon keeps them.
    pub logs: Option<Arc<logs::LogSource>>,
    /// The job pool.
    pub jobs: crate::jobs::Pool,
    /// The caps of installs and the turns they take.
    pub installs: Arc<InstallGate>,
}
