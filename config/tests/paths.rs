//! Path normalization: the `paths` section as read from a file, and `normalize` checked over
//! random paths against a literal transcription of RFC 3986 §5.2.4 and against its invariants
//! (a leading `/`, no dot segments, canonical escapes, idempotence, borrowed when unchanged).

use std::borrow::Cow;

use proptest::prelude::*;
use switchyard_config::path::{EscapedSlashes, PathError, PathOptions, normalize};
use switchyard_config::{Format, load_config};

const ROUTES: &str = "routes: [{ name: app, tracks: [{ name: stable, endpoints: ['127.0.0.1:9001'], weight: 1 }] }]";

fn problems(text: &str) -> Vec<String> {
    match load_config(text, Format::Yaml, 1) {
        Ok(_) => Vec::new(),
        Err(e) => e.errors().iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn the_paths_section_defaults_to_rejecting_escaped_slashes_without_merging() {
    let c = load_config(ROUTES, Format::Yaml, 1).unwrap().config;
    assert_eq!(c.paths, PathOptions::default());
    assert_eq!(c.paths.escaped_slashes, EscapedSlashes::Reject);
    assert!(!c.paths.merge_slashes);

    let text = format!("paths: {{ escapedSlashes: unescape, mergeSlashes: true }}\n{ROUTES}");
    let c = load_config(&text, Format::Yaml, 1).unwrap().config;
    assert_eq!(
        c.paths,
        PathOptions {
            escaped_slashes: EscapedSlashes::Unescape,
            merge_slashes: true
        }
    );
    let text = format!("paths: {{ escapedSlashes: keep }}\n{ROUTES}");
    let c = load_config(&text, Format::Yaml, 1).unwrap().config;
    assert_eq!(c.paths.escaped_slashes, EscapedSlashes::Keep);
    assert!(!c.paths.merge_slashes);
}

#[test]
fn typos_and_bad_values_in_paths_are_named() {
    let text = format!("paths: {{ escapedSlash: keep, mergeSlashes: yes please }}\n{ROUTES}");
    assert_eq!(
        problems(&text),
        [
            "paths.mergeSlashes: expected true or false, found a string",
            "paths.escapedSlash: unknown field `escapedSlash`; did you mean `escapedSlashes`?",
        ]
    );
    let text = format!("paths: {{ escapedSlashes: drop }}\n{ROUTES}");
    assert_eq!(
        problems(&text),
        ["paths.escapedSlashes: expected keep, reject or unescape, found \"drop\""]
    );
    let text = format!("paths: reject\n{ROUTES}");
    assert_eq!(problems(&text), ["paths: expected a mapping, found a string"]);
}

#[test]
fn the_paths_section_is_served_in_camel_case_and_reads_back() {
    let text = format!("paths: {{ escapedSlashes: keep, mergeSlashes: true }}\n{ROUTES}");
    let config = load_config(&text, Format::Yaml, 1).unwrap().config;
    let json = serde_json::to_string(&config).unwrap();
    assert!(
        json.contains(r#""paths":{"escapedSlashes":"keep","mergeSlashes":true}"#),
        "{json}"
    );
    assert_eq!(load_config(&json, Format::Json, 1).unwrap().config, config);
}

const ALL_OPTIONS: [PathOptions; 6] = [
    PathOptions {
        escaped_slashes: EscapedSlashes::Keep,
        merge_slashes: false,
    },
    PathOptions {
        escaped_slashes: EscapedSlashes::Reject,
        merge_slashes: false,
    },
    PathOptions {
        escaped_slashes: EscapedSlashes::Unescape,
        merge_slashes: false,
    },
    PathOptions {
        escaped_slashes: EscapedSlashes::Keep,
        merge_slashes: true,
    },
    PathOptions {
        escaped_slashes: EscapedSlashes::Reject,
        merge_slashes: true,
    },
    PathOptions {
        escaped_slashes: EscapedSlashes::Unescape,
        merge_slashes: true,
    },
];

/// The model: decode, then merge, then RFC 3986 §5.2.4 step by step, each as plainly as it
/// can be written.
fn model(path: &str, options: &PathOptions) -> Result<String, PathError> {
    if !path.starts_with('/') {
        return Ok(path.to_owned());
    }
    let mut decoded = String::new();
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        let slash = |kept: &str| match options.escaped_slashes {
            EscapedSlashes::Keep => Ok(kept.to_owned()),
            EscapedSlashes::Reject => Err(PathError::EscapedSlash),
            EscapedSlashes::Unescape => Ok("/".to_owned()),
        };
        match c {
            '\\' => decoded.push_str(&slash("\\")?),
            '%' => {
                let hex: String = chars.by_ref().take(2).collect();
                let byte = match u8::from_str_radix(&hex, 16) {
                    Ok(b) if hex.len() == 2 && hex.bytes().all(|d| d.is_ascii_hexdigit()) => b,
                    _ => return Err(PathError::InvalidPercentEncoding),
                };
                match byte {
                    b'/' => decoded.push_str(&slash("%2F")?),
                    b'\\' => decoded.push_str(&slash("%5C")?),
                    b if b.is_ascii_alphanumeric() || b"-._~".contains(&b) => decoded.push(char::from(b)),
                    b => decoded.push_str(&format!("%{b:02X}")),
                }
            }
            c => decoded.push(c),
        }
    }
    if options.merge_slashes {
        while decoded.contains("//") {
            decoded = decoded.replace("//", "/");
        }
    }
    Ok(remove_dot_segments(&decoded))
}

/// RFC 3986 §5.2.4, rule by rule.
fn remove_dot_segments(path: &str) -> String {
    let mut input = path.to_owned();
    let mut output = String::new();
    let pop = |output: &mut String| output.truncate(output.rfind('/').unwrap_or(0));
    while !input.is_empty() {
        if let Some(rest) = input.strip_prefix("../").or_else(|| input.strip_prefix("./")) {
            input = rest.to_owned();
        } else if input.starts_with("/./") || input == "/." {
            input = format!("/{}", &input[input.len().min(3)..]);
        } else if input.starts_with("/../") || input == "/.." {
            input = format!("/{}", &input[input.len().min(4)..]);
            pop(&mut output);
        } else if input == "." || input == ".." {
            input.clear();
        } else {
            let end = input[1..].find('/').map_or(input.len(), |i| i + 1);
            output.push_str(&input[..end]);
            input.drain(..end);
        }
    }
    output
}

/// Paths made of the pieces that matter, with the odd stray byte.
fn path_strategy() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "/", "//", ".", "..", "%2e", "%2E", "%2f", "%2F", "%5c", "%5C", "\\", "%", "%4", "%41", "%7e", "%7E", "%20",
        "%c3%a9", "%25", "%00", "a", "b", "é", "-", "~", "?",
    ]);
    (
        prop::bool::weighted(0.9),
        prop::collection::vec(piece, 0..16),
        "[ -~]{0,3}",
    )
        .prop_map(|(rooted, pieces, tail)| {
            let mut p = String::from(if rooted { "/" } else { "" });
            p.extend(pieces);
            p.push_str(&tail);
            p
        })
}

fn check_invariants(path: &str, options: &PathOptions) -> Result<(), TestCaseError> {
    let got = normalize(path, options);
    prop_assert_eq!(
        got.clone().map(Cow::into_owned),
        model(path, options),
        "{:?} with {:?}",
        path,
        options
    );
    let Ok(out) = got else { return Ok(()) };
    if let Cow::Owned(o) = &out {
        prop_assert_ne!(o.as_str(), path, "an unchanged path comes back borrowed");
    }
    if !path.starts_with('/') {
        prop_assert!(matches!(out, Cow::Borrowed(_)));
        return Ok(());
    }
    prop_assert!(out.starts_with('/'));
    prop_assert!(
        out.split('/').all(|s| s != "." && s != ".."),
        "dot segment in {:?}",
        out
    );
    let bytes = out.as_bytes();
    for (i, _) in out.match_indices('%') {
        let digits = bytes.get(i + 1..i + 3).unwrap_or_default();
        prop_assert!(
            digits.len() == 2 && digits.iter().all(|d| matches!(d, b'0'..=b'9' | b'A'..=b'F')),
            "non-canonical escape in {:?}",
            out
        );
        let byte = u8::from_str_radix(std::str::from_utf8(digits).unwrap(), 16).unwrap();
        prop_assert!(
            !(byte.is_ascii_alphanumeric() || b"-._~".contains(&byte)),
            "encoded unreserved character in {:?}",
            out
        );
    }
    if options.escaped_slashes != EscapedSlashes::Keep {
        prop_assert!(
            !out.contains('\\') && !out.contains("%2F") && !out.contains("%5C"),
            "{:?}",
            out
        );
    }
    if options.merge_slashes {
        prop_assert!(!out.contains("//"), "{:?}", out);
    }
    let again = normalize(&out, options);
    prop_assert!(
        matches!(again, Ok(Cow::Borrowed(a)) if a == out),
        "not idempotent: {:?} → {:?} → {:?}",
        path,
        out,
        again
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn normalize_agrees_with_the_rfc_and_keeps_its_invariants(path in path_strategy()) {
        for options in &ALL_OPTIONS {
            check_invariants(&path, options)?;
        }
    }

    #[test]
    fn normalize_never_panics_on_any_text(text in any::<String>()) {
        for options in &ALL_OPTIONS {
            check_invariants(&text, options)?;
            check_invariants(&format!("/{text}"), options)?;
        }
    }
}
