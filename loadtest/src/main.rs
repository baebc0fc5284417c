//! `switchyard-loadtest`: load-test tools. `upstream` runs a fast fixed-answer upstream.

#![forbid(unsafe_code)]

use std::net::SocketAddr;

use clap::{Parser, Subcommand};

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
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Upstream { listen, name, body } => switchyard_loadtest::upstream::run(listen, name, body),
    }
}
