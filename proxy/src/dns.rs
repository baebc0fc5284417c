//! The resolver stage: endpoints written with a host name (`app.svc:8080`) get their addresses
//! here, off the request path. At start, whenever a table names a host not seen before, and every
//! `dns.refresh` after a round ends, each name is looked up (all at once, each within
//! `dns.timeout`); when the address set of a name changes, the [`Publisher`] compiles the table in
//! force again with every address an endpoint of its own (see
//! [`switchyard_config::table::expand`] for how weight is shared and what sticky keys do) and
//! swaps it in at the same version. A request never waits for a lookup: it decides on the
//! snapshot in force, whose endpoints are addresses.
//!
//! A name whose lookup fails keeps the addresses of its last answer; the failure is logged (when
//! failures begin or their cause changes), in `GET /stats` (`dns`) and on `/metrics`
//! (`switchyard_dns_addresses`, `switchyard_dns_failures_total`). A name that has never resolved
//! stays one endpoint as written, which the upstream clients refuse to look up themselves
//! ([`socket_address`], [`NoLookup`]): its requests fail with 502 against their track until the
//! name resolves.
//!
//! Lookups go through a [`Resolve`]; the proxy's is [`System`], the system resolver (so
//! `/etc/hosts`, `nsswitch.conf` and the search domains of `resolv.conf` apply, as for every other
//! program on the host, Kubernetes' cluster names included). Tests give their own.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::uri::Authority;
use hyper_util::client::legacy::connect::dns::Name;
use switchyard_config::schema::{AddressFamily, DnsSpec};
use switchyard_config::stats::NameStatus;
use switchyard_config::table::host_names;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::publish::Publisher;

/// One lookup in progress: the addresses of a host, in any order.
pub type Lookup = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;

/// Looks host names up.
pub trait Resolve: Send + Sync + 'static {
    /// Starts looking `host` up. The stage bounds the time it takes (`dns.timeout`).
    fn lookup(&self, host: &str) -> Lookup;
}

/// The system resolver (`getaddrinfo` on a blocking thread, through tokio's `lookup_host`). A
/// lookup that outlives `dns.timeout` is abandoned, and its thread freed when the system gives
/// up on it (glibc: `resolv.conf`'s `timeout` × `attempts` per server).
#[derive(Debug, Clone, Copy, Default)]
pub struct System;

impl Resolve for System {
    fn lookup(&self, host: &str) -> Lookup {
        let host = host.to_owned();
        Box::pin(async move {
            let addresses = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addresses.map(|a| a.ip()).collect())
        })
    }
}

/// The addresses of every name that has resolved, by name, each list in address order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Addresses(BTreeMap<Box<str>, Box<[IpAddr]>>);

impl Addresses {
    /// The addresses of `host`; `None` if it has never resolved.
    pub fn get(&self, host: &str) -> Option<&[IpAddr]> {
        self.0.get(host).map(|a| &**a)
    }
}

/// Why a lookup gave no address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// The resolver answered with an error (the name does not exist, no server answered...).
    #[error("the lookup failed: {0}")]
    Failed(String),
    /// No answer within `dns.timeout`.
    #[error("no answer within {}", humantime::format_duration(*.0))]
    TimedOut(Duration),
    /// The answer has no address of the family `dns.family` takes.
    #[error("the answer has no address that dns.family ({0}) takes")]
    NoAddress(&'static str),
}

/// The addresses of `answer` that `family` takes, in address order, each once.
pub fn select(family: AddressFamily, answer: &[IpAddr]) -> Result<Vec<IpAddr>, LookupError> {
    let (v4, v6): (Vec<IpAddr>, Vec<IpAddr>) = answer.iter().partition(|ip| ip.is_ipv4());
    let mut chosen = match family {
        AddressFamily::V4Preferred if v4.is_empty() => v6,
        AddressFamily::V4Preferred | AddressFamily::V4 => v4,
        AddressFamily::V6 => v6,
        AddressFamily::All => answer.to_vec(),
    };
    chosen.sort_unstable();
    chosen.dedup();
    if chosen.is_empty() {
        let name = match family {
            AddressFamily::V4Preferred => "v4Preferred",
            AddressFamily::All => "all",
            AddressFamily::V4 => "v4",
            AddressFamily::V6 => "v6",
        };
        return Err(LookupError::NoAddress(name));
    }
    Ok(chosen)
}

/// What the stage knows of one name.
#[derive(Debug, Clone, Default)]
struct NameState {
    /// Of the last answer; empty until the first.
    addresses: Box<[IpAddr]>,
    resolved_at: Option<SystemTime>,
    /// The last lookup's error, while lookups fail.
    error: Option<LookupError>,
    failing_since: Option<SystemTime>,
    failures: u64,
}

/// Every name the table in force uses and how it resolves: written by the stage, read by the
/// admin API. The lock is never held across an await.
#[derive(Debug, Default)]
pub struct Names {
    names: Mutex<BTreeMap<Box<str>, NameState>>,
}

impl Names {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Box<str>, NameState>> {
        self.names.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes note of a lookup of `host` that finished at `now` with `answer` (addresses already
    /// [`select`]ed). A failure keeps the last addresses. Returns whether the addresses changed.
    pub fn record(&self, host: &str, answer: Result<Vec<IpAddr>, LookupError>, now: SystemTime) -> bool {
        let mut names = self.lock();
        let state = names.entry(host.into()).or_default();
        match answer {
            Ok(addresses) => {
                let changed = *state.addresses != *addresses;
                if state.error.is_some() && !state.addresses.is_empty() {
                    tracing::info!("{host} resolves again, to {}.", list(&addresses));
                } else if changed {
                    tracing::info!("{host} resolves to {}.", list(&addresses));
                }
                *state = NameState {
                    addresses: addresses.into(),
                    resolved_at: Some(now),
                    error: None,
                    failing_since: None,
                    failures: state.failures,
                };
                changed
            }
            Err(e) => {
                state.failures += 1;
                state.failing_since.get_or_insert(now);
                if state.error.as_ref() != Some(&e) {
                    if state.addresses.is_empty() {
                        tracing::warn!(
                            "Cannot resolve {host}: {e}. It has never resolved, so requests to its endpoints \
                             fail with 502 until it does; it is looked up again every refresh."
                        );
                    } else {
                        tracing::warn!(
                            "Cannot resolve {host}: {e}. Its endpoints keep its last addresses ({}) until a \
                             lookup answers.",
                            list(&state.addresses)
                        );
                    }
                }
                state.error = Some(e);
                false
            }
        }
    }

    /// Forgets the names not in `hosts` (the table in force no longer uses them).
    pub fn retain(&self, hosts: &BTreeSet<&str>) {
        self.lock().retain(|name, _| hosts.contains(&**name));
    }

    /// Whether `host` has been looked up (whatever the outcome).
    pub fn knows(&self, host: &str) -> bool {
        self.lock().contains_key(host)
    }

    /// The addresses of every name that has resolved.
    pub fn addresses(&self) -> Addresses {
        Addresses(
            self.lock()
                .iter()
                .filter(|(_, s)| !s.addresses.is_empty())
                .map(|(name, s)| (name.clone(), s.addresses.clone()))
                .collect(),
        )
    }

    /// Every name's status, for `GET /stats` and `/metrics`.
    pub fn report(&self) -> BTreeMap<String, NameStatus> {
        self.lock()
            .iter()
            .map(|(name, s)| {
                let status = NameStatus {
                    addresses: s.addresses.to_vec(),
                    resolved_at: s.resolved_at.map(unix_ms),
                    error: s.error.as_ref().map(ToString::to_string),
                    failing_since: s.failing_since.map(unix_ms),
                    failures: s.failures,
                };
                (name.to_string(), status)
            })
            .collect()
    }
}

fn list(addresses: &[IpAddr]) -> String {
    addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The resolver stage: looks the table's names up and hands their addresses to the publisher.
pub struct Resolver {
    names: Arc<Names>,
    resolve: Arc<dyn Resolve>,
    spec: DnsSpec,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

/// Which names a round looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// Every name of the table in force (at start and every refresh).
    All,
    /// Only names not looked up before (when a table is published).
    New,
}

impl Resolver {
    /// A stage that looks names up with `resolve` as `spec` says, and keeps what it learns in
    /// `names`.
    pub fn new(resolve: Arc<dyn Resolve>, spec: DnsSpec, names: Arc<Names>) -> Self {
        Self { names, resolve, spec }
    }

    /// Looks up every name of the table in force once and serves their addresses: what a proxy
    /// does before it serves, so that its first requests already go to addresses. Takes at most
    /// `dns.timeout`; nothing when the table names no host.
    pub async fn first(&self, publisher: &Publisher) {
        self.round(publisher, Round::All).await;
    }

    /// Runs the stage until `stop` turns true: a round `dns.refresh` after the last one ended,
    /// and one for the new names whenever a table is published. A round in progress at stop is
    /// abandoned.
    pub fn spawn(self, publisher: Arc<Publisher>, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
        let mut tables = publisher.subscribe();
        // A table published since the first round has its new names looked up at once.
        tables.mark_changed();
        tokio::spawn(async move {
            tokio::select! {
                () = crate::until_stopped(&mut stop) => {}
                () = self.run(&publisher, tables) => {}
            }
        })
    }

    async fn run(&self, publisher: &Publisher, mut tables: watch::Receiver<u64>) {
        let mut due = Instant::now() + self.spec.refresh;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(due) => {
                    self.round(publisher, Round::All).await;
                    due = Instant::now() + self.spec.refresh;
                }
                changed = tables.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    self.round(publisher, Round::New).await;
                }
            }
        }
    }

    /// Looks up the names `which` selects, all at once, and has the publisher serve the new
    /// addresses if any name's changed.
    async fn round(&self, publisher: &Publisher, which: Round) {
        let hosts: Vec<String> = {
            let snapshot = publisher.load();
            let hosts = host_names(snapshot.table.spec());
            self.names.retain(&hosts);
            hosts
                .into_iter()
                .filter(|h| which == Round::All || !self.names.knows(h))
                .map(str::to_owned)
                .collect()
        };
        if hosts.is_empty() {
            return;
        }
        let mut lookups = JoinSet::new();
        for host in hosts {
            let lookup = self.resolve.lookup(&host);
            let (timeout, family) = (self.spec.timeout, self.spec.family);
            lookups.spawn(async move {
                let answer = match tokio::time::timeout(timeout, lookup).await {
                    Ok(Ok(answer)) => select(family, &answer),
                    Ok(Err(e)) => Err(LookupError::Failed(e.to_string())),
                    Err(_) => Err(LookupError::TimedOut(timeout)),
                };
                (host, answer)
            });
        }
        let mut changed = false;
        while let Some(joined) = lookups.join_next().await {
            match joined {
                Ok((host, answer)) => changed |= self.names.record(&host, answer, SystemTime::now()),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => {}
            }
        }
        if changed {
            publisher.use_addresses(self.names.addresses()).await;
        }
    }
}

/// The address of an endpoint, which the snapshot gives as `IP:PORT` once its name resolved;
/// `None` for a name that has not (the upstream client then fails the request rather than look
/// the name up on the request path).
pub fn socket_address(authority: &Authority) -> Option<SocketAddr> {
    authority.as_str().parse().ok()
}

/// The h2c client's resolver: endpoints are connected to by address, so a name that reaches the
/// connector has not resolved yet, and fails at once rather than wait for a lookup.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLookup;

impl tower::Service<Name> for NoLookup {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = std::future::Ready<io::Result<Self::Response>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        std::future::ready(Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{name} has not resolved yet"),
        )))
    }
}

#[cfg(test)]
mod tests;
