//! Switchyard's control loop: it observes every proxy's per-track stats, analyzes a rollout's
//! candidate against its baseline, plans the next routing table and publishes it to every proxy
//! over their admin APIs. It shares only the schema crate (`switchyard-config`) with the proxy.
//!
//! The rollout engine arrives with the control-loop issue; until then this crate only fixes the
//! workspace's shape.

#![forbid(unsafe_code)]
