//! The I/O shell: one keep-alive hyper client connection per task, sending on the plan's
//! schedule (open loop) or back to back (closed loop), and tallying what comes back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Uri};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::Error;
use super::record::{Answer, Outcome, Recorder};
use super::schedule::{Users, Window};

/// After a failed reconnect the closed loop waits this long before the next try, so a dead
/// target costs a few attempts a second rather than a busy loop.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

/// Where and what every request goes to.
#[derive(Debug)]
pub(crate) struct Target {
    /// The resolved address.
    addr: SocketAddr,
    /// Origin form (`/path?q`) for HTTP/1.1; absolute for h2, whose `:scheme` and `:authority`
    /// come from it.
    uri: Uri,
    /// Sent with every request (with `host` for HTTP/1.1 unless `-H` gave one).
    headers: HeaderMap,
    /// h2c with prior knowledge rather than HTTP/1.1.
    http2: bool,
    /// The response header that names the track.
    track_header: HeaderName,
}

impl Target {
    /// A request to the target, as user `user` when there is one.
    fn request(&self, user: Option<u32>) -> Request<Empty<Bytes>> {
        let mut request = Request::new(Empty::new());
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        if let Some(k) = user {
            let value = HeaderValue::try_from(format!("user-{k}")).expect("ASCII digits");
            request.headers_mut().insert(USER_HEADER, value);
        }
        request
    }

    /// The target at `addr` for the absolute `uri`. HTTP/1.1 gets the origin form and a
    /// `host` header (unless `headers` has one); h2 keeps the absolute form.
    pub fn new(addr: SocketAddr, uri: &Uri, mut headers: HeaderMap, http2: bool, track_header: HeaderName) -> Self {
        let uri = if http2 {
            uri.clone()
        } else {
            if !headers.contains_key(HOST)
                && let Some(authority) = uri.authority()
            {
                headers.insert(HOST, HeaderValue::from_str(authority.as_str()).expect("valid in a URI"));
            }
            let path = uri.path_and_query().map_or("/", |p| p.as_str());
            Uri::try_from(path).expect("valid in a URI")
        };
        Self {
            addr,
            uri,
            headers,
            http2,
            track_header,
        }
    }
}

/// The sticky key the proxy's examples use.
const USER_HEADER: HeaderName = HeaderName::from_static("x-user-id");

/// A connection's sending half, and the task that drives it.
struct Sender {
    http: Http,
    /// Held for its `Drop`.
    _driver: Driver,
}

enum Http {
    V1(http1::SendRequest<Empty<Bytes>>),
    V2(http2::SendRequest<Empty<Bytes>>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match &self.http {
            Http::V1(s) => s.is_closed(),
            Http::V2(s) => s.is_closed(),
        }
    }
}

/// The task that drives a hyper connection; dropping it closes the connection, so nothing a
/// finished run abandoned keeps reaching the upstream.
struct Driver(JoinHandle<()>);

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One keep-alive connection (re-opened when it breaks) and its own user stream and tally.
pub(crate) struct Connection {
    target: Arc<Target>,
    sender: Option<Sender>,
    users: Users,
}

impl Connection {
    /// Opens the connection; an error here means the target is unreachable.
    pub async fn open(target: Arc<Target>, users: Users) -> Result<Self, Error> {
        let sender = Some(connect(&target).await?);
        Ok(Self { target, sender, users })
    }

    /// The live sender, reconnecting first if the last one broke.
    async fn sender(&mut self) -> Result<&mut Sender, Error> {
        if self.sender.as_ref().is_none_or(Sender::is_closed) {
            self.sender = None;
            self.sender = Some(connect(&self.target).await?);
        }
        Ok(self.sender.as_mut().expect("just set"))
    }

    /// Sends one request and waits for its whole answer. On a transport error the connection
    /// is dropped, to be re-opened by the next request.
    async fn exchange(&mut self, intended: Instant) -> (Outcome, bool) {
        let sent = Instant::now();
        let request = self.target.request(self.users.next_user());
        let track_header = self.target.track_header.clone();
        let answer = match self.sender().await {
            Ok(Sender { http: Http::V1(s), .. }) => match s.ready().await {
                Ok(()) => read(s.send_request(request).await, &track_header).await,
                Err(_) => None,
            },
            Ok(Sender { http: Http::V2(s), .. }) => exchange_h2(s.clone(), request, &track_header).await,
            Err(_) => {
                let outcome = Outcome {
                    intended,
                    sent,
                    done: Instant::now(),
                    answer: None,
                };
                return (outcome, false);
            }
        };
        // A broken HTTP/1.1 exchange leaves the connection unusable; an h2 stream can fail alone,
        // and `sender` notices when the whole connection is closed.
        if answer.is_none() && !self.target.http2 {
            self.sender = None;
        }
        let outcome = Outcome {
            intended,
            sent,
            done: Instant::now(),
            answer,
        };
        (outcome, true)
    }

    /// Closed loop: the next request leaves when the previous answer arrives, until the end.
    pub async fn closed_loop(mut self, window: Window) -> Recorder {
        let mut recorder = Recorder::new(window);
        let _ = tokio::time::timeout_at(window.end, async {
            loop {
                // The timer wheel fires up to a tick after the end; check the clock itself.
                let now = Instant::now();
                if now >= window.end {
                    break;
                }
                recorder.sending(now);
                let (outcome, connected) = self.exchange(now).await;
                recorder.finished(&outcome);
                if !connected {
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                }
            }
        })
        .await;
        recorder
    }

    /// Open loop over HTTP/1.1: each slot from the pacer leaves at once or, if the previous
    /// answer is still outstanding, as soon as it arrives; latency counts from the intended time
    /// either way, so waiting behind a slow answer is measured, not hidden.
    pub async fn open_loop_http1(mut self, window: Window, mut slots: UnboundedReceiver<Instant>) -> Recorder {
        let mut recorder = Recorder::new(window);
        let _ = tokio::time::timeout_at(window.end, async {
            while let Some(intended) = slots.recv().await {
                // The timer wheel fires up to a tick after the end; check the clock itself.
                if Instant::now() >= window.end {
                    break;
                }
                recorder.sending(intended);
                let (outcome, _) = self.exchange(intended).await;
                recorder.finished(&outcome);
            }
        })
        .await;
        recorder
    }

    /// Open loop over h2: each slot from the pacer leaves at once as a new stream, without
    /// waiting for earlier answers (the connection multiplexes).
    pub async fn open_loop_http2(mut self, window: Window, mut slots: UnboundedReceiver<Instant>) -> Recorder {
        let mut recorder = Recorder::new(window);
        // Dropped at the end, which abandons whatever is still in flight.
        let mut in_flight = JoinSet::new();
        let _ = tokio::time::timeout_at(window.end, async {
            loop {
                tokio::select! {
                    biased;
                    Some(done) = in_flight.join_next() => {
                        recorder.finished(&done.expect("request tasks do not panic"));
                    }
                    slot = slots.recv() => {
                        let Some(intended) = slot else { break };
                        if Instant::now() >= window.end {
                            return;
                        }
                        recorder.sending(intended);
                        let sent = Instant::now();
                        let request = self.target.request(self.users.next_user());
                        let track_header = self.target.track_header.clone();
                        if let Ok(Sender { http: Http::V2(s), .. }) = self.sender().await {
                            let s = s.clone();
                            in_flight.spawn(async move {
                                let answer = exchange_h2(s, request, &track_header).await;
                                Outcome { intended, sent, done: Instant::now(), answer }
                            });
                        } else {
                            self.sender = None;
                            recorder.finished(&Outcome { intended, sent, done: Instant::now(), answer: None });
                        }
                    }
                }
            }
            // The pacer is done: collect the last answers until the end.
            while let Some(done) = in_flight.join_next().await {
                recorder.finished(&done.expect("request tasks do not panic"));
            }
        })
        .await;
        recorder
    }
}

async fn exchange_h2(
    mut sender: http2::SendRequest<Empty<Bytes>>,
    request: Request<Empty<Bytes>>,
    track_header: &HeaderName,
) -> Option<Answer> {
    sender.ready().await.ok()?;
    read(sender.send_request(request).await, track_header).await
}

/// Reads an answer to its last byte (so the connection can carry the next request); `None` on
/// any transport error.
async fn read(response: hyper::Result<Response<Incoming>>, track_header: &HeaderName) -> Option<Answer> {
    let (parts, mut body) = response.ok()?.into_parts();
    while let Some(frame) = body.frame().await {
        frame.ok()?;
    }
    Some(Answer {
        status: parts.status.as_u16(),
        track: parts.headers.get(track_header).cloned(),
    })
}

async fn connect(target: &Target) -> Result<Sender, Error> {
    let addr = target.addr;
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| Error::Connect { addr, source })?;
    // Requests are small and latency is the measurement: no Nagle delay.
    stream
        .set_nodelay(true)
        .map_err(|source| Error::Connect { addr, source })?;
    let io = TokioIo::new(stream);
    if target.http2 {
        let (sender, connection) = http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|source| Error::Handshake { addr, source })?;
        // Its errors reach the requests through the sender.
        let driver = Driver(tokio::spawn(async move {
            let _ = connection.await;
        }));
        Ok(Sender {
            http: Http::V2(sender),
            _driver: driver,
        })
    } else {
        let (sender, connection) = http1::handshake(io)
            .await
            .map_err(|source| Error::Handshake { addr, source })?;
        let driver = Driver(tokio::spawn(async move {
            let _ = connection.await;
        }));
        Ok(Sender {
            http: Http::V1(sender),
            _driver: driver,
        })
    }
}
