//! Switchyard's control loop: it observes every proxy's per-track stats, analyzes a rollout's
//! candidate against its baseline, plans the next routing table and publishes it to every proxy
//! over their admin APIs; rollouts survive restarts. It shares only the schema crate
//! (`switchyard-config`) with the proxy. `config/examples/rollout-canary.yaml` is a complete
//! rollout.
//!
//! The control path, by module: [`observe`] → [`analyze`] → [`state`] (the rollout's pure state
//! machine) and [`plan`] → [`publish`]; around it [`controller`] (the loop), [`store`],
//! [`series`] (what the dashboard charts), [`api`] and [`cli`].

#![forbid(unsafe_code)]

pub mod analyze;
pub mod api;
pub mod cli;
pub mod controller;
pub mod fleet;
pub mod http;
pub mod lint;
pub mod observe;
pub mod plan;
pub mod publish;
#[cfg(feature = "fleet")]
pub mod replica;
pub mod series;
pub mod state;
pub mod store;
