//! `switchyard rollout …`: the operator's verbs, as Argo Rollouts users know them, spoken to the
//! control API (`--server`, default `http://127.0.0.1:9900`, or `SWITCHYARD_SERVER`).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use http::Method;
use serde_json::Value;

use crate::http::{CallError, Http};

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
}

/// Runs one verb against `server`.
pub async fn run(server: &str, verb: Verb) -> anyhow::Result<()> {
    let http = Http::new(Duration::from_secs(10));
    let base = format!("{}/rollouts", server.trim_end_matches('/'));
    let post = |path: String| {
        let http = http.clone();
        async move { call(&http, Method::POST, &path, Some(Value::Null)).await }
    };
    match verb {
        Verb::Apply { file } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let (status, _, body) = http
                .call(
                    Method::POST,
                    &base,
                    &[("content-type", content_type(&file).to_owned())],
                    Some(text.into_bytes()),
                )
                .await?;
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if !status.is_success() {
                bail!(
                    "{}",
                    problems(&v).unwrap_or_else(|| format!("{status}: {}", String::from_utf8_lossy(&body)))
                );
            }
            println!("rollout {} applied", v["name"].as_str().unwrap_or("?"));
        }
        Verb::List => {
            let v = call(&http, Method::GET, &base, None).await?;
            println!(
                "{:<24} {:<12} {:<14} {:>6}  MESSAGE",
                "NAME", "ROUTE", "PHASE", "WEIGHT"
            );
            for r in v.as_array().into_iter().flatten() {
                println!(
                    "{:<24} {:<12} {:<14} {:>5}%  {}",
                    r["name"].as_str().unwrap_or(""),
                    r["route"].as_str().unwrap_or(""),
                    r["phase"].as_str().unwrap_or(""),
                    r["weight"],
                    r["message"].as_str().unwrap_or("")
                );
            }
        }
        Verb::Status { name, watch } => loop {
            let v = call(&http, Method::GET, &format!("{base}/{name}"), None).await?;
            if watch {
                print!("\x1b[2J\x1b[H");
            }
            print!("{}", render(&v));
            let terminal = matches!(v["phase"].as_str(), Some("Completed" | "Aborted"));
            if !watch || terminal {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        },
        Verb::Promote { name, full } => {
            let q = if full { "?full=true" } else { "" };
            print!("{}", render(&post(format!("{base}/{name}/promote{q}")).await?));
        }
        Verb::Pause { name } => print!("{}", render(&post(format!("{base}/{name}/pause")).await?)),
        Verb::Resume { name } => print!("{}", render(&post(format!("{base}/{name}/resume")).await?)),
        Verb::Abort { name } => print!("{}", render(&post(format!("{base}/{name}/abort")).await?)),
        Verb::Retry { name } => print!("{}", render(&post(format!("{base}/{name}/retry")).await?)),
        Verb::Undo { name } => print!("{}", render(&post(format!("{base}/{name}/undo")).await?)),
        Verb::SetWeight { name, weight } => {
            let v = call(
                &http,
                Method::POST,
                &format!("{base}/{name}/weight"),
                Some(serde_json::json!({ "weight": weight })),
            )
            .await?;
            print!("{}", render(&v));
        }
        Verb::History { name } => {
            let v = call(&http, Method::GET, &format!("{base}/{name}/history"), None).await?;
            for e in v["events"].as_array().into_iter().flatten() {
                println!(
                    "{}  {:<10} {}",
                    time(e["at"].as_u64().unwrap_or(0)),
                    e["kind"].as_str().unwrap_or(""),
                    e["message"].as_str().unwrap_or("")
                );
            }
            if v["abort"].is_object() {
                print!("{}", abort_lines(&v["abort"]));
            }
        }
    }
    Ok(())
}

fn content_type(file: &std::path::Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()) {
        Some("json") => "application/json",
        _ => "application/yaml",
    }
}

async fn call(http: &Http, method: Method, url: &str, body: Option<Value>) -> anyhow::Result<Value> {
    let answer = match body {
        Some(b) => http.send_json(method, url, &[], &b).await,
        None => http.get_json(url).await,
    };
    match answer {
        Ok(v) => Ok(v),
        Err(CallError::Status { status, body, .. }) => {
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            bail!("{}", problems(&v).unwrap_or_else(|| format!("{status}: {body}")))
        }
        Err(e) => Err(e.into()),
    }
}

fn problems(v: &Value) -> Option<String> {
    let list = v["errors"].as_array()?;
    Some(
        list.iter()
            .map(|e| match e["path"].as_str() {
                Some(p) if !p.is_empty() => format!("{p}: {}", e["message"].as_str().unwrap_or("")),
                _ => e["message"].as_str().unwrap_or("").to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// The human view of a status.
pub fn render(v: &Value) -> String {
    let mut out = String::new();
    let weight = v["weight"].as_f64().unwrap_or(0.0);
    let filled = (weight / 5.0).round() as usize;
    let bar: String = "█".repeat(filled.min(20)) + &"░".repeat(20 - filled.min(20));
    let _ = writeln!(out, "Name:     {}", v["name"].as_str().unwrap_or(""));
    let _ = writeln!(out, "Route:    {}", v["route"].as_str().unwrap_or(""));
    let _ = writeln!(
        out,
        "Phase:    {}  (step {}/{})",
        v["phase"].as_str().unwrap_or(""),
        v["step"].as_u64().unwrap_or(0).min(v["steps"].as_u64().unwrap_or(0)),
        v["steps"]
    );
    let confirmed = v["confirmedWeight"]
        .as_f64()
        .map_or("none yet".to_owned(), |c| format!("{c}%"));
    let _ = writeln!(out, "Weight:   {bar} {weight}% (confirmed {confirmed})");
    let _ = writeln!(out, "Message:  {}", v["message"].as_str().unwrap_or(""));
    if let Some(tracks) = v["tracks"].as_object() {
        let mut first = true;
        for (name, t) in tracks {
            let _ = writeln!(
                out,
                "{}{:<10} {:>8.1} rps  errors {:>6.2}%  p99 {}",
                if first { "Tracks:   " } else { "          " },
                name,
                t["rps"].as_f64().unwrap_or(0.0),
                100.0 * t["errorRate"].as_f64().unwrap_or(0.0),
                t["p99Ms"].as_f64().map_or("-".to_owned(), |p| format!("{p:.1} ms"))
            );
            first = false;
        }
    }
    for p in v["proxies"].as_array().into_iter().flatten() {
        let state = match (p["version"].as_u64(), p["error"].as_str()) {
            (Some(version), _) => format!("confirmed version {version}"),
            (None, Some(e)) => format!("NOT CONFIRMED: {e}"),
            _ => String::new(),
        };
        let _ = writeln!(out, "Proxy:    {}  {state}", p["url"].as_str().unwrap_or(""));
    }
    if v["abort"].is_object() {
        out.push_str(&abort_lines(&v["abort"]));
    }
    out
}

fn abort_lines(a: &Value) -> String {
    let detected = a["detectedAt"].as_u64().unwrap_or(0);
    let confirmed = a["confirmedAt"].as_u64();
    let mut out = format!("Abort:    {}\n", a["reason"].as_str().unwrap_or(""));
    out.push_str(&format!("          first failing measurement at {}\n", time(detected)));
    match confirmed {
        Some(c) => out.push_str(&format!(
            "          every proxy on baseline at {} ({:.1} s later)\n",
            time(c),
            c.saturating_sub(detected) as f64 / 1000.0
        )),
        None => out.push_str("          not yet confirmed by every proxy\n"),
    }
    out
}

fn time(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}
