//! HTTP/1.1 as the harness reads it off the wire: response heads and their framing, the headers
//! of a message as they were written, and the framing headers the invariants are about.
//!
//! Parsing is httparse's (hyper's parser), so "parses" means what it means to hyper.

use std::collections::HashSet;

/// A message's header fields in wire order, names lower-cased, values as sent.
#[derive(Debug, Clone, Default)]
pub struct Headers(pub Vec<(String, Vec<u8>)>);

impl Headers {
    /// The fields httparse parsed.
    pub fn of(fields: &[httparse::Header<'_>]) -> Self {
        Self(
            fields
                .iter()
                .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
                .collect(),
        )
    }

    /// Whether a field `name` (lower case) is present.
    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| n == name)
    }

    /// The values of every field `name` (lower case), in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.0.iter().filter(move |(n, _)| n == name).map(|(_, v)| v.as_slice())
    }

    /// The transfer codings of every `Transfer-Encoding` field, in order, trimmed and
    /// lower-cased (`gzip, chunked` → `["gzip", "chunked"]`).
    pub fn transfer_codings(&self) -> Vec<String> {
        self.all("transfer-encoding")
            .flat_map(|v| v.split(|b| *b == b','))
            .map(|c| String::from_utf8_lossy(c).trim().to_ascii_lowercase())
            .collect()
    }

    /// The message's `Content-Length`: `Ok(None)` when absent, `Err` when a value is not a
    /// number or two values differ.
    pub fn content_length(&self) -> Result<Option<u64>, String> {
        let mut length = None;
        for value in self.all("content-length") {
            for part in value.split(|b| *b == b',') {
                let part = part.trim_ascii();
                let n = std::str::from_utf8(part)
                    .ok()
                    .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| format!("invalid content-length {:?}", String::from_utf8_lossy(value)))?;
                if length.is_some_and(|l| l != n) {
                    return Err("differing content-length values".to_owned());
                }
                length = Some(n);
            }
        }
        Ok(length)
    }
}

/// Why a message's framing headers are ones a proxy must never send: both `Content-Length` and
/// `Transfer-Encoding` (RFC 9112 §6.3: a request smuggling vector), or a `Transfer-Encoding`
/// other than exactly `chunked` (what HTTP/1.1 hyper writes; anything else an upstream may
/// frame differently). `None` when the framing is unambiguous.
pub fn request_framing_violation(headers: &Headers) -> Option<String> {
    let codings = headers.transfer_codings();
    if headers.has("transfer-encoding") && headers.has("content-length") {
        return Some(format!("both content-length and transfer-encoding ({codings:?})"));
    }
    if headers.has("transfer-encoding") && codings != ["chunked"] {
        return Some(format!("transfer-encoding other than chunked: {codings:?}"));
    }
    None
}

/// One response head a client received.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    /// httparse's minor version: 1 for `HTTP/1.1`, 0 for `HTTP/1.0`.
    pub minor_version: u8,
    /// The status code (httparse takes exactly three digits).
    pub status: u16,
    /// The header fields.
    pub headers: Headers,
}

/// How the bodies of a response stream may be framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bodies {
    /// Every body as its headers frame it: the client sent no `HEAD` and no `CONNECT`.
    AsFramed,
    /// A response may also have no body whatever its headers say: the client may have sent
    /// `HEAD` (or `CONNECT`), whose answers carry the `Content-Length` of a body not sent.
    MaybeNone,
}

/// Where a stream of responses stops parsing.
#[derive(Debug, Clone)]
pub struct Malformed {
    /// Offset of the response head (or chunk) that does not parse.
    pub at: usize,
    /// What is wrong with it.
    pub why: String,
}

/// Splits what a client received into response heads, following each body's framing.
///
/// The last response may be cut off anywhere (the harness stops reading after a bound, and a
/// proxy cuts a response short when its upstream does). With [`Bodies::MaybeNone`] every
/// framing that leads to a stream of well-formed responses is tried, and the first found is
/// returned. `Err` names the furthest point where no framing parses.
pub fn responses(bytes: &[u8], bodies: Bodies) -> Result<Vec<ResponseHead>, Malformed> {
    let mut walk = Walk {
        bytes,
        bodies,
        failed: HashSet::new(),
        heads: Vec::new(),
        worst: Malformed {
            at: 0,
            why: String::new(),
        },
    };
    if walk.from(0) { Ok(walk.heads) } else { Err(walk.worst) }
}

/// Where a response's body ends.
enum BodyEnd {
    /// At this offset; the next response starts there.
    At(usize),
    /// With the stream: close-delimited, cut off, or a tunnel (`101`).
    Stream,
}

struct Walk<'a> {
    bytes: &'a [u8],
    bodies: Bodies,
    /// Offsets from which no framing parses (the search is linear in the number of heads).
    failed: HashSet<usize>,
    heads: Vec<ResponseHead>,
    worst: Malformed,
}

impl Walk<'_> {
    fn from(&mut self, at: usize) -> bool {
        if at == self.bytes.len() {
            return true;
        }
        if self.failed.contains(&at) {
            return false;
        }
        let rest = &self.bytes[at..];
        // hyper reads at most 100 fields of an upstream response head; 1024 leaves room for
        // whatever the proxy adds. A header line is at least "a:\r\n".
        let mut fields = vec![httparse::EMPTY_HEADER; (rest.len() / 4 + 1).min(1024)];
        let mut response = httparse::Response::new(&mut fields);
        let head_len = match response.parse(rest) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return true,
            Err(e) => return self.fail(at, format!("response head does not parse: {e}")),
        };
        let head = ResponseHead {
            minor_version: response.version.unwrap_or(0),
            status: response.code.unwrap_or(0),
            headers: Headers::of(response.headers),
        };
        let body = at + head_len;
        let framed = match self.framed_end(&head, body) {
            Ok(end) => end,
            Err(why) => return self.fail(body, why),
        };
        let mut ends = vec![framed];
        if self.bodies == Bodies::MaybeNone && !matches!(ends[0], BodyEnd::At(e) if e == body) {
            ends.push(BodyEnd::At(body));
        }
        let depth = self.heads.len();
        self.heads.push(head);
        for end in ends {
            match end {
                BodyEnd::Stream => return true,
                BodyEnd::At(next) => {
                    if self.from(next) {
                        return true;
                    }
                    self.heads.truncate(depth + 1);
                }
            }
        }
        self.heads.truncate(depth);
        self.failed.insert(at);
        false
    }

    /// The end of the body that starts at `body`, as the head frames it (RFC 9112 §6.3).
    fn framed_end(&self, head: &ResponseHead, body: usize) -> Result<BodyEnd, String> {
        match head.status {
            101 => return Ok(BodyEnd::Stream),
            100..=199 | 204 | 304 => return Ok(BodyEnd::At(body)),
            _ => {}
        }
        if head.headers.has("transfer-encoding") {
            if head.headers.transfer_codings().last().map(String::as_str) != Some("chunked") {
                return Ok(BodyEnd::Stream);
            }
            return chunked_end(self.bytes, body).map(|end| end.map_or(BodyEnd::Stream, BodyEnd::At));
        }
        match head.headers.content_length()? {
            Some(n) => {
                let end = usize::try_from(n).ok().and_then(|n| body.checked_add(n));
                Ok(match end {
                    Some(end) if end <= self.bytes.len() => BodyEnd::At(end),
                    _ => BodyEnd::Stream,
                })
            }
            None => Ok(BodyEnd::Stream),
        }
    }

    fn fail(&mut self, at: usize, why: String) -> bool {
        if at >= self.worst.at {
            self.worst = Malformed { at, why };
        }
        self.failed.insert(at);
        false
    }
}

/// The end of a chunked body starting at `start` (after its trailers), `Ok(None)` when the
/// bytes stop first, `Err` when a chunk does not parse.
pub fn chunked_end(bytes: &[u8], start: usize) -> Result<Option<usize>, String> {
    let mut at = start;
    loop {
        let Some(line_end) = find_crlf(bytes, at) else {
            return Ok(None);
        };
        let size = chunk_size(&bytes[at..line_end])?;
        at = line_end + 2;
        if size == 0 {
            // Trailer fields, then an empty line.
            loop {
                let Some(end) = find_crlf(bytes, at) else {
                    return Ok(None);
                };
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Ok(Some(at));
                }
            }
        }
        let Some(data_end) = usize::try_from(size).ok().and_then(|s| at.checked_add(s)) else {
            return Ok(None);
        };
        match bytes.get(data_end..data_end + 2) {
            None => return Ok(None),
            Some(b"\r\n") => at = data_end + 2,
            Some(_) => return Err(format!("chunk data at {at} not followed by CRLF")),
        }
    }
}

/// The offset of the next CRLF at or after `from`.
fn find_crlf(bytes: &[u8], from: usize) -> Option<usize> {
    memchr::memmem::find(&bytes[from.min(bytes.len())..], b"\r\n").map(|i| from + i)
}

/// A chunk-size line: hex digits, then optional whitespace and `;extensions`.
fn chunk_size(line: &[u8]) -> Result<u64, String> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let rest = &line[digits..];
    let rest = rest.trim_ascii_start();
    if digits == 0 || digits > 16 || !(rest.is_empty() || rest.starts_with(b";")) {
        return Err(format!("invalid chunk-size line {:?}", String::from_utf8_lossy(line)));
    }
    let hex = std::str::from_utf8(&line[..digits]).map_err(|e| e.to_string())?;
    u64::from_str_radix(hex, 16).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelined_responses_split_by_their_framing() {
        let bytes = b"HTTP/1.1 100 Continue\r\n\r\n\
            HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n\
            HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nt: 1\r\n\r\n\
            HTTP/1.1 404 Not Found\r\ncontent-length: 10\r\n\r\ncut";
        let heads = responses(bytes, Bodies::AsFramed).unwrap();
        let statuses: Vec<u16> = heads.iter().map(|h| h.status).collect();
        assert_eq!(statuses, [100, 200, 200, 404]);
    }

    #[test]
    fn an_answer_to_head_may_have_no_body() {
        let bytes = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n";
        assert!(responses(bytes, Bodies::AsFramed).is_err());
        assert_eq!(responses(bytes, Bodies::MaybeNone).unwrap().len(), 2);
    }

    #[test]
    fn garbage_after_a_response_is_malformed() {
        let bytes = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\nxyz\r\n\r\n";
        let e = responses(bytes, Bodies::MaybeNone).unwrap_err();
        assert_eq!(e.at, 38, "{e:?}");
    }

    #[test]
    fn framing_violations() {
        let h = |fields: &[(&str, &str)]| {
            Headers(
                fields
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec()))
                    .collect(),
            )
        };
        assert!(request_framing_violation(&h(&[("transfer-encoding", "chunked")])).is_none());
        assert!(request_framing_violation(&h(&[("content-length", "3")])).is_none());
        assert!(request_framing_violation(&h(&[("content-length", "3"), ("transfer-encoding", "chunked")])).is_some());
        assert!(request_framing_violation(&h(&[("transfer-encoding", "gzip, chunked")])).is_some());
        assert!(
            request_framing_violation(&h(&[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked")
            ]))
            .is_some()
        );
    }
}
