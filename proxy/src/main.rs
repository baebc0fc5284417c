//! `switchyard-proxy`: the data plane binary.
//!
//! `switchyard-proxy --config FILE [--state-file FILE] [--workers N]` serves the configuration
//! until SIGTERM or SIGINT, then drains in-flight requests and exits 0; SIGHUP reopens the
//! access log's file. With `--etcd URL[,URL…]
//! --group NAME` (a build with the `fleet` feature) it joins a group of proxies that serve one
//! table kept in etcd. `switchyard-proxy
//! validate FILE...` checks configuration files: it prints every problem with its field path and
//! exits 1, or prints what each file routes where and exits 0.

#![forbid(unsafe_code)]

mod validate;

/// mimalloc's per-thread free lists cut the allocator's share of a proxied request's CPU time
/// (hyper allocates per request and per connection); measured with
/// `loadtest/scenarios/proxy-cpu.sh`. Its 2.x line (the crate's `v2` feature) measured fewer
/// instructions per request and less memory with many connections than 3.x. On top of it,
/// [`Allocator`] keeps freed 8 KiB blocks (hyper's HTTP/1 read buffers) per thread.
#[global_allocator]
static ALLOCATOR: Allocator = Allocator;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use switchyard_config::{Format, load_config};
use switchyard_proxy::allocator::Allocator;
use switchyard_proxy::{Options, open_files, start};

/// Switchyard's proxy: splits a service's traffic between its tracks.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The configuration file (YAML or JSON) to serve; it is watched and its routes reloaded
    /// when it changes.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Where the proxy keeps the last table it published, so that a restart serves it; overrides
    /// the configuration's `admin.stateFile` (default: `<config file>.state.json` beside it).
    #[arg(long, value_name = "FILE")]
    state_file: Option<PathBuf>,
    /// Worker threads (default: one per core). With 1, everything runs on one thread.
    #[arg(long, default_value_t = 0)]
    workers: usize,
    #[command(flatten)]
    fleet: FleetArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Joining a group on etcd (a build with the `fleet` feature).
#[derive(clap::Args)]
struct FleetArgs {
    /// etcd client URLs, comma-separated: join the group `--group` names, whose table is kept in
    /// etcd.
    #[arg(
        long,
        env = "SWITCHYARD_ETCD",
        value_name = "URL[,URL...]",
        value_delimiter = ',',
        requires = "group"
    )]
    etcd: Vec<String>,
    /// The group to join: the proxies that serve one table.
    #[arg(long, env = "SWITCHYARD_GROUP", value_name = "NAME")]
    group: Option<String>,
    /// The admin URL other components reach this proxy at (default: http:// and the admin
    /// listener's bound address).
    #[arg(long, value_name = "URL")]
    advertise: Option<String>,
    /// The prefix of the fleet's keys in etcd.
    #[arg(long, value_name = "PREFIX", default_value = switchyard_config::fleet::DEFAULT_PREFIX)]
    etcd_prefix: String,
    /// The registration's lease (whole seconds): a proxy that stops renewing it leaves the group
    /// after this long.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    lease_ttl: std::time::Duration,
    #[command(flatten)]
    access: switchyard_config::etcd_access::EtcdAccess,
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
    let cli = Cli::parse();
    match (cli.command, cli.config) {
        (Some(Command::Validate { files }), _) => validate::run(&files),
        (None, Some(config)) => match serve(config, cli.state_file, cli.workers, cli.fleet) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("switchyard-proxy: {e:#}");
                ExitCode::FAILURE
            }
        },
        (None, None) => {
            eprintln!("switchyard-proxy: give --config FILE to serve, or `validate FILE...`");
            ExitCode::from(2)
        }
    }
}

fn serve(file: PathBuf, state_file: Option<PathBuf>, workers: usize, fleet: FleetArgs) -> anyhow::Result<()> {
    #[cfg(feature = "fleet")]
    let fleet = fleet_options(fleet)?;
    #[cfg(not(feature = "fleet"))]
    anyhow::ensure!(
        fleet.etcd.is_empty() && fleet.group.is_none(),
        "this switchyard-proxy was built without fleet support; build it with --features fleet"
    );
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
    if let Some((before, after)) = open_files::raise()
        && after > before
    {
        tracing::info!(before, after, "raised the open-file limit to the hard limit");
    }
    let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let format = match file.extension().and_then(|e| e.to_str()) {
        Some("json") => Format::Json,
        Some("yaml" | "yml") => Format::Yaml,
        _ => Format::sniff(&text),
    };
    let loaded = load_config(&text, format, 1).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let workers = if workers == 0 {
        std::thread::available_parallelism().map_or(1, usize::from)
    } else {
        workers
    };
    let runtime = if workers == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()?
    };
    runtime.block_on(async {
        let running = start(
            loaded,
            Options {
                config_file: Some(file.clone()),
                workers,
                state_file,
                #[cfg(feature = "fleet")]
                fleet,
            },
        )
        .await?;
        tracing::info!(
            listen = ?running.listen,
            admin = %running.admin,
            instance = %running.instance,
            workers,
            "switchyard-proxy serving"
        );
        // SIGHUP reopens the access log's file (logrotate's `postrotate`), nothing else.
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let stop = shutdown_signal();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = hangup.recv() => running.reopen_access_log(),
                stopped = &mut stop => break stopped?,
            }
        }
        tracing::info!("shutting down: draining in-flight requests");
        if running.shutdown().await {
            tracing::info!("drained");
        } else {
            tracing::warn!("drain bound reached with requests still in flight");
        }
        Ok(())
    })
}

/// The group to join, if `--etcd` was given.
#[cfg(feature = "fleet")]
fn fleet_options(args: FleetArgs) -> anyhow::Result<Option<switchyard_proxy::fleet::FleetOptions>> {
    use switchyard_config::fleet::{FleetKeys, GroupName};
    let endpoints: Vec<String> = args.etcd.into_iter().filter(|u| !u.trim().is_empty()).collect();
    if endpoints.is_empty() {
        anyhow::ensure!(
            args.group.is_none(),
            "--group needs --etcd URL[,URL...]: the etcd cluster the group lives in"
        );
        return Ok(None);
    }
    let group = args
        .group
        .context("--etcd needs --group NAME: the group of proxies to join")?;
    let group = GroupName::new(&group).map_err(|e| anyhow::anyhow!("--group: {}", e.message))?;
    let keys = FleetKeys::new(&args.etcd_prefix).map_err(|e| anyhow::anyhow!("--etcd-prefix: {}", e.message))?;
    let credentials = args
        .access
        .load(&endpoints)
        .map_err(|problems| anyhow::anyhow!("{}", problems.join("\n")))?;
    let mut options = switchyard_proxy::fleet::FleetOptions::new(endpoints, group);
    options.keys = keys;
    options.credentials = credentials;
    options.advertise = args.advertise;
    anyhow::ensure!(
        args.lease_ttl >= std::time::Duration::from_secs(1),
        "--lease-ttl must be at least 1s (etcd counts whole seconds)"
    );
    options.lease_ttl = args.lease_ttl;
    Ok(Some(options))
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        r = tokio::signal::ctrl_c() => r?,
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
