//! The proxy's life and its edges: a graceful drain in-process, the real binary from start to
//! SIGTERM, and what the downstream listener does with oversized, malformed, ambiguous and
//! stalled requests (spoken byte by byte over raw TCP).

mod common;

use std::net::{SocketAddr, TcpListener as StdListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{start_proxy, start_yaml, url};
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard_testkit::{Behaviour, Client, MockUpstream, Scratch, Table, assert_eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// A current-thread runtime (the default of `#[tokio::test]`): the proxy makes no progress
// while this test blocks its thread, which the end of the test relies on.
#[tokio::test]
async fn shutdown_drains_the_request_in_flight_then_refuses_connections() {
    let stable = MockUpstream::start("stable").await;
    stable.set_latency(Duration::from_millis(500));
    let p = start_proxy(Table::new().route("app").track("stable", &[stable.addr()], 1.0)).await;
    let listener = p.listen[0];
    let mut downstream = TcpStream::connect(listener).await.expect("connect to the proxy");
    downstream
        .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send the request");
    assert_eventually!(stable.requests() == 1);

    assert!(p.shutdown().await, "shutdown reports connections still open");
    // Read with a blocking socket: had shutdown returned before the response was written, the
    // proxy could not write it now (this thread is its runtime) and the read would time out.
    let mut downstream = downstream.into_std().expect("a std socket");
    downstream.set_nonblocking(false).expect("blocking mode");
    downstream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a read timeout");
    let mut response = String::new();
    std::io::Read::read_to_string(&mut downstream, &mut response).expect("the whole response, then the end");
    assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
    assert!(response.ends_with("\r\n\r\nstable"), "{response}");

    // The listener is gone: a new connection is refused, or closed without an answer.
    if let Ok(mut stream) = TcpStream::connect(listener).await {
        let answer = exchange_on(
            &mut stream,
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            Duration::from_secs(10),
        )
        .await;
        assert!(answer.bytes.is_empty() && answer.closed, "{answer:?}");
    }
    assert_eq!(stable.requests(), 1);
}

/// A free loopback port: bound, then released for the binary to take.
fn free_port() -> StdListener {
    StdListener::bind("127.0.0.1:0").expect("bind a loopback port")
}

/// Kills the child if the test ends before it exits.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[tokio::test]
async fn the_binary_serves_until_sigterm_then_exits_0() {
    let dir = Scratch::new("lifecycle-binary");
    let stable = MockUpstream::start("stable").await;
    // Both ports are held at once so that they differ, then released together.
    let (listen, admin) = {
        let (a, b) = (free_port(), free_port());
        (
            a.local_addr().expect("bound address"),
            b.local_addr().expect("bound address"),
        )
    };
    let config = Table::new()
        .setting(&format!("listen: {listen}"))
        .setting(&format!("admin: {{ listen: {admin} }}"))
        .route("app")
        .track("stable", &[stable.addr()], 1.0)
        .yaml();
    let config_file = dir.path().join("proxy.yaml");
    std::fs::write(&config_file, config).expect("write the config file");
    let log = std::fs::File::create(dir.path().join("proxy.log")).expect("create the log file");
    let child = Command::new(env!("CARGO_BIN_EXE_switchyard-proxy"))
        .arg("--config")
        .arg(&config_file)
        .args(["--workers", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn switchyard-proxy");
    let mut child = Reaped(child);
    let log = || std::fs::read_to_string(dir.path().join("proxy.log")).unwrap_or_default();

    let readyz = format!("http://{admin}/readyz");
    let client = Client::http1();
    assert_eventually!(
        {
            assert!(matches!(child.0.try_wait(), Ok(None)), "the proxy exited:\n{}", log());
            client.get(&readyz, &[]).await.is_ok_and(|r| r.status == 200)
        },
        Duration::from_secs(30)
    );
    let reply = Client::http1()
        .get(&format!("http://{listen}/through"), &[])
        .await
        .expect("the proxy answers");
    assert_eq!((reply.status.as_u16(), reply.body.as_str()), (200, "stable"));
    assert_eq!(stable.seen()[0].uri.path(), "/through");

    let term = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(term.success());
    assert_eventually!(!matches!(child.0.try_wait(), Ok(None)), Duration::from_secs(30));
    let exit = child.0.wait().expect("the proxy's exit status");
    assert_eq!(exit.code(), Some(0), "{exit}\n{}", log());
}

/// What came back on a raw connection.
#[derive(Debug)]
struct Answer {
    /// Every byte read.
    bytes: Vec<u8>,
    /// Whether the proxy closed the connection (end of stream or reset) before the deadline.
    closed: bool,
}

impl Answer {
    /// The status code of the first status line, if one arrived.
    fn status(&self) -> Option<u16> {
        let text = String::from_utf8_lossy(&self.bytes);
        text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Writes `request` and reads until the proxy closes the connection or `deadline` passes (the
/// deadline only bounds a failing test).
async fn exchange_on(stream: &mut TcpStream, request: &[u8], deadline: Duration) -> Answer {
    // The proxy may answer and close before taking all of an oversized request; what it
    // answered is still there to read.
    let _ = stream.write_all(request).await;
    let mut bytes = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
            }
        }
    };
    let closed = tokio::time::timeout(deadline, read).await.is_ok();
    Answer { bytes, closed }
}

/// `request` on a new connection to `addr`.
async fn exchange(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).await.expect("connect to the proxy");
    exchange_on(&mut stream, request, Duration::from_secs(10)).await
}

/// A proxy with extra `settings` lines in front of one upstream.
async fn hardened(settings: &[&str]) -> (MockUpstream, switchyard_proxy::Running) {
    let stable = MockUpstream::start("stable").await;
    let yaml = settings
        .iter()
        .fold(Table::new().on_free_ports(), |table, line| table.setting(line))
        .route("app")
        .track("stable", &[stable.addr()], 1.0)
        .yaml();
    (stable, start_yaml(&yaml).await)
}

/// `GET /` with `count` extra headers `x-hN: value`, asking to close after it or not.
fn with_headers(count: usize, value: &str, close: bool) -> String {
    let mut request = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    if close {
        request.push_str("Connection: close\r\n");
    }
    for i in 0..count {
        request.push_str(&format!("x-h{i}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request
}

#[tokio::test]
async fn more_headers_than_the_limit_is_431() {
    let (stable, p) = hardened(&["limits: { maxHeaders: 20 }"]).await;
    let answer = exchange(p.listen[0], with_headers(30, "v", false).as_bytes()).await;
    assert_eq!(answer.status(), Some(431), "{}", answer.text());
    assert!(answer.closed);
    assert_eq!(stable.requests(), 0);

    // Within the limit the same shape passes.
    let answer = exchange(p.listen[0], with_headers(10, "v", true).as_bytes()).await;
    assert_eq!(answer.status(), Some(200), "{}", answer.text());
}

#[tokio::test]
async fn a_header_section_over_the_byte_limit_is_431() {
    let (stable, p) = hardened(&["limits: { maxHeaderBytes: 8192 }"]).await;
    // 12 headers of 1 KiB: few headers, many bytes.
    let value = "v".repeat(1024);
    let answer = exchange(p.listen[0], with_headers(12, &value, false).as_bytes()).await;
    assert_eq!(answer.status(), Some(431), "{}", answer.text());
    assert!(answer.closed);
    assert_eq!(stable.requests(), 0);

    // 6 KiB passes.
    let answer = exchange(p.listen[0], with_headers(6, &value, true).as_bytes()).await;
    assert_eq!(answer.status(), Some(200), "{}", answer.text());
}

#[tokio::test]
async fn a_malformed_request_is_400_and_the_connection_closes() {
    let (stable, p) = hardened(&[]).await;
    for request in [
        &b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"[..],
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nx-bad\x01: v\r\n\r\n",
    ] {
        let answer = exchange(p.listen[0], request).await;
        let shown = String::from_utf8_lossy(request);
        assert_eq!(answer.status(), Some(400), "{shown:?} → {}", answer.text());
        assert!(answer.closed, "{shown:?}: the connection stays open");
    }
    assert_eq!(stable.requests(), 0);
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_400_and_nothing_is_forwarded() {
    let (stable, p) = hardened(&[]).await;
    let request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n\
                    5\r\nhello\r\n0\r\n\r\n";
    let answer = exchange(p.listen[0], request).await;
    assert_eq!(answer.status(), Some(400), "{}", answer.text());
    assert!(answer.closed);
    assert_eq!(stable.requests(), 0, "{:?}", stable.seen());
}

#[tokio::test]
async fn a_stalled_header_section_is_closed_after_the_header_read_timeout() {
    let (stable, p) = hardened(&["timeouts: { headerRead: 300ms }"]).await;
    let mut stream = TcpStream::connect(p.listen[0]).await.expect("connect to the proxy");
    // The deadline sits well above the configured 300ms and below the 10s default, so that a
    // listener ignoring the setting fails here rather than passing late.
    let answer = exchange_on(&mut stream, b"GET / HTTP/1.1\r\n", Duration::from_secs(5)).await;
    assert!(answer.closed, "the connection stays open: {}", answer.text());
    assert!(
        answer.bytes.is_empty() || answer.status() == Some(408),
        "{}",
        answer.text()
    );
    assert_eq!((stable.requests(), stable.connections()), (0, 0));
}

#[tokio::test]
async fn every_request_head_of_a_keep_alive_connection_has_the_header_read_timeout() {
    // The watchdog times every request head: after whole requests, a head that stalls is
    // still cut off.
    let (stable, p) = hardened(&["timeouts: { headerRead: 300ms, idle: 60s }"]).await;
    let mut stream = TcpStream::connect(p.listen[0]).await.expect("connect to the proxy");
    for _ in 0..3 {
        get_ok(&mut stream).await;
    }
    let answer = exchange_on(&mut stream, b"GET / HTTP/1.1\r\n", Duration::from_secs(5)).await;
    assert!(answer.closed, "the connection stays open: {}", answer.text());
    assert_eq!(stable.requests(), 3);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_kept_past_the_header_read_timeout() {
    // Between requests only `idle` applies: `headerRead` is for a head under way.
    let (stable, p) = hardened(&["timeouts: { headerRead: 200ms, idle: 60s }"]).await;
    let mut stream = TcpStream::connect(p.listen[0]).await.expect("connect to the proxy");
    get_ok(&mut stream).await;
    still_open_after_silence(&mut stream, &stable).await;
}

#[tokio::test]
async fn a_request_body_that_came_late_is_not_taken_for_a_stalled_head() {
    let (stable, p) = hardened(&["timeouts: { headerRead: 200ms, idle: 60s }"]).await;
    let mut stream = TcpStream::connect(p.listen[0]).await.expect("connect to the proxy");
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
        .await
        .expect("write");
    // The body in a read of its own, after the head.
    tokio::time::sleep(Duration::from_millis(50)).await;
    stream.write_all(b"hello").await.expect("write");
    assert!(read_response(&mut stream).await.starts_with("HTTP/1.1 200"));
    still_open_after_silence(&mut stream, &stable).await;
}

#[tokio::test]
async fn a_keep_alive_connection_without_requests_is_closed_after_the_idle_timeout() {
    let (stable, p) = hardened(&["timeouts: { idle: 200ms, headerRead: 30s }"]).await;
    let mut stream = TcpStream::connect(p.listen[0]).await.expect("connect to the proxy");
    // One request, then silence: the idle watchdog (not the 30 s header timer) closes it.
    let answer = exchange_on(
        &mut stream,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(answer.status(), Some(200), "{}", answer.text());
    assert!(answer.closed, "the idle connection stayed open");
    assert_eq!(stable.requests(), 1);
}

#[tokio::test]
async fn a_busy_keep_alive_connection_outlives_many_idle_periods() {
    let (stable, p) = hardened(&["timeouts: { idle: 300ms, headerRead: 30s }"]).await;
    let mut stream = TcpStream::connect(p.listen[0]).await.expect("connect to the proxy");
    // Requests keep coming, more often than the idle period, for several periods: the watchdog
    // re-arms each time and leaves the connection open.
    for _ in 0..40 {
        get_ok(&mut stream).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Then silence: closed.
    let answer = exchange_on(&mut stream, b"", Duration::from_secs(10)).await;
    assert!(answer.closed, "the idle connection stayed open");
    assert_eq!(stable.requests(), 40);
}

#[tokio::test]
async fn an_http2_connection_whose_request_was_cancelled_is_closed_when_idle() {
    // A stream reset by the client drops its request on the proxy: the connection must not stay
    // counted busy, so the idle watchdog still closes it.
    let (stable, p) = hardened(&["timeouts: { idle: 200ms, headerRead: 30s }"]).await;
    stable.set_behaviour(Behaviour::Hang);
    let stream = TcpStream::connect(p.listen[0]).await.expect("connect to the proxy");
    let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("HTTP/2 handshake");
    let connection = tokio::spawn(connection);
    let request = http::Request::get("http://x/")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("a valid request");
    let response = sender.send_request(request);
    tokio::select! {
        r = response => panic!("the hanging upstream answered: {r:?}"),
        () = async { assert_eventually!(stable.requests() == 1) } => {}
    }
    // The response future is dropped: the client resets the stream.
    let closed = tokio::time::timeout(Duration::from_secs(10), connection).await;
    assert!(closed.is_ok(), "the idle HTTP/2 connection stayed open");
}

#[tokio::test]
async fn idle_upstream_connections_close_after_upstream_idle_even_when_never_taken_again() {
    // Traffic moves to another endpoint (as after a table swap): the first endpoint's pooled
    // connection is never taken again, and must still be closed once it idled too long.
    let old = MockUpstream::start("old").await;
    let new = MockUpstream::start("new").await;
    let yaml = Table::new()
        .on_free_ports()
        .setting("timeouts: { upstreamIdle: 300ms }")
        .route("old")
        .matching("pathPrefix: /old")
        .track("stable", &[old.addr()], 1.0)
        .route("new")
        .track("stable", &[new.addr()], 1.0)
        .yaml();
    let p = start_yaml(&yaml).await;
    let client = Client::http1();
    let r = client.get(&url(&p, "/old"), &[]).await.expect("request to /old");
    assert_eq!(r.status, 200);
    assert_eq!(old.open_connections(), 1);
    assert_eventually!({
        let r = client.get(&url(&p, "/new"), &[]).await.expect("request to /new");
        assert_eq!(r.status, 200);
        old.open_connections() == 0
    });
    assert_eq!(old.connections(), 1);
}

#[tokio::test]
async fn an_upstream_that_closes_after_every_answer_still_answers_every_request() {
    // It answers keep-alive requests without `Connection: close`, then closes: each pooled
    // connection is dead when the next request comes, and the request goes on a new one.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound").to_string();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = std::sync::Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::spawn(async move {
                if !read_head(&mut stream).await {
                    return;
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                // Dropped: closed without a word.
            });
        }
    });
    let yaml = Table::new()
        .on_free_ports()
        .route("app")
        .track("stable", &[addr], 1.0)
        .yaml();
    let p = start_yaml(&yaml).await;
    let client = Client::http1();
    for i in 0..50 {
        let r = client.get(&url(&p, "/"), &[]).await.expect("a response");
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::Relaxed), 50);
}

#[tokio::test]
async fn a_large_response_streams_through_before_the_upstream_has_sent_it_all() {
    // The upstream sends its first 64 KiB, then waits until the client has them: a proxy that
    // buffered the body would never deliver them. Then 4 MiB in all, byte for byte.
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 64;
    let byte = |i: usize| (i % 251) as u8;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("bound").to_string();
    let first_arrived = std::sync::Arc::new(tokio::sync::Notify::new());
    let arrived = std::sync::Arc::clone(&first_arrived);
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("the proxy connects");
        assert!(read_head(&mut stream).await, "the request");
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", CHUNK * CHUNKS);
        stream.write_all(head.as_bytes()).await.expect("head");
        for c in 0..CHUNKS {
            if c == 1 {
                arrived.notified().await;
            }
            let chunk: Vec<u8> = (c * CHUNK..(c + 1) * CHUNK).map(byte).collect();
            stream.write_all(&chunk).await.expect("chunk");
        }
    });
    let yaml = Table::new()
        .on_free_ports()
        .route("app")
        .track("stable", &[addr], 1.0)
        .yaml();
    let p = start_yaml(&yaml).await;

    let stream = TcpStream::connect(p.listen[0]).await.expect("connect to the proxy");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let request = http::Request::get("/")
        .header("host", "x")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("a valid request");
    let response = sender.send_request(request).await.expect("a response");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut received = Vec::with_capacity(CHUNK * CHUNKS);
    let read_all = async {
        let mut notified = false;
        while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
            if let Ok(data) = frame.expect("a body frame").into_data() {
                received.extend_from_slice(&data);
            }
            if !notified && received.len() >= CHUNK {
                first_arrived.notify_one();
                notified = true;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read_all)
        .await
        .expect("the first chunk came through before the upstream sent the rest");
    assert_eq!(received.len(), CHUNK * CHUNKS);
    assert!(
        received.iter().enumerate().all(|(i, b)| *b == byte(i)),
        "the body arrived altered"
    );
}

/// After one answered request on `stream`: five 200 ms header-read timeouts of silence (what is
/// under test is that nothing happens in them), then a second request is answered on the same
/// connection, and the upstream saw two requests on one connection.
async fn still_open_after_silence(stream: &mut TcpStream, stable: &MockUpstream) {
    tokio::time::sleep(Duration::from_secs(1)).await;
    get_ok(stream).await;
    assert_eq!((stable.requests(), stable.connections()), (2, 1));
}

/// Sends `GET /` on `stream` and expects `200`.
async fn get_ok(stream: &mut TcpStream) {
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let head = read_response(stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

/// Reads a request head (through its empty line) for a hand-written upstream; false when the
/// connection ended or failed first.
async fn read_head(stream: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// Reads one response with a `Content-Length` body; returns its head.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed mid-response: {}", String::from_utf8_lossy(&bytes));
        bytes.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse().ok())
                .expect("a content-length");
            if bytes.len() >= end + 4 + length {
                return text[..end].to_owned();
            }
        }
    }
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_until_one_closes() {
    let (_stable, p) = hardened(&["limits: { maxConnections: 1 }"]).await;
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut first = TcpStream::connect(p.listen[0]).await.expect("connect");
    first.write_all(request).await.expect("send");
    let mut buf = [0u8; 1024];
    let n = first.read(&mut buf).await.expect("the first connection is served");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));

    // The second connection is queued by the kernel but not accepted while the first is open.
    let mut second = TcpStream::connect(p.listen[0]).await.expect("connect");
    second.write_all(request).await.expect("send");
    let waited = tokio::time::timeout(Duration::from_millis(300), second.read(&mut buf)).await;
    assert!(
        waited.is_err(),
        "the second connection was served while the first was open"
    );

    drop(first);
    let n = tokio::time::timeout(Duration::from_secs(10), second.read(&mut buf))
        .await
        .expect("served once the first connection closed")
        .expect("read");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
}
