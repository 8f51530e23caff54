//! Catalog logic that needs no process: queries, statuses, the dependency graph.

use std::path::Path;

use super::*;
use crate::discovery::tests::write_plugin;

fn registry(root: &Path) -> Registry {
    Registry::from_discovery(crate::discover(root).unwrap(), RegistryOptions::default())
}

fn status(registry: &Registry, name: &str) -> (Status, String) {
    let info = registry.get(name).unwrap();
    (info.status, info.reason.unwrap_or_default())
}

fn deps(list: &[(&str, &str)]) -> String {
    let mut yaml = String::from("dependencies:\n");
    for (name, req) in list {
        yaml.push_str(&format!("  - name: {name}\n    version: \"{req}\"\n"));
    }
    yaml
}

#[test]
fn dependencies_order_the_start_and_problems_stay_per_plugin() {
    let root = tempfile::tempdir().unwrap();
    write_plugin(root.path(), "base", "");
    write_plugin(root.path(), "mid", &deps(&[("base", "^1")]));
    write_plugin(
        root.path(),
        "top",
        &deps(&[("mid", ">=1.0"), ("base", "1")]),
    );
    write_plugin(root.path(), "orphan", &deps(&[("ghost", "*")]));
    write_plugin(root.path(), "picky", &deps(&[("base", "^2")]));
    write_plugin(root.path(), "needs-orphan", &deps(&[("orphan", "*")]));
    write_plugin(root.path(), "ping", &deps(&[("pong", "*")]));
    write_plugin(root.path(), "pong", &deps(&[("ping", "*")]));
    let registry = registry(root.path());

    let order = registry.check_dependencies();
    let position = |n: &str| order.iter().position(|o| o == n).unwrap();
    assert!(position("base") < position("mid") && position("mid") < position("top"));
    for bad in ["orphan", "picky", "needs-orphan", "ping", "pong"] {
        assert!(!order.iter().any(|o| o == bad), "{bad} in {order:?}");
    }

    let (st, why) = status(&registry, "orphan");
    assert_eq!(st, Status::Invalid);
    // The reason says where the dependency is declared: the manifest, line and column.
    let declared = root.path().join("orphan/manifest.yaml");
    assert_eq!(
        why,
        format!(
            "dependency ghost (*) is missing (declared at {}:11:5, dependencies[0])",
            declared.display()
        )
    );
    let (_, why) = status(&registry, "picky");
    assert!(
        why.starts_with("dependency base is version 1.0.0, which does not match ^2 (declared at ")
            && why.ends_with("picky/manifest.yaml:11:5, dependencies[0])"),
        "{why}"
    );
    let (_, why) = status(&registry, "needs-orphan");
    assert!(why.starts_with("dependency orphan is unusable"), "{why}");
    let (_, why) = status(&registry, "ping");
    assert_eq!(why, "dependency cycle through pong");
    assert_eq!(status(&registry, "top").0, Status::Discovered);
}

#[tokio::test]
async fn a_dependency_problem_heals_and_disabling_a_dependency_propagates() {
    let root = tempfile::tempdir().unwrap();
    write_plugin(root.path(), "app", &deps(&[("lib", "^1")]));
    let registry = Registry::open(root.path(), RegistryOptions::default())
        .await
        .unwrap();
    assert_eq!(status(&registry, "app").0, Status::Invalid);

    // The dependency arrives: the plugin recovers.
    let lib = write_plugin(root.path(), "lib", "");
    assert_eq!(
        registry.sync_dir(&lib).await.unwrap(),
        Change::Added("lib".into())
    );
    assert_eq!(
        status(&registry, "app"),
        (Status::Discovered, "dependencies satisfied".into())
    );

    registry.disable("lib").await.unwrap();
    let (st, why) = status(&registry, "app");
    assert_eq!(st, Status::Invalid);
    assert!(
        why.starts_with("dependency lib is disabled (declared at "),
        "{why}"
    );
    registry.enable("lib").unwrap();
    assert_eq!(status(&registry, "app").0, Status::Discovered);
}

#[test]
fn queries_filter_by_type_tag_status_version_and_text() {
    let root = tempfile::tempdir().unwrap();
    write_plugin(
        root.path(),
        "cat",
        "tags: [pet]\nabout:\n  description: Meows a lot\n",
    );
    write_plugin(root.path(), "dog", "tags: [pet, loud]\n");
    write_plugin(root.path(), "broken", "bogus: 1\n");
    let registry = registry(root.path());
    let names = |q: Query| -> Vec<String> {
        registry
            .list(&q)
            .into_iter()
            .filter(|p| p.runtime == Runtime::Process)
            .map(|p| p.name)
            .collect()
    };
    assert_eq!(names(Query::default()), ["broken", "cat", "dog"]);
    assert_eq!(
        names(Query {
            tag: Some("loud".into()),
            ..Query::default()
        }),
        ["dog"]
    );
    assert_eq!(
        names(Query {
            kind: Some("animal".into()),
            ..Query::default()
        }),
        ["cat", "dog"]
    );
    assert_eq!(
        names(Query {
            status: Some(Status::Invalid),
            ..Query::default()
        }),
        ["broken"]
    );
    assert_eq!(
        names(Query {
            text: Some("MEOWS".into()),
            ..Query::default()
        }),
        ["cat"]
    );
    let v2 = semver::VersionReq::parse("^2").unwrap();
    assert!(
        names(Query {
            version: Some(v2),
            ..Query::default()
        })
        .is_empty()
    );
    let broken = registry.get("broken").unwrap();
    assert!(broken.reason.unwrap().contains("unknown field `bogus`"));
    assert!("ready".parse::<Status>().is_ok() && "nope".parse::<Status>().is_err());
}

#[test]
fn a_disabled_marker_keeps_a_plugin_disabled() {
    let root = tempfile::tempdir().unwrap();
    let dir = write_plugin(root.path(), "cat", "");
    std::fs::write(dir.join(crate::DISABLED_MARKER), b"").unwrap();
    let registry = registry(root.path());
    let (st, why) = status(&registry, "cat");
    assert_eq!(st, Status::Disabled);
    assert!(why.contains(".disabled"), "{why}");
}

#[test]
fn backoff_grows_exponentially_with_jitter_and_a_ceiling() {
    let backoff = Backoff {
        initial: std::time::Duration::from_millis(100),
        max: std::time::Duration::from_secs(1),
        ..Backoff::default()
    };
    for attempt in 1..=10u32 {
        let delay = backoff.delay(attempt);
        let full = (100u128 << (attempt - 1)).min(1000);
        let ms = delay.as_millis();
        assert!(
            ms >= full / 2 && ms <= full,
            "attempt {attempt}: {ms} ms, full {full}"
        );
    }
}

#[tokio::test]
async fn an_unreadable_manifest_keeps_the_catalog_entry_until_it_can_be_read() {
    use crate::manifest::MANIFEST_FILE;
    use crate::manifest::tests::{fail_reads, stop_failing_reads};
    let root = tempfile::tempdir().unwrap();
    let cat = write_plugin(root.path(), "cat", "");
    let registry = Registry::open(root.path(), RegistryOptions::default())
        .await
        .unwrap();
    let before = registry.get("cat").unwrap();

    // The manifest changed, but cannot be read now: the entry stays as it was, not invalid.
    write_plugin(root.path(), "cat", "tags: [new]\n");
    fail_reads(&cat.join(MANIFEST_FILE), libc::EMFILE, usize::MAX);
    let change = registry.sync_dir(&cat).await.unwrap();
    let Change::Deferred { name, reason } = change else {
        panic!("{change:?}");
    };
    assert_eq!(name, "cat");
    assert!(reason.contains("cannot read"), "{reason}");
    let kept = registry.get("cat").unwrap();
    assert_eq!(
        (kept.status, &kept.manifest_sha256, &kept.tags),
        (before.status, &before.manifest_sha256, &before.tags)
    );

    // A new plugin that cannot be read stays out of the catalog.
    let dog = write_plugin(root.path(), "dog", "");
    fail_reads(&dog.join(MANIFEST_FILE), libc::EIO, usize::MAX);
    assert!(matches!(
        registry.sync_dir(&dog).await.unwrap(),
        Change::Deferred { .. }
    ));
    assert!(registry.get("dog").is_none());

    // The next rescan reads both.
    stop_failing_reads(&cat.join(MANIFEST_FILE));
    stop_failing_reads(&dog.join(MANIFEST_FILE));
    let changes = registry.sync_all().await.unwrap();
    assert!(
        changes.contains(&Change::Updated("cat".into())),
        "{changes:?}"
    );
    assert!(
        changes.contains(&Change::Added("dog".into())),
        "{changes:?}"
    );
    assert_eq!(registry.get("cat").unwrap().tags, vec!["new".to_owned()]);
    assert_eq!(registry.get("dog").unwrap().status, Status::Discovered);
}
