//! Observing a real proxy (in-process): the windows and lifetime totals `observe` merges, and
//! `since` passed through to every proxy's `/stats`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use switchyard_config::rollout::StatsSeries;
use switchyard_config::{Format, load_config, load_rollout};
use switchyard_control::http::Http;
use switchyard_control::observe::observe_one;
use switchyard_proxy::{Options, start};
use switchyard_testkit::{Client, MockUpstream, Table, assert_eventually};

#[tokio::test]
async fn since_cuts_the_windows_and_not_the_totals() {
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    let yaml = Table::new()
        .on_free_ports()
        .route("checkout")
        .track("stable", &[stable.addr()], 100.0)
        .track("canary", &[canary.addr()], 0.0)
        .header_rule("x-canary", "true", "canary")
        .yaml();
    let proxy = start(load_config(&yaml, Format::Yaml, 1).unwrap(), Options::default())
        .await
        .unwrap();
    let spec = format!(
        "name: checkout-v2\nroute: checkout\nproxies: [\"http://{}\"]\nbaseline: stable\ncandidate: canary\n\
         canary:\n  steps:\n    - setWeight: 100\n",
        proxy.admin
    );
    let spec = load_rollout(&spec, Format::Yaml).unwrap();
    let c = Client::http1();
    for canary in ["false", "true", "true"] {
        let url = format!("http://{}/", proxy.listen[0]);
        assert_eq!(c.get(&url, &[("x-canary", canary)]).await.unwrap().status, 200);
    }
    let http = Http::new(Duration::from_secs(5));
    let window = Duration::from_secs(300);
    // Requests are recorded when their bodies end: wait until the proxy shows all three.
    assert_eventually!(
        observe_one(
            &http,
            &spec,
            &spec.proxies.urls()[0],
            window,
            None,
            StatsSeries::Primary
        )
        .await
        .is_ok_and(|o| (o.baseline.requests, o.candidate.requests) == (1, 2))
    );

    // An hour ahead: no whole second of the window lies after it.
    let in_an_hour = SystemTime::now() + Duration::from_secs(3600);
    let since = u64::try_from(in_an_hour.duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap();
    let o = observe_one(
        &http,
        &spec,
        &spec.proxies.urls()[0],
        window,
        Some(since),
        StatsSeries::Primary,
    )
    .await
    .unwrap();
    assert_eq!((o.baseline.requests, o.candidate.requests), (0, 0));
    assert_eq!((o.baseline.window_seconds, o.candidate.window_seconds), (0, 0));
    assert_eq!((o.totals.baseline_requests, o.totals.candidate_requests), (1, 2));
    assert_eq!(o.candidate.rate_per_second(), 0.0);
}
