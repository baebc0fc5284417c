//! The admin API's `GET /stats` body, written with the one type the controller reads it with,
//! [`StatsDocument`] (`switchyard_config::stats`).

use std::collections::BTreeMap;
use std::sync::Arc;

use switchyard_config::stats::{
    ClientErrors, LatencyMs, RouteStats, ShadowStatsDoc, StatsDocument, StatusClasses, TrackStatsDoc, UpstreamErrors,
    encode_histogram,
};
use switchyard_config::{InstanceId, RouteName, TrackName};

use super::{Gauge, TrackStats, WindowStats, route_client_errors};

impl WindowStats {
    /// The `GET /stats` document of this window, `version` being the routing table's version
    /// and `instance` this proxy process's; beside each track, its lifetime `totals` (a track
    /// missing from them has none yet).
    ///
    /// `clientErrors` counts, per route, what clients did wrong (see [`super::ClientError`]) in
    /// the window; none of it is in any track's numbers. `dns` is left empty for the caller,
    /// who knows the names (see `crate::dns`).
    pub fn to_document(&self, totals: &WindowStats, version: u64, instance: &InstanceId) -> StatsDocument {
        let routes = self
            .routes
            .iter()
            .map(|(route, tracks)| {
                let [malformed, timeout, aborted] = route_client_errors(tracks);
                let lifetime = totals.routes.get(route);
                let tracks = tracks
                    .iter()
                    .map(|(track, stats)| {
                        let total = lifetime.and_then(|l| l.get(track));
                        (track.clone(), stats.to_document(total))
                    })
                    .collect();
                let client_errors = ClientErrors {
                    malformed,
                    timeout,
                    aborted,
                };
                let shadow = BTreeMap::new();
                (
                    route.clone(),
                    RouteStats {
                        tracks,
                        client_errors,
                        retries: None,
                        shadow,
                    },
                )
            })
            .collect();
        StatsDocument {
            version,
            instance: Some(instance.clone()),
            window_seconds: self.window_seconds,
            routes,
            dns: BTreeMap::new(),
        }
    }
}

impl TrackStats {
    /// One track's part of the document; `total` is its lifetime.
    fn to_document(&self, total: Option<&TrackStats>) -> TrackStatsDoc {
        let error_rate = if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        };
        let [success, redirection, client_error, server_error] = self.status_classes;
        let [connect, timeout, reset, protocol] = self.upstream_errors;
        TrackStatsDoc {
            requests: self.requests,
            errors: self.errors,
            error_rate,
            status_classes: StatusClasses {
                success,
                redirection,
                client_error,
                server_error,
            },
            upstream_errors: UpstreamErrors {
                connect,
                timeout,
                reset,
                protocol,
            },
            latency_ms: LatencyMs::of(&self.histogram),
            histogram: encode_histogram(&self.histogram),
            total_requests: total.map_or(0, |t| t.requests),
            total_errors: total.map_or(0, |t| t.errors),
            // Filled in by the admin API from the endpoints' health, which is not measured here.
            endpoints: Vec::new(),
        }
    }
}

impl WindowStats {
    /// Adds this window of shadow series to `doc` (written by [`Self::to_document`] from the
    /// same window's primary series): each route's `shadow`, per mirror track, with its
    /// lifetime `totals` and its `gauge` (copies dropped, not made and in flight). A route not in `doc`
    /// is left out.
    pub fn add_shadow_to(
        &self,
        doc: &mut StatsDocument,
        totals: &WindowStats,
        gauge: impl Fn(&RouteName, &TrackName) -> Option<Arc<Gauge>>,
    ) {
        for (route, tracks) in &self.routes {
            let Some(stats) = doc.routes.get_mut(route) else {
                continue;
            };
            let lifetime = totals.routes.get(route);
            for (track, window) in tracks {
                let gauge = gauge(route, track);
                let shadow = ShadowStatsDoc {
                    stats: window.to_document(lifetime.and_then(|l| l.get(track))),
                    dropped: gauge.as_ref().map_or(0, |g| g.dropped()),
                    body_too_large: gauge.as_ref().map_or(0, |g| g.body_too_large()),
                    in_flight: gauge.as_ref().map_or(0, |g| u64::from(g.in_flight())),
                };
                stats.shadow.insert(track.clone(), shadow);
            }
        }
    }
}
