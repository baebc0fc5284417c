//! The downstream request body on its way upstream. It tells the exchange what only the
//! downstream side knows: whether the body failed through the client's fault (malformed
//! chunks, a client that left, a body that stopped arriving) and when it ended, so that a
//! client's fault never counts against the track, and the request timeout starts when the
//! upstream has the whole request.
//!
//! A failed body fails the upstream request too: hyper's client then closes the upstream
//! connection without ending the request, so the upstream never receives a complete request
//! built from a malformed body.

use std::error::Error as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::idle::IdleTimer;
use crate::record::ClientError;

/// A downstream request body, as the upstream client sends it.
#[derive(Debug)]
pub struct RequestBody {
    inner: Incoming,
    /// Shared with the exchange; `None` for a body that was empty from the start.
    state: Option<Arc<BodyState>>,
    /// `timeouts.requestBodyIdle`.
    idle: Duration,
    /// Since when the client has sent nothing.
    waiting: IdleTimer,
}

/// What the exchange learns from its request body.
#[derive(Debug)]
pub struct BodyState {
    start: Instant,
    /// 0 while the body has not failed, else a [`ClientError`] code.
    fault: AtomicU8,
    /// 0 while the body is still coming, else µs from `start` to its end, plus 1.
    ended: AtomicU64,
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

    /// When the body ended, if it did.
    pub fn ended(&self) -> Option<Instant> {
        match self.ended.load(Ordering::Acquire) {
            0 => None,
            us => Some(self.start + Duration::from_micros(us - 1)),
        }
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

/// A request body that failed through the client's fault; the upstream request is abandoned.
#[derive(Debug, thiserror::Error)]
#[error("the downstream request body failed: {}", .0.name())]
pub struct BodyError(ClientError);

impl RequestBody {
    /// Wraps `inner`, the body of a request that arrived at `start`; with `idle` the longest the
    /// client may send nothing. Returns the state the exchange watches, unless the body is empty.
    pub fn new(inner: Incoming, start: Instant, idle: Duration) -> (Self, Option<Arc<BodyState>>) {
        let state = (!inner.is_end_stream()).then(|| {
            Arc::new(BodyState {
                start,
                fault: AtomicU8::new(0),
                ended: AtomicU64::new(0),
            })
        });
        let body = Self {
            inner,
            state: state.clone(),
            idle,
            waiting: IdleTimer::default(),
        };
        (body, state)
    }

    fn fail(&mut self, fault: ClientError) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Some(state) = &self.state {
            state.fail(fault);
        }
        Poll::Ready(Some(Err(BodyError(fault))))
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
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.waiting.progressed();
                if this.inner.is_end_stream() {
                    this.end();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.end();
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::debug!(error = %e, "downstream request body failed");
                this.fail(fault_of(&e))
            }
            Poll::Pending => {
                if this.waiting.expired(this.idle, cx) {
                    return this.fail(ClientError::Timeout);
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
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
