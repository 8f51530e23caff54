//! Durable jobs through the daemon: a job running when the daemon is killed is run again (or
//! failed, as its policy says) by the next daemon; daemons sharing a PostgreSQL queue each take
//! jobs from it, never the same one twice, cancel each other's jobs and take over the jobs of a
//! daemon that died.

use std::path::Path;

use serde_json::Value;

use crate::serve::{
    Daemon, DropSchema, example_plugins, job_ended, postgres_available, request, send, serve, token,
};

fn submit(address: &str, token: &str, body: &str) -> u64 {
    let (status, reply) = send(address, "POST", "/api/v1/jobs", Some(token), body);
    assert_eq!(status, 202, "{reply}");
    reply["id"].as_u64().unwrap()
}

fn job(address: &str, token: &str, id: u64) -> Value {
    let (status, job) = request(address, "GET", &format!("/api/v1/jobs/{id}"), Some(token));
    assert_eq!(status, 200, "{job}");
    job
}

/// Polls job `id` until `ready` holds (bounded); returns it.
fn wait_job(address: &str, token: &str, id: u64, ready: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..1200 {
        last = job(address, token, id);
        if ready(&last) {
            return last;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("job {id} never got there: {last}");
}

fn running(job: &Value) -> bool {
    job["state"] == "running"
}

fn cancel(address: &str, token: &str, id: u64, cause: &str) {
    let (status, reply) = send(
        address,
        "POST",
        &format!("/api/v1/jobs/{id}/cancel"),
        Some(token),
        &format!(r#"{{"cause": "{cause}"}}"#),
    );
    assert_eq!(status, 200, "{reply}");
}

fn kill_9(mut daemon: Daemon) {
    daemon.0.kill().unwrap(); // SIGKILL
    daemon.0.wait().unwrap();
}

const LONG: &str = r#"{"task": "sleep", "input": {"ms": 600000}, "retry": {"max_attempts": 3}}"#;

#[test]
fn a_job_running_when_the_daemon_is_killed_is_settled_by_the_next_one() {
    let root = tempfile::tempdir().unwrap();
    example_plugins(root.path());
    let workers = ["--set", "worker_pool.wp_max_workers=2"];
    let (daemon, address, _stdout) = serve(root.path(), &workers);
    let token = token(root.path());
    let retried = submit(&address, &token, LONG);
    let failed = submit(
        &address,
        &token,
        r#"{"task": "sleep", "input": {"ms": 600000}, "on_crash": "fail"}"#,
    );
    let first = wait_job(&address, &token, retried, running);
    wait_job(&address, &token, failed, running);
    kill_9(daemon);

    let (_daemon, address, _stdout) = serve(root.path(), &workers);
    let job = wait_job(&address, &token, retried, |j| {
        running(j) && j["attempts"] == 2
    });
    assert_ne!(
        job["worker"], first["worker"],
        "run by the new daemon: {job}"
    );
    assert_eq!(job["submitted_ms"], first["submitted_ms"]);
    let job = job_ended(&address, Some(&token), failed);
    assert_eq!(
        (job["state"].as_str(), job["error"]["code"].as_str()),
        (Some("failed"), Some("lost")),
        "{job}"
    );
    cancel(&address, &token, retried, "done checking");
    assert_eq!(
        job_ended(&address, Some(&token), retried)["state"],
        "cancelled"
    );
    let (_, stats) = request(&address, "GET", "/api/v1/jobs/stats", Some(&token));
    assert_eq!(stats["pool"]["recovered"], 2, "{stats}");
}

/// A daemon on the shared queue `schema`, with one worker and a short lease (long enough that a
/// loaded machine does not delay a renewal past it, which would hand a running job over).
fn shared_daemon(root: &Path, schema: &str) -> (Daemon, String, String) {
    example_plugins(root);
    let url = format!("store.url={}", crate::support::database_url());
    let schema = format!("store.schema={schema}");
    let (daemon, address, _stdout) = serve(
        root,
        &[
            "--set",
            &url,
            "--set",
            &schema,
            "--set",
            "worker_pool.wp_max_workers=1",
            "--set",
            "worker_pool.wp_job_lease_ms=3000",
            "--set",
            "worker_pool.wp_poll_ms=20",
        ],
    );
    let token = token(root);
    (daemon, address, token)
}

#[test]
fn daemons_sharing_a_postgres_queue_run_each_job_once_and_take_over_from_a_dead_one() {
    if !postgres_available("daemons_sharing_a_postgres_queue_run_each_job_once") {
        return;
    }
    let schema = format!(
        "plugsconc_jobs_{}_{}",
        std::process::id(),
        fastrand::u32(..)
    );
    let _cleanup = DropSchema(schema.clone());
    let (root_a, root_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut daemons = vec![
        shared_daemon(root_a.path(), &schema),
        shared_daemon(root_b.path(), &schema),
    ];

    // One daemon's only worker takes the long job; the other is left free.
    let long = submit(&daemons[0].1, &daemons[0].2, LONG);
    let busy_name = wait_job(&daemons[0].1, &daemons[0].2, long, running)["worker"].clone();
    let names: Vec<Value> = daemons
        .iter()
        .map(|(_, address, token)| {
            let (_, health) = request(address, "GET", "/api/v1/jobs/stats", Some(token));
            health["name"].clone()
        })
        .collect();
    let busy = names.iter().position(|n| *n == busy_name).unwrap();
    let free = 1 - busy;

    // Jobs submitted to both daemons: all run, each once, by the free daemon (the busy one's
    // worker is taken), whichever daemon they were submitted to.
    let mut ids = Vec::new();
    for n in 0..40 {
        let (_, address, token) = &daemons[n % 2];
        ids.push((
            n % 2,
            submit(address, token, r#"{"task": "noop", "input": {"n": 1}}"#),
        ));
    }
    for (at, id) in &ids {
        let (_, address, token) = &daemons[*at];
        let job = job_ended(address, Some(token), *id);
        assert_eq!(job["state"], "succeeded", "{job}");
        assert_eq!(job["attempts"], 1, "{job}");
        assert_eq!(job["worker"], names[free], "{job}");
    }
    let succeeded: Vec<u64> = daemons
        .iter()
        .map(|(_, address, token)| {
            let (_, stats) = request(address, "GET", "/api/v1/jobs/stats", Some(token));
            stats["pool"]["succeeded"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(succeeded[busy] + succeeded[free], 40, "no job ran twice");

    // Cancelled through the daemon that is not running it: the worker hears it.
    let (_, address, token) = &daemons[free];
    cancel(address, token, long, "cancelled next door");
    let job = job_ended(address, Some(token), long);
    assert_eq!(
        (job["state"].as_str(), job["cancel_cause"].as_str()),
        (Some("cancelled"), Some("cancelled next door"))
    );

    // A daemon killed while running a job: once its lease runs out, the other takes it over.
    let (_, address, token) = &daemons[0];
    let orphan = submit(address, token, LONG);
    let taken = wait_job(address, token, orphan, running)["worker"].clone();
    let dead = names.iter().position(|n| *n == taken).unwrap();
    let (survivor_daemon, survivor, survivor_token) = daemons.remove(1 - dead);
    kill_9(daemons.remove(0).0);
    let job = wait_job(&survivor, &survivor_token, orphan, |j| {
        running(j) && j["attempts"] == 2
    });
    assert_eq!(job["worker"], names[1 - dead], "{job}");
    cancel(&survivor, &survivor_token, orphan, "done checking");
    job_ended(&survivor, Some(&survivor_token), orphan);
    drop(survivor_daemon);
}
