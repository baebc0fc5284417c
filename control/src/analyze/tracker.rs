//! The state of one analysis run across its measurements, and the rules that turn them into a
//! verdict. Plain data, serializable, so the controller can persist it and carry on after a
//! restart.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use switchyard_config::rollout::AnalysisSpec;

use super::{Measurement, Outcome};

/// What the rollout should do after a measurement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "camelCase")]
pub enum Verdict {
    /// Keep measuring.
    Continue,
    /// `count` measurements passed: the analysis passed. Final.
    Passed,
    /// The analysis failed: abort the rollout. Final.
    Abort {
        /// Why.
        reason: AbortReason,
    },
    /// `inconclusiveLimit` consecutive measurements were inconclusive: pause the rollout until a
    /// person resumes it (then call [`Tracker::resume`]) or aborts it.
    PauseInconclusive,
}

/// Why an analysis aborted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cause", rename_all = "camelCase")]
pub enum AbortReason {
    /// An emergency limit was breached.
    Emergency {
        /// The breached limits, `name: message; …`.
        message: String,
    },
    /// A sequential judge rejected: the candidate's error rate is beyond a limit (or the
    /// baseline's) with the judge's confidence, over everything since the analysis began.
    Sequential {
        /// The failed checks of the measurement, `name: message; …`.
        message: String,
    },
    /// `failureLimit` measurements failed.
    FailureLimit {
        /// Failed measurements so far.
        failures: u32,
        /// The limit.
        limit: u32,
        /// The failed checks of the last failed measurement, `name: message; …`.
        message: String,
    },
    /// `consecutiveErrorLimit` measurements in a row could not read every proxy's stats.
    StatsUnreachable {
        /// Consecutive measurements without stats.
        consecutive: u32,
        /// The limit.
        limit: u32,
    },
    /// `consecutiveErrorLimit` measurements in a row could not read one metric provider's
    /// value.
    MetricErrors {
        /// The metric's name.
        metric: String,
        /// Consecutive measurements without its value.
        consecutive: u32,
        /// The limit.
        limit: u32,
        /// Why the last one could not, as its row says.
        message: String,
    },
}

impl AbortReason {
    /// A short, stable label for metrics and logs: `emergency`, `sequential`, `failure_limit`,
    /// `stats_unreachable`, `metric_errors`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Emergency { .. } => "emergency",
            Self::Sequential { .. } => "sequential",
            Self::FailureLimit { .. } => "failure_limit",
            Self::StatsUnreachable { .. } => "stats_unreachable",
            Self::MetricErrors { .. } => "metric_errors",
        }
    }
}

impl fmt::Display for AbortReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Emergency { message } => write!(f, "emergency limit breached: {message}"),
            Self::Sequential { message } => write!(f, "sequential judge rejected: {message}"),
            Self::FailureLimit {
                failures,
                limit,
                message,
            } => write!(
                f,
                "{failures} failed measurements (failureLimit {limit}); last: {message}"
            ),
            Self::StatsUnreachable { consecutive, limit } => write!(
                f,
                "stats unreachable for {consecutive} consecutive measurements (consecutiveErrorLimit {limit})"
            ),
            Self::MetricErrors {
                metric,
                consecutive,
                limit,
                message,
            } => write!(
                f,
                "metric {metric} could not be measured in {consecutive} consecutive measurements (consecutiveErrorLimit {limit}); last: {message}"
            ),
        }
    }
}

/// The limits of [`AnalysisSpec`] that a run applies, copied so that a persisted tracker judges
/// by the rules it started with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Limits {
    count: Option<u32>,
    failure_limit: u32,
    inconclusive_limit: u32,
    consecutive_error_limit: u32,
}

/// One analysis run: feed it every measurement, in order, with [`Tracker::record`].
///
/// The rules, in the order they apply to a measurement:
///
/// 1. Once the run has passed or aborted, it stays so: `record` returns the same verdict and
///    changes nothing.
/// 2. **Emergency** — aborts at once. So does a **sequential rejection**
///    ([`Measurement::sequential`]): its false-abort probability is bounded over the whole
///    analysis already, so `failureLimit`, which exists to absorb the noise of windows judged
///    one by one, would only delay it.
/// 3. **Metric errors** — a row whose outcome is [`Outcome::Error`] (a metric provider gave no
///    usable answer) adds to that metric's own streak; any other row of the metric ends it. A
///    streak that reaches `consecutiveErrorLimit` aborts, as a metric's consecutive errors do in
///    Argo Rollouts. The other rows of the measurement still count, below.
/// 4. **Stats unreachable** (`stats_reachable == false`: some proxy's stats could not be read)
///    — the measurement is an *error*: it counts neither as a pass nor as a failure, and the
///    measurement's own outcome is ignored, except that an emergency it shows still aborts (the
///    proxies that did answer are evidence enough). `consecutiveErrorLimit` consecutive errors
///    abort. A measurement with stats resets the streak.
/// 5. **Fail** — counts towards `failureLimit`, cumulatively over the run, as in Argo Rollouts;
///    the run aborts when the count *reaches* the limit (`failureLimit: 3` aborts on the third
///    failure, as the schema documents; Argo aborts when the count exceeds it). A limit of 0
///    acts as 1. A failure counts whether or not another row of it is an error.
/// 6. **Error** (no row failed, some row is an error) — neither a pass nor a failure, and it
///    leaves the inconclusive streak as it is.
/// 7. **Inconclusive** — `inconclusiveLimit` consecutive ones return
///    [`Verdict::PauseInconclusive`] (0: never); any pass or failure resets the streak.
/// 8. **Pass** — the run passes once `count` measurements have *passed*. Passes need not be
///    consecutive; failed, inconclusive and error measurements do not count towards `count`,
///    because a run of low-traffic windows must never add up to a pass. `count: 0` acts as 1;
///    without `count` the run never passes by itself (it lasts as long as its step).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tracker {
    limits: Limits,
    passed: u32,
    failed: u32,
    inconclusive: u32,
    errors: u32,
    consecutive_inconclusive: u32,
    consecutive_errors: u32,
    /// Each metric's consecutive errors, while it has some.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    metric_errors: BTreeMap<String, u32>,
    ended: Option<Verdict>,
}

impl Tracker {
    /// A run that has seen nothing, judged by `spec`'s limits.
    pub fn new(spec: &AnalysisSpec) -> Self {
        Self {
            limits: Limits {
                count: spec.count,
                failure_limit: spec.failure_limit,
                inconclusive_limit: spec.inconclusive_limit,
                consecutive_error_limit: spec.consecutive_error_limit,
            },
            passed: 0,
            failed: 0,
            inconclusive: 0,
            errors: 0,
            consecutive_inconclusive: 0,
            consecutive_errors: 0,
            metric_errors: BTreeMap::new(),
            ended: None,
        }
    }

    /// Applies one measurement (see the rules on [`Tracker`]). `stats_reachable` is false when
    /// some proxy's stats could not be read for it; `m` may then be partial or
    /// [`Measurement::default`].
    pub fn record(&mut self, m: &Measurement, stats_reachable: bool) -> Verdict {
        if let Some(v) = &self.ended {
            return v.clone();
        }
        if m.emergency {
            self.failed = self.failed.saturating_add(1);
            return self.end(Verdict::Abort {
                reason: AbortReason::Emergency { message: m.failures() },
            });
        }
        if m.sequential {
            self.failed = self.failed.saturating_add(1);
            return self.end(Verdict::Abort {
                reason: AbortReason::Sequential { message: m.failures() },
            });
        }
        if let Some(reason) = self.metric_errors(m) {
            self.errors = self.errors.saturating_add(1);
            return self.end(Verdict::Abort { reason });
        }
        if !stats_reachable {
            self.errors = self.errors.saturating_add(1);
            self.consecutive_errors = self.consecutive_errors.saturating_add(1);
            let limit = self.limits.consecutive_error_limit;
            if self.consecutive_errors >= limit.max(1) {
                return self.end(Verdict::Abort {
                    reason: AbortReason::StatsUnreachable {
                        consecutive: self.consecutive_errors,
                        limit,
                    },
                });
            }
            return Verdict::Continue;
        }
        self.consecutive_errors = 0;
        match m.outcome {
            Outcome::Fail => {
                self.failed = self.failed.saturating_add(1);
                self.consecutive_inconclusive = 0;
                let limit = self.limits.failure_limit;
                if self.failed >= limit.max(1) {
                    return self.end(Verdict::Abort {
                        reason: AbortReason::FailureLimit {
                            failures: self.failed,
                            limit,
                            message: m.failures(),
                        },
                    });
                }
                Verdict::Continue
            }
            Outcome::Error => {
                self.errors = self.errors.saturating_add(1);
                Verdict::Continue
            }
            Outcome::Inconclusive => {
                self.inconclusive = self.inconclusive.saturating_add(1);
                self.consecutive_inconclusive = self.consecutive_inconclusive.saturating_add(1);
                let limit = self.limits.inconclusive_limit;
                if limit > 0 && self.consecutive_inconclusive >= limit {
                    Verdict::PauseInconclusive
                } else {
                    Verdict::Continue
                }
            }
            Outcome::Pass => {
                self.passed = self.passed.saturating_add(1);
                self.consecutive_inconclusive = 0;
                match self.limits.count {
                    Some(count) if self.passed >= count.max(1) => self.end(Verdict::Passed),
                    _ => Verdict::Continue,
                }
            }
        }
    }

    /// A measurement for which no stats could be read at all: the same as
    /// `record(&Measurement::default(), false)`.
    pub fn record_unreachable(&mut self) -> Verdict {
        self.record(&Measurement::default(), false)
    }

    /// After a person resumes a rollout paused by [`Verdict::PauseInconclusive`]: the
    /// inconclusive streak starts again from zero.
    pub fn resume(&mut self) {
        self.consecutive_inconclusive = 0;
    }

    /// The final verdict ([`Verdict::Passed`] or [`Verdict::Abort`]), once there is one.
    pub fn ended(&self) -> Option<&Verdict> {
        self.ended.as_ref()
    }

    /// Measurements that passed.
    pub fn passed(&self) -> u32 {
        self.passed
    }

    /// Measurements that failed (emergencies included).
    pub fn failed(&self) -> u32 {
        self.failed
    }

    /// Measurements that were inconclusive.
    pub fn inconclusive(&self) -> u32 {
        self.inconclusive
    }

    /// Measurements that were errors: taken without every proxy's stats, or with a metric
    /// provider's value unread.
    pub fn errors(&self) -> u32 {
        self.errors
    }

    /// Adds `m`'s rows to each metric's error streak (rule 3); the abort, if a streak reached
    /// the limit.
    fn metric_errors(&mut self, m: &Measurement) -> Option<AbortReason> {
        let limit = self.limits.consecutive_error_limit;
        let mut reached = None;
        for r in &m.results {
            if r.outcome != Outcome::Error {
                self.metric_errors.remove(&r.name);
                continue;
            }
            let streak = self.metric_errors.entry(r.name.clone()).or_default();
            *streak = streak.saturating_add(1);
            if *streak >= limit.max(1) && reached.is_none() {
                reached = Some(AbortReason::MetricErrors {
                    metric: r.name.clone(),
                    consecutive: *streak,
                    limit,
                    message: r.message.clone(),
                });
            }
        }
        reached
    }

    fn end(&mut self, v: Verdict) -> Verdict {
        self.ended = Some(v.clone());
        v
    }
}

#[cfg(test)]
mod tests;
