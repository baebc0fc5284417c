//! Every way a call can fail, with real sockets on 127.0.0.1, read as the sentence a person
//! sees.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// A server that takes one connection and hands it to `then`; its URL for `/routes`.
async fn one_connection<F, Fut>(then: F) -> String
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/routes", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        then(stream).await;
    });
    url
}

/// Reads up to the end of the request head.
async fn read_head(stream: &mut TcpStream) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "the request head ended early");
        head.push(byte[0]);
    }
}

async fn get(url: &str, timeout: Duration) -> CallError {
    Http::new(timeout).get_json(url).await.unwrap_err()
}

#[tokio::test]
async fn nothing_listening_is_connection_refused() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{addr}/routes");
    let e = get(&url, Duration::from_secs(2)).await;
    assert_eq!(
        e,
        CallError::Unreachable {
            url: url.clone(),
            cause: NoAnswer::Refused
        }
    );
    assert_eq!(e.to_string(), format!("cannot reach {url}: connection refused"));
}

/// Paused clock: the runtime jumps to the deadline as soon as nothing else can happen.
#[tokio::test(start_paused = true)]
async fn a_server_that_never_answers_is_no_answer_within_the_limit() {
    for (limit, words) in [(Duration::from_secs(2), "2s"), (Duration::from_secs(60), "1m")] {
        let url = one_connection(|mut stream| async move {
            read_head(&mut stream).await;
            std::future::pending::<()>().await;
        })
        .await;
        let e = get(&url, limit).await;
        assert_eq!(e.to_string(), format!("cannot reach {url}: no answer within {words}"));
    }
}

#[tokio::test]
async fn a_reset_connection_is_connection_reset() {
    // Closing a socket with unread bytes sends a reset rather than an orderly close.
    let url = one_connection(|mut stream| async move {
        let mut first = [0u8; 1];
        stream.read_exact(&mut first).await.unwrap();
        drop(stream);
    })
    .await;
    let e = get(&url, Duration::from_secs(10)).await;
    assert_eq!(e.to_string(), format!("cannot reach {url}: connection reset"));
}

#[tokio::test]
async fn an_answer_cut_short_is_the_connection_closing_early() {
    let url = one_connection(|mut stream| async move {
        read_head(&mut stream).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{\"a\"")
            .await;
    })
    .await;
    let e = get(&url, Duration::from_secs(10)).await;
    assert_eq!(
        e.to_string(),
        format!("cannot reach {url}: the connection closed before the answer was complete")
    );
}

#[tokio::test]
async fn an_error_status_shows_the_servers_problems_not_its_json() {
    let body = r#"{"errors":[{"path":"","message":"stale version"},{"path":"routes[0].name","message":"empty"}]}"#;
    let url = one_connection(move |mut stream| async move {
        read_head(&mut stream).await;
        let head = format!("HTTP/1.1 409 Conflict\r\ncontent-length: {}\r\n\r\n", body.len());
        let _ = stream.write_all(format!("{head}{body}").as_bytes()).await;
    })
    .await;
    let e = get(&url, Duration::from_secs(10)).await;
    assert_eq!(
        e.to_string(),
        format!("{url} answered 409 Conflict: stale version; routes[0].name: empty")
    );
    let CallError::Status { body: raw, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(Problems::parse(raw).map(|p| p.errors.len()), Some(2));
}

#[test]
fn a_body_that_is_not_an_error_document_is_shown_by_its_first_line() {
    assert_eq!(summary(""), "");
    assert_eq!(summary("\n  upstream said no  \nmore"), ": upstream said no");
    assert_eq!(summary(r#"{"errors": []}"#), r#": {"errors": []}"#);
    assert_eq!(summary(&"x".repeat(300)), format!(": {}…", "x".repeat(200)));
}

#[tokio::test]
async fn a_url_that_cannot_be_called_says_why() {
    let e = get("127.0.0.1:9900/rollouts", Duration::from_secs(1)).await;
    assert_eq!(
        e.to_string(),
        "cannot call 127.0.0.1:9900/rollouts: expected http://host[:port]/path or https://host[:port]/path"
    );
    let e = get("ftp://127.0.0.1:9900/rollouts", Duration::from_secs(1)).await;
    assert_eq!(
        e.to_string(),
        "cannot call ftp://127.0.0.1:9900/rollouts: only http:// and https:// URLs can be called, not ftp://"
    );
}

#[test]
fn io_errors_read_as_words() {
    let os = io::Error::from_raw_os_error(101);
    assert_eq!(words(&os), "network is unreachable");
    assert_eq!(words(&io::Error::other("DNS says no")), "DNS says no");
    assert_eq!(
        NoAnswer::of(&io::Error::from(io::ErrorKind::TimedOut), Duration::from_millis(500)),
        NoAnswer::Timeout(Duration::from_millis(500))
    );
    assert_eq!(
        NoAnswer::Timeout(Duration::from_millis(500)).to_string(),
        "no answer within 500ms"
    );
}
