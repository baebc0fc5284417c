//! A minimal, fast HTTP/1.1 upstream: every request gets the same body and its name in
//! `x-upstream`. Keep-alive, no logging: it should cost as little as possible. Optional faults
//! (a share of 500s, added latency) make it a faulty candidate for demos and scenarios. The
//! answer's header set ([`HeaderSet`]) and body size are chosen for the CPU scenarios, which
//! measure what a proxy pays per response header and per body byte.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Faults an upstream injects.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Share of requests answered 500, 0 to 1 (spread evenly: every ⌈1/rate⌉-th request).
    pub error_rate: f64,
    /// Added to every answer.
    pub latency: Duration,
}

/// The response headers an upstream sends besides the ones hyper adds (`content-length`, and
/// `date` unless set).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum HeaderSet {
    /// `x-upstream: NAME` only (with hyper's `date` and `content-length`: 3 headers).
    #[default]
    Minimal,
    /// What nginx sends for a static file, 5 headers: `server`, `date`, `content-type`,
    /// `content-length`, `connection: keep-alive` (no `x-upstream`).
    Nginx,
    /// 12 headers, as an application behind a CDN answers: nginx's five, `x-upstream` and
    /// `cache-control`, `etag`, `last-modified`, `vary`, `accept-ranges`,
    /// `x-content-type-options`.
    Twelve,
}

impl HeaderSet {
    /// The headers to insert into every answer of the upstream called `name`.
    fn headers(self, name: &'static str) -> Vec<(HeaderName, HeaderValue)> {
        let nginx = [
            (header::SERVER, "nginx/1.26.3"),
            (header::CONTENT_TYPE, "text/plain"),
            (header::CONNECTION, "keep-alive"),
        ];
        let more = [
            (HeaderName::from_static("x-upstream"), name),
            (header::CACHE_CONTROL, "public, max-age=60"),
            (header::ETAG, "\"6750f3a2-4000\""),
            (header::LAST_MODIFIED, "Wed, 04 Dec 2024 22:00:00 GMT"),
            (header::VARY, "Accept-Encoding"),
            (header::ACCEPT_RANGES, "bytes"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ];
        let pairs: Vec<(HeaderName, &'static str)> = match self {
            Self::Minimal => vec![(HeaderName::from_static("x-upstream"), name)],
            Self::Nginx => nginx.into(),
            Self::Twelve => nginx.into_iter().chain(more).collect(),
        };
        pairs
            .into_iter()
            .map(|(n, v)| (n, HeaderValue::from_static(v)))
            .collect()
    }
}

/// What an upstream answers to every request.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Sent in `x-upstream` (with [`HeaderSet::Minimal`] and [`HeaderSet::Twelve`]).
    pub name: &'static str,
    /// The body.
    pub body: Bytes,
    /// The header set.
    pub headers: HeaderSet,
}

impl Answer {
    /// `body` with `x-upstream: name` ([`HeaderSet::Minimal`]).
    pub fn new(name: &'static str, body: &'static str) -> Self {
        Self {
            name,
            body: Bytes::from_static(body.as_bytes()),
            headers: HeaderSet::Minimal,
        }
    }

    /// A body of `size` bytes: `x` repeated, ending in a newline (empty for 0).
    pub fn sized_body(size: usize) -> Bytes {
        let mut body = vec![b'x'; size];
        if let Some(last) = body.last_mut() {
            *last = b'\n';
        }
        body.into()
    }
}

/// Switches an upstream's faults on and off while it serves, and counts its requests.
#[derive(Debug)]
pub struct Live {
    /// Whether the faults apply now.
    pub faulty: AtomicBool,
    /// Requests served so far.
    pub requests: AtomicU64,
}

impl Live {
    /// Faults on or off from the start.
    pub fn new(faulty: bool) -> Arc<Self> {
        Arc::new(Self {
            faulty: AtomicBool::new(faulty),
            requests: AtomicU64::new(0),
        })
    }
}

/// Serves on `listener` forever, answering `body` with `x-upstream: name`, with `faults`.
pub async fn serve(listener: TcpListener, name: &'static str, body: &'static str, faults: Faults) -> std::io::Error {
    serve_answer(listener, Answer::new(name, body), faults, Live::new(true)).await
}

/// As [`serve`], with the faults applying only while `live.faulty` is set.
pub async fn serve_live(
    listener: TcpListener,
    name: &'static str,
    body: &'static str,
    faults: Faults,
    live: Arc<Live>,
) -> std::io::Error {
    serve_answer(listener, Answer::new(name, body), faults, live).await
}

/// As [`serve_live`], answering `answer`.
pub async fn serve_answer(listener: TcpListener, answer: Answer, faults: Faults, live: Arc<Live>) -> std::io::Error {
    let headers: Arc<[(HeaderName, HeaderValue)]> = answer.headers.headers(answer.name).into();
    let body = answer.body;
    let every = if faults.error_rate > 0.0 {
        (1.0 / faults.error_rate.min(1.0)).round().max(1.0) as u64
    } else {
        0
    };
    let count = Arc::new(AtomicU64::new(0));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => return e,
        };
        let _ = stream.set_nodelay(true);
        let count = Arc::clone(&count);
        let live = Arc::clone(&live);
        let headers = Arc::clone(&headers);
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_req: Request<Incoming>| {
                let n = count.fetch_add(1, Ordering::Relaxed) + 1;
                live.requests.fetch_add(1, Ordering::Relaxed);
                let faulty = live.faulty.load(Ordering::Relaxed);
                let headers = Arc::clone(&headers);
                let body = body.clone();
                async move {
                    if faulty && !faults.latency.is_zero() {
                        tokio::time::sleep(faults.latency).await;
                    }
                    let mut response = Response::new(Full::new(body));
                    if faulty && every > 0 && n.is_multiple_of(every) {
                        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    let map = response.headers_mut();
                    map.reserve(headers.len() + 2);
                    for (name, value) in headers.iter() {
                        map.insert(name.clone(), value.clone());
                    }
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Serves on a free loopback port, in the background on the current runtime; returns the
/// address (`127.0.0.1:PORT`).
pub async fn spawn(name: &'static str, faults: Faults, live: Arc<Live>) -> std::io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    tokio::spawn(serve_live(listener, name, "ok\n", faults, live));
    Ok(addr)
}

/// Binds `addr` and serves `answer` on one thread until the process ends.
pub fn run(addr: SocketAddr, answer: Answer, faults: Faults) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let listener = TcpListener::bind(addr).await?;
        Err(serve_answer(listener, answer, faults, Live::new(true)).await.into())
    })
}
