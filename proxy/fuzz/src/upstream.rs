//! The upstream side: servers on `127.0.0.1:0` that the proxy forwards to.
//!
//! [`recording`] records every request as it came on the wire and answers 200; [`raw`] answers
//! every request with whatever bytes it is given.

pub mod raw;
pub mod recording;
