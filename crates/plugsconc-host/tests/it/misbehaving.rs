//! Every failure path: a clear error, in bounded time, and no process left behind.

use std::time::Duration;

use example_contracts::kv::EchoRequest;
use example_contracts::kv::kv_client::KvClient;
use plugsconc_host::HostError;

use crate::support::{assert_gone, builder, pids};

async fn start_fails(mode: &str, timeout: Duration) -> (HostError, Vec<u32>) {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pids");
    let err = builder(mode, &pid_file)
        .start_timeout(timeout)
        .start()
        .await
        .expect_err("start must fail");
    let pids = pids(&pid_file);
    assert_gone(&pids).await;
    (err, pids)
}

#[tokio::test]
async fn exits_before_handshake() {
    let (err, _) = start_fails("exit-before-handshake", Duration::from_secs(20)).await;
    let text = err.to_string();
    assert!(
        matches!(err, HostError::ExitedBeforeHandshake { .. }),
        "{text}"
    );
    assert!(text.contains("exit status 3"), "{text}");
    assert!(text.contains("missing configuration file"), "{text}");
}

#[tokio::test]
async fn malformed_handshake_says_what_was_printed() {
    let (err, _) = start_fails("malformed", Duration::from_secs(20)).await;
    let text = err.to_string();
    assert!(matches!(err, HostError::BadHandshake { .. }), "{text}");
    assert!(text.contains("\"hello world\""), "{text}");
    assert!(text.contains("at least 4"), "{text}");
}

#[tokio::test]
async fn unsupported_version_is_refused() {
    let (err, _) = start_fails("bad-version", Duration::from_secs(20)).await;
    let text = err.to_string();
    assert!(
        matches!(
            err,
            HostError::IncompatibleVersion {
                plugin_version: 99,
                ..
            }
        ),
        "{text}"
    );
    assert!(
        text.contains("Plugin version: 99, Client versions: [1]"),
        "{text}"
    );
}

#[tokio::test]
async fn junk_before_the_handshake_is_reported() {
    let (err, _) = start_fails("junk-first", Duration::from_secs(20)).await;
    let text = err.to_string();
    assert!(text.contains("\"debug: starting up\""), "{text}");
}

/// Starts `long-line` printing `bytes` bytes, with or without a newline.
async fn long_line_fails(bytes: usize, newline: bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pids");
    let err = builder("long-line", &pid_file)
        .env("MISBEHAVE_LINE_BYTES", bytes.to_string())
        .env("MISBEHAVE_NEWLINE", if newline { "1" } else { "0" })
        .start()
        .await
        .expect_err("start must fail");
    assert_gone(&pids(&pid_file)).await;
    assert!(matches!(err, HostError::BadHandshake { .. }), "{err}");
    let text = err.to_string();
    // A KiB of the line, a KiB of the stderr line, and the words around them.
    assert!(text.len() < 4096, "{} bytes: {text}", text.len());
    assert!(
        text.contains("… (cut, 5000 bytes in all)"),
        "the stderr line is cut too: {text}"
    );
    text
}

#[tokio::test]
async fn a_huge_line_without_newline_is_read_and_quoted_bounded() {
    let text = long_line_fails(10 << 20, false).await;
    assert!(
        text.contains("… (cut, more than 65536 bytes with no end of line)"),
        "{text}"
    );
}

#[tokio::test]
async fn a_huge_line_with_a_newline_is_read_and_quoted_bounded() {
    let text = long_line_fails(10 << 20, true).await;
    assert!(
        text.contains("… (cut, more than 65536 bytes with no end of line)"),
        "{text}"
    );
}

#[tokio::test]
async fn a_long_line_is_quoted_cut_with_its_length() {
    let text = long_line_fails(50_000, true).await;
    assert!(text.contains("… (cut, 50000 bytes in all)"), "{text}");
}

#[tokio::test]
async fn closing_stdout_is_not_reported_as_an_exit() {
    let (err, _) = start_fails("close-stdout", Duration::from_secs(20)).await;
    let text = err.to_string();
    assert!(matches!(err, HostError::StdoutClosed { .. }), "{text}");
    assert!(
        text.contains("closed its stdout without printing its handshake line but is still running"),
        "{text}"
    );
    assert!(!text.contains("exited"), "{text}");
}

#[tokio::test]
async fn silent_plugin_times_out() {
    let (err, _) = start_fails("silent", Duration::from_millis(500)).await;
    assert!(matches!(err, HostError::HandshakeTimeout { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("timeout while waiting for the handshake line")
    );
}

#[tokio::test]
async fn crash_mid_call_fails_the_call_and_is_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pids");
    let client = builder("crash-mid-call", &pid_file).start().await.unwrap();
    let err = KvClient::new(client.channel())
        .echo(EchoRequest { data: vec![1] })
        .await
        .expect_err("the plugin aborts");
    assert_ne!(err.code(), tonic::Code::Ok);
    let status = client.exited().await.expect("exit status");
    assert!(!status.success());
    let outcome = client.kill().await.unwrap();
    assert_eq!(outcome.status, Some(status));
    assert_gone(&pids(&pid_file)).await;
}

#[tokio::test]
async fn hanging_shutdown_is_killed_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pids");
    let client = builder("hang-shutdown", &pid_file)
        .kill_grace(Duration::from_millis(300))
        .start()
        .await
        .unwrap();
    let outcome = client.kill().await.unwrap();
    assert!(!outcome.graceful, "{outcome:?}");
    assert_gone(&pids(&pid_file)).await;
}

#[tokio::test]
async fn forked_children_do_not_outlive_the_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pids");
    let client = builder("fork-child", &pid_file).start().await.unwrap();
    let pids = pids(&pid_file);
    assert_eq!(pids.len(), 2, "plugin and child pids: {pids:?}");
    let outcome = client.kill().await.unwrap();
    assert!(outcome.success(), "{outcome:?}");
    assert_gone(&pids).await;
}

#[tokio::test]
async fn dropping_a_client_kills_its_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pids");
    let client = builder("normal", &pid_file).start().await.unwrap();
    drop(client);
    assert_gone(&pids(&pid_file)).await;
}

#[tokio::test]
async fn orphaned_plugin_exits_when_its_host_dies() {
    // A short-lived shell plays the host: it starts the plugin and exits without stopping it.
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pids");
    let out = dir.path().join("stdout");
    // The shell exits as soon as the plugin has printed its handshake line.
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg("\"$PLUGIN\" > \"$OUT\" 2>/dev/null & while [ ! -s \"$OUT\" ]; do sleep 0.01; done")
        .env("PLUGIN", crate::support::misbehave_bin())
        .env("OUT", &out)
        .env("BASIC_PLUGIN", "hello")
        .env("MISBEHAVE_PID_FILE", &pid_file)
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let pids = pids(&pid_file);
    assert_eq!(pids.len(), 1, "the plugin did not start: {pids:?}");
    assert_gone(&pids).await;
}
