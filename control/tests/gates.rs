//! Stepped rollbacks and webhook gates in virtual time: the real [`Controller`] drives
//! in-process fake proxies under tokio's paused clock; a gate is a mock upstream whose status
//! the test sets.

mod rig;

use std::time::Duration;

use rig::{Rig, wait_until};
use switchyard_control::state::{Command, EventKind, Phase};
use switchyard_testkit::MockUpstream;
use switchyard_testkit::fake_proxy::{candidate_rules, candidate_weight};

/// A canary that reaches 50% with a header route, judged on a threshold alone (no sequential
/// judge) so that a moderate fault fails it by `failureLimit`, and an emergency limit above.
const STEPPED: &str = r#"
name: checkout-v2
route: checkout
baseline: stable
candidate: canary
canary:
  steps:
    - setHeaderRoute: { headers: [{ name: x-canary, value: "true" }] }
    - setWeight: 50
    - pause: {}
abort: { steps: [25, 10, 0], interval: 10s }
analysis:
  interval: 1s
  window: 5s
  minRequests: 100
  failureLimit: 2
  sequentialConfidence: off
  metrics:
    - name: error-rate
      errorRate: { max: 0.01 }
  emergency:
    errorRate: { max: 0.3 }
"#;

/// The weights every fake proxy was given, in order.
fn weights(rig: &Rig) -> Vec<Vec<f64>> {
    rig.proxies
        .iter()
        .map(|p| p.published().iter().map(|p| candidate_weight(&p.route)).collect())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_failed_analysis_steps_the_candidate_down_each_weight_held_its_interval() {
    let rig = Rig::start("gates-stepped", 2).await;
    rig.apply(STEPPED).await;
    rig.wait_status("checkout-v2", Duration::from_secs(10), "paused at 50%", |s| {
        s.phase == Phase::Paused && s.confirmed_weight == Some(50.0)
    })
    .await;
    for proxy in &rig.proxies {
        proxy.fail_candidate(0.05);
    }
    let status = rig
        .wait_status("checkout-v2", Duration::from_secs(10), "aborted", |s| {
            s.phase == Phase::Aborted
        })
        .await;
    assert_eq!(status.weight, 25.0, "{status:?}");
    assert!(status.rollback.is_some(), "{status:?}");
    assert!(
        status.abort.as_ref().unwrap().reason.contains("error-rate"),
        "{status:?}"
    );
    // The header route goes with the first step down.
    rig.wait_weight(25.0, Duration::from_secs(3)).await;
    assert!(rig.proxies.iter().all(|p| candidate_rules(&p.route()) == 0));
    let status = rig
        .wait_status("checkout-v2", Duration::from_secs(60), "back on the baseline", |s| {
            s.confirmed_weight == Some(0.0)
        })
        .await;
    assert_eq!(status.rollback, None);
    let abort = status.abort.expect("an abort record");
    assert!(abort.confirmed_at.is_some(), "{abort:?}");
    for w in weights(&rig) {
        assert_eq!(w, [0.0, 50.0, 25.0, 10.0, 0.0]);
    }
    // Each weight was served its interval (in virtual time) before the next was published.
    for proxy in &rig.proxies {
        let at0 = proxy.published().last().unwrap().at;
        let (at25, at10) = (proxy.published_at(25.0).unwrap(), proxy.published_at(10.0).unwrap());
        assert!(at10 - at25 >= Duration::from_secs(10), "{:?}", at10 - at25);
        assert!(at0 - at10 >= Duration::from_secs(10), "{:?}", at0 - at10);
    }
    let history = rig.history("checkout-v2").await;
    let steps: Vec<&str> = history
        .iter()
        .filter(|e| e.kind == EventKind::Step && e.message.starts_with("rollback"))
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(
        steps,
        ["rollback: candidate weight 10%", "rollback: candidate weight 0%"]
    );
}

#[tokio::test(start_paused = true)]
async fn an_emergency_during_a_stepped_rollback_goes_straight_to_zero() {
    let rig = Rig::start("gates-stepped-emergency", 1).await;
    rig.apply(STEPPED).await;
    rig.wait_status("checkout-v2", Duration::from_secs(10), "paused at 50%", |s| {
        s.confirmed_weight == Some(50.0)
    })
    .await;
    // An operator's abort steps down too.
    rig.controller
        .command("checkout-v2", Command::Abort)
        .await
        .expect("abort");
    rig.wait_weight(25.0, Duration::from_secs(3)).await;
    // Then the candidate breaks badly: the analysis, still checking, ends the rollback at once.
    rig.proxies[0].fail_candidate(0.6);
    let status = rig
        .wait_status(
            "checkout-v2",
            Duration::from_secs(9),
            "at 0% before the interval",
            |s| s.confirmed_weight == Some(0.0),
        )
        .await;
    assert!(status.message.contains("emergency.errorRate"), "{status:?}");
    assert_eq!(weights(&rig)[0], [0.0, 50.0, 25.0, 0.0]);
}

#[tokio::test(start_paused = true)]
async fn a_second_abort_ends_a_stepped_rollback_and_without_steps_an_abort_is_instant() {
    let rig = Rig::start("gates-stepped-twice", 1).await;
    rig.apply(STEPPED).await;
    rig.wait_status("checkout-v2", Duration::from_secs(10), "at 50%", |s| {
        s.confirmed_weight == Some(50.0)
    })
    .await;
    rig.controller
        .command("checkout-v2", Command::Abort)
        .await
        .expect("abort");
    rig.wait_weight(25.0, Duration::from_secs(3)).await;
    rig.controller
        .command("checkout-v2", Command::Abort)
        .await
        .expect("a second abort");
    rig.wait_weight(0.0, Duration::from_secs(3)).await;
    assert_eq!(weights(&rig)[0], [0.0, 50.0, 25.0, 0.0]);

    let rig = Rig::start("gates-instant", 1).await;
    rig.apply(&STEPPED.replace("abort: { steps: [25, 10, 0], interval: 10s }\n", ""))
        .await;
    rig.wait_status("checkout-v2", Duration::from_secs(10), "at 50%", |s| {
        s.confirmed_weight == Some(50.0)
    })
    .await;
    rig.controller
        .command("checkout-v2", Command::Abort)
        .await
        .expect("abort");
    rig.wait_weight(0.0, Duration::from_secs(3)).await;
    assert_eq!(weights(&rig)[0], [0.0, 50.0, 0.0]);
}

/// A canary with a gate at 20% at `url` and a promotion webhook at `promotion`.
fn gated(url: &str, promotion: &str, deadline: &str) -> String {
    format!(
        r#"
name: checkout-v2
route: checkout
baseline: stable
candidate: canary
progressDeadline: {deadline}
canary:
  steps:
    - setWeight: 20
    - webhook: {{ url: "{url}/load-test", timeout: 2s, interval: 5s }}
    - setWeight: 60
promotionWebhook: {{ url: "{promotion}/confirm-promotion", interval: 5s }}
"#
    )
}

#[tokio::test(start_paused = true)]
async fn a_webhook_step_holds_the_rollout_until_it_answers_2xx_and_promotion_waits_for_its_own() {
    let (gate, promotion) = (
        MockUpstream::start("gate").await,
        MockUpstream::start("promotion").await,
    );
    gate.set_status(503);
    promotion.set_status(409);
    let rig = Rig::start("gates-webhook", 1).await;
    rig.apply(&gated(
        &format!("http://{}", gate.addr()),
        &format!("http://{}", promotion.addr()),
        "10m",
    ))
    .await;
    rig.wait_weight(20.0, Duration::from_secs(3)).await;
    wait_until(Duration::from_secs(30), "the gate called three times", || {
        gate.requests() >= 3
    })
    .await;
    let status = rig.status("checkout-v2").await;
    assert_eq!(
        (status.phase, status.step, status.weight),
        (Phase::Progressing, 1, 20.0)
    );
    let held = status.gate.expect("the gate in the status");
    assert!(!held.open);
    assert!(held.last_error.as_deref().unwrap().contains("503"), "{held:?}");
    // Called once an interval, never faster.
    let seen = gate.seen();
    assert!(
        seen.iter()
            .all(|s| s.method == http::Method::POST && s.uri.path() == "/load-test")
    );
    let body: serde_json::Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(body["rollout"], "checkout-v2");
    assert_eq!(body["gate"], "step");
    assert_eq!(body["step"], 2);
    assert_eq!(body["weights"]["stable"], 80.0);
    assert_eq!(body["weights"]["canary"], 20.0);
    assert_eq!(body["phase"], "Progressing");

    // It opens: the rollout goes on to 60%, then holds at the promotion webhook.
    gate.set_status(200);
    let status = rig
        .wait_status(
            "checkout-v2",
            Duration::from_secs(10),
            "held at the promotion webhook",
            |s| s.confirmed_weight == Some(60.0) && s.gate.as_ref().is_some_and(|g| g.step == 3 && g.calls >= 2),
        )
        .await;
    assert_eq!((status.phase, status.step, status.steps), (Phase::Progressing, 3, 4));
    assert!(
        status.message.contains("/confirm-promotion to answer 2xx"),
        "{status:?}"
    );
    promotion.set_status(204);
    let status = rig
        .wait_status("checkout-v2", Duration::from_secs(10), "completed", |s| {
            s.phase == Phase::Completed
        })
        .await;
    assert_eq!(status.weight, 100.0);
    assert_eq!(weights(&rig)[0], [20.0, 60.0, 100.0]);
    let asked: Vec<serde_json::Value> = promotion
        .seen()
        .iter()
        .map(|s| serde_json::from_slice(&s.body).unwrap())
        .collect();
    assert!(asked.len() >= 3, "{asked:?}");
    assert!(
        asked
            .iter()
            .all(|b| b["gate"] == "promotion" && b["weights"]["canary"] == 60.0 && b["step"] == 4)
    );
    assert!(gate.seen().iter().all(|s| s.uri.path() == "/load-test"));
    assert!(
        rig.history("checkout-v2")
            .await
            .iter()
            .any(|e| e.kind == EventKind::Gate && e.message.contains("/load-test answered 2xx"))
    );
}

#[tokio::test(start_paused = true)]
async fn a_gate_shut_past_the_progress_deadline_aborts_and_an_unreachable_one_says_why() {
    // Nothing listens on the gate's port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let rig = Rig::start("gates-deadline", 1).await;
    let nowhere = format!("http://127.0.0.1:{port}");
    rig.apply(&gated(&nowhere, &nowhere, "1m")).await;
    let status = rig
        .wait_status("checkout-v2", Duration::from_secs(90), "aborted at the gate", |s| {
            s.phase == Phase::Aborted
        })
        .await;
    let reason = status.abort.expect("an abort record").reason;
    assert!(
        reason.starts_with(&format!(
            "step 2: http://127.0.0.1:{port}/load-test did not answer 2xx within the progress deadline (1m); last:"
        )),
        "{reason}"
    );
    assert!(reason.contains("refused"), "{reason}");
    rig.wait_weight(0.0, Duration::from_secs(3)).await;
}

#[tokio::test(start_paused = true)]
async fn the_gated_example_runs_through_its_gates_and_steps_down_on_abort() {
    let gate = MockUpstream::start("gate").await;
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/examples/rollout-gated.yaml"
    ))
    .unwrap()
    .replace("http://127.0.0.1:9960", &format!("http://{}", gate.addr()));
    let rig = Rig::start("gates-example", 1).await;
    let spec: String = text
        .lines()
        .filter(|l| !l.starts_with("proxies:"))
        .collect::<Vec<_>>()
        .join("\n");
    rig.apply(&spec).await;
    rig.wait_status("payments-v4", Duration::from_secs(30), "at 50%", |s| {
        s.confirmed_weight == Some(50.0)
    })
    .await;
    rig.controller
        .command("payments-v4", Command::Abort)
        .await
        .expect("abort");
    rig.wait_status("payments-v4", Duration::from_secs(60), "back at 0%", |s| {
        s.confirmed_weight == Some(0.0)
    })
    .await;
    assert_eq!(weights(&rig)[0], [10.0, 50.0, 25.0, 10.0, 0.0]);
    assert!(gate.seen().iter().any(|s| s.uri.path() == "/load-test"));
}

#[tokio::test(start_paused = true)]
async fn time_paused_by_an_operator_at_a_gate_does_not_count_toward_its_deadline() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = format!("http://127.0.0.1:{port}");
    let rig = Rig::start("gates-paused", 1).await;
    rig.apply(&gated(&nowhere, &nowhere, "1m")).await;
    rig.wait_status("checkout-v2", Duration::from_secs(10), "at the gate", |s| {
        s.gate.as_ref().is_some_and(|g| g.calls >= 1)
    })
    .await;
    rig.controller
        .command("checkout-v2", Command::Pause)
        .await
        .expect("pause");
    tokio::time::sleep(Duration::from_secs(300)).await;
    rig.controller
        .command("checkout-v2", Command::Resume)
        .await
        .expect("resume");
    // Resumed after five minutes paused, the gate still has most of its minute.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let status = rig.status("checkout-v2").await;
    assert_eq!(status.phase, Phase::Progressing, "{status:?}");
    let status = rig
        .wait_status(
            "checkout-v2",
            Duration::from_secs(90),
            "aborted at the gate in the end",
            |s| s.phase == Phase::Aborted,
        )
        .await;
    assert!(status.abort.unwrap().reason.contains("within the progress deadline"));
}
