//! The control loop's HTTP client (hyper, pooled keep-alive) for the proxies' admin APIs,
//! webhooks and the operator's CLI: JSON in, JSON out, every call bounded in time, every
//! failure a [`CallError`] that reads as a sentence.

use std::error::Error as StdError;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client as Pooled;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use switchyard_config::FieldError;

/// What a call to a proxy, a webhook or the control API can end with, short of a success
/// status. Its `Display` is a sentence for a person: `cannot reach
/// http://127.0.0.1:9901/routes: connection refused`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The request cannot be made: the URL is not `http://host[:port]/path`, or a header is
    /// not valid.
    #[error("cannot call {url}: {reason}")]
    Invalid {
        /// The URL given.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// No answer: see [`NoAnswer`].
    #[error("cannot reach {url}: {cause}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// Why there was no answer.
        cause: NoAnswer,
    },
    /// An answer with an unexpected status.
    #[error("{url} answered {status}{}", summary(body))]
    Status {
        /// The URL called.
        url: String,
        /// The status.
        status: StatusCode,
        /// The body as it came (the caller may read a JSON `{"errors": [...]}` from it).
        body: String,
    },
    /// A body that is not the expected JSON.
    #[error("{url} answered with a body that is not the expected JSON: {detail}")]
    Body {
        /// The URL called.
        url: String,
        /// What is wrong.
        detail: String,
    },
}

/// Why a call got no answer, in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoAnswer {
    /// Nothing listens there.
    #[error("connection refused")]
    Refused,
    /// The peer reset the connection.
    #[error("connection reset")]
    Reset,
    /// The peer closed the connection before the whole answer arrived.
    #[error("the connection closed before the answer was complete")]
    Closed,
    /// No answer within the client's time limit (connecting included).
    #[error("no answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// The TLS handshake failed: the peer's certificate was refused, or the protocols did not
    /// agree.
    #[error("{0}")]
    Tls(String),
    /// Anything else: the root cause, as its library words it.
    #[error("{0}")]
    Other(String),
}

impl NoAnswer {
    /// Why `error` (hyper's, or one of its sources) left a call without an answer: the first
    /// I/O error on its `source()` chain, or hyper's word that the connection closed early,
    /// or else the chain's root cause. `timeout` is the client's limit, for a timed-out connect.
    fn of(error: &(dyn StdError + 'static), timeout: Duration) -> Self {
        let mut root = error;
        let mut next = Some(error);
        while let Some(e) = next {
            if let Some(tls) = e.downcast_ref::<rustls::Error>() {
                return Self::of_tls(tls);
            }
            if let Some(tls) = e.downcast_ref::<io::Error>().and_then(tls_within) {
                return Self::of_tls(tls);
            }
            if let Some(io) = e.downcast_ref::<io::Error>() {
                return Self::of_io(io, timeout);
            }
            if let Some(h) = e.downcast_ref::<hyper::Error>()
                && (h.is_incomplete_message() || h.is_canceled() || h.is_closed())
            {
                return Self::Closed;
            }
            root = e;
            next = e.source();
        }
        // The pool's own errors without a source (its request was canceled, its connection's
        // channel closed) all mean the connection went away; its `Display` only names the kind.
        if root.is::<hyper_util::client::legacy::Error>() {
            return Self::Closed;
        }
        Self::Other(root.to_string())
    }

    fn of_tls(error: &rustls::Error) -> Self {
        use rustls::CertificateError as C;
        let said = match error {
            rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
                "its TLS certificate is not signed by an authority trusted here (the system's roots, or the file SSL_CERT_FILE names)".to_owned()
            }
            rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
                "its TLS certificate is not valid for this host name".to_owned()
            }
            rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
                "its TLS certificate has expired".to_owned()
            }
            other => format!("the TLS handshake failed: {other}"),
        };
        Self::Tls(said)
    }

    fn of_io(io: &io::Error, timeout: Duration) -> Self {
        match io.kind() {
            io::ErrorKind::ConnectionRefused => Self::Refused,
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe => {
                Self::Reset
            }
            io::ErrorKind::TimedOut => Self::Timeout(timeout),
            io::ErrorKind::UnexpectedEof => Self::Closed,
            _ => Self::Other(words(io)),
        }
    }
}

/// The TLS error an I/O error carries, through the I/O errors wrapped in it (whose `source()`
/// skips them).
fn tls_within(io: &io::Error) -> Option<&rustls::Error> {
    let mut inner = io.get_ref();
    while let Some(e) = inner {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        inner = e.downcast_ref::<io::Error>().and_then(io::Error::get_ref);
    }
    None
}

/// An I/O error as part of a sentence: `Network is unreachable (os error 101)` becomes
/// `network is unreachable`.
fn words(io: &io::Error) -> String {
    let text = io.to_string();
    let text = match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => &text[..at],
        _ => text.as_str(),
    };
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        // Lower-case a capital that starts a word, not an acronym (`DNS`).
        (Some(first), Some(second)) if first.is_uppercase() && second.is_lowercase() => {
            first.to_lowercase().chain(text[first.len_utf8()..].chars()).collect()
        }
        _ => text.to_owned(),
    }
}

/// An error document, `{"errors": [{"path", "message"}, ...]}`, as the control API and the
/// proxies' admin APIs send it with a 4xx or 5xx status: config's [`FieldError`] each.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Problems {
    /// The problems, in the order the server found them; never empty.
    pub errors: Vec<FieldError>,
}

impl Problems {
    /// The problems in `body`, if it is an error document with at least one.
    pub fn parse(body: &str) -> Option<Self> {
        serde_json::from_str::<Self>(body).ok().filter(|p| !p.errors.is_empty())
    }
}

/// What follows the status in [`CallError::Status`]: `: ` and the problems of an error
/// document, or the body's first line, or nothing for an empty body.
pub(crate) fn summary(body: &str) -> String {
    /// Longest stretch of a body that is not an error document shown in a message.
    const SHOWN: usize = 200;
    if let Some(problems) = Problems::parse(body) {
        let texts: Vec<String> = problems.errors.iter().map(FieldError::to_string).collect();
        return format!(": {}", texts.join("; "));
    }
    match body.lines().map(str::trim).find(|l| !l.is_empty()) {
        Some(line) if line.chars().count() > SHOWN => {
            format!(": {}…", line.chars().take(SHOWN).collect::<String>())
        }
        Some(line) => format!(": {line}"),
        None => String::new(),
    }
}

/// A pooled HTTP/1.1 client with a per-call time limit, for `http://` and `https://` URLs.
/// Over TLS it trusts the system's roots (Debian's ca-certificates), or, as other tools do, the
/// certificates in the file `SSL_CERT_FILE` (or the directory `SSL_CERT_DIR`) names.
#[derive(Debug, Clone)]
pub struct Http {
    client: Pooled<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
    /// `Authorization` sent with every call, for peers that ask a token (the proxies' admin
    /// APIs with `admin.tokenFile`).
    bearer: Option<http::HeaderValue>,
}

/// The roots TLS peers are checked against, read once.
fn tls_config() -> rustls::ClientConfig {
    static ROOTS: std::sync::OnceLock<Arc<rustls::RootCertStore>> = std::sync::OnceLock::new();
    let roots = ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!("cannot read a trusted TLS certificate: {e}");
        }
        let mut roots = rustls::RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        if ignored > 0 {
            tracing::warn!(ignored, "some trusted TLS certificates could not be parsed");
        }
        if added == 0 {
            tracing::warn!("no trusted TLS certificates found (install ca-certificates, or set SSL_CERT_FILE): https:// calls will fail");
        }
        Arc::new(roots)
    });
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|_| rustls::ClientConfig::builder())
        .with_root_certificates(Arc::clone(roots))
        .with_no_client_auth()
}

impl Http {
    /// A client whose calls each end within `timeout`, connecting included.
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        // The TLS connector is handed every URL; it leaves http:// alone.
        connector.enforce_http(false);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls_config())
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        Self {
            client: Pooled::builder(TokioExecutor::new()).build(connector),
            timeout,
            bearer: None,
        }
    }

    /// The same client presenting `Authorization: Bearer TOKEN` on every call. Give it only to
    /// calls to the peers the token is for: a webhook must never see it.
    pub fn with_bearer(mut self, token: &str) -> Result<Self, String> {
        let mut value = http::HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            "the token cannot be sent in an Authorization header (printable ASCII, no spaces)".to_owned()
        })?;
        value.set_sensitive(true);
        self.bearer = Some(value);
        Ok(self)
    }

    /// Sends a request and returns status, headers and body, whatever the status.
    pub async fn call(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), CallError> {
        let invalid = |reason: String| CallError::Invalid {
            url: url.to_owned(),
            reason,
        };
        let unreachable = |error: &(dyn StdError + 'static)| CallError::Unreachable {
            url: url.to_owned(),
            cause: NoAnswer::of(error, self.timeout),
        };
        let mut req = Request::builder().method(method).uri(target(url).map_err(invalid)?);
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        if let Some(bearer) = &self.bearer
            && !headers
                .iter()
                .any(|(name, _)| name.eq_ignore_ascii_case("authorization"))
        {
            req = req.header(header::AUTHORIZATION, bearer.clone());
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
            .map_err(|e| invalid(format!("invalid request: {e}")))?;
        let exchange = async {
            let response = self.client.request(req).await.map_err(|e| unreachable(&e))?;
            let (parts, body) = response.into_parts();
            let bytes = body.collect().await.map_err(|e| unreachable(&e))?.to_bytes();
            Ok((parts.status, parts.headers, bytes))
        };
        tokio::time::timeout(self.timeout, exchange).await.unwrap_or_else(|_| {
            Err(CallError::Unreachable {
                url: url.to_owned(),
                cause: NoAnswer::Timeout(self.timeout),
            })
        })
    }

    /// The same client (its pooled connections, and its token if it has one) with calls
    /// bounded by `timeout` instead.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            client: self.client.clone(),
            timeout,
            bearer: self.bearer.clone(),
        }
    }

    /// `GET url` expecting 200 and JSON.
    pub async fn get_json(&self, url: &str) -> Result<serde_json::Value, CallError> {
        self.get_json_with(url, &[]).await
    }

    /// `GET url` with `headers`, expecting a 2xx status and JSON.
    pub async fn get_json_with(&self, url: &str, headers: &[(&str, String)]) -> Result<serde_json::Value, CallError> {
        let (status, _, body) = self.call(Method::GET, url, headers, None).await?;
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

/// `url` as a request target, if it is one this client can call: `http://host[:port]/path`
/// or `https://…`.
fn target(url: &str) -> Result<Uri, String> {
    let expected = || "expected http://host[:port]/path or https://host[:port]/path".to_owned();
    let uri: Uri = url.parse().map_err(|_| expected())?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(_)) => Ok(uri),
        (Some(scheme), Some(_)) => Err(format!("only http:// and https:// URLs can be called, not {scheme}://")),
        _ => Err(expected()),
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

#[cfg(test)]
mod tests;
