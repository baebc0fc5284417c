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
    data: PathBuf,
    log: PathBuf,
    process: Option<Child>,
}

/// An etcd cluster of separate `etcd` processes on 127.0.0.1.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    token: String,
    _scratch: Scratch,
}

/// Whether the `etcd` binary is installed (`scripts/test` installs it as root when it is not).
pub fn etcd_installed() -> bool {
    crate::installed("etcd")
}

impl EtcdCluster {
    /// Starts `members` members named after `test` and waits until every one is healthy.
    /// Panics with what to install when `etcd` is missing.
    pub async fn start(test: &str, members: usize) -> Self {
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
        let mut cluster = Self {
            members,
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
        let client = format!("http://127.0.0.1:{}", m.client.port());
        let peer = format!("http://127.0.0.1:{}", m.peer.port());
        let child = Command::new("etcd")
            .args(["--name", &m.name, "--data-dir"])
            .arg(&m.data)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
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
            .map(|m| format!("http://127.0.0.1:{}", m.client.port()))
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
        let url = format!("http://127.0.0.1:{}/health", self.members[i].client.port());
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
