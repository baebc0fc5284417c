//! Mock upstreams: HTTP/1.1 and h2c servers on `127.0.0.1:0` that answer with their name and
//! a configurable status, latency and failure mode, and remember what they saw.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// How a mock upstream treats a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Answer with the configured status after the configured latency.
    Answer,
    /// Never answer (for timeouts); the connection stays open.
    Hang,
    /// Close the connection without answering (for resets).
    Reset,
}

/// What a mock upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method and path with query.
    pub method: http::Method,
    /// The request target as received.
    pub uri: http::Uri,
    /// The protocol version it arrived with.
    pub version: http::Version,
    /// The headers it arrived with.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

#[derive(Debug)]
struct State {
    name: String,
    status: AtomicU16,
    latency_us: AtomicU64,
    behaviour: AtomicU8,
    /// Every `n`th request answers 500 (0: none).
    fail_every: AtomicU64,
    requests: AtomicU64,
    connections: AtomicU64,
    open: AtomicU64,
    seen: Mutex<Vec<Seen>>,
    release: Notify,
    /// The body of every answer instead of the name, when set.
    body: Mutex<Option<Bytes>>,
    /// Statuses for requests of exactly these paths, over `status`.
    path_status: Mutex<Vec<(String, u16)>>,
}

/// A mock upstream serving until dropped.
#[derive(Debug)]
pub struct MockUpstream {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockUpstream {
    /// Starts a mock named `name` (it answers `name` as its body and in `x-upstream`).
    pub async fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let addr = listener.local_addr().expect("bound address");
        let state = Arc::new(State {
            name: name.to_owned(),
            status: AtomicU16::new(200),
            latency_us: AtomicU64::new(0),
            behaviour: AtomicU8::new(0),
            fail_every: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            open: AtomicU64::new(0),
            seen: Mutex::new(Vec::new()),
            release: Notify::new(),
            body: Mutex::new(None),
            path_status: Mutex::new(Vec::new()),
        });
        let task = tokio::spawn(serve(listener, Arc::clone(&state)));
        Self { addr, state, task }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// The status of every answer from now on.
    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::Relaxed);
    }

    /// The delay before every answer from now on.
    pub fn set_latency(&self, latency: Duration) {
        self.state.latency_us.store(
            u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// The body of every answer from now on, instead of the mock's name (a JSON document, for
    /// an endpoint the control loop reads).
    pub fn set_body(&self, body: impl Into<Bytes>) {
        *self.state.body.lock().expect("not poisoned") = Some(body.into());
    }

    /// Answers requests for exactly `path` (a health check's) with `status` from now on,
    /// whatever [`Self::set_status`] says for the others.
    pub fn set_path_status(&self, path: &str, status: u16) {
        let mut paths = self.state.path_status.lock().expect("not poisoned");
        paths.retain(|(p, _)| p != path);
        paths.push((path.to_owned(), status));
    }

    /// Requests received so far for paths other than `path` (a health check's).
    pub fn requests_besides(&self, path: &str) -> usize {
        let seen = self.state.seen.lock().expect("not poisoned");
        seen.iter().filter(|s| s.uri.path() != path).count()
    }

    /// Makes every `n`th request (1-based count) answer 500; 0 turns it off.
    pub fn fail_every(&self, n: u64) {
        self.state.fail_every.store(n, Ordering::Relaxed);
    }

    /// How requests are treated from now on.
    pub fn set_behaviour(&self, b: Behaviour) {
        let v = match b {
            Behaviour::Answer => 0,
            Behaviour::Hang => 1,
            Behaviour::Reset => 2,
        };
        self.state.behaviour.store(v, Ordering::Relaxed);
        if b != Behaviour::Hang {
            self.state.release.notify_waiters();
        }
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::Relaxed)
    }

    /// Connections open now (accepted and not yet closed by either side).
    pub fn open_connections(&self) -> u64 {
        self.state.open.load(Ordering::Relaxed)
    }

    /// Everything seen so far, oldest first.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("not poisoned").clone()
    }
}

async fn serve(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        state.connections.fetch_add(1, Ordering::Relaxed);
        state.open.fetch_add(1, Ordering::Relaxed);
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = {
                let state = Arc::clone(&state);
                service_fn(move |req| answer(Arc::clone(&state), req))
            };
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
            state.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn answer(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let n = state.requests.fetch_add(1, Ordering::Relaxed) + 1;
    let (parts, body) = req.into_parts();
    let for_path = {
        let paths = state.path_status.lock().expect("not poisoned");
        paths.iter().find(|(p, _)| p == parts.uri.path()).map(|(_, s)| *s)
    };
    let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    state.seen.lock().expect("not poisoned").push(Seen {
        method: parts.method,
        uri: parts.uri,
        version: parts.version,
        headers: parts.headers,
        body,
    });
    match state.behaviour.load(Ordering::Relaxed) {
        1 => {
            state.release.notified().await;
        }
        2 => return Err(std::io::Error::other("reset by the mock")),
        _ => {}
    }
    let latency = state.latency_us.load(Ordering::Relaxed);
    if latency > 0 {
        tokio::time::sleep(Duration::from_micros(latency)).await;
    }
    let every = state.fail_every.load(Ordering::Relaxed);
    let status = if let Some(status) = for_path {
        status
    } else if every > 0 && n.is_multiple_of(every) {
        500
    } else {
        state.status.load(Ordering::Relaxed)
    };
    let body = state.body.lock().expect("not poisoned").clone();
    let mut response = Response::new(Full::new(body.unwrap_or_else(|| Bytes::from(state.name.clone()))));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert("x-upstream", state.name.parse().expect("names are header-safe"));
    Ok(response)
}
