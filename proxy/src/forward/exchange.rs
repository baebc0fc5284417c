//! The exchange with the upstream: the request sent on a pooled HTTP/1.1 connection of this
//! thread, a new one, or over h2c, within the route's timeout; the upstream's head checked for
//! framing a proxy must not pass on; and the response, or the failure, handed back with the body
//! that records the request.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::Authority;
use http::{Request, Response, StatusCode, Version};
use http_body::Body;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use hyper::client::conn::http1::SendRequest;
use pin_project_lite::pin_project;
use switchyard_config::schema::UpstreamProtocol;
use tokio::time::{Instant, Sleep};

use super::body::{Pending, ProxyBody};
use super::respond::{closing, local};
use super::rewrite::{maybe_hop_by_hop, strip_hop_by_hop};
use super::{Extras, Link, answered};
use crate::access_log;
use crate::edge::Refused;
use crate::health::Passive;
use crate::idle::IdleTimer;
use crate::record::{ClientError, Outcome, SlotId};
use crate::request_body::{BodyState, RequestBody};
use crate::upgrade::Tunnel;
use crate::upstream::{EndpointKey, Failure, Lease};

/// What an exchange with an upstream ends in: its response and, over HTTP/1.1, the connection
/// it came over; or why there is none.
pub(super) type Exchanged = Result<(Response<Incoming>, Option<Lease>), Failure>;

/// An exchange off the hot path: on a new connection, or over h2c.
pub(super) type Elsewhere = Pin<Box<dyn Future<Output = Exchanged> + Send>>;

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
        pub(super) local: Option<Box<Response<ProxyBody>>>,
        // Or the exchange with an upstream.
        #[pin]
        pub(super) exchange: Option<Exchange<L, F>>,
    }
}

pin_project! {
    /// A request's exchange with its upstream, bounded by the request's timeout: on a pooled
    /// HTTP/1.1 connection of this thread (waiting for it to be ready, and moving on to the
    /// next when it turns out closed before the request was written), else on a new connection
    /// or over h2c. Dropped before it ends, it counts the client as gone.
    pub struct Exchange<L: Link, F> {
        pub(super) link: L,
        pub(super) extras: Option<Box<Extras>>,
        pub(super) start: Instant,
        // `start` + the request timeout: when the answer is overdue, unless the request body
        // ended later (the timeout counts from when the upstream has the whole request).
        pub(super) deadline: Instant,
        // The request body's state, unless it was empty.
        pub(super) body: Option<Arc<BodyState>>,
        // Whether the request's end was recorded.
        pub(super) recorded: bool,
        pub(super) slot: SlotId,
        // The track's name as a header value.
        pub(super) track: HeaderValue,
        // The connection's timer, taken the first time the exchange has to wait.
        pub(super) timer: Option<Pin<Box<Sleep>>>,
        pub(super) key: EndpointKey,
        // Where the endpoint's outcome goes, for a track with outlier detection.
        pub(super) passive: Option<Passive>,
        pub(super) authority: Authority,
        // `SendRequest::try_send_request`, whose future has no name to write here.
        pub(super) send: fn(&mut SendRequest<RequestBody>, Request<RequestBody>) -> F,
        // The pooled connection the request waits for, or was sent on.
        pub(super) sender: Option<SendRequest<RequestBody>>,
        #[pin]
        pub(super) step: Step<F>,
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
    pub(super) enum Step<F> {
        // Waiting for a pooled connection to be ready, or for one to be found.
        Unsent { request: Option<Request<RequestBody>> },
        // Sent on the pooled connection in `Exchange::sender`.
        Sent { #[pin] answer: F },
        // On a new connection, or over h2c.
        Elsewhere { exchange: Elsewhere },
        // Waiting to send a retry (boxed: only a request being retried has one).
        Backoff { until: Pin<Box<Sleep>>, request: Option<Request<RequestBody>> },
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
            let exchanged = match self.as_mut().poll_exchange(cx) {
                Poll::Ready(exchanged) => exchanged,
                Poll::Pending => {
                    let this = self.as_mut().project();
                    let downstream = this.link.downstream();
                    let deadline = attempt_deadline(this.extras, *this.deadline);
                    let timer = this.timer.get_or_insert_with(|| downstream.arm(deadline));
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
                        Some(due) => {
                            timer.as_mut().reset(due);
                            continue;
                        }
                        None => Err(Failure::Timeout),
                    }
                }
            };
            // The cold path: an attempt of a request that may be sent again.
            if self.extras.as_ref().is_some_and(|e| e.retry.is_some()) && self.as_mut().retry(&exchanged) {
                continue;
            }
            break exchanged;
        };
        let this = self.project();
        *this.recorded = true;
        if let Some(timer) = this.timer.take() {
            this.link.downstream().disarm(timer);
        }
        let forwarder = this.link.forwarder();
        let track = forwarder.track_header.as_ref().map(|name| (name, &*this.track));
        let recorder = forwarder.publisher.recorder();
        let (log, response_id, offer, attempt_start) = match this.extras.take() {
            Some(extras) => {
                let attempt_start = extras.retry.map_or(*this.start, |r| r.attempt_start);
                (extras.log, extras.response_id, extras.offer, attempt_start)
            }
            None => (None, None, None, *this.start),
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
                    start: attempt_start,
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
            latency: attempt_start.elapsed(),
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
                StepProj::Backoff { until, request } => {
                    std::task::ready!(until.as_mut().poll(cx));
                    let request = request.take().expect("a retry waits with its request");
                    let retry = this.extras.as_ref().and_then(|e| e.retry.as_ref());
                    match retry.map(|r| r.protocol) {
                        Some(UpstreamProtocol::H2c) => {
                            let sent = upstreams.send_h2c(request);
                            let exchange: Elsewhere = Box::pin(async move { sent.await.map(|r| (r, None)) });
                            this.step.set(Step::Elsewhere { exchange });
                        }
                        _ => this.step.set(Step::Unsent { request: Some(request) }),
                    }
                }
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

impl<L: Link, F: Future<Output = Sent>> Exchange<L, F> {
    /// Records the attempt that ended in `exchanged` against the track and sets up the next
    /// one, if the route's retry policy and budget send it again; `false` to answer with it.
    fn retry(self: Pin<&mut Self>, exchanged: &Exchanged) -> bool {
        let mut this = self.project();
        let Some(retry) = this.extras.as_mut().and_then(|e| e.retry.as_mut()) else {
            return false;
        };
        let (status, failure) = match exchanged {
            Ok((response, _)) => (response.status().as_u16(), None),
            Err(failure) => (failure.status().as_u16(), Some(*failure)),
        };
        let now = Instant::now();
        let attempt_start = retry.attempt_start;
        let Some((wait, request)) = retry.next(status, failure, now, *this.deadline) else {
            return false;
        };
        // The attempt is the track's, whatever the next one brings.
        let outcome = Outcome {
            status,
            latency: now.saturating_duration_since(attempt_start),
            upstream_error: failure.map(Failure::kind),
        };
        this.link
            .forwarder()
            .publisher
            .recorder()
            .record(*this.slot, &outcome, now);
        // The endpoint's outlier detection sees the attempt too; the next one reports its own.
        if let Some(passive) = this.passive.take() {
            *this.passive = Some(passive.moved_to(retry.endpoint_index()));
            passive.observe(outcome.status, outcome.upstream_error, now);
        }
        let (authority, key) = retry.endpoint().clone();
        let deadline = retry.attempt_deadline(*this.deadline);
        *this.authority = authority;
        *this.key = key;
        *this.sender = None;
        if let Some(timer) = this.timer.as_mut() {
            timer.as_mut().reset(deadline);
        }
        this.step.set(Step::Backoff {
            until: Box::pin(tokio::time::sleep(wait)),
            request: Some(request),
        });
        true
    }
}

/// When the current attempt is overdue: the request's `deadline`, or sooner when the route
/// limits each attempt.
fn attempt_deadline(extras: &Option<Box<Extras>>, deadline: Instant) -> Instant {
    match extras.as_ref().and_then(|e| e.retry.as_ref()) {
        Some(retry) => retry.attempt_deadline(deadline),
        None => deadline,
    }
}
