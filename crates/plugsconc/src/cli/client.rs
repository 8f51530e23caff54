//! The CLI as a client of a running daemon: found through `--daemon`, else the `daemon.json`
//! the daemon wrote into its data folder, else the configuration's `api.listen` (with the token
//! the daemon wrote into its data folder), and used when it answers, so changes go through the
//! daemon (recorded in its store, announced to daemons sharing it) instead of only into the
//! plugins folder.

use std::time::Duration;

use anyhow::Context as _;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use plugsconc_daemon::api::types::ErrorBody;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::codegen::Bytes;
use tonic::codegen::http::{Method, Request, StatusCode, header};

use plugsconc_daemon::config::Config;

/// A daemon that answered.
#[derive(Debug, Clone)]
pub struct Daemon {
    base: String,
    token: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Daemon {
    /// The daemon to talk to. `address` (`--daemon`) when given, and then it must answer;
    /// otherwise the first that answers `GET /api/v1/health` within a moment of the one the
    /// data folder's `daemon.json` names (when its process is alive) and the configuration's
    /// `api.listen`; `None` when neither does. The token is `api.token`, or the `api-token`
    /// file of the data folder (without either, only an explicit address is tried).
    ///
    /// # Errors
    ///
    /// When the daemon at `address` does not answer.
    pub async fn find(config: &Config, address: Option<&str>) -> anyhow::Result<Option<Self>> {
        let token = if config.api.token.is_empty() {
            std::fs::read_to_string(config.directories.data_dir.join("api-token")).ok()
        } else {
            Some(config.api.token.clone())
        };
        let client = Client::builder(TokioExecutor::new()).build_http();
        let at = |address: &str, token: String| Self {
            base: base_url(address),
            token: token.trim().to_owned(),
            client: client.clone(),
        };
        if let Some(address) = address {
            let daemon = at(address, token.unwrap_or_default());
            anyhow::ensure!(
                daemon.answers().await,
                "no daemon answers at {} (--daemon)",
                daemon.base
            );
            return Ok(Some(daemon));
        }
        let Some(token) = token else {
            return Ok(None);
        };
        let recorded = plugsconc_daemon::locator::Locator::read(&config.directories.data_dir)
            .map(|locator| locator.address);
        let mut tried = Vec::new();
        for address in recorded.into_iter().chain([config.api.listen.clone()]) {
            if tried.contains(&address) {
                continue;
            }
            let daemon = at(&address, token.clone());
            if daemon.answers().await {
                return Ok(Some(daemon));
            }
            tried.push(address);
        }
        Ok(None)
    }

    /// Whether `GET /api/v1/health` answers 200 within a moment.
    async fn answers(&self) -> bool {
        let health = tokio::time::timeout(
            Duration::from_millis(500),
            self.request(Method::GET, "/api/v1/health", None, Bytes::new()),
        )
        .await;
        matches!(health, Ok(Ok((StatusCode::OK, _))))
    }

    /// The daemon's address, for messages.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// One request; answers the status and the body.
    async fn request(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
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
        Ok((status, bytes))
    }

    /// One request whose reply is the API's body `T` (see `plugsconc_daemon::api::types`),
    /// failing with the daemon's error message on a non-2xx status.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> anyhow::Result<T> {
        let (status, bytes) = self
            .request(method.clone(), path, content_type, body)
            .await?;
        if status.is_success() {
            serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "the daemon at {} answered {method} {path} with an unexpected body: {}",
                    self.base,
                    String::from_utf8_lossy(&bytes)
                )
            })
        } else {
            let message = serde_json::from_slice::<ErrorBody>(&bytes).map_or_else(
                |_| String::from_utf8_lossy(&bytes).into_owned(),
                |body| body.error.message,
            );
            anyhow::bail!("the daemon refused ({status}): {message}")
        }
    }

    /// [`Daemon::call`] with a JSON request body.
    pub async fn call_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<T> {
        let body = serde_json::to_vec(body)?;
        self.call(method, path, Some("application/json"), body.into())
            .await
    }
}

/// `http://host:port` from `host:port` or a URL.
fn base_url(address: &str) -> String {
    let address = address.trim().trim_end_matches('/');
    if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_become_base_urls() {
        assert_eq!(base_url("127.0.0.1:7400"), "http://127.0.0.1:7400");
        assert_eq!(base_url("http://127.0.0.1:7400/"), "http://127.0.0.1:7400");
        assert_eq!(base_url(" [::1]:7400 "), "http://[::1]:7400");
    }
}
