//! The response body on its way back: the upstream's, streamed and watched for an idle upstream,
//! which records the request when it ends, fails or is dropped and gives the connection back to
//! the pool when its exchange is whole; or one the proxy made.

use std::error::Error as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::access_log;
use crate::health::Passive;
use crate::idle::IdleTimer;
use crate::record::{Outcome, Recorder, SlotId, UpstreamError};
use crate::request_body::BodyState;
use crate::upstream::Lease;

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
    pub(super) recorder: Arc<Recorder>,
    pub(super) slot: SlotId,
    pub(super) status: u16,
    pub(super) start: Instant,
    /// When the body ended, if it was seen to end.
    pub(super) end: Option<Instant>,
    pub(super) error: Option<UpstreamError>,
    /// Where the endpoint's outcome goes, for a track with outlier detection.
    pub(super) passive: Option<Passive>,
    /// The access log's entry, when the log is on.
    pub(super) log: Option<access_log::Pending>,
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
