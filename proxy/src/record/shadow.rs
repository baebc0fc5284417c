//! The bound on a shadow series' copies in flight, and the counts of copies not sent: dropped
//! past the bound, or not made because the request's body was over `mirror.body.maxBytes`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use switchyard_config::{RouteName, TrackName};

/// Copies of one (route, track) in flight, and those not sent since the proxy started.
#[derive(Debug, Default)]
pub struct Gauge {
    in_flight: AtomicU32,
    dropped: AtomicU64,
    body_too_large: AtomicU64,
}

/// One copy's place under its gauge's bound, given back when dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Gauge>);

impl Gauge {
    /// A place for one more copy if fewer than `max` are in flight; else the copy is counted as
    /// dropped and `None` is returned.
    pub fn enter(self: &Arc<Self>, max: u32) -> Option<InFlight> {
        let entered = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .is_ok();
        if entered {
            Some(InFlight(Arc::clone(self)))
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// Copies in flight now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Copies dropped past the bound since the proxy started.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Counts a copy not made because its request's body was over the mirror's bound.
    pub fn count_body_too_large(&self) {
        self.body_too_large.fetch_add(1, Ordering::Relaxed);
    }

    /// Copies not made since the proxy started because their body was over the bound.
    pub fn body_too_large(&self) -> u64 {
        self.body_too_large.load(Ordering::Relaxed)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every (route, track)'s gauge; cold path only.
#[derive(Debug, Default)]
pub(super) struct Gauges(Mutex<HashMap<(RouteName, TrackName), Arc<Gauge>>>);

impl Gauges {
    /// The gauge of (route, track), made on first use.
    pub(super) fn get(&self, route: &RouteName, track: &TrackName) -> Arc<Gauge> {
        let mut gauges = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(gauges.entry((route.clone(), track.clone())).or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_past_the_bound_are_dropped_and_counted() {
        let gauge = Arc::new(Gauge::default());
        let first = gauge.enter(2).unwrap();
        let second = gauge.enter(2).unwrap();
        assert!(gauge.enter(2).is_none());
        assert_eq!((gauge.in_flight(), gauge.dropped()), (2, 1));
        drop(first);
        let third = gauge.enter(2).unwrap();
        assert_eq!((gauge.in_flight(), gauge.dropped()), (2, 1));
        drop((second, third));
        assert_eq!(gauge.in_flight(), 0);
    }
}
