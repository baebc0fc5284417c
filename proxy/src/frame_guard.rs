//! A guard between a downstream connection and hyper's HTTP/1 server that refuses requests whose
//! framing is ambiguous or not what RFC 9112 allows, before they reach the service, and bounds
//! what hyper does not.
//!
//! hyper accepts some framings a proxy must not forward: `Content-Length` with
//! `Transfer-Encoding` (it drops the length and decodes the chunked body), a coding list ending in
//! `chunked` (`gzip, chunked`), the header twice, an empty list element. The guard follows the
//! request framing in the bytes hyper reads: it reads each head, skips each body by its
//! `Content-Length` or chunked encoding, and judges every head when it ends:
//!
//! - `Transfer-Encoding` must be exactly one `chunked` (any case), on one line, without
//!   `Content-Length`. Any other single coding is [`Refusal::TransferCoding`] (`501`); a list, an
//!   empty element, a repeated header, obs-text, or both framing headers is
//!   [`Refusal::Framing`] (`400`).
//! - A refused head whose framing lines are all in the read at hand has those lines' names
//!   overwritten (hyper then sees a request without a body), the read ends with the head, and
//!   nothing after it is ever read: the service learns the refusal from [`Verdicts`] by the
//!   head's number, answers it and closes.
//! - A refused head whose framing lines hyper was handed in an earlier read gets a NUL byte
//!   instead. httparse rejects NUL at every position of a head (even with
//!   `ignore_invalid_headers`), so hyper answers its own `400 Bad Request` and closes.
//! - A chunked body's extensions may hold [`EXTENSION_LIMIT`] bytes in all; past it the guard
//!   turns the next extension byte into a line feed, which hyper's decoder refuses, so the body
//!   fails as malformed.
//!
//! What hyper refuses on its own (invalid or differing `Content-Length`s, a head over the limit,
//! `Transfer-Encoding` on HTTP/1.0, folded lines, invalid chunk syntax) makes the guard stand
//! aside for the rest of the connection, which hyper then ends; a request the guard does not
//! understand is never altered.
//!
//! ```
//! # async fn serve(stream: tokio::net::TcpStream) -> hyper::Result<()> {
//! # let service = hyper::service::service_fn(|_req| async {
//! #     Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
//! # });
//! use std::sync::Arc;
//! use switchyard_proxy::frame_guard::{FrameGuard, Verdicts};
//! let verdicts = Arc::new(Verdicts::default());
//! let io = hyper_util::rt::TokioIo::new(FrameGuard::new(stream, 32 * 1024, Arc::clone(&verdicts)));
//! // The service asks `verdicts.of_head(n)` about the connection's `n`th request.
//! hyper::server::conn::http1::Builder::new().serve_connection(io, service).await
//! # }
//! ```

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most bytes of chunk extensions a request body may carry, all chunks together (hyper's
/// own bound is 16 KiB).
pub const EXTENSION_LIMIT: usize = 4 * 1024;

/// Why the guard refused a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A list, an empty element, a repeated header or obs-text in `Transfer-Encoding`, or
    /// `Transfer-Encoding` with `Content-Length`: `400`.
    Framing,
    /// A single transfer coding other than `chunked`: `501`.
    TransferCoding,
}

/// What a connection's guard refused, for the service to answer: written by the guard, read by
/// the connection's requests. A connection refuses at most one head: nothing after it is read.
/// And the other way: whether the service switched the connection to another protocol.
#[derive(Debug, Default)]
pub struct Verdicts {
    /// The refused head's number (1 for the connection's first) times 4, plus the refusal's
    /// code; 0 while none is refused.
    refused: AtomicU64,
    /// The service answers `101 Switching Protocols`: from the next read on, the bytes are the
    /// tunnel's, not HTTP, and pass unread.
    upgraded: AtomicBool,
}

impl Verdicts {
    /// The refusal of the connection's `head`th request head (counted from 1), if it was
    /// refused.
    pub fn of_head(&self, head: u64) -> Option<Refusal> {
        let refused = self.refused.load(Ordering::Acquire);
        if refused == 0 || refused >> 2 != head {
            return None;
        }
        Some(if refused & 3 == 1 {
            Refusal::Framing
        } else {
            Refusal::TransferCoding
        })
    }

    /// The service switches the connection to another protocol (it answers `101`): the guard
    /// stands aside for good. Bytes read before then were followed as HTTP, and only a client
    /// that sent its tunnel's bytes before the `101` (which RFC 6455 forbids) can see them
    /// altered.
    pub fn upgrade(&self) {
        self.upgraded.store(true, Ordering::Release);
    }

    fn refuse(&self, head: u64, refusal: Refusal) {
        let code = match refusal {
            Refusal::Framing => 1,
            Refusal::TransferCoding => 2,
        };
        self.refused.store(head << 2 | code, Ordering::Release);
    }
}

/// Downstream I/O for hyper's HTTP/1 server that refuses requests whose framing RFC 9112 does not
/// allow (see the [module docs](self)).
///
/// Writes, flushes and shutdowns go to the inner I/O unchanged (vectored writes too). Reads come
/// back unchanged, except for the head of a refused request and an over-long chunk extension;
/// after a head refused through [`Verdicts`], reads never complete.
#[derive(Debug)]
pub struct FrameGuard<I> {
    io: I,
    framing: Framing,
    /// Bytes a rejection still owes the reader, given before anything else is read.
    owed: &'static [u8],
    verdicts: Arc<Verdicts>,
}

impl<I> FrameGuard<I> {
    /// Guards `io`, telling `verdicts` what it refuses. `head_limit` is the longest request head
    /// the guard reads, in bytes, leading empty lines included; over it the guard stands aside
    /// for the rest of the connection. Pass hyper's `max_header_size` so that every head hyper
    /// accepts is checked. The guard keeps at most one head line per connection, and only when a
    /// read ends inside it.
    pub fn new(io: I, head_limit: usize, verdicts: Arc<Verdicts>) -> Self {
        Self {
            io,
            framing: Framing::new(head_limit),
            owed: b"",
            verdicts,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for FrameGuard<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.owed.is_empty() {
            let n = this.owed.len().min(buf.remaining());
            buf.put_slice(&this.owed[..n]);
            this.owed = &this.owed[n..];
            return Poll::Ready(Ok(()));
        }
        if this.framing.follows() && this.verdicts.upgraded.load(Ordering::Acquire) {
            this.framing.stand_aside();
        }
        if this.framing.state == State::Refused {
            // The service answers the refused head and closes; nothing after it is hyper's.
            return Poll::Pending;
        }
        let from = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        if this.framing.follows() {
            match this.framing.feed(&mut buf.filled_mut()[from..]) {
                Fed::Append(owed) => {
                    let n = owed.len().min(buf.remaining());
                    buf.put_slice(&owed[..n]);
                    this.owed = &owed[n..];
                }
                Fed::Refused { head, refusal, end } => {
                    buf.set_filled(from + end);
                    this.verdicts.refuse(head, refusal);
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for FrameGuard<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Where a connection's request stream stands, fed the bytes in the order hyper reads them. No
/// I/O: [`Framing::feed`] takes one read's bytes and returns what to append to them.
#[derive(Debug)]
struct Framing {
    state: State,
    /// The head line a read ended inside of, until its line end arrives (the capacity is reused).
    line: Vec<u8>,
    head_limit: usize,
    /// Heads that ended so far.
    heads: u64,
    /// Chunk extension bytes of the chunked body being read.
    extensions: usize,
}

/// What to do with a read that [`Framing::feed`] followed.
#[derive(Debug, PartialEq, Eq)]
enum Fed {
    /// Append these bytes to it (empty: leave it as it is).
    Append(&'static [u8]),
    /// The `head`th head, which ends `end` bytes into the read, is refused: the read ends there.
    Refused { head: u64, refusal: Refusal, end: usize },
}

/// The most framing lines of one head whose places the guard keeps, to rename them when the
/// head is refused; a head with more is refused with a NUL instead.
const FRAMING_LINES: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In a request head, or between requests.
    Head(Head),
    /// In a `Content-Length` body, with this many bytes (> 0) left.
    Length(u64),
    /// In a chunked body.
    Chunked(Chunk),
    /// Not following: the framing is unknown from here on, or a request was rejected.
    Aside,
    /// A head was refused through [`Verdicts`]: nothing after it is read.
    Refused,
}

/// What a head has shown so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Head {
    /// Bytes of the head so far, leading empty lines included.
    len: usize,
    /// Whether the request line went by (empty lines before it are skipped, as httparse does).
    started: bool,
    content_length: ContentLength,
    /// What the last `Transfer-Encoding` line holds, once there was one.
    transfer_encoding: Option<Coding>,
    /// `Transfer-Encoding` lines so far (up to 255).
    transfer_encodings: u8,
    /// A framing line of this head went to hyper in an earlier read: it cannot be renamed.
    framing_passed: bool,
    /// Past this head, hyper frames the stream in a way the guard does not follow.
    untracked: bool,
}

/// What one `Transfer-Encoding` line holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    /// Exactly `chunked`, in any case.
    Chunked,
    /// One token other than `chunked`: a coding the proxy does not implement.
    Other,
    /// Not one token: a list, an empty value, obs-text, parameters.
    Invalid,
}

/// What a head line was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// The empty line that ends the head.
    End,
    /// `Content-Length` or `Transfer-Encoding`.
    Framing,
    /// Anything else.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum ContentLength {
    #[default]
    Absent,
    Valid(u64),
    /// Not digits, too large, or differing between lines: hyper answers 400 itself.
    Invalid,
}

/// hyper's chunked decoder, state for state: where the two disagree, hyper fails the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Start,
    Size(u64),
    SizeLws(u64),
    Extension(u64),
    SizeLf(u64),
    /// Chunk data, with this many bytes (> 0) left.
    Data(u64),
    DataCr,
    DataLf,
    Trailer,
    TrailerLf,
    EndCr,
    EndLf,
}

/// How far a read took a chunked body.
#[derive(Debug, PartialEq, Eq)]
enum Body {
    /// It needs more bytes.
    More,
    /// It ended after this many bytes of the read.
    Ended(usize),
    /// The bytes are not chunked framing hyper decodes.
    Invalid,
    /// The extensions went past [`EXTENSION_LIMIT`] at this many bytes of the read (the last
    /// of them is an extension byte).
    TooLong(usize),
}

impl Framing {
    fn new(head_limit: usize) -> Self {
        Self {
            state: State::Head(Head::default()),
            line: Vec::new(),
            head_limit,
            heads: 0,
            extensions: 0,
        }
    }

    /// Whether the reads still need feeding.
    fn follows(&self) -> bool {
        !matches!(self.state, State::Aside)
    }

    /// Follows one read's `bytes`, and rewrites them if they complete a refused head or carry
    /// an extension past the limit. Returns what to do with the read.
    fn feed(&mut self, bytes: &mut [u8]) -> Fed {
        // Where the head being read starts in this read: the bytes before it were handed to
        // hyper already, so a rejection can only rewrite from there on.
        let mut head_from = 0;
        let mut pos = 0;
        // Where this read's whole framing lines of the head being read start.
        let mut framing = [0usize; FRAMING_LINES];
        let mut framing_lines = 0;
        while pos < bytes.len() {
            let rest = &bytes[pos..];
            match &mut self.state {
                State::Aside | State::Refused => break,
                State::Length(left) => {
                    // Body bytes go by unread.
                    let skip = rest.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= skip as u64;
                    pos += skip;
                    if *left == 0 {
                        self.state = State::Head(Head::default());
                        head_from = pos;
                    }
                }
                State::Chunked(chunk) => match chunk.advance(rest, &mut self.extensions) {
                    Body::More => break,
                    Body::Ended(n) => {
                        pos += n;
                        self.state = State::Head(Head::default());
                        head_from = pos;
                    }
                    Body::Invalid => {
                        self.stand_aside();
                        break;
                    }
                    Body::TooLong(n) => {
                        // hyper's decoder refuses a line feed inside an extension.
                        bytes[pos + n - 1] = b'\n';
                        self.stand_aside();
                        break;
                    }
                },
                State::Head(head) => {
                    if *head == Head::default()
                        && self.line.is_empty()
                        && let Some(len) = plain_head(rest, self.head_limit)
                    {
                        pos += len;
                        head_from = pos;
                        self.heads += 1;
                        continue;
                    }
                    let Some(nl) = newline(rest) else {
                        head.len += rest.len();
                        if head.len > self.head_limit {
                            self.stand_aside();
                        } else {
                            self.line.extend_from_slice(rest);
                        }
                        break;
                    };
                    head.len += nl + 1;
                    if head.len > self.head_limit {
                        self.stand_aside();
                        break;
                    }
                    let line = &rest[..nl];
                    let whole = self.line.is_empty();
                    let kind = if whole {
                        head.line(line)
                    } else {
                        self.line.extend_from_slice(line);
                        let kind = head.line(&self.line);
                        self.line.clear();
                        kind
                    };
                    if kind == Line::Framing {
                        if whole && framing_lines < FRAMING_LINES {
                            framing[framing_lines] = pos;
                            framing_lines += 1;
                        } else {
                            head.framing_passed = true;
                        }
                    }
                    pos += nl + 1;
                    if kind == Line::End {
                        self.heads += 1;
                        let head = *head;
                        // Every framing line of the head is in `framing` unless one passed.
                        let lines = std::mem::take(&mut framing_lines);
                        if let Some(refusal) = head.refusal() {
                            if head.framing_passed {
                                self.stand_aside();
                                return Fed::Append(reject(bytes, head_from, pos));
                            }
                            for &at in &framing[..lines] {
                                rename(&mut bytes[at..]);
                            }
                            self.state = State::Refused;
                            self.line = Vec::new();
                            return Fed::Refused {
                                head: self.heads,
                                refusal,
                                end: pos,
                            };
                        }
                        self.state = head.body();
                        if matches!(self.state, State::Chunked(_)) {
                            self.extensions = 0;
                        }
                        head_from = pos;
                    }
                }
            }
        }
        // This read's framing lines of an unfinished head go to hyper now.
        if framing_lines > 0
            && let State::Head(head) = &mut self.state
        {
            head.framing_passed = true;
        }
        Fed::Append(b"")
    }

    fn stand_aside(&mut self) {
        self.state = State::Aside;
        self.line = Vec::new();
    }
}

impl Head {
    /// Takes one line of the head without its `\n`; returns what it was.
    fn line(&mut self, line: &[u8]) -> Line {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !self.started {
            if !line.is_empty() {
                self.started = true;
                self.request_line(line);
            }
            return Line::Other;
        }
        if line.is_empty() {
            return Line::End;
        }
        self.header(line)
    }

    fn request_line(&mut self, line: &[u8]) {
        // A line that is not `METHOD TARGET HTTP/1.1` or `HTTP/1.0` is hyper's error. CONNECT
        // and `Upgrade` are followed like any request: the proxy refuses CONNECT, and until it
        // answers an upgrade with 101 (`Verdicts::upgrade`) the connection is HTTP/1.
        self.untracked |= !(line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0"));
    }

    fn header(&mut self, line: &[u8]) -> Line {
        match line[0].to_ascii_lowercase() {
            b'c' => {
                if let Some(value) = value_of(line, b"content-length:") {
                    self.content_length = match (self.content_length, digits(trim(value))) {
                        (ContentLength::Absent, Some(n)) => ContentLength::Valid(n),
                        (ContentLength::Valid(m), Some(n)) if m == n => ContentLength::Valid(m),
                        _ => ContentLength::Invalid,
                    };
                    return Line::Framing;
                }
            }
            b't' => {
                if let Some(value) = value_of(line, b"transfer-encoding:") {
                    self.transfer_encodings = self.transfer_encodings.saturating_add(1);
                    self.transfer_encoding = Some(coding(trim(value)));
                    return Line::Framing;
                }
            }
            // Folded or indented lines are errors to hyper, unless configured to take them:
            // either way the guard cannot tell which header they belong to.
            b' ' | b'\t' => self.untracked = true,
            _ => {}
        }
        Line::Other
    }

    /// Why the complete head must not be served, if it must not (RFC 9112 §6.1, §6.3).
    fn refusal(&self) -> Option<Refusal> {
        let coding = self.transfer_encoding?;
        if self.content_length != ContentLength::Absent || self.transfer_encodings > 1 {
            return Some(Refusal::Framing);
        }
        match coding {
            Coding::Chunked => None,
            Coding::Other => Some(Refusal::TransferCoding),
            Coding::Invalid => Some(Refusal::Framing),
        }
    }

    /// What follows a complete head that is not refused, as hyper sees it (RFC 9112 §6.3).
    fn body(&self) -> State {
        match (self.untracked, self.transfer_encoding, self.content_length) {
            (true, ..) | (_, _, ContentLength::Invalid) => State::Aside,
            (false, Some(_), _) => State::Chunked(Chunk::Start),
            (false, None, ContentLength::Valid(n)) if n > 0 => State::Length(n),
            (false, None, _) => State::Head(Head::default()),
        }
    }
}

/// What one `Transfer-Encoding` value (trimmed) holds.
fn coding(value: &[u8]) -> Coding {
    if value.eq_ignore_ascii_case(b"chunked") {
        Coding::Chunked
    } else if !value.is_empty() && value.iter().all(|&b| is_tchar(b)) {
        Coding::Other
    } else {
        Coding::Invalid
    }
}

/// A `tchar` of RFC 9110 §5.6.2: the bytes of a token.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Overwrites the name of the framing header at the start of `line` (`Content-Length` or
/// `Transfer-Encoding`) with `x`s: hyper then takes it for a header of no meaning.
fn rename(line: &mut [u8]) {
    let len = if line[0].eq_ignore_ascii_case(&b'c') {
        "content-length".len()
    } else {
        "transfer-encoding".len()
    };
    line[..len].fill(b'x');
}

impl Chunk {
    /// Follows `bytes` of a chunked body; data bytes go by unread. `extensions` counts the
    /// body's extension bytes so far.
    fn advance(&mut self, bytes: &[u8], extensions: &mut usize) -> Body {
        let mut i = 0;
        while i < bytes.len() {
            if let Chunk::Data(left) = self {
                let skip = (bytes.len() - i).min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= skip as u64;
                i += skip;
                if *left == 0 {
                    *self = Chunk::DataCr;
                }
                continue;
            }
            let b = bytes[i];
            i += 1;
            *self = match (*self, b) {
                (Chunk::Start, _) => match hex(b) {
                    Some(d) => Chunk::Size(d),
                    None => return Body::Invalid,
                },
                (Chunk::Size(s) | Chunk::SizeLws(s), b' ' | b'\t') => Chunk::SizeLws(s),
                (Chunk::Size(s) | Chunk::SizeLws(s), b';') => Chunk::Extension(s),
                (Chunk::Size(s) | Chunk::SizeLws(s) | Chunk::Extension(s), b'\r') => Chunk::SizeLf(s),
                (Chunk::Size(s), _) => match hex(b).and_then(|d| s.checked_mul(16)?.checked_add(d)) {
                    Some(s) => Chunk::Size(s),
                    None => return Body::Invalid,
                },
                (Chunk::Extension(_), b'\n') => return Body::Invalid,
                (Chunk::Extension(s), _) => {
                    *extensions += 1;
                    if *extensions > EXTENSION_LIMIT {
                        return Body::TooLong(i);
                    }
                    Chunk::Extension(s)
                }
                (Chunk::SizeLf(0), b'\n') => Chunk::EndCr,
                (Chunk::SizeLf(s), b'\n') => Chunk::Data(s),
                (Chunk::DataCr, b'\r') => Chunk::DataLf,
                (Chunk::DataLf, b'\n') => Chunk::Start,
                (Chunk::Trailer, b'\r') => Chunk::TrailerLf,
                (Chunk::Trailer, _) => Chunk::Trailer,
                (Chunk::TrailerLf, b'\n') => Chunk::EndCr,
                (Chunk::EndCr, b'\r') => Chunk::EndLf,
                (Chunk::EndCr, _) => Chunk::Trailer,
                (Chunk::EndLf, b'\n') => return Body::Ended(i),
                _ => return Body::Invalid,
            };
        }
        Body::More
    }
}

/// The length of the head at the start of `bytes`, if all of it is there, within `limit` bytes,
/// and it needs nothing from the guard: [`Head::line`] finds no `Content-Length`, no
/// `Transfer-Encoding` and nothing it cannot follow. Such a head has no body, and the next head
/// follows it. The common case, taken in one pass that touches no state of the connection; at
/// the first line that needs more, the caller follows the head line by line from its start.
fn plain_head(bytes: &[u8], limit: usize) -> Option<usize> {
    let mut head = Head::default();
    let mut start = 0;
    loop {
        let nl = start + newline(&bytes[start..])?;
        if nl >= limit {
            return None;
        }
        let line = head.line(&bytes[start..nl]);
        if head.untracked || line == Line::Framing {
            return None;
        }
        if line == Line::End {
            return Some(nl + 1);
        }
        start = nl + 1;
    }
}

/// The position of the first `\n` in `bytes`. Head lines are mostly short, and for them a
/// word-at-a-time scan costs a third of what `memchr`'s setup does; longer lines (cookies,
/// tokens) go on with `memchr`.
fn newline(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const NEWLINES: u64 = u64::from_ne_bytes([b'\n'; 8]);
    const SHORT: usize = 32;
    let short = &bytes[..bytes.len().min(SHORT)];
    let mut words = short.chunks_exact(8);
    let mut at = 0;
    for word in &mut words {
        let x = u64::from_le_bytes(word.try_into().expect("eight bytes")) ^ NEWLINES;
        // The lowest byte of x that is zero sets its high bit here (bits above it may be
        // false alarms, borrowed from it; below it there are none).
        let zero = x.wrapping_sub(ONES) & !x & HIGHS;
        if zero != 0 {
            return Some(at + zero.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    if let Some(i) = words.remainder().iter().position(|&b| b == b'\n') {
        return Some(at + i);
    }
    memchr::memchr(b'\n', &bytes[short.len()..]).map(|i| short.len() + i)
}

/// Makes the head ending at `end` unparseable for hyper, writing from `from`, the first byte of
/// that head hyper has not been handed yet. Returns what the read must be extended with.
///
/// A NUL byte is an error to httparse wherever it stands in a head, and everything hyper holds
/// before it is a valid prefix, so hyper fails with a parse error and answers 400. hyper only
/// parses a head it read in parts again once it sees a line end followed by an empty line
/// (`is_complete_fast`); if the NUL took the place of that, an empty line follows it.
fn reject(bytes: &mut [u8], from: usize, end: usize) -> &'static [u8] {
    const BLANK: &[u8] = b"\n\n";
    bytes[from] = 0;
    let after = &bytes[from + 1..end];
    if after.windows(2).any(|w| w == b"\n\n") || after.windows(3).any(|w| w == b"\n\r\n") {
        return b"";
    }
    // What follows the head in this read is never parsed: the connection ends at the 400.
    let tail = &mut bytes[from + 1..];
    let n = tail.len().min(BLANK.len());
    tail[..n].copy_from_slice(&BLANK[..n]);
    &BLANK[n..]
}

/// The value after `name_colon` (lowercase, with its `:`), if `line` is that header.
fn value_of<'a>(line: &'a [u8], name_colon: &[u8]) -> Option<&'a [u8]> {
    let (name, value) = line.split_at_checked(name_colon.len())?;
    name.eq_ignore_ascii_case(name_colon).then_some(value)
}

fn trim(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

/// A `Content-Length` as hyper reads it: only ASCII digits, at least one, within `u64`.
fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        let d = char::from(b).to_digit(10)?;
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

fn hex(b: u8) -> Option<u64> {
    char::from(b).to_digit(16).map(u64::from)
}

#[cfg(test)]
mod tests;
