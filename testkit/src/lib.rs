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

/// A port on 127.0.0.1 held for a process that binds it itself and binds it again after a
/// restart (an etcd member killed and started again). A [`free_port`] is free only a moment: while
/// its process is down, a parallel test's listener or outgoing connection may take it. A held
/// port is below the kernel's ephemeral range, which `127.0.0.1:0` and outgoing connections draw
/// from, and a lock file keeps every other test from picking it for as long as this value lives
/// (the lock goes with the process, so a crashed test leaves nothing held).
#[derive(Debug)]
pub struct HeldPort {
    port: u16,
    _lock: std::fs::File,
}

impl HeldPort {
    /// The port's number.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Picks a [`HeldPort`]: from a place in the range that differs between processes, the first
/// port that no other test holds and nothing listens on.
pub fn held_port() -> HeldPort {
    let range = held_range();
    let dir = std::env::temp_dir().join("switchyard-held-ports");
    std::fs::create_dir_all(&dir).expect("create the held ports' directory");
    let span = u32::from(range.end - range.start);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let start = (std::process::id().wrapping_mul(2_654_435_761) ^ nanos) % span;
    for i in 0..span {
        let port = range.start + u16::try_from((start + i) % span).expect("within the range");
        let Ok(lock) = std::fs::File::create(dir.join(port.to_string())) else {
            continue;
        };
        if lock.try_lock().is_err() {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return HeldPort { port, _lock: lock };
        }
    }
    panic!("no port in {range:?} is free to hold on 127.0.0.1");
}

/// The ports below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`), from 20,000,
/// or above it when it starts too low to leave room.
fn held_range() -> std::ops::Range<u16> {
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut bounds = s.split_whitespace().map(str::parse::<u16>);
            Some((bounds.next()?.ok()?, bounds.next()?.ok()?))
        })
        .unwrap_or((32_768, 60_999));
    if ephemeral.0 >= 21_000 {
        20_000..ephemeral.0
    } else {
        ephemeral.1.saturating_add(1)..u16::MAX
    }
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
