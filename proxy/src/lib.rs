//! Switchyard's data plane: listeners (HTTP/1.1, HTTP/2, TLS), route → track → endpoint
//! decisions on one table snapshot per request, forwarding, inline per-track measurement, the
//! admin API, and hot swaps of the routing table.
//!
//! The binary is `switchyard-proxy --config FILE`; `config/examples/canary-weight.yaml` is a
//! complete configuration. [`start`] runs the same proxy inside a process (tests do).
//!
//! The request path, by module: [`listen`] (with [`frame_guard`] on HTTP/1 connections) →
//! [`forward`] (the [`edge`]'s checks, decide on the [`publish`]ed snapshot, give it its
//! [`request_id`], keep it off endpoints that are out by their [`health`], forward through
//! [`upstream`] with the [`request_body`], or switch it to a tunnel when it [`upgrade`]s) →
//! [`record`] and the [`access_log`].
//! Around it: [`admin`], [`watch`], [`tls`], [`dns`] (the addresses of endpoints written with a
//! host name, looked up off the request path), and with the `fleet` feature, `fleet` (a group's
//! table kept in etcd). The binary allocates with [`allocator`].

// Denied rather than forbidden: the global allocator (`allocator`) is the one place allowed.
#![deny(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod allocator;
pub mod dns;
pub mod edge;
#[cfg(feature = "fleet")]
pub mod fleet;
pub mod forward;
pub mod frame_guard;
pub mod health;
pub mod idle;
pub mod listen;
pub mod open_files;
pub mod publish;
pub mod record;
pub mod request_body;
pub mod request_id;
pub mod tls;
pub mod upgrade;
pub mod upstream;
pub mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context as _;
use http::HeaderName;
use switchyard_config::{InstanceId, Loaded};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch as signal};
use tokio::task::JoinHandle;

use crate::access_log::AccessLog;
use crate::admin::{AdminState, Health};
use crate::dns::{Names, Resolver};
use crate::forward::Forwarder;
use crate::listen::ConnSettings;
use crate::publish::{Publisher, state_file};
use crate::record::Recorder;
use crate::request_id::RequestIds;
use crate::tls::CertStore;
use crate::upstream::Upstreams;

/// How to run a proxy beyond its configuration.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The file the configuration came from, watched for changes; `None` disables the watch.
    pub config_file: Option<PathBuf>,
    /// Worker threads serving requests; the stats keep one shard per thread (two per thread
    /// when 0 is given, for an unknown count).
    pub workers: usize,
    /// A state file to keep instead of the one the configuration's `admin.stateFile` names (what
    /// `--state-file` gives); `None` leaves the choice to the configuration.
    pub state_file: Option<PathBuf>,
    /// The group to join on etcd (feature `fleet`); `None` serves the file's routes alone.
    #[cfg(feature = "fleet")]
    pub fleet: Option<fleet::FleetOptions>,
}

/// A running proxy.
#[derive(Debug)]
pub struct Running {
    /// The bound downstream listeners, in configuration order.
    pub listen: Vec<SocketAddr>,
    /// The bound admin listener.
    pub admin: SocketAddr,
    /// Publishes new tables (the admin API and the file watch use it too).
    pub publisher: Arc<Publisher>,
    /// Reload and readiness counters.
    pub health: Arc<Health>,
    /// This process's identity in `/routes` and `/stats`.
    pub instance: InstanceId,
    access_log: Option<Arc<AccessLog>>,
    stop: signal::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    connections: Arc<Semaphore>,
    max_connections: u32,
    drain: std::time::Duration,
    _watcher: Option<notify::RecommendedWatcher>,
}

/// Binds every listener of `loaded` and starts serving.
pub async fn start(loaded: Loaded, options: Options) -> anyhow::Result<Running> {
    let Loaded { config, table } = loaded;
    let shards = if options.workers == 0 {
        2 * std::thread::available_parallelism().map_or(2, usize::from)
    } else {
        options.workers + 1
    };
    let recorder = Arc::new(Recorder::new(shards, tokio::time::Instant::now()));
    let location = state_file::location(
        &config.admin.state_file,
        options.state_file.as_deref(),
        options.config_file.as_deref(),
    );
    let resumed = state_file::resume(location, table, &config.routes)?;
    let publisher = Arc::new(Publisher::new(
        resumed.table,
        resumed.source,
        recorder,
        resumed.state,
        resumed.config_routes,
    ));
    // Names are looked up before anything is served, so that the first requests go to addresses.
    let names = Arc::new(Names::default());
    let resolver = Resolver::new(Arc::new(dns::System), config.dns, Arc::clone(&names));
    resolver.first(&publisher).await;
    let track_header = config
        .track_header
        .as_deref()
        .map(|h| HeaderName::from_bytes(h.as_bytes()))
        .transpose()
        .context("trackHeader")?;
    let request_ids = RequestIds::new(&config.request_id).context("requestId.header is not a header name")?;
    let access_log = config
        .access_log
        .as_ref()
        .map(|l| AccessLog::start(&l.path))
        .transpose()?;
    let forwarder = Arc::new(Forwarder::new(
        Arc::clone(&publisher),
        Upstreams::new(&config.timeouts, &config.limits),
        config.timeouts,
        config.limits.request_body_min_rate,
        config.paths,
        track_header,
        request_ids,
        access_log,
    ));
    let token = match &config.admin.token_file {
        Some(file) => {
            let token = std::fs::read_to_string(file).with_context(|| format!("admin.tokenFile {file}"))?;
            let token = token.trim().to_owned();
            anyhow::ensure!(!token.is_empty(), "admin.tokenFile {file} is empty");
            Some(token)
        }
        None => None,
    };
    let health = Arc::new(Health::default());
    let (stop, stopped) = signal::channel(false);
    let budget = open_files::connection_budget(config.limits.max_connections);
    if budget < config.limits.max_connections {
        tracing::warn!(
            "limits.maxConnections is {} but the open-file limit allows {budget} connections (two \
             descriptors each): connections past {budget} wait to be accepted; raise the limit \
             (ulimit -n, or LimitNOFILE= for a systemd unit) to serve more",
            config.limits.max_connections
        );
    }
    let max_connections = u32::try_from(budget).unwrap_or(u32::MAX);
    let connections = Arc::new(Semaphore::new(max_connections as usize));
    let settings = Arc::new(ConnSettings {
        timeouts: config.timeouts,
        limits: config.limits,
    });

    let mut tasks = Vec::new();
    let mut listen = Vec::new();
    let mut certs = Vec::new();
    for (i, spec) in config.listen.iter().enumerate() {
        let listener = TcpListener::bind(&spec.address)
            .await
            .with_context(|| format!("listen[{i}]: cannot bind {}", spec.address))?;
        listen.push(listener.local_addr()?);
        let acceptor = match &spec.tls {
            Some(tls) => {
                let store = Arc::new(
                    CertStore::load(tls.cert_file.as_ref(), tls.key_file.as_ref())
                        .with_context(|| format!("listen[{i}].tls"))?,
                );
                let acceptor = store.acceptor();
                certs.push(store);
                Some(acceptor)
            }
            None => None,
        };
        tasks.push(tokio::spawn(listen::serve(
            listener,
            acceptor,
            Arc::clone(&forwarder),
            Arc::clone(&settings),
            Arc::clone(&connections),
            stopped.clone(),
        )));
    }
    let admin_listener = TcpListener::bind(&config.admin.listen)
        .await
        .with_context(|| format!("admin.listen: cannot bind {}", config.admin.listen))?;
    let admin = admin_listener.local_addr()?;
    let instance = admin::new_instance();
    let access_log = forwarder.access_log().cloned();
    let state = Arc::new(AdminState {
        publisher: Arc::clone(&publisher),
        forwarder,
        health: Arc::clone(&health),
        token,
        instance: instance.clone(),
        names,
    });
    tasks.push(tokio::spawn(admin::serve(admin_listener, state, stopped.clone())));
    tasks.push(resolver.spawn(Arc::clone(&publisher), stopped.clone()));
    // Joining never delays serving: until etcd answers, the file's routes are served.
    #[cfg(feature = "fleet")]
    if let Some(fleet) = options.fleet.clone() {
        tasks.push(fleet::spawn(
            fleet,
            Arc::clone(&publisher),
            instance.clone(),
            format!("http://{admin}"),
            stopped.clone(),
        ));
    }

    let drain = config.timeouts.drain;
    let watcher = match &options.config_file {
        Some(file) => Some(
            watch::spawn(
                file,
                config,
                certs,
                Arc::clone(&publisher),
                Arc::clone(&health),
                stopped,
            )
            .context("cannot watch the config file")?,
        ),
        None => None,
    };
    health.ready.store(true, Ordering::Relaxed);
    Ok(Running {
        listen,
        admin,
        publisher,
        health,
        instance,
        access_log,
        stop,
        tasks,
        connections,
        max_connections,
        drain,
        _watcher: watcher,
    })
}

impl Running {
    /// Reopens the access log's file by its name before its next line, as `SIGHUP` does (after
    /// a rotation moved it away); nothing without an access log or on standard output.
    pub fn reopen_access_log(&self) {
        if let Some(log) = &self.access_log {
            log.reopen();
        }
    }

    /// The access log's lines written and entries dropped so far; `None` without one.
    pub fn access_log_counts(&self) -> Option<(u64, u64)> {
        self.access_log.as_ref().map(|l| (l.written(), l.dropped()))
    }

    /// Stops accepting, lets in-flight requests finish within the drain bound, and returns
    /// whether every connection closed in time.
    pub async fn shutdown(self) -> bool {
        self.health.ready.store(false, Ordering::Relaxed);
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        // Every open connection holds a permit until it closes.
        self.publisher.health().stop();
        let drained = tokio::time::timeout(self.drain, self.connections.acquire_many(self.max_connections)).await;
        self.publisher.release_state_file().await;
        matches!(drained, Ok(Ok(_)))
    }
}

/// Waits until `stop` turns true (or its sender is gone).
pub(crate) async fn until_stopped(stop: &mut signal::Receiver<bool>) {
    // The `Ref` that `wait_for` returns must not live across an await.
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}
