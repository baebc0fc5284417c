use switchyard_config::{Format, load_rollout};

use super::*;

const SPEC: &str = r#"
name: checkout-v2
route: checkout
proxies: ["http://127.0.0.1:9901"]
baseline: stable
candidate: canary
canary:
  steps:
    - setHeaderRoute: { headers: [{ name: x-canary, value: "true" }] }
    - setWeight: 5
    - pause: { duration: 5s }
    - setWeight: 25
    - pause: {}
    - setWeight: 100
"#;

fn spec() -> RolloutSpec {
    load_rollout(SPEC, Format::Yaml).unwrap()
}

/// Confirms whatever the rollout wants, as proxies would after a publish.
fn confirm(s: &mut RolloutState, now: u64) {
    let t = s.traffic.clone();
    s.confirm(t, now);
}

#[test]
fn a_canary_walks_its_steps_waiting_for_confirmation_and_pauses() {
    let spec = spec();
    let mut s = RolloutState::new(0);
    s.advance(&spec, 0, false);
    // Header route and first weight are planned; the timed pause waits for confirmation.
    assert_eq!(s.traffic.candidate_weight, 5.0);
    assert_eq!(s.traffic.header_steps, [0]);
    assert_eq!(s.step, 2);
    assert_eq!(s.pause_until, None);
    confirm(&mut s, 100);
    s.advance(&spec, 100, false);
    assert_eq!(s.pause_until, Some(5100));
    s.advance(&spec, 5099, false);
    assert_eq!(s.step, 2, "the pause is not over");
    s.advance(&spec, 5100, false);
    assert_eq!(s.traffic.candidate_weight, 25.0);
    assert_eq!(s.step, 4);
    confirm(&mut s, 5200);
    s.advance(&spec, 5200, false);
    assert_eq!(s.phase, Phase::Paused);
    s.advance(&spec, 99_999, false);
    assert_eq!(s.phase, Phase::Paused, "an indefinite pause waits for promote");
    s.command(&spec, Command::Promote { full: false }, 100_000).unwrap();
    s.advance(&spec, 100_000, false);
    assert_eq!(s.phase, Phase::Completed);
    assert_eq!(s.traffic, Traffic::candidate());
}

#[test]
fn an_operator_pause_keeps_the_time_left() {
    let spec = spec();
    let mut s = RolloutState::new(0);
    s.advance(&spec, 0, false);
    confirm(&mut s, 0);
    s.advance(&spec, 1000, false);
    assert_eq!(s.pause_until, Some(6000));
    s.command(&spec, Command::Pause, 2000).unwrap();
    s.advance(&spec, 60_000, false);
    assert_eq!((s.phase, s.step), (Phase::Paused, 2));
    s.command(&spec, Command::Resume, 60_000).unwrap();
    assert_eq!(s.pause_until, Some(64_000), "4 s were left");
    s.advance(&spec, 64_000, false);
    assert_eq!(s.step, 4);
}

#[test]
fn abort_sends_everything_to_the_baseline_and_records_why() {
    let spec = spec();
    let mut s = RolloutState::new(0);
    s.advance(&spec, 0, false);
    s.abort(
        500,
        "error rate 6% > 5%".to_owned(),
        serde_json::json!({"errorRate": 0.06}),
        400,
    );
    assert_eq!(s.phase, Phase::Aborted);
    assert_eq!(s.traffic, Traffic::baseline());
    let record = s.abort.clone().unwrap();
    assert_eq!((record.detected_at, record.confirmed_at), (400, None));
    confirm(&mut s, 900);
    assert_eq!(s.abort.as_ref().unwrap().confirmed_at, Some(900));
    // Nothing moves an aborted rollout but retry.
    let mut s2 = s.clone();
    s2.advance(&spec, 10_000, true);
    assert_eq!(s2.traffic, Traffic::baseline());
    assert!(s2.command(&spec, Command::Promote { full: true }, 1).is_err());
    s2.command(&spec, Command::Retry, 2).unwrap();
    assert_eq!((s2.phase, s2.step), (Phase::Progressing, 0));
}

#[test]
fn promote_full_set_weight_and_undo() {
    let spec = spec();
    let mut s = RolloutState::new(0);
    s.advance(&spec, 0, false);
    s.command(&spec, Command::SetWeight(40.0), 1).unwrap();
    assert_eq!((s.phase, s.traffic.candidate_weight), (Phase::Paused, 40.0));
    s.command(&spec, Command::Undo, 2).unwrap();
    assert_eq!(s.traffic.candidate_weight, 5.0);
    assert!(s.command(&spec, Command::SetWeight(101.0), 3).is_err());
    s.command(&spec, Command::Promote { full: true }, 4).unwrap();
    s.advance(&spec, 4, false);
    assert_eq!(s.phase, Phase::Completed);
    assert_eq!(s.traffic, Traffic::candidate());
}
