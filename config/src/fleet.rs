//! The fleet's layout in etcd and the documents kept there, shared by the proxies that join a
//! group and the control loop that drives it: where a group's table lives, where each proxy
//! registers (under its lease), and what a registration says.
//!
//! ```text
//! {prefix}/groups/{group}/table              the group's routes document (RoutesDocument)
//! {prefix}/groups/{group}/proxies/{id}       one proxy's Registration, under its lease
//! {prefix}/rollouts/{name}                   a rollout's stored state
//! {prefix}/control/leader                    the control loop's leader election
//! ```
//!
//! ```
//! use switchyard_config::InstanceId;
//! use switchyard_config::fleet::{FleetKeys, GroupName};
//!
//! let keys = FleetKeys::new("/switchyard").unwrap();
//! let group = GroupName::new("checkout").unwrap();
//! assert_eq!(keys.table(&group), "/switchyard/groups/checkout/table");
//! let id = InstanceId::from_bits(0xab);
//! assert_eq!(keys.proxy(&group, &id), "/switchyard/groups/checkout/proxies/00000000000000ab");
//! assert!(keys.proxy(&group, &id).starts_with(&keys.proxies(&group)));
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::Problems;
use crate::{FieldError, InstanceId, validate};

/// The key prefix when none is configured.
pub const DEFAULT_PREFIX: &str = "/switchyard";

/// A group's name: the proxies that serve one table (as `RouteName` names a route).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GroupName(String);

impl GroupName {
    /// A group name: 1 to [`crate::MAX_NAME_LEN`] letters, digits, `-`, `_` or `.`, starting with
    /// a letter or digit, so that it is one key segment.
    pub fn new(name: &str) -> Result<Self, FieldError> {
        let mut p = Problems::default();
        if validate::name("group", name, "group", &mut p) {
            Ok(Self(name.to_owned()))
        } else {
            Err(p.into_errors().0.remove(0))
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where the fleet's documents live under one key prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetKeys {
    prefix: String,
}

impl FleetKeys {
    /// Keys under `prefix`: it starts with `/`, does not end with one, and has no empty, `.`
    /// or `..` segment (etcd keys are bytes, but a path-shaped prefix reads the same in
    /// `etcdctl get --prefix` and in the docs).
    pub fn new(prefix: &str) -> Result<Self, FieldError> {
        let segments: Vec<&str> = prefix.strip_prefix('/').unwrap_or("").split('/').collect();
        let bad_segment = segments
            .iter()
            .any(|s| s.is_empty() || *s == "." || *s == ".." || s.chars().any(char::is_control));
        if !prefix.starts_with('/') || bad_segment {
            return Err(FieldError::new(
                "prefix",
                format!(
                    "invalid etcd key prefix {prefix:?}: write it as a path such as {DEFAULT_PREFIX}, starting with '/', \
                     without a trailing '/' or empty segments"
                ),
            ));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
        })
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key of `group`'s table.
    pub fn table(&self, group: &GroupName) -> String {
        format!("{}/groups/{group}/table", self.prefix)
    }

    /// The prefix under which `group`'s proxies register (ends with `/`: a range or a watch).
    pub fn proxies(&self, group: &GroupName) -> String {
        format!("{}/groups/{group}/proxies/", self.prefix)
    }

    /// The key of one proxy's registration.
    pub fn proxy(&self, group: &GroupName, id: &InstanceId) -> String {
        format!("{}{id}", self.proxies(group))
    }

    /// The prefix under which rollouts are stored (ends with `/`).
    pub fn rollouts(&self) -> String {
        format!("{}/rollouts/", self.prefix)
    }

    /// The key of one rollout's stored state.
    pub fn rollout(&self, name: &str) -> String {
        format!("{}{name}", self.rollouts())
    }

    /// The key of the control loop's leader election.
    pub fn leader(&self) -> String {
        format!("{}/control/leader", self.prefix)
    }
}

impl Default for FleetKeys {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_owned(),
        }
    }
}

/// What a proxy in a group writes under its lease: who it is, where its admin API is, and what
/// it serves. Written by the proxy and read by the control loop with this type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    /// The proxy process (the `instance` of its `/routes` and `/stats`).
    pub id: InstanceId,
    /// Its admin API as others reach it (`--advertise`), `http://HOST:PORT`.
    pub admin_url: String,
    /// The version of the table it serves.
    pub version: u64,
    /// The etcd revision of the group table it serves; `None` while it serves its file's routes
    /// (it has not read the group's table yet).
    pub table_revision: Option<i64>,
    /// The group table it refused, if the latest one was invalid: it keeps serving the one
    /// before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<Refusal>,
    /// When it registered (ms since the Unix epoch).
    pub started_at: u64,
}

/// A group table a proxy refused, and every problem with it by field path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Refusal {
    /// The etcd revision of the table it refused.
    pub revision: i64,
    /// What is wrong with it.
    pub errors: Vec<FieldError>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_paths_under_the_prefix() {
        let keys = FleetKeys::new("/mesh/prod").unwrap();
        let group = GroupName::new("shop.v2").unwrap();
        let id = InstanceId::from_bits(1);
        assert_eq!(keys.table(&group), "/mesh/prod/groups/shop.v2/table");
        assert_eq!(keys.proxies(&group), "/mesh/prod/groups/shop.v2/proxies/");
        assert_eq!(
            keys.proxy(&group, &id),
            "/mesh/prod/groups/shop.v2/proxies/0000000000000001"
        );
        assert_eq!(keys.rollout("checkout-v2"), "/mesh/prod/rollouts/checkout-v2");
        assert_eq!(keys.leader(), "/mesh/prod/control/leader");
        assert_eq!(FleetKeys::default().prefix(), DEFAULT_PREFIX);
        // One group's keys are never under another's prefix.
        let other = GroupName::new("shop").unwrap();
        assert!(!keys.proxy(&group, &id).starts_with(&keys.proxies(&other)));
    }

    #[test]
    fn bad_prefixes_and_group_names_are_refused_in_a_sentence() {
        for bad in ["", "switchyard", "/switchyard/", "//x", "/a//b", "/a/../b", "/a/./b"] {
            let e = FleetKeys::new(bad).unwrap_err();
            assert_eq!(e.path, "prefix");
            assert!(e.message.starts_with("invalid etcd key prefix"), "{bad}: {}", e.message);
        }
        for bad in ["", "a/b", "-x", "a b", &"x".repeat(64)] {
            let e = GroupName::new(bad).unwrap_err();
            assert_eq!(e.path, "group");
            assert!(e.message.starts_with("invalid group name"), "{bad:?}: {}", e.message);
        }
    }

    #[test]
    fn a_registration_reads_back_with_its_field_names() {
        let r = Registration {
            id: InstanceId::from_bits(0xab),
            admin_url: "http://10.0.0.7:9901".to_owned(),
            version: 4,
            table_revision: Some(17),
            refused: Some(Refusal {
                revision: 18,
                errors: vec![FieldError::new("routes[0].tracks", "give at least one track")],
            }),
            started_at: 1_796_000_000_000,
        };
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": "00000000000000ab", "adminUrl": "http://10.0.0.7:9901", "version": 4,
                "tableRevision": 17, "startedAt": 1_796_000_000_000_u64,
                "refused": {"revision": 18, "errors": [{"path": "routes[0].tracks", "message": "give at least one track"}]}
            })
        );
        assert_eq!(serde_json::from_value::<Registration>(json).unwrap(), r);
    }
}
