//! Downstream listeners: accept within the connection limit, terminate TLS, pick HTTP/1.1 or
//! HTTP/2 (ALPN over TLS, the connection preface on plain TCP), apply the header limits and
//! timeouts, and drain gracefully on shutdown.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use switchyard_config::schema::{Limits, Timeouts};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::access_log::Entry;
use crate::forward::{Downstream, Forwarder, Link};
use crate::frame_guard::{FrameGuard, Refusal, Verdicts};
use crate::upgrade::Tunnel;

/// How every downstream connection is served.
#[derive(Debug, Clone)]
pub struct ConnSettings {
    /// Timeouts from the configuration.
    pub timeouts: Timeouts,
    /// Limits from the configuration.
    pub limits: Limits,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Accepts connections on `listener` until `stop` turns true, serving each with `forwarder`.
/// `connections` bounds the open connections of all listeners together: each holds a permit
/// until it closes, so shutdown drains by waiting for every permit to come back.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    forwarder: Arc<Forwarder>,
    settings: Arc<ConnSettings>,
    connections: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
            () = crate::until_stopped(&mut stop) => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = crate::until_stopped(&mut stop) => return,
        };
        let _ = stream.set_nodelay(true);
        let forwarder = Arc::clone(&forwarder);
        let settings = Arc::clone(&settings);
        let stop = stop.clone();
        let tls = tls.clone();
        // Each kind of connection's state is boxed on its own: one future holding them all
        // (TLS handshake, HTTP/2, HTTP/1) was 10 KB for every connection, whatever it spoke.
        tokio::spawn(async move {
            let downstream = Downstream::new(peer, tls.is_some());
            match tls {
                None => {
                    let h2 = starts_with_h2_preface(&stream, settings.timeouts.header_read).await;
                    connection(stream, h2, downstream, forwarder, &settings, stop).await;
                }
                Some(acceptor) => {
                    Box::pin(async {
                        let handshake =
                            tokio::time::timeout(settings.timeouts.header_read, acceptor.accept(stream)).await;
                        match handshake {
                            Ok(Ok(tls_stream)) => {
                                let h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
                                connection(tls_stream, h2, downstream, forwarder, &settings, stop).await;
                            }
                            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    })
                    .await
                }
            }
            drop(permit);
        });
    }
}

/// Whether a plain connection opens with the HTTP/2 preface (h2c with prior knowledge). Reads
/// nothing: it peeks until the bytes so far decide, or the header timeout passes.
async fn starts_with_h2_preface(stream: &TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; H2_PREFACE.len()];
    let peek = async {
        loop {
            match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) if buf[..n] != H2_PREFACE[..n] => return false,
                Ok(n) if n == H2_PREFACE.len() => return true,
                // A prefix of the preface: wait for more bytes.
                Ok(_) => {
                    if stream.readable().await.is_err() {
                        return false;
                    }
                    tokio::task::yield_now().await;
                }
            }
        }
    };
    tokio::time::timeout(limit, peek).await.unwrap_or(false)
}

/// What a connection's requests share.
#[derive(Debug)]
struct Shared {
    forwarder: Arc<Forwarder>,
    downstream: Downstream,
    activity: Activity,
    /// What the frame guard refused (HTTP/1 only).
    verdicts: Option<Arc<Verdicts>>,
    /// An upgrade accepted by the connection's last request, run once hyper lets go of the
    /// connection (HTTP/1 only).
    tunnel: Mutex<Option<Tunnel>>,
}

/// A request's hold on its connection, counted in flight from its start until it is
/// answered or given up.
struct InFlight {
    shared: Arc<Shared>,
    /// The request's number on its connection, from 1: as the frame guard counts heads.
    number: u64,
}

impl InFlight {
    fn start(shared: Arc<Shared>) -> Self {
        let activity = &shared.activity;
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        let number = activity.started.fetch_add(1, Ordering::Relaxed) + 1;
        let received = activity.received.load(Ordering::Relaxed);
        activity.received_at_request.store(received, Ordering::Relaxed);
        Self { shared, number }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.shared.activity;
        // A body read after the head is not the next head.
        let received = activity.received.load(Ordering::Relaxed);
        activity.received_at_request.store(received, Ordering::Relaxed);
        activity.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Link for InFlight {
    fn forwarder(&self) -> &Forwarder {
        &self.shared.forwarder
    }

    fn downstream(&self) -> &Downstream {
        &self.shared.downstream
    }

    fn refusal(&self) -> Option<Refusal> {
        self.shared.verdicts.as_ref()?.of_head(self.number)
    }

    fn upgradable(&self) -> bool {
        self.shared.verdicts.is_some()
    }

    fn tunnel(&self, tunnel: Tunnel) {
        if let Some(verdicts) = &self.shared.verdicts {
            // What comes after the `101` is the tunnel's, not HTTP.
            verdicts.upgrade();
            if let Ok(mut slot) = self.shared.tunnel.lock() {
                *slot = Some(tunnel);
            }
        }
    }
}

/// Per-connection activity, read by the watchdog of [`supervise`].
#[derive(Debug, Default)]
struct Activity {
    in_flight: AtomicUsize,
    started: AtomicU64,
    /// Reads that brought bytes (HTTP/1 only).
    received: AtomicU64,
    /// `received` when the last request started or was answered: more since, with nothing in
    /// flight, means a head is under way.
    received_at_request: AtomicU64,
}

async fn connection<I>(
    io: I,
    h2: bool,
    downstream: Downstream,
    forwarder: Arc<Forwarder>,
    settings: &ConnSettings,
    stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Everything a request needs from its connection, behind one reference count.
    let shared = Arc::new(Shared {
        forwarder,
        downstream,
        activity: Activity::default(),
        verdicts: (!h2).then(Arc::default),
        tunnel: Mutex::new(None),
    });
    let service = {
        let shared = Arc::clone(&shared);
        service_fn(move |req: hyper::Request<Incoming>| Forwarder::forward(InFlight::start(Arc::clone(&shared)), req))
    };
    let activity = &shared.activity;
    let served = if h2 {
        let io = TokioIo::new(io);
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(settings.limits.max_header_bytes).unwrap_or(u32::MAX));
        Box::pin(supervise(
            builder.serve_connection(io, service),
            activity,
            settings.timeouts.idle,
            None,
            stop,
        ))
        .await
    } else {
        // hyper takes framings a proxy must not forward (Content-Length + Transfer-Encoding,
        // coding lists ending in chunked); the guard refuses them (see `frame_guard`).
        let verdicts = shared.verdicts.clone().unwrap_or_default();
        let io = Counted {
            io,
            shared: Arc::clone(&shared),
        };
        let io = TokioIo::new(FrameGuard::new(io, settings.limits.max_header_bytes, verdicts));
        // The header-read timeout is the watchdog's (see `supervise`): hyper's own arms a
        // timer for every request head, and also cuts off keep-alive connections that are
        // merely idle.
        // hyper's default write strategy: over a transport with vectored writes (TCP; the
        // wrappers forward it) the head and the body's chunks go out in one `writev`, the body
        // not copied. Flattening them into one buffer (`.writev(false)`) once measured 3% less
        // CPU for small answers, but copies every body: with 16 KiB bodies it cost 1.18x the
        // CPU of `.writev(true)` (user time 18.3 against 11.9 µs), and 100 B answers measured
        // 1.03x, within the noise (loadtest/results/proxy-cpu-matrix.md).
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .max_headers(settings.limits.max_headers)
            .max_header_size(settings.limits.max_header_bytes)
            .max_buf_size(settings.limits.max_header_bytes.max(8192) + 8192);
        Box::pin(supervise(
            builder.serve_connection(io, service).with_upgrades(),
            activity,
            settings.timeouts.idle,
            Some(settings.timeouts.header_read),
            stop,
        ))
        .await
    };
    // hyper let go of an upgraded connection after its `101`: the tunnel keeps the
    // connection's permit until it ends.
    let tunnel = shared.tunnel.lock().ok().and_then(|mut t| t.take());
    if let Some(tunnel) = tunnel {
        Box::pin(tunnel.run()).await;
    }
    if let Some(Err(e)) = served {
        if e.is_parse() || e.is_parse_too_large() {
            // hyper answered a head it could not parse (400, 431) itself: no route saw it.
            shared.forwarder.count_refused();
            if let Some(log) = shared.forwarder.access_log() {
                let status = if e.is_parse_too_large() { 431 } else { 400 };
                log.send(
                    Entry::unparsed(shared.downstream.peer, status),
                    tokio::time::Instant::now(),
                );
            }
        }
        tracing::debug!(peer = %shared.downstream.peer, error = %e, "connection ended with an error");
    }
}

/// A connection [`supervise`] can ask to finish gracefully: hyper's HTTP/2 connection, and its
/// HTTP/1 connection that hands itself over after a `101` (hyper-util's sealed
/// `GracefulConnection` does not cover the second).
trait Graceful: Future<Output = hyper::Result<()>> {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, B, S> Graceful for http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http1::UpgradeableConnection::graceful_shutdown(self);
    }
}

impl<I, B, S, E> Graceful for http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http2::Connection::graceful_shutdown(self);
    }
}

/// Runs a connection to its end, asking it to finish gracefully (complete in-flight requests,
/// then close; GOAWAY on HTTP/2) when the proxy stops, or when it waits too long for a request:
///
/// - `header_read` (HTTP/1): a request head has begun to arrive, or the connection has not sent
///   its first one, and no request has started for that long (bytes that arrive after a request
///   was answered count as the next head: a request body still coming then is rare);
/// - `idle`: otherwise, no request in flight or started for that long.
///
/// A watchdog checks every half of the shorter of the two, so a connection is cut off between
/// one and one and a half times its limit.
///
/// The connection is polled on every wake; the stop signal and the watchdog's timer are polled
/// once to register, and after that only when a cheap check (the signal's version, the timer's
/// state) says their event came. Both wake this same task, so their registrations stay valid,
/// and a request's wakes cost one poll of the connection rather than three futures.
async fn supervise<C>(
    conn: C,
    activity: &Activity,
    idle: Duration,
    header_read: Option<Duration>,
    stop: watch::Receiver<bool>,
) -> Option<C::Output>
where
    C: Graceful,
{
    let period = (header_read.map_or(idle, |h| h.min(idle)) / 2).max(Duration::from_millis(1));
    let mut conn = pin!(conn);
    let mut probe = stop.clone();
    let mut stop = stop;
    let mut stopped = pin!(crate::until_stopped(&mut stop));
    let mut tick = pin!(tokio::time::sleep(period));
    let mut watchdog = Watchdog::new(activity, idle, header_read);
    let mut closing = false;
    let mut registered = false;
    poll_fn(|cx| {
        loop {
            if let Poll::Ready(output) = conn.as_mut().poll(cx) {
                return Poll::Ready(Some(output));
            }
            if closing {
                return Poll::Pending;
            }
            if !registered || probe.has_changed().unwrap_or(true) {
                probe.borrow_and_update();
                if stopped.as_mut().poll(cx).is_ready() {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    continue;
                }
            }
            if (!registered || tick.is_elapsed()) && tick.as_mut().poll(cx).is_ready() {
                let now = tokio::time::Instant::now();
                match watchdog.overdue(now) {
                    Overdue::No => {}
                    Overdue::Idle => {
                        tracing::debug!("closing an idle connection");
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                        continue;
                    }
                    // Nothing is in flight, and a head under way would never finish.
                    Overdue::Head => {
                        tracing::debug!("closing a connection whose request head did not arrive in time");
                        return Poll::Ready(None);
                    }
                }
                tick.as_mut().reset(now + period);
                // Register the new deadline.
                let _ = tick.as_mut().poll(cx);
            }
            registered = true;
            return Poll::Pending;
        }
    })
    .await
}

/// What the watchdog of [`supervise`] saw at its last check.
struct Watchdog<'a> {
    activity: &'a Activity,
    idle: Duration,
    header_read: Option<Duration>,
    /// Requests started at the last check.
    seen: u64,
    /// When a request was last seen starting or in flight (at first: when the connection
    /// opened).
    quiet_since: tokio::time::Instant,
    /// When the watchdog first saw a head under way that has not become a request.
    head_since: Option<tokio::time::Instant>,
}

impl<'a> Watchdog<'a> {
    fn new(activity: &'a Activity, idle: Duration, header_read: Option<Duration>) -> Self {
        Self {
            activity,
            idle,
            header_read,
            seen: activity.started.load(Ordering::Relaxed),
            quiet_since: tokio::time::Instant::now(),
            head_since: None,
        }
    }

    /// Whether the connection has waited past its limit for a request, at `now`.
    fn overdue(&mut self, now: tokio::time::Instant) -> Overdue {
        let a = self.activity;
        let started = a.started.load(Ordering::Relaxed);
        if started != self.seen || a.in_flight.load(Ordering::Relaxed) > 0 {
            self.seen = started;
            self.quiet_since = now;
            self.head_since = None;
            return Overdue::No;
        }
        let idle = || {
            if now - self.quiet_since >= self.idle {
                Overdue::Idle
            } else {
                Overdue::No
            }
        };
        let Some(header_read) = self.header_read else {
            return idle();
        };
        let first = started == 0;
        let head = a.received.load(Ordering::Relaxed) > a.received_at_request.load(Ordering::Relaxed);
        if first || head {
            // The first head counts from the connection's start; a later one from when the
            // watchdog first saw its bytes.
            let since = *self
                .head_since
                .get_or_insert(if first { self.quiet_since } else { now });
            if now - since < header_read {
                Overdue::No
            } else if head {
                Overdue::Head
            } else {
                // Connected and silent: nothing to lose by asking it to close.
                Overdue::Idle
            }
        } else {
            self.head_since = None;
            idle()
        }
    }
}

/// What the watchdog of [`supervise`] found.
enum Overdue {
    /// Within its limits.
    No,
    /// Waited too long with nothing under way: close gracefully.
    Idle,
    /// A request head did not arrive in time: cut off.
    Head,
}

/// Downstream I/O that counts the reads that bring bytes, for the watchdog of [`supervise`].
struct Counted<I> {
    io: I,
    shared: Arc<Shared>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Counted<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.shared.activity.received.fetch_add(1, Ordering::Relaxed);
        }
        read
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Counted<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
