//! Active health checks: one task per endpoint of a track with `healthCheck`, started and
//! stopped by [`super::HealthRegistry::apply`] as tables are published.
//!
//! Each check is `GET path` on a connection of its own, in the track's protocol, with `Host`
//! the endpoint's address and `user-agent: switchyard-health-check`, bounded by the check's
//! timeout from connecting to the response head; the connection closes after it. Checks never
//! go through the request path's pool and never count in a track's numbers.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, StatusCode, Uri, header};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard_config::schema::{HealthCheckSpec, UpstreamProtocol};
use switchyard_config::{RouteName, TrackName};
use tokio::net::TcpStream;
use tokio::time::MissedTickBehavior;

use super::{EndpointHealth, EndpointId, authority};

/// What one endpoint's checks go to, and how.
#[derive(Debug)]
pub(crate) struct Target {
    route: RouteName,
    track: TrackName,
    authority: Authority,
    path: PathAndQuery,
    spec: HealthCheckSpec,
    protocol: UpstreamProtocol,
}

impl Target {
    /// The checks of endpoint `id` as `spec` says, in `protocol`.
    pub(crate) fn new(id: &EndpointId, spec: HealthCheckSpec, protocol: UpstreamProtocol) -> Self {
        let path = PathAndQuery::try_from(spec.path.as_str()).expect("health check paths are validated");
        Self {
            route: id.0.clone(),
            track: id.1.clone(),
            authority: authority(&id.2),
            path,
            spec,
            protocol,
        }
    }
}

/// Where an endpoint's checks stand: its passes or failures in a row. Pure: it is told each
/// result and says the endpoint's health after it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Streak {
    passes: u32,
    failures: u32,
}

impl Streak {
    /// Counts a check that `passed`; `healthy` is the endpoint's health before it, the result
    /// its health after it: a healthy endpoint turns unhealthy at `unhealthyThreshold` failures
    /// in a row, an unhealthy one healthy at `healthyThreshold` passes in a row.
    pub(crate) fn record(&mut self, passed: bool, healthy: bool, spec: &HealthCheckSpec) -> bool {
        if passed {
            self.passes = self.passes.saturating_add(1);
            self.failures = 0;
            healthy || self.passes >= spec.healthy_threshold
        } else {
            self.failures = self.failures.saturating_add(1);
            self.passes = 0;
            healthy && self.failures < spec.unhealthy_threshold
        }
    }
}

/// Checks the endpoint every `interval` (the first at once) until the task is aborted, keeping
/// `endpoint`'s health.
pub(crate) async fn run(endpoint: Arc<EndpointHealth>, target: Target) {
    let mut ticks = tokio::time::interval(target.spec.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut streak = Streak::default();
    loop {
        ticks.tick().await;
        let passed = match tokio::time::timeout(target.spec.timeout, probe(&target)).await {
            Ok(Ok(status)) if target.spec.passes(status.as_u16()) => true,
            Ok(Ok(status)) => {
                tracing::debug!(route = %target.route, track = %target.track, endpoint = %target.authority, %status, "health check failed");
                false
            }
            Ok(Err(e)) => {
                tracing::debug!(route = %target.route, track = %target.track, endpoint = %target.authority, error = %e, "health check failed");
                false
            }
            Err(_) => {
                tracing::debug!(route = %target.route, track = %target.track, endpoint = %target.authority, "health check timed out");
                false
            }
        };
        if !passed {
            endpoint.check_failures.fetch_add(1, Ordering::Relaxed);
        }
        let healthy = !endpoint.unhealthy.load(Ordering::Relaxed);
        let now_healthy = streak.record(passed, healthy, &target.spec);
        if now_healthy != healthy {
            endpoint.unhealthy.store(!now_healthy, Ordering::Relaxed);
            if now_healthy {
                tracing::info!(route = %target.route, track = %target.track, endpoint = %target.authority,
                    "endpoint healthy again: it passed {} health checks in a row", target.spec.healthy_threshold);
            } else {
                tracing::warn!(route = %target.route, track = %target.track, endpoint = %target.authority,
                    "endpoint unhealthy: it failed {} health checks of {} in a row; its track's requests go to its other endpoints",
                    target.spec.unhealthy_threshold, target.spec.path);
            }
        }
    }
}

const USER_AGENT: &str = "switchyard-health-check";

/// Why a check got no response head.
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error("cannot connect: {0}")]
    Connect(#[from] std::io::Error),
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("the connection closed before a response")]
    Closed,
}

/// The response head of `response`, driving `connection` beside it: a connection may end in
/// the very poll that hands the response over (`Connection: close`), which is no failure.
async fn exchange<C>(
    response: impl Future<Output = hyper::Result<http::Response<hyper::body::Incoming>>>,
    connection: C,
) -> Result<StatusCode, ProbeError>
where
    C: Future,
{
    tokio::pin!(response, connection);
    tokio::select! {
        biased;
        response = &mut response => Ok(response?.status()),
        _ = &mut connection => match response.await {
            Ok(response) => Ok(response.status()),
            Err(e) if e.is_canceled() => Err(ProbeError::Closed),
            Err(e) => Err(e.into()),
        },
    }
}

/// One check: the status of the endpoint's answer to `GET path`.
async fn probe(target: &Target) -> Result<StatusCode, ProbeError> {
    let stream = TcpStream::connect(target.authority.as_str()).await?;
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(stream);
    // The connection is driven here beside the request, and closes when the check ends.
    match target.protocol {
        UpstreamProtocol::Http1 => {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
            let request = Request::get(target.path.as_str())
                .header(header::HOST, target.authority.as_str())
                .header(header::USER_AGENT, USER_AGENT)
                .header(header::CONNECTION, "close")
                .body(Empty::<Bytes>::new())
                .expect("a path, host and constant headers make a valid request");
            exchange(sender.send_request(request), connection).await
        }
        UpstreamProtocol::H2c => {
            let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            let mut uri = http::uri::Parts::default();
            uri.scheme = Some(Scheme::HTTP);
            uri.authority = Some(target.authority.clone());
            uri.path_and_query = Some(target.path.clone());
            let request = Request::get(Uri::from_parts(uri).expect("scheme, authority and path make a valid URI"))
                .header(header::USER_AGENT, USER_AGENT)
                .body(Empty::<Bytes>::new())
                .expect("a URI and constant headers make a valid request");
            exchange(sender.send_request(request), connection).await
        }
    }
}
