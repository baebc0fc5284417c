//! The floor of the CPU comparison: hyper's HTTP/1.1 server and client on one current-thread
//! tokio runtime and nothing else. No routing table, no measurement, no header rewriting, no
//! timeouts, no guard against ambiguous framing. It keeps what any proxy on hyper must do: a
//! keep-alive pool per upstream on its thread, and a split between two upstreams (every
//! `1/share`-th request to the second), so that it talks to the same processes as the proxies
//! it is measured beside.
//!
//! Not a product, and not a fair rival: `loadtest/scenarios/proxy-cpu.sh` runs it to show how
//! much of Switchyard's CPU per request is hyper and tokio alone, measured in the same run.
//! Upstream failures end the request with a 502 and nothing more.

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
#[cfg(test)]
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// Serves on `listen`, forwarding to `upstreams[0]`, and to `upstreams[1]` for one request in
/// `every` (when given), until the process ends.
pub fn run(listen: SocketAddr, upstreams: Vec<SocketAddr>, every: u64) -> anyhow::Result<()> {
    anyhow::ensure!(matches!(upstreams.len(), 1 | 2), "give one or two upstreams");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let upstreams: &'static [SocketAddr] = upstreams.leak();
    runtime.block_on(async {
        let listener = TcpListener::bind(listen).await?;
        Err(serve(listener, upstreams, every).await.into())
    })
}

/// Accepts and serves connections on `listener` until accepting fails.
pub async fn serve(listener: TcpListener, upstreams: &'static [SocketAddr], every: u64) -> std::io::Error {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => return e,
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(move |req| forward(req, upstreams, every));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

thread_local! {
    /// Idle connections of this thread, by upstream.
    static IDLE: RefCell<[Vec<SendRequest<Incoming>>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

type Answer = Response<GiveBack>;

async fn forward(req: Request<Incoming>, upstreams: &'static [SocketAddr], every: u64) -> Result<Answer, Infallible> {
    let n = COUNT.with(|c| {
        c.set(c.get() + 1);
        c.get()
    });
    let which = usize::from(upstreams.len() == 2 && every > 0 && n.is_multiple_of(every));
    let (mut parts, body) = req.into_parts();
    // Origin-form towards the upstream, as the client sent it.
    if let Some(path) = parts.uri.path_and_query().cloned() {
        parts.uri = path.into();
    }
    let Some(mut sender) = sender(which, upstreams[which]).await else {
        return Ok(bad_gateway());
    };
    match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            let body = GiveBack {
                body: Some(body),
                sender: Some(sender),
                which,
            };
            Ok(Response::from_parts(parts, body))
        }
        Err(_) => Ok(bad_gateway()),
    }
}

/// A ready connection to upstream `which`: an idle one of this thread, else a new one.
async fn sender(which: usize, addr: SocketAddr) -> Option<SendRequest<Incoming>> {
    while let Some(mut sender) = IDLE.with(|idle| idle.borrow_mut()[which].pop()) {
        if sender.ready().await.is_ok() {
            return Some(sender);
        }
    }
    let stream = TcpStream::connect(addr).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(connection);
    Some(sender)
}

fn bad_gateway() -> Answer {
    let body = GiveBack {
        body: None,
        sender: None,
        which: 0,
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

/// The upstream's body (none: empty); its connection goes back to the pool when the body has
/// ended.
pub struct GiveBack {
    body: Option<Incoming>,
    sender: Option<SendRequest<Incoming>>,
    which: usize,
}

impl GiveBack {
    fn give_back(&mut self) {
        if let Some(sender) = self.sender.take() {
            IDLE.with(|idle| idle.borrow_mut()[self.which].push(sender));
        }
    }
}

impl Body for GiveBack {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let Some(body) = &mut self.body else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(&mut *body).poll_frame(cx);
        let ended = body.is_end_stream();
        match &polled {
            Poll::Ready(None) => self.give_back(),
            Poll::Ready(Some(Ok(_))) if ended => self.give_back(),
            Poll::Ready(Some(Err(_))) => self.sender = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Incoming::size_hint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::{self, Faults};

    async fn upstream(name: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(upstream::serve(listener, name, "ok\n", Faults::default()));
        addr
    }

    /// A pass-through in front of `upstreams`, and a client connection to it.
    async fn passthrough(upstreams: Vec<SocketAddr>, every: u64) -> SendRequest<Empty<Bytes>> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, upstreams.leak(), every));
        let stream = TcpStream::connect(addr).await.unwrap();
        let (client, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    }

    #[tokio::test]
    async fn it_splits_between_two_upstreams_and_reuses_their_connections() {
        let mut client = passthrough(vec![upstream("stable").await, upstream("canary").await], 4).await;
        let mut names = Vec::new();
        for _ in 0..8 {
            client.ready().await.unwrap();
            let request = Request::get("/x?y=1")
                .header("host", "example")
                .body(Empty::<Bytes>::new())
                .unwrap();
            let response = client.send_request(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            names.push(response.headers()["x-upstream"].to_str().unwrap().to_owned());
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, "ok\n");
        }
        let canary = names.iter().filter(|n| *n == "canary").count();
        assert_eq!(canary, 2, "{names:?}");
        // One connection per upstream: each was given back before the next request.
        let pooled = IDLE.with(|idle| idle.borrow().iter().map(Vec::len).collect::<Vec<_>>());
        assert_eq!(pooled, [1, 1]);
    }

    #[tokio::test]
    async fn an_upstream_that_refuses_gets_a_502() {
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let mut client = passthrough(vec![closed], 0).await;
        let request = Request::get("/").body(Empty::<Bytes>::new()).unwrap();
        assert_eq!(
            client.send_request(request).await.unwrap().status(),
            StatusCode::BAD_GATEWAY
        );
    }
}
