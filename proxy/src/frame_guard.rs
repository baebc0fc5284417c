//! A guard between a downstream connection and hyper's HTTP/1 server that answers a request
//! carrying both `Content-Length` and `Transfer-Encoding` with `400` and closes, before the
//! request reaches the service.
//!
//! hyper accepts such a request (RFC 9112 §6.3 lets an intermediary drop `Content-Length` and
//! decode the chunked body), so by the time the service runs, the `Content-Length` is gone. The
//! guard follows the request framing in the bytes hyper reads instead: it reads each head, skips
//! each body by its `Content-Length` or chunked encoding, and when a head holds both headers it
//! puts a NUL byte into that head before hyper parses it. httparse rejects NUL at every position
//! of a head (even with `ignore_invalid_headers`), so hyper answers its own `400 Bad Request` and
//! closes the connection.
//!
//! Whatever the guard cannot follow exactly as hyper does (`CONNECT` and `Upgrade`, versions other
//! than HTTP/1.1, `Transfer-Encoding` without `chunked` last, invalid or differing
//! `Content-Length`s, invalid chunk syntax, a head over the limit) makes it stand aside for the
//! rest of the connection: hyper serves or rejects those on its own, and a request the guard does
//! not understand is never altered.
//!
//! ```
//! # async fn serve(stream: tokio::net::TcpStream) -> hyper::Result<()> {
//! # let service = hyper::service::service_fn(|_req| async {
//! #     Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
//! # });
//! use switchyard_proxy::frame_guard::FrameGuard;
//! let io = hyper_util::rt::TokioIo::new(FrameGuard::new(stream, 32 * 1024));
//! hyper::server::conn::http1::Builder::new().serve_connection(io, service).await
//! # }
//! ```

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Downstream I/O for hyper's HTTP/1 server that turns `Content-Length` + `Transfer-Encoding`
/// into hyper's `400 Bad Request` and a close (see the [module docs](self)).
///
/// Writes, flushes and shutdowns go to the inner I/O unchanged (vectored writes too). Reads come
/// back unchanged, except for the head of a rejected request.
#[derive(Debug)]
pub struct FrameGuard<I> {
    io: I,
    framing: Framing,
    /// Bytes a rejection still owes the reader, given before anything else is read.
    owed: &'static [u8],
}

impl<I> FrameGuard<I> {
    /// Guards `io`. `head_limit` is the longest request head the guard reads, in bytes, leading
    /// empty lines included; over it the guard stands aside for the rest of the connection. Pass
    /// hyper's `max_header_size` so that every head hyper accepts is checked. The guard keeps at
    /// most one head line per connection, and only when a read ends inside it.
    pub fn new(io: I, head_limit: usize) -> Self {
        Self {
            io,
            framing: Framing::new(head_limit),
            owed: b"",
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
        let from = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        if this.framing.follows() {
            let owed = this.framing.feed(&mut buf.filled_mut()[from..]);
            let n = owed.len().min(buf.remaining());
            buf.put_slice(&owed[..n]);
            this.owed = &owed[n..];
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
}

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
}

/// What a head has shown so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Head {
    /// Bytes of the head so far, leading empty lines included.
    len: usize,
    /// Whether the request line went by (empty lines before it are skipped, as httparse does).
    started: bool,
    content_length: ContentLength,
    /// Whether the last `Transfer-Encoding` line ends with `chunked`, once there was one.
    transfer_encoding: Option<bool>,
    /// Past this head, hyper frames the stream in a way the guard does not follow.
    untracked: bool,
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
}

impl Framing {
    fn new(head_limit: usize) -> Self {
        Self {
            state: State::Head(Head::default()),
            line: Vec::new(),
            head_limit,
        }
    }

    /// Whether the reads still need feeding.
    fn follows(&self) -> bool {
        !matches!(self.state, State::Aside)
    }

    /// Follows one read's `bytes`, and rewrites them if they complete a head that has both
    /// `Content-Length` and `Transfer-Encoding`. Returns the bytes to append to the read.
    fn feed(&mut self, bytes: &mut [u8]) -> &'static [u8] {
        // Where the head being read starts in this read: the bytes before it were handed to
        // hyper already, so a rejection can only rewrite from there on.
        let mut head_from = 0;
        let mut pos = 0;
        while pos < bytes.len() {
            let rest = &bytes[pos..];
            match &mut self.state {
                State::Aside => break,
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
                State::Chunked(chunk) => match chunk.advance(rest) {
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
                },
                State::Head(head) => {
                    if *head == Head::default()
                        && self.line.is_empty()
                        && let Some(len) = plain_head(rest, self.head_limit)
                    {
                        pos += len;
                        head_from = pos;
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
                    let ended = if self.line.is_empty() {
                        head.line(line)
                    } else {
                        self.line.extend_from_slice(line);
                        let ended = head.line(&self.line);
                        self.line.clear();
                        ended
                    };
                    pos += nl + 1;
                    if ended {
                        let head = *head;
                        if head.is_ambiguous() {
                            self.stand_aside();
                            return reject(bytes, head_from, pos);
                        }
                        self.state = head.body();
                        head_from = pos;
                    }
                }
            }
        }
        b""
    }

    fn stand_aside(&mut self) {
        self.state = State::Aside;
        self.line = Vec::new();
    }
}

impl Head {
    /// Takes one line of the head without its `\n`; returns whether it was the empty line that
    /// ends the head.
    fn line(&mut self, line: &[u8]) -> bool {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !self.started {
            if !line.is_empty() {
                self.started = true;
                self.request_line(line);
            }
            return false;
        }
        if line.is_empty() {
            return true;
        }
        self.header(line);
        false
    }

    fn request_line(&mut self, line: &[u8]) {
        // CONNECT turns the connection into a tunnel; an HTTP/1.0 request can carry neither
        // header to hyper's liking, and anything else is hyper's error. A line that is not
        // `METHOD TARGET HTTP/1.1` is left to hyper too.
        self.untracked |= line.starts_with(b"CONNECT ") || !line.ends_with(b" HTTP/1.1");
    }

    fn header(&mut self, line: &[u8]) {
        match line[0].to_ascii_lowercase() {
            b'c' => {
                if let Some(value) = value_of(line, b"content-length:") {
                    self.content_length = match (self.content_length, digits(trim(value))) {
                        (ContentLength::Absent, Some(n)) => ContentLength::Valid(n),
                        (ContentLength::Valid(m), Some(n)) if m == n => ContentLength::Valid(m),
                        _ => ContentLength::Invalid,
                    };
                }
            }
            b't' => {
                if let Some(value) = value_of(line, b"transfer-encoding:") {
                    // As hyper: only the last line counts, and in it the last coding.
                    let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
                    self.transfer_encoding = Some(trim(last).eq_ignore_ascii_case(b"chunked"));
                }
            }
            // hyper hands the connection over to whoever answers 101.
            b'u' => self.untracked |= value_of(line, b"upgrade:").is_some(),
            // Folded or indented lines are errors to hyper, unless configured to take them:
            // either way the guard cannot tell which header they belong to.
            b' ' | b'\t' => self.untracked = true,
            _ => {}
        }
    }

    /// Both `Content-Length` and `Transfer-Encoding`, in any order, valid or not.
    fn is_ambiguous(&self) -> bool {
        self.content_length != ContentLength::Absent && self.transfer_encoding.is_some()
    }

    /// What follows a complete, unambiguous head, as hyper sees it (RFC 9112 §6.3).
    fn body(&self) -> State {
        match (self.untracked, self.transfer_encoding, self.content_length) {
            (true, ..) | (_, Some(false), _) | (_, _, ContentLength::Invalid) => State::Aside,
            (false, Some(true), _) => State::Chunked(Chunk::Start),
            (false, None, ContentLength::Valid(n)) if n > 0 => State::Length(n),
            (false, None, _) => State::Head(Head::default()),
        }
    }
}

impl Chunk {
    /// Follows `bytes` of a chunked body; data bytes go by unread.
    fn advance(&mut self, bytes: &[u8]) -> Body {
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
                (Chunk::Extension(s), _) => Chunk::Extension(s),
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
        let ended = head.line(&bytes[start..nl]);
        if head.untracked || head.content_length != ContentLength::Absent || head.transfer_encoding.is_some() {
            return None;
        }
        if ended {
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
