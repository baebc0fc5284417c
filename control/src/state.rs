//! A rollout's state and every way it changes: stepping through a canary, pauses, operator
//! commands, analysis verdicts, and confirmations that the proxies serve the planned traffic.
//! Pure: time comes in as milliseconds since the Unix epoch, and the caller does the I/O
//! (observe, publish, persist, notify) that the returned state asks for.

use serde::{Deserialize, Serialize};
use switchyard_config::rollout::{AnalysisSpec, RolloutSpec, Step, WebhookGate};

use crate::controller::millis;

use crate::plan::{Traffic, steps};

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Moving through its steps.
    Progressing,
    /// Waiting: an indefinite pause step (until `promote`), or paused by an operator.
    Paused,
    /// Every step done; the candidate has all traffic.
    Completed,
    /// Sent back to the baseline; see the abort record.
    Aborted,
}

/// Why and when a rollout was aborted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AbortRecord {
    /// What triggered it (a failed analysis with its reasons, or an operator).
    pub reason: String,
    /// The measurements that triggered it, as they were reported.
    pub measurements: serde_json::Value,
    /// When the first failing measurement of the run that aborted was taken (ms since epoch).
    pub detected_at: u64,
    /// When the last proxy confirmed it serves the baseline only (ms since epoch).
    pub confirmed_at: Option<u64>,
}

/// What happened, in one word, as the history and webhooks name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EventKind {
    /// The rollout was applied.
    Apply,
    /// A step changed the traffic.
    Step,
    /// The rollout paused: a pause step, an operator, or too little evidence.
    Pause,
    /// An operator's pause was released, or the evidence a held pause waited for arrived.
    Resume,
    /// An operator promoted past a pause or to the end.
    Promote,
    /// Traffic went back to the baseline.
    Abort,
    /// Every step done.
    Complete,
    /// An operator set the candidate's weight.
    Weight,
    /// An operator went back to the previous traffic.
    Undo,
    /// An aborted rollout started again.
    Retry,
    /// Every proxy confirmed the traffic.
    Confirmed,
    /// A step's analysis passed.
    Analysis,
    /// The progress deadline passed with proxies that had not confirmed.
    Degraded,
    /// A webhook gate answered 2xx.
    Gate,
}

impl EventKind {
    /// The kind as the history writes it (`step`, `abort`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Apply => "apply",
            Self::Step => "step",
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Promote => "promote",
            Self::Abort => "abort",
            Self::Complete => "complete",
            Self::Weight => "weight",
            Self::Undo => "undo",
            Self::Retry => "retry",
            Self::Confirmed => "confirmed",
            Self::Analysis => "analysis",
            Self::Degraded => "degraded",
            Self::Gate => "gate",
        }
    }

    /// Whether a webhook hears of it.
    pub fn notifies(self) -> bool {
        matches!(
            self,
            Self::Step | Self::Pause | Self::Promote | Self::Abort | Self::Complete | Self::Degraded
        )
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// One entry of a rollout's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// When (ms since epoch).
    pub at: u64,
    /// What kind.
    pub kind: EventKind,
    /// Details.
    pub message: String,
}

/// Everything that survives a restart of the control loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutState {
    /// The phase.
    pub phase: Phase,
    /// Index of the step being worked on; `steps.len()` once all are done.
    pub step: usize,
    /// The traffic the rollout wants now.
    pub traffic: Traffic,
    /// The traffic every proxy has confirmed serving.
    pub confirmed: Option<Traffic>,
    /// End of the timed pause of the current step (ms since epoch).
    pub pause_until: Option<u64>,
    /// Time left of a timed pause that an operator paused (ms).
    pub pause_left: Option<u64>,
    /// Paused by an operator (not by an indefinite pause step).
    pub paused_by_operator: bool,
    /// A human-readable account of the current state.
    pub message: String,
    /// The abort record, once aborted.
    pub abort: Option<AbortRecord>,
    /// Earlier traffic, for `undo`.
    pub previous: Vec<Traffic>,
    /// When the first failing measurement of the current failure run was taken.
    pub first_failure: Option<u64>,
    /// The history, oldest first.
    pub events: Vec<Event>,
    /// When the rollout was applied (ms since epoch).
    pub started_at: u64,
    /// Since when the proxies have been asked to serve [`Self::traffic`] without all confirming
    /// it (ms since epoch); `None` while settled. The progress deadline counts from here.
    #[serde(default)]
    pub pending_since: Option<u64>,
    /// Held at the end of a timed pause because no measurement of the rollout's analysis
    /// passed during it: it goes on by itself once one passes, or on `promote`.
    #[serde(default)]
    pub held_for_evidence: bool,
    /// A stepped rollback under way (the spec's `abort.steps`); `None` once the candidate is
    /// at 0, and for an abort that went straight there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Rollback>,
}

/// A stepped rollback: the candidate's weight going down to 0 through the spec's abort steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollback {
    /// The weights still to come after the current one, percent; the last is 0.
    pub next: Vec<f64>,
    /// When every proxy confirmed the current weight (ms since epoch): the next comes the
    /// spec's `abort.interval` later.
    pub held_since: Option<u64>,
}

/// What the analyses tell [`RolloutState::advance`] about step [`Self::step`] (0-based);
/// another step is told nothing yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Evidence {
    /// The step this is about.
    pub step: usize,
    /// Its webhook gate answered 2xx (a `webhook` step, or the promotion webhook when `step`
    /// is past the last step).
    pub gate_open: bool,
    /// Its analysis passed (an analysis step).
    pub step_analysis_passed: bool,
    /// For the rollout's background analysis, whether a measurement passed since the current
    /// step began; `None` without a background analysis (then pauses need no evidence).
    pub passed_in_step: Option<bool>,
}

/// An operator's command.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Command {
    /// Pass the current pause (or, with `full`, finish every step now).
    Promote {
        /// Skip to the end.
        full: bool,
    },
    /// Hold the rollout where it is (analysis goes on).
    Pause,
    /// Release an operator's pause.
    Resume,
    /// Send every request back to the baseline.
    Abort,
    /// Start an aborted rollout again from its first step.
    Retry,
    /// Go back to the previous traffic, and hold there.
    Undo,
    /// Set the candidate's weight (percent) and hold there.
    SetWeight(f64),
}

/// Why a command does not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

impl RolloutState {
    /// A rollout applied at `now`, about to take its first step.
    pub fn new(now: u64) -> Self {
        let mut s = Self {
            phase: Phase::Progressing,
            step: 0,
            traffic: Traffic::baseline(),
            confirmed: None,
            pause_until: None,
            pause_left: None,
            paused_by_operator: false,
            message: "starting".to_owned(),
            abort: None,
            previous: Vec::new(),
            first_failure: None,
            events: Vec::new(),
            started_at: now,
            pending_since: None,
            held_for_evidence: false,
            rollback: None,
        };
        s.event(now, EventKind::Apply, "rollout applied");
        s
    }

    fn event(&mut self, at: u64, kind: EventKind, message: impl Into<String>) {
        self.events.push(Event {
            at,
            kind,
            message: message.into(),
        });
    }

    fn set_traffic(&mut self, traffic: Traffic) {
        if traffic != self.traffic {
            let old = std::mem::replace(&mut self.traffic, traffic);
            self.previous.push(old);
        }
    }

    /// Whether every proxy serves what the rollout wants.
    pub fn settled(&self) -> bool {
        self.confirmed.as_ref() == Some(&self.traffic)
    }

    /// Whether the rollout still acts (observes, steps, publishes).
    pub fn active(&self) -> bool {
        matches!(self.phase, Phase::Progressing | Phase::Paused)
    }

    /// Takes every step that can be taken at `now`. Each step starts only once every proxy
    /// confirmed the traffic of the steps before it, so no step is skipped and a pause never
    /// counts time during which the traffic was not yet in place. A timed pause ends only with
    /// evidence: when the rollout has a background analysis and none of its measurements
    /// passed during the pause, the rollout holds (paused) until one does, or until `promote`.
    /// Steps are numbered from 1 in messages, as people count them.
    pub fn advance(&mut self, spec: &RolloutSpec, now: u64, evidence: Evidence) {
        if self.phase == Phase::Aborted {
            self.step_down(spec, now);
            return;
        }
        let steps = steps(spec);
        // About another step the analyses have told nothing yet: no analysis passed there, and
        // no measurement passed in it.
        let told = |n: usize| {
            if evidence.step == n {
                evidence
            } else {
                Evidence {
                    step: n,
                    gate_open: false,
                    step_analysis_passed: false,
                    passed_in_step: evidence.passed_in_step.map(|_| false),
                }
            }
        };
        if self.held_for_evidence
            && self.phase == Phase::Paused
            && !self.paused_by_operator
            && told(self.step).passed_in_step == Some(true)
        {
            self.held_for_evidence = false;
            self.phase = Phase::Progressing;
            self.event(
                now,
                EventKind::Resume,
                format!("step {}: a measurement passed; going on", self.step + 1),
            );
            // The pause it held at is over.
            self.step += 1;
        }
        while self.phase == Phase::Progressing {
            let Some(step) = steps.get(self.step) else {
                // Completed only once every proxy serves the candidate all traffic.
                self.set_traffic(Traffic::candidate());
                if !self.settled() {
                    self.message =
                        "every step done: waiting for every proxy to give the candidate all traffic".to_owned();
                    return;
                }
                self.phase = Phase::Completed;
                self.message = "completed: the candidate has all traffic".to_owned();
                self.event(
                    now,
                    EventKind::Complete,
                    "every step done; every proxy serves the candidate at 100%",
                );
                return;
            };
            let n = self.step;
            let shown = n + 1;
            // Every step starts from traffic every proxy confirmed, so no change is skipped:
            // consecutive weights are each served before the next.
            if !self.settled() {
                self.message = format!("step {shown}: waiting for every proxy to confirm");
                return;
            }
            match step {
                Step::SetWeight(w) => {
                    let mut t = self.traffic.clone();
                    t.candidate_weight = *w;
                    self.set_traffic(t);
                    self.message = format!("step {shown}: candidate weight {w}%");
                    self.event(now, EventKind::Step, self.message.clone());
                    self.step += 1;
                }
                Step::SetHeaderRoute(_) => {
                    let mut t = self.traffic.clone();
                    if !t.header_steps.contains(&n) {
                        t.header_steps.push(n);
                    }
                    self.set_traffic(t);
                    self.message = format!("step {shown}: header route to the candidate");
                    self.event(now, EventKind::Step, self.message.clone());
                    self.step += 1;
                }
                Step::SetMirrorRoute(m) => {
                    let mut t = self.traffic.clone();
                    t.mirror_percent = m.percent;
                    t.mirror_step = (m.percent > 0.0).then_some(n);
                    self.set_traffic(t);
                    self.message = if m.percent > 0.0 {
                        format!("step {shown}: {}% of requests copied to the candidate", m.percent)
                    } else {
                        format!("step {shown}: no request copied to the candidate")
                    };
                    self.event(now, EventKind::Step, self.message.clone());
                    self.step += 1;
                }
                Step::Pause(pause) => match (pause.duration, self.pause_until) {
                    (None, _) => {
                        self.phase = Phase::Paused;
                        self.message = format!("step {shown}: paused until promote");
                        self.event(now, EventKind::Pause, self.message.clone());
                        return;
                    }
                    (Some(d), None) => {
                        let until = now + u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                        self.pause_until = Some(until);
                        self.message = format!("step {shown}: pausing {}", humantime::format_duration(d));
                        self.event(now, EventKind::Pause, self.message.clone());
                        return;
                    }
                    (Some(_), Some(until)) if now < until => {
                        self.message = format!("step {shown}: paused, {} s left", (until - now).div_ceil(1000));
                        return;
                    }
                    (Some(_), Some(_)) if told(n).passed_in_step == Some(false) => {
                        self.pause_until = None;
                        self.phase = Phase::Paused;
                        self.held_for_evidence = true;
                        self.message = format!(
                            "step {shown}: held at the end of its pause: no measurement of the analysis passed \
                             during it (too few requests, or none conclusive); it goes on once one passes, \
                             or promote to go on without evidence"
                        );
                        self.event(now, EventKind::Pause, self.message.clone());
                        return;
                    }
                    (Some(_), Some(_)) => {
                        self.pause_until = None;
                        self.step += 1;
                    }
                },
                Step::Analysis(_) => {
                    if !told(n).step_analysis_passed {
                        self.message = format!("step {shown}: analysis running");
                        return;
                    }
                    self.event(now, EventKind::Analysis, format!("step {shown}: analysis passed"));
                    self.step += 1;
                }
                Step::Webhook(gate) => {
                    if !told(n).gate_open {
                        self.message = format!("step {shown}: waiting for {} to answer 2xx", gate.url);
                        return;
                    }
                    self.event(now, EventKind::Gate, format!("step {shown}: {} answered 2xx", gate.url));
                    self.step += 1;
                }
            }
        }
    }

    /// The webhook gate the rollout is held at (a `webhook` step, or the promotion webhook's),
    /// while the rollout goes on and every proxy serves its traffic.
    pub fn gate(&self, spec: &RolloutSpec) -> Option<WebhookGate> {
        if self.phase != Phase::Progressing || !self.settled() {
            return None;
        }
        match steps(spec).into_iter().nth(self.step) {
            Some(Step::Webhook(gate)) => Some(gate),
            _ => None,
        }
    }

    /// The current step's analysis, if it is an analysis step being worked on.
    pub fn step_analysis(&self, spec: &RolloutSpec) -> Option<AnalysisSpec> {
        match self.current_step(spec) {
            Some(Step::Analysis(a)) if self.active() => Some(a),
            _ => None,
        }
    }

    /// Applies an operator's command at `now`.
    pub fn command(&mut self, spec: &RolloutSpec, cmd: Command, now: u64) -> Result<(), Refused> {
        let steps = steps(spec).len();
        match cmd {
            Command::Promote { full } => {
                self.ensure_active("promote")?;
                let unproven = if self.held_for_evidence {
                    " without evidence from the analysis (an operator's override)"
                } else {
                    " (an operator's override of the remaining pauses and analyses)"
                };
                if full {
                    self.step = steps;
                    self.event(
                        now,
                        EventKind::Promote,
                        format!("promoted fully by an operator: every remaining step skipped{unproven}"),
                    );
                } else if matches!(self.current_step(spec), Some(Step::Pause(_))) {
                    let unproven = if self.held_for_evidence {
                        unproven
                    } else {
                        " by an operator"
                    };
                    self.event(
                        now,
                        EventKind::Promote,
                        format!("promoted past step {}{unproven}", self.step + 1),
                    );
                    self.step += 1;
                } else {
                    return Err(Refused(format!(
                        "step {} of {steps} is not a pause; use promote --full to finish every step",
                        self.step + 1
                    )));
                }
                self.held_for_evidence = false;
                self.pause_until = None;
                self.pause_left = None;
                self.paused_by_operator = false;
                self.phase = Phase::Progressing;
            }
            Command::Pause => {
                self.ensure_active("pause")?;
                if let Some(until) = self.pause_until.take() {
                    self.pause_left = Some(until.saturating_sub(now));
                }
                self.paused_by_operator = true;
                self.phase = Phase::Paused;
                self.message = "paused by an operator".to_owned();
                self.event(now, EventKind::Pause, "paused by an operator");
            }
            Command::Resume => {
                if !self.paused_by_operator || self.phase != Phase::Paused {
                    return Err(Refused(
                        "not paused by an operator; an indefinite pause step needs promote".to_owned(),
                    ));
                }
                if let Some(left) = self.pause_left.take() {
                    self.pause_until = Some(now + left);
                }
                self.paused_by_operator = false;
                self.phase = Phase::Progressing;
                self.event(now, EventKind::Resume, "resumed by an operator");
            }
            Command::Abort => {
                if self.rollback.is_some() {
                    self.rollback_now(now, "a second abort by an operator");
                    return Ok(());
                }
                self.ensure_active("abort")?;
                self.abort_stepped(
                    spec,
                    now,
                    "aborted by an operator".to_owned(),
                    serde_json::Value::Null,
                    now,
                );
            }
            Command::Retry => {
                if self.phase != Phase::Aborted {
                    return Err(Refused("only an aborted rollout can be retried".to_owned()));
                }
                self.phase = Phase::Progressing;
                self.step = 0;
                self.set_traffic(Traffic::baseline());
                self.pause_until = None;
                self.pause_left = None;
                self.paused_by_operator = false;
                self.first_failure = None;
                self.held_for_evidence = false;
                self.abort = None;
                self.rollback = None;
                self.message = "retrying from the first step".to_owned();
                self.event(now, EventKind::Retry, "retrying from the first step");
            }
            Command::Undo => {
                if self.phase == Phase::Aborted {
                    return Err(Refused(
                        "an aborted rollout stays on the baseline; use retry to start again".to_owned(),
                    ));
                }
                let Some(previous) = self.previous.pop() else {
                    return Err(Refused("there is no earlier traffic to go back to".to_owned()));
                };
                self.traffic = previous;
                self.phase = Phase::Paused;
                self.paused_by_operator = true;
                self.pause_until = None;
                self.message = format!(
                    "undone: candidate back to {}%; resume to continue",
                    self.traffic.candidate_weight
                );
                self.event(now, EventKind::Undo, self.message.clone());
            }
            Command::SetWeight(w) => {
                if !(0.0..=100.0).contains(&w) || !w.is_finite() {
                    return Err(Refused(format!("weight must be from 0 to 100, not {w}")));
                }
                self.ensure_active("set-weight")?;
                let mut t = self.traffic.clone();
                t.candidate_weight = w;
                self.set_traffic(t);
                self.phase = Phase::Paused;
                self.paused_by_operator = true;
                self.message = format!("candidate weight set to {w}% by an operator; resume to continue");
                self.event(now, EventKind::Weight, self.message.clone());
            }
        }
        Ok(())
    }

    fn current_step(&self, spec: &RolloutSpec) -> Option<Step> {
        steps(spec).into_iter().nth(self.step)
    }

    fn ensure_active(&self, verb: &str) -> Result<(), Refused> {
        if self.active() {
            Ok(())
        } else {
            Err(Refused(format!("cannot {verb}: the rollout is {:?}", self.phase)))
        }
    }

    /// Sends everything back to the baseline at once: weight 0, header routes removed.
    pub fn abort(&mut self, now: u64, reason: String, measurements: serde_json::Value, detected_at: u64) {
        self.abort_to(Traffic::baseline(), now, reason, measurements, detected_at);
        self.rollback = None;
    }

    /// Sends traffic back as the spec's `abort` says: stepped down through its weights below
    /// the candidate's (header routes removed at the first), or at once without any.
    pub fn abort_stepped(
        &mut self,
        spec: &RolloutSpec,
        now: u64,
        reason: String,
        measurements: serde_json::Value,
        detected_at: u64,
    ) {
        let mut down = spec.abort.from(self.traffic.candidate_weight);
        if down.len() < 2 {
            self.abort(now, reason, measurements, detected_at);
            return;
        }
        let first = down.remove(0);
        let shown: Vec<String> = std::iter::once(first)
            .chain(down.iter().copied())
            .map(|w| format!("{w}%"))
            .collect();
        let traffic = Traffic {
            candidate_weight: first,
            header_steps: Vec::new(),
            mirror_percent: 0.0,
            mirror_step: None,
        };
        self.abort_to(traffic, now, reason, measurements, detected_at);
        self.rollback = Some(Rollback {
            next: down,
            held_since: None,
        });
        self.message = format!(
            "{}; stepping the candidate down through {}, each held {} once every proxy serves it",
            self.message,
            shown.join(", "),
            humantime::format_duration(spec.abort.interval)
        );
    }

    fn abort_to(
        &mut self,
        traffic: Traffic,
        now: u64,
        reason: String,
        measurements: serde_json::Value,
        detected_at: u64,
    ) {
        self.set_traffic(traffic);
        self.phase = Phase::Aborted;
        self.pause_until = None;
        self.pause_left = None;
        self.paused_by_operator = false;
        self.held_for_evidence = false;
        self.message = format!("aborted: {reason}");
        self.event(now, EventKind::Abort, reason.clone());
        self.abort = Some(AbortRecord {
            reason,
            measurements,
            detected_at,
            confirmed_at: None,
        });
    }

    /// Ends a stepped rollback at once, the candidate straight to 0, saying `why`.
    pub fn rollback_now(&mut self, now: u64, why: &str) {
        if self.rollback.take().is_none() {
            return;
        }
        self.set_traffic(Traffic::baseline());
        self.message = format!("aborted; straight to the baseline: {why}");
        self.event(
            now,
            EventKind::Step,
            format!("rollback: candidate weight 0% at once: {why}"),
        );
    }

    /// When a stepped rollback takes its next step (ms since epoch), if one is under way and
    /// every proxy serves the current weight.
    pub fn rollback_due(&self, spec: &RolloutSpec) -> Option<u64> {
        let held = self.rollback.as_ref()?.held_since?;
        Some(held.saturating_add(millis(spec.abort.interval)))
    }

    /// A stepped rollback's next weight, once the current one was served for the interval.
    fn step_down(&mut self, spec: &RolloutSpec, now: u64) {
        let Some(due) = self.rollback_due(spec) else { return };
        if now < due || !self.settled() {
            return;
        }
        let Some(rollback) = self.rollback.as_mut() else { return };
        let next = if rollback.next.is_empty() {
            0.0
        } else {
            rollback.next.remove(0)
        };
        rollback.held_since = None;
        if next == 0.0 {
            self.rollback = None;
        }
        self.set_traffic(Traffic {
            candidate_weight: next,
            header_steps: Vec::new(),
            mirror_percent: 0.0,
            mirror_step: None,
        });
        self.message = format!("aborted; rolling back: candidate weight {next}%");
        self.event(now, EventKind::Step, format!("rollback: candidate weight {next}%"));
    }

    /// Every proxy confirmed it serves `traffic` at `now`.
    pub fn confirm(&mut self, traffic: Traffic, now: u64) {
        if traffic == self.traffic && self.confirmed.as_ref() != Some(&traffic) {
            self.event(
                now,
                EventKind::Confirmed,
                format!("every proxy serves candidate weight {}%", traffic.candidate_weight),
            );
            if let Some(rollback) = &mut self.rollback {
                rollback.held_since = Some(now);
            }
            if self.phase == Phase::Aborted
                && traffic == Traffic::baseline()
                && let Some(record) = &mut self.abort
                && record.confirmed_at.is_none()
            {
                record.confirmed_at = Some(now);
            }
        }
        self.confirmed = Some(traffic);
    }
}

#[cfg(test)]
mod tests;
