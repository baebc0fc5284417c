//! The control loop's side of the fleet on etcd (feature `fleet`): a group's table (read, and
//! written in one transaction on the revision it was read at), the proxies registered in a
//! group (followed by a watch), rollout state kept in etcd, and the fence that makes every write
//! of a leader fail once it is no longer leader. `switchyard_config::fleet` has the layout.
//!
//! Without the feature, [`Fleet`] has no value: a controller without etcd cannot be given one,
//! and the code that uses it compiles to nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use switchyard_config::fleet::{GroupName, Registration};
use switchyard_config::{ConfigErrors, InstanceId, RouteSpec};

#[cfg(feature = "fleet")]
mod etcd;
#[cfg(feature = "fleet")]
pub use etcd::{Fence, Fencing, Fleet};
#[cfg(feature = "fleet")]
pub(crate) use etcd::{timed, unary};

/// Without the `fleet` feature there is no etcd, and so no value of this type.
#[cfg(not(feature = "fleet"))]
#[derive(Debug)]
pub enum Fleet {}

#[cfg(not(feature = "fleet"))]
impl Fleet {
    /// A group's table.
    pub async fn table(&self, _group: &GroupName) -> Result<Option<Table>, FleetError> {
        match *self {}
    }

    /// Writes a group's table.
    pub async fn write_table(
        &self,
        _group: &GroupName,
        _routes: &[RouteSpec],
        _expect: Expect,
        _fenced: bool,
    ) -> Result<i64, FleetError> {
        match *self {}
    }

    /// The proxies registered in a group, followed.
    pub fn members(&self, _group: &GroupName) -> tokio::sync::watch::Receiver<Members> {
        match *self {}
    }

    /// One read of a group.
    pub async fn group_view(&self, _group: &GroupName, _now_ms: u64) -> Result<GroupView, FleetError> {
        match *self {}
    }
}

/// What went wrong with an etcd call, for a person: the client's message and its root cause
/// (`tcp connect error: Connection refused (os error 111)`), not a dump of nested errors.
#[cfg(feature = "fleet")]
pub(crate) fn etcd_sentence(e: &etcd_client::Error) -> String {
    let message = match e {
        etcd_client::Error::GRpcStatus(status) => status.message().to_owned(),
        other => other.to_string(),
    };
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return format!("{message}: {io}");
        }
        source = cause.source();
    }
    message
}

/// A group's table as etcd holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// The routes.
    pub routes: Vec<RouteSpec>,
    /// The document's version (one more on every write).
    pub version: u64,
    /// The etcd revision at which it was last written.
    pub revision: i64,
}

/// What a table write expects to replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The table last written at this revision (a read-modify-write).
    Revision(i64),
    /// Whatever is there, or nothing.
    Any,
}

/// A proxy registered in a group.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// What it wrote.
    pub registration: Registration,
    /// Its lease: the registration goes when the lease expires.
    pub lease: i64,
}

/// The proxies registered in a group, as last read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Members {
    /// By proxy id. Shared, so that a reader's copy costs nothing and the follower changes the
    /// map in place while no reader holds it (a copy per registration made a change to N
    /// proxies cost N² at scale).
    pub by_id: Arc<BTreeMap<InstanceId, Member>>,
    /// The etcd revision they were read at; 0 until first read.
    pub revision: i64,
    /// Why they could not be followed, while they cannot (etcd unreachable): the members shown
    /// are the last read.
    pub error: Option<String>,
}

/// Why a fleet call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FleetError {
    /// etcd did not answer, or refused the call.
    #[error("etcd: {0}")]
    Etcd(String),
    /// The table changed since it was read.
    #[error("the group's table changed since it was read (now revision {now})")]
    Conflict {
        /// Its revision now.
        now: i64,
    },
    /// This controller is no longer the leader: its writes are fenced off.
    #[error("this controller is no longer the leader, so it writes nothing")]
    NotLeader,
    /// A table that is not valid.
    #[error("{0}")]
    Invalid(ConfigErrors),
}

/// One proxy of a group in `GET /fleet/GROUP` and `switchyard fleet status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyView {
    /// The proxy process.
    pub id: InstanceId,
    /// Its admin API.
    pub admin_url: String,
    /// The version of the table it serves (its own count).
    pub version: u64,
    /// The etcd revision of the group table it serves; `None` while it serves its file's routes.
    pub table_revision: Option<i64>,
    /// Whether it serves the group's table as etcd holds it now.
    pub current: bool,
    /// How many etcd revisions the table it serves is behind the group's table (0 when
    /// current; every write in etcd counts, so read it as "behind", not as a number of tables).
    pub lag_revisions: i64,
    /// When it last renewed its lease (ms since epoch), as far as the lease's remaining time
    /// tells; `None` if etcd did not say.
    pub last_heartbeat: Option<u64>,
    /// When it registered (ms since epoch).
    pub started_at: u64,
    /// The group table it refused, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<switchyard_config::fleet::Refusal>,
}

/// A group in `GET /fleet/GROUP`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupView {
    /// The group.
    pub group: GroupName,
    /// The table's version, `None` when the group has no table yet.
    pub version: Option<u64>,
    /// The etcd revision the table was last written at.
    pub table_revision: Option<i64>,
    /// Every registered proxy, by id.
    pub proxies: Vec<ProxyView>,
}
