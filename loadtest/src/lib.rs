//! Switchyard's demo ([`demo`]: the whole system in one process) and load-test tooling: the load
//! generator ([`generate`]: open loop with coordinated-omission correction, or closed loop at
//! maximum throughput; per-track breakdown from `x-switchyard-track`), a fast upstream with
//! optional faults ([`upstream`]), and, run by `loadtest/scenarios/`, side-by-side
//! measurements of Switchyard and other proxies.
//!
//! With the `fleet` feature, `fleet_scale` measures a group of proxies on etcd: how fast a
//! table write reaches every proxy, and what observing them costs.
//!
//! [`passthrough`] is hyper alone, the floor of the CPU comparison. [`train`] is the training run
//! of the profile-guided release build.
//!
//! `switchyard-loadtest upstream --listen 127.0.0.1:9001` serves a small fixed answer on one
//! thread, so that a benchmark measures the proxy in front of it rather than the upstream.

#![forbid(unsafe_code)]

pub mod abort_timing;
pub mod demo;
#[cfg(feature = "fleet")]
pub mod demo_fleet;
#[cfg(feature = "fleet")]
pub mod fleet_scale;
pub mod generate;
pub mod passthrough;
pub mod train;
pub mod upstream;
