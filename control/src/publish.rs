//! Publishing a rollout's traffic to every proxy of its route: read the proxy's table, plan the
//! change, `PUT /routes` with `If-Match`, and read the version back to confirm. A proxy that
//! does not confirm is retried with backoff and reported.

use std::time::Duration;

use http::Method;
use switchyard_config::rollout::RolloutSpec;
use switchyard_config::{Format, RouteSpec, RoutesDocument};
use tokio::task::JoinSet;

use crate::http::{CallError, Http};
use crate::plan::{self, Traffic};

/// What one proxy said about a publish.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyReport {
    /// The proxy's admin API URL.
    pub url: String,
    /// The table version it confirmed, if it did.
    pub version: Option<u64>,
    /// Why it did not confirm.
    pub error: Option<String>,
}

/// Attempts per proxy within one publish, with backoff between them.
const ATTEMPTS: u32 = 3;
/// The first backoff; doubled on each attempt.
const BACKOFF: Duration = Duration::from_millis(100);

/// Publishes `traffic` to every proxy at once; returns one report per proxy, in spec order.
pub async fn publish_all(http: &Http, spec: &RolloutSpec, traffic: &Traffic) -> Vec<ProxyReport> {
    let mut set = JoinSet::new();
    for (i, url) in spec.proxies.iter().enumerate() {
        let (http, spec, traffic, url) = (http.clone(), spec.clone(), traffic.clone(), url.clone());
        set.spawn(async move {
            let mut delay = BACKOFF;
            let mut result = publish_one(&http, &url, &spec, &traffic).await;
            for _ in 1..ATTEMPTS {
                if result.is_ok() {
                    break;
                }
                tokio::time::sleep(delay).await;
                delay *= 2;
                result = publish_one(&http, &url, &spec, &traffic).await;
            }
            let report = match result {
                Ok(version) => ProxyReport {
                    url,
                    version: Some(version),
                    error: None,
                },
                Err(e) => ProxyReport {
                    url,
                    version: None,
                    error: Some(e),
                },
            };
            (i, report)
        });
    }
    let mut reports: Vec<(usize, ProxyReport)> = set.join_all().await;
    reports.sort_by_key(|(i, _)| *i);
    reports.into_iter().map(|(_, r)| r).collect()
}

/// Makes one proxy serve `traffic` and confirms it; returns the confirmed table version.
pub async fn publish_one(http: &Http, url: &str, spec: &RolloutSpec, traffic: &Traffic) -> Result<u64, String> {
    let routes_url = format!("{}/routes", url.trim_end_matches('/'));
    // A concurrent writer can move the version between read and write: read again then.
    for _ in 0..5 {
        let RoutesDocument { version, routes, .. } = read(http, &routes_url).await?;
        let planned = plan::apply(&routes, spec, traffic).map_err(|e| e.to_string())?;
        if planned == routes {
            return Ok(version);
        }
        let body = serde_json::json!({ "routes": planned });
        match http
            .send_json(Method::PUT, &routes_url, &[("if-match", version.to_string())], &body)
            .await
        {
            Ok(answer) => {
                let published = answer["version"]
                    .as_u64()
                    .ok_or("PUT /routes answered without a version")?;
                // Confirm by reading back: the version in force and our route as planned.
                let RoutesDocument {
                    version: now, routes, ..
                } = read(http, &routes_url).await?;
                let ours = |rs: &[RouteSpec]| rs.iter().find(|r| r.name == spec.route).cloned();
                if now >= published && ours(&routes) == ours(&planned) {
                    return Ok(now);
                }
                if now < published {
                    return Err(format!("published version {published} but the proxy serves {now}"));
                }
            }
            Err(CallError::Status { status, .. }) if status == http::StatusCode::CONFLICT => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
    Err("the table kept changing under us (409 five times)".to_owned())
}

/// A proxy's table, its routes validated as the proxy validates them.
async fn read(http: &Http, routes_url: &str) -> Result<RoutesDocument, String> {
    let doc = http.get_json(routes_url).await.map_err(|e| e.to_string())?;
    RoutesDocument::read(&doc.to_string(), Format::Json)
        .map_err(|e| format!("{routes_url} answered a routes document with {e}"))
}
