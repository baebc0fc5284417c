//! The dashboard in a real browser: headless Chromium, driven over WebDriver by chromedriver,
//! loads `/ui/` from a live controller (in-process, on `127.0.0.1:0`) running a rollout over
//! fake proxies (testkit's [`FakeProxy`], 100 requests a second on each track), finds the
//! rollout, its step and its charts with data, clicks Abort, confirms, and sees `Aborted`; with
//! an API token configured too, given through the page. Also: what a proxy says is shown as
//! text, never run as HTML, and the page runs under its Content-Security-Policy without an
//! error in the console.
//!
//! With `SWITCHYARD_DASHBOARD_SCREENSHOT=docs/dashboard.png` set, the first test saves the
//! rollout's page as the README shows it.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use switchyard_control::api::{Backend, Guard, serve_backend};
use switchyard_control::controller::Controller;
use switchyard_control::http::Http;
use switchyard_control::series::Measurements;
use switchyard_control::store::Store;
use switchyard_testkit::{Browser, Client, FakeProxy, Scratch};

const WITHIN: Duration = Duration::from_secs(30);

/// A controller serving its API and dashboard, with its store in `scratch`.
async fn serve(scratch: &Scratch, guard: Guard) -> String {
    let store = Store::open(&scratch.join("state")).expect("open the store");
    let controller = Controller::start(store, Http::new(Duration::from_secs(2)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("local address"));
    let backend = Backend::one(Arc::clone(&controller), &listener);
    tokio::spawn(serve_backend(listener, backend, guard));
    url
}

/// A canary over `proxies` that holds at 20% (a pause of an hour) with its analysis measuring
/// every second.
fn canary(name: &str, proxies: &[&FakeProxy]) -> String {
    let urls: Vec<String> = proxies.iter().map(|p| format!("\"{}\"", p.url)).collect();
    format!(
        r#"
name: {name}
route: checkout
proxies: [{}]
baseline: stable
candidate: canary
canary:
  steps:
    - setWeight: 20
    - pause: {{ duration: 1h }}
    - setWeight: 50
    - pause: {{}}
    - setWeight: 100
analysis:
  interval: 1s
  window: 5s
  minRequests: 50
  metrics:
    - name: success-rate
      successRate: {{ min: 0.95 }}
    - name: latency
      latencyP99Ms: {{ max: 500 }}
  emergency:
    errorRate: {{ max: 0.2 }}
"#,
        urls.join(", ")
    )
}

async fn apply(url: &str, spec: &str, token: Option<&str>) {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/yaml")];
    if let Some(b) = &bearer {
        headers.push(("authorization", b.as_str()));
    }
    let r = Client::http1()
        .send(
            http::Method::POST,
            &format!("{url}/rollouts"),
            &headers,
            spec.to_owned(),
        )
        .await
        .expect("the control API answers");
    assert_eq!(r.status, 201, "{}", r.body);
}

async fn status(url: &str, name: &str) -> Value {
    let r = Client::http1()
        .get(&format!("{url}/rollouts/{name}"), &[])
        .await
        .expect("the control API answers");
    serde_json::from_str(&r.body).expect("a status")
}

async fn browser(test: &str) -> Browser {
    Browser::start(test).await.unwrap_or_else(|e| panic!("{e}"))
}

/// Waits for the text of `selector` to be `want`.
async fn wait_text(b: &Browser, selector: &str, want: &str) {
    b.wait(WITHIN, &format!("{selector} reads {want:?}"), async |b| {
        (b.text_of(selector).await.as_deref() == Some(want)).then_some(())
    })
    .await;
}

/// The rollout's page once its step holds and its charts have `points` measurements.
async fn rollout_page_with_charts(b: &Browser, points: usize) -> usize {
    wait_text(b, "#step", "step 2 of 5").await;
    b.wait(WITHIN, &format!("{points} measurements charted"), async |b| {
        let grid = b.find("#chart-grid").await?;
        let shown: usize = b.attribute(&grid, "data-points").await?.parse().ok()?;
        (shown >= points).then_some(shown)
    })
    .await
}

/// Clicks `button[data-action=VERB]`, waits for the confirmation and confirms it.
async fn act(b: &Browser, verb: &str) -> String {
    let button = b
        .find(&format!("button[data-action={verb}]"))
        .await
        .unwrap_or_else(|| panic!("no {verb} button"));
    assert_eq!(b.attribute(&button, "disabled").await, None, "{verb} is enabled");
    let selector = format!("button[data-action={verb}]");
    let question = b
        .wait(WITHIN, "the confirmation", async |b| {
            if b.find("#confirm[open]").await.is_some() {
                return b.text_of("#confirm-text").await;
            }
            // The page redraws its buttons as it polls: a click that reached one just replaced
            // is lost (a stale element), so the button there now is clicked until it asks.
            if let Some(button) = b.find(&selector).await {
                b.click(&button).await;
            }
            None
        })
        .await;
    b.click(&b.find("#confirm-ok").await.expect("a confirm button")).await;
    question
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_follows_a_rollout_and_aborts_it() {
    let scratch = Scratch::new("dashboard");
    let url = serve(&scratch, Guard::default()).await;
    let (a, b) = (FakeProxy::start().await, FakeProxy::start().await);
    apply(&url, &canary("checkout-v2", &[&a, &b]), None).await;
    // A rollout whose proxy refuses its tables with markup for an answer: shown as text.
    let hostile = FakeProxy::start().await;
    let markup = r#"<img src=x onerror="document.title='pwned'"><b id=injected>bold</b>"#;
    hostile.refuse_writes_saying(markup);
    apply(
        &url,
        &format!(
            "name: hostile\nroute: checkout\nproxies: [\"{}\"]\nbaseline: stable\ncandidate: canary\nprogressDeadline: 1s\ncanary: {{ steps: [{{ setWeight: 10 }}] }}\n",
            hostile.url
        ),
        None,
    )
    .await;

    let browser = browser("dashboard").await;
    // `/` leads to the dashboard, which lists both rollouts.
    browser.goto(&format!("{url}/")).await;
    assert_eq!(browser.current_url().await, format!("{url}/ui/"));
    let row = browser
        .wait(WITHIN, "the rollout's row at its second step", async |b| {
            let row = b.text_of("tr[data-rollout='checkout-v2']").await?;
            row.contains("step 2 of 5").then_some(row)
        })
        .await;
    for shown in ["checkout", "canary", "Progressing", "20% (confirmed 20%)"] {
        assert!(row.contains(shown), "no {shown:?} in the row: {row}");
    }
    assert!(browser.find("tr[data-rollout='hostile']").await.is_some());

    // Its page: the step, both proxies' confirmations, charts with data and the checks.
    let link = browser.find("tr[data-rollout='checkout-v2'] a").await.expect("a link");
    browser.click(&link).await;
    let charted = rollout_page_with_charts(&browser, 3).await;
    assert_eq!(
        browser.find_all("#chart-grid .chart canvas").await.len(),
        4,
        "four charts"
    );
    let series: Measurements = serde_json::from_str(
        &Client::http1()
            .get(&format!("{url}/rollouts/checkout-v2/measurements"), &[])
            .await
            .unwrap()
            .body,
    )
    .unwrap();
    assert!(
        series.points.len() >= charted,
        "the page charts the controller's points"
    );
    let steps = browser.find_all("#step-list li").await;
    assert_eq!(steps.len(), 5);
    assert_eq!(
        browser.text_of("#step-list li.current").await.as_deref(),
        Some("2\npause 1h")
    );
    let proxies = browser.text_of("#proxies").await.unwrap();
    assert_eq!(proxies.matches("20% in version 2").count(), 2, "{proxies}");
    for check in ["success-rate", "latency", "emergency.errorRate"] {
        let row = browser.text_of(&format!("tr[data-check='{check}']")).await;
        assert!(row.is_some_and(|r| r.contains("pass")), "{check} passes");
    }
    if let Some(path) = std::env::var_os("SWITCHYARD_DASHBOARD_SCREENSHOT") {
        a.fail_candidate(0.01);
        b.fail_candidate(0.01);
        rollout_page_with_charts(&browser, charted + 8).await;
        browser.resize(1280, 1560).await;
        std::fs::write(&path, browser.screenshot().await).expect("write the screenshot");
    }

    // Abort: asked first, then done, and the page shows it.
    let question = act(&browser, "abort").await;
    assert_eq!(
        question,
        "Abort checkout-v2? Every request goes back to the baseline at once."
    );
    wait_text(&browser, "#phase", "Aborted").await;
    wait_text(&browser, "#abort-reason", "aborted by an operator").await;
    assert_eq!(status(&url, "checkout-v2").await["phase"], "Aborted");
    assert!(browser.find("#confirm[open]").await.is_none(), "the dialog closed");
    let retry = browser.find("button[data-action=retry]").await.unwrap();
    assert_eq!(browser.attribute(&retry, "disabled").await, None);
    let events = browser.text_of("#events").await.unwrap();
    assert!(events.contains("abort"), "{events}");

    // The hostile proxy's answer, in the proxies' table and the degraded event, as text.
    browser.goto(&format!("{url}/ui/#/rollouts/hostile")).await;
    browser
        .wait(WITHIN, "the degraded event naming the refusal", async |b| {
            let events = b.text_of("#events").await?;
            (events.contains("degraded") && events.contains(markup)).then_some(())
        })
        .await;
    assert!(browser.text_of("#proxies").await.unwrap().contains(markup));
    let injected = browser
        .execute(
            "return [document.title, document.querySelectorAll('img, #injected').length]",
            &[],
        )
        .await;
    assert_eq!(injected, serde_json::json!(["Switchyard", 0]));

    // An address the dashboard does not have is the API's 404.
    let r = Client::http1().get(&format!("{url}/ui/nope.js"), &[]).await.unwrap();
    assert_eq!(r.status, 404);
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "the console shows errors: {errors:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_asks_for_the_token_and_commands_with_it() {
    let scratch = Scratch::new("dashboard-token");
    let token = "tok-dashboard-7Qx";
    let url = serve(&scratch, Guard::bearer(token)).await;
    let proxy = FakeProxy::start().await;
    apply(&url, &canary("guarded", &[&proxy]), Some(token)).await;

    let browser = browser("dashboard-token").await;
    // Reading needs no token.
    browser.goto(&format!("{url}/ui/#/rollouts/guarded")).await;
    rollout_page_with_charts(&browser, 1).await;

    // Abort: the API wants the token, so the page asks for it.
    act(&browser, "abort").await;
    let asked = browser
        .wait(WITHIN, "the page asking for the token", async |b| {
            b.find("#token[open]").await?;
            b.text_of("#token-text").await
        })
        .await;
    assert!(
        asked.starts_with("Authorization: this control API takes commands only with its bearer token"),
        "{asked}"
    );
    // A wrong token: the API's refusal, and nothing done.
    let input = browser.find("#token-input").await.unwrap();
    browser.type_into(&input, "not-the-token").await;
    browser.click(&browser.find("#token-save").await.unwrap()).await;
    browser
        .wait(WITHIN, "the refusal of the wrong token", async |b| {
            let error = b.text_of("#confirm-error").await?;
            error
                .contains("the bearer token is not this control API's")
                .then_some(())
        })
        .await;
    assert_eq!(status(&url, "guarded").await["phase"], "Progressing");

    // The right one: asked again, kept for the tab, and the abort goes through.
    browser.click(&browser.find("#confirm-ok").await.unwrap()).await;
    browser
        .wait(WITHIN, "the page asking again", async |b| b.find("#token[open]").await)
        .await;
    let input = browser.find("#token-input").await.unwrap();
    browser.type_into(&input, token).await;
    browser.click(&browser.find("#token-save").await.unwrap()).await;
    wait_text(&browser, "#phase", "Aborted").await;
    assert_eq!(status(&url, "guarded").await["phase"], "Aborted");
    assert_eq!(
        browser
            .execute("return sessionStorage.getItem('switchyard.token')", &[])
            .await,
        Value::from(token)
    );
    wait_text(&browser, "#token-button", "API token ✓").await;
    // Kept: the next commands need no asking.
    act(&browser, "retry").await;
    wait_text(&browser, "#phase", "Progressing").await;
    wait_text(&browser, "#step", "step 2 of 5").await;
    let button = browser.find("button[data-action=weight]").await.unwrap();
    browser.click(&button).await;
    let input = browser
        .wait(WITHIN, "the weight's input", async |b| {
            b.find("#confirm[open] #confirm-weight").await
        })
        .await;
    browser.type_into(&input, "150").await;
    browser.click(&browser.find("#confirm-ok").await.unwrap()).await;
    wait_text(
        &browser,
        "#confirm-error",
        "Give the candidate's weight, a number from 0 to 100.",
    )
    .await;
    browser.type_into(&input, "35").await;
    browser.click(&browser.find("#confirm-ok").await.unwrap()).await;
    wait_text(&browser, "#weight", "35% (confirmed 35%)").await;
    assert_eq!(status(&url, "guarded").await["weight"], 35.0);
    assert_eq!(proxy.weight(), 35.0);
    let errors: Vec<String> = browser
        .console_errors()
        .await
        .into_iter()
        // The refused commands themselves, which the browser logs as failed loads.
        .filter(|e| !e.contains("401 (Unauthorized)"))
        .collect();
    assert!(errors.is_empty(), "the console shows errors: {errors:#?}");
}
