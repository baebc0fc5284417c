use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Version};
use http_body_util::{Empty, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

use super::*;

fn request(version: Version, headers: &[(&str, &str)]) -> Request<Empty<Bytes>> {
    let mut req = Request::builder().method(Method::GET).uri("/ws").version(version);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(Empty::new()).unwrap()
}

fn offered(req: &mut Request<impl http_body::Body>) -> Option<String> {
    Offer::of(req).map(|o| o.protocols.to_str().unwrap().to_owned())
}

#[test]
fn an_upgrade_is_offered_without_h2c_and_only_when_connection_asks_for_it() {
    let ws = [("connection", "Upgrade"), ("upgrade", "websocket")];
    assert_eq!(
        offered(&mut request(Version::HTTP_11, &ws)).as_deref(),
        Some("websocket")
    );
    let listed = [
        ("connection", "keep-alive, upgrade"),
        ("upgrade", "h2c, WebSocket , x/1"),
    ];
    assert_eq!(
        offered(&mut request(Version::HTTP_11, &listed)).as_deref(),
        Some("WebSocket, x/1")
    );
    let two_lines = [("connection", "upgrade"), ("upgrade", "h2c"), ("upgrade", "websocket")];
    assert_eq!(
        offered(&mut request(Version::HTTP_11, &two_lines)).as_deref(),
        Some("websocket")
    );

    for (why, version, headers) in [
        (
            "only h2c",
            Version::HTTP_11,
            &[("connection", "Upgrade, HTTP2-Settings"), ("upgrade", "h2c")][..],
        ),
        (
            "no Connection: upgrade",
            Version::HTTP_11,
            &[("upgrade", "websocket")][..],
        ),
        (
            "Connection names another",
            Version::HTTP_11,
            &[("connection", "close"), ("upgrade", "websocket")][..],
        ),
        (
            "an empty Upgrade",
            Version::HTTP_11,
            &[("connection", "upgrade"), ("upgrade", " , ")][..],
        ),
        ("HTTP/1.0", Version::HTTP_10, &ws[..]),
        ("no Upgrade", Version::HTTP_11, &[("connection", "upgrade")][..]),
    ] {
        assert_eq!(offered(&mut request(version, headers)), None, "{why}");
    }
    let mut with_body = Request::builder()
        .method(Method::POST)
        .uri("/ws")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .body(Full::new(Bytes::from_static(b"x")))
        .unwrap();
    assert_eq!(offered(&mut with_body), None, "a body");
}

#[test]
fn the_offer_is_restored_after_the_hop_by_hop_headers_go() {
    let mut req = request(
        Version::HTTP_11,
        &[("connection", "upgrade"), ("upgrade", "h2c, websocket")],
    );
    let offer = Offer::of(&mut req).unwrap();
    let mut headers = req.headers().clone();
    crate::forward::strip_hop_by_hop(&mut headers);
    assert!(headers.is_empty());
    offer.restore(&mut headers);
    assert_eq!(headers["upgrade"], "websocket");
    assert_eq!(headers["connection"], "upgrade");
}

/// A tunnel idles out `idle` after its last byte, whichever side sent it, and not before.
async fn idles_out_after(idle: Duration) {
    let (client, proxy_down) = duplex(1024);
    let (proxy_up, server) = duplex(1024);
    let (mut client, mut server) = (client, server);
    let tunnel = tokio::spawn(relay(proxy_down, proxy_up, idle));
    let step = idle / 4;

    // Bytes both ways, each moving the idle limit on.
    for _ in 0..3 {
        tokio::time::advance(idle - step).await;
        client.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        tokio::time::advance(idle - step).await;
        server.write_all(b"pong!").await.unwrap();
        let mut buf = [0u8; 5];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong!");
        assert!(!tunnel.is_finished(), "closed while it carried bytes, idle {idle:?}");
    }
    tokio::time::advance(idle - Duration::from_millis(1)).await;
    tokio::task::yield_now().await;
    assert!(!tunnel.is_finished(), "closed before its idle limit {idle:?}");
    tokio::time::advance(Duration::from_millis(2)).await;
    let relayed = tunnel.await.unwrap();
    assert_eq!(
        relayed,
        Relayed {
            sent: 12,
            received: 15,
            ended: Ended::Idle
        }
    );
    // Both sides see the tunnel close.
    let mut rest = Vec::new();
    assert_eq!(client.read_to_end(&mut rest).await.unwrap(), 0);
    assert_eq!(server.read_to_end(&mut rest).await.unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_tunnel_idles_out_after_a_second() {
    idles_out_after(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_tunnel_idles_out_after_a_minute() {
    idles_out_after(Duration::from_secs(60)).await;
}

#[tokio::test(start_paused = true)]
async fn a_tunnel_ends_when_both_sides_close_and_counts_each_way() {
    let (mut client, proxy_down) = duplex(1024);
    let (proxy_up, mut server) = duplex(1024);
    let tunnel = tokio::spawn(relay(proxy_down, proxy_up, Duration::from_secs(3600)));
    client.write_all(b"hello").await.unwrap();
    client.shutdown().await.unwrap();
    let mut got = Vec::new();
    server.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"hello");
    server.write_all(b"bye").await.unwrap();
    drop(server);
    let mut back = Vec::new();
    client.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"bye");
    let relayed = tunnel.await.unwrap();
    assert_eq!((relayed.sent, relayed.received, relayed.ended), (5, 3, Ended::Closed));
}
