//! What an operator counts on from the control loop's judgement, in virtual time against fake
//! proxies: a rollout is judged only by requests served after its analysis began, measurements
//! come every `interval` (1 s, 10 s and 1 m), a proxy that hangs never holds up a command or an
//! abort, a step nobody confirms says so by its progress deadline, and no pause passes without
//! evidence.

mod rig;

use std::time::Duration;

use rig::{Rig, wait_until};
use switchyard_control::state::{Command, EventKind, Phase};
use tokio::time::Instant;

/// A canary judged by a background analysis of its error rate alone: `failureLimit` windows
/// above 5% abort (no sequential judge, no emergency, so the count of failures is what acts).
fn canary(name: &str, interval: &str, window: &str, failure_limit: u32) -> String {
    format!(
        r#"
name: {name}
route: checkout
baseline: stable
candidate: canary
canary:
  steps:
    - setWeight: 20
    - pause: {{ duration: 30s }}
    - setWeight: 100
analysis:
  interval: {interval}
  window: {window}
  minRequests: 50
  failureLimit: {failure_limit}
  sequentialConfidence: off
  metrics:
    - name: errors
      errorRate: {{ max: 0.05 }}
"#
    )
}

#[tokio::test(start_paused = true)]
async fn a_fixed_candidate_applied_after_an_abort_is_judged_by_its_own_requests() {
    let rig = Rig::start("judgement-own-requests", 1).await;
    let proxy = &rig.proxies[0];
    proxy.fail_candidate(0.30);
    rig.apply(&canary("first", "1s", "10s", 3)).await;
    rig.wait_status("first", Duration::from_secs(30), "aborted", |s| {
        s.phase == Phase::Aborted
    })
    .await;

    // Its 30% go on for a few seconds more (the faulty build still answering), then the
    // candidate is fixed: the proxy's 10 s window still holds mostly the old errors. A rollout
    // applied now must not see them.
    tokio::time::sleep(Duration::from_secs(5)).await;
    proxy.fail_candidate(0.0);
    rig.apply(&canary("second", "1s", "10s", 3)).await;
    let done = rig
        .wait_status("second", Duration::from_secs(120), "completed", |s| {
            matches!(s.phase, Phase::Completed | Phase::Aborted)
        })
        .await;
    assert_eq!(done.phase, Phase::Completed, "{done:?}");

    // And a retry starts clean too.
    proxy.fail_candidate(0.10);
    let third = rig.apply(&canary("third", "1s", "10s", 3)).await;
    assert_eq!(third.phase, Phase::Progressing);
    rig.wait_status("third", Duration::from_secs(30), "aborted", |s| {
        s.phase == Phase::Aborted
    })
    .await;
    proxy.fail_candidate(0.0);
    rig.controller.command("third", Command::Retry).await.unwrap();
    let retried = rig
        .wait_status("third", Duration::from_secs(120), "completed", |s| {
            matches!(s.phase, Phase::Completed | Phase::Aborted)
        })
        .await;
    assert_eq!(retried.phase, Phase::Completed, "{retried:?}");
    assert!(retried.abort.is_none(), "retry clears the abort: {retried:?}");
}

/// A candidate failing 20% from the start, `failureLimit: 3`: the abort comes with the third
/// measurement, three intervals after the analysis began, whatever the interval.
#[tokio::test(start_paused = true)]
async fn failure_limit_counts_measurements_one_interval_apart() {
    for (interval, window, secs) in [("1s", "10s", 1), ("10s", "10s", 10), ("1m", "1m", 60)] {
        let rig = Rig::start(&format!("judgement-interval-{secs}"), 1).await;
        rig.proxies[0].fail_candidate(0.20);
        rig.apply(&canary("timed", interval, window, 3)).await;
        let aborted = rig
            .wait_status("timed", Duration::from_secs(10 * secs + 30), "aborted", |s| {
                s.phase == Phase::Aborted
            })
            .await;
        let events = rig.history("timed").await;
        let began = events
            .iter()
            .find(|e| e.kind == EventKind::Confirmed && e.message.ends_with(" 20%"))
            .expect("20% confirmed")
            .at;
        let abort = events.iter().find(|e| e.kind == EventKind::Abort).expect("aborted").at;
        let took = abort - began;
        assert!(
            (3 * secs * 1000..3 * secs * 1000 + 1000).contains(&took),
            "interval {interval}: aborted {took} ms after the analysis began; {aborted:?}"
        );
        assert!(
            aborted.abort.as_ref().unwrap().reason.contains("3 failed measurements")
                || aborted.abort.as_ref().unwrap().reason.contains("failureLimit 3"),
            "{aborted:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn initial_delay_holds_the_first_measurement_back() {
    let rig = Rig::start("judgement-initial-delay", 1).await;
    rig.proxies[0].fail_candidate(0.20);
    let spec = canary("delayed", "10s", "10s", 1).replace("  interval: 10s", "  initialDelay: 1m\n  interval: 10s");
    rig.apply(&spec).await;
    rig.wait_status("delayed", Duration::from_secs(120), "aborted", |s| {
        s.phase == Phase::Aborted
    })
    .await;
    let events = rig.history("delayed").await;
    let began = events
        .iter()
        .find(|e| e.kind == EventKind::Confirmed && e.message.ends_with(" 20%"))
        .unwrap()
        .at;
    let abort = events.iter().find(|e| e.kind == EventKind::Abort).unwrap().at;
    assert!((70_000..71_000).contains(&(abort - began)), "{} ms", abort - began);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_proxy_holds_up_no_command_and_an_abort_reaches_the_others_at_once() {
    let rig = Rig::start("judgement-hang", 2).await;
    let (healthy, stuck) = (&rig.proxies[0], &rig.proxies[1]);
    rig.apply(&canary("frozen", "1s", "10s", 3)).await;
    rig.wait_weight(20.0, Duration::from_secs(5)).await;

    // One proxy freezes mid-rollout: it accepts connections and never answers.
    stuck.hang(true);
    // Let the controller get stuck on it: a stats read or a publish in flight.
    let calls = healthy.stats_calls();
    wait_until(Duration::from_secs(10), "another measurement", || {
        healthy.stats_calls() > calls + 1
    })
    .await;

    // Status and abort are answered without any virtual time passing.
    let asked = Instant::now();
    let status = rig.controller.status("frozen").await.unwrap();
    assert_eq!(status.phase, Phase::Progressing);
    let aborted = rig.controller.command("frozen", Command::Abort).await.unwrap();
    assert_eq!(Instant::now(), asked, "answered between I/O, never behind it");
    assert_eq!(
        aborted.phase,
        Phase::Aborted,
        "the reply shows the state after the command"
    );

    // The healthy proxy serves the baseline well before a call to the stuck one could time out
    // (the rig's client waits 5 s).
    wait_until(Duration::from_secs(1), "the healthy proxy on the baseline", || {
        healthy.weight() == 0.0
    })
    .await;
    assert_eq!(stuck.weight(), 20.0, "the frozen proxy took nothing");
    // Status names the proxy and why, once its call timed out.
    let status = rig
        .wait_status("frozen", Duration::from_secs(30), "the stuck proxy reported", |s| {
            s.proxies[1].error.is_some()
        })
        .await;
    assert_eq!(status.proxies[0].error, None);
    assert!(
        status.proxies[1].error.as_deref().unwrap().contains("no answer within"),
        "{status:?}"
    );
    // It comes back: it gets the abort too, and the abort is confirmed.
    stuck.hang(false);
    wait_until(
        Duration::from_secs(60),
        "the proxy that came back on the baseline",
        || stuck.weight() == 0.0,
    )
    .await;
    rig.wait_status("frozen", Duration::from_secs(5), "abort confirmed", |s| {
        s.abort.as_ref().is_some_and(|a| a.confirmed_at.is_some())
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_proxy_that_never_confirms_degrades_the_rollout_by_its_deadline_and_can_abort_it() {
    for abort in [false, true] {
        let rig = Rig::start(&format!("judgement-deadline-{abort}"), 2).await;
        rig.proxies[1].hang(true);
        let spec = format!(
            "progressDeadline: 1m\nprogressDeadlineAbort: {abort}\n{}",
            canary("stalled", "1s", "10s", 3)
        );
        // Apply checks the tables of the proxies that answer, giving the others a moment; the
        // hanging one does not hold it up, and is reported later.
        let asked = Instant::now();
        rig.apply(&spec).await;
        assert!(
            Instant::now() - asked <= Duration::from_millis(200),
            "{:?}",
            Instant::now() - asked
        );
        let status = rig.status("stalled").await;
        assert!(status.degraded.is_none());
        let status = rig
            .wait_status("stalled", Duration::from_secs(90), "degraded or aborted", |s| {
                if abort {
                    s.phase == Phase::Aborted
                } else {
                    s.degraded.is_some()
                }
            })
            .await;
        let stuck = rig.proxies[1].url.clone();
        if abort {
            assert_eq!(status.phase, Phase::Aborted);
            let reason = &status.abort.as_ref().unwrap().reason;
            assert!(reason.starts_with("progress deadline: "), "{reason}");
            assert!(reason.contains(&stuck), "{reason}");
        } else {
            let degraded = status.degraded.as_ref().unwrap();
            assert_eq!(degraded.proxies.len(), 1);
            assert_eq!(degraded.proxies[0].url, stuck);
            assert!(
                degraded
                    .message
                    .contains("did not confirm the traffic within the progress deadline (1m)"),
                "{}",
                degraded.message
            );
            assert_eq!(status.phase, Phase::Progressing, "reported, not aborted");
            // It comes back: the condition clears.
            rig.proxies[1].hang(false);
            rig.wait_status("stalled", Duration::from_secs(60), "recovered", |s| {
                s.degraded.is_none()
            })
            .await;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_timed_pause_without_evidence_holds_and_promote_is_the_override() {
    let rig = Rig::start("judgement-evidence", 1).await;
    // Every window has 100 requests/s of candidate, never the million asked for: inconclusive.
    let spec = canary("starved", "1s", "10s", 3).replace("minRequests: 50", "minRequests: 1000000");
    rig.apply(&spec).await;
    let held = rig
        .wait_status("starved", Duration::from_secs(60), "held", |s| s.phase == Phase::Paused)
        .await;
    assert!(
        held.message.contains("no measurement of the analysis passed"),
        "{held:?}"
    );
    assert_eq!(held.weight, 20.0);
    // However long it waits, it does not go on by itself.
    tokio::time::sleep(Duration::from_secs(600)).await;
    let still = rig.status("starved").await;
    assert_eq!((still.phase, still.weight), (Phase::Paused, 20.0));
    // Promote passes it, and says it is an override.
    rig.controller
        .command("starved", Command::Promote { full: false })
        .await
        .unwrap();
    rig.wait_weight(100.0, Duration::from_secs(5)).await;
    let events = rig.history("starved").await;
    let promoted = events.iter().find(|e| e.kind == EventKind::Promote).unwrap();
    assert!(promoted.message.contains("operator's override"), "{}", promoted.message);
}

#[tokio::test(start_paused = true)]
async fn two_operators_applying_to_one_route_at_once_get_one_rollout() {
    let rig = Rig::start("judgement-two-operators", 1).await;
    let url = rig.proxies[0].url.clone();
    let with_proxy = |name: &str| format!("proxies: [\"{url}\"]\n{}", canary(name, "1s", "10s", 3));
    let (a, b) = (with_proxy("left"), with_proxy("right"));
    let (left, right) = tokio::join!(
        rig.controller.apply(&a, switchyard_config::Format::Yaml),
        rig.controller.apply(&b, switchyard_config::Format::Yaml),
    );
    let refused = match (&left, &right) {
        (Ok(_), Err(e)) | (Err(e), Ok(_)) => e.to_string(),
        _ => panic!("exactly one of two applies must win: {left:?} / {right:?}"),
    };
    assert!(
        refused.starts_with("route \"checkout\" is being rolled out by "),
        "{refused}"
    );
    assert_eq!(rig.controller.list().await.len(), 1);
}
