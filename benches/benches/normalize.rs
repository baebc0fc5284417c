//! `path::normalize`, which runs on every request before routing: paths that need nothing (the
//! fast path: one scan, borrowed result) under both slash settings, and paths that need the
//! full rewrite.
//!
//! ```text
//! cargo bench -p switchyard-benches --bench normalize -- --warm-up-time 1 --measurement-time 3
//! ```

use std::borrow::Cow;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use switchyard_config::path::{EscapedSlashes, PathOptions, normalize};

/// Paths as requests carry them, normal already: short and long, with file extensions and
/// canonical escapes.
const UNCHANGED: [(&str, &str); 5] = [
    ("5B", "/cart"),
    ("23B", "/api/v1/users/42/orders"),
    ("58B", "/api/v2/catalog/products/8c1f2a9e-3b7d/reviews/recent.json"),
    ("escaped-30B", "/search/caf%C3%A9%20au%20lait"),
    (
        "240B",
        concat!(
            "/static/assets/js/vendor/framework/components/ui/widgets/date-picker/locale/en-US/",
            "calendar/month-view/templates/partials/header/navigation/buttons/previous-next/",
            "icons/svg/arrow-left-right-double-chevron/sprite.min.js.map"
        ),
    ),
];

/// Paths that normalize to something else.
const REWRITTEN: [(&str, &str); 3] = [
    ("dot-segments", "/public/../admin/./users/%2e%2e/settings"),
    ("lowercase-escapes", "/search/caf%c3%a9%20au%20lait"),
    ("unreserved-escapes", "/%7Euser/%41%42%43/profile"),
];

fn normalize_paths(c: &mut Criterion) {
    let mut g = c.benchmark_group("normalize");
    let default = PathOptions::default();
    let merging = PathOptions {
        escaped_slashes: EscapedSlashes::Unescape,
        merge_slashes: true,
    };
    for (name, path) in UNCHANGED {
        for (options, setting) in [(&default, "default"), (&merging, "merge")] {
            assert!(matches!(normalize(path, options), Ok(Cow::Borrowed(_))), "{path}");
            g.bench_function(format!("unchanged/{setting}/{name}"), |b| {
                b.iter(|| normalize(black_box(path), options).map(|p| p.len()))
            });
        }
    }
    for (name, path) in REWRITTEN {
        assert!(matches!(normalize(path, &default), Ok(Cow::Owned(_))), "{path}");
        g.bench_function(format!("rewritten/{name}"), |b| {
            b.iter(|| normalize(black_box(path), &default).map(|p| p.len()))
        });
    }
    g.finish();
}

criterion_group!(benches, normalize_paths);
criterion_main!(benches);
