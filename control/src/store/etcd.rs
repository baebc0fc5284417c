//! Records in etcd: queued by [`Writer::queue`] under the controller's lock, written in order by
//! one task with the leader's fence, the latest record of a rollout replacing one not written
//! yet. One writer serves one term of leadership and writes with that term's fence only: once a
//! fenced write is refused, or the term ends ([`Writer::end_term`]), it writes nothing more, and
//! whatever it had not stored is reported lost to those waiting on it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::{LoadError, Record};
use crate::fleet::{Fencing, Fleet, FleetError};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What is queued: per rollout, the latest record (`None`: remove it) and its sequence number.
#[derive(Debug, Default)]
struct Queue {
    pending: BTreeMap<String, (u64, Option<Vec<u8>>)>,
    /// The last sequence number given out.
    last: u64,
}

#[derive(Debug)]
pub(crate) struct Writer {
    fleet: Arc<Fleet>,
    /// The fence of the term this writer serves, taken when it starts.
    fencing: Fencing,
    queue: Mutex<Queue>,
    wake: Notify,
    /// Every record queued up to this sequence number is stored.
    stored: watch::Sender<u64>,
    lost: watch::Sender<bool>,
}

impl Writer {
    pub(crate) fn start(fleet: Arc<Fleet>) -> Arc<Self> {
        let writer = Arc::new(Self {
            fencing: fleet.fencing(),
            fleet,
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            stored: watch::Sender::new(0),
            lost: watch::Sender::new(false),
        });
        tokio::spawn(Arc::clone(&writer).run());
        writer
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "{} under {}",
            self.fleet.endpoints().join(","),
            self.fleet.keys().rollouts()
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn queue(&self, name: &str, bytes: Option<Vec<u8>>) -> std::io::Result<()> {
        if *self.lost.borrow() {
            return Err(not_leader());
        }
        let mut queue = self.lock();
        queue.last += 1;
        let seq = queue.last;
        queue.pending.insert(name.to_owned(), (seq, bytes));
        drop(queue);
        self.wake.notify_one();
        Ok(())
    }

    pub(crate) async fn flush(&self) -> std::io::Result<()> {
        let target = self.lock().last;
        let mut stored = self.stored.subscribe();
        let mut lost = self.lost.subscribe();
        loop {
            if *lost.borrow_and_update() {
                return Err(not_leader());
            }
            if *stored.borrow_and_update() >= target {
                return Ok(());
            }
            tokio::select! {
                _ = stored.changed() => {}
                _ = lost.changed() => {}
            }
        }
    }

    /// Ends the writer's term: it writes nothing more, and a flush waiting for a record not
    /// stored yet fails (the next term starts from what etcd holds, without it).
    pub(crate) fn end_term(&self) {
        self.lost.send_replace(true);
        self.wake.notify_one();
    }

    pub(crate) fn lost(&self) -> watch::Receiver<bool> {
        self.lost.subscribe()
    }

    pub(crate) async fn load(&self) -> std::io::Result<Vec<(String, Result<Record, LoadError>)>> {
        let stored = self.fleet.rollouts().await.map_err(std::io::Error::other)?;
        let prefix = self.fleet.keys().rollouts();
        Ok(stored
            .into_iter()
            .map(|(name, bytes)| {
                let record = serde_json::from_slice(&bytes).map_err(|source| LoadError::Parse {
                    path: PathBuf::from(format!("{prefix}{name}")),
                    source,
                });
                (name, record)
            })
            .collect())
    }

    async fn run(self: Arc<Self>) {
        let mut failing = false;
        loop {
            if *self.lost.borrow() {
                return;
            }
            let batch = std::mem::take(&mut self.lock().pending);
            let Some(high) = batch.values().map(|(seq, _)| *seq).max() else {
                self.wake.notified().await;
                continue;
            };
            for (name, (_, bytes)) in batch {
                let mut backoff = FIRST_BACKOFF;
                loop {
                    if *self.lost.borrow() {
                        return;
                    }
                    let written = match &bytes {
                        Some(b) => self.fleet.put_rollout(&self.fencing, &name, b.clone()).await,
                        None => self.fleet.delete_rollout(&self.fencing, &name).await,
                    };
                    match written {
                        Ok(()) => {
                            if failing {
                                tracing::info!("rollout state is stored in etcd again");
                                failing = false;
                            }
                            break;
                        }
                        Err(FleetError::NotLeader) => {
                            tracing::warn!(rollout = %name, "etcd refused a write of the rollout's state: this controller no longer leads");
                            self.lost.send_replace(true);
                            return;
                        }
                        Err(e) => {
                            if !failing {
                                tracing::warn!(rollout = %name, "cannot store the rollout's state in etcd, retrying: {e}");
                                failing = true;
                            }
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                        }
                    }
                }
            }
            // Every number up to `high` was in this batch or replaced by a later one in it.
            self.stored.send_modify(|s| *s = (*s).max(high));
        }
    }
}

fn not_leader() -> std::io::Error {
    std::io::Error::other("this controller is no longer the leader, so it stores nothing")
}
