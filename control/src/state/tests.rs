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

/// What an analysis says about the rollout's current step: its analysis passed or not; no
/// background analysis.
fn told(s: &RolloutState, step_analysis_passed: bool) -> Evidence {
    Evidence {
        step: s.step,
        gate_open: false,
        step_analysis_passed,
        passed_in_step: None,
    }
}

/// Confirms whatever the rollout wants, as proxies would after a publish.
fn confirm(s: &mut RolloutState, now: u64) {
    let t = s.traffic.clone();
    s.confirm(t, now);
}

/// Advances, confirming each traffic change as proxies would, until nothing moves at `now`.
fn run(s: &mut RolloutState, spec: &RolloutSpec, now: u64, analysis_passed: bool) {
    loop {
        let before = s.clone();
        confirm(s, now);
        s.advance(spec, now, told(s, analysis_passed));
        if *s == before {
            return;
        }
    }
}

#[test]
fn each_step_waits_until_every_proxy_confirmed_the_one_before() {
    let spec = spec();
    let mut s = RolloutState::new(0);
    s.advance(&spec, 0, told(&s, false));
    assert_eq!(
        (s.step, s.traffic.clone()),
        (0, Traffic::baseline()),
        "the baseline is confirmed first"
    );
    confirm(&mut s, 1);
    s.advance(&spec, 1, told(&s, false));
    assert_eq!((s.step, s.traffic.header_steps.clone()), (1, vec![0]));
    s.advance(&spec, 2, told(&s, false));
    assert_eq!(s.step, 1, "the header route is not confirmed yet");
    confirm(&mut s, 3);
    s.advance(&spec, 3, told(&s, false));
    assert_eq!((s.step, s.traffic.candidate_weight), (2, 5.0));
}

#[test]
fn a_canary_walks_its_steps_waiting_for_confirmation_and_pauses() {
    let spec = spec();
    let mut s = RolloutState::new(0);
    run(&mut s, &spec, 100, false);
    assert_eq!(s.traffic.candidate_weight, 5.0);
    assert_eq!(s.traffic.header_steps, [0]);
    assert_eq!(s.step, 2);
    assert_eq!(s.pause_until, Some(5100));
    s.advance(&spec, 5099, told(&s, false));
    assert_eq!(s.step, 2, "the pause is not over");
    // The pause ends and the next weight follows at once: the traffic before it is confirmed.
    s.advance(&spec, 5100, told(&s, false));
    assert_eq!((s.step, s.traffic.candidate_weight), (4, 25.0));
    run(&mut s, &spec, 5200, false);
    s.advance(&spec, 5200, told(&s, false));
    assert_eq!(s.phase, Phase::Paused);
    s.advance(&spec, 99_999, told(&s, false));
    assert_eq!(s.phase, Phase::Paused, "an indefinite pause waits for promote");
    s.command(&spec, Command::Promote { full: false }, 100_000).unwrap();
    run(&mut s, &spec, 100_000, false);
    assert_eq!(s.phase, Phase::Completed);
    assert_eq!(s.traffic, Traffic::candidate());
}

#[test]
fn an_operator_pause_keeps_the_time_left() {
    let spec = spec();
    let mut s = RolloutState::new(0);
    run(&mut s, &spec, 1000, false);
    assert_eq!(s.pause_until, Some(6000));
    s.command(&spec, Command::Pause, 2000).unwrap();
    s.advance(&spec, 60_000, told(&s, false));
    assert_eq!((s.phase, s.step), (Phase::Paused, 2));
    s.command(&spec, Command::Resume, 60_000).unwrap();
    assert_eq!(s.pause_until, Some(64_000), "4 s were left");
    run(&mut s, &spec, 64_000, false);
    assert_eq!(s.step, 4);
}

#[test]
fn abort_sends_everything_to_the_baseline_and_records_why() {
    let spec = spec();
    let mut s = RolloutState::new(0);
    run(&mut s, &spec, 0, false);
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
    s2.advance(&spec, 10_000, told(&s2, true));
    assert_eq!(s2.traffic, Traffic::baseline());
    assert!(s2.command(&spec, Command::Promote { full: true }, 1).is_err());
    s2.command(&spec, Command::Retry, 2).unwrap();
    assert_eq!((s2.phase, s2.step), (Phase::Progressing, 0));
}

#[test]
fn promote_full_set_weight_and_undo() {
    let spec = spec();
    let mut s = RolloutState::new(0);
    run(&mut s, &spec, 0, false);
    s.command(&spec, Command::SetWeight(40.0), 1).unwrap();
    assert_eq!((s.phase, s.traffic.candidate_weight), (Phase::Paused, 40.0));
    s.command(&spec, Command::Undo, 2).unwrap();
    assert_eq!(s.traffic.candidate_weight, 5.0);
    assert!(s.command(&spec, Command::SetWeight(101.0), 3).is_err());
    s.command(&spec, Command::Promote { full: true }, 4).unwrap();
    run(&mut s, &spec, 4, false);
    assert_eq!(s.phase, Phase::Completed);
    assert_eq!(s.traffic, Traffic::candidate());
}

fn example(name: &str) -> RolloutSpec {
    let text = std::fs::read_to_string(format!("{}/../config/examples/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    load_rollout(&text, Format::Yaml).unwrap()
}

#[test]
fn blue_green_previews_waits_switches_in_steps_and_keeps_a_rollback_window() {
    let spec = example("rollout-blue-green.yaml");
    let mut s = RolloutState::new(0);
    run(&mut s, &spec, 0, false);
    // Preview by header, weight 0, waiting on the pre-promotion analysis.
    assert_eq!(
        (s.traffic.candidate_weight, s.traffic.header_steps.clone()),
        (0.0, vec![0])
    );
    assert_eq!(s.step, 1);
    run(&mut s, &spec, 10, true);
    assert_eq!(s.pause_until, Some(10 + 120_000), "auto-promotion after 2m");
    // The switch: one weight per confirmed publish.
    let mut now = 120_010;
    s.advance(&spec, now, told(&s, false));
    let mut weights = Vec::new();
    while s.step < 6 {
        weights.push(s.traffic.candidate_weight);
        now += 1;
        confirm(&mut s, now);
        s.advance(&spec, now, told(&s, false));
    }
    weights.push(s.traffic.candidate_weight);
    assert_eq!(weights, [10.0, 50.0, 100.0]);
    assert_eq!(s.traffic.candidate_weight, 100.0);
    // Post-promotion analysis, then the rollback window during which undo is instant.
    run(&mut s, &spec, now, true);
    assert!(s.pause_until.is_some(), "in the rollback window");
    let mut undone = s.clone();
    undone.command(&spec, Command::Undo, now + 1).unwrap();
    assert!(undone.traffic.candidate_weight < 100.0);
    run(&mut s, &spec, now + 600_000, false);
    assert_eq!(s.phase, Phase::Completed);
    assert_eq!(s.traffic, Traffic::candidate());
}

#[test]
fn rings_open_one_audience_after_another() {
    let spec = example("rollout-rings.yaml");
    let mut s = RolloutState::new(0);
    run(&mut s, &spec, 0, false);
    assert_eq!(
        (s.traffic.header_steps.len(), s.traffic.candidate_weight),
        (1, 0.0),
        "internal users only"
    );
    // The ring's minimum duration (10m), then its exit analysis.
    run(&mut s, &spec, 600_000, false);
    run(&mut s, &spec, 600_001, true);
    assert_eq!(s.traffic.header_steps.len(), 2, "beta users joined");
    run(&mut s, &spec, 600_001 + 1_800_000, false);
    run(&mut s, &spec, 600_002 + 1_800_000, true);
    assert_eq!(s.traffic.candidate_weight, 10.0);
    run(&mut s, &spec, 10_000_000, false);
    run(&mut s, &spec, 10_000_001, true);
    assert_eq!(s.traffic.candidate_weight, 100.0);
    run(&mut s, &spec, 10_000_002, true);
    assert_eq!(s.phase, Phase::Completed);
}

mod abort_is_final {
    use proptest::prelude::*;

    use super::*;

    /// What can happen to a rollout between two looks at it.
    #[derive(Debug, Clone)]
    enum Happening {
        Time(u64),
        Confirm,
        AnalysisPassed,
        Command(u8, f64),
        Abort,
    }

    fn happening() -> impl Strategy<Value = Happening> {
        prop_oneof![
            (0u64..20_000).prop_map(Happening::Time),
            Just(Happening::Confirm),
            Just(Happening::AnalysisPassed),
            (0u8..6, 0.0f64..100.0).prop_map(|(c, w)| Happening::Command(c, w)),
            Just(Happening::Abort),
        ]
    }

    proptest! {
        /// Once an abort is decided, the traffic the rollout wants is the baseline only, and it
        /// stays so whatever follows (short of `retry`, which starts a new attempt).
        #[test]
        fn once_aborted_the_candidate_weight_stays_zero(events in prop::collection::vec(happening(), 1..60)) {
            let spec = spec();
            let mut s = RolloutState::new(0);
            let mut now = 0;
            let mut aborted = false;
            for e in events {
                match e {
                    Happening::Time(dt) => now += dt,
                    Happening::Confirm => confirm(&mut s, now),
                    Happening::AnalysisPassed => s.advance(&spec, now, told(&s, true)),
                    Happening::Command(c, w) => {
                        let cmd = match c {
                            0 => Command::Promote { full: false },
                            1 => Command::Promote { full: true },
                            2 => Command::Pause,
                            3 => Command::Resume,
                            4 => Command::Undo,
                            _ => Command::SetWeight(w),
                        };
                        let _ = s.command(&spec, cmd, now);
                    }
                    Happening::Abort => {
                        if s.active() {
                            s.abort(now, "test".to_owned(), serde_json::Value::Null, now);
                            aborted = true;
                        }
                    }
                }
                s.advance(&spec, now, told(&s, false));
                if aborted {
                    prop_assert_eq!(s.phase, Phase::Aborted);
                    prop_assert_eq!(&s.traffic, &Traffic::baseline());
                }
            }
        }
    }
}

/// What a background analysis says about the current step: whether a measurement passed in it.
fn background(s: &RolloutState, passed: bool) -> Evidence {
    Evidence {
        step: s.step,
        gate_open: false,
        step_analysis_passed: false,
        passed_in_step: Some(passed),
    }
}

#[test]
fn a_timed_pause_without_a_passing_measurement_holds_until_one_passes() {
    let spec = spec();
    let mut s = RolloutState::new(0);
    run(&mut s, &spec, 100, false);
    assert_eq!((s.step, s.pause_until), (2, Some(5100)));
    // The pause is over, but nothing passed during it: held, and it says why.
    s.advance(&spec, 5100, background(&s, false));
    assert_eq!((s.phase, s.step, s.held_for_evidence), (Phase::Paused, 2, true));
    assert!(s.message.starts_with("step 3: held"), "{}", s.message);
    assert_eq!(s.traffic.candidate_weight, 5.0, "no step taken");
    s.advance(&spec, 9000, background(&s, false));
    assert_eq!(s.phase, Phase::Paused, "still no evidence");
    // A measurement passes: it goes on by itself, to the next weight.
    s.advance(&spec, 9500, background(&s, true));
    assert_eq!(
        (s.phase, s.step, s.traffic.candidate_weight),
        (Phase::Progressing, 4, 25.0)
    );
    assert!(!s.held_for_evidence);
    let resumed = s.events.iter().rev().find(|e| e.kind == EventKind::Resume).unwrap();
    assert_eq!(resumed.message, "step 3: a measurement passed; going on");
}

#[test]
fn evidence_is_about_one_step_and_promote_overrides_and_says_so() {
    let spec = spec();
    let mut s = RolloutState::new(0);
    run(&mut s, &spec, 100, false);
    // Evidence about another step says nothing of this one.
    let other = Evidence {
        step: 1,
        gate_open: false,
        step_analysis_passed: false,
        passed_in_step: Some(true),
    };
    s.advance(&spec, 5100, other);
    assert!(s.held_for_evidence, "a pass in step 2 is no evidence for step 3");
    s.command(&spec, Command::Promote { full: false }, 6000).unwrap();
    assert_eq!((s.phase, s.step, s.held_for_evidence), (Phase::Progressing, 3, false));
    let promoted = s.events.iter().rev().find(|e| e.kind == EventKind::Promote).unwrap();
    assert_eq!(
        promoted.message,
        "promoted past step 3 without evidence from the analysis (an operator's override)"
    );
    // Without a background analysis a pause needs no evidence.
    let mut plain = RolloutState::new(0);
    run(&mut plain, &spec, 100, false);
    plain.advance(&spec, 5100, told(&plain, false));
    assert_eq!((plain.phase, plain.step), (Phase::Progressing, 4));
}

#[test]
fn retry_starts_clean() {
    let spec = spec();
    let mut s = RolloutState::new(0);
    run(&mut s, &spec, 100, false);
    s.command(&spec, Command::Abort, 200).unwrap();
    assert!(s.abort.is_some());
    s.command(&spec, Command::Retry, 300).unwrap();
    assert_eq!((s.phase, s.step, s.abort.clone()), (Phase::Progressing, 0, None));
    assert_eq!(s.message, "retrying from the first step");
}

#[test]
fn event_kinds_are_written_as_their_names() {
    for kind in [
        EventKind::Apply,
        EventKind::Step,
        EventKind::Pause,
        EventKind::Resume,
        EventKind::Promote,
        EventKind::Abort,
        EventKind::Complete,
        EventKind::Weight,
        EventKind::Undo,
        EventKind::Retry,
        EventKind::Confirmed,
        EventKind::Analysis,
        EventKind::Degraded,
        EventKind::Gate,
    ] {
        assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        assert_eq!(kind.to_string(), kind.as_str());
    }
}

#[test]
fn a_rollout_completes_only_once_every_proxy_serves_the_candidate_all_traffic() {
    let spec = spec();
    let mut s = RolloutState::new(0);
    run(&mut s, &spec, 100, false);
    s.command(&spec, Command::Promote { full: true }, 200).unwrap();
    s.advance(&spec, 200, told(&s, false));
    assert_eq!((s.phase, s.traffic.clone()), (Phase::Progressing, Traffic::candidate()));
    assert!(!s.events.iter().any(|e| e.kind == EventKind::Complete));
    confirm(&mut s, 300);
    s.advance(&spec, 300, told(&s, false));
    assert_eq!(s.phase, Phase::Completed);
    let complete = s.events.iter().find(|e| e.kind == EventKind::Complete).unwrap();
    assert_eq!(complete.at, 300);
}

/// The spec with `extra` added at its top level.
fn spec_with(extra: &str) -> RolloutSpec {
    load_rollout(&format!("{SPEC}{extra}"), Format::Yaml).unwrap()
}

#[test]
fn a_stepped_rollback_holds_each_weight_its_interval_once_confirmed_and_ends_at_zero() {
    let spec = spec_with("abort: { steps: [25, 10, 0], interval: 10s }\n");
    let mut s = RolloutState::new(0);
    run(&mut s, &spec, 100, false);
    s.command(&spec, Command::SetWeight(30.0), 200).unwrap();
    confirm(&mut s, 300);
    s.command(&spec, Command::Abort, 1000).unwrap();
    // At once: aborted, the header route gone, the first weight below 30.
    assert_eq!(s.phase, Phase::Aborted);
    assert_eq!(
        s.traffic,
        Traffic {
            candidate_weight: 25.0,
            header_steps: Vec::new(),
            mirror_percent: 0.0,
            mirror_step: None,
        }
    );
    assert!(
        s.message.contains("stepping the candidate down through 25%, 10%, 0%"),
        "{}",
        s.message
    );
    // The interval counts from the confirmation, not from the abort.
    s.advance(&spec, 20_000, told(&s, false));
    assert_eq!(s.traffic.candidate_weight, 25.0, "not confirmed yet");
    confirm(&mut s, 20_000);
    assert_eq!(s.rollback_due(&spec), Some(30_000));
    s.advance(&spec, 29_999, told(&s, false));
    assert_eq!(s.traffic.candidate_weight, 25.0);
    s.advance(&spec, 30_000, told(&s, false));
    assert_eq!(s.traffic.candidate_weight, 10.0);
    confirm(&mut s, 30_500);
    s.advance(&spec, 40_500, told(&s, false));
    assert_eq!(s.traffic, Traffic::baseline());
    assert_eq!(s.rollback, None, "the last step ends it");
    assert_eq!(s.abort.as_ref().unwrap().confirmed_at, None, "0% is not confirmed yet");
    confirm(&mut s, 41_000);
    assert_eq!(s.abort.as_ref().unwrap().confirmed_at, Some(41_000));
    let steps: Vec<&str> = s
        .events
        .iter()
        .filter(|e| e.message.starts_with("rollback"))
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(
        steps,
        ["rollback: candidate weight 10%", "rollback: candidate weight 0%"]
    );
}

#[test]
fn a_stepped_rollback_starts_below_the_weight_and_a_second_abort_or_emergency_ends_it() {
    let spec = spec_with("abort: { steps: [50, 20] }\n");
    // At 5%, no step is below: straight to 0, as without steps.
    let mut s = RolloutState::new(0);
    run(&mut s, &spec, 100, false);
    assert_eq!(s.traffic.candidate_weight, 5.0);
    s.command(&spec, Command::Abort, 200).unwrap();
    assert_eq!((s.traffic.clone(), s.rollback.clone()), (Traffic::baseline(), None));
    // At 60%: 50, 20, then the implied 0; a second abort goes there at once.
    let mut s = RolloutState::new(0);
    run(&mut s, &spec, 100, false);
    s.command(&spec, Command::SetWeight(60.0), 200).unwrap();
    confirm(&mut s, 300);
    s.abort_stepped(
        &spec,
        400,
        "analysis: error rate".to_owned(),
        serde_json::Value::Null,
        350,
    );
    assert_eq!(s.traffic.candidate_weight, 50.0);
    assert_eq!(s.rollback.as_ref().unwrap().next, [20.0, 0.0]);
    s.command(&spec, Command::Abort, 500).unwrap();
    assert_eq!((s.traffic.clone(), s.rollback.clone()), (Traffic::baseline(), None));
    assert!(s.command(&spec, Command::Abort, 600).is_err(), "nothing left to abort");
    // An emergency during the rollback ends it the same way, and retry starts clean.
    let mut s2 = RolloutState::new(0);
    run(&mut s2, &spec, 100, false);
    s2.command(&spec, Command::SetWeight(60.0), 200).unwrap();
    confirm(&mut s2, 300);
    s2.abort_stepped(&spec, 400, "analysis".to_owned(), serde_json::Value::Null, 350);
    s2.rollback_now(700, "emergency.errorRate: 9% > 5%");
    assert_eq!(s2.traffic, Traffic::baseline());
    assert!(s2.message.contains("emergency.errorRate"), "{}", s2.message);
    s2.abort_stepped(&spec, 400, "analysis".to_owned(), serde_json::Value::Null, 350);
    s2.command(&spec, Command::Retry, 800).unwrap();
    assert_eq!((s2.phase, s2.rollback.clone()), (Phase::Progressing, None));
}

#[test]
fn a_webhook_step_holds_until_its_gate_opens_and_the_promotion_webhook_comes_last() {
    let spec = load_rollout(
        r#"
name: checkout-v2
route: checkout
proxies: ["http://127.0.0.1:9901"]
baseline: stable
candidate: canary
canary:
  steps:
    - setWeight: 5
    - webhook: { url: "http://127.0.0.1:9/load-test" }
    - setWeight: 50
promotionWebhook: { url: "http://127.0.0.1:9/confirm" }
"#,
        Format::Yaml,
    )
    .unwrap();
    let mut s = RolloutState::new(0);
    run(&mut s, &spec, 100, false);
    assert_eq!(s.step, 1);
    assert_eq!(s.gate(&spec).unwrap().url, "http://127.0.0.1:9/load-test");
    assert!(
        s.message
            .contains("waiting for http://127.0.0.1:9/load-test to answer 2xx"),
        "{}",
        s.message
    );
    let open = |s: &RolloutState| Evidence {
        step: s.step,
        gate_open: true,
        step_analysis_passed: false,
        passed_in_step: None,
    };
    // Paused by an operator, the gate is not called.
    s.command(&spec, Command::Pause, 200).unwrap();
    assert_eq!(s.gate(&spec), None);
    s.command(&spec, Command::Resume, 300).unwrap();
    s.advance(&spec, 400, open(&s));
    assert_eq!((s.step, s.traffic.candidate_weight), (3, 50.0));
    assert!(s.events.iter().any(|e| e.kind == EventKind::Gate));
    // The promotion webhook is the last step: not while 50% is unconfirmed, then until it opens.
    assert_eq!(s.gate(&spec), None);
    run(&mut s, &spec, 500, false);
    assert_eq!((s.step, s.phase), (3, Phase::Progressing));
    assert_eq!(s.gate(&spec).unwrap().url, "http://127.0.0.1:9/confirm");
    s.advance(&spec, 600, open(&s));
    confirm(&mut s, 700);
    s.advance(&spec, 700, told(&s, false));
    assert_eq!(s.phase, Phase::Completed);
}
