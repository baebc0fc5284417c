//! A proxy in a group (feature `fleet`): the group's table lives in etcd, and every proxy of the
//! group serves it. The proxy registers under a lease, adopts the group's table (or creates it
//! from its own routes when the group has none: the first proxy wins), watches the table key
//! and publishes each new version through [`Publisher::publish`], the one table writer.
//!
//! etcd being down is not an outage: the proxy keeps serving the last table it published,
//! retries with backoff, and when etcd answers again it resumes its watch where it left off (or
//! re-reads the table when that revision was compacted) and registers again under a new lease.
//! Starting never waits for etcd: the proxy serves its file's routes until it has joined.
//!
//! Once in a group, etcd's table is the one truth: a config file edit or a `PUT /routes` is
//! published locally, and the next version of the group's table replaces it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, Identity, KeyValue, PutOptions, TlsOptions,
    Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use switchyard_config::etcd_access::EtcdCredentials;
use switchyard_config::fleet::{FleetKeys, GroupName, Refusal, Registration};
use switchyard_config::{Format, InstanceId, RoutesDocument, load_routes};
use tokio::sync::watch as signal;
use tokio::task::JoinHandle;

use crate::publish::{NewRoutes, PublishError, Publisher};

/// The lease TTL when none is given.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
/// How long one etcd call may take before the proxy counts etcd as unreachable.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// The first retry's delay; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How a proxy joins a group (`--etcd`, `--group`, `--advertise`, `--etcd-prefix`, and the
/// etcd access flags).
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// etcd client URLs (`http://HOST:PORT`).
    pub endpoints: Vec<String>,
    /// The group to join.
    pub group: GroupName,
    /// Where the group's keys live.
    pub keys: FleetKeys,
    /// The admin URL others reach this proxy at; `None`: `http://` and the bound admin address.
    pub advertise: Option<String>,
    /// The registration's lease TTL (whole seconds; at least 1 s).
    pub lease_ttl: Duration,
    /// TLS and an etcd user, when the cluster asks for them (`--etcd-ca` and the rest).
    pub credentials: EtcdCredentials,
}

impl FleetOptions {
    /// Joins `group` through `endpoints`, under the default prefix and lease TTL.
    pub fn new(endpoints: Vec<String>, group: GroupName) -> Self {
        Self {
            endpoints,
            group,
            keys: FleetKeys::default(),
            advertise: None,
            lease_ttl: DEFAULT_LEASE_TTL,
            credentials: EtcdCredentials::default(),
        }
    }
}

/// Why a session with etcd ended; every one is retried.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("{}", sentence(.0))]
    Etcd(#[from] etcd_client::Error),
    #[error("etcd did not answer within {CALL_TIMEOUT:?}")]
    Timeout,
    #[error("the lease expired")]
    LeaseExpired,
    #[error("etcd closed the {0} stream")]
    Closed(&'static str),
    #[error("revision {0} was compacted; reading the table again")]
    Compacted(i64),
    #[error("etcd cancelled the watch: {0}")]
    Cancelled(String),
}

/// What the proxy knows of the group between sessions.
#[derive(Debug)]
struct Member {
    options: FleetOptions,
    publisher: Arc<Publisher>,
    registration: Registration,
    /// The last revision of the table key the proxy has seen (applied or refused); the watch
    /// resumes after it.
    seen: Option<i64>,
}

/// Starts joining the group in the background; the task ends when `stop` turns true.
pub fn spawn(
    options: FleetOptions,
    publisher: Arc<Publisher>,
    instance: InstanceId,
    admin_url: String,
    stop: signal::Receiver<bool>,
) -> JoinHandle<()> {
    let started_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let registration = Registration {
        id: instance,
        admin_url: options.advertise.clone().unwrap_or(admin_url),
        version: publisher.load().table.version(),
        table_revision: None,
        refused: None,
        started_at,
    };
    let member = Member {
        options,
        publisher,
        registration,
        seen: None,
    };
    tokio::spawn(member.run(stop))
}

impl Member {
    async fn run(mut self, mut stop: signal::Receiver<bool>) {
        let mut backoff = FIRST_BACKOFF;
        // Logged once per change between joined and failing, not once per retry.
        let mut failing = false;
        loop {
            let joined = &mut false;
            let Err(outcome) = tokio::select! {
                () = crate::until_stopped(&mut stop) => return,
                outcome = self.session(joined) => outcome,
            };
            if *joined {
                backoff = FIRST_BACKOFF;
            }
            let SessionError::Compacted(_) = &outcome else {
                let cause = outcome.to_string();
                if !failing || *joined {
                    tracing::warn!(
                        "lost etcd at {} ({cause}): serving the table in force (version {}) and retrying; \
                         check that etcd is running and reachable",
                        self.options.endpoints.join(","),
                        self.publisher.load().table.version()
                    );
                } else {
                    tracing::debug!(error = %cause, "etcd still unreachable");
                }
                failing = true;
                tokio::select! {
                    () = crate::until_stopped(&mut stop) => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            };
            tracing::info!("{outcome}");
        }
    }

    /// One connection's life: register, read or resume, then follow the table until something
    /// fails. `joined` turns true once registered.
    async fn session(&mut self, joined: &mut bool) -> Result<Infallible, SessionError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(CALL_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), CALL_TIMEOUT)
            .with_keep_alive_while_idle(true);
        let credentials = &self.options.credentials;
        if let Some(ca) = &credentials.ca {
            let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(ca));
            if let Some((cert, key)) = &credentials.identity {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            options = options.with_tls(tls);
        }
        if let Some((user, password)) = &credentials.user {
            // etcd's tokens expire (5 min by default): a call whose token did is sent again
            // with a new one.
            options = options
                .with_user(user.as_str(), password.as_str())
                .with_auto_token_refresh(true);
        }
        let mut client = timed(Client::connect(&self.options.endpoints, Some(options))).await?;
        // etcd counts whole seconds; less than 1 s is taken as 1 s.
        let ttl_secs = self.options.lease_ttl.as_secs().max(1);
        let ttl = i64::try_from(ttl_secs).unwrap_or(i64::MAX);
        let lease = unary(&client, |mut c| async move { c.lease_grant(ttl, None).await })
            .await?
            .id();
        let (mut keeper, mut keepalives) =
            unary(&client, |mut c| async move { c.lease_keep_alive(lease).await }).await?;

        let table_key = self.options.keys.table(&self.options.group);
        let from = match self.seen {
            Some(seen) => seen + 1,
            None => {
                let (kv, revision) = self.read_or_create(&mut client, &table_key).await?;
                self.apply(&kv).await;
                revision + 1
            }
        };
        self.register(&mut client, lease).await?;
        let (key, options) = (&table_key, &WatchOptions::new().with_start_revision(from));
        let mut watch = unary(&client, |mut c| async move {
            c.watch(key.as_str(), Some(options.clone())).await
        })
        .await?;
        if !*joined {
            tracing::info!(
                group = %self.options.group,
                lease,
                table_revision = ?self.registration.table_revision,
                "joined the group on etcd"
            );
        }
        *joined = true;

        // Three keep-alives per TTL: one lost to a slow member does not let the lease lapse.
        let mut tick = tokio::time::interval(Duration::from_secs(ttl_secs) / 3);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let answer = match renew(&mut keeper, &mut keepalives).await {
                        Ok(answer) => answer,
                        // The stream was on a member that went away: one on the members that
                        // remain, and the renewal sent again, before the session is given up.
                        Err(e) => {
                            tracing::debug!("renewing the registration's lease on another stream: {e}");
                            (keeper, keepalives) =
                                unary(&client, |mut c| async move { c.lease_keep_alive(lease).await }).await?;
                            renew(&mut keeper, &mut keepalives).await?
                        }
                    };
                    if answer.ttl() <= 0 {
                        return Err(SessionError::LeaseExpired);
                    }
                    // A file edit or PUT /routes changed the version served: say so.
                    if self.registration.version != self.publisher.load().table.version() {
                        self.register(&mut client, lease).await?;
                    }
                }
                message = watch.message() => {
                    let response = message?.ok_or(SessionError::Closed("watch"))?;
                    if response.compact_revision() > 0 {
                        self.seen = None;
                        return Err(SessionError::Compacted(response.compact_revision()));
                    }
                    if response.canceled() {
                        return Err(SessionError::Cancelled(response.cancel_reason().to_owned()));
                    }
                    let mut changed = false;
                    for event in response.events() {
                        let Some(kv) = event.kv() else { continue };
                        match event.event_type() {
                            EventType::Put => {
                                self.apply(kv).await;
                                changed = true;
                            }
                            EventType::Delete => {
                                self.seen = Some(kv.mod_revision());
                                tracing::warn!(
                                    key = %table_key,
                                    "the group's table was deleted from etcd; serving the table in force"
                                );
                            }
                        }
                    }
                    if changed {
                        self.register(&mut client, lease).await?;
                    }
                }
            }
        }
    }

    /// The group's table and the revision it was read at; when the group has none, the proxy's
    /// own routes become it, unless another proxy's are written first.
    async fn read_or_create(&self, client: &mut Client, key: &str) -> Result<(KeyValue, i64), SessionError> {
        let snapshot = self.publisher.load_full();
        let document = RoutesDocument {
            version: 1,
            instance: Some(self.registration.id.clone()),
            routes: snapshot.table.spec().to_vec(),
        };
        let text = serde_json::to_string(&document).expect("a routes document serializes");
        let txn = Txn::new()
            .when([Compare::version(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, text, None), TxnOp::get(key, None)])
            .or_else([TxnOp::get(key, None)]);
        let txn = &txn;
        let answer = unary(client, |mut c| async move { c.txn(txn.clone()).await }).await?;
        if answer.succeeded() {
            tracing::info!(group = %self.options.group, "the group had no table: created it from this proxy's routes");
        }
        let revision = answer.header().map_or(0, |h| h.revision());
        let kv = answer
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Get(get) => get.kvs().first().cloned(),
                _ => None,
            })
            .ok_or(SessionError::Closed("transaction"))?;
        Ok((kv, revision))
    }

    /// Publishes the table in `kv` unless it is the one in force; an invalid one is refused and
    /// the table in force stays.
    async fn apply(&mut self, kv: &KeyValue) {
        let revision = kv.mod_revision();
        self.seen = Some(self.seen.map_or(revision, |s| s.max(revision)));
        let text = String::from_utf8_lossy(kv.value());
        // Proxies write JSON; YAML is accepted too, for a table an operator put with etcdctl.
        let format = Format::sniff(&text);
        let in_force = self.publisher.load_full();
        let same = load_routes(&text, format, 0).is_ok_and(|t| t.spec() == in_force.table.spec());
        let published = if same {
            Ok(in_force.table.version())
        } else {
            self.publisher.publish(NewRoutes::Document(&text, format), None).await
        };
        match published {
            Ok(version) => {
                if !same {
                    tracing::info!(version, revision, group = %self.options.group, "published the group's table");
                }
                self.registration.table_revision = Some(revision);
                self.registration.refused = None;
            }
            Err(PublishError::Invalid(errors)) => {
                tracing::error!(
                    revision,
                    group = %self.options.group,
                    "refused the group's table at revision {revision}, the table in force stays: {errors}"
                );
                self.registration.refused = Some(Refusal {
                    revision,
                    errors: errors.0,
                });
            }
            Err(e) => {
                tracing::error!(
                    revision,
                    "the group's table at revision {revision} was not published: {e}"
                );
            }
        }
    }

    /// Writes this proxy's registration under `lease`.
    async fn register(&mut self, client: &mut Client, lease: i64) -> Result<(), SessionError> {
        self.registration.version = self.publisher.load().table.version();
        let key = self.options.keys.proxy(&self.options.group, &self.registration.id);
        let value = serde_json::to_string(&self.registration).expect("a registration serializes");
        let (key, value) = (&key, &value);
        unary(client, |mut c| async move {
            c.put(key.as_str(), value.as_str(), Some(PutOptions::new().with_lease(lease)))
                .await
        })
        .await?;
        Ok(())
    }
}

/// What went wrong with an etcd call, for a person: the client's message and its root cause
/// (`tcp connect error: Connection refused (os error 111)`), not a dump of nested errors.
fn sentence(e: &etcd_client::Error) -> String {
    let message = match e {
        etcd_client::Error::GRpcStatus(status) => status.message().to_owned(),
        other => other.to_string(),
    };
    // The cause a person can act on is the socket's (`Connection refused`), deep in the chain.
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return format!("{message}: {io}");
        }
        source = cause.source();
    }
    message
}

/// An etcd call bounded by [`CALL_TIMEOUT`].
/// Sends one keep-alive on the stream and reads its answer.
async fn renew(
    keeper: &mut etcd_client::LeaseKeeper,
    answers: &mut etcd_client::LeaseKeepAliveStream,
) -> Result<etcd_client::LeaseKeepAliveResponse, SessionError> {
    timed(keeper.keep_alive()).await?;
    timed(answers.message())
        .await?
        .ok_or(SessionError::Closed("lease keep-alive"))
}

/// How many times [`unary`] sends a call again that reached no member.
const UNREACHED_RETRIES: u32 = 4;

/// An etcd call, bounded by [`CALL_TIMEOUT`] per attempt and sent again (up to
/// [`UNREACHED_RETRIES`] times, 25 ms apart and doubling) when it reached no member: the
/// client balances calls over every endpoint and keeps handing some to a member that is down
/// while the others answer, and a session given up for each of those would keep a proxy out of
/// its group for as long as one member is down. Every call sent this way is safe to send again:
/// a lease grant (an extra lease expires unused), the same put, a guarded transaction, a new
/// stream.
async fn unary<T, Fut>(client: &Client, mut call: impl FnMut(Client) -> Fut) -> Result<T, SessionError>
where
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let mut delay = Duration::from_millis(25);
    for _ in 0..UNREACHED_RETRIES {
        match tokio::time::timeout(CALL_TIMEOUT, call(client.clone())).await {
            Ok(Err(e)) if unreached(&e) => {}
            Ok(answer) => return Ok(answer?),
            Err(_) => return Err(SessionError::Timeout),
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
    timed(call(client.clone())).await
}

/// Whether a call failed before any member took it (a refused connection, a member without a
/// leader), so that another member may well answer it.
fn unreached(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(status) => status.code() == tonic::Code::Unavailable,
        _ => false,
    }
}

async fn timed<T>(call: impl Future<Output = Result<T, etcd_client::Error>>) -> Result<T, SessionError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(answer) => Ok(answer?),
        Err(_) => Err(SessionError::Timeout),
    }
}
