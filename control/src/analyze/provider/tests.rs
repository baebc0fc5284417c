use serde_json::json;
use switchyard_config::rollout::Condition;

use super::*;

fn range(min: Option<f64>, max: Option<f64>) -> Judge {
    Judge::Range { min, max }
}

fn conditions(success: Option<&str>, failure: Option<&str>) -> Judge {
    let parse = |c: &str| Condition::parse(c).unwrap();
    Judge::Conditions {
        success: success.map(parse),
        failure: failure.map(parse),
    }
}

fn series(values: &[f64]) -> Reading {
    Reading::Vector(
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("{{pod=\"p{i}\"}}"), *v))
            .collect(),
    )
}

/// (outcome, value, limit, message) of a row.
fn judged(j: &Judge, reading: &Reading) -> (Outcome, Option<f64>, String, String) {
    let r = judge("m", j, Some(reading));
    (r.outcome, r.value, r.limit, r.message)
}

#[test]
fn a_range_passes_within_and_fails_beyond_either_bound() {
    let max = range(None, Some(0.01));
    assert_eq!(
        judged(&max, &series(&[0.002])),
        (
            Outcome::Pass,
            Some(0.002),
            "≤ 0.01".into(),
            "query value 0.002 ≤ 0.01".into()
        )
    );
    assert_eq!(
        judged(&max, &series(&[0.0483])),
        (
            Outcome::Fail,
            Some(0.0483),
            "≤ 0.01".into(),
            "query value 0.0483 > max 0.01".into()
        )
    );
    let both = range(Some(0.9), Some(1.1));
    assert_eq!(judged(&both, &Reading::Scalar(1.0)).0, Outcome::Pass);
    assert_eq!(
        judged(&both, &Reading::Scalar(0.85)),
        (
            Outcome::Fail,
            Some(0.85),
            "≥ 0.9 and ≤ 1.1".into(),
            "query value 0.85 < min 0.9".into()
        )
    );
    // The bounds themselves pass.
    assert_eq!(judged(&both, &Reading::Scalar(1.1)).0, Outcome::Pass);
    assert_eq!(
        judged(&both, &Reading::Scalar(f64::INFINITY)).3,
        "query value +Inf > max 1.1"
    );
}

#[test]
fn no_data_is_inconclusive() {
    let max = range(None, Some(0.01));
    for (reading, why) in [
        (series(&[]), "no data: the query returned an empty vector"),
        (
            series(&[f64::NAN]),
            "no data: the query's value is NaN (a ratio or a quantile of no requests)",
        ),
        (
            Reading::Scalar(f64::NAN),
            "no data: the query's value is NaN (a ratio or a quantile of no requests)",
        ),
        (
            Reading::Nodes(vec![]),
            "no data: the jsonPath picked nothing from the answer",
        ),
        (
            Reading::Nodes(vec![json!(null)]),
            "no data: the jsonPath picked null from the answer",
        ),
        (Reading::Nodes(vec![json!("NaN")]), "no data: the value is NaN"),
    ] {
        assert_eq!(
            judged(&max, &reading),
            (Outcome::Inconclusive, None, "≤ 0.01".into(), why.into()),
            "{reading:?}"
        );
    }
    // Conditions are not asked about nothing either.
    assert_eq!(
        judged(&conditions(Some("size(result) == 0"), None), &series(&[])).0,
        Outcome::Inconclusive
    );
}

#[test]
fn a_range_over_several_values_is_an_error_that_says_what_to_do() {
    let (outcome, value, _, message) = judged(&range(None, Some(1.0)), &series(&[0.1, 0.2, 0.3, 0.4]));
    assert_eq!((outcome, value), (Outcome::Error, None));
    assert_eq!(
        message,
        "the query returned 4 series ({pod=\"p0\"}, {pod=\"p1\"}, {pod=\"p2\"}, …), not one: aggregate it (sum, max, …) so that it returns one, or judge them all with a successCondition"
    );
    let nodes = Reading::Nodes(vec![json!(1), json!(2)]);
    assert_eq!(
        judged(&range(None, Some(1.0)), &nodes).3,
        "the jsonPath picked 2 values, not one: narrow it to one, or judge them all with a successCondition"
    );
}

#[test]
fn a_web_value_is_a_number_or_a_string_holding_one() {
    let min = range(Some(0.95), None);
    assert_eq!(
        judged(&min, &Reading::Nodes(vec![json!("0.97")])).3,
        "value 0.97 ≥ 0.95"
    );
    assert_eq!(
        judged(&min, &Reading::Nodes(vec![json!(0.5)])),
        (Outcome::Fail, Some(0.5), "≥ 0.95".into(), "value 0.5 < min 0.95".into())
    );
    for (node, why) in [
        (json!("high"), "the jsonPath picked the text \"high\", not a number"),
        (json!({"v": 1}), "the jsonPath picked an object, not a number"),
        (json!(true), "the jsonPath picked a boolean, not a number"),
    ] {
        assert_eq!(
            judged(&min, &Reading::Nodes(vec![node])),
            (Outcome::Error, None, "≥ 0.95".into(), why.into())
        );
    }
}

#[test]
fn conditions_follow_argo_rollouts_rules() {
    let success = conditions(Some("result[0] >= 0.95"), None);
    assert_eq!(
        judged(&success, &series(&[0.97])),
        (
            Outcome::Pass,
            Some(0.97),
            "successCondition result[0] >= 0.95".into(),
            "successCondition result[0] >= 0.95 holds for result [0.97]".into()
        )
    );
    // A success condition alone: not holding fails.
    assert_eq!(
        judged(&success, &series(&[0.9])).3,
        "successCondition result[0] >= 0.95 does not hold for result [0.9]"
    );
    assert_eq!(judged(&success, &series(&[0.9])).0, Outcome::Fail);
    // A failure condition alone: not holding passes.
    let failure = conditions(None, Some("result > 0.01"));
    assert_eq!(judged(&failure, &Reading::Scalar(0.001)).0, Outcome::Pass);
    assert_eq!(
        judged(&failure, &Reading::Scalar(0.2)).3,
        "failureCondition result > 0.01 holds for result 0.2"
    );
    // Both: failure wins; neither holding is inconclusive.
    let both = conditions(Some("result >= 0.95"), Some("result < 0.5"));
    assert_eq!(
        judged(&both, &Reading::Nodes(vec![json!(0.7)])),
        (
            Outcome::Inconclusive,
            Some(0.7),
            "successCondition result >= 0.95; failureCondition result < 0.5".into(),
            "neither successCondition result >= 0.95 nor failureCondition result < 0.5 holds for result 0.7".into()
        )
    );
    assert_eq!(judged(&both, &Reading::Nodes(vec![json!(0.3)])).0, Outcome::Fail);
    let contradiction = conditions(Some("result > 0.0"), Some("result > 0.0"));
    assert_eq!(judged(&contradiction, &Reading::Scalar(1.0)).0, Outcome::Fail);
}

#[test]
fn conditions_see_every_series_and_node_and_whole_objects() {
    let all = conditions(Some("result.all(x, x < 0.01)"), None);
    assert_eq!(judged(&all, &series(&[0.001, 0.002])).0, Outcome::Pass);
    let (outcome, value, _, _) = judged(&all, &series(&[0.001, 0.2]));
    // Several values: the row has no one value to show.
    assert_eq!((outcome, value), (Outcome::Fail, None));
    let object = conditions(Some("result.ok && result.count > 100"), None);
    assert_eq!(
        judged(&object, &Reading::Nodes(vec![json!({"ok": true, "count": 150})])).0,
        Outcome::Pass
    );
}

#[test]
fn a_condition_that_cannot_be_evaluated_is_an_error() {
    let index = conditions(Some("result[1] > 0.5"), None);
    let (outcome, _, _, message) = judged(&index, &series(&[0.9]));
    assert_eq!(outcome, Outcome::Error);
    assert_eq!(
        message,
        "result [0.9]: `result[1] > 0.5` cannot be evaluated: index 1 is out of range"
    );
}

#[test]
fn an_unread_provider_is_an_error_with_its_reason() {
    let max = range(None, Some(0.01));
    let why = "cannot reach http://127.0.0.1:9/api/v1/query: connection refused";
    assert_eq!(
        judged(&max, &Reading::Failed(why.into())),
        (Outcome::Error, None, "≤ 0.01".into(), why.into())
    );
    let r = judge("m", &max, None);
    assert_eq!(
        (r.outcome, r.message.as_str()),
        (Outcome::Error, "the provider was not asked for this measurement")
    );
}

#[test]
fn figures_keep_six_significant_digits_without_trailing_zeros() {
    for (v, shown) in [
        (0.0, "0"),
        (0.01, "0.01"),
        (0.048_312_345, "0.0483123"),
        (1250.0, "1250"),
        (0.000_012, "0.000012"),
        (123_456.789, "123457"),
        (-2.5, "-2.5"),
        (1e-9, "1.000e-9"),
        (f64::NAN, "NaN"),
        (f64::NEG_INFINITY, "-Inf"),
    ] {
        assert_eq!(figure(v), shown, "{v}");
    }
}
