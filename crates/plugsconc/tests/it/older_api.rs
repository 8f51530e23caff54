//! The older plugin manager's REST routes through the real daemon: `PUT .../disable` then
//! `GET /api/plugins/{id}` shows the plugin disabled, and `DELETE /api/plugins/{id}` uninstalls
//! a folder plugin.

use crate::serve::{get, pup_folder, request, serve, token};

#[test]
fn the_older_routes_disable_and_uninstall_a_folder_plugin() {
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    let pup = pup_folder(&plugins);
    let (_daemon, address, _stdout) = serve(root.path(), &[]);
    let token = token(root.path());
    let token = Some(token.as_str());

    let (status, body) = get(&address, "/api/plugins/pup");
    assert_eq!(
        (status, body["name"].as_str()),
        (200, Some("pup")),
        "{body}"
    );
    let (status, body) = request(&address, "PUT", "/api/plugins/pup/disable", None);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("token_required"))
    );
    for _ in 0..2 {
        let (status, body) = request(&address, "PUT", "/api/plugins/pup/disable", token);
        assert_eq!(
            (status, body["status"].as_str()),
            (200, Some("disabled")),
            "{body}"
        );
    }
    let (status, body) = get(&address, "/api/plugins/pup");
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("disabled")),
        "{body}"
    );
    let (_, audit) = request(&address, "GET", "/api/v1/audit", token);
    let disables = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["plugin"] == "pup" && e["action"] == "disable")
        .count();
    assert_eq!(disables, 1, "a repeated PUT records nothing: {audit}");

    let (status, body) = request(&address, "DELETE", "/api/plugins/pup", token);
    assert_eq!(
        (status, body["uninstalled"].as_str()),
        (200, Some("pup")),
        "{body}"
    );
    assert!(!pup.exists(), "the plugin's folder is deleted");
    let (status, body) = get(&address, "/api/plugins/pup");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("plugin_not_found"))
    );
}
