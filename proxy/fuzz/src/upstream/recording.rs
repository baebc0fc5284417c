//! An upstream that records every request the proxy sends it, exactly as it came on the wire,
//! and answers `200 OK` with a three-byte body.
//!
//! It is not hyper's server: hyper drops the `Content-Length` of a request that also carries
//! `Transfer-Encoding` before its service sees the request, which would hide the very thing the
//! fuzz targets check. Heads are parsed with httparse (hyper's parser) and bodies framed here,
//! by `Transfer-Encoding: chunked` or `Content-Length`, so keep-alive works as with hyper.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::timeout;

use crate::wire::{self, Headers};

/// How long a connection waits for the rest of a request it has begun to receive.
const READ: Duration = Duration::from_secs(2);
/// How long an idle (pooled) connection waits for its next request.
const IDLE: Duration = Duration::from_secs(120);
/// The longest head read; the proxy's own limit is 32 KiB.
const MAX_HEAD: usize = 64 * 1024;
/// The longest body read.
const MAX_BODY: usize = 1024 * 1024;

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n";
const OK_TO_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n";

/// A request the upstream received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// The method, as sent.
    pub method: String,
    /// The request target, as sent.
    pub target: String,
    /// httparse's minor version: 1 for `HTTP/1.1`.
    pub minor_version: u8,
    /// The header fields, as sent.
    pub headers: Headers,
    /// The body as framed on the wire (chunk sizes and trailers included).
    pub body: Vec<u8>,
    /// Whether the body ended as its framing says (not cut off by a close or a bound).
    pub body_complete: bool,
}

/// What the upstream saw.
#[derive(Debug, Clone)]
pub enum Record {
    /// A request whose head parsed.
    Request(RecordedRequest),
    /// Bytes that do not parse as an HTTP/1.1 request (head or chunked body).
    Unparsable {
        /// What httparse or the chunk parser said.
        why: String,
        /// The bytes, from the start of the request.
        bytes: Vec<u8>,
    },
}

/// A recording upstream listening on `127.0.0.1:0`.
#[derive(Debug)]
pub struct RecordingUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    log: Mutex<Vec<Record>>,
    /// Requests begun and not yet recorded.
    busy: watch::Sender<usize>,
}

impl RecordingUpstream {
    /// Binds and starts accepting on the current runtime.
    pub async fn bind() -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            log: Mutex::new(Vec::new()),
            busy: watch::Sender::new(0),
        });
        let accepting = Arc::clone(&shared);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream, Arc::clone(&accepting)));
            }
        });
        Ok(Self { addr, shared })
    }

    /// Everything recorded since the last call, oldest first.
    pub fn take(&self) -> Vec<Record> {
        self.shared
            .log
            .lock()
            .map(|mut log| std::mem::take(&mut *log))
            .unwrap_or_default()
    }

    /// Waits until every request begun has been recorded, for at most `bound`; returns whether
    /// that happened. A request whose downstream went away ends when the proxy drops its
    /// upstream side.
    pub async fn settled(&self, bound: Duration) -> bool {
        let mut busy = self.shared.busy.subscribe();
        matches!(timeout(bound, busy.wait_for(|n| *n == 0)).await, Ok(Ok(_)))
    }
}

impl Shared {
    fn record(&self, record: Record) {
        if let Ok(mut log) = self.log.lock() {
            log.push(record);
        }
    }
}

/// Counts a request as begun until it is dropped.
struct Busy<'a>(&'a watch::Sender<usize>);

impl<'a> Busy<'a> {
    fn start(busy: &'a watch::Sender<usize>) -> Self {
        busy.send_modify(|n| *n += 1);
        Self(busy)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// A head that parsed, and how many bytes of the buffer it took.
struct Head {
    request: RecordedRequest,
    len: usize,
}

/// How a request's body is framed.
enum Framing {
    Length(usize),
    Chunked,
    /// Not framed in a way this upstream follows (or beyond its bounds): read nothing more.
    Unknown,
}

async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let mut conn = Conn {
        stream,
        buf: Vec::new(),
    };
    loop {
        // An idle pooled connection is not a request under way.
        if conn.buf.is_empty() && !conn.fill(IDLE).await {
            return;
        }
        let _busy = Busy::start(&shared.busy);
        let Head { mut request, len } = match conn.head().await {
            Ok(Some(head)) => head,
            // Closed or stalled inside a head: the proxy gave up on it.
            Ok(None) => return,
            Err(why) => {
                shared.record(Record::Unparsable {
                    why,
                    bytes: conn.buf.clone(),
                });
                return;
            }
        };
        let head_bytes = conn.buf[..len].to_vec();
        conn.buf.drain(..len);
        let framing = framing(&request.headers);
        let body = match framing {
            Framing::Length(n) => conn.exact(n).await,
            Framing::Chunked => match conn.chunked().await {
                Ok(body) => body,
                Err(why) => {
                    let mut bytes = head_bytes;
                    bytes.extend_from_slice(&conn.buf);
                    shared.record(Record::Unparsable { why, bytes });
                    return;
                }
            },
            Framing::Unknown => None,
        };
        request.body_complete = body.is_some();
        request.body = body.unwrap_or_else(|| std::mem::take(&mut conn.buf));
        // A request whose framing is in doubt ends the connection: what follows is not known to
        // be the next request.
        let keep = request.body_complete
            && wire::request_framing_violation(&request.headers).is_none()
            && !request
                .headers
                .all("connection")
                .any(|v| v.eq_ignore_ascii_case(b"close"));
        let head_request = request.method == "HEAD";
        shared.record(Record::Request(request));
        let answer = if head_request { OK_TO_HEAD } else { OK };
        if !matches!(timeout(READ, conn.stream.write_all(answer)).await, Ok(Ok(()))) || !keep {
            return;
        }
    }
}

fn framing(headers: &Headers) -> Framing {
    if headers.has("transfer-encoding") {
        return if headers.transfer_codings().last().map(String::as_str) == Some("chunked") {
            Framing::Chunked
        } else {
            Framing::Unknown
        };
    }
    match headers.content_length() {
        Ok(None) => Framing::Length(0),
        Ok(Some(n)) => usize::try_from(n)
            .ok()
            .filter(|n| *n <= MAX_BODY)
            .map_or(Framing::Unknown, Framing::Length),
        Err(_) => Framing::Unknown,
    }
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Reads more bytes into the buffer; `false` at the end of the stream, on an error, or when
    /// nothing comes within `bound`.
    async fn fill(&mut self, bound: Duration) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match timeout(bound, self.stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            _ => false,
        }
    }

    /// The next request head: `Ok(None)` when the stream ends (or stalls) inside it.
    async fn head(&mut self) -> Result<Option<Head>, String> {
        loop {
            let mut fields = [httparse::EMPTY_HEADER; 256];
            let mut parsed = httparse::Request::new(&mut fields);
            match parsed.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let request = RecordedRequest {
                        method: parsed.method.unwrap_or_default().to_owned(),
                        target: parsed.path.unwrap_or_default().to_owned(),
                        minor_version: parsed.version.unwrap_or(0),
                        headers: Headers::of(parsed.headers),
                        body: Vec::new(),
                        body_complete: false,
                    };
                    return Ok(Some(Head { request, len }));
                }
                Ok(httparse::Status::Partial) if self.buf.len() > MAX_HEAD => {
                    return Err(format!("request head over {MAX_HEAD} bytes"));
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return Err(format!("request head does not parse: {e}")),
            }
            if !self.fill(READ).await {
                return Ok(None);
            }
        }
    }

    /// The next `n` bytes, or `None` when the stream ends first.
    async fn exact(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill(READ).await {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }

    /// A whole chunked body, as framed: `Ok(None)` when the stream ends first, `Err` when a
    /// chunk does not parse.
    async fn chunked(&mut self) -> Result<Option<Vec<u8>>, String> {
        loop {
            if let Some(end) = wire::chunked_end(&self.buf, 0)? {
                return Ok(Some(self.buf.drain(..end).collect()));
            }
            if self.buf.len() > MAX_BODY || !self.fill(READ).await {
                return Ok(None);
            }
        }
    }
}
