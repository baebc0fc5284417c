//! The control API in-process: applying specs (invalid ones refused with every problem), the
//! operator's verbs and their refusals, HTTP's semantics (404, 405 with `Allow`, 400 naming the
//! field), and the OpenAPI description kept true.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use switchyard_control::api::{Backend, Guard};
use switchyard_control::controller::Controller;
use switchyard_control::http::Http;
use switchyard_control::store::Store;
use switchyard_testkit::openapi::{OpenApi, assert_object_matches};
use switchyard_testkit::{Client, FakeProxy, Scratch};

async fn serve(scratch: &Scratch) -> String {
    serve_guarded(scratch, Guard::default()).await
}

async fn serve_guarded(scratch: &Scratch, guard: Guard) -> String {
    let store = Store::open(&scratch.join("state")).unwrap();
    let controller = Controller::start(store, Http::new(Duration::from_millis(500)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let backend = Backend::one(Arc::clone(&controller), &listener);
    tokio::spawn(switchyard_control::api::serve_backend(listener, backend, guard));
    url
}

async fn call(method: http::Method, url: &str, body: &str) -> (u16, Value) {
    let r = Client::http1().send(method, url, &[], body.to_owned()).await.unwrap();
    (r.status.as_u16(), serde_json::from_str(&r.body).unwrap_or(Value::Null))
}

/// The status, the `Allow` header and the single problem of an error reply, as `path: message`.
async fn refusal(method: http::Method, url: &str, body: &str) -> (u16, Option<String>, String) {
    let r = Client::http1().send(method, url, &[], body.to_owned()).await.unwrap();
    let v: Value = serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body));
    let problems = v["errors"].as_array().unwrap_or_else(|| panic!("no errors in {v}"));
    assert_eq!(problems.len(), 1, "{v}");
    let (path, message) = (
        problems[0]["path"].as_str().unwrap(),
        problems[0]["message"].as_str().unwrap(),
    );
    let problem = if path.is_empty() {
        message.to_owned()
    } else {
        format!("{path}: {message}")
    };
    (r.status.as_u16(), r.header("allow").map(str::to_owned), problem)
}

/// A rollout whose proxy refuses every table: it starts, cannot publish, and waits.
async fn waiting_spec() -> (FakeProxy, String) {
    let proxy = FakeProxy::start().await;
    proxy.refuse_writes(true);
    let spec = format!(
        r#"
name: demo
route: checkout
proxies: ["{}"]
baseline: stable
candidate: canary
canary:
  steps:
    - setWeight: 10
    - pause: {{}}
    - setWeight: 100
"#,
        proxy.url
    );
    (proxy, spec)
}

#[tokio::test]
async fn invalid_specs_are_refused_with_every_problem() {
    let scratch = Scratch::new("control-api-invalid");
    let url = serve(&scratch).await;
    let bad = "name: x\nroute: checkout\nproxies: []\nbaseline: stable\ncandidate: stable\ncanary: { steps: [{ setWeight: 120 }] }\nanalysis: { intreval: 1s }\n";
    let (status, body) = call(http::Method::POST, &format!("{url}/rollouts"), bad).await;
    assert_eq!(status, 400, "{body}");
    let paths: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    for want in ["proxies", "candidate", "canary.steps[0].setWeight", "analysis.intreval"] {
        assert!(paths.iter().any(|p| p.starts_with(want)), "missing {want} in {paths:?}");
    }
    let (status, list) = call(http::Method::GET, &format!("{url}/rollouts"), "").await;
    assert_eq!((status, list), (200, Value::Array(vec![])));
}

#[tokio::test]
async fn verbs_act_or_say_why_not() {
    let scratch = Scratch::new("control-api-verbs");
    let url = serve(&scratch).await;
    let (_proxy, spec) = waiting_spec().await;
    let (status, body) = call(http::Method::POST, &format!("{url}/rollouts"), &spec).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["name"], "demo");
    let (status, _) = call(http::Method::POST, &format!("{url}/rollouts"), &spec).await;
    assert_eq!(status, 409, "an active rollout of the same name");

    let post = |verb: &str| {
        let target = format!("{url}/rollouts/demo/{verb}");
        async move { call(http::Method::POST, &target, "").await }
    };
    assert_eq!(post("resume").await.0, 409, "not paused by an operator");
    let (status, body) = post("pause").await;
    assert_eq!((status, body["phase"].as_str()), (200, Some("Paused")));
    assert_eq!(post("resume").await.0, 200);
    let (status, body) = call(
        http::Method::POST,
        &format!("{url}/rollouts/demo/weight"),
        "{\"weight\": 30}",
    )
    .await;
    assert_eq!((status, body["weight"].as_f64()), (200, Some(30.0)), "{body}");
    assert_eq!(
        call(http::Method::POST, &format!("{url}/rollouts/demo/weight"), "{}")
            .await
            .0,
        400
    );
    assert_eq!(post("undo").await.0, 200);
    assert_eq!(post("retry").await.0, 409, "only an aborted rollout can be retried");
    let (status, body) = post("abort").await;
    assert_eq!((status, body["phase"].as_str()), (200, Some("Aborted")));
    assert_eq!(body["abort"]["reason"], "aborted by an operator");
    assert_eq!(post("promote").await.0, 409);
    assert_eq!(post("retry").await.0, 200);
    assert_eq!(
        call(http::Method::GET, &format!("{url}/rollouts/nope"), "").await.0,
        404
    );
    assert_eq!(
        call(http::Method::POST, &format!("{url}/rollouts/demo/explode"), "")
            .await
            .0,
        404
    );

    let (status, history) = call(http::Method::GET, &format!("{url}/rollouts/demo/history"), "").await;
    assert_eq!(status, 200);
    let kinds: Vec<&str> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for k in ["apply", "pause", "resume", "weight", "undo", "abort", "retry"] {
        assert!(kinds.contains(&k), "no {k} event in {kinds:?}");
    }
}

#[tokio::test]
async fn wrong_methods_unknown_paths_and_bad_arguments_get_their_http_status() {
    let scratch = Scratch::new("control-api-http");
    let url = serve(&scratch).await;
    let (_proxy, spec) = waiting_spec().await;
    assert_eq!(call(http::Method::POST, &format!("{url}/rollouts"), &spec).await.0, 201);
    use http::Method as M;

    // A method the path does not take: 405, and `Allow` says which it does.
    for (method, path, allow) in [
        (M::GET, "/rollouts/demo/abort", "POST"),
        (M::DELETE, "/rollouts", "GET, POST"),
        (M::PUT, "/rollouts/demo", "GET, DELETE"),
        (M::POST, "/healthz", "GET"),
        (M::GET, "/rollouts/demo/weight", "POST"),
    ] {
        let (status, got, message) = refusal(method.clone(), &format!("{url}{path}"), "").await;
        assert_eq!(
            (status, got.as_deref()),
            (405, Some(allow)),
            "{method} {path}: {message}"
        );
        assert_eq!(message, format!("{path} takes {allow}, not {method}"));
    }
    // No such path: 404, whatever the method.
    for (method, path) in [
        (M::GET, "/nope"),
        (M::POST, "/rollouts/demo/explode"),
        (M::DELETE, "/rollouts/demo/history/all"),
    ] {
        let (status, allow, message) = refusal(method.clone(), &format!("{url}{path}"), "").await;
        assert_eq!((status, allow), (404, None), "{method} {path}: {message}");
        assert!(message.starts_with(&format!("no endpoint at {path}")), "{message}");
    }

    // Arguments out of range: 400 naming the field, and the rollout is untouched.
    let (_, before) = call(M::GET, &format!("{url}/rollouts/demo"), "").await;
    let weight = format!("{url}/rollouts/demo/weight");
    for body in [
        r#"{"weight": 150}"#,
        r#"{"weight": -5}"#,
        r#"{"weight": "half"}"#,
        "{}",
        "not json",
    ] {
        let (status, _, message) = refusal(M::POST, &weight, body).await;
        assert_eq!(status, 400, "{body}: {message}");
        assert!(
            message.starts_with("weight: ") && message.contains("from 0 to 100"),
            "{body}: {message}"
        );
    }
    assert_eq!(
        refusal(M::POST, &weight, r#"{"weight": 150}"#).await.2,
        "weight: must be a number from 0 to 100 (the candidate's percent), not 150"
    );
    let promote = format!("{url}/rollouts/demo/promote");
    let (status, _, message) = refusal(M::POST, &format!("{promote}?full=maybe"), "").await;
    assert_eq!(status, 400, "{message}");
    assert!(message.starts_with("full: must be true, false, 1 or 0"), "{message}");
    for target in [
        format!("{promote}?fast=1"),
        format!("{url}/rollouts?limit=5"),
        format!("{url}/rollouts/demo/pause?full=true"),
    ] {
        let (status, _, message) = refusal(M::POST, &target, "").await;
        assert_eq!(status, 400, "{target}: {message}");
        assert!(
            message.contains(": unknown query parameter; this endpoint takes"),
            "{message}"
        );
    }
    let (_, after) = call(M::GET, &format!("{url}/rollouts/demo"), "").await;
    assert_eq!(
        (&after["phase"], &after["weight"]),
        (&before["phase"], &before["weight"]),
        "{after}"
    );
    assert_eq!(after["phase"], "Progressing");

    // Every accepted spelling of `full` gets past the query check (to the controller's verdict).
    for query in ["full=0", "full=false", "full=1", "full=true", "full"] {
        let (status, body) = call(M::POST, &format!("{promote}?{query}"), "").await;
        assert_ne!(status, 400, "{query}: {body}");
    }
    // promote?full=1 took every step; the rollout completes once its proxy serves 100%, which
    // this one refuses to.
    let (_, state) = call(M::GET, &format!("{url}/rollouts/demo"), "").await;
    assert_eq!(
        (
            state["phase"].as_str(),
            state["step"].as_u64(),
            state["weight"].as_f64()
        ),
        (Some("Progressing"), Some(3), Some(100.0)),
        "promote?full=1 took every step: {state}"
    );
    assert_eq!(
        state["message"],
        "every step done: waiting for every proxy to give the candidate all traffic"
    );
}

/// Every operation the description lists is served, every other method on its paths is 405
/// with `Allow` naming exactly the documented ones, and the status carries the fields the
/// description requires.
#[tokio::test]
async fn the_openapi_description_matches_the_api() {
    let api = OpenApi::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/control-api.yaml"));
    let scratch = Scratch::new("control-api-doc");
    let url = serve(&scratch).await;
    let (_proxy, spec) = waiting_spec().await;
    assert_eq!(call(http::Method::POST, &format!("{url}/rollouts"), &spec).await.0, 201);

    let documented = api.operations();
    let served = [
        "DELETE /rollouts/{name}",
        "GET /fleet/{group}",
        "GET /healthz",
        "GET /replica",
        "GET /rollouts",
        "GET /rollouts/{name}",
        "GET /rollouts/{name}/history",
        "GET /rollouts/{name}/measurements",
        "POST /rollouts",
        "POST /rollouts/{name}/abort",
        "POST /rollouts/{name}/pause",
        "POST /rollouts/{name}/promote",
        "POST /rollouts/{name}/resume",
        "POST /rollouts/{name}/retry",
        "POST /rollouts/{name}/undo",
        "POST /rollouts/{name}/weight",
        "PUT /fleet/{group}/routes",
    ];
    assert_eq!(documented, served);
    let mut methods: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for op in &documented {
        let (method, path) = op.split_once(' ').unwrap();
        methods.entry(path.to_owned()).or_default().push(method.to_owned());
    }
    for (path, allowed) in &methods {
        let target = format!("{url}{}", path.replace("{name}", "demo").replace("{group}", "shop"));
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if allowed.iter().any(|m| m == method) {
                continue;
            }
            let r = Client::http1()
                .send(method.parse().unwrap(), &target, &[], "")
                .await
                .unwrap();
            assert_eq!(r.status, 405, "{method} {path}: {}", r.body);
            let mut allow: Vec<&str> = r.header("allow").unwrap_or("").split(", ").collect();
            allow.sort_unstable();
            assert_eq!(allow, *allowed, "Allow of {path}");
        }
    }
    for op in served
        .iter()
        .filter(|op| op.starts_with("GET") && !op.contains("/fleet/"))
    {
        let path = op.trim_start_matches("GET ").replace("{name}", "demo");
        let (status, _) = call(http::Method::GET, &format!("{url}{path}"), "").await;
        assert_eq!(status, 200, "{op}");
    }
    // Without etcd the controller is its own leader and knows no groups.
    let (_, replica) = call(http::Method::GET, &format!("{url}/replica"), "").await;
    assert_eq!(replica["role"], "leader", "{replica}");
    let (status, _, problem) = refusal(http::Method::GET, &format!("{url}/fleet/shop"), "").await;
    assert_eq!(
        (status, problem.as_str()),
        (
            404,
            "this controller runs without etcd, so it knows no groups; start it with switchyard serve --etcd URL"
        )
    );
    let (_, status) = call(http::Method::GET, &format!("{url}/rollouts/demo"), "").await;
    assert_object_matches(&status, api.schema("Status"), "status");
    assert_eq!(status["strategy"], "canary");
    assert_eq!(
        status["stepLabels"],
        serde_json::json!(["weight 10%", "pause until promoted", "weight 100%"])
    );
    // Without analysis nothing is measured.
    let (_, series) = call(http::Method::GET, &format!("{url}/rollouts/demo/measurements"), "").await;
    assert_object_matches(&series, api.schema("Measurements"), "measurements");
    assert_eq!(
        (&series["points"], &series["intervalMs"]),
        (&serde_json::json!([]), &Value::Null)
    );
}

/// A rollout whose analysis measures: `GET /rollouts/NAME/measurements` serves one point per
/// measurement, as described, and `since` gives only the later ones.
#[tokio::test]
async fn a_measured_rollout_serves_its_series() {
    let api = OpenApi::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/control-api.yaml"));
    let scratch = Scratch::new("control-api-series");
    let url = serve(&scratch).await;
    let proxy = FakeProxy::start().await;
    let spec = format!(
        "name: measured\nroute: checkout\nproxies: [\"{}\"]\nbaseline: stable\ncandidate: canary\n\
         canary: {{ steps: [{{ setWeight: 10 }}, {{ pause: {{}} }}] }}\n\
         analysis: {{ interval: 1s, window: 2s, minRequests: 10 }}\n",
        proxy.url
    );
    assert_eq!(call(http::Method::POST, &format!("{url}/rollouts"), &spec).await.0, 201);
    let measurements = format!("{url}/rollouts/measured/measurements");
    let mut series: Value;
    switchyard_testkit::assert_eventually!(
        {
            series = call(http::Method::GET, &measurements, "").await.1;
            series["points"].as_array().map_or(0, Vec::len) >= 2
        },
        Duration::from_secs(15)
    );
    assert_object_matches(&series, api.schema("Measurements"), "measurements");
    assert_eq!(
        (&series["baseline"], &series["candidate"], &series["intervalMs"]),
        (&Value::from("stable"), &Value::from("canary"), &Value::from(1000))
    );
    let points = series["points"].as_array().unwrap();
    for point in points {
        assert_object_matches(point, api.schema("Point"), "point");
        for track in ["baseline", "candidate"] {
            assert_object_matches(&point[track], api.schema("TrackFigures"), track);
        }
        // The fake proxy serves 100 requests a second on each track, each taking 10 ms.
        assert_eq!(point["baseline"]["rps"].as_f64(), Some(100.0), "{point}");
        assert_eq!(
            point["candidate"]["p50Ms"].as_f64().map(f64::round),
            Some(10.0),
            "{point}"
        );
    }
    let times: Vec<u64> = points.iter().map(|p| p["at"].as_u64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "in time order: {times:?}");
    let (_, later) = call(http::Method::GET, &format!("{measurements}?since={}", times[0]), "").await;
    let later: Vec<u64> = later["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["at"].as_u64().unwrap())
        .collect();
    assert_eq!(
        later.first(),
        times.get(1),
        "since gives the points after it: {later:?}"
    );
    let (status, _, problem) = refusal(http::Method::GET, &format!("{measurements}?since=soon"), "").await;
    assert_eq!(
        (status, problem.as_str()),
        (
            400,
            "since: must be a time in ms since the Unix epoch (a whole number), not \"soon\""
        )
    );
    assert_eq!(
        call(http::Method::GET, &format!("{url}/rollouts/nope/measurements"), "")
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn one_active_rollout_per_route_a_spec_checked_against_the_proxies_and_delete() {
    let scratch = Scratch::new("control-api-route-held");
    let url = serve(&scratch).await;
    let (_proxy, spec) = waiting_spec().await;
    let other = spec.replace("name: demo", "name: demo-two");
    // A route or track the proxies do not have is named by its field.
    for (from, to, want) in [
        (
            "route: checkout",
            "route: chekout",
            "route: there is no route \"chekout\" (the routes are checkout) on every proxy",
        ),
        (
            "candidate: canary",
            "candidate: canray",
            "candidate: route \"checkout\" has no track \"canray\" (its tracks are stable, canary) on every proxy",
        ),
    ] {
        let typo = other.replace(from, to);
        let (status, _, problem) = refusal(http::Method::POST, &format!("{url}/rollouts"), &typo).await;
        assert_eq!((status, problem.as_str()), (400, want));
    }

    assert_eq!(
        call(http::Method::GET, &format!("{url}/rollouts"), "").await.1,
        Value::Array(vec![])
    );
    assert_eq!(call(http::Method::POST, &format!("{url}/rollouts"), &spec).await.0, 201);

    // Another rollout of the same route on the same proxy: refused, naming the one holding it.
    let (status, _, problem) = refusal(http::Method::POST, &format!("{url}/rollouts"), &other).await;
    assert_eq!(status, 409);
    assert_eq!(
        problem,
        "route \"checkout\" is being rolled out by \"demo\" on the same proxies; abort it (or let it finish) first"
    );

    // Delete: refused while active, then gone.
    let (status, _, problem) = refusal(http::Method::DELETE, &format!("{url}/rollouts/demo"), "").await;
    assert_eq!(status, 409);
    assert_eq!(
        problem,
        "rollout \"demo\" is Progressing; abort it (or let it finish) before deleting it"
    );
    assert_eq!(
        call(http::Method::POST, &format!("{url}/rollouts/demo/abort"), "")
            .await
            .0,
        200
    );
    let (status, body) = call(http::Method::DELETE, &format!("{url}/rollouts/demo"), "").await;
    assert_eq!((status, body["deleted"].as_bool()), (200, Some(true)), "{body}");
    assert_eq!(
        call(http::Method::GET, &format!("{url}/rollouts/demo"), "").await.0,
        404
    );
    assert!(
        !scratch.join("state").join("demo.json").exists(),
        "its stored state is gone"
    );
    // The route is free again.
    assert_eq!(
        call(http::Method::POST, &format!("{url}/rollouts"), &other).await.0,
        201
    );
}

/// With a token configured, a command must carry it (401 with `WWW-Authenticate` otherwise);
/// reads need none; and a command from another site's page is refused even with the token.
#[tokio::test]
async fn commands_need_the_token_and_other_sites_pages_cannot_command() {
    let scratch = Scratch::new("control-api-token");
    let url = serve_guarded(&scratch, Guard::bearer("tok-3n5Qm8")).await;
    let (_proxy, spec) = waiting_spec().await;
    let rollouts = format!("{url}/rollouts");
    let r = Client::http1()
        .send(http::Method::POST, &rollouts, &[], spec.clone())
        .await
        .unwrap();
    assert_eq!(
        (r.status.as_u16(), r.header("www-authenticate")),
        (401, Some("Bearer realm=\"switchyard\"")),
        "{}",
        r.body
    );
    let bearer = [("authorization", "Bearer tok-3n5Qm8")];
    let r = Client::http1()
        .send(http::Method::POST, &rollouts, &bearer, spec)
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        call(http::Method::GET, &format!("{url}/rollouts/demo"), "").await.0,
        200
    );
    let abort = format!("{url}/rollouts/demo/abort");
    let (status, _, problem) = refusal(http::Method::POST, &abort, "").await;
    assert_eq!(status, 401);
    assert!(
        problem.starts_with("Authorization: this control API takes commands only with its bearer token"),
        "{problem}"
    );
    let cross = [("authorization", "Bearer tok-3n5Qm8"), ("sec-fetch-site", "cross-site")];
    let r = Client::http1()
        .send(http::Method::POST, &abort, &cross, String::new())
        .await
        .unwrap();
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("another site's page"), "{}", r.body);
    assert_eq!(
        call(http::Method::GET, &format!("{url}/rollouts/demo"), "").await.1["phase"],
        "Progressing"
    );
    let own = [
        ("authorization", "Bearer tok-3n5Qm8"),
        ("sec-fetch-site", "same-origin"),
    ];
    let r = Client::http1()
        .send(http::Method::POST, &abort, &own, String::new())
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
}

/// The dashboard's files: each with its type, `nosniff`, a policy that lets the page run only
/// its own files, and revalidation by `ETag`; `/` leads there; no other file; and no token
/// asked to serve them.
#[tokio::test]
async fn the_dashboard_is_served_with_its_headers() {
    let scratch = Scratch::new("control-api-dashboard");
    let url = serve_guarded(&scratch, Guard::bearer("tok-3n5Qm8")).await;
    for (from, to) in [("/", "ui/"), ("/ui", "ui/")] {
        let r = Client::http1().get(&format!("{url}{from}"), &[]).await.unwrap();
        assert_eq!((r.status.as_u16(), r.header("location")), (302, Some(to)), "{from}");
    }
    for (path, content_type) in [
        ("/ui/", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/app.css", "text/css; charset=utf-8"),
        ("/ui/favicon.svg", "image/svg+xml"),
        ("/ui/vendor/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
        ("/ui/vendor/uPlot.min.css", "text/css; charset=utf-8"),
        ("/ui/vendor/uPlot.LICENSE", "text/plain; charset=utf-8"),
    ] {
        let r = Client::http1().get(&format!("{url}{path}"), &[]).await.unwrap();
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some(content_type), "{path}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{path}");
        assert_eq!(r.header("cache-control"), Some("no-cache"), "{path}");
        let csp = r.header("content-security-policy").unwrap_or_default();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: no {directive} in {csp}");
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        let etag = r.header("etag").expect("an ETag").to_owned();
        let again = Client::http1()
            .get(&format!("{url}{path}"), &[("if-none-match", &etag)])
            .await
            .unwrap();
        assert_eq!((again.status.as_u16(), again.body.as_str()), (304, ""), "{path}");
    }
    let page = Client::http1().get(&format!("{url}/ui/"), &[]).await.unwrap().body;
    assert!(page.contains("<script src=\"app.js\" defer>"), "{page}");
    let licence = Client::http1()
        .get(&format!("{url}/ui/vendor/uPlot.LICENSE"), &[])
        .await
        .unwrap();
    assert!(licence.body.starts_with("The MIT License"), "{}", licence.body);

    let (status, _, problem) = refusal(http::Method::GET, &format!("{url}/ui/secrets.js"), "").await;
    assert_eq!(
        (status, problem.as_str()),
        (404, "the dashboard has no file at /ui/secrets.js; its page is /ui/")
    );
    let (status, allow, _) = refusal(http::Method::POST, &format!("{url}/ui/"), "").await;
    assert_eq!((status, allow.as_deref()), (405, Some("GET, HEAD")));
    // The API's own answers are not sniffed or cached either.
    let r = Client::http1().get(&format!("{url}/rollouts"), &[]).await.unwrap();
    assert_eq!(
        (r.header("x-content-type-options"), r.header("cache-control")),
        (Some("nosniff"), Some("no-store"))
    );
}
