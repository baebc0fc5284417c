//! Reading a rollout spec from a tree, as routing tables are read ([`crate::read`]): field by
//! field, every problem reported with its path.
//!
//! Unlike a routing table, whose routes are checked after reading, each part of a rollout is
//! checked as soon as it is read, at its exact path. Lists are read item by item, so that one
//! unreadable step, metric or ring does not hide the problems of the others.

use std::collections::HashMap;
use std::time::Duration;

use serde_yaml_ng::{Mapping, Value};

use super::{
    ABORT_INTERVAL, AbortSpec, AnalysisSpec, BlueGreenSpec, CanarySpec, EmergencySpec, METRIC_KEYS, MetricCheck,
    MetricSpec, MirrorStep, PROGRESS_DEADLINE, Pause, PrometheusQuery, Proxies, QUANTILES, Ring, RingsSpec,
    RolloutSpec, SEQUENTIAL_CONFIDENCE, STEP_KEYS, STRATEGY_KEYS, StatsSeries, Step, Strategy, WEBHOOK_TIMEOUT,
    WebQuery, WebhookGate, check, quantile_keys,
};
use crate::error::Problems;
use crate::read::{Fields, FromTree, lenient_list};
use crate::schema::{RequestMatch, RouteName, TrackName, ValueMatch};
use crate::stats::MAX_WINDOW_SECONDS;
use crate::validate;

/// The header that reaches a blue-green preview track unless `previewMatch` says otherwise.
const PREVIEW_HEADER: &str = "x-environment";
/// Default `rollbackWindow`.
const ROLLBACK_WINDOW: Duration = Duration::from_secs(5 * 60);
/// The longest `window`: the longest the proxies' `GET /stats` serves.
const MAX_WINDOW: Duration = Duration::from_secs(MAX_WINDOW_SECONDS);

/// Reads a whole spec; `None` when a required part could not be read (then reported).
pub(super) fn rollout(v: &Value, p: &mut Problems) -> Option<RolloutSpec> {
    let mut f = Fields::of(v, "", p)?;
    let name: Option<String> = f.required("name", p);
    if let Some(n) = &name {
        validate::name("rollout", n, "name", p);
    }
    let route: Option<RouteName> = f.required("route", p);
    if let Some(r) = &route {
        validate::name("route", r.as_str(), "route", p);
    }
    let proxies: Option<Proxies> = f.required("proxies", p);
    let baseline: Option<TrackName> = f.required("baseline", p);
    let candidate: Option<TrackName> = f.required("candidate", p);
    for (field, track) in [("baseline", &baseline), ("candidate", &candidate)] {
        if let Some(t) = track {
            validate::name("track", t.as_str(), field, p);
        }
    }
    if let (Some(b), Some(c)) = (&baseline, &candidate)
        && b == c
    {
        p.push(
            "candidate",
            format!(
                "the candidate must be another track than the baseline, both are {:?}",
                b.as_str()
            ),
        );
    }
    let mut given = Vec::new();
    let mut strategy = None;
    for key in STRATEGY_KEYS {
        let Some(node) = f.raw(key) else { continue };
        given.push(key);
        let read = match key {
            "canary" => CanarySpec::from_tree(node, key, p).map(Strategy::Canary),
            "blueGreen" => blue_green(node, key, candidate.as_ref(), p).map(Strategy::BlueGreen),
            _ => rings(node, key, p).map(Strategy::Rings),
        };
        strategy = strategy.or(read);
    }
    match given.as_slice() {
        [_] => {}
        [] => p.push("", "give a strategy: exactly one of canary, blueGreen and rings"),
        several => p.push(
            "",
            format!(
                "give exactly one of canary, blueGreen and rings, found {}",
                several.join(" and ")
            ),
        ),
    }
    let analysis: Option<AnalysisSpec> = f.optional("analysis", p);
    if analysis.as_ref().is_some_and(|a| a.series == StatsSeries::Shadow) {
        p.push(
            "analysis.series",
            "the rollout's analysis judges the candidate's own requests; judge the shadow in an analysis step after a setMirrorRoute step",
        );
    }
    let notify: Option<String> = f.optional("notify", p);
    if let Some(url) = &notify {
        check::notify_url(url, "notify", p);
    }
    let progress_deadline: Duration = f.or("progressDeadline", PROGRESS_DEADLINE, p);
    if !p.covers("progressDeadline") && progress_deadline.is_zero() {
        p.push("progressDeadline", "progressDeadline must be longer than 0s");
    }
    let progress_deadline_abort: bool = f.or("progressDeadlineAbort", false, p);
    let abort: AbortSpec = f.or("abort", AbortSpec::default(), p);
    let promotion_webhook = f.optional("promotionWebhook", p);
    f.finish(p);
    Some(RolloutSpec {
        name: name?,
        route: route?,
        proxies: proxies?,
        baseline: baseline?,
        candidate: candidate?,
        strategy: strategy?,
        analysis,
        notify,
        progress_deadline,
        progress_deadline_abort,
        abort,
        promotion_webhook,
    })
}

impl FromTree for AbortSpec {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        let mut f = Fields::of(v, path, p)?;
        let steps: Vec<f64> = f.or("steps", Vec::new(), p);
        let at = f.path_of("steps");
        for (i, w) in steps.iter().enumerate() {
            let step = format!("{at}[{i}]");
            if !check::percent(*w, &step, p) {
                continue;
            }
            if i > 0 && *w >= steps[i - 1] {
                p.push(
                    step,
                    format!("abort steps must decrease, found {w} after {}", steps[i - 1]),
                );
            }
        }
        let interval: Duration = f.or("interval", ABORT_INTERVAL, p);
        if !p.covers(&f.path_of("interval")) && interval < Duration::from_secs(1) {
            p.push(f.path_of("interval"), "an abort step's interval must be at least 1s");
        }
        f.finish(p);
        Some(Self { steps, interval })
    }
}

impl FromTree for WebhookGate {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        let mut f = Fields::of(v, path, p)?;
        let url: Option<String> = f.required("url", p);
        if let Some(u) = &url {
            check::notify_url(u, &f.path_of("url"), p);
        }
        let timeout: Duration = f.or("timeout", WEBHOOK_TIMEOUT, p);
        if !p.covers(&f.path_of("timeout")) && timeout < Duration::from_millis(100) {
            p.push(f.path_of("timeout"), "a webhook's timeout must be at least 100ms");
        }
        let interval: Duration = f.or("interval", WEBHOOK_TIMEOUT, p);
        if !p.covers(&f.path_of("interval")) && interval < Duration::from_secs(1) {
            p.push(f.path_of("interval"), "a webhook's interval must be at least 1s");
        }
        f.finish(p);
        Some(Self {
            url: url?,
            timeout,
            interval,
        })
    }
}

/// Reads a list item by item at `path`, reporting an empty list with `empty`.
fn non_empty_list<T: FromTree>(v: &Value, path: &str, empty: &str, p: &mut Problems) -> Vec<(usize, T)> {
    if matches!(v, Value::Sequence(items) if items.is_empty()) {
        p.push(path, empty);
    }
    lenient_list(v, path, p)
}

/// A mapping that must give exactly one of some keys: a step, a metric.
struct OneOf {
    keys: &'static [&'static str],
    /// How many keys the mapping has besides the one (a metric's `name`).
    others: usize,
    /// What the mapping is, for messages: `a step`.
    what: &'static str,
    /// What to split a mapping with several keys into: `step`.
    separate: &'static str,
}

impl OneOf {
    /// Which of the keys `map` gives. Reports a mapping that gives several, or none and nothing
    /// else (an unknown key is reported by [`Fields::finish`], with the nearest known one).
    fn find(&self, map: &Mapping, path: &str, p: &mut Problems) -> Option<&'static str> {
        let given: Vec<&'static str> = self.keys.iter().copied().filter(|k| map.contains_key(*k)).collect();
        match given.as_slice() {
            [key] => return Some(key),
            [] if map.len() == self.others => {
                p.push(path, format!("{} needs one of: {}", self.what, self.keys.join(", ")))
            }
            [] => {}
            several => p.push(
                path,
                format!(
                    "{} takes exactly one of these keys, found {}: make them separate {}s",
                    self.what,
                    several.join(" and "),
                    self.separate
                ),
            ),
        }
        None
    }
}

impl FromTree for Proxies {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        match v {
            Value::Sequence(_) => {
                let urls = Vec::<String>::from_tree(v, path, p)?;
                check::proxies(&urls, path, p);
                Some(Self::Urls(urls))
            }
            Value::Mapping(_) => {
                let mut f = Fields::of(v, path, p)?;
                let group: Option<String> = f.required("group", p);
                let at = f.path_of("group");
                f.finish(p);
                match crate::fleet::GroupName::new(&group?) {
                    Ok(group) => Some(Self::Group(group)),
                    Err(e) => {
                        p.push(at, e.message);
                        None
                    }
                }
            }
            _ => {
                p.push(
                    path,
                    "give the proxies as a list of admin URLs ([\"http://127.0.0.1:9901\"]) or as a group on etcd ({ group: NAME })",
                );
                None
            }
        }
    }
}

impl FromTree for CanarySpec {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        let mut f = Fields::of(v, path, p)?;
        let at = f.path_of("steps");
        let steps = match f.raw("steps") {
            Some(list) => non_empty_list(list, &at, "list at least one step", p),
            None => {
                p.push(&at, "required field is missing");
                Vec::new()
            }
        };
        f.finish(p);
        // A shadow analysis needs copies to judge: a setMirrorRoute step before it still in force.
        let mut mirrored = false;
        for (i, step) in &steps {
            match step {
                Step::SetMirrorRoute(m) => mirrored = m.percent > 0.0,
                Step::Analysis(a) if a.series == StatsSeries::Shadow && !mirrored => p.push(
                    format!("{at}[{i}].analysis.series"),
                    "no request is copied to the candidate at this step; put a setMirrorRoute step with a percent above 0 before it",
                ),
                _ => {}
            }
        }
        Some(Self {
            steps: steps.into_iter().map(|(_, s)| s).collect(),
        })
    }
}

impl FromTree for Step {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        let mut f = Fields::of(v, path, p)?;
        let Value::Mapping(map) = v else { return None };
        for key in STEP_KEYS {
            let _ = f.raw(key);
        }
        let one = OneOf {
            keys: &STEP_KEYS,
            others: 0,
            what: "a step",
            separate: "step",
        };
        let key = one.find(map, path, p);
        f.finish(p);
        let key = key?;
        let at = format!("{path}.{key}");
        let node = map.get(key).unwrap_or(&Value::Null);
        match key {
            "setWeight" => {
                let w = f64::from_tree(node, &at, p)?;
                check::percent(w, &at, p);
                Some(Self::SetWeight(w))
            }
            "pause" => Pause::from_tree(node, &at, p).map(Self::Pause),
            "setHeaderRoute" => {
                let m = RequestMatch::from_tree(node, &at, p)?;
                check::request_match(&m, &at, p);
                Some(Self::SetHeaderRoute(m))
            }
            "webhook" => WebhookGate::from_tree(node, &at, p).map(Self::Webhook),
            "setMirrorRoute" => MirrorStep::from_tree(node, &at, p).map(Self::SetMirrorRoute),
            _ => gating_analysis(node, &at, p).map(Self::Analysis),
        }
    }
}

impl FromTree for MirrorStep {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        let mut f = Fields::of(v, path, p)?;
        let percent: Option<f64> = f.required("percent", p);
        if let Some(percent) = percent
            && !(percent.is_finite() && (0.0..=100.0).contains(&percent))
        {
            p.push(
                f.path_of("percent"),
                format!("percent must be from 0 to 100 (the share of the route's requests copied), found {percent}"),
            );
        }
        let at = f.path_of("match");
        let matches: Vec<(usize, RequestMatch)> = match f.raw("match") {
            None => Vec::new(),
            Some(list) => non_empty_list(
                list,
                &at,
                "list at least one match, or leave match out to copy any request",
                p,
            ),
        };
        for (i, m) in &matches {
            check::request_match(m, &format!("{at}[{i}]"), p);
        }
        f.finish(p);
        Some(Self {
            percent: percent?,
            matches: matches.into_iter().map(|(_, m)| m).collect(),
        })
    }
}

impl FromTree for StatsSeries {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        match v.as_str() {
            Some("primary") => Some(Self::Primary),
            Some("shadow") => Some(Self::Shadow),
            _ => {
                p.push(
                    path,
                    format!(
                        "expected primary (the candidate's own requests) or shadow (the copies a setMirrorRoute step sends it), found {}",
                        crate::read::describe(v)
                    ),
                );
                None
            }
        }
    }
}

impl FromTree for Pause {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        // `pause:` with nothing after it is read as `pause: {}`.
        if v.is_null() {
            return Some(Self { duration: None });
        }
        let mut f = Fields::of(v, path, p)?;
        let duration = f.optional("duration", p);
        f.finish(p);
        Some(Self { duration })
    }
}

/// Reads `blueGreen:`; the default preview match needs the candidate's name.
fn blue_green(v: &Value, path: &str, candidate: Option<&TrackName>, p: &mut Problems) -> Option<BlueGreenSpec> {
    let mut f = Fields::of(v, path, p)?;
    let preview_match = match f.optional::<RequestMatch>("previewMatch", p) {
        Some(m) => {
            check::request_match(&m, &f.path_of("previewMatch"), p);
            m
        }
        None => RequestMatch {
            headers: vec![ValueMatch {
                name: PREVIEW_HEADER.to_owned(),
                value: Some(candidate.map(|c| c.as_str().to_owned()).unwrap_or_default()),
                one_of: None,
                regex: None,
                present: None,
            }],
            ..RequestMatch::default()
        },
    };
    let auto_promotion = f.optional("autoPromotion", p);
    let pre_promotion_analysis = f
        .raw("prePromotionAnalysis")
        .and_then(|node| gating_analysis(node, &f.path_of("prePromotionAnalysis"), p));
    let post_promotion_analysis = f.optional("postPromotionAnalysis", p);
    let switch_steps: Vec<f64> = f.or("switchSteps", Vec::new(), p);
    let at = f.path_of("switchSteps");
    for (i, w) in switch_steps.iter().enumerate() {
        let step = format!("{at}[{i}]");
        if !(*w > 0.0 && *w < 100.0) {
            p.push(
                step,
                format!("a switch step must be above 0 and below 100 (the switch ends at 100 by itself), found {w}"),
            );
        } else if i > 0 && *w <= switch_steps[i - 1] {
            p.push(
                step,
                format!("switch steps must increase, found {w} after {}", switch_steps[i - 1]),
            );
        }
    }
    let rollback_window = f.or("rollbackWindow", ROLLBACK_WINDOW, p);
    f.finish(p);
    Some(BlueGreenSpec {
        preview_match,
        auto_promotion,
        pre_promotion_analysis,
        post_promotion_analysis,
        switch_steps,
        rollback_window,
    })
}

/// Reads `rings: [...]`.
fn rings(v: &Value, path: &str, p: &mut Problems) -> Option<RingsSpec> {
    let rings: Vec<(usize, Ring)> = non_empty_list(v, path, "list at least one ring", p);
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut last_weight: Option<f64> = None;
    for (i, ring) in &rings {
        let at = format!("{path}[{i}]");
        if let Some(first) = names.insert(&ring.name, *i) {
            p.push(
                format!("{at}.name"),
                format!("duplicate ring name {:?}, also at {path}[{first}]", ring.name),
            );
        }
        if let Some(w) = ring.weight {
            if let Some(before) = last_weight
                && w <= before
            {
                p.push(
                    format!("{at}.weight"),
                    format!("ring weights must increase, found {w} after {before}"),
                );
            }
            last_weight = Some(w);
        }
    }
    Some(RingsSpec {
        rings: rings.into_iter().map(|(_, r)| r).collect(),
    })
}

impl FromTree for Ring {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        let mut f = Fields::of(v, path, p)?;
        let name: Option<String> = f.required("name", p);
        if let Some(n) = &name {
            validate::name("ring", n, &f.path_of("name"), p);
        }
        let matches: Option<RequestMatch> = f.optional("match", p);
        if let Some(m) = &matches {
            check::request_match(m, &f.path_of("match"), p);
        }
        let weight: Option<f64> = f.optional("weight", p);
        if let Some(w) = weight
            && !(w > 0.0 && w <= 100.0)
        {
            p.push(
                f.path_of("weight"),
                format!("a ring's weight must be above 0 and at most 100, found {w}"),
            );
        }
        match (f.raw("match"), f.raw("weight")) {
            (Some(_), Some(_)) => p.push(
                path,
                "give a ring either match (an audience) or weight (a share of everyone), not both",
            ),
            (None, None) => p.push(path, "give a ring match (an audience) or weight (a share of everyone)"),
            _ => {}
        }
        let exit_analysis = f
            .raw("exitAnalysis")
            .and_then(|node| gating_analysis(node, &f.path_of("exitAnalysis"), p));
        let min_duration = f.or("minDuration", Duration::ZERO, p);
        f.finish(p);
        Some(Self {
            name: name?,
            matches,
            weight,
            exit_analysis,
            min_duration,
        })
    }
}

/// An analysis the rollout waits for (a step's, a ring's exit, blue-green's pre-promotion): it
/// needs `count`, or it could never pass.
fn gating_analysis(v: &Value, path: &str, p: &mut Problems) -> Option<AnalysisSpec> {
    let a = AnalysisSpec::from_tree(v, path, p)?;
    if a.count.is_none() && !p.covers(&format!("{path}.count")) {
        p.push(
            format!("{path}.count"),
            "required here: the rollout waits for this analysis, which passes after `count` passing measurements",
        );
    }
    Some(a)
}

impl FromTree for AnalysisSpec {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        let mut f = Fields::of(v, path, p)?;
        let initial_delay: Duration = f.or("initialDelay", Duration::ZERO, p);
        let interval: Duration = f.or("interval", Duration::from_secs(1), p);
        let window: Duration = f.or("window", Duration::from_secs(10), p);
        let min_requests: u64 = f.or("minRequests", 100, p);
        let count: Option<u32> = f.optional("count", p);
        let failure_limit: u32 = f.or("failureLimit", 3, p);
        let inconclusive_limit = f.or("inconclusiveLimit", 0, p);
        let consecutive_error_limit: u32 = f.or("consecutiveErrorLimit", 4, p);
        let sequential_confidence = f.raw("sequentialConfidence").map_or(Some(SEQUENTIAL_CONFIDENCE), |v| {
            sequential_confidence(v, &f.path_of("sequentialConfidence"), p)
        });
        let field_paths = [
            "interval",
            "window",
            "minRequests",
            "count",
            "failureLimit",
            "consecutiveErrorLimit",
        ]
        .map(|field| f.path_of(field));
        // Checks on fields that read; a field reported already is not checked again.
        let [interval_at, window_at, min_requests_at, count_at, failure_at, errors_at] = &field_paths;
        let fresh = |at: &str, p: &Problems| !p.covers(at);
        if fresh(interval_at, p) && interval.is_zero() {
            p.push(interval_at, "interval must be longer than 0s");
        }
        if fresh(window_at, p) {
            let secs = humantime::format_duration(window);
            if window < Duration::from_secs(1) || window > MAX_WINDOW {
                p.push(window_at, format!("window must be from 1s to 5m, found {secs}"));
            } else if window.subsec_nanos() != 0 {
                p.push(
                    window_at,
                    format!("window must be whole seconds (the proxies count by the second), found {secs}"),
                );
            } else if fresh(interval_at, p) && window < interval {
                p.push(
                    window_at,
                    format!(
                        "window must be at least the interval ({}), found {secs}",
                        humantime::format_duration(interval)
                    ),
                );
            }
        }
        let limits = [
            (
                min_requests_at,
                min_requests,
                "a window without requests proves nothing",
            ),
            (
                count_at,
                count.map_or(1, u64::from),
                "an analysis takes at least one measurement",
            ),
            (
                failure_at,
                u64::from(failure_limit),
                "it is the number of failures that abort",
            ),
            (
                errors_at,
                u64::from(consecutive_error_limit),
                "it is the number of unreachable measurements that abort",
            ),
        ];
        for (at, n, why) in limits {
            if fresh(at, p) {
                check::at_least_one(n, why, at, p);
            }
        }
        let at = f.path_of("metrics");
        let metrics: Vec<(usize, MetricSpec)> = f.raw("metrics").map(|v| lenient_list(v, &at, p)).unwrap_or_default();
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (i, m) in &metrics {
            if let Some(first) = names.insert(&m.name, *i) {
                p.push(
                    format!("{at}[{i}].name"),
                    format!("duplicate metric name {:?}, also at {at}[{first}]", m.name),
                );
            }
            // A provider that may answer after the next measurement is due would hold it up.
            let own_timeout = match &m.check {
                MetricCheck::Prometheus(q) => q.timeout,
                MetricCheck::Web(w) => w.timeout,
                _ => None,
            };
            let longest = super::provider::longest_timeout(interval);
            if let Some(t) = own_timeout
                && fresh(interval_at, p)
                && t > longest
            {
                p.push(
                    format!("{at}[{i}].{}.timeout", m.check.key()),
                    format!(
                        "timeout must be at most nine tenths of the analysis's interval ({}), found {}: the measurement must end before the next is due",
                        humantime::format_duration(longest),
                        humantime::format_duration(t)
                    ),
                );
            }
        }
        let emergency = f.optional("emergency", p).unwrap_or_default();
        let series = f.or("series", StatsSeries::Primary, p);
        f.finish(p);
        Some(Self {
            series,
            initial_delay,
            interval,
            window,
            min_requests,
            count,
            failure_limit,
            inconclusive_limit,
            consecutive_error_limit,
            sequential_confidence,
            metrics: metrics.into_iter().map(|(_, m)| m).collect(),
            emergency,
        })
    }
}

impl FromTree for MetricSpec {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        let mut f = Fields::of(v, path, p)?;
        let Value::Mapping(map) = v else { return None };
        let name: Option<String> = f.required("name", p);
        if let Some(n) = &name {
            validate::name("metric", n, &f.path_of("name"), p);
        }
        for key in METRIC_KEYS {
            let _ = f.raw(key);
        }
        let one = OneOf {
            keys: &METRIC_KEYS,
            others: usize::from(map.contains_key("name")),
            what: "a metric",
            separate: "metric",
        };
        let key = one.find(map, path, p);
        f.finish(p);
        let key = key?;
        let check = metric_check(key, map.get(key).unwrap_or(&Value::Null), &format!("{path}.{key}"), p);
        Some(Self {
            name: name?,
            check: check?,
        })
    }
}

/// Reads `sequentialConfidence`: a confidence, or `off` (`None`). A malformed value is
/// reported and leaves the default.
fn sequential_confidence(v: &Value, path: &str, p: &mut Problems) -> Option<f64> {
    match v {
        Value::String(s) if s == "off" => None,
        Value::Number(_) => {
            let c = f64::from_tree(v, path, p)?;
            check::confidence(c, path, p)
                .then_some(c)
                .or(Some(SEQUENTIAL_CONFIDENCE))
        }
        other => {
            p.push(
                path,
                format!(
                    "expected a confidence above 0.5 and below 1 (0.98 is the default) or `off`, found {}",
                    crate::read::describe(other)
                ),
            );
            Some(SEQUENTIAL_CONFIDENCE)
        }
    }
}

/// Reads the body of the check written under `key`.
fn metric_check(key: &str, v: &Value, path: &str, p: &mut Problems) -> Option<MetricCheck> {
    Some(match key {
        "successRate" => MetricCheck::SuccessRate {
            min: bound(v, path, "min", |x, at, p| check::share("success rate", x, at, p), p)?,
        },
        "errorRate" => MetricCheck::ErrorRate {
            max: bound(v, path, "max", |x, at, p| check::share("error rate", x, at, p), p)?,
        },
        "requestRate" => MetricCheck::RequestRate {
            min: bound(v, path, "min", check::request_rate, p)?,
        },
        "sequentialErrorRate" => MetricCheck::SequentialErrorRate {
            confidence: bound(v, path, "confidence", check::confidence, p)?,
        },
        "prometheus" => MetricCheck::Prometheus(PrometheusQuery::from_tree(v, path, p)?),
        "web" => MetricCheck::Web(WebQuery::from_tree(v, path, p)?),
        "errorRateVsBaseline" => {
            let mut f = Fields::of(v, path, p)?;
            let max_ratio: Option<f64> = f.optional("maxRatio", p);
            let max_diff: Option<f64> = f.optional("maxDiff", p);
            if let Some(r) = max_ratio {
                check::ratio(r, &f.path_of("maxRatio"), p);
            }
            if let Some(d) = max_diff {
                check::rate_difference(d, &f.path_of("maxDiff"), p);
            }
            if f.raw("maxRatio").is_none() && f.raw("maxDiff").is_none() {
                p.push(
                    path,
                    "give maxRatio (1.1: 10% above the baseline's error rate), maxDiff (0.005: half a percentage point above it), or both",
                );
            }
            f.finish(p);
            MetricCheck::ErrorRateVsBaseline { max_ratio, max_diff }
        }
        _ => {
            let (quantile, absolute) = QUANTILES.into_iter().find_map(|q| {
                let (abs, rel) = quantile_keys(q);
                (key == abs).then_some((q, true)).or((key == rel).then_some((q, false)))
            })?;
            if absolute {
                MetricCheck::Latency {
                    quantile,
                    max_ms: bound(v, path, "max", check::latency_ms, p)?,
                }
            } else {
                MetricCheck::LatencyVsBaseline {
                    quantile,
                    max_ratio: bound(v, path, "maxRatio", check::ratio, p)?,
                }
            }
        }
    })
}

/// Reads `{field: number}`, the one number of a check, and checks it.
fn bound(
    v: &Value,
    path: &str,
    field: &'static str,
    check: impl FnOnce(f64, &str, &mut Problems) -> bool,
    p: &mut Problems,
) -> Option<f64> {
    let mut f = Fields::of(v, path, p)?;
    let x: Option<f64> = f.required(field, p);
    if let Some(x) = x {
        check(x, &f.path_of(field), p);
    }
    f.finish(p);
    x
}

impl FromTree for EmergencySpec {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        let mut f = Fields::of(v, path, p)?;
        let at = [f.path_of("errorRate"), f.path_of("latencyP99Ms")];
        let error_rate = f
            .raw("errorRate")
            .and_then(|v| bound(v, &at[0], "max", |x, at, p| check::share("error rate", x, at, p), p));
        let latency_p99_ms = f
            .raw("latencyP99Ms")
            .and_then(|v| bound(v, &at[1], "max", check::latency_ms, p));
        f.finish(p);
        Some(Self {
            error_rate,
            latency_p99_ms,
        })
    }
}
