//! One request's way through the proxy, a stage per module in the order a request meets them:
//! here, the edge's checks ([`crate::edge`]), path normalization and the decision on one table
//! snapshot; [`rewrite`], the request made fit for the upstream; [`exchange`], the request sent
//! on a pooled or new connection within the route's timeout, and the upstream's head checked;
//! [`respond`], the answers the proxy makes itself; [`body`], the response body streamed back,
//! which records the request when it ends.
//!
//! Blame: what the upstream did (its statuses, a failed connection, a timeout, broken framing)
//! counts against the track; what the client did (a refused request, a body that failed or
//! stopped, leaving before the answer) counts as the route's client error and in no track.

mod body;
mod exchange;
mod mirror;
mod respond;
mod retry;
mod rewrite;
#[cfg(test)]
mod tests;

pub use body::{Pending, ProxyBody, ResponseBodyError};
pub use exchange::{Exchange, Forwarding, Sent};
pub(crate) use mirror::BodyCopy;
pub use mirror::{MirrorPlan, SHADOW_HEADER};
pub use respond::local;
pub use retry::{Budget, Budgets};
pub(crate) use rewrite::strip_hop_by_hop;

use std::borrow::Cow;
use std::cell::Cell;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use switchyard_config::RequestView;
use switchyard_config::path::{self, PathOptions};
use switchyard_config::schema::{Timeouts, UpstreamProtocol};
use tokio::time::{Instant, Sleep};

use self::exchange::Step;
use self::respond::closing;
use self::retry::Retry;
use self::rewrite::{Seen, forwarded_for, h2c_uri, with_path};
use crate::access_log::{self, AccessLog, Entry};
use crate::edge::{self, Refused};
use crate::frame_guard::Refusal;
use crate::health;
use crate::publish::Publisher;
use crate::request_body::{BodyLimits, RequestBody};
use crate::request_id::RequestIds;
use crate::upgrade::{Offer, Tunnel};
use crate::upstream::Upstreams;

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
    /// The clients of shadow copies.
    mirrors: mirror::Mirrors,
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
            mirrors: mirror::Mirrors::new(&timeouts),
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
        let (slot, track, (authority, key), protocol, timeout, retry, passive, (mirrored, copy)) = {
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
            // An endpoint that is out (ejected, unhealthy) passes the request to another of its
            // track's.
            let (endpoint, passive) = health::pick(plan.health.as_ref(), &d, start);
            if let Some(log) = &mut log {
                log.entry().decided(&plan.labels, endpoint);
            }
            // A route that retries counts each of its requests in its budget.
            let retry = d.route.retry().and_then(|policy| {
                let budget = snapshot.budget(d.route.index())?;
                budget.request(policy.budget(), start);
                let decided = (Arc::clone(&snapshot), d.route.index(), d.track.index());
                Some((Arc::clone(policy), Arc::clone(budget), decided))
            });
            let mirror = match snapshot.mirror(d.route.index()) {
                None => (false, None),
                Some(m) => (
                    true,
                    d.shadow.map(|s| {
                        // The copy, too, goes to an endpoint of its track that is serving.
                        let health = snapshot.plan(d.route.index(), s.track.index()).health.as_ref();
                        let endpoint = health::serving(health, s.track, s.endpoint.index(), s.draw, start);
                        mirror::ShadowCopy::new(m, endpoint)
                    }),
                ),
            };
            (
                plan.slot,
                plan.header.clone(),
                plan.endpoints[endpoint].clone(),
                d.track.protocol(),
                d.route.timeout().unwrap_or(this.timeouts.request),
                retry.map(|r| (r, endpoint)),
                passive,
                mirror,
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
        if mirrored {
            // Only copies carry the mark: a client's cannot make a real request pass for one.
            headers.remove(SHADOW_HEADER);
        }
        let body_copy = match copy {
            Some(copy) if offer.is_none() => copy.send(&req, timeout, this),
            _ => None,
        };
        let path_and_query = |uri: &Uri| {
            uri.path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"))
        };

        let mut body = None;
        let mut req = req.map(|incoming| {
            let (mut wrapped, state) = RequestBody::new(incoming, start, this.body_limits);
            if let Some(copy) = body_copy {
                wrapped.copy_to(copy);
            }
            body = state;
            wrapped
        });
        if let Some(log) = &mut log {
            log.entry().request_body(body.clone());
        }
        match protocol {
            UpstreamProtocol::Http1 => {
                // Origin-form on a connection to the endpoint: `GET /path?query HTTP/1.1`, which
                // an HTTP/1.1 request has already, unless it came in absolute-form.
                if req.uri().scheme().is_some() || req.uri().authority().is_some() {
                    *req.uri_mut() = Uri::from(path_and_query(req.uri()));
                }
                *req.version_mut() = Version::HTTP_11;
            }
            UpstreamProtocol::H2c => {
                *req.uri_mut() = h2c_uri(&authority, path_and_query(req.uri()));
                *req.version_mut() = Version::HTTP_2;
            }
        }
        // Only a request without a body can be sent again; an upgrade never is.
        let retry = retry
            .filter(|_| body.is_none() && offer.is_none())
            .map(|(parts, endpoint)| {
                let (policy, budget, decided) = parts;
                Retry::new(
                    policy,
                    budget,
                    &req,
                    decided,
                    endpoint,
                    protocol,
                    this.body_limits,
                    start,
                )
            });
        let step = match protocol {
            UpstreamProtocol::Http1 if offer.is_some() => {
                let (upstreams, authority) = (this.upstreams.clone(), authority.clone());
                Step::Elsewhere {
                    exchange: Box::pin(async move { upstreams.send_upgrade(authority, req).await.map(|r| (r, None)) }),
                }
            }
            UpstreamProtocol::Http1 => Step::Unsent { request: Some(req) },
            UpstreamProtocol::H2c => {
                let sent = this.upstreams.send_h2c(req);
                Step::Elsewhere {
                    exchange: Box::pin(async move { sent.await.map(|r| (r, None)) }),
                }
            }
        };
        let extras = (log.is_some() || response_id.is_some() || offer.is_some() || retry.is_some()).then(|| {
            Box::new(Extras {
                log,
                response_id,
                offer,
                retry,
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
    retry: Option<Retry>,
}

/// Finishes `entry` with the proxy's own `response`.
fn answered(entry: &mut Entry, response: &Response<ProxyBody>) {
    entry.answered(response.status().as_u16());
    entry.bytes_out = response.body().size_hint().exact().unwrap_or(0);
}

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
