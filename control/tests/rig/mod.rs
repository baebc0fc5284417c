//! The rig the control loop's virtual-time tests share: a real [`Controller`] with its own
//! store, driving in-process fake proxies (testkit's [`FakeProxy`]).

#![allow(dead_code, reason = "each test file uses part of the rig")]

use std::sync::Arc;
use std::time::Duration;

use switchyard_config::Format;
use switchyard_control::controller::{Controller, Status};
use switchyard_control::http::Http;
use switchyard_control::state::Event;
use switchyard_control::store::Store;
use switchyard_testkit::{FakeProxy, Scratch};
use tokio::time::Instant;

/// A controller with its own store, and the fake proxies it publishes to.
pub struct Rig {
    pub controller: Arc<Controller>,
    pub proxies: Vec<FakeProxy>,
    _scratch: Scratch,
}

impl Rig {
    pub async fn start(test: &str, proxies: usize) -> Self {
        let scratch = Scratch::new(test);
        let store = Store::open(&scratch.join("state")).expect("open the store");
        let controller = Controller::start(store, Http::new(Duration::from_secs(5)));
        let mut fakes = Vec::new();
        for _ in 0..proxies {
            fakes.push(FakeProxy::start().await);
        }
        Self {
            controller,
            proxies: fakes,
            _scratch: scratch,
        }
    }

    /// Applies `spec` (YAML) with `proxies: [...]` pointing at the fake proxies.
    pub async fn apply(&self, spec: &str) -> Status {
        let urls: Vec<String> = self.proxies.iter().map(|p| format!("\"{}\"", p.url)).collect();
        let spec = format!("proxies: [{}]\n{spec}", urls.join(", "));
        self.controller
            .apply(&spec, Format::Yaml)
            .await
            .expect("the spec applies")
    }

    pub async fn status(&self, name: &str) -> Status {
        self.controller.status(name).await.expect("the rollout exists")
    }

    pub async fn history(&self, name: &str) -> Vec<Event> {
        self.controller.history(name).await.expect("the rollout exists")
    }

    /// Waits (in virtual time, at most `within`) until the status satisfies `cond`.
    pub async fn wait_status(
        &self,
        name: &str,
        within: Duration,
        what: &str,
        cond: impl Fn(&Status) -> bool,
    ) -> Status {
        let deadline = Instant::now() + within;
        loop {
            let status = self.status(name).await;
            if cond(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {within:?} of virtual time; status: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (in virtual time, at most `within`) until every fake proxy serves `weight`.
    pub async fn wait_weight(&self, weight: f64, within: Duration) {
        wait_until(within, &format!("every proxy at weight {weight}"), || {
            self.proxies.iter().all(|p| p.weight() == weight)
        })
        .await;
    }
}

/// Polls `cond` every 100 ms of virtual time until it holds; fails after `within`.
pub async fn wait_until(within: Duration, what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?} of virtual time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The virtual time between the first events matching `a` and then `b`, ms.
pub fn between(events: &[Event], a: impl Fn(&Event) -> bool, b: impl Fn(&Event) -> bool) -> u64 {
    let first = events.iter().position(a).expect("the first event happened");
    let second = events[first..]
        .iter()
        .find(|e| b(e))
        .expect("the second event happened");
    second.at - events[first].at
}
