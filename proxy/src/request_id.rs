//! Request ids (`requestId` in the configuration): the `x-request-id` header kept when a valid
//! one came, generated when none did (or always, with `mode: replace`), so that one request can
//! be followed through the proxy's access log and every upstream's logs. Trace context (W3C
//! `traceparent` and `tracestate`, B3, anything else) is never touched: it passes like any
//! end-to-end header, for the tracer upstream to continue.
//!
//! ```
//! use http::HeaderMap;
//! use switchyard_config::schema::RequestIdSpec;
//! use switchyard_proxy::request_id::RequestIds;
//!
//! let ids = RequestIds::new(&RequestIdSpec::default()).unwrap();
//! let mut headers = HeaderMap::new();
//! headers.insert("x-request-id", "abc-123".parse().unwrap());
//! assert_eq!(ids.apply(&mut headers).unwrap(), "abc-123"); // kept
//! let mut headers = HeaderMap::new();
//! assert_eq!(ids.apply(&mut headers).unwrap().len(), 36); // generated: a UUID v4
//! ```

use http::header::{Entry, HeaderMap, HeaderName, HeaderValue};
use switchyard_config::schema::{RequestIdMode, RequestIdSpec};

/// The longest incoming id kept, in bytes.
pub const MAX_LEN: usize = 128;

/// How the proxy treats request ids; built once from the configuration.
#[derive(Debug, Clone)]
pub struct RequestIds {
    header: HeaderName,
    mode: RequestIdMode,
    response: bool,
}

impl RequestIds {
    /// From the validated configuration; `None` if its header name is not one (validation
    /// refuses such a file first).
    pub fn new(spec: &RequestIdSpec) -> Option<Self> {
        Some(Self {
            header: HeaderName::from_bytes(spec.header.as_bytes()).ok()?,
            mode: spec.mode,
            response: spec.response,
        })
    }

    /// The header.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// Whether the proxy sets ids (`keep` or `replace`), rather than leaving the header alone.
    pub fn active(&self) -> bool {
        self.mode != RequestIdMode::Off
    }

    /// Whether responses carry the id.
    pub fn in_response(&self) -> bool {
        self.response && self.mode != RequestIdMode::Off
    }

    /// Gives the upstream-bound `headers` their id as the mode says, and returns the id the
    /// upstream gets (with `mode: off`, the first incoming value, if any). One lookup of the
    /// header; a generated id is one small allocation.
    pub fn apply(&self, headers: &mut HeaderMap) -> Option<HeaderValue> {
        match self.mode {
            RequestIdMode::Off => headers.get(&self.header).cloned(),
            RequestIdMode::Replace => {
                let id = generate();
                headers.insert(self.header.clone(), id.clone());
                Some(id)
            }
            RequestIdMode::Keep => match headers.entry(&self.header) {
                Entry::Occupied(mut e) => {
                    let mut values = e.iter();
                    let kept = values.next().filter(|v| valid(v.as_bytes()) && values.next().is_none());
                    match kept {
                        Some(v) => Some(v.clone()),
                        None => {
                            // Invalid, or given twice: the upstream gets one id, a fresh one.
                            let id = generate();
                            e.insert(id.clone());
                            Some(id)
                        }
                    }
                }
                Entry::Vacant(e) => Some(e.insert(generate()).clone()),
            },
        }
    }
}

/// Whether `id` is an id worth keeping: 1 to [`MAX_LEN`] visible ASCII bytes (no spaces, tabs,
/// control characters or obs-text), so that it reads the same in every log it reaches.
pub fn valid(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len()) && id.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// A fresh id: a random (version 4) UUID, lowercase, as Envoy generates them. Not
/// cryptographic: the bits come from the per-thread generator of weighted picks.
pub fn generate() -> HeaderValue {
    uuid(crate::forward::random(), crate::forward::random())
}

/// The UUID of 128 bits `high`, `low`, with the version (4) and variant (RFC 9562) set.
fn uuid(high: u64, low: u64) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let high = (high & !0xf000) | 0x4000;
    let low = (low & !(0b11 << 62)) | (0b10 << 62);
    let bits = (u128::from(high) << 64) | u128::from(low);
    let mut out = [0u8; 36];
    let mut nibble = 32;
    for (i, slot) in out.iter_mut().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            *slot = b'-';
        } else {
            nibble -= 1;
            *slot = HEX[((bits >> (nibble * 4)) & 0xf) as usize];
        }
    }
    HeaderValue::from_bytes(&out).expect("hex digits and dashes are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(mode: RequestIdMode) -> RequestIds {
        RequestIds::new(&RequestIdSpec {
            mode,
            ..RequestIdSpec::default()
        })
        .unwrap()
    }

    fn is_uuid_v4(v: &HeaderValue) -> bool {
        let s = v.to_str().unwrap();
        let b = s.as_bytes();
        s.len() == 36
            && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
            && b[14] == b'4'
            && b"89ab".contains(&b[19])
            && s.bytes()
                .all(|c| c == b'-' || c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    }

    #[test]
    fn uuids_have_their_version_and_variant_and_every_bit_elsewhere() {
        assert_eq!(uuid(0, 0), "00000000-0000-4000-8000-000000000000");
        assert_eq!(uuid(u64::MAX, u64::MAX), "ffffffff-ffff-4fff-bfff-ffffffffffff");
        assert_eq!(
            uuid(0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210),
            "01234567-89ab-4def-bedc-ba9876543210"
        );
        let a = generate();
        assert!(is_uuid_v4(&a), "{a:?}");
        assert_ne!(a, generate());
    }

    #[test]
    fn keep_keeps_a_valid_id_and_replaces_an_invalid_or_repeated_one() {
        let keep = ids(RequestIdMode::Keep);
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("7f3a-client"));
        assert_eq!(keep.apply(&mut h).unwrap(), "7f3a-client");
        assert_eq!(h.get_all("x-request-id").iter().count(), 1);

        let long = "a".repeat(MAX_LEN + 1);
        for bad in [&b""[..], b"has space", b"tab\there", b"caf\xc3\xa9", long.as_bytes()] {
            let mut h = HeaderMap::new();
            h.insert("x-request-id", HeaderValue::from_bytes(bad).unwrap());
            let id = keep.apply(&mut h).unwrap();
            assert!(is_uuid_v4(&id), "{}", bad.escape_ascii());
            assert_eq!(h.get_all("x-request-id").iter().collect::<Vec<_>>(), [&id]);
        }
        let mut twice = HeaderMap::new();
        twice.append("x-request-id", HeaderValue::from_static("one"));
        twice.append("x-request-id", HeaderValue::from_static("two"));
        let id = keep.apply(&mut twice).unwrap();
        assert!(is_uuid_v4(&id));
        assert_eq!(twice.get_all("x-request-id").iter().count(), 1);

        let mut none = HeaderMap::new();
        let id = keep.apply(&mut none).unwrap();
        assert!(is_uuid_v4(&id) && none.get("x-request-id") == Some(&id));
    }

    #[test]
    fn replace_always_generates_and_off_touches_nothing() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("client-chosen"));
        let id = ids(RequestIdMode::Replace).apply(&mut h).unwrap();
        assert!(is_uuid_v4(&id) && h.get("x-request-id") == Some(&id));

        let off = ids(RequestIdMode::Off);
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("has space"));
        assert_eq!(off.apply(&mut h).unwrap(), "has space");
        assert_eq!(h.get("x-request-id").unwrap(), "has space");
        let mut none = HeaderMap::new();
        assert_eq!(off.apply(&mut none), None);
        assert!(none.is_empty());
        assert!(
            !RequestIds::new(&RequestIdSpec {
                response: true,
                mode: RequestIdMode::Off,
                ..RequestIdSpec::default()
            })
            .unwrap()
            .in_response()
        );
    }

    #[test]
    fn ids_are_visible_ascii_of_bounded_length() {
        assert!(valid(b"a") && valid(&[b'~'; MAX_LEN]) && valid(b"0af7651916cd43dd8448eb211c80319c"));
        assert!(!valid(b"") && !valid(&[b'a'; MAX_LEN + 1]) && !valid(b"a b") && !valid(b"\x7f"));
    }
}
