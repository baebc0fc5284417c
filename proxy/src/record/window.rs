//! Which one-second slices a `GET /stats` window covers: the last `window` seconds up to and
//! including the current one, cut at `since`.
//!
//! `since` arrives as wall-clock time (Unix ms) while slices are kept on the monotonic clock of
//! [`Instant`]; [`Since::from_unix_ms`] maps one onto the other with both clocks read at the same
//! moment, so it holds as long as the wall clock is not stepped between the request and `since`.

use std::ops::Range;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// The earliest moment a window may include, on the recorder's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Since {
    /// No bound but the window's length.
    Unbounded,
    /// Only slices that start at or after this instant: a slice that straddles it is left out
    /// whole, so that no request finished before it is counted. (Save one that was measured just
    /// before a slice boundary and recorded after its slot had moved on: the recorder counts a
    /// late measurement in the slot's current second, see `SlotState::record`.)
    At(Instant),
    /// A moment later than now: no slice is covered yet.
    Future,
}

impl Since {
    /// Maps `since_ms`, milliseconds since the Unix epoch, onto the monotonic clock, from `wall`
    /// and `now`: the wall clock and the monotonic clock read together, at the request.
    pub fn from_unix_ms(since_ms: u64, wall: SystemTime, now: Instant) -> Self {
        let Some(since) = UNIX_EPOCH.checked_add(Duration::from_millis(since_ms)) else {
            return Self::Future;
        };
        match wall.duration_since(since) {
            // Older than the monotonic clock itself: older than any slice.
            Ok(age) => now.checked_sub(age).map_or(Self::Unbounded, Self::At),
            Err(_) => Self::Future,
        }
    }
}

/// The slices a window covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Slices {
    /// Whole seconds since the recorder's start (empty when nothing is covered).
    pub(super) seconds: Range<u64>,
    /// How many seconds the window covers, those before the recorder's start included (they
    /// are covered, and saw nothing): 0 to `window_seconds`.
    pub(super) covered: u64,
}

impl Slices {
    /// The last `window_seconds` slices up to and including the one of `now`, of a recorder that
    /// started at `start`, less those that do not lie wholly at or after `since`.
    pub(super) fn of(start: Instant, window_seconds: u64, since: Since, now: Instant) -> Self {
        // Seconds relative to `start`, signed: a window or a `since` may reach back before it.
        let last = signed(now.saturating_duration_since(start).as_secs());
        let from_window = last + 1 - signed(window_seconds);
        let first = match since {
            Since::Unbounded => from_window,
            Since::At(at) if at >= start => from_window.max(signed(ceil_seconds(at - start))),
            // The slice of start − 1.5 s begins at start − 2 s, before `at`: the first one wholly
            // after it is the slice of start − 1 s.
            Since::At(at) => from_window.max(-signed(start.duration_since(at).as_secs())),
            Since::Future => last + 1,
        };
        let covered = u64::try_from(last + 1 - first).unwrap_or(0);
        let end = unsigned(last + 1);
        let seconds = if covered == 0 { end..end } else { unsigned(first)..end };
        Self { seconds, covered }
    }
}

/// Whole seconds, rounded up.
fn ceil_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// A count of seconds as a signed number; `Duration`s of `Instant`s fit with room to spare.
fn signed(seconds: u64) -> i64 {
    i64::try_from(seconds).unwrap_or(i64::MAX / 2)
}

/// A signed count of seconds since start, 0 for seconds before it (which hold no slice).
fn unsigned(seconds: i64) -> u64 {
    u64::try_from(seconds).unwrap_or(0)
}

#[cfg(test)]
mod tests;
