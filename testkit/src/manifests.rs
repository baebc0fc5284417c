//! Kubernetes manifests (`deploy/kubernetes/`) read the way a cluster reads them, for the tests
//! that keep them true to the binaries (`proxy/tests/deploy.rs`, `control/tests/deploy.rs`):
//! every pod template's containers with their command, arguments, environment, ports, probes and
//! mounts; the Services and PodDisruptionBudgets that select them; the ConfigMaps they read.
//!
//! [`Manifests::problems`] checks what holds for any container (a `$(VAR)` names a variable of
//! the container, a probe's port is declared, a Service's target port exists in every pod it
//! selects); [`Container::flag_problems`] checks a container's arguments against its binary's
//! `--help`; [`LocalContainer`] runs a container's binary on loopback as its pod would run it.
//! Every problem is a sentence that names the manifest file, the object and the container.
//!
//! ```no_run
//! use switchyard_testkit::manifests::Manifests;
//! let manifests = Manifests::load("deploy/kubernetes".as_ref());
//! let problems = manifests.problems();
//! assert!(problems.is_empty(), "{}", problems.join("\n"));
//! ```

mod local;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

pub use local::LocalContainer;

/// One object of a manifest file.
#[derive(Debug, Clone)]
pub struct Object {
    /// The file it came from (as the kustomization names it).
    pub file: String,
    /// `kind`.
    pub kind: String,
    /// `metadata.name`.
    pub name: String,
    /// The whole object.
    pub value: Value,
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}/{}", self.file, self.kind, self.name)
    }
}

/// The objects of a set of manifest files.
#[derive(Debug, Clone, Default)]
pub struct Manifests {
    /// Every object, in file order.
    pub objects: Vec<Object>,
    /// The kustomization's `images[].name`, if the set was read through one.
    pub images: Vec<String>,
    /// Problems found while reading (a manifest in the directory the kustomization leaves out).
    read_problems: Vec<String>,
}

impl Manifests {
    /// Reads `dir/kustomization.yaml` and every resource it lists. Panics naming the file that
    /// cannot be read or parsed.
    pub fn load(dir: &Path) -> Self {
        let path = dir.join("kustomization.yaml");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let kustomization: Value = serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let resources: Vec<String> = kustomization["resources"]
            .as_array()
            .unwrap_or_else(|| panic!("{} lists no resources", path.display()))
            .iter()
            .map(|r| r.as_str().expect("a resource is a file name").to_owned())
            .collect();
        let mut manifests = Self::default();
        for file in &resources {
            let path = dir.join(file);
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            manifests.add(file, &text);
        }
        manifests.images = kustomization["images"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["name"].as_str().map(str::to_owned))
            .collect();
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut unlisted: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|f| (f.ends_with(".yaml") || f.ends_with(".yml")) && f != "kustomization.yaml")
            .filter(|f| !resources.contains(f))
            .collect();
        unlisted.sort();
        manifests.read_problems.extend(
            unlisted
                .into_iter()
                .map(|f| format!("{f}: not among kustomization.yaml's resources, so `kubectl apply -k` leaves it out")),
        );
        manifests
    }

    /// The objects of `text` (one or more YAML documents), as if read from a file named `file`.
    /// Panics naming the file if it does not parse.
    pub fn parse(file: &str, text: &str) -> Self {
        let mut manifests = Self::default();
        manifests.add(file, text);
        manifests
    }

    fn add(&mut self, file: &str, text: &str) {
        for document in serde_yaml_ng::Deserializer::from_str(text) {
            let value = Value::deserialize(document).unwrap_or_else(|e| panic!("{file}: {e}"));
            if value.is_null() {
                continue;
            }
            let field = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            self.objects.push(Object {
                file: file.to_owned(),
                kind: field(&value["kind"]),
                name: field(&value["metadata"]["name"]),
                value,
            });
        }
    }

    /// The object of `kind` named `name`.
    pub fn find(&self, kind: &str, name: &str) -> Option<&Object> {
        self.objects.iter().find(|o| o.kind == kind && o.name == name)
    }

    /// The value of `key` in ConfigMap `name`.
    pub fn config_map_value(&self, name: &str, key: &str) -> Option<&str> {
        self.find("ConfigMap", name)?.value["data"][key].as_str()
    }

    /// The Services whose selector selects `workload`'s pods.
    pub fn services_of(&self, workload: &Workload<'_>) -> Vec<&Object> {
        self.objects
            .iter()
            .filter(|o| o.kind == "Service" && workload.selected_by(&labels(&o.value["spec"]["selector"])))
            .collect()
    }

    /// Every object with a pod template (Deployment, StatefulSet, DaemonSet, Job), parsed.
    pub fn workloads(&self) -> Vec<Workload<'_>> {
        self.objects
            .iter()
            .filter(|o| matches!(o.kind.as_str(), "Deployment" | "StatefulSet" | "DaemonSet" | "Job"))
            .map(|object| {
                let template = &object.value["spec"]["template"];
                Workload {
                    object,
                    replicas: object.value["spec"]["replicas"].as_u64(),
                    labels: labels(&template["metadata"]["labels"]),
                    pod: PodSpec::deserialize(&template["spec"])
                        .unwrap_or_else(|e| panic!("{object}: spec.template.spec: {e}")),
                }
            })
            .collect()
    }

    /// Every container of every workload whose image's repository is `repository` (`switchyard`
    /// for `registry.example.com/switchyard:0.1.0`, `switchyard` or `switchyard@sha256:…`).
    pub fn containers_of<'a>(&self, workloads: &'a [Workload<'a>], repository: &str) -> Vec<Container<'a>> {
        workloads
            .iter()
            .flat_map(|w| w.containers())
            .filter(|c| c.repository() == repository)
            .collect()
    }

    /// What holds for every container and object, whatever its binary; each problem names the
    /// file, the object and the container.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = self.read_problems.clone();
        let workloads = self.workloads();
        for w in &workloads {
            if let Some(selector) = w.object.value["spec"]["selector"]["matchLabels"].as_object() {
                for (k, v) in selector {
                    if w.labels.get(k).map(String::as_str) != v.as_str() {
                        problems.push(format!(
                            "{}: spec.selector.matchLabels {k} is not a label of its pod template",
                            w.object
                        ));
                    }
                }
            }
            for c in w.containers() {
                problems.extend(c.problems(self));
            }
        }
        for object in &self.objects {
            match object.kind.as_str() {
                "Service" => problems.extend(service_problems(object, &workloads)),
                "PodDisruptionBudget" => {
                    let selector = labels(&object.value["spec"]["selector"]["matchLabels"]);
                    if !workloads.iter().any(|w| w.selected_by(&selector)) {
                        problems.push(format!("{object}: its selector matches no pod template"));
                    }
                }
                _ => {}
            }
        }
        for image in &self.images {
            let used = workloads
                .iter()
                .flat_map(|w| w.containers())
                .any(|c| c.repository() == image);
            if !used {
                problems.push(format!(
                    "kustomization.yaml: images names {image}, which no container uses"
                ));
            }
        }
        problems
    }
}

fn labels(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect()
}

/// A Service's selector matches a pod template, and each of its ports' target port is declared
/// by a container of every pod it selects.
fn service_problems(service: &Object, workloads: &[Workload<'_>]) -> Vec<String> {
    let selector = labels(&service.value["spec"]["selector"]);
    let selected: Vec<&Workload<'_>> = workloads.iter().filter(|w| w.selected_by(&selector)).collect();
    if selected.is_empty() {
        return vec![format!("{service}: its selector matches no pod template")];
    }
    let mut problems = Vec::new();
    for target in target_ports(service) {
        for w in &selected {
            if w.resolve_port(&target).is_none() {
                problems.push(format!(
                    "{service}: targetPort {target} is declared by no container of {}",
                    w.object
                ));
            }
        }
    }
    problems
}

/// A Service's target ports (each port's `targetPort`, else its `port`).
pub fn target_ports(service: &Object) -> Vec<PortRef> {
    service.value["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|port| match &port["targetPort"] {
            Value::Null => PortRef::Number(port["port"].as_u64().unwrap_or_default() as u16),
            v => PortRef::deserialize(v).unwrap_or(PortRef::Name(v.to_string())),
        })
        .collect()
}

/// A workload: an object with a pod template.
#[derive(Debug)]
pub struct Workload<'a> {
    /// The object.
    pub object: &'a Object,
    /// `spec.replicas`, if given.
    pub replicas: Option<u64>,
    /// The pod template's labels.
    pub labels: BTreeMap<String, String>,
    /// The pod template's spec.
    pub pod: PodSpec,
}

impl Workload<'_> {
    /// Its containers.
    pub fn containers(&self) -> Vec<Container<'_>> {
        self.pod
            .containers
            .iter()
            .map(|spec| Container { workload: self, spec })
            .collect()
    }

    /// Whether a selector (`matchLabels`, or a Service's `selector`) selects its pods.
    pub fn selected_by(&self, selector: &BTreeMap<String, String>) -> bool {
        !selector.is_empty() && selector.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }

    /// The container port `port` names in this pod (a number any container declares, or a
    /// container port's name).
    pub fn resolve_port(&self, port: &PortRef) -> Option<u16> {
        self.containers().iter().find_map(|c| c.resolve_port(port))
    }

    /// The pod's volume named `name`.
    pub fn volume(&self, name: &str) -> Option<&Volume> {
        self.pod.volumes.iter().find(|v| v.name == name)
    }
}

/// A pod template's spec: what the tests read of it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    /// The containers.
    #[serde(default)]
    pub containers: Vec<ContainerSpec>,
    /// The volumes.
    #[serde(default)]
    pub volumes: Vec<Volume>,
    /// Seconds between SIGTERM and SIGKILL (Kubernetes' default: 30).
    pub termination_grace_period_seconds: Option<u64>,
    /// The pod's security context.
    #[serde(default)]
    pub security_context: SecurityContext,
}

/// A container: what the tests read of it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSpec {
    /// Its name.
    pub name: String,
    /// Its image.
    pub image: String,
    /// Replaces the image's ENTRYPOINT.
    #[serde(default)]
    pub command: Vec<String>,
    /// Replaces the image's CMD.
    #[serde(default)]
    pub args: Vec<String>,
    /// Its environment.
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// Its declared ports.
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
    /// Probes.
    pub readiness_probe: Option<Probe>,
    /// Probes.
    pub liveness_probe: Option<Probe>,
    /// Probes.
    pub startup_probe: Option<Probe>,
    /// Mounts of the pod's volumes.
    #[serde(default)]
    pub volume_mounts: Vec<VolumeMount>,
    /// `lifecycle`, as written.
    pub lifecycle: Option<Value>,
    /// The container's security context.
    #[serde(default)]
    pub security_context: SecurityContext,
}

/// An environment variable.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    /// Its name.
    pub name: String,
    /// A literal value.
    pub value: Option<String>,
    /// Where its value comes from (`fieldRef`, `configMapKeyRef`, …), as written.
    pub value_from: Option<Value>,
}

/// A declared container port.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    /// Its name, which probes and Services may use.
    pub name: Option<String>,
    /// The port.
    pub container_port: u16,
}

/// A port by number or by a container port's name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum PortRef {
    /// A number.
    Number(u16),
    /// A container port's name.
    Name(String),
}

impl From<u16> for PortRef {
    fn from(port: u16) -> Self {
        Self::Number(port)
    }
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Name(n) => write!(f, "{n:?}"),
        }
    }
}

/// A probe.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    /// An HTTP GET.
    pub http_get: Option<HttpGet>,
    /// A TCP connect.
    pub tcp_socket: Option<TcpSocket>,
}

/// A probe's HTTP GET.
#[derive(Debug, Deserialize)]
pub struct HttpGet {
    /// The path (Kubernetes' default: `/`).
    pub path: Option<String>,
    /// The port.
    pub port: PortRef,
}

/// A probe's TCP connect.
#[derive(Debug, Deserialize)]
pub struct TcpSocket {
    /// The port.
    pub port: PortRef,
}

/// A volume mount.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    /// The pod volume's name.
    pub name: String,
    /// Where it is mounted.
    pub mount_path: String,
    /// Whether it is mounted read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// A pod volume: the kinds the tests know.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    /// Its name.
    pub name: String,
    /// A ConfigMap's keys as files.
    pub config_map: Option<ConfigMapVolume>,
    /// A Secret's keys as files.
    pub secret: Option<SecretVolume>,
    /// A directory that lives as long as the pod.
    pub empty_dir: Option<Value>,
}

impl Volume {
    /// Whether a container may write to it (an `emptyDir`; ConfigMaps and Secrets are
    /// read-only).
    pub fn writable(&self) -> bool {
        self.empty_dir.is_some()
    }
}

/// A ConfigMap volume.
#[derive(Debug, Deserialize)]
pub struct ConfigMapVolume {
    /// The ConfigMap.
    pub name: String,
    /// The keys to mount (default: every key, as a file of its name).
    #[serde(default)]
    pub items: Vec<KeyToPath>,
}

/// A Secret volume.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretVolume {
    /// The Secret.
    pub secret_name: String,
    /// The keys to mount.
    #[serde(default)]
    pub items: Vec<KeyToPath>,
}

/// A key mounted as a file.
#[derive(Debug, Deserialize)]
pub struct KeyToPath {
    /// The key.
    pub key: String,
    /// The file, relative to the mount.
    pub path: String,
}

/// A security context: the fields the tests read.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityContext {
    /// `runAsUser`.
    pub run_as_user: Option<u64>,
    /// `runAsNonRoot`.
    pub run_as_non_root: Option<bool>,
    /// `readOnlyRootFilesystem` (containers only).
    pub read_only_root_filesystem: Option<bool>,
}

/// A container in its pod.
#[derive(Debug, Clone, Copy)]
pub struct Container<'a> {
    /// The workload whose pod it is in.
    pub workload: &'a Workload<'a>,
    /// The container.
    pub spec: &'a ContainerSpec,
}

impl fmt::Display for Container<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, container {}", self.workload.object, self.spec.name)
    }
}

impl<'a> Container<'a> {
    /// The image's repository, without registry, tag or digest.
    pub fn repository(&self) -> &'a str {
        let image = self.spec.image.split('@').next().unwrap_or_default();
        let last = image.rsplit('/').next().unwrap_or_default();
        last.split(':').next().unwrap_or_default()
    }

    /// The command line after the binary: `command[1..]` then `args` (`args` alone when
    /// `command` is not given, the image's ENTRYPOINT being the binary).
    pub fn argv(&self) -> Vec<&'a str> {
        self.spec
            .command
            .iter()
            .skip(1)
            .chain(&self.spec.args)
            .map(String::as_str)
            .collect()
    }

    /// The subcommands: the words before the first flag (`serve` of `serve --listen …`).
    pub fn subcommands(&self) -> Vec<&'a str> {
        self.argv().into_iter().take_while(|a| !a.starts_with('-')).collect()
    }

    /// Every flag given (`--etcd`, `-c`), without a `=value`.
    pub fn flags(&self) -> Vec<&'a str> {
        self.argv()
            .into_iter()
            .filter(|a| a.starts_with('-') && *a != "-" && *a != "--")
            .map(|a| a.split('=').next().unwrap_or(a))
            .collect()
    }

    /// The value of `flag` (`--flag VALUE` or `--flag=VALUE`), as written.
    pub fn flag_value(&self, flag: &str) -> Option<&'a str> {
        let argv = self.argv();
        argv.iter().enumerate().find_map(|(i, a)| {
            if *a == flag {
                argv.get(i + 1).copied()
            } else {
                a.strip_prefix(flag).and_then(|rest| rest.strip_prefix('='))
            }
        })
    }

    /// The environment variable `name`, if the container sets it.
    pub fn env(&self, name: &str) -> Option<&'a EnvVar> {
        self.spec.env.iter().find(|e| e.name == name)
    }

    /// The container port `port` names, if this container declares it.
    pub fn resolve_port(&self, port: &PortRef) -> Option<u16> {
        self.spec
            .ports
            .iter()
            .find(|p| match port {
                PortRef::Number(n) => p.container_port == *n,
                PortRef::Name(name) => p.name.as_deref() == Some(name),
            })
            .map(|p| p.container_port)
    }

    /// Its probes by field name (`readinessProbe`, …).
    pub fn probes(&self) -> Vec<(&'static str, &'a Probe)> {
        [
            ("readinessProbe", &self.spec.readiness_probe),
            ("livenessProbe", &self.spec.liveness_probe),
            ("startupProbe", &self.spec.startup_probe),
        ]
        .into_iter()
        .filter_map(|(name, probe)| probe.as_ref().map(|p| (name, p)))
        .collect()
    }

    /// The mount that holds `path` (the longest mount path it is under) and its volume.
    pub fn mount_of(&self, path: &str) -> Option<(&'a VolumeMount, &'a Volume)> {
        let mount = self
            .spec
            .volume_mounts
            .iter()
            .filter(|m| under(path, &m.mount_path).is_some())
            .max_by_key(|m| m.mount_path.len())?;
        Some((mount, self.workload.volume(&mount.name)?))
    }

    /// The contents of the file at `path` in the container, when a ConfigMap of `manifests`
    /// provides it.
    pub fn config_file<'m>(&self, manifests: &'m Manifests, path: &str) -> Result<&'m str, String> {
        let (mount, volume) = self
            .mount_of(path)
            .ok_or_else(|| format!("{self}: no volume is mounted at {path}"))?;
        let relative = under(path, &mount.mount_path).unwrap_or_default();
        let map = volume
            .config_map
            .as_ref()
            .ok_or_else(|| format!("{self}: {path} is on volume {}, which is not a ConfigMap", volume.name))?;
        let key = if map.items.is_empty() {
            Some(relative)
        } else {
            map.items.iter().find(|i| i.path == relative).map(|i| i.key.as_str())
        };
        let object = manifests
            .find("ConfigMap", &map.name)
            .ok_or_else(|| format!("{self}: {path} is in ConfigMap {}, which no manifest holds", map.name))?;
        key.and_then(|k| object.value["data"][k].as_str())
            .ok_or_else(|| format!("{self}: {path}: ConfigMap {} has no key for it", map.name))
    }

    /// What holds for this container whatever its binary: every `$(VAR)` of its command line is
    /// one of its variables; every variable's ConfigMap key exists; every probe's port is
    /// declared; every mount names a pod volume whose ConfigMap and keys exist.
    pub fn problems(&self, manifests: &Manifests) -> Vec<String> {
        let mut problems = Vec::new();
        for arg in self.spec.command.iter().chain(&self.spec.args) {
            for var in references(arg) {
                if self.env(var).is_none() {
                    problems.push(format!(
                        "{self}: {arg} refers to $({var}), which is not one of its environment \
                         variables (Kubernetes would pass it on unexpanded)"
                    ));
                }
            }
        }
        for var in &self.spec.env {
            if let Some(Value::Object(from)) = &var.value_from
                && let Some(r) = from.get("configMapKeyRef")
            {
                let (map, key) = (
                    r["name"].as_str().unwrap_or_default(),
                    r["key"].as_str().unwrap_or_default(),
                );
                if r["optional"] != Value::Bool(true) && manifests.config_map_value(map, key).is_none() {
                    problems.push(format!(
                        "{self}: environment variable {} is key {key} of ConfigMap {map}, which no manifest holds",
                        var.name
                    ));
                }
            }
        }
        for (field, probe) in self.probes() {
            let port = probe
                .http_get
                .as_ref()
                .map(|h| &h.port)
                .or(probe.tcp_socket.as_ref().map(|t| &t.port));
            if let Some(port) = port
                && self.resolve_port(port).is_none()
            {
                problems.push(format!(
                    "{self}: {field}'s port {port} is not one of its containerPorts"
                ));
            }
        }
        for mount in &self.spec.volume_mounts {
            let Some(volume) = self.workload.volume(&mount.name) else {
                problems.push(format!(
                    "{self}: mounts volume {}, which the pod does not have",
                    mount.name
                ));
                continue;
            };
            if let Some(map) = &volume.config_map {
                match manifests.find("ConfigMap", &map.name) {
                    None => problems.push(format!(
                        "{self}: volume {} is ConfigMap {}, which no manifest holds",
                        volume.name, map.name
                    )),
                    Some(object) => {
                        for item in &map.items {
                            if object.value["data"][&item.key].is_null() {
                                problems.push(format!(
                                    "{self}: volume {} mounts key {} of ConfigMap {}, which has no such key",
                                    volume.name, item.key, map.name
                                ));
                            }
                        }
                    }
                }
            }
            if let Some(secret) = &volume.secret
                && secret.items.is_empty()
            {
                problems.push(format!(
                    "{self}: volume {} mounts Secret {} without `items`: list the keys it needs",
                    volume.name, secret.secret_name
                ));
            }
        }
        problems
    }

    /// `http://$(VAR):PORT`, where `VAR` is the container's variable holding the pod's IP (the
    /// downward API's `status.podIP`): the URL the rest of the cluster reaches `port` of this
    /// pod at. `None` without such a variable.
    pub fn pod_ip_url(&self, port: u16) -> Option<String> {
        let var = self.spec.env.iter().find(|e| {
            e.value_from
                .as_ref()
                .is_some_and(|f| f["fieldRef"]["fieldPath"] == "status.podIP")
        })?;
        Some(format!("http://$({}):{port}", var.name))
    }

    /// Its readiness and liveness probes are HTTP GETs of `port` for paths `api` (an OpenAPI
    /// description's operations, `GET /healthz`, from `described_in`) lists.
    pub fn probe_problems(&self, port: Option<u16>, api: &[String], described_in: &str) -> Vec<String> {
        let mut problems = Vec::new();
        for field in ["readinessProbe", "livenessProbe"] {
            let Some((_, probe)) = self.probes().into_iter().find(|(f, _)| *f == field) else {
                problems.push(format!("{self}: no {field}"));
                continue;
            };
            let Some(get) = &probe.http_get else {
                problems.push(format!("{self}: {field} is not an httpGet"));
                continue;
            };
            if self.resolve_port(&get.port) != port {
                problems.push(format!(
                    "{self}: {field} asks port {}, not the API's ({})",
                    get.port,
                    port.map_or("none".to_owned(), |p| p.to_string())
                ));
            }
            let path = get.path.as_deref().unwrap_or("/");
            if !api.iter().any(|op| *op == format!("GET {path}")) {
                problems.push(format!(
                    "{self}: {field} asks {path}, which the API does not serve ({described_in})"
                ));
            }
        }
        problems
    }

    /// The user the container runs as (its own `runAsUser`, else its pod's).
    pub fn run_as_user(&self) -> Option<u64> {
        self.spec
            .security_context
            .run_as_user
            .or(self.workload.pod.security_context.run_as_user)
    }

    /// Its flags, subcommands and `SWITCHYARD_*` variables checked against the `--help` of
    /// `binary` (the container's binary, built): each problem names the container and the flag.
    pub fn flag_problems(&self, binary: &Path) -> Vec<String> {
        let subcommands = self.subcommands();
        let name = binary.file_name().and_then(|n| n.to_str()).unwrap_or("the binary");
        let shown = std::iter::once(name)
            .chain(subcommands.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        let help = match Help::of(binary, &subcommands) {
            Ok(help) => help,
            Err(e) => {
                return vec![format!(
                    "{self}: `{shown} --help` fails, so `{shown}` is not a command: {e}"
                )];
            }
        };
        let mut problems = Vec::new();
        for flag in self.flags() {
            if !help.flags.contains(flag) {
                problems.push(format!(
                    "{self}: {flag} is not an option of `{shown}` (see `{shown} --help`)"
                ));
            }
        }
        for var in &self.spec.env {
            if var.name.starts_with("SWITCHYARD_") && !help.env.contains(&var.name) {
                problems.push(format!(
                    "{self}: environment variable {} is read by no option of `{shown}`",
                    var.name
                ));
            }
        }
        problems
    }
}

/// `path` relative to `dir` when it is `dir` or under it.
fn under<'p>(path: &'p str, dir: &str) -> Option<&'p str> {
    let dir = dir.trim_end_matches('/');
    let rest = path.strip_prefix(dir)?;
    if rest.is_empty() {
        Some("")
    } else {
        rest.strip_prefix('/')
    }
}

/// The variables `$(VAR)` of a command-line word refers to (`$$(VAR)` is an escaped `$(VAR)`).
pub fn references(word: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = word;
    while let Some(at) = rest.find('$') {
        let after = &rest[at + 1..];
        if let Some(escaped) = after.strip_prefix('$') {
            rest = escaped;
            continue;
        }
        if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            out.push(&inner[..end]);
            rest = &inner[end + 1..];
            continue;
        }
        rest = after;
    }
    out
}

/// What a binary's `--help` defines: its options and the environment variables they read.
#[derive(Debug, Clone)]
pub struct Help {
    /// Every option (`--config`, `-c`).
    pub flags: BTreeSet<String>,
    /// Every variable shown as `[env: NAME=…]`.
    pub env: BTreeSet<String>,
}

impl Help {
    /// Runs `binary SUBCOMMANDS... --help`; an error carries what it printed on stderr.
    pub fn of(binary: &Path, subcommands: &[&str]) -> Result<Self, String> {
        let out = Command::new(binary)
            .args(subcommands)
            .arg("--help")
            .env_remove("SWITCHYARD_ETCD")
            .output()
            .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Self::parse(&String::from_utf8_lossy(&out.stdout)))
    }

    /// Reads clap's help text: an option is defined on a line that starts with it
    /// (`  -c, --config <CONFIG>  …`); flags a description mentions do not count.
    pub fn parse(text: &str) -> Self {
        let mut flags = BTreeSet::new();
        for line in text.lines() {
            if !line.trim_start().starts_with('-') {
                continue;
            }
            for word in line.split_whitespace() {
                let word = word.trim_end_matches(',');
                if !word.starts_with('-') {
                    break;
                }
                flags.insert(word.to_owned());
            }
        }
        let env = text
            .split("[env: ")
            .skip(1)
            .filter_map(|rest| rest.split(['=', ']']).next())
            .map(str::to_owned)
            .collect();
        Self { flags, env }
    }
}

/// The final stage of a Dockerfile: what its image runs and holds.
#[derive(Debug, Clone)]
pub struct Image {
    /// `ENTRYPOINT`, in its exec form.
    pub entrypoint: Vec<String>,
    /// The file names the final stage copies into `/usr/local/bin/`.
    pub binaries: Vec<String>,
    /// `USER`.
    pub user: Option<String>,
}

impl Image {
    /// The binary `container` runs in this image: its `command`, else the ENTRYPOINT.
    pub fn binary_of<'c>(&'c self, container: &Container<'c>) -> Option<&'c str> {
        container
            .spec
            .command
            .first()
            .or(self.entrypoint.first())
            .map(String::as_str)
    }

    /// Reads the Dockerfile at `path`; panics if it cannot.
    pub fn from_dockerfile(path: &Path) -> Self {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let last_stage = text.rsplit("\nFROM ").next().unwrap_or(&text);
        let mut image = Self {
            entrypoint: Vec::new(),
            binaries: Vec::new(),
            user: None,
        };
        for line in last_stage.lines() {
            if let Some(rest) = line.strip_prefix("ENTRYPOINT ") {
                image.entrypoint = serde_json::from_str(rest).unwrap_or_else(|e| panic!("ENTRYPOINT: {e}"));
            } else if let Some(rest) = line.strip_prefix("USER ") {
                image.user = Some(rest.trim().to_owned());
            } else if let Some(rest) = line.strip_prefix("COPY ") {
                let words: Vec<&str> = rest.split_whitespace().filter(|w| !w.starts_with("--")).collect();
                if let Some((dest, sources)) = words.split_last()
                    && *dest == "/usr/local/bin/"
                {
                    image
                        .binaries
                        .extend(sources.iter().filter_map(|s| s.rsplit('/').next()).map(str::to_owned));
                }
            }
        }
        image
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_counts_defined_options_not_mentioned_ones() {
        let help = Help::parse(
            "Usage: x [OPTIONS]\n\nOptions:\n  -c, --config <CONFIG>  a file; see --elsewhere\n      \
             --etcd <URL[,URL...]>  etcd [env: SWITCHYARD_ETCD=]\n  -h, --help  Print help\n",
        );
        let flags: Vec<&str> = help.flags.iter().map(String::as_str).collect();
        assert_eq!(flags, ["--config", "--etcd", "--help", "-c", "-h"]);
        assert_eq!(help.env.into_iter().collect::<Vec<_>>(), ["SWITCHYARD_ETCD"]);
    }

    #[test]
    fn references_skip_escaped_ones() {
        assert_eq!(references("http://$(POD_IP):$(PORT)/"), ["POD_IP", "PORT"]);
        assert!(references("$$(POD_IP) $ ( x").is_empty());
    }

    #[test]
    fn mounts_hold_the_paths_under_them() {
        assert_eq!(
            under("/etc/switchyard/proxy.yaml", "/etc/switchyard"),
            Some("proxy.yaml")
        );
        assert_eq!(under("/etc/switchyard", "/etc/switchyard/"), Some(""));
        assert_eq!(under("/etc/switchyard-admin/token", "/etc/switchyard"), None);
    }
}
