//! A minimal HTTP/1.1 client over `std::net`: keep-alive connections (so thousands of calls do
//! not exhaust ephemeral ports with `TIME_WAIT` sockets), bodies by length or chunked.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::Context as _;

/// A response: status and body parsed as JSON (`Null` when it is not JSON).
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: serde_json::Value,
}

impl Response {
    /// The stable error code of a JSON error body, or the status when there is none.
    pub fn code(&self) -> String {
        self.body["error"]["code"]
            .as_str()
            .map_or_else(|| format!("http_{}", self.status), str::to_owned)
    }
}

/// One keep-alive connection to the daemon; reconnects after a failure.
#[derive(Debug)]
pub struct Client {
    address: String,
    token: Option<String>,
    stream: Option<BufReader<TcpStream>>,
    timeout: Duration,
}

impl Client {
    pub fn new(address: &str, token: Option<&str>) -> Self {
        Self {
            address: address.to_owned(),
            token: token.map(str::to_owned),
            stream: None,
            timeout: Duration::from_secs(120),
        }
    }

    /// Sets how long a response may take.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn get(&mut self, path: &str) -> anyhow::Result<Response> {
        self.send("GET", path, "application/json", b"")
    }

    pub fn post(&mut self, path: &str, body: &str) -> anyhow::Result<Response> {
        self.send("POST", path, "application/json", body.as_bytes())
    }

    /// Sends one request on the kept connection. An error is a transport failure (the
    /// connection is dropped and the next request opens a new one).
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> anyhow::Result<Response> {
        let result = self.exchange(method, path, content_type, body);
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> anyhow::Result<Response> {
        if self.stream.is_none() {
            let address: std::net::SocketAddr = self.address.parse().context("address")?;
            let stream =
                TcpStream::connect_timeout(&address, self.timeout).context("connecting")?;
            stream.set_read_timeout(Some(self.timeout))?;
            stream.set_nodelay(true)?;
            self.stream = Some(BufReader::new(stream));
        }
        let reader = self.stream.as_mut().context("no connection")?;
        let auth = self
            .token
            .as_ref()
            .map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            self.address,
            body.len()
        );
        let stream = reader.get_mut();
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        let (response, close) = read_response(reader)?;
        if close {
            self.stream = None;
        }
        Ok(response)
    }
}

/// The response, and whether the server closes the connection after it.
fn read_response(reader: &mut BufReader<TcpStream>) -> anyhow::Result<(Response, bool)> {
    let mut line = String::new();
    anyhow::ensure!(reader.read_line(&mut line)? > 0, "connection closed");
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not a status line: {line:?}"))?;
    let (mut length, mut chunked, mut close) = (None, false, false);
    loop {
        line.clear();
        anyhow::ensure!(reader.read_line(&mut line)? > 0, "connection closed");
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse::<usize>().ok(),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim(), 16).context("chunk size")?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = length {
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
    } else {
        reader.read_to_end(&mut body)?;
        close = true;
    }
    let response = Response {
        status,
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    };
    Ok((response, close))
}
