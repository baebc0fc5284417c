//! End to end: the real `switchyard` binary drives a real proxy (in-process) in front of mock
//! upstreams while traffic flows. A healthy canary reaches `Completed` at 100%; a canary
//! answering 5% 5xx is `Aborted` with the proxy back on baseline and the abort recorded; killing
//! the controller mid-rollout and starting it again resumes where it was.

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use switchyard_config::{Format, load_config};
use switchyard_proxy::{Options, Running, start};
use switchyard_testkit::{Client, MockUpstream, Scratch, Table, Traffic, assert_eventually};

struct Controller {
    child: Child,
    url: String,
}

impl Controller {
    fn start(state: &Scratch, port: u16) -> Self {
        Self::start_with(state, port, &[])
    }

    fn start_with(state: &Scratch, port: u16, args: &[&str]) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--state"])
            .arg(state.join("state"))
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start switchyard serve");
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn up(&self) -> bool {
        Client::http1()
            .get(&format!("{}/healthz", self.url), &[])
            .await
            .is_ok_and(|r| r.status == 200)
    }

    async fn get(&self, path: &str) -> Value {
        let r = Client::http1()
            .get(&format!("{}{path}", self.url), &[])
            .await
            .expect("control API answers");
        serde_json::from_str(&r.body).expect("JSON")
    }

    async fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let r = Client::http1()
            .send(
                http::Method::POST,
                &format!("{}{path}", self.url),
                &[("content-type", "application/yaml")],
                body.to_owned(),
            )
            .await
            .expect("control API answers");
        (r.status.as_u16(), serde_json::from_str(&r.body).unwrap_or(Value::Null))
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

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

fn spec(admin: &str, name: &str) -> String {
    format!(
        r#"
name: {name}
route: checkout
proxies: ["http://{admin}"]
baseline: stable
candidate: canary
canary:
  steps:
    - setWeight: 20
    - pause: {{ duration: 2s }}
    - setWeight: 50
    - pause: {{ duration: 2s }}
    - setWeight: 100
analysis:
  interval: 1s
  window: 5s
  minRequests: 30
  failureLimit: 2
  metrics:
    - name: success-rate
      successRate: {{ min: 0.99 }}
  emergency:
    errorRate: {{ max: 0.5 }}
"#
    )
}

async fn canary_weight(p: &Running) -> f64 {
    let routes = Client::http1()
        .get(&format!("http://{}/routes", p.admin), &[])
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&routes.body).unwrap();
    v["routes"][0]["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "canary")
        .unwrap()["weight"]
        .as_f64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_completes_and_a_failing_one_is_aborted() {
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    let p = proxy(&stable, &canary).await;
    let _traffic = Traffic::start(format!("http://{}/", p.listen[0]));
    let scratch = Scratch::new("control-e2e");
    let c = Controller::start(&scratch, free_port());
    assert_eventually!(c.up().await);

    // Notifications go to a webhook; a mock upstream stands in for it and keeps what it got.
    let hook = MockUpstream::start("hook").await;
    let healthy = spec(&p.admin.to_string(), "healthy") + &format!("notify: http://{}/rollouts\n", hook.addr());
    let (status, body) = c.post("/rollouts", &healthy).await;
    assert_eq!(status, 201, "{body}");
    assert_eventually!(
        c.get("/rollouts/healthy").await["phase"] == "Completed",
        Duration::from_secs(60)
    );
    let notified = |kind: &'static str| {
        hook.seen().iter().any(|r| {
            let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            v["rollout"] == "healthy"
                && v["events"]
                    .as_array()
                    .is_some_and(|es| es.iter().any(|e| e["kind"] == kind))
        })
    };
    assert_eventually!(notified("complete"));
    assert!(notified("step") && notified("pause"));
    // Completed, then published: the proxy serves 100% once it confirms.
    assert_eventually!(canary_weight(&p).await == 100.0);
    let history = c.get("/rollouts/healthy/history").await;
    let kinds: Vec<&str> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"complete"), "{kinds:?}");

    // Back to stable for the second rollout, then a candidate failing 5% of requests.
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
    canary.fail_every(20);
    let (status, body) = c.post("/rollouts", &spec(&p.admin.to_string(), "faulty")).await;
    assert_eq!(status, 201, "{body}");
    assert_eventually!(
        c.get("/rollouts/faulty").await["phase"] == "Aborted",
        Duration::from_secs(60)
    );
    assert_eventually!(canary_weight(&p).await == 0.0);
    let status = c.get("/rollouts/faulty").await;
    let abort = &status["abort"];
    assert!(abort["reason"].as_str().unwrap().contains("success"), "{abort}");
    assert_eventually!(c.get("/rollouts/faulty").await["abort"]["confirmedAt"].is_u64());
    let abort = c.get("/rollouts/faulty").await["abort"].clone();
    assert!(abort["confirmedAt"].as_u64() >= abort["detectedAt"].as_u64(), "{abort}");
    // Once aborted, the candidate's weight never rises again in this rollout.
    for _ in 0..3 {
        assert_eq!(canary_weight(&p).await, 0.0);
        c.get("/rollouts/faulty").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_controller_mid_rollout_resumes_where_it_was() {
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    let p = proxy(&stable, &canary).await;
    let _traffic = Traffic::start(format!("http://{}/", p.listen[0]));
    let scratch = Scratch::new("control-crash");
    let port = free_port();
    let c = Controller::start(&scratch, port);
    assert_eventually!(c.up().await);
    let mut spec = spec(&p.admin.to_string(), "crashy");
    spec = spec.replace(
        "pause: { duration: 2s }\n    - setWeight: 50",
        "pause: {}\n    - setWeight: 50",
    );
    let (status, body) = c.post("/rollouts", &spec).await;
    assert_eq!(status, 201, "{body}");
    assert_eventually!(
        c.get("/rollouts/crashy").await["phase"] == "Paused",
        Duration::from_secs(30)
    );
    assert_eq!(canary_weight(&p).await, 20.0);

    // kill -9: no chance to save anything more.
    c.kill();
    // The proxy keeps serving its last table while the loop is down.
    assert_eq!(canary_weight(&p).await, 20.0);
    let c = Controller::start(&scratch, port);
    assert_eventually!(c.up().await);
    let status = c.get("/rollouts/crashy").await;
    assert_eq!(
        (status["phase"].as_str(), status["step"].as_u64()),
        (Some("Paused"), Some(1)),
        "{status}"
    );
    let (code, body) = c.post("/rollouts/crashy/promote", "").await;
    assert_eq!(code, 200, "{body}");
    assert_eventually!(
        c.get("/rollouts/crashy").await["phase"] == "Completed",
        Duration::from_secs(60)
    );
    // Completed, then published: the proxy serves 100% once it confirms.
    assert_eventually!(canary_weight(&p).await == 100.0);
}

/// kill -9 at pseudo-random moments (seeded) while a canary with timed pauses progresses: every
/// restart resumes, the rollout still completes, and its history takes each step exactly once,
/// in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_kills_at_random_moments_skip_and_repeat_no_step() {
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    let p = proxy(&stable, &canary).await;
    let _traffic = Traffic::start(format!("http://{}/", p.listen[0]));
    let scratch = Scratch::new("control-kills");
    let port = free_port();
    let mut c = Controller::start(&scratch, port);
    assert_eventually!(c.up().await);
    let (status, body) = c.post("/rollouts", &spec(&p.admin.to_string(), "killed")).await;
    assert_eq!(status, 201, "{body}");

    let mut seed = 0x5eed_u64;
    for _ in 0..4 {
        // A moment between 0.2 s and 2.2 s from now (the rollout's pauses are 2 s long).
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let wait = Duration::from_millis(200 + (seed >> 33) % 2000);
        let until = std::time::Instant::now() + wait;
        // Not a synchronisation: the point is to kill at an arbitrary moment of the rollout.
        assert_eventually!(std::time::Instant::now() >= until);
        c.kill();
        c = Controller::start(&scratch, port);
        assert_eventually!(c.up().await);
    }
    assert_eventually!(
        c.get("/rollouts/killed").await["phase"] == "Completed",
        Duration::from_secs(60)
    );
    assert_eventually!(canary_weight(&p).await == 100.0);
    let history = c.get("/rollouts/killed/history").await;
    let steps: Vec<String> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "step")
        .map(|e| e["message"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        steps,
        [
            "step 1: candidate weight 20%",
            "step 3: candidate weight 50%",
            "step 5: candidate weight 100%"
        ],
        "{history}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_with_an_admin_token_are_published_to_with_it_and_webhooks_never_see_it() {
    let scratch = Scratch::new("control-e2e-token");
    let token = scratch.join("proxy-token");
    std::fs::write(&token, "s3cret-admin-token\n").unwrap();
    let (stable, canary, hook) = (
        MockUpstream::start("stable").await,
        MockUpstream::start("canary").await,
        MockUpstream::start("hook").await,
    );
    let yaml = Table::new()
        .setting("listen: 127.0.0.1:0")
        .setting(&format!(
            "admin: {{ listen: 127.0.0.1:0, tokenFile: {} }}",
            token.display()
        ))
        .route("checkout")
        .track("stable", &[stable.addr()], 100.0)
        .track("canary", &[canary.addr()], 0.0)
        .yaml();
    let p = start(load_config(&yaml, Format::Yaml, 1).unwrap(), Options::default())
        .await
        .unwrap();
    let spec = |name: &str| {
        format!(
            "name: {name}\nroute: checkout\nproxies: [\"http://{}\"]\nbaseline: stable\ncandidate: canary\n\
             canary: {{ steps: [{{ setWeight: 20 }}, {{ setWeight: 100 }}] }}\nnotify: http://{}/rollouts\n",
            p.admin,
            hook.addr()
        )
    };

    // Without the token, the proxy refuses the table and says so in the status.
    let without = Controller::start(&Scratch::new("control-e2e-token-none"), free_port());
    assert_eventually!(without.up().await);
    let (status, body) = without.post("/rollouts", &spec("untold")).await;
    assert_eq!(status, 201, "{body}");
    assert_eventually!(
        without.get("/rollouts/untold").await["proxies"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("401")),
        Duration::from_secs(30)
    );
    assert_eq!(canary_weight(&p).await, 0.0);
    without.kill();

    // With it, the rollout completes; the webhook gets its notifications without the token.
    let token_arg = token.to_str().unwrap();
    let with = Controller::start_with(&scratch, free_port(), &["--proxy-token-file", token_arg]);
    assert_eventually!(with.up().await);
    let (status, body) = with.post("/rollouts", &spec("told")).await;
    assert_eq!(status, 201, "{body}");
    assert_eventually!(
        with.get("/rollouts/told").await["phase"] == "Completed",
        Duration::from_secs(30)
    );
    assert_eventually!(canary_weight(&p).await == 100.0);
    assert_eventually!(!hook.seen().is_empty());
    for seen in hook.seen() {
        assert!(seen.headers.get("authorization").is_none(), "{:?}", seen.headers);
    }
}
