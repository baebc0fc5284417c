//! Takes the README's picture of the dashboard, `docs/dashboard.png`: a canary in flight over
//! the real proxy (in-process) in front of two mock upstreams, under three paced clients (about
//! 150 requests a second) of 500 sticky users, the candidate a little slower and failing 1
//! request in 100;
//! the controller and its API in-process; headless Chromium (Debian's `chromium` and
//! `chromium-driver`) looking at the rollout's page once its charts hold half a minute.
//!
//! ```sh
//! cargo run -p switchyard-control --example dashboard_screenshot -- docs/dashboard.png
//! ```
//!
//! It takes about 45 s and stops everything it started. The committed copy went through
//! `pngquant --quality=70-90` (about 55 KB rather than 170).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use switchyard_config::{Format, load_config};
use switchyard_control::api::{Backend, Guard, serve_backend};
use switchyard_control::controller::Controller;
use switchyard_control::http::Http;
use switchyard_control::store::Store;
use switchyard_proxy::{Options, start};
use switchyard_testkit::{Browser, Client, MockUpstream, Scratch, Table};

/// Measurements the charts hold when the picture is taken.
const POINTS: usize = 30;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "docs/dashboard.png".to_owned());
    let stable = MockUpstream::start("stable").await;
    stable.set_latency(Duration::from_millis(3));
    let canary = MockUpstream::start("canary").await;
    canary.set_latency(Duration::from_millis(6));
    canary.fail_every(100);
    let table = Table::new()
        .on_free_ports()
        .route("checkout")
        .track("stable", &[stable.addr()], 100.0)
        .track("canary", &[canary.addr()], 0.0)
        .sticky_header("x-user-id")
        .yaml();
    let proxy = start(load_config(&table, Format::Yaml, 1)?, Options::default()).await?;

    let scratch = Scratch::new("dashboard-screenshot");
    let controller = Controller::start(Store::open(&scratch.join("state"))?, Http::new(Duration::from_secs(2)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api = format!("http://{}", listener.local_addr()?);
    let backend = Backend::one(Arc::clone(&controller), &listener);
    tokio::spawn(serve_backend(listener, backend, Guard::default()));

    // Paced load, stopped when the picture is taken (and bounded in count regardless).
    let stop = Arc::new(AtomicBool::new(false));
    for worker in 0..3u64 {
        let (stop, url) = (Arc::clone(&stop), format!("http://{}/", proxy.listen[0]));
        tokio::spawn(async move {
            let client = Client::http1();
            for i in 0..60_000u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let user = format!("user-{}", (i * 3 + worker) % 500);
                let _ = client.get(&url, &[("x-user-id", &user)]).await;
                tokio::time::sleep(Duration::from_millis(8)).await;
            }
        });
    }

    let spec = format!(
        r#"
name: checkout-v2
route: checkout
proxies: ["http://{}"]
baseline: stable
candidate: canary
canary:
  steps:
    - setWeight: 10
    - pause: {{ duration: 15s }}
    - setWeight: 30
    - pause: {{ duration: 10m }}
    - setWeight: 60
    - pause: {{}}
    - setWeight: 100
analysis:
  interval: 1s
  window: 5s
  minRequests: 20
  metrics:
    - name: error-rate
      errorRate: {{ max: 0.05 }}
    - name: latency
      latencyP99Ms: {{ max: 250 }}
    - name: vs-baseline
      errorRateVsBaseline: {{ maxDiff: 0.05 }}
  emergency:
    errorRate: {{ max: 0.2 }}
"#,
        proxy.admin
    );
    controller
        .apply(&spec, Format::Yaml)
        .await
        .map_err(|e| anyhow::anyhow!("the rollout does not apply: {e}"))?;

    let browser = Browser::start("dashboard-screenshot")
        .await
        .map_err(anyhow::Error::msg)?;
    browser.resize(1280, 1560).await;
    browser.goto(&format!("{api}/ui/#/rollouts/checkout-v2")).await;
    browser
        .wait(Duration::from_secs(90), "the charts filling at step 4", async |b| {
            let step = b.text_of("#step").await?;
            let grid = b.find("#chart-grid").await?;
            let points: usize = b.attribute(&grid, "data-points").await?.parse().ok()?;
            (step == "step 4 of 7" && points >= POINTS).then_some(())
        })
        .await;
    let errors = browser.console_errors().await;
    if !errors.is_empty() {
        bail!("the page logged errors: {errors:?}");
    }
    std::fs::write(&out, browser.screenshot().await).with_context(|| format!("cannot write {out}"))?;
    stop.store(true, Ordering::Relaxed);
    println!("{out}: the dashboard of checkout-v2 at step 4 of 7, {POINTS} measurements charted");
    Ok(())
}
