//! Inline per-track measurement: the last stage of the request path. Every finished request is
//! counted and its latency recorded per (route, track), so the rollout controller can compare a
//! canary with its stable track.
//!
//! - [`Recorder::slot`] (cold, at table publish) turns names into a [`SlotId`].
//! - [`Recorder::record`] (hot, once per request) takes one uncontended lock: each thread always
//!   uses the same shard.
//! - [`Recorder::window`] merges the last seconds, from a [`Since`] on, for the admin API's
//!   `GET /stats` ([`WindowStats::to_document`]); [`Recorder::totals`] gives lifetime totals for
//!   `/stats` and `/metrics` ([`metric_families`]).
//!
//! ```
//! use std::time::Duration;
//! use switchyard_config::{RouteName, TrackName};
//! use switchyard_proxy::record::{Outcome, Recorder, Since};
//! use tokio::time::Instant;
//!
//! let start = Instant::now();
//! let recorder = Recorder::new(8, start);
//! let (route, track) = (RouteName::from("checkout"), TrackName::from("canary"));
//! let slot = recorder.slot(&route, &track);
//! let ok = Outcome { status: 200, latency: Duration::from_millis(3), upstream_error: None };
//! recorder.record(slot, &ok, start + Duration::from_millis(1500));
//!
//! let slots = [(route, track, slot)];
//! let now = start + Duration::from_secs(2);
//! let stats = recorder.window(&slots, Duration::from_secs(10), Since::Unbounded, now);
//! assert_eq!(stats.routes["checkout"]["canary"].requests, 1);
//! // From the start of the second the request finished in: it is counted.
//! let since = Since::At(start + Duration::from_secs(1));
//! assert_eq!(recorder.window(&slots, Duration::from_secs(10), since, now).routes["checkout"]["canary"].requests, 1);
//! // From a moment within that second: the second is left out whole.
//! let since = Since::At(start + Duration::from_millis(1001));
//! let stats = recorder.window(&slots, Duration::from_secs(10), since, now);
//! assert_eq!((stats.window_seconds, stats.routes["checkout"]["canary"].requests), (1, 0));
//! ```

mod document;
mod metrics;
mod shadow;
mod shard;
#[cfg(test)]
mod tests;
mod window;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;
use switchyard_config::stats::{MAX_WINDOW_SECONDS, new_histogram};
use switchyard_config::{RouteName, TrackName};
use tokio::time::Instant;

pub use metrics::{
    EndpointHealthRow, ShadowDropped, dns_families, endpoint_families, metric_families, route_counters,
    shadow_metric_families,
};
pub use shadow::{Gauge, InFlight};
pub use window::Since;

use shard::{Shard, SlotState, SparseHistogram};
use window::Slices;

/// Measures finished requests per (route, track). `Send + Sync`: share it through an `Arc`.
///
/// State is sharded so that no lock is shared by worker threads: a thread is assigned a shard on
/// its first record (round-robin) and always locks that one. Readers lock each shard briefly to
/// merge.
///
/// Memory, per slot and per shard that recorded it: two dense histograms (current second and
/// lifetime, 17 408 buckets × 8 bytes = 136 KiB each) plus, for each of the last 301 seconds with
/// traffic, ≈ 100 bytes and ≈ 2 bytes per non-empty histogram bucket (≈ 1.8 KB for a second of
/// 1 000 requests). When a record arrives for a later second than its slot's current one, the
/// current second is sealed into that compact form, seconds more than 301 s old are dropped and
/// the dense histogram is cleared.
pub struct Recorder {
    /// Seconds are counted from here: a one-second slice is `[start + k s, start + (k+1) s)`.
    start: Instant,
    shards: Box<[PaddedShard]>,
    /// Cold path only. A track's shadow series (copies of requests sent to it by a route's
    /// mirror) has a slot of its own, beside its primary series.
    slots: Mutex<HashMap<(RouteName, TrackName, Series), SlotId>>,
    /// The in-flight bound and dropped count of each (route, track)'s copies.
    gauges: shadow::Gauges,
}

/// Which of a track's series a slot measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Series {
    /// The requests whose answers the clients got.
    Primary,
    /// Copies of requests sent by a route's mirror, whose answers were discarded.
    Shadow,
}

/// A shard on its own cache lines (128 bytes covers adjacent-line prefetching), so that two
/// threads' shards never share a line.
#[repr(align(128))]
#[derive(Default)]
struct PaddedShard(Mutex<Shard>);

impl PaddedShard {
    /// A panic while a shard was locked leaves at most one request half-counted; keep measuring
    /// rather than fail every later request.
    fn lock(&self) -> MutexGuard<'_, Shard> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Which shard the current thread uses: its number, in order of first record, modulo the shard
/// count.
fn thread_shard(shards: usize) -> usize {
    static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static THREAD: usize = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
    }
    THREAD.with(|n| *n) % shards
}

/// A (route, track) pair's index in a [`Recorder`], from [`Recorder::slot`]. Only meaningful for
/// the recorder that issued it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SlotId(u32);

/// Why the proxy got no response from an upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamError {
    /// The connection could not be established (refused, unreachable, TLS handshake failed).
    Connect,
    /// No response in time.
    Timeout,
    /// The connection closed or reset before a complete response.
    Reset,
    /// The upstream broke HTTP/1.1 framing: `Content-Length` with `Transfer-Encoding`, an
    /// invalid length, a malformed chunk, a body cut short, or a response that is not HTTP.
    Protocol,
}

impl UpstreamError {
    /// The kind's name in `/stats`, metric labels and the access log.
    pub fn name(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Reset => "reset",
            Self::Protocol => "protocol",
        }
    }
}

/// What a client did wrong on a route. Counted per route, never in a track's requests, errors
/// or latency: a track is judged only by what its upstream did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// A request the proxy refused: bad framing (`400`, `501`), a bad `Host` or path (`400`).
    Malformed,
    /// A request whose body stopped arriving for `timeouts.requestBodyIdle`, or came slower than
    /// `limits.requestBodyMinRate` (`408`).
    Timeout,
    /// A client that left before its request was answered.
    Aborted,
}

impl ClientError {
    /// Every kind, in the order of [`TrackStats::client_errors`].
    pub const ALL: [ClientError; 3] = [Self::Malformed, Self::Timeout, Self::Aborted];

    /// The kind's name in `/stats` and in metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Timeout => "timeout",
            Self::Aborted => "aborted",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Malformed => 0,
            Self::Timeout => 1,
            Self::Aborted => 2,
        }
    }
}

/// How one request ended.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    /// The status sent downstream, including the proxy's own (502 for connect or reset errors,
    /// 504 for timeouts, 503 when no endpoint is available): 5xx count as errors.
    pub status: u16,
    /// From the request's arrival to the end of the response, as the proxy saw it. Recorded in
    /// µs; above 60 s it is recorded as 60 s.
    pub latency: Duration,
    /// Set when the status was generated by the proxy because the upstream failed.
    pub upstream_error: Option<UpstreamError>,
}

/// Merged measurements of some slots, by route then track.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowStats {
    /// The window's length in whole seconds (0..=300: 0 when `since` left no whole second);
    /// 0 for lifetime totals.
    pub window_seconds: u64,
    /// Every requested slot, with zeros if it saw no request.
    pub routes: BTreeMap<RouteName, BTreeMap<TrackName, TrackStats>>,
}

/// Merged measurements of one (route, track).
#[derive(Clone, Debug, PartialEq)]
pub struct TrackStats {
    /// Finished requests, whatever their status.
    pub requests: u64,
    /// Requests answered with a 5xx status, the proxy's own included.
    pub errors: u64,
    /// Requests by status class: `[2xx, 3xx, 4xx, 5xx]`. 1xx (and out-of-range statuses) count
    /// only in `requests`.
    pub status_classes: [u64; 4],
    /// Upstream failures by kind: `[connect, timeout, reset, protocol]`.
    pub upstream_errors: [u64; 4],
    /// Client errors on the slot's route that were decided to this track, by kind
    /// (`[malformed, timeout, aborted]`, as [`ClientError::ALL`]). Not requests of the track:
    /// `/stats` and `/metrics` give them per route.
    pub client_errors: [u64; 3],
    /// Latency in µs, 1 µs to 60 s, 3 significant digits; one count per request.
    pub histogram: Histogram<u64>,
}

/// A route's client errors, by kind as [`ClientError::ALL`]: those recorded on each of its
/// tracks' slots (the track a refused request was decided to), added up.
fn route_client_errors(tracks: &BTreeMap<TrackName, TrackStats>) -> [u64; 3] {
    let mut sum = [0u64; 3];
    for stats in tracks.values() {
        for (total, n) in sum.iter_mut().zip(stats.client_errors) {
            *total += n;
        }
    }
    sum
}

impl TrackStats {
    /// No requests, and an empty histogram with the recorder's bounds.
    pub fn empty() -> Self {
        Self {
            requests: 0,
            errors: 0,
            status_classes: [0; 4],
            upstream_errors: [0; 4],
            client_errors: [0; 3],
            histogram: new_histogram(),
        }
    }
}

impl Recorder {
    /// A recorder with `shards` shards (at least 1; `2 ×` worker threads keeps shards uncontended),
    /// counting seconds from `start`.
    pub fn new(shards: usize, start: Instant) -> Self {
        Self {
            start,
            shards: (0..shards.max(1)).map(|_| PaddedShard::default()).collect(),
            slots: Mutex::default(),
            gauges: shadow::Gauges::default(),
        }
    }

    /// Cold path (at table publish): the slot for (route, track). The same names always get the
    /// same slot, for the life of the recorder.
    pub fn slot(&self, route: &RouteName, track: &TrackName) -> SlotId {
        self.slot_of(route, track, Series::Primary)
    }

    /// Cold path (at table publish): the slot of (route, track)'s shadow series, apart from its
    /// primary one, and the gauge that bounds and counts its copies. The same names always get
    /// the same slot and gauge, for the life of the recorder, so a copy in flight across a
    /// table swap still counts against the bound.
    pub fn shadow(&self, route: &RouteName, track: &TrackName) -> (SlotId, Arc<Gauge>) {
        (
            self.slot_of(route, track, Series::Shadow),
            self.gauges.get(route, track),
        )
    }

    fn slot_of(&self, route: &RouteName, track: &TrackName, series: Series) -> SlotId {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let next = slots.len();
        *slots.entry((route.clone(), track.clone(), series)).or_insert_with(|| {
            SlotId(u32::try_from(next).unwrap_or_else(|_| unreachable!("more than 2^32 (route, track) pairs")))
        })
    }

    /// Hot path: counts `outcome` in the second of `at` (the instant the request finished).
    /// Allocation-free unless the second changed since this thread's last record of the slot, or
    /// this is the thread's first record of the slot.
    pub fn record(&self, slot: SlotId, outcome: &Outcome, at: Instant) {
        let second = self.second(at);
        let latency_us = u64::try_from(outcome.latency.as_micros()).unwrap_or(u64::MAX);
        let shard = &self.shards[thread_shard(self.shards.len())];
        shard.lock().slot_mut(slot.index()).record(outcome, latency_us, second);
    }

    /// Counts a client's `error` on the slot's route, in the second of `at`; the slot's track
    /// is not charged with it (see [`ClientError`]).
    pub fn record_client_error(&self, slot: SlotId, error: ClientError, at: Instant) {
        let second = self.second(at);
        let shard = &self.shards[thread_shard(self.shards.len())];
        shard.lock().slot_mut(slot.index()).record_client_error(error, second);
    }

    /// Merged stats of the last `window` whole seconds up to and including the second of `now`,
    /// less the seconds that do not lie wholly at or after `since`, for the given slots, over
    /// all shards. `window` is rounded down to whole seconds and clamped to 1..=300 s; the
    /// result's `window_seconds` is how many seconds remain (0 when `since` leaves none). Every
    /// slot appears in the result, with zeros if it saw nothing; a (route, track) listed twice
    /// is counted once.
    pub fn window(
        &self,
        slots: &[(RouteName, TrackName, SlotId)],
        window: Duration,
        since: Since,
        now: Instant,
    ) -> WindowStats {
        let window_seconds = window.as_secs().clamp(1, MAX_WINDOW_SECONDS);
        let Slices { seconds, covered } = Slices::of(self.start, window_seconds, since, now);
        self.merge(covered, slots, |state, stats, sealed| {
            state.merge_window(&seconds, stats, sealed)
        })
    }

    /// Lifetime totals for the given slots (for `/metrics`), with `window_seconds` 0. Every slot
    /// appears in the result, with zeros if it saw nothing; a (route, track) listed twice is
    /// counted once.
    pub fn totals(&self, slots: &[(RouteName, TrackName, SlotId)]) -> WindowStats {
        self.merge(0, slots, |state, stats, _| state.merge_lifetime(stats))
    }

    /// Whole seconds from start to `at` (0 before start).
    fn second(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.start).as_secs()
    }

    /// Merges every requested slot of every shard. A shard is locked once per slot, and sealed
    /// seconds are decoded after unlocking, so that a worker thread waits at most for one slot's
    /// copy (one dense histogram addition), never for a whole merge.
    fn merge(
        &self,
        window_seconds: u64,
        slots: &[(RouteName, TrackName, SlotId)],
        merge: impl Fn(&SlotState, &mut TrackStats, &mut Vec<SparseHistogram>),
    ) -> WindowStats {
        let mut seen = HashSet::new();
        let slots: Vec<_> = slots
            .iter()
            .filter(|(route, track, _)| seen.insert((route, track)))
            .collect();
        let mut merged: Vec<TrackStats> = slots.iter().map(|_| TrackStats::empty()).collect();
        let mut sealed = Vec::new();
        for shard in &self.shards {
            for ((_, _, slot), stats) in slots.iter().zip(&mut merged) {
                if let Some(state) = shard.lock().slot(slot.index()) {
                    merge(state, stats, &mut sealed);
                }
                for slice in sealed.drain(..) {
                    slice.add_to(&mut stats.histogram);
                }
            }
        }
        let mut routes: BTreeMap<RouteName, BTreeMap<TrackName, TrackStats>> = BTreeMap::new();
        for ((route, track, _), stats) in slots.into_iter().zip(merged) {
            routes.entry(route.clone()).or_default().insert(track.clone(), stats);
        }
        WindowStats { window_seconds, routes }
    }
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner).len();
        f.debug_struct("Recorder")
            .field("start", &self.start)
            .field("shards", &self.shards.len())
            .field("slots", &slots)
            .finish()
    }
}

impl SlotId {
    fn index(self) -> usize {
        self.0 as usize
    }
}
