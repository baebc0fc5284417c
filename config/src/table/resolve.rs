//! Endpoints written with a host name (`app.svc:8080`), and the table that serves their
//! addresses: every address of a name becomes an endpoint of its own, as in Envoy's
//! `STRICT_DNS` clusters. Pure: the addresses come from the caller (the proxy's resolver).
//!
//! # How a name's weight is shared
//!
//! An endpoint of weight `w` whose name has `N` addresses becomes `N` endpoints of weight `w / N`
//! each, so the name keeps the share of its track that was written for it however many
//! addresses it has (Envoy gives each address the whole `w` instead). An address that several
//! endpoints of one track come to (two names with an address in common, or a name and an IP
//! endpoint) is one endpoint with the sum of their weights, in the place of the first.
//!
//! # Sticky keys
//!
//! An endpoint's seed for rendezvous hashing is its address (`10.0.0.7:8080`), as for an
//! endpoint written as an IP, and a name's addresses are taken in address order, not in the
//! order of the answer: so a key's endpoint depends only on the set of addresses, and every
//! proxy that got the same answer sends the key to the same address. When the addresses of a
//! track that names one host change, only keys on an address that went away move, and a new
//! address takes its share of keys from all the others (its siblings keep equal weights).
//!
//! A name without addresses (never resolved yet) stays one endpoint as written, which the
//! proxy cannot connect to: its requests fail (502) and count against the track.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};

use crate::error::ConfigErrors;
use crate::schema::{EndpointSpec, RouteSpec, TrackSpec};

use super::RoutingTable;

/// The host name and port of an endpoint written `HOSTNAME:PORT`; `None` for an IP endpoint
/// (`10.0.0.7:8080`, `[::1]:80`) or an address that does not validate.
pub fn host_name(address: &str) -> Option<(&str, u16)> {
    if address.parse::<SocketAddr>().is_ok() {
        return None;
    }
    let (host, port) = address.rsplit_once(':')?;
    let port = port.parse().ok().filter(|p| *p > 0)?;
    (!host.is_empty() && host.parse::<IpAddr>().is_err()).then_some((host, port))
}

/// Every host name that the endpoints of `routes` name, each once, in order.
pub fn host_names(routes: &[RouteSpec]) -> BTreeSet<&str> {
    routes
        .iter()
        .flat_map(|r| &r.tracks)
        .flat_map(|t| &t.endpoints)
        .filter_map(|e| host_name(&e.address).map(|(host, _)| host))
        .collect()
}

/// `routes` with every endpoint written with a host name replaced by one endpoint per address
/// that `addresses` gives for the name, sharing its weight (see the module's documentation). A
/// name `addresses` gives none for stays as written. Everything else is unchanged.
pub fn expand<'a>(routes: &[RouteSpec], addresses: impl Fn(&str) -> Option<&'a [IpAddr]>) -> Vec<RouteSpec> {
    routes
        .iter()
        .map(|route| RouteSpec {
            tracks: route.tracks.iter().map(|t| expand_track(t, &addresses)).collect(),
            ..route.clone()
        })
        .collect()
}

fn expand_track<'a>(track: &TrackSpec, addresses: &impl Fn(&str) -> Option<&'a [IpAddr]>) -> TrackSpec {
    let mut endpoints: Vec<EndpointSpec> = Vec::with_capacity(track.endpoints.len());
    // Where each socket address already is in `endpoints`, to merge rather than repeat it.
    let mut at: HashMap<SocketAddr, usize> = HashMap::new();
    let mut add = |endpoints: &mut Vec<EndpointSpec>, socket: Option<SocketAddr>, spec: EndpointSpec| match socket
        .and_then(|s| at.get(&s))
    {
        Some(&i) => endpoints[i].weight += spec.weight,
        None => {
            if let Some(s) = socket {
                at.insert(s, endpoints.len());
            }
            endpoints.push(spec);
        }
    };
    for e in &track.endpoints {
        let resolved = host_name(&e.address).and_then(|(host, port)| {
            let mut ips: Vec<IpAddr> = addresses(host)?.to_vec();
            ips.sort_unstable();
            ips.dedup();
            (!ips.is_empty()).then_some((ips, port))
        });
        match resolved {
            Some((ips, port)) => {
                let weight = e.weight / ips.len() as f64;
                for ip in ips {
                    let socket = SocketAddr::new(ip, port);
                    let address = socket.to_string();
                    add(&mut endpoints, Some(socket), EndpointSpec { address, weight });
                }
            }
            None => add(&mut endpoints, e.address.parse().ok(), e.clone()),
        }
    }
    TrackSpec {
        endpoints,
        ..track.clone()
    }
}

impl RoutingTable {
    /// The table to serve this one with: its endpoints written with a host name expanded to the
    /// addresses `addresses` gives (see [`expand`]), compiled; the same version, and the same
    /// [`RoutingTable::spec`] (the routes as written, not expanded). A table that names no host
    /// compiles the same as this one.
    ///
    /// An error would mean that expansion made a valid table invalid, which it does not do short
    /// of a weight too small to share (below 10⁻³⁰⁰).
    pub fn resolve<'a>(&self, addresses: impl Fn(&str) -> Option<&'a [IpAddr]>) -> Result<Self, ConfigErrors> {
        let expanded = expand(&self.spec, addresses);
        let table = Self::compile(&expanded, self.version)?;
        Ok(Self {
            spec: self.spec.clone(),
            ..table
        })
    }
}

#[cfg(test)]
mod tests;
