//! The training run of Switchyard's profile-guided release build (`scripts/build-release`).
//!
//! `switchyard-loadtest train --proxy PATH` runs the given `switchyard-proxy` binary as a child
//! process in front of upstreams served by this process, and sends it the kinds of traffic it
//! serves in production: HTTP/1.1 and h2c downstream, TLS with ALPN `http/1.1` and `h2`, GETs
//! and POSTs with bodies, HTTP/1.1 and h2c upstreams, header, cookie and query rules, sticky
//! users and weighted picks, while the admin API is read (`/stats`, `/metrics`) and the table is
//! swapped through `PUT /routes`. It does this twice: with one worker (a current-thread runtime,
//! as a sidecar runs) and with two. A binary built with `-Cprofile-generate` writes its counts
//! when it exits, and the release build is then compiled with them.
//!
//! It is not a benchmark and its table is not the benchmarks' one. It fails unless every request
//! was answered 2xx and the proxy exited 0: a profile of a proxy answering errors would tune the
//! build for its error paths.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use switchyard_control::http::Http;
use switchyard_testkit::Scratch;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use crate::generate::{Options, Report, generate};

/// Runs the training against `proxy`, each kind of traffic for `duration`, and prints what was
/// sent.
pub fn run(proxy: &Path, duration: Duration) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let lines = runtime.block_on(train(proxy, duration))?;
    println!("| workers | traffic | requests (all 2xx) |");
    println!("|---|---|---|");
    for line in lines {
        println!("| {} | {} | {} |", line.workers, line.traffic, line.requests);
    }
    Ok(())
}

/// One kind of traffic sent to one proxy run.
#[derive(Debug, Clone)]
pub struct Line {
    /// The proxy's `--workers`.
    pub workers: usize,
    /// What was sent.
    pub traffic: String,
    /// Requests answered, every one 2xx.
    pub requests: u64,
}

/// The whole training: upstreams, a certificate, and two runs of the proxy.
pub async fn train(proxy: &Path, duration: Duration) -> anyhow::Result<Vec<Line>> {
    let dir = Scratch::new("train");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).context("a self-signed certificate")?;
    std::fs::write(dir.join("cert.pem"), cert.cert.pem())?;
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem())?;
    let tls = client_config(cert.cert.der().clone())?;
    let upstreams = [
        spawn_upstream("stable").await?,
        spawn_upstream("canary").await?,
        spawn_upstream("v2").await?,
    ];

    let http = Http::new(Duration::from_secs(10));
    let mut lines = Vec::new();
    for workers in [1, 2] {
        let ports = Ports::free()?;
        let config = dir.join("proxy.yaml");
        let yaml = config_yaml(&ports, &upstreams, dir.path());
        std::fs::write(&config, &yaml)?;
        let mut child = Command::new(proxy)
            .arg("--config")
            .arg(&config)
            .args(["--workers", &workers.to_string()])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("start {}", proxy.display()))?;
        let sent = async {
            ready(&http, &ports, &mut child).await?;
            drive(&http, &ports, yaml, &tls, duration).await
        }
        .await;
        let exit = stop(&mut child).await;
        for (traffic, requests) in sent? {
            lines.push(Line {
                workers,
                traffic,
                requests,
            });
        }
        let exit = exit?;
        ensure!(
            exit.success(),
            "the proxy exited with {exit} after its run with {workers} workers"
        );
    }
    Ok(lines)
}

/// Sends each kind of traffic in turn; returns what was sent and how many requests.
async fn drive(
    http: &Http,
    ports: &Ports,
    config: String,
    tls: &Arc<ClientConfig>,
    duration: Duration,
) -> anyhow::Result<Vec<(String, u64)>> {
    let plain = |path: &str| -> anyhow::Result<Uri> { Ok(format!("http://127.0.0.1:{}{path}", ports.plain).parse()?) };
    let header =
        |name: &'static str, value: &'static str| (HeaderName::from_static(name), HeaderValue::from_static(value));
    let mut sent = Vec::new();

    // Sticky users over HTTP/1.1 while the admin API is read and the table swapped.
    let admin = tokio::spawn(admin_traffic(http.clone(), ports.admin, config, duration));
    let report = generate(&Options {
        connections: 64,
        duration,
        warmup: Duration::ZERO,
        users: 1000,
        ..Options::new(plain("/shop/cart")?)
    })
    .await?;
    sent.push((
        "HTTP/1.1, 64 connections, 1,000 sticky users".to_owned(),
        all_2xx(&report)?,
    ));
    let swaps = admin.await??;
    sent.push(("admin: stats, metrics, table swaps".to_owned(), swaps));

    let runs = [
        (
            "HTTP/1.1, header rule to canary",
            plain("/shop?page=2")?,
            vec![header("x-canary", "true")],
            false,
        ),
        (
            "HTTP/1.1, cookie-sticky route",
            plain("/api/items")?,
            vec![header("cookie", "uid=u-42; theme=dark")],
            false,
        ),
        (
            "HTTP/1.1, query rule to the h2c track",
            plain("/api/items?canary=1")?,
            vec![],
            false,
        ),
        ("h2c, 1,000 sticky users", plain("/shop/cart")?, vec![], true),
    ];
    for (traffic, url, headers, http2) in runs {
        let report = generate(&Options {
            connections: if http2 { 4 } else { 16 },
            duration: duration / 2,
            warmup: Duration::ZERO,
            users: 1000,
            http2,
            headers,
            ..Options::new(url)
        })
        .await?;
        sent.push((traffic.to_owned(), all_2xx(&report)?));
    }

    for (traffic, h2) in [("TLS http/1.1, GET and POST", false), ("TLS h2, GET and POST", true)] {
        let requests = tls_traffic(ports.tls, tls, h2, 8, duration / 2).await?;
        sent.push((traffic.to_owned(), requests));
    }
    Ok(sent)
}

/// The answers of a generator run, if there were some and every one was 2xx.
fn all_2xx(report: &Report) -> anyhow::Result<u64> {
    let t = &report.totals;
    let not_2xx: u64 = t
        .statuses
        .iter()
        .filter(|(s, _)| !(200..300).contains(*s))
        .map(|(_, n)| n)
        .sum();
    ensure!(
        t.requests > 0 && t.transport_errors == 0 && not_2xx == 0,
        "{}: {} answers, {} transport errors, statuses {:?}",
        report.settings.url,
        t.requests,
        t.transport_errors,
        t.statuses
    );
    Ok(t.requests)
}

/// Reads `/stats` and `/metrics` and swaps the table (weights 95/5 and 50/50 in turn) until
/// `duration` has passed; returns the admin requests made.
async fn admin_traffic(http: Http, port: u16, config: String, duration: Duration) -> anyhow::Result<u64> {
    let routes = &config[config.find("routes:").context("the config has routes")?..];
    let swapped = routes
        .replace("weight: 95", "weight: 50")
        .replace("weight: 5 ", "weight: 50 ");
    let deadline = Instant::now() + duration;
    let mut made = 0;
    while Instant::now() < deadline {
        for (method, path, body) in [
            (Method::GET, "/stats?window=10s", ""),
            (Method::GET, "/metrics", ""),
            (
                Method::PUT,
                "/routes",
                if made % 2 == 0 { swapped.as_str() } else { routes },
            ),
            (Method::GET, "/routes", ""),
        ] {
            let url = format!("http://127.0.0.1:{port}{path}");
            let yaml = [("content-type", "application/yaml".to_owned())];
            let (status, _, _) = http.call(method, &url, &yaml, Some(body.as_bytes().to_vec())).await?;
            ensure!(status.is_success(), "{path} answered {status}");
            made += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(made)
}

/// Closed-loop traffic over `connections` TLS connections for `duration`: GETs with sticky
/// users, and every fourth request a POST with a 2 KiB body. Returns the requests answered.
async fn tls_traffic(
    port: u16,
    config: &Arc<ClientConfig>,
    h2: bool,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<u64> {
    let mut config = ClientConfig::clone(config);
    config.alpn_protocols = vec![if h2 { b"h2".to_vec() } else { b"http/1.1".to_vec() }];
    let connector = TlsConnector::from(Arc::new(config));
    let deadline = Instant::now() + duration;
    let mut tasks = JoinSet::new();
    for index in 0..connections {
        let connector = connector.clone();
        tasks.spawn(async move {
            let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(ServerName::try_from("localhost")?, tcp).await?;
            let io = TokioIo::new(tls);
            let mut answered = 0u64;
            if h2 {
                let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
                tokio::spawn(conn);
                while Instant::now() < deadline {
                    exchange(sender.send_request(tls_request(port, index, answered, true)?)).await?;
                    answered += 1;
                }
            } else {
                let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
                tokio::spawn(conn);
                while Instant::now() < deadline {
                    sender.ready().await?;
                    exchange(sender.send_request(tls_request(port, index, answered, false)?)).await?;
                    answered += 1;
                }
            }
            anyhow::Ok(answered)
        });
    }
    let mut total = 0;
    while let Some(done) = tasks.join_next().await {
        total += done??;
    }
    Ok(total)
}

/// The `n`-th request of TLS connection `index`.
fn tls_request(port: u16, index: usize, n: u64, h2: bool) -> anyhow::Result<Request<Full<Bytes>>> {
    let (method, body) = if n % 4 == 3 {
        (Method::POST, Bytes::from(vec![b'x'; 2048]))
    } else {
        (Method::GET, Bytes::new())
    };
    let path = format!("/shop/item/{n}");
    let builder = Request::builder()
        .method(method)
        .header("x-user-id", format!("user-{}", (index as u64 * 131 + n) % 1000));
    let builder = if h2 {
        builder.uri(format!("https://localhost:{port}{path}"))
    } else {
        builder.uri(path).header(header::HOST, format!("localhost:{port}"))
    };
    Ok(builder.body(Full::new(body))?)
}

/// Awaits a response, requires 2xx, and reads its body.
async fn exchange(response: impl Future<Output = hyper::Result<Response<Incoming>>>) -> anyhow::Result<()> {
    let response = response.await?;
    let status = response.status();
    response.into_body().collect().await?;
    ensure!(status.is_success(), "a TLS request was answered {status}");
    Ok(())
}

/// A client configuration that trusts only the training's certificate.
fn client_config(cert: CertificateDer<'static>) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    roots.add(cert)?;
    let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// An upstream that serves HTTP/1.1 and h2c on one loopback port, reads every request body, and
/// answers a small body naming itself in `x-upstream`. Returns its address.
async fn spawn_upstream(name: &'static str) -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let service = service_fn(move |req: Request<Incoming>| async move {
                let read = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
                let mut response = Response::new(Full::new(Bytes::from(format!("ok {read}\n"))));
                response
                    .headers_mut()
                    .insert("x-upstream", HeaderValue::from_static(name));
                Ok::<_, Infallible>(response)
            });
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// The training's table: a cookie-sticky route with a query rule to an h2c track, and a
/// header-sticky route with header rules and 95/5 between two tracks.
fn config_yaml(ports: &Ports, upstreams: &[String; 3], dir: &Path) -> String {
    let [stable, canary, v2] = upstreams;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    format!(
        r#"listen:
  - address: 127.0.0.1:{plain}
  - address: 127.0.0.1:{tls}
    tls: {{ certFile: "{cert}", keyFile: "{key}" }}
admin: {{ listen: 127.0.0.1:{admin} }}
routes:
  - name: api
    match: {{ pathPrefix: /api }}
    tracks:
      - {{ name: v1, endpoints: ["{stable}"], weight: 80 }}
      - {{ name: v2, endpoints: ["{v2}"], weight: 20, protocol: h2c }}
    rules:
      - match: {{ queryParams: [{{ name: canary, value: "1" }}] }}
        track: v2
    sticky: {{ cookie: uid }}
    timeout: 5s
  - name: shop
    match: {{ pathPrefix: / }}
    tracks:
      - {{ name: stable, endpoints: ["{stable}"], weight: 95 }}
      - {{ name: canary, endpoints: ["{canary}"], weight: 5 }}
    rules:
      - match: {{ headers: [{{ name: x-canary, value: "true" }}] }}
        track: canary
      - match: {{ headers: [{{ name: x-environment, value: stable }}] }}
        track: stable
    sticky: {{ header: x-user-id }}
"#,
        plain = ports.plain,
        tls = ports.tls,
        admin = ports.admin,
        cert = cert.display(),
        key = key.display(),
    )
}

/// Free loopback ports for one proxy run: found by binding port 0 and letting go.
struct Ports {
    plain: u16,
    tls: u16,
    admin: u16,
}

impl Ports {
    fn free() -> anyhow::Result<Self> {
        let bound: Vec<std::net::TcpListener> = (0..3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<_, _>>()?;
        let port = |i: usize| bound[i].local_addr().map(|a| a.port());
        Ok(Self {
            plain: port(0)?,
            tls: port(1)?,
            admin: port(2)?,
        })
    }
}

/// Waits until the proxy answers `/readyz` and its listeners accept, or fails if it exits or
/// takes over 30 seconds.
async fn ready(http: &Http, ports: &Ports, child: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(exit) = child.try_wait()? {
            bail!("the proxy exited with {exit} before it was ready");
        }
        let listening = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], ports.plain)))
            .await
            .is_ok()
            && TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], ports.tls)))
                .await
                .is_ok();
        let readyz = format!("http://127.0.0.1:{}/readyz", ports.admin);
        if listening && matches!(http.call(Method::GET, &readyz, &[], None).await, Ok((s, _, _)) if s.is_success()) {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "the proxy was not ready within 30 seconds");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops the proxy with SIGTERM (a graceful drain, after which a profiling build writes its
/// counts) and waits for it to exit.
async fn stop(child: &mut Child) -> anyhow::Result<ExitStatus> {
    if let Some(exit) = child.try_wait()? {
        return Ok(exit);
    }
    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status()?;
    ensure!(kill.success(), "kill -TERM {} failed", child.id());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(exit) = child.try_wait()? {
            return Ok(exit);
        }
        if Instant::now() >= deadline {
            child.kill()?;
            bail!("the proxy did not exit within 60 seconds of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
