//! A track's endpoint health settings, as written in its `outlierDetection` and `healthCheck`
//! (both off unless written), their defaults, and their checks. Envoy users will know them:
//! `outlier_detection` (`consecutive_5xx`, `consecutive_gateway_failure`, `base_ejection_time`,
//! `max_ejection_time`, `max_ejection_percent`) and `health_check` (`interval`, `timeout`,
//! `healthy_threshold`, `unhealthy_threshold`, an HTTP `path`).
//!
//! These only describe; the proxy keeps each endpoint's health at run time, and
//! [`crate::table::Track::fallback`] is the pure choice of another endpoint when the one decided
//! is out.
//!
//! ```yaml
//! tracks:
//!   - name: stable
//!     endpoints: ["10.0.0.1:8080", "10.0.0.2:8080"]
//!     weight: 100
//!     outlierDetection: { consecutive5xx: 5, baseEjectionTime: 30s, maxEjectedPercent: 50 }
//!     healthCheck: { path: /healthz, interval: 5s, timeout: 1s }
//! ```

use std::time::Duration;

use serde::Serialize;
use serde_yaml_ng::Value;

use crate::error::Problems;
use crate::read::{Fields, FromTree, expected};
use crate::schema::human;

/// `outlierDetection`: passive ejection of a track's endpoints by the outcomes of its requests.
///
/// An endpoint whose answers fail often enough in a row (each counter on its own) is ejected:
/// it takes none of the track's requests for `baseEjectionTime` × the number of times it has been
/// ejected, at most `maxEjectionTime`, then comes back by itself. A failure is a 5xx the endpoint
/// answered or the proxy's own `502`/`504` when the endpoint failed (refused, reset, timed out,
/// broke its framing). At most `maxEjectedPercent` of the track's endpoints are out at once
/// (at least one, never the last one), and every request still counts against the track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutlierDetectionSpec {
    /// Consecutive 5xx outcomes that eject an endpoint; 0 turns this counter off. Default 5.
    #[serde(rename = "consecutive5xx")]
    pub consecutive_5xx: u32,
    /// Consecutive gateway failures (`502`, `503`, `504`, the proxy's own included) that eject an
    /// endpoint; 0 (the default) turns this counter off.
    pub consecutive_gateway_failure: u32,
    /// Consecutive failures to connect to the endpoint that eject it; 0 (the default) turns
    /// this counter off (connect failures still count as 5xx outcomes).
    pub consecutive_connect_errors: u32,
    /// The first ejection's length; each later one is this times the number of ejections, and
    /// that number falls by one for every `baseEjectionTime` the endpoint then serves without
    /// being ejected. Default 30s.
    #[serde(with = "human")]
    pub base_ejection_time: Duration,
    /// The longest ejection. Default 300s.
    #[serde(with = "human")]
    pub max_ejection_time: Duration,
    /// The largest share of the track's endpoints ejected at once, percent (1 to 100); at
    /// least one endpoint may be ejected whatever the share, and never the last one serving.
    /// Default 10.
    pub max_ejected_percent: u32,
}

impl Default for OutlierDetectionSpec {
    fn default() -> Self {
        Self {
            consecutive_5xx: 5,
            consecutive_gateway_failure: 0,
            consecutive_connect_errors: 0,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejected_percent: 10,
        }
    }
}

impl OutlierDetectionSpec {
    /// How many of `endpoints` may be ejected at once: the share, rounded down, at least one and
    /// never all of them (so 0 for a track of one endpoint).
    pub fn max_ejected(&self, endpoints: usize) -> usize {
        let share = endpoints * self.max_ejected_percent as usize / 100;
        share.max(1).min(endpoints.saturating_sub(1))
    }

    /// The length of an endpoint's `times`th ejection (1 for the first).
    pub fn ejection_time(&self, times: u32) -> Duration {
        self.base_ejection_time
            .saturating_mul(times.max(1))
            .min(self.max_ejection_time)
    }

    /// Reports what the types cannot express, under `path` (`routes[0].tracks[1].outlierDetection`).
    pub(crate) fn check(&self, path: &str, p: &mut Problems) {
        if self.consecutive_5xx == 0 && self.consecutive_gateway_failure == 0 && self.consecutive_connect_errors == 0 {
            p.push(
                format!("{path}.consecutive5xx"),
                "every counter is 0, so no endpoint would ever be ejected; give consecutive5xx (5 by default) a count, or leave out outlierDetection",
            );
        }
        if self.base_ejection_time == Duration::ZERO {
            p.push(
                format!("{path}.baseEjectionTime"),
                "the ejection time must be longer than 0s",
            );
        }
        if self.max_ejection_time < self.base_ejection_time {
            p.push(
                format!("{path}.maxEjectionTime"),
                format!(
                    "the longest ejection ({}) is shorter than the first ({}); make maxEjectionTime at least baseEjectionTime",
                    humantime::format_duration(self.max_ejection_time),
                    humantime::format_duration(self.base_ejection_time)
                ),
            );
        }
        if !(1..=100).contains(&self.max_ejected_percent) {
            p.push(
                format!("{path}.maxEjectedPercent"),
                format!(
                    "give a share from 1 to 100 percent, found {}; to eject nothing, leave out outlierDetection",
                    self.max_ejected_percent
                ),
            );
        }
    }
}

impl FromTree for OutlierDetectionSpec {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        let d = Self::default();
        let mut f = Fields::of(v, path, p)?;
        let spec = Self {
            consecutive_5xx: f.or("consecutive5xx", d.consecutive_5xx, p),
            consecutive_gateway_failure: f.or("consecutiveGatewayFailure", d.consecutive_gateway_failure, p),
            consecutive_connect_errors: f.or("consecutiveConnectErrors", d.consecutive_connect_errors, p),
            base_ejection_time: f.or("baseEjectionTime", d.base_ejection_time, p),
            max_ejection_time: f.or("maxEjectionTime", d.max_ejection_time, p),
            max_ejected_percent: f.or("maxEjectedPercent", d.max_ejected_percent, p),
        };
        f.finish(p);
        Some(spec)
    }
}

/// `healthCheck`: an active HTTP check of each of the track's endpoints.
///
/// Every `interval` the proxy sends `GET path` to each endpoint on a connection of its own (in
/// the track's protocol, `Host` the endpoint's address); an answer whose status is one of
/// `expectedStatuses` (default 200 to 399) within `timeout` passes, anything else (another status, a refused or broken connection, no answer in
/// time) fails. An endpoint starts healthy, turns unhealthy after `unhealthyThreshold` failures
/// in a row and healthy again after `healthyThreshold` passes in a row. An unhealthy endpoint
/// takes none of the track's requests, unless every endpoint of the track is out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckSpec {
    /// The path (and query) checked, from `/`. Required.
    pub path: String,
    /// Between the starts of two checks of an endpoint. Default 5s.
    #[serde(with = "human")]
    pub interval: Duration,
    /// How long a check may take to its response head; at most `interval`. Default 1s.
    #[serde(with = "human")]
    pub timeout: Duration,
    /// Passes in a row that make an unhealthy endpoint healthy. Default 2.
    pub healthy_threshold: u32,
    /// Failures in a row that make a healthy endpoint unhealthy. Default 3.
    pub unhealthy_threshold: u32,
    /// The statuses that pass: single codes and ranges (`[200, "300-308"]`). Default
    /// `["200-399"]`, as Kubernetes' HTTP probes have it.
    pub expected_statuses: Vec<StatusRange>,
}

/// A status code or an inclusive range of them, written `204` or `"200-299"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange {
    /// The lowest status in the range.
    pub from: u16,
    /// The highest.
    pub to: u16,
}

impl StatusRange {
    /// Whether `status` is in the range.
    pub fn contains(&self, status: u16) -> bool {
        (self.from..=self.to).contains(&status)
    }
}

impl std::fmt::Display for StatusRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.from == self.to {
            write!(f, "{}", self.from)
        } else {
            write!(f, "{}-{}", self.from, self.to)
        }
    }
}

impl Serialize for StatusRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.from == self.to {
            s.serialize_u16(self.from)
        } else {
            s.collect_str(self)
        }
    }
}

impl FromTree for StatusRange {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        let text = match v {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.trim().to_owned(),
            _ => return expected(p, path, "a status such as 200, or a range such as \"200-299\"", v),
        };
        let status = |t: &str| t.trim().parse::<u16>().ok().filter(|s| (100..=599).contains(s));
        let range = match text.split_once('-') {
            Some((from, to)) => status(from).zip(status(to)),
            None => status(&text).map(|s| (s, s)),
        };
        match range {
            Some((from, to)) if from <= to => Some(Self { from, to }),
            Some((from, to)) => {
                p.push(
                    path,
                    format!("the range {from}-{to} is empty; write the lower status first, as {to}-{from}"),
                );
                None
            }
            None => {
                p.push(
                    path,
                    format!("{text:?} is not a status from 100 to 599 or a range of them such as \"200-299\""),
                );
                None
            }
        }
    }
}

/// The default `healthCheck.expectedStatuses`: 200 to 399.
pub const DEFAULT_EXPECTED_STATUSES: StatusRange = StatusRange { from: 200, to: 399 };

/// The default `healthCheck.interval`.
pub const DEFAULT_HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// The default `healthCheck.timeout`.
pub const DEFAULT_HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

impl HealthCheckSpec {
    /// Whether an answer with `status` passes the check: it is one of `expectedStatuses`.
    pub fn passes(&self, status: u16) -> bool {
        self.expected_statuses.iter().any(|r| r.contains(status))
    }

    /// Reports what the types cannot express, under `path` (`routes[0].tracks[1].healthCheck`).
    pub(crate) fn check(&self, path: &str, p: &mut Problems) {
        if !self.path.starts_with('/') || http::uri::PathAndQuery::try_from(self.path.as_str()).is_err() {
            p.push(
                format!("{path}.path"),
                format!(
                    "{:?} is not a request path; write one from the root, such as /healthz",
                    self.path
                ),
            );
        }
        if self.interval == Duration::ZERO {
            p.push(format!("{path}.interval"), "the interval must be longer than 0s");
        }
        if self.timeout == Duration::ZERO {
            p.push(format!("{path}.timeout"), "the timeout must be longer than 0s");
        } else if self.timeout > self.interval && self.interval > Duration::ZERO {
            p.push(
                format!("{path}.timeout"),
                format!(
                    "the timeout ({}) is longer than the interval ({}), so checks would overlap; make it at most the interval",
                    humantime::format_duration(self.timeout),
                    humantime::format_duration(self.interval)
                ),
            );
        }
        for (field, n) in [
            ("healthyThreshold", self.healthy_threshold),
            ("unhealthyThreshold", self.unhealthy_threshold),
        ] {
            if n == 0 {
                p.push(format!("{path}.{field}"), "the threshold must be at least 1");
            }
        }
        if self.expected_statuses.is_empty() {
            p.push(
                format!("{path}.expectedStatuses"),
                "no status would pass, so every endpoint would turn unhealthy; list at least one, such as 200-399",
            );
        }
    }
}

impl FromTree for HealthCheckSpec {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        let mut f = Fields::of(v, path, p)?;
        let check_path = f.required("path", p);
        let interval = f.or("interval", DEFAULT_HEALTH_CHECK_INTERVAL, p);
        let timeout = f.or("timeout", DEFAULT_HEALTH_CHECK_TIMEOUT, p);
        let healthy_threshold = f.or("healthyThreshold", 2, p);
        let unhealthy_threshold = f.or("unhealthyThreshold", 3, p);
        let expected_statuses = f.or("expectedStatuses", vec![DEFAULT_EXPECTED_STATUSES], p);
        f.finish(p);
        Some(Self {
            path: check_path?,
            interval,
            timeout,
            healthy_threshold,
            unhealthy_threshold,
            expected_statuses,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ejected_share_is_at_least_one_and_never_every_endpoint() {
        let spec = |pct| OutlierDetectionSpec {
            max_ejected_percent: pct,
            ..OutlierDetectionSpec::default()
        };
        assert_eq!(spec(10).max_ejected(1), 0);
        assert_eq!(spec(100).max_ejected(1), 0);
        assert_eq!(spec(10).max_ejected(2), 1);
        assert_eq!(spec(50).max_ejected(2), 1);
        assert_eq!(spec(100).max_ejected(2), 1);
        assert_eq!(spec(10).max_ejected(30), 3);
        assert_eq!(spec(50).max_ejected(5), 2);
        assert_eq!(spec(100).max_ejected(5), 4);
    }

    #[test]
    fn ejections_grow_by_the_base_up_to_the_cap() {
        let spec = OutlierDetectionSpec::default();
        let secs = |times| spec.ejection_time(times).as_secs();
        assert_eq!([secs(1), secs(2), secs(3), secs(10), secs(11)], [30, 60, 90, 300, 300]);
        assert_eq!(secs(u32::MAX), 300);
    }

    fn read(yaml: &str) -> (Option<HealthCheckSpec>, Vec<String>) {
        let v: Value = serde_yaml_ng::from_str(yaml).unwrap();
        let mut p = Problems::default();
        let spec = HealthCheckSpec::from_tree(&v, "healthCheck", &mut p);
        if let Some(spec) = &spec {
            spec.check("healthCheck", &mut p);
        }
        let problems = match p.into_result(()) {
            Ok(()) => Vec::new(),
            Err(e) => e
                .errors()
                .iter()
                .map(|e| format!("{}: {}", e.path, e.message))
                .collect(),
        };
        (spec, problems)
    }

    #[test]
    fn checks_pass_on_200_to_399_unless_told_otherwise() {
        let (spec, _) = read("{path: /healthz}");
        let spec = spec.unwrap();
        for (status, passes) in [
            (199, false),
            (200, true),
            (302, true),
            (399, true),
            (400, false),
            (503, false),
        ] {
            assert_eq!(spec.passes(status), passes, "{status}");
        }
        let (spec, problems) = read("{path: /healthz, expectedStatuses: [204, \"300-308\", 418]}");
        assert!(problems.is_empty(), "{problems:?}");
        let spec = spec.unwrap();
        let passing: Vec<u16> = (100..600).filter(|s| spec.passes(*s)).collect();
        assert_eq!(passing, [204, 300, 301, 302, 303, 304, 305, 306, 307, 308, 418]);
        assert_eq!(
            serde_json::to_value(&spec).unwrap()["expectedStatuses"],
            serde_json::json!([204, "300-308", 418])
        );
    }

    #[test]
    fn bad_expected_statuses_are_named_by_their_path() {
        let (_, problems) = read("{path: /healthz, expectedStatuses: [\"299-200\", 700, ok, [1]]}");
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(
            problems[0].starts_with("healthCheck.expectedStatuses[0]: the range 299-200 is empty"),
            "{problems:#?}"
        );
        assert!(
            problems[1].starts_with("healthCheck.expectedStatuses[1]: \"700\" is not a status"),
            "{problems:#?}"
        );
        assert!(
            problems[2].starts_with("healthCheck.expectedStatuses[2]: \"ok\" is not a status"),
            "{problems:#?}"
        );
        assert!(
            problems[3].starts_with("healthCheck.expectedStatuses[3]: expected a status"),
            "{problems:#?}"
        );
        let (_, problems) = read("{path: /healthz, expectedStatuses: []}");
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0].starts_with("healthCheck.expectedStatuses: no status would pass"),
            "{problems:#?}"
        );
    }
}
