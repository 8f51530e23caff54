//! The API under idle and slow clients: connections beyond `api.max_connections` do not keep
//! the health check out, a request head that never completes is closed after
//! `api.header_read_timeout_secs`, a request whose body stops arriving fails after
//! `api.body_idle_timeout_secs`, and a connection without a request after
//! `api.idle_timeout_secs`.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use crate::serve::{get, serve};

/// Whether the daemon has closed `stream` (end of file or reset); `false` while it is open.
/// Bytes it sent before are skipped.
fn closed(mut stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => {}
            Err(err) if err.kind() == ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    stream.set_nonblocking(false).unwrap();
    closed
}

/// Waits (bounded, generously) until the daemon closes `stream`.
fn wait_closed(stream: &TcpStream, what: &str) {
    for _ in 0..1200 {
        if closed(stream) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the daemon never closed {what}");
}

#[test]
fn idle_and_partial_connections_beyond_the_cap_do_not_keep_health_out() {
    let root = tempfile::tempdir().unwrap();
    let (_daemon, address, _stdout) = serve(
        root.path(),
        &[
            "--set",
            "api.max_connections=8",
            "--set",
            "api.header_read_timeout_secs=1",
            // Only the head's timeout can close the partial request below.
            "--set",
            "api.idle_timeout_secs=86400",
        ],
    );
    let flood: Vec<TcpStream> = (0..40)
        .map(|i| {
            let mut stream = TcpStream::connect(&address).unwrap();
            if i % 2 == 0 {
                // Half of a request head, never finished.
                write!(stream, "GET /api/v1/health HTTP/1.1\r\nHost: x\r\n").unwrap();
            }
            stream
        })
        .collect();
    for _ in 0..5 {
        let (status, body) = get(&address, "/api/v1/health");
        assert_eq!(
            (status, body["status"].as_str()),
            (200, Some("ok")),
            "{body}"
        );
    }
    // The cap held: all but (at most) the cap's worth of the flood were closed to make room.
    let mut open = flood.len();
    for _ in 0..1200 {
        open = flood.iter().filter(|s| !closed(s)).count();
        if open <= 8 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(open <= 8, "{open} flood connections still open");
    drop(flood);

    let mut partial = TcpStream::connect(&address).unwrap();
    write!(partial, "GET /api/v1/health HTTP/1.1\r\nHost: x\r\n").unwrap();
    wait_closed(&partial, "a connection whose request head never completed");
    let (status, _) = get(&address, "/api/v1/health");
    assert_eq!(status, 200);
}

#[test]
fn connections_without_a_request_are_closed_after_the_idle_timeout() {
    let root = tempfile::tempdir().unwrap();
    let (_daemon, address, _stdout) = serve(
        root.path(),
        &[
            "--set",
            "api.idle_timeout_secs=1",
            "--set",
            "api.header_read_timeout_secs=86400",
        ],
    );
    let silent = TcpStream::connect(&address).unwrap();
    // Kept alive after one answered request.
    let mut kept = TcpStream::connect(&address).unwrap();
    write!(kept, "GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&response).contains("\"status\":\"ok\"") {
        let n = kept.read(&mut buf).unwrap();
        assert!(n > 0, "closed before answering");
        response.extend_from_slice(&buf[..n]);
    }
    assert!(
        String::from_utf8_lossy(&response).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&response)
    );
    wait_closed(&silent, "a connection that never sent a request");
    wait_closed(&kept, "a kept-alive connection without a next request");
}

#[test]
fn a_request_whose_body_stops_arriving_fails_and_frees_its_connection() {
    let root = tempfile::tempdir().unwrap();
    crate::serve::example_plugins(root.path());
    let (_daemon, address, _stdout) =
        serve(root.path(), &["--set", "api.body_idle_timeout_secs=1"]);
    let token = crate::serve::token(root.path());
    for (path, content_type) in [
        ("/api/v1/jobs", "application/json"),
        ("/api/v1/plugins/install", "application/gzip"),
    ] {
        let mut stream = TcpStream::connect(&address).unwrap();
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: {content_type}\r\nContent-Length: 100000\r\n\r\n{{\"task\""
        )
        .unwrap();
        // The rest never comes: the daemon answers with an error and closes the connection.
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 4"), "{path}: {answer}");
        assert!(answer.contains("\"error\""), "{path}: {answer}");
    }
    assert_eq!(get(&address, "/api/v1/health").0, 200);
}
