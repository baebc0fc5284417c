//! A fake proxy admin API for the control loop's tests, on `127.0.0.1:0`: `GET`/`PUT /routes`
//! with `If-Match`, and `GET /stats?window=&since=` computed from a scripted history, so tests
//! under tokio's paused clock drive rollouts in virtual time.
//!
//! It serves one route, `checkout`, with tracks `stable` and `canary` (the baseline at 100%).
//! Each track serves [`FakeProxy::RPS`] requests a second whatever the weights, each taking
//! [`FakeProxy::LATENCY_US`]; the candidate answers the share of 5xx set by
//! [`FakeProxy::fail_candidate`] from that moment on. Windows and totals are integrated over that
//! history, so a window that starts before a change sees the errors before it, and a window
//! that starts after (`since`) does not. [`FakeProxy::hang`] makes it accept connections and
//! never answer.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use switchyard_config::stats::{
    LatencyMs, RouteStats, StatsDocument, StatusClasses, TrackStatsDoc, UpstreamErrors, encode_histogram, new_histogram,
};
use switchyard_config::{Format, TrackName, load_routes};
use tokio::time::Instant;

use crate::Table;

/// One `PUT /routes` the fake accepted: when (tokio time) and the route it set.
#[derive(Debug, Clone)]
pub struct Published {
    /// When.
    pub at: Instant,
    /// The `checkout` route as published.
    pub route: Value,
}

#[derive(Debug)]
struct State {
    version: u64,
    routes: Value,
    published: Vec<Published>,
    /// From when, which candidate 5xx share: the scripted history, oldest first.
    candidate_errors: Vec<(Instant, f64)>,
    started: Instant,
    /// The wall clock at `started`, ms since the Unix epoch (the clock `since` is in).
    started_wall_ms: u64,
    hang: bool,
    refuse_writes: bool,
    /// What a refused write says.
    refusal: String,
    stats_calls: u64,
}

/// A fake proxy admin API; clones share it.
#[derive(Debug, Clone)]
pub struct FakeProxy {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl FakeProxy {
    /// Requests per second each track serves.
    pub const RPS: u64 = 100;
    /// Every request's latency, µs.
    pub const LATENCY_US: u64 = 10_000;

    /// Starts one.
    pub async fn start() -> Self {
        let yaml = Table::new()
            .route("checkout")
            .track("stable", &["127.0.0.1:1".to_owned()], 100.0)
            .track("canary", &["127.0.0.1:2".to_owned()], 0.0)
            .yaml();
        let table = load_routes(&yaml, Format::Yaml, 1).expect("the initial table loads");
        let now = Instant::now();
        let state = Arc::new(Mutex::new(State {
            version: 1,
            routes: serde_json::to_value(table.spec()).expect("routes serialize"),
            published: Vec::new(),
            candidate_errors: vec![(now, 0.0)],
            started: now,
            started_wall_ms: wall_ms(),
            hang: false,
            refuse_writes: false,
            refusal: "this proxy takes no tables now".to_owned(),
            stats_calls: 0,
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(answer(&state, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { url, state }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the candidate answer this share of its requests with 5xx from now on.
    pub fn fail_candidate(&self, error_rate: f64) {
        self.lock().candidate_errors.push((Instant::now(), error_rate));
    }

    /// From now on, accept connections and never answer (`false`: answer again).
    pub fn hang(&self, hang: bool) {
        self.lock().hang = hang;
    }

    /// From now on, answer every `PUT /routes` with 503 (`false`: take them again).
    pub fn refuse_writes(&self, refuse: bool) {
        self.lock().refuse_writes = refuse;
    }

    /// From now on, answer every `PUT /routes` with 503 and an error document saying
    /// `message` (any text: a test of how it is shown).
    pub fn refuse_writes_saying(&self, message: &str) {
        let mut s = self.lock();
        s.refuse_writes = true;
        s.refusal = message.to_owned();
    }

    /// How many `GET /stats` it answered.
    pub fn stats_calls(&self) -> u64 {
        self.lock().stats_calls
    }

    /// The `checkout` route it serves now.
    pub fn route(&self) -> Value {
        route_of(&self.lock().routes)
    }

    /// The candidate's weight it serves now.
    pub fn weight(&self) -> f64 {
        candidate_weight(&self.route())
    }

    /// Every accepted `PUT /routes`, oldest first.
    pub fn published(&self) -> Vec<Published> {
        self.lock().published.clone()
    }

    /// When the candidate's weight was first published as `weight`.
    pub fn published_at(&self, weight: f64) -> Option<Instant> {
        self.published()
            .iter()
            .find(|p| candidate_weight(&p.route) == weight)
            .map(|p| p.at)
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The `checkout` route of a routes list.
pub fn route_of(routes: &Value) -> Value {
    routes
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["name"] == "checkout"))
        .cloned()
        .unwrap_or(Value::Null)
}

/// The `canary` track's weight in a route.
pub fn candidate_weight(route: &Value) -> f64 {
    route["tracks"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["name"] == "canary"))
        .and_then(|t| t["weight"].as_f64())
        .unwrap_or(f64::NAN)
}

/// How many rules of the route send requests to the candidate (header routes).
pub fn candidate_rules(route: &Value) -> usize {
    route["rules"]
        .as_array()
        .map_or(0, |rs| rs.iter().filter(|r| r["track"] == "canary").count())
}

async fn answer(state: &Mutex<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    if state.lock().unwrap_or_else(|p| p.into_inner()).hang {
        std::future::pending::<()>().await;
    }
    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
    match (parts.method, parts.uri.path()) {
        (Method::GET, "/routes") => reply(StatusCode::OK, &json!({ "version": s.version, "routes": s.routes })),
        (Method::PUT, "/routes") if s.refuse_writes => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "errors": [{ "path": "", "message": s.refusal }] }),
        ),
        (Method::PUT, "/routes") => {
            let if_match = parts
                .headers
                .get("if-match")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim_matches('"').parse::<u64>().ok());
            if if_match != Some(s.version) {
                return reply(StatusCode::CONFLICT, &json!({ "version": s.version }));
            }
            let Ok(doc) = serde_json::from_slice::<Value>(&body) else {
                return reply(StatusCode::BAD_REQUEST, &json!({}));
            };
            s.version += 1;
            s.routes = doc["routes"].clone();
            let route = route_of(&s.routes);
            s.published.push(Published {
                at: Instant::now(),
                route,
            });
            reply(StatusCode::OK, &json!({ "version": s.version }))
        }
        (Method::GET, "/stats") => {
            let mut window = 10;
            let mut since = None;
            for pair in parts.uri.query().unwrap_or("").split('&') {
                match pair.split_once('=') {
                    Some(("window", w)) => window = w.trim_end_matches('s').parse().unwrap_or(10),
                    Some(("since", ms)) => since = ms.parse::<u64>().ok(),
                    _ => {}
                }
            }
            s.stats_calls += 1;
            reply(StatusCode::OK, &stats(&s, window, since))
        }
        _ => reply(StatusCode::NOT_FOUND, &json!({})),
    }
}

/// Requests and errors of the candidate from `from` to `to`, over the scripted history.
fn candidate_counts(s: &State, from: Instant, to: Instant) -> (u64, u64) {
    let mut requests = 0.0;
    let mut errors = 0.0;
    for (i, (start, rate)) in s.candidate_errors.iter().enumerate() {
        let end = s.candidate_errors.get(i + 1).map_or(to, |(next, _)| *next);
        let (a, b) = ((*start).max(from), end.min(to));
        if b > a {
            let n = (b - a).as_secs_f64() * FakeProxy::RPS as f64;
            requests += n;
            errors += n * rate;
        }
    }
    (requests.round() as u64, errors.round() as u64)
}

/// The stats document for `window` seconds (whole seconds, starting no earlier than `since`).
fn stats(s: &State, window: u64, since: Option<u64>) -> StatsDocument {
    let now = Instant::now();
    let mut from = now
        .checked_sub(Duration::from_secs(window))
        .unwrap_or(s.started)
        .max(s.started);
    if let Some(since) = since {
        let since = s.started + Duration::from_millis(since.saturating_sub(s.started_wall_ms));
        from = from.max(since);
    }
    let seconds = now.saturating_duration_since(from).as_secs();
    let from = now - Duration::from_secs(seconds);
    let mut tracks = BTreeMap::new();
    for name in ["stable", "canary"] {
        let ((requests, errors), (total_requests, total_errors)) = if name == "canary" {
            (candidate_counts(s, from, now), candidate_counts(s, s.started, now))
        } else {
            let all = (now - s.started).as_secs_f64() * FakeProxy::RPS as f64;
            ((FakeProxy::RPS * seconds, 0), (all.round() as u64, 0))
        };
        let mut histogram = new_histogram();
        histogram.saturating_record_n(FakeProxy::LATENCY_US, requests);
        tracks.insert(
            TrackName::from(name),
            TrackStatsDoc {
                requests,
                errors,
                error_rate: if requests == 0 {
                    0.0
                } else {
                    errors as f64 / requests as f64
                },
                status_classes: StatusClasses {
                    success: requests - errors,
                    redirection: 0,
                    client_error: 0,
                    server_error: errors,
                },
                upstream_errors: UpstreamErrors {
                    connect: 0,
                    timeout: 0,
                    reset: 0,
                    protocol: 0,
                },
                latency_ms: LatencyMs::of(&histogram),
                histogram: encode_histogram(&histogram),
                total_requests,
                total_errors,
                endpoints: Vec::new(),
            },
        );
    }
    StatsDocument {
        version: s.version,
        instance: None,
        window_seconds: seconds,
        routes: BTreeMap::from([(
            "checkout".into(),
            RouteStats {
                tracks,
                client_errors: Default::default(),
                retries: None,
                shadow: BTreeMap::new(),
            },
        )]),
        dns: BTreeMap::new(),
    }
}

fn reply(status: StatusCode, body: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(
        serde_json::to_vec(body).expect("the fake's documents serialize"),
    )));
    *response.status_mut() = status;
    response
}
