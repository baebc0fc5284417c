use super::*;

const KEEP: PathOptions = PathOptions {
    escaped_slashes: EscapedSlashes::Keep,
    merge_slashes: false,
};
const REJECT: PathOptions = PathOptions {
    escaped_slashes: EscapedSlashes::Reject,
    merge_slashes: false,
};
const UNESCAPE: PathOptions = PathOptions {
    escaped_slashes: EscapedSlashes::Unescape,
    merge_slashes: false,
};
const MERGE: PathOptions = PathOptions {
    escaped_slashes: EscapedSlashes::Reject,
    merge_slashes: true,
};

#[track_caller]
fn changes(path: &str, options: &PathOptions, want: &str) {
    match normalize(path, options) {
        Ok(Cow::Owned(got)) => assert_eq!(got, want, "{path:?}"),
        other => panic!("{path:?}: expected Owned({want:?}), got {other:?}"),
    }
}

#[track_caller]
fn unchanged(path: &str, options: &PathOptions) {
    match normalize(path, options) {
        Ok(Cow::Borrowed(got)) => assert_eq!(got, path),
        other => panic!("{path:?}: expected it borrowed, got {other:?}"),
    }
}

#[test]
fn the_default_rejects_escaped_slashes_and_keeps_empty_segments() {
    assert_eq!(PathOptions::default(), REJECT);
}

#[test]
fn dot_segments_go_without_climbing_above_the_root() {
    for (path, want) in [
        ("/public/../admin", "/admin"),
        ("/a/../../b", "/b"),
        ("/a/./b/.", "/a/b/"),
        ("/..", "/"),
        ("/.", "/"),
        ("/./", "/"),
        ("/../../..", "/"),
        ("/a/b/..", "/a/"),
        ("/a/b/../", "/a/"),
        ("/a/b/../c", "/a/c"),
        ("/a//..", "/a/"),
        ("/a/.//b", "/a//b"),
    ] {
        changes(path, &REJECT, want);
    }
}

#[test]
fn segments_that_only_start_with_dots_are_kept() {
    for path in [
        "/.well-known/x",
        "/a/..b",
        "/a/b..",
        "/a/...",
        "/a/.b/",
        "/v1.2/x.json",
        "/a/b.",
    ] {
        unchanged(path, &REJECT);
    }
}

#[test]
fn unreserved_characters_are_decoded_and_other_escapes_uppercased() {
    changes("/public/%2e%2e/admin", &REJECT, "/admin");
    changes("/public/%2E%2e/admin", &REJECT, "/admin");
    changes("/a/.%2e/b", &REJECT, "/b");
    changes("/%7Euser/%41%7a%30%2D%5F", &REJECT, "/~user/Az0-_");
    changes("/a%20b/%c3%a9", &REJECT, "/a%20b/%C3%A9");
    // `%25` is a literal `%` and stays one: nothing is decoded twice.
    unchanged("/%252e%252e/x", &REJECT);
    changes("/%252e/%2e", &REJECT, "/%252e/");
}

#[test]
fn canonical_escapes_and_plain_paths_come_back_borrowed() {
    for path in [
        "/",
        "/cart",
        "/api/v1/users/42/orders",
        "/a%20b/%C3%A9",
        "/%25",
        "/a//b",
        "/ünïcode",
    ] {
        unchanged(path, &REJECT);
    }
}

#[test]
fn paths_without_a_leading_slash_are_left_alone() {
    for path in ["*", "", "a/../b", "%zz"] {
        unchanged(path, &REJECT);
    }
}

#[test]
fn a_stray_percent_is_an_error() {
    for path in ["/%", "/a%2", "/a%zz", "/%g0/x", "/%%41"] {
        for options in [KEEP, REJECT, UNESCAPE, MERGE] {
            assert_eq!(
                normalize(path, &options),
                Err(PathError::InvalidPercentEncoding),
                "{path:?}"
            );
        }
    }
}

#[test]
fn escaped_slashes_are_kept_rejected_or_unescaped() {
    for path in [
        "/public%2F..%2Fadmin",
        "/a%2fb",
        "/a%5Cb",
        "/a%5cb",
        "/a\\b",
        "/a\\..\\b",
    ] {
        assert_eq!(normalize(path, &REJECT), Err(PathError::EscapedSlash), "{path:?}");
        assert_eq!(normalize(path, &MERGE), Err(PathError::EscapedSlash), "{path:?}");
    }
    unchanged("/public%2F..%2Fadmin", &KEEP);
    unchanged("/a\\..\\b", &KEEP);
    changes("/a%2fb%5c", &KEEP, "/a%2Fb%5C");
    changes("/public%2F..%2Fadmin", &UNESCAPE, "/admin");
    changes("/a%5Cb\\c", &UNESCAPE, "/a/b/c");
    changes("/a\\..\\b", &UNESCAPE, "/b");
}

#[test]
fn merging_slashes_happens_before_dot_segments_go() {
    changes("/a//b///c", &MERGE, "/a/b/c");
    changes("//", &MERGE, "/");
    changes("/a//", &MERGE, "/a/");
    changes("/a//../b", &MERGE, "/b");
    changes("/a//../b", &REJECT, "/a/b");
    let merge_unescaped = PathOptions {
        merge_slashes: true,
        ..UNESCAPE
    };
    changes("/a%2F%2F/b", &merge_unescaped, "/a/b");
}

#[test]
fn errors_read_as_sentences() {
    assert_eq!(
        PathError::EscapedSlash.to_string(),
        "the path has an encoded slash or backslash, which this proxy rejects (paths.escapedSlashes: reject)"
    );
    assert!(
        PathError::InvalidPercentEncoding
            .to_string()
            .starts_with("the path has an invalid percent-encoding")
    );
}

#[test]
fn the_word_scan_sees_every_suspect_at_every_offset_and_length() {
    // `needs_work` reads eight bytes at a time with an overlapping last word; a suspect must be
    // seen wherever it falls, also across word boundaries. `has_work` is the byte-by-byte truth.
    for len in 1..=26 {
        for suspect in ["/.", "/./", "/..", "/../", "//", "%", "%41", "%2f", "\\", "/.x"] {
            for at in 0..len {
                let mut path: String = "/abcdefghijklmnopqrstuvwxyz".chars().take(len).collect();
                path.replace_range(at.min(path.len())..(at + suspect.len()).min(path.len()), suspect);
                path.truncate(len.max(1));
                for merge in [false, true] {
                    let bytes = path.as_bytes();
                    assert_eq!(
                        needs_work(bytes, merge),
                        has_work(bytes, merge),
                        "{path:?} merge {merge}"
                    );
                }
            }
        }
    }
}
