//! The control API (default `127.0.0.1:9900`), described in `docs/control-api.yaml`:
//! `POST /rollouts` applies a spec; `GET /rollouts`, `GET /rollouts/NAME` and
//! `GET /rollouts/NAME/history` read; `POST /rollouts/NAME/{promote,pause,resume,abort,retry,undo}`
//! (`promote?full=true`) and `POST /rollouts/NAME/weight` with `{"weight": N}` act.

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
use serde_json::json;
use switchyard_config::Format;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower::service_fn;

use crate::controller::{ControlError, Controller};
use crate::state::Command;

/// Largest spec body, bytes.
const MAX_BODY: usize = 1024 * 1024;

/// Serves the API on `listener` until the process ends.
pub async fn serve(listener: TcpListener, controller: Arc<Controller>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let controller = Arc::clone(&controller);
        tokio::spawn(async move {
            let service = ServiceBuilder::new()
                .concurrency_limit(64)
                .service(service_fn(move |req| {
                    let controller = Arc::clone(&controller);
                    async move { Ok::<_, Infallible>(handle(&controller, req).await) }
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

async fn handle(controller: &Arc<Controller>, req: Request<Incoming>) -> Reply {
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let method = req.method().clone();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["healthz"]) => json_reply(StatusCode::OK, &json!({ "status": "ok" })),
        (&Method::GET, ["rollouts"]) => json_reply(StatusCode::OK, &json!(controller.list().await)),
        (&Method::POST, ["rollouts"]) => {
            let format = match req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
                Some(ct) if ct.contains("json") => Some(Format::Json),
                Some(ct) if ct.contains("yaml") => Some(Format::Yaml),
                _ => None,
            };
            let text = match body_text(req).await {
                Ok(t) => t,
                Err(reply) => return reply,
            };
            let format = format.unwrap_or_else(|| Format::sniff(&text));
            result(controller.apply(&text, format).await, StatusCode::CREATED)
        }
        (&Method::GET, ["rollouts", name]) => result(controller.status(name).await, StatusCode::OK),
        (&Method::GET, ["rollouts", name, "history"]) => match controller.history(name).await {
            Ok(events) => {
                let abort = controller.status(name).await.ok().and_then(|s| s.abort);
                json_reply(
                    StatusCode::OK,
                    &json!({ "name": name, "events": events, "abort": abort }),
                )
            }
            Err(e) => error_reply(&e),
        },
        (&Method::POST, ["rollouts", name, "weight"]) => {
            let name = (*name).to_owned();
            let text = match body_text(req).await {
                Ok(t) => t,
                Err(reply) => return reply,
            };
            let weight = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["weight"].as_f64());
            match weight {
                Some(w) => result(controller.command(&name, Command::SetWeight(w)).await, StatusCode::OK),
                None => errors(
                    StatusCode::BAD_REQUEST,
                    "weight",
                    "send {\"weight\": N} with N from 0 to 100",
                ),
            }
        }
        (&Method::POST, ["rollouts", name, verb]) => {
            let cmd = match *verb {
                "promote" => Command::Promote {
                    full: query.split('&').any(|p| p == "full=true" || p == "full"),
                },
                "pause" => Command::Pause,
                "resume" => Command::Resume,
                "abort" => Command::Abort,
                "retry" => Command::Retry,
                "undo" => Command::Undo,
                _ => return errors(StatusCode::NOT_FOUND, "", &format!("no action {verb:?}")),
            };
            result(controller.command(name, cmd).await, StatusCode::OK)
        }
        _ => errors(StatusCode::NOT_FOUND, "", &format!("no endpoint {method} {path}")),
    }
}

async fn body_text(req: Request<Incoming>) -> Result<String, Reply> {
    let collected = tokio::time::timeout(
        Duration::from_secs(30),
        Limited::new(req.into_body(), MAX_BODY).collect(),
    )
    .await
    .map_err(|_| errors(StatusCode::REQUEST_TIMEOUT, "", "the body did not arrive within 30s"))?
    .map_err(|e| errors(StatusCode::BAD_REQUEST, "", &format!("cannot read the body: {e}")))?;
    String::from_utf8(collected.to_bytes().to_vec())
        .map_err(|_| errors(StatusCode::BAD_REQUEST, "", "the body is not UTF-8"))
}

fn result<T: serde::Serialize>(r: Result<T, ControlError>, ok: StatusCode) -> Reply {
    match r {
        Ok(v) => json_reply(ok, &json!(v)),
        Err(e) => error_reply(&e),
    }
}

fn error_reply(e: &ControlError) -> Reply {
    match e {
        ControlError::Invalid(problems) => json_reply(StatusCode::BAD_REQUEST, &json!({ "errors": problems.errors() })),
        ControlError::NotFound(_) => errors(StatusCode::NOT_FOUND, "", &e.to_string()),
        ControlError::Active(_) | ControlError::RouteTaken { .. } | ControlError::Refused(_) => {
            errors(StatusCode::CONFLICT, "", &e.to_string())
        }
        ControlError::Store(_) => errors(StatusCode::INTERNAL_SERVER_ERROR, "", &e.to_string()),
    }
}

fn errors(status: StatusCode, path: &str, message: &str) -> Reply {
    json_reply(status, &json!({ "errors": [{ "path": path, "message": message }] }))
}

fn json_reply(status: StatusCode, body: &serde_json::Value) -> Reply {
    let mut bytes = serde_json::to_vec(body).unwrap_or_default();
    bytes.push(b'\n');
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
