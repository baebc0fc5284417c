//! Observing a rollout: every proxy's `/stats` for the route, at once, each proxy's answer kept
//! apart (so that one that does not answer is reported, and lifetime totals are compared proxy
//! by proxy), then merged exactly (counts add, histograms merge) for the baseline and the
//! candidate; and, beside them, the analysis's metric providers ([`providers`]).

use std::time::Duration;

use switchyard_config::InstanceId;
use switchyard_config::rollout::{RolloutSpec, StatsSeries};
use switchyard_config::stats::{StatsDocument, TrackWindow};
use tokio::task::JoinSet;

use crate::analyze::Counts;
use crate::http::{CallError, Http};

pub mod providers;

/// Both tracks over the window, from one proxy or merged across proxies, with lifetime totals.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The baseline track.
    pub baseline: TrackWindow,
    /// The candidate track.
    pub candidate: TrackWindow,
    /// Requests and errors of both tracks since the proxy started (summed, when merged).
    pub totals: Counts,
    /// The proxy process that answered (one proxy's observation only).
    pub instance: Option<InstanceId>,
}

impl Observed {
    /// Adds another proxy's observation of the same window.
    pub fn merge(&mut self, other: &Observed) {
        self.baseline.merge(&other.baseline);
        self.candidate.merge(&other.candidate);
        self.totals += other.totals;
    }
}

/// Why a proxy's stats could not be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ObserveError {
    /// The proxy did not answer, or not with 200 and JSON.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The answer is not a stats document with the rollout's route and tracks.
    #[error("{url}: {detail}")]
    Document {
        /// The stats URL.
        url: String,
        /// What is wrong with it.
        detail: String,
    },
}

/// One proxy's stats over `window`; with `since` (ms since the Unix epoch, on the proxies'
/// clocks: they and the controller are assumed to agree, through NTP), the window starts no
/// earlier than the first whole second from then on. The candidate is read from its `series`:
/// its own requests, or its shadow series (the copies the route's mirror sent it), which a
/// proxy that does not mirror to it lacks (an error naming it).
pub async fn observe_one(
    http: &Http,
    spec: &RolloutSpec,
    proxy: &str,
    window: Duration,
    since: Option<u64>,
    series: StatsSeries,
) -> Result<Observed, ObserveError> {
    let mut url = format!(
        "{}/stats?window={}s",
        proxy.trim_end_matches('/'),
        window.as_secs().max(1)
    );
    if let Some(since) = since {
        url.push_str(&format!("&since={since}"));
    }
    let raw = http.get_json(&url).await?;
    let bad = |detail: String| ObserveError::Document {
        url: url.clone(),
        detail,
    };
    let doc: StatsDocument = serde_json::from_value(raw).map_err(|e| bad(e.to_string()))?;
    let track = |name: &str| doc.track(spec.route.as_str(), name).map_err(|e| bad(e.to_string()));
    let lifetime = |name: &str| {
        doc.track_stats(spec.route.as_str(), name)
            .map(|t| (t.total_requests, t.total_errors))
            .map_err(|e| bad(e.to_string()))
    };
    let (route, name) = (spec.route.as_str(), spec.candidate.as_str());
    let ((candidate_requests, candidate_errors), candidate) = match series {
        StatsSeries::Primary => (lifetime(name)?, track(name)?),
        StatsSeries::Shadow => {
            let shadow = doc.shadow_stats(route, name).map_err(|e| bad(e.to_string()))?;
            let totals = (shadow.stats.total_requests, shadow.stats.total_errors);
            (totals, doc.shadow(route, name).map_err(|e| bad(e.to_string()))?)
        }
    };
    let (baseline_requests, baseline_errors) = lifetime(spec.baseline.as_str())?;
    Ok(Observed {
        baseline: track(spec.baseline.as_str())?,
        candidate,
        totals: Counts {
            candidate_requests,
            candidate_errors,
            baseline_requests,
            baseline_errors,
        },
        instance: doc.instance.clone(),
    })
}

/// Every proxy's stats at once (`urls`: their admin URLs), in that order, each with its own
/// result; the candidate read from its `series`, as [`observe_one`] does.
pub async fn observe_each(
    http: &Http,
    spec: &RolloutSpec,
    urls: &[String],
    window: Duration,
    since: Option<u64>,
    series: StatsSeries,
) -> Vec<(String, Result<Observed, ObserveError>)> {
    let mut set = JoinSet::new();
    for (i, url) in urls.iter().enumerate() {
        let (http, spec, url) = (http.clone(), spec.clone(), url.clone());
        set.spawn(async move {
            let answer = observe_one(&http, &spec, &url, window, since, series).await;
            (i, url, answer)
        });
    }
    let mut answers = set.join_all().await;
    answers.sort_by_key(|(i, _, _)| *i);
    answers.into_iter().map(|(_, url, answer)| (url, answer)).collect()
}
