//! The abort-timing scenario: how fast a bad canary is sent back. A canary holds 25% of the
//! traffic on every proxy; at a known moment its upstream starts failing; the scenario measures
//! the time to the first failing measurement, the time until every proxy confirmed serving the
//! baseline only, and the requests that still reached the faulty candidate afterwards.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use http::Method;
use serde_json::Value;
use switchyard_config::{Format, load_config};
use switchyard_control::controller::{Controller, now_ms};
use switchyard_control::http::Http;
use switchyard_control::store::Store;
use tokio::net::TcpListener;

use crate::demo::{ANALYSIS, RemoveOnDrop, Traffic, routes_json};
use crate::upstream::{Faults, Live, spawn};

/// A canary held at 25% until the fault.
const STEPS: &str = r#"
canary:
  steps:
    - setWeight: 25
    - pause: {}
"#;

/// One abort: milliseconds from the fault to detection and to confirmation, and late requests.
struct Timing {
    detected_ms: u64,
    confirmed_ms: u64,
    late_requests: u64,
}

/// Runs `runs` aborts through `proxies` proxies at `rate` requests/s in all.
pub fn run(runs: u32, proxies: usize, faults: Faults, rate: u32) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(scenario(runs, proxies.max(1), faults, rate))
}

async fn scenario(runs: u32, proxies: usize, faults: Faults, rate: u32) -> anyhow::Result<()> {
    let stable = spawn("stable", Faults::default(), Live::new(false)).await?;
    let live = Live::new(false);
    let candidate = spawn("candidate", faults, std::sync::Arc::clone(&live)).await?;
    let table = format!(
        "routes:\n  - name: checkout\n    sticky: {{ header: x-user-id }}\n    tracks:\n      - {{ name: stable, endpoints: [\"{stable}\"], weight: 100 }}\n      - {{ name: canary, endpoints: [\"{candidate}\"], weight: 0 }}\n"
    );
    let mut running = Vec::new();
    let mut traffic = Vec::new();
    for _ in 0..proxies {
        let config = format!("listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\n{table}");
        let loaded = load_config(&config, Format::Yaml, 1).map_err(|e| anyhow::anyhow!("{e}"))?;
        let p = switchyard_proxy::start(loaded, switchyard_proxy::Options::default()).await?;
        traffic.push(Traffic::start(
            format!("http://{}/", p.listen[0]),
            rate / proxies as u32,
        ));
        running.push(p);
    }
    let admins: Vec<String> = running.iter().map(|p| format!("http://{}", p.admin)).collect();
    let state = std::env::temp_dir().join(format!("switchyard-abort-timing-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(state.clone());
    let http = Http::new(Duration::from_secs(2));
    let controller = Controller::start(Store::open(&state)?, http.clone());
    let api = TcpListener::bind("127.0.0.1:0").await?;
    let api_url = format!("http://{}", api.local_addr()?);
    tokio::spawn(switchyard_control::api::serve(api, controller));
    println!(
        "abort timing: {runs} runs, {proxies} proxies, {rate} req/s, candidate at 25% turning faulty ({:.1}% 500s, +{} latency)",
        faults.error_rate * 100.0,
        humantime::format_duration(faults.latency)
    );
    println!(
        "| run | fault → first failing measurement | fault → every proxy on baseline | requests to the candidate after |"
    );
    println!("|---|---|---|---|");
    let mut timings = Vec::new();
    for run in 1..=runs {
        live.faulty.store(false, Ordering::Relaxed);
        for admin in &admins {
            http.send_json(Method::PUT, &format!("{admin}/routes"), &[], &routes_json(&table)?)
                .await
                .context("resetting a proxy")?;
        }
        // Let the previous run's faulty requests leave the stats window (5 s) first.
        if run > 1 {
            tokio::time::sleep(Duration::from_secs(6)).await;
        }
        let name = format!("abort-{run}");
        let proxies_list: Vec<String> = admins.iter().map(|a| format!("\"{a}\"")).collect();
        let spec = format!(
            "name: {name}\nroute: checkout\nproxies: [{}]\nbaseline: stable\ncandidate: canary\n{STEPS}{ANALYSIS}",
            proxies_list.join(", ")
        );
        let (code, _, body) = http
            .call(
                Method::POST,
                &format!("{api_url}/rollouts"),
                &[("content-type", "application/yaml".to_owned())],
                Some(spec.into_bytes()),
            )
            .await?;
        if !code.is_success() {
            bail!("apply: {code}: {}", String::from_utf8_lossy(&body));
        }
        let status_url = format!("{api_url}/rollouts/{name}");
        // Healthy at 25% on every proxy, with a few passing measurements behind it.
        wait(&http, &status_url, |s| {
            s["phase"] == "Paused" && s["confirmedWeight"] == 25.0
        })
        .await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let fault_at = now_ms();
        live.faulty.store(true, Ordering::Relaxed);
        let s = wait(&http, &status_url, |s| s["abort"]["confirmedAt"].is_u64()).await?;
        let seen = live.requests.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let late = live.requests.load(Ordering::Relaxed) - seen;
        let a = &s["abort"];
        let t = Timing {
            detected_ms: a["detectedAt"].as_u64().unwrap_or(0).saturating_sub(fault_at),
            confirmed_ms: a["confirmedAt"].as_u64().unwrap_or(0).saturating_sub(fault_at),
            late_requests: late,
        };
        println!(
            "| {run} | {:.2} s | {:.2} s | {} |",
            t.detected_ms as f64 / 1000.0,
            t.confirmed_ms as f64 / 1000.0,
            t.late_requests
        );
        timings.push(t);
    }
    drop(traffic);
    let median = |mut v: Vec<u64>| {
        v.sort_unstable();
        v[v.len() / 2] as f64 / 1000.0
    };
    println!(
        "\nmedian: {:.2} s to the first failing measurement, {:.2} s until every proxy served the baseline only; max {:.2} s; {} requests reached the candidate after confirmation in all runs",
        median(timings.iter().map(|t| t.detected_ms).collect()),
        median(timings.iter().map(|t| t.confirmed_ms).collect()),
        timings.iter().map(|t| t.confirmed_ms).max().unwrap_or(0) as f64 / 1000.0,
        timings.iter().map(|t| t.late_requests).sum::<u64>()
    );
    for p in running {
        p.shutdown().await;
    }
    Ok(())
}

async fn wait(http: &Http, url: &str, done: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = http.get_json(url).await?;
        if done(&s) {
            return Ok(s);
        }
        if Instant::now() > deadline {
            bail!("{url}: not there within 60 s: {s}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
