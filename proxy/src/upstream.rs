//! Connections to upstream endpoints: a keep-alive pool per endpoint for HTTP/1.1 tracks, one
//! multiplexed connection per endpoint for h2c tracks, and the classification of what can go
//! wrong on the way (connect, timeout, reset).
//!
//! The HTTP/1.1 pool is per thread: a request takes an idle connection of its endpoint from the
//! thread it runs on and the response body, when it ends cleanly, gives it back to the thread
//! that finished it. No lock and no hashing on the way: endpoints are numbered once, when a
//! table is published ([`EndpointKey`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::error::Error as _;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use switchyard_config::schema::{Limits, Timeouts};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::dns::{self, NoLookup};
use crate::record::UpstreamError;
use crate::request_body::RequestBody;

/// A process-wide number for an upstream address, the index of its idle connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EndpointKey(u32);

impl EndpointKey {
    /// The key of `authority`; the same address always gets the same key. Cold path (publish).
    pub fn of(authority: &Authority) -> Self {
        static KEYS: OnceLock<Mutex<HashMap<String, u32>>> = OnceLock::new();
        let mut keys = KEYS
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let next = u32::try_from(keys.len()).unwrap_or(u32::MAX);
        Self(*keys.entry(authority.as_str().to_owned()).or_insert(next))
    }
}

/// The upstream clients: the HTTP/1.1 pool, and a pooled h2c client.
#[derive(Debug, Clone)]
pub struct Upstreams {
    /// Connect timeout for new HTTP/1.1 connections.
    connect: Duration,
    /// How long an idle HTTP/1.1 connection may wait in the pool.
    idle: Duration,
    /// Idle HTTP/1.1 connections kept per endpoint and thread.
    max_idle: usize,
    h2c: Client<HttpConnector<NoLookup>, RequestBody>,
}

/// An HTTP/1.1 connection lent to one request; [`Lease::give_back`] returns it to the pool.
#[derive(Debug)]
pub struct Lease {
    key: EndpointKey,
    sender: SendRequest<RequestBody>,
    max_idle: usize,
    idle: Duration,
}

struct Idle {
    sender: SendRequest<RequestBody>,
    since: Instant,
}

impl Idle {
    /// Whether the connection is still open and has idled less than `limit` at `now`.
    fn usable(&self, now: Instant, limit: Duration) -> bool {
        !self.sender.is_closed() && now.saturating_duration_since(self.since) < limit
    }
}

/// Idle HTTP/1.1 connections of one thread.
struct Pool {
    /// By endpoint key.
    lists: Vec<Vec<Idle>>,
    /// When to drop the connections that idled too long, of every endpoint: those of an
    /// endpoint no table names any more are never taken again.
    next_sweep: Option<Instant>,
}

thread_local! {
    static IDLE: RefCell<Pool> = const {
        RefCell::new(Pool {
            lists: Vec::new(),
            next_sweep: None,
        })
    };
}

impl Upstreams {
    /// Clients with the connect timeout, pool idle timeout and pool size of the configuration.
    pub fn new(timeouts: &Timeouts, limits: &Limits) -> Self {
        let mut connector = HttpConnector::new_with_resolver(NoLookup);
        connector.set_connect_timeout(Some(timeouts.connect));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let h2c = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(timeouts.upstream_idle)
            .pool_max_idle_per_host(limits.max_idle_per_endpoint)
            .http2_only(true)
            .build(connector);
        Self {
            connect: timeouts.connect,
            idle: timeouts.upstream_idle,
            max_idle: limits.max_idle_per_endpoint,
            h2c,
        }
    }

    /// Connects to the endpoint and sends `req` (origin-form URI, `Host` set) over HTTP/1.1:
    /// the cold path, taken when this thread has no idle connection to the endpoint.
    pub async fn connect_and_send(
        &self,
        key: EndpointKey,
        authority: Authority,
        req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Lease), Failure> {
        let mut sender = self.connect(&authority).await?;
        match sender.send_request(req).await {
            Ok(response) => Ok((response, self.lease(key, sender))),
            Err(e) => Err(Failure::of_hyper(&e)),
        }
    }

    /// Sends `req` (absolute URI) over h2c.
    pub fn send_h2c(
        &self,
        req: Request<RequestBody>,
    ) -> impl Future<Output = Result<Response<Incoming>, Failure>> + use<> {
        let sent = self.h2c.request(req);
        async move {
            sent.await.map_err(|e| {
                let failure = Failure::of(&e);
                tracing::debug!(error = %e, ?failure, "h2c upstream request failed");
                failure
            })
        }
    }

    /// Lends `sender`, a connection to `key`, to one request.
    pub fn lease(&self, key: EndpointKey, sender: SendRequest<RequestBody>) -> Lease {
        Lease {
            key,
            sender,
            max_idle: self.max_idle,
            idle: self.idle,
        }
    }

    /// An idle connection of this thread to `key`, for a request that started at `now`; ones
    /// that closed or idled past the pool's limit are dropped on the way.
    pub fn take_idle(&self, key: EndpointKey, now: Instant) -> Option<SendRequest<RequestBody>> {
        IDLE.with(|pool| {
            let mut pool = pool.borrow_mut();
            let list = pool.lists.get_mut(key.0 as usize)?;
            while let Some(conn) = list.pop() {
                if conn.usable(now, self.idle) {
                    return Some(conn.sender);
                }
            }
            None
        })
    }

    async fn connect(&self, authority: &Authority) -> Result<SendRequest<RequestBody>, Failure> {
        let (sender, connection) = self.handshake(authority).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Sends `req`, an upgrade request (origin-form URI, `Host`, `Upgrade` and `Connection`
    /// set), on a connection of its own, which is never pooled: after a `101` it becomes the
    /// tunnel's (`hyper::upgrade::on` of the response), after any other answer it closes.
    pub async fn send_upgrade(
        &self,
        authority: Authority,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, Failure> {
        let (mut sender, connection) = self.handshake(&authority).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "upstream upgrade connection ended with an error");
            }
        });
        sender.send_request(req).await.map_err(|e| Failure::of_hyper(&e))
    }

    async fn handshake(
        &self,
        authority: &Authority,
    ) -> Result<
        (
            SendRequest<RequestBody>,
            http1::Connection<TokioIo<TcpStream>, RequestBody>,
        ),
        Failure,
    > {
        let Some(address) = dns::socket_address(authority) else {
            tracing::debug!(%authority, "upstream endpoint has no address: its name has not resolved");
            return Err(Failure::Connect);
        };
        let stream = match tokio::time::timeout(self.connect, TcpStream::connect(address)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%authority, error = %e, "upstream connect failed");
                return Err(Failure::Connect);
            }
            Err(_) => {
                tracing::debug!(%authority, "upstream connect timed out");
                return Err(Failure::Connect);
            }
        };
        let _ = stream.set_nodelay(true);
        http1::handshake(TokioIo::new(stream)).await.map_err(|e| {
            tracing::debug!(%authority, error = %e, "upstream handshake failed");
            Failure::Connect
        })
    }
}

impl Lease {
    /// Returns the connection to this thread's pool, once its response has been read whole
    /// (at `now`, when its idle time starts). Every half of the pool's idle limit, this also
    /// drops the thread's connections that idled past it, whatever their endpoint: so idle
    /// connections close between 1 and 1.5 times the limit while the thread serves traffic.
    pub fn give_back(self, now: Instant) {
        if self.sender.is_closed() {
            return;
        }
        IDLE.with(|pool| {
            let mut pool = pool.borrow_mut();
            let at = self.key.0 as usize;
            if pool.lists.len() <= at {
                pool.lists.resize_with(at + 1, Vec::new);
            }
            let list = &mut pool.lists[at];
            if list.len() < self.max_idle {
                list.push(Idle {
                    sender: self.sender,
                    since: now,
                });
            }
            match pool.next_sweep {
                Some(due) if now < due => {}
                due => {
                    if due.is_some() {
                        for list in &mut pool.lists {
                            list.retain(|c| c.usable(now, self.idle));
                        }
                    }
                    pool.next_sweep = Some(now + self.idle / 2);
                }
            }
        });
    }
}

/// What went wrong with an upstream exchange, and the response the downstream gets for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The endpoint refused, reset or did not accept the connection (502).
    Connect,
    /// No response headers within the request timeout (504).
    Timeout,
    /// The connection broke before a complete response head (502).
    Reset,
    /// The upstream broke HTTP/1.1 framing: a head that does not parse, an invalid or
    /// conflicting length, `Transfer-Encoding` other than `chunked`, an unasked-for `101` (502).
    /// Its connection is discarded.
    Protocol,
}

impl Failure {
    /// Classifies an error of an exchange on an established connection.
    pub fn of_hyper(e: &hyper::Error) -> Self {
        if e.is_timeout() {
            Self::Timeout
        } else if e.is_parse() || e.is_parse_status() {
            Self::Protocol
        } else {
            Self::Reset
        }
    }

    /// Classifies a pooled client error.
    pub fn of(e: &hyper_util::client::legacy::Error) -> Self {
        if e.is_connect() {
            return Self::Connect;
        }
        let mut source = e.source();
        while let Some(s) = source {
            if let Some(h) = s.downcast_ref::<hyper::Error>()
                && (h.is_timeout() || h.is_parse())
            {
                return Self::of_hyper(h);
            }
            source = s.source();
        }
        Self::Reset
    }

    /// The status the downstream gets.
    pub fn status(self) -> http::StatusCode {
        match self {
            Self::Connect | Self::Reset | Self::Protocol => http::StatusCode::BAD_GATEWAY,
            Self::Timeout => http::StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The short body naming the cause.
    pub fn message(self) -> &'static str {
        match self {
            Self::Connect => "upstream connect error: the endpoint refused or did not accept the connection\n",
            Self::Timeout => "upstream timeout: no response within the route's timeout\n",
            Self::Reset => "upstream reset: the connection broke before a complete response\n",
            Self::Protocol => "upstream protocol error: the endpoint's response is not valid HTTP/1.1 framing\n",
        }
    }

    /// The kind counted against the track.
    pub fn kind(self) -> UpstreamError {
        match self {
            Self::Connect => UpstreamError::Connect,
            Self::Timeout => UpstreamError::Timeout,
            Self::Reset => UpstreamError::Reset,
            Self::Protocol => UpstreamError::Protocol,
        }
    }
}
