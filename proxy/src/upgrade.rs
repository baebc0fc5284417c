//! HTTP/1.1 upgrades (WebSocket): a request that asks to switch protocols is decided like any
//! other, sent to its track's endpoint on a connection of its own, and when the endpoint
//! answers `101 Switching Protocols` both connections become one tunnel, its bytes copied
//! both ways until either side closes or the tunnel carries nothing for `timeouts.upgradeIdle`.
//!
//! - **What is an upgrade**: an HTTP/1.1 request with `Connection: upgrade`, an `Upgrade` that
//!   names a protocol other than `h2c`, and no body. `h2c` is never offered upstream (an h2c
//!   tunnel would carry requests the proxy never routes or measures); a request that asks only
//!   for it is served as plain HTTP/1.1, its `Upgrade` removed (RFC 9113 §3.1 lets a server
//!   ignore it). So is any request that asks for an upgrade its track cannot take (`protocol:
//!   h2c`) or that has a body.
//! - **What counts**: an upgrade is one request of its track, recorded when the `101` goes out,
//!   with status 101 and the handshake's latency; nothing the tunnel does later changes the
//!   track's numbers. Its access log line is written when the tunnel ends, with the tunnel's
//!   duration and bytes.
//! - **Refused upgrades**: an endpoint that answers anything but `101` is answered as any
//!   request is (`checked` framing and all), and the client's connection goes on as HTTP/1.1. A
//!   `101` that switches to a protocol that was not offered is the endpoint's `protocol` error
//!   (`502`).
//! - **Bounds**: the tunnel keeps its downstream connection's place in `limits.maxConnections`
//!   until it ends; the request timeout bounds the handshake.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::access_log;
use crate::upstream::Failure;

/// An upgrade the client asked for, as it is offered upstream.
#[derive(Debug)]
pub struct Offer {
    /// The protocols offered (the client's `Upgrade` without `h2c`).
    protocols: HeaderValue,
    /// The client's connection, once hyper hands it over after the `101`.
    downstream: OnUpgrade,
}

impl Offer {
    /// The upgrade `req` asks for, if the proxy may tunnel it (see the [module docs](self)).
    /// Takes the client connection's upgrade from the request; call it before the request's
    /// hop-by-hop headers are removed, and [`Offer::restore`] after.
    pub fn of<B: http_body::Body>(req: &mut Request<B>) -> Option<Self> {
        if req.version() != Version::HTTP_11 || !req.body().is_end_stream() {
            return None;
        }
        let headers = req.headers();
        let connection_upgrade = tokens(headers, &header::CONNECTION).any(|t| t.eq_ignore_ascii_case("upgrade"));
        if !connection_upgrade {
            return None;
        }
        let offered: Vec<&str> = tokens(headers, &header::UPGRADE)
            .filter(|t| !t.eq_ignore_ascii_case("h2c"))
            .collect();
        if offered.is_empty() {
            return None;
        }
        let protocols = HeaderValue::from_str(&offered.join(", ")).ok()?;
        let downstream = hyper::upgrade::on(&mut *req);
        Some(Self { protocols, downstream })
    }

    /// Puts the upgrade back on the upstream-bound request's headers, after the hop-by-hop
    /// ones were removed.
    pub fn restore(&self, headers: &mut HeaderMap) {
        headers.insert(header::UPGRADE, self.protocols.clone());
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }

    /// The endpoint answered `101` (`response`): checks that it switched to an offered
    /// protocol and returns the head to send downstream (hop-by-hop headers removed but for the
    /// upgrade's own) and the tunnel's two ends. A switch to anything else is the endpoint's
    /// protocol error.
    pub fn accept(self, mut response: Response<Incoming>) -> Result<(Response<()>, Ends), Failure> {
        let chosen = response.headers().get(header::UPGRADE).cloned();
        let offered = |chosen: &HeaderValue| {
            let chosen = chosen.to_str().unwrap_or_default().trim();
            let protocols = self.protocols.to_str().unwrap_or_default();
            protocols.split(',').any(|p| p.trim().eq_ignore_ascii_case(chosen))
        };
        let Some(chosen) = chosen.filter(|c| offered(c)) else {
            tracing::debug!(offered = ?self.protocols, "the upstream switched to a protocol that was not offered");
            return Err(Failure::Protocol);
        };
        let upstream = hyper::upgrade::on(&mut response);
        let (mut parts, _) = response.into_parts();
        crate::forward::strip_hop_by_hop(&mut parts.headers);
        parts.headers.insert(header::UPGRADE, chosen);
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.version = Version::HTTP_11;
        let ends = Ends {
            downstream: self.downstream,
            upstream,
        };
        Ok((Response::from_parts(parts, ()), ends))
    }
}

/// The comma-separated tokens of every `name` line of `headers`, trimmed, empty ones left out.
fn tokens<'a>(headers: &'a HeaderMap, name: &header::HeaderName) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The two connections of an accepted upgrade, handed over once their `101`s are through.
#[derive(Debug)]
pub struct Ends {
    downstream: OnUpgrade,
    upstream: OnUpgrade,
}

/// An accepted upgrade, waiting for the downstream connection to finish its `101`.
#[derive(Debug)]
pub struct Tunnel {
    /// Both ends.
    pub ends: Ends,
    /// `timeouts.upgradeIdle`.
    pub idle: Duration,
    /// The access log entry of the upgrade request, written when the tunnel ends.
    pub log: Option<access_log::Pending>,
}

impl Tunnel {
    /// Copies bytes both ways until either side closes, fails, or both idle for `idle`.
    pub async fn run(self) {
        let Self { ends, idle, log } = self;
        let (downstream, upstream) = match tokio::join!(ends.downstream, ends.upstream) {
            (Ok(d), Ok(u)) => (TokioIo::new(d), TokioIo::new(u)),
            (d, u) => {
                let error = d.err().or(u.err()).map(|e| e.to_string()).unwrap_or_default();
                tracing::debug!(%error, "an upgraded connection was not handed over");
                return;
            }
        };
        let relayed = relay(downstream, upstream, idle).await;
        tracing::debug!(?relayed, "tunnel ended");
        if let Some(mut log) = log {
            let entry = log.entry();
            entry.bytes_in = relayed.sent;
            entry.bytes_out = relayed.received;
            log.finish();
        }
    }
}

/// How a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Both sides closed their ends (or one closed and the other followed).
    Closed,
    /// A side failed (reset).
    Failed,
    /// Neither side sent anything for the idle limit.
    Idle,
}

/// What a tunnel carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relayed {
    /// Bytes from the downstream side to the upstream side.
    pub sent: u64,
    /// Bytes from the upstream side to the downstream side.
    pub received: u64,
    /// Why it ended.
    pub ended: Ended,
}

/// Copies bytes between `downstream` and `upstream` both ways until both have closed (a side
/// that closes has its peer's write side shut down), one fails, or no byte moved either way for
/// `idle`.
pub async fn relay<D, U>(downstream: D, upstream: U, idle: Duration) -> Relayed
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let origin = Instant::now();
    let activity = Activity {
        origin,
        last_us: AtomicU64::new(0),
        bytes: [AtomicU64::new(0), AtomicU64::new(0)],
    };
    let mut down = Watched {
        io: downstream,
        activity: &activity,
        side: 0,
    };
    let mut up = Watched {
        io: upstream,
        activity: &activity,
        side: 1,
    };
    let copy = tokio::io::copy_bidirectional(&mut down, &mut up);
    let mut copy = std::pin::pin!(copy);
    let timer = tokio::time::sleep_until(origin + idle);
    let mut timer = std::pin::pin!(timer);
    let ended = loop {
        tokio::select! {
            copied = &mut copy => break if copied.is_ok() { Ended::Closed } else { Ended::Failed },
            () = &mut timer => {
                let last = origin + Duration::from_micros(activity.last_us.load(Ordering::Relaxed));
                if Instant::now() >= last + idle {
                    break Ended::Idle;
                }
                timer.as_mut().reset(last + idle);
            }
        }
    };
    Relayed {
        sent: activity.bytes[0].load(Ordering::Relaxed),
        received: activity.bytes[1].load(Ordering::Relaxed),
        ended,
    }
}

/// When a tunnel last carried a byte, and how many it read from each side.
struct Activity {
    origin: Instant,
    last_us: AtomicU64,
    bytes: [AtomicU64; 2],
}

/// One end of a tunnel, whose reads count as activity.
struct Watched<'a, I> {
    io: I,
    activity: &'a Activity,
    side: usize,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<'_, I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            let a = this.activity;
            a.bytes[this.side].fetch_add(n as u64, Ordering::Relaxed);
            let us = u64::try_from(a.origin.elapsed().as_micros()).unwrap_or(u64::MAX);
            a.last_us.store(us, Ordering::Relaxed);
        }
        read
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<'_, I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
