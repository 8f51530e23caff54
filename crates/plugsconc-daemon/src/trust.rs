//! Trusted publishers: the configuration's (`security.trusted_publishers`, the signature policy
//! and the unsigned plugins allowed by name) plus those kept in the store, installed in the
//! catalog. Recording a publisher in the store announces the change to every daemon sharing it;
//! each of them then refreshes its own trust from the store.

use plugsconc_host::signature::{Publisher, SignaturePolicy, Trust};
use plugsconc_host::{HostError, Registry};

use crate::config::Config;
use crate::store::{Store, StoreError};

/// Why the trusted publishers could not be read or changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// A key file the configuration names cannot be read or is not a minisign public key.
    #[error("security.trusted_publishers")]
    KeyFile(#[source] HostError),
    /// The store's publishers cannot be read or written.
    #[error(transparent)]
    Store(StoreError),
}

/// The trust the configuration alone gives: its signature policy, its publishers' keys and the
/// unsigned plugins it allows by name.
///
/// # Errors
///
/// [`TrustError::KeyFile`] naming the key file that cannot be used.
pub fn configured(config: &Config) -> Result<Trust, TrustError> {
    let publishers = config
        .security
        .trusted_publishers
        .iter()
        .map(|path| Publisher::load(path))
        .collect::<Result<Vec<_>, _>>()
        .map_err(TrustError::KeyFile)?;
    Ok(Trust {
        policy: if config.allow_unsigned() {
            SignaturePolicy::AllowUnsigned
        } else {
            SignaturePolicy::RequireSigned
        },
        publishers,
        unsigned_allowed: config.security.unsigned_allowed.iter().cloned().collect(),
    })
}

/// `base` plus the publishers kept in the store (a stored key replaces a configured one of the
/// same name).
fn merged(base: &Trust, stored: Vec<(String, String)>) -> Trust {
    let mut trust = base.clone();
    for (name, key) in stored {
        match Publisher::parse(&name, &key) {
            Ok(publisher) => {
                trust.publishers.retain(|p| p.name != name);
                trust.publishers.push(publisher);
            }
            Err(err) => {
                tracing::warn!(publisher = %name, error = %err, "ignoring a stored publisher key");
            }
        }
    }
    trust
}

/// Installs in the catalog the configuration's trust plus the publishers kept in the store.
///
/// # Errors
///
/// [`TrustError::Store`] when the store cannot be read; the catalog keeps its trust then.
pub async fn refresh(
    registry: &Registry,
    store: &dyn Store,
    base: &Trust,
) -> Result<(), TrustError> {
    let stored = store.publishers().await.map_err(TrustError::Store)?;
    registry.set_trust(merged(base, stored));
    Ok(())
}

/// Keeps (`Some(key)`) or removes (`None`) the stored publisher `name` on behalf of `actor`,
/// announces it to the daemons sharing the store (as `origin`), and refreshes this daemon's
/// trust.
///
/// # Errors
///
/// [`TrustError::Store`] when the store cannot be written or read back.
pub async fn set(
    registry: &Registry,
    store: &dyn Store,
    base: &Trust,
    (name, key): (&str, Option<&str>),
    actor: &str,
    origin: &str,
) -> Result<(), TrustError> {
    store
        .set_publisher(name, key, actor, origin)
        .await
        .map_err(TrustError::Store)?;
    refresh(registry, store, base).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new publisher key's `.pub` text and key id.
    fn key(dir: &std::path::Path, name: &str) -> (String, String) {
        let (public, _) = plugsconc_host::signature::keygen(dir, name, None, false).unwrap();
        let id = Publisher::load(&public).unwrap().key_id;
        (std::fs::read_to_string(public).unwrap(), id)
    }

    #[test]
    fn a_stored_key_replaces_a_configured_one_and_a_bad_one_is_skipped() {
        let keys = tempfile::tempdir().unwrap();
        let (configured, _) = key(&keys.path().join("config"), "acme");
        let (replacing, replacing_id) = key(keys.path(), "acme");
        let (other, other_id) = key(keys.path(), "other");
        let base = Trust {
            publishers: vec![Publisher::parse("acme", &configured).unwrap()],
            ..Trust::default()
        };
        let trust = merged(
            &base,
            vec![
                ("acme".into(), replacing),
                ("other".into(), other),
                ("broken".into(), "not a key".into()),
            ],
        );
        let names: Vec<(&str, &str)> = trust
            .publishers
            .iter()
            .map(|p| (p.name.as_str(), p.key_id.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("acme", replacing_id.as_str()),
                ("other", other_id.as_str())
            ]
        );
        assert_eq!(
            base.publishers.len(),
            1,
            "the configured trust is kept apart"
        );
    }
}
