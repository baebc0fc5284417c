//! A minimal, fast HTTP/1.1 upstream: every request gets the same small body and its name in
//! `x-upstream`. Keep-alive, no logging: it should cost as little as possible. Optional faults
//! (a share of 500s, added latency) make it a faulty candidate for demos and scenarios.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
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
    serve_live(listener, name, body, faults, Live::new(true)).await
}

/// As [`serve`], with the faults applying only while `live.faulty` is set.
pub async fn serve_live(
    listener: TcpListener,
    name: &'static str,
    body: &'static str,
    faults: Faults,
    live: Arc<Live>,
) -> std::io::Error {
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
        tokio::spawn(async move {
            let service = service_fn(move |_req: Request<Incoming>| {
                let n = count.fetch_add(1, Ordering::Relaxed) + 1;
                live.requests.fetch_add(1, Ordering::Relaxed);
                let faulty = live.faulty.load(Ordering::Relaxed);
                async move {
                    if faulty && !faults.latency.is_zero() {
                        tokio::time::sleep(faults.latency).await;
                    }
                    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
                    if faulty && every > 0 && n.is_multiple_of(every) {
                        *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    response
                        .headers_mut()
                        .insert("x-upstream", hyper::header::HeaderValue::from_static(name));
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

/// Binds `addr` and serves on one thread until the process ends.
pub fn run(addr: SocketAddr, name: String, body: String, faults: Faults) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // The strings live as long as the process; leaking them lets every request borrow them.
    let name: &'static str = name.leak();
    let body: &'static str = body.leak();
    runtime.block_on(async {
        let listener = TcpListener::bind(addr).await?;
        Err(serve(listener, name, body, faults).await.into())
    })
}
