//! The fleet on a real 3-member etcd cluster: real `switchyard serve --etcd` replicas and real
//! `switchyard-proxy --group` processes in front of mock upstreams. A canary over a group
//! completes while its leader is killed -9 at seeded moments, every step once and in order; an
//! abort answered just before the leader dies is carried out by the next; a leader frozen past
//! its lease writes nothing when it wakes; etcd losing a member, then all of them for 10 s,
//! fails no request and the rollout resumes; a proxy that joins mid-rollout serves the current
//! weight at once, and one killed -9 leaves the group after its lease.
//!
//! The proxy binary is the workspace's `target/<profile>/switchyard-proxy`, which
//! `cargo test --workspace --all-features` (`scripts/test`) builds with its `fleet` feature.

#![cfg(feature = "fleet")]

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use etcd_client::Client as Etcd;
use serde_json::Value;
use switchyard_testkit::{Client, EtcdCluster, MockUpstream, Rng, Scratch, assert_eventually};

const GROUP: &str = "shop";
/// The replicas' and proxies' lease: a dead process is noticed within it.
const TTL: &str = "2s";
/// How long the fleet may take to settle anything in these tests.
const WITHIN: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The workspace's proxy binary, next to this test's directory.
fn proxy_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>");
    let proxy = dir.join("switchyard-proxy");
    assert!(
        proxy.exists(),
        "{} is missing: build it with `cargo build -p switchyard-proxy --features fleet` (scripts/test does)",
        proxy.display()
    );
    proxy
}

/// A process that is killed when dropped.
struct Process {
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    fn spawn(command: &mut Command, log: PathBuf) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open the log");
        let child = command
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .expect("the process starts");
        Self {
            child: Some(child),
            log,
        }
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {}", self.pid());
    }

    /// Waits for the process to end by itself, at most `within`; its exit status.
    fn wait(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, and reaped.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // A stopped process must be continued to die promptly and be reaped.
            let _ = Command::new("kill").args(["-CONT", &c.id().to_string()]).status();
        }
        self.kill();
    }
}

/// A proxy process in the group.
struct Proxy {
    process: Process,
    admin: String,
    traffic: String,
}

/// A controller replica process.
struct Replica {
    process: Process,
    url: String,
    port: u16,
}

/// etcd, two upstreams, the group's proxies and the controller's replicas.
struct Fleet {
    etcd: EtcdCluster,
    stable: MockUpstream,
    canary: MockUpstream,
    scratch: Scratch,
    proxies: Vec<Proxy>,
    replicas: Vec<Replica>,
    started: usize,
}

impl Fleet {
    async fn start(test: &str, proxies: usize, replicas: usize) -> Self {
        let etcd = EtcdCluster::start(test, 3).await;
        let mut fleet = Self {
            etcd,
            stable: MockUpstream::start("stable").await,
            canary: MockUpstream::start("canary").await,
            scratch: Scratch::new(&format!("fleet-{test}")),
            proxies: Vec::new(),
            replicas: Vec::new(),
            started: 0,
        };
        for _ in 0..proxies {
            fleet.add_proxy().await;
        }
        for _ in 0..replicas {
            let port = free_port();
            let replica = fleet.spawn_replica(port);
            fleet.replicas.push(replica);
        }
        for r in &fleet.replicas {
            assert_eventually!(get(&format!("{}/healthz", r.url)).await.is_some(), WITHIN);
        }
        if replicas > 0 {
            assert_eventually!(fleet.leader().await.is_some(), WITHIN);
        }
        fleet
    }

    fn etcd_urls(&self) -> String {
        self.etcd.client_urls().join(",")
    }

    /// Starts one more proxy in the group and waits until it is registered and serves.
    async fn add_proxy(&mut self) -> usize {
        let (traffic, admin) = (free_port(), free_port());
        let n = self.started;
        self.started += 1;
        let config = self.scratch.join(&format!("proxy{n}.yaml"));
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{traffic}\nadmin:\n  listen: 127.0.0.1:{admin}\nroutes:\n  - name: app\n    tracks:\n      \
                 - {{ name: stable, endpoints: [\"{}\"], weight: 100 }}\n      - {{ name: canary, endpoints: [\"{}\"], weight: 0 }}\n",
                self.stable.addr(),
                self.canary.addr()
            ),
        )
        .unwrap();
        let process = Process::spawn(
            Command::new(proxy_binary())
                .arg("--config")
                .arg(&config)
                .arg("--state-file")
                .arg(self.scratch.join(&format!("proxy{n}.state.json")))
                .args(["--etcd", &self.etcd_urls(), "--group", GROUP, "--lease-ttl", TTL]),
            self.scratch.join(&format!("proxy{n}.log")),
        );
        let proxy = Proxy {
            process,
            admin: format!("http://127.0.0.1:{admin}"),
            traffic: format!("http://127.0.0.1:{traffic}"),
        };
        let readyz = format!("{}/readyz", proxy.admin);
        assert_eventually!(get(&readyz).await.is_some(), WITHIN);
        self.proxies.push(proxy);
        let i = self.proxies.len() - 1;
        let admin = self.proxies[i].admin.clone();
        assert_eventually!(self.registered().await.contains(&admin), WITHIN);
        i
    }

    fn spawn_replica(&self, port: u16) -> Replica {
        self.spawn_replica_with(port, TTL)
    }

    fn spawn_replica_with(&self, port: u16, ttl: &str) -> Replica {
        let process = Process::spawn(
            Command::new(env!("CARGO_BIN_EXE_switchyard")).args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--etcd",
                &self.etcd_urls(),
                "--lease-ttl",
                ttl,
            ]),
            self.scratch.join(&format!("replica-{port}.log")),
        );
        Replica {
            process,
            url: format!("http://127.0.0.1:{port}"),
            port,
        }
    }

    /// Kills replica `i` with SIGKILL and starts it again on its port.
    fn kill_and_restart(&mut self, i: usize) {
        self.replicas[i].process.kill();
        let port = self.replicas[i].port;
        self.replicas[i] = self.spawn_replica(port);
    }

    /// The admin URLs registered in the group, as etcd holds them.
    async fn registered(&self) -> Vec<String> {
        let mut etcd = self.etcd().await;
        let Ok(answer) = etcd
            .get(
                format!("/switchyard/groups/{GROUP}/proxies/"),
                Some(etcd_client::GetOptions::new().with_prefix()),
            )
            .await
        else {
            return Vec::new();
        };
        answer
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice::<Value>(kv.value()).ok())
            .filter_map(|r| r["adminUrl"].as_str().map(str::to_owned))
            .collect()
    }

    /// A GET answered by any replica that answers.
    async fn any(&self, path: &str) -> Option<Value> {
        for r in &self.replicas {
            if let Some(v) = get(&format!("{}{path}", r.url)).await {
                return Some(v);
            }
        }
        None
    }

    /// The replica that leads, as it says itself.
    async fn leader(&self) -> Option<usize> {
        for (i, r) in self.replicas.iter().enumerate() {
            if let Some(v) = get(&format!("{}/replica", r.url)).await
                && v["role"] == "leader"
            {
                return Some(i);
            }
        }
        None
    }

    async fn status(&self, name: &str) -> Option<Value> {
        self.any(&format!("/rollouts/{name}")).await
    }

    /// Applies a spec through replica `via` (a follower passes it to the leader).
    async fn apply(&self, via: usize, spec: &str) -> (u16, Value) {
        post(&format!("{}/rollouts", self.replicas[via].url), spec).await
    }

    /// The canary's weight each proxy serves.
    async fn weights(&self) -> Vec<Option<f64>> {
        let mut out = Vec::new();
        for p in &self.proxies {
            out.push(canary_weight(&p.admin).await);
        }
        out
    }

    async fn etcd(&self) -> Etcd {
        Etcd::connect(self.etcd.client_urls(), None).await.expect("etcd client")
    }

    /// Every replica's log, for a failure's message.
    fn logs(&self) -> String {
        let replicas = self
            .replicas
            .iter()
            .map(|r| format!("--- replica {}\n{}", r.url, r.process.log()));
        let proxies = self
            .proxies
            .iter()
            .map(|p| format!("--- proxy {}\n{}", p.admin, p.process.log()));
        replicas.chain(proxies).collect()
    }

    /// Waits until every proxy serves the canary at `weight`; fails with every log.
    async fn all_at(&self, weight: f64) {
        let deadline = std::time::Instant::now() + WITHIN;
        loop {
            let weights = self.weights().await;
            if weights.iter().all(|w| *w == Some(weight)) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the proxies serve {weights:?}, not {weight}% within {WITHIN:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn get(url: &str) -> Option<Value> {
    let reply = tokio::time::timeout(Duration::from_secs(3), Client::http1().get(url, &[]))
        .await
        .ok()?
        .ok()?;
    (reply.status == 200).then(|| serde_json::from_str(&reply.body).unwrap_or(Value::Null))
}

/// A command to replica `via`, sent again while no replica can take it (503: an election is
/// under way), as an operator would.
async fn command(fleet: &Fleet, via: usize, path: &str) -> (u16, Value) {
    let deadline = std::time::Instant::now() + WITHIN;
    loop {
        let (code, body) = post(&format!("{}{path}", fleet.replicas[via].url), "").await;
        if code != 503 || std::time::Instant::now() > deadline {
            return (code, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn post(url: &str, body: &str) -> (u16, Value) {
    let reply = Client::http1()
        .send(
            http::Method::POST,
            url,
            &[("content-type", "application/yaml")],
            body.to_owned(),
        )
        .await
        .expect("the control API answers");
    (
        reply.status.as_u16(),
        serde_json::from_str(&reply.body).unwrap_or(Value::Null),
    )
}

/// The canary's weight in the proxy's table.
async fn canary_weight(admin: &str) -> Option<f64> {
    let routes = get(&format!("{admin}/routes")).await?;
    routes["routes"][0]["tracks"]
        .as_array()?
        .iter()
        .find(|t| t["name"] == "canary")?["weight"]
        .as_f64()
}

fn spec(name: &str, steps: &str) -> String {
    format!(
        "name: {name}\nroute: app\nproxies: {{ group: {GROUP} }}\nbaseline: stable\ncandidate: canary\ncanary:\n  steps: {steps}\n"
    )
}

fn phase(status: &Option<Value>) -> String {
    status
        .as_ref()
        .map_or(String::new(), |s| s["phase"].as_str().unwrap_or("").to_owned())
}

/// The `step` events' step numbers, in history order.
async fn steps_taken(fleet: &Fleet, name: &str) -> Vec<u64> {
    let history = fleet.any(&format!("/rollouts/{name}/history")).await.expect("history");
    history["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "step")
        .filter_map(|e| {
            let m = e["message"].as_str()?;
            m.strip_prefix("step ")?.split(':').next()?.parse().ok()
        })
        .collect()
}

/// The mod revision of `key`, 0 when absent.
async fn mod_revision(etcd: &mut Etcd, key: &str) -> i64 {
    etcd.get(key, None)
        .await
        .expect("etcd answers")
        .kvs()
        .first()
        .map_or(0, |kv| kv.mod_revision())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_over_a_group_completes_while_its_leaders_are_killed() {
    let mut fleet = Fleet::start("leader-kills", 3, 3).await;
    let steps = "[{setWeight: 10}, {pause: {duration: 1s}}, {setWeight: 30}, {pause: {duration: 1s}}, \
                 {setWeight: 60}, {pause: {duration: 1s}}, {setWeight: 100}]";
    let (code, body) = fleet.apply(0, &spec("shop-v2", steps)).await;
    assert_eq!(code, 201, "{body}");
    // Kill whichever replica leads at seeded random moments, starting it again at once, until
    // the rollout completes.
    let mut rng = Rng(0x5eed_f1ee7);
    let mut kills = 0;
    while phase(&fleet.status("shop-v2").await) != "Completed" {
        assert!(
            kills < 12,
            "the rollout did not complete after {kills} kills\n{}",
            fleet.logs()
        );
        tokio::time::sleep(Duration::from_millis(200 + rng.next_u64() % 1300)).await;
        if let Some(leader) = fleet.leader().await {
            fleet.kill_and_restart(leader);
            kills += 1;
        }
    }
    assert!(kills >= 2, "only {kills} kills happened");
    assert_eq!(
        steps_taken(&fleet, "shop-v2").await,
        [1, 3, 5, 7],
        "every weight step once, in order\n{}",
        fleet.logs()
    );
    fleet.all_at(100.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_answered_just_before_the_leader_dies_is_carried_out_by_the_next() {
    let mut fleet = Fleet::start("abort-kill", 3, 2).await;
    let (code, body) = fleet.apply(0, &spec("shop-v2", "[{setWeight: 50}, {pause: {}}]")).await;
    assert_eq!(code, 201, "{body}");
    assert_eventually!(phase(&fleet.status("shop-v2").await) == "Paused", WITHIN);
    fleet.all_at(50.0).await;

    let leader = fleet.leader().await.expect("a leader");
    let (code, body) = post(&format!("{}/rollouts/shop-v2/abort", fleet.replicas[leader].url), "").await;
    assert_eq!(code, 200, "{body}");
    fleet.replicas[leader].process.kill();

    assert_eventually!(fleet.leader().await.is_some_and(|l| l != leader), WITHIN);
    fleet.all_at(0.0).await;
    let status = fleet.status("shop-v2").await.expect("status");
    assert_eq!(status["phase"], "Aborted", "{status}");
    assert_eventually!(
        fleet
            .status("shop-v2")
            .await
            .is_some_and(|s| s["confirmedWeight"] == 0.0),
        WITHIN
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_frozen_past_its_lease_writes_nothing_when_it_wakes() {
    let fleet = Fleet::start("frozen", 2, 2).await;
    let steps = "[{setWeight: 20}, {pause: {duration: 3s}}, {setWeight: 50}, {pause: {}}]";
    let (code, body) = fleet.apply(0, &spec("shop-v2", steps)).await;
    assert_eq!(code, 201, "{body}");
    fleet.all_at(20.0).await;

    // Freeze the leader in its 3 s pause; the other replica takes over and moves on.
    let frozen = fleet.leader().await.expect("a leader");
    let other = 1 - frozen;
    fleet.replicas[frozen].process.signal("-STOP");
    assert_eventually!(fleet.leader().await == Some(other), WITHIN);
    fleet.all_at(50.0).await;
    assert_eventually!(phase(&fleet.status("shop-v2").await) == "Paused", WITHIN);

    // Freeze the new leader too, so that nothing else writes, and wake the old one: its pause
    // is over and it would take step 3 again, but its writes are fenced.
    fleet.replicas[other].process.signal("-STOP");
    let mut etcd = fleet.etcd().await;
    let keys = ["/switchyard/rollouts/shop-v2", "/switchyard/groups/shop/table"];
    let mut before = Vec::new();
    for k in keys {
        before.push(mod_revision(&mut etcd, k).await);
    }
    let holder = etcd.get("/switchyard/control/leader", None).await.unwrap().kvs()[0].create_revision();
    fleet.replicas[frozen].process.signal("-CONT");
    let woken = &fleet.replicas[frozen];
    assert_eventually!(
        get(&format!("{}/replica", woken.url))
            .await
            .is_some_and(|r| r["role"] == "follower"),
        WITHIN
    );
    // It follows, and the key is still the frozen new leader's: nothing was written meanwhile.
    let mut after = Vec::new();
    for k in keys {
        after.push(mod_revision(&mut etcd, k).await);
    }
    let still = etcd.get("/switchyard/control/leader", None).await.unwrap();
    assert_eq!(
        still.kvs().first().map(|kv| kv.create_revision()),
        Some(holder),
        "the frozen new leader's key expired before the check; the window is too short"
    );
    assert_eq!(after, before, "the woken leader wrote\n{}", fleet.logs());
    assert!(
        woken.process.log().contains("stepping down"),
        "the woken leader did not step down\n{}",
        fleet.logs()
    );
    assert_eq!(fleet.weights().await, [Some(50.0), Some(50.0)]);
    fleet.replicas[other].process.signal("-CONT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_losing_a_member_then_all_of_them_fails_no_request_and_the_rollout_resumes() {
    let mut fleet = Fleet::start("etcd-outage", 3, 2).await;
    // Requests through every proxy for the whole test; any that fails is counted.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for p in &fleet.proxies {
        let (stop, sent, failed, url) = (
            Arc::clone(&stop),
            Arc::clone(&sent),
            Arc::clone(&failed),
            format!("{}/", p.traffic),
        );
        load.push(tokio::spawn(async move {
            let client = Client::http1();
            while !stop.load(Ordering::Relaxed) {
                let ok = client.get(&url, &[]).await.is_ok_and(|r| r.status == 200);
                sent.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    let steps = "[{setWeight: 20}, {pause: {}}, {setWeight: 40}, {pause: {}}, {setWeight: 100}]";
    let (code, body) = fleet.apply(0, &spec("shop-v2", steps)).await;
    assert_eq!(code, 201, "{body}");
    fleet.all_at(20.0).await;

    // One member down: requests go on (counted below), and a promote is taken and kept.
    fleet.etcd.kill(0);
    let (code, body) = command(&fleet, 0, "/rollouts/shop-v2/promote").await;
    assert_eq!(code, 200, "{body}\n{}", fleet.logs());
    fleet.all_at(40.0).await;
    fleet.etcd.restart(0).await;

    // Every member down for 10 s: the proxies serve on.
    for i in 0..3 {
        fleet.etcd.kill(i);
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(fleet.weights().await, [Some(40.0); 3]);
    fleet.etcd.restart_all().await;

    // The rollout resumes under whichever replica leads now.
    assert_eventually!(fleet.leader().await.is_some(), WITHIN);
    assert_eventually!(phase(&fleet.status("shop-v2").await) == "Paused", WITHIN);
    let (code, body) = command(&fleet, 1, "/rollouts/shop-v2/promote").await;
    assert_eq!(code, 200, "{body}\n{}", fleet.logs());
    assert_eventually!(phase(&fleet.status("shop-v2").await) == "Completed", WITHIN);
    fleet.all_at(100.0).await;

    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(sent > 1000, "only {sent} requests were sent");
    assert_eq!(failed, 0, "{failed} of {sent} requests failed");
}

/// The rollout's state as etcd holds it: what a new leader would resume from.
async fn stored_step(etcd: &mut Etcd, name: &str) -> Option<u64> {
    let key = switchyard_config::fleet::FleetKeys::default().rollout(name);
    // The client may send the read to the member that is down: another answers it.
    let mut tries = 0;
    let answer = loop {
        match etcd.get(key.as_str(), None).await {
            Ok(answer) => break answer,
            Err(e) if tries < 50 => {
                tries += 1;
                eprintln!("reading the stored rollout again: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("etcd does not answer: {e}"),
        }
    };
    let record: Value = serde_json::from_slice(answer.kvs().first()?.value()).ok()?;
    record["state"]["step"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_answered_while_an_etcd_member_is_down_is_stored_and_kept() {
    // Each member in turn is down while a promote is sent, so whichever member the leader's
    // lease and writes go through is lost once. A promote answered 200 is in etcd already
    // (a new leader would find it), and the leader keeps its lease through the loss: the
    // rollout never goes back to a step before it.
    let mut fleet = Fleet::start("member-loss", 1, 2).await;
    let steps =
        "[{setWeight: 10}, {pause: {}}, {setWeight: 20}, {pause: {}}, {setWeight: 30}, {pause: {}}, {setWeight: 100}]";
    let (code, body) = fleet.apply(0, &spec("shop-v2", steps)).await;
    assert_eq!(code, 201, "{body}");
    fleet.all_at(10.0).await;
    let mut etcd = fleet.etcd().await;
    for (member, weight) in [(0, 20.0), (1, 30.0), (2, 100.0)] {
        assert_eventually!(phase(&fleet.status("shop-v2").await) == "Paused", WITHIN);
        let before = stored_step(&mut etcd, "shop-v2").await.expect("the rollout is stored");
        fleet.etcd.kill(member);
        let (code, body) = command(&fleet, member % 2, "/rollouts/shop-v2/promote").await;
        assert_eq!(code, 200, "{body}\n{}", fleet.logs());
        let stored = stored_step(&mut etcd, "shop-v2").await;
        assert!(
            stored.is_some_and(|s| s > before),
            "the promote was answered before etcd held it: step {stored:?}, was {before}"
        );
        fleet.all_at(weight).await;
        fleet.etcd.restart(member).await;
    }
    assert_eventually!(phase(&fleet.status("shop-v2").await) == "Completed", WITHIN);
    assert_eq!(
        steps_taken(&fleet, "shop-v2").await,
        [1, 3, 5, 7],
        "every weight step once, in order\n{}",
        fleet.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_joins_serves_the_current_weight_and_one_killed_leaves_after_its_lease() {
    let mut fleet = Fleet::start("join-leave", 2, 1).await;
    let (code, body) = fleet
        .apply(0, &spec("shop-v2", "[{setWeight: 30}, {pause: {}}, {setWeight: 100}]"))
        .await;
    assert_eq!(code, 201, "{body}");
    assert_eventually!(phase(&fleet.status("shop-v2").await) == "Paused", WITHIN);

    // A proxy whose file says 0% joins: it serves the group's 30% at once.
    let joined = fleet.add_proxy().await;
    assert_eventually!(canary_weight(&fleet.proxies[joined].admin).await == Some(30.0), WITHIN);
    assert_eventually!(
        fleet
            .status("shop-v2")
            .await
            .is_some_and(|s| s["group"]["registered"] == 3),
        WITHIN
    );

    // One killed -9 leaves the group once its lease expires, and the rollout goes on.
    let gone = fleet.proxies[0].admin.clone();
    fleet.proxies[0].process.kill();
    assert_eventually!(!fleet.registered().await.contains(&gone), WITHIN);
    assert_eventually!(
        fleet
            .status("shop-v2")
            .await
            .is_some_and(|s| s["group"]["registered"] == 2),
        WITHIN
    );
    let (code, body) = command(&fleet, 0, "/rollouts/shop-v2/promote").await;
    assert_eq!(code, 200, "{body}");
    assert_eventually!(phase(&fleet.status("shop-v2").await) == "Completed", WITHIN);
    for p in &fleet.proxies[1..] {
        assert_eq!(canary_weight(&p.admin).await, Some(100.0));
    }
    let status = fleet.status("shop-v2").await.expect("status");
    // What the replicas answer is what docs/control-api.yaml describes.
    let api =
        switchyard_testkit::openapi::OpenApi::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/control-api.yaml"));
    switchyard_testkit::openapi::assert_object_matches(&status, api.schema("Status"), "status");
    let view = fleet.any(&format!("/fleet/{GROUP}")).await.expect("the group");
    switchyard_testkit::openapi::assert_object_matches(&view, api.schema("Group"), "group");
    let urls: Vec<&str> = status["proxies"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["url"].as_str())
        .collect();
    assert!(!urls.contains(&gone.as_str()), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_fenced_by_a_key_that_is_gone_is_refused() {
    use switchyard_config::fleet::{FleetKeys, GroupName};
    use switchyard_control::fleet::{Expect, Fence, Fencing, Fleet as EtcdFleet, FleetError};

    let etcd = EtcdCluster::start("fence", 3).await;
    let fleet = EtcdFleet::connect(etcd.client_urls(), FleetKeys::default())
        .await
        .expect("connects");
    let group = GroupName::new(GROUP).unwrap();
    let routes = switchyard_config::load_routes(
        "routes: [{name: app, tracks: [{name: stable, endpoints: ['127.0.0.1:9'], weight: 1}]}]",
        switchyard_config::Format::Yaml,
        0,
    )
    .unwrap();
    // Unfenced (a controller alone) it writes; as a leader whose key is gone, nothing.
    let written = fleet
        .write_table(&group, routes.spec(), Expect::Any, true)
        .await
        .expect("writes");
    fleet.set_fencing(Fencing::Leader(Fence {
        key: FleetKeys::default().leader(),
        revision: written,
    }));
    let refused = fleet.write_table(&group, routes.spec(), Expect::Any, true).await;
    assert!(matches!(refused, Err(FleetError::NotLeader)), "{refused:?}");
    let refused = fleet.put_rollout(&fleet.fencing(), "r", b"{}".to_vec()).await;
    assert!(matches!(refused, Err(FleetError::NotLeader)), "{refused:?}");
    fleet.set_fencing(Fencing::Follower);
    let refused = fleet.delete_rollout(&fleet.fencing(), "r").await;
    assert!(matches!(refused, Err(FleetError::NotLeader)), "{refused:?}");
    // A write of a term that ended is refused though the replica leads again: it carries the
    // fence it was queued under, not the new term's.
    let mut client = Etcd::connect(etcd.client_urls(), None).await.expect("etcd client");
    let won = client
        .put(FleetKeys::default().leader(), "me", None)
        .await
        .expect("etcd answers");
    let fence = |revision| {
        Fencing::Leader(Fence {
            key: FleetKeys::default().leader(),
            revision,
        })
    };
    let now = fence(won.header().expect("a header").revision());
    fleet.set_fencing(now.clone());
    let refused = fleet.put_rollout(&fence(written), "r", b"{}".to_vec()).await;
    assert!(matches!(refused, Err(FleetError::NotLeader)), "{refused:?}");
    assert_eq!(mod_revision(&mut client, &FleetKeys::default().rollout("r")).await, 0);
    fleet
        .put_rollout(&now, "r", b"{}".to_vec())
        .await
        .expect("the term's own write lands");
    let table = fleet.table(&group).await.unwrap().expect("the table");
    assert_eq!(table.revision, written, "nothing was written after the first");
}

/// `switchyard fleet …` against replica `via`: (success, stdout, stderr).
fn cli(fleet: &Fleet, via: usize, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["fleet", "--server", &fleet.replicas[via].url])
        .args(args)
        .output()
        .expect("the CLI runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_status_and_apply_from_the_cli() {
    let fleet = Fleet::start("fleet-cli", 2, 2).await;
    let follower = 1 - fleet.leader().await.expect("a leader");
    let (ok, out, err) = cli(&fleet, follower, &["status", GROUP]);
    assert!(ok, "{err}");
    assert!(out.contains("2 registered, 2 serving the group's table"), "{out}");
    for p in &fleet.proxies {
        assert!(
            out.lines().any(|l| l.contains(&p.admin) && l.contains("current")),
            "{out}"
        );
    }

    // A bad table is refused whole, by field path, and nothing changes.
    let bad = fleet.scratch.join("bad.yaml");
    std::fs::write(&bad, "routes:\n  - name: app\n    tracks: []\n").unwrap();
    let (ok, _, err) = cli(&fleet, follower, &["apply", GROUP, "-f", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("routes[0].tracks"), "{err}");
    assert_eq!(fleet.weights().await, [Some(0.0), Some(0.0)]);

    // A good one reaches every proxy.
    let good = fleet.scratch.join("good.yaml");
    std::fs::write(
        &good,
        format!(
            "routes:\n  - name: app\n    tracks:\n      - {{ name: stable, endpoints: [\"{}\"], weight: 90 }}\n      - {{ name: canary, endpoints: [\"{}\"], weight: 10 }}\n",
            fleet.stable.addr(),
            fleet.canary.addr()
        ),
    )
    .unwrap();
    let (ok, out, err) = cli(&fleet, follower, &["apply", GROUP, "-f", good.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("table written at revision"), "{out}");
    fleet.all_at(10.0).await;
    // The example spec over the group starts on every registered proxy.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/examples/rollout-group.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "rollout",
            "--server",
            &fleet.replicas[follower].url,
            "apply",
            "-f",
            example,
        ])
        .output()
        .expect("the CLI runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    fleet.all_at(10.0).await;
    // The proxies served 10% already, so the weights say nothing of the rollout's own write:
    // its status shows when both serve it.
    let status = || {
        let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args([
                "rollout",
                "--server",
                &fleet.replicas[follower].url,
                "status",
                "shop-v2",
            ])
            .output()
            .expect("the CLI runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eventually!(status().contains("2 registered, 2 serving the group's table"), WITHIN);
    // Over a revision that is no longer the table's, it is refused.
    let (ok, _, err) = cli(
        &fleet,
        follower,
        &["apply", GROUP, "-f", good.to_str().unwrap(), "--if-revision", "1"],
    );
    assert!(!ok);
    assert!(err.contains("changed since the revision given"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulty_candidate_over_a_group_is_judged_on_every_proxys_requests_and_aborted() {
    let fleet = Fleet::start("group-analysis", 3, 2).await;
    fleet.canary.set_status(500);
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for p in &fleet.proxies {
        let (stop, url) = (Arc::clone(&stop), format!("{}/", p.traffic));
        load.push(tokio::spawn(async move {
            let client = Client::http1();
            while !stop.load(Ordering::Relaxed) {
                let _ = client.get(&url, &[]).await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    let spec = format!(
        "{}analysis:\n  interval: 1s\n  window: 5s\n  minRequests: 20\n  metrics:\n    - name: success-rate\n      successRate: {{ min: 0.99 }}\n",
        spec("shop-v2", "[{setWeight: 50}, {pause: {}}]")
    );
    let (code, body) = fleet.apply(0, &spec).await;
    assert_eq!(code, 201, "{body}");
    assert_eventually!(phase(&fleet.status("shop-v2").await) == "Aborted", WITHIN);
    fleet.all_at(0.0).await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let status = fleet.status("shop-v2").await.expect("status");
    let reason = status["abort"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("success"), "{status}");
    // Every registered proxy was read.
    let answered = status["proxies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["lastAnsweredAt"].is_number())
        .count();
    assert_eq!(answered, 3, "{status}");
    // The series the dashboard charts is the leader's, through a follower too, which serves
    // the dashboard itself.
    let leader = fleet.leader().await.expect("a leader");
    let series = async |i: usize| get(&format!("{}/rollouts/shop-v2/measurements", fleet.replicas[i].url)).await;
    let (led, followed) = (series(leader).await, series(1 - leader).await);
    let points = led.as_ref().and_then(|s| s["points"].as_array()).map_or(0, Vec::len);
    assert!(points > 0, "the leader charted the measurements: {led:?}");
    assert_eq!(followed, led, "the follower passes the read to the leader");
    let page = Client::http1()
        .get(&format!("{}/ui/", fleet.replicas[1 - leader].url), &[])
        .await
        .expect("the follower answers");
    assert_eq!(page.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_by_sigterm_hands_over_at_once_not_after_its_lease() {
    // A lease of 120 s: a takeover within WITHIN (30 s) can only come from the resignation.
    let mut fleet = Fleet::start("sigterm", 0, 0).await;
    for _ in 0..2 {
        let replica = fleet.spawn_replica_with(free_port(), "120s");
        fleet.replicas.push(replica);
    }
    for r in &fleet.replicas {
        assert_eventually!(get(&format!("{}/healthz", r.url)).await.is_some(), WITHIN);
    }
    assert_eventually!(fleet.leader().await.is_some(), WITHIN);
    let leader = fleet.leader().await.expect("a leader");
    let other = 1 - leader;
    fleet.replicas[leader].process.signal("-TERM");
    let status = fleet.replicas[leader].process.wait(WITHIN);
    assert!(
        status.is_some_and(|s| s.success()),
        "the leader did not exit cleanly on SIGTERM: {status:?}\n{}",
        fleet.logs()
    );
    assert!(
        fleet.replicas[leader].process.log().contains("resigning"),
        "{}",
        fleet.logs()
    );
    let url = fleet.replicas[other].url.clone();
    assert_eventually!(
        get(&format!("{url}/replica"))
            .await
            .is_some_and(|v| v["role"] == "leader"),
        WITHIN
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_reaches_an_etcd_that_demands_tls_a_client_certificate_and_a_user() {
    let etcd = EtcdCluster::start_tls("tls-auth", 1).await;
    let tls = etcd.tls().expect("a TLS cluster").clone();
    let scratch = Scratch::new("fleet-tls-auth");
    let urls = etcd.client_urls().join(",");
    assert!(urls.starts_with("https://"), "{urls}");

    // etcd's users on: root, with a password the components read from a file.
    let options = etcd_client::ConnectOptions::new().with_tls(
        etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(std::fs::read(&tls.ca).unwrap()))
            .identity(etcd_client::Identity::from_pem(
                std::fs::read(&tls.cert).unwrap(),
                std::fs::read(&tls.key).unwrap(),
            )),
    );
    let mut admin = Etcd::connect(etcd.client_urls(), Some(options.clone()))
        .await
        .expect("etcd over TLS");
    admin.user_add("root", "pässword 1", None).await.expect("a user");
    admin.user_grant_role("root", "root").await.expect("the root role");
    admin.auth_enable().await.expect("auth on");
    let password = scratch.join("password");
    std::fs::write(&password, "pässword 1\n").unwrap();
    let access = |flags: &mut Command| {
        flags
            .args(["--etcd", &urls])
            .arg("--etcd-ca")
            .arg(&tls.ca)
            .arg("--etcd-cert")
            .arg(&tls.cert)
            .arg("--etcd-key")
            .arg(&tls.key)
            .args(["--etcd-user", "root", "--etcd-password-file"])
            .arg(&password);
    };

    let stable = MockUpstream::start("stable").await;
    let (traffic, admin_port, port) = (free_port(), free_port(), free_port());
    let config = scratch.join("proxy.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{traffic}\nadmin:\n  listen: 127.0.0.1:{admin_port}\nroutes:\n  - name: app\n    tracks:\n      \
             - {{ name: stable, endpoints: [\"{}\"], weight: 100 }}\n",
            stable.addr()
        ),
    )
    .unwrap();
    let mut proxy = Command::new(proxy_binary());
    proxy.arg("--config").arg(&config).args(["--group", GROUP]);
    access(&mut proxy);
    let proxy = Process::spawn(&mut proxy, scratch.join("proxy.log"));
    let mut replica = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    replica.args(["serve", "--listen", &format!("127.0.0.1:{port}")]);
    access(&mut replica);
    let replica = Process::spawn(&mut replica, scratch.join("replica.log"));

    // The replica leads (its election is in etcd), and sees the proxy registered in the group.
    let url = format!("http://127.0.0.1:{port}");
    let logs = || format!("--- proxy\n{}\n--- replica\n{}", proxy.log(), replica.log());
    assert_eventually!(
        get(&format!("{url}/replica"))
            .await
            .is_some_and(|r| r["role"] == "leader"),
        WITHIN
    );
    let admin_url = format!("http://127.0.0.1:{admin_port}");
    let registered = async || {
        get(&format!("{url}/fleet/{GROUP}")).await.is_some_and(|g| {
            g["proxies"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["adminUrl"] == admin_url.as_str()))
        })
    };
    let deadline = std::time::Instant::now() + WITHIN;
    while !registered().await {
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy never registered\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Without the CA, https:// endpoints are refused at start, by flag, before anything runs.
    for binary in [proxy_binary(), PathBuf::from(env!("CARGO_BIN_EXE_switchyard"))] {
        let mut command = Command::new(&binary);
        if binary.ends_with("switchyard") {
            command.args(["serve", "--listen", "127.0.0.1:0"]);
        } else {
            command.arg("--config").arg(&config).args(["--group", GROUP]);
        }
        let out = command
            .args(["--etcd", &urls, "--etcd-user", "root"])
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}: {stderr}", binary.display());
        assert!(
            stderr.contains("--etcd-ca: the etcd endpoints are https://"),
            "{stderr}"
        );
        assert!(stderr.contains("--etcd-password-file: --etcd-user needs"), "{stderr}");
    }
}
