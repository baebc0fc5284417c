//! The proxy admin API's `GET /stats` document, [`StatsDocument`], which the proxy writes and
//! the control loop reads with this one type; the latency histogram's encoding in it
//! ([`encode_histogram`], [`decode_histogram`]); and [`TrackWindow`], one track's
//! measurements over a window, merged across proxies, that an analysis judges.
//!
//! The document's shape is a contract (`docs/admin-api.yaml`): fields may be added, never
//! renamed, so unknown fields are ignored here, and a field added later is optional to read.
//!
//! ```
//! use switchyard_config::stats::{StatsDocument, TrackWindow};
//!
//! let body = r#"{"version": 7, "instance": "5f0c6e1d2a9b8c47", "windowSeconds": 10,
//!   "routes": {"checkout": {"tracks": {"canary": {
//!   "requests": 0, "errors": 0, "errorRate": 0.0,
//!   "statusClasses": {"2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0},
//!   "upstreamErrors": {"connect": 0, "timeout": 0, "reset": 0, "protocol": 0},
//!   "latencyMs": {"p50": 0.0, "p90": 0.0, "p99": 0.0, "p999": 0.0, "max": 0.0},
//!   "histogram": "HISTFAAAAB94nJNpmSzMwMDAyAABzFAazGee3M5g/wEqAgBJjQOY",
//!   "totalRequests": 12, "totalErrors": 1}},
//!   "clientErrors": {"malformed": 0, "timeout": 0, "aborted": 0}}}}"#;
//! let doc: StatsDocument = serde_json::from_str(body).unwrap();
//! let mut fleet = TrackWindow::empty(doc.window_seconds);
//! fleet.merge(&doc.track("checkout", "canary").unwrap());
//! assert_eq!((fleet.requests, fleet.quantile_ms(0.99)), (0, None));
//! assert_eq!(doc.track_stats("checkout", "canary").unwrap().total_requests, 12);
//! ```

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{DeserializeError, Deserializer, Serializer as _, V2DeflateSerializer};
use serde::{Deserialize, Serialize};

use crate::{InstanceId, RouteName, TrackName};

/// The lowest latency the proxies' histograms distinguish: 1 µs.
pub const LOWEST_LATENCY_US: u64 = 1;
/// The highest latency the proxies' histograms track: 60 s, in µs (longer ones count as this).
pub const HIGHEST_LATENCY_US: u64 = 60_000_000;
/// Significant decimal digits the proxies' histograms keep (relative error ≤ 0.1 %).
pub const SIGNIFICANT_DIGITS: u8 = 3;

/// The longest window `GET /stats` serves, seconds: the proxies keep five minutes of
/// one-second slices.
pub const MAX_WINDOW_SECONDS: u64 = 300;

/// An empty latency histogram in µs with the proxies' bounds.
pub fn new_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(LOWEST_LATENCY_US, HIGHEST_LATENCY_US, SIGNIFICANT_DIGITS) {
        Ok(h) => h,
        Err(e) => unreachable!("constant histogram bounds are valid: {e:?}"),
    }
}

/// A histogram as HdrHistogram's compressed V2 format (`V2DeflateSerializer`, readable by every
/// HdrHistogram implementation), base64 with the standard alphabet and padding: the
/// `histogram` field of [`TrackStatsDoc`].
///
/// Deflate rather than plain V2 because it is a third smaller where size matters: ≈ 4.0 KB against
/// ≈ 6.0 KB for 100 000 requests spread over ≈ 5 500 buckets. For a histogram of a handful of
/// buckets it costs ≈ 12 bytes more.
pub fn encode_histogram(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    // Writing to a Vec cannot fail, and a count is only unserializable above i64::MAX requests.
    if let Err(e) = V2DeflateSerializer::new().serialize(h, &mut bytes) {
        unreachable!("a latency histogram serializes into memory: {e:?}");
    }
    STANDARD.encode(bytes)
}

/// Why a `histogram` field could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeHistogramError {
    /// The text is not standard base64 with padding.
    #[error("histogram is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// The bytes are not an HdrHistogram V2 (plain or deflate) histogram with u64 counts.
    #[error("histogram is not an HdrHistogram V2 encoding: {0}")]
    Format(#[from] DeserializeError),
}

/// The histogram [`encode_histogram`] encoded (either V2 format is accepted), with the bounds
/// and counts it was written with, ready to `add` to others of the same bounds.
pub fn decode_histogram(s: &str) -> Result<Histogram<u64>, DecodeHistogramError> {
    let bytes = STANDARD.decode(s)?;
    Ok(Deserializer::new().deserialize(&mut bytes.as_slice())?)
}

/// The body of a proxy's `GET /stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsDocument {
    /// The version of the routing table the proxy was serving when it answered.
    pub version: u64,
    /// The proxy process that answered: another one after a restart, which starts the
    /// lifetime totals again. Absent from proxies older than this field (then `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<InstanceId>,
    /// How many one-second slices the window covers, up to and including the current one (which
    /// is still filling); divide by it for rates. Shorter than the `window` asked for when
    /// `since` cut it, and 0 when `since` left no whole slice (then every count is 0).
    pub window_seconds: u64,
    /// Per route, by name.
    pub routes: BTreeMap<RouteName, RouteStats>,
    /// Per host name that the table's endpoints are written with (`app.svc`), how it resolves.
    /// Left out when no endpoint is written with a name, and absent from proxies older than
    /// this field (then empty).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dns: BTreeMap<String, NameStatus>,
}

/// How one host name of the table's endpoints resolves, in `GET /stats`.
///
/// A name is in one of three states: resolved (`addresses` given, no `error`), stale (its last
/// lookup failed: `error` and `failingSince` given, and its endpoints keep `addresses`, those of
/// the last lookup that answered), or never resolved (no `addresses`: its endpoints cannot be
/// connected to, and their requests fail with 502 against their track).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NameStatus {
    /// The addresses its endpoints go to, in address order (`10.0.0.7`, `fd00::7`).
    pub addresses: Vec<std::net::IpAddr>,
    /// When the last lookup that answered finished, in ms since the Unix epoch; absent if none
    /// has yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<u64>,
    /// Why the last lookup failed, a sentence; absent when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the failures that go on began (the first of them), in ms since the Unix epoch;
    /// absent when the last lookup answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<u64>,
    /// Lookups of the name that failed since the proxy started (or began using the name).
    pub failures: u64,
}

/// One route's stats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteStats {
    /// Per track, by name; every track of the route appears, with zeros if it saw nothing.
    pub tracks: BTreeMap<TrackName, TrackStatsDoc>,
    /// What clients did wrong on the route; counted against no track. Absent from proxies
    /// older than this field (then zeros).
    #[serde(default)]
    pub client_errors: ClientErrors,
    /// What the route's retries came to since the proxy started, when it retries (`retry:`).
    /// Every attempt, retried or not, is also in its track's requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<RetryCounts>,
    /// The shadow series of each track the route mirrors requests to (its `mirror:`): the
    /// copies' answers, which no client got, measured apart from the track's own requests.
    /// Absent when the route mirrors nothing.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shadow: BTreeMap<TrackName, ShadowStatsDoc>,
}

/// A route's retries since the proxy started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryCounts {
    /// Requests sent again after an attempt failed.
    pub sent: u64,
    /// Retries the route's budget did not allow: the client got the failed attempt's answer.
    pub budget_exhausted: u64,
}

/// One track's shadow series over the window: copies of the route's requests, counted as a
/// track's requests are (a copy the upstream failed is a 502 or 504 here too), with what the
/// mirror's bound did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShadowStatsDoc {
    /// The copies' measurements, as a track's.
    #[serde(flatten)]
    pub stats: TrackStatsDoc,
    /// Copies not sent because `maxInFlight` were in flight, since the proxy process started.
    pub dropped: u64,
    /// Copies not made because the request's body was over `mirror.body.maxBytes` (by its
    /// `Content-Length`, or once that much of it had come), since the proxy process started.
    /// Absent from proxies older than this field (then 0).
    #[serde(default)]
    pub body_too_large: u64,
    /// Copies in flight when the proxy answered.
    pub in_flight: u64,
}

/// Requests of a route that failed through the client's fault, by kind: none of them is in
/// any track's requests, errors or latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ClientErrors {
    /// Refused as malformed: bad framing (`400`, `501`), `Host` or path (`400`), or a request
    /// body that is not valid chunked encoding.
    pub malformed: u64,
    /// Request bodies that stopped arriving for `timeouts.requestBodyIdle`, or came slower than
    /// `limits.requestBodyMinRate` (`408`).
    pub timeout: u64,
    /// Clients that left before their request was answered.
    pub aborted: u64,
}

/// One track's stats over the window, as one proxy measured them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrackStatsDoc {
    /// Finished requests.
    pub requests: u64,
    /// Of those, the ones answered with a 5xx (the proxy's own 502, 503 and 504 included).
    pub errors: u64,
    /// `errors / requests`, 0.0 without requests.
    pub error_rate: f64,
    /// Requests by status class.
    pub status_classes: StatusClasses,
    /// Requests the upstream did not answer, by cause.
    pub upstream_errors: UpstreamErrors,
    /// Latency quantiles, ms (0.0 without requests); for one proxy only: merge
    /// [`Self::histogram`]s to get a fleet's.
    pub latency_ms: LatencyMs,
    /// The latency histogram in µs: HdrHistogram V2 with deflate, base64 (standard alphabet,
    /// padded), as [`encode_histogram`] writes it. Read it with [`decode_histogram`].
    pub histogram: String,
    /// Finished requests since the proxy process started (see [`StatsDocument::instance`]),
    /// whatever the window.
    pub total_requests: u64,
    /// Of those, the errors (as [`Self::errors`] counts them).
    pub total_errors: u64,
    /// The track's endpoints, in the order written, when the track has `outlierDetection` or
    /// `healthCheck` (else empty and absent). Absent from proxies older than this field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<EndpointStatsDoc>,
}

/// One endpoint of a track whose endpoints' health the proxy keeps. Its requests are in the
/// track's numbers, whatever its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointStatsDoc {
    /// `HOST:PORT` as written.
    pub address: String,
    /// Whether it takes the track's requests now.
    pub state: EndpointState,
    /// Times outlier detection ejected it since the proxy process started, whatever the window.
    pub ejections: u64,
    /// Active health checks it failed since the proxy process started, whatever the window.
    pub health_check_failures: u64,
}

/// Whether an endpoint takes its track's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointState {
    /// It takes requests.
    Serving,
    /// Outlier detection ejected it; it comes back when its ejection time is over.
    Ejected,
    /// It failed `healthCheck.unhealthyThreshold` checks in a row; it comes back after
    /// `healthCheck.healthyThreshold` passes in a row.
    Unhealthy,
}

/// Requests by status class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusClasses {
    /// `2xx`.
    #[serde(rename = "2xx")]
    pub success: u64,
    /// `3xx`.
    #[serde(rename = "3xx")]
    pub redirection: u64,
    /// `4xx`.
    #[serde(rename = "4xx")]
    pub client_error: u64,
    /// `5xx`.
    #[serde(rename = "5xx")]
    pub server_error: u64,
}

/// Requests the upstream did not answer, by cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamErrors {
    /// The connection could not be established.
    pub connect: u64,
    /// No response headers within the request timeout.
    pub timeout: u64,
    /// The connection broke before a response.
    pub reset: u64,
    /// The upstream broke HTTP/1.1 framing (conflicting or invalid length, malformed chunks,
    /// a body cut short). Absent from proxies older than this field (then 0).
    #[serde(default)]
    pub protocol: u64,
}

/// Latency quantiles of one proxy, ms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencyMs {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Highest.
    pub max: f64,
}

impl LatencyMs {
    /// The quantiles of a latency histogram in µs, each the highest value equivalent to it
    /// within the histogram's precision, in ms; all 0.0 for an empty histogram.
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| if h.is_empty() { 0.0 } else { us as f64 / 1000.0 };
        Self {
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// Why a stats document does not give a track's window.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// The route is not in the document (the proxy's table does not have it).
    #[error("the stats have no route {0:?}")]
    UnknownRoute(String),
    /// The track is not in the route (the proxy's table does not have it).
    #[error("the stats of route {route:?} have no track {track:?}")]
    UnknownTrack {
        /// The route.
        route: String,
        /// The missing track.
        track: String,
    },
    /// The route mirrors no requests to the track, so the track has no shadow series.
    #[error("the stats of route {route:?} have no shadow series of track {track:?}: the route mirrors nothing to it")]
    NoShadow {
        /// The route.
        route: String,
        /// The track without one.
        track: String,
    },
    /// The histogram does not decode.
    #[error(transparent)]
    Histogram(#[from] DecodeHistogramError),
    /// The histogram does not have the proxies' bounds, so it cannot be merged exactly.
    #[error(
        "histogram covers {low} to {high} µs with {digits} significant digits, not the proxies' \
         {LOWEST_LATENCY_US} to {HIGHEST_LATENCY_US} µs with {SIGNIFICANT_DIGITS}"
    )]
    Bounds {
        /// Its lowest discernible value, µs.
        low: u64,
        /// Its highest trackable value, µs.
        high: u64,
        /// Its significant digits.
        digits: u8,
    },
    /// More errors than requests.
    #[error("{errors} errors out of {requests} requests")]
    Inconsistent {
        /// Requests.
        requests: u64,
        /// Errors.
        errors: u64,
    },
}

impl StatsDocument {
    /// One track's stats as the document has them.
    pub fn track_stats(&self, route: &str, track: &str) -> Result<&TrackStatsDoc, StatsError> {
        self.routes
            .get(route)
            .ok_or_else(|| StatsError::UnknownRoute(route.to_owned()))?
            .tracks
            .get(track)
            .ok_or_else(|| StatsError::UnknownTrack {
                route: route.to_owned(),
                track: track.to_owned(),
            })
    }

    /// One track's window from this document, its histogram checked to have the proxies'
    /// bounds.
    pub fn track(&self, route: &str, track: &str) -> Result<TrackWindow, StatsError> {
        self.window_of(self.track_stats(route, track)?)
    }

    /// One track's shadow series as the document has them.
    pub fn shadow_stats(&self, route: &str, track: &str) -> Result<&ShadowStatsDoc, StatsError> {
        self.routes
            .get(route)
            .ok_or_else(|| StatsError::UnknownRoute(route.to_owned()))?
            .shadow
            .get(track)
            .ok_or_else(|| StatsError::NoShadow {
                route: route.to_owned(),
                track: track.to_owned(),
            })
    }

    /// One track's shadow window from this document (the copies a route's mirror sent it),
    /// checked as [`Self::track`] checks a track's.
    pub fn shadow(&self, route: &str, track: &str) -> Result<TrackWindow, StatsError> {
        self.window_of(&self.shadow_stats(route, track)?.stats)
    }

    fn window_of(&self, stats: &TrackStatsDoc) -> Result<TrackWindow, StatsError> {
        if stats.errors > stats.requests {
            return Err(StatsError::Inconsistent {
                requests: stats.requests,
                errors: stats.errors,
            });
        }
        let histogram = decode_histogram(&stats.histogram)?;
        if (histogram.low(), histogram.high(), histogram.sigfig())
            != (LOWEST_LATENCY_US, HIGHEST_LATENCY_US, SIGNIFICANT_DIGITS)
        {
            return Err(StatsError::Bounds {
                low: histogram.low(),
                high: histogram.high(),
                digits: histogram.sigfig(),
            });
        }
        Ok(TrackWindow {
            requests: stats.requests,
            errors: stats.errors,
            histogram,
            window_seconds: self.window_seconds,
        })
    }
}

/// One track's requests, errors and latencies over a window, from one proxy or merged over
/// several.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackWindow {
    /// Finished requests.
    pub requests: u64,
    /// Of those, 5xx answers.
    pub errors: u64,
    /// Latencies, µs, with the proxies' bounds ([`new_histogram`]).
    pub histogram: Histogram<u64>,
    /// The window's length, seconds.
    pub window_seconds: u64,
}

impl TrackWindow {
    /// No requests, over `window_seconds`: the start of a merge.
    pub fn empty(window_seconds: u64) -> Self {
        Self {
            requests: 0,
            errors: 0,
            histogram: new_histogram(),
            window_seconds,
        }
    }

    /// Adds `other`, the same track over the same window seen by another proxy: counts add,
    /// histograms add exactly (bucket by bucket), and the window is the longer of the two.
    pub fn merge(&mut self, other: &TrackWindow) {
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        self.window_seconds = self.window_seconds.max(other.window_seconds);
        if self.histogram.add(&other.histogram).is_err() {
            // Only a histogram built with other bounds than the proxies' gets here: latencies
            // above this one's range count as its highest, as the proxies record them.
            for v in other.histogram.iter_recorded() {
                self.histogram
                    .saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
    }

    /// The 5xx share of the requests, 0.0 without requests: check [`Self::requests`] first (an
    /// analysis calls too few requests inconclusive).
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    /// The non-5xx share of the requests, `1 − error_rate()`; 1.0 without requests, so check
    /// [`Self::requests`] first.
    pub fn success_rate(&self) -> f64 {
        1.0 - self.error_rate()
    }

    /// The latency at quantile `q` (0 to 1, clamped), ms, as the highest value equivalent to it
    /// within the histogram's precision (as the proxies report it); `None` without requests.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.histogram.is_empty() || q.is_nan() {
            return None;
        }
        Some(self.histogram.value_at_quantile(q.clamp(0.0, 1.0)) as f64 / 1000.0)
    }

    /// Requests per second over the window; 0.0 for a window of 0 s.
    pub fn rate_per_second(&self) -> f64 {
        if self.window_seconds == 0 {
            0.0
        } else {
            self.requests as f64 / self.window_seconds as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use hdrhistogram::serialization::V2Serializer;

    use super::*;

    fn histogram(latencies_us: &[u64]) -> Histogram<u64> {
        let mut h = new_histogram();
        for us in latencies_us {
            h.saturating_record(*us);
        }
        h
    }

    fn window(latencies_us: &[u64], errors: u64) -> TrackWindow {
        TrackWindow {
            requests: latencies_us.len() as u64,
            errors,
            histogram: histogram(latencies_us),
            window_seconds: 10,
        }
    }

    fn document(requests: u64, errors: u64, histogram: String) -> StatsDocument {
        let body = serde_json::json!({
            "version": 7, "windowSeconds": 10, "routes": {"checkout": {"tracks": {"canary": {
                "requests": requests, "errors": errors, "errorRate": 0.0,
                "statusClasses": {"2xx": requests.saturating_sub(errors), "3xx": 0, "4xx": 0, "5xx": errors},
                "upstreamErrors": {"connect": 0, "timeout": 0, "reset": 0},
                "latencyMs": {"p50": 0.0, "p90": 0.0, "p99": 0.0, "p999": 0.0, "max": 0.0},
                "histogram": histogram,
                "totalRequests": requests, "totalErrors": errors,
                "addedLater": true,
            }}}}
        });
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn decodes_what_the_proxy_encodes() {
        let latencies: Vec<u64> = (1..=2000).map(|i| i * 37).chain([0, 59_999_999, 60_000_000]).collect();
        let h = histogram(&latencies);
        let decoded = decode_histogram(&encode_histogram(&h)).unwrap();
        assert_eq!(decoded, h);
        assert_eq!(decoded.len(), latencies.len() as u64);
        assert_eq!((decoded.low(), decoded.high(), decoded.sigfig()), (1, 60_000_000, 3));
        let empty = new_histogram();
        assert_eq!(decode_histogram(&encode_histogram(&empty)).unwrap(), empty);
        // Plain V2 is read too.
        let mut plain = Vec::new();
        V2Serializer::new().serialize(&h, &mut plain).unwrap();
        assert_eq!(decode_histogram(&STANDARD.encode(plain)).unwrap(), h);
    }

    #[test]
    fn a_document_gives_a_track_window() {
        let doc = document(3, 1, encode_histogram(&histogram(&[1000, 2000, 3000])));
        assert_eq!(doc.instance, None, "absent from older proxies");
        assert_eq!(doc.routes["checkout"].client_errors, ClientErrors::default());
        let stats = doc.track_stats("checkout", "canary").unwrap();
        assert_eq!((stats.total_requests, stats.total_errors), (3, 1));
        let w = doc.track("checkout", "canary").unwrap();
        assert_eq!(w, window(&[1000, 2000, 3000], 1));
        assert_eq!(doc.routes["checkout"].tracks["canary"].status_classes.server_error, 1);
        assert!(matches!(doc.track("cart", "canary"), Err(StatsError::UnknownRoute(r)) if r == "cart"));
        assert!(matches!(
            doc.track("checkout", "stable"),
            Err(StatsError::UnknownTrack { .. })
        ));
        assert!(
            doc.routes["checkout"].shadow.is_empty(),
            "absent when nothing is mirrored"
        );
        let e = doc.shadow("checkout", "canary").unwrap_err();
        assert_eq!(
            e.to_string(),
            "the stats of route \"checkout\" have no shadow series of track \"canary\": the route mirrors nothing to it"
        );
    }

    #[test]
    fn a_shadow_series_reads_like_a_track_beside_its_bound() {
        let mut body = serde_json::to_value(document(4, 4, encode_histogram(&histogram(&[500; 4])))).unwrap();
        let mut shadow = body["routes"]["checkout"]["tracks"]["canary"].clone();
        shadow["dropped"] = 3.into();
        shadow["inFlight"] = 1.into();
        body["routes"]["checkout"]["shadow"] = serde_json::json!({ "canary": shadow });
        let doc: StatsDocument = serde_json::from_value(body).unwrap();
        let stats = doc.shadow_stats("checkout", "canary").unwrap();
        assert_eq!((stats.dropped, stats.in_flight, stats.stats.total_requests), (3, 1, 4));
        assert_eq!(doc.shadow("checkout", "canary").unwrap(), window(&[500; 4], 4));
        let written = serde_json::to_value(&doc).unwrap();
        assert_eq!(written["routes"]["checkout"]["shadow"]["canary"]["inFlight"], 1);
        assert_eq!(serde_json::from_value::<StatsDocument>(written).unwrap(), doc);
    }

    #[test]
    fn lifetime_totals_are_required() {
        let mut body = serde_json::to_value(document(1, 0, encode_histogram(&histogram(&[1000])))).unwrap();
        let canary = body["routes"]["checkout"]["tracks"]["canary"].as_object_mut().unwrap();
        canary.remove("totalErrors");
        let e = serde_json::from_value::<StatsDocument>(body).unwrap_err();
        assert!(e.to_string().contains("totalErrors"), "{e}");
    }

    #[test]
    fn bad_histograms_and_counts_are_errors() {
        assert!(matches!(
            decode_histogram("not base64!"),
            Err(DecodeHistogramError::Base64(_))
        ));
        assert!(matches!(
            decode_histogram("aGVsbG8="),
            Err(DecodeHistogramError::Format(_))
        ));
        let doc = document(0, 0, "aGVsbG8=".to_owned());
        assert!(matches!(
            doc.track("checkout", "canary"),
            Err(StatsError::Histogram(DecodeHistogramError::Format(_)))
        ));
        let other = Histogram::<u64>::new_with_bounds(1, 1_000, 2).unwrap();
        let doc = document(0, 0, encode_histogram(&other));
        assert!(matches!(
            doc.track("checkout", "canary"),
            Err(StatsError::Bounds {
                high: 1_000,
                digits: 2,
                ..
            })
        ));
        let doc = document(1, 2, encode_histogram(&new_histogram()));
        assert!(matches!(
            doc.track("checkout", "canary"),
            Err(StatsError::Inconsistent { .. })
        ));
    }

    #[test]
    fn merging_two_windows_equals_one_window_recorded_with_both() {
        let a: Vec<u64> = (0..500).map(|i| 800 + i * 13).collect();
        let b: Vec<u64> = (0..300).map(|i| 50_000 + i * 977).chain([75_000_000]).collect();
        let mut merged = TrackWindow::empty(10);
        merged.merge(&window(&a, 3));
        merged.merge(&window(&b, 7));
        let both: Vec<u64> = a.iter().chain(&b).copied().collect();
        assert_eq!(merged, window(&both, 10));
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(merged.quantile_ms(q), window(&both, 10).quantile_ms(q), "q={q}");
        }
    }

    #[test]
    fn merging_a_histogram_of_other_bounds_saturates_like_the_proxy() {
        let mut other = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        other.record_n(120_000_000, 2).unwrap();
        let mut w = TrackWindow::empty(10);
        w.merge(&TrackWindow {
            requests: 2,
            errors: 0,
            histogram: other,
            window_seconds: 10,
        });
        assert_eq!(w.histogram.len(), 2);
        assert_eq!(w.histogram.max(), w.histogram.highest_equivalent(HIGHEST_LATENCY_US));
    }

    #[test]
    fn rates_and_quantiles() {
        let empty = TrackWindow::empty(10);
        assert_eq!(empty.quantile_ms(0.99), None);
        assert_eq!(
            (empty.error_rate(), empty.success_rate(), empty.rate_per_second()),
            (0.0, 1.0, 0.0)
        );
        assert_eq!(TrackWindow::empty(0).rate_per_second(), 0.0);

        let w = window(&[1000; 200], 5);
        assert_eq!(
            (w.error_rate(), w.success_rate(), w.rate_per_second()),
            (0.025, 0.975, 20.0)
        );
        assert_eq!(w.quantile_ms(0.99), Some(1.0));
        assert_eq!(w.quantile_ms(f64::NAN), None);
        let slow = window(&[250_000], 0);
        // The highest value equivalent to 250 ms within 3 significant digits.
        let p99 = slow.quantile_ms(0.99).unwrap();
        assert!((250.0..=250.25).contains(&p99), "{p99}");
    }
}
