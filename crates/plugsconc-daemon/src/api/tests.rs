//! The router in process (no TCP, `tower::ServiceExt::oneshot`) over an empty catalog and a
//! SQLite store in a temporary folder, and the route table against the OpenAPI document.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tower::ServiceExt as _;
use utoipa::OpenApi as _;

use super::types::{
    AuditLog, CancelRequest, Cancelling, Change, ChangeKind, ChangedPlugin, ErrorBody, Health, Job,
    JobState, JobSubmission, OnCrash, Plugin, PluginList, RetrySubmission, Submitted,
};
use super::{ApiState, InstallGate, Verb, docs, router, table};

mod older;

const TOKEN: &str = "secret";

/// An API over an empty plugins folder and a fresh SQLite store, with its folder.
async fn state() -> (ApiState, tempfile::TempDir) {
    state_with(|_| {}).await
}

/// An API over a plugins folder `fill` writes into, and a fresh SQLite store, with its folder.
async fn state_with(fill: impl FnOnce(&std::path::Path)) -> (ApiState, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("the plugins folder");
    fill(&plugins);
    let registry = plugsconc_host::Registry::open(&plugins, Default::default())
        .await
        .expect("an empty catalog");
    let store: Arc<dyn crate::store::Store> = Arc::from(
        crate::store::open(&crate::config::StoreUrl::DataDir, "", dir.path())
            .await
            .expect("a SQLite store"),
    );
    let jobs = crate::jobs::Pool::start(
        crate::jobs::pool::PoolOptions {
            workers: 1,
            capacity: 100,
            lease: Duration::from_secs(30),
            poll: Duration::from_millis(50),
            name: "test".to_owned(),
        },
        vec![Arc::new(crate::jobs::tasks::Noop)],
        store.jobs(),
    )
    .await;
    let state = ApiState {
        registry: registry.clone(),
        started: Instant::now(),
        token: TOKEN.into(),
        descriptors: Arc::default(),
        store: store.clone(),
        origin: "test".into(),
        metrics: Arc::default(),
        plugins_dir: plugins,
        base_trust: plugsconc_host::signature::Trust::default(),
        require_checksum: true,
        applied: crate::sharing::Applied::new(dir.path().join("shared-bundles")),
        states: crate::states::States::new(registry, store),
        logs: None,
        jobs,
        installs: Arc::new(InstallGate::new(&crate::config::Install::default())),
    };
    (state, dir)
}

/// Sends one request; answers the status and the body's bytes.
async fn send(
    state: &ApiState,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Vec<u8>) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let body = match body {
        Some(body) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            Body::from(body.to_string())
        }
        None => Body::empty(),
    };
    let response = router(state.clone())
        .oneshot(request.body(body).expect("a request"))
        .await
        .expect("a response");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("the body");
    (status, bytes.to_vec())
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> T {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(bytes)))
}

#[tokio::test]
async fn health_answers_without_a_token() {
    let (state, _dir) = state().await;
    let (status, body) = send(&state, "GET", "/api/v1/health", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let health: Health = parse(&body);
    assert_eq!(health.status, "ok");
}

#[tokio::test]
async fn plugins_are_listed_versioned_and_not() {
    let (state, _dir) = state().await;
    for uri in ["/api/v1/plugins", "/plugins"] {
        let (status, body) = send(&state, "GET", uri, None, None).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        let list: PluginList = parse(&body);
        assert_eq!(list.count, list.plugins.len(), "{uri}");
        assert!(list.plugins.iter().all(|p| p.runtime == "builtin"), "{uri}");
    }
    let (status, body) = send(&state, "GET", "/api/v1/plugins?status=nope", None, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(parse::<ErrorBody>(&body).error.code, "bad_filter");
    let (status, body) = send(&state, "GET", "/api/v1/plugins/nobody", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(parse::<ErrorBody>(&body).error.code, "plugin_not_found");
}

#[tokio::test]
async fn state_changes_need_the_token() {
    let (state, _dir) = state().await;
    let (status, body) = send(&state, "GET", "/api/v1/audit", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(parse::<ErrorBody>(&body).error.code, "token_required");
    let (status, body) = send(&state, "GET", "/api/v1/audit", Some("wrong"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(parse::<ErrorBody>(&body).error.code, "bad_token");
    let (status, body) = send(&state, "GET", "/api/v1/audit", Some(TOKEN), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(parse::<AuditLog>(&body).entries.is_empty());
    // The token is checked before the method: without it, a guarded path says nothing more.
    let (status, _) = send(&state, "DELETE", "/api/v1/jobs", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = send(&state, "DELETE", "/api/v1/jobs", Some(TOKEN), None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(parse::<ErrorBody>(&body).error.code, "method_not_allowed");
}

#[tokio::test]
async fn unknown_routes_are_json_404s() {
    let (state, _dir) = state().await;
    for uri in ["/nowhere", "/api/v1/nowhere", "/api/v2/plugins"] {
        let (status, body) = send(&state, "GET", uri, None, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(parse::<ErrorBody>(&body).error.code, "not_found", "{uri}");
    }
}

#[tokio::test]
async fn a_job_round_trips_through_the_typed_bodies() {
    let (state, _dir) = state().await;
    let submission = JobSubmission {
        task: "noop".to_owned(),
        input: json!({"any": ["thing"]}),
        retry: Some(RetrySubmission {
            max_attempts: Some(1),
            ..RetrySubmission::default()
        }),
        timeout_ms: Some(60_000),
        deadline_ms: None,
        on_crash: Some(OnCrash::Fail),
    };
    let body = serde_json::to_value(&submission).expect("JSON");
    let (status, reply) = send(&state, "POST", "/api/v1/jobs", Some(TOKEN), Some(body)).await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&reply)
    );
    let Submitted { id } = parse(&reply);
    let (status, reply) = send(
        &state,
        "GET",
        &format!("/api/v1/jobs/{id}"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let job: Job = parse(&reply);
    assert_eq!((job.id, job.task.as_str()), (id, "noop"));
    let cancel = serde_json::to_value(CancelRequest {
        cause: Some("not needed".to_owned()),
    })
    .expect("JSON");
    let uri = format!("/api/v1/jobs/{id}/cancel");
    let (status, reply) = send(&state, "POST", &uri, Some(TOKEN), Some(cancel)).await;
    match status {
        StatusCode::OK => {
            let cancelling: Cancelling = parse(&reply);
            assert_eq!(
                (cancelling.id, cancelling.cause.as_str()),
                (id, "not needed")
            );
        }
        // The worker may have run it already.
        StatusCode::CONFLICT => assert_eq!(parse::<ErrorBody>(&reply).error.code, "job_ended"),
        other => panic!("{other}: {}", String::from_utf8_lossy(&reply)),
    }
    let (_, reply) = send(
        &state,
        "GET",
        &format!("/api/v1/jobs/{id}"),
        Some(TOKEN),
        None,
    )
    .await;
    assert!(matches!(
        parse::<Job>(&reply).state,
        JobState::Queued | JobState::Running | JobState::Succeeded | JobState::Cancelled
    ));
    // A field the pool does not know is refused, as the submission type refuses it.
    let (status, reply) = send(
        &state,
        "POST",
        "/api/v1/jobs",
        Some(TOKEN),
        Some(json!({"task": "noop", "priority": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(parse::<ErrorBody>(&reply).error.code, "bad_request");
}

#[test]
fn the_job_submission_is_the_shape_the_pool_reads() {
    let full = JobSubmission {
        task: "call".to_owned(),
        input: json!({"plugin": "p", "method": "a.B/C", "body": {}}),
        retry: Some(RetrySubmission {
            max_attempts: Some(5),
            initial_ms: Some(10),
            max_delay_ms: Some(100),
            factor: Some(3.0),
            jitter: Some(false),
            retry_on: Some(vec!["*".to_owned()]),
        }),
        timeout_ms: Some(1),
        deadline_ms: Some(2),
        on_crash: Some(OnCrash::Fail),
    };
    let spec: crate::jobs::JobSpec =
        serde_json::from_value(serde_json::to_value(&full).expect("JSON")).expect("a JobSpec");
    assert_eq!(
        (spec.retry.max_attempts, spec.retry.factor, spec.on_crash),
        (5, 3.0, crate::jobs::CrashPolicy::Fail)
    );
    // And everything the pool's own type writes, the submission type reads.
    let back: JobSubmission =
        serde_json::from_value(serde_json::to_value(&spec).expect("JSON")).expect("a submission");
    assert_eq!(back, full);
}

#[test]
fn changes_keep_their_wire_shape() {
    use plugsconc_host::registry::Change as C;
    let wire = |change: &C| serde_json::to_value(Change::from(change)).expect("JSON");
    assert_eq!(wire(&C::Unchanged), json!({"change": "unchanged"}));
    assert_eq!(
        wire(&C::Reloaded("p".to_owned())),
        json!({"change": "reloaded", "plugin": "p"})
    );
    assert_eq!(
        wire(&C::Rejected {
            name: "p".to_owned(),
            reason: "why".to_owned()
        }),
        json!({"change": "rejected", "plugin": "p", "reason": "why"})
    );
    let parsed: Change =
        serde_json::from_value(json!({"change": "deferred", "plugin": "p", "reason": "r"}))
            .expect("a change");
    assert_eq!(parsed.change, ChangeKind::Deferred);
    assert_eq!(parsed.plugin, Some(ChangedPlugin::Name("p".to_owned())));
}

#[test]
fn a_plugin_keeps_its_wire_shape() {
    let info = plugsconc_host::PluginInfo {
        name: "p".to_owned(),
        kind: Some("greeter".to_owned()),
        version: Some("1.2.3".parse().expect("a version")),
        tags: vec!["t".to_owned()],
        description: None,
        runtime: plugsconc_host::registry::Runtime::Process,
        status: plugsconc_host::registry::Status::Ready,
        reason: None,
        dir: Some("/somewhere".into()),
        manifest_sha256: Some("ab".to_owned()),
        pid: Some(7),
        restarts: 1,
        reloads: 2,
        http: Vec::new(),
        sandbox: None,
        usage: None,
    };
    assert_eq!(
        serde_json::to_value(Plugin::from(&info)).expect("JSON"),
        json!({
            "name": "p", "type": "greeter", "version": "1.2.3", "runtime": "process",
            "status": "ready", "reason": null, "description": null, "tags": ["t"], "pid": 7,
            "restarts": 1, "reloads": 2, "manifest_sha256": "ab", "sandbox": null, "usage": null,
            "endpoints": [],
        })
    );
}

/// The operation names of the methods a route answers, as OpenAPI spells them.
fn documented_methods(verb: Verb) -> &'static [&'static str] {
    match verb {
        Verb::Get => &["get"],
        Verb::Post => &["post"],
        Verb::Put => &["put"],
        Verb::Delete => &["delete"],
        // What a manifest may declare.
        Verb::Any => &["get", "post", "put", "patch", "delete"],
    }
}

#[test]
fn every_route_is_documented_and_every_document_path_is_a_route() {
    let doc = serde_json::to_value(docs::ApiDoc::openapi()).expect("JSON");
    let paths = doc["paths"].as_object().expect("paths");
    let mut served = std::collections::BTreeSet::new();
    let table = table();
    for route in &table {
        // An alias stands for a route the table serves with its verb.
        if let Some((verb, of)) = route.alias_of {
            assert!(
                table
                    .iter()
                    .any(|r| r.verb == verb && r.full_path() == of && r.alias_of.is_none()),
                "{} is an alias of {of}, which is not a route of its own",
                route.full_path()
            );
        }
        // axum's `{*rest}` is OpenAPI's `{rest}`.
        let path = route.full_path().replace("{*", "{");
        for method in documented_methods(route.verb) {
            let operation = &paths
                .get(&path)
                .unwrap_or_else(|| panic!("{path} is served but not documented"))[method];
            assert!(
                operation.is_object(),
                "{} {path} is served but not documented",
                method.to_uppercase()
            );
            let ok = operation["responses"]
                .as_object()
                .and_then(|r| r.iter().find(|(status, _)| status.starts_with('2')))
                .map(|(_, response)| response)
                .unwrap_or_else(|| panic!("{method} {path} documents no success"));
            // A JSON success names its schema, unless the reply is a plugin's own.
            if let Some(schema) = ok["content"]["application/json"].get("schema")
                && route.path != "/plugins/{name}/{*rest}"
            {
                assert!(
                    schema.get("$ref").is_some(),
                    "{method} {path}: the success body has no named schema: {schema}"
                );
            }
            served.insert((path.clone(), (*method).to_owned()));
        }
    }
    for (path, item) in paths {
        for method in item.as_object().expect("a path item").keys() {
            if ["get", "post", "put", "patch", "delete", "head"].contains(&method.as_str()) {
                assert!(
                    served.contains(&(path.clone(), method.clone())),
                    "{method} {path} is documented but not served"
                );
            }
        }
    }
    assert!(
        doc["components"]["schemas"]["ErrorBody"].is_object(),
        "the error body has a schema"
    );
}
