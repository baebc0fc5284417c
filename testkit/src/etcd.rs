//! A real etcd cluster on loopback for the fleet's tests: `etcd` (Debian's `etcd-server`, which
//! `scripts/test` installs when it is missing) started as separate processes, each member with
//! its own held client and peer ports (a killed member's ports stay its own) and its own data directory, killed when dropped. Tests
//! kill and restart members to play an etcd outage; nothing assumes an etcd left running.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{Client, HeldPort, Scratch, held_port};

/// One member: its name, ports and process (if running).
#[derive(Debug)]
struct Member {
    name: String,
    client: HeldPort,
    peer: HeldPort,
    /// `/health` over plain HTTP, for a cluster whose clients speak TLS.
    metrics: HeldPort,
    data: PathBuf,
    log: PathBuf,
    process: Option<Child>,
}

/// An etcd cluster of separate `etcd` processes on 127.0.0.1.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
    tls: Option<EtcdTls>,
    initial_cluster: String,
    token: String,
    _scratch: Scratch,
}

/// The files of a cluster reached over TLS, in PEM: the CA that signed the members' and the
/// client's certificates, and the client's certificate and key (members demand one).
#[derive(Debug, Clone)]
pub struct EtcdTls {
    /// The CA certificate.
    pub ca: PathBuf,
    /// A client certificate signed by that CA.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
}

impl EtcdTls {
    /// A CA, a certificate for 127.0.0.1 signed by it for the members, and a client's.
    fn create(scratch: &Scratch) -> Self {
        let ca_key = rcgen::KeyPair::generate().expect("a key");
        let mut params = rcgen::CertificateParams::new(Vec::new()).expect("CA parameters");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&ca_key).expect("the CA certificate");
        let issuer = rcgen::Issuer::new(params, ca_key);
        let leaf = |names: Vec<String>| {
            let key = rcgen::KeyPair::generate().expect("a key");
            let cert = rcgen::CertificateParams::new(names)
                .expect("certificate parameters")
                .signed_by(&key, &issuer)
                .expect("a certificate");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]);
        let (client_cert, client_key) = leaf(vec!["switchyard".to_owned()]);
        let write = |name: &str, text: &str| {
            let path = scratch.join(name);
            std::fs::write(&path, text).expect("write a certificate file");
            path
        };
        Self {
            ca: write("ca.pem", &ca.pem()),
            cert: write("client.pem", &client_cert),
            key: write("client-key.pem", &client_key),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server-key.pem", &server_key),
        }
    }
}

/// Whether the `etcd` binary is installed (`scripts/test` installs it as root when it is not).
pub fn etcd_installed() -> bool {
    crate::installed("etcd")
}

impl EtcdCluster {
    /// Starts `members` members named after `test` and waits until every one is healthy.
    /// Panics with what to install when `etcd` is missing.
    pub async fn start(test: &str, members: usize) -> Self {
        Self::launch(test, members, false).await
    }

    /// Starts a cluster as [`Self::start`] does whose members serve clients over TLS only
    /// (`https://` client URLs) and demand a client certificate signed by its CA
    /// (`--client-cert-auth`); [`Self::tls`] gives the files a client needs.
    pub async fn start_tls(test: &str, members: usize) -> Self {
        Self::launch(test, members, true).await
    }

    /// The TLS files of a cluster started by [`Self::start_tls`].
    pub fn tls(&self) -> Option<&EtcdTls> {
        self.tls.as_ref()
    }

    async fn launch(test: &str, members: usize, tls: bool) -> Self {
        assert!(
            etcd_installed(),
            "etcd is not installed: run ./scripts/test as root (it installs Debian's etcd-server), \
             or apt-get install etcd-server"
        );
        let scratch = Scratch::new(&format!("etcd-{test}"));
        let members: Vec<Member> = (0..members)
            .map(|i| Member {
                name: format!("m{i}"),
                client: held_port(),
                peer: held_port(),
                metrics: held_port(),
                data: scratch.join(&format!("m{i}.etcd")),
                log: scratch.join(&format!("m{i}.log")),
                process: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer.port()))
            .collect::<Vec<_>>()
            .join(",");
        let tls = tls.then(|| EtcdTls::create(&scratch));
        let mut cluster = Self {
            members,
            tls,
            initial_cluster,
            token: format!("switchyard-{}-{test}", std::process::id()),
            _scratch: scratch,
        };
        for i in 0..cluster.members.len() {
            cluster.spawn(i);
        }
        for i in 0..cluster.members.len() {
            cluster.wait_healthy(i).await;
        }
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let m = &mut self.members[i];
        let log = std::fs::File::create(&m.log).expect("create the member's log");
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", m.client.port());
        let peer = format!("http://127.0.0.1:{}", m.peer.port());
        let metrics = format!("http://127.0.0.1:{}", m.metrics.port());
        let mut command = Command::new("etcd");
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.server_cert)
                .arg("--key-file")
                .arg(&tls.server_key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth");
        }
        let child = command
            .args(["--name", &m.name, "--data-dir"])
            .arg(&m.data)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--listen-metrics-urls", &metrics])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new", "--initial-cluster-token", &self.token])
            // Elections in a tenth of a second on loopback, so that a test's outage is short.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd starts");
        m.process = Some(child);
    }

    /// Every member's client URL (`http://127.0.0.1:PORT`), running or not.
    pub fn client_urls(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| {
                let scheme = if self.tls.is_some() { "https" } else { "http" };
                format!("{scheme}://127.0.0.1:{}", m.client.port())
            })
            .collect()
    }

    /// The process ids of the members running now, in member order (a scenario reads their CPU
    /// time and memory from `/proc`).
    pub fn pids(&self) -> Vec<u32> {
        self.members
            .iter()
            .filter_map(|m| m.process.as_ref().map(Child::id))
            .collect()
    }

    /// Kills member `i` (SIGKILL); its data stays, so [`Self::restart`] brings it back.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.members[i].process.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }

    /// Starts member `i` again on its data and ports, and waits until it is healthy.
    pub async fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_healthy(i).await;
    }

    /// Starts every member again (all at once: one alone has no quorum to become healthy) and
    /// waits until every one is healthy.
    pub async fn restart_all(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
            self.spawn(i);
        }
        for i in 0..self.members.len() {
            self.wait_healthy(i).await;
        }
    }

    /// Whether member `i` answers `GET /health` with `"health":"true"` (it has a leader).
    pub async fn healthy(&self, i: usize) -> bool {
        let url = format!("http://127.0.0.1:{}/health", self.members[i].metrics.port());
        match tokio::time::timeout(Duration::from_secs(2), Client::http1().get(&url, &[])).await {
            Ok(Ok(reply)) => reply.status == 200 && reply.body.contains("\"true\""),
            _ => false,
        }
    }

    async fn wait_healthy(&self, i: usize) {
        for _ in 0..300 {
            if self.healthy(i).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = std::fs::read_to_string(&self.members[i].log).unwrap_or_default();
        panic!(
            "etcd member {} did not become healthy; its log:\n{log}",
            self.members[i].name
        );
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
