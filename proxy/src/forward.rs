//! One request's way through the proxy: the edge's checks ([`crate::edge`]), path
//! normalization, load the table snapshot once, decide, rewrite the request for the upstream,
//! forward it with the route's timeout, check the upstream's framing, and hand back the response
//! with a body that records the request when it ends.
//!
//! Blame: what the upstream did (its statuses, a failed connection, a timeout, broken framing)
//! counts against the track; what the client did (a refused request, a body that failed or
//! stopped, leaving before the answer) counts as the route's client error and in no track.

use std::borrow::Cow;
use std::cell::Cell;
use std::convert::Infallible;
use std::error::Error as _;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use hyper::client::conn::http1::SendRequest;
use pin_project_lite::pin_project;
use switchyard_config::RequestView;
use switchyard_config::path::{self, PathOptions};
use switchyard_config::schema::{Timeouts, UpstreamProtocol};
use tokio::time::{Instant, Sleep};

use crate::access_log::{self, AccessLog, Entry};
use crate::edge::{self, Refused};
use crate::frame_guard::Refusal;
use crate::health::{self, Passive};
use crate::idle::IdleTimer;
use crate::publish::Publisher;
use crate::record::{ClientError, Outcome, Recorder, SlotId, UpstreamError};
use crate::request_body::{BodyLimits, BodyState, RequestBody};
use crate::request_id::RequestIds;
use crate::upgrade::{Offer, Tunnel};
use crate::upstream::{EndpointKey, Failure, Lease, Upstreams};

/// What the proxy knows of a downstream connection, computed once per connection.
#[derive(Debug)]
pub struct Downstream {
    /// The client's address.
    pub peer: SocketAddr,
    /// Whether the connection is TLS (`x-forwarded-proto: https`).
    pub tls: bool,
    /// The client's IP as a header value, for `x-forwarded-for`.
    client: HeaderValue,
    /// The timer of the connection's upstream timeouts, re-armed by each request. A timer that
    /// is armed and moved later only has its deadline stored (tokio moves it in its wheel when
    /// the old deadline comes), where a fresh one per request costs an insertion into the wheel
    /// and a removal. Concurrent requests (HTTP/2) that find it taken make their own.
    timer: Mutex<Option<Pin<Box<Sleep>>>>,
}

impl Downstream {
    /// A connection from `peer`, over TLS or not.
    pub fn new(peer: SocketAddr, tls: bool) -> Self {
        let client = HeaderValue::from_str(&peer.ip().to_string()).expect("an IP address is a valid header value");
        Self {
            peer,
            tls,
            client,
            timer: Mutex::new(None),
        }
    }

    /// The connection's upstream-timeout timer, armed for `deadline`.
    fn arm(&self, deadline: Instant) -> Pin<Box<Sleep>> {
        match self.timer.lock().ok().and_then(|mut slot| slot.take()) {
            Some(mut timer) => {
                timer.as_mut().reset(deadline);
                timer
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        }
    }

    /// Keeps `timer` for the connection's next request.
    fn disarm(&self, timer: Pin<Box<Sleep>>) {
        if let Ok(mut slot) = self.timer.lock() {
            *slot = Some(timer);
        }
    }
}

/// Forwards requests; shared by every connection of every listener.
#[derive(Debug)]
pub struct Forwarder {
    publisher: Arc<Publisher>,
    upstreams: Upstreams,
    timeouts: Timeouts,
    /// How long a request body may take.
    body_limits: BodyLimits,
    paths: PathOptions,
    track_header: Option<HeaderName>,
    request_ids: RequestIds,
    access_log: Option<Arc<AccessLog>>,
    no_route: AtomicU64,
    refused: AtomicU64,
}

impl Forwarder {
    /// A forwarder deciding on `publisher`'s tables, normalizing paths as `paths` says; request
    /// bodies must come at `min_rate` bytes per second at least (`limits.requestBodyMinRate`).
    /// Request ids are treated as `request_ids` says; with `access_log`, every request is
    /// logged there.
    #[allow(clippy::too_many_arguments)] // one per setting, each named at the one caller
    pub fn new(
        publisher: Arc<Publisher>,
        upstreams: Upstreams,
        timeouts: Timeouts,
        min_rate: u64,
        paths: PathOptions,
        track_header: Option<HeaderName>,
        request_ids: RequestIds,
        access_log: Option<Arc<AccessLog>>,
    ) -> Self {
        Self {
            publisher,
            upstreams,
            timeouts,
            body_limits: BodyLimits {
                idle: timeouts.request_body_idle,
                grace: timeouts.request_body_grace,
                min_rate,
            },
            paths,
            track_header,
            request_ids,
            access_log,
            no_route: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// Requests that matched no route (answered 404) since start.
    pub fn no_route_count(&self) -> u64 {
        self.no_route.load(Ordering::Relaxed)
    }

    /// Requests refused before a route could be told (a bad `Host` or path, `CONNECT`, a head
    /// hyper could not parse), or refused with no route matching, since start. Refusals of a
    /// routed request count as that route's client errors instead.
    pub fn refused_count(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The access log, when it is on.
    pub fn access_log(&self) -> Option<&Arc<AccessLog>> {
        self.access_log.as_ref()
    }

    /// Counts a request refused before any route saw it.
    pub fn count_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Answers a request the edge refused, counting it as a client error of its route when it
    /// can still be routed (its head is as the client sent it), else as refused.
    fn refuse(
        &self,
        req: &Request<Incoming>,
        refused: &Refused,
        mut log: Option<&mut access_log::Pending>,
    ) -> Response<ProxyBody> {
        let slot = refused
            .routable()
            .then(|| {
                let snapshot = self.publisher.load();
                let d = snapshot.table.decide(&RequestView::of_request(req, random()))?;
                let plan = snapshot.plan(d.route.index(), d.track.index());
                if let Some(log) = log.as_deref_mut() {
                    log.entry().decided(&plan.labels, d.endpoint.index());
                }
                Some(plan.slot)
            })
            .flatten();
        if let Some(log) = log {
            log.entry().client_failed(refused.client_error());
        }
        match slot {
            Some(slot) => self
                .publisher
                .recorder()
                .record_client_error(slot, refused.client_error(), Instant::now()),
            None => self.count_refused(),
        }
        closing(local(refused.status(), refused.message(), None))
    }

    /// Decides `req` and starts forwarding it; the returned future ends with the response.
    /// `link` is the request's hold on its connection: kept while the request is in flight,
    /// dropped at once when the proxy answers it itself (no route).
    pub fn forward<L: Link>(link: L, req: Request<Incoming>) -> Forwarding<L, impl Future<Output = Sent> + Send> {
        let start = Instant::now();
        let this = link.forwarder();
        let downstream = link.downstream();
        let mut req = req;
        let mut log = this
            .access_log
            .as_ref()
            .map(|l| l.pending(Entry::begin(&req, downstream.peer, start)));
        let answer = |response: Response<ProxyBody>, log: Option<access_log::Pending>| {
            if let Some(mut log) = log {
                answered(log.entry(), &response);
            }
            Forwarding {
                local: Some(Box::new(response)),
                exchange: None,
            }
        };

        // The edge: nothing refused here reaches an upstream or a track's numbers.
        let mut seen = Seen::of(req.headers());
        let refused = match link.refusal() {
            Some(refusal) => Some(Refused::from(refusal)),
            None => edge::check(req.method(), req.version(), seen.hosts, seen.host_valid)
                .err()
                .or_else(|| this.authority_conflict(&req)),
        };
        if let Some(refused) = refused {
            return answer(this.refuse(&req, &refused, log.as_mut()), log);
        }
        match path::normalize(req.uri().path(), &this.paths) {
            Ok(Cow::Borrowed(_)) => {}
            Ok(Cow::Owned(normalized)) => match with_path(req.uri(), &normalized) {
                Some(uri) => *req.uri_mut() = uri,
                None => {
                    let refused = Refused::Path(path::PathError::InvalidPercentEncoding);
                    return answer(this.refuse(&req, &refused, log.as_mut()), log);
                }
            },
            Err(e) => return answer(this.refuse(&req, &Refused::Path(e), log.as_mut()), log),
        }

        // One snapshot decides everything about this request; it is released before any await.
        let (slot, track, (authority, key), protocol, timeout, passive) = {
            let snapshot = this.publisher.load();
            let Some(d) = snapshot.table.decide(&RequestView::of_request(&req, random())) else {
                this.no_route.fetch_add(1, Ordering::Relaxed);
                let response = local(
                    StatusCode::NOT_FOUND,
                    Bytes::from_static(b"no route matches this request\n"),
                    None,
                );
                return answer(response, log);
            };
            let plan = snapshot.plan(d.route.index(), d.track.index());
            let (endpoint, passive) = health::pick(plan.health.as_ref(), &d, start);
            if let Some(log) = &mut log {
                log.entry().decided(&plan.labels, endpoint);
            }
            (
                plan.slot,
                plan.header.clone(),
                plan.endpoints[endpoint].clone(),
                d.track.protocol(),
                d.route.timeout().unwrap_or(this.timeouts.request),
                passive,
            )
        };

        // The upstream request: same method, path, query and body; rewritten target and headers.
        // Rewritten in place: the request is large, and taking it apart and back moves it twice.
        let mut offer = None;
        if seen.hop_by_hop {
            // Only an HTTP/1.1 connection to an HTTP/1.1 track can be switched to a tunnel.
            if protocol == UpstreamProtocol::Http1 && link.upgradable() {
                offer = Offer::of(&mut req);
            }
            strip_hop_by_hop(req.headers_mut());
            seen = Seen::of(req.headers()); // `Connection` may have named any of them
            if let Some(offer) = &offer {
                offer.restore(req.headers_mut());
            }
        }
        if seen.expect {
            // Answered here already: hyper sends 100 Continue when the body is read.
            req.headers_mut().remove(header::EXPECT);
        }
        // An absolute-form target's authority (or HTTP/2's `:authority`) is the one routing saw:
        // the upstream gets it as `Host` (RFC 9112 §3.2.2).
        if let Some(host) = req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            req.headers_mut().insert(header::HOST, host);
        }
        let headers = req.headers_mut();
        forwarded_for(headers, downstream, seen.forwarded_for);
        if let Some(name) = &this.track_header {
            headers.insert(name.clone(), track.clone());
        }
        let ids = &this.request_ids;
        let id = (ids.active() || log.is_some()).then(|| ids.apply(headers)).flatten();
        if let (Some(log), Some(id)) = (&mut log, &id) {
            log.entry().request_id(id.as_bytes());
        }
        let response_id = id.filter(|_| ids.in_response());
        let path_and_query = |uri: &Uri| {
            uri.path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"))
        };

        let mut body = None;
        let mut req = req.map(|incoming| {
            let (wrapped, state) = RequestBody::new(incoming, start, this.body_limits);
            body = state;
            wrapped
        });
        if let Some(log) = &mut log {
            log.entry().request_body(body.clone());
        }
        let step = match protocol {
            UpstreamProtocol::Http1 => {
                // Origin-form on a connection to the endpoint: `GET /path?query HTTP/1.1`, which
                // an HTTP/1.1 request has already, unless it came in absolute-form.
                if req.uri().scheme().is_some() || req.uri().authority().is_some() {
                    *req.uri_mut() = Uri::from(path_and_query(req.uri()));
                }
                *req.version_mut() = Version::HTTP_11;
                if offer.is_some() {
                    let (upstreams, authority) = (this.upstreams.clone(), authority.clone());
                    Step::Elsewhere {
                        exchange: Box::pin(
                            async move { upstreams.send_upgrade(authority, req).await.map(|r| (r, None)) },
                        ),
                    }
                } else {
                    Step::Unsent { request: Some(req) }
                }
            }
            UpstreamProtocol::H2c => {
                let mut uri = http::uri::Parts::default();
                uri.scheme = Some(Scheme::HTTP);
                uri.authority = Some(authority.clone());
                uri.path_and_query = Some(path_and_query(req.uri()));
                *req.uri_mut() = Uri::from_parts(uri).expect("scheme, authority and path make a valid URI");
                *req.version_mut() = Version::HTTP_2;
                let sent = this.upstreams.send_h2c(req);
                Step::Elsewhere {
                    exchange: Box::pin(async move { sent.await.map(|r| (r, None)) }),
                }
            }
        };
        let extras = (log.is_some() || response_id.is_some() || offer.is_some()).then(|| {
            Box::new(Extras {
                log,
                response_id,
                offer,
            })
        });
        Forwarding {
            local: None,
            exchange: Some(Exchange {
                link,
                extras,
                start,
                deadline: start + timeout,
                body,
                recorded: false,
                slot,
                track,
                timer: None,
                key,
                passive,
                authority,
                send: SendRequest::try_send_request,
                sender: None,
                step,
            }),
        }
    }
}

impl Forwarder {
    /// An HTTP/2 request whose `host` header names another authority than its `:authority`.
    fn authority_conflict(&self, req: &Request<Incoming>) -> Option<Refused> {
        if req.version() != Version::HTTP_2 {
            return None;
        }
        let authority = req.uri().authority()?;
        let host = req.headers().get(header::HOST)?;
        (!authority.as_str().as_bytes().eq_ignore_ascii_case(host.as_bytes())).then_some(Refused::Authority)
    }
}

/// `uri` with its path replaced by `path`, the query kept.
fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    let path_and_query = match uri.query() {
        Some(query) => PathAndQuery::try_from(format!("{path}?{query}")).ok()?,
        None => PathAndQuery::try_from(path).ok()?,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query);
    Uri::from_parts(parts).ok()
}

/// A request's hold on its downstream connection: the forwarder that serves the connection and
/// what the proxy knows of it.
pub trait Link {
    /// The forwarder serving the connection.
    fn forwarder(&self) -> &Forwarder;
    /// The downstream connection.
    fn downstream(&self) -> &Downstream;
    /// Whether the connection's frame guard refused this request's head (HTTP/1).
    fn refusal(&self) -> Option<Refusal> {
        None
    }
    /// Whether the connection can be switched to another protocol (HTTP/1.1).
    fn upgradable(&self) -> bool {
        false
    }
    /// Takes an accepted upgrade, to run once the connection has written its `101`. Only a
    /// link that is [`Link::upgradable`] is given one.
    fn tunnel(&self, tunnel: Tunnel) {
        drop(tunnel);
    }
}

/// What only some requests carry, boxed so that the others carry one word for it: the access
/// log's entry, the id to answer with, the upgrade offered upstream.
#[derive(Debug)]
struct Extras {
    log: Option<access_log::Pending>,
    response_id: Option<HeaderValue>,
    offer: Option<Offer>,
}

/// Finishes `entry` with the proxy's own `response`.
fn answered(entry: &mut Entry, response: &Response<ProxyBody>) {
    entry.answered(response.status().as_u16());
    entry.bytes_out = response.body().size_hint().exact().unwrap_or(0);
}

/// What an exchange with an upstream ends in: its response and, over HTTP/1.1, the connection
/// it came over; or why there is none.
type Exchanged = Result<(Response<Incoming>, Option<Lease>), Failure>;

/// An exchange off the hot path: on a new connection, or over h2c.
type Elsewhere = Pin<Box<dyn Future<Output = Exchanged> + Send>>;

/// What hyper answers a request sent on an HTTP/1.1 connection.
pub type Sent = Result<Response<Incoming>, TrySendError<Request<RequestBody>>>;

pin_project! {
    /// One request on its way through the proxy, from the decision to the response head.
    ///
    /// Written out by hand rather than as nested `async` blocks: hyper moves every request's
    /// future into place, and nested blocks each keep their own copy of the request and of
    /// their inner futures' states, which made the future kilobytes large, copied several
    /// times per request. This one has one field per thing it holds or waits on.
    pub struct Forwarding<L: Link, F> {
        // A response of the proxy's own (no route), taken when polled; boxed, being rare.
        local: Option<Box<Response<ProxyBody>>>,
        // Or the exchange with an upstream.
        #[pin]
        exchange: Option<Exchange<L, F>>,
    }
}

pin_project! {
    /// A request's exchange with its upstream, bounded by the request's timeout: on a pooled
    /// HTTP/1.1 connection of this thread (waiting for it to be ready, and moving on to the
    /// next when it turns out closed before the request was written), else on a new connection
    /// or over h2c. Dropped before it ends, it counts the client as gone.
    pub struct Exchange<L: Link, F> {
        link: L,
        extras: Option<Box<Extras>>,
        start: Instant,
        // `start` + the request timeout: when the answer is overdue, unless the request body
        // ended later (the timeout counts from when the upstream has the whole request).
        deadline: Instant,
        // The request body's state, unless it was empty.
        body: Option<Arc<BodyState>>,
        // Whether the request's end was recorded.
        recorded: bool,
        slot: SlotId,
        // The track's name as a header value.
        track: HeaderValue,
        // The connection's timer, taken the first time the exchange has to wait.
        timer: Option<Pin<Box<Sleep>>>,
        key: EndpointKey,
        // Where the endpoint's outcome goes, for a track with outlier detection.
        passive: Option<Passive>,
        authority: Authority,
        // `SendRequest::try_send_request`, whose future has no name to write here.
        send: fn(&mut SendRequest<RequestBody>, Request<RequestBody>) -> F,
        // The pooled connection the request waits for, or was sent on.
        sender: Option<SendRequest<RequestBody>>,
        #[pin]
        step: Step<F>,
    }

    impl<L: Link, F> PinnedDrop for Exchange<L, F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if !*this.recorded {
                // hyper gave up on the request: its client left before the answer.
                let recorder = this.link.forwarder().publisher.recorder();
                recorder.record_client_error(*this.slot, ClientError::Aborted, Instant::now());
                if let Some(mut log) = this.extras.as_mut().and_then(|e| e.log.take()) {
                    log.entry().client_failed(ClientError::Aborted);
                }
            }
        }
    }
}

pin_project! {
    /// Where an exchange stands; the request and the future it becomes share one place.
    #[project = StepProj]
    enum Step<F> {
        // Waiting for a pooled connection to be ready, or for one to be found.
        Unsent { request: Option<Request<RequestBody>> },
        // Sent on the pooled connection in `Exchange::sender`.
        Sent { #[pin] answer: F },
        // On a new connection, or over h2c.
        Elsewhere { exchange: Elsewhere },
    }
}

/// The output is hyper's service result; every request gets a response.
impl<L: Link, F: Future<Output = Sent>> Future for Forwarding<L, F> {
    type Output = Result<Response<ProxyBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.exchange.as_pin_mut() {
            Some(exchange) => exchange.poll(cx).map(Ok),
            None => Poll::Ready(Ok(*this.local.take().expect("polled after it ended"))),
        }
    }
}

impl<L: Link, F: Future<Output = Sent>> Future for Exchange<L, F> {
    type Output = Response<ProxyBody>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response<ProxyBody>> {
        let exchanged = loop {
            match self.as_mut().poll_exchange(cx) {
                Poll::Ready(exchanged) => break exchanged,
                Poll::Pending => {
                    let this = self.as_mut().project();
                    let downstream = this.link.downstream();
                    let timer = this.timer.get_or_insert_with(|| downstream.arm(*this.deadline));
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    // Overdue only once the upstream has had the whole request for the timeout.
                    let now = Instant::now();
                    let timeout = *this.deadline - *this.start;
                    let due = match this.body.as_ref().map(|b| b.ended()) {
                        None => None,
                        Some(None) => Some(now + timeout),
                        Some(Some(ended)) => Some(ended + timeout).filter(|&due| due > now),
                    };
                    match due {
                        Some(due) => timer.as_mut().reset(due),
                        None => break Err(Failure::Timeout),
                    }
                }
            }
        };
        let this = self.project();
        *this.recorded = true;
        if let Some(timer) = this.timer.take() {
            this.link.downstream().disarm(timer);
        }
        let forwarder = this.link.forwarder();
        let track = forwarder.track_header.as_ref().map(|name| (name, &*this.track));
        let recorder = forwarder.publisher.recorder();
        let (log, response_id, offer) = match this.extras.take() {
            Some(extras) => (extras.log, extras.response_id, extras.offer),
            None => (None, None, None),
        };
        let answer = exchanged.and_then(|(response, lease)| match offer {
            Some(offer) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                offer.accept(response).map(|(head, ends)| Answer::Switched(head, ends))
            }
            _ => Ok(Answer::Forward(checked(response)?, lease)),
        });
        let id = response_id.map(|id| (forwarder.request_ids.header(), id));
        let failure = match answer {
            Ok(Answer::Forward(response, lease)) => {
                let (mut parts, body) = response.into_parts();
                if let Some((name, value)) = track {
                    parts.headers.insert(name.clone(), value.clone());
                }
                if let Some((name, value)) = id {
                    parts.headers.insert(name.clone(), value);
                }
                let status = parts.status.as_u16();
                let pending = Pending {
                    recorder: Arc::clone(recorder),
                    slot: *this.slot,
                    status,
                    start: *this.start,
                    end: None,
                    error: None,
                    passive: this.passive.take(),
                    log: log.map(|mut log| {
                        log.entry().responded(status, Instant::now());
                        log
                    }),
                };
                let body = ProxyBody::Upstream {
                    body,
                    pending: Some(pending),
                    lease,
                    request: this.body.clone(),
                    idle_ms: u32::try_from(forwarder.timeouts.response_body_idle.as_millis()).unwrap_or(u32::MAX),
                    waiting: IdleTimer::default(),
                };
                return Poll::Ready(Response::from_parts(parts, body));
            }
            Ok(Answer::Switched(head, ends)) => {
                let (mut parts, ()) = head.into_parts();
                if let Some((name, value)) = track {
                    parts.headers.insert(name.clone(), value.clone());
                }
                if let Some((name, value)) = id {
                    parts.headers.insert(name.clone(), value);
                }
                // One request of the track, measured to its `101`; the tunnel is not.
                let now = Instant::now();
                let outcome = Outcome {
                    status: 101,
                    latency: now.saturating_duration_since(*this.start),
                    upstream_error: None,
                };
                recorder.record(*this.slot, &outcome, now);
                if let Some(passive) = this.passive.take() {
                    passive.observe(101, None, now);
                }
                let log = log.map(|mut log| {
                    log.entry().responded(101, now);
                    log
                });
                this.link.tunnel(Tunnel {
                    ends,
                    idle: forwarder.timeouts.upgrade_idle,
                    log,
                });
                return Poll::Ready(Response::from_parts(parts, ProxyBody::Local(Full::new(Bytes::new()))));
            }
            Err(failure) => failure,
        };
        let finish = |mut response: Response<ProxyBody>, log: Option<access_log::Pending>| {
            if let Some((name, value)) = id {
                response.headers_mut().insert(name.clone(), value);
            }
            if let Some(mut log) = log {
                answered(log.entry(), &response);
            }
            Poll::Ready(response)
        };
        // The upstream request failed because its body did: the client's fault, not the track's.
        if let Some(fault) = this.body.as_ref().and_then(|b| b.fault()) {
            recorder.record_client_error(*this.slot, fault, Instant::now());
            let refused = Refused::Body(fault);
            let log = log.map(|mut log| {
                log.entry().client_failed(fault);
                log
            });
            return finish(closing(local(refused.status(), refused.message(), track)), log);
        }
        let status = failure.status();
        let outcome = Outcome {
            status: status.as_u16(),
            latency: this.start.elapsed(),
            upstream_error: Some(failure.kind()),
        };
        let now = Instant::now();
        recorder.record(*this.slot, &outcome, now);
        if let Some(passive) = this.passive.take() {
            passive.observe(outcome.status, outcome.upstream_error, now);
        }
        let log = log.map(|mut log| {
            log.entry().upstream_failed(failure.kind());
            log
        });
        finish(
            local(status, Bytes::from_static(failure.message().as_bytes()), track),
            log,
        )
    }
}

/// What the upstream's answer became.
enum Answer {
    /// A response to pass on, with the connection it came over.
    Forward(Response<Incoming>, Option<Lease>),
    /// An upgrade it accepted: the `101` to send and the tunnel's ends.
    Switched(Response<()>, crate::upgrade::Ends),
}

/// The upstream's response head, checked for framing a proxy must not pass on (RFC 9112 §6.1,
/// §6.3): `Transfer-Encoding` other than exactly one `chunked`, `Transfer-Encoding` with
/// `Content-Length`, a status outside 100–599, or `101` to a request that asked for no upgrade
/// (the proxy strips `Upgrade`). Hop-by-hop headers are removed on the way, a list of equal
/// lengths becomes one, and the version becomes the proxy's.
fn checked(mut response: Response<Incoming>) -> Result<Response<Incoming>, Failure> {
    let status = response.status().as_u16();
    if status == 101 || !(100..600).contains(&status) {
        return Err(Failure::Protocol);
    }
    // The proxy speaks its own version downstream (RFC 9110 §6.2), whatever the upstream's.
    *response.version_mut() = Version::HTTP_11;
    // One pass over the names finds what needs work; most responses need none.
    let (mut hop_by_hop, mut length_list) = (false, false);
    for (name, value) in response.headers() {
        if name == header::CONTENT_LENGTH {
            length_list |= value.as_bytes().contains(&b',');
        } else {
            hop_by_hop |= maybe_hop_by_hop(name);
        }
    }
    if length_list {
        // hyper's client takes `Content-Length: 5, 5` as 5; downstream gets the one value.
        let exact = response.body().size_hint().exact().ok_or(Failure::Protocol)?;
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(exact));
    }
    if !hop_by_hop {
        return Ok(response);
    }
    let headers = response.headers_mut();
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
    if let Some(coding) = codings.next()
        && (codings.next().is_some()
            || !coding.as_bytes().eq_ignore_ascii_case(b"chunked")
            || headers.contains_key(header::CONTENT_LENGTH))
    {
        return Err(Failure::Protocol);
    }
    strip_hop_by_hop(headers);
    Ok(response)
}

/// `response` with `Connection: close`: the request's connection cannot go on (its framing is
/// lost, or its client is refused). HTTP/2 drops the header and keeps the connection.
fn closing(mut response: Response<ProxyBody>) -> Response<ProxyBody> {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

impl<L: Link, F: Future<Output = Sent>> Exchange<L, F> {
    /// Drives the exchange to the response head, without the timeout.
    fn poll_exchange(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Exchanged> {
        let mut this = self.project();
        let upstreams = &this.link.forwarder().upstreams;
        loop {
            match this.step.as_mut().project() {
                StepProj::Sent { answer } => {
                    let answer = std::task::ready!(answer.poll(cx));
                    let sender = this.sender.take().expect("a sent request keeps its connection");
                    match answer {
                        Ok(response) => return Poll::Ready(Ok((response, Some(upstreams.lease(*this.key, sender))))),
                        Err(mut e) => match e.take_message() {
                            // Not written: the connection had closed; try the next one.
                            Some(unsent) => this.step.set(Step::Unsent { request: Some(unsent) }),
                            None => return Poll::Ready(Err(Failure::of_hyper(e.error()))),
                        },
                    }
                }
                StepProj::Elsewhere { exchange } => return exchange.as_mut().poll(cx),
                StepProj::Unsent { request } => {
                    if let Some(sender) = this.sender {
                        // Given back when its last response ended, a connection may need one
                        // more poll before it takes the next request.
                        match std::task::ready!(sender.poll_ready(cx)) {
                            Err(_) => *this.sender = None,
                            Ok(()) => {
                                let request = request.take().expect("a request waits for its connection");
                                let answer = (this.send)(sender, request);
                                this.step.set(Step::Sent { answer });
                            }
                        }
                    } else if let Some(sender) = upstreams.take_idle(*this.key, *this.start) {
                        *this.sender = Some(sender);
                    } else {
                        // The cold path, boxed so that its state does not enlarge every request.
                        let request = request.take().expect("an exchange has a request to send");
                        let (upstreams, key, authority) = (upstreams.clone(), *this.key, this.authority.clone());
                        let exchange: Elsewhere = Box::pin(async move {
                            let (response, lease) = upstreams.connect_and_send(key, authority, request).await?;
                            Ok((response, Some(lease)))
                        });
                        this.step.set(Step::Elsewhere { exchange });
                    }
                }
            }
        }
    }
}

/// A response the proxy makes itself, with a short body naming the cause.
pub fn local(status: StatusCode, message: Bytes, track: Option<(&HeaderName, &HeaderValue)>) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::Local(Full::new(message)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some((name, value)) = track {
        headers.insert(name.clone(), value.clone());
    }
    response
}

/// Removes the headers that describe one connection rather than the message (RFC 9110 §7.6.1):
/// `Connection` and every header it names, and the well-known hop-by-hop ones. One pass over
/// the names finds whether there is anything to remove; most messages have nothing, and then
/// nothing is hashed or looked up.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(maybe_hop_by_hop) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        headers.remove(header::CONNECTION);
        for name in named {
            headers.remove(name);
        }
    }
    for name in [
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TRAILER,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    // `TE: trailers` is end-to-end in practice (gRPC needs it); any other TE is hop-by-hop.
    if headers.get(header::TE).is_some_and(|v| v != "trailers") {
        headers.remove(header::TE);
    }
}

/// Whether `name` is one that [`strip_hop_by_hop`] may remove (`TE` only when it is not
/// `trailers`). Standard names compare as enum values.
fn maybe_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::TE
        || name == header::UPGRADE
        || name == header::TRAILER
        || name == header::PROXY_AUTHENTICATE
        || name == header::PROXY_AUTHORIZATION
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// What one pass over a request's header names finds, so that headers it lacks are never
/// looked up.
#[derive(Debug, Default)]
struct Seen {
    /// A header [`strip_hop_by_hop`] may remove.
    hop_by_hop: bool,
    expect: bool,
    /// `Host` lines.
    hosts: usize,
    /// Whether every `Host` line is a valid `uri-host [":" port]`.
    host_valid: bool,
    forwarded_for: bool,
}

impl Seen {
    fn of(headers: &HeaderMap) -> Self {
        let mut seen = Self {
            host_valid: true,
            ..Self::default()
        };
        // Every value with its name: repeated `Host` lines are seen without a lookup.
        for (name, value) in headers {
            if name == header::HOST {
                seen.hosts += 1;
                seen.host_valid &= edge::valid_host(value.as_bytes());
            } else if name == header::EXPECT {
                seen.expect = true;
            } else if name.as_str() == X_FORWARDED_FOR.as_str() {
                seen.forwarded_for = true;
            } else if maybe_hop_by_hop(name) {
                seen.hop_by_hop = true;
            }
        }
        seen
    }
}

/// Appends the client to `x-forwarded-for` (`earlier`: the request has one) and names the
/// scheme in `x-forwarded-proto`.
fn forwarded_for(headers: &mut HeaderMap, downstream: &Downstream, earlier: bool) {
    let earlier = earlier
        .then(|| headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()))
        .flatten();
    let value = match earlier {
        Some(earlier) => HeaderValue::from_str(&format!("{earlier}, {}", downstream.peer.ip())).ok(),
        None => Some(downstream.client.clone()),
    };
    if let Some(v) = value {
        headers.insert(X_FORWARDED_FOR, v);
    }
    let proto = if downstream.tls { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Fresh 64 bits for a request's weighted pick: a per-thread wyrand stream seeded from the
/// process's random hasher keys. Not cryptographic; it only has to be uniform.
pub(crate) fn random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(RandomState::new().hash_one(std::thread::current().id()));
    }
    STATE.with(|s| {
        let next = s.get().wrapping_add(0xa076_1d64_78bd_642f);
        s.set(next);
        let t = u128::from(next) * u128::from(next ^ 0xe703_7ed1_a0b4_28db);
        (t as u64) ^ ((t >> 64) as u64)
    })
}

/// A response body: the upstream's, measured when it ends, or one the proxy made.
#[derive(Debug)]
pub enum ProxyBody {
    /// Streams the upstream's body; the request is recorded when it ends, fails or is dropped.
    Upstream {
        /// The upstream response body.
        body: Incoming,
        /// Recorded once, then `None`.
        pending: Option<Pending>,
        /// The HTTP/1.1 connection the body comes over, given back to the pool when the body
        /// ends cleanly after the request body did, and dropped (closed) otherwise.
        lease: Option<Lease>,
        /// The request body, unless it was empty: abandoned if it has not ended when this body
        /// does.
        request: Option<Arc<BodyState>>,
        /// `timeouts.responseBodyIdle` in ms (kept small: every response moves this body).
        idle_ms: u32,
        /// Since when the upstream has sent nothing.
        waiting: IdleTimer,
    },
    /// A body made by the proxy (errors, 404).
    Local(Full<Bytes>),
}

/// A request waiting to be recorded; recording happens on drop, so no path can skip it.
#[derive(Debug)]
pub struct Pending {
    recorder: Arc<Recorder>,
    slot: SlotId,
    status: u16,
    start: Instant,
    /// When the body ended, if it was seen to end.
    end: Option<Instant>,
    error: Option<UpstreamError>,
    /// Where the endpoint's outcome goes, for a track with outlier detection.
    passive: Option<Passive>,
    /// The access log's entry, when the log is on.
    log: Option<access_log::Pending>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let now = self.end.unwrap_or_else(Instant::now);
        let outcome = Outcome {
            status: self.status,
            latency: now.saturating_duration_since(self.start),
            upstream_error: self.error,
        };
        self.recorder.record(self.slot, &outcome, now);
        if let Some(passive) = self.passive.take() {
            passive.observe(self.status, self.error, now);
        }
        if let Some(mut log) = self.log.take() {
            if let Some(error) = self.error {
                log.entry().upstream_failed(error);
            }
            log.finish_at(now);
        }
    }
}

/// Whose fault a failed upstream response body is: the upstream's framing (a malformed chunk, a
/// body shorter than its length: hyper's decoder reports invalid or missing bytes), else its
/// connection (reset).
fn body_error_kind(e: &hyper::Error) -> UpstreamError {
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::InvalidData
                | std::io::ErrorKind::InvalidInput
                | std::io::ErrorKind::UnexpectedEof => UpstreamError::Protocol,
                _ => UpstreamError::Reset,
            };
        }
        source = s.source();
    }
    if e.is_parse() || e.is_incomplete_message() {
        UpstreamError::Protocol
    } else {
        UpstreamError::Reset
    }
}

/// The body ended cleanly: record the request and give the connection back, unless its
/// request body is still coming. A connection is only ever pooled with its exchange whole:
/// one whose request body still trickles in would hold the next request that takes it until
/// that body ends, however slow its client. The unfinished body is abandoned instead.
fn finish(pending: &mut Option<Pending>, lease: &mut Option<Lease>, request: Option<&Arc<BodyState>>) {
    let now = Instant::now();
    if let Some(mut p) = pending.take() {
        p.end = Some(now);
    }
    let lease = lease.take();
    match request {
        Some(body) if body.ended().is_none() => body.abandon(),
        _ => {
            if let Some(l) = lease {
                l.give_back(now);
            }
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // A body that was empty from the start is never polled.
        if let Self::Upstream {
            body,
            pending,
            lease,
            request,
            ..
        } = self
            && body.is_end_stream()
        {
            finish(pending, lease, request.as_ref());
        }
    }
}

/// Why a response body the proxy streams broke off; the downstream connection is then closed
/// (HTTP/1.1) or the stream reset (HTTP/2) without a clean end.
#[derive(Debug, thiserror::Error)]
pub enum ResponseBodyError {
    /// The upstream's body failed.
    #[error("the upstream response body failed: {0}")]
    Upstream(hyper::Error),
    /// The upstream sent nothing for `timeouts.responseBodyIdle`.
    #[error("the upstream response body sent nothing for longer than timeouts.responseBodyIdle")]
    Idle,
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = ResponseBodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, ResponseBodyError>>> {
        match self.get_mut() {
            Self::Local(full) => Pin::new(full).poll_frame(cx).map_err(|never| match never {}),
            Self::Upstream {
                body,
                pending,
                lease,
                request,
                idle_ms,
                waiting,
            } => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                // The connection is discarded, and with it any request body still on its way.
                let failed = |pending: &mut Option<Pending>, lease: &mut Option<Lease>, error| {
                    lease.take();
                    if let Some(body) = request.as_ref().filter(|b| b.ended().is_none()) {
                        body.abandon();
                    }
                    if let Some(mut p) = pending.take() {
                        p.error = Some(error);
                    }
                };
                match polled {
                    // hyper stops polling once `is_end_stream` says so, so the end is seen either
                    // as `None` or right after the last frame.
                    Poll::Ready(None) => {
                        finish(pending, lease, request.as_ref());
                        Poll::Ready(None)
                    }
                    Poll::Ready(Some(Ok(frame))) => {
                        waiting.progressed();
                        if let Some(log) = pending.as_mut().and_then(|p| p.log.as_mut()) {
                            log.entry().bytes_out += frame.data_ref().map_or(0, |d| d.len() as u64);
                        }
                        if body.is_end_stream() {
                            finish(pending, lease, request.as_ref());
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Ready(Some(Err(e))) => {
                        tracing::debug!(error = %e, "upstream response body failed");
                        failed(pending, lease, body_error_kind(&e));
                        Poll::Ready(Some(Err(ResponseBodyError::Upstream(e))))
                    }
                    Poll::Pending => {
                        if waiting.expired(Duration::from_millis(u64::from(*idle_ms)), cx) {
                            failed(pending, lease, UpstreamError::Timeout);
                            return Poll::Ready(Some(Err(ResponseBodyError::Idle)));
                        }
                        Poll::Pending
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Local(full) => full.is_end_stream(),
            Self::Upstream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Local(full) => full.size_hint(),
            Self::Upstream { body, .. } => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_named_by_connection_are_removed() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("keep-alive, x-secret"));
        h.append("connection", HeaderValue::from_static("x-other"));
        h.insert("x-other", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("upgrade", HeaderValue::from_static("h2c"));
        h.insert("te", HeaderValue::from_static("gzip"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);

        let mut grpc = HeaderMap::new();
        grpc.insert("te", HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut grpc);
        assert_eq!(grpc.get("te").unwrap(), "trailers");
    }

    #[test]
    fn each_hop_by_hop_header_alone_is_removed() {
        // The quick scan must see every name the full pass removes.
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "te",
            "upgrade",
            "trailer",
            "proxy-authenticate",
            "proxy-authorization",
        ] {
            let mut h = HeaderMap::new();
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("x"));
            h.insert("x-kept", HeaderValue::from_static("1"));
            assert!(Seen::of(&h).hop_by_hop, "{name}");
            strip_hop_by_hop(&mut h);
            assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"], "{name}");
        }
    }

    #[test]
    fn one_pass_sees_the_headers_the_rewrite_acts_on() {
        let mut h = HeaderMap::new();
        h.insert("x-kept", HeaderValue::from_static("1"));
        let seen = Seen::of(&h);
        assert!(!seen.hop_by_hop && !seen.expect && seen.hosts == 0 && !seen.forwarded_for);
        h.insert("host", HeaderValue::from_static("a.example"));
        h.insert("expect", HeaderValue::from_static("100-continue"));
        h.insert("x-forwarded-for", HeaderValue::from_static("192.0.2.1"));
        let seen = Seen::of(&h);
        assert!(!seen.hop_by_hop && seen.expect && seen.hosts == 1 && seen.host_valid && seen.forwarded_for);
    }

    #[test]
    fn forwarded_headers_append_the_client_and_name_the_scheme() {
        let mut h = HeaderMap::new();
        let peer = Downstream::new("10.1.2.3:5555".parse().unwrap(), true);
        forwarded_for(&mut h, &peer, false);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.1.2.3");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
        h.insert("x-forwarded-for", HeaderValue::from_static("192.0.2.1"));
        forwarded_for(&mut h, &Downstream::new(peer.peer, false), true);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "192.0.2.1, 10.1.2.3");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
    }

    #[test]
    fn random_numbers_differ_and_cover_both_halves() {
        let xs: Vec<u64> = (0..1000).map(|_| random()).collect();
        let high = xs.iter().filter(|x| **x > u64::MAX / 2).count();
        assert!((400..600).contains(&high), "{high}");
        let mut sorted = xs.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), xs.len());
    }
}
