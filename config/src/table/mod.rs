//! The compiled routing table: immutable, versioned, shared behind an `Arc`, and its pure
//! [`RoutingTable::decide`].
//!
//! A decision runs, in order: route match (routes in order, first match wins, found through a
//! host index), explicit rules (in order, first match wins), the sticky key (weighted rendezvous
//! hashing, see [`split`]), and the weights (fresh randomness from the request view).

mod index;
mod matcher;
mod mirror;
mod resolve;
mod split;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

use crate::error::{ConfigErrors, Problems};
use crate::health::{HealthCheckSpec, OutlierDetectionSpec};
use crate::request::RequestView;
use crate::retry::RetryPolicy;
use crate::schema::{RouteName, RouteSpec, StickySpec, TrackName, TrackSpec, UpstreamProtocol};
use crate::validate;

pub(crate) use matcher::header_name;
pub use matcher::{MAX_REGEX_LEN, MAX_REGEX_SIZE};

use index::RouteIndex;
use matcher::{Matcher, cookies, normalize_host};
use mirror::Mirror;
pub use resolve::{expand, host_name, host_names};
use split::{Split, hash, mix};

pub use mirror::Shadow;

/// Largest weight accepted for a track or an endpoint. Weights are relative, so this bounds
/// nothing a user needs while keeping sums finite.
pub const MAX_WEIGHT: f64 = 1e9;

/// A validated, compiled set of routes. Cheap to share: wrap it in an `Arc` and swap it whole.
#[derive(Debug)]
pub struct RoutingTable {
    version: u64,
    routes: Box<[Route]>,
    index: RouteIndex,
    spec: Vec<RouteSpec>,
}

/// One compiled route.
#[derive(Debug)]
pub struct Route {
    index: usize,
    name: RouteName,
    matcher: Matcher,
    tracks: Box<[Track]>,
    rules: Box<[Rule]>,
    sticky: Option<StickyKey>,
    split: Split,
    timeout: Option<Duration>,
    retry: Option<Arc<RetryPolicy>>,
    mirror: Option<Mirror>,
}

/// One compiled track of a route.
#[derive(Debug)]
pub struct Track {
    index: usize,
    name: TrackName,
    weight: f64,
    protocol: UpstreamProtocol,
    endpoints: Box<[Endpoint]>,
    split: Split,
    outlier_detection: Option<OutlierDetectionSpec>,
    health_check: Option<HealthCheckSpec>,
}

/// One upstream address of a track.
#[derive(Debug)]
pub struct Endpoint {
    index: usize,
    address: Box<str>,
    weight: f64,
}

#[derive(Debug)]
struct Rule {
    matcher: Matcher,
    track: usize,
}

#[derive(Debug)]
enum StickyKey {
    Header(HeaderName),
    Cookie(Box<[u8]>),
}

/// Where a request goes.
#[derive(Debug, Clone, Copy)]
pub struct Decision<'t> {
    /// The route that took the request.
    pub route: &'t Route,
    /// The chosen track.
    pub track: &'t Track,
    /// The chosen endpoint of the track.
    pub endpoint: &'t Endpoint,
    /// What chose the track.
    pub by: DecidedBy,
    /// Where a copy of the request goes, when the route mirrors it (see [`Shadow`]).
    pub shadow: Option<Shadow<'t>>,
    /// The draw that chose the endpoint, for [`Track::fallback`].
    pub draw: EndpointDraw,
}

/// The draw a decision chose its endpoint with: the request's sticky key, or its random
/// number. Opaque; [`Track::fallback`] takes it to choose again among fewer endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointDraw {
    bits: u64,
    keyed: bool,
}

/// What chose a request's track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecidedBy {
    /// The rule at this index in the route's `rules`.
    Rule(usize),
    /// The request's sticky key.
    Sticky,
    /// The weights, with the request's random number.
    Weight,
}

impl RoutingTable {
    /// Validates and compiles `routes` as table `version`. Every problem is reported, each with
    /// its field path (`routes[0].tracks[1].weight`).
    pub fn compile(routes: &[RouteSpec], version: u64) -> Result<Self, ConfigErrors> {
        let mut p = Problems::default();
        let positions: Vec<usize> = (0..routes.len()).collect();
        let table = Self::compile_into(routes, &positions, version, &mut p);
        p.into_result(()).map(|()| table)
    }

    /// Compiles what can be compiled, reporting problems into `p`; the table is only meaningful
    /// if `p` stays empty. `positions[i]` is route `i`'s place in its document, for paths.
    pub(crate) fn compile_into(routes: &[RouteSpec], positions: &[usize], version: u64, p: &mut Problems) -> Self {
        let mut names = HashSet::new();
        let mut compiled = Vec::with_capacity(routes.len());
        let mut hosts = Vec::with_capacity(routes.len());
        for (i, (spec, at)) in routes.iter().zip(positions).enumerate() {
            let path = format!("routes[{at}]");
            validate::name("route", spec.name.as_str(), &format!("{path}.name"), p);
            if !names.insert(spec.name.as_str()) {
                p.push(
                    format!("{path}.name"),
                    format!("duplicate route name {:?}", spec.name.as_str()),
                );
            }
            if let Some((route, host)) = compile_route(spec, i, &path, p) {
                compiled.push(route);
                hosts.push(host);
            }
        }
        let index = RouteIndex::new(hosts.iter().enumerate().map(|(i, h)| (i, h.as_ref())));
        Self {
            version,
            routes: compiled.into_boxed_slice(),
            index,
            spec: routes.to_vec(),
        }
    }

    /// A table with no routes (every request gets 404), as version 0.
    pub fn empty() -> Self {
        Self {
            version: 0,
            routes: Box::new([]),
            index: RouteIndex::new(std::iter::empty()),
            spec: Vec::new(),
        }
    }

    /// The table's version; every published table has a higher one than the last.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The same table as `version` (a proxy restarting after a stored table goes on from the
    /// version it had reached).
    pub fn with_version(self, version: u64) -> Self {
        Self { version, ..self }
    }

    /// The compiled routes, in order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The route named `name`.
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name.as_str() == name)
    }

    /// The routes as written, to serve back (`GET /routes`) or to change and publish again.
    pub fn spec(&self) -> &[RouteSpec] {
        &self.spec
    }

    /// Where `req` goes, or `None` if no route matches (404). Pure and allocation-free.
    #[inline]
    pub fn decide<'t>(&'t self, req: &RequestView<'_>) -> Option<Decision<'t>> {
        let mut buf = [0u8; 256];
        // A name too long for DNS can only match routes without a host condition.
        let host = normalize_host(req.host, &mut buf).unwrap_or(b"");
        let route = self.index.find(host, |i| self.routes[i].matcher.matches(req, host))?;
        Some(self.routes[route].decide(req, host))
    }
}

impl Route {
    /// The route's name.
    pub fn name(&self) -> &RouteName {
        &self.name
    }

    /// The route's position in its table.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The route's tracks, in the order written.
    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    /// The track named `name`.
    pub fn track(&self, name: &str) -> Option<&Track> {
        self.tracks.iter().find(|t| t.name.as_str() == name)
    }

    /// The route's own upstream response timeout, if it overrides the proxy's.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// How the route's failed requests are sent again, if they are.
    pub fn retry(&self) -> Option<&Arc<RetryPolicy>> {
        self.retry.as_ref()
    }

    /// The track the route copies requests to and the most copies in flight, when it mirrors.
    pub fn mirror(&self) -> Option<(&Track, u32)> {
        self.mirror.as_ref().map(|m| (&self.tracks[m.track], m.max_in_flight))
    }

    /// The longest request body the route's mirror copies, bytes; `None` when it copies only
    /// requests without a body (or the route does not mirror).
    pub fn mirror_max_body(&self) -> Option<u64> {
        self.mirror.as_ref().and_then(|m| m.max_body)
    }

    #[inline]
    fn decide<'t>(&'t self, req: &RequestView<'_>, host: &[u8]) -> Decision<'t> {
        let key = self.sticky.as_ref().and_then(|s| s.key(req)).map(hash);
        let (track, by) = match self.rules.iter().position(|r| r.matcher.matches(req, host)) {
            Some(rule) => (self.rules[rule].track, DecidedBy::Rule(rule)),
            None => match key {
                Some(k) => (self.split.by_key(k), DecidedBy::Sticky),
                None => (self.split.by_random(req.random), DecidedBy::Weight),
            },
        };
        let shadow = match &self.mirror {
            None => None,
            Some(mirror) => mirror.pick(&self.tracks, track, req, host),
        };
        let track = &self.tracks[track];
        let draw = match key {
            // A different draw from the track's: mixing in a constant decorrelates the two.
            Some(k) => EndpointDraw {
                bits: mix(k ^ ENDPOINT_DRAW),
                keyed: true,
            },
            None => EndpointDraw {
                bits: mix(req.random),
                keyed: false,
            },
        };
        let endpoint = if draw.keyed {
            track.split.by_key(draw.bits)
        } else {
            track.split.by_random(draw.bits)
        };
        Decision {
            route: self,
            track,
            endpoint: &track.endpoints[endpoint],
            by,
            draw,
            shadow,
        }
    }
}

const ENDPOINT_DRAW: u64 = 0x9e37_79b9_7f4a_7c15;

impl Track {
    /// The track's name.
    pub fn name(&self) -> &TrackName {
        &self.name
    }

    /// The track's position in its route.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The track's relative weight.
    pub fn weight(&self) -> f64 {
        self.weight
    }

    /// How the proxy speaks to the track's endpoints.
    pub fn protocol(&self) -> UpstreamProtocol {
        self.protocol
    }

    /// The track's endpoints, in the order written.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// The track's `outlierDetection`, if written.
    pub fn outlier_detection(&self) -> Option<&OutlierDetectionSpec> {
        self.outlier_detection.as_ref()
    }

    /// The track's `healthCheck`, if written.
    pub fn health_check(&self) -> Option<&HealthCheckSpec> {
        self.health_check.as_ref()
    }

    /// The endpoint a decision's `draw` takes among the endpoints `usable` accepts (by their
    /// indices), for when the one it decided is out: a sticky key goes to its next choice, always
    /// the same one while the same endpoints are usable, and a key whose endpoint is usable never
    /// moves; a random draw spreads over the usable endpoints by their weights. `None` when no
    /// endpoint of positive weight is usable. Pure: the caller knows which endpoints are out.
    pub fn fallback(&self, draw: EndpointDraw, usable: impl Fn(usize) -> bool) -> Option<&Endpoint> {
        let index = if draw.keyed {
            self.split.by_key_among(draw.bits, usable)
        } else {
            self.split.by_random_among(draw.bits, usable)
        };
        index.map(|i| &self.endpoints[i])
    }

    /// The endpoint a request is sent again to after its attempt to endpoint `failed` failed:
    /// by weight with `random`, among the endpoints `usable` accepts other than `failed`; else
    /// `failed` itself if it is usable (the only one that is); else, with every endpoint out
    /// (panic mode, as for the first attempt), another one if the track has one, else `failed`.
    /// Pure: the caller knows which endpoints are out.
    pub fn retry_endpoint(&self, failed: usize, random: u64, usable: impl Fn(usize) -> bool) -> &Endpoint {
        let index = self
            .split
            .by_random_among(random, |i| i != failed && usable(i))
            .or_else(|| usable(failed).then_some(failed))
            .or_else(|| self.split.by_random_among(random, |i| i != failed))
            .unwrap_or(failed);
        &self.endpoints[index]
    }
}

impl Endpoint {
    /// `HOST:PORT` as written.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The endpoint's position in its track.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The endpoint's relative weight within its track.
    pub fn weight(&self) -> f64 {
        self.weight
    }
}

impl StickyKey {
    /// The request's key; absent or empty means the request has none.
    #[inline]
    fn key<'r>(&self, req: &RequestView<'r>) -> Option<&'r [u8]> {
        let key = match self {
            Self::Header(name) => req.headers.get(name).map(|v| v.as_bytes()),
            Self::Cookie(name) => cookies(req.headers).find(|(n, _)| n == &&**name).map(|(_, v)| v),
        };
        key.filter(|k| !k.is_empty())
    }
}

fn compile_route(
    spec: &RouteSpec,
    index: usize,
    path: &str,
    p: &mut Problems,
) -> Option<(Route, Option<matcher::HostMatch>)> {
    let (matcher, host) = Matcher::compile(&spec.matches, &format!("{path}.match"), false, p);
    let tracks = compile_tracks(spec, path, p);
    let rules: Vec<Rule> = spec
        .rules
        .iter()
        .enumerate()
        .filter_map(|(i, rule)| {
            let at = format!("{path}.rules[{i}]");
            let (matcher, _) = Matcher::compile(&rule.matches, &format!("{at}.match"), true, p);
            let track = spec.tracks.iter().position(|t| t.name == rule.track);
            if track.is_none() {
                let known: Vec<&str> = spec.tracks.iter().map(|t| t.name.as_str()).collect();
                p.push(
                    format!("{at}.track"),
                    format!(
                        "unknown track {:?} in route {:?}; its tracks are: {}",
                        rule.track.as_str(),
                        spec.name.as_str(),
                        known.join(", ")
                    ),
                );
            }
            Some(Rule { matcher, track: track? })
        })
        .collect();
    let sticky = spec
        .sticky
        .as_ref()
        .and_then(|s| sticky(s, &format!("{path}.sticky"), p));
    if spec.timeout == Some(Duration::ZERO) {
        p.push(format!("{path}.timeout"), "timeout must be longer than 0s");
    }
    let retry = match &spec.retry {
        Some(r) => Some(RetryPolicy::compile(r, &format!("{path}.retry"), p)?),
        None => None,
    };
    let mirror = spec
        .mirror
        .as_ref()
        .and_then(|m| Mirror::compile(m, spec, &format!("{path}.mirror"), p));
    let split = Split::new(spec.tracks.iter().map(|t| (t.weight, hash(t.name.as_str().as_bytes()))));
    let (tracks, split) = (tracks?, split?);
    Some((
        Route {
            index,
            name: spec.name.clone(),
            matcher,
            tracks,
            rules: rules.into_boxed_slice(),
            sticky,
            split,
            timeout: spec.timeout,
            retry: retry.map(Arc::new),
            mirror,
        },
        host,
    ))
}

/// Compiles a route's tracks; `None` if any is invalid or no weight is positive (reported).
fn compile_tracks(spec: &RouteSpec, path: &str, p: &mut Problems) -> Option<Box<[Track]>> {
    if spec.tracks.is_empty() {
        p.push(format!("{path}.tracks"), "list at least one track");
        return None;
    }
    let mut names = HashSet::new();
    let mut tracks = Vec::with_capacity(spec.tracks.len());
    let mut ok = true;
    let mut weights_ok = true;
    for (i, t) in spec.tracks.iter().enumerate() {
        let at = format!("{path}.tracks[{i}]");
        validate::name("track", t.name.as_str(), &format!("{at}.name"), p);
        if !names.insert(t.name.as_str()) {
            p.push(
                format!("{at}.name"),
                format!(
                    "duplicate track name {:?} in route {:?}",
                    t.name.as_str(),
                    spec.name.as_str()
                ),
            );
        }
        weights_ok &= validate::weight(t.weight, &format!("{at}.weight"), p);
        match compile_track(t, i, &at, p) {
            Some(track) => tracks.push(track),
            None => ok = false,
        }
    }
    let total: f64 = spec
        .tracks
        .iter()
        .map(|t| t.weight)
        .filter(|w| w.is_finite() && *w > 0.0)
        .sum();
    if weights_ok && total <= 0.0 {
        p.push(
            format!("{path}.tracks[{}].weight", spec.tracks.len() - 1),
            format!(
                "weights of route {:?} sum to 0; give at least one track a positive weight",
                spec.name.as_str()
            ),
        );
    }
    (ok && weights_ok && total > 0.0).then(|| tracks.into_boxed_slice())
}

fn compile_track(t: &TrackSpec, index: usize, at: &str, p: &mut Problems) -> Option<Track> {
    if t.endpoints.is_empty() {
        p.push(format!("{at}.endpoints"), "list at least one endpoint (HOST:PORT)");
        return None;
    }
    let mut seen = HashSet::new();
    let mut ok = true;
    for (i, e) in t.endpoints.iter().enumerate() {
        let ep = format!("{at}.endpoints[{i}]");
        ok &= validate::endpoint_address(&e.address, &ep, p);
        ok &= validate::weight(e.weight, &format!("{ep}.weight"), p);
        if !seen.insert(e.address.as_str()) {
            p.push(
                &ep,
                format!("duplicate endpoint {:?} in track {:?}", e.address, t.name.as_str()),
            );
            ok = false;
        }
    }
    if !ok {
        return None;
    }
    if let Some(o) = &t.outlier_detection {
        o.check(&format!("{at}.outlierDetection"), p);
    }
    if let Some(h) = &t.health_check {
        h.check(&format!("{at}.healthCheck"), p);
    }
    let Some(split) = Split::new(t.endpoints.iter().map(|e| (e.weight, hash(e.address.as_bytes())))) else {
        p.push(format!("{at}.endpoints"), "no endpoint has a positive weight");
        return None;
    };
    Some(Track {
        index,
        name: t.name.clone(),
        weight: t.weight,
        protocol: t.protocol,
        endpoints: t
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| Endpoint {
                index: i,
                address: e.address.as_str().into(),
                weight: e.weight,
            })
            .collect(),
        split,
        outlier_detection: t.outlier_detection,
        health_check: t.health_check.clone(),
    })
}

fn sticky(s: &StickySpec, path: &str, p: &mut Problems) -> Option<StickyKey> {
    match (&s.header, &s.cookie) {
        (Some(h), None) => header_name(h, &format!("{path}.header"), p).map(StickyKey::Header),
        (None, Some(c)) => {
            validate::cookie_name(c, &format!("{path}.cookie"), p).then(|| StickyKey::Cookie(c.as_bytes().into()))
        }
        _ => {
            p.push(path, "give exactly one of header and cookie");
            None
        }
    }
}

#[cfg(test)]
mod tests;
