//! A real Prometheus server on loopback for tests that judge what Prometheus makes of the
//! proxies' `/metrics`: `prometheus` (Debian's package, which `scripts/test` installs when it is
//! missing) started as a separate process on a free port, with its own storage directory and a
//! generated configuration that scrapes the given targets every [`Prometheus::SCRAPE_INTERVAL`],
//! killed when dropped. It answers instant queries ([`Prometheus::query`]), label values and its
//! targets' health, and waits for scrapes ([`Prometheus::wait_fresh_scrape`]) and for a query's
//! data ([`Prometheus::wait_for`]) by polling with a deadline, never by sleeping a fixed time.
//!
//! [`exposition_problems`] checks a text exposition against the rules of the format that a
//! scrape does not enforce (a family's lines together, histogram series whole and ordered).
//!
//! ```no_run
//! # async fn demo(admin: std::net::SocketAddr) {
//! use switchyard_testkit::Prometheus;
//! let prometheus = Prometheus::start("demo", &[admin.to_string()]).await;
//! prometheus.wait_fresh_scrape().await;
//! let rates = prometheus.query("sum by (track) (switchyard_requests_total)").await.unwrap();
//! for sample in &rates {
//!     println!("{:?} {}", sample.label("track"), sample.value);
//! }
//! # }
//! ```

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::{Client, Scratch, free_port};

/// How long a wait of this module polls before it fails: generous, since Prometheus shares the
/// machine with the build and the other tests; a condition that holds ends the wait at once.
const WAIT: Duration = Duration::from_secs(60);

/// How often a wait polls.
const POLL: Duration = Duration::from_millis(100);

/// What went wrong asking Prometheus something.
#[derive(Debug, thiserror::Error)]
pub enum PrometheusError {
    /// No HTTP answer (not started, killed, or not answering within 10 s).
    #[error("cannot reach Prometheus at {url}: {reason}")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// The client's error.
        reason: String,
    },
    /// An answer that is not Prometheus' JSON envelope.
    #[error("Prometheus answered {url} with {status} and a body that is not its API's JSON: {body}")]
    NotApi {
        /// The URL asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The body, as text.
        body: String,
    },
    /// Prometheus refused the request (a query that does not parse, or failed to run).
    #[error("Prometheus refused {url}: {error_type}: {error}")]
    Refused {
        /// The URL asked.
        url: String,
        /// Prometheus' `errorType` (`bad_data`, `execution`, …).
        error_type: String,
        /// Prometheus' `error`.
        error: String,
    },
    /// A query whose result is a range vector or a string.
    #[error("the query {query:?} gave a {result_type}, not an instant vector or a scalar")]
    NotInstant {
        /// The query.
        query: String,
        /// Prometheus' `resultType`.
        result_type: String,
    },
}

/// One element of an instant vector: its labels (the metric name under `__name__`, when the
/// query kept it) and its value. A scalar result is one sample without labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Label name → value.
    pub labels: BTreeMap<String, String>,
    /// The value (`NaN` and infinities as Prometheus gave them).
    pub value: f64,
}

impl Sample {
    /// A label's value, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}

/// One scrape target as Prometheus sees it (`GET /api/v1/targets`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The `instance` label: `host:port` as configured.
    pub instance: String,
    /// The URL it scrapes.
    pub scrape_url: String,
    /// `up`, `down` or `unknown` (not scraped yet).
    pub health: String,
    /// Why the last scrape failed; empty when it succeeded (or none happened yet).
    pub last_error: String,
}

/// A Prometheus server scraping fixed targets on 127.0.0.1, killed when dropped.
#[derive(Debug)]
pub struct Prometheus {
    process: Child,
    port: u16,
    targets: Vec<String>,
    log: PathBuf,
    client: Client,
    _scratch: Scratch,
}

/// Whether the `prometheus` binary is installed (`scripts/test` installs it as root when it is
/// not).
pub fn prometheus_installed() -> bool {
    crate::installed("prometheus")
}

impl Prometheus {
    /// How often every target is scraped (and the scrape's timeout).
    pub const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);

    /// The `job` label of every target.
    pub const JOB: &'static str = "switchyard";

    /// Starts a Prometheus named after `test` that scrapes `GET /metrics` of every target
    /// (`host:port`) every [`Self::SCRAPE_INTERVAL`], and waits until it is ready to answer
    /// queries. Panics with what to install when `prometheus` is missing, and with its log when
    /// it does not become ready.
    pub async fn start(test: &str, targets: &[String]) -> Self {
        assert!(
            prometheus_installed(),
            "prometheus is not installed: run ./scripts/test as root (it installs Debian's prometheus), \
             or apt-get install --no-install-recommends prometheus"
        );
        let scratch = Scratch::new(&format!("prometheus-{test}"));
        let config = scratch.join("prometheus.yml");
        let interval = format!("{}s", Self::SCRAPE_INTERVAL.as_secs());
        let targets_json = serde_json::to_string(targets).expect("strings serialize");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: {interval}\n  scrape_timeout: {interval}\n  evaluation_interval: {interval}\n\
                 scrape_configs:\n  - job_name: {}\n    metrics_path: /metrics\n    static_configs:\n      - targets: {targets_json}\n",
                Self::JOB
            ),
        )
        .expect("write Prometheus' configuration");
        let log = scratch.join("prometheus.log");
        let port = free_port();
        let process = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", scratch.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create Prometheus' log"))
            .spawn()
            .expect("prometheus starts");
        let mut prometheus = Self {
            process,
            port,
            targets: targets.to_vec(),
            log,
            client: Client::http1(),
            _scratch: scratch,
        };
        prometheus.wait_ready().await;
        prometheus
    }

    /// `http://127.0.0.1:PORT`, where its HTTP API answers.
    pub fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The targets it scrapes, as given to [`Self::start`].
    pub fn targets(&self) -> &[String] {
        &self.targets
    }

    /// Runs `expr` as an instant query at the server's current time (`GET /api/v1/query`): the
    /// vector's samples, or a scalar as one sample without labels; empty when nothing matched.
    pub async fn query(&self, expr: &str) -> Result<Vec<Sample>, PrometheusError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct QueryData {
            result_type: String,
            result: serde_json::Value,
        }
        #[derive(Deserialize)]
        struct VectorSample {
            metric: BTreeMap<String, String>,
            value: (f64, String),
        }
        // A point is `[unix seconds, "value"]`; Prometheus writes `NaN`, `+Inf` and `-Inf`, which
        // Rust reads too.
        let sample = |labels, (_, value): (f64, String)| Sample {
            labels,
            value: value.parse().unwrap_or(f64::NAN),
        };
        let data: QueryData = self.api(&format!("/api/v1/query?query={}", encode(expr))).await?;
        let unreadable = |e: serde_json::Error| PrometheusError::NotApi {
            url: format!("{}/api/v1/query", self.address()),
            status: 200,
            body: format!("a {} result that does not read: {e}", data.result_type),
        };
        match data.result_type.as_str() {
            "vector" => Ok(Vec::<VectorSample>::deserialize(&data.result)
                .map_err(unreadable)?
                .into_iter()
                .map(|s| sample(s.metric, s.value))
                .collect()),
            "scalar" => Ok(vec![sample(
                BTreeMap::new(),
                <(f64, String)>::deserialize(&data.result).map_err(unreadable)?,
            )]),
            other => Err(PrometheusError::NotInstant {
                query: expr.to_owned(),
                result_type: other.to_owned(),
            }),
        }
    }

    /// The values of `label` among the series `selector` matches (`GET
    /// /api/v1/label/LABEL/values?match[]=SELECTOR`, what Grafana's `label_values(SELECTOR,
    /// LABEL)` asks), sorted.
    pub async fn label_values(&self, label: &str, selector: &str) -> Result<Vec<String>, PrometheusError> {
        self.api(&format!(
            "/api/v1/label/{}/values?match[]={}",
            encode(label),
            encode(selector)
        ))
        .await
    }

    /// Every target with its health and last error (`GET /api/v1/targets`).
    pub async fn target_health(&self) -> Result<Vec<Target>, PrometheusError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Targets {
            active_targets: Vec<ActiveTarget>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct ActiveTarget {
            labels: BTreeMap<String, String>,
            scrape_url: String,
            health: String,
            last_error: String,
        }
        let targets: Targets = self.api("/api/v1/targets?state=active").await?;
        Ok(targets
            .active_targets
            .into_iter()
            .map(|t| Target {
                instance: t.labels.get("instance").cloned().unwrap_or_default(),
                scrape_url: t.scrape_url,
                health: t.health,
                last_error: t.last_error,
            })
            .collect())
    }

    /// How many scrapes of each target (by `instance`) Prometheus has stored: its `up` samples.
    /// A target not scraped yet is missing.
    pub async fn scrapes(&self) -> Result<BTreeMap<String, u64>, PrometheusError> {
        let counts = self
            .query(&format!("count_over_time(up{{job=\"{}\"}}[1d])", Self::JOB))
            .await?;
        Ok(counts
            .into_iter()
            .map(|s| (s.label("instance").unwrap_or_default().to_owned(), s.value as u64))
            .collect())
    }

    /// Waits until every target has been scraped at least `n` times since the server started.
    /// Panics after a minute.
    pub async fn wait_scrapes(&self, n: u64) {
        let mut last = Ok(BTreeMap::new());
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            last = self.scrapes().await;
            if let Ok(counts) = &last
                && self.targets.iter().all(|t| counts.get(t).is_some_and(|&c| c >= n))
            {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
        panic!(
            "Prometheus did not scrape every target of {:?} {n} times within {WAIT:?}; scrapes so far: {last:?}; \
             its log:\n{}",
            self.targets,
            self.log()
        );
    }

    /// Waits until every target has been scraped twice more than when it was called, so that
    /// one whole scrape began after the call: what a test calls after the traffic it wants
    /// Prometheus to have seen. Panics after a minute.
    pub async fn wait_fresh_scrape(&self) {
        let now = self.scrapes().await.unwrap_or_default();
        let least = self.targets.iter().map(|t| now.get(t).copied().unwrap_or(0)).min();
        self.wait_scrapes(least.unwrap_or(0) + 2).await;
    }

    /// Runs `expr` until its result satisfies `holds` (for instance, not empty) and returns that
    /// result. Panics after a minute with the last result or error.
    pub async fn wait_for(&self, expr: &str, holds: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
        let mut last = Ok(Vec::new());
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            last = self.query(expr).await;
            if let Ok(samples) = &last
                && holds(samples)
            {
                return samples.clone();
            }
            tokio::time::sleep(POLL).await;
        }
        panic!("the query {expr:?} did not give the expected result within {WAIT:?}; its last result: {last:?}");
    }

    /// `GET path` of the API and the `data` of its envelope.
    async fn api<T: DeserializeOwned>(&self, path: &str) -> Result<T, PrometheusError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Envelope<T> {
            status: String,
            data: Option<T>,
            #[serde(default)]
            error_type: String,
            #[serde(default)]
            error: String,
        }
        let url = format!("{}{path}", self.address());
        let reply = tokio::time::timeout(Duration::from_secs(10), self.client.get(&url, &[]))
            .await
            .map_err(|_| "no answer within 10 s".to_owned())
            .and_then(|r| r)
            .map_err(|reason| PrometheusError::Unreachable {
                url: url.clone(),
                reason,
            })?;
        let not_api = || PrometheusError::NotApi {
            url: url.clone(),
            status: reply.status.as_u16(),
            body: reply.body.clone(),
        };
        let envelope: Envelope<T> = serde_json::from_str(&reply.body).map_err(|_| not_api())?;
        match (envelope.status.as_str(), envelope.data) {
            ("success", Some(data)) => Ok(data),
            ("error", _) => Err(PrometheusError::Refused {
                url,
                error_type: envelope.error_type,
                error: envelope.error,
            }),
            _ => Err(not_api()),
        }
    }

    async fn wait_ready(&mut self) {
        let url = format!("{}/-/ready", self.address());
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.process.try_wait() {
                panic!(
                    "prometheus exited ({status}) before it was ready; its log:\n{}",
                    self.log()
                );
            }
            if let Ok(Ok(reply)) = tokio::time::timeout(Duration::from_secs(2), self.client.get(&url, &[])).await
                && reply.status == 200
            {
                return;
            }
            tokio::time::sleep(POLL).await;
        }
        panic!("prometheus was not ready within {WAIT:?}; its log:\n{}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn encode(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

/// What in a text exposition (`text/plain; version=0.0.4`) breaks the format's rules, one
/// sentence each; empty when it keeps them all. The rules checked, which Prometheus' own parser
/// does not all enforce: every line is a comment or a sample that parses; a family's `# HELP`
/// and `# TYPE` come at most once each and before its samples; all lines of a family are
/// together (the samples of a histogram `x` are `x_bucket`, `x_sum` and `x_count`); no sample
/// is given twice; and every histogram series has ascending `le` bounds ending at `+Inf`,
/// cumulative counts that never decrease, and a `_count` equal to its `+Inf` bucket.
pub fn exposition_problems(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps = BTreeSet::new();
    let mut closed = BTreeSet::new();
    let mut open: Option<String> = None;
    let mut seen = BTreeSet::new();
    // Per histogram series (family and labels without `le`): its bounds and counts so far.
    let mut series: BTreeMap<(String, String), Histo> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<&str> = comment.trim_start().splitn(3, ' ').collect();
            let (keyword, name) = match words.as_slice() {
                [keyword, name, ..] if *keyword == "HELP" || *keyword == "TYPE" => (*keyword, (*name).to_owned()),
                _ => continue,
            };
            if closed.contains(&name) || seen_family(&seen, &name) {
                problems.push(format!("line {n}: # {keyword} {name} comes after lines of its family"));
            }
            let repeated = if keyword == "HELP" {
                !helps.insert(name.clone())
            } else {
                let kind = words.get(2).copied().unwrap_or("").trim().to_owned();
                types.insert(name.clone(), kind).is_some()
            };
            if repeated {
                problems.push(format!("line {n}: a second # {keyword} for {name}"));
            }
            switch_family(&mut open, &mut closed, name);
            continue;
        }
        let Some((name, labels, value)) = parse_sample(line) else {
            problems.push(format!("line {n}: not a sample: {line:?}"));
            continue;
        };
        let family = family_of(&name, &types);
        if closed.contains(&family) {
            problems.push(format!(
                "line {n}: {name} belongs to family {family}, whose lines ended before line {n}"
            ));
        }
        switch_family(&mut open, &mut closed, family.clone());
        let key = format!("{name}{{{}}}", labels_text(&labels));
        if !seen.insert(key.clone()) {
            problems.push(format!("line {n}: {key} is given twice"));
        }
        if types.get(&family).map(String::as_str) != Some("histogram") {
            continue;
        }
        let mut without_le = labels.clone();
        let le = without_le.remove("le");
        let histo = series.entry((family.clone(), labels_text(&without_le))).or_default();
        let id = format!("{family}{{{}}}", labels_text(&without_le));
        match (name.strip_prefix(family.as_str()), le) {
            (Some("_bucket"), Some(le)) => {
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::NAN)
                };
                if histo.inf.is_some()
                    || histo
                        .bounds
                        .last()
                        .is_some_and(|last| bound.partial_cmp(last) != Some(Ordering::Greater))
                {
                    problems.push(format!(
                        "line {n}: {id}'s bucket le=\"{le}\" is not above the bucket before it"
                    ));
                }
                if histo.counts.last().is_some_and(|&last| value < last) {
                    problems.push(format!(
                        "line {n}: {id}'s bucket le=\"{le}\" counts less than the bucket before it"
                    ));
                }
                histo.bounds.push(bound);
                histo.counts.push(value);
                if bound.is_infinite() {
                    histo.inf = Some(value);
                }
            }
            (Some("_bucket"), None) => problems.push(format!("line {n}: {id} has a bucket without le")),
            (Some("_count"), _) => histo.count = Some(value),
            (Some("_sum"), _) => {}
            _ => problems.push(format!("line {n}: {name} is not a sample name of histogram {family}")),
        }
    }
    for ((family, labels), histo) in &series {
        let id = format!("{family}{{{labels}}}");
        match (histo.inf, histo.count) {
            (None, _) => problems.push(format!("{id} has no le=\"+Inf\" bucket")),
            (Some(inf), Some(count)) if inf != count => {
                problems.push(format!("{id}'s _count {count} is not its +Inf bucket's {inf}"))
            }
            (_, None) => problems.push(format!("{id} has no _count")),
            _ => {}
        }
    }
    problems
}

#[derive(Default)]
struct Histo {
    bounds: Vec<f64>,
    counts: Vec<f64>,
    inf: Option<f64>,
    count: Option<f64>,
}

/// Whether any sample of `family` was seen (a sample's key starts with its name).
fn seen_family(seen: &BTreeSet<String>, family: &str) -> bool {
    seen.iter().any(|key| {
        key.strip_prefix(family).is_some_and(|rest| {
            ["{", "_bucket{", "_sum{", "_count{"]
                .iter()
                .any(|p| rest.starts_with(p))
        })
    })
}

fn switch_family(open: &mut Option<String>, closed: &mut BTreeSet<String>, family: String) {
    if open.as_ref() != Some(&family) {
        if let Some(previous) = open.take() {
            closed.insert(previous);
        }
        *open = Some(family);
    }
}

/// The family a sample name belongs to: a histogram's or summary's, for its suffixed names.
fn family_of(name: &str, types: &BTreeMap<String, String>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && let Some(kind) = types.get(base)
            && (kind == "histogram" || (kind == "summary" && suffix != "_bucket"))
        {
            return base.to_owned();
        }
    }
    name.to_owned()
}

fn labels_text(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn valid_name(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `name{label="value",...} value [timestamp]`, with `\\`, `\"` and `\n` escapes in values.
fn parse_sample(line: &str) -> Option<(String, BTreeMap<String, String>, f64)> {
    let name_end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = &line[..name_end];
    if !valid_name(name) {
        return None;
    }
    let (labels, rest) = match line[name_end..].strip_prefix('{') {
        Some(inner) => parse_labels(inner)?,
        None => (BTreeMap::new(), &line[name_end..]),
    };
    let mut fields = rest.split_whitespace();
    let value = match fields.next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().ok()?,
    };
    if let Some(timestamp) = fields.next() {
        timestamp.parse::<i64>().ok()?;
    }
    fields.next().is_none().then_some((name.to_owned(), labels, value))
}

/// The labels after a sample's `{`, and what follows its `}`.
fn parse_labels(mut rest: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = rest.find('=')?;
        let label = rest[..eq].trim();
        let quoted = rest[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        if !valid_name(label) || labels.insert(label.to_owned(), value).is_some() {
            return None;
        }
        rest = &quoted[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::exposition_problems;

    const GOOD: &str = "\
# HELP a_total Things.
# TYPE a_total counter
a_total{k=\"x\"} 1
a_total{k=\"y \\\"q\\\"\"} 2
# TYPE d histogram
d_bucket{r=\"1\",le=\"0.1\"} 1
d_bucket{r=\"1\",le=\"+Inf\"} 3
d_sum{r=\"1\"} 0.5
d_count{r=\"1\"} 3
d_bucket{r=\"2\",le=\"0.1\"} 0
d_bucket{r=\"2\",le=\"+Inf\"} 0
d_sum{r=\"2\"} 0
d_count{r=\"2\"} 0
# TYPE v gauge
v 7 1700000000000
";

    #[test]
    fn a_well_formed_exposition_has_no_problems() {
        assert_eq!(exposition_problems(GOOD), Vec::<String>::new());
    }

    #[test]
    fn each_broken_rule_is_named() {
        let cases = [
            (
                GOOD.replace(
                    "# TYPE v gauge\nv 7",
                    "# TYPE v gauge\nd_bucket{r=\"3\",le=\"+Inf\"} 1\nv 7",
                ),
                "belongs to family d, whose lines ended",
            ),
            (
                GOOD.replace("a_total{k=\"y \\\"q\\\"\"} 2", "a_total{k=\"x\"} 2"),
                "is given twice",
            ),
            (
                GOOD.replace("le=\"0.1\"} 1", "le=\"+Inf\"} 1"),
                "is not above the bucket before it",
            ),
            (
                GOOD.replace("le=\"+Inf\"} 3", "le=\"+Inf\"} 0"),
                "counts less than the bucket before it",
            ),
            (
                GOOD.replace("d_count{r=\"1\"} 3", "d_count{r=\"1\"} 4"),
                "is not its +Inf bucket's",
            ),
            (
                GOOD.replace("d_bucket{r=\"2\",le=\"+Inf\"} 0\n", ""),
                "has no le=\"+Inf\" bucket",
            ),
            (
                GOOD.replace("# TYPE v gauge", "# TYPE a_total counter"),
                "a second # TYPE",
            ),
            (GOOD.replace("v 7", "v seven"), "not a sample"),
            (
                GOOD.replace("d_sum{r=\"2\"}", "d{r=\"2\"}"),
                "is not a sample name of histogram d",
            ),
            (
                GOOD.replace(
                    "# TYPE v gauge\nv 7 1700000000000\n",
                    "v 7 1700000000000\n# TYPE v gauge\n",
                ),
                "# TYPE v comes after lines of its family",
            ),
        ];
        for (text, problem) in cases {
            let problems = exposition_problems(&text);
            assert!(
                problems.iter().any(|p| p.contains(problem)),
                "expected a problem with {problem:?}, got {problems:?} for\n{text}"
            );
        }
    }
}
