//! TLS termination end to end: ALPN picks HTTP/2 or HTTP/1.1, the upstream learns the request
//! came over HTTPS, and certificate files replaced on disk are served to new handshakes (a
//! broken replacement leaves the certificate in use).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{CertificateParams, DnType, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use switchyard_config::{Format, load_config};
use switchyard_proxy::{Options, Running, start};
use switchyard_testkit::{MockUpstream, Scratch, Table, assert_eventually};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A self-signed certificate for `localhost` and `127.0.0.1`, with its key.
struct Cert {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Cert {
    /// A new key and certificate; `subject` (the common name) tells certificates apart.
    fn generate(subject: &str) -> Self {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("valid names");
        params.distinguished_name.push(DnType::CommonName, subject);
        let key = KeyPair::generate().expect("a P-256 key");
        let cert = params.self_signed(&key).expect("self-signed certificate");
        Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// Writes the certificate, then the key, over the scratch directory's files.
    fn write(&self, dir: &Scratch) {
        std::fs::write(dir.join("cert.pem"), &self.cert_pem).expect("write the certificate");
        std::fs::write(dir.join("key.pem"), &self.key_pem).expect("write the key");
    }
}

/// A configuration with one TLS listener serving the scratch directory's certificate, and one
/// route to `upstream`.
fn tls_config(dir: &Scratch, upstream: &MockUpstream) -> String {
    Table::new()
        .setting(&format!(
            "listen: [{{ address: 127.0.0.1:0, tls: {{ certFile: \"{}\", keyFile: \"{}\" }} }}]",
            dir.join("cert.pem").display(),
            dir.join("key.pem").display()
        ))
        .setting("admin: { listen: 127.0.0.1:0 }")
        .route("app")
        .track("stable", &[upstream.addr()], 1.0)
        .yaml()
}

/// Starts a proxy from the scratch directory's config file, watching it and the certificate.
async fn start_watched(dir: &Scratch, upstream: &MockUpstream) -> Running {
    let yaml = tls_config(dir, upstream);
    std::fs::write(dir.join("proxy.yaml"), &yaml).expect("write the config file");
    let loaded = load_config(&yaml, Format::Yaml, 1).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let options = Options {
        config_file: Some(dir.join("proxy.yaml")),
        ..Options::default()
    };
    start(loaded, options).await.expect("proxy starts")
}

/// A TLS connection to `addr` as `localhost`, trusting only `trusted`, offering `alpn`.
async fn handshake(addr: SocketAddr, trusted: &[&Cert], alpn: &[u8]) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = RootCertStore::empty();
    for cert in trusted {
        roots.add(cert.der.clone()).expect("a usable trust anchor");
    }
    // A new client config per connection: no session to resume, so every handshake makes the
    // server present the certificate it holds now.
    let mut config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("a valid server name");
    TlsConnector::from(Arc::new(config)).connect(name, tcp).await
}

/// The certificate a new handshake is served, if the handshake succeeds.
async fn served(addr: SocketAddr, trusted: &[&Cert]) -> Option<CertificateDer<'static>> {
    let tls = handshake(addr, trusted, b"http/1.1").await.ok()?;
    tls.get_ref().1.peer_certificates()?.first().cloned()
}

/// `GET path` over HTTP/1.1 on a new TLS connection; the status and body.
async fn get_http1(addr: SocketAddr, trusted: &[&Cert], path: &str) -> (u16, String) {
    let tls = handshake(addr, trusted, b"http/1.1").await.expect("TLS handshake");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(conn);
    let request = Request::get(path)
        .header(http::header::HOST, format!("localhost:{}", addr.port()))
        .body(Empty::<Bytes>::new())
        .expect("a valid request");
    let response = sender.send_request(request).await.expect("a response");
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.expect("the body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn alpn_picks_http2_or_http1_and_the_upstream_learns_https() {
    let dir = Scratch::new("tls-alpn");
    let cert = Cert::generate("switchyard alpn");
    cert.write(&dir);
    let stable = MockUpstream::start("stable").await;
    let p = common::start_yaml(&tls_config(&dir, &stable)).await;
    let addr = p.listen[0];

    let tls = handshake(addr, &[&cert], b"h2").await.expect("TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut h2, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    let request = Request::get(format!("https://localhost:{}/over/h2", addr.port()))
        .body(Empty::<Bytes>::new())
        .expect("a valid request");
    let response = h2.send_request(request).await.expect("a response");
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers().get("x-switchyard-track").map(|v| v.as_bytes()),
        Some(&b"stable"[..])
    );
    let body = response.into_body().collect().await.expect("the body").to_bytes();
    assert_eq!(body, "stable");

    let tls = handshake(addr, &[&cert], b"http/1.1").await.expect("TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    drop(tls);
    assert_eq!(get_http1(addr, &[&cert], "/over/h1").await, (200, "stable".to_owned()));

    let seen = stable.seen();
    assert_eq!(seen.len(), 2);
    for (request, path) in seen.iter().zip(["/over/h2", "/over/h1"]) {
        assert_eq!(request.uri.path(), path);
        let proto = request.headers.get("x-forwarded-proto").map(|v| v.as_bytes());
        assert_eq!(proto, Some(&b"https"[..]), "{path}");
        let host = request.headers.get("host").map(|v| v.to_str().unwrap_or_default());
        assert_eq!(host, Some(format!("localhost:{}", addr.port()).as_str()), "{path}");
    }
}

#[tokio::test]
async fn a_replaced_certificate_is_served_to_new_handshakes() {
    let dir = Scratch::new("tls-replace");
    let first = Cert::generate("switchyard first");
    let second = Cert::generate("switchyard second");
    assert_ne!(first.der, second.der);
    first.write(&dir);
    let stable = MockUpstream::start("stable").await;
    let p = start_watched(&dir, &stable).await;
    let addr = p.listen[0];
    assert_eq!(served(addr, &[&first, &second]).await.as_ref(), Some(&first.der));

    second.write(&dir);
    // The two files change one after the other; a handshake between the two reloads may fail.
    assert_eventually!(served(addr, &[&first, &second]).await.as_ref() == Some(&second.der));
    assert_eq!(get_http1(addr, &[&second], "/").await, (200, "stable".to_owned()));
    assert!(handshake(addr, &[&first], b"http/1.1").await.is_err());
}

#[tokio::test]
async fn a_broken_certificate_file_keeps_the_certificate_in_use() {
    let dir = Scratch::new("tls-broken");
    let first = Cert::generate("switchyard first");
    let second = Cert::generate("switchyard second");
    first.write(&dir);
    let stable = MockUpstream::start("stable").await;
    let p = start_watched(&dir, &stable).await;
    let addr = p.listen[0];
    assert_eq!(p.health.reload_failures.load(Ordering::Relaxed), 0);

    std::fs::write(dir.join("cert.pem"), "not a certificate\n").expect("write the certificate");
    assert_eventually!(p.health.reload_failures.load(Ordering::Relaxed) >= 1);
    assert_eq!(served(addr, &[&first]).await.as_ref(), Some(&first.der));
    assert_eq!(get_http1(addr, &[&first], "/").await, (200, "stable".to_owned()));

    // The watch goes on after a failure: a good pair is picked up.
    second.write(&dir);
    assert_eventually!(served(addr, &[&first, &second]).await.as_ref() == Some(&second.der));
}
