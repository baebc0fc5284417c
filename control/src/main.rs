//! `switchyard`: the control loop (`switchyard serve`) and the operator's CLI
//! (`switchyard rollout …`).

#![forbid(unsafe_code)]

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use switchyard_control::api::{Backend, Guard};
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
        /// Directory of durable rollout state (without --etcd).
        #[arg(long, default_value = "switchyard-state")]
        state: PathBuf,
        /// A file holding the bearer token every command (any call but GET) must present;
        /// without it, anyone who reaches the API may command it.
        #[arg(long, env = "SWITCHYARD_TOKEN_FILE", value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// A file holding the bearer token of the proxies' admin APIs (their admin.tokenFile),
        /// sent to them, and only to them, with every call.
        #[arg(long, env = "SWITCHYARD_PROXY_TOKEN_FILE", value_name = "FILE")]
        proxy_token_file: Option<PathBuf>,
        #[command(flatten)]
        fleet: FleetArgs,
    },
    /// Groups of proxies on etcd (a controller started with --etcd).
    Fleet {
        /// The control API.
        #[arg(
            long,
            env = "SWITCHYARD_SERVER",
            default_value = "http://127.0.0.1:9900",
            global = true
        )]
        server: String,
        /// A file holding the control API's bearer token (its serve --token-file).
        #[arg(long, env = "SWITCHYARD_TOKEN_FILE", value_name = "FILE", global = true)]
        token_file: Option<PathBuf>,
        #[command(subcommand)]
        verb: cli::FleetVerb,
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
        /// A file holding the control API's bearer token (its serve --token-file).
        #[arg(long, env = "SWITCHYARD_TOKEN_FILE", value_name = "FILE", global = true)]
        token_file: Option<PathBuf>,
        #[command(subcommand)]
        verb: Verb,
    },
}

/// Running as one of several replicas on etcd (a build with the `fleet` feature).
#[derive(clap::Args)]
struct FleetArgs {
    /// etcd client URLs, comma-separated: keep rollout state in etcd, run as one of several
    /// replicas with one elected leader, and roll out over groups of proxies
    /// (`proxies: { group: NAME }`).
    #[arg(long, env = "SWITCHYARD_ETCD", value_name = "URL[,URL...]", value_delimiter = ',')]
    etcd: Vec<String>,
    /// The prefix of the fleet's keys in etcd (the proxies' --etcd-prefix).
    #[arg(long, value_name = "PREFIX", default_value = switchyard_config::fleet::DEFAULT_PREFIX)]
    etcd_prefix: String,
    /// The control API URL the other replicas reach this one at (default: http:// and the
    /// --listen address).
    #[arg(long, value_name = "URL")]
    advertise: Option<String>,
    /// The leader's lease: a leader that stops renewing it is replaced after this long.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    lease_ttl: Duration,
    #[command(flatten)]
    access: switchyard_config::etcd_access::EtcdAccess,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Offline: no runtime, no server.
    if let Top::Rollout {
        verb: Verb::Lint { files, routes },
        ..
    } = &cli.command
    {
        return switchyard_control::lint::run(files, routes.as_deref());
    }
    match run(cli) {
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
        Top::Serve {
            listen,
            state,
            token_file,
            proxy_token_file,
            fleet,
        } => {
            let guard = match &token_file {
                Some(file) => Guard::bearer(&token(file)?),
                None => Guard::default(),
            };
            let proxies = match &proxy_token_file {
                Some(file) => Http::new(Duration::from_secs(2))
                    .with_bearer(&token(file)?)
                    .map_err(|e| anyhow::anyhow!("--proxy-token-file: {e}"))?,
                None => Http::new(Duration::from_secs(2)),
            };
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
                if !fleet.etcd.is_empty() {
                    return serve_replicated(listen, fleet, guard, proxies).await;
                }
                let store = Store::open(&state).with_context(|| format!("cannot open {}", state.display()))?;
                let controller = Controller::start(store, proxies);
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("cannot bind {listen}"))?;
                tracing::info!(%listen, state = %state.display(), token = guard.asks_token(), "switchyard control loop serving; its dashboard is at http://{listen}/ui/");
                let backend = Backend::one(controller, &listener);
                tokio::select! {
                    () = switchyard_control::api::serve_backend(listener, backend, guard) => {}
                    r = stop_signal() => r?,
                }
                Ok(())
            })
        }
        Top::Rollout {
            server,
            token_file,
            verb,
        } => {
            let token = token_file.as_deref().map(token).transpose()?;
            runtime.block_on(cli::run(&server, token.as_deref(), verb))
        }
        Top::Fleet {
            server,
            token_file,
            verb,
        } => {
            let token = token_file.as_deref().map(token).transpose()?;
            runtime.block_on(cli::run_fleet(&server, token.as_deref(), verb))
        }
    }
}

/// The bearer token in `file`, without surrounding whitespace.
fn token(file: &Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read the token file {}", file.display()))?;
    let token = text.trim();
    anyhow::ensure!(
        !token.is_empty(),
        "the token file {} is empty; put the bearer token in it",
        file.display()
    );
    anyhow::ensure!(
        token.bytes().all(|b| b.is_ascii_graphic()),
        "the token in {} has a space or a character that is not printable ASCII, which an Authorization header cannot carry",
        file.display()
    );
    Ok(token.to_owned())
}

/// `serve --etcd`: one replica among several, its state in etcd.
#[cfg(feature = "fleet")]
async fn serve_replicated(listen: SocketAddr, args: FleetArgs, guard: Guard, proxies: Http) -> anyhow::Result<()> {
    use std::sync::Arc;

    use switchyard_control::fleet::Fleet;
    use switchyard_control::replica::Replica;

    let keys = switchyard_config::fleet::FleetKeys::new(&args.etcd_prefix)
        .map_err(|e| anyhow::anyhow!("--etcd-prefix: {}", e.message))?;
    let credentials = args
        .access
        .load(&args.etcd)
        .map_err(|problems| anyhow::anyhow!("{}", problems.join("\n")))?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot bind {listen}"))?;
    let bound = listener.local_addr()?;
    let advertise = args.advertise.unwrap_or_else(|| format!("http://{bound}"));
    let endpoints = args.etcd.join(",");
    let fleet = loop {
        match Fleet::connect_with(args.etcd.clone(), keys.clone(), &credentials).await {
            Ok(fleet) => break Arc::new(fleet),
            Err(e) => {
                tracing::warn!("cannot reach etcd at {endpoints} ({e}); retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let replica = Replica::new(fleet, proxies, advertise.clone(), args.lease_ttl);
    tracing::info!(listen = %bound, %advertise, etcd = %endpoints, id = %replica.me().id, "switchyard control loop serving as a replica");
    tokio::spawn(Arc::clone(&replica).run());
    let backend = Backend::Replica(Arc::clone(&replica));
    tokio::select! {
        () = switchyard_control::api::serve_backend(listener, backend, guard) => {}
        r = stop_signal() => r?,
    }
    // Hand the lead over now rather than after a lease.
    tracing::info!("stopping: resigning from the election");
    replica.resign(Duration::from_secs(5)).await;
    Ok(())
}

#[cfg(not(feature = "fleet"))]
async fn serve_replicated(_listen: SocketAddr, _args: FleetArgs, _guard: Guard, _proxies: Http) -> anyhow::Result<()> {
    anyhow::bail!(
        "this switchyard was built without the `fleet` feature, so it cannot use etcd (--etcd); build it with --features fleet"
    )
}

/// Ctrl-C, or SIGTERM (how Kubernetes and systemd stop a process).
async fn stop_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot listen for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
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
