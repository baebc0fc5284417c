//! Switchyard's load generator (open-loop with coordinated-omission correction, and closed-loop
//! maximum throughput) and the scenarios that compare Switchyard with other proxies.
//!
//! The generator arrives with the demo-and-benchmarks issue; until then this crate only fixes the
//! workspace's shape.

#![forbid(unsafe_code)]
