//! Switchyard's demo ([`demo`]: the whole system in one process) and load-test tooling: a fast
//! upstream with optional faults for benchmarks ([`upstream`]) and, run by
//! `loadtest/scenarios/`, side-by-side measurements of Switchyard and other proxies.
//!
//! `switchyard-loadtest upstream --listen 127.0.0.1:9001` serves a small fixed answer on one
//! thread, so that a benchmark measures the proxy in front of it rather than the upstream.

#![forbid(unsafe_code)]

pub mod demo;
pub mod upstream;
