//! The routing table in force, and the one function that replaces it.
//!
//! Every request loads the current [`Snapshot`] once and decides on it; a swap never touches a
//! snapshot a request already holds, so each request is decided by the version it started
//! under. [`Publisher::publish`] is the only writer: the admin API's `PUT /routes` and the
//! config file watch both go through it, one at a time. The [`state_file`] keeps the last table
//! across restarts.

pub mod state_file;

use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, Guard};
use http::HeaderValue;
use http::uri::Authority;
use switchyard_config::schema::RouteSpec;
use switchyard_config::{ConfigErrors, Format, RouteName, RoutingTable, TrackName, load_routes};

use crate::record::{Recorder, SlotId};
use crate::upstream::EndpointKey;

/// A compiled table plus what the hot path needs precomputed for each of its tracks.
#[derive(Debug)]
pub struct Snapshot {
    /// The compiled routes; `table.version()` is the snapshot's version.
    pub table: RoutingTable,
    /// `tracks[route][track]`.
    tracks: Box<[Box<[TrackPlan]>]>,
}

/// Per-track data computed once per table, so that a request copies nothing it can share.
#[derive(Debug)]
pub struct TrackPlan {
    /// Where the track's requests are measured.
    pub slot: SlotId,
    /// The track's name as a header value (`x-switchyard-track: canary`).
    pub header: HeaderValue,
    /// `endpoints[endpoint]`: the upstream address of each endpoint and its pool key.
    pub endpoints: Box<[(Authority, EndpointKey)]>,
}

impl Snapshot {
    fn new(table: RoutingTable, recorder: &Recorder) -> Self {
        let tracks = table
            .routes()
            .iter()
            .map(|route| {
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
                    })
                    .collect()
            })
            .collect();
        Self { table, tracks }
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
}

/// Holds the current snapshot and publishes new ones.
#[derive(Debug)]
pub struct Publisher {
    current: ArcSwap<Snapshot>,
    recorder: Arc<Recorder>,
    /// Serialises writers, so versions rise by one and `If-Match` checks hold until the swap.
    writer: Mutex<()>,
}

/// What a source of new routes hands to [`Publisher::publish`].
#[derive(Debug, Clone, Copy)]
pub enum NewRoutes<'a> {
    /// A routes document (`{"routes": [...]}`) in YAML or JSON, as `PUT /routes` receives it.
    Document(&'a str, Format),
    /// Routes already read from a configuration file.
    Specs(&'a [RouteSpec]),
}

impl Publisher {
    /// Starts with `table` in force.
    pub fn new(table: RoutingTable, recorder: Arc<Recorder>) -> Self {
        let snapshot = Snapshot::new(table, &recorder);
        Self {
            current: ArcSwap::from_pointee(snapshot),
            recorder,
            writer: Mutex::new(()),
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

    /// The recorder the snapshots' slots belong to.
    pub fn recorder(&self) -> &Arc<Recorder> {
        &self.recorder
    }

    /// Validates and compiles `routes` as the next version and swaps it in, if the current
    /// version is `expected` (when given). On any error the table in force stays.
    pub fn publish(&self, routes: NewRoutes<'_>, expected: Option<u64>) -> Result<u64, PublishError> {
        let _one_writer = self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = self.current.load().table.version();
        if let Some(expected) = expected
            && expected != current
        {
            return Err(PublishError::Conflict { expected, current });
        }
        let version = current + 1;
        let table = match routes {
            NewRoutes::Document(text, format) => load_routes(text, format, version)?,
            NewRoutes::Specs(specs) => RoutingTable::compile(specs, version)?,
        };
        self.current.store(Arc::new(Snapshot::new(table, &self.recorder)));
        Ok(version)
    }
}
