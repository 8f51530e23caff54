//! Every error the daemon's API answers is JSON with a stable code, including the ones axum
//! makes itself: a body over the limit, a body that is not UTF-8, an unknown route, a method a
//! route does not serve.

use crate::serve::{get, request, send_bytes, serve, token};

#[test]
fn errors_from_limits_extractors_and_routing_are_json() {
    let root = tempfile::tempdir().unwrap();
    let (_daemon, address, _stdout) = serve(root.path(), &[]);
    let token = token(root.path());
    let token = Some(token.as_str());

    // One byte over the default body limit (2 MiB): all of it is read before the refusal.
    let big = vec![b'a'; 2 * 1024 * 1024 + 1];
    let (status, body) = send_bytes(
        &address,
        "POST",
        "/api/v1/jobs",
        token,
        "application/json",
        &big,
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("payload_too_large")),
        "{body}"
    );

    let (status, body) = send_bytes(
        &address,
        "POST",
        "/api/v1/jobs",
        token,
        "application/json",
        &[0xff, 0xfe, b'{'],
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );

    let (status, body) = request(&address, "DELETE", "/api/v1/health", None);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (405, Some("method_not_allowed")),
        "{body}"
    );
    let (status, body) = request(&address, "GET", "/api/v1/jobs/stats", token);
    assert_eq!(status, 200, "{body}");
    let (status, body) = request(&address, "PUT", "/api/v1/jobs/stats", token);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (405, Some("method_not_allowed")),
        "{body}"
    );

    for path in [
        "/api/v1/nowhere",
        "/nowhere",
        "/api/v1/plugins/cow/nowhere/at/all",
    ] {
        let (status, body) = get(&address, path);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("not_found")),
            "{path}: {body}"
        );
    }
}
