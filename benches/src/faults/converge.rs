//! Two daemons on one PostgreSQL store.

use std::path::Path;

pub async fn run(
    _plugsconc: &Path,
    _plugins: &Path,
    _changes: usize,
    _cuts: usize,
    _url: &str,
) -> anyhow::Result<serde_json::Value> {
    anyhow::bail!("not written yet")
}
