//! HTTP/1.1 upgrades through the proxy: real WebSocket handshakes and frames (tokio-tungstenite
//! on both sides), routed like any request, counted once per upgrade, idled out, bounded by the
//! connection limit; upgrades an upstream refuses, `h2c` upgrades and switches to a protocol
//! nobody offered.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{start_proxy, track_stats};
use futures_util::{SinkExt as _, StreamExt as _};
use http::HeaderMap;
use switchyard_proxy::Running;
use switchyard_testkit::{AfterReply, MockUpstream, RawUpstream, Table, assert_eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

/// A WebSocket upstream that answers every text message with `"{name}: {message}"`.
struct EchoUpstream {
    addr: SocketAddr,
    /// The handshake requests' headers, in order.
    seen: Arc<Mutex<Vec<HeaderMap>>>,
    /// Tunnels that ended (the proxy's side closed or the client's close came through).
    closed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EchoUpstream {
    async fn start(name: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(AtomicU64::new(0));
        let (s, c) = (Arc::clone(&seen), Arc::clone(&closed));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (seen, closed) = (Arc::clone(&s), Arc::clone(&c));
                tokio::spawn(async move {
                    #[allow(clippy::result_large_err)] // tungstenite's callback returns its own error response
                    let remember = |req: &Request, res: Response| {
                        seen.lock().unwrap().push(req.headers().clone());
                        Ok(res)
                    };
                    if let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, remember).await {
                        while let Some(Ok(message)) = ws.next().await {
                            if let Message::Text(text) = message
                                && ws.send(Message::text(format!("{name}: {text}"))).await.is_err()
                            {
                                break;
                            }
                        }
                    }
                    closed.fetch_add(1, Ordering::Relaxed);
                });
            }
        });
        Self {
            addr,
            seen,
            closed,
            task,
        }
    }

    fn addr(&self) -> String {
        self.addr.to_string()
    }

    fn handshakes(&self) -> Vec<HeaderMap> {
        self.seen.lock().unwrap().clone()
    }
}

type Ws = WebSocketStream<TcpStream>;

/// A WebSocket through the proxy, with extra handshake headers; its socket and the `101`'s
/// headers.
async fn connect(p: &Running, headers: &[(&str, &str)]) -> Result<(Ws, HeaderMap), String> {
    let mut req = format!("ws://{}/chat", p.listen[0]).into_client_request().unwrap();
    for (name, value) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let stream = TcpStream::connect(p.listen[0]).await.map_err(|e| e.to_string())?;
    let (ws, response) = tokio_tungstenite::client_async(req, stream)
        .await
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(r) => format!("answered {}", r.status()),
            e => e.to_string(),
        })?;
    assert_eq!(response.status(), 101);
    Ok((ws, response.headers().clone()))
}

/// Sends `text` and returns the answer.
async fn say(ws: &mut Ws, text: &str) -> String {
    ws.send(Message::text(text)).await.unwrap();
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return t.to_string(),
            Some(Ok(_)) => continue,
            other => panic!("the tunnel ended before its answer: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_websocket_goes_to_its_track_and_counts_once_as_a_101() {
    let stable = EchoUpstream::start("stable").await;
    let canary = EchoUpstream::start("canary").await;
    let p = start_proxy(
        Table::new()
            .route("chat")
            .track("stable", &[stable.addr()], 100.0)
            .track("canary", &[canary.addr()], 0.0)
            .header_rule("x-canary", "true", "canary"),
    )
    .await;

    let (mut ws, head) = connect(&p, &[("x-canary", "true")]).await.unwrap();
    assert_eq!(head["x-switchyard-track"], "canary");
    for i in 0..5 {
        assert_eq!(say(&mut ws, &format!("hello {i}")).await, format!("canary: hello {i}"));
    }
    ws.close(None).await.unwrap();
    assert_eventually!(canary.closed.load(Ordering::Relaxed) == 1);

    // The upstream's handshake: offered the upgrade, told the track.
    let handshake = &canary.handshakes()[0];
    assert!(handshake["upgrade"].to_str().unwrap().eq_ignore_ascii_case("websocket"));
    assert!(
        handshake["connection"]
            .to_str()
            .unwrap()
            .eq_ignore_ascii_case("upgrade")
    );
    assert_eq!(handshake["x-switchyard-track"], "canary");
    assert!(stable.handshakes().is_empty());

    // One request of the canary, whatever the tunnel carried.
    let s = track_stats(&p, "chat", "canary").await;
    assert_eq!(s["requests"], 1, "{s}");
    assert_eq!(s["errors"], 0, "{s}");
    assert_eq!(track_stats(&p, "chat", "stable").await["requests"], 0);
}

#[tokio::test]
async fn sticky_users_keep_their_track_for_upgrades_too() {
    let stable = EchoUpstream::start("stable").await;
    let canary = EchoUpstream::start("canary").await;
    let p = start_proxy(
        Table::new()
            .route("chat")
            .track("stable", &[stable.addr()], 50.0)
            .track("canary", &[canary.addr()], 50.0)
            .sticky_header("x-user-id"),
    )
    .await;
    let mut tracks = BTreeSet::new();
    for user in 0..16 {
        let key = format!("user-{user}");
        let mut first = None;
        for _ in 0..3 {
            let (mut ws, head) = connect(&p, &[("x-user-id", &key)]).await.unwrap();
            let track = head["x-switchyard-track"].to_str().unwrap().to_owned();
            assert_eq!(say(&mut ws, "hi").await, format!("{track}: hi"));
            assert_eq!(*first.get_or_insert_with(|| track.clone()), track, "{key} moved");
            tracks.insert(track);
            ws.close(None).await.unwrap();
        }
    }
    assert_eq!(tracks.len(), 2, "16 users all on {tracks:?}");
    let stable_upgrades = track_stats(&p, "chat", "stable").await["requests"].as_u64().unwrap();
    let canary_upgrades = track_stats(&p, "chat", "canary").await["requests"].as_u64().unwrap();
    assert_eq!(stable_upgrades + canary_upgrades, 48);
}

#[tokio::test]
async fn an_idle_tunnel_is_closed_on_both_sides() {
    let echo = EchoUpstream::start("stable").await;
    let p = start_proxy(
        Table::new()
            .setting("timeouts: { upgradeIdle: 300ms }")
            .route("chat")
            .track("stable", &[echo.addr()], 1.0),
    )
    .await;
    let (mut ws, _) = connect(&p, &[]).await.unwrap();
    assert_eq!(say(&mut ws, "one").await, "stable: one");
    // Nothing more is sent: the proxy closes the tunnel, and both ends see it end.
    let end = tokio::time::timeout(Duration::from_secs(30), ws.next()).await;
    assert!(
        matches!(end, Ok(None | Some(Err(_)))),
        "the tunnel did not end: {end:?}"
    );
    assert_eventually!(echo.closed.load(Ordering::Relaxed) == 1);
}

#[tokio::test]
async fn a_tunnel_holds_its_connections_place_within_max_connections() {
    let echo = EchoUpstream::start("stable").await;
    let p = start_proxy(
        Table::new()
            .setting("limits: { maxConnections: 1 }")
            .route("chat")
            .track("stable", &[echo.addr()], 1.0),
    )
    .await;
    let (mut ws, _) = connect(&p, &[]).await.unwrap();
    assert_eq!(say(&mut ws, "one").await, "stable: one");
    // A second connection waits to be accepted while the tunnel is open...
    let second = tokio::spawn(connect_and_say(p.listen[0]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "a second connection was served past maxConnections: 1"
    );
    assert_eq!(say(&mut ws, "two").await, "stable: two");
    // ...and is served once it is closed.
    ws.close(None).await.unwrap();
    drop(ws);
    assert_eq!(second.await.unwrap(), "stable: later");
}

async fn connect_and_say(addr: SocketAddr) -> String {
    let req = format!("ws://{addr}/chat").into_client_request().unwrap();
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(req, stream).await.unwrap();
    say(&mut ws, "later").await
}

/// Reads one response (with a `Content-Length` body) from `stream`: its status line, head and
/// body.
async fn read_response(stream: &mut TcpStream) -> (String, String, String) {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed mid-head: {}", String::from_utf8_lossy(&bytes));
        bytes.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .unwrap_or(0);
    while bytes.len() < head_end + length {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed mid-body");
        bytes.extend_from_slice(&buf[..n]);
    }
    let status = head.lines().next().unwrap().to_owned();
    let body = String::from_utf8_lossy(&bytes[head_end..head_end + length]).to_string();
    (status, head, body)
}

#[tokio::test]
async fn an_upstream_that_refuses_the_upgrade_is_answered_as_any_request() {
    let refusing = MockUpstream::start("stable").await;
    refusing.set_status(403);
    let p = start_proxy(Table::new().route("chat").track("stable", &[refusing.addr()], 1.0)).await;
    let mut stream = TcpStream::connect(p.listen[0]).await.unwrap();
    stream
        .write_all(
            b"GET /chat HTTP/1.1\r\nHost: chat.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
    let (status, head, body) = read_response(&mut stream).await;
    assert_eq!(status, "HTTP/1.1 403 Forbidden", "{head}");
    assert_eq!(body, "stable");
    // The upstream was offered the upgrade.
    let seen = &refusing.seen()[0].headers;
    assert_eq!(seen["upgrade"], "websocket");
    assert_eq!(seen["connection"], "upgrade");
    // The connection is still HTTP/1.1.
    stream
        .write_all(b"GET /again HTTP/1.1\r\nHost: chat.example\r\n\r\n")
        .await
        .unwrap();
    refusing.set_status(200);
    let (status, _, body) = read_response(&mut stream).await;
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", "stable"));
    let s = track_stats(&p, "chat", "stable").await;
    assert_eq!(s["requests"], 2, "{s}");
    assert_eq!(s["statusClasses"]["4xx"], 1, "{s}");
}

#[tokio::test]
async fn an_h2c_upgrade_is_served_as_http_1_1_and_never_offered() {
    let upstream = MockUpstream::start("stable").await;
    let p = start_proxy(Table::new().route("web").track("stable", &[upstream.addr()], 1.0)).await;
    let mut stream = TcpStream::connect(p.listen[0]).await.unwrap();
    for _ in 0..2 {
        stream
            .write_all(
                b"GET / HTTP/1.1\r\nHost: web.example\r\nConnection: Upgrade, HTTP2-Settings\r\n\
                  Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
            )
            .await
            .unwrap();
        let (status, head, body) = read_response(&mut stream).await;
        assert_eq!(
            (status.as_str(), body.as_str()),
            ("HTTP/1.1 200 OK", "stable"),
            "{head}"
        );
        assert!(!head.to_ascii_lowercase().contains("upgrade"), "{head}");
    }
    for seen in upstream.seen() {
        for name in ["upgrade", "http2-settings", "connection"] {
            assert!(
                !seen.headers.contains_key(name),
                "{name} reached the upstream: {:?}",
                seen.headers
            );
        }
    }
}

#[tokio::test]
async fn a_switch_to_a_protocol_nobody_offered_is_the_tracks_protocol_error() {
    let rogue = RawUpstream::start(
        &b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"[..],
        AfterReply::KeepOpen,
    )
    .await;
    let p = start_proxy(Table::new().route("chat").track("stable", &[rogue.addr()], 1.0)).await;
    assert_eq!(
        connect(&p, &[]).await.err().as_deref(),
        Some("answered 502 Bad Gateway")
    );
    let s = track_stats(&p, "chat", "stable").await;
    assert_eq!(s["upstreamErrors"]["protocol"], 1, "{s}");
}
