//! `switchyard`: the control loop (`switchyard serve`) and the operator's CLI
//! (`switchyard rollout …`).

#![forbid(unsafe_code)]

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use switchyard_control::cli::{self, Verb};
use switchyard_control::controller::Controller;
use switchyard_control::http::Http;
use switchyard_control::store::Store;

/// Switchyard's control loop and CLI.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand)]
enum Top {
    /// Run the control loop and its API.
    Serve {
        /// Address of the control API.
        #[arg(long, default_value = "127.0.0.1:9900")]
        listen: SocketAddr,
        /// Directory of durable rollout state.
        #[arg(long, default_value = "switchyard-state")]
        state: PathBuf,
    },
    /// Operate rollouts.
    Rollout {
        /// The control API.
        #[arg(
            long,
            env = "SWITCHYARD_SERVER",
            default_value = "http://127.0.0.1:9900",
            global = true
        )]
        server: String,
        #[command(subcommand)]
        verb: Verb,
    },
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match cli.command {
        Top::Serve { listen, state } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .with_ansi(log_colour(
                    std::io::stdout().is_terminal(),
                    std::env::var_os("NO_COLOR"),
                ))
                .init();
            runtime.block_on(async {
                let store = Store::open(&state).with_context(|| format!("cannot open {}", state.display()))?;
                let controller = Controller::start(store, Http::new(Duration::from_secs(2)));
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("cannot bind {listen}"))?;
                tracing::info!(%listen, state = %state.display(), "switchyard control loop serving");
                tokio::select! {
                    () = switchyard_control::api::serve(listener, controller) => {}
                    r = tokio::signal::ctrl_c() => r?,
                }
                Ok(())
            })
        }
        Top::Rollout { server, verb } => runtime.block_on(cli::run(&server, verb)),
    }
}

/// Whether the logs (on stdout) are coloured: only for a person at a terminal, not in a pipe or
/// a file, and not with `NO_COLOR` set to anything but the empty string (<https://no-color.org>).
fn log_colour(stdout_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stdout_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_are_coloured_only_on_a_terminal_without_no_color() {
        assert!(log_colour(true, None));
        assert!(log_colour(true, Some("".into())));
        assert!(!log_colour(true, Some("1".into())));
        assert!(!log_colour(false, None));
    }
}
