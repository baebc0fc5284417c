//! The open-file limit. Every downstream connection can hold a descriptor of its own and one to
//! an upstream, so a process left at a login shell's usual soft limit (1024) runs out long
//! before `limits.maxConnections` (10000): accepts then fail, and upstream connects with them.
//! At start the soft limit is raised to the hard one, as servers do; and where even that is
//! too low, the connection limit is lowered to what the descriptors allow, so that connections
//! past it wait to be accepted instead of failing.

use rlimit::Resource;

/// Descriptors kept for everything but connections: listeners, the admin API, the file watch,
/// standard streams, the allocator and the runtime.
const RESERVED: u64 = 64;

/// Raises the soft open-file limit to the hard limit. Returns the limits before and after, or
/// `None` where they cannot be read or set.
pub fn raise() -> Option<(u64, u64)> {
    let (soft, _) = rlimit::getrlimit(Resource::NOFILE).ok()?;
    let raised = rlimit::increase_nofile_limit(u64::MAX).ok()?;
    Some((soft, raised))
}

/// How many connections the current soft limit allows, at most `configured`.
pub fn connection_budget(configured: usize) -> usize {
    match rlimit::getrlimit(Resource::NOFILE) {
        Ok((soft, _)) => budget(soft, configured),
        Err(_) => configured,
    }
}

/// Connections that `soft` descriptors allow, two each after [`RESERVED`], at most
/// `configured` and at least one.
fn budget(soft: u64, configured: usize) -> usize {
    let allowed = usize::try_from(soft.saturating_sub(RESERVED) / 2).unwrap_or(usize::MAX);
    configured.min(allowed.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_descriptors_a_connection_after_the_reserve() {
        assert_eq!(budget(1024, 10_000), 480);
        assert_eq!(budget(20_000, 10_000), 9_968);
        assert_eq!(budget(1_048_576, 10_000), 10_000, "the configured limit when it fits");
        assert_eq!(budget(10, 10_000), 1, "never no connection at all");
        assert_eq!(budget(u64::MAX, 1 << 40), 1 << 40, "no overflow");
    }
}
