//! `switchyard-loadtest upstream` as the CPU scenarios run it: the header set and body size on
//! the command line are what every answer carries, on a real socket.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The upstream binary, killed when dropped.
struct Upstream(Child);

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `switchyard-loadtest upstream ARGS` on a free port and connects to it.
fn start(args: &[&str]) -> (Upstream, TcpStream) {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_switchyard-loadtest"))
        .args(["upstream", "--listen", &listen])
        .args(args)
        .spawn()
        .expect("switchyard-loadtest runs");
    let upstream = Upstream(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(&listen) {
            Ok(stream) => return (upstream, stream),
            // Polled: the binary gives no other sign that it listens.
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("the upstream never listened on {listen}: {e}"),
        }
    }
}

/// Sends one GET on `stream`; returns the header names (lowercase, in order) and the body.
fn get(stream: &mut TcpStream) -> (Vec<String>, Vec<u8>) {
    stream.write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    let (mut names, mut length) = (Vec::new(), 0);
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        let Some((name, value)) = line.trim_end().split_once(':') else {
            break;
        };
        let name = name.to_ascii_lowercase();
        if name == "content-length" {
            length = value.trim().parse().unwrap();
        }
        names.push(name);
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (names, body)
}

#[test]
fn by_default_the_answer_is_ok_with_its_name() {
    let (_upstream, mut stream) = start(&["--name", "stable"]);
    let (mut names, body) = get(&mut stream);
    names.sort();
    assert_eq!(names, ["content-length", "date", "x-upstream"]);
    assert_eq!(body, b"ok\n");
}

#[test]
fn the_nginx_set_is_the_five_headers_nginx_sends() {
    let (_upstream, mut stream) = start(&["--headers", "nginx", "--body-size", "100"]);
    let (mut names, body) = get(&mut stream);
    names.sort();
    assert_eq!(
        names,
        ["connection", "content-length", "content-type", "date", "server"]
    );
    assert_eq!(body.len(), 100);
    assert!(body.ends_with(b"x\n"));
}

#[test]
fn the_twelve_set_has_twelve_headers_on_every_answer_of_a_connection() {
    let (_upstream, mut stream) = start(&["--headers", "twelve", "--body-size", "16384"]);
    for _ in 0..2 {
        let (names, body) = get(&mut stream);
        assert_eq!(names.len(), 12, "{names:?}");
        assert!(names.contains(&"x-upstream".to_owned()) && names.contains(&"etag".to_owned()));
        assert_eq!(body.len(), 16384);
    }
}
