//! [`Fleet`] on etcd, with `etcd-client`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity, KeyValue, TlsOptions,
    Txn, TxnOp, TxnOpResponse, TxnResponse, WatchOptions,
};
use switchyard_config::etcd_access::EtcdCredentials;
use switchyard_config::fleet::{FleetKeys, GroupName, Registration};
use switchyard_config::{Format, InstanceId, RouteSpec, RoutesDocument, load_routes};
use tokio::sync::watch;

use super::{Expect, FleetError, GroupView, Member, Members, ProxyView, Table};

/// How long one etcd call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How many times [`unary`] tries a call again that reached no member.
const UNREACHED_RETRIES: u32 = 4;
/// The first wait before following a group's members again after etcd failed; it doubles up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The leader's fence: its election key and the revision that key was created at. A write
/// fenced with it succeeds only while that very key exists, so a leader whose lease lapsed
/// (another replica took over) cannot write, whenever it wakes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The election key.
    pub key: String,
    /// Its create revision when this replica won.
    pub revision: i64,
}

/// Whether writes are fenced: a controller that runs alone (without an election) writes
/// unfenced; a replica writes only while it leads, each write fenced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fencing {
    /// No election: writes are not fenced.
    Unfenced,
    /// This replica leads: writes are fenced with its key.
    Leader(Fence),
    /// This replica follows: it writes nothing fenced.
    Follower,
}

/// The fleet on etcd: one client (cloned per call), the key layout, the fence while leader, and
/// the groups whose members are followed.
pub struct Fleet {
    client: Client,
    keys: FleetKeys,
    endpoints: Vec<String>,
    fencing: Mutex<Fencing>,
    members: Mutex<BTreeMap<GroupName, watch::Receiver<Members>>>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("endpoints", &self.endpoints)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// Connects to etcd at `endpoints` (`http://HOST:PORT`), keys under `keys`.
    pub async fn connect(endpoints: Vec<String>, keys: FleetKeys) -> Result<Self, FleetError> {
        Self::connect_with(endpoints, keys, &EtcdCredentials::default()).await
    }

    /// Connects as [`Self::connect`] does, over TLS and as an etcd user when `credentials` say
    /// so (`--etcd-ca`, `--etcd-cert`, `--etcd-key`, `--etcd-user`, `--etcd-password-file`).
    pub async fn connect_with(
        endpoints: Vec<String>,
        keys: FleetKeys,
        credentials: &EtcdCredentials,
    ) -> Result<Self, FleetError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(CALL_TIMEOUT)
            .with_timeout(CALL_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), CALL_TIMEOUT)
            .with_keep_alive_while_idle(true);
        if let Some(ca) = &credentials.ca {
            let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(ca));
            if let Some((cert, key)) = &credentials.identity {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            options = options.with_tls(tls);
        }
        if let Some((user, password)) = &credentials.user {
            // etcd's tokens expire (5 min by default): each call whose token did is sent again
            // with a new one.
            options = options
                .with_user(user.as_str(), password.as_str())
                .with_auto_token_refresh(true);
        }
        let client = timed(Client::connect(&endpoints, Some(options))).await?;
        Ok(Self {
            client,
            keys,
            endpoints,
            fencing: Mutex::new(Fencing::Unfenced),
            members: Mutex::new(BTreeMap::new()),
        })
    }

    /// The key layout.
    pub fn keys(&self) -> &FleetKeys {
        &self.keys
    }

    /// The etcd endpoints.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// A client for calls of one's own (the election).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Sets how writes are fenced: on winning an election, on losing it.
    pub fn set_fencing(&self, fencing: Fencing) {
        *self.fencing.lock().unwrap_or_else(|p| p.into_inner()) = fencing;
    }

    /// How writes are fenced now.
    pub fn fencing(&self) -> Fencing {
        self.fencing.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The compares of a fenced write: refused at once when this replica follows.
    fn fenced(&self) -> Result<(Vec<Compare>, Option<Fence>), FleetError> {
        Self::compares(self.fencing())
    }

    /// The compares of a write fenced by `fencing`.
    fn compares(fencing: Fencing) -> Result<(Vec<Compare>, Option<Fence>), FleetError> {
        match fencing {
            Fencing::Unfenced => Ok((Vec::new(), None)),
            Fencing::Follower => Err(FleetError::NotLeader),
            Fencing::Leader(fence) => Ok((
                vec![Compare::create_revision(
                    fence.key.as_str(),
                    CompareOp::Equal,
                    fence.revision,
                )],
                Some(fence),
            )),
        }
    }

    /// A group's table, `None` when the group has none yet.
    pub async fn table(&self, group: &GroupName) -> Result<Option<Table>, FleetError> {
        let key = &self.keys.table(group);
        let answer = unary(&self.client, |mut c| async move { c.get(key.as_str(), None).await }).await?;
        answer.kvs().first().map(table_of).transpose()
    }

    /// Writes `routes` as `group`'s table, validated first; returns the revision written at.
    /// `expect` guards a read-modify-write; `fenced` makes the write fail unless this replica
    /// leads (every write of the control loop's rollouts is fenced; an operator's
    /// `fleet apply` is not).
    pub async fn write_table(
        &self,
        group: &GroupName,
        routes: &[RouteSpec],
        expect: Expect,
        fenced: bool,
    ) -> Result<i64, FleetError> {
        let key = &self.keys.table(group);
        let now = unary(&self.client, |mut c| async move { c.get(key.as_str(), None).await }).await?;
        let current = now.kvs().first().map(table_of).transpose()?;
        let (mut compares, fence) = if fenced { self.fenced()? } else { (Vec::new(), None) };
        let mod_revision = match expect {
            Expect::Revision(r) => r,
            Expect::Any => current.as_ref().map_or(0, |t| t.revision),
        };
        compares.push(Compare::mod_revision(key.as_str(), CompareOp::Equal, mod_revision));
        let document = RoutesDocument {
            version: current.as_ref().map_or(1, |t| t.version + 1),
            instance: None,
            routes: routes.to_vec(),
        };
        let text = serde_json::to_string(&document).expect("a routes document serializes");
        load_routes(&text, Format::Json, 0).map_err(FleetError::Invalid)?;
        let mut otherwise = vec![TxnOp::get(key.as_str(), None)];
        if let Some(f) = &fence {
            otherwise.push(TxnOp::get(f.key.as_str(), None));
        }
        let txn = Txn::new()
            .when(compares)
            .and_then([TxnOp::put(key.as_str(), text, None)])
            .or_else(otherwise);
        let txn = &txn;
        let answer = unary(&self.client, |mut c| async move { c.txn(txn.clone()).await }).await?;
        if answer.succeeded() {
            return Ok(answer.header().map_or(0, |h| h.revision()));
        }
        let gets = gets(&answer);
        if let Some(f) = &fence
            && gets.get(1).and_then(|kv| kv.as_ref()).map(KeyValue::create_revision) != Some(f.revision)
        {
            return Err(FleetError::NotLeader);
        }
        let now = gets
            .first()
            .and_then(|kv| kv.as_ref())
            .map_or(0, KeyValue::mod_revision);
        Err(FleetError::Conflict { now })
    }

    /// The proxies registered in `group`, followed by a watch from the first call on; the
    /// receiver sees every change (a join, a table served, a lease expired).
    pub fn members(&self, group: &GroupName) -> watch::Receiver<Members> {
        let mut groups = self.members.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rx) = groups.get(group) {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(Members::default());
        groups.insert(group.clone(), rx.clone());
        let (client, keys, group) = (self.client.clone(), self.keys.clone(), group.clone());
        tokio::spawn(async move {
            let mut backoff = FIRST_BACKOFF;
            loop {
                let followed = follow(client.clone(), &keys, &group, &tx).await;
                let Err(e) = followed;
                if tx.borrow().error.is_none() {
                    tracing::warn!(%group, "cannot follow the group's proxies in etcd, retrying: {e}");
                }
                tx.send_modify(|m| m.error = Some(e.to_string()));
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        });
        rx
    }

    /// One read of `group`: its table and every registered proxy, with each lease's last
    /// renewal.
    pub async fn group_view(&self, group: &GroupName, now_ms: u64) -> Result<GroupView, FleetError> {
        let table = self.table(group).await?;
        let prefix = &self.keys.proxies(group);
        let answer = unary(&self.client, |mut c| async move {
            c.get(prefix.as_str(), Some(GetOptions::new().with_prefix())).await
        })
        .await?;
        let mut proxies = Vec::new();
        for kv in answer.kvs() {
            let Some(member) = member_of(kv) else { continue };
            let lease = member.lease;
            let heartbeat = match unary(
                &self.client,
                |mut c| async move { c.lease_time_to_live(lease, None).await },
            )
            .await
            {
                Ok(ttl) if ttl.ttl() >= 0 => {
                    let since = u64::try_from(ttl.granted_ttl().saturating_sub(ttl.ttl())).unwrap_or(0);
                    Some(now_ms.saturating_sub(since * 1000))
                }
                _ => None,
            };
            let r = member.registration;
            let revision = table.as_ref().map(|t| t.revision);
            let current = revision.is_some() && r.table_revision >= revision;
            proxies.push(ProxyView {
                lag_revisions: match (revision, r.table_revision) {
                    _ if current => 0,
                    (Some(now), Some(served)) => now - served,
                    (Some(now), None) => now,
                    (None, _) => 0,
                },
                current,
                id: r.id,
                admin_url: r.admin_url,
                version: r.version,
                table_revision: r.table_revision,
                last_heartbeat: heartbeat,
                started_at: r.started_at,
                refused: r.refused,
            });
        }
        Ok(GroupView {
            group: group.clone(),
            version: table.as_ref().map(|t| t.version),
            table_revision: table.as_ref().map(|t| t.revision),
            proxies,
        })
    }

    /// Stores a rollout's state, fenced by `fencing`: the fence of the term that holds the
    /// state, not whichever term this replica is in when the write goes out, so that a write
    /// left over from a term that ended never lands in the next.
    pub async fn put_rollout(&self, fencing: &Fencing, name: &str, bytes: Vec<u8>) -> Result<(), FleetError> {
        self.fenced_op(fencing, TxnOp::put(self.keys.rollout(name), bytes, None))
            .await
    }

    /// Removes a rollout's state, fenced by `fencing` as [`Self::put_rollout`] is.
    pub async fn delete_rollout(&self, fencing: &Fencing, name: &str) -> Result<(), FleetError> {
        self.fenced_op(fencing, TxnOp::delete(self.keys.rollout(name), None))
            .await
    }

    async fn fenced_op(&self, fencing: &Fencing, op: TxnOp) -> Result<(), FleetError> {
        let (compares, _) = Self::compares(fencing.clone())?;
        if compares.is_empty() {
            let op = &op;
            unary(&self.client, |mut c| async move {
                c.txn(Txn::new().and_then([op.clone()])).await
            })
            .await?;
            return Ok(());
        }
        let txn = &Txn::new().when(compares).and_then([op]);
        let answer = unary(&self.client, |mut c| async move { c.txn(txn.clone()).await }).await?;
        if answer.succeeded() {
            Ok(())
        } else {
            Err(FleetError::NotLeader)
        }
    }

    /// Every stored rollout: (name, bytes).
    pub async fn rollouts(&self) -> Result<Vec<(String, Vec<u8>)>, FleetError> {
        let prefix = &self.keys.rollouts();
        let answer = unary(&self.client, |mut c| async move {
            c.get(prefix.as_str(), Some(GetOptions::new().with_prefix())).await
        })
        .await?;
        Ok(answer
            .kvs()
            .iter()
            .filter_map(|kv| {
                let name = kv.key_str().ok()?.strip_prefix(prefix.as_str())?.to_owned();
                Some((name, kv.value().to_vec()))
            })
            .collect())
    }
}

/// Follows `group`'s registrations until etcd fails: one read, then a watch from its revision.
async fn follow(
    client: Client,
    keys: &FleetKeys,
    group: &GroupName,
    tx: &watch::Sender<Members>,
) -> Result<std::convert::Infallible, FleetError> {
    let prefix = &keys.proxies(group);
    let answer = unary(&client, |mut c| async move {
        c.get(prefix.as_str(), Some(GetOptions::new().with_prefix())).await
    })
    .await?;
    let revision = answer.header().map_or(0, |h| h.revision());
    let by_id = answer
        .kvs()
        .iter()
        .filter_map(member_of)
        .map(|m| (m.registration.id.clone(), m))
        .collect();
    tx.send_replace(Members {
        by_id: Arc::new(by_id),
        revision,
        error: None,
    });
    let options = &WatchOptions::new().with_prefix().with_start_revision(revision + 1);
    let mut stream = unary(&client, |mut c| async move {
        c.watch(prefix.as_str(), Some(options.clone())).await
    })
    .await?;
    loop {
        let response = stream
            .message()
            .await
            .map_err(|e| FleetError::Etcd(super::etcd_sentence(&e)))?
            .ok_or_else(|| FleetError::Etcd("etcd closed the watch".to_owned()))?;
        if response.compact_revision() > 0 || response.canceled() {
            // Read again from scratch.
            return Err(FleetError::Etcd(format!(
                "the watch was cancelled ({})",
                response.cancel_reason()
            )));
        }
        // In place: the map is copied only if a reader holds it right now.
        tx.send_modify(|members| {
            let by_id = Arc::make_mut(&mut members.by_id);
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                members.revision = members.revision.max(kv.mod_revision());
                match event.event_type() {
                    EventType::Put => {
                        if let Some(m) = member_of(kv) {
                            by_id.insert(m.registration.id.clone(), m);
                        }
                    }
                    EventType::Delete => {
                        let key = kv.key_str().unwrap_or_default();
                        if let Some(id) = key.strip_prefix(prefix.as_str()) {
                            by_id.remove(&InstanceId::from(id));
                        }
                    }
                }
            }
            if let Some(h) = response.header() {
                members.revision = members.revision.max(h.revision());
            }
        });
    }
}

/// A registration in etcd; one that does not read is skipped (logged).
fn member_of(kv: &KeyValue) -> Option<Member> {
    match serde_json::from_slice::<Registration>(kv.value()) {
        Ok(registration) => Some(Member {
            registration,
            lease: kv.lease(),
        }),
        Err(e) => {
            tracing::warn!(key = %kv.key_str().unwrap_or("?"), "a proxy registration in etcd does not read, so it is skipped: {e}");
            None
        }
    }
}

/// A group's table from its key.
fn table_of(kv: &KeyValue) -> Result<Table, FleetError> {
    let text = String::from_utf8_lossy(kv.value());
    let format = Format::sniff(&text);
    // Switchyard writes the version; a table put by hand (etcdctl) may have none.
    let (routes, version) = match RoutesDocument::read(&text, format) {
        Ok(doc) => (doc.routes, doc.version),
        Err(_) => (
            load_routes(&text, format, 0)
                .map_err(FleetError::Invalid)?
                .spec()
                .to_vec(),
            0,
        ),
    };
    Ok(Table {
        routes,
        version,
        revision: kv.mod_revision(),
    })
}

/// The key-values of a transaction's gets, in order.
fn gets(answer: &TxnResponse) -> Vec<Option<KeyValue>> {
    answer
        .op_responses()
        .into_iter()
        .filter_map(|op| match op {
            TxnOpResponse::Get(get) => Some(get.kvs().first().cloned()),
            _ => None,
        })
        .collect()
}

/// A unary etcd call, bounded by [`CALL_TIMEOUT`] per attempt and tried again (up to
/// [`UNREACHED_RETRIES`] times, 25 ms apart and doubling) when it never reached a member: the
/// client balances calls over every endpoint and keeps routing some to a member that is down,
/// so one call in a few fails at once while the others answer. A read is safe to send again,
/// and so is every write here (guarded transactions, or the same put again).
pub(crate) async fn unary<T, F, Fut>(client: &Client, mut call: F) -> Result<T, FleetError>
where
    F: FnMut(Client) -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let mut delay = Duration::from_millis(25);
    for _ in 0..UNREACHED_RETRIES {
        match tokio::time::timeout(CALL_TIMEOUT, call(client.clone())).await {
            Ok(Err(e)) if unreached(&e) => {}
            Ok(answer) => return answer.map_err(|e| FleetError::Etcd(super::etcd_sentence(&e))),
            Err(_) => return Err(FleetError::Etcd(format!("etcd did not answer within {CALL_TIMEOUT:?}"))),
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
    timed(call(client.clone())).await
}

/// Whether an etcd call failed before any member took it (a refused connection, a member
/// without a leader): then another member may well answer it.
fn unreached(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(status) => status.code() == tonic::Code::Unavailable,
        _ => false,
    }
}

/// An etcd call bounded by [`CALL_TIMEOUT`].
pub(crate) async fn timed<T>(call: impl Future<Output = Result<T, etcd_client::Error>>) -> Result<T, FleetError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(answer) => answer.map_err(|e| FleetError::Etcd(super::etcd_sentence(&e))),
        Err(_) => Err(FleetError::Etcd(format!("etcd did not answer within {CALL_TIMEOUT:?}"))),
    }
}
