//! The routing table in force, and the one function that replaces it.
//!
//! Every request loads the current [`Snapshot`] once and decides on it; a swap never touches a
//! snapshot a request already holds, so each request is decided by the version it started
//! under. [`Publisher::publish`] is the only writer: the admin API's `PUT /routes` and the
//! config file watch both go through it, one at a time. When the proxy keeps a [`state_file`],
//! a table is written there before it is swapped in, so that what a caller was told is in force
//! is also what a restarted proxy serves.
//!
//! The snapshot serves the table with its host names expanded to the addresses the resolver
//! stage ([`crate::dns`]) found; [`Publisher::use_addresses`] is how that stage has the table in
//! force served with new ones, through the same writer, at the same version.

pub mod state_file;

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use http::HeaderValue;
use http::uri::Authority;
use switchyard_config::schema::RouteSpec;
use switchyard_config::table::host_names;
use switchyard_config::{ConfigErrors, Format, RouteName, RoutingTable, TrackName, load_routes};
use tokio::sync::{Mutex, watch};

use self::state_file::{RoutesDigest, StateDocument, StateError, StateFile, TableSource};

use crate::access_log::Labels;
use crate::dns::Addresses;
use crate::forward::{Budget, Budgets, MirrorPlan};
use crate::health::{HealthRegistry, TrackHealth};
use crate::record::{Gauge, Recorder, SlotId};
use crate::upstream::EndpointKey;

/// What a proxy keeps from table to table, by name: each route's retry budget and each
/// endpoint's health, so that publishing a table (a rollout's step) neither refills a budget nor
/// brings an ejected endpoint back.
#[derive(Debug)]
struct Lasting {
    budgets: Budgets,
    health: HealthRegistry,
}

/// A compiled table plus what the hot path needs precomputed for each of its tracks.
#[derive(Debug)]
pub struct Snapshot {
    /// The compiled routes, each endpoint written with a host name expanded to its addresses;
    /// `table.version()` is the snapshot's version and `table.spec()` the routes as written.
    pub table: RoutingTable,
    /// `tracks[route][track]`.
    tracks: Box<[Box<[TrackPlan]>]>,
    /// `budgets[route]`: the retry budget of each route that retries.
    budgets: Box<[Option<Arc<Budget>>]>,
    /// `mirrors[route]`: the route's mirror, if it has one.
    mirrors: Box<[Option<Arc<MirrorPlan>>]>,
}

/// Per-track data computed once per table, so that a request copies nothing it can share.
#[derive(Debug)]
pub struct TrackPlan {
    /// Where the track's requests are measured.
    pub slot: SlotId,
    /// The track's name as a header value (`x-switchyard-track: canary`).
    pub header: HeaderValue,
    /// `endpoints[endpoint]`: the upstream address of each endpoint and its pool key.
    pub endpoints: Arc<[(Authority, EndpointKey)]>,
    /// The route's, track's and endpoints' names for the access log.
    pub labels: Arc<Labels>,
    /// The endpoints' health, when the track has `outlierDetection` or `healthCheck`.
    pub health: Option<Arc<TrackHealth>>,
}

impl Snapshot {
    /// The snapshot that serves `table` with `addresses` for its host names.
    fn serving(table: RoutingTable, addresses: &Addresses, recorder: &Recorder, lasting: &Lasting) -> Self {
        if host_names(table.spec()).is_empty() {
            return Self::new(table, recorder, lasting);
        }
        match table.resolve(|host| addresses.get(host)) {
            Ok(resolved) => Self::new(resolved, recorder, lasting),
            Err(e) => {
                tracing::error!(
                    "The table's endpoints could not be expanded to their names' addresses ({e}); it is \
                     served with its names unresolved, so their requests fail with 502."
                );
                Self::new(table, recorder, lasting)
            }
        }
    }

    /// The snapshot of `table` (its endpoints already expanded: health is kept by each track's
    /// endpoint order).
    fn new(table: RoutingTable, recorder: &Recorder, lasting: &Lasting) -> Self {
        let mut health = lasting.health.apply(&table).into_iter();
        let tracks = table
            .routes()
            .iter()
            .map(|route| {
                let mut health = health.next().unwrap_or_default().into_iter();
                route
                    .tracks()
                    .iter()
                    .map(|track| TrackPlan {
                        slot: recorder.slot(route.name(), track.name()),
                        header: HeaderValue::from_str(track.name().as_str())
                            .expect("track names are validated to header-safe characters"),
                        endpoints: track
                            .endpoints()
                            .iter()
                            .map(|e| {
                                let authority =
                                    Authority::try_from(e.address()).expect("endpoints are validated as HOST:PORT");
                                let key = EndpointKey::of(&authority);
                                (authority, key)
                            })
                            .collect(),
                        labels: Arc::new(Labels::new(
                            route.name().as_str(),
                            track.name().as_str(),
                            track.endpoints().iter().map(|e| e.address().to_owned()),
                        )),
                        health: health.next().flatten(),
                    })
                    .collect()
            })
            .collect();
        let budgets = table
            .routes()
            .iter()
            .map(|route| route.retry().map(|_| lasting.budgets.of(route.name())))
            .collect();
        let mirrors = table
            .routes()
            .iter()
            .map(|route| MirrorPlan::of(route, recorder))
            .collect();
        Self {
            table,
            tracks,
            budgets,
            mirrors,
        }
    }

    /// Each route that retries, with its budget.
    pub fn budgets(&self) -> impl Iterator<Item = (&RouteName, &Arc<Budget>)> {
        self.table
            .routes()
            .iter()
            .zip(self.budgets.iter())
            .filter_map(|(route, budget)| Some((route.name(), budget.as_ref()?)))
    }

    /// The retry budget of route `route`, if it retries.
    #[inline]
    pub fn budget(&self, route: usize) -> Option<&Arc<Budget>> {
        self.budgets.get(route)?.as_ref()
    }

    /// The mirror of route `route` (an index from a [`switchyard_config::Decision`]), if any.
    #[inline]
    pub fn mirror(&self, route: usize) -> Option<&Arc<MirrorPlan>> {
        self.mirrors[route].as_ref()
    }

    /// Every (route, mirror track, shadow slot) of this table, with the mirror's gauge, for
    /// stats and metrics.
    pub fn shadow_slots(&self) -> Vec<(RouteName, TrackName, SlotId, Arc<Gauge>)> {
        self.table
            .routes()
            .iter()
            .zip(self.mirrors.iter())
            .filter_map(|(route, plan)| {
                let plan = plan.as_ref()?;
                let (track, _) = route.mirror()?;
                Some((
                    route.name().clone(),
                    track.name().clone(),
                    plan.slot(),
                    Arc::clone(plan.gauge()),
                ))
            })
            .collect()
    }

    /// The plan of track `track` of route `route` (indices from a [`switchyard_config::Decision`]).
    #[inline]
    pub fn plan(&self, route: usize, track: usize) -> &TrackPlan {
        &self.tracks[route][track]
    }

    /// Every (route, track, slot) of this table, for stats and metrics.
    pub fn slots(&self) -> Vec<(RouteName, TrackName, SlotId)> {
        self.table
            .routes()
            .iter()
            .zip(self.tracks.iter())
            .flat_map(|(route, plans)| {
                route
                    .tracks()
                    .iter()
                    .zip(plans.iter())
                    .map(|(track, plan)| (route.name().clone(), track.name().clone(), plan.slot))
            })
            .collect()
    }
}

/// Why a new table was not published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The caller's `If-Match` version is not the current one.
    #[error("the routing table is at version {current}, not {expected}")]
    Conflict {
        /// The version the caller expected.
        expected: u64,
        /// The version in force.
        current: u64,
    },
    /// The new routes are invalid; nothing changed.
    #[error("{0}")]
    Invalid(#[from] ConfigErrors),
    /// The new table could not be kept in the state file, so it was not published: the proxy
    /// never acknowledges a table that a restart would lose.
    #[error("the table was not published, because it could not be kept: {0}; the table in force stays")]
    Persist(#[from] StateError),
}

/// Holds the current snapshot and publishes new ones.
#[derive(Debug)]
pub struct Publisher {
    /// Shared with the blocking task that swaps a table in after keeping it.
    current: Arc<ArcSwap<Snapshot>>,
    recorder: Arc<Recorder>,
    /// What outlives tables: the routes' retry budgets, the endpoints' health.
    lasting: Arc<Lasting>,
    /// Serialises writers, so versions rise by one, `If-Match` checks hold until the swap, and
    /// the state file's tables come in the order they were published.
    writer: Arc<Mutex<Writer>>,
    /// The version of every table published, for the resolver stage to look new names up.
    published: watch::Sender<u64>,
}

/// What only the one writer touches.
#[derive(Debug)]
struct Writer {
    /// Where published tables are kept, if anywhere.
    state: Option<Arc<StateFile>>,
    /// The config file's routes as last read (at start or by the watch).
    config_routes: RoutesDigest,
    /// Who published the table in force.
    source: TableSource,
    /// The state file let go of at shutdown: tables are refused from then on, since none
    /// could be kept.
    released: Option<std::path::PathBuf>,
    /// The addresses of the names that have resolved, which every snapshot is compiled with.
    addresses: Addresses,
}

/// What a source of new routes hands to [`Publisher::publish`].
#[derive(Debug, Clone, Copy)]
pub enum NewRoutes<'a> {
    /// A routes document (`{"routes": [...]}`) in YAML or JSON, as `PUT /routes` receives it.
    Document(&'a str, Format),
    /// Routes just read from the configuration file; they are the config file's routes from now
    /// on (what the state file's digest names).
    Specs(&'a [RouteSpec]),
}

impl Publisher {
    /// Starts with `table` in force, published by `source`, with the config file's routes of
    /// digest `config_routes`; every table published from now on is kept in `state`, if given.
    /// Within a Tokio runtime when a table has health checks (they run on it).
    pub fn new(
        table: RoutingTable,
        source: TableSource,
        recorder: Arc<Recorder>,
        state: Option<StateFile>,
        config_routes: RoutesDigest,
    ) -> Self {
        let lasting = Arc::new(Lasting {
            budgets: Budgets::default(),
            health: HealthRegistry::new(tokio::time::Instant::now()),
        });
        let version = table.version();
        let snapshot = Snapshot::new(table, &recorder, &lasting);
        Self {
            current: Arc::new(ArcSwap::from_pointee(snapshot)),
            recorder,
            lasting,
            writer: Arc::new(Mutex::new(Writer {
                state: state.map(Arc::new),
                config_routes,
                source,
                released: None,
                addresses: Addresses::default(),
            })),
            published: watch::Sender::new(version),
        }
    }

    /// The snapshot in force. Hold it for one request's decision.
    #[inline]
    pub fn load(&self) -> Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The snapshot in force, owned.
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Follows the versions of the tables published from now on.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// Serves the table in force with `addresses` for its host names from now on: it is compiled
    /// again with them and swapped in at the same version (the routes as written, what
    /// `GET /routes` serves, do not change), and every table published later is compiled with
    /// them too. Requests in flight keep the snapshot they hold; per-track stats go on.
    pub async fn use_addresses(&self, addresses: Addresses) {
        let mut writer = self.writer.lock().await;
        if writer.addresses == addresses {
            return;
        }
        writer.addresses = addresses;
        let in_force = self.current.load_full();
        if host_names(in_force.table.spec()).is_empty() {
            return;
        }
        // `resolve` starts from the routes as written, so an expanded table expands again.
        match in_force.table.resolve(|host| writer.addresses.get(host)) {
            Ok(table) => self
                .current
                .store(Arc::new(Snapshot::new(table, &self.recorder, &self.lasting))),
            Err(e) => tracing::error!(
                "The table's endpoints could not be expanded to their names' new addresses ({e}); \
                 the table in force stays."
            ),
        }
    }

    /// The recorder the snapshots' slots belong to.
    pub fn recorder(&self) -> &Arc<Recorder> {
        &self.recorder
    }

    /// The endpoints' health the snapshots' tracks share.
    pub fn health(&self) -> &HealthRegistry {
        &self.lasting.health
    }

    /// Validates and compiles `routes` as the next version, keeps it in the state file (if the
    /// proxy has one) and swaps it in, if the current version is `expected` (when given). On any
    /// error the table in force stays.
    ///
    /// A table from the config file is published even when the state file cannot be written
    /// (the file itself is its record): the state file is removed then, so that a restart does
    /// not bring back an older table over the edit.
    pub async fn publish(&self, routes: NewRoutes<'_>, expected: Option<u64>) -> Result<u64, PublishError> {
        let mut writer = Arc::clone(&self.writer).lock_owned().await;
        if let Some(path) = writer.released.clone() {
            return Err(StateError::ShuttingDown { path }.into());
        }
        let current = self.current.load().table.version();
        if let Some(expected) = expected
            && expected != current
        {
            return Err(PublishError::Conflict { expected, current });
        }
        let version = current + 1;
        let (table, source) = match routes {
            NewRoutes::Document(text, format) => (load_routes(text, format, version)?, TableSource::AdminApi),
            NewRoutes::Specs(specs) => {
                let table = RoutingTable::compile(specs, version)?;
                writer.config_routes = RoutesDigest::of(specs);
                (table, TableSource::ConfigFile)
            }
        };
        let Some(state) = writer.state.clone() else {
            self.current.store(Arc::new(Snapshot::serving(
                table,
                &writer.addresses,
                &self.recorder,
                &self.lasting,
            )));
            writer.source = source;
            self.published.send_replace(version);
            return Ok(version);
        };
        let document = StateDocument::new(&table, source, writer.config_routes.clone());
        let path = state.path().to_owned();
        let current = Arc::clone(&self.current);
        let recorder = Arc::clone(&self.recorder);
        let lasting = Arc::clone(&self.lasting);
        // The write and the swap run to the end together on a blocking thread, with the writer
        // lock: an fsync never stalls a thread serving requests, and a caller that goes away
        // (a client hanging up on its PUT) cannot leave the file and the table in force apart.
        let swapped = tokio::task::spawn_blocking(move || {
            match (state.save(&document), source) {
                (Ok(()), _) => {}
                (Err(e), TableSource::ConfigFile) => forget(&state, &e),
                (Err(e), TableSource::AdminApi) => return Err(e),
            }
            current.store(Arc::new(Snapshot::serving(
                table,
                &writer.addresses,
                &recorder,
                &lasting,
            )));
            writer.source = source;
            Ok(())
        });
        finished(swapped.await, path)?;
        self.published.send_replace(version);
        Ok(version)
    }

    /// Takes note that the config file now holds `routes`, which the table in force already
    /// serves (so nothing is published): the state file is rewritten with their digest, so that
    /// a table the admin API publishes after this edit is still the one a restart serves.
    pub async fn config_routes_in_force(&self, routes: &[RouteSpec]) {
        let mut writer = Arc::clone(&self.writer).lock_owned().await;
        let digest = RoutesDigest::of(routes);
        if digest == writer.config_routes {
            return;
        }
        writer.config_routes = digest;
        let Some(state) = writer.state.clone() else {
            return;
        };
        let document = StateDocument::new(&self.current.load().table, writer.source, writer.config_routes.clone());
        let saved = tokio::task::spawn_blocking(move || {
            if let Err(e) = state.save(&document) {
                forget(&state, &e);
            }
            drop(writer);
        });
        if let Err(e) = saved.await
            && e.is_panic()
        {
            std::panic::resume_unwind(e.into_panic());
        }
    }

    /// Stops keeping tables and lets go of the state file and its lock (a proxy shutting down
    /// lets its successor take them at once).
    pub async fn release_state_file(&self) {
        let mut writer = self.writer.lock().await;
        if let Some(state) = writer.state.take() {
            writer.released = Some(state.path().to_owned());
        }
    }
}

/// After a config file table could not be kept: the state file must not outlive the edit.
fn forget(state: &StateFile, e: &StateError) {
    match state.remove() {
        Ok(()) => tracing::error!(
            "{e}; the config file's routes are served all the same, and the state file was removed, \
             so a restart serves the config file's routes too"
        ),
        Err(removing) => tracing::error!(
            "{e}; the config file's routes are served all the same, but the state file could not be \
             removed either ({removing}), so a restart may serve the older table it holds"
        ),
    }
}

/// The outcome of a blocking keep-and-swap: its own, a panic passed on, or the runtime shutting
/// down before it ran (then nothing was written and nothing swapped).
fn finished(
    joined: Result<Result<(), StateError>, tokio::task::JoinError>,
    path: std::path::PathBuf,
) -> Result<(), StateError> {
    match joined {
        Ok(outcome) => outcome,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(StateError::ShuttingDown { path }),
    }
}
