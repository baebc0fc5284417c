//! Hostile input at the edge, over real sockets, one test per class: request framing
//! (`Transfer-Encoding`, `Content-Length`, chunked bodies), `Host`, paths, header floods,
//! pipelining, upstream response framing, blame (what bad clients do to a track's stats) and slow
//! bodies.
//!
//! A class is a table of cases: the bytes a client writes, and what must follow: the statuses of
//! the whole responses it reads, what the upstreams received, and whether the proxy closed the
//! connection. Every case runs against its own proxy and mock upstreams, so nothing a case leaves
//! behind (a late request, a pooled connection) is seen by another; and a test reports every case
//! that failed, not only the first.
//!
//! Nothing here waits a fixed time: a client reads until the proxy closes the connection, until
//! the responses it expects are whole, or until [`DEADLINE`], which only a failing case reaches.
//! Whether a connection is still open is asked of the proxy: a [`PROBE`] request that an open
//! connection answers.

mod common;

use std::fmt;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use common::{admin_json, client_errors, metrics, track_stats, try_start_yaml};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use switchyard_proxy::Running;
use switchyard_testkit::{AfterReply, MockUpstream, RawUpstream, Table, assert_eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How long a client waits for an answer or a close. Only a failing case waits this long.
const DEADLINE: Duration = Duration::from_secs(5);

/// How long a client that writes a request in parts waits for its head to reach an upstream
/// before writing the rest. The proxy may hold a request until its body is whole, so the head
/// may never arrive: the wait is bounded and its end is not a failure.
const HEAD_WAIT: Duration = Duration::from_secs(1);

/// The request that tells whether a connection still serves: every layout routes it to `other`.
const PROBE: &[u8] = b"GET /probe HTTP/1.1\r\nHost: probe.example\r\nConnection: close\r\n\r\n";

/// A whole chunked body: `hello`.
const CHUNKED_HELLO: &str = "5\r\nhello\r\n0\r\n\r\n";

/// A chunked request whose first chunk size is not hex (class 3, and the blame test's bad client).
const MALFORMED: &[u8] = b"POST /public/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";

// ---------------------------------------------------------------------------------------------
// The classes.

/// RFC 9112 §6.1: only `chunked`, alone and once, frames a request body; any other single coding
/// is not implemented (501); anything ambiguous is refused (400). Nothing refused is forwarded.
#[tokio::test]
async fn transfer_encoding_is_one_chunked_coding_or_the_request_is_refused() {
    fn with_te(value: &[u8]) -> Vec<u8> {
        [
            b"POST /public/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ",
            value,
            b"\r\n\r\n",
            CHUNKED_HELLO.as_bytes(),
        ]
        .concat()
    }
    let hello = saw_body("public", "/public/x", "hello");
    let cases = vec![
        case("chunked", with_te(b"chunked"), &[200], hello, After::StaysOpen),
        case("Chunked", with_te(b"Chunked"), &[200], hello, After::StaysOpen),
        case("CHUNKED", with_te(b"CHUNKED"), &[200], hello, After::StaysOpen),
        case("gzip", with_te(b"gzip"), &[501], Upstream::Nothing, After::Closes),
        case(
            "identity",
            with_te(b"identity"),
            &[501],
            Upstream::Nothing,
            After::Closes,
        ),
        case(
            "x-custom",
            with_te(b"x-custom"),
            &[501],
            Upstream::Nothing,
            After::Closes,
        ),
        case(
            "gzip, chunked",
            with_te(b"gzip, chunked"),
            &[400],
            Upstream::Nothing,
            After::Closes,
        ),
        case(
            "chunked, chunked",
            with_te(b"chunked, chunked"),
            &[400],
            Upstream::Nothing,
            After::Closes,
        ),
        case(
            ", chunked",
            with_te(b", chunked"),
            &[400],
            Upstream::Nothing,
            After::Closes,
        ),
        case(
            "chunked,",
            with_te(b"chunked,"),
            &[400],
            Upstream::Nothing,
            After::Closes,
        ),
        case(
            "two Transfer-Encoding lines",
            format!(
                "POST /public/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
                 Transfer-Encoding: chunked\r\n\r\n{CHUNKED_HELLO}"
            ),
            &[400],
            Upstream::Nothing,
            After::Closes,
        ),
        // `chunked` and a no-break space (0xA0): a parser that trims Unicode whitespace reads
        // `chunked`.
        case(
            "obs-text in the value",
            with_te(b"chunked\xa0"),
            &[400],
            Upstream::Nothing,
            After::Closes,
        ),
        case(
            "Transfer-Encoding on HTTP/1.0",
            format!("POST /public/x HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{CHUNKED_HELLO}"),
            &[400],
            Upstream::Nothing,
            After::Closes,
        ),
        case(
            "Content-Length then Transfer-Encoding",
            format!(
                "POST /public/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n\
                 {CHUNKED_HELLO}"
            ),
            &[400],
            Upstream::Nothing,
            After::Closes,
        ),
        case(
            "Transfer-Encoding then Content-Length",
            format!(
                "POST /public/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n\
                 {CHUNKED_HELLO}"
            ),
            &[400],
            Upstream::Nothing,
            After::Closes,
        ),
    ];
    run(Layout::Public, cases).await;
}

/// `Content-Length` is one run of digits; repeated lines must agree (RFC 9110 §8.6).
#[tokio::test]
async fn content_length_is_digits_and_one_value() {
    fn with_cl(lines: &[&str]) -> String {
        let lines: String = lines.iter().map(|v| format!("Content-Length: {v}\r\n")).collect();
        format!("POST /public/x HTTP/1.1\r\nHost: x\r\n{lines}\r\nhello")
    }
    let refused = |name, lines: &[&str]| case(name, with_cl(lines), &[400], Upstream::Nothing, After::Closes);
    let hello = saw_body("public", "/public/x", "hello");
    let cases = vec![
        case("5", with_cl(&["5"]), &[200], hello, After::StaysOpen),
        refused("+5", &["+5"]),
        refused("-1", &["-1"]),
        refused("5a", &["5a"]),
        refused("0x5", &["0x5"]),
        refused("5 5 (inner space)", &["5 5"]),
        refused("99999999999999999999999 (overflow)", &["99999999999999999999999"]),
        refused("two lines, 5 and 6", &["5", "6"]),
        case(
            "two lines, 5 and 5",
            with_cl(&["5", "5"]),
            &[200],
            hello,
            After::StaysOpen,
        ),
    ];
    run(Layout::Public, cases).await;
}

/// A chunked body that breaks the grammar (RFC 9112 §7.1) is 400 and a close, and no upstream
/// ever gets the request whole; a valid one with extensions or trailers goes through. Each body
/// is written twice: with its head in one write, and after its head ("body after head": head and
/// a good first chunk, then, once the head has reached an upstream or [`HEAD_WAIT`] has passed,
/// the rest; the ordering is best-effort).
///
/// The mock records a request whose body failed with an empty body, so "whole" here means with a
/// body; every case sends one.
#[tokio::test]
async fn a_malformed_chunked_body_is_400_and_never_reaches_an_upstream_whole() {
    const HEAD: &str = "POST /public/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    const FIRST: &str = "5\r\nhello\r\n";
    let bodies: Vec<(&'static str, Vec<u8>, Option<&str>)> = vec![
        ("bad size syntax", b"zz\r\nhello\r\n0\r\n\r\n".to_vec(), None),
        (
            "size overflow",
            b"fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n".to_vec(),
            None,
        ),
        (
            "bare CR in a chunk extension",
            b"5;a\rb\r\nhello\r\n0\r\n\r\n".to_vec(),
            None,
        ),
        (
            "chunk data not followed by CRLF",
            b"5\r\nhelloX\r\n0\r\n\r\n".to_vec(),
            None,
        ),
        (
            "40 KB chunk extension",
            [b"5;x=".as_slice(), &[b'a'; 40_000], b"\r\nhello\r\n0\r\n\r\n"].concat(),
            None,
        ),
        (
            "valid, with an extension",
            b"5;name=value\r\nhello\r\n0\r\n\r\n".to_vec(),
            Some("hello"),
        ),
        (
            "valid, with a trailer",
            b"5\r\nhello\r\n0\r\nx-trailer: t\r\n\r\n".to_vec(),
            Some("hello"),
        ),
    ];
    let mut cases = Vec::new();
    for (name, body, good) in bodies {
        let whole = [HEAD.as_bytes(), &body].concat();
        let parts = vec![[HEAD, FIRST].concat().into_bytes(), body];
        cases.push(match good {
            Some(_) => case(
                name,
                whole,
                &[200],
                saw_body("public", "/public/x", "hello"),
                After::StaysOpen,
            ),
            None => case(name, whole, &[400], Upstream::NothingWhole, After::Closes),
        });
        let name: &'static str = leak(format!("{name}, body after head"));
        cases.push(match good {
            Some(_) => case(
                name,
                b"",
                &[200],
                saw_body("public", "/public/x", "hellohello"),
                After::StaysOpen,
            ),
            None => case(name, b"", &[400], Upstream::NothingWhole, After::Closes),
        });
        cases.last_mut().expect("just pushed").writes = parts;
    }
    run(Layout::Public, cases).await;
}

/// RFC 9112 §3.2: an HTTP/1.1 request has exactly one `Host`, and an absolute-form target's
/// authority replaces it, for routing and for the upstream. The routes `a` and `b` differ only by
/// host.
#[tokio::test]
async fn the_host_is_one_and_an_absolute_target_overrides_it() {
    let cases = vec![
        case(
            "Host a.example",
            "GET /public/x HTTP/1.1\r\nHost: a.example\r\n\r\n",
            &[200],
            saw_host("a", "/public/x", "a.example"),
            After::StaysOpen,
        ),
        case(
            "no Host",
            "GET /public/x HTTP/1.1\r\n\r\n",
            &[400],
            Upstream::Nothing,
            After::Closes,
        ),
        case(
            "two Host lines, the same",
            "GET /public/x HTTP/1.1\r\nHost: a.example\r\nHost: a.example\r\n\r\n",
            &[400],
            Upstream::Nothing,
            After::Closes,
        ),
        case(
            "two Host lines, different",
            "GET /public/x HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
            &[400],
            Upstream::Nothing,
            After::Closes,
        ),
        case(
            "absolute form over another Host",
            "GET http://a.example/public/x HTTP/1.1\r\nHost: b.example\r\n\r\n",
            &[200],
            saw_host("a", "/public/x", "a.example"),
            After::StaysOpen,
        ),
        // No host to match: the catch-all takes it. HTTP/1.0 closes after its answer anyway.
        case(
            "HTTP/1.0 without Host",
            "GET /public/x HTTP/1.0\r\n\r\n",
            &[200],
            saw("other", "/public/x"),
            After::Unspecified,
        ),
    ];
    let mut failures = run_cases(Layout::Hosts, cases).await;

    // HTTP/2: `:authority` and a `host` header that disagree (RFC 9113 §8.3.1). hyper's client
    // sends both as given (it adds no `host` of its own on HTTP/2).
    let edge = Edge::start(Layout::Hosts, &[]).await;
    let outcome = h2c_get(&edge, "http://a.example/public/x", &[("host", "b.example")]).await;
    let heads = edge.heads();
    match outcome {
        Ok(400) if heads == 0 => {}
        Ok(status) => failures.push(format!(
            "h2c :authority a.example with host b.example: expected [400], nothing forwarded; got \
             [{status}], upstreams: {}",
            list(&edge.arrivals(), heads)
        )),
        Err(e) => failures.push(format!(
            "h2c :authority a.example with host b.example: expected [400]; got no response: {e}"
        )),
    }
    report(failures);
}

/// Paths are normalized (RFC 3986 §6.2.2) before routing and forwarded normalized, so that a
/// route and its upstream see the same path; escaped slashes and backslashes are refused by
/// default. The query string is forwarded as it came.
#[tokio::test]
async fn paths_are_normalized_before_routing_and_forwarded_normalized() {
    let get = |target: &str| format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
    // Framing is intact after a refused path, so whether the connection stays open is not
    // specified.
    let refused = |name, target| case(name, get(target), &[400], Upstream::Nothing, After::Unspecified);
    let cases = vec![
        case(
            "/public/x",
            get("/public/x"),
            &[200],
            saw("public", "/public/x"),
            After::StaysOpen,
        ),
        case(
            "/public/../admin",
            get("/public/../admin"),
            &[200],
            saw("other", "/admin"),
            After::StaysOpen,
        ),
        case(
            "/public/%2e%2e/admin",
            get("/public/%2e%2e/admin"),
            &[200],
            saw("other", "/admin"),
            After::StaysOpen,
        ),
        case(
            "/public/%2E%2E/admin",
            get("/public/%2E%2E/admin"),
            &[200],
            saw("other", "/admin"),
            After::StaysOpen,
        ),
        case(
            "/public/./x",
            get("/public/./x"),
            &[200],
            saw("public", "/public/x"),
            After::StaysOpen,
        ),
        case(
            "/p%75blic/x",
            get("/p%75blic/x"),
            &[200],
            saw("public", "/public/x"),
            After::StaysOpen,
        ),
        case(
            "the query string is kept",
            get("/public/./x?a=%2e%2e/../&b=%2F"),
            &[200],
            saw("public", "/public/x?a=%2e%2e/../&b=%2F"),
            After::StaysOpen,
        ),
        refused("/public/%2fx", "/public/%2fx"),
        refused("/public%2F..%2Fadmin", "/public%2F..%2Fadmin"),
        refused("/public\\..\\admin", "/public\\..\\admin"),
        case(
            "/public%2F..%2Fadmin, escapedSlashes: unescape",
            get("/public%2F..%2Fadmin"),
            &[200],
            saw("other", "/admin"),
            After::StaysOpen,
        )
        .with("paths: { escapedSlashes: unescape }"),
        case(
            "//public//x, mergeSlashes: true",
            get("//public//x"),
            &[200],
            saw("public", "/public/x"),
            After::StaysOpen,
        )
        .with("paths: { mergeSlashes: true }"),
    ];
    run(Layout::Public, cases).await;
}

/// `limits.maxHeaders` (100) and `limits.maxHeaderBytes` (32 KiB) by default: past either, 431
/// and a close, and nothing forwarded. The upstream is a raw one: a mock's HTTP server has a
/// header limit of its own (100), which the headers the proxy adds would cross.
#[tokio::test]
async fn header_floods_are_431_and_never_forwarded() {
    /// `GET /raw/x` with `Host` and `count` more headers of `value`.
    fn with_headers(count: usize, value: &str) -> String {
        let headers: String = (0..count).map(|i| format!("x-h{i}: {value}\r\n")).collect();
        format!("GET /raw/x HTTP/1.1\r\nHost: x\r\n{headers}\r\n")
    }
    let kib = "v".repeat(1024);
    let flood = |name, request| case(name, request, &[431], Upstream::Nothing, After::Closes);
    let cases = vec![
        case(
            "100 headers",
            with_headers(99, "v"),
            &[200],
            Upstream::RawHead,
            After::StaysOpen,
        ),
        flood("101 headers", with_headers(100, "v")),
        case(
            "a 30 KiB head",
            with_headers(30, &kib),
            &[200],
            Upstream::RawHead,
            After::StaysOpen,
        ),
        flood("a 40 KiB head", with_headers(40, &kib)),
        flood("a 40 KiB header value", with_headers(1, &"v".repeat(40 * 1024))),
    ];
    run(Layout::Raw, cases).await;
}

/// Requests pipelined in one write are answered in order; one that must be refused ends the
/// connection there, and nothing after the request before it is forwarded.
#[tokio::test]
async fn pipelined_requests_are_answered_in_order_until_one_is_refused() {
    const FIRST: &str = "GET /public/a HTTP/1.1\r\nHost: x\r\n\r\n";
    let first_only = Upstream::Saw {
        route: "public",
        requests: &[("/public/a", "")],
        host: None,
    };
    let cases = vec![
        case(
            "two GETs",
            format!("{FIRST}GET /public/b HTTP/1.1\r\nHost: x\r\n\r\n"),
            &[200, 200],
            Upstream::Saw {
                route: "public",
                requests: &[("/public/a", ""), ("/public/b", "")],
                host: None,
            },
            After::StaysOpen,
        ),
        case(
            "a GET, then Content-Length with Transfer-Encoding",
            format!(
                "{FIRST}POST /public/b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\
                 Transfer-Encoding: chunked\r\n\r\n{CHUNKED_HELLO}"
            ),
            &[200, 400],
            first_only,
            After::Closes,
        ),
        case(
            "a GET, then Transfer-Encoding: gzip",
            format!("{FIRST}POST /public/b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nhello"),
            &[200, 501],
            first_only,
            After::Closes,
        ),
    ];
    run(Layout::Public, cases).await;
}

/// An upstream response that breaks HTTP/1.1 framing is never passed on as if it were whole: a
/// broken head is 502, a broken body ends the downstream connection before the response ends.
/// Either way the track counts one upstream error of kind `protocol`, and the proxy goes on
/// serving.
#[tokio::test]
async fn an_upstream_that_breaks_framing_is_a_protocol_error_of_its_track() {
    let cases: Vec<(&str, &'static [u8], AfterReply, Expected)> = vec![
        (
            "Content-Length with Transfer-Encoding",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            AfterReply::Close,
            Expected::Status(502),
        ),
        (
            "Content-Length: abc",
            b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nhello",
            AfterReply::Close,
            Expected::Status(502),
        ),
        (
            "Transfer-Encoding: gzip (close-delimited, still coded)",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello",
            AfterReply::Close,
            Expected::Status(502),
        ),
        (
            "a status outside 100-599",
            b"HTTP/1.1 848 Odd\r\nContent-Length: 5\r\n\r\nhello",
            AfterReply::Close,
            Expected::Status(502),
        ),
        (
            "101 to a request that asked for no upgrade",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
            AfterReply::KeepOpen,
            Expected::Status(502),
        ),
        (
            "a malformed chunk after the head",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
            AfterReply::KeepOpen,
            Expected::CutShort,
        ),
        (
            "Content-Length 100, 10 bytes, then a close",
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
            AfterReply::Close,
            Expected::CutShort,
        ),
    ];
    let mut failures = Vec::new();
    for (name, reply, after, expected) in cases {
        let edge = Edge::raw(reply, after, &[]).await;
        let outcome = edge
            .exchange(&[b"GET /raw/x HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()], expected.want())
            .await;
        let mut problems = Vec::new();
        if let Err(why) = expected.check(&outcome.answer) {
            problems.push(why);
        }
        let p = &edge.proxy;
        let counted =
            eventually(|| async { track_stats(p, "raw", "stable").await["upstreamErrors"]["protocol"] == 1 }).await;
        let s = track_stats(p, "raw", "stable").await;
        let kinds = &s["upstreamErrors"];
        if !counted || kinds["reset"] != 0 || kinds["timeout"] != 0 || kinds["connect"] != 0 {
            problems.push(format!(
                "expected upstreamErrors {{connect: 0, timeout: 0, reset: 0, protocol: 1}}, got {kinds}"
            ));
        }
        if let Err(why) = serves_again(&edge).await {
            problems.push(why);
        }
        if !problems.is_empty() {
            failures.push(format!("{name}: {}", problems.join("; ")));
        }
    }
    report(failures);
}

/// The proxy answers in its own version (RFC 9110 §6.2), and a list of equal lengths an upstream
/// sent becomes the one value.
#[tokio::test]
async fn an_old_or_loose_upstream_head_is_answered_in_the_proxys_own_terms() {
    let edge = Edge::raw(
        b"HTTP/1.0 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
        AfterReply::Close,
        &[],
    )
    .await;
    let mut stream = TcpStream::connect(edge.proxy.listen[0])
        .await
        .expect("connect to the proxy");
    stream
        .write_all(b"GET /raw/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write the request");
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut bytes))
        .await
        .expect("the proxy answers and closes")
        .expect("read the answer");
    let text = String::from_utf8_lossy(&bytes).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200 ok\r\n"), "{text}");
    assert!(text.contains("\r\ncontent-length: 5\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nhello"), "{text}");
}

/// The blame test: bad clients (malformed chunked bodies, uploads abandoned half-way) against
/// healthy upstreams are counted on the route as client errors, and never against a track:
/// no errors, no 5xx, no upstream errors of any kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_clients_are_counted_on_their_route_and_never_against_a_track() {
    const CLIENTS: usize = 20;
    const EACH: usize = 5; // of each kind, per client: 100 malformed and 100 aborted in all
    let edge = Edge::start(Layout::Public, &[]).await;
    let addr = edge.proxy.listen[0];
    let mut clients = JoinSet::new();
    for _ in 0..CLIENTS {
        clients.spawn(async move {
            for _ in 0..EACH {
                // Malformed: read until the proxy closes (or the deadline).
                let mut stream = TcpStream::connect(addr).await.expect("connect to the proxy");
                let _ = stream.write_all(MALFORMED).await;
                let mut bytes = Vec::new();
                read_until(&mut stream, &mut bytes, None, Instant::now() + DEADLINE).await;
                // Aborted: 10 of the 1000 bytes promised, then the client is gone.
                let mut stream = TcpStream::connect(addr).await.expect("connect to the proxy");
                let _ = stream
                    .write_all(b"POST /public/x HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
                    .await;
                drop(stream);
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done.expect("a client task");
    }
    let p = &edge.proxy;
    let n = (CLIENTS * EACH) as u64;
    // Both counts in means every bad request has been dealt with: the tracks' numbers are final.
    // (`eventually` rather than `assert_eventually!`, to show the route's numbers on a failure.)
    let settled = eventually(|| async {
        let c = client_errors(p, "public").await;
        c["malformed"].as_u64() >= Some(n) && c["aborted"].as_u64() >= Some(n)
    })
    .await;
    assert!(
        settled,
        "clientErrors did not reach malformed {n} and aborted {n} within 10 s; the route's stats: {}",
        readable(admin_json(p, "/stats?window=300s").await["routes"]["public"].clone())
    );
    let c = client_errors(p, "public").await;
    assert_eq!(
        (&c["malformed"], &c["aborted"]),
        (&Value::from(n), &Value::from(n)),
        "clientErrors: {c}"
    );
    for track in ["stable", "canary"] {
        let s = track_stats(p, "public", track).await;
        blameless(&s, track);
    }

    // A healthy request after them all is counted as usual.
    let before = public_totals(p).await;
    let answer = exchange_on_new(p, b"GET /public/ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(answer.statuses(), [200], "{answer}");
    assert_eventually!(public_totals(p).await == (before.0 + 1, before.1 + 1));
    for track in ["stable", "canary"] {
        blameless(&track_stats(p, "public", track).await, track);
    }
}

/// `timeouts.requestBodyIdle`: a request body that stops arriving is 408 (or a bare close), the
/// connection closes, no upstream gets the request whole, and the route counts a client timeout,
/// not the track. `timeouts.responseBodyIdle`: a response body that stops arriving ends the
/// downstream connection before the response does, and the track counts an upstream timeout.
///
/// On tokio's paused clock, at two settings: the connection ends at or after its timeout, and well
/// before three times it.
#[tokio::test(start_paused = true)]
async fn a_stalled_body_is_given_up_after_its_idle_timeout() {
    let mut failures = Vec::new();
    for (setting, idle) in [("1s", Duration::from_secs(1)), ("1m", Duration::from_secs(60))] {
        // A request body: 10 of 100 bytes, then silence.
        let edge = Edge::start(
            Layout::Public,
            // The idle limit alone: the minimum rate would cut this body first.
            &[
                &format!("timeouts: {{ requestBodyIdle: {setting} }}"),
                "limits: { requestBodyMinRate: 0 }",
            ],
        )
        .await;
        let mut stream = TcpStream::connect(edge.proxy.listen[0])
            .await
            .expect("connect to the proxy");
        let start = Instant::now();
        let _ = stream
            .write_all(b"POST /public/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
            .await;
        let mut bytes = Vec::new();
        let end = read_until(&mut stream, &mut bytes, None, start + 3 * idle).await;
        let elapsed = start.elapsed();
        let answer = Answer::of(bytes, end, None);
        let mut problems = Vec::new();
        if !answer.statuses().iter().all(|s| *s == 408) || answer.cut.is_some() {
            problems.push(format!("expected a 408 or nothing; got {answer}"));
        }
        if end != End::Closed {
            problems.push(format!("the connection was still open after {:?}", 3 * idle));
        } else if elapsed < idle {
            problems.push(format!("the connection closed after {elapsed:?}, before the timeout"));
        }
        let heads = edge.heads();
        let arrivals = edge.arrivals();
        if let Err(why) = Upstream::NothingWhole.check(heads, &arrivals) {
            problems.push(why);
        }
        let p = &edge.proxy;
        if !eventually(|| async { client_errors(p, "public").await["timeout"] == 1 }).await {
            problems.push(format!(
                "expected clientErrors.timeout 1, got {}",
                client_errors(p, "public").await
            ));
        }
        for track in ["stable", "canary"] {
            let s = track_stats(p, "public", track).await;
            if s["errors"] != 0 {
                problems.push(format!("the {track} track counts errors: {s}"));
            }
        }
        if !problems.is_empty() {
            failures.push(format!("requestBodyIdle {setting}: {}", problems.join("; ")));
        }

        // A response body: 10 of 100 bytes, then silence with the connection open.
        let edge = Edge::raw(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
            AfterReply::KeepOpen,
            &[&format!("timeouts: {{ responseBodyIdle: {setting} }}")],
        )
        .await;
        let mut stream = TcpStream::connect(edge.proxy.listen[0])
            .await
            .expect("connect to the proxy");
        let start = Instant::now();
        let _ = stream.write_all(b"GET /raw/x HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let mut bytes = Vec::new();
        let end = read_until(&mut stream, &mut bytes, None, start + 3 * idle).await;
        let elapsed = start.elapsed();
        let answer = Answer::of(bytes, end, None);
        let mut problems = Vec::new();
        if !answer.responses.is_empty() || answer.cut.as_ref().and_then(|c| c.status) != Some(200) {
            problems.push(format!("expected a 200 cut short; got {answer}"));
        }
        if end != End::Closed {
            problems.push(format!("the connection was still open after {:?}", 3 * idle));
        } else if elapsed < idle {
            problems.push(format!("the connection closed after {elapsed:?}, before the timeout"));
        }
        let p = &edge.proxy;
        if !eventually(|| async { track_stats(p, "raw", "stable").await["upstreamErrors"]["timeout"] == 1 }).await {
            problems.push(format!(
                "expected upstreamErrors.timeout 1, got {}",
                track_stats(p, "raw", "stable").await["upstreamErrors"]
            ));
        }
        if !problems.is_empty() {
            failures.push(format!("responseBodyIdle {setting}: {}", problems.join("; ")));
        }
    }
    report(failures);
}

/// A body that trickles in slower than `limits.requestBodyMinRate` (240 bytes a second by
/// default), once `timeouts.requestBodyGrace` (5s) has passed, is given up as a client timeout:
/// a byte a second, as a slow-body attack sends, is cut after the grace. A body that keeps the
/// rate, however long it takes, is forwarded whole.
#[tokio::test(start_paused = true)]
async fn a_body_slower_than_its_minimum_rate_is_given_up_after_the_grace() {
    let mut failures = Vec::new();
    let edge = Edge::start(Layout::Public, &[]).await;
    let mut stream = TcpStream::connect(edge.proxy.listen[0])
        .await
        .expect("connect to the proxy");
    let start = Instant::now();
    let _ = stream
        .write_all(b"POST /public/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        .await;
    // A byte a second until the proxy answers.
    let mut bytes = Vec::new();
    let mut end = End::Deadline;
    for _ in 0..100 {
        if stream.write_all(b"x").await.is_err() {
            break;
        }
        end = read_until(&mut stream, &mut bytes, None, Instant::now() + Duration::from_secs(1)).await;
        if end == End::Closed {
            break;
        }
    }
    let elapsed = start.elapsed();
    let answer = Answer::of(bytes, end, None);
    if answer.statuses() != [408] || end != End::Closed {
        failures.push(format!("a byte a second: expected a 408 and the close; got {answer}"));
    }
    if elapsed < Duration::from_secs(5) || elapsed > Duration::from_secs(10) {
        failures.push(format!(
            "a byte a second was cut after {elapsed:?}, not after the 5s grace"
        ));
    }
    if let Err(why) = Upstream::NothingWhole.check(edge.heads(), &edge.arrivals()) {
        failures.push(format!("a byte a second: {why}"));
    }
    let p = &edge.proxy;
    if !eventually(|| async { client_errors(p, "public").await["timeout"] == 1 }).await {
        failures.push(format!(
            "expected clientErrors.timeout 1, got {}",
            client_errors(p, "public").await
        ));
    }
    blameless(&track_stats(p, "public", "stable").await, "stable");

    // 300 bytes a second for 10 seconds: slow, but never below the rate.
    let mut stream = TcpStream::connect(edge.proxy.listen[0])
        .await
        .expect("connect to the proxy");
    let _ = stream
        .write_all(b"POST /public/steady HTTP/1.1\r\nHost: x\r\nContent-Length: 3000\r\nConnection: close\r\n\r\n")
        .await;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let _ = stream.write_all(&[b'y'; 75]).await;
    }
    let mut bytes = Vec::new();
    let end = read_until(&mut stream, &mut bytes, None, Instant::now() + DEADLINE).await;
    let answer = Answer::of(bytes, end, None);
    if answer.statuses() != [200] {
        failures.push(format!("300 bytes a second: expected [200]; got {answer}"));
    }
    let steady = edge
        .arrivals()
        .into_iter()
        .filter(|a| a.target == "/public/steady")
        .count();
    if steady != 1 {
        failures.push(format!(
            "300 bytes a second: the upstream saw {steady} whole requests, not 1"
        ));
    }
    report(failures);
}

/// An upstream that answers before the request body is whole (a `405` to an upload, as a server
/// of static files does): the client gets the answer and its connection closes; the upstream
/// connection is closed, never pooled with its request unfinished, where it would hold the next
/// request until the slow body ended; the next client is answered at once; neither counts
/// against anyone. This is how slow bodies used to starve fresh clients.
#[tokio::test]
async fn an_answer_before_the_request_body_ends_frees_the_upstream_connection() {
    let edge = Edge::raw(
        b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n",
        AfterReply::KeepOpen,
        &[],
    )
    .await;
    let raw = edge.raw.as_ref().expect("a raw upstream");
    let mut failures = Vec::new();
    let mut slow = TcpStream::connect(edge.proxy.listen[0])
        .await
        .expect("connect to the proxy");
    let _ = slow
        .write_all(b"POST /raw/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n0123456789")
        .await;
    let mut bytes = Vec::new();
    let end = read_until(&mut slow, &mut bytes, None, Instant::now() + DEADLINE).await;
    let answer = Answer::of(bytes, end, None);
    if answer.statuses() != [405] || end != End::Closed {
        failures.push(format!(
            "the unfinished upload: expected [405] and the connection closed; got {answer}"
        ));
    }
    if !eventually(|| async { raw.open_connections() == 0 }).await {
        failures.push(format!(
            "the upstream connection of the unfinished upload is still open ({} open)",
            raw.open_connections()
        ));
    }
    let answer = exchange_on_new(
        &edge.proxy,
        b"GET /raw/page HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    if answer.statuses() != [405] {
        failures.push(format!("the next client: expected [405]; got {answer}"));
    }
    if raw.requests() != 2 {
        failures.push(format!("the upstream read {} request heads, not 2", raw.requests()));
    }
    let p = &edge.proxy;
    let s = track_stats(p, "raw", "stable").await;
    if s["requests"] != 2 || s["errors"] != 0 {
        failures.push(format!("expected 2 requests and no errors on the track; got {s}"));
    }
    let clients = client_errors(p, "raw").await;
    if clients.as_object().is_none_or(|kinds| kinds.values().any(|n| n != 0)) {
        failures.push(format!("expected no client errors; got {clients}"));
    }
    report(failures);
}

/// `/metrics` carries client errors per route and kind, and `protocol` as an upstream error kind.
#[tokio::test]
async fn client_errors_and_protocol_errors_are_prometheus_series() {
    let edge = Edge::start(Layout::Public, &[]).await;
    let p = &edge.proxy;
    exchange_on_new(p, MALFORMED).await;
    let malformed = |text: &str| {
        text.lines().any(|l| {
            l.starts_with("switchyard_client_errors_total{")
                && l.contains("route=\"public\"")
                && l.contains("kind=\"malformed\"")
                && l.ends_with(" 1")
        })
    };
    assert_eventually!(malformed(&metrics(p).await));
    let text = metrics(p).await;
    assert!(
        text.lines()
            .any(|l| l.starts_with("switchyard_upstream_errors_total{") && l.contains("kind=\"protocol\"")),
        "no switchyard_upstream_errors_total series of kind \"protocol\" in\n{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// Cases and what they expect.

/// One request (or several, pipelined) and what must follow.
struct Case {
    name: &'static str,
    /// Extra top-level settings of the proxy's configuration.
    settings: Vec<String>,
    /// What the client writes; before each part after the first it waits for a request head to
    /// reach an upstream, up to [`HEAD_WAIT`].
    writes: Vec<Vec<u8>>,
    /// The statuses of the whole responses, in order.
    statuses: &'static [u16],
    upstream: Upstream,
    after: After,
}

fn case(
    name: &'static str,
    bytes: impl AsRef<[u8]>,
    statuses: &'static [u16],
    upstream: Upstream,
    after: After,
) -> Case {
    Case {
        name,
        settings: Vec::new(),
        writes: vec![bytes.as_ref().to_vec()],
        statuses,
        upstream,
        after,
    }
}

impl Case {
    /// With a setting line (`paths: { mergeSlashes: true }`).
    fn with(mut self, setting: &str) -> Self {
        self.settings.push(setting.to_owned());
        self
    }

    /// What went wrong, if anything.
    fn check(&self, outcome: &Outcome) -> Result<(), String> {
        let answer = &outcome.answer;
        let statuses = answer.statuses() == self.statuses && answer.cut.is_none();
        let upstream = self.upstream.check(outcome.heads, &outcome.arrivals);
        let after = match self.after {
            After::Closes => answer.conn == Conn::Closed,
            After::StaysOpen => answer.conn == Conn::Open,
            After::Unspecified => true,
        };
        if statuses && upstream.is_ok() && after {
            return Ok(());
        }
        Err(format!(
            "expected {:?}, {}, {}; got {answer}; upstreams: {}{}",
            self.statuses,
            self.upstream,
            self.after,
            list(&outcome.arrivals, outcome.heads),
            upstream.err().map(|e| format!(" ({e})")).unwrap_or_default(),
        ))
    }
}

/// What the upstreams must have received.
#[derive(Debug, Clone, Copy)]
enum Upstream {
    /// Not even a request head.
    Nothing,
    /// No whole request: a head may have arrived, but no request seen ended with its body.
    NothingWhole,
    /// One request head at the raw upstream, and nothing at any mock.
    RawHead,
    /// Exactly these requests (target, body), in any order, between the upstreams of `route`,
    /// with this `Host` if one is given; nothing reached any other upstream.
    Saw {
        route: &'static str,
        requests: &'static [(&'static str, &'static str)],
        host: Option<&'static str>,
    },
}

/// One request with no body, at `route`.
fn saw(route: &'static str, target: &'static str) -> Upstream {
    Upstream::Saw {
        route,
        requests: leak(vec![(target, "")]),
        host: None,
    }
}

/// One request with `body`, at `route`.
fn saw_body(route: &'static str, target: &'static str, body: &'static str) -> Upstream {
    Upstream::Saw {
        route,
        requests: leak(vec![(target, body)]),
        host: None,
    }
}

/// One request with no body and `Host: host`, at `route`.
fn saw_host(route: &'static str, target: &'static str, host: &'static str) -> Upstream {
    Upstream::Saw {
        route,
        requests: leak(vec![(target, "")]),
        host: Some(host),
    }
}

impl Upstream {
    fn check(&self, heads: u64, arrivals: &[Arrival]) -> Result<(), String> {
        match *self {
            Self::RawHead if heads == 1 && arrivals.is_empty() => Ok(()),
            Self::RawHead => Err(format!("{heads} request head(s) reached the upstreams")),
            Self::Nothing if heads == 0 => Ok(()),
            Self::Nothing => Err(format!("{heads} request head(s) reached an upstream")),
            Self::NothingWhole => match arrivals.iter().find(|a| !a.body.is_empty()) {
                None => Ok(()),
                Some(a) => Err(format!("{a} arrived whole")),
            },
            Self::Saw { route, requests, host } => {
                let mut want: Vec<(&str, &[u8])> = requests.iter().map(|(t, b)| (*t, b.as_bytes())).collect();
                let mut got: Vec<(&str, &[u8])> = arrivals.iter().map(|a| (a.target.as_str(), &a.body[..])).collect();
                want.sort_unstable();
                got.sort_unstable();
                if heads != requests.len() as u64 {
                    Err(format!("{heads} request head(s) reached the upstreams"))
                } else if let Some(a) = arrivals.iter().find(|a| a.route != route) {
                    Err(format!("{a} is not route {route}"))
                } else if want != got {
                    Err("other targets or bodies".to_owned())
                } else if let Some(a) = arrivals.iter().find(|a| host.is_some() && a.host.as_deref() != host) {
                    Err(format!("{a} has another Host"))
                } else {
                    Ok(())
                }
            }
        }
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Nothing => f.write_str("nothing forwarded"),
            Self::NothingWhole => f.write_str("nothing forwarded whole"),
            Self::RawHead => f.write_str("forwarded"),
            Self::Saw { route, requests, host } => {
                write!(f, "route {route} received {requests:?}")?;
                match host {
                    Some(h) => write!(f, " with Host {h}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// What must become of the connection after the case's responses.
#[derive(Debug, Clone, Copy)]
enum After {
    /// The proxy closes it.
    Closes,
    /// It serves another request.
    StaysOpen,
    /// Either (the spec says nothing).
    Unspecified,
}

impl fmt::Display for After {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Closes => "closed",
            Self::StaysOpen => "open",
            Self::Unspecified => "open or closed",
        })
    }
}

/// What a client must read from a response that breaks framing upstream (class 8).
#[derive(Debug, Clone, Copy)]
enum Expected {
    /// A whole response with this status.
    Status(u16),
    /// A response head and part of its body, then the close.
    CutShort,
}

impl Expected {
    /// How many whole responses to wait for (`None`: read until the close).
    fn want(self) -> Option<usize> {
        match self {
            Self::Status(_) => Some(1),
            Self::CutShort => None,
        }
    }

    fn check(self, answer: &Answer) -> Result<(), String> {
        let ok = match self {
            Self::Status(s) => answer.statuses() == [s],
            Self::CutShort => answer.responses.is_empty() && answer.cut.is_some() && answer.conn == Conn::Closed,
        };
        if ok {
            Ok(())
        } else {
            let expected = match self {
                Self::Status(s) => format!("[{s}]"),
                Self::CutShort => "a response cut short by the close".to_owned(),
            };
            Err(format!("expected {expected}; got {answer}"))
        }
    }
}

async fn run(layout: Layout, cases: Vec<Case>) {
    report(run_cases(layout, cases).await);
}

/// Runs every case on its own proxy; returns the failures, each naming its case.
async fn run_cases(layout: Layout, cases: Vec<Case>) -> Vec<String> {
    let mut failures = Vec::new();
    for case in &cases {
        let settings: Vec<&str> = case.settings.iter().map(String::as_str).collect();
        let edge = match Edge::try_start(layout, &settings).await {
            Ok(edge) => edge,
            Err(e) => {
                failures.push(format!("{}: {e}", case.name));
                continue;
            }
        };
        let want = (!case.statuses.is_empty()).then_some(case.statuses.len());
        let outcome = edge.exchange(&case.writes, want).await;
        if let Err(why) = case.check(&outcome) {
            failures.push(format!("{}: {why}", case.name));
        }
    }
    failures
}

fn report(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------------
// The proxy and its upstreams.

#[derive(Debug, Clone, Copy)]
enum Layout {
    /// `public` (`pathPrefix: /public`; tracks `stable` 95 and `canary` 5) and the catch-all
    /// `other`.
    Public,
    /// `a` (`host: a.example`, `pathPrefix: /public`), `b` (the same on `b.example`) and the
    /// catch-all `other`.
    Hosts,
    /// `raw` (`pathPrefix: /raw`) on a raw upstream that answers 200 and closes, and the
    /// catch-all `other`.
    Raw,
}

/// A proxy in front of mock upstreams, and perhaps a raw one.
struct Edge {
    proxy: Running,
    /// Each mock with the route it serves.
    mocks: Vec<(&'static str, MockUpstream)>,
    /// The upstream of route `raw`.
    raw: Option<RawUpstream>,
}

impl Edge {
    async fn start(layout: Layout, settings: &[&str]) -> Self {
        Self::try_start(layout, settings)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The proxy, or why its configuration did not load.
    async fn try_start(layout: Layout, settings: &[&str]) -> Result<Self, String> {
        let table = settings.iter().fold(Table::new(), |t, line| t.setting(line));
        let (table, mut mocks) = match layout {
            Layout::Raw => {
                let ok = &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"[..];
                return Self::try_raw(ok, AfterReply::Close, settings).await;
            }
            Layout::Public => {
                let stable = MockUpstream::start("stable").await;
                let canary = MockUpstream::start("canary").await;
                let table = table
                    .route("public")
                    .matching("pathPrefix: /public")
                    .track("stable", &[stable.addr()], 95.0)
                    .track("canary", &[canary.addr()], 5.0);
                (table, vec![("public", stable), ("public", canary)])
            }
            Layout::Hosts => {
                let a = MockUpstream::start("a").await;
                let b = MockUpstream::start("b").await;
                let table = table
                    .route("a")
                    .matching("host: a.example")
                    .matching("pathPrefix: /public")
                    .track("stable", &[a.addr()], 1.0)
                    .route("b")
                    .matching("host: b.example")
                    .matching("pathPrefix: /public")
                    .track("stable", &[b.addr()], 1.0);
                (table, vec![("a", a), ("b", b)])
            }
        };
        let other = MockUpstream::start("other").await;
        let table = table
            .route("other")
            .matching("pathPrefix: /")
            .track("other", &[other.addr()], 1.0);
        mocks.push(("other", other));
        Ok(Self {
            proxy: proxy(table).await?,
            mocks,
            raw: None,
        })
    }

    /// `raw` (`pathPrefix: /raw`; track `stable` on a raw upstream answering `reply`, then doing
    /// `after`) and the catch-all `other`.
    async fn raw(reply: &'static [u8], after: AfterReply, settings: &[&str]) -> Self {
        Self::try_raw(reply, after, settings)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn try_raw(reply: &'static [u8], after: AfterReply, settings: &[&str]) -> Result<Self, String> {
        let raw = RawUpstream::start(reply, after).await;
        let other = MockUpstream::start("other").await;
        let table = settings
            .iter()
            .fold(Table::new(), |t, line| t.setting(line))
            .route("raw")
            .matching("pathPrefix: /raw")
            .track("stable", &[raw.addr()], 1.0)
            .route("other")
            .matching("pathPrefix: /")
            .track("other", &[other.addr()], 1.0);
        Ok(Self {
            proxy: proxy(table).await?,
            mocks: vec![("other", other)],
            raw: Some(raw),
        })
    }

    /// Request heads the upstreams received, whole requests or not.
    fn heads(&self) -> u64 {
        let raw = self.raw.as_ref().map_or(0, RawUpstream::requests);
        raw + self.mocks.iter().map(|(_, m)| m.requests()).sum::<u64>()
    }

    /// The requests the mocks received whole or saw end (a body that failed reads empty); the raw
    /// upstream keeps none.
    fn arrivals(&self) -> Vec<Arrival> {
        let mut arrivals = Vec::new();
        for (route, mock) in &self.mocks {
            for seen in mock.seen() {
                arrivals.push(Arrival {
                    route,
                    method: seen.method.to_string(),
                    target: seen.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
                    host: seen
                        .headers
                        .get("host")
                        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned()),
                    body: seen.body,
                });
            }
        }
        arrivals
    }

    /// Writes `writes` on a new connection and reads until `want` whole responses are in (`None`:
    /// until the close); takes what the upstreams received; then, unless the connection ended,
    /// asks whether it still serves.
    async fn exchange(&self, writes: &[Vec<u8>], want: Option<usize>) -> Outcome {
        let mut stream = TcpStream::connect(self.proxy.listen[0])
            .await
            .expect("connect to the proxy");
        for (i, part) in writes.iter().enumerate() {
            if i > 0 {
                let deadline = Instant::now() + HEAD_WAIT;
                while self.heads() == 0 && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            // The proxy may answer and close before it has read everything: what it answered is
            // still there to read.
            let _ = stream.write_all(part).await;
        }
        let mut bytes = Vec::new();
        let end = read_until(&mut stream, &mut bytes, want, Instant::now() + DEADLINE).await;
        let heads = self.heads();
        let arrivals = self.arrivals();
        let answer = match end {
            End::Enough => {
                let before = parse(&bytes, false).whole.len();
                let _ = stream.write_all(PROBE).await;
                let end = read_until(&mut stream, &mut bytes, None, Instant::now() + DEADLINE).await;
                Answer::of(bytes, end, Some(before))
            }
            End::Closed | End::Deadline => Answer::of(bytes, end, None),
        };
        Outcome {
            answer,
            heads,
            arrivals,
        }
    }
}

/// A proxy on free ports serving `table`, or why its configuration did not load.
async fn proxy(table: Table) -> Result<Running, String> {
    let yaml = table.on_free_ports().yaml();
    try_start_yaml(&yaml)
        .await
        .map_err(|e| format!("the proxy did not start: {e}\n{yaml}"))
}

/// `GET url` over h2c with prior knowledge, with `headers` as given; the response status.
async fn h2c_get(edge: &Edge, url: &str, headers: &[(&str, &str)]) -> Result<u16, String> {
    let stream = TcpStream::connect(edge.proxy.listen[0])
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .map_err(|e| format!("h2c handshake: {e}"))?;
    tokio::spawn(connection);
    let mut request = http::Request::get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    match tokio::time::timeout(DEADLINE, sender.send_request(request)).await {
        Ok(Ok(response)) => Ok(response.status().as_u16()),
        Ok(Err(e)) => Err(format!("{e:?}")),
        Err(_) => Err(format!("no response within {DEADLINE:?}")),
    }
}

/// Whether a fresh connection is served as usual (`GET /ok`, routed to `other`).
async fn serves_again(edge: &Edge) -> Result<(), String> {
    let answer = exchange_on_new(&edge.proxy, b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    if answer.statuses() == [200] {
        Ok(())
    } else {
        Err(format!(
            "a following request on a fresh connection: expected [200], got {answer}"
        ))
    }
}

/// `request` on a new connection, read until the close.
async fn exchange_on_new(p: &Running, request: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(p.listen[0]).await.expect("connect to the proxy");
    let _ = stream.write_all(request).await;
    let mut bytes = Vec::new();
    let end = read_until(&mut stream, &mut bytes, None, Instant::now() + DEADLINE).await;
    Answer::of(bytes, end, None)
}

/// A track's numbers show nothing against it.
fn blameless(s: &Value, track: &str) {
    assert_eq!(s["errors"], 0, "{track}: {s}");
    assert_eq!(s["errorRate"], 0.0, "{track}: {s}");
    assert_eq!(s["statusClasses"]["5xx"], 0, "{track}: {s}");
    for kind in ["connect", "timeout", "reset", "protocol"] {
        assert_eq!(s["upstreamErrors"][kind], 0, "{track}: upstreamErrors.{kind}: {s}");
    }
}

/// A route's stats without the tracks' histograms, for messages.
fn readable(mut route: Value) -> Value {
    if let Some(tracks) = route["tracks"].as_object_mut() {
        for track in tracks.values_mut() {
            if let Some(track) = track.as_object_mut() {
                track.remove("histogram");
            }
        }
    }
    route
}

/// The public route's requests and 2xx answers, both tracks together.
async fn public_totals(p: &Running) -> (u64, u64) {
    let mut totals = (0, 0);
    for track in ["stable", "canary"] {
        let s = track_stats(p, "public", track).await;
        totals.0 += s["requests"].as_u64().unwrap_or_default();
        totals.1 += s["statusClasses"]["2xx"].as_u64().unwrap_or_default();
    }
    totals
}

/// Polls `cond` as [`assert_eventually!`] does, for up to 10 s; whether it came to hold. For the
/// tables, which report every failing case rather than stop at the first.
async fn eventually<F, Fut>(mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if cond().await {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A `'static` copy, for names and expectations built at run time (a few per test).
fn leak<T: ?Sized>(value: impl Into<Box<T>>) -> &'static T {
    Box::leak(value.into())
}

// ---------------------------------------------------------------------------------------------
// The client side.

/// A request an upstream received whole or saw end.
struct Arrival {
    route: &'static str,
    method: String,
    target: String,
    host: Option<String>,
    body: Bytes,
}

impl fmt::Display for Arrival {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} {} (Host {}, {}-byte body)",
            self.route,
            self.method,
            self.target,
            self.host.as_deref().unwrap_or("none"),
            self.body.len()
        )
    }
}

/// The arrivals, and the heads that did not end as one.
fn list(arrivals: &[Arrival], heads: u64) -> String {
    let mut parts: Vec<String> = arrivals.iter().map(ToString::to_string).collect();
    let open = heads.saturating_sub(arrivals.len() as u64);
    if open > 0 {
        parts.push(format!("{open} head(s) whose request had not ended"));
    }
    if parts.is_empty() {
        "nothing".to_owned()
    } else {
        parts.join(", ")
    }
}

/// What a case did.
struct Outcome {
    answer: Answer,
    /// Request heads the upstreams received, taken once the case's responses were in.
    heads: u64,
    /// What they received whole or saw end, taken then.
    arrivals: Vec<Arrival>,
}

/// How a read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The responses asked for are whole.
    Enough,
    /// The proxy closed the connection (end of stream or reset).
    Closed,
    /// The deadline passed first.
    Deadline,
}

/// Reads into `bytes` until `want` whole responses are in (`None`: until the close), the
/// connection ends, or `deadline`.
async fn read_until(stream: &mut TcpStream, bytes: &mut Vec<u8>, want: Option<usize>, deadline: Instant) -> End {
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(n) = want
            && parse(bytes, false).whole.len() >= n
        {
            return End::Enough;
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return End::Deadline,
            Ok(Ok(0) | Err(_)) => return End::Closed,
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
        }
    }
}

/// How a connection stood after a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conn {
    /// The proxy closed it.
    Closed,
    /// It answered the probe.
    Open,
    /// Neither closed nor answered before the deadline.
    Silent,
}

/// What a client read.
struct Answer {
    /// The whole responses (interim 1xx ones left out, and the probe's), in order.
    responses: Vec<Response>,
    /// A response whose head or body did not end, or bytes that are no response.
    cut: Option<Cut>,
    conn: Conn,
}

impl Answer {
    /// From everything read, how the last read ended, and, if a probe was sent, how many whole
    /// responses came before it.
    fn of(bytes: Vec<u8>, end: End, probed_after: Option<usize>) -> Self {
        let mut parsed = parse(&bytes, end == End::Closed);
        let conn = match (probed_after, end) {
            (Some(before), _) if parsed.whole.len() > before => {
                parsed.whole.truncate(before);
                parsed.cut = None;
                Conn::Open
            }
            (_, End::Closed) => Conn::Closed,
            _ => Conn::Silent,
        };
        Self {
            responses: parsed.whole,
            cut: parsed.cut,
            conn,
        }
    }

    fn statuses(&self) -> Vec<u16> {
        self.responses.iter().map(|r| r.status).collect()
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.statuses())?;
        if let Some(r) = self.responses.iter().find(|r| r.status >= 400) {
            write!(f, " (first refusal: {:?}, body {:?})", r.line, shorten(&r.body))?;
        }
        if let Some(cut) = &self.cut {
            match cut.status {
                Some(s) => write!(f, " + a {s} cut short after {} body bytes", cut.body_bytes)?,
                None => write!(f, " + {} bytes that are no whole response head", cut.body_bytes)?,
            }
        }
        f.write_str(match self.conn {
            Conn::Closed => ", then closed",
            Conn::Open => ", then still open (the probe was answered)",
            Conn::Silent => ", then neither closed nor answering within the deadline",
        })
    }
}

fn shorten(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    match text.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.trim_end().to_owned(),
    }
}

/// A whole response.
struct Response {
    status: u16,
    /// The status line.
    line: String,
    body: Vec<u8>,
}

/// A response that did not end.
struct Cut {
    /// Its status, if its head arrived whole.
    status: Option<u16>,
    /// Body bytes that arrived, or all the bytes if the head did not.
    body_bytes: usize,
}

struct Parsed {
    whole: Vec<Response>,
    cut: Option<Cut>,
}

/// The responses in `bytes`; `ended`: the connection has closed, which ends a body framed by the
/// close. Interim (1xx) responses are skipped.
fn parse(bytes: &[u8], ended: bool) -> Parsed {
    let mut whole = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some(head_end) = find(rest, b"\r\n\r\n") else {
            return Parsed {
                whole,
                cut: Some(Cut {
                    status: None,
                    body_bytes: rest.len(),
                }),
            };
        };
        let head = String::from_utf8_lossy(&rest[..head_end]).into_owned();
        let line = head.lines().next().unwrap_or_default().to_owned();
        let status = line
            .strip_prefix("HTTP/1.")
            .and_then(|l| l.get(2..5))
            .and_then(|s| s.parse::<u16>().ok());
        let after = &rest[head_end + 4..];
        let Some(status) = status else {
            return Parsed {
                whole,
                cut: Some(Cut {
                    status: None,
                    body_bytes: rest.len(),
                }),
            };
        };
        let header = |name: &str| {
            head.lines().skip(1).find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
        };
        let body = if (100..200).contains(&status) || status == 204 || status == 304 {
            Some((Vec::new(), 0))
        } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            dechunk(after)
        } else if let Some(n) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            (after.len() >= n).then(|| (after[..n].to_vec(), n))
        } else {
            ended.then(|| (after.to_vec(), after.len()))
        };
        let Some((body, used)) = body else {
            return Parsed {
                whole,
                cut: Some(Cut {
                    status: Some(status),
                    body_bytes: after.len(),
                }),
            };
        };
        if status >= 200 {
            whole.push(Response { status, line, body });
        }
        rest = &after[used..];
    }
    Parsed { whole, cut: None }
}

/// A whole chunked body at the start of `bytes`: the data, and how many bytes it took.
fn dechunk(bytes: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut data = Vec::new();
    let mut rest = bytes;
    loop {
        let line_end = find(rest, b"\r\n")?;
        let line = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            // Trailer lines, up to the empty one.
            loop {
                let end = find(rest, b"\r\n")?;
                rest = &rest[end + 2..];
                if end == 0 {
                    return Some((data, bytes.len() - rest.len()));
                }
            }
        }
        if rest.len() < size + 2 || &rest[size..size + 2] != b"\r\n" {
            return None;
        }
        data.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
