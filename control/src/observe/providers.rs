//! Asking an analysis's metric providers for their values, all at once and beside the proxies'
//! stats, each within its time limit (never longer than the analysis's interval, so one slow
//! provider cannot hold a measurement up past the next). What each answered becomes a
//! [`Reading`] for [`crate::analyze::measure`] to judge; a provider that gave no usable answer
//! is a [`Reading::Failed`] with the reason in words.
//!
//! - `prometheus`: `GET ADDRESS/api/v1/query?query=…` (the query's placeholders filled in), read
//!   as Prometheus' HTTP API answers it: an instant vector or a scalar. A range vector, a string,
//!   `"status": "error"` or a non-success status (its `errorType` and `error` quoted) are
//!   failures.
//! - `web`: `GET URL` with the spec's headers, a 2xx JSON answer, and the nodes its `jsonPath`
//!   picks.

use std::collections::BTreeMap;

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde::de::IgnoredAny;
use switchyard_config::rollout::{AnalysisSpec, MetricCheck, PrometheusQuery, RolloutSpec, WebQuery, fill};
use tokio::task::JoinSet;

use crate::analyze::{Reading, Readings};
use crate::http::{CallError, Http, summary};

/// Asks every provider of `analysis` (a metric of `spec`) at once; each reading under its
/// metric's name. `http`'s calls are bounded by each provider's own time limit.
pub async fn query_all(http: &Http, spec: &RolloutSpec, analysis: &AnalysisSpec) -> Readings {
    let mut set = JoinSet::new();
    for metric in &analysis.metrics {
        let Some(provider) = metric.check.provider() else {
            continue;
        };
        let http = http.with_timeout(provider.timeout(analysis.interval));
        let names = [spec.route.as_str(), spec.baseline.as_str(), spec.candidate.as_str()].map(str::to_owned);
        let (name, check) = (metric.name.clone(), metric.check.clone());
        set.spawn(async move {
            let [route, baseline, candidate] = &names;
            let fill = |text: &str| fill(text, route, baseline, candidate);
            let reading = match &check {
                MetricCheck::Prometheus(q) => prometheus(&http, q, &fill(&q.query)).await,
                MetricCheck::Web(w) => web(&http, w, &fill(&w.url)).await,
                _ => Reading::Failed("the metric asks no provider".to_owned()),
            };
            (name, reading)
        });
    }
    Readings(set.join_all().await.into_iter().collect::<BTreeMap<_, _>>())
}

/// Prometheus' answer to an instant query (its HTTP API's envelope).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    status: String,
    data: Option<Data>,
    error_type: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Vector(Vec<Series>),
    /// `[time, "value"]`.
    Scalar((f64, String)),
    Matrix(IgnoredAny),
    String(IgnoredAny),
}

#[derive(Debug, Deserialize)]
struct Series {
    metric: BTreeMap<String, String>,
    /// `[time, "value"]`.
    value: (f64, String),
}

/// A sample's value as Prometheus writes it: a decimal, `NaN`, `+Inf` or `-Inf`.
fn sample_value(text: &str) -> Option<f64> {
    text.parse::<f64>().ok()
}

/// A series' labels as PromQL writes them: `{route="checkout", track="canary"}`.
fn labels(metric: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = metric.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", pairs.join(", "))
}

async fn prometheus(http: &Http, q: &PrometheusQuery, query: &str) -> Reading {
    let url = format!(
        "{}/api/v1/query?query={}",
        q.address.trim_end_matches('/'),
        utf8_percent_encode(query, NON_ALPHANUMERIC)
    );
    // What a person reads: the address and the endpoint, not the query encoded in the URL.
    let at = format!("Prometheus at {}", q.address);
    let raw = match http.get_json(&url).await {
        Ok(raw) => raw,
        Err(CallError::Status { status, body, .. }) => {
            let detail = match serde_json::from_str::<Answer>(&body) {
                Ok(Answer {
                    error_type,
                    error: Some(error),
                    ..
                }) => format!(": {}: {error}", error_type.unwrap_or_else(|| "error".to_owned())),
                _ => summary(&body),
            };
            return Reading::Failed(format!("{at} answered {status} to the query{detail}"));
        }
        Err(CallError::Unreachable { cause, .. }) => return Reading::Failed(format!("cannot reach {at}: {cause}")),
        Err(e) => return Reading::Failed(format!("{at}: {e}")),
    };
    let Ok(answer) = serde_json::from_value::<Answer>(raw) else {
        return Reading::Failed(format!(
            "{at} answered with JSON that is not an answer of its query API (status, and data with resultType and result): is the address Prometheus'?"
        ));
    };
    if answer.status != "success" {
        return Reading::Failed(format!(
            "{at} answered status {:?} to the query: {}",
            answer.status,
            answer.error.unwrap_or_default()
        ));
    }
    match answer.data {
        Some(Data::Vector(series)) => {
            let mut read = Vec::with_capacity(series.len());
            for s in series {
                let Some(v) = sample_value(&s.value.1) else {
                    return Reading::Failed(format!("{at} answered the sample value {:?}, not a number", s.value.1));
                };
                read.push((labels(&s.metric), v));
            }
            Reading::Vector(read)
        }
        Some(Data::Scalar((_, text))) => match sample_value(&text) {
            Some(v) => Reading::Scalar(v),
            None => Reading::Failed(format!("{at} answered the scalar {text:?}, not a number")),
        },
        Some(Data::Matrix(_)) => Reading::Failed(format!(
            "{at} answered a range vector: give an instant query (a range such as [5m] belongs inside rate() or another function)"
        )),
        Some(Data::String(_)) => Reading::Failed(format!("{at} answered a string, not a number")),
        None => Reading::Failed(format!("{at} answered success without data")),
    }
}

async fn web(http: &Http, w: &WebQuery, url: &str) -> Reading {
    let headers: Vec<(&str, String)> = w.headers.iter().map(|h| (h.name.as_str(), h.value.clone())).collect();
    match http.get_json_with(url, &headers).await {
        Ok(doc) => Reading::Nodes(w.json_path.select(&doc).into_iter().cloned().collect()),
        Err(e) => Reading::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests;
