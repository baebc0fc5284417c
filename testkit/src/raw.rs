//! A raw upstream: a TCP server on `127.0.0.1:0` that answers every request with the same bytes,
//! exactly as given, for the responses no well-behaved HTTP server writes (conflicting framing,
//! malformed chunks, bodies cut short or stalled).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// The longest request head a [`RawUpstream`] reads before it gives up on the connection.
const MAX_HEAD: usize = 64 * 1024;

/// What a [`RawUpstream`] does with a connection once its reply is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterReply {
    /// Close it.
    Close,
    /// Keep it open and send nothing more, until the peer closes it or the upstream is dropped
    /// (for a body that stalls). Whatever the peer sends after the head is read and discarded.
    KeepOpen,
}

/// An upstream that reads one request head per connection, writes its reply bytes and then
/// closes or keeps the connection open; serves until dropped, and its connections with it.
#[derive(Debug)]
pub struct RawUpstream {
    addr: SocketAddr,
    heads: Arc<AtomicU64>,
    open: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawUpstream {
    /// Starts an upstream answering every request head with `reply`, then doing `after`.
    pub async fn start(reply: impl Into<Bytes>, after: AfterReply) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let addr = listener.local_addr().expect("bound address");
        let heads = Arc::new(AtomicU64::new(0));
        let open = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(serve(
            listener,
            reply.into(),
            after,
            Arc::clone(&heads),
            Arc::clone(&open),
        ));
        Self {
            addr,
            heads,
            open,
            task,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Request heads read so far (one per connection at most).
    pub fn requests(&self) -> u64 {
        self.heads.load(Ordering::Relaxed)
    }

    /// Connections accepted and not yet closed (by either side).
    pub fn open_connections(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }
}

/// Counts a connection open while it lives.
struct Open(Arc<AtomicU64>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve(listener: TcpListener, reply: Bytes, after: AfterReply, heads: Arc<AtomicU64>, open: Arc<AtomicU64>) {
    // Owned by this task: aborting it (on drop) drops the set, which aborts every connection.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    open.fetch_add(1, Ordering::Relaxed);
                    let open = Open(Arc::clone(&open));
                    let answer = answer(stream, reply.clone(), after, Arc::clone(&heads));
                    connections.spawn(async move {
                        answer.await;
                        drop(open);
                    });
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn answer(mut stream: TcpStream, reply: Bytes, after: AfterReply, heads: Arc<AtomicU64>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > MAX_HEAD {
            return;
        }
    }
    heads.fetch_add(1, Ordering::Relaxed);
    if stream.write_all(&reply).await.is_err() {
        return;
    }
    match after {
        AfterReply::Close => {
            let _ = stream.shutdown().await;
        }
        AfterReply::KeepOpen => loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        },
    }
}
