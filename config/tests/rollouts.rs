//! Rollout specs: the reference canary means exactly what it says, every example reads back
//! equal after serializing, every kind of problem is reported with its path and all at once,
//! and reading never panics.

use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use switchyard_config::rollout::{
    self, AnalysisSpec, BlueGreenSpec, CanarySpec, EmergencySpec, Judge, MetricCheck, MetricSpec, Pause, Quantile,
    Ring, RingsSpec, Step,
};
use switchyard_config::schema::{RequestMatch, ValueMatch};
use switchyard_config::{Format, RolloutSpec, load_rollout};

fn examples_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// Every `rollout-*` example, by file name.
fn rollout_examples() -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(examples_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with("rollout-"))
        .map(|name| {
            let text = std::fs::read_to_string(examples_dir().join(&name)).unwrap();
            (name, text)
        })
        .collect();
    files.sort();
    assert_eq!(files.len(), 8, "{files:?}");
    files
}

fn load(name: &str) -> RolloutSpec {
    let text = std::fs::read_to_string(examples_dir().join(name)).unwrap();
    load_rollout(&text, Format::Yaml).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The problems of `yaml`, as `path: message` lines.
fn errors(yaml: &str) -> Vec<String> {
    match load_rollout(yaml, Format::Yaml) {
        Ok(spec) => panic!("expected problems, read {spec:?}"),
        Err(e) => e.errors().iter().map(ToString::to_string).collect(),
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn header(name: &str, value: &str) -> RequestMatch {
    RequestMatch {
        headers: vec![ValueMatch {
            name: name.into(),
            value: Some(value.into()),
            one_of: None,
            regex: None,
            present: None,
        }],
        ..RequestMatch::default()
    }
}

fn metric(name: &str, check: MetricCheck) -> MetricSpec {
    MetricSpec {
        name: name.into(),
        check,
    }
}

/// An analysis with every default.
fn default_analysis() -> AnalysisSpec {
    AnalysisSpec {
        initial_delay: Duration::ZERO,
        interval: secs(1),
        window: secs(10),
        min_requests: 100,
        count: None,
        failure_limit: 3,
        inconclusive_limit: 0,
        consecutive_error_limit: 4,
        sequential_confidence: Some(rollout::SEQUENTIAL_CONFIDENCE),
        series: Default::default(),
        metrics: vec![],
        emergency: EmergencySpec::default(),
    }
}

#[test]
fn the_reference_canary_means_what_it_says() {
    let spec = load("rollout-canary.yaml");
    let pause = |d: Option<u64>| Step::Pause(Pause { duration: d.map(secs) });
    let expected = RolloutSpec {
        name: "checkout-v2".into(),
        route: "checkout".into(),
        proxies: rollout::Proxies::Urls(vec!["http://127.0.0.1:9901".into()]),
        baseline: "stable".into(),
        candidate: "canary".into(),
        strategy: rollout::Strategy::Canary(CanarySpec {
            steps: vec![
                Step::SetWeight(5.0),
                pause(Some(5)),
                Step::SetWeight(25.0),
                pause(Some(5)),
                Step::SetWeight(50.0),
                pause(None),
                Step::SetWeight(100.0),
            ],
        }),
        analysis: Some(AnalysisSpec {
            metrics: vec![
                metric("success-rate", MetricCheck::SuccessRate { min: 0.995 }),
                metric(
                    "latency",
                    MetricCheck::Latency {
                        quantile: Quantile::P99,
                        max_ms: 500.0,
                    },
                ),
                metric(
                    "vs-baseline",
                    MetricCheck::ErrorRateVsBaseline {
                        max_ratio: Some(1.1),
                        max_diff: Some(0.005),
                    },
                ),
            ],
            emergency: EmergencySpec {
                error_rate: Some(0.05),
                latency_p99_ms: Some(2000.0),
            },
            ..default_analysis()
        }),
        notify: None,
        progress_deadline: rollout::PROGRESS_DEADLINE,
        progress_deadline_abort: false,
        abort: rollout::AbortSpec::default(),
        promotion_webhook: None,
    };
    assert_eq!(spec, expected);
    assert_eq!(spec.strategy.key(), "canary");
    let keys: Vec<&str> = match &spec.strategy {
        rollout::Strategy::Canary(c) => c.steps.iter().map(Step::key).collect(),
        _ => unreachable!(),
    };
    assert_eq!(
        keys,
        [
            "setWeight",
            "pause",
            "setWeight",
            "pause",
            "setWeight",
            "pause",
            "setWeight"
        ]
    );
}

#[test]
fn defaults_are_filled_in() {
    let head = "name: r\nroute: api\nproxies: [\"http://127.0.0.1:9901\"]\nbaseline: blue\ncandidate: green\n";
    let spec = load_rollout(
        &format!("{head}canary: {{steps: [{{pause: }}]}}\nanalysis: {{}}"),
        Format::Yaml,
    )
    .unwrap();
    assert_eq!(spec.analysis, Some(default_analysis()));
    assert_eq!(
        spec.strategy,
        rollout::Strategy::Canary(CanarySpec {
            steps: vec![Step::Pause(Pause { duration: None })]
        })
    );

    let spec = load_rollout(&format!("{head}blueGreen: {{}}"), Format::Yaml).unwrap();
    assert_eq!(
        spec.strategy,
        rollout::Strategy::BlueGreen(BlueGreenSpec {
            preview_match: header("x-environment", "green"),
            auto_promotion: None,
            pre_promotion_analysis: None,
            post_promotion_analysis: None,
            switch_steps: vec![],
            rollback_window: secs(300),
        })
    );
    assert_eq!(spec.analysis, None);

    let spec = load_rollout(&format!("{head}rings: [{{name: all, weight: 100}}]"), Format::Yaml).unwrap();
    assert_eq!(
        spec.strategy,
        rollout::Strategy::Rings(RingsSpec {
            rings: vec![Ring {
                name: "all".into(),
                matches: None,
                weight: Some(100.0),
                exit_analysis: None,
                min_duration: Duration::ZERO,
            }]
        })
    );
}

#[test]
fn the_other_examples_mean_what_they_say() {
    let rollout::Strategy::BlueGreen(bg) = load("rollout-blue-green.yaml").strategy else {
        panic!("blue-green")
    };
    assert_eq!(bg.preview_match, header("x-environment", "green"));
    assert_eq!((bg.auto_promotion, bg.rollback_window), (Some(secs(120)), secs(600)));
    assert_eq!(bg.switch_steps, [10.0, 50.0]);
    assert_eq!(bg.pre_promotion_analysis.unwrap().count, Some(30));

    let rollout::Strategy::Rings(rings) = load("rollout-rings.yaml").strategy else {
        panic!("rings")
    };
    let groups: Vec<Option<Vec<String>>> = rings
        .rings
        .iter()
        .map(|r| r.matches.as_ref().map(|m| m.headers[0].one_of.clone().unwrap()))
        .collect();
    assert_eq!(
        groups,
        [
            Some(vec!["internal".to_owned()]),
            Some(vec!["internal".to_owned(), "beta".to_owned()]),
            None,
            None
        ]
    );
    let weights: Vec<Option<f64>> = rings.rings.iter().map(|r| r.weight).collect();
    assert_eq!(weights, [None, None, Some(10.0), Some(100.0)]);
    assert!(rings.rings.iter().all(|r| r.exit_analysis.is_some()));

    let spec = load("rollout-canary-header.yaml");
    let rollout::Strategy::Canary(canary) = &spec.strategy else {
        panic!("canary")
    };
    assert_eq!(canary.steps[0], Step::SetHeaderRoute(header("x-canary", "true")));
    assert!(matches!(&canary.steps[1], Step::Analysis(a) if a.count == Some(20)));
    assert_eq!(
        spec.analysis.unwrap().metrics[0].check,
        MetricCheck::SequentialErrorRate { confidence: 0.99 }
    );
}

/// Serializes `spec` as JSON and as YAML and reads both back.
fn assert_round_trip(name: &str, spec: &RolloutSpec) {
    let json = serde_json::to_string(spec).unwrap();
    let from_json = load_rollout(&json, Format::Json).unwrap_or_else(|e| panic!("{name} as JSON:\n{json}\n{e}"));
    assert_eq!(&from_json, spec, "{name} as JSON:\n{json}");
    let yaml = serde_yaml_ng::to_string(spec).unwrap();
    let from_yaml = load_rollout(&yaml, Format::Yaml).unwrap_or_else(|e| panic!("{name} as YAML:\n{yaml}\n{e}"));
    assert_eq!(&from_yaml, spec, "{name} as YAML:\n{yaml}");
}

#[test]
fn every_example_reads_back_equal_after_serializing() {
    for (name, text) in rollout_examples() {
        let spec = load_rollout(&text, Format::Yaml).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_round_trip(&name, &spec);
    }
}

#[test]
fn every_step_and_check_kind_reads_back_equal() {
    let text = r#"
name: all-kinds
route: api
proxies: ["http://127.0.0.1:9901", "http://[::1]:9902/"]
baseline: stable
candidate: canary
notify: https://hooks.example.com/x?y=1
canary:
  steps:
    - setWeight: 0.5
    - pause: { duration: 1m 30s 250ms }
    - setHeaderRoute: { method: [GET, HEAD], pathPrefix: /api, cookies: [{ name: uid, regex: "^a" }] }
    - analysis: { count: 3, interval: 2s, window: 4s, minRequests: 1, failureLimit: 1, inconclusiveLimit: 2, consecutiveErrorLimit: 1, sequentialConfidence: off }
analysis:
  sequentialConfidence: 0.9
  metrics:
    - { name: m1, successRate: { min: 0.9 } }
    - { name: m2, errorRate: { max: 0.1 } }
    - { name: m3, latencyP50Ms: { max: 100 } }
    - { name: m4, latencyP90Ms: { max: 200.5 } }
    - { name: m5, latencyP99Ms: { max: 300 } }
    - { name: m6, latencyP999Ms: { max: 400 } }
    - { name: m7, requestRate: { min: 0 } }
    - { name: m8, errorRateVsBaseline: { maxRatio: 1.5 } }
    - { name: m9, errorRateVsBaseline: { maxDiff: 0 } }
    - { name: m10, latencyP50VsBaseline: { maxRatio: 1.1 } }
    - { name: m11, latencyP90VsBaseline: { maxRatio: 1.2 } }
    - { name: m12, latencyP99VsBaseline: { maxRatio: 1.3 } }
    - { name: m13, latencyP999VsBaseline: { maxRatio: 0.9 } }
    - { name: m14, sequentialErrorRate: { confidence: 0.95 } }
    - { name: m15, prometheus: { address: "http://prom:9090/prefix", query: 'sum(x{track="{{ candidate }}"})', max: 0.01, min: 0, timeout: 500ms } }
    - name: m16
      web:
        url: "http://kpi.internal:8080/api/{{route}}?track={{candidate}}"
        jsonPath: "$.tracks[?@.name == 'canary'].conversion"
        headers: [{ name: authorization, value: "Bearer abc def" }]
        successCondition: "result >= 0.95"
        failureCondition: "result < 0.5"
    - { name: m17, web: { url: "http://h/x", jsonPath: $.v, min: -1.5 } }
    - { name: m18, prometheus: { address: "http://[::1]:9090", query: up, failureCondition: "size(result) != 1" } }
  emergency: { latencyP99Ms: { max: 1000 } }
"#;
    let spec = load_rollout(text, Format::Yaml).unwrap_or_else(|e| panic!("{e}"));
    let analysis = spec.analysis.as_ref().unwrap();
    let keys: Vec<&str> = analysis.metrics.iter().map(|m| m.check.key()).collect();
    assert_eq!(
        keys,
        [
            "successRate",
            "errorRate",
            "latencyP50Ms",
            "latencyP90Ms",
            "latencyP99Ms",
            "latencyP999Ms",
            "requestRate",
            "errorRateVsBaseline",
            "errorRateVsBaseline",
            "latencyP50VsBaseline",
            "latencyP90VsBaseline",
            "latencyP99VsBaseline",
            "latencyP999VsBaseline",
            "sequentialErrorRate",
            "prometheus",
            "web",
            "web",
            "prometheus"
        ]
    );
    let MetricCheck::Prometheus(q) = &analysis.metrics[14].check else {
        panic!("a prometheus metric")
    };
    assert_eq!(
        (q.timeout, &q.judge),
        (
            Some(Duration::from_millis(500)),
            &Judge::Range {
                min: Some(0.0),
                max: Some(0.01)
            }
        )
    );
    assert_eq!(
        rollout::fill(&q.query, "api", "stable", "canary"),
        r#"sum(x{track="canary"})"#
    );
    let MetricCheck::Web(w) = &analysis.metrics[15].check else {
        panic!("a web metric")
    };
    assert_eq!(
        (w.headers[0].value.as_str(), w.json_path.as_str()),
        ("Bearer abc def", "$.tracks[?@.name == 'canary'].conversion")
    );
    assert!(
        matches!(&w.judge, Judge::Conditions { success: Some(s), failure: Some(f) }
        if s.as_str() == "result >= 0.95" && f.as_str() == "result < 0.5")
    );
    assert_eq!(
        analysis.metrics[12].check,
        MetricCheck::LatencyVsBaseline {
            quantile: Quantile::P999,
            max_ratio: 0.9
        }
    );
    let rollout::Strategy::Canary(canary) = &spec.strategy else {
        panic!("canary")
    };
    assert_eq!(
        canary.steps[1],
        Step::Pause(Pause {
            duration: Some(Duration::from_millis(90_250))
        })
    );
    assert_round_trip("all kinds", &spec);

    let rings = load_rollout(
        "name: r\nroute: a\nproxies: [\"http://a:1\"]\nbaseline: s\ncandidate: c\nrings:\n  - { name: one, match: { host: '*.example.com' }, minDuration: 1s }\n  - { name: two, weight: 0.1, exitAnalysis: { count: 1 } }\n",
        Format::Yaml,
    )
    .unwrap();
    assert_round_trip("rings", &rings);
}

#[test]
fn every_problem_is_reported_at_its_path_at_once() {
    let text = r#"
name: "bad name!"
route: checkout
proxies: ["127.0.0.1:9901", "http://a:1", "http://a:1"]
baseline: stable
candidate: stable
canary:
  steps:
    - setWeight: 5
    - setWieght: 10
    - setWeight: 120
    - {}
    - { setWeight: 5, pause: {} }
    - pause: { duration: soon }
    - setHeaderRoute: {}
    - analysis: { metrics: [] }
    - setHeaderRoute: { headers: [{ name: "bad header", value: x }] }
    - 7
analysis:
  interval: 0s
  window: 500s
  minRequests: 0
  failureLimit: 0
  sequentialConfidence: 1.5
  metrics:
    - name: a
      successRate: { min: 99.5 }
    - name: latency
      latencyP99Ms: { max: -1 }
    - name: a
      errorRate: { max: 0.01 }
    - name: both
      errorRate: { max: 0.01 }
      successRate: { min: 0.9 }
    - name: none
    - name: typo
      latencyP99ms: { max: 5 }
    - name: vs
      errorRateVsBaseline: {}
    - name: seq
      sequentialErrorRate: { confidence: 0.3 }
    - name: ratio
      latencyP90VsBaseline: { maxRatio: 0, max: 1 }
  emergency:
    errorRate: { max: 5 }
    latencyP99: { max: 1 }
notify: ftp://x
extra: 1
"#;
    assert_eq!(
        errors(text),
        [
            "name: invalid rollout name \"bad name!\": use 1 to 63 letters, digits, '-', '_' or '.', starting with a letter or digit",
            "proxies[0]: invalid proxy admin URL \"127.0.0.1:9901\": the scheme must be http; write http://HOST:PORT such as http://127.0.0.1:9901",
            "proxies[2]: duplicate proxy \"http://a:1\", also at proxies[1]",
            "candidate: the candidate must be another track than the baseline, both are \"stable\"",
            "canary.steps[1].setWieght: unknown field `setWieght`; did you mean `setWeight`?",
            "canary.steps[2].setWeight: weight must be from 0 to 100, found 120",
            "canary.steps[3]: a step needs one of: setWeight, pause, setHeaderRoute, analysis, webhook, setMirrorRoute",
            "canary.steps[4]: a step takes exactly one of these keys, found setWeight and pause: make them separate steps",
            "canary.steps[5].pause.duration: invalid duration \"soon\" (expected number at 0); write e.g. 500ms, 5s, 2m",
            "canary.steps[6].setHeaderRoute: give at least one condition: an empty match takes every request",
            "canary.steps[7].analysis.count: required here: the rollout waits for this analysis, which passes after `count` passing measurements",
            "canary.steps[8].setHeaderRoute.headers[0].name: invalid header name \"bad header\"",
            "canary.steps[9]: expected a mapping, found a number",
            "analysis.sequentialConfidence: confidence must be above 0.5 and below 1 (0.99 is usual), found 1.5",
            "analysis.interval: interval must be longer than 0s",
            "analysis.window: window must be from 1s to 5m, found 8m 20s",
            "analysis.minRequests: must be at least 1: a window without requests proves nothing",
            "analysis.failureLimit: must be at least 1: it is the number of failures that abort",
            "analysis.metrics[0].successRate.min: success rate must be a share from 0 to 1 (0.995 means 99.5%), found 99.5",
            "analysis.metrics[1].latencyP99Ms.max: latency limit must be above 0 ms, found -1",
            "analysis.metrics[3]: a metric takes exactly one of these keys, found successRate and errorRate: make them separate metrics",
            "analysis.metrics[4]: a metric needs one of: successRate, errorRate, latencyP50Ms, latencyP90Ms, latencyP99Ms, latencyP999Ms, requestRate, errorRateVsBaseline, latencyP50VsBaseline, latencyP90VsBaseline, latencyP99VsBaseline, latencyP999VsBaseline, sequentialErrorRate, prometheus, web",
            "analysis.metrics[5].latencyP99ms: unknown field `latencyP99ms`; did you mean `latencyP99Ms`?",
            "analysis.metrics[6].errorRateVsBaseline: give maxRatio (1.1: 10% above the baseline's error rate), maxDiff (0.005: half a percentage point above it), or both",
            "analysis.metrics[7].sequentialErrorRate.confidence: confidence must be above 0.5 and below 1 (0.99 is usual), found 0.3",
            "analysis.metrics[8].latencyP90VsBaseline.maxRatio: ratio to the baseline must be above 0 (1.1 allows 10% more), found 0",
            "analysis.metrics[8].latencyP90VsBaseline.max: unknown field `max`; expected one of: maxRatio",
            "analysis.metrics[2].name: duplicate metric name \"a\", also at analysis.metrics[0]",
            "analysis.emergency.errorRate.max: error rate must be a share from 0 to 1 (0.995 means 99.5%), found 5",
            "analysis.emergency.latencyP99: unknown field `latencyP99`; did you mean `latencyP99Ms`?",
            "notify: invalid webhook URL \"ftp://x\": write an http:// or https:// URL such as https://hooks.example.com/rollouts",
            "extra: unknown field `extra`; expected one of: name, route, proxies, baseline, candidate, canary, blueGreen, rings, analysis, notify, progressDeadline, progressDeadlineAbort, abort, promotionWebhook",
        ]
    );
}

const HEAD: &str = "name: r\nroute: api\nproxies: [\"http://127.0.0.1:9901\"]\nbaseline: stable\ncandidate: canary\n";

#[test]
fn sequential_confidence_is_a_confidence_or_off() {
    let analysis = |value: &str| {
        load_rollout(
            &format!("{HEAD}canary: {{steps: [{{pause: }}]}}\nanalysis: {{sequentialConfidence: {value}}}"),
            Format::Yaml,
        )
        .map(|spec| spec.analysis.unwrap().sequential_confidence)
    };
    assert_eq!(analysis("0.999"), Ok(Some(0.999)));
    assert_eq!(analysis("off"), Ok(None));
    assert_eq!(
        analysis("null"),
        Ok(Some(rollout::SEQUENTIAL_CONFIDENCE)),
        "null is absent"
    );
    for (value, found) in [("on", "\"on\""), ("false", "false"), ("[0.9]", "a list")] {
        let e = analysis(value).unwrap_err();
        assert_eq!(
            e.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [format!(
                "analysis.sequentialConfidence: expected a confidence above 0.5 and below 1 (0.98 is the default) or `off`, found {found}"
            )],
        );
    }
    assert!(analysis("1").is_err());
}

#[test]
fn a_spec_gives_exactly_one_strategy() {
    // At the document's top level: the path is empty.
    assert_eq!(
        errors(HEAD),
        ["give a strategy: exactly one of canary, blueGreen and rings"]
    );
    assert_eq!(
        errors(&format!(
            "{HEAD}canary: {{steps: [setWeight: 5]}}\nrings: [{{name: a, weight: 5}}]"
        )),
        ["give exactly one of canary, blueGreen and rings, found canary and rings"]
    );
    assert_eq!(
        errors(&format!("{HEAD}canary: {{steps: []}}")),
        ["canary.steps: list at least one step"]
    );
    assert_eq!(
        errors(&format!("{HEAD}canary: {{}}")),
        ["canary.steps: required field is missing"]
    );
}

#[test]
fn missing_and_mistyped_top_level_fields_are_reported_with_the_rest() {
    assert_eq!(
        errors("route: [a]\nproxies: []\ncandidate: canary\ncanary: {steps: [setWeight: -1]}"),
        [
            "name: required field is missing",
            "route: expected a string, found a list",
            "proxies: list every proxy serving the route, at least one (its admin API, such as http://127.0.0.1:9901)",
            "baseline: required field is missing",
            "canary.steps[0].setWeight: weight must be from 0 to 100, found -1",
        ]
    );
    assert_eq!(errors("[]"), ["expected a mapping, found a list"]);
    assert!(errors("name: [").iter().all(|e| e.starts_with("invalid YAML")));
    assert!(
        load_rollout("{\"name\": ", Format::Json).unwrap_err().errors()[0]
            .message
            .starts_with("invalid JSON")
    );
}

#[test]
fn a_malformed_field_is_reported_once() {
    // The unreadable interval is not also compared with the window, nor the window re-checked.
    assert_eq!(
        errors(&format!(
            "{HEAD}canary: {{steps: [pause: {{}}]}}\nanalysis: {{interval: soon, window: 1.5}}"
        )),
        [
            "analysis.interval: invalid duration \"soon\" (expected number at 0); write e.g. 500ms, 5s, 2m",
            "analysis.window: expected a duration such as 500ms, 5s or 2m, found a number",
        ]
    );
    assert_eq!(
        errors(&format!(
            "{HEAD}canary: {{steps: [pause: {{}}]}}\nanalysis: {{interval: 5s, window: 1500ms, count: 0}}"
        )),
        [
            "analysis.window: window must be whole seconds (the proxies count by the second), found 1s 500ms",
            "analysis.count: must be at least 1: an analysis takes at least one measurement",
        ]
    );
    assert_eq!(
        errors(&format!(
            "{HEAD}canary: {{steps: [pause: {{}}]}}\nanalysis: {{interval: 20s, consecutiveErrorLimit: 0}}"
        )),
        [
            "analysis.window: window must be at least the interval (20s), found 10s",
            "analysis.consecutiveErrorLimit: must be at least 1: it is the number of unreachable measurements that abort",
        ]
    );
}

#[test]
fn blue_green_problems_are_reported_with_their_paths() {
    let text = format!(
        "{HEAD}blueGreen:\n  previewMatch: {{}}\n  switchSteps: [10, 10, 5, 100, 0]\n  prePromotionAnalysis: {{}}\n  autoPromotion: later\n  rollbackWindo: 5m\n"
    );
    assert_eq!(
        errors(&text),
        [
            "blueGreen.previewMatch: give at least one condition: an empty match takes every request",
            "blueGreen.autoPromotion: invalid duration \"later\" (expected number at 0); write e.g. 500ms, 5s, 2m",
            "blueGreen.prePromotionAnalysis.count: required here: the rollout waits for this analysis, which passes after `count` passing measurements",
            "blueGreen.switchSteps[1]: switch steps must increase, found 10 after 10",
            "blueGreen.switchSteps[2]: switch steps must increase, found 5 after 10",
            "blueGreen.switchSteps[3]: a switch step must be above 0 and below 100 (the switch ends at 100 by itself), found 100",
            "blueGreen.switchSteps[4]: a switch step must be above 0 and below 100 (the switch ends at 100 by itself), found 0",
            "blueGreen.rollbackWindo: unknown field `rollbackWindo`; did you mean `rollbackWindow`?",
        ]
    );
}

#[test]
fn ring_problems_are_reported_with_their_paths() {
    let text = format!(
        "{HEAD}rings:\n  - {{name: a, weight: 50}}\n  - {{name: a, weight: 20}}\n  - {{name: b}}\n  - {{name: c, weight: 60, match: {{path: /x}}}}\n  - {{name: 'd!', weight: 101, exitAnalysis: {{count: 1}}}}\n  - {{name: e, match: {{method: get}}}}\n  - nope\n"
    );
    assert_eq!(
        errors(&text),
        [
            "rings[2]: give a ring match (an audience) or weight (a share of everyone)",
            "rings[3]: give a ring either match (an audience) or weight (a share of everyone), not both",
            "rings[4].name: invalid ring name \"d!\": use 1 to 63 letters, digits, '-', '_' or '.', starting with a letter or digit",
            "rings[4].weight: a ring's weight must be above 0 and at most 100, found 101",
            "rings[5].match.method[0]: methods are case-sensitive: write \"GET\"",
            "rings[6]: expected a mapping, found a string",
            "rings[1].name: duplicate ring name \"a\", also at rings[0]",
            "rings[1].weight: ring weights must increase, found 20 after 50",
        ]
    );
    assert_eq!(errors(&format!("{HEAD}rings: []")), ["rings: list at least one ring"]);
}

#[test]
fn the_prometheus_example_judges_the_candidate_on_two_queries() {
    let spec = load("rollout-prometheus.yaml");
    let analysis = spec.analysis.unwrap();
    assert_eq!((analysis.failure_limit, analysis.consecutive_error_limit), (3, 4));
    let [budget, p99] = &analysis.metrics[..] else {
        panic!("two metrics: {:?}", analysis.metrics)
    };
    let MetricCheck::Prometheus(q) = &budget.check else {
        panic!("a prometheus metric")
    };
    assert_eq!(q.address, "http://127.0.0.1:9090");
    assert_eq!(
        q.judge,
        Judge::Range {
            min: None,
            max: Some(0.01)
        }
    );
    let filled = rollout::fill(&q.query, "checkout", "stable", "canary");
    assert_eq!(
        filled,
        "sum(rate(switchyard_requests_total{route=\"checkout\", track=\"canary\", class=\"5xx\"}[10s])) / \
         sum(rate(switchyard_requests_total{route=\"checkout\", track=\"canary\"}[10s]))"
    );
    let MetricCheck::Prometheus(q) = &p99.check else {
        panic!("a prometheus metric")
    };
    assert!(
        matches!(&q.judge, Judge::Conditions { success: Some(c), failure: None } if c.as_str() == "result[0] < 0.5")
    );
}

#[test]
fn provider_problems_are_reported_at_their_paths() {
    let text = format!(
        r#"{HEAD}canary: {{ steps: [{{ setWeight: 10 }}] }}
analysis:
  interval: 2s
  metrics:
    - name: no-limit
      prometheus: {{ address: "http://p:9090", query: up }}
    - name: both-kinds
      prometheus: {{ address: "http://p:9090", query: up, max: 1, successCondition: "result < 1" }}
    - name: bad-address
      prometheus: {{ address: "ftp://p:9090", query: "", max: 1, adress: x }}
    - name: base-with-query
      prometheus: {{ address: "http://p:9090/?x=1", query: 'x{{track="{{{{args.track}}}}"}}', min: 2, max: 1 }}
    - name: slow
      prometheus: {{ address: "http://p:9090", query: up, max: 1, timeout: 5s }}
    - name: bad-condition
      web: {{ url: "http://h/x", jsonPath: "$.v", successCondition: "result >", failureCondition: "reslt > 1" }}
    - name: bad-path
      web: {{ url: "ftp://h/x", jsonPath: "{{$.data.ok}}", max: 1, timeout: 0s }}
    - name: bad-headers
      web: {{ url: "http://h/{{{{candidate}}}}", jsonPath: "$.v[", max: 1, headers: [{{ name: "a b", value: "x" }}, {{ name: x, valu: y }}] }}
    - name: missing
      web: {{ max: 1 }}
"#
    );
    let errors = errors(&text);
    let syntax = errors
        .iter()
        .find(|e| e.starts_with("analysis.metrics[5].web.successCondition: "))
        .expect("the syntax error");
    assert!(
        syntax.contains("invalid condition \"result >\": syntax error at character 9"),
        "{syntax}"
    );
    let path = errors
        .iter()
        .find(|e| e.starts_with("analysis.metrics[7].web.jsonPath: "))
        .expect("the JSONPath error");
    assert!(path.contains("invalid JSONPath \"$.v[\" at character"), "{path}");
    let rest: Vec<&String> = errors.iter().filter(|e| *e != syntax && *e != path).collect();
    assert_eq!(
        rest,
        [
            "analysis.metrics[0].prometheus: give a limit: min, max (or both), or an Argo-style successCondition or failureCondition over `result`",
            "analysis.metrics[1].prometheus: give min and max, or successCondition and failureCondition, not both kinds",
            "analysis.metrics[2].prometheus.address: invalid URL \"ftp://p:9090\": the scheme must be http or https; write one such as http://prometheus:9090",
            "analysis.metrics[2].prometheus.query: give a PromQL query",
            "analysis.metrics[2].prometheus.adress: unknown field `adress`; did you mean `address`?",
            "analysis.metrics[3].prometheus.address: invalid URL \"http://p:9090/?x=1\": give no query: it is the server's base URL; write one such as http://prometheus:9090",
            "analysis.metrics[3].prometheus.query: unknown placeholder {{args.track}}: write {{route}}, {{baseline}} or {{candidate}} (Argo's {{args.…}} have no counterpart here)",
            "analysis.metrics[3].prometheus.max: max must be at least min (2), found 1",
            "analysis.metrics[5].web.failureCondition: \"reslt > 1\" uses `reslt`, which CEL does not know: a condition reads `result` (what the provider answered) with CEL's operators and functions, such as result[0] >= 0.95",
            "analysis.metrics[6].web.url: invalid URL \"ftp://h/x\": the scheme must be http or https; write one such as http://metrics.internal/api/checkout?track={{candidate}}",
            "analysis.metrics[6].web.jsonPath: write the JSONPath without braces, as RFC 9535 has it: $.data.ok",
            "analysis.metrics[6].web.timeout: timeout must be longer than 0s",
            "analysis.metrics[7].web.headers[0].name: invalid header name \"a b\"",
            "analysis.metrics[7].web.headers[1].value: required field is missing",
            "analysis.metrics[7].web.headers[1].valu: unknown field `valu`; did you mean `value`?",
            "analysis.metrics[8].web.url: required field is missing",
            "analysis.metrics[8].web.jsonPath: required field is missing",
            "analysis.metrics[4].prometheus.timeout: timeout must be at most nine tenths of the analysis's interval (1s 800ms), found 5s: the measurement must end before the next is due",
        ]
    );
}

#[test]
fn the_group_example_rolls_out_over_group_shop() {
    let spec = load("rollout-group.yaml");
    assert_eq!(spec.proxies.group().map(|g| g.as_str()), Some("shop"));
    let rollout::Strategy::Canary(canary) = &spec.strategy else {
        panic!("a canary")
    };
    assert_eq!(canary.steps[0], Step::SetWeight(10.0));
    assert_eq!(canary.steps.last(), Some(&Step::SetWeight(100.0)));
}

#[test]
fn the_gated_example_holds_at_its_webhooks_and_steps_down_on_abort() {
    let spec = load("rollout-gated.yaml");
    let rollout::Strategy::Canary(canary) = &spec.strategy else {
        panic!("a canary")
    };
    let Step::Webhook(gate) = &canary.steps[1] else {
        panic!("a webhook step")
    };
    assert_eq!(gate.url, "http://127.0.0.1:9960/load-test");
    assert!(spec.promotion_webhook.is_some());
    assert_eq!(spec.abort.from(50.0), [25.0, 10.0, 0.0]);
}

#[test]
fn proxies_are_a_list_of_urls_or_a_group_on_etcd() {
    let tail = "baseline: stable\ncandidate: canary\ncanary: {steps: [setWeight: 5]}\n";
    let spec = |proxies: &str| format!("name: r\nroute: api\nproxies: {proxies}\n{tail}");
    let group = load_rollout(&spec("{ group: checkout }"), Format::Yaml).unwrap();
    assert_eq!(group.proxies.group().map(|g| g.as_str()), Some("checkout"));
    assert!(group.proxies.urls().is_empty());
    // It writes back as it was read, and reads back equal.
    let json = serde_json::to_value(&group).unwrap();
    assert_eq!(json["proxies"], serde_json::json!({"group": "checkout"}));
    assert_eq!(load_rollout(&json.to_string(), Format::Json).unwrap(), group);

    assert_eq!(
        errors(&spec("{ group: 'a b' }")),
        [
            "proxies.group: invalid group name \"a b\": use 1 to 63 letters, digits, '-', '_' or '.', starting with a letter or digit"
        ]
    );
    assert_eq!(
        errors(&spec("{ grup: checkout }")),
        [
            "proxies.group: required field is missing",
            "proxies.grup: unknown field `grup`; did you mean `group`?"
        ]
    );
    assert_eq!(
        errors(&spec("http://127.0.0.1:9901")),
        [
            "proxies: give the proxies as a list of admin URLs ([\"http://127.0.0.1:9901\"]) or as a group on etcd ({ group: NAME })"
        ]
    );
}

// ---- reading never panics ------------------------------------------------------------------

/// Field names of rollout specs, so that random documents reach deep into reading.
const NAMES: &[&str] = &[
    "name",
    "route",
    "proxies",
    "baseline",
    "candidate",
    "canary",
    "blueGreen",
    "rings",
    "analysis",
    "notify",
    "steps",
    "setWeight",
    "pause",
    "duration",
    "setHeaderRoute",
    "headers",
    "value",
    "previewMatch",
    "autoPromotion",
    "prePromotionAnalysis",
    "postPromotionAnalysis",
    "switchSteps",
    "rollbackWindow",
    "match",
    "weight",
    "exitAnalysis",
    "minDuration",
    "interval",
    "window",
    "minRequests",
    "count",
    "failureLimit",
    "inconclusiveLimit",
    "consecutiveErrorLimit",
    "sequentialConfidence",
    "off",
    "metrics",
    "emergency",
    "successRate",
    "errorRate",
    "latencyP99Ms",
    "latencyP50VsBaseline",
    "requestRate",
    "errorRateVsBaseline",
    "sequentialErrorRate",
    "min",
    "max",
    "maxRatio",
    "maxDiff",
    "confidence",
    "prometheus",
    "web",
    "address",
    "query",
    "url",
    "jsonPath",
    "timeout",
    "successCondition",
    "failureCondition",
];

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-200.0..200.0f64).prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        prop::sample::select(NAMES).prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::String),
        prop::sample::select(
            &[
                "http://127.0.0.1:9901",
                "5s",
                "0s",
                "1m",
                "stable",
                "canary",
                "x-canary",
                "1e400"
            ][..]
        )
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 96, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(prop::sample::select(NAMES).prop_map(str::to_owned), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn reading_never_panics_on_arbitrary_text(text in "\\PC{0,200}") {
        let _ = load_rollout(&text, Format::Yaml);
        let _ = load_rollout(&text, Format::Json);
    }

    /// Whatever reads, reads back equal after serializing; whatever does not, says why.
    #[test]
    fn reading_never_panics_on_schema_shaped_documents(v in json_value()) {
        let json = v.to_string();
        let yaml = serde_yaml_ng::to_string(&v).expect("serializable");
        for (text, format) in [(&json, Format::Json), (&yaml, Format::Yaml)] {
            match load_rollout(text, format) {
                Ok(spec) => {
                    let again = load_rollout(&serde_json::to_string(&spec).expect("serializable"), Format::Json);
                    prop_assert_eq!(again.as_ref(), Ok(&spec));
                }
                Err(e) => prop_assert!(!e.errors().is_empty()),
            }
        }
    }

    #[test]
    fn reading_never_panics_on_mangled_examples(
        example in 0usize..5,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let text = [
            include_str!("../examples/rollout-canary.yaml"),
            include_str!("../examples/rollout-blue-green.yaml"),
            include_str!("../examples/rollout-rings.yaml"),
            include_str!("../examples/rollout-canary-header.yaml"),
            include_str!("../examples/rollout-gated.yaml"),
            include_str!("../examples/rollout-prometheus.yaml"),
        ][example];
        let mut bytes = text.as_bytes().to_vec();
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(spec) = load_rollout(&text, Format::Yaml) {
            let again = load_rollout(&serde_json::to_string(&spec).expect("serializable"), Format::Json);
            prop_assert_eq!(again.as_ref(), Ok(&spec));
        }
    }
}

#[test]
fn initial_delay_and_the_progress_deadline_read_with_their_defaults() {
    let base = "name: r\nroute: checkout\nproxies: ['http://127.0.0.1:9901']\nbaseline: stable\ncandidate: canary\n\
                canary: { steps: [{ setWeight: 10 }] }\n";
    let plain = load_rollout(
        &format!("{base}analysis: {{ interval: 10s, window: 10s }}\n"),
        Format::Yaml,
    )
    .unwrap();
    assert_eq!(plain.progress_deadline, Duration::from_secs(600));
    assert!(!plain.progress_deadline_abort);
    assert_eq!(plain.analysis.unwrap().initial_delay, Duration::ZERO);

    let set = load_rollout(
        &format!(
            "{base}progressDeadline: 90s\nprogressDeadlineAbort: true\n\
             analysis: {{ initialDelay: 1m, interval: 1m, window: 1m }}\n"
        ),
        Format::Yaml,
    )
    .unwrap();
    assert_eq!(set.progress_deadline, Duration::from_secs(90));
    assert!(set.progress_deadline_abort);
    let analysis = set.analysis.clone().unwrap();
    assert_eq!(
        (analysis.initial_delay, analysis.interval),
        (Duration::from_secs(60), Duration::from_secs(60))
    );
    // It reads back equal.
    let written = serde_yaml_ng::to_string(&set).unwrap();
    assert_eq!(load_rollout(&written, Format::Yaml).unwrap(), set);

    let bad = load_rollout(
        &format!("{base}progressDeadline: 0s\nprogressDeadlineAbort: maybe\nanalysis: {{ initialDelay: soon }}\n"),
        Format::Yaml,
    )
    .unwrap_err();
    let paths: Vec<&str> = bad.errors().iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["analysis.initialDelay", "progressDeadline", "progressDeadlineAbort"],
        "{bad}"
    );
}

#[test]
fn abort_steps_and_webhook_gates_read_back_and_their_mistakes_are_named() {
    let base = "name: r\nroute: checkout\nproxies: ['http://127.0.0.1:9901']\nbaseline: stable\ncandidate: canary\n";
    let good = load_rollout(
        &format!(
            "{base}canary: {{ steps: [{{ setWeight: 10 }}, {{ webhook: {{ url: 'http://gate:8080/ok' }} }}] }}\n\
             abort: {{ steps: [25, 10] }}\npromotionWebhook: {{ url: 'https://gate/promote', timeout: 2s, interval: 30s }}\n"
        ),
        Format::Yaml,
    )
    .unwrap();
    assert_eq!(good.abort.steps, [25.0, 10.0]);
    assert_eq!(good.abort.interval, Duration::from_secs(10), "the default interval");
    assert_eq!(good.abort.from(50.0), [25.0, 10.0, 0.0], "0 is implied");
    assert_eq!(good.abort.from(20.0), [10.0, 0.0], "only the steps below the weight");
    assert_eq!(good.abort.from(5.0), [0.0]);
    let rollout::Strategy::Canary(c) = &good.strategy else {
        panic!("a canary")
    };
    let Step::Webhook(gate) = &c.steps[1] else {
        panic!("a webhook step")
    };
    assert_eq!(
        (gate.timeout, gate.interval),
        (Duration::from_secs(10), Duration::from_secs(10))
    );
    let promotion = good.promotion_webhook.clone().unwrap();
    assert_eq!(
        (promotion.timeout, promotion.interval),
        (Duration::from_secs(2), Duration::from_secs(30))
    );
    for text in [
        serde_yaml_ng::to_string(&good).unwrap(),
        serde_json::to_string(&good).unwrap(),
    ] {
        assert_eq!(load_rollout(&text, Format::sniff(&text)).unwrap(), good);
    }
    // Without `abort:`, nothing is written and an abort is instant.
    let plain = load_rollout(
        &format!("{base}canary: {{ steps: [{{ setWeight: 10 }}] }}\n"),
        Format::Yaml,
    )
    .unwrap();
    assert!(plain.abort.is_instant());
    assert!(!serde_json::to_string(&plain).unwrap().contains("abort"));

    let bad = load_rollout(
        &format!(
            "{base}canary: {{ steps: [{{ webhook: {{ url: 'ftp://gate', timout: 1s, interval: 0s }} }}] }}\n\
             abort: {{ steps: [10, 25, 150], interval: 0s }}\npromotionWebhook: {{ timeout: 1ms }}\n"
        ),
        Format::Yaml,
    )
    .unwrap_err();
    let shown: Vec<String> = bad.errors().iter().map(ToString::to_string).collect();
    for expected in [
        "canary.steps[0].webhook.url: invalid webhook URL \"ftp://gate\"",
        "canary.steps[0].webhook.timout: unknown field `timout`; did you mean `timeout`?",
        "canary.steps[0].webhook.interval: a webhook's interval must be at least 1s",
        "abort.steps[1]: abort steps must decrease, found 25 after 10",
        "abort.steps[2]: weight must be from 0 to 100, found 150",
        "abort.interval: an abort step's interval must be at least 1s",
        "promotionWebhook.url: required field is missing",
        "promotionWebhook.timeout: a webhook's timeout must be at least 100ms",
    ] {
        assert!(
            shown.iter().any(|s| s.starts_with(expected)),
            "{expected}\nin {shown:#?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The expression crates see whatever a spec holds: reading, and running what reads, never
    /// panics.
    #[test]
    fn provider_expressions_never_panic(text in "\\PC{0,40}", n in -2.0..2.0f64) {
        if let Ok(c) = rollout::Condition::parse(&text) {
            for result in [serde_json::json!(n), serde_json::json!([n]), serde_json::json!({"v": n})] {
                let _ = c.holds(&result);
            }
        }
        if let Ok(p) = rollout::JsonPath::parse(&text) {
            let _ = p.select(&serde_json::json!({"v": [n, {"w": n}]}));
        }
    }
}

#[test]
fn the_shadow_example_mirrors_judges_the_shadow_then_goes_on() {
    let spec = load("rollout-shadow.yaml");
    let rollout::Strategy::Canary(canary) = &spec.strategy else {
        panic!("a canary")
    };
    assert_eq!(
        canary.steps[0],
        Step::SetMirrorRoute(rollout::MirrorStep {
            percent: 100.0,
            matches: Vec::new()
        })
    );
    let Step::Analysis(a) = &canary.steps[1] else {
        panic!("an analysis step")
    };
    assert_eq!((a.series, a.count), (rollout::StatsSeries::Shadow, Some(10)));
    assert_eq!(
        canary.steps[2],
        Step::SetMirrorRoute(rollout::MirrorStep {
            percent: 0.0,
            matches: Vec::new()
        })
    );
    assert_eq!(spec.analysis.as_ref().unwrap().series, rollout::StatsSeries::Primary);
    assert_round_trip("rollout-shadow.yaml", &spec);
}

#[test]
fn mirror_steps_and_shadow_analyses_are_checked() {
    let shadow = "{analysis: {series: shadow, count: 3}}";
    assert_eq!(
        errors(&format!(
            "{HEAD}canary: {{steps: [{shadow}, {{setMirrorRoute: {{percent: 150}}}}, {{setMirrorRoute: {{}}}},\
             {{setMirrorRoute: {{percent: 5}}}}, {shadow}, {{setMirrorRoute: {{percent: 0}}}}, {shadow},\
             {{analysis: {{series: mirror, count: 1}}}}]}}\n\
             analysis: {{series: shadow}}"
        )),
        [
            "canary.steps[1].setMirrorRoute.percent: percent must be from 0 to 100 (the share of the route's requests copied), found 150",
            "canary.steps[2].setMirrorRoute.percent: required field is missing",
            "canary.steps[7].analysis.series: expected primary (the candidate's own requests) or shadow (the copies a setMirrorRoute step sends it), found \"mirror\"",
            "canary.steps[0].analysis.series: no request is copied to the candidate at this step; put a setMirrorRoute step with a percent above 0 before it",
            "canary.steps[6].analysis.series: no request is copied to the candidate at this step; put a setMirrorRoute step with a percent above 0 before it",
            "analysis.series: the rollout's analysis judges the candidate's own requests; judge the shadow in an analysis step after a setMirrorRoute step",
        ]
    );
}

#[test]
fn a_mirror_step_may_restrict_its_copies_with_a_match() {
    let spec: RolloutSpec = load_rollout(
        &format!(
            "{HEAD}canary: {{steps: [{{setMirrorRoute: {{percent: 50, match: [{{pathPrefix: /api, method: [GET, POST]}}, {{headers: [{{name: x-shadow, present: true}}]}}]}}}}]}}"
        ),
        Format::Yaml,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let rollout::Strategy::Canary(canary) = &spec.strategy else {
        panic!("a canary")
    };
    let Step::SetMirrorRoute(m) = &canary.steps[0] else {
        panic!("a mirror step")
    };
    assert_eq!(m.percent, 50.0);
    assert_eq!(m.matches.len(), 2);
    assert_eq!(m.matches[0].path_prefix.as_deref(), Some("/api"));
    assert_eq!(m.matches[0].method, ["GET", "POST"]);
    assert_eq!(m.matches[1].headers[0].name, "x-shadow");
    // Written and read again, the same step.
    let text = serde_json::to_string(&spec).unwrap();
    assert!(
        text.contains(r#"{"setMirrorRoute":{"percent":50.0,"match":[{"pathPrefix":"/api""#),
        "{text}"
    );
    assert_eq!(load_rollout(&text, Format::Json).unwrap(), spec);

    assert_eq!(
        errors(&format!(
            "{HEAD}canary: {{steps: [{{setMirrorRoute: {{percent: 5, match: []}}}}, \
             {{setMirrorRoute: {{percent: 5, match: [{{}}, {{method: get}}, {{pathRegex: '('}}]}}}}, \
             {{setMirrorRoute: {{percent: 5, match: {{path: /}}}}}}]}}"
        )),
        [
            "canary.steps[0].setMirrorRoute.match: list at least one match, or leave match out to copy any request",
            "canary.steps[1].setMirrorRoute.match[0]: give at least one condition: an empty match takes every request",
            "canary.steps[1].setMirrorRoute.match[1].method[0]: methods are case-sensitive: write \"GET\"",
            "canary.steps[1].setMirrorRoute.match[2].pathRegex: invalid regex \"(\": error: unclosed group",
            "canary.steps[2].setMirrorRoute.match: expected a list, found a mapping",
        ]
    );
}
