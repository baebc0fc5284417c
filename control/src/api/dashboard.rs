//! The dashboard, served at `/ui/` from files built into the binary (`control/dashboard/`): a
//! page, its script and style, and the vendored chart library (uPlot, with its licence). `/`
//! and `/ui` redirect to `/ui/`. The page reads and commands the rollouts through the API
//! itself, so it needs no token to be served; its commands carry the API's token when one is
//! configured.
//!
//! Every file goes out with its `Content-Type`, `X-Content-Type-Options: nosniff`, a
//! Content-Security-Policy that lets the page run only its own files (no inline script or
//! style, no other origin, no framing), and `Cache-Control: no-cache` with an `ETag`, so a
//! browser revalidates (`304`) and picks up a new binary's files at once.

use std::sync::LazyLock;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::Full;

use super::{Refusal, Reply};

/// The page's policy: its own scripts, styles and API calls only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One file of the dashboard.
struct Asset {
    /// Where it is served.
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: [Asset; 7] = [
    Asset {
        path: "/ui/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../dashboard/index.html"),
    },
    Asset {
        path: "/ui/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../dashboard/app.js"),
    },
    Asset {
        path: "/ui/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../dashboard/app.css"),
    },
    Asset {
        path: "/ui/favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../dashboard/favicon.svg"),
    },
    Asset {
        path: "/ui/vendor/uPlot.iife.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../dashboard/vendor/uPlot.iife.min.js"),
    },
    Asset {
        path: "/ui/vendor/uPlot.min.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../dashboard/vendor/uPlot.min.css"),
    },
    Asset {
        path: "/ui/vendor/uPlot.LICENSE",
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!("../../dashboard/vendor/uPlot.LICENSE"),
    },
];

/// Each asset's `ETag`, in [`ASSETS`] order: a hash of its bytes.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            HeaderValue::from_str(&format!("\"{:016x}\"", fnv1a(a.body))).unwrap_or(HeaderValue::from_static("\"0\""))
        })
        .collect()
});

/// The dashboard's answer for `path`, or `None` when the path is the API's.
pub(super) fn answer(method: &Method, path: &str, headers: &HeaderMap) -> Option<Result<Reply, Refusal>> {
    if path != "/" && path != "/ui" && !path.starts_with("/ui/") {
        return None;
    }
    Some(serve(method, path, headers))
}

fn serve(method: &Method, path: &str, headers: &HeaderMap) -> Result<Reply, Refusal> {
    let asset = ASSETS.iter().position(|a| a.path == path);
    if asset.is_none() && path.starts_with("/ui/") {
        return Err(Refusal::NoFile(path.to_owned()));
    }
    if *method != Method::GET && *method != Method::HEAD {
        return Err(Refusal::Method {
            method: method.clone(),
            path: path.to_owned(),
            allow: "GET, HEAD",
        });
    }
    let Some(i) = asset else {
        // `/` or `/ui`: the page is at `/ui/`. Relative to either, so that it holds behind a
        // reverse proxy that serves the API under a prefix.
        let mut reply = guarded(Response::new(Full::new(Bytes::new())));
        *reply.status_mut() = StatusCode::FOUND;
        reply
            .headers_mut()
            .insert(header::LOCATION, HeaderValue::from_static("ui/"));
        return Ok(reply);
    };
    let (asset, etag) = (&ASSETS[i], &ETAGS[i]);
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut reply = if fresh {
        let mut reply = Response::new(Full::new(Bytes::new()));
        *reply.status_mut() = StatusCode::NOT_MODIFIED;
        reply
    } else {
        Response::new(Full::new(Bytes::from_static(asset.body)))
    };
    let h = reply.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    h.insert(header::ETAG, etag.clone());
    Ok(guarded(reply))
}

/// The headers every dashboard answer carries.
fn guarded(mut reply: Reply) -> Reply {
    let h = reply.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    reply
}

/// FNV-1a, 64 bits: enough to tell one build's file from another's.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_files_that_are_served() {
        let page = std::str::from_utf8(ASSETS[0].body).unwrap();
        let mut linked = 0;
        for attr in ["src=\"", "href=\""] {
            for part in page.split(attr).skip(1) {
                let target = &part[..part.find('"').unwrap()];
                if target.starts_with('#') {
                    continue;
                }
                assert!(
                    ASSETS.iter().any(|a| a.path == format!("/ui/{target}")),
                    "the page links {target}, which is not served"
                );
                linked += 1;
            }
        }
        assert_eq!(linked, 5, "two scripts, two style sheets and the icon");
        assert!(
            !page.contains("<script>") && !page.contains("style="),
            "inline code in the page"
        );
    }

    #[test]
    fn the_script_never_parses_text_as_html_or_code() {
        let script = std::str::from_utf8(ASSETS[1].body).unwrap();
        assert_eq!(ASSETS[1].path, "/ui/app.js");
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ] {
            assert!(!script.contains(sink), "app.js uses {sink}");
        }
    }

    #[test]
    fn etags_tell_files_apart() {
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
        let mut tags: Vec<&HeaderValue> = ETAGS.iter().collect();
        tags.dedup();
        assert_eq!(tags.len(), ASSETS.len());
    }
}
