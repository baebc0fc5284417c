//! Connections to upstream endpoints: one keep-alive pool per endpoint for HTTP/1.1 tracks, one
//! multiplexed connection per endpoint for h2c tracks, and the classification of what can go
//! wrong on the way (connect, timeout, reset).

use std::error::Error as _;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use switchyard_config::schema::{Limits, Timeouts, UpstreamProtocol};

use crate::record::UpstreamError;

/// The upstream clients, one per protocol; each pools connections per endpoint.
#[derive(Debug, Clone)]
pub struct Upstreams {
    http1: Client<HttpConnector, Incoming>,
    h2c: Client<HttpConnector, Incoming>,
}

impl Upstreams {
    /// Clients with the connect timeout, pool idle timeout and pool size of the configuration.
    pub fn new(timeouts: &Timeouts, limits: &Limits) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeouts.connect));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let build = |h2: bool| {
            Client::builder(TokioExecutor::new())
                .timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(timeouts.upstream_idle)
                .pool_max_idle_per_host(limits.max_idle_per_endpoint)
                .http2_only(h2)
                .build(connector.clone())
        };
        Self {
            http1: build(false),
            h2c: build(true),
        }
    }

    /// The client for a track's protocol.
    #[inline]
    pub fn client(&self, protocol: UpstreamProtocol) -> &Client<HttpConnector, Incoming> {
        match protocol {
            UpstreamProtocol::Http1 => &self.http1,
            UpstreamProtocol::H2c => &self.h2c,
        }
    }
}

/// What went wrong with an upstream exchange, and the response the downstream gets for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The endpoint refused, reset or did not accept the connection (502).
    Connect,
    /// No response headers within the request timeout (504).
    Timeout,
    /// The connection broke or the upstream answered with something that is not HTTP (502).
    Reset,
}

impl Failure {
    /// Classifies a client error.
    pub fn of(e: &hyper_util::client::legacy::Error) -> Self {
        if e.is_connect() {
            return Self::Connect;
        }
        let mut source = e.source();
        while let Some(s) = source {
            if let Some(h) = s.downcast_ref::<hyper::Error>()
                && h.is_timeout()
            {
                return Self::Timeout;
            }
            source = s.source();
        }
        Self::Reset
    }

    /// The status the downstream gets.
    pub fn status(self) -> http::StatusCode {
        match self {
            Self::Connect | Self::Reset => http::StatusCode::BAD_GATEWAY,
            Self::Timeout => http::StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The short body naming the cause.
    pub fn message(self) -> &'static str {
        match self {
            Self::Connect => "upstream connect error: the endpoint refused or did not accept the connection\n",
            Self::Timeout => "upstream timeout: no response within the route's timeout\n",
            Self::Reset => "upstream reset: the connection broke before a complete response\n",
        }
    }

    /// The kind counted against the track.
    pub fn kind(self) -> UpstreamError {
        match self {
            Self::Connect => UpstreamError::Connect,
            Self::Timeout => UpstreamError::Timeout,
            Self::Reset => UpstreamError::Reset,
        }
    }
}

/// The timeout for a request on a route: the route's own, else the proxy's.
pub fn request_timeout(route: Option<Duration>, timeouts: &Timeouts) -> Duration {
    route.unwrap_or(timeouts.request)
}
