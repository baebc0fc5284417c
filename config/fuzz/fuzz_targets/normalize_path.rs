//! Normalizes arbitrary paths under every `paths` setting and checks what `normalize` promises.
//!
//! Input layout: the first byte picks the options (its low bits modulo 3 the escaped-slash
//! action, bit 2 `mergeSlashes`); the rest is the path, decoded as UTF-8 lossily.
//!
//! Nothing here may panic except the invariant checks below. When normalization succeeds on a
//! path that starts with `/`, the result:
//! * starts with `/` and has no `.` or `..` segment;
//! * has every `%` followed by two uppercase hex digits that do not encode an unreserved
//!   character;
//! * has no `\`, `%2F` or `%5C` unless they are kept, and no `//` when slashes are merged;
//! * normalizes again to itself, borrowed.
//!
//! A path that does not start with `/` comes back borrowed and unchanged, and a result is owned
//! only when it differs from the input.

#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use switchyard_config::path::{EscapedSlashes, PathOptions, normalize};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let options = PathOptions {
        escaped_slashes: match selector % 3 {
            0 => EscapedSlashes::Reject,
            1 => EscapedSlashes::Keep,
            _ => EscapedSlashes::Unescape,
        },
        merge_slashes: selector & 4 != 0,
    };
    let path = String::from_utf8_lossy(rest);
    let Ok(out) = normalize(&path, &options) else {
        return;
    };
    if let Cow::Owned(owned) = &out {
        assert_ne!(owned, &path, "an unchanged path must come back borrowed");
    }
    if !path.starts_with('/') {
        assert!(matches!(out, Cow::Borrowed(_)), "{path:?} does not start with `/`");
        return;
    }
    assert!(out.starts_with('/'), "{path:?} → {out:?}");
    assert!(
        out.split('/').all(|s| s != "." && s != ".."),
        "dot segment left: {path:?} → {out:?}"
    );
    let bytes = out.as_bytes();
    for (i, _) in out.match_indices('%') {
        let digits = bytes.get(i + 1..i + 3).unwrap_or_default();
        assert!(
            digits.len() == 2 && digits.iter().all(|d| matches!(d, b'0'..=b'9' | b'A'..=b'F')),
            "non-canonical escape: {path:?} → {out:?}"
        );
        let hex = std::str::from_utf8(digits).expect("hex digits are ASCII");
        let byte = u8::from_str_radix(hex, 16).expect("two hex digits make a byte");
        assert!(
            !(byte.is_ascii_alphanumeric() || b"-._~".contains(&byte)),
            "encoded unreserved character: {path:?} → {out:?}"
        );
    }
    if options.escaped_slashes != EscapedSlashes::Keep {
        assert!(
            !out.contains('\\') && !out.contains("%2F") && !out.contains("%5C"),
            "escaped slash left with {options:?}: {path:?} → {out:?}"
        );
    }
    if options.merge_slashes {
        assert!(!out.contains("//"), "slashes not merged: {path:?} → {out:?}");
    }
    match normalize(&out, &options) {
        Ok(Cow::Borrowed(again)) if again == out => {}
        again => panic!("not idempotent with {options:?}: {path:?} → {out:?} → {again:?}"),
    }
});
