//! A minimal, fast HTTP/1.1 upstream: every request gets the same small body and its name in
//! `x-upstream`. Keep-alive, one thread, no logging: it should cost as little as possible.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Serves on `listener` forever, answering `body` with `x-upstream: name`.
pub async fn serve(listener: TcpListener, name: &'static str, body: &'static str) -> std::io::Error {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => return e,
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(move |_req: Request<Incoming>| async move {
                let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
                response
                    .headers_mut()
                    .insert("x-upstream", hyper::header::HeaderValue::from_static(name));
                Ok::<_, Infallible>(response)
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Binds `addr` and serves until the process ends.
pub fn run(addr: SocketAddr, name: String, body: String) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // The strings live as long as the process; leaking them lets every request borrow them.
    let name: &'static str = name.leak();
    let body: &'static str = body.leak();
    runtime.block_on(async {
        let listener = TcpListener::bind(addr).await?;
        Err(serve(listener, name, body).await.into())
    })
}
