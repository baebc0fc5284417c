//! The control loop: one task per rollout that, every analysis interval (and at once on a
//! command), observes the proxies, analyzes, advances the rollout, publishes the planned
//! traffic to every proxy, persists, and notifies. Commands and the loop share the rollout's
//! state behind one lock, so each change is one step of the pure state machine.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::json;
use switchyard_config::rollout::{AnalysisSpec, RolloutSpec};
use switchyard_config::stats::TrackWindow;
use switchyard_config::{ConfigErrors, Format, load_rollout};
use tokio::sync::{Mutex, Notify};

use crate::analyze::{Counts, Cumulative, Measurement, Observation, Outcome, Sample, Tracker, Verdict};
use crate::http::Http;
use crate::observe::{Observed, Totals, observe};
use crate::publish::{ProxyReport, publish_all};
use crate::state::{AbortRecord, Command, Event, Phase, Refused, RolloutState};
use crate::store::{Record, Store};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The controller's clock: milliseconds since the Unix epoch, read as the wall clock at start
/// plus the tokio time elapsed since. Monotonic, so a wall-clock jump cannot end or stretch a
/// pause; still wall-clock ms, so times persisted before a restart compare with it after. It
/// follows tokio's clock, so tests with a paused clock drive pauses in virtual time.
#[derive(Debug, Clone, Copy)]
struct Clock {
    wall_ms: u64,
    start: tokio::time::Instant,
}

impl Clock {
    fn start() -> Self {
        Self {
            wall_ms: now_ms(),
            start: tokio::time::Instant::now(),
        }
    }

    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.wall_ms.saturating_add(elapsed)
    }
}

/// The running state of a rollout's analyses, persisted with it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRun {
    /// The analysis that runs throughout the rollout.
    pub background: Option<Tracker>,
    /// What the background analysis's sequential judges have counted since it began.
    pub background_since: Option<Since>,
    /// The current analysis step: its index, tracker and counts since it began.
    pub step: Option<(usize, Tracker, Since)>,
    /// The analysis step that passed, if the rollout has not moved past it yet.
    pub step_passed: Option<usize>,
    /// The last measurement, for status.
    pub last: Option<serde_json::Value>,
    /// The last observation of both tracks, for status.
    pub tracks: Option<serde_json::Value>,
}

/// An analysis's counts since it began: the proxies' lifetime totals at its last measurement,
/// and what its sequential judges have gathered from the intervals between.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Since {
    /// The proxies' totals at the last measurement (at the start: when the analysis began).
    pub last: Totals,
    /// Everything since the analysis began.
    pub cumulative: Cumulative,
}

impl Since {
    /// Counting from `totals`, the proxies' totals when the analysis begins.
    fn from(totals: Totals) -> Self {
        Self {
            last: totals,
            cumulative: Cumulative::default(),
        }
    }

    /// Adds the interval up to `totals` as one block of fresh counts. A total that fell (a proxy
    /// restarted) adds nothing for that count and counts on from the new total.
    fn advance(&mut self, totals: Totals) -> &Cumulative {
        let fresh = totals.since(&self.last);
        self.cumulative += Counts {
            candidate_requests: fresh.candidate_requests,
            candidate_errors: fresh.candidate_errors,
            baseline_requests: fresh.baseline_requests,
            baseline_errors: fresh.baseline_errors,
        };
        self.last = totals;
        &self.cumulative
    }
}

/// What `GET /rollouts/NAME` shows.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The rollout's name.
    pub name: String,
    /// The route it moves.
    pub route: String,
    /// `Progressing`, `Paused`, `Completed` or `Aborted`.
    pub phase: Phase,
    /// The step being worked on (0-based).
    pub step: usize,
    /// How many steps there are.
    pub steps: usize,
    /// The candidate's weight the rollout wants, percent.
    pub weight: f64,
    /// The candidate's weight every proxy confirmed, percent.
    pub confirmed_weight: Option<f64>,
    /// What is happening.
    pub message: String,
    /// The abort record, once aborted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort: Option<AbortRecord>,
    /// Per proxy: the confirmed version, or why not.
    pub proxies: Vec<ProxyReport>,
    /// Per track: requests/s, error rate and p99 over the last analysis window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracks: Option<serde_json::Value>,
    /// The last measurement's verdict and reasons.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analysis: Option<serde_json::Value>,
}

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The spec is invalid.
    #[error("{0}")]
    Invalid(#[from] ConfigErrors),
    /// No such rollout.
    #[error("no rollout named {0:?}")]
    NotFound(String),
    /// A rollout of that name is still active.
    #[error("rollout {0:?} is still active; abort it before applying a new one")]
    Active(String),
    /// The command does not apply now.
    #[error("{0}")]
    Refused(#[from] Refused),
    /// The state could not be written.
    #[error("cannot persist the rollout: {0}")]
    Store(#[from] std::io::Error),
}

struct Entry {
    spec: RolloutSpec,
    record: Mutex<Record>,
    reports: Mutex<Vec<ProxyReport>>,
    wake: Notify,
}

/// Every rollout and the loop that drives them.
pub struct Controller {
    http: Http,
    store: Store,
    clock: Clock,
    rollouts: std::sync::Mutex<BTreeMap<String, Arc<Entry>>>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl Controller {
    /// Opens the store and resumes every rollout in it where it was.
    pub fn start(store: Store, http: Http) -> Arc<Self> {
        let controller = Arc::new(Self {
            http,
            store,
            clock: Clock::start(),
            rollouts: std::sync::Mutex::new(BTreeMap::new()),
        });
        for (name, record) in controller.store.load_all() {
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(rollout = %name, error = %e, "cannot read the rollout's state; skipped");
                    continue;
                }
            };
            let format = if record.spec_is_json {
                Format::Json
            } else {
                Format::Yaml
            };
            match load_rollout(&record.spec_text, format) {
                Ok(spec) => {
                    tracing::info!(rollout = %name, phase = ?record.state.phase, step = record.state.step, "resuming");
                    controller.spawn(spec, record);
                }
                Err(e) => tracing::error!(rollout = %name, "stored spec no longer valid: {e}"),
            }
        }
        controller
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Entry>>> {
        self.rollouts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn entry(&self, name: &str) -> Result<Arc<Entry>, ControlError> {
        self.entries()
            .get(name)
            .cloned()
            .ok_or_else(|| ControlError::NotFound(name.to_owned()))
    }

    fn spawn(self: &Arc<Self>, spec: RolloutSpec, record: Record) {
        let entry = Arc::new(Entry {
            spec: spec.clone(),
            record: Mutex::new(record),
            reports: Mutex::new(Vec::new()),
            wake: Notify::new(),
        });
        self.entries().insert(spec.name.clone(), Arc::clone(&entry));
        let controller = Arc::clone(self);
        tokio::spawn(async move { controller.run(entry).await });
    }

    /// Validates and starts a rollout (replacing a finished one of the same name).
    pub async fn apply(self: &Arc<Self>, text: &str, format: Format) -> Result<Status, ControlError> {
        let spec = load_rollout(text, format)?;
        if let Ok(existing) = self.entry(&spec.name)
            && existing.record.lock().await.state.active()
        {
            return Err(ControlError::Active(spec.name));
        }
        let record = Record {
            spec_text: text.to_owned(),
            spec_is_json: format == Format::Json,
            state: RolloutState::new(self.clock.now_ms()),
            analysis: AnalysisRun::default(),
        };
        self.store.save(&spec.name, &record)?;
        let name = spec.name.clone();
        self.spawn(spec, record);
        self.status(&name).await
    }

    /// Applies an operator's command.
    pub async fn command(&self, name: &str, cmd: Command) -> Result<Status, ControlError> {
        let entry = self.entry(name)?;
        {
            let mut record = entry.record.lock().await;
            let mut next = record.clone();
            next.state.command(&entry.spec, cmd, self.clock.now_ms())?;
            if cmd == Command::Retry {
                next.analysis = AnalysisRun::default();
            }
            self.store.save(name, &next)?;
            *record = next;
        }
        entry.wake.notify_one();
        self.status(name).await
    }

    /// A rollout's status.
    pub async fn status(&self, name: &str) -> Result<Status, ControlError> {
        let entry = self.entry(name)?;
        let record = entry.record.lock().await;
        let state = &record.state;
        let steps = crate::plan::steps(&entry.spec).len();
        Ok(Status {
            name: name.to_owned(),
            route: entry.spec.route.to_string(),
            phase: state.phase,
            step: state.step,
            steps,
            weight: state.traffic.candidate_weight,
            confirmed_weight: state.confirmed.as_ref().map(|t| t.candidate_weight),
            message: state.message.clone(),
            abort: state.abort.clone(),
            proxies: entry.reports.lock().await.clone(),
            tracks: record.analysis.tracks.clone(),
            analysis: record.analysis.last.clone(),
        })
    }

    /// Every rollout's status, by name.
    pub async fn list(&self) -> Vec<Status> {
        let names: Vec<String> = self.entries().keys().cloned().collect();
        let mut out = Vec::new();
        for name in names {
            if let Ok(s) = self.status(&name).await {
                out.push(s);
            }
        }
        out
    }

    /// A rollout's history.
    pub async fn history(&self, name: &str) -> Result<Vec<Event>, ControlError> {
        let entry = self.entry(name)?;
        Ok(entry.record.lock().await.state.events.clone())
    }

    async fn run(self: Arc<Self>, entry: Arc<Entry>) {
        let interval = entry
            .spec
            .analysis
            .as_ref()
            .map_or(Duration::from_secs(1), |a| a.interval)
            .min(Duration::from_secs(1));
        loop {
            // A finished rollout keeps its task: `undo` or `retry` can make it act again, and a
            // settled, finished rollout costs one lock a second and no I/O.
            self.tick(&entry).await;
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = entry.wake.notified() => {}
            }
        }
    }

    /// One round for one rollout.
    async fn tick(&self, entry: &Entry) {
        let spec = &entry.spec;
        let mut record = entry.record.lock().await;
        let before = record.state.clone();
        let now = self.clock.now_ms();

        if record.state.active() {
            self.analyze(spec, &mut record, now).await;
        }
        let step_passed = record.analysis.step_passed == Some(record.state.step);
        record.state.advance(spec, now, step_passed);
        // Persist a decision before acting on it: an abort decided here must survive a crash
        // between publishing it and saving it, or a restart would publish the old weight again.
        if record.state != before {
            self.save(&spec.name, &record);
        }

        if !record.state.settled() {
            // An abort goes out before anything else, to every proxy at once.
            let traffic = record.state.traffic.clone();
            let reports = publish_all(&self.http, spec, &traffic).await;
            if reports.iter().all(|r| r.error.is_none()) {
                let now = self.clock.now_ms();
                record.state.confirm(traffic, now);
                record.state.advance(spec, now, step_passed);
            } else {
                for r in reports.iter().filter(|r| r.error.is_some()) {
                    tracing::warn!(rollout = %spec.name, proxy = %r.url, error = ?r.error, "proxy did not confirm");
                }
            }
            *entry.reports.lock().await = reports;
        }

        if record.state != before {
            self.save(&spec.name, &record);
            if let Some(url) = &spec.notify {
                let fresh: Vec<Event> =
                    record.state.events[before.events.len().min(record.state.events.len())..].to_vec();
                self.notify(url, spec, &record.state, fresh);
            }
        }
    }

    fn save(&self, name: &str, record: &Record) {
        if let Err(e) = self.store.save(name, record) {
            tracing::error!(rollout = %name, error = %e, "cannot persist the rollout's state");
        }
    }

    /// Observes and measures the analyses that run now, and acts on their verdicts.
    async fn analyze(&self, spec: &RolloutSpec, record: &mut Record, now: u64) {
        let step = record.state.step;
        let step_spec = record.state.step_analysis(spec);
        let background = spec.analysis.clone();
        if background.is_none() && step_spec.is_none() {
            return;
        }
        let window = background
            .iter()
            .chain(step_spec.iter())
            .map(|a| a.window)
            .max()
            .unwrap_or(Duration::from_secs(10));
        let observed = observe(&self.http, spec, window, None).await;
        if let Ok(o) = &observed {
            record.analysis.tracks = Some(tracks_view(spec, o));
        }
        let run = &mut record.analysis;

        if let Some(analysis) = &background {
            let since = run
                .background_since
                .get_or_insert_with(|| Since::from(totals_of(&observed)));
            let tracker = run.background.get_or_insert_with(|| Tracker::new(analysis));
            let (verdict, m) = judge(analysis, tracker, &observed, since);
            run.last = m.as_ref().map(measurement_json);
            self.act(spec, &mut record.state, verdict, m.as_ref(), now, "analysis");
        }
        if let Some(analysis) = &step_spec
            && record.state.active()
        {
            let run = &mut record.analysis;
            if run.step.as_ref().is_none_or(|(i, _, _)| *i != step) {
                run.step = Some((step, Tracker::new(analysis), Since::from(totals_of(&observed))));
            }
            if let Some((_, tracker, since)) = &mut run.step {
                let (verdict, m) = judge(analysis, tracker, &observed, since);
                if m.is_some() {
                    run.last = m.as_ref().map(measurement_json);
                }
                if verdict == Verdict::Passed {
                    run.step_passed = Some(step);
                }
                let origin = format!("step {step} analysis");
                self.act(spec, &mut record.state, verdict, m.as_ref(), now, &origin);
            }
        }
    }

    fn act(
        &self,
        spec: &RolloutSpec,
        state: &mut RolloutState,
        verdict: Verdict,
        m: Option<&Measurement>,
        now: u64,
        origin: &str,
    ) {
        if let Some(m) = m
            && m.outcome == Outcome::Fail
            && state.first_failure.is_none()
        {
            state.first_failure = Some(now);
        }
        match verdict {
            Verdict::Abort { reason } => {
                let detected = state.first_failure.unwrap_or(now);
                tracing::warn!(rollout = %spec.name, %reason, "aborting");
                state.abort(
                    now,
                    format!("{origin}: {reason}"),
                    m.map(measurement_json).unwrap_or_default(),
                    detected,
                );
            }
            Verdict::PauseInconclusive => {
                if state.phase == Phase::Progressing {
                    let _ = state.command(spec, Command::Pause, now);
                    state.message = format!("{origin}: too many inconclusive measurements; paused");
                }
            }
            Verdict::Continue | Verdict::Passed => {}
        }
    }

    fn notify(&self, url: &str, spec: &RolloutSpec, state: &RolloutState, events: Vec<Event>) {
        let interesting: Vec<Event> = events
            .into_iter()
            .filter(|e| matches!(e.kind.as_str(), "step" | "pause" | "promote" | "abort" | "complete"))
            .collect();
        if interesting.is_empty() {
            return;
        }
        let body = json!({
            "rollout": spec.name,
            "route": spec.route,
            "phase": state.phase,
            "weight": state.traffic.candidate_weight,
            "events": interesting,
            "abort": state.abort,
        });
        let (http, url) = (self.http.clone(), url.to_owned());
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(200);
            for attempt in 1..=5 {
                match http.send_json(http::Method::POST, &url, &[], &body).await {
                    Ok(_) => return,
                    Err(e) => tracing::warn!(%url, attempt, error = %e, "webhook failed"),
                }
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        });
    }
}

/// One measurement and the tracker's verdict; unreachable stats count as errors.
fn judge(
    spec: &AnalysisSpec,
    tracker: &mut Tracker,
    observed: &Result<Observed, String>,
    since: &mut Since,
) -> (Verdict, Option<Measurement>) {
    match observed {
        Ok(o) => {
            let cumulative = since.advance(o.totals);
            let m = crate::analyze::measure(
                spec,
                &Observation {
                    candidate: sample(&o.candidate),
                    baseline: sample(&o.baseline),
                },
                cumulative,
            );
            (tracker.record(&m, true), Some(m))
        }
        Err(e) => {
            tracing::warn!(error = %e, "stats unreachable");
            (tracker.record_unreachable(), None)
        }
    }
}

fn sample(w: &TrackWindow) -> Sample {
    Sample {
        requests: w.requests,
        errors: w.errors,
        latency: w.histogram.clone(),
        seconds: w.window_seconds as f64,
    }
}

fn totals_of(observed: &Result<Observed, String>) -> Totals {
    observed.as_ref().map(|o| o.totals).unwrap_or_default()
}

fn measurement_json(m: &Measurement) -> serde_json::Value {
    serde_json::to_value(m).unwrap_or_default()
}

fn tracks_view(spec: &RolloutSpec, o: &Observed) -> serde_json::Value {
    let view = |w: &TrackWindow| {
        json!({
            "requests": w.requests,
            "rps": w.rate_per_second(),
            "errorRate": w.error_rate(),
            "p99Ms": w.quantile_ms(0.99),
        })
    };
    json!({
        spec.baseline.as_str(): view(&o.baseline),
        spec.candidate.as_str(): view(&o.candidate),
    })
}
