//! Rollout specs: how the control loop moves a route's traffic from a baseline track to a
//! candidate track (canary steps, blue-green, rings), and how it judges the candidate.
//!
//! `config/examples/rollout-canary.yaml` is the reference canary; the format is YAML or JSON
//! with camelCase fields, read and validated like routing tables: every problem at once, each
//! with its field path.

mod check;
mod expression;
mod provider;
mod read;
mod write;

use std::time::Duration;

use serde::Serialize;

use crate::error::{ConfigErrors, Problems};
use crate::read::{Format, parse_tree};
use crate::schema::{RequestMatch, RouteName, TrackName};

pub use expression::{Condition, JsonPath};
pub use provider::{
    Judge, MetricProvider, PLACEHOLDERS, PROVIDER_TIMEOUT, PrometheusQuery, WebHeader, WebQuery, fill, longest_timeout,
};

/// Reads and validates a rollout spec (YAML or JSON, camelCase). Defaults are filled in: an
/// analysis's `interval` 1s, `window` 10s, `minRequests` 100, `failureLimit` 3,
/// `inconclusiveLimit` 0, `consecutiveErrorLimit` 4, `sequentialConfidence` 0.98; blue-green's `previewMatch` (header
/// `x-environment` equal to the candidate's name) and `rollbackWindow` 5m; a ring's
/// `minDuration` 0s; `abort` instant (with steps, `interval` 10s); a webhook gate's `timeout`
/// and `interval` 10s.
///
/// Every problem is reported, each with its field path (`canary.steps[2].setWeight`,
/// `analysis.metrics[1].latencyP99Ms.max`); unknown fields are problems too, with the nearest
/// known name. Serializing the result (it implements `Serialize`) gives a document that reads
/// back equal.
///
/// ```
/// use switchyard_config::{Format, load_rollout};
/// use switchyard_config::rollout::{Step, Strategy};
///
/// let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/rollout-canary.yaml")).unwrap();
/// let spec = load_rollout(&text, Format::Yaml).unwrap();
/// let Strategy::Canary(canary) = &spec.strategy else { panic!("a canary") };
/// assert_eq!(canary.steps[0], Step::SetWeight(5.0));
/// ```
pub fn load_rollout(text: &str, format: Format) -> Result<RolloutSpec, ConfigErrors> {
    let mut p = Problems::default();
    match parse_tree(text, format, &mut p).and_then(|tree| read::rollout(&tree, &mut p)) {
        Some(spec) => p.into_result(spec),
        None => Err(p.into_errors()),
    }
}

/// A whole rollout.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// Unique among rollouts (`checkout-v2`).
    pub name: String,
    /// The route whose tracks the rollout moves.
    pub route: RouteName,
    /// The proxies serving the route: their admin URLs, or a group on etcd.
    pub proxies: Proxies,
    /// The track in service (`stable`, `blue`).
    pub baseline: TrackName,
    /// The track being rolled out (`canary`, `green`).
    pub candidate: TrackName,
    /// The strategy.
    #[serde(flatten)]
    pub strategy: Strategy,
    /// Analysis that runs throughout the rollout (from the first step to completion).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisSpec>,
    /// Webhook notified (JSON `POST`, retried) on step, pause, promotion and abort.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notify: Option<String>,
    /// How long a step may wait for every proxy to confirm its traffic before the rollout is
    /// `Degraded` (Argo Rollouts' `progressDeadlineSeconds`). Default 10m.
    #[serde(with = "crate::schema::human")]
    pub progress_deadline: Duration,
    /// Abort, rather than only report `Degraded`, when the progress deadline passes. Default
    /// false.
    pub progress_deadline_abort: bool,
    /// How an abort sends traffic back: at once (the default), or stepped down.
    #[serde(skip_serializing_if = "AbortSpec::is_instant")]
    pub abort: AbortSpec,
    /// A gate before promotion (Flagger's confirm-promotion), held until this webhook answers
    /// 2xx: a step of its own after a canary's steps or a ring's, and before a blue-green's
    /// switch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promotion_webhook: Option<WebhookGate>,
}

/// How an abort sends traffic back to the baseline (`abort: { steps: [25, 10, 0], interval:
/// 10s }`). For an operator's abort or a failed analysis, the candidate's weight steps down
/// through `steps` (those below its weight when the abort came), each held `interval` after
/// every proxy confirmed it, while the analysis goes on checking; an emergency limit or a
/// sequential rejection, a second abort, or the progress deadline go straight to 0. Header
/// routes to the candidate go at the first step. Default: no steps, straight to 0.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AbortSpec {
    /// Candidate weights, percent, decreasing; 0 ends the list (it is implied when missing).
    pub steps: Vec<f64>,
    /// How long each weight is held once every proxy serves it. Default 10s.
    #[serde(with = "crate::schema::human")]
    pub interval: Duration,
}

/// The default [`AbortSpec::interval`].
pub const ABORT_INTERVAL: Duration = Duration::from_secs(10);

impl Default for AbortSpec {
    fn default() -> Self {
        Self {
            steps: Vec::new(),
            interval: ABORT_INTERVAL,
        }
    }
}

impl AbortSpec {
    /// Whether an abort goes straight to 0.
    pub fn is_instant(&self) -> bool {
        self.steps.iter().all(|w| *w == 0.0)
    }

    /// The weights an abort passes through from a candidate at `weight`: the steps below it,
    /// then 0.
    pub fn from(&self, weight: f64) -> Vec<f64> {
        let mut down: Vec<f64> = self.steps.iter().copied().filter(|w| *w > 0.0 && *w < weight).collect();
        down.push(0.0);
        down
    }
}

/// A webhook that holds the rollout until it answers 2xx (Flagger's gates): `POST`ed a JSON
/// document with the rollout's name, route, step, weights and phase, again every `interval`
/// until it does; a gate still shut after `progressDeadline` aborts the rollout.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookGate {
    /// `http://` or `https://`.
    pub url: String,
    /// How long one call may take. Default 10s.
    #[serde(with = "crate::schema::human")]
    pub timeout: Duration,
    /// Time between calls while the gate stays shut. Default 10s.
    #[serde(with = "crate::schema::human")]
    pub interval: Duration,
}

/// The default [`WebhookGate::timeout`] and [`WebhookGate::interval`].
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// The proxies a rollout moves: listed by admin URL, or every proxy of a group on etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proxies {
    /// Admin API base URLs of every proxy serving the route (`http://127.0.0.1:9901`), written
    /// as a list.
    Urls(Vec<String>),
    /// Every proxy registered in the group (`proxies: { group: checkout }`): the control loop
    /// finds them in etcd and publishes by writing the group's table there.
    Group(crate::fleet::GroupName),
}

impl Proxies {
    /// The listed URLs; empty for a group.
    pub fn urls(&self) -> &[String] {
        match self {
            Self::Urls(urls) => urls,
            Self::Group(_) => &[],
        }
    }

    /// The group, if the proxies are one.
    pub fn group(&self) -> Option<&crate::fleet::GroupName> {
        match self {
            Self::Group(g) => Some(g),
            Self::Urls(_) => None,
        }
    }

    /// Whether two rollouts would move some of the same proxies: a URL in both lists (without
    /// case), or the same group.
    pub fn overlaps(&self, other: &Proxies) -> bool {
        match (self, other) {
            (Self::Urls(a), Self::Urls(b)) => a.iter().any(|u| b.iter().any(|v| u.eq_ignore_ascii_case(v))),
            (Self::Group(a), Self::Group(b)) => a == b,
            _ => false,
        }
    }
}

impl Serialize for Proxies {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Urls(urls) => urls.serialize(s),
            Self::Group(group) => {
                use serde::ser::SerializeMap as _;
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("group", group)?;
                map.end()
            }
        }
    }
}

/// The default [`RolloutSpec::progress_deadline`]: Argo Rollouts' 600 s.
pub const PROGRESS_DEADLINE: Duration = Duration::from_secs(600);

/// How traffic moves. Written as exactly one of the keys `canary: {steps}`,
/// `blueGreen: {...}` and `rings: [...]` beside the spec's other fields.
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "one per rollout, never on a hot path; unboxed variants keep matching on them plain"
)]
pub enum Strategy {
    /// Weight steps with pauses and per-step analysis.
    Canary(CanarySpec),
    /// Two full tracks; switch all traffic at once or in steps.
    BlueGreen(BlueGreenSpec),
    /// Ordered audiences, each opened when the previous one's exit analysis passes.
    Rings(RingsSpec),
}

impl Strategy {
    /// The key the strategy is written under: `canary`, `blueGreen` or `rings`.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Canary(_) => "canary",
            Self::BlueGreen(_) => "blueGreen",
            Self::Rings(_) => "rings",
        }
    }
}

/// The keys of [`Strategy`], one of which a spec gives.
const STRATEGY_KEYS: [&str; 3] = ["canary", "blueGreen", "rings"];

/// A canary: steps run in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CanarySpec {
    /// At least one step.
    pub steps: Vec<Step>,
}

/// One canary step, written as a mapping with exactly one key: `setWeight: 5`,
/// `pause: {duration: 5m}` (or `pause: {}`), `setHeaderRoute: {headers: [...]}` (a route's
/// `match:` conditions), `analysis: {...}`, `webhook: {url, timeout, interval}`.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// The candidate's share of weighted traffic, percent (0 to 100); the baseline gets the rest.
    SetWeight(f64),
    /// Wait: for a duration, or until `promote` when no duration is given.
    Pause(Pause),
    /// Requests matching these conditions go to the candidate whatever the weights (a rule put
    /// first in the route); removed on abort and on completion.
    SetHeaderRoute(RequestMatch),
    /// Run this analysis now; the rollout moves on when it passes, aborts when it fails.
    Analysis(AnalysisSpec),
    /// Hold here until this webhook answers 2xx.
    Webhook(WebhookGate),
    /// Copies of this share of the route's requests go to the candidate, whose answers no
    /// client sees (the route's `mirror:`); `percent: 0` stops them, as do the end and the
    /// abort of the rollout. Argo Rollouts' name.
    SetMirrorRoute(MirrorStep),
}

/// `setMirrorRoute: { percent, match? }`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MirrorStep {
    /// The share of the route's requests copied to the candidate, percent from 0 to 100.
    pub percent: f64,
    /// Only requests meeting one of these (each as a route's `match:`) are copied; empty (the
    /// default): any request. Published as the route's `mirror.match`.
    #[serde(rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<RequestMatch>,
}

impl Step {
    /// The step's key: `setWeight`, `pause`, `setHeaderRoute`, `analysis` or `webhook`.
    pub fn key(&self) -> &'static str {
        match self {
            Self::SetWeight(_) => "setWeight",
            Self::Pause(_) => "pause",
            Self::SetHeaderRoute(_) => "setHeaderRoute",
            Self::Analysis(_) => "analysis",
            Self::Webhook(_) => "webhook",
            Self::SetMirrorRoute(_) => "setMirrorRoute",
        }
    }
}

/// The keys of [`Step`], one of which each step gives.
const STEP_KEYS: [&str; 6] = [
    "setWeight",
    "pause",
    "setHeaderRoute",
    "analysis",
    "webhook",
    "setMirrorRoute",
];

/// A pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pause {
    /// How long; `None` waits for `promote`.
    #[serde(skip_serializing_if = "Option::is_none", with = "crate::schema::human_opt")]
    pub duration: Option<Duration>,
}

/// Blue-green: the baseline is the active track, the candidate the preview track.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlueGreenSpec {
    /// Requests matching this reach the preview track before the switch (smoke tests);
    /// default: header `x-environment` equal to the candidate's name.
    pub preview_match: RequestMatch,
    /// Switch by itself this long after the preview is up and pre-promotion analysis passed;
    /// `None` waits for `promote`.
    #[serde(skip_serializing_if = "Option::is_none", with = "crate::schema::human_opt")]
    pub auto_promotion: Option<Duration>,
    /// Must pass before the switch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre_promotion_analysis: Option<AnalysisSpec>,
    /// Runs after the switch; failing it switches back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_promotion_analysis: Option<AnalysisSpec>,
    /// Candidate weights (percent) to pass through on the switch; empty switches at once.
    pub switch_steps: Vec<f64>,
    /// How long after the switch the old track is kept ready, so `undo` is instant. Default 5m.
    #[serde(with = "crate::schema::human")]
    pub rollback_window: Duration,
}

/// Rings: audiences opened one after another.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RingsSpec {
    /// At least one ring; a ring with `weight: 100` (or the end of the list) is everyone.
    pub rings: Vec<Ring>,
}

/// One audience.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Ring {
    /// Name shown in status and history (`internal`, `beta`, `everyone`).
    pub name: String,
    /// Requests matching this join the candidate (a rule), as in `x-user-group` in `[internal]`.
    /// Written `match:`, like a route's conditions.
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    pub matches: Option<RequestMatch>,
    /// Or: this percent of everyone else.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// Must pass before the next ring opens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_analysis: Option<AnalysisSpec>,
    /// At least this long in the ring. Default 0s.
    #[serde(with = "crate::schema::human")]
    pub min_duration: Duration,
}

/// How the candidate is judged from the proxies' measurements.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisSpec {
    /// How long after the analysis begins its first measurement waits, beyond the first
    /// `interval` (Argo Rollouts' name). Default 0s.
    #[serde(with = "crate::schema::human")]
    pub initial_delay: Duration,
    /// Time between measurements: the first is taken `initialDelay + interval` after the
    /// analysis began, the next each `interval` after. Default 1s.
    #[serde(with = "crate::schema::human")]
    pub interval: Duration,
    /// The stats window each measurement reads (1s to 300s). Default 10s.
    #[serde(with = "crate::schema::human")]
    pub window: Duration,
    /// Fewer candidate requests in the window make a measurement inconclusive. Default 100.
    /// It holds back the checks of the proxies' stats; metric providers (`prometheus`, `web`)
    /// are judged on their own answers, so an analysis of providers alone does not wait for it.
    pub min_requests: u64,
    /// Measurements to take; after that many passing ones the analysis passes. `None`: runs
    /// until the rollout leaves the step (or completes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Failed measurements that abort. Default 3.
    pub failure_limit: u32,
    /// Consecutive inconclusive measurements that pause the rollout; 0: no limit. Default 0.
    pub inconclusive_limit: u32,
    /// Consecutive measurements with a proxy's stats unreachable, or with one metric
    /// provider's value unread (it did not answer, or not with one value), that abort. Each
    /// provider counts its own streak, as each metric does in Argo Rollouts. Default 4.
    pub consecutive_error_limit: u32,
    /// The confidence of the sequential judge that runs beside every `successRate` and
    /// `errorRate` limit, or `None` (written `off`) for none. Default
    /// [`SEQUENTIAL_CONFIDENCE`].
    ///
    /// The judge tests the candidate's error rate against the limit on every request since the
    /// analysis began, with an anytime-valid test: a candidate whose error rate stays within the
    /// limit is aborted by it with probability at most `1 − confidence` over the whole analysis,
    /// however long it runs and however often it is measured. Because that holds for the whole
    /// analysis, a rejection aborts at once, without waiting for `failureLimit`. Several limits
    /// each spend their own `1 − confidence`.
    #[serde(serialize_with = "sequential_confidence")]
    pub sequential_confidence: Option<f64>,
    /// Which of the candidate's series the checks judge: its own requests (`primary`, the
    /// default) or the copies a `setMirrorRoute` step sends it (`shadow`), against the
    /// baseline's own requests either way: the baseline answered the clients the very requests
    /// the shadow got copies of. `minRequests` then counts the shadow's copies.
    #[serde(skip_serializing_if = "StatsSeries::is_primary")]
    pub series: StatsSeries,
    /// The checks.
    pub metrics: Vec<MetricSpec>,
    /// Limits whose first breach aborts, without waiting for `failureLimit`.
    #[serde(skip_serializing_if = "EmergencySpec::is_empty")]
    pub emergency: EmergencySpec,
}

/// Which of a track's series an analysis reads from the proxies' `/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StatsSeries {
    /// The requests the track answered for clients.
    #[default]
    Primary,
    /// The copies a route's mirror sent the track, answers discarded.
    Shadow,
}

impl StatsSeries {
    /// Whether this is the default, [`StatsSeries::Primary`].
    pub fn is_primary(&self) -> bool {
        *self == Self::Primary
    }
}

/// The default [`AnalysisSpec::sequential_confidence`]: 98%, so a candidate exactly at its
/// limit is aborted by the judge in at most 2% of analyses (Ville's bound; about 0.6% in the
/// judgement bench's 90-second rollouts, because the judge can only reject on whole errors and
/// the rollout ends). The judgement bench (`cargo bench -p switchyard-benches --bench
/// judgement`, the README's "Judgement") chose it: with the contract's spec, 98% aborts 0.7% of
/// healthy rollouts and catches a candidate at +2 percentage points and 50 requests/s in a
/// median 5 s; 99% aborts 0.3% and catches in 6 s, 95% aborts 1.1% and catches in 4 s.
pub const SEQUENTIAL_CONFIDENCE: f64 = 0.98;

/// `sequentialConfidence`: the number, or `off`.
fn sequential_confidence<S: serde::Serializer>(c: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match c {
        Some(c) => s.serialize_f64(*c),
        None => s.serialize_str("off"),
    }
}

/// One named check.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricSpec {
    /// Shown in verdicts and abort records.
    pub name: String,
    /// What is checked.
    #[serde(flatten)]
    pub check: MetricCheck,
}

/// A latency quantile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Quantile {
    /// Median.
    P50,
    /// 90th percentile.
    P90,
    /// 99th percentile.
    P99,
    /// 99.9th percentile.
    P999,
}

impl Quantile {
    /// As a fraction (0.5, 0.9, 0.99, 0.999).
    pub fn fraction(self) -> f64 {
        match self {
            Self::P50 => 0.5,
            Self::P90 => 0.9,
            Self::P99 => 0.99,
            Self::P999 => 0.999,
        }
    }
}

/// The kinds of check. A threshold passes when the window's estimate is within its limit and
/// fails only when the breach is clear at 99.99% one-sided confidence (inconclusive in between),
/// so overlapping windows measured every second do not abort healthy rollouts on noise;
/// `successRate` and `errorRate` also get a sequential judge (see
/// [`AnalysisSpec::sequential_confidence`]). YAML keys: `successRate: {min}`, `errorRate: {max}`,
/// `latencyP50Ms`/`latencyP90Ms`/`latencyP99Ms`/`latencyP999Ms: {max}`, `requestRate: {min}`,
/// `errorRateVsBaseline: {maxRatio, maxDiff}`, `latencyP99VsBaseline: {maxRatio}` (and the other
/// quantiles), `sequentialErrorRate: {confidence}`; and the metric providers, `prometheus: {...}`
/// and `web: {...}` (see [`PrometheusQuery`] and [`WebQuery`]), judged on what they answer.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricCheck {
    /// Non-5xx share of the candidate's requests at least `min` (0 to 1).
    SuccessRate {
        /// Lowest acceptable share.
        min: f64,
    },
    /// 5xx share of the candidate's requests at most `max` (0 to 1).
    ErrorRate {
        /// Highest acceptable share.
        max: f64,
    },
    /// The candidate's latency quantile at most `max_ms` milliseconds.
    Latency {
        /// Which quantile.
        quantile: Quantile,
        /// Highest acceptable value, ms.
        max_ms: f64,
    },
    /// The candidate's requests per second at least `min`.
    RequestRate {
        /// Lowest acceptable rate, requests/s.
        min: f64,
    },
    /// Candidate error rate ≤ baseline × `max_ratio`, or ≤ baseline + `max_diff` (the check
    /// passes if either given bound holds).
    ErrorRateVsBaseline {
        /// Allowed ratio to the baseline's error rate.
        max_ratio: Option<f64>,
        /// Allowed difference from the baseline's error rate (0.005 = half a percentage point).
        max_diff: Option<f64>,
    },
    /// Candidate latency quantile ≤ baseline's × `max_ratio`.
    LatencyVsBaseline {
        /// Which quantile.
        quantile: Quantile,
        /// Allowed ratio.
        max_ratio: f64,
    },
    /// Anytime-valid sequential test (an exact mixture SPRT, conditional on each interval's
    /// errors) that the candidate's error rate exceeds the baseline's, over every interval since
    /// the analysis began; fails when the evidence reaches `confidence` (e.g. 0.99), so checking
    /// every second does not inflate false aborts, and then aborts at once, without waiting for
    /// `failureLimit`.
    SequentialErrorRate {
        /// 1 − the false-abort probability allowed over the whole analysis, for a candidate
        /// whose error rate is at most the baseline's.
        confidence: f64,
    },
    /// A Prometheus instant query, asked at each measurement.
    Prometheus(PrometheusQuery),
    /// A value of a JSON endpoint, read at each measurement.
    Web(WebQuery),
}

impl MetricCheck {
    /// The check's key, as in `latencyP99Ms` or `errorRateVsBaseline`: shown in verdicts.
    pub fn key(&self) -> &'static str {
        match self {
            Self::SuccessRate { .. } => "successRate",
            Self::ErrorRate { .. } => "errorRate",
            Self::Latency { quantile, .. } => quantile_keys(*quantile).0,
            Self::RequestRate { .. } => "requestRate",
            Self::ErrorRateVsBaseline { .. } => "errorRateVsBaseline",
            Self::LatencyVsBaseline { quantile, .. } => quantile_keys(*quantile).1,
            Self::SequentialErrorRate { .. } => "sequentialErrorRate",
            Self::Prometheus(_) => "prometheus",
            Self::Web(_) => "web",
        }
    }

    /// The provider the check asks, if it is one (`prometheus`, `web`) rather than a check of
    /// the proxies' stats.
    pub fn provider(&self) -> Option<MetricProvider<'_>> {
        match self {
            Self::Prometheus(q) => Some(MetricProvider::Prometheus(q)),
            Self::Web(w) => Some(MetricProvider::Web(w)),
            _ => None,
        }
    }
}

const QUANTILES: [Quantile; 4] = [Quantile::P50, Quantile::P90, Quantile::P99, Quantile::P999];

/// The keys of a quantile's checks: the absolute one and the one relative to the baseline.
fn quantile_keys(q: Quantile) -> (&'static str, &'static str) {
    match q {
        Quantile::P50 => ("latencyP50Ms", "latencyP50VsBaseline"),
        Quantile::P90 => ("latencyP90Ms", "latencyP90VsBaseline"),
        Quantile::P99 => ("latencyP99Ms", "latencyP99VsBaseline"),
        Quantile::P999 => ("latencyP999Ms", "latencyP999VsBaseline"),
    }
}

/// The keys of [`MetricCheck`], one of which each metric gives.
const METRIC_KEYS: [&str; 15] = [
    "successRate",
    "errorRate",
    "latencyP50Ms",
    "latencyP90Ms",
    "latencyP99Ms",
    "latencyP999Ms",
    "requestRate",
    "errorRateVsBaseline",
    "latencyP50VsBaseline",
    "latencyP90VsBaseline",
    "latencyP99VsBaseline",
    "latencyP999VsBaseline",
    "sequentialErrorRate",
    "prometheus",
    "web",
];

/// Emergency limits on the candidate; each is optional. Default: none.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EmergencySpec {
    /// `errorRate: {max}`: 5xx share above which the rollout aborts at once.
    pub error_rate: Option<f64>,
    /// `latencyP99Ms: {max}`: p99 above which the rollout aborts at once, ms.
    pub latency_p99_ms: Option<f64>,
}

impl EmergencySpec {
    /// Whether no limit is given.
    pub fn is_empty(&self) -> bool {
        self.error_rate.is_none() && self.latency_p99_ms.is_none()
    }
}
