//! The Kubernetes manifests of `deploy/kubernetes/` against the proxy they run. Every container
//! of the `switchyard` image that runs `switchyard-proxy` (the image's ENTRYPOINT) is checked:
//! its flags and `SWITCHYARD_*` variables are options of `switchyard-proxy --help`; its config
//! file comes from a ConfigMap and passes `switchyard-proxy validate`; the config's listeners are
//! its containerPorts and nothing else is; in a group, the admin API listens on every interface
//! and `--advertise` names the pod's IP and the admin port; its probes ask the admin port for
//! paths the admin API serves; its state file is on a writable volume; no LoadBalancer exposes
//! the admin port; its grace period covers its preStop and drain. Then every proxy container runs
//! on loopback as its pod would, joined to a real etcd: its probes answer 200, and it registers
//! the advertised URL, where the admin API answers.
//!
//! A check that finds nothing proves nothing, so the same checks run on a small manifest with a
//! mistake of each kind and must name each one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use switchyard_config::schema::StateFileSpec;
use switchyard_config::{Format, ProxyConfig, load_config, load_rollout};
use switchyard_testkit::Scratch;
use switchyard_testkit::manifests::{Container, Image, Manifests, Workload, target_ports};
use switchyard_testkit::openapi::OpenApi;

fn root() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).to_path_buf()
}

fn proxy_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_switchyard-proxy"))
}

fn image() -> Image {
    Image::from_dockerfile(&root().join("Dockerfile"))
}

/// The proxy containers of `workloads`: the image's, running `switchyard-proxy`.
fn proxies<'a>(manifests: &Manifests, workloads: &'a [Workload<'a>], image: &Image) -> Vec<Container<'a>> {
    manifests
        .containers_of(workloads, "switchyard")
        .into_iter()
        .filter(|c| image.binary_of(c) == Some("switchyard-proxy"))
        .collect()
}

/// The port of an `IP:PORT` (or `[IPv6]:PORT`) address.
fn port_of(address: &str) -> Option<u16> {
    address.rsplit(':').next()?.parse().ok()
}

/// Whether an address binds every interface.
fn on_every_interface(address: &str) -> bool {
    address.starts_with("0.0.0.0:") || address.starts_with("[::]:")
}

/// Every problem of the manifests' proxy containers; and how many there are.
fn proxy_problems(manifests: &Manifests, scratch: &Scratch) -> (usize, Vec<String>) {
    let image = image();
    let admin_api = OpenApi::load(&format!("{}/docs/admin-api.yaml", root().display())).operations();
    let workloads = manifests.workloads();
    let mut problems = manifests.problems();
    for c in manifests.containers_of(&workloads, "switchyard") {
        match image.binary_of(&c) {
            Some(binary) if image.binaries.iter().any(|b| b == binary) => {}
            binary => problems.push(format!(
                "{c}: runs {binary:?}, which the image does not hold (it holds {:?})",
                image.binaries
            )),
        }
    }
    let containers = proxies(manifests, &workloads, &image);
    for (i, c) in containers.iter().enumerate() {
        problems.extend(c.flag_problems(proxy_binary()));
        if c.run_as_user().map(|u| u.to_string()) != image.user {
            problems.push(format!(
                "{c}: runs as user {:?}, not the image's {:?}, which owns its directories",
                c.run_as_user(),
                image.user
            ));
        }
        let Some(config_path) = c.flag_value("--config").or(c.flag_value("-c")) else {
            problems.push(format!("{c}: no --config FILE"));
            continue;
        };
        let text = match c.config_file(manifests, config_path) {
            Ok(text) => text,
            Err(e) => {
                problems.push(format!("{e} (--config {config_path})"));
                continue;
            }
        };
        let copy = scratch.join(&format!("config-{i}.yaml"));
        std::fs::write(&copy, text).expect("write the config's copy");
        let out = Command::new(proxy_binary())
            .arg("validate")
            .arg(&copy)
            .output()
            .expect("switchyard-proxy runs");
        if !out.status.success() {
            problems.push(format!(
                "{c}: its config file {config_path} does not pass `switchyard-proxy validate`:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
            continue;
        }
        let config = load_config(text, Format::Yaml, 1)
            .unwrap_or_else(|e| panic!("{c}: validate passed what load_config refuses: {e}"))
            .config;
        problems.extend(config_problems(c, &config, config_path, manifests, &admin_api));
    }
    (containers.len(), problems)
}

/// What a proxy container's config and its pod must agree on.
fn config_problems(
    c: &Container<'_>,
    config: &ProxyConfig,
    config_path: &str,
    manifests: &Manifests,
    admin_api: &[String],
) -> Vec<String> {
    let mut problems = Vec::new();
    let admin = &config.admin.listen;
    let admin_port = port_of(admin);
    let mut listened = vec![admin_port];
    for listener in &config.listen {
        let port = port_of(&listener.address);
        listened.push(port);
        if port.is_none_or(|p| c.resolve_port(&p.into()).is_none()) {
            problems.push(format!(
                "{c}: its config listens on {}, which is not one of its containerPorts",
                listener.address
            ));
        }
    }
    if admin_port.is_none_or(|p| c.resolve_port(&p.into()).is_none()) {
        problems.push(format!(
            "{c}: its config's admin API listens on {admin}, which is not one of its containerPorts"
        ));
    }
    for port in &c.spec.ports {
        if !listened.contains(&Some(port.container_port)) {
            problems.push(format!(
                "{c}: containerPort {} is neither a listener nor the admin API of its config",
                port.container_port
            ));
        }
    }

    let in_group = c.flag_value("--group").is_some() || c.env("SWITCHYARD_GROUP").is_some();
    if in_group {
        if c.flag_value("--etcd").is_none() && c.env("SWITCHYARD_ETCD").is_none() {
            problems.push(format!("{c}: --group without --etcd or SWITCHYARD_ETCD"));
        }
        if !on_every_interface(admin) {
            problems.push(format!(
                "{c}: in a group, but its admin API listens on {admin}: the control loop reads \
                 every proxy's /stats at the URL it registers, so listen on 0.0.0.0"
            ));
        }
        let expected = admin_port.and_then(|p| c.pod_ip_url(p));
        match (c.flag_value("--advertise"), expected) {
            (Some(given), Some(expected)) if given == expected => {}
            (given, expected) => problems.push(format!(
                "{c}: in a group, --advertise is {given:?}; the control loop reaches the pod at \
                 its IP and admin port: {}",
                expected.unwrap_or_else(|| {
                    "http://$(POD_IP):ADMIN_PORT with POD_IP from the downward API (fieldRef status.podIP)".to_owned()
                })
            )),
        }
    }

    problems.extend(c.probe_problems(admin_port, admin_api, "docs/admin-api.yaml"));

    let state_file = match (c.flag_value("--state-file"), &config.admin.state_file) {
        (Some(path), _) => Some(path.to_owned()),
        (None, StateFileSpec::Path(path)) => Some(path.clone()),
        (None, StateFileSpec::BesideConfig) => Some(format!("{config_path}.state.json")),
        (None, StateFileSpec::Off) => None,
    };
    match state_file {
        None => problems.push(format!(
            "{c}: keeps no state file, so a restarted proxy serves its config file's routes (docs/deploy.md)"
        )),
        Some(path) => match c.mount_of(&path) {
            Some((mount, volume)) if volume.writable() && !mount.read_only => {}
            _ => problems.push(format!(
                "{c}: its state file {path} is not on a writable volume (an emptyDir), so the \
                 proxy keeps none"
            )),
        },
    }
    if let Some(token) = &config.admin.token_file
        && c.mount_of(token).is_none()
    {
        problems.push(format!("{c}: admin.tokenFile {token} is on no mounted volume"));
    }

    for service in manifests.services_of(c.workload) {
        let kind = service.value["spec"]["type"].as_str().unwrap_or("ClusterIP");
        let exposed = target_ports(service).iter().any(|t| c.resolve_port(t) == admin_port);
        if matches!(kind, "LoadBalancer" | "NodePort") && exposed {
            problems.push(format!(
                "{service}: a {kind} Service exposes the admin API (PUT /routes) of {c} \
                 outside the cluster"
            ));
        }
    }

    let grace = c.workload.pod.termination_grace_period_seconds.unwrap_or(30);
    let pre_stop = c
        .spec
        .lifecycle
        .as_ref()
        .and_then(|l| l["preStop"]["exec"]["command"].as_array().cloned())
        .filter(|command| command.first().and_then(|w| w.as_str()) == Some("sleep"))
        .and_then(|command| command.get(1)?.as_str()?.parse::<u64>().ok())
        .unwrap_or(0);
    let needed = Duration::from_secs(pre_stop) + config.timeouts.drain;
    if Duration::from_secs(grace) <= needed {
        problems.push(format!(
            "{c}: terminationGracePeriodSeconds {grace} does not outlast its preStop ({pre_stop} s) \
             and timeouts.drain ({:?}): the kubelet kills requests still draining",
            config.timeouts.drain
        ));
    }
    problems
}

#[test]
fn the_manifests_run_the_proxy_with_flags_ports_probes_and_files_it_has() {
    let scratch = Scratch::new("deploy-proxy-manifests");
    let manifests = Manifests::load(&root().join("deploy/kubernetes"));
    let (checked, problems) = proxy_problems(&manifests, &scratch);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let workloads = manifests.workloads();
    let files: Vec<&str> = proxies(&manifests, &workloads, &image())
        .iter()
        .map(|c| c.workload.object.file.as_str())
        .collect();
    assert!(checked >= 2, "the proxy as a sidecar and as an ingress: {files:?}");
    for file in ["proxy-sidecar.yaml", "proxy-ingress.yaml"] {
        assert!(files.contains(&file), "no proxy container in {file}: {files:?}");
    }
}

/// A proxy with one mistake of each kind, and the sentence that must name each.
const FLAWED: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: { name: flawed-proxy }
data:
  proxy.yaml: |
    listen: 0.0.0.0:8080
    admin: { listen: 127.0.0.1:9901 }
    routes:
      - name: app
        tracks: [{ name: stable, endpoints: ["127.0.0.1:8081"], weight: 100 }]
---
apiVersion: apps/v1
kind: Deployment
metadata: { name: flawed }
spec:
  selector: { matchLabels: { app: flawed } }
  template:
    metadata: { labels: { app: flawed } }
    spec:
      securityContext: { runAsUser: 10001 }
      containers:
        - name: proxy
          image: switchyard
          args: [--config, /etc/switchyard/proxy.yaml, --no-such-flag, --group, g,
                 --advertise, "http://$(POD_IP):9901"]
          env:
            - { name: SWITCHYARD_ETCD, value: "http://etcd:2379" }
            - { name: SWITCHYARD_NO_SUCH_VARIABLE, value: "1" }
          ports:
            - { name: http, containerPort: 8080 }
            - { name: admin, containerPort: 9901 }
          readinessProbe: { httpGet: { path: /ready, port: admin } }
          livenessProbe: { httpGet: { path: /healthz, port: 9999 } }
          volumeMounts: [{ name: config, mountPath: /etc/switchyard }]
      volumes: [{ name: config, configMap: { name: flawed-proxy } }]
---
apiVersion: v1
kind: Service
metadata: { name: flawed }
spec:
  type: LoadBalancer
  selector: { app: flawed }
  ports: [{ port: 80, targetPort: http }, { port: 9901, targetPort: admin }]
"#;

#[test]
fn the_checks_name_the_manifest_the_container_and_each_mistake() {
    let scratch = Scratch::new("deploy-proxy-flawed");
    let (checked, problems) = proxy_problems(&Manifests::parse("flawed.yaml", FLAWED), &scratch);
    assert_eq!(checked, 1);
    let container = "flawed.yaml: Deployment/flawed, container proxy: ";
    for expected in [
        "--no-such-flag is not an option of `switchyard-proxy`",
        "environment variable SWITCHYARD_NO_SUCH_VARIABLE is read by no option",
        "http://$(POD_IP):9901 refers to $(POD_IP), which is not one of its environment variables",
        "in a group, but its admin API listens on 127.0.0.1:9901",
        "in a group, --advertise is Some(\"http://$(POD_IP):9901\")",
        "readinessProbe asks /ready, which the API does not serve (docs/admin-api.yaml)",
        "livenessProbe's port 9999 is not one of its containerPorts",
        "livenessProbe asks port 9999, not the API's (9901)",
        "its state file /etc/switchyard/proxy.yaml.state.json is not on a writable volume",
        "terminationGracePeriodSeconds 30 does not outlast",
    ] {
        let want = format!("{container}{expected}");
        assert!(
            problems.iter().any(|p| p.starts_with(&want)),
            "no problem says {want:?}; they are:\n{}",
            problems.join("\n")
        );
    }
    assert!(
        problems.iter().any(|p| p.starts_with(
            "flawed.yaml: Service/flawed: a LoadBalancer Service exposes the admin API (PUT /routes) \
             of flawed.yaml: Deployment/flawed, container proxy outside the cluster"
        )),
        "{}",
        problems.join("\n")
    );
}

#[test]
fn the_example_rollout_over_a_group_moves_a_route_the_sidecars_serve() {
    let path = root().join("config/examples/rollout-group.yaml");
    let text = std::fs::read_to_string(&path).expect("the example");
    let rollout = load_rollout(&text, Format::Yaml).expect("the example loads");
    let group = rollout
        .proxies
        .group()
        .expect("a rollout over a group")
        .as_str()
        .to_owned();
    let manifests = Manifests::load(&root().join("deploy/kubernetes"));
    let workloads = manifests.workloads();
    let image = image();
    let sidecars: Vec<Container<'_>> = proxies(&manifests, &workloads, &image)
        .into_iter()
        .filter(|c| c.flag_value("--group") == Some(group.as_str()))
        .collect();
    assert!(!sidecars.is_empty(), "no proxy container joins group {group}");
    for c in sidecars {
        let config = c
            .config_file(&manifests, c.flag_value("--config").expect("--config"))
            .expect("the config file");
        let config = load_config(config, Format::Yaml, 1).expect("it loads").config;
        let route = config
            .routes
            .iter()
            .find(|r| r.name == rollout.route)
            .unwrap_or_else(|| panic!("{c}: no route {}", rollout.route));
        for track in [&rollout.baseline, &rollout.candidate] {
            assert!(
                route.tracks.iter().any(|t| &t.name == track),
                "{c}: route {} has no track {track}",
                rollout.route
            );
        }
    }
}

#[cfg(feature = "fleet")]
mod on_loopback {
    use etcd_client::{Client as Etcd, GetOptions};
    use switchyard_config::fleet::{FleetKeys, GroupName, Registration};
    use switchyard_testkit::manifests::LocalContainer;
    use switchyard_testkit::{Client, EtcdCluster, assert_eventually};

    use super::*;

    const WITHIN: Duration = Duration::from_secs(30);

    /// The registrations in `group` under `prefix`.
    async fn registrations(etcd: &EtcdCluster, prefix: &str, group: &str) -> Vec<Registration> {
        let Ok(mut client) = Etcd::connect(etcd.client_urls(), None).await else {
            return Vec::new();
        };
        let keys = FleetKeys::new(prefix).expect("a valid prefix");
        let key = keys.proxies(&GroupName::new(group).expect("a valid group"));
        let Ok(answer) = client.get(key, Some(GetOptions::new().with_prefix())).await else {
            return Vec::new();
        };
        answer
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_proxy_container_answers_its_probes_and_registers_where_it_answers() {
        let etcd = EtcdCluster::start("deploy-proxy", 1).await;
        let urls = etcd.client_urls().join(",");
        let manifests = Manifests::load(&root().join("deploy/kubernetes"));
        let workloads = manifests.workloads();
        let image = image();
        let containers = proxies(&manifests, &workloads, &image);
        assert!(!containers.is_empty());
        let running: Vec<LocalContainer> = containers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                LocalContainer::start(
                    c,
                    &manifests,
                    proxy_binary(),
                    &format!("deploy-proxy-{i}"),
                    &[("SWITCHYARD_ETCD", &urls)],
                )
            })
            .collect();
        let client = Client::http1();
        for (c, mut local) in containers.iter().zip(running) {
            for (_, probe) in c.probes() {
                let get = probe.http_get.as_ref().expect("an httpGet probe");
                let url = local.probe_url(c, get);
                assert_eventually!(
                    {
                        assert!(local.exited().is_none(), "{c} exited:\n{}", local.log());
                        client.get(&url, &[]).await.is_ok_and(|r| r.status == 200)
                    },
                    WITHIN
                );
            }
            let group = c.flag_value("--group").expect("a group");
            let prefix = c
                .flag_value("--etcd-prefix")
                .unwrap_or(switchyard_config::fleet::DEFAULT_PREFIX);
            let advertised = local
                .argv
                .iter()
                .skip_while(|a| *a != "--advertise")
                .nth(1)
                .expect("--advertise")
                .clone();
            assert_eventually!(
                registrations(&etcd, prefix, group)
                    .await
                    .iter()
                    .any(|r| r.admin_url == advertised),
                WITHIN
            );
            let stats = client
                .get(&format!("{advertised}/stats"), &[])
                .await
                .unwrap_or_else(|e| panic!("{c}: its registered URL {advertised} does not answer: {e}"));
            assert_eq!(stats.status, 200, "{c}: GET {advertised}/stats: {}", stats.body);
            for port in &c.spec.ports {
                let url = format!("http://127.0.0.1:{}/", local.port(port.container_port));
                client
                    .get(&url, &[])
                    .await
                    .unwrap_or_else(|e| panic!("{c}: containerPort {} answers no HTTP: {e}", port.container_port));
            }
        }
    }
}
