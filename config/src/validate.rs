//! Checks on values that the schema's types cannot express: names, weights, addresses, and the
//! proxy-level settings. Route checks that build compiled parts live beside that compilation in
//! [`crate::table`]; both report into the same list so a user sees every problem at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::error::Problems;
use crate::schema::{AccessLogPath, MIN_DNS_REFRESH, ProxyConfig, StateFileSpec};
use crate::table::MAX_WEIGHT;

/// Longest route or track name.
pub const MAX_NAME_LEN: usize = 63;

/// A route or track name: 1 to 63 letters, digits, `-`, `_` or `.`, starting with a letter or
/// digit, so that it is safe in metric labels, headers and URLs.
pub(crate) fn name(kind: &str, value: &str, path: &str, p: &mut Problems) -> bool {
    let ok = !value.is_empty()
        && value.len() <= MAX_NAME_LEN
        && value.as_bytes()[0].is_ascii_alphanumeric()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        p.push(
            path,
            format!(
                "invalid {kind} name {value:?}: use 1 to {MAX_NAME_LEN} letters, digits, '-', '_' or '.', starting with a letter or digit"
            ),
        );
    }
    ok
}

/// A track or endpoint weight: finite, not negative, at most [`MAX_WEIGHT`].
pub(crate) fn weight(w: f64, path: &str, p: &mut Problems) -> bool {
    let problem = if !w.is_finite() {
        Some(format!("weight must be a finite number, found {w}"))
    } else if w < 0.0 {
        Some(format!("weight must not be negative, found {w}"))
    } else if w > MAX_WEIGHT {
        Some(format!(
            "weight {w} is above the limit of {MAX_WEIGHT}; weights are relative, so scale them down"
        ))
    } else {
        None
    };
    if let Some(message) = &problem {
        p.push(path, message.as_str());
    }
    problem.is_none()
}

/// An endpoint: `IP:PORT`, `[IPv6]:PORT` or `HOSTNAME:PORT`, port 1 to 65535.
pub(crate) fn endpoint_address(address: &str, path: &str, p: &mut Problems) -> bool {
    if address.is_empty() {
        p.push(path, "endpoint is empty; write HOST:PORT such as 127.0.0.1:9001");
        return false;
    }
    if address.contains("://") {
        p.push(
            path,
            format!("endpoint {address:?} has a scheme; write HOST:PORT without it"),
        );
        return false;
    }
    if let Ok(addr) = address.parse::<SocketAddr>() {
        if addr.port() == 0 {
            p.push(path, format!("endpoint {address:?} has port 0"));
            return false;
        }
        return true;
    }
    let parsed = address.rsplit_once(':').and_then(|(host, port)| {
        let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
        let label_ok =
            |l: &str| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        (host.len() <= 253 && host.split('.').all(label_ok)).then_some(port)
    });
    if parsed.is_none() {
        p.push(
            path,
            format!("invalid endpoint {address:?}: write HOST:PORT such as 127.0.0.1:9001 or app.svc:8080"),
        );
    }
    parsed.is_some()
}

/// A cookie name: an HTTP token (RFC 6265).
pub(crate) fn cookie_name(name: &str, path: &str, p: &mut Problems) -> bool {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !ok {
        p.push(path, format!("invalid cookie name {name:?}"));
    }
    ok
}

/// Headers a request id must not be kept in: they frame the message or describe its connection.
const RESERVED_HEADERS: [&str; 11] = [
    "host",
    "connection",
    "content-length",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
    "expect",
    "cookie",
];

/// Checks the proxy-level settings of a whole configuration (routes are checked as they compile).
pub(crate) fn proxy(c: &ProxyConfig, p: &mut Problems) {
    let mut bound: HashMap<SocketAddr, String> = HashMap::new();
    let mut bind = |address: &str, path: String, p: &mut Problems| match address.parse::<SocketAddr>() {
        Err(_) => p.push(
            path,
            format!("invalid listen address {address:?}: write IP:PORT such as 127.0.0.1:8080"),
        ),
        // Port 0 asks the system for a free port, so several such addresses never collide.
        Ok(addr) if addr.port() == 0 => {}
        Ok(addr) => {
            if let Some(first) = bound.get(&addr) {
                p.push(path, format!("address {addr} is already used by {first}"));
            } else {
                bound.insert(addr, path);
            }
        }
    };
    if c.listen.is_empty() {
        p.push("listen", "list at least one listener");
    }
    for (i, l) in c.listen.iter().enumerate() {
        let at = format!("listen[{i}]");
        bind(&l.address, format!("{at}.address"), p);
        if let Some(tls) = &l.tls {
            for (field, file) in [("certFile", &tls.cert_file), ("keyFile", &tls.key_file)] {
                if file.is_empty() {
                    p.push(format!("{at}.tls.{field}"), "file name is empty");
                }
            }
        }
    }
    bind(&c.admin.listen, "admin.listen".to_owned(), p);
    if c.admin.token_file.as_deref() == Some("") {
        p.push("admin.tokenFile", "file name is empty");
    }
    if c.admin.state_file == StateFileSpec::Path(String::new()) {
        p.push(
            "admin.stateFile",
            "file name is empty; give a path, or false to keep no state file",
        );
    }
    if let Some(h) = &c.track_header {
        let _ = crate::table::header_name(h, "trackHeader", p);
    }
    if let Some(log) = &c.access_log
        && log.path == AccessLogPath::File(String::new())
    {
        p.push(
            "accessLog.path",
            "file name is empty; give a file to append to, or stdout",
        );
    }
    let id = &c.request_id.header;
    if crate::table::header_name(id, "requestId.header", p).is_some() {
        let lower = id.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            p.push(
                "requestId.header",
                format!("{id} describes the message or its connection; choose another header, such as x-request-id"),
            );
        } else if c.track_header.as_deref().is_some_and(|t| t.eq_ignore_ascii_case(id)) {
            p.push(
                "requestId.header",
                format!("{id} is the trackHeader already; choose another header, such as x-request-id"),
            );
        }
    }
    let t = &c.timeouts;
    for (field, d) in [
        ("connect", t.connect),
        ("request", t.request),
        ("headerRead", t.header_read),
        ("idle", t.idle),
        ("upstreamIdle", t.upstream_idle),
        ("requestBodyIdle", t.request_body_idle),
        ("requestBodyGrace", t.request_body_grace),
        ("responseBodyIdle", t.response_body_idle),
        ("upgradeIdle", t.upgrade_idle),
    ] {
        if d == Duration::ZERO {
            p.push(format!("timeouts.{field}"), "timeout must be longer than 0s");
        }
    }
    if c.dns.refresh < MIN_DNS_REFRESH {
        p.push(
            "dns.refresh",
            format!(
                "refresh must be at least {}, or names are looked up without pause",
                humantime::format_duration(MIN_DNS_REFRESH)
            ),
        );
    }
    if c.dns.timeout == Duration::ZERO {
        p.push("dns.timeout", "timeout must be longer than 0s");
    }
    let l = &c.limits;
    for (field, n) in [
        ("maxHeaderBytes", l.max_header_bytes),
        ("maxHeaders", l.max_headers),
        ("maxConnections", l.max_connections),
    ] {
        if n == 0 {
            p.push(format!("limits.{field}"), "limit must be at least 1");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(f: impl FnOnce(&mut Problems) -> bool) -> (bool, Vec<String>) {
        let mut p = Problems::default();
        let ok = f(&mut p);
        let msgs = p
            .into_result(())
            .err()
            .map(|e| e.0.iter().map(ToString::to_string).collect())
            .unwrap_or_default();
        (ok, msgs)
    }

    #[test]
    fn names_are_label_safe() {
        assert!(check(|p| name("track", "canary-v2.1_a", "x", p)).0);
        for bad in ["", "-x", "a b", "ä", &"x".repeat(64)] {
            let (ok, msgs) = check(|p| name("track", bad, "routes[0].tracks[0].name", p));
            assert!(!ok, "{bad:?}");
            assert!(
                msgs[0].starts_with("routes[0].tracks[0].name: invalid track name"),
                "{msgs:?}"
            );
        }
    }

    #[test]
    fn weights_must_be_finite_non_negative_and_bounded() {
        for w in [0.0, 0.001, 95.0, MAX_WEIGHT] {
            assert!(check(|p| weight(w, "w", p)).0, "{w}");
        }
        for w in [-1.0, f64::NAN, f64::INFINITY, MAX_WEIGHT * 2.0] {
            assert!(!check(|p| weight(w, "w", p)).0, "{w}");
        }
    }

    #[test]
    fn endpoints_are_host_and_port() {
        for ok in [
            "127.0.0.1:9001",
            "[::1]:80",
            "app.svc.cluster.local:8080",
            "localhost:1",
        ] {
            assert!(check(|p| endpoint_address(ok, "e", p)).0, "{ok}");
        }
        for bad in [
            "",
            "127.0.0.1",
            "127.0.0.1:0",
            "http://a:80",
            "a:70000",
            "a b:80",
            ":80",
            "a..b:80",
        ] {
            assert!(!check(|p| endpoint_address(bad, "e", p)).0, "{bad}");
        }
    }

    #[test]
    fn cookie_names_are_tokens() {
        assert!(check(|p| cookie_name("uid", "c", p)).0);
        assert!(!check(|p| cookie_name("u id", "c", p)).0);
        assert!(!check(|p| cookie_name("", "c", p)).0);
    }
}
