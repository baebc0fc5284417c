//! Steady traffic through a proxy until dropped: four loops of requests, each with a sticky key
//! (`x-user-id` over 500 users). A bounded load loop for tests that need requests flowing, not
//! a synchronisation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::Client;

/// Requests to one URL, sent until dropped.
#[derive(Debug)]
pub struct Traffic(Arc<AtomicBool>);

impl Traffic {
    /// Starts sending to `url` on the current runtime.
    pub fn start(url: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        for _ in 0..4 {
            let (stop, url) = (Arc::clone(&stop), url.clone());
            tokio::spawn(async move {
                let client = Client::http1();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let user = format!("user-{}", i % 500);
                    let _ = client.get(&url, &[("x-user-id", &user)]).await;
                }
            });
        }
        Self(stop)
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
