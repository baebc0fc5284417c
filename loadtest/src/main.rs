//! `switchyard-loadtest`: the demo (`demo`) and load-test tools (`upstream`, a fast
//! fixed-answer upstream with optional faults; `run`, the load generator).

#![forbid(unsafe_code)]

/// The proxy's allocator, so that the pass-through floor (`passthrough`) differs from the proxy
/// only in what the proxy does, and the benchmarks' upstream allocates as cheaply.
#[global_allocator]
static ALLOCATOR: switchyard_proxy::allocator::Allocator = switchyard_proxy::allocator::Allocator;

use std::net::SocketAddr;

use clap::{Parser, Subcommand};
use switchyard_loadtest::generate::Options;
use switchyard_loadtest::upstream::{Answer, Faults, HeaderSet};

/// Switchyard's load-test tools.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a small fixed answer on one thread (the upstream of benchmarks).
    Upstream {
        /// Address to bind.
        #[arg(long, default_value = "127.0.0.1:9001")]
        listen: SocketAddr,
        /// Sent in `x-upstream`.
        #[arg(long, default_value = "upstream")]
        name: String,
        /// The response body.
        #[arg(long, default_value = "ok\n")]
        body: String,
        /// A body of this many bytes instead of --body (`x`s and a newline).
        #[arg(long, conflicts_with = "body")]
        body_size: Option<usize>,
        /// The response headers: minimal (x-upstream), nginx (server, date, content-type,
        /// content-length, connection: keep-alive) or twelve (nginx's and seven more).
        #[arg(long, value_enum, default_value_t)]
        headers: HeaderSet,
        /// Share of requests answered 500 (0 to 1).
        #[arg(long, default_value_t = 0.0)]
        error_rate: f64,
        /// Added latency, e.g. 50ms.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
        latency: std::time::Duration,
    },
    /// Forward with hyper alone, nothing else: the floor of the CPU comparison (not a proxy to
    /// deploy: no routing, measurement, header rewriting or timeouts).
    Passthrough {
        /// Address to bind.
        #[arg(long, default_value = "127.0.0.1:9002")]
        listen: SocketAddr,
        /// Upstream addresses: one, or two to split between.
        #[arg(long = "upstream", required = true)]
        upstreams: Vec<SocketAddr>,
        /// With two upstreams, every N-th request goes to the second (20: a 95/5 split).
        #[arg(long, default_value_t = 20)]
        every: u64,
    },
    /// Measure how fast a canary that turns faulty is sent back: fault to detection, fault
    /// to every proxy on the baseline, and requests that reached it afterwards.
    AbortTiming {
        /// Aborts to measure.
        #[arg(long, default_value_t = 5)]
        runs: u32,
        /// Proxies serving the route.
        #[arg(long, default_value_t = 2)]
        proxies: usize,
        /// Error rate of the faulty candidate (0 to 1).
        #[arg(long, default_value_t = 0.05)]
        error_rate: f64,
        /// Latency the faulty candidate adds.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "50ms")]
        latency: std::time::Duration,
        /// Requests per second, over all proxies.
        #[arg(long, default_value_t = 400)]
        rate: u32,
    },
    /// Measure a group of proxies on a 3-member etcd (feature `fleet`): for each size, the time
    /// from a table write until every proxy confirmed it, over weight changes, and the CPU and
    /// memory of observing every proxy once a second.
    #[cfg(feature = "fleet")]
    FleetScale {
        /// Group sizes, comma-separated, measured in this order.
        #[arg(long, value_delimiter = ',', default_value = "10,100,500")]
        proxies: Vec<usize>,
        /// Weight changes per size.
        #[arg(long, default_value_t = 20)]
        changes: u32,
        /// Seconds of observing measured per size.
        #[arg(long, default_value_t = 30)]
        observe_seconds: u64,
    },
    /// The fleet-scale scenario's observer, run by it as a child process: reads every admin
    /// URL's /stats once a second until standard input closes.
    #[cfg(feature = "fleet")]
    #[command(hide = true)]
    FleetScaleObserve {
        /// Admin URLs of the proxies.
        urls: Vec<String>,
    },
    /// Run the whole system on this machine: mock upstreams, a proxy, the control loop and
    /// steady traffic; a healthy canary completes, then a faulty one is aborted.
    Demo {
        /// Error rate of the faulty candidate (0 to 1).
        #[arg(long, default_value_t = 0.05)]
        error_rate: f64,
        /// Latency the faulty candidate adds.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "50ms")]
        latency: std::time::Duration,
        /// Requests per second of the synthetic traffic.
        #[arg(long, default_value_t = 400)]
        rate: u32,
        /// Run the fleet instead: a 3-member etcd (etcd-server installed), three proxies in a
        /// group and two controller replicas; the leader is killed mid-rollout (a build with
        /// the `fleet` feature).
        #[arg(long)]
        fleet: bool,
    },
    /// Run a switchyard-proxy binary in front of upstreams of this process and send it every
    /// kind of traffic it serves, twice (one worker, then two): the training run of the
    /// profile-guided release build (scripts/build-release). Fails unless every request was
    /// answered 2xx and the proxy exited 0.
    Train {
        /// The switchyard-proxy binary to run.
        #[arg(long)]
        proxy: std::path::PathBuf,
        /// How long the main traffic runs; each other kind runs half as long.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "4s")]
        duration: std::time::Duration,
    },
    /// Generate load: open loop at a fixed rate (latency from each request's intended send
    /// time, correcting coordinated omission) or closed loop at maximum throughput.
    Run {
        /// Target, http://host[:port]/path.
        #[arg(long)]
        url: http::Uri,
        /// Keep-alive connections.
        #[arg(long, short = 'c', default_value_t = 16)]
        connections: usize,
        /// Requests per second on a fixed schedule (open loop); 0 = closed loop, as --max.
        #[arg(long, required_unless_present = "max")]
        rate: Option<f64>,
        /// Closed loop: each connection sends its next request when the answer arrives.
        #[arg(long, conflicts_with = "rate")]
        max: bool,
        /// The measured window.
        #[arg(long, short = 'd', value_parser = humantime::parse_duration, default_value = "10s")]
        duration: std::time::Duration,
        /// Load before the measured window, not recorded.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
        warmup: std::time::Duration,
        /// h2c with prior knowledge; connections multiplex.
        #[arg(long)]
        http2: bool,
        /// A request header, 'name: value' (repeatable).
        #[arg(long = "header", short = 'H', value_parser = switchyard_loadtest::generate::parse_header)]
        headers: Vec<(http::HeaderName, http::HeaderValue)>,
        /// Send x-user-id: user-K, K drawn from 1..=N per request (0: no such header).
        #[arg(long, default_value_t = 0)]
        users: u32,
        /// Seed of the user draws.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// The response header that names the track.
        #[arg(long, default_value = switchyard_config::schema::DEFAULT_TRACK_HEADER)]
        track_header: http::HeaderName,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
        /// Runtime threads (1: current-thread runtime).
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
}

fn main() -> std::process::ExitCode {
    let result = match Cli::parse().command {
        Command::Upstream {
            listen,
            name,
            body,
            body_size,
            headers,
            error_rate,
            latency,
        } => {
            // The name lives as long as the process; leaking it lets every answer borrow it.
            let answer = Answer {
                name: name.leak(),
                body: body_size.map_or_else(|| body.into(), Answer::sized_body),
                headers,
            };
            switchyard_loadtest::upstream::run(listen, answer, Faults { error_rate, latency })
        }
        Command::Passthrough {
            listen,
            upstreams,
            every,
        } => switchyard_loadtest::passthrough::run(listen, upstreams, every),
        Command::AbortTiming {
            runs,
            proxies,
            error_rate,
            latency,
            rate,
        } => switchyard_loadtest::abort_timing::run(runs, proxies, Faults { error_rate, latency }, rate),
        Command::Demo { fleet: true, rate, .. } => demo_fleet(rate),
        #[cfg(feature = "fleet")]
        Command::FleetScale {
            proxies,
            changes,
            observe_seconds,
        } => switchyard_loadtest::fleet_scale::run(&switchyard_loadtest::fleet_scale::Settings {
            proxies,
            changes,
            observe: std::time::Duration::from_secs(observe_seconds),
        }),
        #[cfg(feature = "fleet")]
        Command::FleetScaleObserve { urls } => {
            switchyard_loadtest::fleet_scale::observer::run(&switchyard_loadtest::fleet_scale::rollout(), &urls)
        }
        Command::Demo {
            error_rate,
            latency,
            rate,
            fleet: false,
        } => switchyard_loadtest::demo::run(Faults { error_rate, latency }, rate),
        Command::Train { proxy, duration } => switchyard_loadtest::train::run(&proxy, duration),
        Command::Run {
            url,
            connections,
            rate,
            max: _,
            duration,
            warmup,
            http2,
            headers,
            users,
            seed,
            track_header,
            json,
            threads,
        } => {
            let options = Options {
                connections,
                rate: rate.unwrap_or(0.0),
                duration,
                warmup,
                http2,
                headers,
                users,
                seed,
                track_header,
                threads,
                ..Options::new(url)
            };
            switchyard_loadtest::generate::run(&options, json)
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard-loadtest: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(feature = "fleet")]
fn demo_fleet(rate: u32) -> anyhow::Result<()> {
    switchyard_loadtest::demo_fleet::run(rate / 3)
}

#[cfg(not(feature = "fleet"))]
fn demo_fleet(_rate: u32) -> anyhow::Result<()> {
    anyhow::bail!(
        "this switchyard-loadtest was built without the `fleet` feature: run it with \
         cargo run --release -p switchyard-loadtest --features fleet -- demo --fleet (it needs protoc and etcd-server)"
    )
}
