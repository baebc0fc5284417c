//! The downstream side: a client that writes raw bytes to the proxy on a fresh TCP connection
//! and reads whatever comes back, within bounds.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// How long the client waits for the next bytes before it takes the exchange as over.
pub const SILENCE: Duration = Duration::from_millis(200);
/// How much the client reads at most.
pub const MAX_RECEIVED: usize = 64 * 1024;
/// The pause between two slices of the input, so that the proxy reads them apart.
const GAP: Duration = Duration::from_millis(1);
/// How long a well-formed request may take to be answered.
const ANSWER: Duration = Duration::from_secs(2);

/// Why the client stopped reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The proxy closed the connection.
    Closed,
    /// The connection was reset.
    Reset,
    /// Nothing came for [`SILENCE`].
    Silent,
    /// [`MAX_RECEIVED`] bytes came.
    Full,
}

/// What the client received.
#[derive(Debug)]
pub struct Received {
    /// Every byte, in order.
    pub bytes: Vec<u8>,
    /// Why reading stopped.
    pub end: End,
}

/// Connects to `addr`, writes `slices` one after another (stopping at the first failed write),
/// then reads until the proxy closes, [`SILENCE`], or [`MAX_RECEIVED`].
///
/// # Panics
///
/// When the proxy does not accept the connection: it is gone.
pub async fn exchange(addr: SocketAddr, slices: &[&[u8]]) -> Received {
    let mut stream = connect(addr).await;
    for (i, slice) in slices.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(GAP).await;
        }
        // The proxy may answer and close before it has read everything (a 400): keep what it
        // sent.
        if !matches!(timeout(SILENCE, stream.write_all(slice)).await, Ok(Ok(()))) {
            break;
        }
    }
    let mut bytes = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let end = loop {
        if bytes.len() >= MAX_RECEIVED {
            break End::Full;
        }
        match timeout(SILENCE, stream.read(&mut chunk)).await {
            Err(_) => break End::Silent,
            Ok(Ok(0)) => break End::Closed,
            Ok(Err(_)) => break End::Reset,
            Ok(Ok(n)) => bytes.extend_from_slice(&chunk[..n]),
        }
    };
    Received { bytes, end }
}

/// Sends one well-formed `request` on a fresh connection and returns the status of the
/// response, or what went wrong, within a bound.
///
/// # Panics
///
/// When the proxy does not accept the connection: it is gone.
pub async fn status_of(addr: SocketAddr, request: &[u8]) -> Result<u16, String> {
    let mut stream = connect(addr).await;
    let answer = async {
        stream
            .write_all(request)
            .await
            .map_err(|e| format!("cannot write the request: {e}"))?;
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let mut response = httparse::Response::new(&mut fields);
            match response.parse(&bytes) {
                Ok(httparse::Status::Complete(_)) => return Ok(response.code.unwrap_or(0)),
                Ok(httparse::Status::Partial) => {}
                Err(e) => {
                    return Err(format!(
                        "the response does not parse ({e}): {:?}",
                        String::from_utf8_lossy(&bytes)
                    ));
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) => {
                    return Err(format!(
                        "the proxy closed the connection after {:?}",
                        String::from_utf8_lossy(&bytes)
                    ));
                }
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("cannot read the response: {e}")),
            }
        }
    };
    timeout(ANSWER, answer)
        .await
        .unwrap_or_else(|_| Err(format!("no response within {ANSWER:?}")))
}

async fn connect(addr: SocketAddr) -> TcpStream {
    let stream = match timeout(ANSWER, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => panic!("the proxy at {addr} does not accept connections: {e}"),
        Err(_) => panic!("the proxy at {addr} did not accept a connection within {ANSWER:?}"),
    };
    let _ = stream.set_nodelay(true);
    stream
}
