//! The request made fit for its upstream: hop-by-hop headers removed, the client named in
//! `x-forwarded-for`, and the one pass over the header names that tells which of that work a
//! request needs.

use http::Uri;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};

use super::Downstream;
use crate::edge;

/// The absolute URI of an h2c request to `authority`.
pub(super) fn h2c_uri(authority: &Authority, path_and_query: PathAndQuery) -> Uri {
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(authority.clone());
    uri.path_and_query = Some(path_and_query);
    Uri::from_parts(uri).expect("scheme, authority and path make a valid URI")
}

/// `uri` with its path replaced by `path`, the query kept.
pub(super) fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    let path_and_query = match uri.query() {
        Some(query) => PathAndQuery::try_from(format!("{path}?{query}")).ok()?,
        None => PathAndQuery::try_from(path).ok()?,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query);
    Uri::from_parts(parts).ok()
}

/// Removes the headers that describe one connection rather than the message (RFC 9110 §7.6.1):
/// `Connection` and every header it names, and the well-known hop-by-hop ones. One pass over
/// the names finds whether there is anything to remove; most messages have nothing, and then
/// nothing is hashed or looked up.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(maybe_hop_by_hop) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        headers.remove(header::CONNECTION);
        for name in named {
            headers.remove(name);
        }
    }
    for name in [
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TRAILER,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    // `TE: trailers` is end-to-end in practice (gRPC needs it); any other TE is hop-by-hop.
    if headers.get(header::TE).is_some_and(|v| v != "trailers") {
        headers.remove(header::TE);
    }
}

/// Whether `name` is one that [`strip_hop_by_hop`] may remove (`TE` only when it is not
/// `trailers`). Standard names compare as enum values.
pub(super) fn maybe_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::TE
        || name == header::UPGRADE
        || name == header::TRAILER
        || name == header::PROXY_AUTHENTICATE
        || name == header::PROXY_AUTHORIZATION
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// What one pass over a request's header names finds, so that headers it lacks are never
/// looked up.
#[derive(Debug, Default)]
pub(super) struct Seen {
    /// A header [`strip_hop_by_hop`] may remove.
    pub(super) hop_by_hop: bool,
    pub(super) expect: bool,
    /// `Host` lines.
    pub(super) hosts: usize,
    /// Whether every `Host` line is a valid `uri-host [":" port]`.
    pub(super) host_valid: bool,
    pub(super) forwarded_for: bool,
}

impl Seen {
    pub(super) fn of(headers: &HeaderMap) -> Self {
        let mut seen = Self {
            host_valid: true,
            ..Self::default()
        };
        // Every value with its name: repeated `Host` lines are seen without a lookup.
        for (name, value) in headers {
            if name == header::HOST {
                seen.hosts += 1;
                seen.host_valid &= edge::valid_host(value.as_bytes());
            } else if name == header::EXPECT {
                seen.expect = true;
            } else if name.as_str() == X_FORWARDED_FOR.as_str() {
                seen.forwarded_for = true;
            } else if maybe_hop_by_hop(name) {
                seen.hop_by_hop = true;
            }
        }
        seen
    }
}

/// Appends the client to `x-forwarded-for` (`earlier`: the request has one) and names the
/// scheme in `x-forwarded-proto`.
pub(super) fn forwarded_for(headers: &mut HeaderMap, downstream: &Downstream, earlier: bool) {
    let earlier = earlier
        .then(|| headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()))
        .flatten();
    let value = match earlier {
        Some(earlier) => HeaderValue::from_str(&format!("{earlier}, {}", downstream.peer.ip())).ok(),
        None => Some(downstream.client.clone()),
    };
    if let Some(v) = value {
        headers.insert(X_FORWARDED_FOR, v);
    }
    let proto = if downstream.tls { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
