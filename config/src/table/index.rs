//! Finding the first matching route without trying every route: routes are grouped by host
//! (exact, wildcard suffix, or none), each group keeps table order, and a request only tries the
//! groups its host can be in.

use rustc_hash::FxHashMap;

use super::matcher::HostMatch;

#[derive(Debug, Default)]
pub(crate) struct RouteIndex {
    /// Lowercase host → routes with exactly that host, in table order.
    exact: FxHashMap<Box<[u8]>, Box<[u32]>>,
    /// `.example.com` → routes with host `*.example.com`, in table order.
    suffix: FxHashMap<Box<[u8]>, Box<[u32]>>,
    /// Routes without a host condition, in table order.
    any: Box<[u32]>,
}

impl RouteIndex {
    pub(crate) fn new<'h>(hosts: impl Iterator<Item = (usize, Option<&'h HostMatch>)>) -> Self {
        let mut exact: FxHashMap<Box<[u8]>, Vec<u32>> = FxHashMap::default();
        let mut suffix: FxHashMap<Box<[u8]>, Vec<u32>> = FxHashMap::default();
        let mut any = Vec::new();
        for (i, host) in hosts {
            // Tables are far smaller than 2³² routes; compile caps nothing else on this.
            let id = i as u32;
            match host {
                Some(HostMatch::Exact(h)) => exact.entry(h.as_bytes().into()).or_default().push(id),
                Some(HostMatch::Suffix(s)) => suffix.entry(s.as_bytes().into()).or_default().push(id),
                None => any.push(id),
            }
        }
        let freeze =
            |m: FxHashMap<Box<[u8]>, Vec<u32>>| m.into_iter().map(|(k, v)| (k, v.into_boxed_slice())).collect();
        Self {
            exact: freeze(exact),
            suffix: freeze(suffix),
            any: any.into_boxed_slice(),
        }
    }

    /// The first route, in table order, that can take `host` and for which `matches` holds.
    #[inline]
    pub(crate) fn find(&self, host: &[u8], matches: impl Fn(usize) -> bool) -> Option<usize> {
        let mut best = u32::MAX;
        // Each group is in table order, so a group is tried only up to the best route so far.
        let mut scan = |group: &[u32]| {
            for &id in group {
                if id >= best {
                    break;
                }
                if matches(id as usize) {
                    best = id;
                    break;
                }
            }
        };
        if !self.exact.is_empty()
            && let Some(group) = self.exact.get(host)
        {
            scan(group);
        }
        if !self.suffix.is_empty() {
            // `*.example.com` takes `a.example.com` and `a.b.example.com`, never `example.com`.
            for (i, b) in host.iter().enumerate().skip(1) {
                if *b == b'.'
                    && let Some(group) = self.suffix.get(&host[i..])
                {
                    scan(group);
                }
            }
        }
        scan(&self.any);
        (best != u32::MAX).then_some(best as usize)
    }
}
