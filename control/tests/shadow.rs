//! Shadow traffic judged against stable, end to end: a real controller drives a real proxy
//! (in-process) in front of mock upstreams. A rollout's first step copies every request to a
//! candidate of weight 0; a step analysis of its shadow series compares the copies' answers
//! with stable's. A faulty candidate is aborted there, before it takes a single real request,
//! and the abort removes the mirror; a sound one goes on to real traffic.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use switchyard_config::{Format, load_config};
use switchyard_control::controller::{Controller, Status};
use switchyard_control::http::Http;
use switchyard_control::state::{Command, Phase};
use switchyard_control::store::Store;
use switchyard_proxy::{Options, Running, start};
use switchyard_testkit::{Client, MockUpstream, Scratch, Table, assert_eventually};

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

fn spec(admin: &str) -> String {
    format!(
        r#"
name: checkout-shadow
route: checkout
proxies: ["http://{admin}"]
baseline: stable
candidate: canary
canary:
  steps:
    - setMirrorRoute: {{ percent: 100 }}
    - analysis:
        series: shadow
        interval: 1s
        window: 3s
        minRequests: 20
        count: 3
        failureLimit: 1
        metrics:
          - name: shadow-errors
            errorRateVsBaseline: {{ maxDiff: 0.05 }}
          - name: shadow-p99
            latencyP99VsBaseline: {{ maxRatio: 5 }}
    - setMirrorRoute: {{ percent: 0 }}
    - setWeight: 100
"#
    )
}

/// Clients sending GETs until dropped, counting the answers that were not stable's.
struct Clients {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    not_stable: Arc<AtomicU64>,
}

impl Clients {
    fn start(url: String) -> Self {
        let clients = Self {
            stop: Arc::new(AtomicBool::new(false)),
            sent: Arc::new(AtomicU64::new(0)),
            not_stable: Arc::new(AtomicU64::new(0)),
        };
        for _ in 0..2 {
            let (stop, sent, not_stable) = (
                Arc::clone(&clients.stop),
                Arc::clone(&clients.sent),
                Arc::clone(&clients.not_stable),
            );
            let url = url.clone();
            tokio::spawn(async move {
                let client = Client::http1();
                while !stop.load(Ordering::Relaxed) {
                    let stable = client
                        .get(&url, &[])
                        .await
                        .is_ok_and(|r| r.status == 200 && r.body == "stable");
                    sent.fetch_add(1, Ordering::Relaxed);
                    if !stable {
                        not_stable.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        clients
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn admin(p: &Running, path: &str) -> Value {
    let r = Client::http1()
        .get(&format!("http://{}{path}", p.admin), &[])
        .await
        .expect("admin answers");
    serde_json::from_str(&r.body).expect("JSON")
}

async fn wait(controller: &Controller, what: &str, cond: impl Fn(&Status) -> bool) -> Status {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = controller.status("checkout-shadow").await.expect("the rollout exists");
        if cond(&status) {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within 60 s; {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulty_shadowed_candidate_is_aborted_before_it_takes_a_real_request() {
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    canary.set_status(500);
    canary.set_body("canary fails");
    let p = proxy(&stable, &canary).await;
    let scratch = Scratch::new("shadow-abort");
    let controller = Controller::start(
        Store::open(&scratch.join("state")).unwrap(),
        Http::new(Duration::from_secs(5)),
    );
    let clients = Clients::start(format!("http://{}/", p.listen[0]));

    controller
        .apply(&spec(&p.admin.to_string()), Format::Yaml)
        .await
        .expect("the spec applies");
    let aborted = wait(&controller, "aborted and confirmed", |s| {
        s.abort.as_ref().is_some_and(|a| a.confirmed_at.is_some())
    })
    .await;
    assert_eq!(aborted.phase, Phase::Aborted);
    let abort = aborted.abort.as_ref().expect("an abort record");
    assert!(abort.reason.contains("shadow-errors"), "{}", abort.reason);
    assert_eq!(aborted.step, 1, "aborted at the shadow analysis: {aborted:?}");
    assert!(canary.requests() >= 20, "the shadow got copies: {}", canary.requests());

    // The abort took the mirror away, and the candidate never served a real request.
    let routes = admin(&p, "/routes").await;
    assert!(routes["routes"][0].get("mirror").is_none(), "{routes}");
    let stats = admin(&p, "/stats?window=300s").await;
    let tracks = &stats["routes"]["checkout"]["tracks"];
    assert_eq!(tracks["canary"]["totalRequests"].as_u64(), Some(0), "{stats}");
    assert!(stats["routes"]["checkout"].get("shadow").is_none());
    // Clients kept being answered through the abort, every one of them by stable.
    let before = clients.sent.load(Ordering::Relaxed);
    assert_eventually!(clients.sent.load(Ordering::Relaxed) > before + 10);
    let (sent, not_stable) = (Arc::clone(&clients.sent), Arc::clone(&clients.not_stable));
    drop(clients);
    assert!(
        sent.load(Ordering::Relaxed) > 100,
        "{} requests",
        sent.load(Ordering::Relaxed)
    );
    assert_eq!(
        not_stable.load(Ordering::Relaxed),
        0,
        "every client got stable's answer"
    );
    assert_eq!(aborted.confirmed_weight, Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sound_shadowed_candidate_passes_and_goes_on_to_real_traffic() {
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    let p = proxy(&stable, &canary).await;
    let scratch = Scratch::new("shadow-pass");
    let controller = Controller::start(
        Store::open(&scratch.join("state")).unwrap(),
        Http::new(Duration::from_secs(5)),
    );
    let _clients = Clients::start(format!("http://{}/", p.listen[0]));

    controller
        .apply(&spec(&p.admin.to_string()), Format::Yaml)
        .await
        .expect("the spec applies");
    let done = wait(&controller, "completed", |s| {
        s.phase == Phase::Completed || s.phase == Phase::Aborted
    })
    .await;
    assert_eq!(done.phase, Phase::Completed, "{done:?}");
    let stats = admin(&p, "/stats?window=300s").await;
    assert!(stats["routes"]["checkout"]["tracks"]["canary"]["totalRequests"].as_u64() > Some(0));
    let routes = admin(&p, "/routes").await;
    assert!(
        routes["routes"][0].get("mirror").is_none(),
        "the mirror step removed it: {routes}"
    );
    let history = controller.history("checkout-shadow").await.unwrap();
    let analysis_passed = history.iter().any(|e| e.message.contains("step 2: analysis passed"));
    assert!(analysis_passed, "{history:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_steps_match_is_published_and_only_what_it_takes_is_copied() {
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    let p = proxy(&stable, &canary).await;
    let scratch = Scratch::new("shadow-match");
    let controller = Controller::start(
        Store::open(&scratch.join("state")).unwrap(),
        Http::new(Duration::from_secs(5)),
    );
    let spec = format!(
        r#"
name: checkout-shadow
route: checkout
proxies: ["http://{}"]
baseline: stable
candidate: canary
canary:
  steps:
    - setMirrorRoute: {{ percent: 100, match: [{{ pathPrefix: /api, method: [GET, POST] }}] }}
    - pause: {{}}
    - setWeight: 100
"#,
        p.admin
    );
    controller.apply(&spec, Format::Yaml).await.expect("the spec applies");
    wait(&controller, "paused with the mirror confirmed", |s| {
        s.phase == Phase::Paused && s.proxies.iter().all(|p| p.version.is_some())
    })
    .await;
    let routes = admin(&p, "/routes").await;
    let mirror = &routes["routes"][0]["mirror"];
    assert_eq!(mirror["track"], "canary", "{routes}");
    assert_eq!(
        mirror["match"],
        serde_json::json!([{ "pathPrefix": "/api", "method": ["GET", "POST"] }]),
        "{routes}"
    );
    assert_eq!(mirror["methods"], serde_json::json!(["GET", "POST"]), "{routes}");

    let client = Client::http1();
    for path in ["/api/items", "/static/app.js", "/api"] {
        let r = client.get(&format!("http://{}{path}", p.listen[0]), &[]).await.unwrap();
        assert_eq!(r.body, "stable", "{path}");
    }
    assert_eventually!(
        admin(&p, "/stats?window=300s").await["routes"]["checkout"]["shadow"]["canary"]["requests"] == 2
    );
    let copied: Vec<String> = canary.seen().iter().map(|s| s.uri.path().to_owned()).collect();
    assert_eq!(copied, ["/api/items", "/api"]);

    // Promoted past the pause, the last step removes the mirror with its match.
    controller
        .command("checkout-shadow", Command::Promote { full: false })
        .await
        .expect("promote");
    wait(&controller, "completed", |s| s.phase == Phase::Completed).await;
    let routes = admin(&p, "/routes").await;
    assert!(routes["routes"][0].get("mirror").is_none(), "{routes}");
}
