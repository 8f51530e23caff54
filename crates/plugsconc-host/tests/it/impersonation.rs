//! A plugin whose handshake line points at another plugin's address is refused: the host checks
//! who serves the address (unix peer credentials, or the TCP listener's owner in `/proc`) before
//! sending anything, so the other plugin gets no call and no `Shutdown`.

use plugsconc_host::{HostError, PluginClient};
use plugsconc_protocol::env::Transport;

use crate::support::{assert_gone, builder, pids};

/// Starts a well-behaved sibling that logs the calls it gets, then an impostor printing the
/// sibling's handshake line; checks the refusal and that the sibling heard nothing.
async fn impostor_is_refused(sibling_builder: plugsconc_host::ClientBuilder, auto_mtls: bool) {
    let dir = tempfile::tempdir().unwrap();
    let calls = dir.path().join("calls");
    let sibling: PluginClient = sibling_builder
        .env("MISBEHAVE_CALL_LOG", &calls)
        .auto_mtls(auto_mtls)
        .start()
        .await
        .expect("the sibling starts");
    let line = sibling.handshake_line().to_string();
    let address = sibling.handshake_line().address.clone();

    let impostor_pids = dir.path().join("impostor");
    let err = builder("impersonate", &impostor_pids)
        .env("MISBEHAVE_LINE", &line)
        .auto_mtls(auto_mtls)
        .start()
        .await
        .expect_err("the impostor must be refused");
    let text = err.to_string();
    assert!(
        matches!(&err, HostError::Impersonation { peer, .. } if peer.found_pid == Some(sibling.pid())),
        "{text}"
    );
    assert!(text.contains("misbehave-impersonate"), "{text}");
    assert!(
        text.contains(&format!("process {}", sibling.pid())),
        "{text}"
    );
    assert!(text.contains(&format!("{address:?}")), "{text}");
    assert_gone(&pids(&impostor_pids)).await;

    // The sibling heard nothing and still serves.
    sibling.health().await.expect("the sibling still serves");
    assert_eq!(std::fs::read_to_string(&calls).unwrap_or_default(), "");
    // The log works: stopping the sibling itself is recorded.
    let outcome = sibling.kill().await.unwrap();
    assert!(outcome.graceful, "{outcome:?}");
    assert_eq!(std::fs::read_to_string(&calls).unwrap(), "Shutdown\n");
}

#[tokio::test]
async fn a_handshake_pointing_at_a_siblings_unix_socket_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    impostor_is_refused(builder("normal", &dir.path().join("pids")), false).await;
}

#[tokio::test]
async fn a_handshake_pointing_at_a_siblings_tcp_port_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    impostor_is_refused(
        builder("normal", &dir.path().join("pids")).transport(Transport::Tcp),
        false,
    )
    .await;
}

#[tokio::test]
async fn a_handshake_copying_a_siblings_address_and_certificate_is_refused_under_automtls() {
    // The host's certificate is shared by its plugins, so TLS alone would let this through.
    let dir = tempfile::tempdir().unwrap();
    impostor_is_refused(builder("normal", &dir.path().join("pids")), true).await;
}
