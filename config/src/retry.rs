//! A route's retries, in the Gateway API's words (GEP-1731 for the policy, GEP-3388 for the
//! budget): how many times a request may be sent again, on which answers, how long to wait
//! between attempts, how long each may take, and the share of the route's requests that retries
//! may add. The proxy counts every attempt against the track that served it, so a retry never
//! hides a candidate's errors from its analysis.
//!
//! ```
//! use switchyard_config::{Format, load_config};
//!
//! let yaml = r#"
//! routes:
//!   - name: checkout
//!     retry: { attempts: 2, codes: [502, 503], perTryTimeout: 2s }
//!     tracks: [{ name: stable, weight: 1, endpoints: ["127.0.0.1:9001"] }]
//! "#;
//! let loaded = load_config(yaml, Format::Yaml, 1).unwrap();
//! let retry = loaded.table.routes()[0].retry().unwrap();
//! assert_eq!(retry.attempts(), 2);
//! assert!(retry.retries_status(503) && !retry.retries_status(500));
//! ```

use std::time::Duration;

use serde::Serialize;
use serde_yaml_ng::Value;

use crate::error::Problems;
use crate::read::{Fields, FromTree};
use crate::schema::{human, human_opt};

/// Most retries a route may ask for: each one is a full exchange with an upstream.
pub const MAX_ATTEMPTS: u32 = 10;

/// `retry:` of a route. Off unless written.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetrySpec {
    /// Times a request may be sent again after its first attempt, 1 to [`MAX_ATTEMPTS`].
    /// Default 2.
    pub attempts: u32,
    /// Response statuses that are retried (400 to 599), besides the failures that always are:
    /// a connection that could not be made, or broke before the answer, and an attempt past its
    /// `perTryTimeout`. Default `[502, 503, 504]`.
    pub codes: Vec<u16>,
    /// The wait before the first retry; each later one waits twice as long, up to ten times
    /// this, with a random share of it taken off (so that clients that failed together do not
    /// retry together). Default 25ms.
    #[serde(with = "human")]
    pub backoff: Duration,
    /// How long one attempt may wait for its response head; the route's `timeout` still bounds
    /// all attempts together. Default: none (each attempt may take what is left of it).
    #[serde(with = "human_opt", skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<Duration>,
    /// How many retries the route may add to its traffic.
    pub budget: BudgetSpec,
}

/// `retry.budget`: retries allowed as a share of the route's requests over an interval
/// (GEP-3388's `budget` and `minRetryRate`, Envoy's `retry_budget`). A retry the budget does not
/// allow is not sent: the client gets the attempt's answer, and the route counts it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BudgetSpec {
    /// Retries at most this share of the route's requests, percent (0 to 100). Default 20.
    pub percent: f64,
    /// Over how long requests and retries are counted. Default 10s.
    #[serde(with = "human")]
    pub interval: Duration,
    /// Retries always allowed whatever the share, so that a route with little traffic can
    /// still retry. Default 10 per 1s.
    pub min_retry_rate: RetryRate,
}

/// A number of retries per interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryRate {
    /// Retries.
    pub count: u32,
    /// Per this long.
    #[serde(with = "human")]
    pub interval: Duration,
}

impl Default for BudgetSpec {
    fn default() -> Self {
        Self {
            percent: 20.0,
            interval: Duration::from_secs(10),
            min_retry_rate: RetryRate {
                count: 10,
                interval: Duration::from_secs(1),
            },
        }
    }
}

impl FromTree for RetrySpec {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        let mut f = Fields::of(v, path, p)?;
        let spec = Self {
            attempts: f.or("attempts", 2, p),
            codes: f.or("codes", vec![502, 503, 504], p),
            backoff: f.or("backoff", Duration::from_millis(25), p),
            per_try_timeout: f.optional("perTryTimeout", p),
            budget: f.or("budget", BudgetSpec::default(), p),
        };
        f.finish(p);
        Some(spec)
    }
}

impl FromTree for BudgetSpec {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        let mut f = Fields::of(v, path, p)?;
        let d = Self::default();
        let spec = Self {
            percent: f.or("percent", d.percent, p),
            interval: f.or("interval", d.interval, p),
            min_retry_rate: f.or("minRetryRate", d.min_retry_rate, p),
        };
        f.finish(p);
        Some(spec)
    }
}

impl FromTree for RetryRate {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        let mut f = Fields::of(v, path, p)?;
        let count = f.required("count", p);
        let interval = f.required("interval", p);
        f.finish(p);
        Some(Self {
            count: count?,
            interval: interval?,
        })
    }
}

/// A route's compiled retry policy; read by the proxy for each attempt that failed.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    attempts: u32,
    /// Bit `s - 400` for each retried status `s`.
    codes: [u64; 4],
    backoff: Duration,
    per_try_timeout: Option<Duration>,
    budget: BudgetSpec,
}

impl RetryPolicy {
    /// Checks `spec` (at `path`, `routes[0].retry`), reporting every problem into `p`.
    pub(crate) fn compile(spec: &RetrySpec, path: &str, p: &mut Problems) -> Option<Self> {
        let before = p.len();
        if !(1..=MAX_ATTEMPTS).contains(&spec.attempts) {
            p.push(
                format!("{path}.attempts"),
                format!(
                    "attempts must be from 1 to {MAX_ATTEMPTS} (retries after the first attempt), found {}",
                    spec.attempts
                ),
            );
        }
        let mut codes = [0u64; 4];
        for (i, &code) in spec.codes.iter().enumerate() {
            if (400..600).contains(&code) {
                let bit = usize::from(code - 400);
                codes[bit / 64] |= 1 << (bit % 64);
            } else {
                p.push(
                    format!("{path}.codes[{i}]"),
                    format!("a retried status must be from 400 to 599, found {code}"),
                );
            }
        }
        if spec.backoff > Duration::from_secs(60) {
            p.push(
                format!("{path}.backoff"),
                "backoff must be at most 60s: a client waits through every retry",
            );
        }
        if spec.per_try_timeout == Some(Duration::ZERO) {
            p.push(format!("{path}.perTryTimeout"), "perTryTimeout must be longer than 0s");
        }
        let b = &spec.budget;
        if !(0.0..=100.0).contains(&b.percent) {
            p.push(
                format!("{path}.budget.percent"),
                format!("percent must be from 0 to 100, found {}", b.percent),
            );
        }
        if b.interval.is_zero() {
            p.push(format!("{path}.budget.interval"), "interval must be longer than 0s");
        }
        if b.min_retry_rate.interval.is_zero() {
            p.push(
                format!("{path}.budget.minRetryRate.interval"),
                "interval must be longer than 0s",
            );
        }
        (p.len() == before).then(|| Self {
            attempts: spec.attempts,
            codes,
            backoff: spec.backoff,
            per_try_timeout: spec.per_try_timeout,
            budget: spec.budget.clone(),
        })
    }

    /// Times a request may be sent again after its first attempt.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Whether a response with `status` is retried.
    pub fn retries_status(&self, status: u16) -> bool {
        let Some(bit) = status.checked_sub(400).map(usize::from).filter(|b| *b < 200) else {
            return false;
        };
        self.codes[bit / 64] & (1 << (bit % 64)) != 0
    }

    /// The wait before retry `retry` (1 for the first), before jitter: `backoff` doubled for
    /// each earlier retry, at most ten times `backoff`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let doubled = self.backoff.saturating_mul(1 << retry.saturating_sub(1).min(16));
        doubled.min(self.backoff.saturating_mul(10))
    }

    /// How long one attempt may wait for its response head, if limited.
    pub fn per_try_timeout(&self) -> Option<Duration> {
        self.per_try_timeout
    }

    /// The route's retry budget.
    pub fn budget(&self) -> &BudgetSpec {
        &self.budget
    }
}

#[cfg(test)]
mod tests {
    use crate::{Format, load_config};

    fn problems(retry: &str) -> Vec<String> {
        let yaml =
            format!("routes: [{{ name: r, retry: {retry}, tracks: [{{ name: s, weight: 1, endpoints: ['h:1'] }}] }}]");
        match load_config(&yaml, Format::Yaml, 1) {
            Ok(_) => Vec::new(),
            Err(e) => e
                .errors()
                .iter()
                .map(|e| format!("{}: {}", e.path, e.message))
                .collect(),
        }
    }

    #[test]
    fn every_problem_of_a_retry_policy_is_named_by_its_path() {
        let found = problems(
            "{ attempts: 0, codes: [503, 200], perTryTimeout: 0s, budget: { percent: 150, minRetryRate: { count: 1, interval: 0s } } }",
        );
        assert_eq!(
            found,
            [
                "routes[0].retry.attempts: attempts must be from 1 to 10 (retries after the first attempt), found 0",
                "routes[0].retry.codes[1]: a retried status must be from 400 to 599, found 200",
                "routes[0].retry.perTryTimeout: perTryTimeout must be longer than 0s",
                "routes[0].retry.budget.percent: percent must be from 0 to 100, found 150",
                "routes[0].retry.budget.minRetryRate.interval: interval must be longer than 0s",
            ]
        );
        assert_eq!(
            problems("{ attempt: 2 }"),
            ["routes[0].retry.attempt: unknown field `attempt`; did you mean `attempts`?"]
        );
    }

    #[test]
    fn defaults_retry_gateway_errors_twice_within_a_fifth_of_the_traffic() {
        let yaml = "routes: [{ name: r, retry: {}, tracks: [{ name: s, weight: 1, endpoints: ['h:1'] }] }]";
        let loaded = load_config(yaml, Format::Yaml, 1).unwrap();
        let retry = loaded.table.routes()[0].retry().unwrap();
        assert_eq!(retry.attempts(), 2);
        assert!([502, 503, 504].iter().all(|s| retry.retries_status(*s)));
        assert!(!retry.retries_status(500) && !retry.retries_status(200) && !retry.retries_status(0));
        assert_eq!(retry.budget().percent, 20.0);
        assert_eq!(retry.per_try_timeout(), None);
        let ms = |r| retry.backoff(r).as_millis();
        assert_eq!(
            (ms(1), ms(2), ms(3), ms(4), ms(5), ms(30)),
            (25, 50, 100, 200, 250, 250)
        );
        assert!(
            load_config(
                "routes: [{ name: r, tracks: [{ name: s, weight: 1, endpoints: ['h:1'] }] }]",
                Format::Yaml,
                1
            )
            .unwrap()
            .table
            .routes()[0]
                .retry()
                .is_none()
        );
    }
}
