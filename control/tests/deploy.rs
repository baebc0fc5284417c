//! The Kubernetes manifests of `deploy/kubernetes/` against the control loop they run. The
//! container of the `switchyard` image whose command is `switchyard` is checked: it runs
//! `switchyard serve` with flags and `SWITCHYARD_*` variables that `switchyard serve --help`
//! defines, as 2 replicas on etcd; it listens on every interface at its containerPort and
//! advertises the pod's IP and that port to the other replica; its probes ask that port for
//! paths the control API serves; a Service reaches that port. Then both replicas run on loopback
//! as their pods would, on a real etcd: their probes answer 200, one leads, and the other names
//! the leader at the URL it advertised and passes calls to it; and with etcd gone, once no
//! replica leads, each still passes its liveness probe.
//!
//! The same checks run on a small manifest with a mistake of each kind and must name each one.

use std::path::{Path, PathBuf};

use switchyard_testkit::manifests::{Container, Image, Manifests, Workload, target_ports};
use switchyard_testkit::openapi::OpenApi;

fn root() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).to_path_buf()
}

fn controller_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_switchyard"))
}

/// The controller containers of `workloads`: the image's, with `command: [switchyard]`.
fn controllers<'a>(manifests: &Manifests, workloads: &'a [Workload<'a>], image: &Image) -> Vec<Container<'a>> {
    manifests
        .containers_of(workloads, "switchyard")
        .into_iter()
        .filter(|c| image.binary_of(c) == Some("switchyard"))
        .collect()
}

/// Every problem of the manifests' controller containers; and how many there are.
fn controller_problems(manifests: &Manifests) -> (usize, Vec<String>) {
    let image = Image::from_dockerfile(&root().join("Dockerfile"));
    let control_api = OpenApi::load(&format!("{}/docs/control-api.yaml", root().display())).operations();
    let workloads = manifests.workloads();
    let mut problems = manifests.problems();
    if !image.binaries.iter().any(|b| b == "switchyard") {
        problems.push(format!(
            "Dockerfile: the image does not hold switchyard (it holds {:?})",
            image.binaries
        ));
    }
    let containers = controllers(manifests, &workloads, &image);
    for c in &containers {
        problems.extend(c.flag_problems(controller_binary()));
        if c.subcommands() != ["serve"] {
            problems.push(format!(
                "{c}: runs `switchyard {}`, not `switchyard serve`",
                c.subcommands().join(" ")
            ));
        }
        if c.run_as_user().map(|u| u.to_string()) != image.user {
            problems.push(format!(
                "{c}: runs as user {:?}, not the image's {:?}",
                c.run_as_user(),
                image.user
            ));
        }
        if c.flag_value("--etcd").is_none() && c.env("SWITCHYARD_ETCD").is_none() {
            problems.push(format!(
                "{c}: without --etcd or SWITCHYARD_ETCD, its replicas would each keep rollouts of \
                 their own in --state"
            ));
        }
        if c.workload.replicas != Some(2) {
            problems.push(format!(
                "{}: replicas is {:?}; the control loop runs as 2, one leading",
                c.workload.object, c.workload.replicas
            ));
        }
        let listen = c.flag_value("--listen").unwrap_or("127.0.0.1:9900");
        let port: Option<u16> = listen.rsplit(':').next().and_then(|p| p.parse().ok());
        if !(listen.starts_with("0.0.0.0:") || listen.starts_with("[::]:")) {
            problems.push(format!(
                "{c}: --listen {listen} is not on every interface: the other replica and the \
                 Service cannot reach it"
            ));
        }
        if port.is_none_or(|p| c.resolve_port(&p.into()).is_none()) {
            problems.push(format!("{c}: --listen {listen} is not one of its containerPorts"));
        }
        let expected = port.and_then(|p| c.pod_ip_url(p));
        match (c.flag_value("--advertise"), expected) {
            (Some(given), Some(expected)) if given == expected => {}
            (given, expected) => problems.push(format!(
                "{c}: --advertise is {given:?}; the other replica reaches this one at its pod's \
                 IP and --listen port: {}",
                expected.unwrap_or_else(|| {
                    "http://$(POD_IP):PORT with POD_IP from the downward API (fieldRef status.podIP)".to_owned()
                })
            )),
        }
        problems.extend(c.probe_problems(port, &control_api, "docs/control-api.yaml"));
        let reached = manifests
            .services_of(c.workload)
            .iter()
            .any(|s| target_ports(s).iter().any(|t| c.resolve_port(t) == port));
        if !reached {
            problems.push(format!("{c}: no Service reaches its control API on port {listen}"));
        }
    }
    (containers.len(), problems)
}

#[test]
fn the_manifests_run_the_control_loop_with_flags_ports_and_probes_it_has() {
    let manifests = Manifests::load(&root().join("deploy/kubernetes"));
    let (checked, problems) = controller_problems(&manifests);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(checked, 1, "one controller Deployment");
}

/// A controller with one mistake of each kind.
const FLAWED: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: { name: flawed }
spec:
  replicas: 1
  selector: { matchLabels: { app: flawed } }
  template:
    metadata: { labels: { app: flawed } }
    spec:
      securityContext: { runAsUser: 10001 }
      containers:
        - name: controller
          image: registry.example.com/switchyard:0.1.0
          command: [switchyard]
          args: [serve, --listen, "127.0.0.1:9900", --no-such-flag, --advertise, "http://$(POD_IP):9901"]
          env:
            - { name: POD_IP, valueFrom: { fieldRef: { fieldPath: status.podIP } } }
            - { name: SWITCHYARD_ETCD, value: "http://etcd:2379" }
          ports: [{ name: api, containerPort: 9900 }]
          readinessProbe: { httpGet: { path: /ready, port: api } }
        - name: typo
          image: switchyard
          command: [switchyard]
          args: [server, --listen, "0.0.0.0:9910"]
---
apiVersion: v1
kind: Service
metadata: { name: flawed }
spec:
  selector: { app: flawed }
  ports: [{ port: 9900, targetPort: control }]
"#;

#[test]
fn the_checks_name_the_manifest_the_container_and_each_mistake() {
    let (checked, problems) = controller_problems(&Manifests::parse("flawed.yaml", FLAWED));
    assert_eq!(checked, 2);
    let container = "flawed.yaml: Deployment/flawed, container controller: ";
    let typo = "flawed.yaml: Deployment/flawed, container typo: ";
    for expected in [
        format!("{container}--no-such-flag is not an option of `switchyard serve`"),
        format!("{container}--listen 127.0.0.1:9900 is not on every interface"),
        format!("{container}--advertise is Some(\"http://$(POD_IP):9901\")"),
        format!("{container}readinessProbe asks /ready, which the API does not serve (docs/control-api.yaml)"),
        format!("{container}no livenessProbe"),
        format!("{container}no Service reaches its control API on port 127.0.0.1:9900"),
        format!("{typo}`switchyard server --help` fails, so `switchyard server` is not a command"),
        format!("{typo}runs `switchyard server`, not `switchyard serve`"),
        "flawed.yaml: Deployment/flawed: replicas is Some(1)".to_owned(),
        "flawed.yaml: Service/flawed: targetPort \"control\" is declared by no container".to_owned(),
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(&expected)),
            "no problem says {expected:?}; they are:\n{}",
            problems.join("\n")
        );
    }
}

#[cfg(feature = "fleet")]
mod on_loopback {
    use std::time::Duration;

    use serde_json::Value;
    use switchyard_testkit::manifests::LocalContainer;
    use switchyard_testkit::{Client, EtcdCluster, assert_eventually};

    use super::*;

    const WITHIN: Duration = Duration::from_secs(30);

    async fn get_json(url: &str) -> Option<Value> {
        let reply = Client::http1().get(url, &[]).await.ok()?;
        if reply.status != 200 {
            return None;
        }
        serde_json::from_str(&reply.body).ok()
    }

    /// The URL a replica started with `--advertise`.
    fn advertised(local: &LocalContainer) -> String {
        local
            .argv
            .iter()
            .skip_while(|a| *a != "--advertise")
            .nth(1)
            .expect("--advertise")
            .clone()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_replicas_answer_their_probes_and_one_leads_at_its_advertised_url() {
        let mut etcd = EtcdCluster::start("deploy-control", 1).await;
        let urls = etcd.client_urls().join(",");
        let manifests = Manifests::load(&root().join("deploy/kubernetes"));
        let workloads = manifests.workloads();
        let image = Image::from_dockerfile(&root().join("Dockerfile"));
        let containers = controllers(&manifests, &workloads, &image);
        let c = containers.first().expect("a controller container");
        let replicas = c.workload.replicas.unwrap_or(1);
        let mut running: Vec<LocalContainer> = (0..replicas)
            .map(|i| {
                LocalContainer::start(
                    c,
                    &manifests,
                    controller_binary(),
                    &format!("deploy-control-{i}"),
                    &[("SWITCHYARD_ETCD", &urls)],
                )
            })
            .collect();
        let client = Client::http1();
        for local in &mut running {
            for (_, probe) in c.probes() {
                let url = local.probe_url(c, probe.http_get.as_ref().expect("an httpGet probe"));
                assert_eventually!(
                    {
                        assert!(local.exited().is_none(), "{c} exited:\n{}", local.log());
                        client.get(&url, &[]).await.is_ok_and(|r| r.status == 200)
                    },
                    WITHIN
                );
            }
        }
        let urls: Vec<String> = running.iter().map(advertised).collect();
        let mut roles = Vec::new();
        assert_eventually!(
            {
                roles.clear();
                for url in &urls {
                    roles.push(get_json(&format!("{url}/replica")).await.unwrap_or_default());
                }
                let leaders = roles.iter().filter(|r| r["role"] == "leader").count();
                let followers = roles.iter().filter(|r| r["role"] == "follower").count();
                leaders == 1 && followers == urls.len() - 1 && roles.iter().all(|r| r["leader"]["url"].is_string())
            },
            WITHIN
        );
        let leader = roles.iter().position(|r| r["role"] == "leader").expect("a leader");
        let at_its_url = get_json(&format!("{}/replica", urls[leader])).await;
        assert_eq!(
            at_its_url.as_ref().map(|r| &r["id"]),
            Some(&roles[leader]["id"]),
            "the leader's advertised URL {} is not where it answers",
            urls[leader]
        );
        for (i, role) in roles.iter().enumerate() {
            assert_eq!(
                role["leader"]["url"], urls[leader],
                "replica {i} names the leader at another URL than the one it advertised: {roles:?}"
            );
            // A command: a follower passes it to the leader, which knows no such rollout (a
            // follower that cannot reach the leader answers 503).
            let reply = client
                .send(
                    http::Method::POST,
                    &format!("{}/rollouts/no-such-rollout/pause", urls[i]),
                    &[],
                    "",
                )
                .await
                .expect("the replica answers");
            assert_eq!(reply.status, 404, "a command through replica {i}: {}", reply.body);
        }

        // etcd goes: once the leader has stepped down (its lease unrenewed), no replica can
        // answer calls, but each is still alive to its liveness probe, so none is restarted.
        etcd.kill(0);
        assert_eventually!(
            {
                let mut leading = false;
                for url in &urls {
                    let role = get_json(&format!("{url}/replica")).await.unwrap_or_default();
                    leading |= role["role"] == "leader";
                }
                !leading
            },
            WITHIN
        );
        let liveness = c
            .spec
            .liveness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .expect("a liveness probe");
        for (i, local) in running.iter().enumerate() {
            let url = local.probe_url(c, liveness);
            let reply = client.get(&url, &[]).await.expect("the replica answers");
            assert_eq!(
                reply.status, 200,
                "replica {i}'s liveness {url} with etcd down: {}",
                reply.body
            );
        }
    }
}
