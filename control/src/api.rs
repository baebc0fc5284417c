//! The control API (default `127.0.0.1:9900`), described in `docs/control-api.yaml`:
//! `POST /rollouts` applies a spec; `GET /rollouts`, `GET /rollouts/NAME`,
//! `GET /rollouts/NAME/history` and `GET /rollouts/NAME/measurements` (the series the
//! dashboard charts) read; `POST /rollouts/NAME/{promote,pause,resume,abort,retry,undo}`
//! (`promote?full=true`) and `POST /rollouts/NAME/weight` with `{"weight": N}` act.
//!
//! A request is checked before the controller sees it: a command without the API's token
//! (when one is configured) is 401, and one sent by another site's page 403 ([`Guard`]); an
//! unknown path is 404, a method its path does not take 405 with `Allow`, an unknown query
//! parameter or a value out of range 400 naming it. Every refusal becomes a response in one
//! place, [`Refusal::reply`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use serde_json::json;
use switchyard_config::{FieldError, Format, InstanceId};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower::service_fn;

use crate::controller::{ControlError, Controller};
#[cfg(feature = "fleet")]
use crate::http::{CallError, NoAnswer};
use crate::state::Command;

mod dashboard;
mod guard;

use guard::Denied;
pub use guard::Guard;

/// Largest spec body, bytes.
const MAX_BODY: usize = 1024 * 1024;

/// Who answers the API: one controller on its own, or a replica that answers for the leader.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A controller that runs alone (it is its own leader).
    One {
        /// The controller.
        controller: Arc<Controller>,
        /// Its id in `GET /replica`.
        id: InstanceId,
    },
    /// A replica: the leader answers itself, a follower passes commands to the leader and
    /// answers reads from etcd when the leader cannot be reached.
    #[cfg(feature = "fleet")]
    Replica(Arc<crate::replica::Replica>),
}

/// The header a follower adds to a request it passes to the leader: a request that carries it
/// is never passed on again.
#[cfg(feature = "fleet")]
const FORWARDED: &str = "x-switchyard-forwarded-by";

/// Serves the API of one controller on `listener` until the process ends, taking commands
/// from anyone who reaches it.
pub async fn serve(listener: TcpListener, controller: Arc<Controller>) {
    let backend = Backend::one(controller, &listener);
    serve_backend(listener, backend, Guard::default()).await;
}

impl Backend {
    /// One controller on its own, serving on `listener`.
    pub fn one(controller: Arc<Controller>, listener: &TcpListener) -> Self {
        let id = InstanceId::from_bits(
            u64::from(std::process::id()) << 16 ^ u64::from(listener.local_addr().map_or(0, |a| a.port())),
        );
        Self::One { controller, id }
    }
}

/// Serves the API on `listener` until the process ends, letting through what `guard` admits.
pub async fn serve_backend(listener: TcpListener, backend: Backend, guard: Guard) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (backend, guard) = (backend.clone(), guard.clone());
        tokio::spawn(async move {
            let service = ServiceBuilder::new()
                .concurrency_limit(64)
                .service(service_fn(move |req| {
                    let (backend, guard) = (backend.clone(), guard.clone());
                    async move { Ok::<_, Infallible>(handle(&backend, &guard, req).await) }
                }));
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10));
            let _ = builder
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                .await;
        });
    }
}

type Reply = Response<Full<Bytes>>;

/// What the API serves, by path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    /// `/healthz`
    Health,
    /// `/rollouts`
    Rollouts,
    /// `/rollouts/NAME`
    Rollout(String),
    /// `/rollouts/NAME/history`
    History(String),
    /// `/rollouts/NAME/measurements`
    Measurements(String),
    /// `/rollouts/NAME/{promote,pause,resume,abort,retry,undo}`
    Act(String, Action),
    /// `/rollouts/NAME/weight`
    Weight(String),
    /// `/fleet/GROUP`: the group's table and proxies.
    Group(String),
    /// `/fleet/GROUP/routes`: the group's table, written by an operator.
    GroupRoutes(String),
}

/// An operator's verb without arguments (set-weight has its own endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Promote,
    Pause,
    Resume,
    Abort,
    Retry,
    Undo,
}

impl Endpoint {
    /// The endpoint at `path`, if there is one.
    fn parse(path: &str) -> Option<Self> {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let action = |verb: &str| match verb {
            "promote" => Some(Action::Promote),
            "pause" => Some(Action::Pause),
            "resume" => Some(Action::Resume),
            "abort" => Some(Action::Abort),
            "retry" => Some(Action::Retry),
            "undo" => Some(Action::Undo),
            _ => None,
        };
        Some(match segments.as_slice() {
            ["healthz"] => Self::Health,
            ["rollouts"] => Self::Rollouts,
            ["rollouts", name] => Self::Rollout((*name).to_owned()),
            ["rollouts", name, "history"] => Self::History((*name).to_owned()),
            ["rollouts", name, "measurements"] => Self::Measurements((*name).to_owned()),
            ["rollouts", name, "weight"] => Self::Weight((*name).to_owned()),
            ["rollouts", name, verb] => Self::Act((*name).to_owned(), action(verb)?),
            ["fleet", group] => Self::Group((*group).to_owned()),
            ["fleet", group, "routes"] => Self::GroupRoutes((*group).to_owned()),
            _ => return None,
        })
    }

    /// The methods it takes, as `Allow` lists them.
    fn allow(&self) -> &'static str {
        match self {
            Self::Health | Self::History(_) | Self::Measurements(_) | Self::Group(_) => "GET",
            Self::GroupRoutes(_) => "PUT",
            Self::Rollout(_) => "GET, DELETE",
            Self::Rollouts => "GET, POST",
            Self::Act(..) | Self::Weight(_) => "POST",
        }
    }

    fn takes(&self, method: &Method) -> bool {
        self.allow().split(", ").any(|m| m == method.as_str())
    }

    /// The query parameters it takes.
    fn parameters(&self) -> &'static [&'static str] {
        match self {
            Self::Act(_, Action::Promote) => &["full"],
            Self::Measurements(_) => &["since"],
            _ => &[],
        }
    }
}

/// Why a request gets no answer from the controller; [`Refusal::reply`] makes it a response.
#[derive(Debug)]
enum Refusal {
    /// No endpoint at the path (404).
    NoEndpoint(String),
    /// No dashboard file at the path (404).
    NoFile(String),
    /// The endpoint does not take the method (405, with `Allow`).
    Method {
        method: Method,
        path: String,
        allow: &'static str,
    },
    /// A query parameter or body field that is unknown or out of range (400).
    Invalid(FieldError),
    /// The body did not arrive whole in time (408) or is not text (400).
    Body(StatusCode, &'static str),
    /// The controller refused.
    Control(ControlError),
    /// The leader got the request but did not answer it (504): it may have been taken.
    #[cfg_attr(not(feature = "fleet"), allow(dead_code, reason = "only replicas pass requests on"))]
    Unanswered(String),
    /// The guard did not let the request through (401 with `WWW-Authenticate`, or 403).
    Denied(Denied),
    /// No replica can take the request now (503, with `Retry-After`).
    #[cfg_attr(
        not(feature = "fleet"),
        allow(dead_code, reason = "only replicas are ever unavailable")
    )]
    Unavailable(String),
}

impl From<ControlError> for Refusal {
    fn from(e: ControlError) -> Self {
        Self::Control(e)
    }
}

impl From<FieldError> for Refusal {
    fn from(e: FieldError) -> Self {
        Self::Invalid(e)
    }
}

impl Refusal {
    fn reply(self) -> Reply {
        match self {
            Self::NoEndpoint(path) => errors(
                StatusCode::NOT_FOUND,
                &[FieldError::new(
                    "",
                    format!("no endpoint at {path}; docs/control-api.yaml lists them"),
                )],
            ),
            Self::NoFile(path) => errors(
                StatusCode::NOT_FOUND,
                &[FieldError::new(
                    "",
                    format!("the dashboard has no file at {path}; its page is /ui/"),
                )],
            ),
            Self::Method { method, path, allow } => {
                let mut reply = errors(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &[FieldError::new("", format!("{path} takes {allow}, not {method}"))],
                );
                reply
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
                reply
            }
            Self::Invalid(problem) => errors(StatusCode::BAD_REQUEST, &[problem]),
            Self::Body(status, message) => errors(status, &[FieldError::new("", message)]),
            Self::Denied(denied @ (Denied::NoToken | Denied::WrongToken)) => {
                let mut reply = errors(
                    StatusCode::UNAUTHORIZED,
                    &[FieldError::new("Authorization", denied.message())],
                );
                reply.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"switchyard\""),
                );
                reply
            }
            Self::Denied(denied @ Denied::CrossSite) => errors(
                StatusCode::FORBIDDEN,
                &[FieldError::new("Sec-Fetch-Site", denied.message())],
            ),
            Self::Unanswered(message) => errors(StatusCode::GATEWAY_TIMEOUT, &[FieldError::new("", message)]),
            Self::Unavailable(message) => {
                let mut reply = errors(StatusCode::SERVICE_UNAVAILABLE, &[FieldError::new("", message)]);
                reply
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                reply
            }
            Self::Control(e) => {
                let status = match &e {
                    ControlError::Invalid(_) => StatusCode::BAD_REQUEST,
                    ControlError::NotFound(_) => StatusCode::NOT_FOUND,
                    ControlError::Active(_) | ControlError::RouteTaken { .. } | ControlError::Refused(_) => {
                        StatusCode::CONFLICT
                    }
                    ControlError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
                    ControlError::NotStored(_) => StatusCode::SERVICE_UNAVAILABLE,
                    ControlError::Unconfirmed(_) => StatusCode::GATEWAY_TIMEOUT,
                    ControlError::NoEtcd => StatusCode::NOT_FOUND,
                };
                match e {
                    ControlError::Invalid(problems) => errors(status, problems.errors()),
                    e => errors(status, &[FieldError::new("", e.to_string())]),
                }
            }
        }
    }
}

async fn handle(backend: &Backend, guard: &Guard, req: Request<Incoming>) -> Reply {
    // The dashboard is served by every replica itself, with no token: it holds nothing but its
    // files, and its calls to the API are guarded like any other.
    if let Some(answer) = dashboard::answer(req.method(), req.uri().path(), req.headers()) {
        return answer.unwrap_or_else(Refusal::reply);
    }
    if let Err(denied) = guard.admit(req.method(), req.headers()) {
        return Refusal::Denied(denied).reply();
    }
    let result = match backend {
        Backend::One { controller, id } => {
            if req.uri().path() == "/replica" {
                replica_reply(&req, id, "leader", Some(json!({ "id": id, "url": null })))
            } else {
                answer(controller, req).await
            }
        }
        #[cfg(feature = "fleet")]
        Backend::Replica(replica) => replicated(replica, req).await,
    };
    result.unwrap_or_else(Refusal::reply)
}

/// `GET /replica`: this replica, its part, and the leader.
fn replica_reply(
    req: &Request<Incoming>,
    id: &InstanceId,
    role: &str,
    leader: Option<serde_json::Value>,
) -> Result<Reply, Refusal> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(Refusal::Method {
            method: req.method().clone(),
            path: "/replica".to_owned(),
            allow: "GET",
        });
    }
    Query::parse(req.uri().query(), &[])?;
    Ok(json_reply(
        StatusCode::OK,
        &json!({ "id": id, "role": role, "leader": leader }),
    ))
}

/// A replica's answer: the leader answers; a follower passes the request to the leader, and
/// answers a read itself, from etcd, when the leader cannot be reached.
#[cfg(feature = "fleet")]
async fn replicated(replica: &crate::replica::Replica, req: Request<Incoming>) -> Result<Reply, Refusal> {
    use crate::replica::Role;
    let role = replica.role();
    if req.uri().path() == "/replica" {
        let me = replica.me();
        return match &role {
            Role::Leader { .. } => replica_reply(&req, &me.id, "leader", Some(json!(me))),
            Role::Follower { leader } => replica_reply(&req, &me.id, "follower", leader.as_ref().map(|l| json!(l))),
        };
    }
    if req.uri().path() == "/healthz" {
        // Liveness is this process's own, whoever leads and whether etcd answers.
        return Ok(json_reply(StatusCode::OK, &json!({ "status": "ok" })));
    }
    let leader = match role {
        Role::Leader { controller } => return answer(&controller, req).await,
        Role::Follower { leader: Some(leader) } => Some(leader),
        Role::Follower { leader: None } => replica.read_leader().await,
    };
    let read = matches!(*req.method(), Method::GET | Method::HEAD);
    let passed_on = req.headers().contains_key(FORWARDED);
    if let (Some(leader), false) = (&leader, passed_on) {
        let (parts, body) = req.into_parts();
        let body = read_body(body).await?;
        let target = format!(
            "{}{}",
            leader.url.trim_end_matches('/'),
            parts.uri.path_and_query().map_or("/", |p| p.as_str())
        );
        let mut headers = vec![(FORWARDED, replica.me().id.to_string())];
        for name in ["content-type", "authorization", "accept", "if-match"] {
            if let Some(v) = parts.headers.get(name).and_then(|v| v.to_str().ok()) {
                headers.push((name, v.to_owned()));
            }
        }
        match replica
            .forwarding()
            .call(
                parts.method.clone(),
                &target,
                &headers,
                (!body.is_empty()).then(|| body.to_vec()),
            )
            .await
        {
            Ok((status, answered, bytes)) => {
                let mut reply = Response::new(Full::new(bytes));
                *reply.status_mut() = status;
                for name in [
                    header::CONTENT_TYPE,
                    header::ALLOW,
                    header::ETAG,
                    header::WWW_AUTHENTICATE,
                    header::RETRY_AFTER,
                    header::CACHE_CONTROL,
                    header::X_CONTENT_TYPE_OPTIONS,
                ] {
                    if let Some(v) = answered.get(&name) {
                        reply.headers_mut().insert(name, v.clone());
                    }
                }
                return Ok(reply);
            }
            Err(e) if read => {
                tracing::warn!("the leader did not answer, so this replica answers from etcd: {e}");
                return read_from_etcd(replica, Request::from_parts(parts, ())).await;
            }
            Err(
                e @ CallError::Unreachable {
                    cause: NoAnswer::Refused,
                    ..
                },
            ) => {
                return Err(Refusal::Unavailable(format!(
                    "this replica follows, and the leader did not take the request: {e}; retry in a few seconds"
                )));
            }
            Err(e) => {
                // It may have been taken: sending it again could take it twice.
                return Err(Refusal::Unanswered(format!(
                    "this replica follows, and the leader did not answer: {e}; the command may have been taken, so read the rollout's status before sending it again"
                )));
            }
        }
    }
    if read {
        let (parts, _) = req.into_parts();
        return read_from_etcd(replica, Request::from_parts(parts, ())).await;
    }
    Err(Refusal::Unavailable(
        "no replica leads right now (an election is under way); retry in a few seconds".to_owned(),
    ))
}

/// A read answered from the rollouts stored in etcd, by a controller that runs none of them.
#[cfg(feature = "fleet")]
async fn read_from_etcd(replica: &crate::replica::Replica, req: Request<()>) -> Result<Reply, Refusal> {
    let stored = replica
        .fleet()
        .rollouts()
        .await
        .map_err(|e| Refusal::Unavailable(format!("cannot read the rollouts from etcd: {e}")))?;
    let records = stored
        .into_iter()
        .map(|(name, bytes)| {
            let record = serde_json::from_slice(&bytes).map_err(|source| crate::store::LoadError::Parse {
                path: std::path::PathBuf::from(name.clone()),
                source,
            });
            (name, record)
        })
        .collect();
    let controller = Controller::read_only(replica.http().clone(), Some(Arc::clone(replica.fleet())), records);
    let (parts, ()) = req.into_parts();
    answer_parts(&controller, parts, Bytes::new()).await
}

async fn answer(controller: &Arc<Controller>, req: Request<Incoming>) -> Result<Reply, Refusal> {
    let (parts, body) = req.into_parts();
    let bytes = match parts.method {
        Method::POST | Method::PUT => read_body(body).await?,
        _ => Bytes::new(),
    };
    answer_parts(controller, parts, bytes).await
}

async fn answer_parts(
    controller: &Arc<Controller>,
    parts: http::request::Parts,
    body: Bytes,
) -> Result<Reply, Refusal> {
    let req = Request::from_parts(parts, body);
    let path = req.uri().path().to_owned();
    let endpoint = Endpoint::parse(&path).ok_or_else(|| Refusal::NoEndpoint(path.clone()))?;
    if !endpoint.takes(req.method()) {
        return Err(Refusal::Method {
            method: req.method().clone(),
            path,
            allow: endpoint.allow(),
        });
    }
    let query = Query::parse(req.uri().query(), endpoint.parameters())?;
    Ok(match endpoint {
        Endpoint::Health => json_reply(StatusCode::OK, &json!({ "status": "ok" })),
        Endpoint::Rollouts if req.method() == Method::GET => json_reply(StatusCode::OK, &controller.list().await),
        Endpoint::Rollouts => {
            let (text, format) = document(req)?;
            json_reply(StatusCode::CREATED, &controller.apply(&text, format).await?)
        }
        Endpoint::Rollout(name) if req.method() == Method::DELETE => {
            controller.delete(&name).await?;
            json_reply(StatusCode::OK, &json!({ "name": name, "deleted": true }))
        }
        Endpoint::Rollout(name) => json_reply(StatusCode::OK, &controller.status(&name).await?),
        Endpoint::History(name) => {
            let events = controller.history(&name).await?;
            let abort = controller.status(&name).await.ok().and_then(|s| s.abort);
            json_reply(
                StatusCode::OK,
                &json!({ "name": name, "events": events, "abort": abort }),
            )
        }
        Endpoint::Measurements(name) => json_reply(
            StatusCode::OK,
            &controller.measurements(&name, query.millis("since")?).await?,
        ),
        Endpoint::Act(name, action) => {
            let command = match action {
                Action::Promote => Command::Promote {
                    full: query.flag("full")?,
                },
                Action::Pause => Command::Pause,
                Action::Resume => Command::Resume,
                Action::Abort => Command::Abort,
                Action::Retry => Command::Retry,
                Action::Undo => Command::Undo,
            };
            json_reply(StatusCode::OK, &controller.command(&name, command).await?)
        }
        Endpoint::Group(group) => json_reply(StatusCode::OK, &controller.group(&group).await?),
        Endpoint::GroupRoutes(group) => {
            let expect = match req.headers().get(header::IF_MATCH) {
                None => None,
                Some(v) => Some(
                    v.to_str()
                        .ok()
                        .map(|v| v.trim().trim_matches('"'))
                        .and_then(|v| v.parse::<i64>().ok())
                        .ok_or_else(|| {
                            FieldError::new(
                                "If-Match",
                                "give the table revision the change is based on, a number (GET /fleet/GROUP shows tableRevision)",
                            )
                        })?,
                ),
            };
            let (text, format) = document(req)?;
            json_reply(
                StatusCode::OK,
                &controller.write_group(&group, &text, format, expect).await?,
            )
        }
        Endpoint::Weight(name) => {
            let weight = weight_of(&body_text(req)?)?;
            json_reply(
                StatusCode::OK,
                &controller.command(&name, Command::SetWeight(weight)).await?,
            )
        }
    })
}

/// A request's query parameters, each one its endpoint takes.
#[derive(Debug, PartialEq, Eq)]
struct Query<'q>(Vec<(&'q str, Option<&'q str>)>);

impl<'q> Query<'q> {
    /// Parses `query`, refusing a parameter not in `takes` or given twice. `name` alone (no
    /// `=`) has no value.
    fn parse(query: Option<&'q str>, takes: &[&str]) -> Result<Self, FieldError> {
        let mut given: Vec<(&str, Option<&str>)> = Vec::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = match pair.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (pair, None),
            };
            if !takes.contains(&name) {
                let takes = match takes {
                    [] => "takes no query parameters".to_owned(),
                    names => format!("takes only {}", names.join(", ")),
                };
                return Err(FieldError::new(
                    name,
                    format!("unknown query parameter; this endpoint {takes}"),
                ));
            }
            if given.iter().any(|(seen, _)| *seen == name) {
                return Err(FieldError::new(name, "given twice; give it once"));
            }
            given.push((name, value));
        }
        Ok(Self(given))
    }

    /// A boolean parameter: absent is false; `name`, `name=true` and `name=1` are true;
    /// `name=false` and `name=0` false.
    fn flag(&self, name: &str) -> Result<bool, FieldError> {
        match self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| *v) {
            None => Ok(false),
            Some(None | Some("true" | "1")) => Ok(true),
            Some(Some("false" | "0")) => Ok(false),
            Some(Some(other)) => Err(FieldError::new(
                name,
                format!("must be true, false, 1 or 0 (or {name} alone, meaning true), not {other:?}"),
            )),
        }
    }

    /// A time parameter, ms since the Unix epoch; `None` when absent.
    fn millis(&self, name: &str) -> Result<Option<u64>, FieldError> {
        match self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| *v) {
            None => Ok(None),
            Some(value) => value.and_then(|v| v.parse::<u64>().ok()).map(Some).ok_or_else(|| {
                FieldError::new(
                    name,
                    format!(
                        "must be a time in ms since the Unix epoch (a whole number), not {:?}",
                        value.unwrap_or("")
                    ),
                )
            }),
        }
    }
}

/// The weight of a `POST /rollouts/NAME/weight` body, `{"weight": N}` with N from 0 to 100.
fn weight_of(text: &str) -> Result<f64, FieldError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct SetWeight {
        // A `Value`, to say what was sent when it is not a number.
        weight: serde_json::Value,
    }
    let sent = serde_json::from_str::<SetWeight>(text).map_err(|_| {
        FieldError::new(
            "weight",
            "send {\"weight\": N} with N the candidate's percent, a number from 0 to 100",
        )
    })?;
    match sent.weight.as_f64() {
        Some(weight) if (0.0..=100.0).contains(&weight) => Ok(weight),
        // A number as a number (`150`, not `150.0`), anything else as the JSON it was.
        number => Err(FieldError::new(
            "weight",
            format!(
                "must be a number from 0 to 100 (the candidate's percent), not {}",
                number.map_or_else(|| sent.weight.to_string(), |w| w.to_string())
            ),
        )),
    }
}

/// A request's whole body, within 30 s and [`MAX_BODY`].
async fn read_body(body: Incoming) -> Result<Bytes, Refusal> {
    let collected = tokio::time::timeout(Duration::from_secs(30), Limited::new(body, MAX_BODY).collect())
        .await
        .map_err(|_| Refusal::Body(StatusCode::REQUEST_TIMEOUT, "the body did not arrive within 30s"))?
        .map_err(|_| {
            Refusal::Body(
                StatusCode::BAD_REQUEST,
                "the body could not be read whole (at most 1 MiB)",
            )
        })?;
    Ok(collected.to_bytes())
}

/// A spec or table in the body: its text, and its format by `Content-Type` (YAML or JSON), or
/// by its first character without one.
fn document(req: Request<Bytes>) -> Result<(String, Format), Refusal> {
    let format = match req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        Some(ct) if ct.contains("json") => Some(Format::Json),
        Some(ct) if ct.contains("yaml") => Some(Format::Yaml),
        _ => None,
    };
    let text = body_text(req)?;
    let format = format.unwrap_or_else(|| Format::sniff(&text));
    Ok((text, format))
}

fn body_text(req: Request<Bytes>) -> Result<String, Refusal> {
    String::from_utf8(req.into_body().to_vec())
        .map_err(|_| Refusal::Body(StatusCode::BAD_REQUEST, "the body is not UTF-8 text"))
}

fn errors(status: StatusCode, problems: &[FieldError]) -> Reply {
    json_reply(status, &json!({ "errors": problems }))
}

fn json_reply(status: StatusCode, body: &impl Serialize) -> Reply {
    let mut bytes = serde_json::to_vec(body).unwrap_or_default();
    bytes.push(b'\n');
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Every answer is the state at that moment.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_endpoints_and_their_methods() {
        let at = |path: &str| Endpoint::parse(path);
        assert_eq!(at("/rollouts/"), Some(Endpoint::Rollouts));
        assert_eq!(
            at("/rollouts/demo/abort"),
            Some(Endpoint::Act("demo".into(), Action::Abort))
        );
        assert_eq!(at("/rollouts/demo/explode"), None);
        assert_eq!(at("/rollouts/demo/history/more"), None);
        assert_eq!(at("/"), None);
        assert!(at("/rollouts").unwrap().takes(&Method::POST));
        assert!(!at("/rollouts").unwrap().takes(&Method::DELETE));
        assert!(!at("/rollouts/demo/abort").unwrap().takes(&Method::GET));
        assert_eq!(at("/rollouts/demo").unwrap().allow(), "GET, DELETE");
        assert!(!at("/rollouts/demo/history").unwrap().takes(&Method::DELETE));
    }

    #[test]
    fn full_is_a_flag_of_five_spellings() {
        let full = |query: &str| Query::parse(Some(query), &["full"]).and_then(|q| q.flag("full"));
        for yes in ["full", "full=true", "full=1"] {
            assert_eq!(full(yes), Ok(true), "{yes}");
        }
        for no in ["", "full=false", "full=0"] {
            assert_eq!(full(no), Ok(false), "{no}");
        }
        for bad in ["full=maybe", "full=", "full=TRUE", "full=yes"] {
            let e = full(bad).unwrap_err();
            assert_eq!(e.path, "full", "{bad}");
            assert!(e.message.contains("true, false, 1 or 0"), "{bad}: {e}");
        }
        assert_eq!(full("full&full=0").unwrap_err().path, "full");
    }

    #[test]
    fn since_is_a_time_in_ms() {
        let since = |query: &str| Query::parse(Some(query), &["since"]).and_then(|q| q.millis("since"));
        assert_eq!(since(""), Ok(None));
        assert_eq!(since("since=1700000000000"), Ok(Some(1_700_000_000_000)));
        for bad in ["since", "since=", "since=-1", "since=1.5", "since=yesterday"] {
            let e = since(bad).unwrap_err();
            assert_eq!(e.path, "since", "{bad}");
            assert!(
                e.message.starts_with("must be a time in ms since the Unix epoch"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn unknown_query_parameters_are_named() {
        let e = Query::parse(Some("full=1&fast=yes"), &["full"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "fast: unknown query parameter; this endpoint takes only full"
        );
        let e = Query::parse(Some("x"), &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "x: unknown query parameter; this endpoint takes no query parameters"
        );
        assert_eq!(Query::parse(Some("&"), &[]), Ok(Query(vec![])));
    }

    #[test]
    fn a_weight_is_a_number_from_0_to_100() {
        assert_eq!(weight_of(r#"{"weight": 30}"#), Ok(30.0));
        assert_eq!(weight_of(r#"{"weight": 0}"#), Ok(0.0));
        assert_eq!(weight_of(r#"{"weight": 100.0}"#), Ok(100.0));
        for (body, shown) in [
            (r#"{"weight": 150}"#, "not 150"),
            (r#"{"weight": -1}"#, "not -1"),
            (r#"{"weight": 150.5}"#, "not 150.5"),
            (r#"{"weight": 1e3}"#, "not 1000"),
            (r#"{"weight": "abc"}"#, r#"not "abc""#),
            (r#"{"weight": null}"#, "not null"),
        ] {
            let e = weight_of(body).unwrap_err();
            assert_eq!(e.path, "weight");
            assert!(
                e.message.contains("from 0 to 100") && e.message.ends_with(shown),
                "{body}: {e}"
            );
        }
        for body in ["", "{}", "30", r#"{"weight": 30, "hold": true}"#] {
            let e = weight_of(body).unwrap_err();
            assert_eq!(e.path, "weight");
            assert!(e.message.contains("from 0 to 100"), "{body}: {e}");
        }
    }
}
