//! One shard's measurements: per slot, the dense histogram of the current second, a ring of sealed
//! seconds in sparse form, and the lifetime totals of every sealed second.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use hdrhistogram::Histogram;
use switchyard_config::stats::new_histogram;

use super::{ClientError, Outcome, TrackStats, UpstreamError};

/// How many sealed one-second slices a slot keeps besides its current second: enough for the
/// longest window (300 s) even when the current second is not yet in it.
pub(super) const SEALED_SECONDS: u64 = 301;

/// The state of the slots recorded by the threads that map to one shard.
#[derive(Default)]
pub(super) struct Shard {
    /// Indexed by `SlotId`; `None` until this shard records the slot.
    slots: Vec<Option<SlotState>>,
}

impl Shard {
    /// The slot's state, created on its first record in this shard (the only allocation outside
    /// a second's rollover).
    pub(super) fn slot_mut(&mut self, index: usize) -> &mut SlotState {
        if index >= self.slots.len() {
            self.slots.resize_with(index + 1, || None);
        }
        self.slots[index].get_or_insert_with(SlotState::new)
    }

    /// The slot's state, if this shard has recorded it.
    pub(super) fn slot(&self, index: usize) -> Option<&SlotState> {
        self.slots.get(index).and_then(Option::as_ref)
    }

    /// Whether this shard has recorded anything.
    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.slots.iter().all(Option::is_none)
    }
}

/// Everything but the histogram of a set of measurements.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(super) struct Counts {
    requests: u64,
    errors: u64,
    status_classes: [u64; 4],
    upstream_errors: [u64; 4],
    /// Not requests of the track: what clients did wrong on the route (see [`ClientError`]).
    client_errors: [u64; 3],
}

impl Counts {
    fn count(&mut self, outcome: &Outcome) {
        self.requests += 1;
        // 1xx and anything outside 100..=599 count as requests only.
        if let Some(class) = (outcome.status / 100).checked_sub(2).map(usize::from)
            && let Some(n) = self.status_classes.get_mut(class)
        {
            *n += 1;
        }
        // A response that broke off is an error whatever its status said.
        if (500..600).contains(&outcome.status) || outcome.upstream_error.is_some() {
            self.errors += 1;
        }
        if let Some(kind) = outcome.upstream_error {
            self.upstream_errors[match kind {
                UpstreamError::Connect => 0,
                UpstreamError::Timeout => 1,
                UpstreamError::Reset => 2,
                UpstreamError::Protocol => 3,
            }] += 1;
        }
    }

    fn count_client_error(&mut self, error: ClientError) {
        self.client_errors[error.index()] += 1;
    }

    fn add(&mut self, other: &Counts) {
        self.requests += other.requests;
        self.errors += other.errors;
        for (a, b) in self.status_classes.iter_mut().zip(other.status_classes) {
            *a += b;
        }
        for (a, b) in self.upstream_errors.iter_mut().zip(other.upstream_errors) {
            *a += b;
        }
        for (a, b) in self.client_errors.iter_mut().zip(other.client_errors) {
            *a += b;
        }
    }

    fn add_to(&self, stats: &mut TrackStats) {
        stats.requests += self.requests;
        stats.errors += self.errors;
        for (a, b) in stats.status_classes.iter_mut().zip(self.status_classes) {
            *a += b;
        }
        for (a, b) in stats.upstream_errors.iter_mut().zip(self.upstream_errors) {
            *a += b;
        }
        for (a, b) in stats.client_errors.iter_mut().zip(self.client_errors) {
            *a += b;
        }
    }
}

/// A sealed second.
struct Slice {
    /// Whole seconds since the recorder's start.
    second: u64,
    counts: Counts,
    latencies: SparseHistogram,
}

/// The non-empty buckets of a histogram, as `(value, count)` pairs in ascending value order, the
/// value being the bucket's highest equivalent value, so that recording it again lands in the same
/// bucket and merging stays exact.
///
/// Each pair is stored as two LEB128 varints, the value as the difference from the previous one:
/// neighbouring buckets are close and per-second counts small, so a bucket takes 2–4 bytes instead
/// of the 16 of a `(u64, u64)`. A busy slot fills hundreds to thousands of buckets a second, and a
/// slot keeps 301 seconds per shard.
///
/// Shared, so that a reader can take the slices it needs under the shard's lock and decode them
/// after releasing it.
#[derive(Clone)]
pub(super) struct SparseHistogram(Arc<[u8]>);

impl SparseHistogram {
    fn new(h: &Histogram<u64>) -> Self {
        let mut bytes = Vec::new();
        let mut previous = 0;
        for v in h.iter_recorded() {
            write_varint(&mut bytes, v.value_iterated_to() - previous);
            write_varint(&mut bytes, v.count_since_last_iteration());
            previous = v.value_iterated_to();
        }
        Self(bytes.into())
    }

    /// Records every bucket into `target`, which must have [`new_histogram`]'s bounds.
    pub(super) fn add_to(&self, target: &mut Histogram<u64>) {
        let mut bytes = &self.0[..];
        let mut value = 0;
        while !bytes.is_empty() {
            value += read_varint(&mut bytes);
            target.saturating_record_n(value, read_varint(&mut bytes));
        }
    }
}

fn write_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Reads a varint [`write_varint`] wrote, advancing `bytes`.
fn read_varint(bytes: &mut &[u8]) -> u64 {
    let mut n = 0;
    for (i, &b) in bytes.iter().enumerate() {
        n |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            *bytes = &bytes[i + 1..];
            return n;
        }
    }
    unreachable!("a sparse histogram ends with a complete varint");
}

/// One slot in one shard.
pub(super) struct SlotState {
    /// The second `current` holds, in whole seconds since the recorder's start.
    second: u64,
    current: Counts,
    /// Dense: recording is an index computation and an increment.
    current_histogram: Histogram<u64>,
    /// Oldest first; at most [`SEALED_SECONDS`] slices, all older than `second`.
    sealed: VecDeque<Slice>,
    /// Every sealed second, including those dropped from `sealed`; the current second is added
    /// on read. Folding at rollover instead of recording inline keeps one histogram record per
    /// request on the hot path.
    lifetime: Counts,
    lifetime_histogram: Histogram<u64>,
}

impl SlotState {
    fn new() -> Self {
        Self {
            second: 0,
            current: Counts::default(),
            current_histogram: new_histogram(),
            sealed: VecDeque::new(),
            lifetime: Counts::default(),
            lifetime_histogram: new_histogram(),
        }
    }

    /// Counts `outcome` in `second` (whole seconds since start). A second earlier than the
    /// current one (a measurement taken just before another task on this thread rolled the slot
    /// over) is counted in the current second: sealed seconds are immutable.
    pub(super) fn record(&mut self, outcome: &Outcome, latency_us: u64, second: u64) {
        if second > self.second {
            self.roll_over(second);
        }
        self.current.count(outcome);
        self.current_histogram.saturating_record(latency_us);
    }

    /// Counts a client's error in `second`, as [`SlotState::record`] counts a request.
    pub(super) fn record_client_error(&mut self, error: ClientError, second: u64) {
        if second > self.second {
            self.roll_over(second);
        }
        self.current.count_client_error(error);
    }

    /// Seals the current second (if it saw anything), drops slices too old for any window and
    /// starts `second`.
    fn roll_over(&mut self, second: u64) {
        if self.current != Counts::default() {
            self.sealed.push_back(Slice {
                second: self.second,
                counts: self.current,
                latencies: SparseHistogram::new(&self.current_histogram),
            });
            self.lifetime.add(&self.current);
            add_histogram(&mut self.lifetime_histogram, &self.current_histogram);
            self.current = Counts::default();
            self.current_histogram.reset();
        }
        let oldest = second.saturating_sub(SEALED_SECONDS);
        while self.sealed.front().is_some_and(|s| s.second < oldest) {
            self.sealed.pop_front();
        }
        self.second = second;
    }

    /// Adds the seconds in `seconds` to `stats`, except the latencies of sealed seconds: those
    /// go to `sealed`, for the caller to add once it has released the shard's lock.
    pub(super) fn merge_window(&self, seconds: &Range<u64>, stats: &mut TrackStats, sealed: &mut Vec<SparseHistogram>) {
        for slice in self.sealed.iter().filter(|s| seconds.contains(&s.second)) {
            slice.counts.add_to(stats);
            sealed.push(slice.latencies.clone());
        }
        if seconds.contains(&self.second) {
            self.current.add_to(stats);
            add_histogram(&mut stats.histogram, &self.current_histogram);
        }
    }

    /// Adds everything this slot ever recorded to `stats`.
    pub(super) fn merge_lifetime(&self, stats: &mut TrackStats) {
        self.lifetime.add_to(stats);
        self.current.add_to(stats);
        add_histogram(&mut stats.histogram, &self.lifetime_histogram);
        add_histogram(&mut stats.histogram, &self.current_histogram);
    }

    /// How many sealed slices the slot holds.
    #[cfg(test)]
    pub(super) fn sealed_len(&self) -> usize {
        self.sealed.len()
    }
}

/// Adds histograms that share [`new_histogram`]'s bounds: every value of `source` fits in
/// `target`, so the addition cannot fail.
fn add_histogram(target: &mut Histogram<u64>, source: &Histogram<u64>) {
    if let Err(e) = target.add(source) {
        unreachable!("histograms with the same bounds always add: {e:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_config::stats::HIGHEST_LATENCY_US;

    #[test]
    fn sparse_histogram_round_trips_extreme_values() {
        let mut h = new_histogram();
        for (value, count) in [
            (0, 1),
            (1, u64::MAX / 4),
            (2047, 127),
            (2048, 128),
            (HIGHEST_LATENCY_US, 1),
        ] {
            h.record_n(value, count).unwrap();
        }
        let mut round_trip = new_histogram();
        SparseHistogram::new(&h).add_to(&mut round_trip);
        assert_eq!(round_trip, h);
        let mut empty = new_histogram();
        SparseHistogram::new(&empty.clone()).add_to(&mut empty);
        assert!(empty.is_empty());
    }
}
