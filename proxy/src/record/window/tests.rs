//! A window cut at `since`, with injected instants: which slices it keeps, what it says it
//! covers, and how a wall-clock `since` lands on the slice clock.

use std::time::{Duration, UNIX_EPOCH};

use switchyard_config::{RouteName, TrackName};
use tokio::time::Instant;

use super::{Since, Slices};
use crate::record::{Outcome, Recorder, SlotId};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// A recorder with one track that saw one request in each of seconds 0 to 9 (at k s + 500 ms),
/// and its slots.
fn ten_seconds() -> (Recorder, Instant, Vec<(RouteName, TrackName, SlotId)>) {
    let start = Instant::now();
    let recorder = Recorder::new(1, start);
    let (route, track) = (RouteName::from("checkout"), TrackName::from("canary"));
    let slot = recorder.slot(&route, &track);
    let ok = Outcome {
        status: 200,
        latency: ms(1),
        upstream_error: None,
    };
    for k in 0..10 {
        recorder.record(slot, &ok, start + secs(k) + ms(500));
    }
    (recorder, start, vec![(route, track, slot)])
}

/// (windowSeconds, requests) of the canary over `window` seconds from `since`, at `now`.
fn window(
    recorder: &Recorder,
    slots: &[(RouteName, TrackName, SlotId)],
    window: u64,
    since: Since,
    now: Instant,
) -> (u64, u64) {
    let stats = recorder.window(slots, secs(window), since, now);
    (stats.window_seconds, stats.routes["checkout"]["canary"].requests)
}

#[test]
fn slices_before_since_are_left_out() {
    let (recorder, start, slots) = ten_seconds();
    let now = start + secs(9) + ms(700);
    assert_eq!(window(&recorder, &slots, 300, Since::Unbounded, now), (300, 10));
    // Exactly on a slice boundary: that slice and the later ones.
    assert_eq!(window(&recorder, &slots, 300, Since::At(start + secs(6)), now), (4, 4));
    assert_eq!(window(&recorder, &slots, 300, Since::At(start), now), (10, 10));
}

#[test]
fn a_slice_straddling_since_is_left_out_whole() {
    let (recorder, start, slots) = ten_seconds();
    let now = start + secs(9) + ms(700);
    // Second 5's request came at 5.5 s, after `since`, but the slice began before it: out.
    assert_eq!(
        window(&recorder, &slots, 300, Since::At(start + secs(5) + ms(200)), now),
        (4, 4)
    );
    assert_eq!(
        window(&recorder, &slots, 300, Since::At(start + secs(5) + ms(1)), now),
        (4, 4)
    );
    // Within the current second: nothing whole is left.
    assert_eq!(
        window(&recorder, &slots, 300, Since::At(start + secs(9) + ms(1)), now),
        (0, 0)
    );
    assert_eq!(window(&recorder, &slots, 300, Since::At(now), now), (0, 0));
}

#[test]
fn since_in_the_future_covers_nothing() {
    let (recorder, start, slots) = ten_seconds();
    let now = start + secs(9) + ms(700);
    assert_eq!(window(&recorder, &slots, 10, Since::Future, now), (0, 0));
    assert_eq!(window(&recorder, &slots, 10, Since::At(now + secs(60)), now), (0, 0));
    let stats = recorder.window(&slots, secs(10), Since::Future, now);
    assert!(stats.routes["checkout"]["canary"].histogram.is_empty());
}

#[test]
fn since_older_than_the_window_leaves_the_window() {
    let (recorder, start, slots) = ten_seconds();
    let now = start + secs(9) + ms(700);
    assert_eq!(window(&recorder, &slots, 3, Since::At(start + secs(2)), now), (3, 3));
    assert_eq!(window(&recorder, &slots, 3, Since::At(start), now), (3, 3));
    assert_eq!(window(&recorder, &slots, 3, Since::Unbounded, now), (3, 3));
}

#[test]
fn seconds_before_the_recorder_started_are_covered_and_empty() {
    let start = Instant::now() + secs(3600);
    let now = start + secs(2) + ms(100);
    // A 10 s window of a recorder 2.1 s old covers 7 seconds before its start, as without since.
    assert_eq!(
        Slices::of(start, 10, Since::Unbounded, now),
        Slices {
            seconds: 0..3,
            covered: 10
        }
    );
    // `since` 1.5 s before start: the slice of start − 1 s is the first wholly after it.
    let since = Since::At(start - ms(1500));
    assert_eq!(
        Slices::of(start, 10, since, now),
        Slices {
            seconds: 0..3,
            covered: 4
        }
    );
    assert_eq!(Slices::of(start, 10, Since::At(start - secs(2)), now).covered, 5);
    assert_eq!(
        Slices::of(start, 10, Since::Future, now),
        Slices {
            seconds: 3..3,
            covered: 0
        }
    );
}

#[test]
fn wall_clock_since_maps_to_the_slice_clock() {
    let now = Instant::now() + secs(3600);
    let wall = UNIX_EPOCH + secs(1_750_000_000) + ms(250);
    let wall_ms = 1_750_000_000_250;
    assert_eq!(Since::from_unix_ms(wall_ms, wall, now), Since::At(now));
    assert_eq!(
        Since::from_unix_ms(wall_ms - 2_500, wall, now),
        Since::At(now - ms(2_500))
    );
    assert_eq!(Since::from_unix_ms(wall_ms + 1, wall, now), Since::Future);
    assert_eq!(Since::from_unix_ms(u64::MAX, wall, now), Since::Future);
    // 1970 is before every slice (and maybe before the monotonic clock's origin): no bound.
    let start = now - secs(5);
    assert_eq!(
        Slices::of(start, 10, Since::from_unix_ms(0, wall, now), now),
        Slices::of(start, 10, Since::Unbounded, now)
    );
}

#[test]
fn a_wall_clock_since_after_a_request_excludes_it() {
    let (recorder, start, slots) = ten_seconds();
    // The last request finished at 9.5 s. The stats are asked for at 12.501 s, when the wall
    // clock reads `wall`, from 3 s before: 9.501 s, within the slice of the request.
    let now = start + secs(12) + ms(501);
    let wall = UNIX_EPOCH + secs(1_750_000_000);
    let since = Since::from_unix_ms(1_750_000_000_000 - 3_000, wall, now);
    assert_eq!(since, Since::At(start + secs(9) + ms(501)));
    assert_eq!(window(&recorder, &slots, 300, since, now), (3, 0));
    let since = Since::from_unix_ms(1_750_000_000_000 - 3_501, wall, now);
    assert_eq!(window(&recorder, &slots, 300, since, now), (4, 1));
}
