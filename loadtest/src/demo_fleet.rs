//! `demo --fleet` (feature `fleet`, with etcd installed): a fleet in one process. A real 3-member
//! etcd cluster on loopback, three proxies in group `demo`, two controller replicas, each on a
//! runtime of its own, and steady traffic through every proxy. A canary over the group runs;
//! mid-rollout the leading replica is killed (its runtime dropped at once, every task mid-flight,
//! its lease left to expire, as `kill -9` would), the other takes over and completes the
//! rollout. It prints the takeover, checks every step was taken once, and exits 0.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use http::Method;
use serde_json::Value;
use switchyard_config::fleet::{FleetKeys, GroupName};
use switchyard_config::{Format, load_config};
use switchyard_control::api::{Backend, Guard, serve_backend};
use switchyard_control::fleet::Fleet;
use switchyard_control::http::Http;
use switchyard_control::replica::Replica;
use switchyard_testkit::EtcdCluster;

use crate::demo::Traffic;
use crate::upstream::{Faults, Live, spawn};

/// The fleet demo's analysis: as the single demo's, but latency is judged against the stable
/// track's (p99 at most 3× stable's, and an absolute 500 ms ceiling). Three proxies, two
/// replicas and a 3-member etcd share this machine's cores with the traffic, so an absolute
/// 40 ms p99 measured how busy the machine was, not the candidate: both tracks run behind
/// the same proxies, so the ratio cancels the machine's load and keeps the candidate's own.
const FLEET_ANALYSIS: &str = r#"
analysis:
  interval: 1s
  window: 5s
  minRequests: 50
  failureLimit: 3
  metrics:
    - name: success-rate
      successRate: { min: 0.99 }
    - name: latency-vs-stable
      latencyP99VsBaseline: { maxRatio: 3 }
    - name: latency
      latencyP99Ms: { max: 500 }
  emergency:
    errorRate: { max: 0.2 }
    latencyP99Ms: { max: 2000 }
"#;

const GROUP: &str = "demo";
/// The replicas' and proxies' lease: a dead leader is replaced within it.
const TTL: Duration = Duration::from_secs(2);

const STEPS: &str = r#"
canary:
  steps:
    - setWeight: 10
    - pause: { duration: 3s }
    - setWeight: 25
    - pause: { duration: 3s }
    - setWeight: 50
    - pause: { duration: 3s }
    - setWeight: 100
"#;

/// Runs the fleet demo; `rate` is the traffic through each proxy (requests/s).
pub fn run(rate: u32) -> anyhow::Result<()> {
    if !switchyard_testkit::etcd::etcd_installed() {
        bail!(
            "demo --fleet needs etcd: install Debian's etcd-server (apt-get install etcd-server), or run the demo without --fleet"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        tokio::select! {
            result = demo(rate) => result,
            r = tokio::signal::ctrl_c() => {
                r?;
                println!("\ninterrupted: stopping everything");
                Ok(())
            }
        }
    })
}

/// A controller replica on a runtime of its own, so that it can be killed whole.
struct ReplicaProcess {
    url: String,
    runtime: Option<tokio::runtime::Runtime>,
}

impl ReplicaProcess {
    fn start(endpoints: Vec<String>) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}", listener.local_addr()?);
        let advertise = url.clone();
        runtime.spawn(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            let fleet = loop {
                match Fleet::connect(endpoints.clone(), FleetKeys::default()).await {
                    Ok(f) => break Arc::new(f),
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            };
            let replica = Replica::new(fleet, Http::new(Duration::from_secs(2)), advertise, TTL);
            tokio::spawn(Arc::clone(&replica).run());
            serve_backend(listener, Backend::Replica(replica), Guard::default()).await;
        });
        Ok(Self {
            url,
            runtime: Some(runtime),
        })
    }

    /// Drops every task of the replica at once: nothing is resigned or revoked.
    fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for ReplicaProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn demo(rate: u32) -> anyhow::Result<()> {
    let started = Instant::now();
    println!(
        "Switchyard fleet demo: a 3-member etcd, three proxies in group {GROUP:?}, two controller replicas, {rate} req/s through each proxy.\n"
    );
    let etcd = EtcdCluster::start("demo-fleet", 3).await;
    println!("etcd: {}", etcd.client_urls().join(", "));
    let stable = spawn("stable", Faults::default(), Live::new(false)).await?;
    let canary = spawn("canary", Faults::default(), Live::new(false)).await?;

    let mut proxies = Vec::new();
    for _ in 0..3 {
        let config = format!(
            "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\nroutes:\n  - name: shop\n    sticky: {{ header: x-user-id }}\n    tracks:\n      - {{ name: stable, endpoints: [\"{stable}\"], weight: 100 }}\n      - {{ name: canary, endpoints: [\"{canary}\"], weight: 0 }}\n"
        );
        let loaded = load_config(&config, Format::Yaml, 1).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut fleet = switchyard_proxy::fleet::FleetOptions::new(
            etcd.client_urls(),
            GroupName::new(GROUP).map_err(|e| anyhow::anyhow!("{e}"))?,
        );
        fleet.lease_ttl = TTL;
        let options = switchyard_proxy::Options {
            fleet: Some(fleet),
            ..switchyard_proxy::Options::default()
        };
        let proxy = switchyard_proxy::start(loaded, options).await?;
        println!("proxy: traffic on {}, admin API on {}", proxy.listen[0], proxy.admin);
        proxies.push(proxy);
    }
    let mut replicas = vec![
        ReplicaProcess::start(etcd.client_urls())?,
        ReplicaProcess::start(etcd.client_urls())?,
    ];
    let http = Http::new(Duration::from_secs(2));
    let leader = wait_for_leader(&http, &replicas).await?;
    for (i, r) in replicas.iter().enumerate() {
        println!(
            "controller replica {}: API on {}{}",
            i + 1,
            r.url,
            if i == leader { " (leader)" } else { "" }
        );
    }
    let members = wait_for_members(&http, &replicas[leader].url, 3).await?;
    println!("group {GROUP:?}: {members} proxies registered\n");

    let traffic: Vec<Traffic> = proxies
        .iter()
        .map(|p| Traffic::start(format!("http://{}/", p.listen[0]), rate))
        .collect();

    // Applied through the follower: it passes the spec to the leader.
    let follower = 1 - leader;
    let spec = format!(
        "name: shop-v2\nroute: shop\nproxies: {{ group: {GROUP} }}\nbaseline: stable\ncandidate: canary\n{STEPS}{FLEET_ANALYSIS}"
    );
    let (code, _, body) = http
        .call(
            Method::POST,
            &format!("{}/rollouts", replicas[follower].url),
            &[("content-type", "application/yaml".to_owned())],
            Some(spec.into_bytes()),
        )
        .await?;
    if !code.is_success() {
        bail!("apply: {code}: {}", String::from_utf8_lossy(&body));
    }
    println!(
        "── rollout shop-v2 over group {GROUP:?}, applied through replica {} ──",
        follower + 1
    );

    let deadline = Instant::now() + Duration::from_secs(120);
    let mut killed: Option<(usize, Instant)> = None;
    let mut takeover = None;
    let status = loop {
        let live: Vec<usize> = (0..replicas.len()).filter(|i| replicas[*i].runtime.is_some()).collect();
        let Some(s) = status(&http, &replicas, &live).await else {
            println!("  (no replica answers yet)");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let leading = leader_of(&http, &replicas, &live).await;
        let weight = s["weight"].as_f64().unwrap_or(0.0);
        let filled = (weight / 5.0).round() as usize;
        let bar = "█".repeat(filled) + &"░".repeat(20usize.saturating_sub(filled));
        println!(
            "  {:<11} step {}/{} {bar} {:>3}% (confirmed {:>3}%)  leader: {:<10} sent {:>6} failed {}  {}",
            s["phase"].as_str().unwrap_or(""),
            (s["step"].as_u64().unwrap_or(0) + 1).min(s["steps"].as_u64().unwrap_or(0)),
            s["steps"],
            weight,
            s["confirmedWeight"].as_f64().unwrap_or(0.0),
            leading.map_or("none".to_owned(), |i| format!("replica {}", i + 1)),
            traffic.iter().map(Traffic::sent).sum::<u64>(),
            traffic.iter().map(Traffic::failed).sum::<u64>(),
            s["message"].as_str().unwrap_or("")
        );
        if killed.is_none() && s["confirmedWeight"].as_f64() == Some(25.0) {
            let victim = leading.unwrap_or(leader);
            println!(
                "  ✂ killing replica {} (the leader): its runtime is dropped mid-flight, its lease left to expire",
                victim + 1
            );
            replicas[victim].kill();
            killed = Some((victim, Instant::now()));
        }
        if let (Some((victim, at)), None, Some(now)) = (killed, takeover, leading)
            && now != victim
        {
            takeover = Some(at.elapsed());
            println!(
                "  ✓ replica {} leads after {:.1} s and resumes the rollout from etcd",
                now + 1,
                at.elapsed().as_secs_f64()
            );
        }
        if matches!(s["phase"].as_str(), Some("Completed" | "Aborted")) && s["confirmedWeight"] == s["weight"] {
            break s;
        }
        if Instant::now() > deadline {
            bail!("the rollout did not finish within 120 s");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let live: Vec<usize> = (0..replicas.len()).filter(|i| replicas[*i].runtime.is_some()).collect();
    let history = http
        .get_json(&format!("{}/rollouts/shop-v2/history", replicas[live[0]].url))
        .await?;
    let steps: Vec<&str> = history["events"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter(|e| e["kind"] == "step")
                .filter_map(|e| e["message"].as_str())
                .collect()
        })
        .unwrap_or_default();
    let mut served = Vec::new();
    for p in &proxies {
        let routes = http.get_json(&format!("http://{}/routes", p.admin)).await?;
        served.push(canary_weight(&routes));
    }
    let (sent, failed) = (
        traffic.iter().map(Traffic::sent).sum::<u64>(),
        traffic.iter().map(Traffic::failed).sum::<u64>(),
    );
    drop(traffic);

    println!("\nSummary ({:.0} s):", started.elapsed().as_secs_f64());
    println!(
        "  shop-v2: {} at {}% candidate weight",
        status["phase"].as_str().unwrap_or(""),
        status["weight"]
    );
    match takeover {
        Some(t) => println!(
            "  takeover: the other replica led {:.1} s after the leader was killed (lease {} s)",
            t.as_secs_f64(),
            TTL.as_secs()
        ),
        None => println!("  takeover: none seen"),
    }
    println!("  steps taken, each once: {}", steps.join("; "));
    println!("  proxies serving the candidate at: {served:?}");
    println!("  requests: {sent} sent, {failed} failed");
    for p in proxies {
        p.shutdown().await;
    }
    let once = {
        let mut numbers: Vec<&str> = steps.iter().filter_map(|m| m.split(':').next()).collect();
        let n = numbers.len();
        numbers.dedup();
        numbers.len() == n && n == 4
    };
    if status["phase"] != "Completed" || takeover.is_none() || !once || failed > 0 {
        bail!("the fleet demo did not end as expected");
    }
    Ok(())
}

fn canary_weight(routes: &Value) -> f64 {
    routes["routes"][0]["tracks"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "canary"))
        .and_then(|t| t["weight"].as_f64())
        .unwrap_or(-1.0)
}

/// The rollout's status from the first live replica that answers.
async fn status(http: &Http, replicas: &[ReplicaProcess], live: &[usize]) -> Option<Value> {
    for &i in live {
        if let Ok(s) = http.get_json(&format!("{}/rollouts/shop-v2", replicas[i].url)).await {
            return Some(s);
        }
    }
    None
}

/// The live replica that says it leads.
async fn leader_of(http: &Http, replicas: &[ReplicaProcess], live: &[usize]) -> Option<usize> {
    for &i in live {
        if let Ok(r) = http.get_json(&format!("{}/replica", replicas[i].url)).await
            && r["role"] == "leader"
        {
            return Some(i);
        }
    }
    None
}

async fn wait_for_leader(http: &Http, replicas: &[ReplicaProcess]) -> anyhow::Result<usize> {
    let live: Vec<usize> = (0..replicas.len()).collect();
    for _ in 0..200 {
        if let Some(i) = leader_of(http, replicas, &live).await {
            return Ok(i);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("no controller replica was elected within 10 s")
}

async fn wait_for_members(http: &Http, url: &str, n: usize) -> anyhow::Result<usize> {
    for _ in 0..200 {
        if let Ok(g) = http.get_json(&format!("{url}/fleet/{GROUP}")).await {
            let count = g["proxies"].as_array().map_or(0, Vec::len);
            if count >= n {
                return Ok(count);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the group's proxies did not all register within 10 s")
}
