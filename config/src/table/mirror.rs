//! A route's mirror, compiled: which of its requests are copied to a shadow track, decided
//! purely from the request and its random number, like the track pick.

use http::Method;

use super::matcher::{Matcher, method};
use super::split::mix;
use super::{Endpoint, EndpointDraw, Track};
use crate::error::Problems;
use crate::request::RequestView;
use crate::schema::{MirrorSpec, RouteSpec};

/// Where a copy of a request goes: a track of the route, and one of its endpoints.
#[derive(Debug, Clone, Copy)]
pub struct Shadow<'t> {
    /// The mirror track.
    pub track: &'t Track,
    /// The endpoint of the mirror track that gets the copy.
    pub endpoint: &'t Endpoint,
    /// The draw that chose the endpoint, for [`Track::fallback`] when it is out.
    pub draw: EndpointDraw,
}

/// A compiled `mirror:`.
#[derive(Debug)]
pub(super) struct Mirror {
    /// The mirror track's position in the route.
    pub(super) track: usize,
    /// A request is copied when its 53-bit draw, as a fraction of 2⁵³, is below this: 0.0 copies
    /// none and 1.0 every one.
    share: f64,
    /// Copies in flight at most (at least 1).
    pub(super) max_in_flight: u32,
    methods: Box<[Method]>,
    /// A request must meet one of these; empty: every request.
    matchers: Box<[Matcher]>,
    /// The longest body copied, bytes; `None`: requests with a body are not copied.
    pub(super) max_body: Option<u64>,
}

/// Decorrelates the mirror's draw from the track's and the endpoint's, which use the same
/// random number.
const MIRROR_DRAW: u64 = 0x6a09_e667_f3bc_c909;
/// And the mirror endpoint's from the mirror's.
const MIRROR_ENDPOINT_DRAW: u64 = 0xbb67_ae85_84ca_a73b;

impl Mirror {
    /// Checks and compiles `spec`, the `mirror:` of `route`, reporting problems at `path`.
    pub(super) fn compile(spec: &MirrorSpec, route: &RouteSpec, path: &str, p: &mut Problems) -> Option<Self> {
        let track = route.tracks.iter().position(|t| t.name == spec.track);
        if track.is_none() {
            let known: Vec<&str> = route.tracks.iter().map(|t| t.name.as_str()).collect();
            p.push(
                format!("{path}.track"),
                format!(
                    "unknown track {:?} in route {:?}; the mirror must name one of its tracks: {}",
                    spec.track.as_str(),
                    route.name.as_str(),
                    known.join(", ")
                ),
            );
        }
        let percent_ok = spec.percent.is_finite() && (0.0..=100.0).contains(&spec.percent);
        if !percent_ok {
            p.push(
                format!("{path}.percent"),
                format!(
                    "percent must be a number from 0 to 100 (the share of the route's requests copied), found {}",
                    spec.percent
                ),
            );
        }
        if spec.max_in_flight == 0 {
            p.push(
                format!("{path}.maxInFlight"),
                "maxInFlight must be at least 1, or every copy would be dropped; remove the mirror to send none",
            );
        }
        if spec.methods.is_empty() {
            p.push(
                format!("{path}.methods"),
                "list at least one method to copy, such as GET",
            );
        }
        let mut methods = Vec::with_capacity(spec.methods.len());
        let mut methods_ok = true;
        for (i, name) in spec.methods.iter().enumerate() {
            let at = format!("{path}.methods[{i}]");
            match method(name, &at, p) {
                Some(Method::CONNECT) => {
                    p.push(at, "CONNECT cannot be copied: the proxy refuses it");
                    methods_ok = false;
                }
                Some(m) => methods.push(m),
                None => methods_ok = false,
            }
        }
        let matchers_ok = Self::check_matches(spec, path, p);
        let matchers = spec
            .matches
            .iter()
            .enumerate()
            .map(|(i, m)| Matcher::compile(m, &format!("{path}.match[{i}]"), true, p).0)
            .collect();
        let body_ok = spec.body.is_none_or(|b| b.max_bytes > 0);
        if !body_ok {
            p.push(
                format!("{path}.body.maxBytes"),
                "maxBytes must be at least 1; remove body to copy only requests without one",
            );
        }
        if !(percent_ok && spec.max_in_flight > 0 && !methods.is_empty() && methods_ok && matchers_ok && body_ok) {
            return None;
        }
        Some(Self {
            track: track?,
            share: spec.percent / 100.0,
            max_in_flight: spec.max_in_flight,
            methods: methods.into_boxed_slice(),
            matchers,
            max_body: spec.body.map(|b| b.max_bytes),
        })
    }

    /// Checks what compiling cannot see in `match`: a list written empty, and an entry without
    /// a condition, each of which would copy every request while reading as a restriction.
    fn check_matches(spec: &MirrorSpec, path: &str, p: &mut Problems) -> bool {
        let mut ok = true;
        for (i, m) in spec.matches.iter().enumerate() {
            if m.is_empty() {
                p.push(
                    format!("{path}.match[{i}]"),
                    "give at least one condition: an empty match takes every request; leave match out to copy every request",
                );
                ok = false;
            }
        }
        ok
    }

    /// Where a copy of `req` goes, if it is copied: its method is one of the mirror's, the
    /// track it was decided to (`decided`) is not the mirror track (which has the request
    /// already), its draw from its random number falls within the share, and it meets one of
    /// the mirror's matches, if it has any (`host` normalized, as the route index saw it).
    /// Whether its body is copied is the proxy's to tell, as the body comes. Pure and
    /// allocation-free.
    #[inline]
    pub(super) fn pick<'t>(
        &self,
        tracks: &'t [Track],
        decided: usize,
        req: &RequestView<'_>,
        host: &[u8],
    ) -> Option<Shadow<'t>> {
        if decided == self.track || !self.methods.contains(req.method) {
            return None;
        }
        let draw = (mix(req.random ^ MIRROR_DRAW) >> 11) as f64 / (1u64 << 53) as f64;
        if draw >= self.share {
            return None;
        }
        if !self.matchers.is_empty() && !self.matchers.iter().any(|m| m.matches(req, host)) {
            return None;
        }
        let track = &tracks[self.track];
        let draw = EndpointDraw {
            bits: mix(req.random ^ MIRROR_ENDPOINT_DRAW),
            keyed: false,
        };
        let endpoint = track.split.by_random(draw.bits);
        Some(Shadow {
            track,
            endpoint: &track.endpoints[endpoint],
            draw,
        })
    }
}

#[cfg(test)]
mod tests;
