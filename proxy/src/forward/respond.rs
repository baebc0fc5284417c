//! The answers the proxy makes itself: a short body naming the cause, and the `Connection: close`
//! of a request whose connection cannot go on.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

use super::body::ProxyBody;

/// `response` with `Connection: close`: the request's connection cannot go on (its framing is
/// lost, or its client is refused). HTTP/2 drops the header and keeps the connection.
pub(super) fn closing(mut response: Response<ProxyBody>) -> Response<ProxyBody> {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A response the proxy makes itself, with a short body naming the cause.
pub fn local(status: StatusCode, message: Bytes, track: Option<(&HeaderName, &HeaderValue)>) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::Local(Full::new(message)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some((name, value)) = track {
        headers.insert(name.clone(), value.clone());
    }
    response
}
