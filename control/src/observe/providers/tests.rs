use std::time::Duration;

use switchyard_config::{Format, load_rollout};
use switchyard_testkit::{Behaviour, MockUpstream};

use super::*;

/// A spec whose analysis (`interval`) has the given metrics (YAML list items).
fn spec(interval: &str, metrics: &str) -> RolloutSpec {
    let text = format!(
        "name: r\nroute: checkout\nproxies: [\"http://127.0.0.1:9901\"]\nbaseline: stable\ncandidate: canary\n\
         canary: {{ steps: [{{ setWeight: 10 }}] }}\nanalysis:\n  interval: {interval}\n  window: 1m\n  metrics:\n{metrics}"
    );
    load_rollout(&text, Format::Yaml).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

async fn read(spec: &RolloutSpec) -> Readings {
    query_all(
        &Http::new(Duration::from_secs(10)),
        spec,
        spec.analysis.as_ref().unwrap(),
    )
    .await
}

fn vector(values: &[(&str, &str)]) -> String {
    let series: Vec<String> = values
        .iter()
        .map(|(track, v)| format!(r#"{{"metric":{{"track":"{track}"}},"value":[1700000000.5,"{v}"]}}"#))
        .collect();
    format!(
        r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
        series.join(",")
    )
}

#[tokio::test]
async fn a_prometheus_query_is_sent_filled_in_and_its_vector_read() {
    let prom = MockUpstream::start("prometheus").await;
    prom.set_body(vector(&[("canary", "0.0125")]));
    let s = spec(
        "1s",
        &format!(
            "    - name: errors\n      prometheus: {{ address: \"http://{}/\", query: 'sum(rate(x{{route=\"{{{{route}}}}\",track=\"{{{{ candidate }}}}\"}}[1m]))', max: 0.01 }}\n",
            prom.addr()
        ),
    );
    let readings = read(&s).await;
    assert_eq!(
        readings.get("errors"),
        Some(&Reading::Vector(vec![("{track=\"canary\"}".into(), 0.0125)]))
    );
    let seen = prom.seen();
    let uri = seen[0].uri.to_string();
    assert!(uri.starts_with("/api/v1/query?query="), "{uri}");
    let query = percent_encoding::percent_decode_str(uri.trim_start_matches("/api/v1/query?query="))
        .decode_utf8()
        .unwrap();
    assert_eq!(query, r#"sum(rate(x{route="checkout",track="canary"}[1m]))"#);
}

#[tokio::test]
async fn prometheus_answers_are_read_as_its_http_api_writes_them() {
    let prom = MockUpstream::start("prometheus").await;
    let s = spec(
        "1s",
        &format!(
            "    - name: q\n      prometheus: {{ address: \"http://{}\", query: up, max: 1 }}\n",
            prom.addr()
        ),
    );
    let at = format!("Prometheus at http://{}", prom.addr());
    let cases = [
        (
            200,
            vector(&[("a", "NaN"), ("b", "+Inf")]),
            Reading::Vector(vec![
                ("{track=\"a\"}".into(), f64::NAN),
                ("{track=\"b\"}".into(), f64::INFINITY),
            ]),
        ),
        (200, vector(&[]), Reading::Vector(vec![])),
        (
            200,
            r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000,"2.5"]}}"#.into(),
            Reading::Scalar(2.5),
        ),
        (
            200,
            r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#.into(),
            Reading::Failed(format!(
                "{at} answered a range vector: give an instant query (a range such as [5m] belongs inside rate() or another function)"
            )),
        ),
        (
            400,
            r#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected end of input"}"#.into(),
            Reading::Failed(format!(
                "{at} answered 400 Bad Request to the query: bad_data: 1:5: parse error: unexpected end of input"
            )),
        ),
        (
            503,
            "Service Unavailable\n".into(),
            Reading::Failed(format!(
                "{at} answered 503 Service Unavailable to the query: Service Unavailable"
            )),
        ),
        (
            200,
            r#"{"data": 1}"#.into(),
            Reading::Failed(format!(
                "{at} answered with JSON that is not an answer of its query API (status, and data with resultType and result): is the address Prometheus'?"
            )),
        ),
    ];
    for (status, body, expected) in cases {
        prom.set_status(status);
        prom.set_body(body.clone());
        let got = read(&s).await.get("q").cloned().unwrap();
        // NaN is not equal to itself: compare what the rows show.
        assert_eq!(format!("{got:?}"), format!("{expected:?}"), "{status} {body}");
    }
}

#[tokio::test]
async fn an_unreachable_prometheus_is_a_failed_reading_in_words() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let s = spec(
        "1s",
        &format!("    - name: q\n      prometheus: {{ address: \"http://{closed}\", query: up, max: 1 }}\n"),
    );
    assert_eq!(
        read(&s).await.get("q"),
        Some(&Reading::Failed(format!(
            "cannot reach Prometheus at http://{closed}: connection refused"
        )))
    );
}

#[tokio::test]
async fn a_web_provider_sends_its_headers_and_picks_its_nodes() {
    let kpi = MockUpstream::start("kpi").await;
    kpi.set_body(r#"{"tracks": [{"name": "stable", "conversion": 0.31}, {"name": "canary", "conversion": "0.29"}]}"#);
    let s = spec(
        "1s",
        &format!(
            "    - name: conversion\n      web:\n        url: \"http://{}/kpi?track={{{{candidate}}}}\"\n        jsonPath: \"$.tracks[?@.name == 'canary'].conversion\"\n        headers: [{{ name: authorization, value: Bearer t0ken }}]\n        min: 0.25\n",
            kpi.addr()
        ),
    );
    assert_eq!(
        read(&s).await.get("conversion"),
        Some(&Reading::Nodes(vec![serde_json::json!("0.29")]))
    );
    let seen = &kpi.seen()[0];
    assert_eq!(seen.uri.to_string(), "/kpi?track=canary");
    assert_eq!(seen.headers["authorization"], "Bearer t0ken");

    kpi.set_status(502);
    kpi.set_body("bad gateway");
    assert_eq!(
        read(&s).await.get("conversion"),
        Some(&Reading::Failed(format!(
            "http://{}/kpi?track=canary answered 502 Bad Gateway: bad gateway",
            kpi.addr()
        )))
    );
    kpi.set_status(200);
    kpi.set_body("<html>");
    let Some(Reading::Failed(why)) = read(&s).await.get("conversion").cloned() else {
        panic!("not JSON is a failure")
    };
    assert!(
        why.contains("answered with a body that is not the expected JSON"),
        "{why}"
    );
}

/// A provider that does not answer is given up at nine tenths of the analysis's interval (1 s),
/// at 10 s (1 m), or at its own shorter timeout, and the others are read meanwhile.
#[tokio::test(start_paused = true)]
async fn a_provider_that_hangs_is_given_up_within_the_interval() {
    let hung = MockUpstream::start("hung").await;
    hung.set_behaviour(Behaviour::Hang);
    let kpi = MockUpstream::start("kpi").await;
    kpi.set_body(r#"{"v": 1}"#);
    for (interval, timeout, waited) in [
        ("1s", "", Duration::from_millis(900)),
        ("1m", "", Duration::from_secs(10)),
        ("1m", ", timeout: 3s", Duration::from_secs(3)),
    ] {
        let s = spec(
            interval,
            &format!(
                "    - name: hung\n      web: {{ url: \"http://{}/\", jsonPath: $.v, max: 1{timeout} }}\n    - name: kpi\n      web: {{ url: \"http://{}/\", jsonPath: $.v, max: 1 }}\n",
                hung.addr(),
                kpi.addr()
            ),
        );
        let started = tokio::time::Instant::now();
        let readings = read(&s).await;
        assert_eq!(started.elapsed(), waited, "interval {interval}{timeout}");
        assert_eq!(
            readings.get("hung"),
            Some(&Reading::Failed(format!(
                "cannot reach http://{}/: no answer within {}",
                hung.addr(),
                humantime::format_duration(waited)
            )))
        );
        assert_eq!(readings.get("kpi"), Some(&Reading::Nodes(vec![serde_json::json!(1)])));
    }
}
