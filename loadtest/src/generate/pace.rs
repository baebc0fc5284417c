//! The open loop's pacer: a plain thread that hands each slot to its connection at the slot's
//! intended time.
//!
//! Why not a tokio timer per connection: tokio's timer wheel ticks once a millisecond and rounds
//! every deadline up to the next tick, so each request would leave about 1 ms late on average.
//! Latency counts from the intended time, so that lag would be reported as server latency and
//! swamp the sub-millisecond answers of a proxy. A thread sleeping with `nanosleep` wakes within
//! tens of µs, and the hand-over (an unbounded channel) wakes the connection's task at once.
//! The lag that remains is measured and reported as `sendLagUs`.

use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

use super::schedule::{Schedule, lane_of};

/// Sends each slot's intended time to `lanes[lane_of(slot, lanes.len())]` when it falls due,
/// until the end of the window or until the connections are gone. Blocking: run it on its own
/// thread.
pub(crate) fn pace(schedule: Schedule, lanes: &[UnboundedSender<Instant>]) {
    for slot in 0.. {
        let intended = schedule.intended(slot);
        if intended >= schedule.window.end {
            return;
        }
        let wait = intended.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        // A busy connection queues the slot; it leaves late, and its latency shows it.
        if lanes[lane_of(slot, lanes.len())].send(intended).is_err() {
            return;
        }
    }
}
