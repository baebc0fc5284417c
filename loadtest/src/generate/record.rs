//! What happened to each request, tallied per connection (no sharing, no locks) and merged at
//! the end: latency histograms overall and per track, statuses, errors.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use http::HeaderValue;
use tokio::time::Instant;

use super::schedule::Window;

/// Histograms span 1 µs to 60 s at 3 significant digits; slower answers count as 60 s.
const LOWEST_US: u64 = 1;
const HIGHEST_US: u64 = 60_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

/// One request's fate.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// When it was meant to leave: its slot's time in the open loop, its send time in the
    /// closed loop. Latency counts from here.
    pub intended: Instant,
    /// When it actually left (later than `intended` when its connection was busy).
    pub sent: Instant,
    /// When the last byte of the answer arrived, or the transport failed.
    pub done: Instant,
    /// The answer, or `None` when the transport failed (no connection, reset, bad HTTP).
    pub answer: Option<Answer>,
}

/// What the upstream said.
#[derive(Debug)]
pub(crate) struct Answer {
    /// The response status.
    pub status: u16,
    /// The response's track header, if any.
    pub track: Option<HeaderValue>,
}

/// The tally of one track.
#[derive(Debug, Clone)]
pub(crate) struct TrackRecord {
    /// Answers from this track.
    pub requests: u64,
    /// Of which 5xx.
    pub errors: u64,
    /// Latency from the intended send time, µs.
    pub latency: Histogram<u64>,
}

/// The tally of a connection, then of the whole run. Only requests meant to leave inside the
/// measured window count.
#[derive(Debug, Clone)]
pub(crate) struct Recorder {
    window: Window,
    /// Requests that left (answered or not).
    pub sent: u64,
    /// Requests that finished: answered, or failed in transport.
    pub requests: u64,
    /// Requests whose transport failed.
    pub transport_errors: u64,
    /// Answers by status.
    pub statuses: BTreeMap<u16, u64>,
    /// Latency from the intended send time of every answer (not of transport errors), µs.
    pub latency: Histogram<u64>,
    /// How late requests left against their intended time (open loop), µs: the generator's own
    /// timer lag plus the wait behind a busy connection.
    pub send_lag: Histogram<u64>,
    /// Answers by the track they name; no track header is `-`.
    pub tracks: BTreeMap<String, TrackRecord>,
}

impl Recorder {
    /// An empty tally for `window`.
    pub fn new(window: Window) -> Self {
        Self {
            window,
            sent: 0,
            requests: 0,
            transport_errors: 0,
            statuses: BTreeMap::new(),
            latency: histogram(),
            send_lag: histogram(),
            tracks: BTreeMap::new(),
        }
    }

    /// A request meant to leave at `intended` is leaving now.
    pub fn sending(&mut self, intended: Instant) {
        if self.window.records(intended) {
            self.sent += 1;
        }
    }

    /// A request finished. One that finished after the end of the window is left out, as if
    /// abandoned there (it stays `sent` and so counts as unfinished): the timer that ends the
    /// run fires up to a tick late, and that must not decide what is recorded.
    pub fn finished(&mut self, outcome: &Outcome) {
        if !self.window.records(outcome.intended) || outcome.done >= self.window.end {
            return;
        }
        self.requests += 1;
        self.send_lag
            .saturating_record(micros(outcome.sent.saturating_duration_since(outcome.intended)));
        let Some(answer) = &outcome.answer else {
            self.transport_errors += 1;
            return;
        };
        let latency = micros(outcome.done.saturating_duration_since(outcome.intended));
        self.latency.saturating_record(latency);
        *self.statuses.entry(answer.status).or_default() += 1;
        let track = match &answer.track {
            None => "-",
            Some(value) => value.to_str().unwrap_or("?"),
        };
        // Look up by `&str` first: a new `String` only the first time a track shows up.
        let record = match self.tracks.get_mut(track) {
            Some(record) => record,
            None => self.tracks.entry(track.to_owned()).or_insert_with(|| TrackRecord {
                requests: 0,
                errors: 0,
                latency: histogram(),
            }),
        };
        record.requests += 1;
        record.errors += u64::from(answer.status >= 500);
        record.latency.saturating_record(latency);
    }

    /// Answers with a 5xx status.
    pub fn status_5xx(&self) -> u64 {
        self.statuses.range(500..600).map(|(_, n)| n).sum()
    }

    /// Adds `other`'s tally to this one.
    pub fn merge(&mut self, other: Self) {
        self.sent += other.sent;
        self.requests += other.requests;
        self.transport_errors += other.transport_errors;
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        add(&mut self.latency, &other.latency);
        add(&mut self.send_lag, &other.send_lag);
        for (track, theirs) in other.tracks {
            match self.tracks.get_mut(&track) {
                Some(ours) => {
                    ours.requests += theirs.requests;
                    ours.errors += theirs.errors;
                    add(&mut ours.latency, &theirs.latency);
                }
                None => {
                    self.tracks.insert(track, theirs);
                }
            }
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS).expect("constant, valid bounds")
}

fn add(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    // Both were made by `histogram()`, with the same bounds, so nothing can fall outside.
    into.add(from).expect("histograms with equal bounds");
}

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn window() -> Window {
        Window::new(Instant::now(), Duration::from_secs(1), Duration::from_secs(10))
    }

    fn outcome(w: &Window, after_ms: u64, lag_ms: u64, took_ms: u64, answer: Option<(u16, &str)>) -> Outcome {
        let intended = w.start + Duration::from_millis(after_ms);
        Outcome {
            intended,
            sent: intended + Duration::from_millis(lag_ms),
            done: intended + Duration::from_millis(took_ms),
            answer: answer.map(|(status, track)| Answer {
                status,
                track: (track != "-").then(|| HeaderValue::from_str(track).unwrap()),
            }),
        }
    }

    #[test]
    fn latency_counts_from_the_intended_time_and_only_the_window_is_recorded() {
        let w = window();
        let mut r = Recorder::new(w);
        for o in [
            outcome(&w, 500, 0, 5, Some((200, "stable"))),
            outcome(&w, 1500, 40, 50, Some((200, "stable"))),
            outcome(&w, 1600, 0, 7, Some((503, "canary"))),
            outcome(&w, 1700, 0, 9, Some((200, "-"))),
            outcome(&w, 1800, 0, 9, None),
            outcome(&w, 10_990, 0, 20, Some((200, "stable"))),
        ] {
            r.sending(o.intended);
            r.finished(&o);
        }
        // The last one left in the window but was answered after it: sent, never finished.
        assert_eq!((r.sent, r.requests, r.transport_errors, r.status_5xx()), (5, 4, 1, 1));
        assert_eq!(r.latency.len(), 3);
        assert_eq!(r.latency.max(), r.latency.highest_equivalent(50_000));
        assert_eq!(r.send_lag.max(), r.send_lag.highest_equivalent(40_000));
        let tracks: Vec<_> = r
            .tracks
            .iter()
            .map(|(t, s)| (t.as_str(), s.requests, s.errors))
            .collect();
        assert_eq!(tracks, [("-", 1, 0), ("canary", 1, 1), ("stable", 1, 0)]);
    }

    #[test]
    fn merging_adds_everything() {
        let w = window();
        let mut a = Recorder::new(w);
        let mut b = Recorder::new(w);
        a.finished(&outcome(&w, 2000, 0, 1, Some((200, "stable"))));
        b.finished(&outcome(&w, 2000, 0, 3, Some((200, "stable"))));
        b.finished(&outcome(&w, 2000, 0, 3, Some((500, "canary"))));
        a.merge(b);
        assert_eq!(a.requests, 3);
        assert_eq!(a.statuses, BTreeMap::from([(200, 2), (500, 1)]));
        assert_eq!(a.tracks["stable"].latency.len(), 2);
        assert_eq!(a.tracks["canary"].errors, 1);
    }
}
