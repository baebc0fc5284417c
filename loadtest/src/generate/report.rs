//! The result of a run: a serde value with stable camelCase field names (`--json`) and a human
//! table (`Display`). Built from the merged tally; no I/O.

use std::collections::BTreeMap;
use std::fmt;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::record::Recorder;

/// A run's settings, echoed so that a saved report says what produced it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    /// The target URL.
    pub url: String,
    /// `"openLoop"` (a fixed schedule) or `"closedLoop"` (as fast as answers come back).
    pub mode: &'static str,
    /// `"http1"` or `"http2"` (h2c, prior knowledge).
    pub protocol: &'static str,
    /// Keep-alive connections.
    pub connections: usize,
    /// Target rate, requests/s; `None` in the closed loop.
    pub rate: Option<f64>,
    /// The measured window, seconds.
    pub duration_secs: f64,
    /// The unrecorded warm-up before it, seconds.
    pub warmup_secs: f64,
    /// Size of the `x-user-id` pool; 0 when no user header is sent.
    pub users: u32,
    /// Seed of the user draws.
    pub seed: u64,
}

/// Counts over the measured window.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    /// Requests that finished: answered, or failed in transport.
    pub requests: u64,
    /// `transportErrors + status5xx`.
    pub errors: u64,
    /// Requests with no answer: no connection, reset, malformed HTTP.
    pub transport_errors: u64,
    /// Answers with a 5xx status.
    pub status5xx: u64,
    /// Answers by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// `requests / durationSecs`, requests/s.
    pub achieved_rate: f64,
    /// Open loop: requests the schedule put in the window (`requests + unfinished + unsent`).
    /// `None` in the closed loop.
    pub scheduled: Option<u64>,
    /// Open loop: requests due in the window that never left, because their connection was
    /// still busy at the end. A few are the edge of the window; a large share means the target
    /// could not keep up with the rate (their delay is not in the latencies).
    pub unsent: Option<u64>,
    /// Requests sent but unanswered at the end (abandoned, not recorded).
    pub unfinished: u64,
}

impl Totals {
    /// Answers by status class: `2` for 2xx, `4` for 4xx, and so on.
    pub fn classes(&self) -> BTreeMap<u16, u64> {
        let mut classes = BTreeMap::new();
        for (status, n) in &self.statuses {
            *classes.entry(status / 100).or_default() += n;
        }
        classes
    }
}

/// Latency percentiles, µs (HdrHistogram, 3 significant digits: each value is the highest
/// equivalent of its bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// 99.99th percentile.
    pub p9999: u64,
    /// The slowest.
    pub max: u64,
}

impl Percentiles {
    /// `None` for an empty histogram.
    fn of(h: &Histogram<u64>) -> Option<Self> {
        (!h.is_empty()).then(|| Self {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            p9999: h.value_at_quantile(0.9999),
            max: h.max(),
        })
    }
}

/// One track's answers (transport errors have no track and are only in the totals).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrackReport {
    /// The `x-switchyard-track` value; `-` when the answer had none.
    pub track: String,
    /// Answers from this track.
    pub requests: u64,
    /// Of which 5xx.
    pub errors: u64,
    /// Latency from the intended send time, µs; `None` with no answers.
    pub latency_us: Option<Percentiles>,
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// What ran.
    pub settings: Settings,
    /// Counts.
    pub totals: Totals,
    /// Latency of every answer from its intended send time, µs; `None` with no answers.
    pub latency_us: Option<Percentiles>,
    /// Open loop: how late requests left against the schedule, µs (timer lag plus waiting for
    /// a busy connection). `None` in the closed loop, where requests leave when they may.
    pub send_lag_us: Option<Percentiles>,
    /// Per track, by name.
    pub tracks: Vec<TrackReport>,
}

impl Report {
    /// The report of a tally; `scheduled` is the open loop's slot count in the window.
    pub(crate) fn new(settings: Settings, r: &Recorder, scheduled: Option<u64>) -> Self {
        let status5xx = r.status_5xx();
        let totals = Totals {
            requests: r.requests,
            errors: r.transport_errors + status5xx,
            transport_errors: r.transport_errors,
            status5xx,
            statuses: r.statuses.clone(),
            achieved_rate: r.requests as f64 / settings.duration_secs,
            scheduled,
            unsent: scheduled.map(|s| s.saturating_sub(r.sent)),
            unfinished: r.sent.saturating_sub(r.requests),
        };
        Self {
            totals,
            latency_us: Percentiles::of(&r.latency),
            send_lag_us: scheduled.and_then(|_| Percentiles::of(&r.send_lag)),
            tracks: r
                .tracks
                .iter()
                .map(|(track, t)| TrackReport {
                    track: track.clone(),
                    requests: t.requests,
                    errors: t.errors,
                    latency_us: Percentiles::of(&t.latency),
                })
                .collect(),
            settings,
        }
    }
}

/// Milliseconds with µs precision.
struct Ms(u64);

impl fmt::Display for Ms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = format!("{}.{:03}", self.0 / 1000, self.0 % 1000);
        f.pad(&text)
    }
}

fn row(f: &mut fmt::Formatter<'_>, name: &str, p: Option<Percentiles>, counts: Option<(u64, u64)>) -> fmt::Result {
    write!(f, "{name:<16}")?;
    match p {
        Some(p) => {
            for v in [p.p50, p.p90, p.p99, p.p999, p.p9999, p.max] {
                write!(f, " {:>9}", Ms(v))?;
            }
        }
        None => write!(f, " {:>9}{:54}", "-", "")?,
    }
    if let Some((requests, errors)) = counts {
        write!(f, " {requests:>10} {errors:>8}")?;
    }
    writeln!(f)
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        let t = &self.totals;
        let mode = match s.rate {
            Some(rate) => format!("open loop at {rate} req/s"),
            None => "closed loop".to_owned(),
        };
        let protocol = if s.protocol == "http2" { "h2c" } else { "HTTP/1.1" };
        writeln!(
            f,
            "{}: {mode}, {} {protocol} connection{}, {}s measured after {}s warm-up",
            s.url,
            s.connections,
            if s.connections == 1 { "" } else { "s" },
            s.duration_secs,
            s.warmup_secs
        )?;
        let statuses: Vec<String> = t.statuses.iter().map(|(code, n)| format!("{code}: {n}")).collect();
        // 4xx are not errors of the target (a 404 is the proxy's right answer to a request no
        // route matches), but a run of them measures nothing: they are counted where they show.
        let classes = t.classes();
        let not_2xx: Vec<String> = classes
            .iter()
            .filter(|(class, _)| **class != 2)
            .map(|(class, n)| format!("{n} {class}xx"))
            .collect();
        let answers = if statuses.is_empty() {
            "no answers".to_owned()
        } else if not_2xx.is_empty() {
            "every answer 2xx".to_owned()
        } else {
            format!("not 2xx: {}", not_2xx.join(", "))
        };
        writeln!(
            f,
            "{} requests, {:.1} req/s; {} errors ({} transport, {} 5xx); {answers}; statuses {}",
            t.requests,
            t.achieved_rate,
            t.errors,
            t.transport_errors,
            t.status5xx,
            if statuses.is_empty() {
                "none".to_owned()
            } else {
                statuses.join(", ")
            }
        )?;
        if !statuses.is_empty() && !classes.contains_key(&2) {
            writeln!(
                f,
                "no answer was 2xx: from switchyard-proxy, 404 means no route matched the request's \
                 Host (from --url, or -H 'host: …') and path"
            )?;
        }
        if let (Some(scheduled), Some(unsent)) = (t.scheduled, t.unsent) {
            writeln!(
                f,
                "{scheduled} scheduled: {unsent} never sent, {} unanswered at the end",
                t.unfinished
            )?;
        } else if t.unfinished > 0 {
            writeln!(f, "{} unanswered at the end", t.unfinished)?;
        }
        writeln!(f)?;
        let from = if s.rate.is_some() {
            "from intended send"
        } else {
            "from send"
        };
        writeln!(f, "latency (ms) {from}")?;
        writeln!(
            f,
            "{:<16} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>8}",
            "track", "p50", "p90", "p99", "p99.9", "p99.99", "max", "answers", "5xx"
        )?;
        row(
            f,
            "all",
            self.latency_us,
            Some((t.requests - t.transport_errors, t.status5xx)),
        )?;
        for track in &self.tracks {
            row(f, &track.track, track.latency_us, Some((track.requests, track.errors)))?;
        }
        if self.send_lag_us.is_some() {
            row(f, "(send lag)", self.send_lag_us, None)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;
    use crate::generate::schedule::Window;

    fn report(statuses: &[(u16, u64)]) -> String {
        let mut r = Recorder::new(Window::new(Instant::now(), Duration::ZERO, Duration::from_secs(1)));
        r.statuses = statuses.iter().copied().collect();
        r.requests = r.statuses.values().sum();
        r.sent = r.requests;
        let settings = Settings {
            url: "http://127.0.0.1:8080/".to_owned(),
            mode: "closedLoop",
            protocol: "http1",
            connections: 1,
            rate: None,
            duration_secs: 1.0,
            warmup_secs: 0.0,
            users: 0,
            seed: 0,
        };
        Report::new(settings, &r, None).to_string()
    }

    #[test]
    fn answers_that_are_not_2xx_are_counted_by_class() {
        let all_404 = report(&[(404, 2000)]);
        assert!(
            all_404.contains("0 errors (0 transport, 0 5xx); not 2xx: 2000 4xx; statuses 404: 2000"),
            "{all_404}"
        );
        assert!(all_404.contains("no answer was 2xx"), "{all_404}");

        let mixed = report(&[(200, 90), (302, 1), (404, 4), (503, 5)]);
        assert!(mixed.contains("; not 2xx: 1 3xx, 4 4xx, 5 5xx;"), "{mixed}");
        assert!(!mixed.contains("no answer was 2xx"), "{mixed}");

        let fine = report(&[(200, 100)]);
        assert!(fine.contains("; every answer 2xx; statuses 200: 100"), "{fine}");
    }
}
