use std::time::Duration;

use switchyard_config::rollout::EmergencySpec;

use super::*;
use crate::analyze::MetricResult;

fn spec(count: Option<u32>, failure_limit: u32, inconclusive_limit: u32, consecutive_error_limit: u32) -> AnalysisSpec {
    AnalysisSpec {
        initial_delay: Duration::ZERO,
        interval: Duration::from_secs(1),
        window: Duration::from_secs(10),
        min_requests: 100,
        count,
        failure_limit,
        inconclusive_limit,
        consecutive_error_limit,
        sequential_confidence: None,
        series: Default::default(),
        metrics: Vec::new(),
        emergency: EmergencySpec::default(),
    }
}

fn m(outcome: Outcome) -> Measurement {
    Measurement {
        outcome,
        emergency: false,
        sequential: false,
        results: vec![MetricResult {
            name: "error-rate".into(),
            outcome,
            value: Some(0.031),
            limit: "≤ 1.00%".into(),
            message: "error rate 3.10% > 1.00%".into(),
        }],
    }
}

fn emergency() -> Measurement {
    Measurement {
        emergency: true,
        ..m(Outcome::Fail)
    }
}

const PASS: Outcome = Outcome::Pass;
const FAIL: Outcome = Outcome::Fail;
const INCONCLUSIVE: Outcome = Outcome::Inconclusive;

#[test]
fn failures_count_over_the_whole_run_and_abort_at_the_limit() {
    let mut t = Tracker::new(&spec(None, 3, 0, 4));
    for o in [FAIL, PASS, PASS, FAIL, INCONCLUSIVE, PASS] {
        assert_eq!(t.record(&m(o), true), Verdict::Continue);
    }
    let v = t.record(&m(FAIL), true);
    let Verdict::Abort { reason } = v else {
        panic!("third failure must abort, got {v:?}");
    };
    assert_eq!(reason.label(), "failure_limit");
    assert_eq!(
        reason.to_string(),
        "3 failed measurements (failureLimit 3); last: error-rate: error rate 3.10% > 1.00%"
    );
    assert_eq!((t.passed(), t.failed(), t.inconclusive()), (3, 3, 1));
}

#[test]
fn a_failure_limit_of_zero_aborts_on_the_first_failure() {
    let mut t = Tracker::new(&spec(None, 0, 0, 4));
    assert!(matches!(t.record(&m(FAIL), true), Verdict::Abort { .. }));
}

#[test]
fn an_emergency_aborts_at_once_even_without_all_stats() {
    for reachable in [true, false] {
        let mut t = Tracker::new(&spec(Some(1), 3, 0, 4));
        let v = t.record(&emergency(), reachable);
        assert!(
            matches!(&v, Verdict::Abort { reason: AbortReason::Emergency { message } } if message.contains("3.10%")),
            "{v:?}"
        );
    }
}

#[test]
fn a_sequential_rejection_aborts_at_once() {
    let mut t = Tracker::new(&spec(None, 3, 0, 4));
    assert_eq!(t.record(&m(PASS), true), Verdict::Continue);
    let rejected = Measurement {
        sequential: true,
        ..m(FAIL)
    };
    let v = t.record(&rejected, true);
    let Verdict::Abort { reason } = v else {
        panic!("a sequential rejection must abort, got {v:?}");
    };
    assert_eq!(reason.label(), "sequential");
    assert_eq!(
        reason.to_string(),
        "sequential judge rejected: error-rate: error rate 3.10% > 1.00%"
    );
    assert_eq!(t.failed(), 1);
}

#[test]
fn inconclusive_measurements_never_pass() {
    let mut t = Tracker::new(&spec(Some(2), 3, 0, 4));
    for _ in 0..1000 {
        assert_eq!(t.record(&m(INCONCLUSIVE), true), Verdict::Continue);
    }
    assert_eq!(t.record(&m(PASS), true), Verdict::Continue);
    assert_eq!(t.record(&m(INCONCLUSIVE), true), Verdict::Continue);
    assert_eq!(t.record(&m(PASS), true), Verdict::Passed);
}

#[test]
fn count_passes_need_not_be_consecutive_and_failures_do_not_count() {
    let mut t = Tracker::new(&spec(Some(3), 3, 0, 4));
    for o in [PASS, FAIL, PASS, FAIL] {
        assert_eq!(t.record(&m(o), true), Verdict::Continue);
    }
    assert_eq!(t.record(&m(PASS), true), Verdict::Passed);
    // Final: a later failure changes nothing.
    assert_eq!(t.record(&m(FAIL), true), Verdict::Passed);
    assert_eq!(t.failed(), 2);
    assert_eq!(t.ended(), Some(&Verdict::Passed));
}

#[test]
fn without_count_the_run_never_passes_by_itself() {
    let mut t = Tracker::new(&spec(None, 3, 0, 4));
    for _ in 0..1000 {
        assert_eq!(t.record(&m(PASS), true), Verdict::Continue);
    }
}

#[test]
fn consecutive_inconclusive_measurements_pause_until_resumed() {
    let mut t = Tracker::new(&spec(None, 3, 3, 4));
    for o in [INCONCLUSIVE, INCONCLUSIVE, PASS, INCONCLUSIVE, INCONCLUSIVE] {
        assert_eq!(t.record(&m(o), true), Verdict::Continue);
    }
    assert_eq!(t.record(&m(INCONCLUSIVE), true), Verdict::PauseInconclusive);
    assert_eq!(t.record(&m(INCONCLUSIVE), true), Verdict::PauseInconclusive);
    t.resume();
    assert_eq!(t.record(&m(INCONCLUSIVE), true), Verdict::Continue);
}

#[test]
fn consecutive_unreachable_stats_abort_and_a_reading_resets_the_streak() {
    let mut t = Tracker::new(&spec(Some(5), 3, 0, 3));
    let none = Measurement::default();
    for reachable in [false, false, true, false, false] {
        let o = if reachable { &m(PASS) } else { &none };
        assert_eq!(t.record(o, reachable), Verdict::Continue);
    }
    // A failing measurement without all stats is an error, not a failure.
    let v = t.record(&m(FAIL), false);
    assert_eq!(
        v,
        Verdict::Abort {
            reason: AbortReason::StatsUnreachable {
                consecutive: 3,
                limit: 3
            }
        }
    );
    assert_eq!((t.passed(), t.failed(), t.errors()), (1, 0, 5));
}

#[test]
fn the_state_survives_a_round_trip_through_json() {
    let mut t = Tracker::new(&spec(Some(3), 2, 0, 4));
    t.record(&m(PASS), true);
    t.record(&m(FAIL), true);
    let json = serde_json::to_string(&t).unwrap();
    let mut back: Tracker = serde_json::from_str(&json).unwrap();
    assert_eq!(back, t);
    assert!(matches!(back.record(&m(FAIL), true), Verdict::Abort { .. }));

    let v = back.ended().unwrap();
    let json = serde_json::to_value(v).unwrap();
    assert_eq!(json["verdict"], "abort");
    assert_eq!(json["reason"]["cause"], "failureLimit");
    assert_eq!(serde_json::from_value::<Verdict>(json).unwrap(), *v);
}

/// A measurement of two metrics: a proxy check with `built_in`, and a provider `budget`.
fn with_provider(built_in: Outcome, budget: Outcome) -> Measurement {
    let row = |name: &str, outcome: Outcome, message: &str| MetricResult {
        name: name.into(),
        outcome,
        value: None,
        limit: "≤ 0.01".into(),
        message: message.into(),
    };
    let outcome = [FAIL, Outcome::Error, INCONCLUSIVE, PASS]
        .into_iter()
        .find(|o| [built_in, budget].contains(o))
        .unwrap();
    Measurement {
        outcome,
        emergency: false,
        sequential: false,
        results: vec![
            row("error-rate", built_in, "error rate 0.20% ≤ 1.00%"),
            row(
                "budget",
                budget,
                "cannot reach Prometheus at http://127.0.0.1:9: connection refused",
            ),
        ],
    }
}

const ERROR: Outcome = Outcome::Error;

#[test]
fn consecutive_provider_errors_abort_at_the_limit_and_an_answer_resets_the_streak() {
    let mut t = Tracker::new(&spec(Some(10), 3, 2, 3));
    for budget in [ERROR, ERROR, PASS, ERROR, ERROR] {
        assert_eq!(t.record(&with_provider(PASS, budget), true), Verdict::Continue);
    }
    let Verdict::Abort { reason } = t.record(&with_provider(PASS, ERROR), true) else {
        panic!("the third error in a row aborts")
    };
    assert_eq!(reason.label(), "metric_errors");
    assert_eq!(
        reason.to_string(),
        "metric budget could not be measured in 3 consecutive measurements (consecutiveErrorLimit 3); last: cannot reach Prometheus at http://127.0.0.1:9: connection refused"
    );
    // Errors are neither passes nor failures, and do not count as inconclusive (which would
    // have paused at inconclusiveLimit 2).
    assert_eq!((t.passed(), t.failed(), t.inconclusive(), t.errors()), (1, 0, 0, 5));
}

#[test]
fn a_failure_counts_beside_a_provider_error() {
    let mut t = Tracker::new(&spec(None, 2, 0, 4));
    assert_eq!(t.record(&with_provider(FAIL, ERROR), true), Verdict::Continue);
    let v = t.record(&with_provider(FAIL, ERROR), true);
    assert!(
        matches!(
            &v,
            Verdict::Abort {
                reason: AbortReason::FailureLimit { failures: 2, .. }
            }
        ),
        "{v:?}"
    );
}

#[test]
fn each_metric_counts_its_own_errors() {
    let mut t = Tracker::new(&spec(None, 3, 0, 2));
    // The two providers fail in turn: neither has two errors in a row.
    let turn = |first: Outcome, second: Outcome| Measurement {
        results: vec![
            MetricResult {
                name: "a".into(),
                ..with_provider(PASS, first).results[1].clone()
            },
            MetricResult {
                name: "b".into(),
                ..with_provider(PASS, second).results[1].clone()
            },
        ],
        ..with_provider(PASS, ERROR)
    };
    for _ in 0..3 {
        assert_eq!(t.record(&turn(ERROR, PASS), true), Verdict::Continue);
        assert_eq!(t.record(&turn(PASS, ERROR), true), Verdict::Continue);
    }
    assert!(matches!(
        t.record(&turn(PASS, ERROR), true),
        Verdict::Abort { reason: AbortReason::MetricErrors { metric, consecutive: 2, .. } } if metric == "b"
    ));
}

#[test]
fn provider_streaks_survive_a_round_trip_through_json() {
    let mut t = Tracker::new(&spec(None, 3, 0, 2));
    t.record(&with_provider(PASS, ERROR), true);
    let mut back: Tracker = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
    assert_eq!(back, t);
    assert!(matches!(
        back.record(&with_provider(PASS, ERROR), true),
        Verdict::Abort { .. }
    ));
    // A tracker persisted before providers existed reads too.
    let old = serde_json::to_value(Tracker::new(&spec(None, 3, 0, 2))).unwrap();
    assert!(old.get("metricErrors").is_none());
    serde_json::from_value::<Tracker>(old).unwrap();
}
