//! The fleet-scale scenario (feature `fleet`): how a group of N proxies on a 3-member etcd
//! follows the controller, and what observing N proxies costs. For each N, on a fresh etcd:
//!
//! 1. N proxies start in this process and join one group; the first one's routes (route `app`,
//!    tracks `stable` and `canary`) become the group's table.
//! 2. Propagation: the canary's weight changes `changes` times (5, 10, 25, 50, 5, …), each the
//!    controller's publish of a group step ([`Fleet::write_table`] on the revision read, the
//!    table planned by [`plan::apply`]). Timed from just before the write until every one of
//!    the N registrations reports a `tableRevision` at least the write's, as the controller
//!    confirms a step; then a sample of proxies is asked `GET /routes` that they serve the
//!    weight. etcd's CPU is counted over the whole phase.
//! 3. Observing: a child process ([`observer`]) reads every proxy's `/stats` once a second, as
//!    the control loop observes a rollout; its CPU and memory are read from `/proc`, and etcd's
//!    over the same seconds (the group idle: lease keep-alives only).
//!
//! It prints its figures as Markdown tables. It is a measurement, not a test: nothing here
//! fails on a slow figure.

pub mod observer;
pub mod usage;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use http::Method;
use switchyard_config::fleet::{FleetKeys, GroupName};
use switchyard_config::rollout::RolloutSpec;
use switchyard_config::{Format, RoutesDocument, load_config, load_rollout};
use switchyard_control::fleet::{Expect, Fleet, Members};
use switchyard_control::http::Http;
use switchyard_control::plan::{self, Traffic};
use switchyard_proxy::fleet::FleetOptions;
use switchyard_proxy::{Options, Running};
use switchyard_testkit::EtcdCluster;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::upstream::{Faults, Live, spawn};
use usage::CpuMeter;

/// The rollout whose steps the scenario plays: the observer reads its route and tracks, and
/// each weight change is planned from it.
const ROLLOUT: &str = r#"
name: fleet-scale
route: app
proxies: { group: scale }
baseline: stable
candidate: canary
canary:
  steps:
    - setWeight: 5
analysis:
  interval: 1s
  window: 10s
  metrics:
    - name: success-rate
      successRate: { min: 0.99 }
"#;
/// The group, as [`ROLLOUT`] names it.
const GROUP: &str = "scale";
/// The canary weights, in turn: each differs from the one before.
const WEIGHTS: [f64; 4] = [5.0, 10.0, 25.0, 50.0];
/// How long N proxies may take to join; past it the scenario gives up on that N.
const JOIN_WITHIN: Duration = Duration::from_secs(180);
/// How long one change may take to be confirmed by every proxy before the scenario gives up.
const CONFIRM_WITHIN: Duration = Duration::from_secs(30);
/// Between changes, so that one change's registration writes are not the next one's load.
const BETWEEN_CHANGES: Duration = Duration::from_millis(250);
/// Proxies asked `GET /routes` after each change.
const SAMPLE: usize = 10;

/// What to measure.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Group sizes, measured in this order.
    pub proxies: Vec<usize>,
    /// Weight changes per size.
    pub changes: u32,
    /// How long the observer is measured for.
    pub observe: Duration,
}

/// The scenario's rollout.
pub fn rollout() -> RolloutSpec {
    load_rollout(ROLLOUT, Format::Yaml).expect("the scenario's rollout is valid")
}

/// Runs the scenario for every size in `settings`.
pub fn run(settings: &Settings) -> anyhow::Result<()> {
    anyhow::ensure!(settings.changes > 0, "--changes must be at least 1");
    // Every proxy holds listeners and etcd connections: N = 500 needs thousands of descriptors.
    let limits = switchyard_proxy::open_files::raise();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!(
        "fleet scale: N = {} proxies on {}, {} build; open-file limit {}",
        settings
            .proxies
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        machine(),
        if cfg!(debug_assertions) { "debug" } else { "release" },
        limits.map_or_else(|| "unknown".to_owned(), |(_, raised)| raised.to_string()),
    );
    runtime.block_on(async {
        let mut all = Vec::new();
        for &n in &settings.proxies {
            let figures = size(n.max(1), settings).await.with_context(|| format!("{n} proxies"))?;
            all.push(figures);
        }
        print_tables(&all, settings);
        Ok(())
    })
}

/// The figures of one group size.
#[derive(Debug)]
struct Figures {
    proxies: usize,
    joined: Duration,
    propagation: Propagation,
    observing: Observing,
    /// This process (the N proxies, the upstreams and the controller's etcd client), MB.
    proxies_rss_mb: f64,
    /// Summed over etcd's members, MB.
    etcd_rss_mb: f64,
    /// Open descriptors summed over etcd's members.
    etcd_files: usize,
}

#[derive(Debug)]
struct Propagation {
    /// Write to every registration confirming, ms, one per change, sorted.
    confirmed_ms: Vec<f64>,
    /// Write to the first registration confirming, ms, sorted.
    first_ms: Vec<f64>,
    /// The write call alone, ms, sorted.
    written_ms: Vec<f64>,
    /// etcd's CPU (all members) per change, ms.
    etcd_cpu_ms: f64,
    /// The busiest etcd member (the leader, as a rule) over the phase, percent of one core.
    etcd_busiest_percent: f64,
    /// This process's CPU per change (N proxies applying the table and registering, and the
    /// controller following N registrations), ms.
    proxies_cpu_ms: f64,
}

#[derive(Debug)]
struct Observing {
    summary: observer::Summary,
    /// The observer process, percent of one core.
    cpu_percent: f64,
    /// The observer's largest resident memory over the measured seconds, MB.
    rss_mb: f64,
    /// etcd's members, summed, percent of one core.
    etcd_percent: f64,
    /// The busiest etcd member, percent of one core.
    etcd_busiest_percent: f64,
    /// This process (N proxies answering `/stats`), percent of one core.
    proxies_percent: f64,
}

async fn size(n: usize, settings: &Settings) -> anyhow::Result<Figures> {
    println!("\n{n} proxies:");
    let etcd = EtcdCluster::start(&format!("fleet-scale-{n}"), 3).await;
    let etcd_pids = etcd.pids();
    let spec = rollout();
    let group = GroupName::new(GROUP).expect("a valid group name");
    let fleet = Fleet::connect(etcd.client_urls(), FleetKeys::default())
        .await
        .context("connecting the controller to etcd")?;
    let mut members = fleet.members(&group);

    let started = Instant::now();
    let proxies = start_proxies(n, &etcd).await?;
    let revision = loop {
        if let Some(table) = fleet.table(&group).await? {
            break table.revision;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    confirm(
        &mut members,
        revision,
        n,
        JOIN_WITHIN - started.elapsed().min(JOIN_WITHIN),
    )
    .await
    .with_context(|| format!("{n} proxies did not all join within {JOIN_WITHIN:?}"))?;
    let joined = started.elapsed();
    println!("  joined in {:.1} s", joined.as_secs_f64());

    let propagation = propagate(
        &fleet,
        &mut members,
        &group,
        &spec,
        &proxies,
        &etcd_pids,
        settings.changes,
    )
    .await?;
    println!(
        "  propagation: p50 {:.0} ms, p99 {:.0} ms over {} changes",
        percentile(&propagation.confirmed_ms, 0.50),
        percentile(&propagation.confirmed_ms, 0.99),
        settings.changes
    );
    let me = std::process::id();
    let proxies_rss_mb = mb(usage::rss(me).unwrap_or(0));
    let etcd_rss_mb = mb(etcd_pids.iter().filter_map(|p| usage::rss(*p)).sum());
    let etcd_files = etcd_pids.iter().filter_map(|p| usage::open_files(*p)).sum();

    let urls: Vec<String> = proxies.iter().map(|p| format!("http://{}", p.admin)).collect();
    let observing = observe(&urls, &etcd_pids, settings.observe).await?;
    println!(
        "  observing: {:.1}% of a core, {:.0} MB; one observation p50 {:.0} ms",
        observing.cpu_percent, observing.rss_mb, observing.summary.p50_ms
    );

    let mut stopping = JoinSet::new();
    for p in proxies {
        stopping.spawn(p.shutdown());
    }
    stopping.join_all().await;
    drop(fleet);
    drop(etcd);
    Ok(Figures {
        proxies: n,
        joined,
        propagation,
        observing,
        proxies_rss_mb,
        etcd_rss_mb,
        etcd_files,
    })
}

/// Starts `n` proxies in this process, each joining the group on `etcd` with its own listener,
/// admin listener and etcd client, all serving `app` in front of two idle upstreams.
async fn start_proxies(n: usize, etcd: &EtcdCluster) -> anyhow::Result<Vec<Running>> {
    let stable = spawn("stable", Faults::default(), Live::new(false)).await?;
    let canary = spawn("canary", Faults::default(), Live::new(false)).await?;
    // A small connection limit: nothing but the scenario connects.
    let config = format!(
        "listen: 127.0.0.1:0\nadmin: {{ listen: 127.0.0.1:0 }}\nlimits: {{ maxConnections: 16 }}\nroutes:\n  - name: app\n    tracks:\n      - {{ name: stable, endpoints: [\"{stable}\"], weight: 100 }}\n      - {{ name: canary, endpoints: [\"{canary}\"], weight: 0 }}\n"
    );
    let group = GroupName::new(GROUP).expect("a valid group name");
    let mut proxies = Vec::with_capacity(n);
    for i in 0..n {
        let loaded = load_config(&config, Format::Yaml, 1).map_err(|e| anyhow::anyhow!("{e}"))?;
        let options = Options {
            workers: 1,
            fleet: Some(FleetOptions::new(etcd.client_urls(), group.clone())),
            ..Options::default()
        };
        let p = switchyard_proxy::start(loaded, options)
            .await
            .with_context(|| format!("starting proxy {} of {n}", i + 1))?;
        proxies.push(p);
    }
    Ok(proxies)
}

/// Plays `changes` weight changes and times each until every proxy confirmed it.
async fn propagate(
    fleet: &Fleet,
    members: &mut watch::Receiver<Members>,
    group: &GroupName,
    spec: &RolloutSpec,
    proxies: &[Running],
    etcd_pids: &[u32],
    changes: u32,
) -> anyhow::Result<Propagation> {
    let http = Http::new(Duration::from_secs(5));
    let n = proxies.len();
    let etcd = CpuMeter::start(etcd_pids);
    let this = CpuMeter::start(&[std::process::id()]);
    let (mut confirmed_ms, mut first_ms, mut written_ms) = (Vec::new(), Vec::new(), Vec::new());
    for change in 0..changes {
        let weight = WEIGHTS[change as usize % WEIGHTS.len()];
        let table = fleet
            .table(group)
            .await?
            .with_context(|| format!("group {group} has no table"))?;
        let traffic = Traffic {
            candidate_weight: weight,
            ..Traffic::baseline()
        };
        let planned = plan::apply(&table.routes, spec, &traffic)?;
        let started = Instant::now();
        let revision = fleet
            .write_table(group, &planned, Expect::Revision(table.revision), false)
            .await?;
        written_ms.push(ms(started.elapsed()));
        let (first, all) = confirm(members, revision, n, CONFIRM_WITHIN)
            .await
            .with_context(|| format!("change {} (canary at {weight}%)", change + 1))?;
        first_ms.push(ms(first - started));
        confirmed_ms.push(ms(all - started));
        for i in sample(n) {
            check_served(&http, &proxies[i], spec, weight).await?;
        }
        tokio::time::sleep(BETWEEN_CHANGES).await;
    }
    let per_change = |meter: &CpuMeter| ms(meter.total()) / f64::from(changes);
    for v in [&mut confirmed_ms, &mut first_ms, &mut written_ms] {
        v.sort_by(f64::total_cmp);
    }
    Ok(Propagation {
        confirmed_ms,
        first_ms,
        written_ms,
        etcd_cpu_ms: per_change(&etcd),
        etcd_busiest_percent: etcd.busiest_percent(),
        proxies_cpu_ms: per_change(&this),
    })
}

/// Waits until `n` registrations report a table revision of at least `revision`; returns when
/// the first did and when the `n`-th did.
async fn confirm(
    members: &mut watch::Receiver<Members>,
    revision: i64,
    n: usize,
    within: Duration,
) -> anyhow::Result<(Instant, Instant)> {
    let deadline = tokio::time::Instant::now() + within;
    let mut first = None;
    loop {
        let serving = members
            .borrow_and_update()
            .by_id
            .values()
            .filter(|m| m.registration.table_revision.is_some_and(|t| t >= revision))
            .count();
        let now = Instant::now();
        if serving > 0 {
            first.get_or_insert(now);
        }
        if serving >= n {
            return Ok((first.unwrap_or(now), now));
        }
        match tokio::time::timeout_at(deadline, members.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => bail!("the controller stopped following the group"),
            Err(_) => {
                let m = members.borrow();
                bail!(
                    "{serving} of {n} proxies confirmed revision {revision} within {within:?} ({} registered{})",
                    m.by_id.len(),
                    m.error.as_deref().map_or_else(String::new, |e| format!("; {e}"))
                );
            }
        }
    }
}

/// The proxies asked after each change: [`SAMPLE`] of them, spread over the group.
fn sample(n: usize) -> impl Iterator<Item = usize> {
    let k = SAMPLE.min(n);
    (0..k).map(move |i| i * n / k)
}

/// Fails unless `p` serves `weight` percent to the canary, as `GET /routes` says.
async fn check_served(http: &Http, p: &Running, spec: &RolloutSpec, weight: f64) -> anyhow::Result<()> {
    let url = format!("http://{}/routes", p.admin);
    let (status, _, body) = http.call(Method::GET, &url, &[], None).await?;
    anyhow::ensure!(status.is_success(), "{url}: {status}");
    let document = RoutesDocument::read(&String::from_utf8_lossy(&body), Format::Json)
        .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
    let served = document
        .routes
        .iter()
        .find(|r| r.name == spec.route)
        .and_then(|r| r.tracks.iter().find(|t| t.name == spec.candidate))
        .map(|t| t.weight);
    if served != Some(weight) {
        bail!(
            "{url}: the proxy confirmed the table but serves the canary {} instead of {weight}%",
            served.map_or_else(|| "nothing".to_owned(), |w| format!("{w}%"))
        );
    }
    Ok(())
}

/// Runs the observer over `urls` for `seconds` and reads what it cost.
async fn observe(urls: &[String], etcd_pids: &[u32], seconds: Duration) -> anyhow::Result<Observing> {
    let mut child = Command::new(std::env::current_exe().context("finding this program")?)
        .arg("fleet-scale-observe")
        .args(urls)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the observer")?;
    let measured = measure_observer(&mut child, etcd_pids, seconds).await;
    if measured.is_err() {
        let _ = child.kill();
    }
    let _ = child.wait();
    measured
}

async fn measure_observer(child: &mut Child, etcd_pids: &[u32], seconds: Duration) -> anyhow::Result<Observing> {
    let out = BufReader::new(child.stdout.take().context("the observer's output")?);
    let (out, line) = read_line(out).await?;
    anyhow::ensure!(
        line.trim() == observer::READY,
        "the observer did not start (its error is above)"
    );
    let pid = child.id();
    let observer_cpu = CpuMeter::start(&[pid]);
    let etcd = CpuMeter::start(etcd_pids);
    let this = CpuMeter::start(&[std::process::id()]);
    let mut rss = 0;
    let end = tokio::time::Instant::now() + seconds;
    while tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(1).min(end - tokio::time::Instant::now())).await;
        rss = rss.max(usage::rss(pid).unwrap_or(0));
    }
    let (cpu_percent, proxies_percent) = (observer_cpu.percent(), this.percent());
    let (etcd_percent, etcd_busiest_percent) = (etcd.percent(), etcd.busiest_percent());
    // Closing its input ends the observer, which then prints its summary.
    drop(child.stdin.take());
    let (_, line) = read_line(out).await?;
    let summary: observer::Summary =
        serde_json::from_str(line.trim()).with_context(|| format!("the observer's summary: {line:?}"))?;
    Ok(Observing {
        summary,
        cpu_percent,
        rss_mb: mb(rss),
        etcd_percent,
        etcd_busiest_percent,
        proxies_percent,
    })
}

/// One line of the observer's output, read off the runtime (the pipe blocks).
async fn read_line(mut out: BufReader<ChildStdout>) -> anyhow::Result<(BufReader<ChildStdout>, String)> {
    let read = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        let n = out.read_line(&mut line);
        n.map(|_| (out, line))
    });
    tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .context("the observer did not answer within 120 s")??
        .context("reading the observer's output")
}

fn print_tables(all: &[Figures], settings: &Settings) {
    println!(
        "\nPropagation: {} weight changes per size, write → every registration at the write's revision (nearest-rank percentiles: below 100 changes, p99 is the slowest)\n",
        settings.changes
    );
    println!(
        "| proxies | joined | p50 | p99 | max | first proxy p50 | write p50 | etcd CPU per change | busiest etcd member | proxies' process CPU per change |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for f in all {
        let p = &f.propagation;
        println!(
            "| {} | {:.1} s | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {:.1} ms | {:.0} ms | {:.1}% | {:.0} ms |",
            f.proxies,
            f.joined.as_secs_f64(),
            percentile(&p.confirmed_ms, 0.50),
            percentile(&p.confirmed_ms, 0.99),
            p.confirmed_ms.last().copied().unwrap_or(0.0),
            percentile(&p.first_ms, 0.50),
            percentile(&p.written_ms, 0.50),
            p.etcd_cpu_ms,
            p.etcd_busiest_percent,
            p.proxies_cpu_ms,
        );
    }
    println!(
        "\nObserving: every proxy's /stats once a second for {} s, in a process of its own\n",
        settings.observe.as_secs()
    );
    println!(
        "| proxies | observer CPU | observer RSS | observation p50 | observation max | failed reads | proxies' process CPU | etcd CPU (idle group) | busiest etcd member | etcd RSS | etcd descriptors | proxies' process RSS |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for f in all {
        let o = &f.observing;
        println!(
            "| {} | {:.1}% | {:.0} MB | {:.0} ms | {:.0} ms | {} | {:.1}% | {:.1}% | {:.1}% | {:.0} MB | {} | {:.0} MB |",
            f.proxies,
            o.cpu_percent,
            o.rss_mb,
            o.summary.p50_ms,
            o.summary.max_ms,
            o.summary.failures,
            o.proxies_percent,
            o.etcd_percent,
            o.etcd_busiest_percent,
            f.etcd_rss_mb,
            f.etcd_files,
            f.proxies_rss_mb,
        );
    }
    println!(
        "\nCPU figures are percent of one core; etcd's are summed over its three members, beside the busiest member's."
    );
}

/// The nearest-rank percentile `q` (0 to 1) of `sorted`.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The CPU model and core count, from `/proc/cpuinfo`.
fn machine() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split(':').nth(1)))
        .map_or("an unknown CPU", str::trim);
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    format!("{cores} × {model}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let twenty: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&twenty, 0.50), 10.0);
        assert_eq!(percentile(&twenty, 0.99), 20.0, "over 20 samples p99 is the slowest");
        assert_eq!(percentile(&[7.0], 0.5), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn the_sample_spreads_over_the_group_without_repeats() {
        assert_eq!(sample(3).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(
            sample(500).collect::<Vec<_>>(),
            [0, 50, 100, 150, 200, 250, 300, 350, 400, 450]
        );
    }

    #[test]
    fn the_rollout_reads_and_plans_the_weights() {
        let spec = rollout();
        assert_eq!(spec.proxies.group().map(GroupName::as_str), Some(GROUP));
        assert!(WEIGHTS.windows(2).all(|w| w[0] != w[1]) && WEIGHTS[0] != WEIGHTS[WEIGHTS.len() - 1]);
    }
}
