//! Request path normalization (RFC 3986 §6.2.2): what the proxy does to every request path
//! before routing, so that the route that matched and the upstream that receives the path see
//! the same thing. Without it `/public/../admin` and `/public/%2e%2e/admin` match a `/public`
//! route and reach an upstream that resolves them to `/admin`.
//!
//! ```
//! use switchyard_config::path::{PathOptions, normalize};
//!
//! let options = PathOptions::default();
//! assert_eq!(normalize("/public/%2e%2e/admin", &options).unwrap(), "/admin");
//! assert_eq!(normalize("/a/./b/%7euser", &options).unwrap(), "/a/b/~user");
//! assert!(normalize("/public%2F..%2Fadmin", &options).is_err());
//! ```
//!
//! [`normalize`] is pure and runs on every request: a path that needs nothing (the common case)
//! costs one scan of its bytes and comes back borrowed.

use std::borrow::Cow;

use serde::Serialize;

/// What the proxy does to request paths (the `paths` section of the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PathOptions {
    /// What to do with `%2F`, `%5C` and `\` in a path. Default [`EscapedSlashes::Reject`].
    pub escaped_slashes: EscapedSlashes,
    /// Whether runs of `/` become one (`/a//b` → `/a/b`). Default `false`: RFC 3986 gives
    /// empty segments a meaning, and some upstreams (object stores) use it.
    pub merge_slashes: bool,
}

/// What to do with an encoded slash (`%2F`), an encoded backslash (`%5C`) or a literal `\` in a
/// path. Routing and most upstreams disagree on whether these separate segments, which is how
/// `/public%2F..%2Fadmin` gets past a `/public` route; so the default refuses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EscapedSlashes {
    /// Leave them in the path, not separators (the hex digits uppercased): for upstreams that
    /// give `%2F` a meaning of its own, such as object keys. Safe only if the upstream does not
    /// decode `%2F` or treat `\` as a separator before resolving `..`.
    Keep,
    /// Refuse the request ([`PathError::EscapedSlash`], which the proxy answers with 400).
    #[default]
    Reject,
    /// Turn each into `/`, before dot segments are removed, so that routing and the upstream
    /// both see a separator.
    Unescape,
}

/// Why a request path cannot be normalized. The proxy answers either with 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A `%` not followed by two hex digits.
    #[error("the path has an invalid percent-encoding (a `%` not followed by two hex digits)")]
    InvalidPercentEncoding,
    /// `%2F`, `%5C` or `\` in the path, with [`EscapedSlashes::Reject`].
    #[error("the path has an encoded slash or backslash, which this proxy rejects (paths.escapedSlashes: reject)")]
    EscapedSlash,
}

/// Normalizes `path`, the path component of a request target (without the query):
///
/// 1. percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded (`%2e` → `.`,
///    `%7E` → `~`); other percent-encodings stay, with their hex digits uppercased;
/// 2. `%2F`, `%5C` and `\` are kept, refused or turned into `/` as `options.escaped_slashes`
///    says;
/// 3. with `options.merge_slashes`, runs of `/` become one;
/// 4. dot segments are removed (RFC 3986 §5.2.4), never climbing above the root:
///    `/a/../../b` → `/b`, `/a/./b/.` → `/a/b/`, `/..` → `/`.
///
/// A path that does not start with `/` (`*`, or empty) is returned as it is. The result is
/// [`Cow::Borrowed`] whenever it equals `path`; finding that out takes one scan when nothing
/// needs a change. Normalizing a result again returns it unchanged.
pub fn normalize<'a>(path: &'a str, options: &PathOptions) -> Result<Cow<'a, str>, PathError> {
    if !path.starts_with('/') || !needs_work(path.as_bytes(), options.merge_slashes) {
        return Ok(Cow::Borrowed(path));
    }
    let normalized = rewrite(path, options)?;
    Ok(if normalized == path {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(normalized)
    })
}

/// Whether normalizing `path` could change it or fail: it has a `%` that is not an uppercase
/// escape left as it is, a `\`, a dot segment, or (when merging) `//`.
///
/// The first pass looks at eight bytes at a time for `%`, `\`, `/.` and (when merging) `//`,
/// without branches; these are rare, so most paths end there. Only a path that has one gets
/// the exact look byte by byte (`/.well-known` and `%20` need nothing). This pass is what every
/// request pays; for 60 and 240 bytes it takes a fifth of what a byte-by-byte scan does
/// (`benches/benches/normalize.rs`).
fn needs_work(path: &[u8], merge_slashes: bool) -> bool {
    let merging = if merge_slashes { u64::MAX } else { 0 };
    let mut suspects = 0;
    // The high bit of the low lane when the previous word ended with `/`.
    let mut slash_before = 0;
    let mut words = path.chunks_exact(8);
    for word in &mut words {
        let word = u64::from_le_bytes(word.try_into().unwrap_or_default());
        suspects |= suspects_in(word, slash_before, merging);
        slash_before = lanes_equal(word, b'/') >> 56;
    }
    if !words.remainder().is_empty() {
        let last = match path.len().checked_sub(8) {
            // The last eight bytes, overlapping the words already seen. Its first byte was in
            // the previous word, so the pair before it has been looked at already.
            Some(start) => u64::from_le_bytes(path[start..].try_into().unwrap_or_default()),
            None => words
                .remainder()
                .iter()
                .rev()
                .fold(0, |word, &b| (word << 8) | u64::from(b)),
        };
        suspects |= suspects_in(last, 0, merging);
    }
    suspects != 0 && has_work(path, merge_slashes)
}

/// The lanes of `word` (eight bytes of a path, the first in the low lane) that may need work:
/// `%`, `\`, and `.` or (with `merging` all ones) `/` right after a `/`. `slash_before` has the
/// low lane's high bit set when the byte before the word is a `/`.
fn suspects_in(word: u64, slash_before: u64, merging: u64) -> u64 {
    let slash = lanes_equal(word, b'/');
    let after_slash = (slash << 8) | slash_before;
    lanes_equal(word, b'%') | lanes_equal(word, b'\\') | (after_slash & (lanes_equal(word, b'.') | (slash & merging)))
}

/// The high bit of every byte lane of `word` that equals `byte`, and no other bit (SWAR: no
/// carry crosses lanes, so there are no false positives).
fn lanes_equal(word: u64, byte: u8) -> u64 {
    const LOW_BITS: u64 = 0x7F7F_7F7F_7F7F_7F7F;
    let diff = word ^ (0x0101_0101_0101_0101 * u64::from(byte));
    !(((diff & LOW_BITS) + LOW_BITS) | diff | LOW_BITS)
}

/// The exact test behind [`needs_work`], byte by byte.
fn has_work(path: &[u8], merge_slashes: bool) -> bool {
    let ends_segment = |at: usize| matches!(path.get(at), None | Some(b'/'));
    let mut i = 0;
    while let Some(&b) = path.get(i) {
        match b {
            b'%' => {
                let pair = path.get(i + 1..i + 3);
                let left_as_is = pair.is_some_and(|digits| digits.iter().all(|&d| is_upper_hex(d)))
                    && unescape(pair).is_some_and(stays_escaped);
                if !left_as_is {
                    return true;
                }
                i += 3;
                continue;
            }
            b'\\' => return true,
            b'/' => match path.get(i + 1) {
                Some(b'.') if ends_segment(i + 2) || (path.get(i + 2) == Some(&b'.') && ends_segment(i + 3)) => {
                    return true;
                }
                Some(b'/') if merge_slashes => return true,
                _ => {}
            },
            _ => {}
        }
        i += 1;
    }
    false
}

/// Whether an escaped byte stays escaped whatever the options (neither unreserved nor a slash).
fn stays_escaped(byte: u8) -> bool {
    !is_unreserved(byte) && byte != b'/' && byte != b'\\'
}

/// RFC 3986 §2.3.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn is_upper_hex(byte: u8) -> bool {
    matches!(byte, b'0'..=b'9' | b'A'..=b'F')
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// The byte `%HL` stands for, given `HL`, if both are hex digits.
fn unescape(pair: Option<&[u8]>) -> Option<u8> {
    match *pair? {
        [high, low] => Some((hex_value(high)? << 4) | hex_value(low)?),
        _ => None,
    }
}

/// The full normalization of a path that starts with `/`, in one pass: decoding, slashes and
/// dot segments together, into a new string.
fn rewrite(path: &str, options: &PathOptions) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = Segments::new(path.len(), options.merge_slashes);
    // Bytes before `copied` are in `out` already (or were replaced); plain bytes are copied a run
    // at a time, and runs end at ASCII bytes, so every slice of `path` here is on a char boundary.
    let mut copied = 1;
    let mut i = 1;
    while let Some(&b) = bytes.get(i) {
        if !matches!(b, b'/' | b'\\' | b'%') {
            i += 1;
            continue;
        }
        out.text.push_str(&path[copied..i]);
        match b {
            b'/' => out.separate(),
            b'\\' => match options.escaped_slashes {
                EscapedSlashes::Keep => out.text.push('\\'),
                EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                EscapedSlashes::Unescape => out.separate(),
            },
            _ => {
                let byte = unescape(bytes.get(i + 1..i + 3)).ok_or(PathError::InvalidPercentEncoding)?;
                if is_unreserved(byte) {
                    out.text.push(char::from(byte));
                } else if byte == b'/' || byte == b'\\' {
                    match options.escaped_slashes {
                        EscapedSlashes::Keep => out.push_escaped(byte),
                        EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                        EscapedSlashes::Unescape => out.separate(),
                    }
                } else {
                    out.push_escaped(byte);
                }
                i += 2;
            }
        }
        i += 1;
        copied = i;
    }
    out.text.push_str(&path[copied..]);
    Ok(out.finish())
}

/// The output of [`rewrite`]: a stack of segments kept as text, `/` before each one, so that a
/// `..` pops by truncating.
struct Segments {
    text: String,
    /// Where the segment being written starts in `text` (just after its `/`).
    start: usize,
    merge_slashes: bool,
}

impl Segments {
    fn new(capacity: usize, merge_slashes: bool) -> Self {
        let mut text = String::with_capacity(capacity);
        text.push('/');
        Self {
            text,
            start: 1,
            merge_slashes,
        }
    }

    fn push_escaped(&mut self, byte: u8) {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        self.text.push('%');
        self.text.push(char::from(HEX[usize::from(byte >> 4)]));
        self.text.push(char::from(HEX[usize::from(byte & 0xF)]));
    }

    /// Ends the current segment at a separator and starts the next one.
    fn separate(&mut self) {
        self.end_segment(false);
        self.text.push('/');
        self.start = self.text.len();
    }

    fn finish(mut self) -> String {
        self.end_segment(true);
        self.text
    }

    /// Applies RFC 3986 §5.2.4 to the segment just written: `.` goes, `..` goes with the
    /// segment before it (if any), and when merging an empty segment goes. A dot segment at the
    /// end leaves a trailing `/` (`/a/b/..` → `/a/`), as in the RFC.
    fn end_segment(&mut self, last: bool) {
        let slash = self.start - 1;
        match &self.text[self.start..] {
            "." => self.text.truncate(if last { self.start } else { slash }),
            ".." => {
                self.text.truncate(slash);
                let parent = self.text.rfind('/').unwrap_or(0);
                self.text.truncate(parent);
                if last {
                    self.text.push('/');
                }
            }
            "" if self.merge_slashes && !last => self.text.truncate(slash),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
