//! A real browser for tests: headless Chromium driven over the W3C WebDriver protocol by
//! chromedriver (Debian's `chromium` and `chromium-driver`; `scripts/test` installs them).
//!
//! The protocol is JSON over HTTP, spoken here with the testkit's own [`Client`]: the crates
//! that wrap it (fantoccini, thirtyfour) bring in some fifty crates, two Unicode stacks among
//! them, for the dozen calls a test makes. Every call is bounded in time; waits poll the page
//! with a deadline ([`Browser::wait`]), never sleep for a fixed time. The browser and its
//! driver end with the value (on a panic too).
//!
//! ```no_run
//! # async fn demo() {
//! use std::time::Duration;
//! use switchyard_testkit::Browser;
//! let browser = Browser::start("demo").await.expect("chromedriver and chromium are installed");
//! browser.goto("http://127.0.0.1:9900/ui/").await;
//! let heading = browser
//!     .wait(Duration::from_secs(10), "the list", async |b| b.text_of("h1").await)
//!     .await;
//! assert_eq!(heading, "Rollouts");
//! # }
//! ```

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use http::Method;
use serde_json::{Value, json};

use crate::{Client, Scratch};

/// The W3C name of an element reference in JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// The longest a single WebDriver call may take (a page load included).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// An element of the page, as WebDriver names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element(String);

/// A headless Chromium and the chromedriver that drives it.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    /// `http://127.0.0.1:PORT` of chromedriver.
    url: String,
    session: String,
    client: Client,
    profile: Scratch,
}

/// Where a program is: `$VAR` if set, else the first of `names` on `PATH`.
fn program(var: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    names
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session of 1280×900, its
    /// profile in a scratch directory named after `test`. An error names what is missing.
    pub async fn start(test: &str) -> Result<Self, String> {
        let install = "apt-get install chromium chromium-driver (scripts/test installs them when missing)";
        let driver = program("CHROMEDRIVER", &["chromedriver"])
            .ok_or_else(|| format!("chromedriver is not installed (or CHROMEDRIVER not set): {install}"))?;
        let chromium = program("CHROMIUM", &["chromium", "chromium-browser", "google-chrome"])
            .ok_or_else(|| format!("chromium is not installed (or CHROMIUM not set): {install}"))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port for chromedriver: {e}"))?
            .port();
        let profile = Scratch::new(&format!("browser-{test}"));
        let child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", driver.display()))?;
        let mut browser = Self {
            driver: child,
            url: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            client: Client::http1(),
            profile,
        };
        browser.ready().await?;
        browser.session = browser.new_session(&chromium).await?;
        Ok(browser)
    }

    /// Waits for chromedriver to say it is ready.
    async fn ready(&mut self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Ok(r)) = tokio::time::timeout(
                Duration::from_secs(2),
                self.client.get(&format!("{}/status", self.url), &[]),
            )
            .await
                && serde_json::from_str::<Value>(&r.body).is_ok_and(|v| v["value"]["ready"] == true)
            {
                return Ok(());
            }
            if let Ok(Some(status)) = self.driver.try_wait() {
                return Err(format!("chromedriver exited at start ({status})"));
            }
            if tokio::time::Instant::now() > deadline {
                return Err("chromedriver did not become ready within 20 s".to_owned());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn new_session(&self, chromium: &Path) -> Result<String, String> {
        let profile = self.profile.path().display().to_string();
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": chromium,
                        "args": [
                            "--headless=new",
                            // Root in a container has no user namespace for Chromium's sandbox.
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            "--window-size=1280,900",
                            "--force-device-scale-factor=1",
                            "--lang=en-GB",
                            format!("--user-data-dir={profile}"),
                            "--no-first-run",
                            "--no-default-browser-check",
                            "--disable-extensions",
                            "--disable-background-networking",
                            "--disable-component-update",
                            "--disable-sync",
                            "--disable-default-apps",
                            "--metrics-recording-only",
                            "--mute-audio",
                        ],
                    },
                    "goog:loggingPrefs": { "browser": "ALL" },
                }
            }
        });
        let answer = self.raw(Method::POST, "/session", Some(capabilities)).await?;
        answer["sessionId"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("chromedriver gave no session: {answer}"))
    }

    /// One call to chromedriver; its `value`, or the error it names.
    async fn raw(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.url);
        let body = body.map_or_else(String::new, |b| b.to_string());
        let headers = [("content-type", "application/json; charset=utf-8")];
        let reply = tokio::time::timeout(CALL_TIMEOUT, self.client.send(method.clone(), &url, &headers, body))
            .await
            .map_err(|_| format!("{method} {path}: chromedriver did not answer within {CALL_TIMEOUT:?}"))?
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let doc: Value = serde_json::from_str(&reply.body)
            .map_err(|e| format!("{method} {path}: chromedriver answered {} with {e}", reply.status))?;
        if !reply.status.is_success() {
            return Err(format!(
                "{method} {path}: {}: {}",
                doc["value"]["error"].as_str().unwrap_or("error"),
                doc["value"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .lines()
                    .next()
                    .unwrap_or("")
            ));
        }
        Ok(doc["value"].clone())
    }

    /// A call in the session; panics with chromedriver's words if it fails.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn try_call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        self.raw(method, &format!("/session/{}{path}", self.session), body)
            .await
    }

    /// Loads `url` and waits for its document to load.
    pub async fn goto(&self, url: &str) {
        self.call(Method::POST, "/url", Some(json!({ "url": url }))).await;
    }

    /// The address the page is at.
    pub async fn current_url(&self) -> String {
        self.call(Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// The first element matching the CSS `selector`, if any.
    pub async fn find(&self, selector: &str) -> Option<Element> {
        let body = json!({ "using": "css selector", "value": selector });
        match self.try_call(Method::POST, "/element", Some(body)).await {
            Ok(v) => v[ELEMENT].as_str().map(|id| Element(id.to_owned())),
            Err(e) if e.contains("no such element") => None,
            Err(e) => panic!("{e}"),
        }
    }

    /// Every element matching the CSS `selector`.
    pub async fn find_all(&self, selector: &str) -> Vec<Element> {
        let body = json!({ "using": "css selector", "value": selector });
        let found = self.call(Method::POST, "/elements", Some(body)).await;
        found
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v[ELEMENT].as_str().map(|id| Element(id.to_owned())))
            .collect()
    }

    /// An element's rendered text; empty when it went from the page meanwhile.
    pub async fn text(&self, element: &Element) -> String {
        self.element_call(Method::GET, element, "/text", None)
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// The text of the first element matching `selector`, if there is one.
    pub async fn text_of(&self, selector: &str) -> Option<String> {
        let element = self.find(selector).await?;
        Some(self.text(&element).await)
    }

    /// An element's attribute, if it has it.
    pub async fn attribute(&self, element: &Element, name: &str) -> Option<String> {
        self.element_call(Method::GET, element, &format!("/attribute/{name}"), None)
            .await
            .as_str()
            .map(str::to_owned)
    }

    /// Clicks an element (scrolled into view first, as a person would).
    pub async fn click(&self, element: &Element) {
        self.element_call(Method::POST, element, "/click", Some(json!({})))
            .await;
    }

    /// Empties an input and types `text` into it.
    pub async fn type_into(&self, element: &Element, text: &str) {
        self.element_call(Method::POST, element, "/clear", Some(json!({})))
            .await;
        self.element_call(Method::POST, element, "/value", Some(json!({ "text": text })))
            .await;
    }

    /// An element call; a stale element (the page redrew it) answers null rather than failing.
    async fn element_call(&self, method: Method, element: &Element, path: &str, body: Option<Value>) -> Value {
        match self
            .try_call(method, &format!("/element/{}{path}", element.0), body)
            .await
        {
            Ok(v) => v,
            Err(e) if e.contains("stale element reference") || e.contains("no such element") => Value::Null,
            Err(e) => panic!("{e}"),
        }
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page; what it returns.
    pub async fn execute(&self, script: &str, args: &[Value]) -> Value {
        self.call(
            Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Makes the window `width` × `height` pixels.
    pub async fn resize(&self, width: u32, height: u32) {
        self.call(
            Method::POST,
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        )
        .await;
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        let data = self.call(Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or(""))
            .expect("chromedriver sends a screenshot in base64")
    }

    /// What the page logged at level SEVERE since the last call: script errors, resources
    /// that failed to load, Content-Security-Policy violations.
    pub async fn console_errors(&self) -> Vec<String> {
        let log = self
            .call(Method::POST, "/se/log", Some(json!({ "type": "browser" })))
            .await;
        log.as_array()
            .into_iter()
            .flatten()
            .filter(|entry| entry["level"] == "SEVERE")
            .map(|entry| entry["message"].as_str().unwrap_or("").to_owned())
            .collect()
    }

    /// Polls `probe` every 100 ms until it gives a value; panics after `within`, naming `what`
    /// and showing the page's text.
    pub async fn wait<T>(&self, within: Duration, what: &str, mut probe: impl AsyncFnMut(&Self) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(found) = probe(self).await {
                return found;
            }
            if tokio::time::Instant::now() > deadline {
                let page = self.text_of("body").await.unwrap_or_default();
                panic!(
                    "{what}: not within {within:?}; the page at {} reads:\n{page}",
                    self.current_url().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Ends the session (Chromium closes) without waiting on the runtime: a blocking
    /// `DELETE /session/ID` over a plain socket, so that it also runs in `Drop`.
    fn end_session(&self) {
        let Some(addr) = self.url.strip_prefix("http://") else {
            return;
        };
        let Ok(mut stream) = TcpStream::connect(addr) else {
            return;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let request = format!(
            "DELETE /session/{} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.session
        );
        if stream.write_all(request.as_bytes()).is_ok() {
            let _ = stream.read_to_end(&mut Vec::new());
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            self.end_session();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
