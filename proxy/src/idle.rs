//! The idle limit of an upstream response body (`timeouts.responseBodyIdle`): how long the
//! upstream may send nothing. (A request body's limits, idle and rate, are its own: see
//! [`crate::request_body`].)

use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// A lazily armed idle timer. Nothing is allocated or registered until the body first waits
/// for its peer; after every frame the next wait starts the idle time anew, so time the other
/// side took to accept what the body had (it was not polled) is never counted as idle.
#[derive(Debug, Default)]
pub struct IdleTimer {
    timer: Option<Pin<Box<Sleep>>>,
    /// A frame came since the timer was last set.
    progressed: bool,
}

impl IdleTimer {
    /// A frame came.
    pub fn progressed(&mut self) {
        self.progressed = true;
    }

    /// The body waits for its peer: whether the peer has now sent nothing for `idle` since the
    /// first wait after the last frame. Registers `cx` to be woken when that time comes.
    pub fn expired(&mut self, idle: Duration, cx: &mut Context<'_>) -> bool {
        let deadline = Instant::now() + idle;
        let timer = match &mut self.timer {
            Some(timer) => {
                if std::mem::take(&mut self.progressed) {
                    timer.as_mut().reset(deadline);
                }
                timer
            }
            None => self.timer.insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        timer.as_mut().poll(cx).is_ready()
    }
}
