//! `plugsconc serve`: the daemon comes up on the example plugins folder the README assembles,
//! answers the REST API, picks up a plugin added while it runs, and stops on SIGTERM.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::support;

/// A plain HTTP/1.1 GET; returns the status code and the JSON body.
pub(crate) fn get(address: &str, path: &str) -> (u16, serde_json::Value) {
    request(address, "GET", path, None)
}

/// A plain HTTP/1.1 request with an optional bearer token.
pub(crate) fn request(
    address: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, serde_json::Value) {
    send(address, method, path, token, "")
}

/// A plain HTTP/1.1 request with a body.
pub(crate) fn send(
    address: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    send_bytes(
        address,
        method,
        path,
        token,
        "application/json",
        body.as_bytes(),
    )
}

/// A plain HTTP/1.1 request with a body of any type.
pub(crate) fn send_bytes(
    address: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: &[u8],
) -> (u16, serde_json::Value) {
    let mut stream = TcpStream::connect(address).unwrap();
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\n{auth}Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(body).unwrap();
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
pub(crate) fn example_plugins(root: &Path) {
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
pub(crate) struct Daemon(pub(crate) Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the daemon and returns it with its address, read from its first stdout line.
pub(crate) fn serve(
    root: &Path,
    extra: &[&str],
) -> (Daemon, String, BufReader<std::process::ChildStdout>) {
    serve_env(root, extra, &[])
}

/// [`serve`] with these environment variables set for the daemon.
pub(crate) fn serve_env(
    root: &Path,
    extra: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
) -> (Daemon, String, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(support::plugsconc_bin())
        .current_dir(root)
        .args(["serve", "--set", "api.listen=127.0.0.1:0"])
        .args(extra)
        .envs(env.iter().copied())
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

/// A plugin folder `pup` (the dog's binary under another name) with its sidecar, in `dir`.
pub(crate) fn pup_folder(dir: &Path) -> std::path::PathBuf {
    let pup = dir.join("pup");
    std::fs::create_dir(&pup).unwrap();
    std::fs::copy(support::example_bin("dog"), pup.join("pup")).unwrap();
    let digest = plugsconc_host::sha256_file(&pup.join("pup"))
        .unwrap()
        .to_hex();
    std::fs::write(pup.join("pup.sha256"), format!("{digest}  pup\n")).unwrap();
    let manifest = std::fs::read_to_string(support::workspace().join("examples/dog/manifest.yaml"))
        .unwrap()
        .replace("name: dog", "name: pup")
        .replace("./dog", "./pup");
    std::fs::write(pup.join("manifest.yaml"), manifest).unwrap();
    pup
}

#[test]
fn built_in_plugins_join_the_catalog_only_when_the_configuration_names_them() {
    let root = tempfile::tempdir().unwrap();
    let (_daemon, address, _stdout) = serve(root.path(), &[]);
    let (status, body) = get(&address, "/api/v1/plugins");
    assert_eq!((status, &body["plugins"]), (200, &serde_json::json!([])));
    assert_eq!(get(&address, "/api/v1/plugins/cow").0, 404);

    let out = Command::new(support::plugsconc_bin())
        .current_dir(root.path())
        .args(["serve", "--set", "api.listen=127.0.0.1:0"])
        .args(["--set", "application.builtins=cow,horse"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("application.builtins")
            && err.contains("\"horse\" is not a linked built-in plugin")
            && err.contains("linked into this binary are cow"),
        "{err}"
    );
}

#[test]
fn serves_the_catalog_and_stops_on_sigterm() {
    let root = tempfile::tempdir().unwrap();
    example_plugins(root.path());
    std::fs::remove_dir_all(root.path().join("plugins/dog")).unwrap();
    let (mut daemon, address, mut stdout) =
        serve(root.path(), &["--set", "application.builtins=cow"]);

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
    assert!(
        wait_status(&address, "/api/v1/plugins/dog", 200),
        "the new plugin never appeared"
    );

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
    // dog ships no protos: its descriptors come from its gRPC reflection.
    let (status, body) = send(
        &address,
        "POST",
        "/api/v1/plugins/dog/call/animal.Animal/Speak",
        token,
        "{}",
    );
    assert_eq!(
        (status, &body["response"]),
        (200, &serde_json::json!({"message": "Woof!"})),
        "{body}"
    );
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

    // The plugins' own HTTP routes, declared in their manifests.
    let (status, body) = get(&address, "/plugins/cat/speak?isLoud=true");
    assert_eq!(
        (status, &body),
        (200, &serde_json::json!({"message": "MEOW!"})),
        "{body}"
    );
    let put = |token| {
        send(
            &address,
            "POST",
            "/plugins/kv/value",
            token,
            r#"{"key": "b", "value": "eW8="}"#,
        )
    };
    let (status, body) = put(None);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("token_required")),
        "a route that may change state needs the token"
    );
    let (status, body) = put(token);
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(&address, "/plugins/kv/value?key=b");
    assert_eq!(
        (status, &body["value"]),
        (200, &serde_json::json!("eW8=")),
        "{body}"
    );
    let (status, body) = get(&address, "/plugins/cat/purr");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("route_not_found"))
    );
    request(&address, "POST", "/api/v1/plugins/cat/disable", token);
    assert_eq!(
        get(&address, "/plugins/cat/speak").0,
        404,
        "a disabled plugin's routes are gone"
    );
    request(&address, "POST", "/api/v1/plugins/cat/enable", token);
    assert_eq!(get(&address, "/plugins/cat/speak").0, 200);

    // Install from a .tar.gz bundle (validated, then moved into place), upgrade from a folder,
    // uninstall.
    let bundle_dir = tempfile::tempdir().unwrap();
    let pup = pup_folder(bundle_dir.path());
    let tar = Command::new("tar")
        .current_dir(bundle_dir.path())
        .args(["czf", "pup.tar.gz", "pup"])
        .status()
        .unwrap();
    assert!(tar.success());
    let bytes = std::fs::read(bundle_dir.path().join("pup.tar.gz")).unwrap();
    let (status, body) = send_bytes(
        &address,
        "POST",
        "/api/v1/plugins/install",
        token,
        "application/gzip",
        &bytes,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["plugin"]["status"], "discovered", "{body}");
    assert!(root.path().join("plugins/pup/pup").exists());
    let (status, body) = send_bytes(
        &address,
        "POST",
        "/api/v1/plugins/install",
        token,
        "application/gzip",
        &bytes,
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("install_refused")),
        "{body}"
    );
    let from_dir = format!(r#"{{"path": "{}"}}"#, pup.display());
    let (status, body) = send(
        &address,
        "POST",
        "/api/v1/plugins/install?replace=true",
        token,
        &from_dir,
    );
    assert_eq!(
        (status, &body["replaced"]),
        (200, &serde_json::json!(true)),
        "{body}"
    );
    let (status, body) = send_bytes(
        &address,
        "POST",
        "/api/v1/plugins/install",
        token,
        "application/gzip",
        b"junk",
    );
    assert_eq!(status, 422, "{body}");
    let (status, body) = request(&address, "POST", "/api/v1/plugins/pup/uninstall", token);
    assert_eq!(status, 200, "{body}");
    assert_eq!(get(&address, "/api/v1/plugins/pup").0, 404);
    assert!(!root.path().join("plugins/pup").exists());
    let (_, audit) = request(&address, "GET", "/api/v1/audit", token);
    let pup_actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["plugin"] == "pup" && e["action"] != "version")
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(pup_actions, ["uninstall", "upgrade", "install"], "{audit}");

    // The OpenAPI description and a Swagger UI served from the binary.
    let (status, spec) = get(&address, "/api-docs/openapi.json");
    assert_eq!(status, 200);
    for path in [
        "/api/v1/plugins",
        "/api/v1/plugins/{name}/call/{service}/{method}",
        "/api/v1/plugins/install",
    ] {
        assert!(
            spec["paths"][path].is_object(),
            "{path} missing from {spec}"
        );
    }
    assert_eq!(
        spec["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let mut stream = TcpStream::connect(&address).unwrap();
    write!(
        stream,
        "GET /swagger-ui/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut page = String::new();
    stream.read_to_string(&mut page).unwrap();
    assert!(
        page.starts_with("HTTP/1.1 200") && page.contains("swagger-ui"),
        "{page}"
    );

    // The CLI finds the daemon through the configuration and its token, and goes through it.
    let cli = |args: &[&str]| {
        Command::new(support::plugsconc_bin())
            .current_dir(root.path())
            .env("PLUGSCONC_API_LISTEN", &address)
            .args(args)
            .output()
            .unwrap()
    };
    let out = cli(&["plugins", "disable", "dog"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("through the daemon"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(get(&address, "/api/v1/plugins/dog").1["status"], "disabled");
    let out = cli(&["plugins", "list", "--json", "--status", "disabled"]);
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["name"], "dog");
    let out = cli(&["plugins", "enable", "dog"]);
    assert!(out.status.success());
    assert_eq!(
        get(&address, "/api/v1/plugins/dog").1["status"],
        "discovered"
    );
    let out = cli(&[
        "plugins",
        "call",
        "cat",
        "animal.Animal/Speak",
        "--data",
        r#"{"isLoud": true}"#,
    ]);
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply, serde_json::json!({"message": "MEOW!"}));
    let out = cli(&["plugins", "reload", "kv"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "unchanged",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Install and uninstall through the daemon: the plugin appears in (and leaves) its catalog.
    let source = tempfile::tempdir().unwrap();
    let pup = pup_folder(source.path());
    let out = cli(&["plugins", "install", pup.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(get(&address, "/api/v1/plugins/pup").1["name"], "pup");
    assert!(root.path().join("plugins/pup/manifest.yaml").exists());
    let out = cli(&["plugins", "uninstall", "pup"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(get(&address, "/api/v1/plugins/pup").0, 404);
    assert!(!root.path().join("plugins/pup").exists());
    let out = cli(&["plugins", "--local", "list", "--json"]);
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        listed.iter().all(|p| p["pid"].is_null()),
        "--local reads the folder, not the daemon"
    );

    // Stats and Prometheus metrics count the calls made above (the cat: through the call
    // endpoint, its own route and the CLI).
    let (status, stats) = get(&address, "/api/v1/stats");
    assert_eq!(status, 200);
    assert!(stats["calls"].as_u64().unwrap() >= 3, "{stats}");
    assert_eq!(
        stats["by_status"]["ready"].as_u64(),
        Some(3),
        "cat, kv and the cow: {stats}"
    );
    let mut stream = TcpStream::connect(&address).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let cat_calls: u64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                r#"plugsconc_calls_total{plugin="cat",method="animal.Animal/Speak",outcome="ok"} "#,
            )
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no cat call counter in {text}"));
    assert!(cat_calls >= 3, "{text}");
    assert!(
        text.contains(r#"plugsconc_plugin_status{plugin="kv",status="ready"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"plugsconc_plugin_rss_bytes{plugin="cat"}"#),
        "{text}"
    );

    let pid = i32::try_from(daemon.0.id()).unwrap();
    // SAFETY: sending SIGTERM to our own child process.
    assert_eq!(unsafe { libc_kill(pid, 15) }, 0);
    let status = daemon.0.wait().unwrap();
    assert!(status.success(), "{status}");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("plugsconc stopped"), "{rest}");

    // The log file holds JSON lines, plugin events with their plugin's name among them.
    let log = std::fs::read_to_string(root.path().join("logs/plugsconc.log")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "plugsconc serving"),
        "{log}"
    );
    assert!(
        lines.iter().any(|l| l["fields"]["plugin"] == "cat"),
        "{log}"
    );
    let out = Command::new(support::plugsconc_bin())
        .current_dir(root.path())
        .args(["logs", "cat", "--level", "info"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && !text.is_empty(), "{text}");
    assert!(text.lines().all(|l| l.contains("plugin=cat")), "{text}");
}

unsafe extern "C" {
    #[link_name = "kill"]
    pub(crate) fn libc_kill(pid: i32, signal: i32) -> i32;
}

/// Drops a test's schema when the test ends (best effort: the database is shared).
pub(crate) struct DropSchema(pub(crate) String);

impl Drop for DropSchema {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .arg(support::database_url())
            .arg("-qc")
            .arg(format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.0))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A fresh PostgreSQL schema, dropped with the guard, and the `--set` flags of a daemon whose
/// store it is.
pub(crate) fn shared_store() -> (DropSchema, Vec<String>) {
    let schema = format!("plugsconc_it_{}_{}", std::process::id(), fastrand::u32(..));
    let flags = vec![
        "--set".to_owned(),
        format!("store.url={}", support::database_url()),
        "--set".to_owned(),
        format!("store.schema={schema}"),
    ];
    (DropSchema(schema), flags)
}

pub(crate) fn postgres_available(test: &str) -> bool {
    let address = support::database_address();
    if TcpStream::connect(&address).is_ok() {
        return true;
    }
    assert!(
        std::env::var_os("PLUGSCONC_REQUIRE_INTEROP").is_none(),
        "PostgreSQL on {address} (PLUGSCONC_TEST_DATABASE_URL) is required here"
    );
    support::skip(
        test,
        &format!("PostgreSQL is not running on {address} (PLUGSCONC_TEST_DATABASE_URL)"),
    );
    false
}

/// Polls `path` on `address` until it answers `status`; `false` if it never does (bounded).
pub(crate) fn wait_status(address: &str, path: &str, status: u16) -> bool {
    for _ in 0..600 {
        if get(address, path).0 == status {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

/// Polls `path` on `address` until `field` equals `want` (bounded).
fn wait_field(address: &str, path: &str, field: &str, want: &str) {
    for _ in 0..600 {
        if get(address, path).1[field] == want {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{path} on {address}: {field} never became {want:?}");
}

pub(crate) fn token(root: &Path) -> String {
    std::fs::read_to_string(root.join("data/api-token"))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn daemons_sharing_a_postgres_catalog_follow_each_other() {
    if !postgres_available("daemons_sharing_a_postgres_catalog_follow_each_other") {
        return;
    }
    let (cleanup, store) = shared_store();
    let schema = cleanup.0.clone();
    let store: Vec<&str> = store.iter().map(String::as_str).collect();
    let (root_a, root_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    example_plugins(root_a.path());
    example_plugins(root_b.path());
    let (_a, a, _) = serve(root_a.path(), &store);
    let (_b, b, _) = serve(root_b.path(), &store);
    let (token_a, token_b) = (token(root_a.path()), token(root_b.path()));

    // A change on one daemon reaches the other through LISTEN/NOTIFY.
    let (status, body) = request(&a, "POST", "/api/v1/plugins/cat/disable", Some(&token_a));
    assert_eq!(status, 200, "{body}");
    wait_field(&b, "/api/v1/plugins/cat", "status", "disabled");
    let (status, _) = request(&b, "POST", "/api/v1/plugins/cat/enable", Some(&token_b));
    assert_eq!(status, 200);
    wait_field(&a, "/api/v1/plugins/cat", "status", "discovered");

    // Both see one audit log, with who did what.
    let (_, audit) = request(&a, "GET", "/api/v1/audit", Some(&token_a));
    let actions: Vec<(String, String)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["plugin"] == "cat" && e["action"] != "version")
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["actor"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(actions.len(), 2, "{audit}");
    assert_eq!(actions[0].0, "enable");
    assert_ne!(actions[0].1, actions[1].1, "two daemons, two actors");

    // B's listener loses its connection; a change made meanwhile still reaches B (resync on
    // reconnect, or the notification after it).
    let terminated = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qAtc"])
        .arg(format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query LIKE 'LISTEN%{schema}%'"
        ))
        .output();
    match terminated {
        Ok(out) if out.status.success() => {
            let killed = String::from_utf8_lossy(&out.stdout);
            assert!(killed.trim() != "0", "no listener connection found to cut");
        }
        _ => support::skip("listener reconnect", "psql is not installed"),
    }
    let (status, _) = request(&a, "POST", "/api/v1/plugins/dog/disable", Some(&token_a));
    assert_eq!(status, 200);
    wait_field(&b, "/api/v1/plugins/dog", "status", "disabled");

    // Trusted publishers kept in the shared store: a plugin signed by an unknown key is refused
    // until one daemon trusts the key; then every daemon sharing the catalog accepts it.
    let keys = tempfile::tempdir().unwrap();
    let signed = tempfile::tempdir().unwrap();
    let pup = pup_folder(signed.path());
    for args in [
        vec![
            "keygen",
            "--name",
            "acme",
            "--out",
            keys.path().to_str().unwrap(),
        ],
        vec![
            "sign",
            pup.to_str().unwrap(),
            "--key",
            keys.path().join("acme.key").to_str().unwrap(),
        ],
    ] {
        let out = Command::new(support::plugsconc_bin())
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let install = format!(r#"{{"path": "{}"}}"#, pup.display());
    let (status, body) = send(
        &a,
        "POST",
        "/api/v1/plugins/install",
        Some(&token_a),
        &install,
    );
    assert_eq!(status, 422, "untrusted key: {body}");
    let key = std::fs::read_to_string(keys.path().join("acme.pub")).unwrap();
    let add = serde_json::json!({"name": "acme", "key": key}).to_string();
    let (status, body) = send(&a, "POST", "/api/v1/publishers", Some(&token_a), &add);
    assert_eq!(status, 200, "{body}");
    let mut trusted_on_b = false;
    for _ in 0..600 {
        let (_, list) = request(&b, "GET", "/api/v1/publishers", Some(&token_b));
        if list["publishers"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["name"] == "acme"))
        {
            trusted_on_b = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        trusted_on_b,
        "daemon B never trusted the publisher added through A"
    );
    let (status, body) = send(
        &b,
        "POST",
        "/api/v1/plugins/install",
        Some(&token_b),
        &install,
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        body["signature"]
            .as_str()
            .unwrap()
            .contains("signed by acme"),
        "{body}"
    );
    // Installed through B: A installs it too, from the bundle B kept in the store (and checks
    // it against its own trust); uninstalled through A, it leaves B as well.
    wait_field(&a, "/api/v1/plugins/pup", "name", "pup");
    assert!(root_a.path().join("plugins/pup/manifest.yaml").exists());
    let (status, body) = request(&a, "POST", "/api/v1/plugins/pup/uninstall", Some(&token_a));
    assert_eq!(status, 200, "{body}");
    assert!(
        wait_status(&b, "/api/v1/plugins/pup", 404),
        "B still has the plugin A uninstalled"
    );
    assert!(!root_b.path().join("plugins/pup").exists());
    // Installed again through B while A is down, then uninstalled: A, restarted, removes the copy
    // it had installed from the store (it remembers which bundle that was).
    let (status, body) = send(
        &b,
        "POST",
        "/api/v1/plugins/install",
        Some(&token_b),
        &install,
    );
    assert_eq!(status, 200, "{body}");
    wait_field(&a, "/api/v1/plugins/pup", "name", "pup");
    drop(_a);
    let (status, body) = request(&b, "POST", "/api/v1/plugins/pup/uninstall", Some(&token_b));
    assert_eq!(status, 200, "{body}");
    let (_a, a, _) = serve(root_a.path(), &store);
    assert_eq!(get(&a, "/api/v1/plugins/pup").0, 404, "removed at start");
    assert!(!root_a.path().join("plugins/pup").exists());
    let (status, _) = request(&a, "POST", "/api/v1/publishers/acme/remove", Some(&token_a));
    assert_eq!(status, 200);

    // A third daemon on a fresh folder (no .disabled markers) starts from the shared state.
    let root_c = tempfile::tempdir().unwrap();
    example_plugins(root_c.path());
    let (_c, c, _) = serve(root_c.path(), &store);
    assert_eq!(get(&c, "/api/v1/plugins/dog").1["status"], "disabled");
    assert_eq!(get(&c, "/api/v1/plugins/cat").1["status"], "discovered");
    assert_eq!(
        get(&c, "/api/v1/plugins/pup").0,
        404,
        "uninstalled before C came"
    );
}

/// The records of `plugsconc logs kv --json` (read from the persistent queue).
fn kv_records(root: &Path) -> String {
    let out = Command::new(support::plugsconc_bin())
        .current_dir(root)
        .args(["logs", "kv", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn acknowledged_log_records_survive_kill_9_and_reach_the_file() {
    let root = tempfile::tempdir().unwrap();
    example_plugins(root.path());
    // Records are acknowledged (committed to the queue) at once, but not written to the file
    // for ten minutes: a kill -9 now leaves them all waiting.
    let (mut daemon, address, _stdout) = serve(
        root.path(),
        &["--set", "logging.log_drain_interval_ms=600000"],
    );
    let token = std::fs::read_to_string(root.path().join("data/api-token")).unwrap();
    let token = Some(token.trim());
    let markers: Vec<String> = (0..20).map(|i| format!("crash-marker-{i}")).collect();
    for marker in &markers {
        let (status, body) = send(
            &address,
            "POST",
            "/api/v1/plugins/kv/call/kv.KV/Put",
            token,
            &format!(r#"{{"key": "{marker}", "value": "aGk="}}"#),
        );
        assert_eq!(status, 200, "{body}");
    }
    // The kv plugin logs each put; wait until the queue has acknowledged all of them (bounded).
    let mut acknowledged = String::new();
    for _ in 0..600 {
        acknowledged = kv_records(root.path());
        if markers.iter().all(|m| acknowledged.contains(m.as_str())) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        markers.iter().all(|m| acknowledged.contains(m.as_str())),
        "{acknowledged}"
    );
    // Also through the API, filtered to the kv plugin.
    let (status, body) = request(&address, "GET", "/api/v1/logs?plugin=kv&limit=1000", token);
    assert_eq!(status, 200, "{body}");
    let records = body["records"].as_array().unwrap();
    assert!(
        records
            .iter()
            .all(|r| r["record"]["fields"]["plugin"] == "kv")
    );
    assert!(records.len() >= markers.len());
    let log = root.path().join("logs/plugsconc.log");
    let before = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        markers.iter().all(|m| !before.contains(m.as_str())),
        "nothing should have been drained yet"
    );

    daemon.0.kill().unwrap(); // SIGKILL
    daemon.0.wait().unwrap();

    // The next daemon writes what the dead one acknowledged, then serves.
    let (mut daemon, _address, mut stdout) = serve(root.path(), &[]);
    let pid = i32::try_from(daemon.0.id()).unwrap();
    // SAFETY: sending SIGTERM to our own child process.
    assert_eq!(unsafe { libc_kill(pid, 15) }, 0);
    assert!(daemon.0.wait().unwrap().success());
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let after = std::fs::read_to_string(&log).unwrap();
    for marker in &markers {
        assert!(after.contains(marker.as_str()), "{marker} lost: {after}");
    }
}

/// Polls job `id` until it has ended (bounded).
pub(crate) fn job_ended(address: &str, token: Option<&str>, id: u64) -> serde_json::Value {
    for _ in 0..600 {
        let (status, job) = request(address, "GET", &format!("/api/v1/jobs/{id}"), token);
        assert_eq!(status, 200, "{job}");
        if ["succeeded", "failed", "cancelled"].contains(&job["state"].as_str().unwrap_or("")) {
            return job;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("job {id} did not end");
}

#[test]
fn jobs_call_plugins_retry_and_cancel_through_the_api() {
    let root = tempfile::tempdir().unwrap();
    example_plugins(root.path());
    let (_daemon, address, _stdout) = serve(root.path(), &[]);
    let token = std::fs::read_to_string(root.path().join("data/api-token")).unwrap();
    let token = Some(token.trim());
    let submit = |body: &str| {
        let (status, reply) = send(&address, "POST", "/api/v1/jobs", token, body);
        assert_eq!(status, 202, "{reply}");
        reply["id"].as_u64().unwrap()
    };
    let (status, _) = send(
        &address,
        "POST",
        "/api/v1/jobs",
        None,
        r#"{"task": "noop"}"#,
    );
    assert_eq!(status, 401);

    // A plugin method as a job: JSON in, JSON out.
    let put = submit(
        r#"{"task": "call", "input": {"plugin": "kv", "method": "kv.KV/Put", "body": {"key": "job", "value": "aGk="}}}"#,
    );
    assert_eq!(job_ended(&address, token, put)["state"], "succeeded");
    let get = submit(
        r#"{"task": "call", "input": {"plugin": "kv", "method": "kv.KV/Get", "body": {"key": "job"}}}"#,
    );
    let job = job_ended(&address, token, get);
    assert_eq!(job["result"]["value"], "aGk=", "{job}");
    assert_eq!(job["attempts"], 1);

    // A plugin that does not exist is not worth retrying: one attempt, the reason kept.
    let missing = submit(
        r#"{"task": "call", "input": {"plugin": "ghost", "method": "kv.KV/Get"}, "retry": {"max_attempts": 5, "initial_ms": 1}}"#,
    );
    let job = job_ended(&address, token, missing);
    assert_eq!(
        (job["state"].as_str(), job["attempts"].as_u64()),
        (Some("failed"), Some(1)),
        "{job}"
    );
    assert_eq!(job["error"]["code"], "plugin_not_found");

    // A long job cancelled with a cause.
    let sleeper = submit(r#"{"task": "sleep", "input": {"ms": 600000}}"#);
    let (status, reply) = send(
        &address,
        "POST",
        &format!("/api/v1/jobs/{sleeper}/cancel"),
        token,
        r#"{"cause": "changed my mind"}"#,
    );
    assert_eq!(status, 200, "{reply}");
    let job = job_ended(&address, token, sleeper);
    assert_eq!(
        (job["state"].as_str(), job["cancel_cause"].as_str()),
        (Some("cancelled"), Some("changed my mind"))
    );

    let (status, reply) = send(
        &address,
        "POST",
        "/api/v1/jobs",
        token,
        r#"{"task": "teleport"}"#,
    );
    assert_eq!(
        (status, reply["error"]["code"].as_str()),
        (400, Some("unknown_task"))
    );
    // Malformed ids and query strings are JSON errors too.
    for path in ["/api/v1/jobs/seven", "/api/v1/audit?limit=many"] {
        let (status, reply) = request(&address, "GET", path, token);
        assert_eq!(
            (status, reply["error"]["code"].as_str()),
            (400, Some("bad_request")),
            "{path}: {reply}"
        );
    }
    let (_, stats) = request(&address, "GET", "/api/v1/jobs/stats", token);
    assert_eq!(stats["pool"]["succeeded"], 2, "{stats}");
    assert_eq!(stats["pool"]["failed"], 1, "{stats}");
    assert_eq!(stats["pool"]["cancelled"], 1, "{stats}");
    assert_eq!(stats["pool"]["rejected"], 1, "{stats}");
    let (_, listed) = request(&address, "GET", "/api/v1/jobs?state=succeeded", token);
    assert_eq!(listed["count"], 2);
    let mut stream = TcpStream::connect(&address).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    for expected in [
        r#"plugsconc_job_duration_seconds_count{task="call",state="succeeded"} 2"#,
        r#"plugsconc_jobs{count="succeeded"} 2"#,
    ] {
        assert!(text.contains(expected), "no {expected} in {text}");
    }

    // The same from the command line, which finds the daemon through the configuration.
    let listen = format!("api.listen={address}");
    let cli = |args: &[&str]| {
        Command::new(support::plugsconc_bin())
            .current_dir(root.path())
            .args(["jobs", "--set", &listen])
            .args(args)
            .output()
            .unwrap()
    };
    let out = cli(&["submit", "noop", "--count", "5", "--watch"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("5 jobs: 5 succeeded, 0 failed, 0 cancelled"),
        "{text}"
    );
    let out = cli(&[
        "submit",
        "call",
        "--plugin",
        "kv",
        "--method",
        "kv.KV/Get",
        "--body",
        r#"{"key": "job"}"#,
    ]);
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(out.status.success() && id.parse::<u64>().is_ok(), "{id}");
    let out = cli(&["watch", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = cli(&["get", &id]);
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(job["result"]["value"], "aGk=");
    let out = cli(&[
        "submit",
        "call",
        "--plugin",
        "ghost",
        "--method",
        "kv.KV/Get",
        "--watch",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("failed: no plugin named \"ghost\""), "{text}");
}
