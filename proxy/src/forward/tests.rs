use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::rewrite::{Seen, forwarded_for, strip_hop_by_hop};
use super::{Downstream, random};

#[test]
fn hop_by_hop_headers_and_those_named_by_connection_are_removed() {
    let mut h = HeaderMap::new();
    h.insert("connection", HeaderValue::from_static("keep-alive, x-secret"));
    h.append("connection", HeaderValue::from_static("x-other"));
    h.insert("x-other", HeaderValue::from_static("1"));
    h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    h.insert("x-secret", HeaderValue::from_static("1"));
    h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
    h.insert("upgrade", HeaderValue::from_static("h2c"));
    h.insert("te", HeaderValue::from_static("gzip"));
    h.insert("x-kept", HeaderValue::from_static("1"));
    strip_hop_by_hop(&mut h);
    assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);

    let mut grpc = HeaderMap::new();
    grpc.insert("te", HeaderValue::from_static("trailers"));
    strip_hop_by_hop(&mut grpc);
    assert_eq!(grpc.get("te").unwrap(), "trailers");
}

#[test]
fn each_hop_by_hop_header_alone_is_removed() {
    // The quick scan must see every name the full pass removes.
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "upgrade",
        "trailer",
        "proxy-authenticate",
        "proxy-authorization",
    ] {
        let mut h = HeaderMap::new();
        h.insert(HeaderName::from_static(name), HeaderValue::from_static("x"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        assert!(Seen::of(&h).hop_by_hop, "{name}");
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"], "{name}");
    }
}

#[test]
fn one_pass_sees_the_headers_the_rewrite_acts_on() {
    let mut h = HeaderMap::new();
    h.insert("x-kept", HeaderValue::from_static("1"));
    let seen = Seen::of(&h);
    assert!(!seen.hop_by_hop && !seen.expect && seen.hosts == 0 && !seen.forwarded_for);
    h.insert("host", HeaderValue::from_static("a.example"));
    h.insert("expect", HeaderValue::from_static("100-continue"));
    h.insert("x-forwarded-for", HeaderValue::from_static("192.0.2.1"));
    let seen = Seen::of(&h);
    assert!(!seen.hop_by_hop && seen.expect && seen.hosts == 1 && seen.host_valid && seen.forwarded_for);
}

#[test]
fn forwarded_headers_append_the_client_and_name_the_scheme() {
    let mut h = HeaderMap::new();
    let peer = Downstream::new("10.1.2.3:5555".parse().unwrap(), true);
    forwarded_for(&mut h, &peer, false);
    assert_eq!(h.get("x-forwarded-for").unwrap(), "10.1.2.3");
    assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
    h.insert("x-forwarded-for", HeaderValue::from_static("192.0.2.1"));
    forwarded_for(&mut h, &Downstream::new(peer.peer, false), true);
    assert_eq!(h.get("x-forwarded-for").unwrap(), "192.0.2.1, 10.1.2.3");
    assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
}

#[test]
fn random_numbers_differ_and_cover_both_halves() {
    let xs: Vec<u64> = (0..1000).map(|_| random()).collect();
    let high = xs.iter().filter(|x| **x > u64::MAX / 2).count();
    assert!((400..600).contains(&high), "{high}");
    let mut sorted = xs.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), xs.len());
}
