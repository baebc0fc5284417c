//! `RoutingTable::decide` on small and large tables, and `RoutingTable::compile` of a large one.
//!
//! ```text
//! cargo bench -p switchyard-benches --bench decide -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Every table and request is built before timing starts; the timed loop only picks the next
//! prebuilt request, derives fresh randomness from a counter and calls `decide`.

use std::hint::black_box;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use switchyard_benches::{Request, check, mix, requests, requests_to, specs, table};
use switchyard_config::RoutingTable;

/// Prebuilt requests per benchmark; a power of two, so picking the next one is a mask.
const POOL: usize = 1024;

/// Times `decide` over `reqs`, one request and one fresh random number per iteration.
fn bench_decide(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, table: &RoutingTable, reqs: &[Request]) {
    assert!(reqs.len().is_power_of_two());
    check(table, reqs);
    let mask = reqs.len() - 1;
    let mut i: u64 = 0;
    g.bench_function(name, |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let req = &reqs[i as usize & mask];
            let d = table.decide(black_box(&req.view(mix(i))));
            d.map(|d| (d.route.index(), d.track.index(), d.endpoint.index()))
        })
    });
}

fn decide(c: &mut Criterion) {
    let mut g = c.benchmark_group("decide");

    let one = table(1, 1, false);
    bench_decide(&mut g, "1-route/plain", &one, &requests(1, 1, POOL, false));

    let one = table(1, 1, true);
    bench_decide(&mut g, "1-route/sticky+rules", &one, &requests(1, 1, POOL, true));

    let big = table(1000, 100, false);
    bench_decide(&mut g, "1000-routes/plain", &big, &requests(1000, 100, POOL, false));

    let big = table(1000, 100, true);
    bench_decide(
        &mut g,
        "1000-routes/sticky+rules",
        &big,
        &requests(1000, 100, POOL, true),
    );

    // Worst case of the per-host scan: every route on one host, the request takes the last.
    let one_host = table(1000, 1, false);
    bench_decide(
        &mut g,
        "1000-routes/one-host",
        &one_host,
        &requests_to(0, 999, POOL, false),
    );

    g.finish();
}

fn compile(c: &mut Criterion) {
    let spec = specs(1000, 100, true);
    let mut g = c.benchmark_group("compile");
    g.bench_function("1000-routes", |b| {
        b.iter(|| RoutingTable::compile(black_box(&spec), 1).map(|t| t.routes().len()))
    });
    g.finish();
}

criterion_group!(benches, decide, compile);
criterion_main!(benches);
