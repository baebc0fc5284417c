//! Observing a rollout: every proxy's `/stats` for the route, merged exactly (counts add,
//! histograms merge), for the baseline and the candidate.

use std::time::Duration;

use switchyard_config::rollout::RolloutSpec;
use switchyard_config::stats::{StatsDocument, TrackWindow};
use tokio::task::JoinSet;

use crate::http::Http;

/// Both tracks over the window, merged across proxies, with lifetime totals.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The baseline track.
    pub baseline: TrackWindow,
    /// The candidate track.
    pub candidate: TrackWindow,
    /// Lifetime counts, summed over proxies.
    pub totals: Totals,
}

/// Requests and errors since each proxy started, summed over proxies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    /// Candidate requests.
    pub candidate_requests: u64,
    /// Candidate errors.
    pub candidate_errors: u64,
    /// Baseline requests.
    pub baseline_requests: u64,
    /// Baseline errors.
    pub baseline_errors: u64,
}

impl Totals {
    /// The counts since `earlier` (zero where a proxy restart made a total fall).
    pub fn since(&self, earlier: &Totals) -> Totals {
        Totals {
            candidate_requests: self.candidate_requests.saturating_sub(earlier.candidate_requests),
            candidate_errors: self.candidate_errors.saturating_sub(earlier.candidate_errors),
            baseline_requests: self.baseline_requests.saturating_sub(earlier.baseline_requests),
            baseline_errors: self.baseline_errors.saturating_sub(earlier.baseline_errors),
        }
    }
}

/// Reads every proxy's stats over `window` and merges them; with `since` (ms since the Unix
/// epoch, on the proxies' clocks: they and the controller are assumed to agree, through NTP),
/// each proxy's window starts no earlier than the first whole second from then on. Fails if
/// any proxy's stats cannot be had: a measurement over part of the fleet could hide a bad
/// proxy.
pub async fn observe(
    http: &Http,
    spec: &RolloutSpec,
    window: Duration,
    since: Option<u64>,
) -> Result<Observed, String> {
    let mut set = JoinSet::new();
    for url in &spec.proxies {
        let mut stats_url = format!(
            "{}/stats?window={}s",
            url.trim_end_matches('/'),
            window.as_secs().max(1)
        );
        if let Some(since) = since {
            stats_url.push_str(&format!("&since={since}"));
        }
        let http = http.clone();
        set.spawn(async move { (stats_url.clone(), http.get_json(&stats_url).await) });
    }
    let mut merged: Option<Observed> = None;
    for (url, answer) in set.join_all().await {
        let doc: StatsDocument =
            serde_json::from_value(answer.map_err(|e| e.to_string())?).map_err(|e| format!("{url}: {e}"))?;
        let track = |name: &str| doc.track(spec.route.as_str(), name).map_err(|e| format!("{url}: {e}"));
        let lifetime = |name: &str| {
            doc.track_stats(spec.route.as_str(), name)
                .map(|t| (t.total_requests, t.total_errors))
                .map_err(|e| format!("{url}: {e}"))
        };
        let (candidate_requests, candidate_errors) = lifetime(spec.candidate.as_str())?;
        let (baseline_requests, baseline_errors) = lifetime(spec.baseline.as_str())?;
        let one = Observed {
            baseline: track(spec.baseline.as_str())?,
            candidate: track(spec.candidate.as_str())?,
            totals: Totals {
                candidate_requests,
                candidate_errors,
                baseline_requests,
                baseline_errors,
            },
        };
        merged = Some(match merged {
            None => one,
            Some(mut m) => {
                m.baseline.merge(&one.baseline);
                m.candidate.merge(&one.candidate);
                m.totals.candidate_requests += one.totals.candidate_requests;
                m.totals.candidate_errors += one.totals.candidate_errors;
                m.totals.baseline_requests += one.totals.baseline_requests;
                m.totals.baseline_errors += one.totals.baseline_errors;
                m
            }
        });
    }
    merged.ok_or_else(|| "the rollout names no proxy".to_owned())
}
