//! The load generator (`switchyard-loadtest run`): HTTP/1.1 or h2c requests over a fixed number
//! of keep-alive connections, in one of two modes.
//!
//! - **Open loop** (`--rate R`): request `i` is meant to leave at `start + i / R`, on connection
//!   `i mod N`, whatever happened before. If its connection is still waiting for an earlier
//!   answer (HTTP/1.1), it leaves when the connection frees up, but its latency still counts
//!   from the intended time. That is the correction for *coordinated omission*: a server that
//!   stalls for a second delays every request scheduled during that second, and the report
//!   shows that queueing delay instead of one slow request among many fast ones. Over h2 the
//!   connection multiplexes, so a request never waits for another.
//! - **Closed loop** (`--rate 0` or `--max`): each connection sends its next request when the
//!   previous answer arrives: the maximum throughput, with latency from the actual send.
//!
//! The open loop's schedule is kept by a pacer thread rather than tokio timers, whose 1 ms
//! ticks would add up to a millisecond to every latency (see `pace`); what lag remains is
//! reported as `sendLagUs`. Connections run as tasks on a current-thread runtime (`--threads`
//! for more), each with its own tally, merged at the end.
//!
//! Requests meant to leave during the warm-up are sent but not recorded. At the end of the
//! measured window nothing more is sent: requests still unanswered are abandoned (counted as
//! `unfinished`), and open-loop requests still waiting for their connection are counted as
//! `unsent`. Latencies go to HdrHistograms (µs, 1 µs to 60 s, 3 significant digits), overall
//! and per track, as named by the answer's `x-switchyard-track` header.
//!
//! ```text
//! switchyard-loadtest run --url http://127.0.0.1:8080/ --rate 2000 --connections 32 --users 1000
//! switchyard-loadtest run --url http://127.0.0.1:8080/ --max --http2 --json
//! ```
//!
//! In a program, [`generate`] runs inside the caller's tokio runtime and returns the [`Report`].

mod connection;
mod pace;
mod record;
mod report;
mod schedule;

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use report::{Percentiles, Report, Settings, Totals, TrackReport};

use connection::{Connection, Target};
use record::Recorder;
use schedule::{Schedule, Users, Window};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// `http://host[:port]/path`; https is not supported.
    pub url: Uri,
    /// Keep-alive connections, each its own hyper client connection. At least 1. Default 16.
    pub connections: usize,
    /// Requests per second on a fixed schedule (open loop); 0 means closed loop. Default 0.
    pub rate: f64,
    /// The measured window. Must not be zero. Default 10 s.
    pub duration: Duration,
    /// Load before the measured window, not recorded. Default 2 s.
    pub warmup: Duration,
    /// h2c with prior knowledge instead of HTTP/1.1. Default off.
    pub http2: bool,
    /// Sent with every request. Default none.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Send `x-user-id: user-K`, K drawn uniformly from 1..=users per request; 0 sends no
    /// such header. Default 0.
    pub users: u32,
    /// Seed of the user draws: the same seed gives each connection the same sequence. Default 0.
    pub seed: u64,
    /// The response header that names the track. Default `x-switchyard-track`.
    pub track_header: HeaderName,
    /// Runtime threads for [`run`]: 1 is a current-thread runtime. Default 1.
    pub threads: usize,
}

impl Options {
    /// The defaults (documented on each field) against `url`.
    pub fn new(url: Uri) -> Self {
        Self {
            url,
            connections: 16,
            rate: 0.0,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            http2: false,
            headers: Vec::new(),
            users: 0,
            seed: 0,
            track_header: HeaderName::from_static(switchyard_config::schema::DEFAULT_TRACK_HEADER),
            threads: 1,
        }
    }

    fn check(&self) -> Result<(), Error> {
        match self.url.scheme_str() {
            Some("http") => {}
            _ => return Err(Error::Scheme(self.url.to_string())),
        }
        if self.url.host().is_none() {
            return Err(Error::Scheme(self.url.to_string()));
        }
        if !(self.rate.is_finite() && self.rate >= 0.0) {
            return Err(Error::Rate(self.rate));
        }
        if self.connections == 0 {
            return Err(Error::Connections);
        }
        if self.duration.is_zero() {
            return Err(Error::Duration);
        }
        if self.threads == 0 {
            return Err(Error::Threads);
        }
        Ok(())
    }
}

/// Why a run could not start. Once it runs, failures are counted in the report instead.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL is not `http://host…`.
    #[error("--url {0}: expected http://host[:port]/path (https is not supported; --http2 speaks h2c)")]
    Scheme(String),
    /// The rate is negative or not a number.
    #[error("--rate {0}: expected requests per second ≥ 0 (0: closed loop)")]
    Rate(f64),
    /// No connections.
    #[error("--connections: at least 1")]
    Connections,
    /// An empty measured window.
    #[error("--duration: must be more than 0s")]
    Duration,
    /// No runtime threads.
    #[error("--threads: at least 1")]
    Threads,
    /// A `-H` that is not `name: value`.
    #[error("-H {0:?}: expected 'name: value'")]
    Header(String),
    /// The host does not resolve.
    #[error("cannot resolve {host}")]
    Resolve {
        /// `host:port` from the URL.
        host: String,
        /// Why.
        source: std::io::Error,
    },
    /// A connection could not be opened before the run.
    #[error("cannot connect to {addr}")]
    Connect {
        /// The target.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP handshake failed before the run.
    #[error("HTTP handshake with {addr} failed")]
    Handshake {
        /// The target.
        addr: SocketAddr,
        /// Why.
        source: hyper::Error,
    },
}

/// Parses a `-H` argument, `name: value`.
pub fn parse_header(text: &str) -> Result<(HeaderName, HeaderValue), Error> {
    let bad = || Error::Header(text.to_owned());
    let (name, value) = text.split_once(':').ok_or_else(bad)?;
    let name = HeaderName::try_from(name.trim()).map_err(|_| bad())?;
    let value = HeaderValue::try_from(value.trim()).map_err(|_| bad())?;
    Ok((name, value))
}

/// Opens the connections, runs warm-up and measured window, and reports. Runs on the caller's
/// tokio runtime (any flavour); each connection is a task.
pub async fn generate(options: &Options) -> Result<Report, Error> {
    options.check()?;
    let url = &options.url;
    let host = format!("{}:{}", url.host().unwrap_or_default(), url.port_u16().unwrap_or(80));
    let addr = tokio::net::lookup_host(host.as_str())
        .await
        .and_then(|mut addrs| addrs.next().ok_or_else(|| std::io::ErrorKind::NotFound.into()))
        .map_err(|source| Error::Resolve { host, source })?;
    let headers: HeaderMap = options.headers.iter().cloned().collect();
    let target = Arc::new(Target::new(
        addr,
        url,
        headers,
        options.http2,
        options.track_header.clone(),
    ));

    // Every connection is open before the clock starts, so handshakes are not measured and an
    // unreachable target fails the run rather than filling it with errors.
    let mut connections = Vec::with_capacity(options.connections);
    for index in 0..options.connections {
        let users = Users::new(options.users, options.seed, index);
        connections.push(Connection::open(Arc::clone(&target), users).await?);
    }

    let window = Window::new(Instant::now(), options.warmup, options.duration);
    let schedule = (options.rate > 0.0).then_some(Schedule {
        window,
        rate: options.rate,
    });
    let n = options.connections;
    let mut tasks = JoinSet::new();
    let mut lanes = Vec::new();
    for connection in connections {
        match schedule {
            None => tasks.spawn(connection.closed_loop(window)),
            Some(_) => {
                let (lane, slots) = mpsc::unbounded_channel();
                lanes.push(lane);
                if options.http2 {
                    tasks.spawn(connection.open_loop_http2(window, slots))
                } else {
                    tasks.spawn(connection.open_loop_http1(window, slots))
                }
            }
        };
    }
    let pacer = schedule.map(|s| tokio::task::spawn_blocking(move || pace::pace(s, &lanes)));
    let mut total = Recorder::new(window);
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(recorder) => total.merge(recorder),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    if let Some(pacer) = pacer {
        // It stops at the end of the window too, so this returns at once.
        if let Err(e) = pacer.await {
            std::panic::resume_unwind(e.into_panic());
        }
    }

    let settings = Settings {
        url: url.to_string(),
        mode: if schedule.is_some() { "openLoop" } else { "closedLoop" },
        protocol: if options.http2 { "http2" } else { "http1" },
        connections: n,
        rate: schedule.map(|s| s.rate),
        duration_secs: options.duration.as_secs_f64(),
        warmup_secs: options.warmup.as_secs_f64(),
        users: options.users,
        seed: options.seed,
    };
    Ok(Report::new(settings, &total, schedule.map(|s| s.scheduled())))
}

/// Runs `options` on a runtime of `options.threads` threads and prints the report: a table, or
/// JSON with `json`.
pub fn run(options: &Options, json: bool) -> anyhow::Result<()> {
    let runtime = if options.threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.threads)
            .enable_all()
            .build()?
    };
    let report = runtime.block_on(generate(options))?;
    // `write!` rather than `print!`: a closed pipe (`| head`) is an error to report, not a panic.
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write!(out, "{report}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_as_name_colon_value() {
        let (name, value) = parse_header("X-Canary:  always ").unwrap();
        assert_eq!((name.as_str(), value.to_str().unwrap()), ("x-canary", "always"));
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad name: v").is_err());
    }

    #[test]
    fn options_are_checked_before_anything_runs() {
        let url = |s: &str| Uri::try_from(s).unwrap();
        assert!(Options::new(url("http://127.0.0.1:1/")).check().is_ok());
        assert!(matches!(Options::new(url("https://h/")).check(), Err(Error::Scheme(_))));
        assert!(matches!(Options::new(url("/path")).check(), Err(Error::Scheme(_))));
        let mut o = Options::new(url("http://h/"));
        o.rate = -1.0;
        assert!(matches!(o.check(), Err(Error::Rate(_))));
        o.rate = f64::NAN;
        assert!(matches!(o.check(), Err(Error::Rate(_))));
        o.rate = 5.0;
        o.connections = 0;
        assert!(matches!(o.check(), Err(Error::Connections)));
    }
}
