//! The state file: a restarted proxy serves the table it was last given, at once and at its
//! version (in-process, and the real binary killed with SIGKILL); a state file it cannot use, or
//! one older than an edit of the config file, gives way to the config file; a table it cannot
//! keep is refused; two proxies never share one.

mod common;

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use common::{admin_json, put_routes, url};
use http::Method;
use switchyard_config::{Format, load_config};
use switchyard_proxy::{Options, Running, start};
use switchyard_testkit::openapi::{OpenApi, assert_object_matches};
use switchyard_testkit::{Client, MockUpstream, Scratch, Table, assert_eventually};

/// A stable and a canary upstream.
struct Tracks {
    stable: MockUpstream,
    canary: MockUpstream,
}

impl Tracks {
    async fn start() -> Self {
        Self {
            stable: MockUpstream::start("stable").await,
            canary: MockUpstream::start("canary").await,
        }
    }

    /// One route, `canary_percent` to the canary; `header` holds the proxy-level settings.
    fn table(&self, header: Table, canary_percent: f64) -> Table {
        header
            .route("app")
            .track("stable", &[self.stable.addr()], 100.0 - canary_percent)
            .track("canary", &[self.canary.addr()], canary_percent)
    }

    /// A config file's text.
    fn config(&self, canary_percent: f64) -> String {
        self.table(Table::new().on_free_ports(), canary_percent).yaml()
    }

    /// A routes document to `PUT`.
    fn routes(&self, canary_percent: f64) -> String {
        self.table(Table::new(), canary_percent).yaml()
    }
}

fn config_file(dir: &Scratch) -> PathBuf {
    dir.join("proxy.yaml")
}

/// Where the state file is when `admin.stateFile` is left out.
fn default_state_file(dir: &Scratch) -> PathBuf {
    dir.join("proxy.yaml.state.json")
}

/// Starts a proxy the way the binary does: from the config file, watching it.
async fn try_start_from(dir: &Scratch) -> anyhow::Result<Running> {
    let text = std::fs::read_to_string(config_file(dir)).expect("read the config file");
    let loaded = load_config(&text, Format::Yaml, 1).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let options = Options {
        config_file: Some(config_file(dir)),
        ..Options::default()
    };
    start(loaded, options).await
}

async fn start_from(dir: &Scratch) -> Running {
    try_start_from(dir).await.expect("proxy starts")
}

async fn version(p: &Running) -> u64 {
    admin_json(p, "/routes").await["version"].as_u64().expect("a version")
}

/// The tracks that answered `n` requests, in order.
async fn answers(p: &Running, n: usize) -> Vec<String> {
    let client = Client::http1();
    let mut tracks = Vec::with_capacity(n);
    for _ in 0..n {
        let reply = client.get(&url(p, "/"), &[]).await.expect("proxy answers");
        assert_eq!(reply.status, 200, "{}", reply.body);
        tracks.push(reply.body);
    }
    tracks
}

async fn put(p: &Running, routes: &str) -> (u16, String) {
    let reply = put_routes(p, routes, &[("content-type", "application/yaml")]).await;
    (reply.status.as_u16(), reply.body)
}

fn state(path: &PathBuf) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("read the state file")).expect("a JSON state file")
}

/// What the proxy logs while the guard lives (on this thread: where `start` runs).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Self::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_restarted_proxy_serves_the_table_it_was_last_given_at_once() {
    let dir = Scratch::new("state-restart");
    let t = Tracks::start().await;
    // The config file still sends everyone to the candidate, as one left mid-rollout does.
    std::fs::write(config_file(&dir), t.config(100.0)).unwrap();
    let p = start_from(&dir).await;
    assert_eq!(version(&p).await, 1);
    // The controller aborts: everything back to the baseline.
    assert_eq!(put(&p, &t.routes(0.0)).await, (200, "{\"version\":2}\n".to_owned()));
    let kept = state(&default_state_file(&dir));
    assert_eq!(
        (kept["version"].as_u64(), kept["source"].as_str()),
        (Some(2), Some("adminApi"))
    );
    assert!(p.shutdown().await);

    let (logs, _guard) = Logs::capture();
    let p = start_from(&dir).await;
    assert_eq!(answers(&p, 1).await, ["stable"], "the first request after the restart");
    assert!(answers(&p, 20).await.iter().all(|t| t == "stable"));
    assert_eq!(t.canary.requests(), 0, "the aborted candidate got nothing");
    let routes = admin_json(&p, "/routes").await;
    assert_eq!(routes["version"], 2);
    assert_eq!(routes["routes"][0]["tracks"][1]["weight"], 0.0);
    assert!(
        logs.text().contains(
            "serving routing table version 2 from the state file, as before the restart: the admin \
             API (PUT /routes) published it and the config file's routes are unchanged since"
        ),
        "{}",
        logs.text()
    );
    // Versions go on rising from the stored one.
    assert_eq!(put(&p, &t.routes(5.0)).await, (200, "{\"version\":3}\n".to_owned()));
}

#[tokio::test]
async fn a_corrupt_state_file_is_set_aside_with_a_log_line() {
    let dir = Scratch::new("state-corrupt");
    let t = Tracks::start().await;
    std::fs::write(config_file(&dir), t.config(100.0)).unwrap();
    std::fs::write(default_state_file(&dir), b"{\"format\": 1, \"version\": 7, \"rou").unwrap();

    let (logs, _guard) = Logs::capture();
    let p = start_from(&dir).await;
    assert_eq!(version(&p).await, 1);
    assert_eq!(answers(&p, 5).await, ["canary"; 5], "the config file's routes");
    let line = format!(
        "the state file {} is not a valid state document (EOF while parsing a string at line 1 column 32); \
         ignoring it and serving the config file's routes as version 1",
        default_state_file(&dir).display()
    );
    assert!(logs.text().contains(&line), "{}", logs.text());
    // Replaced by a good one, of the config file's table.
    let replaced = state(&default_state_file(&dir));
    assert_eq!(
        (replaced["version"].as_u64(), replaced["source"].as_str()),
        (Some(1), Some("configFile"))
    );
}

#[tokio::test]
async fn an_edit_made_while_the_proxy_was_down_wins_over_the_stored_table() {
    let dir = Scratch::new("state-edited");
    let t = Tracks::start().await;
    std::fs::write(config_file(&dir), t.config(0.0)).unwrap();
    let p = start_from(&dir).await;
    assert_eq!(put(&p, &t.routes(100.0)).await.0, 200);
    assert!(p.shutdown().await);

    // The operator's edit: a route timeout, and still no canary.
    let edited = t
        .table(Table::new().on_free_ports(), 0.0)
        .yaml()
        .replace("  - name: app\n", "  - name: app\n    timeout: 5s\n");
    std::fs::write(config_file(&dir), edited).unwrap();
    let (logs, _guard) = Logs::capture();
    let p = start_from(&dir).await;
    assert_eq!(answers(&p, 10).await, ["stable"; 10]);
    let routes = admin_json(&p, "/routes").await;
    assert_eq!(
        (routes["version"].as_u64(), routes["routes"][0]["timeout"].as_str()),
        (Some(3), Some("5s"))
    );
    assert!(
        logs.text().contains(
            "the config file's routes changed after the state file's table (version 2) was published: \
             the edit wins, and the config file's routes are served as version 3"
        ),
        "{}",
        logs.text()
    );
    assert!(p.shutdown().await);

    // The state file now holds the edit, so the next restart serves it again, at its version.
    let p = start_from(&dir).await;
    assert_eq!(version(&p).await, 3);
    assert_eq!(answers(&p, 5).await, ["stable"; 5]);
    assert_eq!(t.canary.requests(), 0);
}

#[tokio::test]
async fn a_save_of_the_config_file_while_running_is_what_a_restart_serves() {
    let dir = Scratch::new("state-watch");
    let t = Tracks::start().await;
    std::fs::write(config_file(&dir), t.config(0.0)).unwrap();
    let p = start_from(&dir).await;
    assert_eq!(put(&p, &t.routes(100.0)).await.0, 200);
    // The operator saves the file over the API table (any save republishes the file's routes).
    std::fs::write(config_file(&dir), t.config(0.0)).unwrap();
    assert_eventually!(version(&p).await == 3);
    assert_eq!(state(&default_state_file(&dir))["source"], "configFile");
    assert!(p.shutdown().await);

    let p = start_from(&dir).await;
    assert_eq!(version(&p).await, 3);
    assert_eq!(answers(&p, 10).await, ["stable"; 10]);
}

#[tokio::test]
async fn a_table_published_after_an_edit_wins_even_when_the_edit_changed_nothing_in_force() {
    let dir = Scratch::new("state-edit-then-put");
    let t = Tracks::start().await;
    // In a directory of its own: reading it below must not look like activity in the config
    // file's directory, whose watch waits for quiet.
    std::fs::create_dir(dir.join("state")).unwrap();
    let state_file = dir.join("state/state.json");
    let config = |canary_percent| {
        let header = Table::new().setting("listen: 127.0.0.1:0").setting(&format!(
            "admin: {{ listen: 127.0.0.1:0, stateFile: '{}' }}",
            state_file.display()
        ));
        t.table(header, canary_percent).yaml()
    };
    std::fs::write(config_file(&dir), config(0.0)).unwrap();
    let p = start_from(&dir).await;
    assert_eq!(put(&p, &t.routes(100.0)).await.0, 200);
    let before = state(&state_file)["configRoutesDigest"].clone();
    // The file is saved with what the API table already serves: nothing to publish, but the
    // file's routes are now these.
    std::fs::write(config_file(&dir), config(100.0)).unwrap();
    assert_eventually!(state(&state_file)["configRoutesDigest"] != before);
    assert_eq!(version(&p).await, 2);
    // Then the controller aborts, after the edit.
    assert_eq!(put(&p, &t.routes(0.0)).await, (200, "{\"version\":3}\n".to_owned()));
    assert!(p.shutdown().await);

    let p = start_from(&dir).await;
    assert_eq!(version(&p).await, 3);
    assert_eq!(answers(&p, 10).await, ["stable"; 10]);
    assert_eq!(t.canary.requests(), 0);
}

#[tokio::test]
async fn a_table_that_cannot_be_kept_is_refused_and_the_table_in_force_stays() {
    let dir = Scratch::new("state-unwritable");
    let t = Tracks::start().await;
    let state_file = dir.join("missing/state.json");
    let header = Table::new().setting("listen: 127.0.0.1:0").setting(&format!(
        "admin: {{ listen: 127.0.0.1:0, stateFile: '{}' }}",
        state_file.display()
    ));
    std::fs::write(config_file(&dir), t.table(header, 0.0).yaml()).unwrap();

    let (logs, _guard) = Logs::capture();
    let p = start_from(&dir).await;
    assert!(
        logs.text().contains(&format!(
            "cannot write the state file {}: No such file or directory",
            state_file.display()
        )),
        "{}",
        logs.text()
    );
    let (status, body) = put(&p, &t.routes(100.0)).await;
    assert_eq!(status, 500, "{body}");
    let errors: serde_json::Value = serde_json::from_str(&body).unwrap();
    let api = OpenApi::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/admin-api.yaml"));
    assert_object_matches(&errors, api.schema("Errors"), "Errors");
    let message = errors["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "the table was not published, because it could not be kept: cannot write the state file {}: ",
            state_file.display()
        )) && message.ends_with("; the table in force stays"),
        "{message}"
    );
    assert_eq!(version(&p).await, 1);
    assert_eq!(answers(&p, 10).await, ["stable"; 10]);
    assert!(!dir.join("missing").exists());

    // Once the directory is there, the same table is kept and published.
    std::fs::create_dir(dir.join("missing")).unwrap();
    assert_eq!(put(&p, &t.routes(100.0)).await, (200, "{\"version\":2}\n".to_owned()));
    assert_eq!(state(&state_file)["version"], 2);
    assert_eq!(answers(&p, 5).await, ["canary"; 5]);
}

#[tokio::test]
async fn two_proxies_never_share_a_state_file() {
    let dir = Scratch::new("state-shared");
    let t = Tracks::start().await;
    std::fs::write(config_file(&dir), t.config(0.0)).unwrap();
    let first = start_from(&dir).await;
    assert_eq!(put(&first, &t.routes(100.0)).await.0, 200);

    // Beside the config file (the default), the second proxy runs without one, and says so.
    let (logs, guard) = Logs::capture();
    let second = start_from(&dir).await;
    assert!(
        logs.text().contains(&format!(
            "the state file {} is in use by another running proxy",
            default_state_file(&dir).display()
        )) && logs.text().contains("meanwhile this proxy keeps no state file"),
        "{}",
        logs.text()
    );
    drop(guard);
    assert_eq!(version(&second).await, 1, "the first proxy's table is not the second's");
    assert_eq!(put(&second, &t.routes(50.0)).await.0, 200);
    assert_eq!(
        state(&default_state_file(&dir))["version"],
        2,
        "still the first proxy's"
    );
    assert!(first.shutdown().await);
    assert!(second.shutdown().await);

    // Named in the configuration, it must be the proxy's own: the second does not start.
    let chosen = dir.join("chosen.json");
    let header = Table::new().setting("listen: 127.0.0.1:0").setting(&format!(
        "admin: {{ listen: 127.0.0.1:0, stateFile: '{}' }}",
        chosen.display()
    ));
    std::fs::write(config_file(&dir), t.table(header, 0.0).yaml()).unwrap();
    let third = start_from(&dir).await;
    let refused = try_start_from(&dir)
        .await
        .expect_err("a second proxy on a chosen state file");
    assert_eq!(
        format!("{refused:#}"),
        format!(
            "the state file {} is in use by another running proxy (it holds {}.lock); give each proxy \
             its own admin.stateFile",
            chosen.display(),
            chosen.display()
        )
    );
    assert!(third.shutdown().await);
    let fourth = start_from(&dir).await;
    assert_eq!(version(&fourth).await, 1);
}

/// Kills the child if the test ends before it exits.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[tokio::test]
async fn the_binary_killed_mid_rollout_comes_back_on_the_table_it_was_last_given() {
    let dir = Scratch::new("state-binary");
    let t = Tracks::start().await;
    // Both ports are held at once so that they differ, then released together.
    let (listen, admin) = {
        let (a, b) = (
            StdListener::bind("127.0.0.1:0").unwrap(),
            StdListener::bind("127.0.0.1:0").unwrap(),
        );
        (a.local_addr().unwrap(), b.local_addr().unwrap())
    };
    let header = Table::new()
        .setting(&format!("listen: {listen}"))
        .setting(&format!("admin: {{ listen: {admin} }}"));
    std::fs::write(config_file(&dir), t.table(header, 100.0).yaml()).unwrap();
    let state_file = dir.join("kept.json");
    let spawn = |log: &str| {
        let log = std::fs::File::create(dir.join(log)).expect("create the log file");
        let child = Command::new(env!("CARGO_BIN_EXE_switchyard-proxy"))
            .arg("--config")
            .arg(config_file(&dir))
            .arg("--state-file")
            .arg(&state_file)
            .args(["--workers", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn switchyard-proxy");
        Reaped(child)
    };
    let log = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    let client = Client::http1();
    let routes = format!("http://{admin}/routes");
    let ready = format!("http://{admin}/readyz");

    let mut first = spawn("first.log");
    assert_eventually!(
        {
            assert!(
                matches!(first.0.try_wait(), Ok(None)),
                "the proxy exited:\n{}",
                log("first.log")
            );
            client.get(&ready, &[]).await.is_ok_and(|r| r.status == 200)
        },
        Duration::from_secs(30)
    );
    let reply = client
        .send(Method::PUT, &routes, &[], t.routes(0.0))
        .await
        .expect("the admin API answers");
    assert_eq!((reply.status.as_u16(), reply.body.trim()), (200, "{\"version\":2}"));
    first.0.kill().expect("SIGKILL the proxy");
    first.0.wait().expect("the killed proxy's status");

    let mut second = spawn("second.log");
    assert_eventually!(
        {
            assert!(
                matches!(second.0.try_wait(), Ok(None)),
                "the proxy exited:\n{}",
                log("second.log")
            );
            client.get(&ready, &[]).await.is_ok_and(|r| r.status == 200)
        },
        Duration::from_secs(30)
    );
    let reply = client
        .get(&format!("http://{listen}/"), &[])
        .await
        .expect("the proxy answers");
    assert_eq!(
        reply.body,
        "stable",
        "the first request after the restart\n{}",
        log("second.log")
    );
    assert_eq!(t.canary.requests(), 0);
    let served: serde_json::Value = serde_json::from_str(&client.get(&routes, &[]).await.unwrap().body).unwrap();
    assert_eq!(served["version"], 2);
}
