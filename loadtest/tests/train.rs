//! The training run of the profile-guided release build (`switchyard-loadtest train`), as
//! `scripts/build-release` runs it: against a switchyard-proxy binary, every kind of traffic is
//! sent and answered 2xx, and the proxy stops with exit 0 (a profiling build writes its counts
//! then).

mod common;

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Output};

use common::loadtest_ok;

/// The workspace's switchyard-proxy, built beside this package's binary by
/// `cargo test --workspace`.
fn proxy_binary() -> PathBuf {
    let loadtest = PathBuf::from(env!("CARGO_BIN_EXE_switchyard-loadtest"));
    let proxy = loadtest.with_file_name(format!("switchyard-proxy{}", std::env::consts::EXE_SUFFIX));
    assert!(
        proxy.exists(),
        "{} is missing: `cargo test --workspace` builds it",
        proxy.display()
    );
    proxy
}

#[test]
fn the_training_sends_every_kind_of_traffic_and_the_proxy_exits_cleanly() {
    let proxy = proxy_binary();
    let stdout = loadtest_ok([
        OsStr::new("train"),
        OsStr::new("--duration"),
        OsStr::new("400ms"),
        OsStr::new("--proxy"),
        proxy.as_os_str(),
    ]);
    // Two runs of the proxy (one worker, then two), eight kinds of traffic each.
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("| 1 |") || l.starts_with("| 2 |"))
        .collect();
    assert_eq!(rows.len(), 16, "{stdout}");
    for kind in [
        "| h2c, ",
        "| TLS http/1.1, ",
        "| TLS h2, ",
        "query rule to the h2c track",
        "table swaps",
    ] {
        assert_eq!(rows.iter().filter(|r| r.contains(kind)).count(), 2, "{kind}\n{stdout}");
    }
    for row in rows {
        let requests: u64 = row
            .trim_end_matches(" |")
            .rsplit("| ")
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("a request count in {row}"));
        assert!(requests > 0, "{row}");
    }
}

#[test]
fn a_proxy_that_does_not_serve_fails_the_training() {
    // `true` exits 0 at once: the training must not mistake that for a proxy it profiled.
    let out: Output = Command::new(env!("CARGO_BIN_EXE_switchyard-loadtest"))
        .args(["train", "--duration", "400ms", "--proxy", "true"])
        .output()
        .expect("the training runs");
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("exited with exit status: 0 before it was ready"),
        "{stderr}"
    );
}
