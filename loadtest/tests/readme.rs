//! The README's "Load testing" commands, run against the README's routing table: the upstreams
//! they start are the ones the table names, the proxy they start serves that table, the load
//! test's request is one the table routes, and a short run of it has every answer 2xx, from
//! both tracks. Every address is moved to a free port; everything else is the README's.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use http::{HeaderMap, Method, Uri};
use serde_json::Value;
use switchyard_config::{Format, Loaded, RequestView, load_config};
use switchyard_loadtest::upstream::{Faults, serve};
use tokio::net::TcpListener;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The first fenced block opening with `fence` after the line `heading`.
fn block(readme: &str, heading: &str, fence: &str) -> String {
    let mut lines = readme.lines().skip_while(|l| *l != heading);
    assert!(lines.next().is_some(), "the README has no {heading:?}");
    let mut lines = lines.skip_while(|l| l.trim() != fence);
    assert!(lines.next().is_some(), "no {fence} block under {heading:?}");
    lines.take_while(|l| l.trim() != "```").collect::<Vec<_>>().join("\n")
}

/// One `cargo run --release -p PACKAGE -- ARGS… [&] [# comment]` line.
#[derive(Debug, Clone)]
struct CargoRun {
    package: String,
    args: Vec<String>,
}

impl CargoRun {
    fn parse(line: &str) -> Self {
        let words = words(line);
        let package = words
            .iter()
            .skip_while(|w| *w != "-p")
            .nth(1)
            .unwrap_or_else(|| panic!("no -p in {line:?}"))
            .clone();
        let args: Vec<String> = words.iter().skip_while(|w| *w != "--").skip(1).cloned().collect();
        assert!(words.starts_with(&["cargo".into(), "run".into()]), "{line:?}");
        Self { package, args }
    }

    fn value(&self, flag: &str) -> Option<&str> {
        let at = self.args.iter().position(|a| a == flag)?;
        self.args.get(at + 1).map(String::as_str)
    }

    /// Sets `flag`'s value, replacing the one given or adding it.
    fn set(&mut self, flag: &str, value: &str) {
        match self.args.iter().position(|a| a == flag) {
            Some(at) => self.args[at + 1] = value.to_owned(),
            None => self.args.extend([flag.to_owned(), value.to_owned()]),
        }
    }
}

/// A command line's words as sh splits them: on blanks, with '…' quoting, up to a `&` or a
/// `#` outside quotes.
fn words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quoted, mut in_word) = (Vec::new(), String::new(), false, false);
    for c in line.chars() {
        match c {
            '\'' => (quoted, in_word) = (!quoted, true),
            c if quoted => word.push(c),
            ' ' | '\t' if in_word => {
                words.push(std::mem::take(&mut word));
                in_word = false;
            }
            ' ' | '\t' => {}
            '&' | '#' => break,
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    assert!(!quoted, "an unclosed quote in {line:?}");
    if in_word {
        words.push(word);
    }
    words
}

/// Every endpoint address of the configuration, and the track each serves.
fn endpoints(loaded: &Loaded) -> Vec<(String, String)> {
    loaded
        .config
        .routes
        .iter()
        .flat_map(|r| &r.tracks)
        .flat_map(|t| t.endpoints.iter().map(|e| (e.address.clone(), t.name.to_string())))
        .collect()
}

/// The route and track `host` and `path` get, with no other header, for a random draw.
fn decide(loaded: &Loaded, host: &str, path: &str, random: u64) -> Option<(String, String)> {
    let view = RequestView {
        method: &Method::GET,
        host,
        path,
        query: "",
        headers: &HeaderMap::new(),
        random,
    };
    loaded
        .table
        .decide(&view)
        .map(|d| (d.route.name().to_string(), d.track.name().to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_load_test_against_the_readme_table_is_answered_2xx_by_both_tracks() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let table = block(&readme, "## A routing table", "```yaml");
    let commands: Vec<CargoRun> = block(&readme, "## Load testing", "```sh")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(CargoRun::parse)
        .collect();
    let is = |c: &CargoRun, package: &str, verb: Option<&str>| {
        c.package == package && verb.is_none_or(|v| c.args.first().is_some_and(|a| a == v))
    };
    let upstreams: Vec<&str> = commands
        .iter()
        .filter(|c| is(c, "switchyard-loadtest", Some("upstream")))
        .map(|c| c.value("--listen").expect("an upstream has --listen"))
        .collect();
    let proxy = commands
        .iter()
        .find(|c| is(c, "switchyard-proxy", None))
        .expect("the commands start a proxy");
    let mut run = commands
        .iter()
        .find(|c| is(c, "switchyard-loadtest", Some("run")))
        .expect("the commands run a load test")
        .clone();
    let url: Uri = run.value("--url").expect("run has --url").parse().unwrap();
    let target = url.authority().expect("an absolute --url").as_str().to_owned();
    let host = run
        .args
        .iter()
        .filter_map(|a| a.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("host"))
        .map_or(target.clone(), |(_, value)| value.trim().to_owned());
    let path = url.path().to_owned();

    // The table the README shows and the file its proxy command serves route alike, and the
    // load test's requests, to the upstreams the commands start.
    let shown = load_config(&table, Format::Yaml, 1).unwrap();
    let file = proxy.value("--config").expect("the proxy has --config");
    let served = load_config(&std::fs::read_to_string(root().join(file)).unwrap(), Format::Yaml, 1).unwrap();
    assert_eq!(
        endpoints(&shown),
        endpoints(&served),
        "{file} is not the README's table"
    );
    for (name, loaded) in [("the README's table", &shown), (file, &served)] {
        assert_eq!(
            loaded.config.listen[0].address, target,
            "--url {url} is not {name}'s listener"
        );
        for (endpoint, track) in endpoints(loaded) {
            assert!(
                upstreams.contains(&endpoint.as_str()),
                "{name}: track {track}'s endpoint {endpoint} has no upstream in the README's commands"
            );
        }
        for random in [0, u64::MAX] {
            assert!(
                decide(loaded, &host, &path, random).is_some(),
                "{name} routes no request for host {host:?} and path {path:?}: every answer would be 404"
            );
        }
    }

    // The same, running: upstreams and the proxy in this process on free ports, the README's
    // `run` command as a process, at a lower rate for a second.
    let mut text = table.clone();
    for readme_address in &upstreams {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(serve(listener, "readme", "ok\n", Faults::default()));
        text = text.replace(readme_address, &address);
    }
    text = text
        .replace(&target, "127.0.0.1:0")
        .replace(&shown.config.admin.listen, "127.0.0.1:0");
    let running = switchyard_proxy::start(
        load_config(&text, Format::Yaml, 1).unwrap(),
        switchyard_proxy::Options {
            config_file: None,
            workers: 2,
            ..switchyard_proxy::Options::default()
        },
    )
    .await
    .unwrap();
    let listening: SocketAddr = running.listen[0];
    run.set("--url", &format!("http://{listening}{path}"));
    run.set("--rate", "200");
    run.set("--duration", "1s");
    run.set("--warmup", "0s");
    run.args.push("--json".to_owned());
    let args = run.args.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_switchyard-loadtest"))
            .args(&args)
            .output()
            .expect("switchyard-loadtest runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{:?}: {}\n{stdout}\n{}",
        run.args,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let totals = &report["totals"];
    assert!(totals["requests"].as_u64().unwrap() >= 100, "{totals}");
    assert_eq!(totals["transportErrors"], 0, "{totals}");
    let statuses: Vec<&String> = totals["statuses"].as_object().unwrap().keys().collect();
    assert!(
        statuses.iter().all(|s| s.starts_with('2')),
        "answers other than 2xx: {statuses:?}"
    );
    let tracks: Vec<&str> = report["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["track"].as_str().unwrap())
        .collect();
    assert_eq!(tracks, ["canary", "stable"], "{report}");
    running.shutdown().await;
}
