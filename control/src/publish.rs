//! Publishing a rollout's traffic to one proxy: read the proxy's table, plan the change,
//! `PUT /routes` with `If-Match`, and read the version back to confirm. The controller calls it
//! for every proxy at once and retries each one that does not confirm on its own backoff.

use http::Method;
use switchyard_config::rollout::RolloutSpec;
use switchyard_config::{Format, RouteSpec, RoutesDocument, RoutesPublished};

use crate::http::{CallError, Http};
use crate::plan::{self, Traffic};

/// Why a proxy did not confirm a publish.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    /// The proxy did not answer as its admin API does.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The proxy's table cannot carry the rollout (no such route or track).
    #[error("{url}: {source}")]
    Plan {
        /// The proxy's `/routes` URL.
        url: String,
        /// What is missing.
        source: plan::PlanError,
    },
    /// The proxy answered, but not with what it was asked to serve.
    #[error("{url}: {detail}")]
    Unconfirmed {
        /// The proxy's `/routes` URL.
        url: String,
        /// What it said instead.
        detail: String,
    },
}

/// Makes one proxy serve `traffic` and confirms it; returns the confirmed table version.
pub async fn publish_one(http: &Http, url: &str, spec: &RolloutSpec, traffic: &Traffic) -> Result<u64, PublishError> {
    let routes_url = format!("{}/routes", url.trim_end_matches('/'));
    let unconfirmed = |detail: String| PublishError::Unconfirmed {
        url: routes_url.clone(),
        detail,
    };
    // A concurrent writer can move the version between read and write: read again then.
    for _ in 0..5 {
        let RoutesDocument { version, routes, .. } = read(http, &routes_url).await?;
        let planned = plan::apply(&routes, spec, traffic).map_err(|source| PublishError::Plan {
            url: routes_url.clone(),
            source,
        })?;
        if planned == routes {
            return Ok(version);
        }
        let body = serde_json::json!({ "routes": planned });
        match http
            .send_json(Method::PUT, &routes_url, &[("if-match", version.to_string())], &body)
            .await
        {
            Ok(answer) => {
                let RoutesPublished { version: published } = serde_json::from_value(answer)
                    .map_err(|e| unconfirmed(format!("PUT /routes answered without its version: {e}")))?;
                // Confirm by reading back: the version in force and our route as planned.
                let RoutesDocument {
                    version: now, routes, ..
                } = read(http, &routes_url).await?;
                let ours = |rs: &[RouteSpec]| rs.iter().find(|r| r.name == spec.route).cloned();
                if now >= published && ours(&routes) == ours(&planned) {
                    return Ok(now);
                }
                if now < published {
                    return Err(unconfirmed(format!(
                        "published version {published} but the proxy serves version {now}"
                    )));
                }
            }
            Err(CallError::Status { status, .. }) if status == http::StatusCode::CONFLICT => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(unconfirmed(
        "the table kept changing while it was published (409 Conflict five times)".to_owned(),
    ))
}

/// A proxy's table, from its `/routes` URL, its routes validated as the proxy validates them.
pub async fn read(http: &Http, routes_url: &str) -> Result<RoutesDocument, PublishError> {
    let doc = http.get_json(routes_url).await?;
    RoutesDocument::read(&doc.to_string(), Format::Json).map_err(|e| PublishError::Unconfirmed {
        url: routes_url.to_owned(),
        detail: format!("the routes document is not valid: {e}"),
    })
}
