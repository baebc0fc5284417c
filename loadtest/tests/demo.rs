//! The README's first command, run as a user runs it: the demo completes a healthy canary,
//! aborts a faulty one, prints the summary and exits 0.

mod common;

use common::loadtest_ok;

#[test]
fn the_demo_completes_one_rollout_aborts_the_other_and_exits_0() {
    let stdout = loadtest_ok(["demo"]);
    assert!(stdout.contains("checkout-v2: Completed at 100"), "{stdout}");
    assert!(stdout.contains("checkout-v3: Aborted: "), "{stdout}");
    assert!(
        stdout.contains("first failing measurement to every proxy on baseline: "),
        "{stdout}"
    );
}

#[test]
fn abort_timing_measures_a_real_abort() {
    let stdout = loadtest_ok(["abort-timing", "--runs", "1"]);
    let row = stdout.lines().find(|l| l.starts_with("| 1 |")).expect("one row");
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    let secs = |c: &str| c.trim_end_matches(" s").parse::<f64>().expect("seconds");
    // Detection never precedes the fault, and confirmation never precedes detection. (A
    // measurement that failed before the fault, on a loaded machine, counts toward failureLimit
    // too: the scenario shows that detection as 0.00 s.)
    assert!(secs(cells[2]) >= 0.0 && secs(cells[3]) >= secs(cells[2]), "{row}");
    assert_eq!(
        cells[4], "0",
        "requests reached the candidate after every proxy confirmed: {row}"
    );
}

/// `demo --fleet` (with etcd installed, as `scripts/test` makes sure): the leader is killed
/// mid-rollout, the other replica takes over, the rollout completes with every step once and no
/// request failed.
#[cfg(feature = "fleet")]
#[test]
fn the_fleet_demo_survives_its_leader_and_completes() {
    let stdout = loadtest_ok(["demo", "--fleet"]);
    assert!(stdout.contains("killing replica"), "{stdout}");
    assert!(stdout.contains("leads after"), "{stdout}");
    assert!(stdout.contains("shop-v2: Completed at 100"), "{stdout}");
    assert!(
        stdout.contains("proxies serving the candidate at: [100.0, 100.0, 100.0]"),
        "{stdout}"
    );
    assert!(stdout.contains(" sent, 0 failed"), "{stdout}");
}
