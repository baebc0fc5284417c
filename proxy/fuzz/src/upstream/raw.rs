//! An upstream that answers each connection's first request with whatever bytes it currently
//! holds (a fuzz input), then closes.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout, timeout_at};

/// How long it waits for a request head, and for the proxy to take the answer.
const READ: Duration = Duration::from_millis(500);
/// How long it keeps the connection after answering (its write side already shut), so that the
/// proxy reads the answer before the close rather than a reset.
const LINGER: Duration = Duration::from_millis(100);
/// The longest head read.
const MAX_HEAD: usize = 64 * 1024;

/// A raw upstream listening on `127.0.0.1:0`.
#[derive(Debug)]
pub struct RawUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    answer: Arc<Mutex<Arc<[u8]>>>,
}

impl RawUpstream {
    /// Binds and starts accepting on the current runtime; it answers with no bytes until
    /// [`RawUpstream::answer_with`].
    pub async fn bind() -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let answer: Arc<Mutex<Arc<[u8]>>> = Arc::new(Mutex::new(Arc::from(&b""[..])));
        let current = Arc::clone(&answer);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream, Arc::clone(&current)));
            }
        });
        Ok(Self { addr, answer })
    }

    /// The bytes every connection accepted from now on writes after its request head.
    pub fn answer_with(&self, bytes: &[u8]) {
        if let Ok(mut answer) = self.answer.lock() {
            *answer = Arc::from(bytes);
        }
    }
}

async fn serve(mut stream: TcpStream, answer: Arc<Mutex<Arc<[u8]>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let deadline = Instant::now() + READ;
    while memchr::memmem::find(&buf, b"\r\n\r\n").is_none() && buf.len() < MAX_HEAD {
        match timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    }
    let bytes = answer
        .lock()
        .map(|a| Arc::clone(&a))
        .unwrap_or_else(|_| Arc::from(&b""[..]));
    if !matches!(timeout(READ, stream.write_all(&bytes)).await, Ok(Ok(()))) {
        return;
    }
    // End a close-delimited answer now; then read (and drop) whatever else the proxy sends.
    let _ = stream.shutdown().await;
    let deadline = Instant::now() + LINGER;
    while let Ok(Ok(n)) = timeout_at(deadline, stream.read(&mut chunk)).await {
        if n == 0 {
            break;
        }
    }
}
