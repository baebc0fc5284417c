//! The file and API format of a proxy's configuration: what users write, in YAML or JSON with
//! camelCase field names. These types only describe; [`crate::validate`] checks them and
//! [`crate::table::RoutingTable::compile`] turns the routes into what the hot path uses.
//!
//! `config/examples/` holds complete documents; `canary-weight.yaml` is the reference.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};
use serde_yaml_ng::Value;

use crate::error::Problems;
pub use crate::health::{DEFAULT_EXPECTED_STATUSES, HealthCheckSpec, OutlierDetectionSpec, StatusRange};
use crate::path::{EscapedSlashes, PathOptions};
use crate::read::{Fields, FromTree, describe, lenient_list};
use crate::retry::RetrySpec;

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Deserializing takes any string: names are validated where a table is read
        /// ([`crate::load_config`]), not where a document that merely mentions them is.
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(Arc::from(s))
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl FromTree for $name {
            fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
                String::from_tree(v, path, p).map(|s| Self(Arc::from(s)))
            }
        }
    };
}

name_type!(
    /// The name of a route, unique in a table (`checkout`).
    RouteName
);
name_type!(
    /// The name of a track, unique in its route (`stable`, `canary`, `blue`, `green`).
    TrackName
);

/// The default downstream listener.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The default admin API listener.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9901";
/// The default name of the header that carries the chosen track.
pub const DEFAULT_TRACK_HEADER: &str = "x-switchyard-track";

/// A whole proxy configuration file.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyConfig {
    /// Downstream listeners; `listen: ADDR` or a list of addresses or `{address, tls}`.
    /// Default: one plain listener on [`DEFAULT_LISTEN`].
    pub listen: Vec<ListenerSpec>,
    /// The admin API.
    pub admin: AdminSpec,
    /// Routes, tried in order; the first whose match holds takes the request.
    pub routes: Vec<RouteSpec>,
    /// The header naming the chosen track on the response and on the upstream request;
    /// `trackHeader: false` turns it off. Default [`DEFAULT_TRACK_HEADER`].
    pub track_header: Option<String>,
    /// Timeouts, each with a default.
    pub timeouts: Timeouts,
    /// Limits, each with a default.
    pub limits: Limits,
    /// How request paths are normalized before routing; see [`crate::path::normalize`].
    pub paths: PathOptions,
    /// The access log: a JSON line per request, off unless given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLogSpec>,
    /// Request ids (`x-request-id`): kept, generated or left alone.
    pub request_id: RequestIdSpec,
    /// How endpoints written with a host name are resolved.
    pub dns: DnsSpec,
}

/// `dns`: how endpoints written `HOSTNAME:PORT` are resolved. Every address of a name (of the
/// chosen family) becomes an endpoint of its own, as Envoy's `STRICT_DNS` clusters do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DnsSpec {
    /// How long after one round of lookups the next starts. Default 5s (Envoy's
    /// `dns_refresh_rate`); at least [`MIN_DNS_REFRESH`].
    #[serde(with = "human")]
    pub refresh: Duration,
    /// How long one lookup may take before it counts as failed. Default 5s.
    #[serde(with = "human")]
    pub timeout: Duration,
    /// Which of a name's addresses become endpoints. Default [`AddressFamily::V4Preferred`].
    pub family: AddressFamily,
}

/// The shortest `dns.refresh`: below it names would be looked up all the time.
pub const MIN_DNS_REFRESH: Duration = Duration::from_millis(100);

impl Default for DnsSpec {
    fn default() -> Self {
        Self {
            refresh: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
            family: AddressFamily::V4Preferred,
        }
    }
}

/// `dns.family`: which addresses of a name's answer are endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum AddressFamily {
    /// The IPv4 addresses when the answer has any, else the IPv6 ones (Envoy's `V4_PREFERRED`):
    /// a name such as `localhost` that has both never sends half the requests to an IPv6
    /// address its service does not listen on.
    #[default]
    V4Preferred,
    /// Every address, of both families.
    All,
    /// Only IPv4 addresses; a name with none has no endpoint.
    V4,
    /// Only IPv6 addresses; a name with none has no endpoint.
    V6,
}

/// `accessLog`: where the JSON lines go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessLogSpec {
    /// `stdout`, or a file opened for appending (created if absent; its directory must exist).
    pub path: AccessLogPath,
}

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogPath {
    /// The process's standard output, beside its own logs (one line per write, never torn).
    Stdout,
    /// A file, reopened by name on `SIGHUP` (after a rotation).
    File(String),
}

impl Serialize for AccessLogPath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Stdout => s.serialize_str("stdout"),
            Self::File(path) => s.serialize_str(path),
        }
    }
}

/// The default name of the request id header.
pub const DEFAULT_REQUEST_ID_HEADER: &str = "x-request-id";

/// `requestId`: how the proxy treats the request id header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestIdSpec {
    /// The header; default [`DEFAULT_REQUEST_ID_HEADER`].
    pub header: String,
    /// What happens to it; default [`RequestIdMode::Keep`].
    pub mode: RequestIdMode,
    /// Whether the response carries the id too (Envoy's `always_set_request_id_in_response`).
    /// Default false.
    pub response: bool,
}

impl Default for RequestIdSpec {
    fn default() -> Self {
        Self {
            header: DEFAULT_REQUEST_ID_HEADER.to_owned(),
            mode: RequestIdMode::Keep,
            response: false,
        }
    }
}

/// What the proxy does with a request's id header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestIdMode {
    /// Keep a valid incoming id (1 to 128 visible ASCII bytes); generate one (a UUID v4) when
    /// there is none or it is invalid.
    #[default]
    Keep,
    /// Always generate a new id, replacing any incoming one (for an edge whose clients are not
    /// trusted to choose ids).
    Replace,
    /// Leave the header alone: pass on whatever came, generate nothing.
    Off,
}

/// One downstream listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerSpec {
    /// `IP:PORT` to bind.
    pub address: String,
    /// TLS termination; plain HTTP (HTTP/1.1 and h2c) without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
}

/// Certificate and key for a TLS listener (PEM files, reloaded when they change).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// PEM certificate chain.
    pub cert_file: String,
    /// PEM private key.
    pub key_file: String,
}

/// The admin API listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminSpec {
    /// `IP:PORT`; default [`DEFAULT_ADMIN_LISTEN`].
    pub listen: String,
    /// A file holding a bearer token that `PUT` calls must present; none by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    /// Where the proxy keeps the last routing table it published, so that a restart serves it
    /// at once; beside the config file by default.
    #[serde(skip_serializing_if = "StateFileSpec::is_beside_config")]
    pub state_file: StateFileSpec,
}

/// `admin.stateFile`: where the proxy keeps its last published table across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StateFileSpec {
    /// Not given: `<config file>.state.json` in the config file's directory, or none (with a
    /// warning) when that directory is not writable or the proxy has no config file.
    #[default]
    BesideConfig,
    /// `stateFile: PATH`: this file (relative to the working directory), which must be
    /// writable: the admin API refuses tables it cannot keep there.
    Path(String),
    /// `stateFile: false`: none; a restarted proxy serves its config file's routes.
    Off,
}

impl StateFileSpec {
    /// Whether the setting was left out.
    pub fn is_beside_config(&self) -> bool {
        matches!(self, Self::BesideConfig)
    }
}

impl Serialize for StateFileSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::BesideConfig => s.serialize_none(),
            Self::Path(path) => s.serialize_str(path),
            Self::Off => s.serialize_bool(false),
        }
    }
}

/// Timeouts the proxy applies. Defaults follow what Envoy and nginx users expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    /// Connecting to an upstream endpoint. Default 5s.
    #[serde(with = "human")]
    pub connect: Duration,
    /// From sending the request upstream to the response headers (→ 504). Default 15s.
    #[serde(with = "human")]
    pub request: Duration,
    /// Reading a downstream request's headers. Default 10s.
    #[serde(with = "human")]
    pub header_read: Duration,
    /// A downstream keep-alive connection with no request. Default 60s.
    #[serde(with = "human")]
    pub idle: Duration,
    /// An idle pooled upstream connection before it is closed. Default 90s.
    #[serde(with = "human")]
    pub upstream_idle: Duration,
    /// A downstream request body that sends nothing for this long is given up: `408`, the
    /// connection closed, the upstream request aborted, counted as the client's. Default 30s.
    #[serde(with = "human")]
    pub request_body_idle: Duration,
    /// How long a downstream request body may wait before `limits.requestBodyMinRate` applies:
    /// after it, a body must have come at least that fast over the time the proxy waited for it.
    /// Default 5s.
    #[serde(with = "human")]
    pub request_body_grace: Duration,
    /// An upstream response body that sends nothing for this long is given up: the downstream
    /// connection closed, counted against the track as a timeout. Default 60s.
    #[serde(with = "human")]
    pub response_body_idle: Duration,
    /// How long shutdown waits for in-flight requests. Default 30s.
    #[serde(with = "human")]
    pub drain: Duration,
    /// An upgraded connection (a WebSocket tunnel) that carries no byte either way for this
    /// long is closed. Default 1h.
    #[serde(with = "human")]
    pub upgrade_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(15),
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            upstream_idle: Duration::from_secs(90),
            request_body_idle: Duration::from_secs(30),
            request_body_grace: Duration::from_secs(5),
            response_body_idle: Duration::from_secs(60),
            drain: Duration::from_secs(30),
            upgrade_idle: Duration::from_secs(3600),
        }
    }
}

/// Limits the proxy enforces on downstream traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Total size of a request's header section, bytes (→ 431). Default 32768.
    pub max_header_bytes: usize,
    /// Number of request headers (→ 431). Default 100.
    pub max_headers: usize,
    /// Open downstream connections; more wait to be accepted. Default 10000.
    pub max_connections: usize,
    /// Idle pooled connections kept per upstream endpoint. Default 128.
    pub max_idle_per_endpoint: usize,
    /// The slowest a downstream request body may arrive, bytes per second of the time the proxy
    /// waits for it, once `timeouts.requestBodyGrace` has passed (→ 408, the upstream request
    /// abandoned). 0 turns the check off. Default 240.
    pub request_body_min_rate: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            max_connections: 10_000,
            max_idle_per_endpoint: 128,
            request_body_min_rate: 240,
        }
    }
}

/// A route: what requests it takes, the tracks behind it and how a request picks one.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteSpec {
    /// Unique name, used in stats and metric labels.
    pub name: RouteName,
    /// Conditions a request must meet; all given ones must hold. Empty matches everything.
    #[serde(rename = "match")]
    pub matches: RequestMatch,
    /// The versions behind the route.
    pub tracks: Vec<TrackSpec>,
    /// Explicit track choices, checked in order before stickiness and weights.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleSpec>,
    /// Where a user's key comes from, to keep the user on one track.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sticky: Option<StickySpec>,
    /// Overrides `timeouts.request` for this route.
    #[serde(with = "human_opt", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// How requests that failed are sent again; off unless written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
    /// Shadow traffic: a share of the route's requests copied to a track, whose answers are
    /// measured and thrown away. None by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror: Option<MirrorSpec>,
}

/// The default [`MirrorSpec::max_in_flight`].
pub const DEFAULT_MIRROR_MAX_IN_FLIGHT: u32 = 100;

/// The default [`MirrorSpec::methods`]: the safe methods of RFC 9110 §9.2.1, which change
/// nothing on the server, so a copy does no harm twice.
pub const DEFAULT_MIRROR_METHODS: [&str; 3] = ["GET", "HEAD", "OPTIONS"];

/// `mirror: { track, percent }`: copies of a share of the route's requests sent to one of its
/// tracks (a shadow). The client only ever gets the answer of the track its request was decided
/// to; the copy's answer is read, measured as the track's `shadow` series and discarded, and
/// never delays or fails the client's request.
///
/// A request is copied when its method is one of `methods`, it meets one of `match` (when
/// given), the track it was decided to is not the mirror track itself, its draw falls within
/// `percent`, and it has no body, or `body` is given and its body fits within `body.maxBytes`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MirrorSpec {
    /// The track that gets the copies: one of the route's tracks, often of weight 0 (a candidate
    /// that takes no real request yet).
    pub track: TrackName,
    /// The share of the route's requests copied, percent from 0 to 100.
    pub percent: f64,
    /// Copies in flight at most, per (route, track) and proxy; a copy past it is not sent, and
    /// is counted as dropped. Default [`DEFAULT_MIRROR_MAX_IN_FLIGHT`].
    pub max_in_flight: u32,
    /// Methods whose requests are copied. Default [`DEFAULT_MIRROR_METHODS`].
    pub methods: Vec<String>,
    /// Only requests that meet one of these conditions (each as a route's `match:`, all of its
    /// conditions holding) are copied; empty (the default): every request. Argo Rollouts'
    /// `setMirrorRoute.match`.
    #[serde(rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<RequestMatch>,
    /// Copies of requests with a body, up to a bound; absent (the default): a request with a
    /// body is not copied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<MirrorBodySpec>,
}

/// `mirror.body: { maxBytes }`: requests with a body are copied with it when it fits. The body
/// streams to the primary as it comes; a copy of it is kept on the side, and the copy is sent
/// once the body has ended within the bound. A body that is longer (by its `Content-Length`, or
/// once it has come past the bound) is not copied, and counted in the shadow's `bodyTooLarge`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MirrorBodySpec {
    /// The longest body copied, bytes (at least 1). A copy being buffered holds up to this
    /// much memory, and counts under `maxInFlight` from its first byte.
    pub max_bytes: u64,
}

impl MirrorSpec {
    /// A mirror of `percent` of the route's requests to `track`, with the default bound and
    /// methods.
    pub fn new(track: TrackName, percent: f64) -> Self {
        Self {
            track,
            percent,
            max_in_flight: DEFAULT_MIRROR_MAX_IN_FLIGHT,
            methods: DEFAULT_MIRROR_METHODS.map(str::to_owned).to_vec(),
            matches: Vec::new(),
            body: None,
        }
    }
}

/// Request conditions; every given condition must hold.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestMatch {
    /// Host, exact (`shop.example.com`) or with a leading wildcard label (`*.example.com`, which
    /// matches any name ending in `.example.com`). Compared without case and port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Exact path (the query string is not part of the path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Path prefix on segment boundaries: `/api` matches `/api` and `/api/x`, not `/apix`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Regular expression that must match the whole path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<String>,
    /// Allowed methods (`method: GET` or `method: [GET, HEAD]`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub method: Vec<String>,
    /// Header conditions (names compared without case).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ValueMatch>,
    /// Query parameter conditions (values compared after percent-decoding).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<ValueMatch>,
    /// Cookie conditions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cookies: Vec<ValueMatch>,
}

impl RequestMatch {
    /// Whether no condition is given (the match holds for every request).
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// A condition on a named value (header, query parameter or cookie). At most one of `value`,
/// `oneOf`, `regex` and `present` may be given; with none, the value must be present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ValueMatch {
    /// The header, parameter or cookie name.
    pub name: String,
    /// The value must equal this (case-sensitive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The value must equal one of these (`x-user-group` in `[internal, beta]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<String>>,
    /// A regular expression the whole value must match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// `true`: the name must be present; `false`: it must be absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

/// One version of the service behind a route.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrackSpec {
    /// Unique in its route.
    pub name: TrackName,
    /// Upstream addresses; `HOST:PORT` or `{address, weight}`.
    pub endpoints: Vec<EndpointSpec>,
    /// Relative share of weighted traffic: 95 and 5 give 95% / 5%. Default 0.
    pub weight: f64,
    /// How the proxy speaks to this track's endpoints. Default `http1`.
    pub protocol: UpstreamProtocol,
    /// Passive ejection of failing endpoints; off unless written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetectionSpec>,
    /// Active health checks of the endpoints; off unless written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckSpec>,
}

/// One upstream address of a track.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSpec {
    /// `IP:PORT` or `HOSTNAME:PORT`.
    pub address: String,
    /// Relative share of the track's traffic. Default 1.
    pub weight: f64,
}

/// The upstream protocol of a track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive.
    #[default]
    Http1,
    /// HTTP/2 over cleartext, prior knowledge.
    H2c,
}

/// An explicit choice: requests matching `match` go to `track`, whatever the weights.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleSpec {
    /// Conditions, as for routes.
    #[serde(rename = "match")]
    pub matches: RequestMatch,
    /// The track that takes matching requests.
    pub track: TrackName,
}

/// Where a user's identity comes from. Exactly one of the two is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StickySpec {
    /// A request header (`x-user-id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// A cookie (`uid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
}

/// Durations as humans write them: `500ms`, `5s`, `2m`.
pub(crate) mod human {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }
}

pub(crate) mod human_opt {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => human::serialize(d, s),
            None => s.serialize_none(),
        }
    }
}

// ---- reading from a tree -------------------------------------------------------------------

impl ProxyConfig {
    /// Reads a whole configuration. Routes are read one by one: the ones that read are returned
    /// with their positions in the document, so that their problems can still be reported at the
    /// right paths when another route could not be read.
    pub(crate) fn read(v: &Value, p: &mut Problems) -> Option<(Self, Vec<usize>)> {
        let mut f = Fields::of(v, "", p)?;
        let listen = match f.raw("listen") {
            None => vec![ListenerSpec {
                address: DEFAULT_LISTEN.to_owned(),
                tls: None,
            }],
            Some(Value::Sequence(_)) => f.or("listen", Vec::new(), p),
            Some(_) => f.optional::<ListenerSpec>("listen", p).into_iter().collect(),
        };
        let admin = f.optional("admin", p).unwrap_or_default();
        let (positions, routes) = f
            .raw("routes")
            .map(|v| lenient_list::<RouteSpec>(v, "routes", p))
            .unwrap_or_default()
            .into_iter()
            .unzip();
        let track_header = match f.raw("trackHeader") {
            None => Some(DEFAULT_TRACK_HEADER.to_owned()),
            Some(Value::Bool(false)) => None,
            Some(Value::String(name)) => Some(name.clone()),
            Some(other) => {
                p.push(
                    f.path_of("trackHeader"),
                    format!(
                        "expected a header name, or false to turn the header off, found {}",
                        describe(other)
                    ),
                );
                None
            }
        };
        let timeouts = f.optional("timeouts", p).unwrap_or_default();
        let limits = f.optional("limits", p).unwrap_or_default();
        let paths = f.optional("paths", p).unwrap_or_default();
        let access_log = f.optional("accessLog", p);
        let request_id = f.optional("requestId", p).unwrap_or_default();
        let dns = f.optional("dns", p).unwrap_or_default();
        f.finish(p);
        let config = Self {
            listen,
            admin,
            routes,
            track_header,
            timeouts,
            limits,
            paths,
            access_log,
            request_id,
            dns,
        };
        Some((config, positions))
    }
}

impl FromTree for ListenerSpec {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        if let Value::String(s) = v {
            return Some(Self {
                address: s.clone(),
                tls: None,
            });
        }
        let mut f = Fields::of(v, path, p)?;
        let address = f.required("address", p);
        let tls = f.optional("tls", p);
        f.finish(p);
        Some(Self { address: address?, tls })
    }
}

impl FromTree for TlsSpec {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        let mut f = Fields::of(v, path, p)?;
        let cert_file = f.required("certFile", p);
        let key_file = f.required("keyFile", p);
        f.finish(p);
        Some(Self {
            cert_file: cert_file?,
            key_file: key_file?,
        })
    }
}

impl Default for AdminSpec {
    fn default() -> Self {
        Self {
            listen: DEFAULT_ADMIN_LISTEN.to_owned(),
            token_file: None,
            state_file: StateFileSpec::BesideConfig,
        }
    }
}

impl FromTree for AdminSpec {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        let mut f = Fields::of(v, path, p)?;
        let listen = f.or("listen", DEFAULT_ADMIN_LISTEN.to_owned(), p);
        let token_file = f.optional("tokenFile", p);
        let state_file = match f.raw("stateFile") {
            None => StateFileSpec::BesideConfig,
            Some(Value::Bool(false)) => StateFileSpec::Off,
            Some(Value::String(path)) => StateFileSpec::Path(path.clone()),
            Some(other) => {
                p.push(
                    f.path_of("stateFile"),
                    format!(
                        "expected a path, or false to keep no state file, found {}",
                        describe(other)
                    ),
                );
                StateFileSpec::BesideConfig
            }
        };
        f.finish(p);
        Some(Self {
            listen,
            token_file,
            state_file,
        })
    }
}

impl FromTree for Timeouts {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        let d = Self::default();
        let mut f = Fields::of(v, path, p)?;
        let t = Self {
            connect: f.or("connect", d.connect, p),
            request: f.or("request", d.request, p),
            header_read: f.or("headerRead", d.header_read, p),
            idle: f.or("idle", d.idle, p),
            upstream_idle: f.or("upstreamIdle", d.upstream_idle, p),
            request_body_idle: f.or("requestBodyIdle", d.request_body_idle, p),
            request_body_grace: f.or("requestBodyGrace", d.request_body_grace, p),
            response_body_idle: f.or("responseBodyIdle", d.response_body_idle, p),
            drain: f.or("drain", d.drain, p),
            upgrade_idle: f.or("upgradeIdle", d.upgrade_idle, p),
        };
        f.finish(p);
        Some(t)
    }
}

impl FromTree for Limits {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        let d = Self::default();
        let mut f = Fields::of(v, path, p)?;
        let l = Self {
            max_header_bytes: f.or("maxHeaderBytes", d.max_header_bytes, p),
            max_headers: f.or("maxHeaders", d.max_headers, p),
            max_connections: f.or("maxConnections", d.max_connections, p),
            max_idle_per_endpoint: f.or("maxIdlePerEndpoint", d.max_idle_per_endpoint, p),
            request_body_min_rate: f.or("requestBodyMinRate", d.request_body_min_rate, p),
        };
        f.finish(p);
        Some(l)
    }
}

impl FromTree for AccessLogSpec {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        let mut f = Fields::of(v, path, p)?;
        let file: Option<String> = f.required("path", p);
        f.finish(p);
        let path = match file?.as_str() {
            "stdout" => AccessLogPath::Stdout,
            file => AccessLogPath::File(file.to_owned()),
        };
        Some(Self { path })
    }
}

impl FromTree for RequestIdSpec {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        let d = Self::default();
        let mut f = Fields::of(v, path, p)?;
        let spec = Self {
            header: f.or("header", d.header, p),
            mode: f.or("mode", d.mode, p),
            response: f.or("response", d.response, p),
        };
        f.finish(p);
        Some(spec)
    }
}

impl FromTree for RequestIdMode {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        // `off` is text in YAML 1.2, but YAML 1.1 habits write `false`.
        if let Value::Bool(false) = v {
            return Some(Self::Off);
        }
        match v.as_str() {
            Some("keep") => Some(Self::Keep),
            Some("replace") => Some(Self::Replace),
            Some("off") => Some(Self::Off),
            _ => {
                p.push(path, format!("expected keep, replace or off, found {}", describe(v)));
                None
            }
        }
    }
}

impl FromTree for DnsSpec {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        let d = Self::default();
        let mut f = Fields::of(v, path, p)?;
        let spec = Self {
            refresh: f.or("refresh", d.refresh, p),
            timeout: f.or("timeout", d.timeout, p),
            family: f.or("family", d.family, p),
        };
        f.finish(p);
        Some(spec)
    }
}

impl FromTree for AddressFamily {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        match v.as_str() {
            Some("v4Preferred") => Some(Self::V4Preferred),
            Some("all") => Some(Self::All),
            Some("v4") => Some(Self::V4),
            Some("v6") => Some(Self::V6),
            _ => {
                p.push(
                    path,
                    format!("expected v4Preferred, all, v4 or v6, found {}", describe(v)),
                );
                None
            }
        }
    }
}

impl FromTree for PathOptions {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        let d = Self::default();
        let mut f = Fields::of(v, path, p)?;
        let o = Self {
            escaped_slashes: f.or("escapedSlashes", d.escaped_slashes, p),
            merge_slashes: f.or("mergeSlashes", d.merge_slashes, p),
        };
        f.finish(p);
        Some(o)
    }
}

impl FromTree for EscapedSlashes {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        match v.as_str() {
            Some("keep") => Some(Self::Keep),
            Some("reject") => Some(Self::Reject),
            Some("unescape") => Some(Self::Unescape),
            _ => {
                p.push(
                    path,
                    format!("expected keep, reject or unescape, found {}", describe(v)),
                );
                None
            }
        }
    }
}

impl FromTree for RouteSpec {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        let mut f = Fields::of(v, path, p)?;
        let name = f.required("name", p);
        let matches = f.optional("match", p).unwrap_or_default();
        let tracks = f.required("tracks", p);
        let rules = f.or("rules", Vec::new(), p);
        let sticky = f.optional("sticky", p);
        let timeout = f.optional("timeout", p);
        let retry = f.optional("retry", p);
        let mirror = f.optional("mirror", p);
        f.finish(p);
        Some(Self {
            name: name?,
            matches,
            tracks: tracks?,
            rules,
            sticky,
            timeout,
            retry,
            mirror,
        })
    }
}

impl FromTree for MirrorSpec {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        let mut f = Fields::of(v, path, p)?;
        let track = f.required("track", p);
        let percent = f.required("percent", p);
        let max_in_flight = f.or("maxInFlight", DEFAULT_MIRROR_MAX_IN_FLIGHT, p);
        let methods = match f.raw("methods") {
            None => DEFAULT_MIRROR_METHODS.map(str::to_owned).to_vec(),
            Some(Value::Sequence(_)) => f.or("methods", Vec::new(), p),
            Some(_) => f.optional::<String>("methods", p).into_iter().collect(),
        };
        if matches!(f.raw("match"), Some(Value::Sequence(list)) if list.is_empty()) {
            p.push(
                f.path_of("match"),
                "list at least one match, or leave match out to copy every request",
            );
        }
        let matches = f.or("match", Vec::new(), p);
        let body = f.optional("body", p);
        f.finish(p);
        Some(Self {
            track: track?,
            percent: percent?,
            max_in_flight,
            methods,
            matches,
            body,
        })
    }
}

impl FromTree for MirrorBodySpec {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        let mut f = Fields::of(v, path, p)?;
        let max_bytes = f.required("maxBytes", p);
        f.finish(p);
        Some(Self { max_bytes: max_bytes? })
    }
}

impl FromTree for RequestMatch {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        let mut f = Fields::of(v, path, p)?;
        let method = match f.raw("method") {
            Some(Value::Sequence(_)) => f.optional("method", p).unwrap_or_default(),
            Some(_) => f.optional::<String>("method", p).into_iter().collect(),
            None => Vec::new(),
        };
        let m = Self {
            host: f.optional("host", p),
            path: f.optional("path", p),
            path_prefix: f.optional("pathPrefix", p),
            path_regex: f.optional("pathRegex", p),
            method,
            headers: f.or("headers", Vec::new(), p),
            query_params: f.or("queryParams", Vec::new(), p),
            cookies: f.or("cookies", Vec::new(), p),
        };
        f.finish(p);
        Some(m)
    }
}

impl FromTree for ValueMatch {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        let mut f = Fields::of(v, path, p)?;
        let name = f.required("name", p);
        let value = f.optional("value", p);
        let one_of = f.optional("oneOf", p);
        let regex = f.optional("regex", p);
        let present = f.optional("present", p);
        f.finish(p);
        Some(Self {
            name: name?,
            value,
            one_of,
            regex,
            present,
        })
    }
}

impl FromTree for TrackSpec {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        let mut f = Fields::of(v, path, p)?;
        let name = f.required("name", p);
        let endpoints = f.required("endpoints", p);
        let weight = f.or("weight", 0.0, p);
        let protocol = f.or("protocol", UpstreamProtocol::default(), p);
        let outlier_detection = f.optional("outlierDetection", p);
        let health_check = f.optional("healthCheck", p);
        f.finish(p);
        Some(Self {
            name: name?,
            endpoints: endpoints?,
            weight,
            protocol,
            outlier_detection,
            health_check,
        })
    }
}

impl FromTree for EndpointSpec {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        if let Value::String(s) = v {
            return Some(Self {
                address: s.clone(),
                weight: 1.0,
            });
        }
        let mut f = Fields::of(v, path, p)?;
        let address = f.required("address", p);
        let weight = f.or("weight", 1.0, p);
        f.finish(p);
        Some(Self {
            address: address?,
            weight,
        })
    }
}

impl FromTree for UpstreamProtocol {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        match v.as_str() {
            Some("http1") => Some(Self::Http1),
            Some("h2c") => Some(Self::H2c),
            _ => {
                p.push(path, format!("expected http1 or h2c, found {}", describe(v)));
                None
            }
        }
    }
}

impl FromTree for RuleSpec {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        let mut f = Fields::of(v, path, p)?;
        let matches = f.optional("match", p).unwrap_or_default();
        let track = f.required("track", p);
        f.finish(p);
        Some(Self { matches, track: track? })
    }
}

impl FromTree for StickySpec {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        let mut f = Fields::of(v, path, p)?;
        let header = f.optional("header", p);
        let cookie = f.optional("cookie", p);
        f.finish(p);
        Some(Self { header, cookie })
    }
}
