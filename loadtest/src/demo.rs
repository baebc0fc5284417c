//! The demo: the whole system in one process on embedded defaults. Three upstreams (stable, a
//! healthy candidate, a faulty one), a proxy in front of them, the control loop, and steady
//! traffic from 1,000 sticky users; a canary rollout that completes, then one that is aborted.
//! It prints live progress and a summary, exits 0, and on Ctrl-C stops everything it started
//! (all of it lives in this process, so nothing is left behind).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use http::Method;
use serde_json::Value;
use switchyard_config::{Format, load_config};
use switchyard_control::controller::Controller;
use switchyard_control::http::Http;
use switchyard_control::store::Store;
use tokio::net::TcpListener;

use crate::upstream::{Faults, Live, spawn};

/// The canary both rollouts follow.
const STEPS: &str = r#"
canary:
  steps:
    - setWeight: 10
    - pause: { duration: 4s }
    - setWeight: 25
    - pause: { duration: 4s }
    - setWeight: 50
    - pause: { duration: 4s }
    - setWeight: 100
"#;

/// The analysis of the demo's rollouts and of the abort-timing scenario: every second over the
/// last 5 s, at least 50 candidate requests, success ≥ 99% and p99 ≤ 40 ms.
pub(crate) const ANALYSIS: &str = r#"
analysis:
  interval: 1s
  window: 5s
  minRequests: 50
  failureLimit: 3
  metrics:
    - name: success-rate
      successRate: { min: 0.99 }
    - name: latency
      latencyP99Ms: { max: 40 }
  emergency:
    errorRate: { max: 0.2 }
    latencyP99Ms: { max: 2000 }
"#;

/// Runs the demo; `faults` shape the faulty candidate, `rate` the traffic (requests/s).
pub fn run(faults: Faults, rate: u32) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        tokio::select! {
            result = demo(faults, rate) => result,
            r = tokio::signal::ctrl_c() => {
                r?;
                println!("\ninterrupted: stopping everything");
                Ok(())
            }
        }
    })
}

async fn demo(faults: Faults, rate: u32) -> anyhow::Result<()> {
    let started = Instant::now();
    println!("Switchyard demo: three upstreams, one proxy, the control loop, {rate} req/s from 1,000 sticky users.\n");
    let stable = spawn("stable", Faults::default(), Live::new(false)).await?;
    let healthy = spawn("canary-v2", Faults::default(), Live::new(false)).await?;
    let faulty = spawn("canary-v3", faults, Live::new(true)).await?;
    println!(
        "upstreams: stable {stable}, healthy candidate {healthy}, faulty candidate {faulty} ({:.1}% 500s, +{} latency)",
        faults.error_rate * 100.0,
        humantime::format_duration(faults.latency)
    );

    let table = |canary: &str| {
        format!(
            "routes:\n  - name: checkout\n    sticky: {{ header: x-user-id }}\n    tracks:\n      - {{ name: stable, endpoints: [\"{stable}\"], weight: 100 }}\n      - {{ name: canary, endpoints: [\"{canary}\"], weight: 0 }}\n"
        )
    };
    let config = format!(
        "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\n{}",
        table(&healthy)
    );
    let loaded = load_config(&config, Format::Yaml, 1).map_err(|e| anyhow::anyhow!("{e}"))?;
    let proxy = switchyard_proxy::start(loaded, switchyard_proxy::Options::default()).await?;
    let (listen, admin) = (proxy.listen[0], proxy.admin);
    println!("proxy: traffic on {listen}, admin API on {admin}");

    let state_dir = std::env::temp_dir().join(format!("switchyard-demo-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(state_dir.clone());
    let store = Store::open(&state_dir).context("cannot create the demo's state directory")?;
    let http = Http::new(Duration::from_secs(2));
    let controller = Controller::start(store, http.clone());
    let api = TcpListener::bind("127.0.0.1:0").await?;
    let api_url = format!("http://{}", api.local_addr()?);
    tokio::spawn(switchyard_control::api::serve(api, controller));
    println!("control loop: API on {api_url}\n");

    let traffic = Traffic::start(format!("http://{listen}/"), rate);

    let mut outcomes = Vec::new();
    for (name, candidate, expect) in [
        ("checkout-v2", &healthy, "Completed"),
        ("checkout-v3", &faulty, "Aborted"),
    ] {
        // Each rollout starts from stable at 100% with its candidate behind the canary track.
        http.send_json(
            Method::PUT,
            &format!("http://{admin}/routes"),
            &[],
            &routes_json(&table(candidate))?,
        )
        .await
        .context("resetting the proxy's table")?;
        let spec = format!(
            "name: {name}\nroute: checkout\nproxies: [\"http://{admin}\"]\nbaseline: stable\ncandidate: canary\n{STEPS}{ANALYSIS}"
        );
        println!("── rollout {name}: candidate {candidate} ──");
        let (code, _, body) = http
            .call(
                Method::POST,
                &format!("{api_url}/rollouts"),
                &[("content-type", "application/yaml".to_owned())],
                Some(spec.into_bytes()),
            )
            .await?;
        if !code.is_success() {
            bail!("apply {name}: {code}: {}", String::from_utf8_lossy(&body));
        }
        let status = watch(&http, &format!("{api_url}/rollouts/{name}"), &traffic).await?;
        let phase = status["phase"].as_str().unwrap_or("").to_owned();
        println!();
        outcomes.push((name, expect, phase, status));
    }
    drop(traffic);

    println!("Summary ({:.0} s):", started.elapsed().as_secs_f64());
    let mut all_as_expected = true;
    for (name, expect, phase, status) in &outcomes {
        all_as_expected &= phase == expect;
        match phase.as_str() {
            "Aborted" => {
                let a = &status["abort"];
                let detected = a["detectedAt"].as_u64().unwrap_or(0);
                let confirmed = a["confirmedAt"].as_u64().unwrap_or(detected);
                println!("  {name}: Aborted: {}", a["reason"].as_str().unwrap_or(""));
                println!(
                    "    first failing measurement to every proxy on baseline: {:.2} s",
                    confirmed.saturating_sub(detected) as f64 / 1000.0
                );
            }
            other => println!("  {name}: {other} at {}% candidate weight", status["weight"]),
        }
    }
    proxy.shutdown().await;
    if !all_as_expected {
        bail!("a rollout did not end as expected");
    }
    Ok(())
}

/// A routes document from the YAML table text, as JSON for `PUT /routes`.
pub(crate) fn routes_json(yaml: &str) -> anyhow::Result<Value> {
    let table = switchyard_config::load_routes(yaml, Format::Yaml, 0).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(serde_json::json!({ "routes": table.spec() }))
}

/// Prints one line a second until the rollout completes or aborts; returns its last status.
async fn watch(http: &Http, url: &str, traffic: &Traffic) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = http.get_json(url).await?;
        let weight = s["weight"].as_f64().unwrap_or(0.0);
        let bar = "█".repeat((weight / 5.0).round() as usize) + &"░".repeat(20 - (weight / 5.0).round() as usize);
        let track = |name: &str| {
            let t = &s["tracks"][name];
            format!(
                "{name} {:>5.0} rps {:>5.2}% err p99 {:>6}",
                t["rps"].as_f64().unwrap_or(0.0),
                100.0 * t["errorRate"].as_f64().unwrap_or(0.0),
                t["p99Ms"].as_f64().map_or("-".to_owned(), |p| format!("{p:.1}ms"))
            )
        };
        println!(
            "  {:<11} step {}/{} {bar} {:>3}%  {} | {} | sent {}  {}",
            s["phase"].as_str().unwrap_or(""),
            s["step"].as_u64().unwrap_or(0).min(s["steps"].as_u64().unwrap_or(0)),
            s["steps"],
            weight,
            track("stable"),
            track("canary"),
            traffic.sent(),
            s["message"].as_str().unwrap_or("")
        );
        if matches!(s["phase"].as_str(), Some("Completed" | "Aborted")) && s["confirmedWeight"] == s["weight"] {
            return Ok(s);
        }
        if Instant::now() > deadline {
            bail!("the rollout did not finish within 60 s");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Steady traffic at a fixed rate from a pool of sticky users, counting answers other than 2xx.
pub(crate) struct Traffic {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

impl Traffic {
    pub(crate) fn start(url: String, rate: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let workers = 8u32;
        for w in 0..workers {
            let (stop, sent, failed, url) = (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&failed), url.clone());
            let period = Duration::from_secs_f64(f64::from(workers) / f64::from(rate.max(1)));
            tokio::spawn(async move {
                let http = Http::new(Duration::from_secs(5));
                let mut tick = tokio::time::interval(period);
                let mut i = u64::from(w);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    i = i.wrapping_add(u64::from(workers));
                    let user = format!("user-{}", i % 1000);
                    let ok = http
                        .call(Method::GET, &url, &[("x-user-id", user)], None)
                        .await
                        .is_ok_and(|(status, _, _)| status.is_success());
                    sent.fetch_add(1, Ordering::Relaxed);
                    if !ok {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        Self { stop, sent, failed }
    }

    pub(crate) fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    #[cfg_attr(not(feature = "fleet"), allow(dead_code, reason = "the fleet demo counts failures"))]
    pub(crate) fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

pub(crate) struct RemoveOnDrop(pub(crate) std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
