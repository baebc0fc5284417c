//! `switchyard-proxy`: the data plane binary.
//!
//! `switchyard-proxy validate FILE...` checks configuration files: it prints every problem with
//! its field path and exits 1, or prints what each file routes where and exits 0.

#![forbid(unsafe_code)]

mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Switchyard's proxy: splits a service's traffic between its tracks.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check configuration files (YAML or JSON): print every problem by field path, or a
    /// summary of the routes. Exits 1 if any file has a problem.
    Validate {
        /// Files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Validate { files } => validate::run(&files),
    }
}
