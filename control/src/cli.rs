//! `switchyard rollout …`: the operator's verbs, as Argo Rollouts users know them, spoken to the
//! control API (`--server`, default `http://127.0.0.1:9900`, or `SWITCHYARD_SERVER`).
//!
//! Every command that changes a rollout prints what it did and the rollout's state after it.
//! Steps are shown as people count them, `step 1 of 5` for the API's `"step": 0`.

use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use clap::Subcommand;
use http::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::controller::Status;
use crate::fleet::GroupView;
use crate::http::{CallError, Http, Problems};
use crate::state::{AbortRecord, Event, Phase};

/// The rollout verbs.
#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Start a rollout from a spec file (YAML or JSON).
    Apply {
        /// The spec.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// Every rollout, one line each.
    List,
    /// A rollout's state: step, weights, per-track rps / error rate / p99.
    Status {
        /// The rollout.
        name: String,
        /// Redraw every second until the rollout completes or aborts.
        #[arg(short, long)]
        watch: bool,
    },
    /// Pass the current pause; with --full, finish every step now.
    Promote {
        /// The rollout.
        name: String,
        /// Skip every remaining step.
        #[arg(long)]
        full: bool,
    },
    /// Hold the rollout where it is.
    Pause {
        /// The rollout.
        name: String,
    },
    /// Release an operator's pause.
    Resume {
        /// The rollout.
        name: String,
    },
    /// Send every request back to the baseline.
    Abort {
        /// The rollout.
        name: String,
    },
    /// Start an aborted rollout again from its first step.
    Retry {
        /// The rollout.
        name: String,
    },
    /// Go back to the previous traffic and hold.
    Undo {
        /// The rollout.
        name: String,
    },
    /// Set the candidate's weight (percent) and hold.
    SetWeight {
        /// The rollout.
        name: String,
        /// Percent, 0 to 100.
        weight: f64,
    },
    /// Events and abort records.
    History {
        /// The rollout.
        name: String,
    },
    /// Remove a rollout that is aborted or completed, with its history.
    Delete {
        /// The rollout.
        name: String,
    },
    /// Check spec files offline (no controller needed): every problem with its field path, exit
    /// 1 on any.
    Lint {
        /// The specs (YAML or JSON).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Also check each spec's route and tracks against this table: a proxy config or a
        /// routes document.
        #[arg(long, value_name = "FILE")]
        routes: Option<PathBuf>,
    },
}

/// The fleet verbs: a group of proxies on etcd.
#[derive(Debug, Subcommand)]
pub enum FleetVerb {
    /// A group's table version and every registered proxy: its served version, lag and last
    /// heartbeat.
    Status {
        /// The group.
        group: String,
    },
    /// Write a group's table from a routes file (YAML or JSON), checked whole first.
    Apply {
        /// The group.
        group: String,
        /// The routes document (`routes: [...]`, as `PUT /routes` takes).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Write only over the table at this revision (as `fleet status` shows it).
        #[arg(long, value_name = "REVISION")]
        if_revision: Option<i64>,
    },
}

/// Runs one fleet verb against the control API at `server`, with its bearer `token` if any.
pub async fn run_fleet(server: &str, token: Option<&str>, verb: FleetVerb) -> anyhow::Result<()> {
    let api = Api::new(server, token);
    match verb {
        FleetVerb::Status { group } => {
            let view: GroupView = api.send(Method::GET, &format!("/fleet/{group}"), None).await?;
            print!("{}", render_group(&view, crate::controller::now_ms()));
        }
        FleetVerb::Apply {
            group,
            file,
            if_revision,
        } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let mut headers = vec![("content-type", content_type(&file).to_owned())];
            if let Some(r) = if_revision {
                headers.push(("if-match", r.to_string()));
            }
            let answer: serde_json::Value = api
                .send_with(
                    Method::PUT,
                    &format!("/fleet/{group}/routes"),
                    headers,
                    Some(text.into_bytes()),
                )
                .await?;
            println!(
                "group {group}'s table written at revision {}; its proxies follow it from etcd",
                answer["tableRevision"]
            );
        }
    }
    Ok(())
}

/// The human view of a group.
fn render_group(g: &GroupView, now: u64) -> String {
    let mut out = String::new();
    match (g.version, g.table_revision) {
        (Some(v), Some(r)) => {
            let _ = writeln!(out, "Group:    {}  table version {v} (revision {r})", g.group);
        }
        _ => {
            let _ = writeln!(out, "Group:    {}  no table in etcd yet", g.group);
        }
    }
    let current = g.proxies.iter().filter(|p| p.current).count();
    let _ = writeln!(
        out,
        "Proxies:  {} registered, {current} serving the group's table",
        g.proxies.len()
    );
    if g.proxies.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "{:<18} {:<28} {:>8} {:>9} {:>5}  {:<10} HEARTBEAT",
        "ID", "ADMIN", "VERSION", "REVISION", "LAG", "STATE"
    );
    for p in &g.proxies {
        let state = match (&p.refused, p.current) {
            (_, true) => "current".to_owned(),
            (Some(r), false) => format!(
                "REFUSED revision {}: {}",
                r.revision,
                r.errors.first().map_or(String::new(), ToString::to_string)
            ),
            (None, false) if p.table_revision.is_none() => "own routes".to_owned(),
            (None, false) => "behind".to_owned(),
        };
        let heartbeat = p.last_heartbeat.map_or("-".to_owned(), |at| {
            format!("{:.0} s ago", now.saturating_sub(at) as f64 / 1000.0)
        });
        let _ = writeln!(
            out,
            "{:<18} {:<28} {:>8} {:>9} {:>5}  {:<10} {heartbeat}",
            p.id.as_str(),
            p.admin_url,
            p.version,
            p.table_revision.map_or("-".to_owned(), |r| r.to_string()),
            p.lag_revisions,
            state
        );
    }
    out
}

/// `GET /rollouts/NAME/history`.
#[derive(Debug, Clone, Deserialize)]
struct History {
    events: Vec<Event>,
    #[serde(default)]
    abort: Option<AbortRecord>,
}

/// Runs one verb against the control API at `server`, with its bearer `token` if any.
pub async fn run(server: &str, token: Option<&str>, verb: Verb) -> anyhow::Result<()> {
    let api = Api::new(server, token);
    let act = |name: &str, verb: &str| format!("/rollouts/{name}/{verb}");
    match verb {
        Verb::Apply { file } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let status: Status = api
                .send(
                    Method::POST,
                    "/rollouts",
                    Some((content_type(&file), text.into_bytes())),
                )
                .await?;
            print!("rollout {} applied\n\n{}", status.name, render(&status));
        }
        Verb::List => {
            let statuses: Vec<Status> = api.send(Method::GET, "/rollouts", None).await?;
            println!(
                "{:<24} {:<12} {:<12} {:>6} {:>7}  MESSAGE",
                "NAME", "ROUTE", "PHASE", "STEP", "WEIGHT"
            );
            for s in &statuses {
                println!(
                    "{:<24} {:<12} {:<12} {:>6} {:>6}%  {}",
                    s.name,
                    s.route,
                    phase(s.phase),
                    format!("{}/{}", (s.step + 1).min(s.steps), s.steps),
                    s.weight,
                    s.message
                );
            }
        }
        Verb::Status { name, watch } => {
            // Redraw in place only on a terminal; a pipe or file gets one status after another.
            let redraw = watch && std::io::stdout().is_terminal();
            let mut first = true;
            loop {
                let status: Status = api.send(Method::GET, &format!("/rollouts/{name}"), None).await?;
                // A rollout over a group: the group's proxies too, with their lag and heartbeat.
                let group = match &status.group {
                    Some(g) => api
                        .send::<GroupView>(Method::GET, &format!("/fleet/{}", g.name), None)
                        .await
                        .ok(),
                    None => None,
                };
                if redraw {
                    print!("\x1b[2J\x1b[H");
                } else if !first {
                    println!();
                }
                print!("{}", render(&status));
                if let Some(g) = &group {
                    print!("{}", render_group(g, crate::controller::now_ms()));
                }
                first = false;
                if !watch || matches!(status.phase, Phase::Completed | Phase::Aborted) {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Verb::Promote { name, full } => {
            let (path, done) = if full {
                (format!("{}?full=true", act(&name, "promote")), "promoted fully")
            } else {
                (act(&name, "promote"), "promoted")
            };
            api.command(&path, None, &format!("rollout {name} {done}")).await?;
        }
        Verb::Pause { name } => {
            let done = format!("rollout {name} paused");
            api.command(&act(&name, "pause"), None, &done).await?;
        }
        Verb::Resume { name } => {
            let done = format!("rollout {name} resumed");
            api.command(&act(&name, "resume"), None, &done).await?;
        }
        Verb::Abort { name } => {
            let done = format!("rollout {name} aborted: every request goes to the baseline");
            api.command(&act(&name, "abort"), None, &done).await?;
        }
        Verb::Retry { name } => {
            let done = format!("rollout {name} started again from step 1");
            api.command(&act(&name, "retry"), None, &done).await?;
        }
        Verb::Undo { name } => {
            let done = format!("rollout {name} back on its previous traffic, held there");
            api.command(&act(&name, "undo"), None, &done).await?;
        }
        Verb::SetWeight { name, weight } => {
            let body = serde_json::json!({ "weight": weight }).to_string();
            let done = format!("rollout {name}: candidate weight set to {weight}%, held there");
            api.command(&act(&name, "weight"), Some(body), &done).await?;
        }
        Verb::Delete { name } => {
            let _: serde_json::Value = api.send(Method::DELETE, &format!("/rollouts/{name}"), None).await?;
            println!("rollout {name} deleted");
        }
        Verb::Lint { files, routes } => {
            // Offline; `switchyard rollout lint` runs it before any runtime starts.
            if crate::lint::run(&files, routes.as_deref()) != std::process::ExitCode::SUCCESS {
                anyhow::bail!("lint found problems");
            }
        }
        Verb::History { name } => {
            let history: History = api.send(Method::GET, &act(&name, "history"), None).await?;
            for e in &history.events {
                println!("{}  {:<10} {}", time(e.at), e.kind, e.message);
            }
            if let Some(abort) = &history.abort {
                print!("{}", abort_lines(abort));
            }
        }
    }
    Ok(())
}

/// The control API as the CLI speaks it: typed answers, and every failure a sentence.
struct Api {
    http: Http,
    /// The base URL, without a trailing `/`.
    server: String,
    /// The API's bearer token, sent with every call.
    token: Option<String>,
}

impl Api {
    fn new(server: &str, token: Option<&str>) -> Self {
        Self {
            http: Http::new(Duration::from_secs(10)),
            server: server.trim_end_matches('/').to_owned(),
            token: token.map(str::to_owned),
        }
    }

    /// `method path` with `body` (content type, bytes), expecting 2xx and a `T`.
    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> anyhow::Result<T> {
        let (headers, body) = match body {
            Some((content_type, bytes)) => (vec![("content-type", content_type.to_owned())], Some(bytes)),
            None => (Vec::new(), None),
        };
        self.send_with(method, path, headers, body).await
    }

    /// `method path` with `headers` and `body`, expecting 2xx and a `T`.
    async fn send_with<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        mut headers: Vec<(&str, String)>,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.server);
        if let Some(token) = &self.token {
            headers.push(("authorization", format!("Bearer {token}")));
        }
        let (status, _, answer) = self
            .http
            .call(method, &url, &headers, body)
            .await
            .map_err(|e| self.unreachable(e))?;
        if !status.is_success() {
            return Err(refused(status, &answer));
        }
        serde_json::from_slice(&answer).map_err(|e| {
            anyhow!(
                "the control API at {} answered {path} with JSON this CLI cannot read ({e}); are \
                 `switchyard serve` and this CLI the same version?",
                self.server
            )
        })
    }

    /// A command: `POST path` with an optional JSON body, then `done` and the state after it.
    async fn command(&self, path: &str, body: Option<String>, done: &str) -> anyhow::Result<()> {
        let body = body.map(|b| ("application/json", b.into_bytes()));
        let status: Status = self.send(Method::POST, path, body).await?;
        print!("{done}\n\n{}", render(&status));
        Ok(())
    }

    fn unreachable(&self, e: CallError) -> anyhow::Error {
        match e {
            CallError::Unreachable { cause, .. } => anyhow!(
                "cannot reach the control API at {}: {cause}; is `switchyard serve` running?",
                self.server
            ),
            CallError::Invalid { reason, .. } => anyhow!(
                "cannot use {:?} as the control API's URL (--server or SWITCHYARD_SERVER): {reason}",
                self.server
            ),
            e => e.into(),
        }
    }
}

/// What the API said when it refused: its problems, one a line, each with the field it is
/// about; or, for a body that is not an error document, the status and the body.
fn refused(status: StatusCode, body: &[u8]) -> anyhow::Error {
    let text = String::from_utf8_lossy(body);
    match Problems::parse(&text) {
        Some(Problems { errors }) if errors.len() == 1 => anyhow!("{}", errors[0]),
        Some(Problems { errors }) => {
            let lines: Vec<String> = errors.iter().map(|p| format!("  {p}")).collect();
            anyhow!("{} problems:\n{}", errors.len(), lines.join("\n"))
        }
        None => anyhow!("the control API answered {status}: {}", text.trim()),
    }
}

fn content_type(file: &std::path::Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()) {
        Some("json") => "application/json",
        _ => "application/yaml",
    }
}

fn phase(p: Phase) -> &'static str {
    match p {
        Phase::Progressing => "Progressing",
        Phase::Paused => "Paused",
        Phase::Completed => "Completed",
        Phase::Aborted => "Aborted",
    }
}

/// The step as people count them, from 1: `step 2 of 5`, or `all 5 steps done` past the last.
fn step_label(step: usize, steps: usize) -> String {
    if step >= steps {
        format!("all {steps} steps done")
    } else {
        format!("step {} of {steps}", step + 1)
    }
}

/// The human view of a status.
fn render(s: &Status) -> String {
    let mut out = String::new();
    let filled = ((s.weight / 5.0).round().max(0.0) as usize).min(20);
    let bar: String = "█".repeat(filled) + &"░".repeat(20 - filled);
    let _ = writeln!(out, "Name:     {}", s.name);
    let _ = writeln!(out, "Route:    {}", s.route);
    let _ = writeln!(out, "Phase:    {}  ({})", phase(s.phase), step_label(s.step, s.steps));
    let confirmed = s.confirmed_weight.map_or("none yet".to_owned(), |c| format!("{c}%"));
    let _ = writeln!(out, "Weight:   {bar} {}% (confirmed {confirmed})", s.weight);
    let _ = writeln!(out, "Message:  {}", s.message);
    if let Some(r) = &s.rollback {
        let next: Vec<String> = r.next.iter().map(|w| format!("{w}%")).collect();
        let _ = writeln!(out, "Rollback: stepping down, then {}", next.join(", "));
    }
    if let Some(g) = s.gate.as_ref().filter(|g| !g.open) {
        let last = g
            .last_error
            .as_deref()
            .map_or(String::new(), |e| format!("; last: {e}"));
        let _ = writeln!(
            out,
            "Gate:     {} shut after {} call{}{last}",
            g.url,
            g.calls,
            if g.calls == 1 { "" } else { "s" }
        );
    }
    for (i, (name, t)) in s.tracks.iter().enumerate() {
        let _ = writeln!(
            out,
            "{}{:<10} {:>8.1} rps  errors {:>6.2}%  p99 {}",
            if i == 0 { "Tracks:   " } else { "          " },
            name,
            t.rps,
            100.0 * t.error_rate,
            t.p99_ms.map_or("-".to_owned(), |p| format!("{p:.1} ms"))
        );
    }
    if let Some(age) = s.tracks_age_ms.filter(|_| !s.tracks.is_empty()) {
        let _ = writeln!(out, "          (measured {:.1} s ago)", age as f64 / 1000.0);
    }
    if let Some(g) = &s.group {
        let written = g
            .table_revision
            .map_or("not written yet".to_owned(), |r| format!("written at revision {r}"));
        let _ = writeln!(
            out,
            "Group:    {}  traffic {written}, {} proxies registered",
            g.name, g.registered
        );
        if let Some(e) = &g.error {
            let _ = writeln!(out, "          {e}");
        }
    }
    for p in &s.proxies {
        let state = match (p.version, &p.error) {
            (Some(version), None) => format!("confirmed version {version}"),
            (Some(version), Some(e)) => format!("confirmed version {version}; last call failed: {e}"),
            (None, Some(e)) => format!("NOT CONFIRMED: {e}"),
            (None, None) => "not confirmed yet".to_owned(),
        };
        let _ = writeln!(out, "Proxy:    {}  {state}", p.url);
    }
    if let Some(d) = &s.degraded {
        let _ = writeln!(out, "Degraded: {}", d.message);
    }
    if let Some(abort) = &s.abort {
        out.push_str(&abort_lines(abort));
    }
    out
}

fn abort_lines(a: &AbortRecord) -> String {
    let mut out = format!("Abort:    {}\n", a.reason);
    let _ = writeln!(out, "          first failing measurement at {}", time(a.detected_at));
    match a.confirmed_at {
        Some(c) => {
            let _ = writeln!(
                out,
                "          every proxy on baseline at {} ({:.1} s later)",
                time(c),
                c.saturating_sub(a.detected_at) as f64 / 1000.0
            );
        }
        None => out.push_str("          not yet confirmed by every proxy\n"),
    }
    out
}

fn time(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status as the API sends it, with a field this CLI does not show.
    const PAUSED: &str = r#"{
        "name": "checkout-v2", "route": "checkout", "phase": "Paused", "step": 1, "steps": 5,
        "weight": 25.0, "confirmedWeight": 10.0, "message": "paused by an operator",
        "proxies": [{"url": "http://127.0.0.1:9901", "version": 4, "error": null},
                    {"url": "http://127.0.0.1:9911", "version": null,
                     "error": "cannot reach http://127.0.0.1:9911/routes: connection refused"}],
        "tracks": {"stable": {"requests": 950, "rps": 95.0, "errorRate": 0.001, "p99Ms": 12.5},
                   "canary": {"requests": 50, "rps": 5.0, "errorRate": 0.0, "p99Ms": null}},
        "analysis": {"outcome": "pass"}
    }"#;

    #[test]
    fn a_status_renders_steps_from_1_and_every_part() {
        let status: Status = serde_json::from_str(PAUSED).unwrap();
        let shown = render(&status);
        for line in [
            "Name:     checkout-v2",
            "Phase:    Paused  (step 2 of 5)",
            "Weight:   █████░░░░░░░░░░░░░░░ 25% (confirmed 10%)",
            "Message:  paused by an operator",
            "Tracks:   canary          5.0 rps  errors   0.00%  p99 -",
            "          stable         95.0 rps  errors   0.10%  p99 12.5 ms",
            "Proxy:    http://127.0.0.1:9901  confirmed version 4",
            "Proxy:    http://127.0.0.1:9911  NOT CONFIRMED: cannot reach http://127.0.0.1:9911/routes: connection refused",
        ] {
            assert!(shown.lines().any(|l| l == line), "no {line:?} in\n{shown}");
        }
    }

    #[test]
    fn steps_count_from_1_and_end_done() {
        assert_eq!(step_label(0, 5), "step 1 of 5");
        assert_eq!(step_label(4, 5), "step 5 of 5");
        assert_eq!(step_label(5, 5), "all 5 steps done");
    }

    #[test]
    fn refusals_read_as_their_problems() {
        let one = br#"{"errors":[{"path":"","message":"cannot promote: the rollout is Aborted"}]}"#;
        assert_eq!(
            refused(StatusCode::CONFLICT, one).to_string(),
            "cannot promote: the rollout is Aborted"
        );
        let two = br#"{"errors":[{"path":"proxies","message":"give at least one"},{"path":"candidate","message":"same as baseline"}]}"#;
        assert_eq!(
            refused(StatusCode::BAD_REQUEST, two).to_string(),
            "2 problems:\n  proxies: give at least one\n  candidate: same as baseline"
        );
        assert_eq!(
            refused(StatusCode::BAD_GATEWAY, b"upstream down\n").to_string(),
            "the control API answered 502 Bad Gateway: upstream down"
        );
    }
}
