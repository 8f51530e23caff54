//! Both stores against the same expectations; PostgreSQL on the local server when reachable
//! (CI makes it mandatory).

use super::*;

async fn exercise(store: &dyn Store) {
    assert!(store.states().await.unwrap().is_empty());
    store.set_enabled("cat", false, "api@a", "a").await.unwrap();
    store.set_enabled("dog", true, "api@a", "a").await.unwrap();
    store.set_enabled("cat", true, "api@b", "b").await.unwrap();
    let states = store.states().await.unwrap();
    assert_eq!(states.get("cat"), Some(&true));
    assert_eq!(states.get("dog"), Some(&true));
    store
        .record_version("cat", "1.0.0", "abc", "watcher@a")
        .await
        .unwrap();
    store
        .record_version("cat", "1.0.0", "abc", "watcher@a")
        .await
        .unwrap();
    let audit = store.audit(10).await.unwrap();
    let actions: Vec<(&str, &str)> = audit
        .iter()
        .map(|e| (e.action.as_str(), e.plugin.as_str()))
        .collect();
    assert_eq!(
        actions.len(),
        4,
        "{actions:?}: a version seen twice is recorded once"
    );
    assert!(actions.contains(&("version", "cat")) && actions.contains(&("disable", "cat")));
    assert_eq!(audit.iter().filter(|e| e.actor == "api@b").count(), 1);
    store
        .set_publisher("acme", Some("KEY1"), "api@a", "a")
        .await
        .unwrap();
    store
        .set_publisher("acme", Some("KEY2"), "api@a", "a")
        .await
        .unwrap();
    store
        .set_publisher("beta", Some("KEY3"), "api@a", "a")
        .await
        .unwrap();
    store
        .set_publisher("beta", None, "api@a", "a")
        .await
        .unwrap();
    assert_eq!(
        store.publishers().await.unwrap(),
        [("acme".to_owned(), "KEY2".to_owned())]
    );
}

#[tokio::test]
async fn sqlite_keeps_states_versions_and_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = open("", "plugsconc", dir.path()).await.unwrap();
    assert_eq!(store.kind(), "sqlite");
    exercise(store.as_ref()).await;
    assert!(store.listen().await.unwrap().is_none());
    drop(store);
    // Reopening (migrations already applied) keeps everything.
    let store = open("", "plugsconc", dir.path()).await.unwrap();
    assert_eq!(store.states().await.unwrap().len(), 2);
}

pub(crate) const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A fresh schema name, so parallel runs do not meet.
pub(crate) fn fresh_schema(tag: &str) -> String {
    format!(
        "plugsconc_t{}_{tag}_{}",
        std::process::id(),
        fastrand::u32(..)
    )
}

#[tokio::test]
async fn postgres_shares_states_and_announces_changes() {
    let schema = fresh_schema("store");
    let first = match open(PG_URL, &schema, std::path::Path::new(".")).await {
        Ok(store) => store,
        Err(err) if std::env::var_os("PLUGSCONC_REQUIRE_INTEROP").is_none() => {
            eprintln!("SKIPPED: PostgreSQL at {PG_URL} is not reachable: {err}");
            return;
        }
        Err(err) => panic!("PostgreSQL is required here: {err}"),
    };
    let second = open(PG_URL, &schema, std::path::Path::new("."))
        .await
        .unwrap();
    let mut heard = second.listen().await.unwrap().expect("postgres listens");
    exercise(first.as_ref()).await;
    assert_eq!(second.states().await.unwrap().get("cat"), Some(&true));
    let mut changes = Vec::new();
    while changes.len() < 3 {
        match tokio::time::timeout(std::time::Duration::from_secs(30), heard.recv()).await {
            Ok(Some(Heard::Change(notice))) => changes.push(notice),
            Ok(Some(Heard::Resync)) => {}
            other => panic!("no notification: {other:?}"),
        }
    }
    assert_eq!(
        changes[0],
        Notice {
            origin: "a".into(),
            plugin: "cat".into(),
            enabled: false,
            publishers: false,
        }
    );
    assert_eq!(changes[2].origin, "b");
    drop((first, second));
    use sqlx::Executor as _;
    if let Ok(pool) = sqlx::PgPool::connect(PG_URL).await {
        let _ = pool
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
            )))
            .await;
    }
}
