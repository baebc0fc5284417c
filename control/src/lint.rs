//! `switchyard rollout lint FILE…`: checks rollout specs offline, with no controller, as
//! `switchyard-proxy validate` checks routing tables: every problem of every file, each with its
//! field path, and exit 1 on any. With `--routes FILE` (a proxy config or a routes document)
//! each spec is also checked against that table, as `apply` checks it against the proxies'.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use switchyard_config::rollout::{RolloutSpec, Step, Strategy};
use switchyard_config::{ConfigErrors, Format, RouteSpec, load_config, load_rollout, load_routes};

/// Checks every spec, and prints a line per valid one and every problem of the others; the exit
/// code is 1 if any file has a problem (or the routes file cannot be read).
pub fn run(files: &[PathBuf], routes: Option<&Path>) -> ExitCode {
    let table = match routes.map(read_routes).transpose() {
        Ok(table) => table,
        Err(report) => {
            eprint!("{report}");
            return ExitCode::FAILURE;
        }
    };
    let mut all_valid = true;
    let mut names: BTreeMap<String, &Path> = BTreeMap::new();
    for file in files {
        let checked = check(file, table.as_deref()).and_then(|spec| match names.get(&spec.name) {
            // `apply` refuses a second rollout of the same name while the first exists.
            Some(first) => Err(format!(
                "{}: 1 problem:\n  name: rollout {:?} is also the name of the spec in {}\n",
                file.display(),
                spec.name,
                first.display()
            )),
            None => {
                names.insert(spec.name.clone(), file);
                Ok(spec)
            }
        });
        match checked {
            Ok(spec) => println!("{}: valid; {}", file.display(), summary(&spec)),
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

/// The spec in `file`, or the report of its problems.
fn check(file: &Path, table: Option<&[RouteSpec]>) -> Result<RolloutSpec, String> {
    let name = file.display();
    let (text, format) = read(file)?;
    let spec = load_rollout(&text, format).map_err(|errors| format!("{name}: {errors}\n"))?;
    if let Some(routes) = table {
        let mut problems = crate::controller::table_problems(&spec, routes);
        problems.extend(mirror_problems(&spec, routes));
        if !problems.is_empty() {
            let errors = ConfigErrors(
                problems
                    .into_iter()
                    .map(|(path, message)| {
                        switchyard_config::FieldError::new(path, format!("{message} in the routes file"))
                    })
                    .collect(),
            );
            return Err(format!("{name}: {errors}\n"));
        }
    }
    Ok(spec)
}

/// What a `setMirrorRoute` step would do to `routes` that its spec cannot show: replace a mirror
/// the route has to another track (the rollout's end then leaves the route with none). A
/// candidate the route lacks is [`crate::controller::table_problems`]'s to report.
fn mirror_problems(spec: &RolloutSpec, routes: &[RouteSpec]) -> Vec<(String, String)> {
    let Strategy::Canary(canary) = &spec.strategy else {
        return Vec::new();
    };
    let Some(route) = routes.iter().find(|r| r.name == spec.route) else {
        return Vec::new();
    };
    let Some(other) = route.mirror.as_ref().filter(|m| m.track != spec.candidate) else {
        return Vec::new();
    };
    canary
        .steps
        .iter()
        .enumerate()
        .filter(|(_, step)| matches!(step, Step::SetMirrorRoute(m) if m.percent > 0.0))
        .map(|(i, _)| {
            (
                format!("canary.steps[{i}].setMirrorRoute"),
                format!(
                    "route {:?} already mirrors to track {:?}; this step would replace that mirror with one to {:?}, \
                     and the rollout's end would leave the route with none: remove the route's mirror or this step",
                    spec.route.as_str(),
                    other.track.as_str(),
                    spec.candidate.as_str()
                ),
            )
        })
        .collect()
}

/// The routes of a proxy config or of a routes document (`routes: [...]`, as `PUT /routes`
/// takes), whichever the file is.
fn read_routes(file: &Path) -> Result<Vec<RouteSpec>, String> {
    let name = file.display();
    let (text, format) = read(file)?;
    let as_routes = load_routes(&text, format, 1);
    let as_config = load_config(&text, format, 1);
    match (as_routes, as_config) {
        (Ok(table), _) => Ok(table.spec().to_vec()),
        (_, Ok(loaded)) => Ok(loaded.table.spec().to_vec()),
        // Neither: the reading with fewer problems is what the file meant to be.
        (Err(a), Err(b)) => {
            let errors = if a.0.len() <= b.0.len() { a } else { b };
            Err(format!("{name} (the routes to check against): {errors}\n"))
        }
    }
}

fn read(file: &Path) -> Result<(String, Format), String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: cannot read: {e}\n", file.display()))?;
    let format = match file.extension().and_then(|e| e.to_str()) {
        Some("json") => Format::Json,
        Some("yaml" | "yml") => Format::Yaml,
        _ => Format::sniff(&text),
    };
    Ok((text, format))
}

/// One line of what a valid spec does: `rollout checkout-v2: canary of route checkout, stable →
/// canary over 3 proxies, 7 steps, analysis of 3 metrics`.
fn summary(spec: &RolloutSpec) -> String {
    let mut out = format!(
        "rollout {}: {} of route {}, {} → {}",
        spec.name,
        spec.strategy.key(),
        spec.route,
        spec.baseline,
        spec.candidate
    );
    match spec.proxies.group() {
        Some(group) => {
            let _ = write!(out, " over group {group}");
        }
        None => {
            let n = spec.proxies.urls().len();
            let _ = write!(out, " over {n} prox{}", if n == 1 { "y" } else { "ies" });
        }
    }
    let steps = match &spec.strategy {
        Strategy::Canary(c) => {
            let weights: Vec<String> = c
                .steps
                .iter()
                .filter_map(|s| match s {
                    Step::SetWeight(w) => Some(format!("{w}%")),
                    _ => None,
                })
                .collect();
            format!("{} steps (weights {})", c.steps.len(), weights.join(", "))
        }
        Strategy::BlueGreen(b) if b.switch_steps.is_empty() => "one switch".to_owned(),
        Strategy::BlueGreen(b) => format!("a switch in {} steps", b.switch_steps.len() + 1),
        Strategy::Rings(r) => format!("{} rings", r.rings.len()),
    };
    let _ = write!(out, ", {steps}");
    if let Some(a) = spec.analysis.as_ref().filter(|a| !a.metrics.is_empty()) {
        let n = a.metrics.len();
        let _ = write!(out, ", analysis of {n} metric{}", if n == 1 { "" } else { "s" });
    }
    out
}
