//! The endpoint health state machine, driven with explicit instants: consecutive failures to
//! ejection, growing ejection times, the share and the last endpoint, health thresholds, and
//! the choice of another endpoint.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method};
use switchyard_config::schema::{DEFAULT_EXPECTED_STATUSES, HealthCheckSpec};
use switchyard_config::stats::EndpointState;
use switchyard_config::{Format, RequestView, RoutingTable, load_config};
use tokio::time::Instant;

use super::check::Streak;
use super::{HealthRegistry, TrackHealth, pick};
use crate::record::UpstreamError;

/// A route `app` with one track `stable` of `n` endpoints (`127.0.0.1:9001`…) and `extra`
/// settings (`outlierDetection: {...}`), weights 1, sticky on `x-user-id`.
fn table(n: usize, extra: &str) -> RoutingTable {
    table_at(9001, n, extra)
}

/// [`table`] with endpoints from `port` on.
fn table_at(port: usize, n: usize, extra: &str) -> RoutingTable {
    let endpoints: Vec<String> = (0..n).map(|i| format!("'127.0.0.1:{}'", port + i)).collect();
    let yaml = format!(
        "routes: [{{ name: app, sticky: {{ header: x-user-id }}, tracks: [{{ name: stable, endpoints: [{}], weight: 1, {extra} }}] }}]",
        endpoints.join(", ")
    );
    load_config(&yaml, Format::Yaml, 1)
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"))
        .table
}

struct Fixture {
    registry: HealthRegistry,
    epoch: Instant,
}

impl Fixture {
    fn new() -> Self {
        let epoch = Instant::now();
        Self {
            registry: HealthRegistry::new(epoch),
            epoch,
        }
    }

    fn track(&self, table: &RoutingTable) -> Arc<TrackHealth> {
        self.registry.apply(table)[0][0]
            .clone()
            .expect("the track keeps health")
    }

    fn at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }
}

fn fail(h: &TrackHealth, i: usize, times: usize, now: Instant) {
    for _ in 0..times {
        h.observe(i, 503, None, now);
    }
}

fn states(h: &TrackHealth, now: Instant) -> Vec<EndpointState> {
    (0..h.endpoints.len()).map(|i| h.state(i, now)).collect()
}

use EndpointState::{Ejected, Serving, Unhealthy};

#[test]
fn consecutive_5xx_eject_and_a_success_between_them_starts_the_count_again() {
    let f = Fixture::new();
    let h = f.track(&table(2, "outlierDetection: { consecutive5xx: 3 }"));
    fail(&h, 0, 2, f.at(1));
    h.observe(0, 200, None, f.at(2));
    fail(&h, 0, 2, f.at(3));
    assert_eq!(states(&h, f.at(3)), [Serving, Serving], "two in a row are not three");
    h.observe(0, 404, None, f.at(4));
    fail(&h, 0, 2, f.at(5));
    assert_eq!(
        states(&h, f.at(5)),
        [Serving, Serving],
        "a 4xx is no failure of the endpoint"
    );
    // The proxy's own 502 for a refused connection counts as a 5xx.
    h.observe(0, 502, Some(UpstreamError::Connect), f.at(6));
    assert_eq!(states(&h, f.at(6)), [Ejected, Serving]);
    assert_eq!(h.endpoints[0].1.ejections(), 1);
    // Out for the base ejection time (30 s by default), then back by itself.
    assert_eq!(h.state(0, f.at(6 + 29_999)), Ejected);
    assert_eq!(h.state(0, f.at(6 + 30_000)), Serving);
}

#[test]
fn a_body_that_breaks_off_is_a_failure_whatever_its_status() {
    let f = Fixture::new();
    let h = f.track(&table(2, "outlierDetection: { consecutive5xx: 2 }"));
    h.observe(1, 200, Some(UpstreamError::Reset), f.at(1));
    h.observe(1, 200, Some(UpstreamError::Protocol), f.at(2));
    assert_eq!(states(&h, f.at(2)), [Serving, Ejected]);
}

#[test]
fn gateway_and_connect_counters_count_only_their_failures() {
    let f = Fixture::new();
    let h = f.track(&table(
        3,
        "outlierDetection: { consecutive5xx: 0, consecutiveGatewayFailure: 2, consecutiveConnectErrors: 2, maxEjectedPercent: 100 }",
    ));
    // 500s are no gateway failures, and with consecutive5xx off they eject nothing.
    for _ in 0..10 {
        h.observe(0, 500, None, f.at(1));
    }
    assert_eq!(h.state(0, f.at(1)), Serving);
    h.observe(0, 504, Some(UpstreamError::Timeout), f.at(2));
    h.observe(0, 503, None, f.at(3));
    assert_eq!(h.state(0, f.at(3)), Ejected);
    // Connect errors: a response between them (even a 503) starts their count again.
    h.observe(1, 502, Some(UpstreamError::Connect), f.at(4));
    h.observe(1, 500, None, f.at(5));
    h.observe(1, 502, Some(UpstreamError::Connect), f.at(6));
    assert_eq!(h.state(1, f.at(6)), Serving);
    h.observe(1, 502, Some(UpstreamError::Connect), f.at(7));
    assert_eq!(states(&h, f.at(7)), [Ejected, Ejected, Serving]);
}

#[test]
fn each_ejection_is_longer_up_to_the_cap_and_the_multiplier_falls_while_it_serves() {
    let f = Fixture::new();
    let h = f.track(&table(
        2,
        "outlierDetection: { consecutive5xx: 1, baseEjectionTime: 10s, maxEjectionTime: 25s }",
    ));
    let ejected_for = |now_ms: u64| {
        h.observe(0, 500, None, f.at(now_ms));
        assert_eq!(h.state(0, f.at(now_ms)), Ejected, "at {now_ms} ms");
        let until = h.endpoints[0].1.ejected_until.load(Ordering::Relaxed);
        Duration::from_millis(until - now_ms)
    };
    assert_eq!(ejected_for(0), Duration::from_secs(10));
    // Failures while it is out (requests in flight when it went) do not lengthen it.
    h.observe(0, 500, None, f.at(5_000));
    assert_eq!(h.endpoints[0].1.ejected_until.load(Ordering::Relaxed), 10_000);
    assert_eq!(ejected_for(10_000), Duration::from_secs(20), "twice the base");
    assert_eq!(ejected_for(30_000), Duration::from_secs(25), "three times, capped");
    assert_eq!(ejected_for(55_000), Duration::from_secs(25));
    assert_eq!(h.endpoints[0].1.ejections(), 4);
    // Back at 80 s with a multiplier of 4; serving 20 s (two base times) takes it down to 2,
    // so the next ejection is the third: 30 s, capped to 25 s. Serving 40 s more takes it to 0.
    assert_eq!(ejected_for(100_000), Duration::from_secs(25));
    assert_eq!(h.endpoints[0].1.multiplier.load(Ordering::Relaxed), 3);
    assert_eq!(
        ejected_for(125_000 + 40_000),
        Duration::from_secs(10),
        "the first again"
    );
}

#[test]
fn at_most_the_share_is_ejected_at_least_one_and_never_the_last() {
    let f = Fixture::new();
    let h = f.track(&table(
        4,
        "outlierDetection: { consecutive5xx: 2, maxEjectedPercent: 50 }",
    ));
    for i in 0..4 {
        fail(&h, i, 2, f.at(1));
    }
    assert_eq!(states(&h, f.at(1)), [Ejected, Ejected, Serving, Serving]);
    assert_eq!(h.endpoints[2].1.ejections(), 0);
    // A refused ejection starts the count again: two more failures try again.
    fail(&h, 2, 1, f.at(2));
    assert_eq!(h.state(2, f.at(2)), Serving);
    // Once the first two are back, the next failures eject.
    fail(&h, 2, 1, f.at(30_001));
    assert_eq!(h.state(2, f.at(30_001)), Ejected);

    // 10% of two endpoints rounds down to none, but one may always be ejected...
    let f = Fixture::new();
    let two = f.track(&table(2, "outlierDetection: { consecutive5xx: 1 }"));
    fail(&two, 0, 1, f.at(1));
    fail(&two, 1, 1, f.at(1));
    assert_eq!(states(&two, f.at(1)), [Ejected, Serving], "...never the last one");
    // ...and a track of one endpoint never loses it.
    let f = Fixture::new();
    let one = f.track(&table(
        1,
        "outlierDetection: { consecutive5xx: 1, maxEjectedPercent: 100 }",
    ));
    fail(&one, 0, 10, f.at(1));
    assert_eq!(states(&one, f.at(1)), [Serving]);
    assert_eq!(one.endpoints[0].1.ejections(), 0);
}

#[test]
fn an_endpoint_is_not_ejected_when_the_others_fail_their_health_checks() {
    let f = Fixture::new();
    let checked = "outlierDetection: { consecutive5xx: 1, maxEjectedPercent: 100 }, healthCheck: { path: /healthz }";
    let t = table(2, checked);
    // The checks are not started without a runtime to run them on; set the state by hand.
    let h = {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async { f.track(&t) })
    };
    h.endpoints[1].1.unhealthy.store(true, Ordering::Relaxed);
    fail(&h, 0, 3, f.at(1));
    assert_eq!(states(&h, f.at(1)), [Serving, Unhealthy]);
}

#[test]
fn requests_leave_an_endpoint_that_is_out_and_sticky_users_land_on_the_same_other_one() {
    let f = Fixture::new();
    let t = table(4, "outlierDetection: { consecutive5xx: 1, maxEjectedPercent: 50 }");
    let h = f.track(&t);
    let method = Method::GET;
    let decide = |user: Option<u32>, random: u64, now: Instant| {
        let mut headers = HeaderMap::new();
        if let Some(user) = user {
            headers.insert("x-user-id", HeaderValue::from(user));
        }
        let view = RequestView {
            method: &method,
            host: "a.example",
            path: "/",
            query: "",
            headers: &headers,
            random,
        };
        let d = t.decide(&view).unwrap();
        (d.endpoint.index(), pick(Some(&h), &d, now).0)
    };
    let before: Vec<usize> = (0..2_000).map(|u| decide(Some(u), 0, f.at(0)).1).collect();
    assert!(before.iter().all(|&e| e < 4));
    assert_eq!(
        (0..2_000).map(|u| decide(Some(u), 0, f.at(0)).0).collect::<Vec<_>>(),
        before,
        "nothing out: the table's choice"
    );
    fail(&h, 2, 1, f.at(1));
    let now = f.at(2);
    for (user, &was) in (0..2_000).zip(&before) {
        let (_, is) = decide(Some(user), 0, now);
        if was == 2 {
            assert_ne!(is, 2, "user {user} left the ejected endpoint");
            assert_eq!(decide(Some(user), 0, now).1, is, "user {user} stays put");
        } else {
            assert_eq!(is, was, "user {user} on a serving endpoint never moves");
        }
    }
    for random in (0..1_000u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) {
        assert_ne!(decide(None, random, now).1, 2);
    }
    // Panic mode: with every endpoint out, requests go where the table decided.
    for i in 0..4 {
        h.endpoints[i].1.ejected_until.store(1_000_000, Ordering::Relaxed);
    }
    for user in 0..100 {
        let (decided, picked) = decide(Some(user), 0, now);
        assert_eq!(picked, decided);
    }
}

#[test]
fn a_track_without_either_feature_has_no_health_and_keeps_the_decided_endpoint() {
    let f = Fixture::new();
    let t = table(2, "protocol: http1");
    assert!(f.registry.apply(&t)[0][0].is_none());
}

#[test]
fn endpoint_state_outlives_a_new_table_while_the_endpoint_stays() {
    let f = Fixture::new();
    let h = f.track(&table(
        3,
        "outlierDetection: { consecutive5xx: 1, maxEjectedPercent: 50 }",
    ));
    fail(&h, 0, 1, f.at(1));
    // The control loop's next step: the same endpoints, the share changed.
    let next = f.track(&table(
        3,
        "outlierDetection: { consecutive5xx: 1, maxEjectedPercent: 60 }",
    ));
    assert_eq!(states(&next, f.at(2)), [Ejected, Serving, Serving]);
    assert_eq!(next.endpoints[0].1.ejections(), 1);
    // A table without the endpoint's health forgets it; one that brings it back starts afresh.
    assert!(f.registry.apply(&table(1, "protocol: http1"))[0][0].is_none());
    let back = f.track(&table(3, "outlierDetection: { consecutive5xx: 1 }"));
    assert_eq!(back.endpoints[0].1.ejections(), 0);
    assert_eq!(states(&back, f.at(2)), [Serving, Serving, Serving]);
}

#[test]
fn health_thresholds_turn_an_endpoint_unhealthy_and_healthy_again() {
    let spec = HealthCheckSpec {
        path: "/healthz".to_owned(),
        interval: Duration::from_secs(5),
        timeout: Duration::from_secs(1),
        healthy_threshold: 2,
        unhealthy_threshold: 3,
        expected_statuses: vec![DEFAULT_EXPECTED_STATUSES],
    };
    let mut streak = Streak::default();
    let mut healthy = true;
    let mut run = |results: &[bool]| -> Vec<bool> {
        results
            .iter()
            .map(|&passed| {
                healthy = streak.record(passed, healthy, &spec);
                healthy
            })
            .collect()
    };
    assert_eq!(
        run(&[false, false, true, false, false]),
        [true; 5],
        "a pass starts the failures again"
    );
    assert_eq!(run(&[false]), [false], "three in a row");
    assert_eq!(
        run(&[true, false, true]),
        [false, false, false],
        "a failure starts the passes again"
    );
    assert_eq!(run(&[true]), [true], "two in a row");
    let mut once = Streak::default();
    let quick = HealthCheckSpec {
        healthy_threshold: 1,
        unhealthy_threshold: 1,
        ..spec.clone()
    };
    assert!(!once.record(false, true, &quick));
    assert!(once.record(true, false, &quick));
}

/// Checks run every interval from the table that asks for them, and stop with the next table
/// that does not: at an interval of 1 s and of 1 min, on tokio's paused clock. Nothing listens on
/// port 1, so every check fails (refused, or timed out).
#[tokio::test(start_paused = true)]
async fn checks_run_every_interval_and_stop_with_a_table_without_them() {
    for interval in [Duration::from_secs(1), Duration::from_secs(60)] {
        let f = Fixture::new();
        let spec = format!(
            "healthCheck: {{ path: /healthz, interval: {}, timeout: {}, unhealthyThreshold: 3 }}",
            humantime::format_duration(interval),
            humantime::format_duration(interval / 2)
        );
        let h = f.track(&table_at(1, 1, &spec));
        let failures = || h.endpoints[0].1.check_failures();
        // The first check at once, one more every interval, each over within its timeout.
        tokio::time::sleep(interval / 2 + Duration::from_millis(1)).await;
        assert_eq!((failures(), h.state(0, Instant::now())), (1, Serving), "{interval:?}");
        tokio::time::sleep(interval * 2).await;
        assert_eq!((failures(), h.state(0, Instant::now())), (3, Unhealthy), "{interval:?}");

        let next = f.track(&table_at(1, 1, "outlierDetection: {}"));
        assert_eq!(
            next.state(0, Instant::now()),
            Serving,
            "{interval:?}: no checks, no unhealthy"
        );
        tokio::time::sleep(interval * 5).await;
        assert_eq!(failures(), 3, "{interval:?}: the checks stopped");
    }
}
