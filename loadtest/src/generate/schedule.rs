//! The plan, decided before any I/O: when each open-loop request is meant to leave, which
//! connection carries it, and which user it speaks for. Values in, values out, no clock read.

use std::time::Duration;

use tokio::time::Instant;

/// The run's clock: a warm-up, then the measured window, then the end.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    /// When the first request may leave (all connections are open by then).
    pub start: Instant,
    /// Requests meant to leave before this are sent but not recorded.
    pub warm_end: Instant,
    /// Nothing is sent after this, and anything still unanswered is abandoned.
    pub end: Instant,
}

impl Window {
    /// `warmup` then `duration`, from `start`.
    pub fn new(start: Instant, warmup: Duration, duration: Duration) -> Self {
        let warm_end = start + warmup;
        Self {
            start,
            warm_end,
            end: warm_end + duration,
        }
    }

    /// Whether a request meant to leave at `intended` is measured.
    pub fn records(&self, intended: Instant) -> bool {
        intended >= self.warm_end && intended < self.end
    }
}

/// An open-loop schedule: request `slot` is meant to leave at `start + slot / rate`, whatever
/// happened to the ones before it. Absolute times, so a late request never shifts the later ones.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    /// The clock the slots count from.
    pub window: Window,
    /// Requests per second, > 0.
    pub rate: f64,
}

impl Schedule {
    /// When request `slot` is meant to leave.
    pub fn intended(&self, slot: u64) -> Instant {
        self.window.start + Duration::from_secs_f64(slot as f64 / self.rate)
    }

    /// How many slots are meant to leave before `t`: the first slot at or after `t`.
    pub fn slots_before(&self, t: Instant) -> u64 {
        let secs = t.saturating_duration_since(self.window.start).as_secs_f64();
        // The estimate can be off by one where `intended` rounds to the nanosecond; settle it
        // against `intended` itself so counting and sending agree exactly.
        let mut n = (secs * self.rate).ceil() as u64;
        while n > 0 && self.intended(n - 1) >= t {
            n -= 1;
        }
        while self.intended(n) < t {
            n += 1;
        }
        n
    }

    /// How many requests are meant to leave in the measured window.
    pub fn scheduled(&self) -> u64 {
        self.slots_before(self.window.end) - self.slots_before(self.window.warm_end)
    }
}

/// Slot `slot` goes to connection `slot mod connections`: round robin, so the load is spread
/// evenly and every connection keeps the same pace.
pub(crate) fn lane_of(slot: u64, connections: usize) -> usize {
    (slot % connections as u64) as usize
}

/// Draws user ids 1..=count (`x-user-id: user-K`) from a seeded SplitMix64 stream. Each
/// connection has its own stream, derived from the seed and the connection's index, so a run is
/// repeatable without the connections sharing (and contending on) one generator.
#[derive(Debug, Clone)]
pub(crate) struct Users {
    count: u32,
    state: u64,
}

impl Users {
    /// The stream of connection `connection`; `count` 0 means no user header.
    pub fn new(count: u32, seed: u64, connection: usize) -> Self {
        let mut users = Self {
            count,
            state: seed ^ (connection as u64).wrapping_mul(0xA076_1D64_78BD_642F),
        };
        // One draw mixes the index into every bit, so neighbouring streams start far apart.
        users.next_u64();
        users
    }

    /// The next user id, or `None` when the run has no users.
    pub fn next_user(&mut self) -> Option<u32> {
        if self.count == 0 {
            return None;
        }
        // Lemire's multiply-shift: uniform enough for 2^32 users, no division.
        let k = (u128::from(self.next_u64()) * u128::from(self.count)) >> 64;
        Some(k as u32 + 1)
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(rate: f64, warmup_ms: u64, duration_ms: u64) -> Schedule {
        let window = Window::new(
            Instant::now(),
            Duration::from_millis(warmup_ms),
            Duration::from_millis(duration_ms),
        );
        Schedule { window, rate }
    }

    #[test]
    fn slots_are_absolute_times_from_the_start() {
        let s = schedule(200.0, 0, 1000);
        assert_eq!(s.intended(0), s.window.start);
        assert_eq!(s.intended(200) - s.window.start, Duration::from_secs(1));
        assert_eq!(s.intended(3) - s.window.start, Duration::from_millis(15));
    }

    #[test]
    fn the_window_holds_rate_times_duration_slots() {
        assert_eq!(schedule(200.0, 0, 1000).scheduled(), 200);
        assert_eq!(schedule(200.0, 500, 1000).scheduled(), 200);
        assert_eq!(schedule(3.0, 0, 1000).scheduled(), 3);
        assert_eq!(schedule(0.5, 0, 3000).scheduled(), 2);
        assert_eq!(schedule(1000.0, 2000, 10).scheduled(), 10);
    }

    #[test]
    fn counting_agrees_with_sending() {
        for rate in [1.0, 3.0, 7.0, 333.3, 1e4] {
            let s = schedule(rate, 0, 1000);
            let n = s.slots_before(s.window.end);
            assert!(s.intended(n) >= s.window.end, "rate {rate}");
            assert!(n == 0 || s.intended(n - 1) < s.window.end, "rate {rate}");
        }
    }

    #[test]
    fn connections_share_the_slots_round_robin() {
        let lanes: Vec<usize> = (0..7).map(|slot| lane_of(slot, 3)).collect();
        assert_eq!(lanes, [0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn the_window_records_after_warmup_until_the_end() {
        let w = Window::new(Instant::now(), Duration::from_secs(1), Duration::from_secs(2));
        assert!(!w.records(w.start));
        assert!(w.records(w.warm_end));
        assert!(!w.records(w.end));
    }

    #[test]
    fn users_are_in_range_repeatable_and_spread() {
        let draw = |seed, connection| {
            let mut users = Users::new(10, seed, connection);
            (0..1000).map(|_| users.next_user().unwrap()).collect::<Vec<_>>()
        };
        let a = draw(7, 0);
        assert_eq!(a, draw(7, 0));
        assert_ne!(a, draw(7, 1));
        assert_ne!(a, draw(8, 0));
        assert!(a.iter().all(|k| (1..=10).contains(k)));
        for k in 1..=10 {
            let n = a.iter().filter(|&&x| x == k).count();
            assert!((50..=150).contains(&n), "user-{k} drawn {n} times in 1000");
        }
        assert_eq!(Users::new(0, 7, 0).next_user(), None);
    }
}
