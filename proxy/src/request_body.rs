//! The downstream request body on its way upstream. It tells the exchange what only the
//! downstream side knows: whether the body failed through the client's fault (malformed
//! chunks, a client that left, a body that stopped arriving) and when it ended, so that a
//! client's fault never counts against the track, and the request timeout starts when the
//! upstream has the whole request.
//!
//! A failed body fails the upstream request too: hyper's client then closes the upstream
//! connection without ending the request, so the upstream never receives a complete request
//! built from a malformed body.
//!
//! A body is given up when it stalls (`timeouts.requestBodyIdle`), or when it comes slower than
//! `limits.requestBodyMinRate` once `timeouts.requestBodyGrace` has passed: both count only the
//! time the proxy waits for the client, never the time the upstream takes to read. And a body
//! whose response is already whole is abandoned ([`BodyState::abandon`]): a slow client then
//! holds no upstream connection for the rest of its upload.
//!
//! A body whose request is copied to a shadow also feeds the copy's body
//! ([`crate::forward::BodyCopy`]) as it passes, which costs the primary a copy of each piece
//! and nothing else: the shadow is sent when the body has ended, never waited on.

use std::error::Error as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use atomic_waker::AtomicWaker;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::forward::BodyCopy;
use crate::record::ClientError;

/// A downstream request body, as the upstream client sends it.
#[derive(Debug)]
pub struct RequestBody {
    /// `None` for the empty body of a request sent again ([`RequestBody::empty`]).
    inner: Option<Incoming>,
    /// Shared with the exchange; `None` for a body that was empty from the start.
    state: Option<Arc<BodyState>>,
    /// How long the client may take.
    pace: Pace,
    /// The shadow copy the body also goes to, while it fits its bound.
    copy: Option<Box<BodyCopy>>,
}

/// How long a request body may take to arrive: `timeouts.requestBodyIdle` between its pieces,
/// and `limits.requestBodyMinRate` (0: none) once `timeouts.requestBodyGrace` has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// The longest the client may send nothing.
    pub idle: Duration,
    /// Waiting time before the minimum rate applies.
    pub grace: Duration,
    /// Bytes per second of waiting time; 0 turns the check off.
    pub min_rate: u64,
}

/// The time a body has waited for its client, and the timer that ends the wait. Nothing is
/// allocated or registered until the body first waits, and the clock is read only when a wait
/// starts or ends: a body that is whole when first polled costs nothing here.
#[derive(Debug)]
struct Pace {
    limits: BodyLimits,
    /// Bytes received so far.
    bytes: u64,
    /// Waiting time of the waits that ended.
    waited: Duration,
    /// When the current wait started.
    since: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Pace {
    fn new(limits: BodyLimits) -> Self {
        Self {
            limits,
            bytes: 0,
            waited: Duration::ZERO,
            since: None,
            timer: None,
        }
    }

    /// A piece of `len` bytes came.
    fn received(&mut self, len: usize) {
        self.bytes = self.bytes.saturating_add(len as u64);
        if let Some(since) = self.since.take() {
            self.waited += since.elapsed();
        }
    }

    /// How long the wait that starts now may last: the idle limit, or less when the body would
    /// then have come slower than its minimum rate.
    fn allowance(&self) -> Duration {
        let BodyLimits { idle, grace, min_rate } = self.limits;
        if min_rate == 0 {
            return idle;
        }
        // The body keeps its rate until it has waited `bytes / min_rate`, or the grace.
        let nanos = u128::from(self.bytes) * 1_000_000_000 / u128::from(min_rate);
        let earned = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)).max(grace);
        idle.min(earned.saturating_sub(self.waited))
    }

    /// The body waits for its client: whether the wait is over its allowance. Registers `cx`
    /// to be woken when it would be.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.since.is_none() {
            let now = Instant::now();
            self.since = Some(now);
            let deadline = now + self.allowance();
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        self.timer
            .as_mut()
            .is_some_and(|timer| timer.as_mut().poll(cx).is_ready())
    }
}

/// What the exchange learns from its request body, and how it stops the body.
#[derive(Debug)]
pub struct BodyState {
    start: Instant,
    /// 0 while the body has not failed, else a [`ClientError`] code.
    fault: AtomicU8,
    /// 0 while the body is still coming, else µs from `start` to its end, plus 1.
    ended: AtomicU64,
    /// Bytes received so far.
    received: AtomicU64,
    /// The response is whole while the body still comes: the body is to fail, so that the
    /// upstream connection it holds is closed.
    abandoned: AtomicBool,
    /// The task that sends the body upstream, while it waits for the client.
    sender: AtomicWaker,
}

impl BodyState {
    /// Why the body failed, if it did.
    pub fn fault(&self) -> Option<ClientError> {
        match self.fault.load(Ordering::Acquire) {
            1 => Some(ClientError::Malformed),
            2 => Some(ClientError::Timeout),
            3 => Some(ClientError::Aborted),
            _ => None,
        }
    }

    /// Bytes of the body received from the client so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// When the body ended, if it did.
    pub fn ended(&self) -> Option<Instant> {
        match self.ended.load(Ordering::Acquire) {
            0 => None,
            us => Some(self.start + Duration::from_micros(us - 1)),
        }
    }

    /// The response is whole and the body has not ended: the rest of the body is not sent. The
    /// upstream request fails, which closes its connection (it cannot be pooled while its request
    /// is unfinished), and the client's connection closes after its response. Not the client's
    /// fault, nor the track's: the request is recorded with the status it got.
    pub fn abandon(&self) {
        self.abandoned.store(true, Ordering::Release);
        self.sender.wake();
    }

    fn fail(&self, fault: ClientError) {
        let code = match fault {
            ClientError::Malformed => 1,
            ClientError::Timeout => 2,
            ClientError::Aborted => 3,
        };
        let _ = self
            .fault
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
    }

    fn end(&self) {
        let us = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX - 1);
        self.ended.store(us + 1, Ordering::Release);
    }
}

/// Why a request body stopped on its way upstream; the upstream request is abandoned.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The client's fault.
    #[error("the downstream request body failed: {}", .0.name())]
    Client(ClientError),
    /// The response was whole before the body.
    #[error("the response ended before the request body; the rest of the body is not sent")]
    Abandoned,
}

impl RequestBody {
    /// Wraps `inner`, the body of a request that arrived at `start`, to arrive within `limits`.
    /// Returns the state the exchange watches, unless the body is empty.
    pub fn new(inner: Incoming, start: Instant, limits: BodyLimits) -> (Self, Option<Arc<BodyState>>) {
        let state = (!inner.is_end_stream()).then(|| {
            Arc::new(BodyState {
                start,
                fault: AtomicU8::new(0),
                ended: AtomicU64::new(0),
                received: AtomicU64::new(0),
                abandoned: AtomicBool::new(false),
                sender: AtomicWaker::new(),
            })
        });
        let body = Self {
            inner: Some(inner),
            state: state.clone(),
            pace: Pace::new(limits),
            copy: None,
        };
        (body, state)
    }

    /// The body of a request that had none, for sending it again: the first attempt's went
    /// with its first upstream request.
    pub fn empty(limits: BodyLimits) -> Self {
        Self {
            inner: None,
            state: None,
            pace: Pace::new(limits),
            copy: None,
        }
    }

    /// Has the body also kept for `copy`, which is sent when the body ends within its bound.
    pub(crate) fn copy_to(&mut self, copy: BodyCopy) {
        self.copy = Some(Box::new(copy));
    }

    /// Passes `frame` to the copy, if there is one and it still fits; sends the copy when the
    /// body has `ended`.
    fn feed_copy(&mut self, frame: Option<&Frame<Bytes>>, ended: bool) {
        let Some(copy) = self.copy.as_mut() else {
            return;
        };
        if let Some(data) = frame.and_then(Frame::data_ref)
            && !copy.keep(data)
        {
            self.copy = None;
            return;
        }
        if ended && let Some(copy) = self.copy.take() {
            copy.ended();
        }
    }

    fn fail(&mut self, fault: ClientError) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Some(state) = &self.state {
            state.fail(fault);
        }
        Poll::Ready(Some(Err(BodyError::Client(fault))))
    }

    fn abandoned(&self) -> bool {
        self.state.as_ref().is_some_and(|s| s.abandoned.load(Ordering::Acquire))
    }

    fn end(&self) {
        if let Some(state) = &self.state {
            state.end();
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if this.abandoned() {
            return Poll::Ready(Some(Err(BodyError::Abandoned)));
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(&mut *inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.pace.received(frame.data_ref().map_or(0, Bytes::len));
                if let Some(state) = &this.state {
                    state.received.store(this.pace.bytes, Ordering::Relaxed);
                }
                let ended = inner.is_end_stream();
                if ended {
                    this.end();
                }
                this.feed_copy(Some(&frame), ended);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.end();
                this.feed_copy(None, true);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::debug!(error = %e, "downstream request body failed");
                // A body that failed is not copied.
                this.copy = None;
                this.fail(fault_of(&e))
            }
            Poll::Pending => {
                if let Some(state) = &this.state {
                    state.sender.register(cx.waker());
                    // Abandoned between the first look and the registration.
                    if state.abandoned.load(Ordering::Acquire) {
                        return Poll::Ready(Some(Err(BodyError::Abandoned)));
                    }
                }
                if this.pace.expired(cx) {
                    return this.fail(ClientError::Timeout);
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Incoming::size_hint)
    }
}

/// Whose a downstream body error is: malformed framing (hyper's decoder refuses the bytes), or
/// a client that left (the connection ended or was reset mid-body, an HTTP/2 stream reset).
fn fault_of(e: &hyper::Error) -> ClientError {
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            return match io.kind() {
                io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => ClientError::Malformed,
                _ => ClientError::Aborted,
            };
        }
        source = s.source();
    }
    if e.is_parse() {
        ClientError::Malformed
    } else {
        ClientError::Aborted
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use super::*;

    const DEFAULTS: BodyLimits = BodyLimits {
        idle: Duration::from_secs(30),
        grace: Duration::from_secs(5),
        min_rate: 240,
    };

    /// Whether the body's wait has run out now (it starts one if none is running).
    async fn expired(pace: &mut Pace) -> bool {
        poll_fn(|cx| Poll::Ready(pace.expired(cx))).await
    }

    #[test]
    fn the_allowance_is_the_grace_then_what_the_bytes_earned_never_past_the_idle_limit() {
        let mut pace = Pace::new(DEFAULTS);
        assert_eq!(pace.allowance(), Duration::from_secs(5), "nothing came yet: the grace");
        pace.bytes = 2_400;
        assert_eq!(
            pace.allowance(),
            Duration::from_secs(10),
            "2,400 bytes at 240/s earn 10s"
        );
        pace.waited = Duration::from_secs(4);
        assert_eq!(pace.allowance(), Duration::from_secs(6), "less what it waited already");
        pace.waited = Duration::from_secs(11);
        assert_eq!(pace.allowance(), Duration::ZERO, "it waited past what it earned");
        pace.bytes = 1 << 40;
        assert_eq!(
            pace.allowance(),
            DEFAULTS.idle,
            "however fast, a stall ends at the idle limit"
        );
        pace.bytes = u64::MAX;
        assert_eq!(pace.allowance(), DEFAULTS.idle, "no overflow");
        let off = Pace::new(BodyLimits {
            min_rate: 0,
            ..DEFAULTS
        });
        assert_eq!(off.allowance(), DEFAULTS.idle, "rate 0: the idle limit alone");
    }

    #[tokio::test(start_paused = true)]
    async fn only_time_spent_waiting_for_the_client_counts() {
        let mut pace = Pace::new(DEFAULTS);
        assert!(!expired(&mut pace).await);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(!expired(&mut pace).await, "3s of the 5s grace");
        pace.received(100);
        // The upstream takes its time to read: not polled, the body is not waiting.
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(!expired(&mut pace).await, "a new wait starts with 2s left");
        tokio::time::advance(Duration::from_millis(1_999)).await;
        assert!(!expired(&mut pace).await);
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(expired(&mut pace).await, "5s of waiting for 100 bytes is below 240/s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_keeps_the_rate_waits_up_to_the_idle_limit_between_pieces() {
        let mut pace = Pace::new(DEFAULTS);
        // A megabyte at once earns far more than the idle limit.
        pace.received(1 << 20);
        assert!(!expired(&mut pace).await);
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(!expired(&mut pace).await);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(expired(&mut pace).await, "30s without a byte: the idle limit");
    }
}
