//! Installs through the daemon: within the `install` caps an upload declared larger than
//! the cap is answered 413 before its body is sent, a streamed one is cut off at the cap, and a
//! bundle within the caps streams in and installs; what installs killed midway left is cleared
//! when the daemon starts.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use crate::serve::{serve, token};

/// Reads one HTTP/1.1 response (status, JSON body) without waiting for the connection to close.
fn response(stream: &TcpStream) -> (u16, serde_json::Value) {
    // Only so that a daemon that never answers fails the test instead of hanging it.
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (status, serde_json::from_slice(&body).unwrap_or_default())
}

/// A `.tar.gz` bundle of plugin `name` with `noise` incompressible bytes beside it.
fn bundle(name: &str, noise: usize) -> Vec<u8> {
    let manifest = format!(
        "plugin:\n  name: {name}\n  type: animal\n  version: 1.0.0\n  entrypoint: ./{name}\nhandshake:\n  protocol_version: 1\n  magic_cookie_key: K\n  magic_cookie_value: v\n"
    );
    let binary = b"#!/bin/sh\n";
    let digest = {
        use sha2::Digest as _;
        let bytes: [u8; 32] = sha2::Sha256::digest(binary).into();
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let sidecar = format!("{digest}  {name}\n");
    let mut rng = fastrand::Rng::with_seed(7);
    let noise: Vec<u8> = (0..noise).map(|_| rng.u8(..)).collect();
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (path, data) in [
        ("manifest.yaml".to_owned(), manifest.as_bytes()),
        (name.to_owned(), &binary[..]),
        (format!("{name}.sha256"), sidecar.as_bytes()),
        ("noise".to_owned(), &noise[..]),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o755);
        header.set_cksum();
        builder.append_data(&mut header, path, data).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// Posts `body` as a chunked upload, sent from another thread (the daemon may answer and
/// close before it is all sent), and returns the response.
fn upload_chunked(address: &str, token: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
    let stream = TcpStream::connect(address).unwrap();
    let mut writer = stream.try_clone().unwrap();
    write!(
        writer,
        "POST /api/v1/plugins/install HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/gzip\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        for chunk in body.chunks(64 << 10) {
            write!(writer, "{:x}\r\n", chunk.len())?;
            writer.write_all(chunk)?;
            writer.write_all(b"\r\n")?;
        }
        writer.write_all(b"0\r\n\r\n")
    });
    let answer = response(&stream);
    // The daemon may have closed the connection before the rest was sent.
    let _ = sender.join().unwrap();
    answer
}

#[test]
fn uploads_over_the_cap_are_refused_and_those_within_stream_in() {
    let root = tempfile::tempdir().unwrap();
    let (_daemon, address, _) = serve(root.path(), &["--set", "install.max_upload_mib=1"]);
    let token = token(root.path());

    // Declared over the cap: 413 before a byte of the body is sent.
    let stream = TcpStream::connect(&address).unwrap();
    write!(
        &stream,
        "POST /api/v1/plugins/install HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        10 << 20
    )
    .unwrap();
    let (status, body) = response(&stream);
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("install.max_upload_mib"),
        "{body}"
    );

    // Streamed without a length, over the cap: cut off there, nothing installed.
    let (status, body) = upload_chunked(&address, &token, bundle("big", 2 << 20));
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
    assert!(!root.path().join("plugins/big").exists());

    // Within the cap, streamed: installed.
    let (status, body) = upload_chunked(&address, &token, bundle("small", 256 << 10));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["plugin"]["name"], "small", "{body}");
    assert!(root.path().join("plugins/small/noise").exists());
    let hidden: Vec<_> = std::fs::read_dir(root.path().join("plugins"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.file_name())
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");
}

#[test]
fn the_daemon_clears_what_killed_installs_left_before_serving() {
    let root = tempfile::tempdir().unwrap();
    let stale = root.path().join("plugins/.install-0123456789abcdef");
    std::fs::create_dir_all(stale.join("pkg")).unwrap();
    std::fs::write(stale.join("pkg/half-unpacked"), vec![0; 1 << 20]).unwrap();
    std::fs::write(stale.join(".lock"), b"").unwrap();
    let removed = root.path().join("plugins/.removed-0123456789abcdef");
    std::fs::create_dir_all(&removed).unwrap();
    // The daemon says it is listening once it is ready to serve.
    let (_daemon, _address, _) = serve(root.path(), &[]);
    assert!(!stale.exists() && !removed.exists());
}
