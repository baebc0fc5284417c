//! `switchyard-loadtest`: the demo (`demo`) and load-test tools (`upstream`, a fast
//! fixed-answer upstream with optional faults).

#![forbid(unsafe_code)]

use std::net::SocketAddr;

use clap::{Parser, Subcommand};
use switchyard_loadtest::upstream::Faults;

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
        /// Share of requests answered 500 (0 to 1).
        #[arg(long, default_value_t = 0.0)]
        error_rate: f64,
        /// Added latency, e.g. 50ms.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
        latency: std::time::Duration,
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
    },
}

fn main() -> std::process::ExitCode {
    let result = match Cli::parse().command {
        Command::Upstream {
            listen,
            name,
            body,
            error_rate,
            latency,
        } => switchyard_loadtest::upstream::run(listen, name, body, Faults { error_rate, latency }),
        Command::Demo {
            error_rate,
            latency,
            rate,
        } => switchyard_loadtest::demo::run(Faults { error_rate, latency }, rate),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard-loadtest: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
