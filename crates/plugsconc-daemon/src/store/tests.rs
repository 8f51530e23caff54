//! Both stores against the same expectations; PostgreSQL on the local server when reachable
//! (CI makes it mandatory).

use super::*;
use crate::jobs::queue::{CancelOutcome, JobQueue};
use crate::jobs::{CrashPolicy, JobSpec, JobState, RetryPolicy, now_ms};

fn job(task: &str, on_crash: CrashPolicy) -> JobSpec {
    JobSpec {
        task: task.into(),
        input: serde_json::json!({"n": 1}),
        retry: RetryPolicy::default(),
        timeout_ms: None,
        deadline_ms: Some(5_000),
        on_crash,
    }
}

/// The job queue's contract, as the pool relies on it.
async fn exercise_jobs(queue: std::sync::Arc<dyn JobQueue>) {
    let spec = job("noop", CrashPolicy::Retry);
    let first = queue.insert(&spec, "a", now_ms()).await.unwrap();
    let second = queue
        .insert(&job("sleep", CrashPolicy::Fail), "b", now_ms())
        .await
        .unwrap();
    assert!(second > first);
    assert_eq!(queue.queued().await.unwrap(), 2);
    // Only b's jobs, when asked so.
    let claimed = queue
        .claim("w1", 11, Some("b"), now_ms(), 0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((claimed.info.id, claimed.info.attempts), (second, 1));
    let claimed = queue
        .claim("w2", 22, None, now_ms(), now_ms() + 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.spec, spec, "the spec survives the store");
    assert_eq!(claimed.info.worker.as_deref(), Some("w2"));
    assert!(
        queue
            .claim("w3", 33, None, now_ms(), 0)
            .await
            .unwrap()
            .is_none()
    );
    // w1's lease (0) ran out: its job fails (on_crash: fail); w2's lives on.
    let recovered = queue.recover(now_ms()).await.unwrap();
    assert_eq!((recovered.failed, recovered.requeued), (1, 0));
    let lost = queue.get(second).await.unwrap().unwrap();
    assert_eq!(lost.state, JobState::Failed);
    assert_eq!(lost.error.unwrap().code, "lost");
    let mut info = claimed.info.clone();
    assert!(!queue.save(11, &info).await.unwrap(), "not w1's claim");
    info.state = JobState::Succeeded;
    info.result = Some(serde_json::json!({"ok": true}));
    info.finished_ms = Some(now_ms());
    assert!(queue.save(22, &info).await.unwrap());
    let done = queue.get(first).await.unwrap().unwrap();
    assert_eq!(done.result, info.result);
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(
        queue.cancel(first, "late", now_ms()).await.unwrap(),
        CancelOutcome::Ended(JobState::Succeeded)
    );
    // Cancelling: queued at once, running through the worker's renewal.
    let third = queue.insert(&spec, "a", now_ms()).await.unwrap();
    let fourth = queue.insert(&spec, "a", now_ms()).await.unwrap();
    assert_eq!(
        queue.cancel(third, "not needed", now_ms()).await.unwrap(),
        CancelOutcome::Cancelled
    );
    let running = queue
        .claim("w2", 44, None, now_ms(), now_ms() + 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(running.info.id, fourth);
    assert_eq!(
        queue.cancel(fourth, "operator", now_ms()).await.unwrap(),
        CancelOutcome::Requested
    );
    let renewal = queue
        .renew(&[(fourth, 44), (first, 22)], now_ms() + 60_000)
        .await
        .unwrap();
    assert_eq!(renewal.cancels, [(fourth, "operator".to_owned())]);
    assert_eq!(renewal.lost, [first], "the finished job is no longer held");
    // Given up (shutdown past its grace): settled at once, the asked cancellation wins.
    queue.release(fourth, 44).await.unwrap();
    assert_eq!(
        queue
            .renew(&[(fourth, 44)], now_ms() + 60_000)
            .await
            .unwrap()
            .lost,
        [fourth],
        "a released claim is not renewed"
    );
    assert_eq!(queue.recover(now_ms()).await.unwrap().cancelled, 1);
    assert_eq!(
        queue
            .get(fourth)
            .await
            .unwrap()
            .unwrap()
            .cancel_cause
            .as_deref(),
        Some("operator")
    );
    let states: Vec<JobState> = queue
        .list(None, 10)
        .await
        .unwrap()
        .iter()
        .map(|j| j.state)
        .collect();
    assert_eq!(
        states,
        [
            JobState::Cancelled,
            JobState::Cancelled,
            JobState::Failed,
            JobState::Succeeded
        ],
        "newest first"
    );
    assert_eq!(
        queue.list(Some(JobState::Failed), 10).await.unwrap().len(),
        1
    );
    assert_eq!(queue.cancel_queued("a", "x", now_ms()).await.unwrap(), 0);
    assert_eq!(queue.get(999).await.unwrap(), None);

    // The crash rule through the SQL: a retried job with attempts left is queued again, then
    // lost once they are spent.
    let mut twice = job("noop", CrashPolicy::Retry);
    twice.retry.max_attempts = 2;
    let fifth = queue.insert(&twice, "a", now_ms()).await.unwrap();
    for (attempt, want) in [(1, JobState::Queued), (2, JobState::Failed)] {
        let claimed = queue.claim("w4", 55, None, now_ms(), 0).await.unwrap();
        let claimed = claimed.expect("the job is queued");
        assert_eq!((claimed.info.id, claimed.info.attempts), (fifth, attempt));
        let recovered = queue.recover(now_ms()).await.unwrap();
        assert_eq!(recovered.total(), 1);
        assert_eq!(queue.get(fifth).await.unwrap().unwrap().state, want);
    }
}

/// Claimers racing over one queue: every job is handed out exactly once.
async fn race_claims(queue: std::sync::Arc<dyn JobQueue>, claimers: usize, jobs: usize) {
    let spec = job("noop", CrashPolicy::Retry);
    for _ in 0..jobs {
        queue.insert(&spec, "a", now_ms()).await.unwrap();
    }
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..claimers {
        let queue = queue.clone();
        tasks.spawn(async move {
            let worker = format!("w{n}");
            let mut got = Vec::new();
            while let Some(job) = queue
                .claim(
                    &worker,
                    fastrand::i64(1..),
                    None,
                    now_ms(),
                    now_ms() + 60_000,
                )
                .await
                .unwrap()
            {
                got.push(job.info.id);
            }
            got
        });
    }
    let mut all: Vec<u64> = tasks.join_all().await.into_iter().flatten().collect();
    let handed = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!((handed, all.len()), (jobs, jobs), "each job claimed once");
}

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
    let store = open(&StoreUrl::DataDir, "plugsconc", dir.path())
        .await
        .unwrap();
    assert_eq!(store.kind(), "sqlite");
    exercise(store.as_ref()).await;
    assert!(store.listen().await.unwrap().is_none());
    drop(store);
    // Reopening (migrations already applied) keeps everything.
    let store = open(&StoreUrl::DataDir, "plugsconc", dir.path())
        .await
        .unwrap();
    assert_eq!(store.states().await.unwrap().len(), 2);
    assert!(!store.jobs().shared());
    exercise_jobs(store.jobs()).await;
}

/// A plugin's state goes with its bundle: an uninstall forgets it, a fresh install records it
/// enabled, an upgrade keeps it.
async fn exercise_shared_states(store: &dyn Store) {
    assert_eq!(store.state("pup").await.unwrap(), None);
    store
        .share_install("pup", b"one", "api@a", "a")
        .await
        .unwrap();
    assert_eq!(store.state("pup").await.unwrap(), Some(true));
    store.set_enabled("pup", false, "api@a", "a").await.unwrap();
    store
        .share_install("pup", b"two", "api@b", "b")
        .await
        .unwrap();
    assert_eq!(store.state("pup").await.unwrap(), Some(false), "upgraded");
    store.share_uninstall("pup", "api@a", "a").await.unwrap();
    assert_eq!(store.state("pup").await.unwrap(), None, "uninstalled");
    // A daemon that had not applied the uninstall yet disables it: installed again, it starts
    // enabled all the same.
    store.set_enabled("pup", false, "api@b", "b").await.unwrap();
    store
        .share_install("pup", b"one", "api@a", "a")
        .await
        .unwrap();
    assert_eq!(store.state("pup").await.unwrap(), Some(true), "reinstalled");
    assert!(!store.states().await.unwrap().is_empty());
}

#[tokio::test]
async fn sqlite_forgets_an_uninstalled_plugins_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&StoreUrl::DataDir, "plugsconc", dir.path())
        .await
        .unwrap();
    exercise_shared_states(store.as_ref()).await;
}

#[tokio::test]
async fn postgres_forgets_an_uninstalled_plugins_state() {
    let schema = fresh_schema("reinstall");
    let Some(store) = postgres(&schema).await else {
        return;
    };
    exercise_shared_states(store.as_ref()).await;
    drop(store);
    drop_postgres_schema(&pg_url(), &schema).await;
}

#[tokio::test]
async fn postgres_listens_again_before_asking_for_a_resync() {
    let schema = fresh_schema("relisten");
    let Some(first) = postgres(&schema).await else {
        return;
    };
    let second = open(&pg_store_url(), &schema, std::path::Path::new("."))
        .await
        .unwrap();
    let mut heard = second.listen().await.unwrap().expect("postgres listens");
    let admin = sqlx::PgPool::connect(&pg_url()).await.unwrap();
    let cut: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query LIKE 'LISTEN%{schema}%'"
    )))
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(cut, 1, "one listener connection to cut");
    let wait = std::time::Duration::from_secs(30);
    let resync = tokio::time::timeout(wait, heard.recv()).await;
    assert!(matches!(resync, Ok(Some(Heard::Resync))), "{resync:?}");
    // Listening again already: a change made right after the resync is heard.
    first.set_enabled("cat", false, "api@a", "a").await.unwrap();
    let change = tokio::time::timeout(wait, heard.recv()).await;
    assert!(
        matches!(&change, Ok(Some(Heard::Change(notice))) if notice.plugin == "cat"),
        "{change:?}"
    );
    admin.close().await;
    drop((first, second));
    drop_postgres_schema(&pg_url(), &schema).await;
}

/// Endpoints are recorded per plugin, replaced as a whole, listed in order, and forgotten with
/// the plugin's uninstall.
async fn exercise_endpoints(store: &dyn Store) {
    let route = |method: &str, path: &str| (method.to_owned(), path.to_owned());
    let endpoint = |plugin: &str, method: &str, path: &str| Endpoint {
        plugin: plugin.into(),
        method: method.into(),
        path: path.into(),
    };
    assert!(store.endpoints().await.unwrap().is_empty());
    store
        .set_endpoints("kv", &[route("POST", "/value"), route("GET", "/value")])
        .await
        .unwrap();
    store
        .set_endpoints("cat", &[route("GET", "/speak")])
        .await
        .unwrap();
    assert_eq!(
        store.endpoints().await.unwrap(),
        [
            endpoint("cat", "GET", "/speak"),
            endpoint("kv", "GET", "/value"),
            endpoint("kv", "POST", "/value"),
        ]
    );
    // A new version of the manifest: one route gone, one added, one kept.
    store
        .set_endpoints("kv", &[route("GET", "/value"), route("DELETE", "/value")])
        .await
        .unwrap();
    store
        .set_endpoints("kv", &[route("GET", "/value"), route("DELETE", "/value")])
        .await
        .unwrap();
    assert_eq!(
        store.endpoints().await.unwrap(),
        [
            endpoint("cat", "GET", "/speak"),
            endpoint("kv", "DELETE", "/value"),
            endpoint("kv", "GET", "/value"),
        ]
    );
    store.set_endpoints("cat", &[]).await.unwrap();
    store
        .share_install("kv", b"kv", "api@a", "a")
        .await
        .unwrap();
    store.share_uninstall("kv", "api@a", "a").await.unwrap();
    assert!(store.endpoints().await.unwrap().is_empty());
}

#[tokio::test]
async fn sqlite_records_and_lists_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&StoreUrl::DataDir, "plugsconc", dir.path())
        .await
        .unwrap();
    exercise_endpoints(store.as_ref()).await;
}

#[tokio::test]
async fn postgres_records_and_lists_endpoints() {
    let schema = fresh_schema("endpoints");
    let Some(store) = postgres(&schema).await else {
        return;
    };
    exercise_endpoints(store.as_ref()).await;
    drop(store);
    drop_postgres_schema(&pg_url(), &schema).await;
}

/// Daemons sharing a store record the same plugin's endpoints at the same time when they start
/// together: none of them fails on the other's rows.
#[tokio::test]
async fn daemons_recording_the_same_endpoints_at_once_all_succeed() {
    let schema = fresh_schema("endpoint_race");
    let Some(first) = postgres(&schema).await else {
        return;
    };
    let second = open(&pg_store_url(), &schema, std::path::Path::new("."))
        .await
        .unwrap();
    let stores: [std::sync::Arc<dyn Store>; 2] = [first.into(), second.into()];
    for round in 0..20 {
        let plugin = format!("p{round}");
        let endpoints = [
            ("GET".to_owned(), "/a".to_owned()),
            ("POST".to_owned(), "/b".to_owned()),
        ];
        let write = |store: &std::sync::Arc<dyn Store>| {
            let (store, plugin, endpoints) = (store.clone(), plugin.clone(), endpoints.clone());
            tokio::spawn(async move { store.set_endpoints(&plugin, &endpoints).await })
        };
        let (a, b) = tokio::join!(write(&stores[0]), write(&stores[1]));
        a.unwrap().unwrap();
        b.unwrap().unwrap();
    }
    assert_eq!(stores[0].endpoints().await.unwrap().len(), 40);
    drop(stores);
    drop_postgres_schema(&pg_url(), &schema).await;
}

/// The next thing heard, bounded.
async fn next(heard: &mut tokio::sync::mpsc::Receiver<Heard>) -> Heard {
    match tokio::time::timeout(std::time::Duration::from_secs(30), heard.recv()).await {
        Ok(Some(heard)) => heard,
        other => panic!("nothing heard: {other:?}"),
    }
}

#[tokio::test]
async fn postgres_triggers_announce_changes_made_by_hand_and_not_the_daemons_own() {
    let schema = fresh_schema("triggers");
    let Some(first) = postgres(&schema).await else {
        return;
    };
    let second = open(&pg_store_url(), &schema, std::path::Path::new("."))
        .await
        .unwrap();
    let mut heard = second.listen().await.unwrap().expect("postgres listens");
    // A connection of someone else's, as `psql` would be.
    let by_hand = sqlx::PgPool::connect(&pg_url()).await.unwrap();
    let run = |sql: String| {
        let by_hand = by_hand.clone();
        async move {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&by_hand)
                .await
                .unwrap();
        }
    };
    let row = |table: &str, op: &str, plugin: &str| {
        Heard::Row(RowChange {
            table: table.into(),
            op: op.into(),
            plugin: plugin.into(),
        })
    };

    // The daemon's own changes are announced once, by its notice (a trigger's would come first).
    first.set_enabled("cat", true, "api@a", "a").await.unwrap();
    first
        .set_endpoints("cat", &[("GET".into(), "/speak".into())])
        .await
        .unwrap();
    assert!(
        matches!(next(&mut heard).await, Heard::Change(n) if n.plugin == "cat" && n.origin == "a")
    );
    run(format!(
        "UPDATE \"{schema}\".plugin_state SET enabled = false WHERE name = 'cat'"
    ))
    .await;
    assert_eq!(
        next(&mut heard).await,
        row("plugin_state", "UPDATE", "cat"),
        "the endpoints the daemon wrote were not announced"
    );
    assert_eq!(second.state("cat").await.unwrap(), Some(false));
    // Anything else that is not a notice or a row change is skipped, and the listener goes on.
    for junk in [
        "not json",
        r#"{"table": "plugin_state", "op": "UPDATE", "plugin": null}"#,
        r#"{"something": "else"}"#,
    ] {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(format!("{schema}_catalog"))
            .bind(junk)
            .execute(&by_hand)
            .await
            .unwrap();
    }
    run(format!(
        "INSERT INTO \"{schema}\".plugin_endpoints VALUES ('kv', 'GET', '/value')"
    ))
    .await;
    assert_eq!(
        next(&mut heard).await,
        row("plugin_endpoints", "INSERT", "kv")
    );
    run(format!(
        "UPDATE \"{schema}\".plugin_state SET name = 'dog' WHERE name = 'cat'"
    ))
    .await;
    let renamed = [next(&mut heard).await, next(&mut heard).await];
    assert!(
        renamed.contains(&row("plugin_state", "UPDATE", "dog")),
        "{renamed:?}"
    );
    assert!(
        renamed.contains(&row("plugin_state", "UPDATE", "cat")),
        "{renamed:?}"
    );
    run(format!("DELETE FROM \"{schema}\".plugin_state")).await;
    assert_eq!(next(&mut heard).await, row("plugin_state", "DELETE", "dog"));
    by_hand.close().await;
    drop((first, second));
    drop_postgres_schema(&pg_url(), &schema).await;
}

/// An insert or an update that keeps the name is one notification; only a rename or a delete
/// names the old row too (a second notification naming no plugin would be a warning on every
/// daemon).
#[tokio::test]
async fn postgres_triggers_notify_once_per_row_unless_it_is_renamed() {
    let schema = fresh_schema("trigger_count");
    let Some(store) = postgres(&schema).await else {
        return;
    };
    let mut listener = sqlx::postgres::PgListener::connect(&pg_url())
        .await
        .unwrap();
    let channel = format!("{schema}_catalog");
    listener.listen(&channel).await.unwrap();
    let by_hand = sqlx::PgPool::connect(&pg_url()).await.unwrap();
    for sql in [
        format!("INSERT INTO \"{schema}\".plugin_state VALUES ('cat', false, 0, 'psql')"),
        format!("UPDATE \"{schema}\".plugin_state SET enabled = true"),
        format!("SELECT pg_notify('{channel}', 'end')"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&by_hand)
            .await
            .unwrap();
    }
    let mut payloads = Vec::new();
    loop {
        let notification = listener.recv().await.unwrap();
        if notification.payload() == "end" {
            break;
        }
        payloads.push(serde_json::from_str::<serde_json::Value>(notification.payload()).unwrap());
    }
    assert_eq!(
        payloads,
        [
            serde_json::json!({"table": "plugin_state", "op": "INSERT", "plugin": "cat"}),
            serde_json::json!({"table": "plugin_state", "op": "UPDATE", "plugin": "cat"}),
        ]
    );
    by_hand.close().await;
    drop(store);
    drop_postgres_schema(&pg_url(), &schema).await;
}

#[test]
fn malformed_payloads_are_refused_with_a_reason() {
    use super::postgres::parse_payload;
    let cases = [
        ("", "not JSON"),
        ("{", "not JSON"),
        ("[1, 2]", "not a catalog notice"),
        (r#"{"origin": "a"}"#, "not a catalog notice"),
        (r#"{"table": "plugin_state", "op": "UPDATE"}"#, "no plugin"),
        (
            r#"{"table": "plugin_state", "op": "UPDATE", "plugin": null}"#,
            "no plugin",
        ),
        (
            r#"{"table": null, "op": "UPDATE", "plugin": "cat"}"#,
            "no table",
        ),
        (
            r#"{"table": "plugin_state", "op": "", "plugin": "cat"}"#,
            "no op",
        ),
        (
            r#"{"table": "plugin_state", "op": "TRUNCATE", "plugin": "cat"}"#,
            "expected INSERT, UPDATE or DELETE",
        ),
        (
            r#"{"table": 7, "op": "UPDATE", "plugin": "cat"}"#,
            "not a row change",
        ),
    ];
    for (payload, why) in cases {
        let err = parse_payload(payload).expect_err(payload);
        assert!(err.contains(why), "{payload}: {err}");
    }
    assert_eq!(
        parse_payload(r#"{"table": "plugin_state", "op": "DELETE", "plugin": "cat"}"#),
        Ok(Heard::Row(RowChange {
            table: "plugin_state".into(),
            op: "DELETE".into(),
            plugin: "cat".into(),
        }))
    );
    assert!(matches!(
        parse_payload(r#"{"origin": "a", "plugin": "cat", "enabled": true}"#),
        Ok(Heard::Change(n)) if n.plugin == "cat"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_hands_each_job_out_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&StoreUrl::DataDir, "plugsconc", dir.path())
        .await
        .unwrap();
    race_claims(store.jobs(), 4, 200).await;
}

/// The test database: `PLUGSCONC_TEST_DATABASE_URL`, by default the local server's `test`.
pub(crate) fn pg_url() -> String {
    std::env::var("PLUGSCONC_TEST_DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// [`pg_url`] as the store opens it.
fn pg_store_url() -> StoreUrl {
    StoreUrl::Postgres(pg_url())
}

/// A store on the local PostgreSQL in `schema`; `None` (said loudly) when it is not reachable
/// and not required.
async fn postgres(schema: &str) -> Option<Box<dyn Store>> {
    match open(&pg_store_url(), schema, std::path::Path::new(".")).await {
        Ok(store) => Some(store),
        Err(err) if std::env::var_os("PLUGSCONC_REQUIRE_INTEROP").is_none() => {
            eprintln!(
                "SKIPPED: PostgreSQL at {} is not reachable: {err}",
                pg_url()
            );
            None
        }
        Err(err) => panic!("PostgreSQL is required here: {err}"),
    }
}

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
    let Some(first) = postgres(&schema).await else {
        return;
    };
    let second = open(&pg_store_url(), &schema, std::path::Path::new("."))
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
            action: None,
        }
    );
    assert_eq!(changes[2].origin, "b");
    assert!(first.jobs().shared());
    exercise_jobs(first.jobs()).await;
    drop((first, second));
    drop_postgres_schema(&pg_url(), &schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_hands_each_job_out_once_to_daemons_claiming_together() {
    let schema = fresh_schema("claims");
    let Some(first) = postgres(&schema).await else {
        return;
    };
    race_claims(first.jobs(), 8, 400).await;
    drop(first);
    drop_postgres_schema(&pg_url(), &schema).await;
}

/// Drops the PostgreSQL schema `schema` at `url` with everything in it (test and benchmark
/// schemas); a failure is ignored, as there is nothing left to keep.
pub(crate) async fn drop_postgres_schema(url: &str, schema: &str) {
    use sqlx::Executor as _;
    if let Ok(pool) = sqlx::PgPool::connect(url).await {
        let _ = pool
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
            )))
            .await;
        pool.close().await;
    }
}

#[test]
fn released_migration_texts_do_not_change() {
    // The migrator refuses a database whose applied migrations' checksums differ, so the DDL
    // built per backend must stay byte for byte what it was when released.
    let digest = |text: String| bundle_sha256(text.as_bytes());
    let cases = [
        (
            super::jobs::job_table("id INTEGER PRIMARY KEY AUTOINCREMENT"),
            "936b59213ff8b61db8c51759a066bd721fde52b276645c75ccdbb4c7fafd7f40",
        ),
        (
            super::jobs::job_table("id BIGSERIAL PRIMARY KEY"),
            "d9560988bf1599de4ec788908c919bcfc14985d9a3b25fd12ef151719dc3922d",
        ),
        (
            bundle_table("BLOB"),
            "691952057e52d5123aecd8698a73e32a8446e908b3b80ca4185e900f8f6eddf7",
        ),
        (
            bundle_table("BYTEA"),
            "461ce0adb55cf61490ecb4e1452a10b785ae8a7d2e8c1abcc729f91c5b079578",
        ),
        (
            MIGRATION_5.to_owned(),
            "b396be99a865ae99e224a5d8179325c75f6b2e0d59dd91782aac6eabc2fe20e3",
        ),
        (
            PG_TRIGGERS.to_owned(),
            "722c0006fff1736c7b79d0c2319cdfc5f19abb3b8f626233484c6f288c1884f3",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(digest(text.clone()), want, "{text}");
    }
}

/// How many times `needle` occurs in `err` and its chain of causes, as the CLI prints them.
fn occurrences_in_chain(
    err: impl std::error::Error + Send + Sync + 'static,
    needle: &str,
) -> usize {
    format!("{:#}", anyhow::Error::from(err))
        .matches(needle)
        .count()
}

/// A store error carries the driver's error in its message (it is logged with plain `{}`), so
/// the chain does not print it a second time; nor does a job submission failing on it.
#[tokio::test]
async fn store_errors_print_their_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "not a folder").unwrap();
    let Err(err) = SqliteStore::open(&blocker.join("catalog.db")).await else {
        panic!("a store under a file opened");
    };
    // What creating the store's folder (a file here) fails with.
    let os_error = std::fs::create_dir_all(&blocker).unwrap_err().to_string();
    let shown = err.to_string();
    assert!(shown.contains(&os_error), "{shown}");
    assert_eq!(occurrences_in_chain(err, &os_error), 1);

    let err = crate::jobs::pool::SubmitError::from(crate::jobs::queue::QueueError::from(
        StoreError::Query {
            what: "insert a job",
            cause: sqlx::Error::Protocol("the server went away".into()),
        },
    ));
    assert!(err.to_string().contains("the server went away"), "{err}");
    assert_eq!(occurrences_in_chain(err, "the server went away"), 1);
}
