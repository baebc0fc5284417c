//! The harness of the proxy's fuzz targets: one tokio runtime per fuzz process, a proxy started
//! in-process on free loopback ports from a YAML table, a [`downstream`] client on fresh TCP
//! connections, [`upstream`] servers (recording, raw), and the [`wire`] parsing the invariants
//! are checked with.
//!
//! `fuzz_targets/downstream_http1.rs` is the example: a `static` harness built on first use,
//! then one exchange and a set of checks per input. `README.md` says how to run the targets.

#![forbid(unsafe_code)]

pub mod downstream;
pub mod upstream;
pub mod wire;

use std::sync::LazyLock;

use switchyard_config::{Format, load_config};
use switchyard_proxy::{Options, Running};
use tokio::runtime::Runtime;

/// The proxy's timeouts in every fuzz table, as YAML.
///
/// Short, so that an exchange ends soon without the client waiting out its whole silence
/// bound: `idle` closes a keep-alive connection 10–15 ms after its last answer, `headerRead`
/// cuts off an unfinished head, `request` ends a request whose upstream does not answer (the
/// 1 s the brief asks for), and `connect` a connection attempt.
pub const TIMEOUTS: &str = "timeouts: { connect: 200ms, request: 1s, headerRead: 100ms, idle: 10ms }";

static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime starts")
});

/// The fuzz process's runtime, built on first use: the proxy and the upstreams run on its
/// workers, and each input's exchange is `block_on` it.
pub fn runtime() -> &'static Runtime {
    &RUNTIME
}

/// Starts a proxy from a whole YAML configuration (`listen: 127.0.0.1:0` and
/// `admin: { listen: 127.0.0.1:0 }` for free ports).
///
/// # Panics
///
/// When the configuration does not load or the proxy does not start: the harness is wrong.
pub async fn start_proxy(yaml: &str) -> Running {
    let loaded =
        load_config(yaml, Format::Yaml, 1).unwrap_or_else(|e| panic!("the fuzz table does not load: {e}\n{yaml}"));
    switchyard_proxy::start(loaded, Options::default())
        .await
        .unwrap_or_else(|e| panic!("the proxy does not start: {e:#}"))
}
