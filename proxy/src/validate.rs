//! The `validate` subcommand: reads configuration files and reports, per file, every problem or
//! a summary of what routes where.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use switchyard_config::schema::{RequestMatch, ValueMatch};
use switchyard_config::{Format, Loaded, ProxyConfig, load_config};

/// Checks every file; exit code 0 if all are valid, 1 otherwise.
pub(crate) fn run(files: &[PathBuf]) -> ExitCode {
    let mut all_valid = true;
    for file in files {
        match check(file) {
            Ok(summary) => print!("{summary}"),
            Err(report) => {
                all_valid = false;
                eprint!("{report}");
            }
        }
    }
    if all_valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The summary of a valid file, or the report of its problems.
fn check(file: &Path) -> Result<String, String> {
    let name = file.display();
    let text = std::fs::read_to_string(file).map_err(|e| format!("{name}: cannot read: {e}\n"))?;
    let format = match file.extension().and_then(|e| e.to_str()) {
        Some("json") => Format::Json,
        Some("yaml" | "yml") => Format::Yaml,
        _ => Format::sniff(&text),
    };
    match load_config(&text, format, 1) {
        Ok(loaded) => Ok(summary(&name.to_string(), &loaded)),
        Err(errors) => Err(format!("{name}: {errors}\n")),
    }
}

fn summary(name: &str, loaded: &Loaded) -> String {
    let c: &ProxyConfig = &loaded.config;
    let mut out = String::new();
    let listeners: Vec<String> = c
        .listen
        .iter()
        .map(|l| format!("{}{}", l.address, if l.tls.is_some() { " (tls)" } else { "" }))
        .collect();
    let _ = writeln!(
        out,
        "{name}: valid; listen {}; admin {}; {} route{}",
        listeners.join(", "),
        c.admin.listen,
        c.routes.len(),
        if c.routes.len() == 1 { "" } else { "s" }
    );
    for route in &c.routes {
        let _ = writeln!(out, "  route {}  {}", route.name, conditions(&route.matches));
        let total: f64 = route.tracks.iter().map(|t| t.weight).sum();
        for t in &route.tracks {
            let endpoints: Vec<&str> = t.endpoints.iter().map(|e| e.address.as_str()).collect();
            let _ = writeln!(
                out,
                "    track {:<10} {:>8.4}%  {}",
                t.name.as_str(),
                100.0 * t.weight / total,
                endpoints.join(" ")
            );
        }
        for (i, rule) in route.rules.iter().enumerate() {
            let _ = writeln!(out, "    rule {i}: {} -> {}", conditions(&rule.matches), rule.track);
        }
        if let Some(s) = &route.sticky {
            let key = match (&s.header, &s.cookie) {
                (Some(h), _) => format!("header {h}"),
                (_, Some(c)) => format!("cookie {c}"),
                _ => String::new(),
            };
            let _ = writeln!(out, "    sticky by {key}");
        }
    }
    out
}

fn conditions(m: &RequestMatch) -> String {
    if m.is_empty() {
        return "every request".to_owned();
    }
    let mut parts = Vec::new();
    if let Some(h) = &m.host {
        parts.push(format!("host {h}"));
    }
    if let Some(p) = &m.path {
        parts.push(format!("path {p}"));
    }
    if let Some(p) = &m.path_prefix {
        parts.push(format!("pathPrefix {p}"));
    }
    if let Some(p) = &m.path_regex {
        parts.push(format!("pathRegex {p}"));
    }
    if !m.method.is_empty() {
        parts.push(format!("method {}", m.method.join("|")));
    }
    for (kind, list) in [
        ("header", &m.headers),
        ("query", &m.query_params),
        ("cookie", &m.cookies),
    ] {
        parts.extend(list.iter().map(|v| format!("{kind} {}", value(v))));
    }
    parts.join(", ")
}

fn value(v: &ValueMatch) -> String {
    match (&v.value, &v.one_of, &v.regex, v.present) {
        (Some(x), ..) => format!("{} = {x:?}", v.name),
        (_, Some(xs), ..) => format!("{} in [{}]", v.name, xs.join(", ")),
        (_, _, Some(r), _) => format!("{} ~ /{r}/", v.name),
        (.., Some(false)) => format!("{} absent", v.name),
        _ => format!("{} present", v.name),
    }
}
