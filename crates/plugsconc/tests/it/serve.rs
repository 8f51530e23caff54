//! `plugsconc serve`: the daemon comes up on the example plugins folder the README assembles,
//! answers the REST API, picks up a plugin added while it runs, and stops on SIGTERM.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::support;

/// A plain HTTP/1.1 GET; returns the status code and the JSON body.
fn get(address: &str, path: &str) -> (u16, serde_json::Value) {
    request(address, "GET", path, None)
}

/// A plain HTTP/1.1 request with an optional bearer token.
fn request(
    address: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, serde_json::Value) {
    send(address, method, path, token, "")
}

/// A plain HTTP/1.1 request with a body.
fn send(
    address: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let mut stream = TcpStream::connect(address).unwrap();
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// The README's way to assemble the example plugins folder.
fn example_plugins(root: &Path) {
    for name in ["cat", "dog", "kv"] {
        support::example_bin(name);
    }
    let status = Command::new(support::workspace().join("examples/plugins.sh"))
        .current_dir(root)
        .arg("--target")
        .arg(support::target_dir().join("debug"))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
}

/// The daemon, killed if a test fails before stopping it.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the daemon and returns it with its address, read from its first stdout line.
fn serve(root: &Path, extra: &[&str]) -> (Daemon, String, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(support::plugsconc_bin())
        .current_dir(root)
        .args(["serve", "--set", "api.listen=127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let address = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    (Daemon(child), address, stdout)
}

#[test]
fn serves_the_catalog_and_stops_on_sigterm() {
    let root = tempfile::tempdir().unwrap();
    example_plugins(root.path());
    std::fs::remove_dir_all(root.path().join("plugins/dog")).unwrap();
    let (mut daemon, address, mut stdout) = serve(root.path(), &[]);

    let (status, body) = get(&address, "/api/v1/plugins");
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cat", "cow", "kv", "python-animal"]);
    let (_, body) = get(&address, "/api/v1/plugins?type=animal&status=discovered");
    assert_eq!(
        body["count"], 2,
        "cat and python-animal; the cow is built in, so ready"
    );
    let (status, body) = get(&address, "/api/v1/plugins?status=sleepy");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_filter"))
    );
    let (status, body) = get(&address, "/plugins/cow");
    assert_eq!((status, body["runtime"].as_str()), (200, Some("builtin")));
    let (status, body) = get(&address, "/api/v1/plugins/nope");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("plugin_not_found"))
    );
    let (status, body) = get(&address, "/api/v1/health");
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));

    // A plugin added while the daemon runs shows up (hot reload watcher).
    example_plugins(root.path());
    let mut seen = false;
    for _ in 0..600 {
        if get(&address, "/api/v1/plugins/dog").0 == 200 {
            seen = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(seen, "the new plugin never appeared");

    // Changes need the token generated on first start (data/api-token, mode 0600).
    let (status, body) = request(&address, "POST", "/api/v1/plugins/cat/disable", None);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("token_required"))
    );
    let (status, body) = request(
        &address,
        "POST",
        "/api/v1/plugins/cat/disable",
        Some("nope"),
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("bad_token"))
    );
    let token = std::fs::read_to_string(root.path().join("data/api-token")).unwrap();
    let token = Some(token.trim());
    let (status, body) = request(&address, "POST", "/api/v1/plugins/cat/disable", token);
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("disabled")),
        "{body}"
    );
    assert!(
        root.path().join("plugins/cat/.disabled").exists(),
        "kept across restarts"
    );
    let (status, body) = request(&address, "POST", "/api/v1/plugins/cat/enable", token);
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("discovered")),
        "{body}"
    );
    assert!(!root.path().join("plugins/cat/.disabled").exists());
    let (status, body) = request(&address, "POST", "/api/v1/plugins/kv/reload", token);
    assert_eq!(
        (status, body["change"].as_str()),
        (200, Some("unchanged")),
        "{body}"
    );
    let (status, body) = request(&address, "POST", "/api/v1/plugins/ghost/reload", token);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("plugin_not_found"))
    );
    let (status, body) = request(&address, "POST", "/api/v1/reload", token);
    assert_eq!(status, 200, "{body}");

    // The generic call endpoint: JSON in, the plugin started on first use, JSON out.
    let speak = "/api/v1/plugins/cat/call/animal.Animal/Speak";
    let (status, body) = send(&address, "POST", speak, None, r#"{"isLoud": true}"#);
    assert_eq!(status, 401, "{body}");
    let (status, body) = send(&address, "POST", speak, token, r#"{"isLoud": true}"#);
    assert_eq!(
        (status, &body["response"]),
        (200, &serde_json::json!({"message": "MEOW!"})),
        "{body}"
    );
    assert_eq!(get(&address, "/api/v1/plugins/cat").1["status"], "ready");
    let (status, body) = send(
        &address,
        "POST",
        "/api/v1/plugins/kv/call/kv.KV/Put",
        token,
        r#"{"key": "a", "value": "aGk="}"#,
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = send(
        &address,
        "POST",
        "/api/v1/plugins/kv/call/kv.KV/Get",
        token,
        r#"{"key": "a"}"#,
    );
    assert_eq!(
        (status, &body["response"]["value"]),
        (200, &serde_json::json!("aGk=")),
        "{body}"
    );
    let (status, body) = send(
        &address,
        "POST",
        "/api/v1/plugins/cat/call/animal.Animal/Purr",
        token,
        "{}",
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("method_not_found")),
        "{body}"
    );
    let (status, body) = send(&address, "POST", speak, token, r#"{"isLoud": "very"}"#);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
    let (status, body) = send(
        &address,
        "POST",
        "/api/v1/plugins/cow/call/animal.Animal/Speak",
        token,
        "{}",
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("builtin_plugin")),
        "{body}"
    );

    let pid = i32::try_from(daemon.0.id()).unwrap();
    // SAFETY: sending SIGTERM to our own child process.
    assert_eq!(unsafe { libc_kill(pid, 15) }, 0);
    let status = daemon.0.wait().unwrap();
    assert!(status.success(), "{status}");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("plugsconc stopped"), "{rest}");
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}
