//! Endpoint health per track, the runtime half of `outlierDetection` and `healthCheck`: the
//! stage between the table's pure decision and the upstream.
//!
//! - [`pick`] (hot, once per request of a track with either feature) keeps the endpoint the
//!   table decided unless it is out, and otherwise asks the track for another
//!   ([`switchyard_config::table::Track::fallback`]: a sticky user always lands on the same
//!   one); the request never leaves its track and counts against it. When every endpoint is out
//!   (panic mode, as Envoy calls it) the decided one serves anyway: failing every request would
//!   be worse.
//! - [`Passive::observe`] (hot, once per finished request of a track with `outlierDetection`)
//!   counts the endpoint's failures in a row and ejects it at a threshold.
//! - [`check`] runs one task per endpoint of a track with `healthCheck`.
//! - [`HealthRegistry::apply`] (cold, once per published table) keeps every endpoint's state
//!   across tables (the control loop publishes one per rollout step), and starts and stops the
//!   checks.
//!
//! Per request: relaxed atomic loads (and an atomic add when a request fails), no lock, no
//! hashing; a track with neither feature costs one `Option` test. The track's lock is taken only
//! to eject, at most once per threshold of failures.

pub(crate) mod check;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use http::uri::Authority;
use switchyard_config::health::OutlierDetectionSpec;
use switchyard_config::schema::{HealthCheckSpec, UpstreamProtocol};
use switchyard_config::stats::{EndpointState, EndpointStatsDoc, StatsDocument};
use switchyard_config::table::{EndpointDraw, Track};
use switchyard_config::{Decision, RouteName, RoutingTable, TrackName};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::publish::Snapshot;
use crate::record::{EndpointHealthRow, UpstreamError};

/// One endpoint's health, kept from table to table while the endpoint stays in its track.
#[derive(Debug, Default)]
pub struct EndpointHealth {
    /// Outcomes in a row that were 5xx (the proxy's own 502/504 and broken bodies included).
    consecutive_5xx: AtomicU32,
    /// Outcomes in a row that were 502, 503 or 504 (or a broken body).
    consecutive_gateway: AtomicU32,
    /// Attempts in a row that could not connect.
    consecutive_connect: AtomicU32,
    /// Until when it is ejected, ms from the registry's epoch; in the past (or 0) when it is
    /// not. Written under the track's ejection lock.
    ejected_until: AtomicU64,
    /// How many times its last ejection's length was `baseEjectionTime` (written under the lock).
    multiplier: AtomicU32,
    /// Ejections since start.
    ejections: AtomicU64,
    /// Set by its health check after `unhealthyThreshold` failures in a row.
    unhealthy: AtomicBool,
    /// Health checks failed since start.
    check_failures: AtomicU64,
}

impl EndpointHealth {
    fn reset_counters(&self) {
        for counter in [
            &self.consecutive_5xx,
            &self.consecutive_gateway,
            &self.consecutive_connect,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }

    /// Ejections since start.
    pub fn ejections(&self) -> u64 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Health checks failed since start.
    pub fn check_failures(&self) -> u64 {
        self.check_failures.load(Ordering::Relaxed)
    }
}

/// The health of one track's endpoints, as one table snapshot sees them: the track's settings
/// of that table, over endpoint states shared with every other table that has the endpoint.
#[derive(Debug)]
pub struct TrackHealth {
    route: RouteName,
    track: TrackName,
    /// Ms are counted from here.
    epoch: Instant,
    outlier: Option<OutlierDetectionSpec>,
    /// Whether the track has `healthCheck` (an endpoint's `unhealthy` counts only then).
    checked: bool,
    /// By endpoint index in the track; with their addresses.
    endpoints: Box<[(Box<str>, Arc<EndpointHealth>)]>,
    /// Serialises the track's ejections (shared with the track's other tables), so that two at
    /// once cannot both pass the share and never-last checks.
    ejecting: Arc<Mutex<()>>,
}

/// The endpoint a decided request goes to, and what its outcome is reported to.
///
/// `health` is the plan's, `None` for a track with neither feature; `now` is when the request
/// arrived.
#[inline]
pub fn pick(health: Option<&Arc<TrackHealth>>, d: &Decision<'_>, now: Instant) -> (usize, Option<Passive>) {
    let Some(h) = health else {
        return (d.endpoint.index(), None);
    };
    let endpoint = serving(health, d.track, d.endpoint.index(), d.draw, now);
    let passive = h.outlier.is_some().then(|| Passive {
        track: Arc::clone(h),
        endpoint,
    });
    (endpoint, passive)
}

/// The endpoint of `track` that takes a request at `now`: `decided` (by `draw`) unless it is
/// out, else another by the same draw. With every endpoint out (panic mode) the decided one
/// serves: failing every request would be worse. `health` is the track's plan's.
#[inline]
pub fn serving(
    health: Option<&Arc<TrackHealth>>,
    track: &Track,
    decided: usize,
    draw: EndpointDraw,
    now: Instant,
) -> usize {
    let Some(h) = health else {
        return decided;
    };
    let at = h.ms(now);
    if h.usable(decided, at) {
        return decided;
    }
    track.fallback(draw, |i| h.usable(i, at)).map_or(decided, |e| e.index())
}

/// The endpoint of `track` a retry goes to at `now`, after its attempt to `failed` failed: see
/// [`Track::retry_endpoint`], with `random` and the endpoints `health` has serving (all, for a
/// track with neither feature).
pub fn retry_to(health: Option<&Arc<TrackHealth>>, track: &Track, failed: usize, random: u64, now: Instant) -> usize {
    match health {
        None => track.retry_endpoint(failed, random, |_| true).index(),
        Some(h) => {
            let at = h.ms(now);
            track.retry_endpoint(failed, random, |i| h.usable(i, at)).index()
        }
    }
}

/// Where a request's outcome goes, for a track with `outlierDetection`: consumed by the one
/// report of the request's end.
#[derive(Debug)]
pub struct Passive {
    track: Arc<TrackHealth>,
    endpoint: usize,
}

impl Passive {
    /// Reports how the request to the endpoint ended at `now`: the status sent downstream (the
    /// proxy's own for a failed exchange) and the upstream's error, if any.
    pub fn observe(self, status: u16, error: Option<UpstreamError>, now: Instant) {
        self.track.observe(self.endpoint, status, error, now);
    }

    /// Where the outcome of the same request's next attempt goes, sent to endpoint `endpoint`
    /// of the same track (a retry).
    pub fn moved_to(&self, endpoint: usize) -> Self {
        Self {
            track: Arc::clone(&self.track),
            endpoint,
        }
    }
}

/// Counts one outcome on `counter`; whether it reached `threshold` (0: the counter is off).
#[inline]
fn count(counter: &AtomicU32, failed: bool, threshold: u32) -> bool {
    if threshold == 0 {
        return false;
    }
    if failed {
        counter.fetch_add(1, Ordering::Relaxed).saturating_add(1) >= threshold
    } else {
        // Most outcomes succeed: read first, so that they do not write the shared line.
        if counter.load(Ordering::Relaxed) != 0 {
            counter.store(0, Ordering::Relaxed);
        }
        false
    }
}

impl TrackHealth {
    /// `now` in ms from the epoch.
    #[inline]
    fn ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether endpoint `i` takes requests at `at` (ms from the epoch).
    #[inline]
    fn usable(&self, i: usize, at: u64) -> bool {
        let e = &self.endpoints[i].1;
        let unhealthy = self.checked && e.unhealthy.load(Ordering::Relaxed);
        let ejected = self.outlier.is_some() && e.ejected_until.load(Ordering::Relaxed) > at;
        !(unhealthy || ejected)
    }

    /// Counts an outcome of endpoint `i` (see [`Passive::observe`]), ejecting it when a counter
    /// reaches its threshold.
    pub fn observe(&self, i: usize, status: u16, error: Option<UpstreamError>, now: Instant) {
        let Some(policy) = &self.outlier else {
            return;
        };
        let e = &self.endpoints[i].1;
        // A body that broke off is the upstream's failure whatever the status it began with.
        let broken = error.is_some();
        let server_error = broken || status >= 500;
        let gateway = broken || matches!(status, 502..=504);
        let connect = error == Some(UpstreamError::Connect);
        let tripped = count(&e.consecutive_5xx, server_error, policy.consecutive_5xx)
            | count(&e.consecutive_gateway, gateway, policy.consecutive_gateway_failure)
            | count(&e.consecutive_connect, connect, policy.consecutive_connect_errors);
        if tripped {
            self.eject(i, now);
        }
    }

    /// Ejects endpoint `i` at `now`, unless it is out already, the track's share of ejected
    /// endpoints is reached, or no other endpoint would be left serving. Its counters start
    /// again either way, so a failing endpoint that may not be ejected tries once per threshold.
    /// Whether it was ejected.
    pub fn eject(&self, i: usize, now: Instant) -> bool {
        let Some(policy) = &self.outlier else {
            return false;
        };
        let at = self.ms(now);
        let _one_at_a_time = lock(&self.ejecting);
        let e = &self.endpoints[i].1;
        e.reset_counters();
        let until = e.ejected_until.load(Ordering::Relaxed);
        if until > at {
            return false;
        }
        let ejected = self
            .endpoints
            .iter()
            .filter(|(_, e)| e.ejected_until.load(Ordering::Relaxed) > at)
            .count();
        let others_serving = (0..self.endpoints.len()).any(|j| j != i && self.usable(j, at));
        if ejected >= policy.max_ejected(self.endpoints.len()) || !others_serving {
            tracing::debug!(
                route = %self.route, track = %self.track, endpoint = %self.endpoints[i].0,
                "endpoint not ejected: the track's share of ejected endpoints is reached, or it is the last serving"
            );
            return false;
        }
        // The multiplier falls by one for every base ejection time served since the last one.
        let base = u64::try_from(policy.base_ejection_time.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut times = e.multiplier.load(Ordering::Relaxed);
        if until > 0 {
            let served = u32::try_from((at - until) / base).unwrap_or(u32::MAX);
            times = times.saturating_sub(served);
        }
        times = times.saturating_add(1);
        let length = policy.ejection_time(times);
        e.multiplier.store(times, Ordering::Relaxed);
        let length_ms = u64::try_from(length.as_millis()).unwrap_or(u64::MAX);
        e.ejected_until.store(at.saturating_add(length_ms), Ordering::Relaxed);
        e.ejections.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            route = %self.route, track = %self.track, endpoint = %self.endpoints[i].0,
            "endpoint ejected for {} (ejection {}); its track's requests go to its other endpoints",
            humantime::format_duration(length), e.ejections()
        );
        true
    }

    /// Endpoint `i`'s state at `now`: unhealthy (by its checks) before ejected.
    pub fn state(&self, i: usize, now: Instant) -> EndpointState {
        let e = &self.endpoints[i].1;
        if self.checked && e.unhealthy.load(Ordering::Relaxed) {
            EndpointState::Unhealthy
        } else if self.outlier.is_some() && e.ejected_until.load(Ordering::Relaxed) > self.ms(now) {
            EndpointState::Ejected
        } else {
            EndpointState::Serving
        }
    }

    /// Every endpoint's address and health, in the track's order.
    pub fn endpoints(&self) -> impl Iterator<Item = (&str, &EndpointHealth)> {
        self.endpoints.iter().map(|(a, e)| (&**a, &**e))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // What the lock guards stays consistent whatever panicked while it was held.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An endpoint of a track, across tables.
type EndpointId = (RouteName, TrackName, Box<str>);

/// The endpoints' health across published tables, and their running checks.
#[derive(Debug)]
pub struct HealthRegistry {
    epoch: Instant,
    kept: Mutex<Kept>,
}

#[derive(Debug, Default)]
struct Kept {
    endpoints: HashMap<EndpointId, Arc<EndpointHealth>>,
    locks: HashMap<(RouteName, TrackName), Arc<Mutex<()>>>,
    checks: HashMap<EndpointId, Check>,
    /// Set at shutdown: no check starts again.
    stopped: bool,
}

/// A running health check, stopped when dropped.
#[derive(Debug)]
struct Check {
    spec: HealthCheckSpec,
    protocol: UpstreamProtocol,
    task: JoinHandle<()>,
}

impl Drop for Check {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HealthRegistry {
    /// An empty registry counting time from `epoch`.
    pub fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            kept: Mutex::new(Kept::default()),
        }
    }

    /// The health of every track of `table` (`[route][track]`, `None` for a track with neither
    /// feature), for the table about to be published. Endpoints the table keeps keep their
    /// state; the others are forgotten. Checks start for the endpoints of tracks with
    /// `healthCheck`, restart where it changed, and stop where the table no longer asks for
    /// them (their endpoints count as healthy again). Must run within a Tokio runtime when the
    /// table has health checks.
    pub fn apply(&self, table: &RoutingTable) -> Vec<Vec<Option<Arc<TrackHealth>>>> {
        let mut kept = lock(&self.kept);
        let kept = &mut *kept;
        let mut endpoints = HashMap::new();
        let mut locks = HashMap::new();
        let mut checks = HashMap::new();
        let plans = table
            .routes()
            .iter()
            .map(|route| {
                route
                    .tracks()
                    .iter()
                    .map(|track| {
                        let outlier = track.outlier_detection().copied();
                        let check = track.health_check();
                        if outlier.is_none() && check.is_none() {
                            return None;
                        }
                        let names = (route.name().clone(), track.name().clone());
                        let ejecting = kept.locks.remove(&names).unwrap_or_default();
                        locks.insert(names, Arc::clone(&ejecting));
                        let states = track
                            .endpoints()
                            .iter()
                            .map(|e| {
                                let id: EndpointId = (route.name().clone(), track.name().clone(), e.address().into());
                                let state = kept.endpoints.remove(&id).unwrap_or_default();
                                if let Some(spec) = check {
                                    let running = kept
                                        .checks
                                        .remove(&id)
                                        .filter(|c| c.spec == *spec && c.protocol == track.protocol());
                                    let running = running.or_else(|| {
                                        (!kept.stopped).then(|| Check {
                                            spec: spec.clone(),
                                            protocol: track.protocol(),
                                            task: tokio::spawn(check::run(
                                                Arc::clone(&state),
                                                check::Target::new(&id, spec.clone(), track.protocol()),
                                            )),
                                        })
                                    });
                                    if let Some(running) = running {
                                        checks.insert(id.clone(), running);
                                    }
                                } else {
                                    drop(kept.checks.remove(&id));
                                    state.unhealthy.store(false, Ordering::Relaxed);
                                }
                                endpoints.insert(id, Arc::clone(&state));
                                (e.address().into(), state)
                            })
                            .collect();
                        Some(Arc::new(TrackHealth {
                            route: route.name().clone(),
                            track: track.name().clone(),
                            epoch: self.epoch,
                            outlier,
                            checked: check.is_some(),
                            endpoints: states,
                            ejecting,
                        }))
                    })
                    .collect()
            })
            .collect();
        // The checks of endpoints the table no longer has stop here (dropped); their endpoints
        // count as healthy for the tables still in use that hold them.
        for (id, check) in kept.checks.drain() {
            drop(check);
            if let Some(state) = kept.endpoints.get(&id) {
                state.unhealthy.store(false, Ordering::Relaxed);
            }
        }
        kept.endpoints = endpoints;
        kept.locks = locks;
        kept.checks = checks;
        plans
    }

    /// Stops every health check, for good (the proxy is shutting down).
    pub fn stop(&self) {
        let mut kept = lock(&self.kept);
        kept.stopped = true;
        kept.checks.clear();
    }
}

/// Adds each endpoint's health to the `/stats` document of `snapshot`'s table, at `now`.
pub fn fill_stats(document: &mut StatsDocument, snapshot: &Snapshot, now: Instant) {
    for (route, track, health) in snapshot.track_health() {
        let Some(stats) = document.routes.get_mut(route).and_then(|r| r.tracks.get_mut(track)) else {
            continue;
        };
        stats.endpoints = health
            .endpoints()
            .enumerate()
            .map(|(i, (address, e))| EndpointStatsDoc {
                address: address.to_owned(),
                state: health.state(i, now),
                ejections: e.ejections(),
                health_check_failures: e.check_failures(),
            })
            .collect();
    }
}

/// Each endpoint's health in `snapshot`'s table at `now`, as `/metrics` rows, and hands them to
/// `f` (they borrow from the snapshot).
pub fn with_metric_rows<T>(snapshot: &Snapshot, now: Instant, f: impl FnOnce(&[EndpointHealthRow<'_>]) -> T) -> T {
    let rows: Vec<EndpointHealthRow<'_>> = snapshot
        .track_health()
        .flat_map(|(route, track, health)| {
            health
                .endpoints()
                .enumerate()
                .map(move |(i, (endpoint, e))| EndpointHealthRow {
                    route: route.as_str(),
                    track: track.as_str(),
                    endpoint,
                    serving: health.state(i, now) == EndpointState::Serving,
                    ejections: e.ejections(),
                    check_failures: e.check_failures(),
                })
        })
        .collect();
    f(&rows)
}

impl Snapshot {
    /// Every track of the table whose endpoints' health is kept, with its route's and its name.
    pub fn track_health(&self) -> impl Iterator<Item = (&RouteName, &TrackName, &Arc<TrackHealth>)> {
        self.table.routes().iter().flat_map(move |route| {
            route.tracks().iter().filter_map(move |track| {
                let plan = self.plan(route.index(), track.index());
                plan.health.as_ref().map(|h| (route.name(), track.name(), h))
            })
        })
    }
}

/// An endpoint's address as an authority (validated as `HOST:PORT` with the table).
fn authority(address: &str) -> Authority {
    Authority::try_from(address).expect("endpoints are validated as HOST:PORT")
}
