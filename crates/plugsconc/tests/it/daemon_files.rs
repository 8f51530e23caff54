//! What the daemon keeps in its folders across restarts: the `.disabled` markers brought back in
//! line with the store when a kill left them disagreeing.

use crate::plugins_cli::plugin;
use crate::serve::{get, request, serve, token};

#[test]
fn markers_disagreeing_with_the_store_are_corrected_at_start() {
    let root = tempfile::tempdir().unwrap();
    let plugins = root.path().join("plugins");
    plugin(&plugins, "cat", true);
    plugin(&plugins, "dog", true);
    let (mut daemon, address, _stdout) = serve(root.path(), &[]);
    let token = token(root.path());
    for (path, want) in [
        ("/api/v1/plugins/cat/disable", "disabled"),
        ("/api/v1/plugins/dog/enable", "discovered"),
    ] {
        let (status, body) = request(&address, "POST", path, Some(&token));
        assert_eq!(
            (status, body["status"].as_str()),
            (200, Some(want)),
            "{body}"
        );
    }
    daemon.0.kill().unwrap(); // SIGKILL
    daemon.0.wait().unwrap();
    // As if each daemon had been killed between its store write and its marker.
    std::fs::remove_file(plugins.join("cat/.disabled")).unwrap();
    std::fs::write(plugins.join("dog/.disabled"), b"").unwrap();

    let (_daemon, address, _stdout) = serve(root.path(), &[]);
    assert!(
        plugins.join("cat/.disabled").exists(),
        "the store says cat is disabled"
    );
    assert!(
        !plugins.join("dog/.disabled").exists(),
        "the store says dog is enabled"
    );
    assert_eq!(get(&address, "/api/v1/plugins/cat").1["status"], "disabled");
    assert_eq!(
        get(&address, "/api/v1/plugins/dog").1["status"],
        "discovered"
    );
}
