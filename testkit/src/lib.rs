//! Test helpers for Switchyard's integration tests: in-process mock upstreams whose status,
//! latency and failure mode can change while they serve, a builder for routing tables, a small
//! HTTP client that keeps connections alive, an upstream that writes fixed raw bytes
//! ([`RawUpstream`], for responses that break HTTP), temporary directories, checks that keep an
//! OpenAPI description true ([`openapi`]), Kubernetes manifests read and their containers run on
//! loopback ([`manifests`]), a real etcd cluster ([`EtcdCluster`]) and a real Prometheus server
//! ([`Prometheus`]) on loopback, a seeded generator for simulations ([`Rng`]), a headless
//! Chromium driven over WebDriver ([`Browser`]), and [`assert_eventually!`].
//!
//! ```no_run
//! # async fn demo() {
//! use switchyard_testkit::{MockUpstream, Table};
//! let stable = MockUpstream::start("stable").await;
//! let canary = MockUpstream::start("canary").await;
//! canary.set_status(503);
//! let yaml = Table::new()
//!     .route("checkout")
//!     .track("stable", &[stable.addr()], 95.0)
//!     .track("canary", &[canary.addr()], 5.0)
//!     .header_rule("x-canary", "true", "canary")
//!     .sticky_header("x-user-id")
//!     .yaml();
//! # let _ = yaml;
//! # }
//! ```

#![forbid(unsafe_code)]

mod browser;
mod client;
pub mod etcd;
pub mod fake_proxy;
pub mod manifests;
pub mod openapi;
pub mod prometheus;
mod raw;
mod rng;
mod scratch;
mod table;
mod traffic;
mod upstream;

pub use browser::{Browser, Element};
pub use client::{Client, Reply};
pub use etcd::EtcdCluster;
pub use fake_proxy::FakeProxy;
pub use prometheus::{Prometheus, Sample};
pub use raw::{AfterReply, RawUpstream};
pub use rng::Rng;
pub use scratch::Scratch;
pub use table::Table;
pub use traffic::Traffic;
pub use upstream::{Behaviour, MockUpstream, Seen};

/// Polls `$cond` until it holds, failing after `$within` (default 10 s). Each poll yields to
/// the runtime briefly; the condition is the synchronisation, never the wait itself.
#[macro_export]
macro_rules! assert_eventually {
    ($cond:expr) => {
        $crate::assert_eventually!($cond, ::std::time::Duration::from_secs(10))
    };
    ($cond:expr, $within:expr) => {{
        let deadline = ::std::time::Instant::now() + $within;
        loop {
            if $cond {
                break;
            }
            if ::std::time::Instant::now() > deadline {
                panic!("condition did not hold within {:?}: {}", $within, stringify!($cond));
            }
            ::tokio::time::sleep(::std::time::Duration::from_millis(5)).await;
        }
    }};
}

/// A port on 127.0.0.1 that was free a moment ago, for a process that binds it itself.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// Whether `program --version` runs: the real components the tests start (`scripts/test`
/// installs them as root when they are missing).
pub fn installed(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
