//! The older plugin manager's routes (`/api/plugins...`, `PUT` to enable and disable, `DELETE`
//! to uninstall and to remove a publisher): the same answers as the routes they alias, the
//! token on every state change, and `PUT` idempotent.

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::super::types::{
    AuditLog, ErrorBody, Plugin, PluginList, PublisherRemoved, Stats, Uninstalled,
};
use super::{ApiState, TOKEN, parse, send, state, state_with};

/// A process plugin `pup` in the plugins folder; it is never started here.
fn pup(plugins: &std::path::Path) {
    let dir = plugins.join("pup");
    std::fs::create_dir_all(&dir).expect("the plugin's folder");
    std::fs::write(
        dir.join("manifest.yaml"),
        "plugin:\n  name: pup\n  type: animal\n  version: 1.0.0\n  entrypoint: ./pup\nabout:\n  description: a small dog\nhandshake:\n  protocol_version: 1\n  magic_cookie_key: K\n  magic_cookie_value: v\n",
    )
    .expect("the manifest");
    std::fs::write(dir.join("pup"), b"#!/bin/sh\n").expect("the entrypoint");
}

async fn audit_actions(state: &ApiState) -> Vec<String> {
    let (status, body) = send(state, "GET", "/api/v1/audit", Some(TOKEN), None).await;
    assert_eq!(status, StatusCode::OK);
    parse::<AuditLog>(&body)
        .entries
        .into_iter()
        .map(|entry| entry.action)
        .collect()
}

async fn status_of(state: &ApiState, uri: &str, method: &str) -> String {
    let (status, body) = send(state, method, uri, Some(TOKEN), None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{method} {uri}: {}",
        String::from_utf8_lossy(&body)
    );
    parse::<Plugin>(&body).status
}

#[tokio::test]
async fn the_older_reads_answer_as_the_routes_they_alias() {
    let (state, _dir) = state_with(pup).await;
    for (older, v1) in [
        ("/api/plugins", "/api/v1/plugins"),
        ("/api/plugins?type=animal", "/api/v1/plugins?type=animal"),
        ("/api/plugins?status=nope", "/api/v1/plugins?status=nope"),
        ("/api/plugins/pup", "/api/v1/plugins/pup"),
        ("/api/plugins/nobody", "/api/v1/plugins/nobody"),
        ("/api/plugins/search?q=small", "/api/v1/plugins?q=small"),
        ("/api/v1/plugins/search?q=small", "/api/v1/plugins?q=small"),
        ("/api/plugins/search?q=cat", "/api/v1/plugins?q=cat"),
    ] {
        let older_reply = send(&state, "GET", older, None, None).await;
        let v1_reply = send(&state, "GET", v1, None, None).await;
        assert_eq!(
            (older_reply.0, String::from_utf8_lossy(&older_reply.1)),
            (v1_reply.0, String::from_utf8_lossy(&v1_reply.1)),
            "{older} against {v1}"
        );
    }
    let (_, body) = send(&state, "GET", "/api/plugins/search?q=small", None, None).await;
    let found: PluginList = parse(&body);
    assert_eq!(found.count, 1);
    assert_eq!(found.plugins[0].name, "pup");
    // The search needs its text; the list is where everything is.
    for uri in [
        "/api/plugins/search",
        "/api/plugins/search?q=",
        "/api/v1/plugins/search?type=animal",
    ] {
        let (status, body) = send(&state, "GET", uri, None, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(
            parse::<ErrorBody>(&body).error.code,
            "query_required",
            "{uri}"
        );
    }
    // `stats` and `search` are routes of their own, not plugins of those names.
    for uri in [
        "/api/plugins/stats",
        "/api/v1/plugins/stats",
        "/api/v1/stats",
    ] {
        let (status, body) = send(&state, "GET", uri, None, None).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        let stats: Stats = parse(&body);
        assert_eq!(stats.plugins, 1, "{uri}");
    }
}

#[tokio::test]
async fn every_older_state_change_needs_the_token() {
    let (state, _dir) = state_with(pup).await;
    for (method, uri) in [
        ("PUT", "/api/plugins/pup/enable"),
        ("PUT", "/api/plugins/pup/disable"),
        ("PUT", "/api/v1/plugins/pup/enable"),
        ("PUT", "/api/v1/plugins/pup/disable"),
        ("POST", "/api/plugins/install"),
        ("POST", "/api/plugins/pup/reload"),
        ("DELETE", "/api/plugins/pup"),
        ("DELETE", "/api/v1/plugins/pup"),
        ("DELETE", "/api/publishers/acme"),
        ("DELETE", "/api/v1/publishers/acme"),
    ] {
        let (status, body) = send(&state, method, uri, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
        assert_eq!(parse::<ErrorBody>(&body).error.code, "token_required");
        let (status, body) = send(&state, method, uri, Some("wrong"), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
        assert_eq!(parse::<ErrorBody>(&body).error.code, "bad_token");
    }
    // Nothing was changed by the refused requests.
    assert!(state.registry.get("pup").is_some());
    assert!(audit_actions(&state).await.is_empty());
}

#[tokio::test]
async fn put_enable_and_disable_are_idempotent() {
    let (state, _dir) = state_with(pup).await;
    let initial = status_of(&state, "/api/v1/plugins/pup", "GET").await;
    assert_ne!(initial, "disabled");
    // Enabling an enabled plugin answers it as it is and records nothing.
    for uri in ["/api/plugins/pup/enable", "/api/v1/plugins/pup/enable"] {
        assert_eq!(status_of(&state, uri, "PUT").await, initial, "{uri}");
    }
    assert!(audit_actions(&state).await.is_empty());
    for uri in [
        "/api/plugins/pup/disable",
        "/api/v1/plugins/pup/disable",
        "/api/plugins/pup/disable",
    ] {
        assert_eq!(status_of(&state, uri, "PUT").await, "disabled", "{uri}");
    }
    assert_eq!(audit_actions(&state).await, ["disable"]);
    assert!(state.plugins_dir.join("pup/.disabled").exists());
    for uri in ["/api/v1/plugins/pup/enable", "/api/plugins/pup/enable"] {
        assert_eq!(status_of(&state, uri, "PUT").await, initial, "{uri}");
    }
    assert_eq!(audit_actions(&state).await, ["enable", "disable"]);
    assert!(!state.plugins_dir.join("pup/.disabled").exists());
    // POST keeps recording every request.
    assert_eq!(
        status_of(&state, "/api/v1/plugins/pup/enable", "POST").await,
        initial
    );
    assert_eq!(audit_actions(&state).await, ["enable", "enable", "disable"]);
    // An unknown plugin is a 404 as with POST.
    let (status, body) = send(
        &state,
        "PUT",
        "/api/plugins/nobody/enable",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(parse::<ErrorBody>(&body).error.code, "plugin_not_found");
}

#[tokio::test]
async fn install_and_reload_answer_as_the_routes_they_alias() {
    let (state, dir) = state_with(pup).await;
    let missing = json!({"path": dir.path().join("nowhere")});
    let older = send(
        &state,
        "POST",
        "/api/plugins/install",
        Some(TOKEN),
        Some(missing.clone()),
    )
    .await;
    let v1 = send(
        &state,
        "POST",
        "/api/v1/plugins/install",
        Some(TOKEN),
        Some(missing),
    )
    .await;
    assert_eq!(older.0, v1.0);
    assert_eq!(older.1, v1.1);
    assert!(older.0.is_client_error(), "{}", older.0);
    let (status, body) = send(&state, "POST", "/api/plugins/pup/reload", Some(TOKEN), None).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert!(parse::<Value>(&body)["change"].is_string());
    let (status, _) = send(
        &state,
        "POST",
        "/api/plugins/nobody/reload",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn delete_uninstalls_a_folder_plugin() {
    for uri in ["/api/plugins/pup", "/api/v1/plugins/pup"] {
        let (state, _dir) = state_with(pup).await;
        let (status, body) = send(&state, "DELETE", uri, Some(TOKEN), None).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{uri}: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(parse::<Uninstalled>(&body).uninstalled, "pup");
        assert!(!state.plugins_dir.join("pup").exists(), "{uri}");
        assert!(state.registry.get("pup").is_none(), "{uri}");
        assert_eq!(audit_actions(&state).await, ["uninstall"], "{uri}");
        let (status, body) = send(&state, "DELETE", uri, Some(TOKEN), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(parse::<ErrorBody>(&body).error.code, "plugin_not_found");
    }
}

#[tokio::test]
async fn delete_removes_a_stored_publisher() {
    let (state, dir) = state().await;
    let (public, _) =
        plugsconc_host::signature::keygen(dir.path(), "acme", None, false).expect("a key pair");
    let key = std::fs::read_to_string(public).expect("the public key");
    for uri in ["/api/publishers/acme", "/api/v1/publishers/acme"] {
        let (status, body) = send(
            &state,
            "POST",
            "/api/v1/publishers",
            Some(TOKEN),
            Some(json!({"name": "acme", "key": key})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let (status, body) = send(&state, "DELETE", uri, Some(TOKEN), None).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{uri}: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(parse::<PublisherRemoved>(&body).removed, "acme");
        assert!(
            state
                .registry
                .trust()
                .publishers
                .iter()
                .all(|p| p.name != "acme"),
            "{uri}"
        );
        let (status, body) = send(&state, "DELETE", uri, Some(TOKEN), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(parse::<ErrorBody>(&body).error.code, "publisher_not_found");
    }
}
