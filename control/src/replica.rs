//! Controller replicas on etcd (feature `fleet`, `switchyard serve --etcd`): every replica
//! campaigns for one key (`{prefix}/control/leader`) under a lease of its own; the one that
//! creates it leads, and only it runs rollouts. Every write it makes (rollout state, group
//! tables) is fenced by a transaction comparing that key's create revision with the one it won,
//! so a leader frozen past its lease (SIGSTOP, a long pause) writes nothing when it wakes: its
//! key is gone, or another replica's. It also stops itself: it steps down as soon as it sees
//! that its lease went unrenewed for a TTL, before its next renewal.
//!
//! A new leader reads every rollout from etcd and resumes each where the store says it was:
//! the controller stores a step before it publishes it, so no step is skipped or taken twice,
//! an abort stored is carried out, and a pause keeps its end time.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions};
use serde::{Deserialize, Serialize};
use switchyard_config::InstanceId;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::controller::Controller;
use crate::fleet::{Fence, Fencing, Fleet, FleetError};
use crate::http::Http;
use crate::store::Store;

/// The lease TTL when none is given.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// How long a follower waits for the leader's answer to a request it passed on.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(20);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Who leads, as the election key says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderInfo {
    /// The leading replica.
    pub id: InstanceId,
    /// Its control API, as the other replicas reach it.
    pub url: String,
}

/// A replica's part now.
#[derive(Debug, Clone)]
pub enum Role {
    /// Another replica leads (`None`: none does, or this one does not know yet).
    Follower {
        /// The leader.
        leader: Option<LeaderInfo>,
    },
    /// This replica leads, with this controller.
    Leader {
        /// The controller running every rollout.
        controller: Arc<Controller>,
    },
}

/// One replica of the controller.
pub struct Replica {
    me: LeaderInfo,
    fleet: Arc<Fleet>,
    http: Http,
    /// For requests passed to the leader: longer than a command may wait for its state to be
    /// stored, so that a slow answer is not taken for no answer.
    forward: Http,
    ttl: Duration,
    role: watch::Sender<Role>,
    /// Set by [`Replica::resign`]: hand the lead over and campaign no more.
    stopping: watch::Sender<bool>,
    /// Set once it has let go of its lease, after a resignation.
    resigned: watch::Sender<bool>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica").field("me", &self.me).finish_non_exhaustive()
    }
}

impl Replica {
    /// A replica reached at `url`, campaigning once [`Replica::run`] runs.
    pub fn new(fleet: Arc<Fleet>, http: Http, url: String, ttl: Duration) -> Arc<Self> {
        fleet.set_fencing(Fencing::Follower);
        Arc::new(Self {
            me: LeaderInfo {
                id: InstanceId::from_bits(rand_bits()),
                url,
            },
            fleet,
            http,
            forward: Http::new(FORWARD_TIMEOUT),
            // etcd counts whole seconds: the replica counts the TTL etcd does.
            ttl: Duration::from_secs(ttl.as_secs().max(1)),
            role: watch::Sender::new(Role::Follower { leader: None }),
            stopping: watch::Sender::new(false),
            resigned: watch::Sender::new(false),
        })
    }

    /// Lets go at once rather than after a lease (`SIGTERM`, as Kubernetes stops a pod): a
    /// leader stores what it holds, stops its rollouts and revokes its lease, which deletes the
    /// election key, so another replica leads within moments; a follower revokes its lease.
    /// Returns once done, or after `within`.
    pub async fn resign(&self, within: Duration) {
        self.stopping.send_replace(true);
        let mut resigned = self.resigned.subscribe();
        let _ = tokio::time::timeout(within, resigned.wait_for(|done| *done)).await;
    }

    /// This replica.
    pub fn me(&self) -> &LeaderInfo {
        &self.me
    }

    /// Its part now.
    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    /// Follows its part as it changes.
    pub fn watch_role(&self) -> watch::Receiver<Role> {
        self.role.subscribe()
    }

    /// The leader as the election key says now (a follower that has not heard yet asks etcd).
    pub async fn read_leader(&self) -> Option<LeaderInfo> {
        let key = &self.fleet.keys().leader();
        let answer = unary(
            &self.fleet.client(),
            |mut c| async move { c.get(key.as_str(), None).await },
        )
        .await
        .ok()?;
        let info: LeaderInfo = serde_json::from_slice(answer.kvs().first()?.value()).ok()?;
        (info.id != self.me.id).then_some(info)
    }

    /// The fleet it uses.
    pub fn fleet(&self) -> &Arc<Fleet> {
        &self.fleet
    }

    /// The HTTP client it uses.
    pub fn http(&self) -> &Http {
        &self.http
    }

    /// The HTTP client that passes requests to the leader.
    pub fn forwarding(&self) -> &Http {
        &self.forward
    }

    /// Campaigns, leads, steps down and campaigns again, for as long as the process runs.
    pub async fn run(self: Arc<Self>) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            if *self.stopping.borrow() {
                self.resigned.send_replace(true);
                return;
            }
            match self.term().await {
                Ok(()) => backoff = FIRST_BACKOFF,
                Err(e) => {
                    tracing::warn!("the election on etcd failed, trying again: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// One lease's life: follow until the leader key is free, take it, lead until the lease or
    /// the fence is lost.
    async fn term(&self) -> Result<(), FleetError> {
        let mut client = self.fleet.client();
        let ttl_secs = self.ttl.as_secs();
        let ttl = i64::try_from(ttl_secs).unwrap_or(i64::MAX);
        let lease = unary(&client, |mut c| async move { c.lease_grant(ttl, None).await })
            .await?
            .id();
        let mut ours = Lease::keep(&mut client, lease, self.ttl).await?;
        let mut stopping = self.stopping.subscribe();
        let mut tick = tokio::time::interval(self.ttl / 3);
        tick.tick().await;
        let key = self.fleet.keys().leader();
        let value = serde_json::to_string(&self.me).expect("leader info serializes");

        let fence = loop {
            let txn = Txn::new()
                .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key.as_str(),
                    value.as_str(),
                    Some(PutOptions::new().with_lease(lease)),
                )])
                .or_else([TxnOp::get(key.as_str(), None)]);
            let txn = &txn;
            let answer = unary(&client, |mut c| async move { c.txn(txn.clone()).await }).await?;
            let revision = answer.header().map_or(0, |h| h.revision());
            if answer.succeeded() {
                break Fence {
                    key: key.clone(),
                    revision,
                };
            }
            let held = answer.op_responses().into_iter().find_map(|op| match op {
                TxnOpResponse::Get(get) => get.kvs().first().cloned(),
                _ => None,
            });
            let leader = held
                .as_ref()
                .and_then(|kv| serde_json::from_slice::<LeaderInfo>(kv.value()).ok());
            if let Some(l) = &leader {
                tracing::info!(leader = %l.id, url = %l.url, "following");
            }
            self.role.send_replace(Role::Follower { leader });
            // Wait for the key to go (its holder's lease ended, or it resigned).
            let from = held.as_ref().map_or(revision, |kv| kv.mod_revision()) + 1;
            let (key, options) = (&key, &WatchOptions::new().with_start_revision(from));
            let mut watch = unary(&client, |mut c| async move {
                c.watch(key.as_str(), Some(options.clone())).await
            })
            .await?;
            loop {
                tokio::select! {
                    () = asked_to_stop(&mut stopping) => {
                        let _ = tokio::time::timeout(Duration::from_secs(1), client.lease_revoke(lease)).await;
                        return Ok(());
                    }
                    _ = tick.tick() => {
                        if !ours.renew(&mut client).await? {
                            return Ok(());
                        }
                    }
                    message = watch.message() => {
                        let response = message
                            .map_err(|e| FleetError::Etcd(e.to_string()))?
                            .ok_or_else(|| FleetError::Etcd("etcd closed the watch".to_owned()))?;
                        if response.canceled() || response.events().iter().any(|e| e.event_type() == EventType::Delete) {
                            break;
                        }
                    }
                }
            }
        };

        // Lead.
        tracing::info!(id = %self.me.id, "leading: resuming every rollout from etcd");
        self.fleet.set_fencing(Fencing::Leader(fence.clone()));
        let store = Store::etcd(Arc::clone(&self.fleet));
        let records = match store.load().await {
            Ok(records) => records,
            Err(e) => {
                self.fleet.set_fencing(Fencing::Follower);
                let _ = client.lease_revoke(lease).await;
                return Err(FleetError::Etcd(e.to_string()));
            }
        };
        let controller = Controller::resume(store.clone(), self.http.clone(), Some(Arc::clone(&self.fleet)), records);
        self.role.send_replace(Role::Leader {
            controller: Arc::clone(&controller),
        });
        let mut lost = store.lost().expect("an etcd store reports a lost fence");
        let (key, options) = (&key, &WatchOptions::new().with_start_revision(fence.revision + 1));
        let mut watch = unary(&client, |mut c| async move {
            c.watch(key.as_str(), Some(options.clone())).await
        })
        .await;
        let why = loop {
            let key_event = async {
                match watch.as_mut() {
                    Ok(w) => w.message().await,
                    Err(_) => std::future::pending().await,
                }
            };
            tokio::select! {
                () = asked_to_stop(&mut stopping) => {
                    // Commands were answered once stored; what the loop saved since goes too.
                    if tokio::time::timeout(Duration::from_secs(2), store.flush()).await.is_err() {
                        tracing::warn!("stopping before etcd confirmed the last state written");
                    }
                    break "asked to stop".to_owned();
                }
                _ = tick.tick() => {
                    match ours.renew(&mut client).await {
                        Ok(true) => {}
                        Ok(false) => break "its lease lapsed".to_owned(),
                        Err(e) => {
                            if ours.renewed.elapsed() >= self.ttl {
                                break format!("it could not renew its lease for a TTL ({e})");
                            }
                        }
                    }
                }
                _ = lost.changed() => break "etcd refused a fenced write".to_owned(),
                message = key_event => {
                    match message {
                        Ok(Some(response)) if response.events().iter().any(|e| e.event_type() == EventType::Delete) => {
                            break "its election key is gone".to_owned();
                        }
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => watch = Err(FleetError::Etcd("the watch ended".to_owned())),
                    }
                }
            }
        };
        tracing::warn!(id = %self.me.id, "stepping down: {why}");
        self.fleet.set_fencing(Fencing::Follower);
        controller.stop_all();
        store.end_term();
        self.role.send_replace(Role::Follower { leader: None });
        let _ = tokio::time::timeout(Duration::from_secs(1), client.lease_revoke(lease)).await;
        Ok(())
    }
}

/// A lease kept alive: its keep-alive stream, and when it was last renewed.
struct Lease {
    id: i64,
    ttl: Duration,
    keeper: etcd_client::LeaseKeeper,
    answers: etcd_client::LeaseKeepAliveStream,
    renewed: Instant,
}

impl Lease {
    async fn keep(client: &mut etcd_client::Client, id: i64, ttl: Duration) -> Result<Self, FleetError> {
        let (keeper, answers) = timed(client.lease_keep_alive(id)).await?;
        Ok(Self {
            id,
            ttl,
            keeper,
            answers,
            renewed: Instant::now(),
        })
    }

    /// Renews the lease; false once it lapsed, or went unrenewed for a whole TTL (the process
    /// was paused past it: whatever etcd says now, another replica may lead).
    ///
    /// One renewal takes at most a third of the TTL, the time between two: a keep-alive stream
    /// on a member that went away (it fails, ends, or never answers) is replaced at once by one
    /// the client opens to the members that remain, and the renewal sent again, for as long as
    /// that third lasts. Losing one etcd member must not cost the lease: waiting for the next
    /// round, or for a call's whole timeout, would let a short TTL lapse.
    async fn renew(&mut self, client: &mut etcd_client::Client) -> Result<bool, FleetError> {
        if self.renewed.elapsed() >= self.ttl {
            tracing::warn!(
                "this replica's lease went unrenewed for {:?} (was the process paused?)",
                self.ttl
            );
            return Ok(false);
        }
        let deadline = Instant::now() + self.ttl / 3;
        let mut retry = Duration::from_millis(10);
        loop {
            let answer = tokio::time::timeout_at(deadline, async {
                self.keeper.keep_alive().await?;
                self.answers.message().await
            })
            .await;
            let failure = match answer {
                Ok(Ok(Some(answer))) if answer.ttl() > 0 => {
                    self.renewed = Instant::now();
                    return Ok(true);
                }
                // etcd answered: the lease is gone.
                Ok(Ok(Some(_))) => return Ok(false),
                Ok(Ok(None)) => "the keep-alive stream ended".to_owned(),
                Ok(Err(e)) => crate::fleet::etcd_sentence(&e),
                Err(_) => format!("etcd did not renew the lease within {:?}", self.ttl / 3),
            };
            if Instant::now() >= deadline {
                return Err(FleetError::Etcd(failure));
            }
            tracing::debug!("renewing this replica's lease on another stream: {failure}");
            tokio::time::sleep(retry.min(deadline.saturating_duration_since(Instant::now()))).await;
            retry = (retry * 2).min(Duration::from_millis(200));
            if let Ok(Ok((keeper, answers))) = tokio::time::timeout_at(deadline, client.lease_keep_alive(self.id)).await
            {
                (self.keeper, self.answers) = (keeper, answers);
            }
        }
    }
}

fn rand_bits() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// Once [`Replica::resign`] was called (at once if it was already).
async fn asked_to_stop(stopping: &mut watch::Receiver<bool>) {
    // The guard it returns is dropped here, before any await of the caller's.
    let _ = stopping.wait_for(|stop| *stop).await;
}

async fn timed<T>(call: impl Future<Output = Result<T, etcd_client::Error>>) -> Result<T, FleetError> {
    crate::fleet::timed(call).await
}

async fn unary<T, Fut: Future<Output = Result<T, etcd_client::Error>>>(
    client: &etcd_client::Client,
    call: impl FnMut(etcd_client::Client) -> Fut,
) -> Result<T, FleetError> {
    crate::fleet::unary(client, call).await
}
