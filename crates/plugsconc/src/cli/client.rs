//! The CLI as a client of a running daemon: found through the configuration (`api.listen`, and
//! the token the daemon wrote into its data folder) and used when it answers, so changes go
//! through the daemon (recorded in its store, announced to daemons sharing it) instead of only
//! into the plugins folder.

use std::time::Duration;

use anyhow::Context as _;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tonic::codegen::Bytes;
use tonic::codegen::http::{Method, Request, StatusCode, header};

use crate::config::Config;

/// A daemon that answered.
#[derive(Debug, Clone)]
pub struct Daemon {
    base: String,
    token: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Daemon {
    /// The daemon the configuration points at, if its token file exists and it answers
    /// `GET /api/v1/health` within a moment.
    pub async fn detect(config: &Config) -> Option<Self> {
        let token = if config.api.token.is_empty() {
            std::fs::read_to_string(config.directories.data_dir.join("api-token")).ok()?
        } else {
            config.api.token.clone()
        };
        let daemon = Self {
            base: format!("http://{}", config.api.listen),
            token: token.trim().to_owned(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        };
        let health = tokio::time::timeout(
            Duration::from_millis(500),
            daemon.request(Method::GET, "/api/v1/health", None, Bytes::new()),
        )
        .await;
        matches!(health, Ok(Ok((StatusCode::OK, _)))).then_some(daemon)
    }

    /// The daemon's address, for messages.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// One request; answers the status and the JSON body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let response = self
            .client
            .request(request.body(Full::new(body))?)
            .await
            .with_context(|| format!("the daemon at {} did not answer", self.base))?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, value))
    }

    /// Like [`Daemon::request`], failing with the daemon's error message on a non-2xx status.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> anyhow::Result<Value> {
        let (status, value) = self.request(method, path, content_type, body).await?;
        if status.is_success() {
            Ok(value)
        } else {
            let message = value["error"]["message"]
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned);
            anyhow::bail!("the daemon refused ({status}): {message}")
        }
    }
}

/// Percent-encodes a query value.
pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
