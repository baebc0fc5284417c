//! The observer of the fleet-scale scenario, in a process of its own so that its CPU and memory
//! are its own: once a second it reads every proxy's `/stats` at once and merges them, as the
//! control loop observes a rollout (`observe_each`, then the baseline and the candidate merged
//! across proxies). It runs on the controller's runtime (two worker threads).
//!
//! Talking to the scenario: it prints [`READY`] once its connections are up, observes until its
//! standard input closes, then prints one [`Summary`] as JSON and exits.

use std::io::{BufRead as _, Write as _};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use switchyard_config::rollout::{RolloutSpec, StatsSeries};
use switchyard_control::http::Http;
use switchyard_control::observe::observe_each;
use tokio::sync::oneshot;

/// The line the observer prints when it has observed every proxy once.
pub const READY: &str = "ready";
/// Observations before [`READY`]: the first one opens a connection to every proxy.
const WARM_UP: u32 = 2;
/// How long one proxy's answer may take, as the controller's default.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// What the observer saw: written by the observer and read by the scenario with this type.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// Observations after [`READY`].
    pub observations: u32,
    /// Proxy answers that could not be used, over those observations.
    pub failures: u64,
    /// Candidate requests in the last merged observation (0: the scenario sends no traffic).
    pub candidate_requests: u64,
    /// How long one observation of every proxy took: median and slowest, ms.
    pub p50_ms: f64,
    /// The slowest observation, ms.
    pub max_ms: f64,
}

/// Observes `urls` (admin URLs) for `spec`'s route once a second until standard input closes.
pub fn run(spec: &RolloutSpec, urls: &[String]) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (closed, stop) = oneshot::channel();
    // Standard input is read on a thread of its own: tokio's stdin is a blocking thread too.
    std::thread::spawn(move || {
        let mut sink = String::new();
        let mut stdin = std::io::stdin().lock();
        while stdin.read_line(&mut sink).is_ok_and(|n| n > 0) {
            sink.clear();
        }
        let _ = closed.send(());
    });
    let summary = runtime.block_on(observe(spec, urls, stop))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string(&summary)?)?;
    out.flush()?;
    Ok(())
}

async fn observe(spec: &RolloutSpec, urls: &[String], mut stop: oneshot::Receiver<()>) -> anyhow::Result<Summary> {
    let http = Http::new(CALL_TIMEOUT);
    let window = spec.analysis.as_ref().map_or(Duration::from_secs(10), |a| a.window);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut taken = 0_u32;
    let mut failures = 0_u64;
    let mut durations = Vec::new();
    let mut candidate_requests = 0;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {}
        }
        let started = Instant::now();
        let answers = observe_each(&http, spec, urls, window, None, StatsSeries::Primary).await;
        let elapsed = started.elapsed();
        let mut merged = None;
        let mut failed = 0;
        for (_, answer) in &answers {
            match (answer, &mut merged) {
                (Ok(o), None) => merged = Some(o.clone()),
                (Ok(o), Some(m)) => m.merge(o),
                (Err(_), _) => failed += 1,
            }
        }
        taken += 1;
        if taken == WARM_UP {
            anyhow::ensure!(
                failed == 0,
                "{failed} of {} proxies did not answer /stats: {}",
                urls.len(),
                answers
                    .iter()
                    .find_map(|(_, a)| a.as_ref().err())
                    .map_or_else(String::new, ToString::to_string)
            );
            let mut out = std::io::stdout().lock();
            writeln!(out, "{READY}").context("telling the scenario")?;
            out.flush()?;
        }
        if taken > WARM_UP {
            failures += failed;
            durations.push(elapsed.as_secs_f64() * 1000.0);
            candidate_requests = merged.map_or(0, |m| m.candidate.requests);
        }
    }
    durations.sort_by(f64::total_cmp);
    Ok(Summary {
        observations: u32::try_from(durations.len()).unwrap_or(u32::MAX),
        failures,
        candidate_requests,
        p50_ms: durations.get(durations.len() / 2).copied().unwrap_or(0.0),
        max_ms: durations.last().copied().unwrap_or(0.0),
    })
}
