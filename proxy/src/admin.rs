//! The admin API, on its own listener: the routing table (`GET`/`PUT /routes`), per-track
//! stats over a window (`GET /stats`), Prometheus metrics (`GET /metrics`), and health
//! (`GET /healthz`, `GET /readyz`). `docs/admin-api.yaml` describes it (OpenAPI 3); the
//! documents it serves are the types of `switchyard_config` the controller reads them with
//! ([`RoutesDocument`], [`switchyard_config::stats::StatsDocument`]).
//!
//! Requests pass a tower stack: a concurrency limit, then the bearer-token check for writes,
//! then the handler.

use std::collections::hash_map::RandomState;
use std::convert::Infallible;
use std::hash::{BuildHasher as _, Hasher as _};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, TextEncoder};
use serde::Serialize;
use serde_json::json;
use switchyard_config::stats::{MAX_WINDOW_SECONDS, RetryCounts};
use switchyard_config::{Format, InstanceId, RouteName, RoutesDocument, RoutesPublished, TrackName};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceBuilder};

use crate::dns::Names;
use crate::forward::Forwarder;
use crate::health;
use crate::publish::{NewRoutes, PublishError, Publisher};
use crate::record::{
    ShadowDropped, Since, dns_families, endpoint_families, metric_families, route_counters, shadow_metric_families,
};

/// Largest `PUT /routes` body, bytes (a 1,000-route table is about 300 KiB of YAML).
pub const MAX_BODY: usize = 8 * 1024 * 1024;
/// Default `window` of `GET /stats`.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
/// Longest `window` of `GET /stats`: the stats keep five minutes of one-second slices.
pub const MAX_WINDOW: Duration = Duration::from_secs(MAX_WINDOW_SECONDS);

/// A new identity for this proxy process: 64 bits from std's per-process random hash keys,
/// mixed with the time and the process id, so that a restarted proxy gets another one.
pub fn new_instance() -> InstanceId {
    let mut h = RandomState::new().build_hasher();
    if let Ok(since_epoch) = SystemTime::now().duration_since(UNIX_EPOCH) {
        h.write_u128(since_epoch.as_nanos());
    }
    h.write_u32(std::process::id());
    InstanceId::from_bits(h.finish())
}

/// Counters of the proxy's own life, exported on `/metrics`.
#[derive(Debug, Default)]
pub struct Health {
    /// Config file reloads that failed (invalid file, unreadable file or certificate).
    pub reload_failures: AtomicU64,
    /// Config file reloads that published a new table.
    pub reloads: AtomicU64,
    /// False while starting and once draining: `/readyz` answers 503.
    pub ready: AtomicBool,
}

/// What the admin handlers work on.
#[derive(Debug)]
pub struct AdminState {
    /// The table in force and its publisher.
    pub publisher: Arc<Publisher>,
    /// The forwarder, for its counters.
    pub forwarder: Arc<Forwarder>,
    /// Reload and readiness state.
    pub health: Arc<Health>,
    /// The bearer token writes must present, if any.
    pub token: Option<String>,
    /// This proxy process, in `/routes` and `/stats`.
    pub instance: InstanceId,
    /// How the table's host names resolve, in `/stats` and `/metrics`.
    pub names: Arc<Names>,
}

/// Serves the admin API on `listener` until `stop` turns true.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, mut stop: watch::Receiver<bool>) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = crate::until_stopped(&mut stop) => return,
        };
        let service = ServiceBuilder::new()
            .concurrency_limit(32)
            .layer(RequireTokenLayer {
                token: state.token.clone().map(Arc::from),
            })
            .service(Handler {
                state: Arc::clone(&state),
            });
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10));
            let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            tokio::pin!(conn);
            tokio::select! {
                _ = &mut conn => {}
                () = crate::until_stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
}

type AdminResponse = Response<Full<Bytes>>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The handler at the bottom of the stack.
#[derive(Debug, Clone)]
struct Handler {
    state: Arc<AdminState>,
}

impl Service<Request<Incoming>> for Handler {
    type Response = AdminResponse;
    type Error = Infallible;
    type Future = BoxFuture<Result<AdminResponse, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let state = Arc::clone(&self.state);
        Box::pin(async move { Ok(handle(&state, req).await) })
    }
}

async fn handle(state: &AdminState, req: Request<Incoming>) -> AdminResponse {
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("").to_owned();
    match (req.method(), path) {
        (&Method::GET | &Method::HEAD, "/routes") => get_routes(state),
        (&Method::PUT, "/routes") => put_routes(state, req).await,
        (&Method::GET | &Method::HEAD, "/stats") => get_stats(state, &query),
        (&Method::GET | &Method::HEAD, "/metrics") => get_metrics(state),
        (&Method::GET | &Method::HEAD, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET | &Method::HEAD, "/readyz") => {
            if state.health.ready.load(Ordering::Relaxed) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        (_, "/routes") => method_not_allowed("GET, HEAD, PUT"),
        (_, "/stats" | "/metrics" | "/healthz" | "/readyz") => method_not_allowed("GET, HEAD"),
        _ => json_response(
            StatusCode::NOT_FOUND,
            &json!({ "error": format!("no admin endpoint at {path}") }),
        ),
    }
}

fn get_routes(state: &AdminState) -> AdminResponse {
    let snapshot = state.publisher.load_full();
    let version = snapshot.table.version();
    let document = RoutesDocument {
        version,
        instance: Some(state.instance.clone()),
        routes: snapshot.table.spec().to_vec(),
    };
    let mut response = json_response(StatusCode::OK, &document);
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{version}\"")) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

async fn put_routes(state: &AdminState, req: Request<Incoming>) -> AdminResponse {
    let expected = match req.headers().get(header::IF_MATCH).map(if_match_version) {
        None => None,
        Some(Some(v)) => Some(v),
        Some(None) => {
            return errors(
                StatusCode::BAD_REQUEST,
                "If-Match",
                "expected a table version such as 3 or \"3\"",
            );
        }
    };
    let format = match req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        Some(ct) if ct.contains("json") => Some(Format::Json),
        Some(ct) if ct.contains("yaml") => Some(Format::Yaml),
        _ => None,
    };
    let body = Limited::new(req.into_body(), MAX_BODY).collect();
    let bytes = match tokio::time::timeout(Duration::from_secs(30), body).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return errors(
                StatusCode::PAYLOAD_TOO_LARGE,
                "",
                &format!("the body is over {MAX_BODY} bytes"),
            );
        }
        Ok(Err(e)) => return errors(StatusCode::BAD_REQUEST, "", &format!("cannot read the body: {e}")),
        Err(_) => return errors(StatusCode::REQUEST_TIMEOUT, "", "the body did not arrive within 30s"),
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return errors(StatusCode::BAD_REQUEST, "", "the body is not UTF-8");
    };
    let format = format.unwrap_or_else(|| Format::sniff(text));
    let routes = NewRoutes::Document(text, format);
    match state.publisher.publish(routes, expected).await {
        Ok(version) => {
            tracing::info!(version, "routing table published through the admin API");
            json_response(StatusCode::OK, &RoutesPublished { version })
        }
        Err(PublishError::Conflict { expected, current }) => json_response(
            StatusCode::CONFLICT,
            &json!({
                "error": format!("If-Match names version {expected}, but the table is at version {current}"),
                "version": current,
            }),
        ),
        Err(PublishError::Invalid(problems)) => {
            json_response(StatusCode::BAD_REQUEST, &json!({ "errors": problems.errors() }))
        }
        Err(e @ PublishError::Persist(_)) => errors(StatusCode::INTERNAL_SERVER_ERROR, "", &e.to_string()),
    }
}

/// `3`, `"3"` or `W/"3"`.
fn if_match_version(v: &HeaderValue) -> Option<u64> {
    let s = v.to_str().ok()?.trim();
    let s = s.strip_prefix("W/").unwrap_or(s);
    s.trim_matches('"').parse().ok()
}

fn get_stats(state: &AdminState, query: &str) -> AdminResponse {
    // Both clocks at once: `since` is wall-clock time, the stats are kept on the monotonic one.
    let (wall, now) = (SystemTime::now(), Instant::now());
    let mut window = DEFAULT_WINDOW;
    let mut since = Since::Unbounded;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("window", value)) => match humantime::parse_duration(value) {
                Ok(w) if w >= Duration::from_secs(1) && w <= MAX_WINDOW => window = w,
                Ok(_) => return errors(StatusCode::BAD_REQUEST, "window", "give a window from 1s to 300s"),
                Err(e) => {
                    return errors(
                        StatusCode::BAD_REQUEST,
                        "window",
                        &format!("invalid duration {value:?}: {e}"),
                    );
                }
            },
            Some(("since", value)) => match value.parse::<u64>() {
                Ok(ms) => since = Since::from_unix_ms(ms, wall, now),
                Err(_) => {
                    return errors(
                        StatusCode::BAD_REQUEST,
                        "since",
                        &format!(
                            "{value:?} is not a time in whole milliseconds since the Unix epoch; \
                             give one such as 1767225600000."
                        ),
                    );
                }
            },
            _ => {
                return errors(
                    StatusCode::BAD_REQUEST,
                    pair,
                    "unknown query parameter; use window=10s and since=<Unix ms>",
                );
            }
        }
    }
    let snapshot = state.publisher.load_full();
    let slots = snapshot.slots();
    let recorder = state.publisher.recorder();
    // Lifetime counts beside each window, so a controller can add up everything since a
    // moment of its choosing (a sequential test needs all observations, not windows).
    let mut document = recorder.window(&slots, window, since, now).to_document(
        &recorder.totals(&slots),
        snapshot.table.version(),
        &state.instance,
    );
    for (route, budget) in snapshot.budgets() {
        if let Some(stats) = document.routes.get_mut(route) {
            stats.retries = Some(RetryCounts {
                sent: budget.sent(),
                budget_exhausted: budget.exhausted(),
            });
        }
    }
    document.dns = state.names.report();
    health::fill_stats(&mut document, &snapshot, now);
    let shadows = snapshot.shadow_slots();
    if !shadows.is_empty() {
        let slots: Vec<_> = shadows.iter().map(|(r, t, s, _)| (r.clone(), t.clone(), *s)).collect();
        let gauge = |route: &RouteName, track: &TrackName| {
            let found = shadows.iter().find(|(r, t, _, _)| r == route && t == track);
            found.map(|(_, _, _, g)| Arc::clone(g))
        };
        recorder
            .window(&slots, window, since, now)
            .add_shadow_to(&mut document, &recorder.totals(&slots), gauge);
    }
    json_response(StatusCode::OK, &document)
}

fn get_metrics(state: &AdminState) -> AdminResponse {
    let snapshot = state.publisher.load_full();
    let totals = state.publisher.recorder().totals(&snapshot.slots());
    let mut families = metric_families(&totals);
    families.extend(health::with_metric_rows(&snapshot, Instant::now(), endpoint_families));
    let shadows = snapshot.shadow_slots();
    if !shadows.is_empty() {
        let slots: Vec<_> = shadows.iter().map(|(r, t, s, _)| (r.clone(), t.clone(), *s)).collect();
        let dropped: Vec<_> = shadows
            .iter()
            .map(|(r, t, _, g)| {
                let dropped = ShadowDropped {
                    max_in_flight: g.dropped(),
                    body_too_large: g.body_too_large(),
                };
                (r.as_str(), t.as_str(), dropped)
            })
            .collect();
        families.extend(shadow_metric_families(
            &state.publisher.recorder().totals(&slots),
            &dropped,
        ));
    }
    let health = &state.health;
    families.push(gauge(
        "switchyard_table_version",
        "Version of the routing table in force.",
        snapshot.table.version() as f64,
    ));
    families.push(counter(
        "switchyard_config_reloads_total",
        "Config file reloads that published a new routing table.",
        health.reloads.load(Ordering::Relaxed) as f64,
    ));
    families.push(counter(
        "switchyard_config_reload_failures_total",
        "Config file reloads rejected (invalid or unreadable file or certificate); the running table stayed.",
        health.reload_failures.load(Ordering::Relaxed) as f64,
    ));
    families.push(counter(
        "switchyard_no_route_total",
        "Requests that matched no route and were answered 404.",
        state.forwarder.no_route_count() as f64,
    ));
    families.push(counter(
        "switchyard_refused_requests_total",
        "Requests refused before any route took them (a bad Host or path, CONNECT, a head that does not parse); refusals of a routed request are its route's client errors.",
        state.forwarder.refused_count() as f64,
    ));
    if snapshot.budgets().next().is_some() {
        families.push(route_counters(
            "switchyard_retries_total",
            "Requests a route sent again after an attempt failed; every attempt is also in its track's requests.",
            snapshot.budgets().map(|(route, b)| (route.as_str(), b.sent())),
        ));
        families.push(route_counters(
            "switchyard_retry_budget_exhausted_total",
            "Retries a route's budget did not allow: the client got the failed attempt's answer.",
            snapshot.budgets().map(|(route, b)| (route.as_str(), b.exhausted())),
        ));
    }
    families.extend(dns_families(&state.names.report()));
    if let Some(log) = state.forwarder.access_log() {
        families.push(counter(
            "switchyard_access_log_lines_total",
            "Access log lines written.",
            log.written() as f64,
        ));
        families.push(counter(
            "switchyard_access_log_dropped_total",
            "Access log lines dropped: the queue to the writer was full, or their write failed. Requests are never held up by the log.",
            log.dropped() as f64,
        ));
    }
    let encoder = TextEncoder::new();
    let mut out = Vec::new();
    if let Err(e) = encoder.encode(&families, &mut out) {
        return errors(
            StatusCode::INTERNAL_SERVER_ERROR,
            "",
            &format!("cannot encode metrics: {e}"),
        );
    }
    let mut response = Response::new(Full::new(Bytes::from(out)));
    if let Ok(ct) = HeaderValue::from_str(encoder.format_type()) {
        response.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    response
}

fn family(
    name: &str,
    help: &str,
    kind: prometheus::proto::MetricType,
    metric: prometheus::proto::Metric,
) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_owned());
    f.set_help(help.to_owned());
    f.set_field_type(kind);
    f.mut_metric().push(metric);
    f
}

fn gauge(name: &str, help: &str, value: f64) -> MetricFamily {
    let mut m = prometheus::proto::Metric::default();
    let mut g = prometheus::proto::Gauge::default();
    g.set_value(value);
    m.set_gauge(g);
    family(name, help, prometheus::proto::MetricType::GAUGE, m)
}

fn counter(name: &str, help: &str, value: f64) -> MetricFamily {
    let mut m = prometheus::proto::Metric::default();
    let mut c = prometheus::proto::Counter::default();
    c.set_value(value);
    m.set_counter(c);
    family(name, help, prometheus::proto::MetricType::COUNTER, m)
}

fn json_response(status: StatusCode, body: &impl Serialize) -> AdminResponse {
    let mut bytes = serde_json::to_vec(body).unwrap_or_default();
    bytes.push(b'\n');
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn errors(status: StatusCode, path: &str, message: &str) -> AdminResponse {
    json_response(status, &json!({ "errors": [{ "path": path, "message": message }] }))
}

fn text(status: StatusCode, body: &'static str) -> AdminResponse {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn method_not_allowed(allow: &'static str) -> AdminResponse {
    let mut response = errors(StatusCode::METHOD_NOT_ALLOWED, "", &format!("allowed methods: {allow}"));
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// Tower middleware: requests that change state (`PUT`, `POST`, `DELETE`, `PATCH`) must carry
/// `Authorization: Bearer TOKEN` when a token is configured; others pass.
#[derive(Debug, Clone)]
struct RequireTokenLayer {
    token: Option<Arc<str>>,
}

impl<S> Layer<S> for RequireTokenLayer {
    type Service = RequireToken<S>;

    fn layer(&self, inner: S) -> RequireToken<S> {
        RequireToken {
            inner,
            token: self.token.clone(),
        }
    }
}

#[derive(Debug, Clone)]
struct RequireToken<S> {
    inner: S,
    token: Option<Arc<str>>,
}

impl<S> Service<Request<Incoming>> for RequireToken<S>
where
    S: Service<Request<Incoming>, Response = AdminResponse, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = AdminResponse;
    type Error = Infallible;
    type Future = BoxFuture<Result<AdminResponse, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let writes = matches!(
            *req.method(),
            Method::PUT | Method::POST | Method::DELETE | Method::PATCH
        );
        if let (true, Some(token)) = (writes, &self.token) {
            let presented = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if !presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes())) {
                let mut response = errors(
                    StatusCode::UNAUTHORIZED,
                    "Authorization",
                    "a valid bearer token is required",
                );
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return Box::pin(async move { Ok(response) });
            }
        }
        Box::pin(self.inner.call(req))
    }
}

/// Compares without stopping at the first difference, so timing tells nothing of the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_takes_plain_quoted_and_weak_versions() {
        for v in ["3", "\"3\"", "W/\"3\"", " 3 "] {
            assert_eq!(if_match_version(&HeaderValue::from_str(v).unwrap()), Some(3), "{v}");
        }
        assert_eq!(if_match_version(&HeaderValue::from_static("*")), None);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
