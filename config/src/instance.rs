//! [`InstanceId`]: which run of a proxy process wrote a document, so that a reader can tell a
//! restart (which starts the lifetime totals and the table version again) from a quiet spell.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;

use crate::error::Problems;
use crate::read::FromTree;

/// One run of a proxy process, in its `GET /routes` and `GET /stats` documents (`instance`).
/// The proxy picks it at random when it starts, so a restarted proxy has another one; readers
/// only compare it for equality.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstanceId(Arc<str>);

impl InstanceId {
    /// The identifier the proxy writes for 64 random bits: 16 lowercase hex digits.
    pub fn from_bits(bits: u64) -> Self {
        Self(Arc::from(format!("{bits:016x}")))
    }

    /// The identifier as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for InstanceId {
    fn from(s: &str) -> Self {
        Self(Arc::from(s))
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromTree for InstanceId {
    fn from_tree(v: &Value, path: &str, p: &mut Problems) -> Option<Self> {
        String::from_tree(v, path, p).map(|s| Self(Arc::from(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_are_sixteen_hex_digits() {
        assert_eq!(InstanceId::from_bits(0).as_str(), "0000000000000000");
        assert_eq!(InstanceId::from_bits(u64::MAX).as_str(), "ffffffffffffffff");
        assert_eq!(InstanceId::from_bits(0xab).to_string(), "00000000000000ab");
    }
}
