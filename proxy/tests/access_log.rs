//! The access log: one JSON line per request with its fields, whatever the request did;
//! escaping that no hostile path or header can break; a startup error for a file that cannot be
//! opened; reopening after a rotation; a full queue that drops and counts, never waits.

mod common;

use std::io::Read as _;
use std::path::Path;
use std::time::Duration;

use common::{metrics, start_yaml, try_start_yaml, url};
use serde_json::Value;
use switchyard_config::schema::AccessLogPath;
use switchyard_proxy::Running;
use switchyard_proxy::access_log::{AccessLog, Entry, QUEUE};
use switchyard_testkit::{Client, MockUpstream, Scratch, Table, assert_eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FIELDS: [&str; 15] = [
    "time",
    "route",
    "track",
    "endpoint",
    "method",
    "path",
    "status",
    "durationUs",
    "upstreamUs",
    "bytesIn",
    "bytesOut",
    "requestId",
    "client",
    "upstreamError",
    "clientError",
];

/// The log's lines, each parsed; panics on a line that is not a JSON object with exactly the
/// log's fields.
fn lines(file: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .map(|line| {
            assert!(line.is_ascii(), "not ASCII: {line}");
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
            keys.sort_unstable();
            let mut want = FIELDS.to_vec();
            want.sort_unstable();
            assert_eq!(keys, want, "{line}");
            v
        })
        .collect()
}

async fn logged(file: &Path, n: usize) -> Vec<Value> {
    assert_eventually!(lines(file).len() >= n);
    eprintln!("{}", std::fs::read_to_string(file).unwrap_or_default());
    let lines = lines(file);
    assert_eq!(lines.len(), n, "{lines:#?}");
    lines
}

fn table(upstream: &MockUpstream, log: &Path, extra: &str) -> String {
    Table::new()
        .on_free_ports()
        .setting(&format!("accessLog: {{ path: {} }}", log.display()))
        .setting(extra)
        .route("shop")
        .matching("host: shop.example")
        .track("stable", &[upstream.addr()], 1.0)
        .route("gone")
        .matching("host: gone.example")
        .track("stable", &["127.0.0.1:1".to_owned()], 1.0)
        .yaml()
}

#[tokio::test]
async fn every_request_is_one_line_with_its_route_track_status_times_and_bytes() {
    let dir = Scratch::new("access-log-fields");
    let file = dir.join("access.log");
    let upstream = MockUpstream::start("stable").await;
    let p = start_yaml(&table(&upstream, &file, "")).await;
    let c = Client::http1();
    let shop = [("host", "shop.example"), ("x-request-id", "client-id-1")];
    assert_eq!(c.get(&url(&p, "/cart?x=1"), &shop).await.unwrap().status, 200);
    let post = c
        .send(
            http::Method::POST,
            &url(&p, "/order"),
            &[("host", "shop.example")],
            "twelve bytes".to_owned(),
        )
        .await
        .unwrap();
    assert_eq!(post.status, 200);
    assert_eq!(
        c.get(&url(&p, "/"), &[("host", "nowhere.example")])
            .await
            .unwrap()
            .status,
        404
    );
    assert_eq!(
        c.get(&url(&p, "/"), &[("host", "gone.example")]).await.unwrap().status,
        502
    );
    assert_eq!(
        c.get(&url(&p, "/%zz"), &[("host", "shop.example")])
            .await
            .unwrap()
            .status,
        400
    );

    let l = logged(&file, 5).await;
    let ok = &l[0];
    assert_eq!(
        (&ok["route"], &ok["track"], &ok["endpoint"]),
        (
            &Value::from("shop"),
            &Value::from("stable"),
            &Value::from(upstream.addr())
        )
    );
    assert_eq!(
        (&ok["method"], &ok["path"], &ok["status"]),
        (&"GET".into(), &"/cart?x=1".into(), &200.into())
    );
    assert_eq!(ok["requestId"], "client-id-1");
    assert_eq!((&ok["bytesIn"], &ok["bytesOut"]), (&0.into(), &6.into()));
    let (duration, upstream_us) = (ok["durationUs"].as_u64().unwrap(), ok["upstreamUs"].as_u64().unwrap());
    assert!(upstream_us <= duration, "{ok}");
    assert!(ok["client"].as_str().unwrap().starts_with("127.0.0.1:"), "{ok}");
    assert!(ok["time"].as_str().unwrap().ends_with('Z'), "{ok}");
    assert_eq!((&ok["upstreamError"], &ok["clientError"]), (&Value::Null, &Value::Null));

    assert_eq!((&l[1]["method"], &l[1]["bytesIn"]), (&"POST".into(), &12.into()));
    // Generated when none came: a UUID.
    assert_eq!(l[1]["requestId"].as_str().unwrap().len(), 36, "{}", l[1]);

    let no_route = &l[2];
    assert_eq!((&no_route["status"], &no_route["route"]), (&404.into(), &Value::Null));
    assert_eq!(no_route["upstreamUs"], Value::Null);

    let failed = &l[3];
    assert_eq!((&failed["status"], &failed["route"]), (&502.into(), &"gone".into()));
    assert_eq!(failed["upstreamError"], "connect");

    let refused = &l[4];
    assert_eq!((&refused["status"], &refused["path"]), (&400.into(), &"/%zz".into()));
    assert_eq!(refused["clientError"], "malformed");

    let m = metrics(&p).await;
    assert!(m.contains("switchyard_access_log_lines_total 5"), "{m}");
    assert!(m.contains("switchyard_access_log_dropped_total 0"), "{m}");
}

#[tokio::test]
async fn a_hostile_path_or_header_cannot_break_a_line_or_forge_a_field() {
    let dir = Scratch::new("access-log-hostile");
    let file = dir.join("access.log");
    let upstream = MockUpstream::start("stable").await;
    // `off`: the client's own id reaches the log as it came.
    let p = start_yaml(&table(&upstream, &file, "requestId: { mode: off }")).await;
    let forged = r#"x","status":999,"route":"admin"#;
    let hostile_paths = [
        format!("/a\"b{}", "\\\",\\\"status\\\":999,\\\"x\\\":\\\""),
        "/{\"status\":1}".to_owned(),
        "/back\\slash\\\"".to_owned(),
    ];
    let mut wanted = Vec::new();
    for path in &hostile_paths {
        let mut stream = TcpStream::connect(p.listen[0]).await.unwrap();
        let head = format!("GET {path} HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        let status: u16 = String::from_utf8_lossy(&answer[9..12]).parse().unwrap();
        wanted.push((path.clone(), status));
    }
    // A header value with quotes, a backslash, a tab and bytes above ASCII (obs-text).
    let id = b"\"forged\\\t\xe9\xff".to_vec();
    let mut stream = TcpStream::connect(p.listen[0]).await.unwrap();
    let mut head = b"GET /id HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\nx-request-id: ".to_vec();
    head.extend_from_slice(&id);
    head.extend_from_slice(format!("{forged}\r\n\r\n").as_bytes());
    stream.write_all(&head).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", answer.escape_ascii());

    // A head hyper cannot parse (a header line without a colon) is logged too, without its
    // method and path.
    let mut stream = TcpStream::connect(p.listen[0]).await.unwrap();
    stream
        .write_all(b"GET /x HTTP/1.1\r\nHost: shop.example\r\nno colon \"status\":1\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 400"), "{}", answer.escape_ascii());

    let l = logged(&file, hostile_paths.len() + 2).await;
    for (line, (path, status)) in l.iter().zip(&wanted) {
        assert_eq!(line["path"].as_str().unwrap(), path, "{line}");
        assert_eq!(line["status"].as_u64().unwrap(), u64::from(*status), "{line}");
        // A path that cannot be normalized is refused before routing.
        let route = if *status == 400 { Value::Null } else { "shop".into() };
        assert_eq!(line["route"], route, "{line}");
    }
    let last = &l[hostile_paths.len()];
    assert_eq!((&last["status"], &last["route"]), (&200.into(), &"shop".into()));
    // Every byte comes back: Latin-1 code points for the bytes above ASCII.
    let mut want: String = id.iter().map(|&b| char::from(b)).collect();
    want.push_str(forged);
    assert_eq!(last["requestId"].as_str().unwrap(), want, "{last}");
    let unparsed = &l[hostile_paths.len() + 1];
    assert_eq!(
        (&unparsed["status"], &unparsed["path"]),
        (&400.into(), &Value::Null),
        "{unparsed}"
    );
    assert_eq!(
        (&unparsed["method"], &unparsed["clientError"]),
        (&Value::Null, &"malformed".into())
    );
}

#[tokio::test]
async fn a_log_file_that_cannot_be_opened_stops_the_start_with_a_sentence() {
    let dir = Scratch::new("access-log-missing");
    let file = dir.join("no-such-directory/access.log");
    let upstream = MockUpstream::start("stable").await;
    let e = try_start_yaml(&table(&upstream, &file, "")).await.err().unwrap();
    assert!(e.starts_with("accessLog.path: cannot open "), "{e}");
    assert!(
        e.contains("No such file or directory") && e.contains("check that its directory exists"),
        "{e}"
    );
}

#[tokio::test]
async fn a_rotated_log_is_reopened_by_its_name() {
    let dir = Scratch::new("access-log-rotate");
    let file = dir.join("access.log");
    let rotated = dir.join("access.log.1");
    let upstream = MockUpstream::start("stable").await;
    let p: Running = start_yaml(&table(&upstream, &file, "")).await;
    let c = Client::http1();
    let get = |path: &'static str| {
        let c = c.clone();
        let u = url(&p, path);
        async move { c.get(&u, &[("host", "shop.example")]).await.unwrap().status }
    };
    assert_eq!(get("/before").await, 200);
    logged(&file, 1).await;
    std::fs::rename(&file, &rotated).unwrap();
    // Still written to the file it has open, until told.
    assert_eq!(get("/moved").await, 200);
    logged(&rotated, 2).await;
    p.reopen_access_log();
    assert_eq!(get("/after").await, 200);
    let after = logged(&file, 1).await;
    assert_eq!(after[0]["path"], "/after");
    assert_eq!(lines(&rotated).len(), 2);
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_and_never_waits() {
    let dir = Scratch::new("access-log-full");
    let fifo = dir.join("log.fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    // Opened read and write, so that neither end blocks; nobody reads it yet, so the writer
    // stops once the pipe is full.
    let mut pipe = std::fs::OpenOptions::new().read(true).write(true).open(&fifo).unwrap();
    let log = AccessLog::start(&AccessLogPath::File(fifo.display().to_string())).unwrap();
    let request = http::Request::get("/x").body(()).unwrap();
    let client = "127.0.0.1:1".parse().unwrap();
    let sent = QUEUE as u64 * 3;
    for _ in 0..sent {
        let now = tokio::time::Instant::now();
        log.send(Entry::begin(&request, client, now), now);
    }
    assert!(
        log.dropped() > 0,
        "nothing dropped of {sent} lines into a pipe nobody reads"
    );
    // Reading the pipe lets the writer go on; every line is written or counted.
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0usize;
        while let Ok(n) = pipe.read(&mut buf) {
            total += buf[..n].iter().filter(|&&b| b == b'\n').count();
            if n == 0 {
                break;
            }
        }
        total
    });
    assert_eventually!(log.written() + log.dropped() == sent, Duration::from_secs(60));
    assert!(log.written() > 0);
    drop(reader);
}
