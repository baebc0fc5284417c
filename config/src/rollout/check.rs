//! Checks on a rollout's values that its types cannot express: ranges, URLs, request matches.
//! Each reports at the path it is given and returns whether the value is acceptable.

use std::collections::HashMap;

use http::Uri;

use crate::error::Problems;
use crate::schema::{EndpointSpec, RequestMatch, RouteSpec, RuleSpec, TrackSpec, UpstreamProtocol};
use crate::table::RoutingTable;

/// Reports `message` at `path` unless `ok`; returns `ok`.
fn expect(ok: bool, path: &str, p: &mut Problems, message: impl FnOnce() -> String) -> bool {
    if !ok {
        p.push(path, message());
    }
    ok
}

/// A candidate weight, percent: 0 to 100.
pub(super) fn percent(w: f64, path: &str, p: &mut Problems) -> bool {
    expect((0.0..=100.0).contains(&w), path, p, || {
        format!("weight must be from 0 to 100, found {w}")
    })
}

/// A share of requests: 0 to 1. A number above 1 is likely a percentage, so the message says
/// how shares are written.
pub(super) fn share(what: &str, x: f64, path: &str, p: &mut Problems) -> bool {
    expect((0.0..=1.0).contains(&x), path, p, || {
        format!("{what} must be a share from 0 to 1 (0.995 means 99.5%), found {x}")
    })
}

/// An allowed difference between two error rates: 0 to 1.
pub(super) fn rate_difference(x: f64, path: &str, p: &mut Problems) -> bool {
    expect((0.0..=1.0).contains(&x), path, p, || {
        format!("difference must be from 0 to 1 (0.005 is half a percentage point), found {x}")
    })
}

/// A latency limit in milliseconds: above 0.
pub(super) fn latency_ms(x: f64, path: &str, p: &mut Problems) -> bool {
    expect(x.is_finite() && x > 0.0, path, p, || {
        format!("latency limit must be above 0 ms, found {x}")
    })
}

/// A request rate, requests/s: finite, not negative.
pub(super) fn request_rate(x: f64, path: &str, p: &mut Problems) -> bool {
    expect(x.is_finite() && x >= 0.0, path, p, || {
        format!("request rate must be 0 or more requests/s, found {x}")
    })
}

/// A ratio to the baseline: finite, above 0.
pub(super) fn ratio(x: f64, path: &str, p: &mut Problems) -> bool {
    expect(x.is_finite() && x > 0.0, path, p, || {
        format!("ratio to the baseline must be above 0 (1.1 allows 10% more), found {x}")
    })
}

/// The confidence of a sequential test: strictly between 0.5 and 1.
pub(super) fn confidence(x: f64, path: &str, p: &mut Problems) -> bool {
    expect(x > 0.5 && x < 1.0, path, p, || {
        format!("confidence must be above 0.5 and below 1 (0.99 is usual), found {x}")
    })
}

/// A count or limit that must be at least 1.
pub(super) fn at_least_one(n: u64, why: &str, path: &str, p: &mut Problems) -> bool {
    expect(n >= 1, path, p, || format!("must be at least 1: {why}"))
}

/// The proxies' admin URLs: at least one, each `http://HOST:PORT`, no two the same.
pub(super) fn proxies(urls: &[String], path: &str, p: &mut Problems) {
    if urls.is_empty() {
        p.push(
            path,
            "list every proxy serving the route, at least one (its admin API, such as http://127.0.0.1:9901)",
        );
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, url) in urls.iter().enumerate() {
        let at = format!("{path}[{i}]");
        if let Some(authority) = proxy_url(url, &at, p) {
            if let Some(first) = seen.get(&authority) {
                p.push(at, format!("duplicate proxy {url:?}, also at {path}[{first}]"));
            } else {
                seen.insert(authority, i);
            }
        }
    }
}

/// One admin URL; its lowercased authority (for duplicates) when valid.
fn proxy_url(url: &str, path: &str, p: &mut Problems) -> Option<String> {
    let problem = match url.parse::<Uri>() {
        Err(_) => Some("it is not a URL"),
        Ok(uri) => match (uri.scheme_str(), uri.authority()) {
            (Some("http"), Some(a)) => {
                if a.host().is_empty() || a.as_str().contains('@') {
                    Some("give a host and no user")
                } else if a.port_u16().is_none_or(|port| port == 0) {
                    Some("give a port")
                } else if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
                    Some("give no path or query: it is the admin API's base URL")
                } else {
                    return Some(a.as_str().to_ascii_lowercase());
                }
            }
            (Some("http"), None) => Some("give a host and port"),
            _ => Some("the scheme must be http"),
        },
    };
    if let Some(why) = problem {
        p.push(
            path,
            format!("invalid proxy admin URL {url:?}: {why}; write http://HOST:PORT such as http://127.0.0.1:9901"),
        );
    }
    None
}

/// The webhook: an `http://` or `https://` URL with a host.
pub(super) fn notify_url(url: &str, path: &str, p: &mut Problems) -> bool {
    let ok = url.parse::<Uri>().is_ok_and(|uri| {
        matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some_and(|a| !a.host().is_empty())
    });
    expect(ok, path, p, || {
        format!(
            "invalid webhook URL {url:?}: write an http:// or https:// URL such as https://hooks.example.com/rollouts"
        )
    })
}

/// Conditions that send requests to the candidate: not empty, and valid as a rule's `match`.
pub(super) fn request_match(m: &RequestMatch, path: &str, p: &mut Problems) -> bool {
    if m.is_empty() {
        p.push(path, "give at least one condition: an empty match takes every request");
        return false;
    }
    // The control loop puts these conditions in a rule at the top of the route, so they are
    // checked exactly as the proxy will check them: as the match of a rule in a route.
    const AT: &str = "routes[0].rules[0].match";
    let route = RouteSpec {
        name: "r".into(),
        matches: RequestMatch::default(),
        tracks: vec![TrackSpec {
            name: "t".into(),
            endpoints: vec![EndpointSpec {
                address: "127.0.0.1:1".to_owned(),
                weight: 1.0,
            }],
            weight: 1.0,
            protocol: UpstreamProtocol::Http1,
            outlier_detection: None,
            health_check: None,
        }],
        rules: vec![RuleSpec {
            matches: m.clone(),
            track: "t".into(),
        }],
        sticky: None,
        timeout: None,
        retry: None,
        mirror: None,
    };
    match RoutingTable::compile(std::slice::from_ref(&route), 0) {
        Ok(_) => true,
        Err(errors) => {
            for e in errors.0 {
                let rest = e.path.strip_prefix(AT).unwrap_or_default();
                p.push(format!("{path}{rest}"), e.message);
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems<R>(f: impl FnOnce(&mut Problems) -> R) -> Vec<String> {
        let mut p = Problems::default();
        let _ = f(&mut p);
        p.into_result(())
            .err()
            .map(|e| e.0.iter().map(ToString::to_string).collect())
            .unwrap_or_default()
    }

    #[test]
    fn proxy_urls_are_http_host_and_port() {
        for ok in ["http://127.0.0.1:9901", "http://proxy-a.svc:9901/", "http://[::1]:9901"] {
            assert!(problems(|p| proxies(&[ok.to_owned()], "proxies", p)).is_empty(), "{ok}");
        }
        for bad in [
            "127.0.0.1:9901",
            "https://a:9901",
            "http://a",
            "http://a:0",
            "http://a:9901/admin",
            "http://a:9901/?x=1",
            "http://u@a:9901",
            "http://",
            "not a url",
            "",
        ] {
            let msgs = problems(|p| proxies(&[bad.to_owned()], "proxies", p));
            assert_eq!(msgs.len(), 1, "{bad}: {msgs:?}");
            assert!(msgs[0].starts_with("proxies[0]: invalid proxy admin URL"), "{msgs:?}");
        }
    }

    #[test]
    fn duplicate_proxies_are_found_without_case() {
        let urls = [
            "http://A:1".to_owned(),
            "http://b:1".to_owned(),
            "http://a:1/".to_owned(),
        ];
        assert_eq!(
            problems(|p| proxies(&urls, "proxies", p)),
            ["proxies[2]: duplicate proxy \"http://a:1/\", also at proxies[0]"]
        );
    }

    #[test]
    fn notify_takes_http_and_https() {
        assert!(problems(|p| notify_url("https://h.example.com/x?y=1", "n", p)).is_empty());
        assert_eq!(problems(|p| notify_url("ftp://h", "n", p)).len(), 1);
        assert_eq!(problems(|p| notify_url("/relative", "n", p)).len(), 1);
    }

    #[test]
    fn request_matches_are_checked_as_rules_at_their_own_path() {
        let m = RequestMatch {
            method: vec!["get".to_owned()],
            ..RequestMatch::default()
        };
        assert_eq!(
            problems(|p| request_match(&m, "canary.steps[0].setHeaderRoute", p)),
            ["canary.steps[0].setHeaderRoute.method[0]: methods are case-sensitive: write \"GET\""]
        );
        assert_eq!(
            problems(|p| request_match(&RequestMatch::default(), "x", p)),
            ["x: give at least one condition: an empty match takes every request"]
        );
    }
}
