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
//!
//! A request with a body is copied only under `mirror.body.maxBytes`: as the body streams to the
//! primary, its bytes are also kept on the side ([`BodyCopy`], polled by the primary's upload,
//! never waited on by it), and the copy is sent, with its `Content-Length`, once the body has
//! ended within the bound. A body longer than the bound (by its `Content-Length`, or once that
//! much has come) is not copied and counts as `bodyTooLarge`; one that fails, or that the
//! primary stops taking (it answered first, or could not be reached), is not copied either. A
//! copy being buffered holds its place under `maxInFlight`, so buffers take at most
//! `maxInFlight × maxBytes` per mirror. Trailers are not copied.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Uri};
use http_body::Body;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use switchyard_config::schema::{Timeouts, UpstreamProtocol};
use switchyard_config::table::{Route, Track};
use tokio::time::Instant;

use super::Forwarder;
use crate::record::{Gauge, InFlight, Outcome, Recorder, SlotId};
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
    /// The longest body copied, bytes; `None`: requests with a body are not copied.
    max_body: Option<u64>,
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
            max_body: route.mirror_max_body(),
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
    http1: Client<HttpConnector, Full<Bytes>>,
    h2c: Client<HttpConnector, Full<Bytes>>,
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

    /// Sends a copy of `req` (its head as rewritten for the upstream) on a task of its own, to
    /// be answered within `timeout` (headers and body; past it the copy counts as a timeout),
    /// unless `maxInFlight` copies are in flight (then it is counted as dropped). Returns at
    /// once. A request with a body is copied only when the mirror copies bodies: then, unless
    /// its `Content-Length` is over the bound (counted), the returned [`BodyCopy`] is to see
    /// the body on its way to the primary, and sends the copy when the body has ended.
    pub(super) fn send<B: Body>(self, req: &Request<B>, timeout: Duration, forwarder: &Forwarder) -> Option<BodyCopy> {
        let plan = self.plan;
        let bodyless = req.body().is_end_stream();
        let max_body = match plan.max_body {
            None if !bodyless => return None,
            Some(max) if !bodyless && req.body().size_hint().lower() > max => {
                plan.gauge.count_body_too_large();
                return None;
            }
            max => max,
        };
        let place = plan.gauge.enter(plan.max_in_flight)?;
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(plan.endpoints[self.endpoint].clone());
        uri.path_and_query = Some(
            req.uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        let uri = Uri::from_parts(uri).ok()?;
        let mut head = Request::new(());
        *head.method_mut() = req.method().clone();
        *head.uri_mut() = uri;
        *head.headers_mut() = req.headers().clone();
        let headers = head.headers_mut();
        if let Some(name) = &forwarder.track_header {
            headers.insert(name.clone(), plan.header.clone());
        }
        headers.insert(SHADOW_HEADER, HeaderValue::from_static("1"));
        // The copy's body is whole when it is sent: its length is set with it.
        headers.remove(header::CONTENT_LENGTH);
        headers.remove(header::TRANSFER_ENCODING);
        let client = match plan.protocol {
            UpstreamProtocol::Http1 => forwarder.mirrors.http1.clone(),
            UpstreamProtocol::H2c => forwarder.mirrors.h2c.clone(),
        };
        let pending = Pending {
            head,
            client,
            recorder: Arc::clone(forwarder.publisher.recorder()),
            plan,
            place,
            timeout,
        };
        match max_body {
            Some(max) if !bodyless => Some(BodyCopy {
                pending,
                max,
                buffer: BytesMut::new(),
            }),
            _ => {
                pending.send(Bytes::new());
                None
            }
        }
    }
}

/// A copy waiting for its body: its head, and what sending it takes.
#[derive(Debug)]
struct Pending {
    head: Request<()>,
    client: Client<HttpConnector, Full<Bytes>>,
    recorder: Arc<Recorder>,
    plan: Arc<MirrorPlan>,
    /// Its place under the mirror's `maxInFlight`, from the first byte kept to the answer.
    place: InFlight,
    timeout: Duration,
}

impl Pending {
    /// Sends the copy with `body`, on a task of its own; records its outcome on the mirror
    /// track's shadow series.
    fn send(self, body: Bytes) {
        let Self {
            head,
            client,
            recorder,
            plan,
            place,
            timeout,
        } = self;
        let (mut parts, ()) = head.into_parts();
        if !body.is_empty() {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        let copy = Request::from_parts(parts, Full::new(body));
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

/// The copy of a request body on its way to the primary, kept up to the mirror's bound; the
/// copy is sent when the body ends within it ([`BodyCopy::ended`]). Dropped before then (the
/// body failed, or the primary stopped taking it), it sends nothing and gives its place back.
#[derive(Debug)]
pub(crate) struct BodyCopy {
    pending: Pending,
    max: u64,
    buffer: BytesMut,
}

impl BodyCopy {
    /// Keeps `data`, the next piece of the body; `false` when the body is now over the bound
    /// (counted): the copy is to be dropped.
    pub(crate) fn keep(&mut self, data: &[u8]) -> bool {
        if (self.buffer.len() + data.len()) as u64 > self.max {
            self.pending.plan.gauge.count_body_too_large();
            return false;
        }
        self.buffer.extend_from_slice(data);
        true
    }

    /// The body ended, all of it kept: the copy goes.
    pub(crate) fn ended(self) {
        self.pending.send(self.buffer.freeze());
    }
}
