//! The edge's checks of a request before it is routed, and the answers to what they refuse:
//! framing the [`crate::frame_guard`] refused, `Host` (RFC 9112 §3.2), `:authority` against
//! `Host` on HTTP/2, `CONNECT`, and paths that cannot be normalized. Also the answers to
//! request bodies that fail through the client's fault. Every refusal is the client's: it is
//! counted as a client error, never against a track.

use bytes::Bytes;
use http::{Method, StatusCode, Version};
use switchyard_config::path::PathError;

use crate::frame_guard::Refusal;
use crate::record::ClientError;

/// Why the proxy refuses a request before forwarding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Framing the guard refused: see [`Refusal::Framing`] (`400`).
    Framing,
    /// A transfer coding other than `chunked` (`501`).
    TransferCoding,
    /// An HTTP/1.1 request without exactly one valid `Host`, or any request with two (`400`).
    Host,
    /// An HTTP/2 request whose `host` header names another authority than `:authority` (`400`).
    Authority,
    /// `CONNECT`: the proxy does not tunnel (`405`).
    Connect,
    /// A path that cannot be normalized (`400`).
    Path(PathError),
    /// A request body that failed through the client's fault.
    Body(ClientError),
}

impl From<Refusal> for Refused {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Framing => Self::Framing,
            Refusal::TransferCoding => Self::TransferCoding,
        }
    }
}

impl Refused {
    /// The status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::TransferCoding => StatusCode::NOT_IMPLEMENTED,
            Self::Connect => StatusCode::METHOD_NOT_ALLOWED,
            Self::Body(ClientError::Timeout) => StatusCode::REQUEST_TIMEOUT,
            Self::Framing | Self::Host | Self::Authority | Self::Path(_) | Self::Body(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The short body naming the cause, a sentence and a line end.
    pub fn message(&self) -> Bytes {
        let text = match self {
            Self::Framing => {
                "the request's framing is invalid or ambiguous: Transfer-Encoding must be exactly \
                 `chunked`, on one line, and never with Content-Length\n"
            }
            Self::TransferCoding => {
                "the request's Transfer-Encoding names a coding this proxy does not implement; \
                 send the body chunked or with a Content-Length\n"
            }
            Self::Host => "an HTTP/1.1 request needs exactly one valid Host header\n",
            Self::Authority => "the request's Host header names another host than its :authority\n",
            Self::Connect => "this proxy does not tunnel: CONNECT is not supported\n",
            Self::Path(e) => return Bytes::from(format!("{e}\n")),
            Self::Body(ClientError::Malformed) => "the request body is not valid chunked encoding\n",
            Self::Body(ClientError::Timeout) => {
                "the request body stopped arriving for longer than timeouts.requestBodyIdle, or came \
                 slower than limits.requestBodyMinRate after timeouts.requestBodyGrace\n"
            }
            Self::Body(ClientError::Aborted) => "the client closed the request before its body ended\n",
        };
        Bytes::from_static(text.as_bytes())
    }

    /// Whether the request can still be routed, so that its route counts the refusal: its
    /// method, host, path and headers are as it sent them.
    pub fn routable(&self) -> bool {
        matches!(self, Self::Framing | Self::TransferCoding | Self::Body(_))
    }

    /// The kind of client error the refusal is.
    pub fn client_error(&self) -> ClientError {
        match self {
            Self::Body(kind) => *kind,
            _ => ClientError::Malformed,
        }
    }
}

/// What the edge checks of a request's method, version and `Host` lines; `hosts` is how many
/// `Host` lines it has, `host_valid` whether each is a valid `uri-host [":" port]`.
pub fn check(method: &Method, version: Version, hosts: usize, host_valid: bool) -> Result<(), Refused> {
    if method == Method::CONNECT {
        return Err(Refused::Connect);
    }
    match (version, hosts) {
        (_, 2..) => Err(Refused::Host),
        (_, 1) if !host_valid => Err(Refused::Host),
        (Version::HTTP_11, 0) => Err(Refused::Host),
        _ => Ok(()),
    }
}

/// Whether `value` is a `Host` value of RFC 9110 §7.2: `uri-host [":" port]`, where `uri-host` is
/// a reg-name (unreserved, percent-encoded or sub-delim bytes), an IPv4 address or a bracketed
/// IP literal. No user info, path or white space.
pub fn valid_host(value: &[u8]) -> bool {
    let (host, port) = match value {
        [b'[', ..] => match value.iter().position(|&b| b == b']') {
            Some(end) => (&value[..=end], &value[end + 1..]),
            None => return false,
        },
        _ => match value.iter().rposition(|&b| b == b':') {
            Some(colon) => (&value[..colon], &value[colon..]),
            None => (value, &[][..]),
        },
    };
    let port_ok = match port {
        [] => true,
        [b':', digits @ ..] => digits.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    let host_ok = match host {
        [] => false,
        [b'[', inner @ .., b']'] => {
            !inner.is_empty() && inner.iter().all(|&b| b.is_ascii_hexdigit() || b":.".contains(&b))
        }
        _ => host.iter().all(|&b| REG_NAME[usize::from(b)]),
    };
    port_ok && host_ok
}

/// The bytes of a reg-name (RFC 3986 §3.2.2): unreserved, `%` of a percent-encoding, sub-delims.
const REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            );
        b += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_values_are_checked_as_rfc_9110_has_them() {
        for good in [
            "a.example",
            "a.example:8080",
            "127.0.0.1:1",
            "[::1]:443",
            "[2001:db8::1]",
            "xn--bcher-kva.example",
        ] {
            assert!(valid_host(good.as_bytes()), "{good}");
        }
        for bad in [
            "",
            "a b",
            "user@a.example",
            "a.example/x",
            "a.example:80x",
            "[::1",
            "[]",
            ":80",
            "a\tb",
            "a.example:80:80",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn http_1_1_needs_exactly_one_host_and_connect_is_refused() {
        let get = Method::GET;
        assert_eq!(check(&get, Version::HTTP_11, 1, true), Ok(()));
        assert_eq!(check(&get, Version::HTTP_11, 0, true), Err(Refused::Host));
        assert_eq!(check(&get, Version::HTTP_11, 2, true), Err(Refused::Host));
        assert_eq!(check(&get, Version::HTTP_11, 1, false), Err(Refused::Host));
        assert_eq!(check(&get, Version::HTTP_10, 0, true), Ok(()));
        assert_eq!(check(&get, Version::HTTP_10, 2, true), Err(Refused::Host));
        assert_eq!(check(&get, Version::HTTP_2, 0, true), Ok(()));
        assert_eq!(
            check(&Method::CONNECT, Version::HTTP_11, 1, true),
            Err(Refused::Connect)
        );
    }

    #[test]
    fn refusals_answer_with_their_status_and_a_sentence() {
        for (refused, status) in [
            (Refused::Framing, 400),
            (Refused::TransferCoding, 501),
            (Refused::Host, 400),
            (Refused::Authority, 400),
            (Refused::Connect, 405),
            (Refused::Body(ClientError::Malformed), 400),
            (Refused::Body(ClientError::Timeout), 408),
        ] {
            assert_eq!(refused.status().as_u16(), status, "{refused:?}");
            let message = refused.message();
            assert!(message.ends_with(b"\n") && message.len() > 20, "{refused:?}");
        }
    }
}
