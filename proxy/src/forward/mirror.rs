//! Shadow traffic: a copy of a request sent, on a task of its own, to the route's mirror track,
//! its answer read to the end, measured as the track's shadow series and thrown away.
//!
//! The copy shares nothing with the client's exchange but the head it was copied from: its own
//! connections (a pool apart from the primary one, so a slow shadow never holds a connection a
//! real request could take), its own task, its own deadline. Whatever the shadow does (hang,
//! fail, answer garbage), the client's request goes on as if there were none. Copies in flight
//! are bounded per (route, track); one past the bound is not sent and is counted as dropped.
//!
//! The copy has the primary's method, path, query and headers as rewritten for the upstream
//! (`Host` kept, `x-forwarded-for` and the request id as the primary has them), the track header
//! naming the mirror track, and `x-switchyard-shadow: 1`, by which an upstream can tell a copy
//! from a real request (and skip side effects). Envoy marks copies by appending `-shadow` to the
//! `Host` instead; that breaks upstreams that route by host, so Switchyard leaves it alone.
//! Requests with a body are not copied.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Uri};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use switchyard_config::schema::{Timeouts, UpstreamProtocol};
use switchyard_config::table::{Route, Track};
use tokio::time::Instant;

use super::Forwarder;
use crate::record::{Gauge, Outcome, Recorder, SlotId};
use crate::upstream::Failure;

/// The header that marks a copy: `x-switchyard-shadow: 1`.
pub const SHADOW_HEADER: HeaderName = HeaderName::from_static("x-switchyard-shadow");

/// Idle connections kept per mirror endpoint.
const MAX_IDLE_PER_ENDPOINT: usize = 32;

/// What a route's mirror needs on the request path, computed once per table.
#[derive(Debug)]
pub struct MirrorPlan {
    /// Where the copies are measured: the mirror track's shadow series.
    slot: SlotId,
    /// Copies in flight and dropped, shared by every table that mirrors to this track.
    gauge: Arc<Gauge>,
    max_in_flight: u32,
    /// The mirror track's name, for the track header.
    header: HeaderValue,
    protocol: UpstreamProtocol,
    /// `endpoints[endpoint]`: the mirror track's endpoints.
    endpoints: Box<[Authority]>,
}

impl MirrorPlan {
    /// The plan of `route`'s mirror, if it has one. Cold path (publish).
    pub fn of(route: &Route, recorder: &Recorder) -> Option<Arc<Self>> {
        let (track, max_in_flight): (&Track, u32) = route.mirror()?;
        let (slot, gauge) = recorder.shadow(route.name(), track.name());
        Some(Arc::new(Self {
            slot,
            gauge,
            max_in_flight,
            header: HeaderValue::from_str(track.name().as_str())
                .expect("track names are validated to header-safe characters"),
            protocol: track.protocol(),
            endpoints: track
                .endpoints()
                .iter()
                .map(|e| Authority::try_from(e.address()).expect("endpoints are validated as HOST:PORT"))
                .collect(),
        }))
    }

    /// Where the copies are measured.
    pub fn slot(&self) -> SlotId {
        self.slot
    }

    /// The mirror's gauge (copies in flight and dropped).
    pub fn gauge(&self) -> &Arc<Gauge> {
        &self.gauge
    }
}

/// The clients copies are sent with: pooled, apart from the primary requests' connections.
#[derive(Debug, Clone)]
pub struct Mirrors {
    http1: Client<HttpConnector, Empty<Bytes>>,
    h2c: Client<HttpConnector, Empty<Bytes>>,
}

impl Mirrors {
    /// Clients with the configuration's connect and idle timeouts.
    pub fn new(timeouts: &Timeouts) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeouts.connect));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let client = |h2c: bool| {
            Client::builder(TokioExecutor::new())
                .timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(timeouts.upstream_idle)
                .pool_max_idle_per_host(MAX_IDLE_PER_ENDPOINT)
                .http2_only(h2c)
                .build(connector.clone())
        };
        Self {
            http1: client(false),
            h2c: client(true),
        }
    }
}

/// A copy decided for one request: the route's mirror plan and the endpoint picked.
#[derive(Debug)]
pub struct ShadowCopy {
    plan: Arc<MirrorPlan>,
    endpoint: usize,
}

impl ShadowCopy {
    /// A copy to endpoint `endpoint` of `plan`'s track.
    pub fn new(plan: &Arc<MirrorPlan>, endpoint: usize) -> Self {
        Self {
            plan: Arc::clone(plan),
            endpoint,
        }
    }

    /// Sends a copy of `req`'s head (as rewritten for the upstream, its body left alone) on a
    /// task of its own, to be answered within `timeout` (headers and body; past it the copy
    /// counts as a timeout), unless the request has a body or `maxInFlight` copies are in
    /// flight (then it is counted as dropped). Returns at once.
    pub(super) fn send<B: http_body::Body>(self, req: &Request<B>, timeout: Duration, forwarder: &Forwarder) {
        if !req.body().is_end_stream() {
            return;
        }
        let plan = self.plan;
        let Some(place) = plan.gauge.enter(plan.max_in_flight) else {
            return;
        };
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(plan.endpoints[self.endpoint].clone());
        uri.path_and_query = Some(
            req.uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        let Ok(uri) = Uri::from_parts(uri) else {
            return;
        };
        let mut copy = Request::new(Empty::new());
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = uri;
        *copy.headers_mut() = req.headers().clone();
        let headers = copy.headers_mut();
        if let Some(name) = &forwarder.track_header {
            headers.insert(name.clone(), plan.header.clone());
        }
        headers.insert(SHADOW_HEADER, HeaderValue::from_static("1"));
        headers.remove(header::CONTENT_LENGTH);
        let client = match plan.protocol {
            UpstreamProtocol::Http1 => forwarder.mirrors.http1.clone(),
            UpstreamProtocol::H2c => forwarder.mirrors.h2c.clone(),
        };
        let recorder = Arc::clone(forwarder.publisher.recorder());
        tokio::spawn(async move {
            let start = Instant::now();
            let exchange = async {
                let response = client.request(copy).await.map_err(|e| Failure::of(&e))?;
                let status = response.status().as_u16();
                let mut body = response.into_body();
                while let Some(frame) = body.frame().await {
                    frame.map_err(|e| Failure::of_hyper(&e))?;
                }
                Ok::<u16, Failure>(status)
            };
            let ended = match tokio::time::timeout(timeout, exchange).await {
                Ok(ended) => ended,
                Err(_) => Err(Failure::Timeout),
            };
            let outcome = match ended {
                Ok(status) => Outcome {
                    status,
                    latency: start.elapsed(),
                    upstream_error: None,
                },
                Err(failure) => Outcome {
                    status: failure.status().as_u16(),
                    latency: start.elapsed(),
                    upstream_error: Some(failure.kind()),
                },
            };
            recorder.record(plan.slot, &outcome, Instant::now());
            drop(place);
        });
    }
}
