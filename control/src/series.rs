//! The series the dashboard charts: per rollout, one [`Point`] per observation the analysis
//! judged (both tracks over the measurement's window), for the last hour and at most
//! [`CAPACITY`] points, in memory. Served by `GET /rollouts/NAME/measurements`.
//!
//! It is kept in memory only: a controller that restarts, or a replica that takes over, starts
//! an empty series (the rollout's state and history are what survive). A rollout applied again
//! under the same name starts a new one; a deleted rollout's goes with it.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::analyze::Outcome;
use crate::controller::TrackFigures;

/// How far back a series reaches, ms: an hour.
pub const KEEP_MS: u64 = 3_600_000;

/// The most points a series holds: an hour at one measurement a second. An analysis measuring
/// more often keeps less than an hour.
pub const CAPACITY: usize = 3_600;

/// One observation of both tracks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Point {
    /// When it was measured (ms since the Unix epoch).
    pub at: u64,
    /// How the measurement came out.
    pub outcome: Outcome,
    /// The baseline over the measurement's window.
    pub baseline: TrackFigures,
    /// The candidate over the measurement's window.
    pub candidate: TrackFigures,
}

/// A rollout's points, oldest first, at most [`CAPACITY`] and none older than [`KEEP_MS`]
/// before the newest.
#[derive(Debug, Clone, Default)]
pub struct Series {
    points: VecDeque<Point>,
}

impl Series {
    /// Adds the newest point, dropping what it pushes out of the hour or past the capacity. A
    /// point older than the newest one kept is dropped: the series stays in time order.
    pub fn push(&mut self, point: Point) {
        if self.points.back().is_some_and(|last| point.at < last.at) {
            return;
        }
        let oldest = point.at.saturating_sub(KEEP_MS);
        self.points.push_back(point);
        while self.points.len() > CAPACITY || self.points.front().is_some_and(|p| p.at < oldest) {
            self.points.pop_front();
        }
    }

    /// The points measured after `since` (ms since the Unix epoch), or all of them, oldest
    /// first.
    pub fn after(&self, since: Option<u64>) -> Vec<Point> {
        let from = since.map_or(0, |since| self.points.partition_point(|p| p.at <= since));
        self.points.range(from..).cloned().collect()
    }
}

/// `GET /rollouts/NAME/measurements`: what the dashboard charts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Measurements {
    /// The rollout.
    pub name: String,
    /// The baseline track's name.
    pub baseline: String,
    /// The candidate track's name.
    pub candidate: String,
    /// How often the rollout's analysis measures now, ms (the shortest of the background
    /// analysis and the current analysis step); `None` while nothing measures.
    pub interval_ms: Option<u64>,
    /// How far back the series reaches, ms ([`KEEP_MS`]).
    pub kept_ms: u64,
    /// The most points it holds ([`CAPACITY`]).
    pub capacity: usize,
    /// The points asked for, oldest first.
    pub points: Vec<Point>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(at: u64) -> Point {
        let figures = TrackFigures {
            requests: 10,
            rps: 1.0,
            error_rate: 0.0,
            p50_ms: Some(1.0),
            p99_ms: Some(2.0),
        };
        Point {
            at,
            outcome: Outcome::Pass,
            baseline: figures.clone(),
            candidate: figures,
        }
    }

    fn times(points: &[Point]) -> Vec<u64> {
        points.iter().map(|p| p.at).collect()
    }

    #[test]
    fn a_series_keeps_the_last_hour() {
        let mut s = Series::default();
        for minute in 0..=90 {
            s.push(point(minute * 60_000));
        }
        let kept = s.after(None);
        assert_eq!(kept.first().map(|p| p.at), Some(30 * 60_000));
        assert_eq!(kept.last().map(|p| p.at), Some(90 * 60_000));
        assert_eq!(kept.len(), 61);
    }

    #[test]
    fn a_series_holds_at_most_its_capacity() {
        let mut s = Series::default();
        // Ten a second: the capacity, not the hour, is the bound.
        for i in 0..(2 * CAPACITY as u64) {
            s.push(point(i * 100));
        }
        assert_eq!(s.after(None).len(), CAPACITY);
        assert_eq!(s.after(None)[0].at, CAPACITY as u64 * 100);
    }

    #[test]
    fn after_gives_only_later_points_in_order() {
        let mut s = Series::default();
        for at in [1_000, 2_000, 3_000, 4_000] {
            s.push(point(at));
        }
        // Out of order: dropped.
        s.push(point(2_500));
        assert_eq!(times(&s.after(None)), [1_000, 2_000, 3_000, 4_000]);
        assert_eq!(times(&s.after(Some(2_000))), [3_000, 4_000]);
        assert_eq!(times(&s.after(Some(2_001))), [3_000, 4_000]);
        assert_eq!(times(&s.after(Some(0))), [1_000, 2_000, 3_000, 4_000]);
        assert!(s.after(Some(4_000)).is_empty());
        assert!(Series::default().after(None).is_empty());
    }
}
