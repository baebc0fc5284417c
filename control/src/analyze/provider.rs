//! Judging what a metric provider answered: a Prometheus query's vector or scalar, or the JSON
//! nodes a web provider's `jsonPath` picked, against the metric's range (`min`, `max`) or its
//! Argo-style conditions over `result`. Pure, as the rest of analysis: the observer
//! ([`crate::observe::providers`]) asks the providers and hands their answers here as
//! [`Reading`]s.
//!
//! - A provider that gave no usable answer (unreachable, a non-success status, a body that is
//!   not what it should be, no answer within its time) is an [`Outcome::Error`]: neither a pass
//!   nor a failure, counted towards `consecutiveErrorLimit`.
//! - No data is [`Outcome::Inconclusive`]: an empty vector, no node picked, a JSON `null`, or
//!   values that are all NaN (Prometheus' answer for a ratio or a quantile of no requests).
//! - A range judges exactly one value: several series or nodes are an error, because a query
//!   that returns several will keep doing so, and an error says so within
//!   `consecutiveErrorLimit` measurements where an inconclusive row could wait forever.
//!   Conditions take them all as a list (`result[0]`, `size(result)`).
//! - A web provider's node may be a number or a string holding one (`"0.97"`).

use std::collections::BTreeMap;

use switchyard_config::rollout::{Condition, Judge};

use super::{MetricResult, Outcome, row};

/// What one provider answered for one measurement.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// A Prometheus instant vector: each series' labels as PromQL writes them
    /// (`{route="checkout"}`), and its value.
    Vector(Vec<(String, f64)>),
    /// A Prometheus scalar.
    Scalar(f64),
    /// The nodes a web provider's `jsonPath` picked, in document order.
    Nodes(Vec<serde_json::Value>),
    /// No usable answer: why, as a sentence with the URL.
    Failed(String),
}

/// The readings of one measurement, by metric name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Readings(pub BTreeMap<String, Reading>);

impl Readings {
    /// The reading of the metric named `name`.
    pub fn get(&self, name: &str) -> Option<&Reading> {
        self.0.get(name)
    }
}

/// The row of a provider metric named `name`, judged by `judge` on `reading` (`None`: the
/// provider was not asked, which is an error of the measurement).
pub fn judge(name: &str, judge: &Judge, reading: Option<&Reading>) -> MetricResult {
    let limit = limit(judge);
    let Some(reading) = reading else {
        return row(
            name,
            Outcome::Error,
            None,
            limit,
            "the provider was not asked for this measurement".into(),
        );
    };
    if let Reading::Failed(why) = reading {
        return row(name, Outcome::Error, None, limit, why.clone());
    }
    if let Some(why) = no_data(reading) {
        return row(name, Outcome::Inconclusive, None, limit, format!("no data: {why}"));
    }
    match judge {
        Judge::Range { min, max } => range(name, *min, *max, reading, limit),
        Judge::Conditions { success, failure } => conditions(name, success.as_ref(), failure.as_ref(), reading, limit),
    }
}

/// The limit as a person reads it: `≤ 0.01`, `≥ 0.95 and ≤ 1.05`, `successCondition result[0] >= 0.95`.
fn limit(judge: &Judge) -> String {
    match judge {
        Judge::Range { min, max } => {
            let bounds: Vec<String> = [
                min.map(|m| format!("≥ {}", figure(m))),
                max.map(|m| format!("≤ {}", figure(m))),
            ]
            .into_iter()
            .flatten()
            .collect();
            bounds.join(" and ")
        }
        Judge::Conditions { success, failure } => {
            let conditions: Vec<String> = [
                success.as_ref().map(|c| format!("successCondition {c}")),
                failure.as_ref().map(|c| format!("failureCondition {c}")),
            ]
            .into_iter()
            .flatten()
            .collect();
            conditions.join("; ")
        }
    }
}

/// Why `reading` holds no data to judge, if it does not.
fn no_data(reading: &Reading) -> Option<&'static str> {
    match reading {
        Reading::Vector(series) if series.is_empty() => Some("the query returned an empty vector"),
        Reading::Vector(series) if series.iter().all(|(_, v)| v.is_nan()) => {
            Some("the query's value is NaN (a ratio or a quantile of no requests)")
        }
        Reading::Scalar(v) if v.is_nan() => Some("the query's value is NaN (a ratio or a quantile of no requests)"),
        Reading::Nodes(nodes) if nodes.is_empty() => Some("the jsonPath picked nothing from the answer"),
        Reading::Nodes(nodes) if nodes.iter().all(serde_json::Value::is_null) => {
            Some("the jsonPath picked null from the answer")
        }
        _ => None,
    }
}

fn range(name: &str, min: Option<f64>, max: Option<f64>, reading: &Reading, limit: String) -> MetricResult {
    let value = match one_value(reading) {
        Ok(v) => v,
        Err(why) => return row(name, Outcome::Error, None, limit, why),
    };
    if value.is_nan() {
        return row(
            name,
            Outcome::Inconclusive,
            None,
            limit,
            "no data: the value is NaN".into(),
        );
    }
    let source = match reading {
        Reading::Nodes(_) => "value",
        _ => "query value",
    };
    let shown = figure(value);
    let (outcome, message) = if let Some(min) = min.filter(|m| value < *m) {
        (Outcome::Fail, format!("{source} {shown} < min {}", figure(min)))
    } else if let Some(max) = max.filter(|m| value > *m) {
        (Outcome::Fail, format!("{source} {shown} > max {}", figure(max)))
    } else {
        (Outcome::Pass, format!("{source} {shown} {limit}"))
    };
    row(name, outcome, Some(value), limit, message)
}

/// The one number of `reading`, or why it has not exactly one.
fn one_value(reading: &Reading) -> Result<f64, String> {
    match reading {
        Reading::Scalar(v) => Ok(*v),
        Reading::Vector(series) => match series.as_slice() {
            [(_, v)] => Ok(*v),
            several => {
                let mut shown: Vec<&str> = several.iter().take(3).map(|(labels, _)| labels.as_str()).collect();
                if several.len() > 3 {
                    shown.push("…");
                }
                Err(format!(
                    "the query returned {} series ({}), not one: aggregate it (sum, max, …) so that it returns one, or judge them all with a successCondition",
                    several.len(),
                    shown.join(", ")
                ))
            }
        },
        Reading::Nodes(nodes) => match nodes.as_slice() {
            [node] => number(node),
            several => Err(format!(
                "the jsonPath picked {} values, not one: narrow it to one, or judge them all with a successCondition",
                several.len()
            )),
        },
        Reading::Failed(why) => Err(why.clone()),
    }
}

/// A JSON number, or a string holding one.
fn number(node: &serde_json::Value) -> Result<f64, String> {
    match node {
        serde_json::Value::Number(n) => n.as_f64().ok_or_else(|| format!("the value {n} is not a number")),
        serde_json::Value::String(s) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| format!("the jsonPath picked the text {s:?}, not a number")),
        other => Err(format!("the jsonPath picked {}, not a number", kind(other))),
    }
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

/// `result` as the conditions see it: a scalar is a number, a vector a list of its values (as
/// in Argo Rollouts: `result[0]`), one node itself and several nodes a list.
fn result_of(reading: &Reading) -> serde_json::Value {
    let number = |v: f64| serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, serde_json::Value::Number);
    match reading {
        Reading::Scalar(v) => number(*v),
        Reading::Vector(series) => series.iter().map(|(_, v)| number(*v)).collect(),
        Reading::Nodes(nodes) => match nodes.as_slice() {
            [node] => node.clone(),
            several => serde_json::Value::Array(several.to_vec()),
        },
        Reading::Failed(_) => serde_json::Value::Null,
    }
}

/// Argo Rollouts' rules: the failure condition holding fails; else the success condition
/// holding passes; one condition alone also decides the other way; neither holding with both
/// given is inconclusive. A condition that cannot be evaluated is an error.
fn conditions<'a>(
    name: &str,
    success: Option<&'a Condition>,
    failure: Option<&'a Condition>,
    reading: &Reading,
    limit: String,
) -> MetricResult {
    let result = result_of(reading);
    let shown = shown(&result);
    let value = one_value(reading).ok();
    let eval = |c: Option<&'a Condition>| c.map(|c| c.holds(&result).map(|holds| (c, holds))).transpose();
    let (success, failure) = match (eval(success), eval(failure)) {
        (Ok(s), Ok(f)) => (s, f),
        (Err(why), _) | (_, Err(why)) => {
            return row(name, Outcome::Error, value, limit, format!("result {shown}: {why}"));
        }
    };
    let (outcome, message) = match (success, failure) {
        (_, Some((c, true))) => (Outcome::Fail, format!("failureCondition {c} holds for result {shown}")),
        (Some((c, true)), _) => (Outcome::Pass, format!("successCondition {c} holds for result {shown}")),
        (Some((c, false)), None) => (
            Outcome::Fail,
            format!("successCondition {c} does not hold for result {shown}"),
        ),
        (None, Some((c, false))) => (
            Outcome::Pass,
            format!("failureCondition {c} does not hold for result {shown}"),
        ),
        (Some((s, false)), Some((f, false))) => (
            Outcome::Inconclusive,
            format!("neither successCondition {s} nor failureCondition {f} holds for result {shown}"),
        ),
        (None, None) => (Outcome::Error, "the metric gives no condition".to_owned()),
    };
    row(name, outcome, value, limit, message)
}

/// `result` as it reads in a message: compact JSON, cut after 120 characters.
fn shown(result: &serde_json::Value) -> String {
    const SHOWN: usize = 120;
    let text = result.to_string();
    if text.chars().count() > SHOWN {
        format!("{}…", text.chars().take(SHOWN).collect::<String>())
    } else {
        text
    }
}

/// A provider's number as it reads in a message: up to six significant digits, without
/// trailing zeros (`0.0483`, `1250`, `0.000012`); very large or small ones in scientific
/// notation.
pub fn figure(v: f64) -> String {
    if !v.is_finite() {
        return if v.is_nan() {
            "NaN".to_owned()
        } else if v > 0.0 {
            "+Inf".to_owned()
        } else {
            "-Inf".to_owned()
        };
    }
    if v == 0.0 {
        return "0".to_owned();
    }
    let magnitude = v.abs().log10().floor() as i32;
    if !(-6..12).contains(&magnitude) {
        return format!("{v:.3e}");
    }
    let decimals = usize::try_from(5 - magnitude).unwrap_or(0);
    let text = format!("{v:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

#[cfg(test)]
mod tests;
