//! Every strategy path of the control loop in virtual time: the real [`Controller`] drives
//! in-process fake proxies (their admin API: `GET`/`PUT /routes` with `If-Match`, and scripted
//! `GET /stats`) under tokio's paused clock, so pauses, auto-promotion, rollback windows and ring
//! durations pass in virtual time and are asserted in virtual time. Tests synchronise on what
//! the controller publishes and reports, never on real sleeps.

mod rig;

use std::time::Duration;

use rig::{Rig, between, wait_until};
use switchyard_control::state::{Command, Event, EventKind, Phase};
use switchyard_testkit::fake_proxy::{candidate_rules, candidate_weight};

const CANARY: &str = r#"
name: checkout-v2
route: checkout
baseline: stable
candidate: canary
canary:
  steps:
    - setWeight: 5
    - pause: { duration: 5s }
    - setWeight: 25
    - pause: { duration: 5s }
    - setWeight: 50
    - pause: {}
    - setWeight: 100
analysis:
  interval: 1s
  window: 10s
  minRequests: 100
  failureLimit: 3
  metrics:
    - name: success-rate
      successRate: { min: 0.995 }
    - name: latency
      latencyP99Ms: { max: 500 }
    - name: vs-baseline
      errorRateVsBaseline: { maxRatio: 1.1, maxDiff: 0.005 }
  emergency:
    errorRate: { max: 0.05 }
    latencyP99Ms: { max: 2000 }
"#;

#[tokio::test(start_paused = true)]
async fn canary_pauses_last_their_duration_and_waits_for_promote() {
    let rig = Rig::start("strategies-canary", 1).await;
    let proxy = &rig.proxies[0];
    rig.apply(CANARY).await;

    rig.wait_weight(5.0, Duration::from_secs(3)).await;
    rig.wait_weight(25.0, Duration::from_secs(8)).await;
    rig.wait_weight(50.0, Duration::from_secs(8)).await;
    let status = rig
        .wait_status("checkout-v2", Duration::from_secs(3), "paused at 50%", |s| {
            s.phase == Phase::Paused && s.confirmed_weight == Some(50.0)
        })
        .await;
    assert_eq!(status.step, 5, "{status:?}");

    // Each timed pause counts from the confirmation of the weight before it, in virtual time.
    let (at5, at25, at50) = (
        proxy.published_at(5.0).expect("5% published"),
        proxy.published_at(25.0).expect("25% published"),
        proxy.published_at(50.0).expect("50% published"),
    );
    for (from, to) in [(at5, at25), (at25, at50)] {
        let pause = to - from;
        assert!(
            pause >= Duration::from_secs(5) && pause <= Duration::from_secs(7),
            "pause lasted {pause:?}"
        );
    }
    let events = rig.history("checkout-v2").await;
    let confirmed = |w: &'static str| move |e: &Event| e.kind == EventKind::Confirmed && e.message.ends_with(w);
    let step = |w: &'static str| move |e: &Event| e.kind == EventKind::Step && e.message.ends_with(w);
    assert!(between(&events, confirmed(" 5%"), step(" 25%")) >= 5_000, "{events:?}");
    assert!(between(&events, confirmed(" 25%"), step(" 50%")) >= 5_000, "{events:?}");

    // The indefinite pause holds however long it lasts.
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(proxy.weight(), 50.0);
    assert_eq!(rig.status("checkout-v2").await.phase, Phase::Paused);

    rig.controller
        .command("checkout-v2", Command::Promote { full: false })
        .await
        .expect("promote");
    rig.wait_weight(100.0, Duration::from_secs(3)).await;
    let status = rig
        .wait_status("checkout-v2", Duration::from_secs(3), "completed", |s| {
            s.phase == Phase::Completed && s.confirmed_weight == Some(100.0)
        })
        .await;
    assert_eq!(status.weight, 100.0);
    let weights: Vec<f64> = proxy.published().iter().map(|p| candidate_weight(&p.route)).collect();
    assert_eq!(weights, [5.0, 25.0, 50.0, 100.0]);
}

#[tokio::test(start_paused = true)]
async fn a_failing_canary_is_aborted_on_every_proxy() {
    let rig = Rig::start("strategies-canary-abort", 2).await;
    rig.apply(CANARY).await;
    rig.wait_weight(25.0, Duration::from_secs(10)).await;

    for proxy in &rig.proxies {
        proxy.fail_candidate(0.10);
    }
    let status = rig
        .wait_status("checkout-v2", Duration::from_secs(5), "aborted and confirmed", |s| {
            s.phase == Phase::Aborted && s.confirmed_weight == Some(0.0)
        })
        .await;
    for proxy in &rig.proxies {
        assert_eq!(proxy.weight(), 0.0, "{}", proxy.url);
        assert_eq!(candidate_rules(&proxy.route()), 0, "{}", proxy.url);
    }
    let abort = status.abort.expect("an abort record");
    assert!(abort.reason.contains("analysis"), "{abort:?}");
    assert!(abort.confirmed_at.is_some_and(|t| t >= abort.detected_at), "{abort:?}");
    assert!(!abort.measurements.is_null(), "{abort:?}");
    // Aborted means it stays there.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(rig.proxies.iter().all(|p| p.weight() == 0.0));
    assert_eq!(rig.status("checkout-v2").await.phase, Phase::Aborted);
}

const BLUE_GREEN: &str = r#"
name: storefront-green
route: checkout
baseline: stable
candidate: canary
blueGreen:
  previewMatch:
    headers: [{ name: x-environment, value: green }]
  autoPromotion: 30s
  prePromotionAnalysis:
    count: 5
    minRequests: 20
    metrics:
      - name: success-rate
        successRate: { min: 0.99 }
      - name: median-latency
        latencyP50Ms: { max: 100 }
  postPromotionAnalysis:
    count: 3
    metrics:
      - name: p99-vs-blue
        latencyP99VsBaseline: { maxRatio: 1.2 }
  switchSteps: [50]
  rollbackWindow: 10m
"#;

#[tokio::test(start_paused = true)]
async fn blue_green_promotes_itself_and_undo_restores_the_previous_table() {
    let rig = Rig::start("strategies-blue-green", 1).await;
    let proxy = &rig.proxies[0];
    rig.apply(BLUE_GREEN).await;

    // The preview route first, with no weighted traffic.
    wait_until(Duration::from_secs(3), "preview route", || {
        candidate_rules(&proxy.route()) == 1
    })
    .await;
    assert_eq!(proxy.weight(), 0.0);
    let preview_at = proxy.published()[0].at;

    // Pre-promotion analysis (5 measurements), then 30 s until the switch, by itself.
    // 50% is served and confirmed before 100% follows (at once: the steps are consecutive).
    wait_until(Duration::from_secs(45), "50% published", || {
        proxy.published_at(50.0).is_some()
    })
    .await;
    let switch_at = proxy.published_at(50.0).expect("50% published");
    assert!(
        switch_at - preview_at >= Duration::from_secs(30),
        "{:?}",
        switch_at - preview_at
    );
    let events = rig.history("storefront-green").await;
    let auto_promotion = between(
        &events,
        |e| e.kind == EventKind::Pause && e.message.contains("pausing 30s"),
        |e| e.kind == EventKind::Step && e.message.ends_with(" 50%"),
    );
    assert!(
        (30_000..32_000).contains(&auto_promotion),
        "{auto_promotion} ms; {events:?}"
    );
    rig.wait_weight(100.0, Duration::from_secs(3)).await;

    // Post-promotion analysis passes; the rollback window is open.
    rig.wait_status("storefront-green", Duration::from_secs(10), "rollback window", |s| {
        s.message.contains("pausing") || s.message.contains("left")
    })
    .await;
    let before_switch = proxy
        .published()
        .iter()
        .rev()
        .nth(1)
        .expect("an earlier table")
        .route
        .clone();
    let status = rig
        .controller
        .command("storefront-green", Command::Undo)
        .await
        .expect("undo in the rollback window");
    assert_eq!((status.phase, status.weight), (Phase::Paused, 50.0));
    wait_until(Duration::from_secs(3), "the previous table", || {
        proxy.route() == before_switch
    })
    .await;

    // Undo again: blue takes every weighted request; the preview route stays.
    rig.controller
        .command("storefront-green", Command::Undo)
        .await
        .expect("second undo");
    rig.wait_weight(0.0, Duration::from_secs(3)).await;
    assert_eq!(candidate_rules(&proxy.route()), 1);
    assert_eq!(rig.status("storefront-green").await.phase, Phase::Paused);
}

#[tokio::test(start_paused = true)]
async fn blue_green_completes_after_its_rollback_window() {
    let rig = Rig::start("strategies-blue-green-done", 1).await;
    rig.apply(BLUE_GREEN).await;
    rig.wait_weight(100.0, Duration::from_secs(60)).await;
    let status = rig
        .wait_status("storefront-green", Duration::from_secs(11 * 60), "completed", |s| {
            s.phase == Phase::Completed
        })
        .await;
    assert_eq!(status.confirmed_weight, Some(100.0));
    let events = rig.history("storefront-green").await;
    let window = between(
        &events,
        |e| e.kind == EventKind::Pause && e.message.contains("pausing 10m"),
        |e| e.kind == EventKind::Complete,
    );
    assert!((600_000..602_000).contains(&window), "{window} ms");
    wait_until(Duration::from_secs(3), "the preview route removed", || {
        candidate_rules(&rig.proxies[0].route()) == 0
    })
    .await;
    assert_eq!(rig.proxies[0].weight(), 100.0);
}

/// `config/examples/rollout-rings.yaml` with minutes for hours, so a run stays short.
const RINGS: &str = r#"
name: search-rings
route: checkout
baseline: stable
candidate: canary
rings:
  - name: internal
    match:
      headers: [{ name: x-user-group, oneOf: [internal] }]
    minDuration: 1m
    exitAnalysis:
      count: 3
      minRequests: 50
      metrics:
        - name: success-rate
          successRate: { min: 0.995 }
        - name: p999
          latencyP999Ms: { max: 1500 }
  - name: beta
    match:
      headers: [{ name: x-user-group, oneOf: [internal, beta] }]
    minDuration: 2m
    exitAnalysis:
      count: 3
      metrics:
        - name: success-rate
          successRate: { min: 0.995 }
        - name: median-vs-stable
          latencyP50VsBaseline: { maxRatio: 1.2 }
  - name: ten-percent
    weight: 10
    minDuration: 3m
    exitAnalysis:
      count: 3
      window: 60s
      metrics:
        - name: errors-vs-stable
          errorRateVsBaseline: { maxRatio: 1.1, maxDiff: 0.005 }
        - name: p99
          latencyP99Ms: { max: 500 }
  - name: everyone
    weight: 100
    exitAnalysis:
      count: 3
      metrics:
        - name: success-rate
          successRate: { min: 0.995 }
analysis:
  emergency:
    errorRate: { max: 0.05 }
    latencyP99Ms: { max: 2000 }
"#;

#[tokio::test(start_paused = true)]
async fn rings_open_in_order_after_their_durations_and_exit_analyses() {
    let rig = Rig::start("strategies-rings", 1).await;
    let proxy = &rig.proxies[0];
    rig.apply(RINGS).await;

    let status = rig
        .wait_status("search-rings", Duration::from_secs(2 * 3600), "completed", |s| {
            s.phase == Phase::Completed && s.confirmed_weight == Some(100.0)
        })
        .await;
    assert_eq!(status.weight, 100.0);
    // Completion drops the rings' header routes: everyone is on the candidate by weight.
    wait_until(Duration::from_secs(3), "header routes removed", || {
        candidate_rules(&proxy.route()) == 0
    })
    .await;

    // Published in ring order: internal (one header route), beta (two), 10%, everyone; then the
    // completed table without header routes.
    let published = proxy.published();
    let shape: Vec<(usize, f64)> = published
        .iter()
        .map(|p| (candidate_rules(&p.route), candidate_weight(&p.route)))
        .collect();
    assert_eq!(shape, [(1, 0.0), (2, 0.0), (2, 10.0), (2, 100.0), (0, 100.0)]);
    // Each ring stays open at least its minDuration (then its exit analysis's 3 s).
    let open = |i: usize| published[i + 1].at - published[i].at;
    for (i, min) in [(0, 60), (1, 120), (2, 180)] {
        let open = open(i);
        assert!(
            open >= Duration::from_secs(min) && open <= Duration::from_secs(min + 10),
            "ring {i} open {open:?}"
        );
    }
    let events = rig.history("search-rings").await;
    let analyses = events.iter().filter(|e| e.kind == EventKind::Analysis).count();
    assert_eq!(analyses, 4, "every ring's exit analysis passed: {events:?}");
}
