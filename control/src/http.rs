//! The control loop's HTTP client (hyper, pooled keep-alive) for the proxies' admin APIs and
//! webhooks: JSON in, JSON out, every call bounded in time.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as Pooled;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// What a call to a proxy or webhook can end with, short of a success status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No answer (connect error, reset, timeout).
    #[error("{url}: unreachable: {detail}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// An answer with an unexpected status.
    #[error("{url}: {status}: {body}")]
    Status {
        /// The URL called.
        url: String,
        /// The status.
        status: StatusCode,
        /// The body (for the error message).
        body: String,
    },
    /// A body that is not the expected JSON.
    #[error("{url}: unexpected answer: {detail}")]
    Body {
        /// The URL called.
        url: String,
        /// What is wrong.
        detail: String,
    },
}

/// A pooled HTTP/1.1 client with a per-call time limit.
#[derive(Debug, Clone)]
pub struct Http {
    client: Pooled<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl Http {
    /// A client whose calls each end within `timeout`.
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        Self {
            client: Pooled::builder(TokioExecutor::new()).build(connector),
            timeout,
        }
    }

    /// Sends a request and returns status, headers and body.
    pub async fn call(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), CallError> {
        let unreachable = |detail: String| CallError::Unreachable {
            url: url.to_owned(),
            detail,
        };
        let mut req = Request::builder().method(method).uri(url);
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        if body.is_some()
            && !headers
                .iter()
                .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| unreachable(e.to_string()))?;
        let exchange = async {
            let response = self
                .client
                .request(req)
                .await
                .map_err(|e| unreachable(format!("{e:?}")))?;
            let (parts, body) = response.into_parts();
            let bytes = body.collect().await.map_err(|e| unreachable(e.to_string()))?.to_bytes();
            Ok((parts.status, parts.headers, bytes))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or_else(|_| Err(unreachable(format!("no answer within {:?}", self.timeout))))
    }

    /// `GET url` expecting 200 and JSON.
    pub async fn get_json(&self, url: &str) -> Result<serde_json::Value, CallError> {
        let (status, _, body) = self.call(Method::GET, url, &[], None).await?;
        json(url, status, &body)
    }

    /// A JSON request expecting 2xx and JSON (or nothing).
    pub async fn send_json(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, CallError> {
        let bytes = serde_json::to_vec(body).map_err(|e| CallError::Body {
            url: url.to_owned(),
            detail: e.to_string(),
        })?;
        let (status, _, body) = self.call(method, url, headers, Some(bytes)).await?;
        json(url, status, &body)
    }
}

fn json(url: &str, status: StatusCode, body: &[u8]) -> Result<serde_json::Value, CallError> {
    if !status.is_success() {
        return Err(CallError::Status {
            url: url.to_owned(),
            status,
            body: String::from_utf8_lossy(body).trim().to_owned(),
        });
    }
    if body.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_slice(body).map_err(|e| CallError::Body {
        url: url.to_owned(),
        detail: e.to_string(),
    })
}
