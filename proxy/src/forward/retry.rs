//! Retries: a request of a route with `retry:` whose attempt failed is sent again, to another
//! endpoint of the same track, after a backoff, while the route's budget allows. The endpoint is
//! drawn by weight among the track's serving ones (not ejected, not failing its health checks)
//! other than the one that just failed ([`switchyard_config::table::Track::retry_endpoint`]),
//! on the snapshot the request was decided on.
//!
//! What is retried: a request without a body (one with a body has sent it upstream already
//! and cannot be replayed); not an upgrade. A connection that could not be made is retried
//! whatever the method (nothing reached the upstream). A connection that broke before the
//! answer, an attempt past `perTryTimeout`, and an answer whose status is in `codes` are
//! retried only for the idempotent methods of RFC 9110 §9.2.2 (`GET`, `HEAD`, `OPTIONS`,
//! `TRACE`, `PUT`, `DELETE`): the upstream may have acted on the request, and doing a `POST`
//! twice is not the proxy's call.
//!
//! Every attempt is measured against the track that served it: a candidate that answers `503`
//! and then `200` on the retry counts one error and one success, so its analysis sees what it
//! did even when its client got a success.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http::uri::Authority;
use http::{HeaderMap, Method, Request, Uri, Version};
use switchyard_config::RouteName;
use switchyard_config::retry::{BudgetSpec, RetryPolicy};
use switchyard_config::schema::UpstreamProtocol;
use switchyard_config::table::Track;
use tokio::time::Instant;

use crate::health;
use crate::publish::Snapshot;
use crate::request_body::{BodyLimits, RequestBody};
use crate::upstream::{EndpointKey, Failure};

/// One request's retry state, made only for a request that can be retried.
#[derive(Debug)]
pub(super) struct Retry {
    policy: Arc<RetryPolicy>,
    budget: Arc<Budget>,
    /// The upstream request's head as first sent, to send again.
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    /// The snapshot the request was decided on, and its route's and track's positions in it:
    /// every attempt goes to an endpoint of that table's track.
    snapshot: Arc<Snapshot>,
    route: usize,
    track: usize,
    /// The endpoint the current attempt went to.
    endpoint: usize,
    pub(super) protocol: UpstreamProtocol,
    body_limits: BodyLimits,
    /// Retries sent so far.
    retries: u32,
    /// When the current attempt started (for its latency and its `perTryTimeout`).
    pub(super) attempt_start: Instant,
}

impl Retry {
    /// The retry state of `req`, a request without a body whose head is rewritten for the
    /// upstream, decided on `snapshot` to track `track` of route `route` (positions) and sent
    /// first to its endpoint `endpoint` at `start`.
    #[allow(clippy::too_many_arguments)] // one per part of the request's first attempt
    pub(super) fn new(
        policy: Arc<RetryPolicy>,
        budget: Arc<Budget>,
        req: &Request<RequestBody>,
        (snapshot, route, track): (Arc<Snapshot>, usize, usize),
        endpoint: usize,
        protocol: UpstreamProtocol,
        body_limits: BodyLimits,
        start: Instant,
    ) -> Self {
        Self {
            policy,
            budget,
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
            snapshot,
            route,
            track,
            endpoint,
            protocol,
            body_limits,
            retries: 0,
            attempt_start: start,
        }
    }

    /// When the current attempt is overdue: its `perTryTimeout`, within the request's
    /// `deadline`.
    pub(super) fn attempt_deadline(&self, deadline: Instant) -> Instant {
        match self.policy.per_try_timeout() {
            Some(limit) => deadline.min(self.attempt_start + limit),
            None => deadline,
        }
    }

    /// Whether the attempt that ended in `status` (with `failure` when the upstream gave no
    /// answer) at `now` is sent again, before the request's `deadline`: if it is, how long to
    /// wait and the request to send then to [`Retry::endpoint`]; if not (`None`), the client
    /// gets this attempt's answer.
    pub(super) fn next(
        &mut self,
        status: u16,
        failure: Option<Failure>,
        now: Instant,
        deadline: Instant,
    ) -> Option<(Duration, Request<RequestBody>)> {
        let retryable = match failure {
            Some(Failure::Connect) => true,
            // A timeout with time left is the attempt's own (`perTryTimeout`).
            Some(Failure::Reset | Failure::Timeout) => idempotent(&self.method),
            Some(Failure::Protocol) => false,
            None => self.policy.retries_status(status) && idempotent(&self.method),
        };
        if !retryable || self.retries >= self.policy.attempts() || now >= deadline {
            return None;
        }
        if !self.budget.allow(self.policy.budget(), now) {
            return None;
        }
        self.retries += 1;
        // Full backoff less up to half of it, at random: clients that failed together spread.
        let base = self.policy.backoff(self.retries);
        let wait = base.saturating_sub(base.mul_f64((super::random() >> 11) as f64 / (1u64 << 53) as f64 / 2.0));
        self.attempt_start = now + wait;
        let health = self.snapshot.plan(self.route, self.track).health.as_ref();
        self.endpoint = health::retry_to(health, self.track(), self.endpoint, super::random(), now);
        let mut request = Request::new(RequestBody::empty(self.body_limits));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = match (self.protocol, self.uri.path_and_query()) {
            // h2c names its endpoint in the URI.
            (UpstreamProtocol::H2c, Some(path)) => super::rewrite::h2c_uri(&self.endpoint().0, path.clone()),
            _ => self.uri.clone(),
        };
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        Some((wait, request))
    }

    /// The position in its track of the endpoint the next attempt goes to.
    pub(super) fn endpoint_index(&self) -> usize {
        self.endpoint
    }

    /// The endpoint the next attempt goes to.
    pub(super) fn endpoint(&self) -> &(Authority, EndpointKey) {
        &self.snapshot.plan(self.route, self.track).endpoints[self.endpoint]
    }

    /// The track every attempt goes to, as compiled in the request's snapshot.
    fn track(&self) -> &Track {
        &self.snapshot.table.routes()[self.route].tracks()[self.track]
    }
}

/// Whether `method` may be sent twice with the effect of once (RFC 9110 §9.2.2).
fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// The retry budgets of one proxy's routes, by route name: kept across table swaps, so that a
/// new table does not refill a route's budget or restart its counts.
#[derive(Debug, Default)]
pub struct Budgets(Mutex<HashMap<RouteName, Arc<Budget>>>);

impl Budgets {
    /// The budget of route `route`: the same one for as long as the proxy runs. Cold path
    /// (publish).
    pub fn of(&self, route: &RouteName) -> Arc<Budget> {
        let mut budgets = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        Arc::clone(budgets.entry(route.clone()).or_default())
    }
}

/// A route's retry budget: its requests and retries over the budget's interval, and what its
/// retries came to since the proxy started.
#[derive(Debug, Default)]
pub struct Budget {
    /// The interval the counts below are of: ms since [`epoch`] / the interval's ms.
    window: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
    /// Requests in the interval before `window`, so that a fresh interval's budget does not
    /// start from nothing.
    previous_requests: AtomicU64,
    /// Retries sent, since start.
    sent: AtomicU64,
    /// Retries the budget did not allow, since start.
    exhausted: AtomicU64,
}

impl Budget {
    /// Counts a request of the route, at `now`.
    pub(super) fn request(&self, spec: &BudgetSpec, now: Instant) {
        self.roll(spec, now);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget at `now`, if it has one: retries may be `spec.percent`
    /// of the route's requests in this interval (or the one before, if it had more), and at
    /// least `spec.minRetryRate` scaled to the interval.
    fn allow(&self, spec: &BudgetSpec, now: Instant) -> bool {
        self.roll(spec, now);
        let requests = self
            .requests
            .load(Ordering::Relaxed)
            .max(self.previous_requests.load(Ordering::Relaxed));
        let share = (requests as f64 * spec.percent / 100.0) as u64;
        let floor = (f64::from(spec.min_retry_rate.count) * spec.interval.as_secs_f64()
            / spec.min_retry_rate.interval.as_secs_f64()) as u64;
        let allowed = share.max(floor);
        if self.retries.fetch_add(1, Ordering::Relaxed) < allowed {
            self.sent.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            self.retries.fetch_sub(1, Ordering::Relaxed);
            self.exhausted.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Starts a new interval when `now` is past the current one. Racing threads may each count
    /// a request in the interval before; the budget is a share, and that is within it.
    fn roll(&self, spec: &BudgetSpec, now: Instant) {
        let interval_ms = u64::try_from(spec.interval.as_millis()).unwrap_or(u64::MAX).max(1);
        let since_ms = u64::try_from(now.saturating_duration_since(epoch()).as_millis()).unwrap_or(u64::MAX);
        let window = since_ms / interval_ms;
        let current = self.window.load(Ordering::Relaxed);
        if window != current
            && self
                .window
                .compare_exchange(current, window, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let requests = self.requests.swap(0, Ordering::Relaxed);
            self.retries.store(0, Ordering::Relaxed);
            let previous = if window == current + 1 { requests } else { 0 };
            self.previous_requests.store(previous, Ordering::Relaxed);
        }
    }

    /// Retries sent since start.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Retries the budget did not allow since start (the client got the failed attempt's
    /// answer).
    pub fn exhausted(&self) -> u64 {
        self.exhausted.load(Ordering::Relaxed)
    }
}

/// Where budget intervals are counted from: the first time any budget is used.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget_spec(percent: f64, min_per_second: u32) -> BudgetSpec {
        let mut spec = BudgetSpec {
            percent,
            ..BudgetSpec::default()
        };
        spec.min_retry_rate.count = min_per_second;
        spec
    }

    #[tokio::test(start_paused = true)]
    async fn a_budget_allows_its_share_of_the_requests_and_its_floor() {
        let (budget, spec) = (Budget::default(), budget_spec(20.0, 0));
        let now = Instant::now();
        for _ in 0..100 {
            budget.request(&spec, now);
        }
        let allowed = (0..50).filter(|_| budget.allow(&spec, now)).count();
        assert_eq!((allowed, budget.sent(), budget.exhausted()), (20, 20, 30));

        // Without traffic, the floor: 1 per second over a 10 s interval.
        let (budget, spec) = (Budget::default(), budget_spec(20.0, 1));
        assert_eq!((0..50).filter(|_| budget.allow(&spec, now)).count(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_interval_starts_from_the_requests_of_the_last() {
        let (budget, spec) = (Budget::default(), budget_spec(10.0, 0));
        let start = Instant::now();
        for _ in 0..100 {
            budget.request(&spec, start);
        }
        assert_eq!((0..20).filter(|_| budget.allow(&spec, start)).count(), 10);
        // The next interval: its own retries, from the last one's 100 requests.
        let next = start + spec.interval;
        assert_eq!((0..20).filter(|_| budget.allow(&spec, next)).count(), 10);
        // Two intervals later with no traffic between: nothing carried over.
        let later = start + spec.interval * 3;
        assert_eq!((0..20).filter(|_| budget.allow(&spec, later)).count(), 0);
    }

    #[test]
    fn only_idempotent_methods_are_sent_twice() {
        assert!(idempotent(&Method::GET) && idempotent(&Method::PUT) && idempotent(&Method::DELETE));
        assert!(!idempotent(&Method::POST) && !idempotent(&Method::PATCH) && !idempotent(&Method::CONNECT));
    }
}
