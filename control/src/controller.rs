//! The control loop: one task per rollout that observes the proxies, analyzes, advances the
//! rollout, publishes the planned traffic to every proxy, persists and notifies.
//!
//! The task owns every network call of its rollout; commands and status never wait for one.
//! The rollout's state sits behind a plain mutex that is taken only between I/O, never across
//! an `.await`: a command applies at once, bumps the rollout's generation and wakes the task,
//! which drops whatever call it had in flight (a publish to a proxy that hangs, a stats read)
//! and starts again from the new state, so an abort reaches every healthy proxy at once. An
//! observation made before a command is dropped rather than judged against the new state.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::json;
use switchyard_config::fleet::GroupName;
use switchyard_config::rollout::{AnalysisSpec, RolloutSpec, StatsSeries, WebhookGate};
use switchyard_config::stats::TrackWindow;
use switchyard_config::{ConfigErrors, FieldError, Format, RouteSpec, load_rollout};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::analyze::{Counts, Cumulative, Measurement, Observation, Outcome, Readings, Sample, Tracker, Verdict};
use crate::fleet::{Expect, Fleet, FleetError, Members};
use crate::http::Http;
use crate::observe::{ObserveError, Observed, observe_each, providers};
use crate::plan::Traffic;
use crate::publish::publish_one;
use crate::series::{self, Measurements, Point, Series};
use crate::state::{AbortRecord, Command, Event, EventKind, Evidence, Phase, Refused, RolloutState};
use crate::store::{Record, Store};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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
        self.wall_ms.saturating_add(millis(self.start.elapsed()))
    }

    /// Sleeps until the clock reads `at_ms`.
    async fn sleep_until(&self, at_ms: u64) {
        let wait = at_ms.saturating_sub(self.now_ms());
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
}

/// One analysis run: its tracker, when it began, when it measures next, and what its
/// sequential judges have counted since it began.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    /// The verdicts so far.
    pub tracker: Tracker,
    /// When the analysis began (ms since epoch): it counts only requests served from then on.
    pub began_at: u64,
    /// When it takes its next measurement (ms since epoch).
    pub next_at: u64,
    /// The counts since it began; `None` until the proxies' totals at its start are read.
    pub since: Option<Since>,
}

impl Run {
    fn new(spec: &AnalysisSpec, now: u64) -> Self {
        Self {
            tracker: Tracker::new(spec),
            began_at: now,
            next_at: now
                .saturating_add(millis(spec.initial_delay))
                .saturating_add(millis(spec.interval)),
            since: None,
        }
    }

    /// Schedules the measurement after the one just taken at `now`: one interval on, or one
    /// interval from now when the schedule fell behind (a restart, a slow proxy).
    fn measured(&mut self, spec: &AnalysisSpec, now: u64) {
        let interval = millis(spec.interval).max(1);
        self.next_at = self.next_at.saturating_add(interval);
        if self.next_at <= now {
            self.next_at = now.saturating_add(interval);
        }
    }
}

/// The current step's analysis run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepRun {
    /// The step (0-based).
    pub step: usize,
    /// Its run.
    pub run: Run,
}

/// The running state of a rollout's analyses, persisted with it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AnalysisRun {
    /// The analysis that runs throughout the rollout, once the candidate has traffic.
    pub background_run: Option<Run>,
    /// The current analysis step's run.
    pub step_run: Option<StepRun>,
    /// The analysis step that passed, if the rollout has not moved past it yet.
    pub step_passed: Option<usize>,
    /// Passing background measurements during a step: (step, count).
    pub passes_in_step: Option<(usize, u32)>,
    /// The last measurement, for status.
    pub last: Option<serde_json::Value>,
    /// The last observation of both tracks, for status.
    pub tracks: Option<BTreeMap<String, TrackFigures>>,
    /// When [`Self::tracks`] was observed (ms since epoch).
    pub tracks_at: Option<u64>,
    /// The rollout's analysis while a stepped rollback is under way: only an emergency limit
    /// or a sequential rejection acts on it, sending the candidate straight to 0.
    pub rollback_run: Option<Run>,
    /// The webhook gate of the current step, while the rollout is at it.
    pub gate: Option<GateRun>,
}

/// A webhook gate the rollout is held at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GateRun {
    /// The step it holds, 0-based.
    pub step: usize,
    /// The webhook.
    pub url: String,
    /// Since when the rollout has been held at it (ms since epoch).
    pub since: u64,
    /// When it is called next (ms since epoch).
    pub next_at: u64,
    /// How many times it was called.
    pub calls: u32,
    /// It answered 2xx: the rollout goes on.
    pub open: bool,
    /// Its last answer other than 2xx, or why it could not be called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Since when an operator has held the rollout paused at it: that time does not count
    /// toward the progress deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_at: Option<u64>,
}

/// An analysis's counts since it began: each proxy's lifetime totals at the last measurement,
/// and what its sequential judges have gathered from the intervals between.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Since {
    /// Each proxy's totals at the last measurement that reached it, by admin URL.
    pub last_by_proxy: BTreeMap<String, Counts>,
    /// Everything since the analysis began.
    pub cumulative: Cumulative,
}

impl Since {
    /// Adds the interval up to each proxy's `totals` as one block of fresh counts. Only a proxy
    /// seen before adds: one seen for the first time (it did not answer at the start) gives its
    /// totals as the point to count from, since it cannot tell which of them came after the
    /// analysis began. A total that fell (the proxy restarted) adds nothing for that count.
    fn advance<'a>(&mut self, totals: impl IntoIterator<Item = (&'a str, Counts)>) -> &Cumulative {
        let mut fresh = Counts::default();
        for (url, now) in totals {
            if let Some(last) = self.last_by_proxy.get(url) {
                fresh += now.since(last);
            }
            self.last_by_proxy.insert(url.to_owned(), now);
        }
        self.cumulative += fresh;
        &self.cumulative
    }
}

/// What one proxy last did for the rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyStatus {
    /// The proxy's admin API URL.
    pub url: String,
    /// The table version in which it confirmed the rollout's current traffic; `None` while it
    /// has not.
    pub version: Option<u64>,
    /// Why its last publish or stats read failed, while it fails.
    pub error: Option<String>,
    /// When it last answered (ms since epoch).
    pub last_answered_at: Option<u64>,
}

/// One track's figures over a measurement's window, merged across the proxies that answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrackFigures {
    /// Requests in the window.
    pub requests: u64,
    /// Requests per second.
    pub rps: f64,
    /// 5xx share, 0 to 1.
    pub error_rate: f64,
    /// Median latency, ms; `None` without requests (or in a state stored before it was kept).
    #[serde(default)]
    pub p50_ms: Option<f64>,
    /// 99th-percentile latency, ms; `None` without requests.
    pub p99_ms: Option<f64>,
}

/// The `Degraded` condition: the rollout's traffic has not been confirmed by every proxy within
/// the progress deadline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Degraded {
    /// Since when the traffic has been waiting (ms since epoch).
    pub since: u64,
    /// What is wrong, in a sentence.
    pub message: String,
    /// The proxies that did not confirm, and why.
    pub proxies: Vec<ProxyStatus>,
}

/// What `GET /rollouts/NAME` and every command answer show; the CLI reads it with this type.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The rollout's name.
    pub name: String,
    /// The route it moves.
    pub route: String,
    /// `Progressing`, `Paused`, `Completed` or `Aborted`.
    pub phase: Phase,
    /// The strategy's key in the spec: `canary`, `blueGreen` or `rings`.
    #[serde(default)]
    pub strategy: String,
    /// The step being worked on, 0-based (`steps` once all are done); people count it from 1.
    pub step: usize,
    /// How many steps there are.
    pub steps: usize,
    /// What each step does, in order (`weight 10%`, `pause 30s`): a blue-green or rings
    /// rollout's as the canary steps it runs.
    #[serde(default)]
    pub step_labels: Vec<String>,
    /// The candidate's weight the rollout wants, percent.
    pub weight: f64,
    /// The candidate's weight every proxy confirmed, percent.
    pub confirmed_weight: Option<f64>,
    /// What is happening.
    pub message: String,
    /// The abort record, once aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<AbortRecord>,
    /// Set while the rollout's traffic has waited longer than its progress deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degraded: Option<Degraded>,
    /// Per proxy: the confirmed version, its last error and when it last answered. For a
    /// group, every proxy registered in it.
    pub proxies: Vec<ProxyStatus>,
    /// For a rollout over a group: the group's table as the rollout last wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupProgress>,
    /// Per track, by name: requests/s, error rate and p99 over the last measurement's window.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tracks: BTreeMap<String, TrackFigures>,
    /// When `tracks` was observed (ms since epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracks_observed_at: Option<u64>,
    /// How old `tracks` is, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracks_age_ms: Option<u64>,
    /// The last measurement's verdict and reasons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<serde_json::Value>,
    /// A stepped rollback under way: the weights still to come.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<crate::state::Rollback>,
    /// The webhook gate the rollout is held at (or passed, at this step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateRun>,
}

/// A rollout over a group: where its traffic is in the group's table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupProgress {
    /// The group.
    pub name: String,
    /// The etcd revision at which the group's table carries the rollout's traffic; `None` while
    /// it has not been written.
    pub table_revision: Option<i64>,
    /// How many proxies are registered in the group.
    pub registered: usize,
    /// Why the last write failed or the members cannot be followed, while that lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The spec is invalid, or does not fit the proxies' tables.
    #[error("{0}")]
    Invalid(#[from] ConfigErrors),
    /// No such rollout.
    #[error("there is no rollout named {0:?}")]
    NotFound(String),
    /// A rollout of that name is still active.
    #[error("rollout {0:?} is still active; abort it (or let it finish) before applying it again")]
    Active(String),
    /// Another active rollout moves the same route on the same proxies.
    #[error("route {route:?} is being rolled out by {holder:?} on the same proxies; abort it (or let it finish) first")]
    RouteTaken {
        /// The route.
        route: String,
        /// The rollout that holds it.
        holder: String,
    },
    /// The command does not apply now.
    #[error("{0}")]
    Refused(#[from] Refused),
    /// The state could not be written.
    #[error("cannot persist the rollout: {0}")]
    Store(#[from] std::io::Error),
    /// The change was not stored because this replica no longer leads: it is not taken.
    #[error("{0}")]
    NotStored(String),
    /// The change is in force on the leader, but the store had not confirmed it when the
    /// command was answered: a new leader would not find it unless the store does.
    #[error("{0}")]
    Unconfirmed(String),
    /// A group was asked of a controller without etcd.
    #[error("this controller runs without etcd, so it knows no groups; start it with switchyard serve --etcd URL")]
    NoEtcd,
}

/// What the task and the commands share, behind [`Entry::shared`].
struct Shared {
    record: Record,
    /// Bumped by every command: an observation begun under an older generation is dropped.
    generation: u64,
    /// Per proxy, in spec order (for a group: its registered proxies, by id).
    proxies: Vec<ProxySlot>,
    /// For a group: its table as written for the rollout.
    group: GroupSlot,
    /// What the dashboard charts (in memory only).
    series: Series,
}

/// A rollout's writes of its group's table.
#[derive(Debug, Clone)]
struct GroupSlot {
    /// The traffic the table carries, and the revision that wrote it.
    written: Option<(Traffic, i64)>,
    /// Why the last write failed, while it fails.
    error: Option<String>,
    /// Why the members cannot be followed, while they cannot.
    follow_error: Option<String>,
    /// The traffic the retry schedule is for; a new traffic is written at once.
    retry_for: Option<Traffic>,
    /// When the write is tried again (ms since epoch), and the wait after that.
    retry_at: u64,
    retry_delay: u64,
    /// How many proxies are registered.
    registered: usize,
    /// Whether this controller has read or written the table for the rollout since it took
    /// the rollout over.
    checked: bool,
}

impl Default for GroupSlot {
    fn default() -> Self {
        Self {
            written: None,
            error: None,
            follow_error: None,
            retry_for: None,
            retry_at: 0,
            retry_delay: RETRY_FIRST_MS,
            registered: 0,
            checked: false,
        }
    }
}

/// One proxy as the task tracks it.
#[derive(Debug, Clone)]
struct ProxySlot {
    status: ProxyStatus,
    /// The traffic it confirmed serving.
    serves: Option<Traffic>,
    /// The traffic its retry schedule is for; a new traffic is tried at once.
    retry_for: Option<Traffic>,
    /// When it is tried again (ms since epoch), and the wait after that.
    retry_at: u64,
    retry_delay: u64,
    /// The proxy process last seen answering stats: another one means it restarted.
    instance: Option<switchyard_config::InstanceId>,
}

impl ProxySlot {
    fn new(url: &str) -> Self {
        Self {
            status: ProxyStatus {
                url: url.to_owned(),
                version: None,
                error: None,
                last_answered_at: None,
            },
            serves: None,
            retry_for: None,
            retry_at: 0,
            retry_delay: RETRY_FIRST_MS,
            instance: None,
        }
    }
}

impl Shared {
    fn statuses(&self) -> Vec<ProxyStatus> {
        statuses(&self.proxies)
    }
}

fn statuses(proxies: &[ProxySlot]) -> Vec<ProxyStatus> {
    proxies.iter().map(|p| p.status.clone()).collect()
}

struct Entry {
    spec: RolloutSpec,
    /// For a group: its registered proxies, followed.
    members: Option<watch::Receiver<Members>>,
    shared: Mutex<Shared>,
    wake: Notify,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Entry {
    /// The shared state. Never held across an `.await`.
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How long a `notify` webhook may take to answer.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// The first wait before a publish that failed is tried again, ms; it doubles up to
/// [`RETRY_MAX_MS`].
const RETRY_FIRST_MS: u64 = 500;
/// The longest wait between publish rounds to a proxy that does not confirm, ms.
const RETRY_MAX_MS: u64 = 15_000;
/// The longest wait between writes of a group's table that failed, ms: one etcd call, whose
/// every retry might find the member that answers, so it is tried more often than a proxy.
const GROUP_RETRY_MAX_MS: u64 = 2_000;
/// The longest a command waits for its state to be stored before it is answered (etcd losing
/// a member can hold one call for its 3 s timeout and the retry after it).
const FLUSH_WAIT: Duration = Duration::from_secs(10);

/// Every rollout and the loop that drives them.
pub struct Controller {
    /// For the proxies' admin APIs (with their token, when `serve --proxy-token-file` gives
    /// one), and nothing else.
    http: Http,
    /// For the spec's `notify` webhook.
    webhooks: Http,
    /// For the analyses' metric providers, each call bounded by its provider's own limit.
    providers: Http,
    store: Store,
    /// etcd, for rollouts over a group; `None` without `--etcd`.
    fleet: Option<Arc<Fleet>>,
    clock: Clock,
    rollouts: Mutex<BTreeMap<String, Arc<Entry>>>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// One round's work, decided under the lock and done without it.
struct Work {
    /// The traffic to publish, and where.
    publish: Option<Publish>,
    /// The analyses to read the proxies' stats for.
    observe: Vec<Due>,
    /// The proxies to read them from.
    urls: Vec<String>,
    /// The webhook gate to call now, and what to send it.
    gate: Option<(WebhookGate, serde_json::Value)>,
    /// With nothing to do: when there is something (ms since epoch); `None`: when woken.
    wake_at: Option<u64>,
}

/// Where traffic is published.
enum Publish {
    /// To these listed proxies (indices), each over its admin API.
    Proxies(Traffic, Vec<usize>),
    /// To the group's table in etcd, once for all its proxies.
    Group(Traffic),
}

/// An analysis that needs the proxies' stats now.
#[derive(Debug, Clone)]
struct Due {
    which: Which,
    spec: AnalysisSpec,
    began_at: u64,
    /// Only the totals at its start are wanted (no measurement yet).
    start_only: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Background,
    Step(usize),
    /// The rollout's analysis during a stepped rollback.
    Rollback,
}

impl Controller {
    /// Opens a directory store and resumes every rollout in it where it was.
    pub fn start(store: Store, http: Http) -> Arc<Self> {
        let records = store.load_all();
        Self::resume(store, http, None, records)
    }

    /// Resumes every rollout of `records` where it was, storing in `store`; with `fleet`,
    /// rollouts over a group can be applied too.
    pub fn resume(
        store: Store,
        http: Http,
        fleet: Option<Arc<Fleet>>,
        records: Vec<(String, Result<Record, crate::store::LoadError>)>,
    ) -> Arc<Self> {
        let controller = Self::load(store, http, fleet, records);
        let entries: Vec<Arc<Entry>> = controller.entries().values().cloned().collect();
        for entry in entries {
            controller.spawn(entry);
        }
        controller
    }

    /// The rollouts of `records` to read, without running them: what a replica that does not
    /// lead shows from etcd.
    pub fn read_only(
        http: Http,
        fleet: Option<Arc<Fleet>>,
        records: Vec<(String, Result<Record, crate::store::LoadError>)>,
    ) -> Arc<Self> {
        Self::load(Store::detached(), http, fleet, records)
    }

    fn load(
        store: Store,
        http: Http,
        fleet: Option<Arc<Fleet>>,
        records: Vec<(String, Result<Record, crate::store::LoadError>)>,
    ) -> Arc<Self> {
        let controller = Arc::new(Self {
            http,
            webhooks: Http::new(WEBHOOK_TIMEOUT),
            providers: Http::new(switchyard_config::rollout::PROVIDER_TIMEOUT),
            store,
            fleet,
            clock: Clock::start(),
            rollouts: Mutex::new(BTreeMap::new()),
        });
        for (name, record) in records {
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(rollout = %name, "cannot read the rollout's state, so it is skipped: {e}");
                    continue;
                }
            };
            let format = if record.spec_is_json {
                Format::Json
            } else {
                Format::Yaml
            };
            match load_rollout(&record.spec_text, format) {
                Ok(spec) if spec.proxies.group().is_some() && controller.fleet.is_none() => {
                    tracing::error!(rollout = %name, "the rollout moves a group on etcd, and this controller has no etcd (--etcd), so it is skipped");
                }
                Ok(spec) => {
                    if record.state.active() {
                        tracing::info!(rollout = %name, phase = ?record.state.phase, step = record.state.step + 1, "resuming");
                    }
                    let entry = controller.entry_for(spec, record);
                    controller.entries().insert(name, entry);
                }
                Err(e) => tracing::error!(rollout = %name, "the stored spec is no longer valid, so it is skipped: {e}"),
            }
        }
        controller
    }

    fn entries(&self) -> MutexGuard<'_, BTreeMap<String, Arc<Entry>>> {
        self.rollouts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn entry(&self, name: &str) -> Result<Arc<Entry>, ControlError> {
        self.entries()
            .get(name)
            .cloned()
            .ok_or_else(|| ControlError::NotFound(name.to_owned()))
    }

    fn entry_for(&self, spec: RolloutSpec, record: Record) -> Arc<Entry> {
        let members = match (spec.proxies.group(), &self.fleet) {
            (Some(group), Some(fleet)) => Some(fleet.members(group)),
            _ => None,
        };
        let proxies = spec.proxies.urls().iter().map(|url| ProxySlot::new(url)).collect();
        Arc::new(Entry {
            spec,
            members,
            shared: Mutex::new(Shared {
                record,
                generation: 0,
                proxies,
                group: GroupSlot::default(),
                series: Series::default(),
            }),
            wake: Notify::new(),
            task: Mutex::new(None),
        })
    }

    fn spawn(self: &Arc<Self>, entry: Arc<Entry>) {
        let controller = Arc::clone(self);
        let task = Arc::clone(&entry);
        let handle = tokio::spawn(async move { controller.run(task).await });
        *entry.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle.abort_handle());
    }

    /// Validates a spec, checks it against the proxies' tables, and starts it (replacing a
    /// finished rollout of the same name). Refused while a rollout of that name is active, or
    /// while another active rollout moves the same route on any of the same proxies.
    pub async fn apply(self: &Arc<Self>, text: &str, format: Format) -> Result<Status, ControlError> {
        let spec = load_rollout(text, format)?;
        self.ensure_free(&spec)?;
        match spec.proxies.group() {
            Some(group) => preflight_group(self.fleet.as_deref(), &spec, group).await?,
            None => preflight(&self.http, &spec).await?,
        }
        let record = Record {
            spec_text: text.to_owned(),
            spec_is_json: format == Format::Json,
            state: RolloutState::new(self.clock.now_ms()),
            analysis: AnalysisRun::default(),
        };
        let name = spec.name.clone();
        let entry = self.entry_for(spec, record);
        {
            // Checked again, with the insertion under the same lock: two operators applying at
            // once cannot both pass.
            let mut entries = self.entries();
            self.ensure_free_in(&entries, &entry.spec)?;
            self.store.save(&name, &entry.lock().record)?;
            if let Some(old) = entries.insert(name.clone(), Arc::clone(&entry)) {
                old.stop();
            }
        }
        self.spawn(entry);
        self.flushed().await?;
        self.status(&name).await
    }

    fn ensure_free(&self, spec: &RolloutSpec) -> Result<(), ControlError> {
        self.ensure_free_in(&self.entries(), spec)
    }

    fn ensure_free_in(&self, entries: &BTreeMap<String, Arc<Entry>>, spec: &RolloutSpec) -> Result<(), ControlError> {
        for (name, other) in entries {
            if !other.lock().record.state.active() {
                continue;
            }
            if *name == spec.name {
                return Err(ControlError::Active(name.clone()));
            }
            if other.spec.route == spec.route && other.spec.proxies.overlaps(&spec.proxies) {
                return Err(ControlError::RouteTaken {
                    route: spec.route.to_string(),
                    holder: name.clone(),
                });
            }
        }
        Ok(())
    }

    /// Applies an operator's command; the status returned is the state after it. Answered at
    /// once: it waits for no network call (async only to keep the API's shape).
    pub async fn command(&self, name: &str, cmd: Command) -> Result<Status, ControlError> {
        let entry = self.entry(name)?;
        {
            let mut shared = entry.lock();
            let mut next = shared.record.clone();
            let now = self.clock.now_ms();
            next.state.command(&entry.spec, cmd, now)?;
            if cmd == Command::Retry {
                next.analysis = AnalysisRun::default();
            }
            if let Command::Resume = cmd {
                for run in [
                    next.analysis.background_run.as_mut(),
                    next.analysis.step_run.as_mut().map(|s| &mut s.run),
                ]
                .into_iter()
                .flatten()
                {
                    run.tracker.resume();
                }
            }
            self.store.save(name, &next)?;
            let before = shared.record.state.events.len();
            shared.record = next;
            shared.generation += 1;
            self.notify(&entry.spec, &shared.record.state, before);
        }
        entry.wake.notify_one();
        self.flushed().await?;
        self.status(name).await
    }

    /// Waits until what was saved is stored (at once for files), for at most [`FLUSH_WAIT`]: a
    /// command answered is one a new leader would find.
    async fn flushed(&self) -> Result<(), ControlError> {
        match tokio::time::timeout(FLUSH_WAIT, self.store.flush()).await {
            Ok(Ok(())) => Ok(()),
            // Not taken: this controller no longer leads, and the change ends with its term.
            Ok(Err(e)) => Err(ControlError::NotStored(format!(
                "the change was not stored: {e}; retry it"
            ))),
            // In force here and stored as soon as the store answers, or lost with this term if
            // it never does. Neither a success (a new leader might not find it) nor a plain
            // "retry it" (a second promote would take two steps): the operator looks first.
            Err(_) => Err(ControlError::Unconfirmed(format!(
                "the store did not confirm the change within {FLUSH_WAIT:?}: it is in force on this \
                 leader and is kept once the store answers, but a new leader would not find it \
                 before then; check the rollout's status before sending the command again"
            ))),
        }
    }

    /// The fleet on etcd, if this controller has one.
    pub fn fleet(&self) -> Option<&Arc<Fleet>> {
        self.fleet.as_ref()
    }

    /// A group's table and every registered proxy (`GET /fleet/GROUP`).
    pub async fn group(&self, group: &str) -> Result<crate::fleet::GroupView, ControlError> {
        let fleet = self.fleet.as_ref().ok_or(ControlError::NoEtcd)?;
        let group = GroupName::new(group).map_err(|e| ControlError::Invalid(ConfigErrors(vec![e])))?;
        fleet
            .group_view(&group, now_ms())
            .await
            .map_err(|e| ControlError::NotStored(format!("cannot read group {group} from etcd: {e}")))
    }

    /// Writes a group's table from a routes document (`PUT /fleet/GROUP/routes`): validated
    /// whole first, every problem by field path; with `expect`, only over the table at that
    /// revision. Answers the group as it is then.
    pub async fn write_group(
        &self,
        group: &str,
        text: &str,
        format: Format,
        expect: Option<i64>,
    ) -> Result<serde_json::Value, ControlError> {
        let fleet = self.fleet.as_ref().ok_or(ControlError::NoEtcd)?;
        let group = GroupName::new(group).map_err(|e| ControlError::Invalid(ConfigErrors(vec![e])))?;
        let table = switchyard_config::load_routes(text, format, 0)?;
        let mut written = fleet
            .write_table(
                &group,
                table.spec(),
                expect.map_or(Expect::Any, Expect::Revision),
                false,
            )
            .await;
        // Without If-Match, a write that raced another is simply made again over it.
        for _ in 0..3 {
            if expect.is_some() || !matches!(written, Err(FleetError::Conflict { .. })) {
                break;
            }
            written = fleet.write_table(&group, table.spec(), Expect::Any, false).await;
        }
        match written {
            Ok(revision) => {
                tracing::info!(%group, revision, "an operator wrote the group's table");
                Ok(json!({ "group": group, "tableRevision": revision }))
            }
            Err(FleetError::Conflict { now }) => Err(ControlError::Refused(Refused(format!(
                "group {group}'s table changed since the revision given in If-Match (it is at revision {now} now); read it again"
            )))),
            Err(FleetError::Invalid(errors)) => Err(ControlError::Invalid(errors)),
            Err(e) => Err(ControlError::NotStored(format!(
                "cannot write group {group}'s table: {e}"
            ))),
        }
    }

    /// Stops every rollout's task (a replica that stops leading): nothing more is published
    /// or stored by this controller.
    pub fn stop_all(&self) {
        for entry in self.entries().values() {
            entry.stop();
        }
    }

    /// Removes a rollout that is no longer active (aborted or completed), its state included.
    pub async fn delete(&self, name: &str) -> Result<(), ControlError> {
        {
            let mut entries = self.entries();
            let entry = entries
                .get(name)
                .ok_or_else(|| ControlError::NotFound(name.to_owned()))?;
            let phase = entry.lock().record.state.phase;
            if matches!(phase, Phase::Progressing | Phase::Paused) {
                return Err(ControlError::Refused(Refused(format!(
                    "rollout {name:?} is {phase:?}; abort it (or let it finish) before deleting it"
                ))));
            }
            self.store.remove(name)?;
            if let Some(entry) = entries.remove(name) {
                entry.stop();
            }
        }
        self.flushed().await
    }

    /// A rollout's status.
    pub async fn status(&self, name: &str) -> Result<Status, ControlError> {
        let entry = self.entry(name)?;
        let shared = entry.lock();
        Ok(self.status_of(name, &entry.spec, &shared))
    }

    fn status_of(&self, name: &str, spec: &RolloutSpec, shared: &Shared) -> Status {
        let record = &shared.record;
        let state = &record.state;
        let now = self.clock.now_ms();
        Status {
            name: name.to_owned(),
            route: spec.route.to_string(),
            phase: state.phase,
            strategy: spec.strategy.key().to_owned(),
            step: state.step,
            steps: crate::plan::steps(spec).len(),
            step_labels: crate::plan::steps(spec).iter().map(crate::plan::describe).collect(),
            weight: state.traffic.candidate_weight,
            confirmed_weight: state.confirmed.as_ref().map(|t| t.candidate_weight),
            message: state.message.clone(),
            abort: state.abort.clone(),
            degraded: degraded(spec, state, &shared.statuses(), now),
            proxies: shared.statuses(),
            group: spec.proxies.group().map(|g| GroupProgress {
                name: g.to_string(),
                table_revision: shared.group.written.as_ref().map(|(_, r)| *r),
                registered: shared.group.registered,
                error: shared.group.error.clone().or_else(|| shared.group.follow_error.clone()),
            }),
            tracks: record.analysis.tracks.clone().unwrap_or_default(),
            tracks_observed_at: record.analysis.tracks_at,
            tracks_age_ms: record.analysis.tracks_at.map(|at| now.saturating_sub(at)),
            analysis: record.analysis.last.clone(),
            rollback: state.rollback.clone(),
            gate: record.analysis.gate.clone(),
        }
    }

    /// Every rollout's status, by name.
    pub async fn list(&self) -> Vec<Status> {
        let entries: Vec<(String, Arc<Entry>)> =
            self.entries().iter().map(|(n, e)| (n.clone(), Arc::clone(e))).collect();
        entries
            .iter()
            .map(|(name, entry)| self.status_of(name, &entry.spec, &entry.lock()))
            .collect()
    }

    /// The series the dashboard charts, the points after `since` (ms since the Unix epoch) or
    /// all of them.
    pub async fn measurements(&self, name: &str, since: Option<u64>) -> Result<Measurements, ControlError> {
        let entry = self.entry(name)?;
        let spec = &entry.spec;
        let shared = entry.lock();
        let step = shared.record.state.step_analysis(spec);
        let interval_ms = [spec.analysis.as_ref(), step.as_ref()]
            .into_iter()
            .flatten()
            .filter(|_| shared.record.state.active())
            .map(|a| millis(a.interval))
            .min();
        Ok(Measurements {
            name: name.to_owned(),
            baseline: spec.baseline.to_string(),
            candidate: spec.candidate.to_string(),
            interval_ms,
            kept_ms: series::KEEP_MS,
            capacity: series::CAPACITY,
            points: shared.series.after(since),
        })
    }

    /// A rollout's history.
    pub async fn history(&self, name: &str) -> Result<Vec<Event>, ControlError> {
        let entry = self.entry(name)?;
        let events = entry.lock().record.state.events.clone();
        Ok(events)
    }

    async fn run(self: Arc<Self>, entry: Arc<Entry>) {
        let mut members = entry.members.clone();
        loop {
            let seen = members.as_mut().map(|m| m.borrow_and_update().clone());
            let work = self.plan(&entry, seen.as_ref());
            // Let go of the members at once, so that their follower changes them in place.
            drop(seen);
            let joined = async {
                match members.as_mut() {
                    Some(m) => {
                        let _ = m.changed().await;
                    }
                    None => std::future::pending().await,
                }
            };
            if work.publish.is_none() && work.observe.is_empty() && work.gate.is_none() {
                // A finished rollout keeps its task, asleep until `undo` or `retry` wakes it. A
                // rollout over a group also wakes when its proxies change (one serves the new
                // table, one joins, one's lease expired).
                let sleep = async {
                    match work.wake_at {
                        Some(at) => self.clock.sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = sleep => {}
                    () = entry.wake.notified() => {}
                    () = joined => {}
                }
                continue;
            }
            let publish = async {
                if let Some(publish) = &work.publish {
                    // Durable first: no proxy serves traffic that a new leader would not find
                    // in the store. An abort goes out at once, stored or not: stable is safe.
                    let aborted = entry.lock().record.state.phase == Phase::Aborted;
                    if !aborted && let Err(e) = self.store.flush().await {
                        tracing::warn!(rollout = %entry.spec.name, "not publishing: {e}");
                        std::future::pending::<()>().await;
                    }
                    match publish {
                        Publish::Proxies(traffic, to) => self.publish(&entry, traffic, to).await,
                        Publish::Group(traffic) => self.publish_group(&entry, traffic).await,
                    }
                }
            };
            let observe = self.observe(&entry, &work.observe, &work.urls);
            let gate = async {
                if let Some((gate, body)) = &work.gate {
                    self.call_gate(&entry, gate, body).await;
                }
            };
            // A command (or a verdict that changed the traffic) wakes the task: the calls still
            // in flight are dropped and the next round starts from the new state.
            tokio::select! {
                _ = async { tokio::join!(publish, observe, gate) } => {}
                () = entry.wake.notified() => {}
            }
        }
    }

    /// Under the lock, no I/O: takes every step that can be taken now, starts the analyses that
    /// begin now, applies the progress deadline, persists what changed, and says what the task
    /// does next.
    fn plan(&self, entry: &Entry, members: Option<&Members>) -> Work {
        let spec = &entry.spec;
        let mut guard = entry.lock();
        let Shared {
            record, proxies, group, ..
        } = &mut *guard;
        let now = self.clock.now_ms();
        let before = record.state.clone();
        if let Some(members) = members {
            sync_members(proxies, group, members, &record.state.traffic, record.state.settled());
        }

        if record.state.active() {
            begin_analyses(spec, record, now);
        }
        let evidence = evidence(spec, record);
        record.state.advance(spec, now, evidence);
        if record.state.active() {
            begin_analyses(spec, record, now);
        }
        let (gate, gate_at) = plan_gate(spec, &mut record.state, &mut record.analysis, now);
        follow_rollback(spec, record, now);
        let settled = record.state.settled();
        match (settled, record.state.pending_since) {
            (true, Some(_)) => record.state.pending_since = None,
            (false, None) => record.state.pending_since = Some(now),
            _ => {}
        }
        if let Some(d) = degraded(spec, &record.state, &statuses(proxies), now) {
            let already = record
                .state
                .events
                .iter()
                .rev()
                .take_while(|e| e.kind != EventKind::Step)
                .any(|e| e.kind == EventKind::Degraded);
            if spec.progress_deadline_abort && record.state.rollback.is_some() {
                tracing::warn!(rollout = %spec.name, "ending the rollback at once: {}", d.message);
                record
                    .state
                    .rollback_now(now, &format!("progress deadline: {}", d.message));
            } else if spec.progress_deadline_abort && record.state.phase != Phase::Aborted {
                tracing::warn!(rollout = %spec.name, "aborting: {}", d.message);
                record.state.abort(
                    now,
                    format!("progress deadline: {}", d.message),
                    serde_json::Value::Null,
                    now,
                );
            } else if !already {
                tracing::warn!(rollout = %spec.name, "{}", d.message);
                record.state.events.push(Event {
                    at: now,
                    kind: EventKind::Degraded,
                    message: d.message,
                });
            }
        }
        if record.state != before {
            self.save(&spec.name, record);
            self.notify(spec, &record.state, before.events.len());
        }

        let traffic = record.state.traffic.clone();
        let mut wake_at: Option<u64> = None;
        let mut at = |t: Option<u64>| {
            if let Some(t) = t {
                wake_at = Some(wake_at.map_or(t, |w| w.min(t)));
            }
        };
        let mut publish = None;
        let urls: Vec<String> = proxies.iter().map(|p| p.status.url.clone()).collect();
        let in_table = members.is_none() || group.written.as_ref().is_some_and(|(t, _)| *t == traffic);
        if members.is_some() && (!record.state.settled() || !group.checked) {
            // A group: write its table once; its proxies confirm through etcd. A settled
            // rollout checks once that the table carries its traffic (after a takeover, the last
            // leader may have stored an abort and died before writing it), and then leaves the
            // table to operators.
            if group.retry_for.as_ref() != Some(&traffic) {
                group.retry_for = Some(traffic.clone());
                group.retry_at = 0;
                group.retry_delay = RETRY_FIRST_MS;
            }
            if !in_table {
                if group.retry_at <= now {
                    publish = Some(Publish::Group(traffic.clone()));
                } else {
                    at(Some(group.retry_at));
                }
            }
        }
        if !record.state.settled() {
            if in_table && !proxies.is_empty() && proxies.iter().all(|p| p.serves.as_ref() == Some(&traffic)) {
                // Every proxy confirmed it, one by one: take the steps that this allows at once.
                let before = record.state.clone();
                record.state.confirm(traffic, now);
                self.save(&spec.name, record);
                self.notify(spec, &record.state, before.events.len());
                return Work {
                    publish: None,
                    observe: Vec::new(),
                    urls,
                    gate: None,
                    wake_at: Some(now),
                };
            }
            let mut to = Vec::new();
            for (i, p) in proxies.iter_mut().enumerate().filter(|_| members.is_none()) {
                if p.serves.as_ref() == Some(&traffic) {
                    continue;
                }
                if p.retry_for.as_ref() != Some(&traffic) {
                    p.retry_for = Some(traffic.clone());
                    p.retry_at = 0;
                    p.retry_delay = RETRY_FIRST_MS;
                }
                if p.retry_at <= now {
                    to.push(i);
                } else {
                    at(Some(p.retry_at));
                }
            }
            if !to.is_empty() && members.is_none() {
                publish = Some(Publish::Proxies(traffic, to));
            }
        }
        let observe = due_analyses(spec, record, now);
        at(gate_at);
        at(record.state.rollback_due(spec));
        if record.state.rollback.is_some() {
            at(record.analysis.rollback_run.as_ref().map(|r| r.next_at));
        }
        if record.state.active() {
            at(record.state.pause_until);
            let measuring = |r: &Run| r.tracker.ended().is_none();
            if spec.analysis.is_some() {
                at(record
                    .analysis
                    .background_run
                    .as_ref()
                    .filter(|r| measuring(r))
                    .map(|r| r.next_at));
            }
            at(record
                .analysis
                .step_run
                .as_ref()
                .filter(|s| s.step == record.state.step && measuring(&s.run))
                .map(|s| s.run.next_at));
            // The progress deadline, unless it has passed (then the condition is set already).
            at(record
                .state
                .pending_since
                .map(|t| t.saturating_add(millis(spec.progress_deadline)))
                .filter(|t| *t > now));
        }
        Work {
            publish,
            observe,
            urls,
            gate,
            wake_at,
        }
    }

    /// Publishes `traffic` to the proxies `to` at once, one attempt each, keeping each answer
    /// as it comes; a proxy that does not confirm is tried again later, with backoff.
    async fn publish(&self, entry: &Entry, traffic: &Traffic, to: &[usize]) {
        let spec = &entry.spec;
        let mut set = JoinSet::new();
        for &i in to {
            let (http, spec, traffic, url) = (
                self.http.clone(),
                spec.clone(),
                traffic.clone(),
                spec.proxies.urls()[i].clone(),
            );
            set.spawn(async move { (i, publish_one(&http, &url, &spec, &traffic).await) });
        }
        while let Some(Ok((i, result))) = set.join_next().await {
            let now = self.clock.now_ms();
            let mut shared = entry.lock();
            if shared.record.state.traffic != *traffic {
                return;
            }
            let slot = &mut shared.proxies[i];
            match result {
                Ok(version) => {
                    if slot.status.error.is_some() {
                        tracing::info!(rollout = %spec.name, proxy = %slot.status.url, "the proxy confirms again");
                    }
                    slot.serves = Some(traffic.clone());
                    slot.status.version = Some(version);
                    slot.status.error = None;
                    slot.status.last_answered_at = Some(now);
                    slot.retry_delay = RETRY_FIRST_MS;
                }
                Err(e) => {
                    slot.serves = None;
                    slot.status.version = None;
                    note_error(spec, &mut slot.status, e.to_string());
                    slot.retry_at = now.saturating_add(slot.retry_delay);
                    slot.retry_delay = (slot.retry_delay * 2).min(RETRY_MAX_MS);
                }
            }
            if shared.proxies.iter().all(|p| p.serves.as_ref() == Some(traffic)) {
                // Every proxy serves it: the next round takes the steps this allows.
                entry.wake.notify_one();
            }
        }
    }

    /// Writes the rollout's traffic into its group's table (read, planned, and written in one
    /// transaction on the revision read, fenced when replicated) unless the table carries it
    /// already; the group's proxies then confirm it through their registrations.
    async fn publish_group(&self, entry: &Entry, traffic: &Traffic) {
        let spec = &entry.spec;
        let (Some(fleet), Some(group)) = (&self.fleet, spec.proxies.group()) else {
            return;
        };
        let written = write_group(fleet, spec, group, traffic).await;
        let now = self.clock.now_ms();
        let mut shared = entry.lock();
        if shared.record.state.traffic != *traffic {
            return;
        }
        let slot = &mut shared.group;
        match written {
            Ok(revision) => {
                if slot.error.take().is_some() {
                    tracing::info!(rollout = %spec.name, %group, "the group's table is written again");
                }
                tracing::debug!(rollout = %spec.name, %group, revision, "the group's table carries the traffic");
                slot.written = Some((traffic.clone(), revision));
                slot.retry_delay = RETRY_FIRST_MS;
                slot.checked = true;
            }
            Err(e) => {
                if slot.error.as_deref() != Some(e.as_str()) {
                    tracing::warn!(rollout = %spec.name, %group, "{e}");
                }
                slot.error = Some(e);
                slot.retry_at = now.saturating_add(slot.retry_delay);
                slot.retry_delay = (slot.retry_delay * 2).min(GROUP_RETRY_MAX_MS);
            }
        }
    }

    /// Calls a webhook gate once: a 2xx opens it (the next round passes it), anything else is
    /// kept as its last error and it is called again an interval later.
    async fn call_gate(&self, entry: &Entry, gate: &WebhookGate, body: &serde_json::Value) {
        let http = Http::new(gate.timeout);
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        let answer = http.call(http::Method::POST, &gate.url, &[], Some(bytes)).await;
        let now = self.clock.now_ms();
        let mut guard = entry.lock();
        let shared = &mut *guard;
        let step = shared.record.state.step;
        let Some(run) = shared
            .record
            .analysis
            .gate
            .as_mut()
            .filter(|r| r.step == step && r.url == gate.url && !r.open)
        else {
            return;
        };
        run.calls += 1;
        run.next_at = now.saturating_add(millis(gate.interval));
        match answer {
            Ok((status, _, _)) if status.is_success() => {
                tracing::info!(rollout = %entry.spec.name, url = %gate.url, "the webhook gate answered {status}: going on");
                run.open = true;
                run.last_error = None;
            }
            Ok((status, _, answer)) => {
                let said = String::from_utf8_lossy(&answer[..answer.len().min(200)])
                    .trim()
                    .to_owned();
                let said = if said.is_empty() {
                    String::new()
                } else {
                    format!(": {said}")
                };
                run.last_error = Some(format!("{} answered {status}{said}", gate.url));
            }
            Err(e) => run.last_error = Some(e.to_string()),
        }
        let open = run.open;
        if let Some(e) = &run.last_error
            && run.calls == 1
        {
            tracing::info!(rollout = %entry.spec.name, "the webhook gate holds the rollout: {e}");
        }
        self.save(&entry.spec.name, &shared.record);
        if open {
            entry.wake.notify_one();
        }
    }

    /// Reads the proxies' stats for each due analysis, asks its metric providers at the same
    /// time, and judges both; dropped when a command
    /// wakes the task, and not judged when a command came in between.
    async fn observe(&self, entry: &Entry, due: &[Due], urls: &[String]) {
        let spec = &entry.spec;
        let generation = entry.lock().generation;
        // One point a round, whatever number of analyses measured in it.
        let mut charted = false;
        for d in due {
            let window = if d.start_only {
                Duration::from_secs(1)
            } else {
                d.spec.window
            };
            // The metric providers are asked beside the stats (not for the reading that only
            // takes the totals at the analysis's start).
            let (answers, readings) = tokio::join!(
                observe_each(&self.http, spec, urls, window, Some(d.began_at), d.spec.series),
                async {
                    if d.start_only {
                        Readings::default()
                    } else {
                        providers::query_all(&self.providers, spec, &d.spec).await
                    }
                }
            );
            let now = self.clock.now_ms();
            let mut guard = entry.lock();
            let shared = &mut *guard;
            if shared.generation != generation {
                return;
            }
            let mut restarted = false;
            let listed = entry.members.is_none();
            for (url, answer) in &answers {
                let Some(slot) = shared.proxies.iter_mut().find(|p| p.status.url == *url) else {
                    continue;
                };
                match answer {
                    Ok(o) => {
                        // (A group's proxy that restarts registers again, and reads the table.)
                        if listed && o.instance.is_some() && slot.instance.is_some() && o.instance != slot.instance {
                            // Another process: whatever it serves, publish the rollout's traffic
                            // to it again rather than trust what the old one confirmed.
                            tracing::warn!(rollout = %spec.name, proxy = %slot.status.url, "the proxy restarted; publishing to it again");
                            slot.serves = None;
                            slot.status.version = None;
                            slot.retry_at = 0;
                            restarted = true;
                        }
                        if listed {
                            slot.instance = o.instance.clone();
                        }
                        slot.status.last_answered_at = Some(now);
                        if slot.status.version.is_some() {
                            slot.status.error = None;
                        }
                    }
                    Err(e) => note_error(spec, &mut slot.status, e.to_string()),
                }
            }
            if restarted {
                shared.record.state.confirmed = None;
                entry.wake.notify_one();
            }
            let before = shared.record.state.clone();
            let point = self.judge(spec, &mut shared.record, d, &answers, &readings, now);
            if let Some(point) = point.filter(|_| !charted) {
                shared.series.push(point);
                charted = true;
            }
            if shared.record.state != before || !d.start_only {
                self.save(&spec.name, &shared.record);
                self.notify(spec, &shared.record.state, before.events.len());
            }
            if shared.record.state.traffic != before.traffic || shared.record.state.phase != before.phase {
                // An abort or a pause: act on it now rather than after the round's other calls.
                entry.wake.notify_one();
                return;
            }
        }
    }

    /// Applies one due analysis's observation to the record; the point to chart, when it
    /// measured.
    fn judge(
        &self,
        spec: &RolloutSpec,
        record: &mut Record,
        due: &Due,
        answers: &[(String, Result<Observed, ObserveError>)],
        readings: &Readings,
        now: u64,
    ) -> Option<Point> {
        let step = record.state.step;
        let run = match due.which {
            Which::Background => record.analysis.background_run.as_mut(),
            Which::Step(i) => record
                .analysis
                .step_run
                .as_mut()
                .filter(|s| s.step == i && s.run.began_at == due.began_at)
                .map(|s| &mut s.run),
            Which::Rollback => record
                .analysis
                .rollback_run
                .as_mut()
                .filter(|r| r.began_at == due.began_at),
        };
        let run = run?;
        let answered: Vec<(&str, &Observed)> = answers
            .iter()
            .filter_map(|(url, a)| a.as_ref().ok().map(|o| (url.as_str(), o)))
            .collect();
        let totals = answered.iter().map(|(url, o)| (*url, o.totals));
        if due.start_only {
            if !answered.is_empty() {
                let mut since = Since::default();
                since.advance(totals);
                run.since = Some(since);
            }
            return None;
        }
        let merged = answered.iter().fold(None::<Observed>, |acc, (_, o)| match acc {
            None => Some((*o).clone()),
            Some(mut m) => {
                m.merge(o);
                Some(m)
            }
        });
        run.measured(&due.spec, now);
        let (verdict, m) = match &merged {
            Some(o) => {
                let since = run.since.get_or_insert_with(Since::default);
                let cumulative = since.advance(totals);
                let m = crate::analyze::measure(
                    &due.spec,
                    &Observation {
                        candidate: sample(&o.candidate),
                        baseline: sample(&o.baseline),
                    },
                    cumulative,
                    readings,
                );
                (run.tracker.record(&m, true), Some(m))
            }
            None => {
                let why: Vec<String> = answers
                    .iter()
                    .filter_map(|(_, a)| a.as_ref().err().map(ToString::to_string))
                    .collect();
                tracing::warn!(rollout = %spec.name, "no proxy's stats could be read: {}", why.join("; "));
                (run.tracker.record_unreachable(), None)
            }
        };
        let point = merged.as_ref().zip(m.as_ref()).map(|(o, m)| Point {
            at: now,
            outcome: m.outcome,
            baseline: figures(&o.baseline),
            candidate: figures(&o.candidate),
        });
        if let Some(o) = &merged {
            record.analysis.tracks = Some(tracks_view(spec, o));
            record.analysis.tracks_at = Some(now);
        }
        if let Some(m) = &m {
            record.analysis.last = Some(measurement_json(m));
            if due.which == Which::Background && m.outcome == Outcome::Pass {
                let passes = match record.analysis.passes_in_step {
                    Some((s, n)) if s == step => n + 1,
                    _ => 1,
                };
                record.analysis.passes_in_step = Some((step, passes));
            }
        }
        if due.which == Which::Rollback {
            // Rolling back already: only what cannot wait sends the candidate straight to 0.
            if let Some(m) = &m
                && (m.emergency || m.sequential)
            {
                tracing::warn!(rollout = %spec.name, "ending the rollback at once: {}", m.failures());
                record
                    .state
                    .rollback_now(now, &format!("the analysis during the rollback: {}", m.failures()));
            }
            return point;
        }
        let origin = match due.which {
            Which::Rollback => unreachable!("judged above"),
            Which::Background => "analysis".to_owned(),
            Which::Step(i) => {
                if verdict == Verdict::Passed {
                    record.analysis.step_passed = Some(i);
                }
                format!("step {} analysis", i + 1)
            }
        };
        act(spec, &mut record.state, verdict, m.as_ref(), now, &origin);
        point
    }

    fn save(&self, name: &str, record: &Record) {
        if let Err(e) = self.store.save(name, record) {
            tracing::error!(rollout = %name, "cannot persist the rollout's state: {e}");
        }
    }

    /// Sends a webhook for the events after the first `from`, if any is of interest.
    fn notify(&self, spec: &RolloutSpec, state: &RolloutState, from: usize) {
        let Some(url) = &spec.notify else { return };
        let interesting: Vec<&Event> = state
            .events
            .get(from..)
            .unwrap_or_default()
            .iter()
            .filter(|e| e.kind.notifies())
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
        // Not the proxies' client: a webhook never sees the token they may be called with.
        let (http, url) = (self.webhooks.clone(), url.clone());
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(200);
            for attempt in 1..=5 {
                match http.send_json(http::Method::POST, &url, &[], &body).await {
                    Ok(_) => return,
                    Err(e) => tracing::warn!(attempt, "webhook failed: {e}"),
                }
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        });
    }
}

impl Entry {
    fn stop(&self) {
        if let Some(task) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

/// Makes the slots of a rollout over a group its registered proxies, one per admin URL (the
/// newest registration when a restarted proxy's old one has not expired yet), keeping what was
/// known of each; a proxy confirms the traffic once it serves the table written for it (or a
/// later one).
fn sync_members(
    proxies: &mut Vec<ProxySlot>,
    group: &mut GroupSlot,
    members: &Members,
    traffic: &Traffic,
    settled: bool,
) {
    let mut written = group.written.as_ref().filter(|(t, _)| t == traffic).map(|(_, r)| *r);
    if let Some(w) = written
        && !settled
        && members
            .by_id
            .values()
            .any(|m| m.registration.table_revision.is_some_and(|t| t > w))
    {
        // Someone else wrote the table since (an operator's `fleet apply`, another route's
        // rollout): read it again, and write the traffic back if it is gone.
        group.written = None;
        written = None;
    }
    let mut newest: BTreeMap<&str, &switchyard_config::fleet::Registration> = BTreeMap::new();
    for m in members.by_id.values() {
        let r = &m.registration;
        let url = r.admin_url.as_str();
        if newest.get(url).is_none_or(|seen| seen.started_at < r.started_at) {
            newest.insert(url, r);
        }
    }
    let mut old: BTreeMap<String, ProxySlot> = proxies.drain(..).map(|p| (p.status.url.clone(), p)).collect();
    for (url, r) in newest {
        let mut slot = old.remove(url).unwrap_or_else(|| ProxySlot::new(url));
        let serves = written.is_some_and(|w| r.table_revision.is_some_and(|t| t >= w));
        slot.serves = serves.then(|| traffic.clone());
        slot.status.version = serves.then_some(r.version);
        match &r.refused {
            Some(f) if !serves && written.is_some_and(|w| f.revision >= w) => {
                let errors: Vec<String> = f.errors.iter().map(ToString::to_string).collect();
                slot.status.error = Some(format!(
                    "refused the group's table at revision {}: {}",
                    f.revision,
                    errors.join("; ")
                ));
            }
            _ if serves && slot.status.error.as_deref().is_some_and(|e| e.starts_with("refused")) => {
                slot.status.error = None;
            }
            _ => {}
        }
        slot.instance = Some(r.id.clone());
        proxies.push(slot);
    }
    group.registered = proxies.len();
    group.follow_error = members
        .error
        .as_ref()
        .map(|e| format!("cannot follow the group's proxies in etcd (showing the last read): {e}"));
}

/// Writes `traffic` into `group`'s table unless it carries it; the revision that does.
async fn write_group(fleet: &Fleet, spec: &RolloutSpec, group: &GroupName, traffic: &Traffic) -> Result<i64, String> {
    for _ in 0..5 {
        let table = fleet
            .table(group)
            .await
            .map_err(|e| format!("cannot read group {group}'s table: {e}"))?
            .ok_or_else(|| format!("group {group} has no table in etcd"))?;
        let planned =
            crate::plan::apply(&table.routes, spec, traffic).map_err(|e| format!("group {group}'s table: {e}"))?;
        if planned == table.routes {
            return Ok(table.revision);
        }
        match fleet
            .write_table(group, &planned, Expect::Revision(table.revision), true)
            .await
        {
            Ok(revision) => return Ok(revision),
            Err(FleetError::Conflict { .. }) => continue,
            Err(e) => return Err(format!("cannot write group {group}'s table: {e}")),
        }
    }
    Err(format!(
        "group {group}'s table kept changing while it was written (five conflicts in a row)"
    ))
}

/// Starts the analyses that begin now: the background analysis once every proxy serves the
/// candidate some traffic (copies of it, for an analysis of the shadow series), a step's
/// analysis when the rollout is on that step. Each counts only requests served from its start
/// on.
fn begin_analyses(spec: &RolloutSpec, record: &mut Record, now: u64) {
    let state = &record.state;
    let run = &mut record.analysis;
    if let Some(analysis) = &spec.analysis
        && run.background_run.is_none()
        && state.confirmed.as_ref().is_some_and(|t| match analysis.series {
            StatsSeries::Primary => t.candidate_weight > 0.0 || !t.header_steps.is_empty(),
            StatsSeries::Shadow => t.mirror_percent > 0.0,
        })
    {
        run.background_run = Some(Run::new(analysis, now));
    }
    if let Some(analysis) = state.step_analysis(spec)
        && run.step_run.as_ref().is_none_or(|s| s.step != state.step)
    {
        run.step_run = Some(StepRun {
            step: state.step,
            run: Run::new(&analysis, now),
        });
    }
}

/// Starts the rollout's analysis afresh when a stepped rollback begins (it counts only the
/// rollback's requests) and ends it with the rollback.
fn follow_rollback(spec: &RolloutSpec, record: &mut Record, now: u64) {
    let run = &mut record.analysis.rollback_run;
    match (&record.state.rollback, &spec.analysis) {
        (Some(_), Some(analysis)) if run.is_none() => *run = Some(Run::new(analysis, now)),
        (Some(_), _) => {}
        (None, _) => *run = None,
    }
}

/// The webhook gate the rollout is at, if any: starts its run when the rollout reaches it,
/// says whether to call it now (and what to send) or when, and aborts the rollout once it has
/// stayed shut for the progress deadline.
fn plan_gate(
    spec: &RolloutSpec,
    state: &mut RolloutState,
    analysis: &mut AnalysisRun,
    now: u64,
) -> (Option<(WebhookGate, serde_json::Value)>, Option<u64>) {
    let Some(gate) = state.gate(spec) else {
        match &mut analysis.gate {
            Some(g) if g.step != state.step => analysis.gate = None,
            Some(g) if !g.open && state.phase == Phase::Paused => {
                g.paused_at.get_or_insert(now);
            }
            _ => {}
        }
        return (None, None);
    };
    let step = state.step;
    let steps = crate::plan::steps(spec).len();
    let run = match &mut analysis.gate {
        Some(run) if run.step == step && run.url == gate.url => run,
        slot => slot.insert(GateRun {
            step,
            url: gate.url.clone(),
            since: now,
            next_at: now,
            calls: 0,
            open: false,
            last_error: None,
            paused_at: None,
        }),
    };
    if run.open {
        return (None, None);
    }
    if let Some(paused) = run.paused_at.take() {
        run.since = run.since.saturating_add(now.saturating_sub(paused));
        run.next_at = now;
    }
    // The promotion webhook is a step of its own: the last (canary, rings) or the one before
    // the switch (blue-green).
    let promotion = spec.promotion_webhook.as_ref() == Some(&gate);
    let which = if promotion {
        format!("step {} (the promotion webhook)", step + 1)
    } else {
        format!("step {}", step + 1)
    };
    let deadline = run.since.saturating_add(millis(spec.progress_deadline));
    if now >= deadline {
        let last = run
            .last_error
            .as_ref()
            .map_or_else(String::new, |e| format!("; last: {e}"));
        let reason = format!(
            "{which}: {} did not answer 2xx within the progress deadline ({}){last}",
            gate.url,
            humantime::format_duration(spec.progress_deadline)
        );
        tracing::warn!(rollout = %spec.name, "aborting: {reason}");
        state.abort_stepped(spec, now, reason, serde_json::Value::Null, now);
        return (None, None);
    }
    if run.next_at > now {
        return (None, Some(run.next_at.min(deadline)));
    }
    let weight = state.traffic.candidate_weight;
    let body = json!({
        "rollout": spec.name,
        "route": spec.route,
        "gate": if promotion { "promotion" } else { "step" },
        "step": step + 1,
        "steps": steps,
        "phase": state.phase,
        "baseline": spec.baseline,
        "candidate": spec.candidate,
        "weights": { spec.baseline.as_str(): 100.0 - weight, spec.candidate.as_str(): weight },
    });
    (Some((gate, body)), Some(deadline))
}

/// What the analyses say about the current step.
fn evidence(spec: &RolloutSpec, record: &Record) -> Evidence {
    let step = record.state.step;
    let passed_in_step = spec
        .analysis
        .as_ref()
        .map(|_| record.analysis.passes_in_step.is_some_and(|(s, n)| s == step && n > 0));
    Evidence {
        step,
        gate_open: record.analysis.gate.as_ref().is_some_and(|g| g.step == step && g.open),
        step_analysis_passed: record.analysis.step_passed == Some(step),
        passed_in_step,
    }
}

/// The analyses that need the proxies' stats now.
fn due_analyses(spec: &RolloutSpec, record: &Record, now: u64) -> Vec<Due> {
    let mut due = Vec::new();
    if record.state.rollback.is_some()
        && let (Some(analysis), Some(run)) = (&spec.analysis, &record.analysis.rollback_run)
        && (run.since.is_none() || run.next_at <= now)
    {
        due.push(Due {
            which: Which::Rollback,
            spec: analysis.clone(),
            began_at: run.began_at,
            start_only: run.since.is_none() && run.next_at > now,
        });
    }
    if !record.state.active() {
        return due;
    }
    if let (Some(analysis), Some(run)) = (&spec.analysis, &record.analysis.background_run)
        && run.tracker.ended().is_none()
        && (run.since.is_none() || run.next_at <= now)
    {
        due.push(Due {
            which: Which::Background,
            spec: analysis.clone(),
            began_at: run.began_at,
            start_only: run.since.is_none() && run.next_at > now,
        });
    }
    if let (Some(analysis), Some(step)) = (record.state.step_analysis(spec), &record.analysis.step_run)
        && step.step == record.state.step
        && step.run.tracker.ended().is_none()
        && (step.run.since.is_none() || step.run.next_at <= now)
    {
        due.push(Due {
            which: Which::Step(step.step),
            spec: analysis,
            began_at: step.run.began_at,
            start_only: step.run.since.is_none() && step.run.next_at > now,
        });
    }
    due
}

/// The `Degraded` condition, if the traffic has waited past the progress deadline.
fn degraded(spec: &RolloutSpec, state: &RolloutState, proxies: &[ProxyStatus], now: u64) -> Option<Degraded> {
    let since = state.pending_since?;
    if state.settled() || now.saturating_sub(since) < millis(spec.progress_deadline) {
        return None;
    }
    let waiting: Vec<ProxyStatus> = proxies.iter().filter(|p| p.version.is_none()).cloned().collect();
    let named: Vec<String> = waiting
        .iter()
        .map(|p| match &p.error {
            Some(e) => format!("{} ({e})", p.url),
            None => p.url.clone(),
        })
        .collect();
    Some(Degraded {
        since,
        message: format!(
            "step {}: {} of {} proxies did not confirm the traffic within the progress deadline ({}): {}",
            state.step + 1,
            waiting.len(),
            proxies.len(),
            humantime::format_duration(spec.progress_deadline),
            named.join(", ")
        ),
        proxies: waiting,
    })
}

/// Keeps a proxy's latest error; a new error is logged once, not on every retry.
fn note_error(spec: &RolloutSpec, status: &mut ProxyStatus, error: String) {
    if status.error.as_deref() != Some(error.as_str()) {
        tracing::warn!(rollout = %spec.name, proxy = %status.url, "{error}");
    }
    status.error = Some(error);
}

/// Acts on an analysis's verdict.
fn act(
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
            tracing::warn!(rollout = %spec.name, "aborting: {origin}: {reason}");
            let (reason, measurements) = (
                format!("{origin}: {reason}"),
                m.map(measurement_json).unwrap_or_default(),
            );
            // An emergency limit or a sequential rejection cannot wait for a stepped rollback.
            if m.is_some_and(|m| m.emergency || m.sequential) {
                state.abort(now, reason, measurements, detected);
            } else {
                state.abort_stepped(spec, now, reason, measurements, detected);
            }
        }
        Verdict::PauseInconclusive => {
            if state.phase == Phase::Progressing {
                let _ = state.command(spec, Command::Pause, now);
                state.message = format!("{origin}: too many inconclusive measurements in a row; paused");
            }
        }
        Verdict::Continue | Verdict::Passed => {}
    }
}

/// How long `apply` waits for the other proxies' tables once one proxy answered.
const PREFLIGHT_GRACE: Duration = Duration::from_millis(200);

/// Checks a spec against the proxies' tables before it starts: the route and both tracks must
/// exist on every proxy that answers, and at least one must answer. Problems name the spec's
/// field (`route`, `baseline`, `candidate`, `proxies[i]`).
async fn preflight(http: &Http, spec: &RolloutSpec) -> Result<(), ControlError> {
    let mut set = JoinSet::new();
    for (i, url) in spec.proxies.urls().iter().enumerate() {
        let (http, url) = (http.clone(), url.clone());
        set.spawn(async move {
            let routes_url = format!("{}/routes", url.trim_end_matches('/'));
            (i, url, crate::publish::read(&http, &routes_url).await)
        });
    }
    // Every proxy's answer, but a proxy that hangs does not hold `apply` up: once one proxy
    // answered with its table, the others have PREFLIGHT_GRACE to; the rest are skipped here
    // and reported in the rollout's status.
    let mut answers = Vec::new();
    let mut grace: Option<tokio::time::Instant> = None;
    loop {
        let next = match grace {
            Some(until) => match tokio::time::timeout_at(until, set.join_next()).await {
                Ok(next) => next,
                Err(_) => break,
            },
            None => set.join_next().await,
        };
        let Some(Ok(answer)) = next else { break };
        if answer.2.is_ok() && grace.is_none() {
            grace = Some(tokio::time::Instant::now() + PREFLIGHT_GRACE);
        }
        answers.push(answer);
    }
    let skipped = spec.proxies.urls().len() - answers.len();
    if skipped > 0 {
        tracing::warn!(rollout = %spec.name, skipped, "proxies did not answer in time to check the spec against their tables");
    }
    answers.sort_by_key(|(i, _, _)| *i);
    let mut problems: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut unreachable = Vec::new();
    for (i, url, answer) in &answers {
        match answer {
            Ok(doc) => {
                for (path, message) in table_problems(spec, &doc.routes) {
                    problems.entry((path, message)).or_default().push(url.clone());
                }
            }
            Err(e) => unreachable.push(FieldError::new(format!("proxies[{i}]"), e.to_string())),
        }
    }
    if unreachable.len() == answers.len() && !answers.is_empty() {
        let mut errors = unreachable;
        for e in &mut errors {
            e.message = format!(
                "{}; no proxy answered, so the spec cannot be checked against their tables",
                e.message
            );
        }
        return Err(ControlError::Invalid(ConfigErrors(errors)));
    }
    if problems.is_empty() {
        return Ok(());
    }
    let errors = problems
        .into_iter()
        .map(|((path, message), urls)| {
            let on = if urls.len() == spec.proxies.urls().len() {
                "on every proxy".to_owned()
            } else {
                let mut shown: Vec<&str> = urls.iter().take(3).map(String::as_str).collect();
                if urls.len() > 3 {
                    shown.push("…");
                }
                format!(
                    "on {} of {} proxies ({})",
                    urls.len(),
                    spec.proxies.urls().len(),
                    shown.join(", ")
                )
            };
            FieldError::new(path, format!("{message} {on}"))
        })
        .collect();
    Err(ControlError::Invalid(ConfigErrors(errors)))
}

/// Checks a spec over a group against the group's table in etcd before it starts.
async fn preflight_group(fleet: Option<&Fleet>, spec: &RolloutSpec, group: &GroupName) -> Result<(), ControlError> {
    let refuse = |message: String| ControlError::Invalid(ConfigErrors(vec![FieldError::new("proxies.group", message)]));
    let Some(fleet) = fleet else {
        return Err(refuse(format!(
            "this controller has no etcd, so it cannot find group {group}'s proxies; start it with switchyard serve --etcd URL"
        )));
    };
    let table = fleet
        .table(group)
        .await
        .map_err(|e| refuse(format!("cannot read group {group}'s table: {e}")))?
        .ok_or_else(|| {
            refuse(format!(
                "group {group} has no table in etcd yet: start one of its proxies (switchyard-proxy --group {group}) or write one with switchyard fleet apply {group} -f routes.yaml"
            ))
        })?;
    let problems = table_problems(spec, &table.routes);
    if problems.is_empty() {
        return Ok(());
    }
    Err(ControlError::Invalid(ConfigErrors(
        problems
            .into_iter()
            .map(|(path, message)| FieldError::new(path, format!("{message} in group {group}'s table")))
            .collect(),
    )))
}

/// What in one proxy's table does not fit the spec: (field path, message).
pub(crate) fn table_problems(spec: &RolloutSpec, routes: &[RouteSpec]) -> Vec<(String, String)> {
    let Some(route) = routes.iter().find(|r| r.name == spec.route) else {
        let names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
        return vec![(
            "route".to_owned(),
            format!(
                "there is no route {:?} (the routes are {})",
                spec.route.as_str(),
                names.join(", ")
            ),
        )];
    };
    let tracks: Vec<&str> = route.tracks.iter().map(|t| t.name.as_str()).collect();
    [("baseline", &spec.baseline), ("candidate", &spec.candidate)]
        .into_iter()
        .filter(|(_, track)| !route.tracks.iter().any(|t| &t.name == *track))
        .map(|(field, track)| {
            (
                field.to_owned(),
                format!(
                    "route {:?} has no track {:?} (its tracks are {})",
                    spec.route.as_str(),
                    track.as_str(),
                    tracks.join(", ")
                ),
            )
        })
        .collect()
}

fn sample(w: &TrackWindow) -> Sample {
    Sample {
        requests: w.requests,
        errors: w.errors,
        latency: w.histogram.clone(),
        seconds: w.window_seconds as f64,
    }
}

fn measurement_json(m: &Measurement) -> serde_json::Value {
    serde_json::to_value(m).unwrap_or_default()
}

fn figures(w: &TrackWindow) -> TrackFigures {
    TrackFigures {
        requests: w.requests,
        rps: w.rate_per_second(),
        error_rate: w.error_rate(),
        p50_ms: w.quantile_ms(0.5),
        p99_ms: w.quantile_ms(0.99),
    }
}

fn tracks_view(spec: &RolloutSpec, o: &Observed) -> BTreeMap<String, TrackFigures> {
    BTreeMap::from([
        (spec.baseline.to_string(), figures(&o.baseline)),
        (spec.candidate.to_string(), figures(&o.candidate)),
    ])
}
