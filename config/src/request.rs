//! The parts of a downstream request that routing looks at, borrowed from the request itself.

use http::{HeaderMap, Method};

/// What [`crate::RoutingTable::decide`] sees of a request. Building one copies nothing.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The authority the request names (`Host` header or absolute-form / `:authority`), port
    /// included or not; compared without case and without port.
    pub host: &'a str,
    /// The path, without the query string.
    pub path: &'a str,
    /// The query string without `?`, empty when there is none.
    pub query: &'a str,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// Fresh entropy for this request: the weighted pick of a request without a sticky key
    /// takes its track and endpoint from it. Supplying it keeps `decide` pure.
    pub random: u64,
}

impl<'a> RequestView<'a> {
    /// A view of `parts`. The host is the URI's authority when the request has one (HTTP/2,
    /// absolute-form HTTP/1.1), else the `Host` header.
    pub fn of(parts: &'a http::request::Parts, random: u64) -> Self {
        Self::from(&parts.method, &parts.uri, &parts.headers, random)
    }

    /// A view of `request`, as [`RequestView::of`] its parts: for a caller that rewrites the
    /// request in place after deciding, without taking it apart.
    pub fn of_request<B>(request: &'a http::Request<B>, random: u64) -> Self {
        Self::from(request.method(), request.uri(), request.headers(), random)
    }

    fn from(method: &'a Method, uri: &'a http::Uri, headers: &'a HeaderMap, random: u64) -> Self {
        let host = uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| headers.get(http::header::HOST).and_then(|h| h.to_str().ok()))
            .unwrap_or("");
        Self {
            method,
            host,
            path: uri.path(),
            query: uri.query().unwrap_or(""),
            headers,
            random,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_prefers_the_uri_authority_over_the_host_header() {
        let (parts, ()) = http::Request::get("http://a.example.com:8080/x?y=1")
            .header("host", "b.example.com")
            .body(())
            .unwrap()
            .into_parts();
        let v = RequestView::of(&parts, 7);
        assert_eq!(v.host, "a.example.com:8080");
        assert_eq!(v.path, "/x");
        assert_eq!(v.query, "y=1");
        assert_eq!(v.random, 7);

        let (parts, ()) = http::Request::get("/z")
            .header("host", "b.example.com")
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(RequestView::of(&parts, 0).host, "b.example.com");

        let request = http::Request::get("/q?r=2")
            .header("host", "c.example.com")
            .body(())
            .unwrap();
        let v = RequestView::of_request(&request, 3);
        assert_eq!((v.host, v.path, v.query, v.random), ("c.example.com", "/q", "r=2", 3));
    }
}
