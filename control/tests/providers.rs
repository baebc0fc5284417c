//! Metric providers as an operator relies on them. Against a real Prometheus (Debian's, started
//! by testkit) scraping a real proxy in front of mock upstreams, under traffic,
//! `config/examples/rollout-prometheus.yaml` completes a healthy candidate and aborts one that
//! answers 5xx, the abort record naming the metric, the query's value and the limit. In virtual
//! time against fake proxies: a Prometheus nobody answers at aborts at `consecutiveErrorLimit`
//! with the reason, a provider that hangs never holds a measurement past its interval (1 s and
//! 1 m), and a `web` provider reading a mock JSON endpoint completes or aborts the rollout.

mod rig;

use std::time::Duration;

use rig::Rig;
use serde_json::Value;
use switchyard_config::{Format, load_config};
use switchyard_control::controller::{Controller, Status};
use switchyard_control::http::Http;
use switchyard_control::state::{EventKind, Phase};
use switchyard_control::store::Store;
use switchyard_proxy::{Options, Running, start};
use switchyard_testkit::{Behaviour, Client, MockUpstream, Prometheus, Scratch, Table, Traffic};

/// The example as written, with its proxy and its Prometheus at these addresses.
fn example(proxy: &str, prometheus: &str) -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/examples/rollout-prometheus.yaml"
    ))
    .expect("the example")
    .replace("http://127.0.0.1:9901", proxy)
    .replace("http://127.0.0.1:9090", prometheus)
}

/// The abort record's measurement row of the metric `name`.
fn row<'a>(status: &'a Status, name: &str) -> &'a Value {
    let abort = status.abort.as_ref().expect("an abort record");
    abort.measurements["results"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["name"] == name))
        .unwrap_or_else(|| panic!("no row {name} in {:?}", abort.measurements))
}

// ---- a real Prometheus scraping a real proxy --------------------------------------------------

async fn proxy(stable: &MockUpstream, canary: &MockUpstream) -> Running {
    let yaml = Table::new()
        .on_free_ports()
        .route("checkout")
        .track("stable", &[stable.addr()], 100.0)
        .track("canary", &[canary.addr()], 0.0)
        .yaml();
    start(load_config(&yaml, Format::Yaml, 1).unwrap(), Options::default())
        .await
        .unwrap()
}

/// Polls the rollout's status (real time) until `cond` holds; fails after `within`.
async fn wait_status(c: &Controller, name: &str, within: Duration, cond: impl Fn(&Status) -> bool) -> Status {
    let deadline = std::time::Instant::now() + within;
    loop {
        let status = c.status(name).await.expect("the rollout exists");
        if cond(&status) {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name}: not within {within:?}; status: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prometheus_example_completes_a_healthy_canary_and_aborts_a_faulty_one() {
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    let p = proxy(&stable, &canary).await;
    let prometheus = Prometheus::start("providers", &[p.admin.to_string()]).await;
    let _traffic = Traffic::start(format!("http://{}/", p.listen[0]));
    let scratch = Scratch::new("control-providers");
    let c = Controller::start(
        Store::open(&scratch.join("state")).unwrap(),
        Http::new(Duration::from_secs(2)),
    );
    let spec = example(&format!("http://{}", p.admin), &prometheus.address());
    // Prometheus scrapes the proxy before the rollout starts; had it not yet, the pauses would
    // hold until its data passes (as the analysis holds any step without evidence).
    prometheus.wait_fresh_scrape().await;
    let finished = |s: &Status| matches!(s.phase, Phase::Completed | Phase::Aborted);

    let status = c.apply(&spec, Format::Yaml).await.expect("the example applies");
    assert_eq!(status.name, "checkout-prometheus");
    let done = wait_status(&c, "checkout-prometheus", Duration::from_secs(120), finished).await;
    assert_eq!(done.phase, Phase::Completed, "{done:?}");
    // The last measurement judged both queries on Prometheus' data.
    let last = done.analysis.as_ref().expect("a measurement");
    let rows = last["results"].as_array().unwrap();
    for (name, limit) in [("error-budget", "≤ 0.01"), ("p99", "successCondition result[0] < 0.5")] {
        let r = rows.iter().find(|r| r["name"] == name).unwrap();
        assert_eq!(
            (r["outcome"].as_str(), r["limit"].as_str()),
            (Some("pass"), Some(limit)),
            "{r}"
        );
    }

    // Back to stable, then the same spec for a candidate answering one request in five with 500.
    let reset = Table::new()
        .route("checkout")
        .track("stable", &[stable.addr()], 100.0)
        .track("canary", &[canary.addr()], 0.0)
        .yaml();
    let r = Client::http1()
        .send(http::Method::PUT, &format!("http://{}/routes", p.admin), &[], reset)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    canary.fail_every(5);
    c.apply(&spec.replace("name: checkout-prometheus", "name: faulty"), Format::Yaml)
        .await
        .expect("the spec applies");
    let aborted = wait_status(&c, "faulty", Duration::from_secs(120), finished).await;
    assert_eq!(aborted.phase, Phase::Aborted, "{aborted:?}");
    let reason = &aborted.abort.as_ref().unwrap().reason;
    assert!(
        reason.starts_with("analysis: 3 failed measurements (failureLimit 3); last: error-budget: query value "),
        "{reason}"
    );
    assert!(reason.contains(" > max 0.01"), "{reason}");
    let budget = row(&aborted, "error-budget");
    assert_eq!(
        (budget["outcome"].as_str(), budget["limit"].as_str()),
        (Some("fail"), Some("≤ 0.01"))
    );
    // One request in five fails: Prometheus' ratio over 10 s (which still holds some of the
    // first candidate's clean requests) is beyond the limit, and the row and the reason say it.
    let value = budget["value"].as_f64().unwrap();
    assert!(value > 0.01, "{budget}");
    assert!(reason.contains(&format!(
        "query value {}",
        switchyard_control::analyze::provider::figure(value)
    )));
}

// ---- in virtual time, against fake proxies -----------------------------------------------------

/// The time from the analysis's start (every proxy confirmed the first weight) to the abort, ms.
async fn began_to_abort(rig: &Rig, name: &str) -> u64 {
    let events = rig.history(name).await;
    let began = events
        .iter()
        .find(|e| e.kind == EventKind::Confirmed)
        .expect("confirmed")
        .at;
    let abort = events.iter().find(|e| e.kind == EventKind::Abort).expect("aborted").at;
    abort - began
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_prometheus_aborts_at_the_consecutive_error_limit() {
    let rig = Rig::start("providers-unreachable", 1).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let nobody = format!("http://{closed}");
    rig.controller
        .apply(&example(&rig.proxies[0].url, &nobody), Format::Yaml)
        .await
        .expect("the example applies");
    let aborted = rig
        .wait_status("checkout-prometheus", Duration::from_secs(30), "aborted", |s| {
            s.phase == Phase::Aborted
        })
        .await;
    assert_eq!(
        aborted.abort.as_ref().unwrap().reason,
        format!(
            "analysis: metric error-budget could not be measured in 4 consecutive measurements (consecutiveErrorLimit 4); last: cannot reach Prometheus at {nobody}: connection refused"
        )
    );
    let budget = row(&aborted, "error-budget");
    assert_eq!(budget["outcome"], "error");
    // The fourth measurement, a second apart: refused at once, nothing waits longer.
    let took = began_to_abort(&rig, "checkout-prometheus").await;
    assert!(
        (4_000..5_000).contains(&took),
        "aborted {took} ms after the analysis began"
    );
    assert_eq!(rig.proxies[0].weight(), 0.0);
}

/// A canary judged on a web provider alone (interval `interval`, its own `timeout` line).
fn web_spec(name: &str, url: &str, interval: &str, extra: &str) -> String {
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
  window: {interval}
  failureLimit: 3
  consecutiveErrorLimit: 4
  metrics:
    - name: conversion
      web:
        url: "{url}?track={{{{candidate}}}}"
        jsonPath: $.conversion
        headers: [{{ name: authorization, value: Bearer kpi }}]
        min: 0.25{extra}
"#
    )
}

#[tokio::test(start_paused = true)]
async fn a_web_provider_completes_a_good_canary_and_aborts_a_bad_one() {
    let rig = Rig::start("providers-web", 1).await;
    let kpi = MockUpstream::start("kpi").await;
    let url = format!("http://{}/conversion", kpi.addr());
    kpi.set_body(r#"{"conversion": 0.31}"#);
    rig.apply(&web_spec("good", &url, "1s", "")).await;
    let done = rig
        .wait_status("good", Duration::from_secs(120), "finished", |s| {
            s.phase != Phase::Progressing
        })
        .await;
    assert_eq!(done.phase, Phase::Completed, "{done:?}");
    let seen = kpi.seen();
    assert_eq!(seen[0].uri.to_string(), "/conversion?track=canary");
    assert_eq!(seen[0].headers["authorization"], "Bearer kpi");

    kpi.set_body(r#"{"conversion": 0.12}"#);
    rig.apply(&web_spec("bad", &url, "1s", "")).await;
    let aborted = rig
        .wait_status("bad", Duration::from_secs(120), "finished", |s| {
            s.phase != Phase::Progressing
        })
        .await;
    assert_eq!(aborted.phase, Phase::Aborted, "{aborted:?}");
    assert_eq!(
        aborted.abort.as_ref().unwrap().reason,
        "analysis: 3 failed measurements (failureLimit 3); last: conversion: value 0.12 < min 0.25"
    );
    let conversion = row(&aborted, "conversion");
    assert_eq!(
        (conversion["value"].as_f64(), conversion["limit"].as_str()),
        (Some(0.12), Some("≥ 0.25"))
    );
}

/// However long a provider would take, each measurement ends within its interval (the
/// provider's own timeout, or 10 s or nine tenths of the interval, whichever is shorter), so
/// measurements keep their pace and the errors reach consecutiveErrorLimit on time.
#[tokio::test(start_paused = true)]
async fn a_provider_that_hangs_never_holds_a_measurement_past_its_interval() {
    let rig = Rig::start("providers-hang", 1).await;
    let hung = MockUpstream::start("hung").await;
    hung.set_behaviour(Behaviour::Hang);
    let url = format!("http://{}/conversion", hung.addr());
    for (name, interval, extra, waits) in [
        ("every-second", "1s", "", 900),
        ("every-minute", "1m", "", 10_000),
        ("own-timeout", "1m", "\n        timeout: 2s", 2_000),
    ] {
        rig.apply(&web_spec(name, &url, interval, extra)).await;
        let aborted = rig
            .wait_status(name, Duration::from_secs(600), "aborted", |s| s.phase == Phase::Aborted)
            .await;
        let reason = &aborted.abort.as_ref().unwrap().reason;
        assert!(
            reason.starts_with("analysis: metric conversion could not be measured in 4 consecutive measurements"),
            "{reason}"
        );
        assert!(
            reason.ends_with(&format!(
                "no answer within {}",
                humantime::format_duration(Duration::from_millis(waits))
            )),
            "{reason}"
        );
        // The fourth measurement is due four intervals after the start, and ends when its
        // provider is given up.
        let secs: u64 = if interval == "1s" { 1 } else { 60 };
        let expected = 4 * secs * 1000 + waits;
        let took = began_to_abort(&rig, name).await;
        assert!(
            (expected..expected + 1000).contains(&took),
            "{name}: aborted {took} ms after the analysis began, expected {expected}"
        );
    }
}
