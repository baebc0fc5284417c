//! The access log (`accessLog` in the configuration; off unless given): one JSON line per
//! request the proxy answers, to standard output or a file, written off the request path.
//!
//! A request fills an [`Entry`] as it goes (what it asked, where it was decided, what came
//! back) and, when it ends, hands it to a bounded queue; a writer thread formats the entries and
//! writes them in batches, one `write` a batch. A request never waits for the log and never
//! fails because of it: when the queue is full the entry is dropped and counted
//! (`switchyard_access_log_dropped_total`), and so are the lines of a write that failed.
//!
//! Every text that comes from a request (its path, its request id) is escaped as JSON: `"` and
//! `\` are escaped, and control characters, DEL and every byte above ASCII are written as
//! `\u00XX`, so a line is always one line of ASCII and no value can close its string early.
//!
//! ```text
//! {"time":"2026-12-03T10:11:12.123456Z","route":"checkout","track":"canary","endpoint":"127.0.0.1:9002","method":"GET","path":"/cart?x=1","status":200,"durationUs":412,"upstreamUs":380,"bytesIn":0,"bytesOut":1532,"requestId":"5f0c7d6e-…","client":"192.0.2.7:51514","upstreamError":null,"clientError":null}
//! ```

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, SystemTime};

use http::{Method, Request};
use switchyard_config::schema::AccessLogPath;
use tokio::time::Instant;

use crate::record::{ClientError, UpstreamError};
use crate::request_body::BodyState;

/// Entries the queue holds before new ones are dropped.
pub const QUEUE: usize = 16 * 1024;

/// How long the writer waits after a batch before it looks for the next one: under load the
/// queue then fills for a while, and requests seldom have to wake the writer.
const PAUSE: Duration = Duration::from_millis(5);

/// A batch is written once it holds this many bytes, or the queue is empty.
const BATCH_BYTES: usize = 64 * 1024;

/// Why the access log could not be started.
#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    /// The file could not be opened for appending.
    #[error(
        "accessLog.path: cannot open {path} for appending: {source}; check that its directory exists and is writable"
    )]
    Open {
        /// The file.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// The writer thread could not be started.
    #[error("cannot start the access log's writer thread: {0}")]
    Thread(io::Error),
}

/// The proxy's access log: the queue's sending side and its counters.
#[derive(Debug)]
pub struct AccessLog {
    queue: SyncSender<Box<Entry>>,
    counters: Arc<Counters>,
}

/// What the writer and the requests share.
#[derive(Debug, Default)]
struct Counters {
    /// Lines written.
    written: AtomicU64,
    /// Entries dropped: the queue was full, or their write failed.
    dropped: AtomicU64,
    /// Reopen the file before the next batch (after `SIGHUP`).
    reopen: AtomicBool,
}

/// One request, as the access log writes it. Built when the request starts (only when the log
/// is on), filled in on the way, sent when the request ends.
#[derive(Debug)]
pub struct Entry {
    /// Wall-clock time at the request's start.
    time: SystemTime,
    start: Instant,
    /// The route, track and endpoint, once decided.
    decided: Option<(Arc<Labels>, usize)>,
    /// `None` for a head that could not be parsed.
    method: Option<Method>,
    /// The path and query as the client sent them, then the request id (the two in one
    /// allocation, copied: the request's own bytes live in its connection's read buffer).
    text: Vec<u8>,
    path_len: usize,
    has_id: bool,
    client: SocketAddr,
    /// When the upstream's response head came.
    upstream: Option<Instant>,
    /// When the request ended (set as it is sent).
    end: Instant,
    status: u16,
    /// Request body bytes received from the client (a tunnel's bytes from it), unless the
    /// request body's state counts them.
    pub bytes_in: u64,
    /// The request body's state, which counts its bytes as they come.
    request_body: Option<Arc<BodyState>>,
    /// Response body bytes sent to the client.
    pub bytes_out: u64,
    upstream_error: Option<UpstreamError>,
    client_error: Option<ClientError>,
}

/// A track's names for the log, made once per table.
#[derive(Debug)]
pub struct Labels {
    route: Box<str>,
    track: Box<str>,
    endpoints: Box<[Box<str>]>,
}

impl Labels {
    /// The names of `route`'s track `track`, with the addresses of its endpoints in order.
    pub fn new(route: &str, track: &str, endpoints: impl IntoIterator<Item = String>) -> Self {
        Self {
            route: route.into(),
            track: track.into(),
            endpoints: endpoints.into_iter().map(String::into_boxed_str).collect(),
        }
    }
}

impl Entry {
    /// The entry of `req`, from `client`, which started at `start`.
    pub fn begin<B>(req: &Request<B>, client: SocketAddr, start: Instant) -> Box<Self> {
        let path = req.uri().path_and_query().map_or(req.uri().path(), |p| p.as_str());
        let mut text = Vec::with_capacity(path.len() + 36);
        text.extend_from_slice(path.as_bytes());
        Box::new(Self {
            time: SystemTime::now(),
            start,
            decided: None,
            method: Some(req.method().clone()),
            path_len: text.len(),
            text,
            has_id: false,
            client,
            upstream: None,
            end: start,
            status: 0,
            bytes_in: 0,
            request_body: None,
            bytes_out: 0,
            upstream_error: None,
            client_error: None,
        })
    }

    /// A request head that could not be parsed, from `client`, answered `status` by hyper.
    pub fn unparsed(client: SocketAddr, status: u16) -> Box<Self> {
        let now = Instant::now();
        Box::new(Self {
            time: SystemTime::now(),
            start: now,
            decided: None,
            method: None,
            text: Vec::new(),
            path_len: 0,
            has_id: false,
            client,
            upstream: None,
            end: now,
            status,
            bytes_in: 0,
            request_body: None,
            bytes_out: 0,
            upstream_error: None,
            client_error: Some(ClientError::Malformed),
        })
    }

    /// The request was decided to `labels`' track and its endpoint `endpoint`.
    pub fn decided(&mut self, labels: &Arc<Labels>, endpoint: usize) {
        self.decided = Some((Arc::clone(labels), endpoint));
    }

    /// The request's body, unless it is empty.
    pub fn request_body(&mut self, body: Option<Arc<BodyState>>) {
        self.request_body = body;
    }

    /// The request's id.
    pub fn request_id(&mut self, id: &[u8]) {
        self.text.truncate(self.path_len);
        self.text.extend_from_slice(id);
        self.has_id = true;
    }

    /// The upstream's response head came, with `status`.
    pub fn responded(&mut self, status: u16, at: Instant) {
        self.status = status;
        self.upstream = Some(at);
    }

    /// The proxy answered `status` itself.
    pub fn answered(&mut self, status: u16) {
        self.status = status;
    }

    /// The upstream failed this way (its status is the proxy's 502 or 504, or what went out
    /// before a body broke off).
    pub fn upstream_failed(&mut self, error: UpstreamError) {
        self.upstream_error = Some(error);
    }

    /// The client did this wrong (with status 0 when it left before any answer).
    pub fn client_failed(&mut self, error: ClientError) {
        self.client_error = Some(error);
    }

    /// Writes the entry as one JSON line, ended at `end`.
    fn write(&self, end: Instant, out: &mut Vec<u8>) {
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        out.extend_from_slice(b"{\"time\":\"");
        out.extend_from_slice(humantime::format_rfc3339_micros(self.time).to_string().as_bytes());
        out.extend_from_slice(b"\",\"route\":");
        let labels = self.decided.as_ref();
        optional_string(out, labels.map(|(l, _)| l.route.as_bytes()));
        out.extend_from_slice(b",\"track\":");
        optional_string(out, labels.map(|(l, _)| l.track.as_bytes()));
        out.extend_from_slice(b",\"endpoint\":");
        optional_string(out, labels.and_then(|(l, e)| l.endpoints.get(*e)).map(|e| e.as_bytes()));
        out.extend_from_slice(b",\"method\":");
        optional_string(out, self.method.as_ref().map(|m| m.as_str().as_bytes()));
        out.extend_from_slice(b",\"path\":");
        optional_string(out, self.method.is_some().then(|| &self.text[..self.path_len]));
        let _ = write!(
            out,
            ",\"status\":{},\"durationUs\":{},\"upstreamUs\":",
            self.status,
            micros(end.saturating_duration_since(self.start))
        );
        match self.upstream {
            Some(at) => {
                let _ = write!(out, "{}", micros(at.saturating_duration_since(self.start)));
            }
            None => out.extend_from_slice(b"null"),
        }
        let bytes_in = self.request_body.as_ref().map_or(self.bytes_in, |b| b.received());
        let _ = write!(out, ",\"bytesIn\":{bytes_in},\"bytesOut\":{}", self.bytes_out);
        out.extend_from_slice(b",\"requestId\":");
        optional_string(out, self.has_id.then(|| &self.text[self.path_len..]));
        let _ = write!(out, ",\"client\":\"{}\",\"upstreamError\":", self.client);
        optional_string(out, self.upstream_error.map(|e| e.name().as_bytes()));
        out.extend_from_slice(b",\"clientError\":");
        optional_string(out, self.client_error.map(|e| e.name().as_bytes()));
        out.extend_from_slice(b"}\n");
    }
}

/// `bytes` as a JSON string: printable ASCII as it is but for `"` and `\`; everything else as
/// an escape. Bytes above ASCII are escaped one by one (as Latin-1 code points), so that bytes
/// that are not UTF-8 are kept, not lost.
fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &b in bytes {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x20..=0x7e => out.push(b),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
        }
    }
    out.push(b'"');
}

fn optional_string(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => string(out, b),
        None => out.extend_from_slice(b"null"),
    }
}

/// An entry on its way to the queue: sent when it ends, however it ends (dropped, it is sent
/// as it stands, ended then).
#[derive(Debug)]
pub struct Pending {
    entry: Option<Box<Entry>>,
    log: Arc<AccessLog>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            self.log.send(entry, Instant::now());
        }
    }
}

impl AccessLog {
    /// Opens `path` (a file for appending, created if absent) and starts the writer thread.
    pub fn start(path: &AccessLogPath) -> Result<Arc<Self>, AccessLogError> {
        let sink = Sink::open(path)?;
        let (queue, entries) = sync_channel(QUEUE);
        let counters = Arc::new(Counters::default());
        let writer = Writer {
            entries,
            sink,
            path: path.clone(),
            counters: Arc::clone(&counters),
            failing: false,
        };
        std::thread::Builder::new()
            .name("access-log".to_owned())
            .spawn(move || writer.run())
            .map_err(AccessLogError::Thread)?;
        Ok(Arc::new(Self { queue, counters }))
    }

    /// Lines written so far.
    pub fn written(&self) -> u64 {
        self.counters.written.load(Ordering::Relaxed)
    }

    /// Entries dropped so far: the queue was full, or their write failed.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// Reopens the file by its name before the next batch (what `SIGHUP` does, after a
    /// rotation moved the file away). Standard output is left as it is.
    pub fn reopen(&self) {
        self.counters.reopen.store(true, Ordering::Relaxed);
    }

    /// `entry` with the log it goes to when it ends.
    pub fn pending(self: &Arc<Self>, entry: Box<Entry>) -> Pending {
        Pending {
            entry: Some(entry),
            log: Arc::clone(self),
        }
    }

    /// Queues `entry`, which ended at `end`; never waits.
    pub fn send(&self, mut entry: Box<Entry>, end: Instant) {
        entry.end = end;
        if self.queue.try_send(entry).is_err() {
            // Full, or the writer is gone: the request goes on without its line.
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Pending {
    /// The entry, to fill in.
    pub fn entry(&mut self) -> &mut Entry {
        self.entry.as_mut().expect("an entry is taken only when it is sent")
    }

    /// Sends the entry, which ended now.
    pub fn finish(self) {
        drop(self);
    }

    /// Sends the entry, which ended at `end`.
    pub fn finish_at(mut self, end: Instant) {
        if let Some(entry) = self.entry.take() {
            self.log.send(entry, end);
        }
    }
}

/// Where the lines go.
enum Sink {
    Stdout,
    File(File),
}

impl Sink {
    fn open(path: &AccessLogPath) -> Result<Self, AccessLogError> {
        match path {
            AccessLogPath::Stdout => Ok(Self::Stdout),
            AccessLogPath::File(file) => OpenOptions::new()
                .create(true)
                .append(true)
                .open(file)
                .map(Self::File)
                .map_err(|source| AccessLogError::Open {
                    path: file.clone(),
                    source,
                }),
        }
    }

    fn write(&mut self, batch: &[u8]) -> io::Result<()> {
        match self {
            // Standard output's lock keeps the proxy's own log lines from landing inside a
            // batch: both write whole lines under it.
            Self::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(batch)?;
                out.flush()
            }
            Self::File(file) => file.write_all(batch),
        }
    }
}

/// The writer thread's state.
struct Writer {
    entries: Receiver<Box<Entry>>,
    sink: Sink,
    path: AccessLogPath,
    counters: Arc<Counters>,
    /// The last write failed (logged once until one succeeds).
    failing: bool,
}

impl Writer {
    /// Writes batches until every sender is gone.
    fn run(mut self) {
        let mut batch = Vec::with_capacity(BATCH_BYTES + 4096);
        // Blocks only when the queue is empty; after a batch it pauses instead, so that under
        // load the requests find the writer awake and never have to wake it.
        while let Ok(first) = self.entries.recv() {
            let mut next = Some(first);
            loop {
                let mut lines = 0;
                while let Some(entry) = next.take() {
                    entry.write(entry.end, &mut batch);
                    lines += 1;
                    if batch.len() >= BATCH_BYTES {
                        break;
                    }
                    next = self.entries.try_recv().ok();
                }
                if lines == 0 {
                    break;
                }
                self.flush(&mut batch, lines);
                std::thread::sleep(PAUSE);
                next = self.entries.try_recv().ok();
            }
        }
    }

    fn flush(&mut self, batch: &mut Vec<u8>, lines: u64) {
        if self.counters.reopen.swap(false, Ordering::Relaxed) {
            self.reopen();
        }
        match self.sink.write(batch) {
            Ok(()) => {
                self.counters.written.fetch_add(lines, Ordering::Relaxed);
                if std::mem::take(&mut self.failing) {
                    tracing::info!("the access log is written again");
                }
            }
            Err(e) => {
                self.counters.dropped.fetch_add(lines, Ordering::Relaxed);
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::error!(error = %e, "cannot write the access log; its lines are dropped and counted until a write succeeds");
                }
            }
        }
        batch.clear();
    }

    fn reopen(&mut self) {
        if let AccessLogPath::File(file) = &self.path {
            match Sink::open(&self.path) {
                Ok(sink) => {
                    self.sink = sink;
                    tracing::info!(file = %file, "access log reopened");
                }
                Err(e) => tracing::error!("{e}; the access log goes on in the file it had open"),
            }
        }
    }
}
