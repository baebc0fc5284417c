//! Metric providers: analysis checks whose value the controller asks of another system at each
//! measurement rather than reads from the proxies' stats. `prometheus` runs an instant query;
//! `web` reads one value from any JSON endpoint. Each is judged by a range (`min`, `max`) or by
//! Argo-style conditions over `result`, with the analysis's `failureLimit`,
//! `inconclusiveLimit` and `consecutiveErrorLimit`.
//!
//! The types, how they are read from a spec (every problem at its field path) and how they are
//! written back (so that a serialized spec reads back equal) are together here: the rest of the
//! rollout schema only dispatches to them.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Uri};
use serde::ser::{SerializeMap, Serializer};
use serde_yaml_ng::Value;

use super::expression::{Condition, JsonPath};
use crate::error::Problems;
use crate::read::{Fields, FromTree};

/// The longest a provider is waited for when its spec gives no `timeout` (and the analysis's
/// nine tenths of the analysis's `interval` is longer): 10 s, as Argo Rollouts' web provider.
pub const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest a provider may take at an analysis's `interval`: nine tenths of it, so that the
/// measurement it belongs to ends before the next one is due.
pub fn longest_timeout(interval: Duration) -> Duration {
    interval - interval / 10
}

/// The placeholders a query or URL may hold, each replaced by the spec's value: `{{route}}`,
/// `{{baseline}}` and `{{candidate}}` (spaces inside the braces allowed).
pub const PLACEHOLDERS: [&str; 3] = ["route", "baseline", "candidate"];

/// `prometheus: {address, query, timeout?, min? max? | successCondition? failureCondition?}`:
/// an instant query (`GET ADDRESS/api/v1/query`) whose one value is judged.
#[derive(Debug, Clone, PartialEq)]
pub struct PrometheusQuery {
    /// Prometheus' base URL, `http://HOST[:PORT][/PREFIX]` (plain HTTP).
    pub address: String,
    /// PromQL, which may hold [`PLACEHOLDERS`].
    pub query: String,
    /// How long to wait for the answer; see [`MetricProvider::timeout`].
    pub timeout: Option<Duration>,
    /// How the value is judged.
    pub judge: Judge,
}

/// `web: {url, jsonPath, headers?, timeout?, min? max? | successCondition? failureCondition?}`:
/// a `GET` of any JSON endpoint, one value of it picked by a JSONPath and judged.
#[derive(Debug, Clone, PartialEq)]
pub struct WebQuery {
    /// The endpoint, `http://HOST[:PORT]/PATH[?QUERY]` (plain HTTP), which may hold
    /// [`PLACEHOLDERS`].
    pub url: String,
    /// Picks the value from the answer (RFC 9535).
    pub json_path: JsonPath,
    /// Sent with the request, as written (`Authorization: Bearer …`).
    pub headers: Vec<WebHeader>,
    /// How long to wait for the answer; see [`MetricProvider::timeout`].
    pub timeout: Option<Duration>,
    /// How the value is judged.
    pub judge: Judge,
}

/// One request header of a web provider, `{name, value}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WebHeader {
    /// The header's name.
    pub name: String,
    /// Its value, literal.
    pub value: String,
}

/// How a provider's value is judged: written as `min` and/or `max`, or as
/// `successCondition` and/or `failureCondition`, beside the provider's other fields.
#[derive(Debug, Clone, PartialEq)]
pub enum Judge {
    /// The one value must be at least `min` and at most `max` (at least one given).
    Range {
        /// Lowest acceptable value.
        min: Option<f64>,
        /// Highest acceptable value.
        max: Option<f64>,
    },
    /// Argo Rollouts' rules: the failure condition holding fails the measurement; else the
    /// success condition holding passes it; one given alone decides both ways (its opposite is
    /// the other); both given and neither holding is inconclusive.
    Conditions {
        /// Holds for a good result.
        success: Option<Condition>,
        /// Holds for a bad result.
        failure: Option<Condition>,
    },
}

/// A provider, as [`super::MetricCheck::Prometheus`] or [`super::MetricCheck::Web`] holds it.
#[derive(Debug, Clone, Copy)]
pub enum MetricProvider<'a> {
    /// A Prometheus query.
    Prometheus(&'a PrometheusQuery),
    /// A JSON endpoint.
    Web(&'a WebQuery),
}

impl MetricProvider<'_> {
    /// The provider's own `timeout`, or else [`PROVIDER_TIMEOUT`] or [`longest_timeout`] of
    /// the analysis's `interval`, whichever is shorter: a provider that does not answer in time
    /// is an error of that measurement, and never holds up the next.
    pub fn timeout(&self, interval: Duration) -> Duration {
        let own = match self {
            Self::Prometheus(q) => q.timeout,
            Self::Web(w) => w.timeout,
        };
        own.unwrap_or(PROVIDER_TIMEOUT).min(longest_timeout(interval))
    }

    /// How its value is judged.
    pub fn judge(&self) -> &Judge {
        match self {
            Self::Prometheus(q) => &q.judge,
            Self::Web(w) => &w.judge,
        }
    }
}

/// `text` with every placeholder replaced. The values are route and track names, which
/// validation limits to letters, digits, `-`, `_` and `.`: nothing in them can end a PromQL
/// string literal (`"`, `\`) or needs escaping in a URL, so they go in as they are.
pub fn fill(text: &str, route: &str, baseline: &str, candidate: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some((before, name, after)) = next_placeholder(rest) {
        out.push_str(before);
        match name {
            "route" => out.push_str(route),
            "baseline" => out.push_str(baseline),
            "candidate" => out.push_str(candidate),
            // Validation refuses any other; a hand-built spec keeps it as written.
            _ => out.push_str(&rest[before.len()..rest.len() - after.len()]),
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// The first `{{ name }}` in `text`: what comes before it, the trimmed name, what comes after.
fn next_placeholder(text: &str) -> Option<(&str, &str, &str)> {
    let start = text.find("{{")?;
    let end = start + 2 + text[start + 2..].find("}}")?;
    Some((&text[..start], text[start + 2..end].trim(), &text[end + 2..]))
}

/// Reports every placeholder of `text` that is not one of [`PLACEHOLDERS`].
fn check_placeholders(text: &str, path: &str, p: &mut Problems) {
    let mut rest = text;
    while let Some((_, name, after)) = next_placeholder(rest) {
        if !PLACEHOLDERS.contains(&name) {
            p.push(
                path,
                format!(
                    "unknown placeholder {{{{{name}}}}}: write {{{{route}}}}, {{{{baseline}}}} or {{{{candidate}}}} (Argo's {{{{args.…}}}} have no counterpart here)"
                ),
            );
        }
        rest = after;
    }
}

/// `text` with every placeholder replaced by a name, to check the URL it makes.
fn sample(text: &str) -> String {
    fill(text, "route", "baseline", "candidate")
}

/// An `http://` or `https://` URL with a host, no user, and (`base`) no query; reports what
/// is wrong.
fn http_url(url: &str, base: bool, example: &str, path: &str, p: &mut Problems) -> bool {
    let problem = match sample(url).parse::<Uri>() {
        Err(_) => Some("it is not a URL".to_owned()),
        Ok(uri) => match (uri.scheme_str(), uri.authority()) {
            (Some("http" | "https"), Some(a)) if a.host().is_empty() || a.as_str().contains('@') => {
                Some("give a host and no user".to_owned())
            }
            (Some("http" | "https"), Some(_)) if base && uri.query().is_some() => {
                Some("give no query: it is the server's base URL".to_owned())
            }
            (Some("http" | "https"), Some(_)) => None,
            _ => Some("the scheme must be http or https".to_owned()),
        },
    };
    match problem {
        Some(why) => {
            p.push(path, format!("invalid URL {url:?}: {why}; write one such as {example}"));
            false
        }
        None => true,
    }
}

/// Reads the judgement fields of a provider's mapping.
fn judge(f: &mut Fields<'_>, path: &str, p: &mut Problems) -> Option<Judge> {
    let min: Option<f64> = f.optional("min", p);
    let max: Option<f64> = f.optional("max", p);
    for (key, x) in [("min", min), ("max", max)] {
        if let Some(x) = x
            && !x.is_finite()
        {
            p.push(f.path_of(key), format!("{key} must be a finite number, found {x}"));
        }
    }
    if let (Some(lo), Some(hi)) = (min, max)
        && lo > hi
    {
        p.push(f.path_of("max"), format!("max must be at least min ({lo}), found {hi}"));
    }
    let mut condition = |key: &'static str, p: &mut Problems| {
        let text: String = f.optional(key, p)?;
        Condition::parse(&text).map_err(|e| p.push(f.path_of(key), e)).ok()
    };
    let success = condition("successCondition", p);
    let failure = condition("failureCondition", p);
    let range = f.raw("min").is_some() || f.raw("max").is_some();
    let conditions = f.raw("successCondition").is_some() || f.raw("failureCondition").is_some();
    match (range, conditions) {
        (true, false) => Some(Judge::Range { min, max }),
        (false, true) => Some(Judge::Conditions { success, failure }),
        (true, true) => {
            p.push(
                path,
                "give min and max, or successCondition and failureCondition, not both kinds",
            );
            None
        }
        (false, false) => {
            p.push(
                path,
                "give a limit: min, max (or both), or an Argo-style successCondition or failureCondition over `result`",
            );
            None
        }
    }
}

/// A provider's `timeout`: above 0.
fn timeout(f: &mut Fields<'_>, p: &mut Problems) -> Option<Duration> {
    let t: Option<Duration> = f.optional("timeout", p);
    if t.is_some_and(|t| t.is_zero()) {
        p.push(f.path_of("timeout"), "timeout must be longer than 0s");
    }
    t
}

impl FromTree for PrometheusQuery {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        let mut f = Fields::of(v, path, p)?;
        let address: Option<String> = f.required("address", p);
        if let Some(a) = &address {
            http_url(a, true, "http://prometheus:9090", &f.path_of("address"), p);
        }
        let query: Option<String> = f.required("query", p);
        if let Some(q) = &query {
            if q.trim().is_empty() {
                p.push(f.path_of("query"), "give a PromQL query");
            }
            check_placeholders(q, &f.path_of("query"), p);
        }
        let timeout = timeout(&mut f, p);
        let judge = judge(&mut f, path, p);
        f.finish(p);
        Some(Self {
            address: address?,
            query: query?,
            timeout,
            judge: judge?,
        })
    }
}

impl FromTree for WebQuery {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        let mut f = Fields::of(v, path, p)?;
        let url: Option<String> = f.required("url", p);
        if let Some(u) = &url {
            let at = f.path_of("url");
            check_placeholders(u, &at, p);
            http_url(
                u,
                false,
                "http://metrics.internal/api/checkout?track={{candidate}}",
                &at,
                p,
            );
        }
        let text: Option<String> = f.required("jsonPath", p);
        let json_path = text.and_then(|t| JsonPath::parse(&t).map_err(|e| p.push(f.path_of("jsonPath"), e)).ok());
        let headers: Vec<WebHeader> = f.or("headers", Vec::new(), p);
        let timeout = timeout(&mut f, p);
        let judge = judge(&mut f, path, p);
        f.finish(p);
        Some(Self {
            url: url?,
            json_path: json_path?,
            headers,
            timeout,
            judge: judge?,
        })
    }
}

impl FromTree for WebHeader {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        let mut f = Fields::of(v, path, p)?;
        let name: Option<String> = f.required("name", p);
        if let Some(n) = &name
            && HeaderName::from_bytes(n.as_bytes()).is_err()
        {
            p.push(f.path_of("name"), format!("invalid header name {n:?}"));
        }
        let value: Option<String> = f.required("value", p);
        if let Some(v) = &value
            && HeaderValue::from_str(v).is_err()
        {
            p.push(
                f.path_of("value"),
                "invalid header value: use visible ASCII characters and spaces",
            );
        }
        f.finish(p);
        Some(Self {
            name: name?,
            value: value?,
        })
    }
}

/// The judgement's fields, written beside a provider's others.
fn write_judge<M: SerializeMap>(judge: &Judge, map: &mut M) -> Result<(), M::Error> {
    match judge {
        Judge::Range { min, max } => {
            for (key, x) in [("min", min), ("max", max)] {
                if let Some(x) = x {
                    map.serialize_entry(key, x)?;
                }
            }
        }
        Judge::Conditions { success, failure } => {
            for (key, c) in [("successCondition", success), ("failureCondition", failure)] {
                if let Some(c) = c {
                    map.serialize_entry(key, c)?;
                }
            }
        }
    }
    Ok(())
}

fn write_timeout<M: SerializeMap>(timeout: Option<Duration>, map: &mut M) -> Result<(), M::Error> {
    match timeout {
        Some(t) => map.serialize_entry("timeout", &humantime::format_duration(t).to_string()),
        None => Ok(()),
    }
}

impl serde::Serialize for PrometheusQuery {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("address", &self.address)?;
        map.serialize_entry("query", &self.query)?;
        write_timeout(self.timeout, &mut map)?;
        write_judge(&self.judge, &mut map)?;
        map.end()
    }
}

impl serde::Serialize for WebQuery {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("url", &self.url)?;
        map.serialize_entry("jsonPath", &self.json_path)?;
        if !self.headers.is_empty() {
            map.serialize_entry("headers", &self.headers)?;
        }
        write_timeout(self.timeout, &mut map)?;
        write_judge(&self.judge, &mut map)?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_with_or_without_spaces() {
        let q = r#"sum(rate(x{route="{{route}}",track="{{ candidate }}"}[1m])) / on() y{track="{{baseline}}"}"#;
        assert_eq!(
            fill(q, "checkout", "stable", "canary"),
            r#"sum(rate(x{route="checkout",track="canary"}[1m])) / on() y{track="stable"}"#
        );
        assert_eq!(fill("{{other}} and {{", "r", "b", "c"), "{{other}} and {{");
        assert_eq!(fill("no placeholder {x}", "r", "b", "c"), "no placeholder {x}");
    }

    #[test]
    fn the_timeout_ends_before_the_next_measurement() {
        let q = PrometheusQuery {
            address: "http://p:9090".into(),
            query: "up".into(),
            timeout: None,
            judge: Judge::Range {
                min: None,
                max: Some(1.0),
            },
        };
        let provider = MetricProvider::Prometheus(&q);
        assert_eq!(provider.timeout(Duration::from_secs(1)), Duration::from_millis(900));
        assert_eq!(provider.timeout(Duration::from_secs(60)), PROVIDER_TIMEOUT);
        let q = PrometheusQuery {
            timeout: Some(Duration::from_secs(3)),
            ..q
        };
        assert_eq!(
            MetricProvider::Prometheus(&q).timeout(Duration::from_secs(60)),
            Duration::from_secs(3)
        );
    }
}
