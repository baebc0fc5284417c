//! A container's binary run on loopback as its pod would run it, so that a test can ask its
//! probes and ports what the kubelet and the Services would.

use std::collections::BTreeMap;
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use serde_json::Value;

use super::{Container, HttpGet, Manifests, under};
use crate::Scratch;

/// A container's binary running on loopback; killed when dropped.
#[derive(Debug)]
pub struct LocalContainer {
    child: Child,
    /// Each declared container port and the loopback port it was moved to.
    ports: BTreeMap<u16, u16>,
    log: PathBuf,
    /// The command line it runs, after the binary.
    pub argv: Vec<String>,
    /// Its environment.
    pub env: BTreeMap<String, String>,
    _dir: Scratch,
}

/// The address forms a container binds or advertises a port of its own with.
const HOSTS: [&str; 3] = ["0.0.0.0:", "127.0.0.1:", "[::]:"];

/// What changes between the pod and loopback: mount paths become directories of the test's
/// own, and addresses on a declared port move to a free one.
struct Rewrite {
    mounts: Vec<(String, PathBuf)>,
    ports: BTreeMap<u16, u16>,
}

impl Rewrite {
    fn word(&self, word: &str) -> String {
        let moved = self
            .mounts
            .iter()
            .filter_map(|(mount, dir)| Some((mount.len(), dir.join(under(word, mount)?))))
            .max_by_key(|(len, _)| *len)
            .map(|(_, path)| path.display().to_string());
        let mut rest = moved.as_deref().unwrap_or(word);
        let mut out = String::new();
        while let Some((at, host)) = HOSTS.iter().filter_map(|h| Some((rest.find(h)?, *h))).min() {
            let after = &rest[at + host.len()..];
            let digits = after.find(|c: char| !c.is_ascii_digit()).unwrap_or(after.len());
            out.push_str(&rest[..at]);
            match after[..digits].parse().ok().and_then(|p: u16| self.ports.get(&p)) {
                Some(free) => out.push_str(&format!("127.0.0.1:{free}")),
                None => out.push_str(&rest[at..at + host.len() + digits]),
            }
            rest = &after[digits..];
        }
        out.push_str(rest);
        out
    }

    fn value(&self, value: Value) -> Value {
        match value {
            Value::String(s) => Value::String(self.word(&s)),
            Value::Array(items) => Value::Array(items.into_iter().map(|v| self.value(v)).collect()),
            Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, self.value(v))).collect()),
            other => other,
        }
    }
}

/// `word` with every `$(VAR)` of `env` replaced by its value (an unknown one stays, as
/// Kubernetes leaves it), and `$$` as `$`.
fn expand(word: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = word;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(escaped) = after.strip_prefix('$') {
            out.push('$');
            rest = escaped;
        } else if let Some((name, tail)) = after.strip_prefix('(').and_then(|i| i.split_once(')'))
            && let Some(value) = env.get(name)
        {
            out.push_str(value);
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

impl LocalContainer {
    /// Starts `binary` (the container's binary, built) the way its pod would run `container`:
    ///
    /// - its environment: literal values, `fieldRef`s (the pod's IP is 127.0.0.1, its name
    ///   `name`), `configMapKeyRef`s from `manifests`; then `overrides`, which win;
    /// - `$(VAR)` expanded in its command line;
    /// - each mount a directory of its own: a ConfigMap's keys as files, a Secret's items as
    ///   files holding a secret of the test's own, an `emptyDir` empty;
    /// - each declared container port moved to a free loopback port: an address on it
    ///   (`0.0.0.0:9901`, `127.0.0.1:9901`, `[::]:9901`, so also the pod's IP) in the command
    ///   line, the environment and the ConfigMaps' YAML and JSON files becomes `127.0.0.1:FREE`,
    ///   and so does every mount path in them its directory.
    ///
    /// Panics, naming the container, on what it cannot play (an unknown `fieldRef`).
    pub fn start(
        container: &Container<'_>,
        manifests: &Manifests,
        binary: &Path,
        name: &str,
        overrides: &[(&str, &str)],
    ) -> Self {
        let dir = Scratch::new(&format!("local-{name}"));
        let held: Vec<(u16, StdListener)> = container
            .spec
            .ports
            .iter()
            .map(|p| {
                (
                    p.container_port,
                    StdListener::bind("127.0.0.1:0").expect("a free loopback port"),
                )
            })
            .collect();
        let ports = held
            .iter()
            .map(|(port, l)| (*port, l.local_addr().expect("a bound address").port()))
            .collect();
        drop(held);
        let mounts = container
            .spec
            .volume_mounts
            .iter()
            .map(|m| (m.mount_path.clone(), dir.join(&format!("volume-{}", m.name))))
            .collect();
        let rewrite = Rewrite { mounts, ports };
        for mount in &container.spec.volume_mounts {
            let target = dir.join(&format!("volume-{}", mount.name));
            std::fs::create_dir_all(&target).expect("create the volume's directory");
            let volume = container
                .workload
                .volume(&mount.name)
                .unwrap_or_else(|| panic!("{container}: no volume {}", mount.name));
            let files: Vec<(String, String)> = if let Some(map) = &volume.config_map {
                let object = manifests
                    .find("ConfigMap", &map.name)
                    .unwrap_or_else(|| panic!("{container}: no ConfigMap {}", map.name));
                let data = object.value["data"].as_object().cloned().unwrap_or_default();
                let keys: Vec<(String, String)> = if map.items.is_empty() {
                    data.keys().map(|k| (k.clone(), k.clone())).collect()
                } else {
                    map.items.iter().map(|i| (i.key.clone(), i.path.clone())).collect()
                };
                keys.into_iter()
                    .map(|(key, path)| {
                        let text = data.get(&key).and_then(Value::as_str).unwrap_or_default();
                        (path, rewrite_file(&key, text, &rewrite))
                    })
                    .collect()
            } else if let Some(secret) = &volume.secret {
                secret
                    .items
                    .iter()
                    .map(|i| (i.path.clone(), format!("a secret of test {name}\n")))
                    .collect()
            } else {
                Vec::new()
            };
            for (path, text) in files {
                std::fs::write(target.join(path), text).expect("write a volume's file");
            }
        }
        let mut env = BTreeMap::new();
        for var in &container.spec.env {
            let value = match (&var.value, &var.value_from) {
                (Some(v), _) => expand(v, &env),
                (None, Some(from)) => resolve(container, manifests, name, from),
                (None, None) => String::new(),
            };
            env.insert(var.name.clone(), rewrite.word(&value));
        }
        for (k, v) in overrides {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        let argv: Vec<String> = container
            .argv()
            .into_iter()
            .map(|a| rewrite.word(&expand(a, &env)))
            .collect();
        let log = dir.join("log");
        let file = std::fs::File::create(&log).expect("create the log");
        let child = Command::new(binary)
            .args(&argv)
            .env_clear()
            .envs(&env)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("the log, twice"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("{container}: cannot start {}: {e}", binary.display()));
        Self {
            child,
            ports: rewrite.ports,
            log,
            argv,
            env,
            _dir: dir,
        }
    }

    /// The loopback port container port `port` was moved to.
    pub fn port(&self, port: u16) -> u16 {
        *self
            .ports
            .get(&port)
            .unwrap_or_else(|| panic!("{port} is not a declared container port"))
    }

    /// The URL the kubelet would GET for `probe` of `container`, on loopback.
    pub fn probe_url(&self, container: &Container<'_>, probe: &HttpGet) -> String {
        let port = container
            .resolve_port(&probe.port)
            .unwrap_or_else(|| panic!("{container}: probe port {} is not declared", probe.port));
        format!(
            "http://127.0.0.1:{}{}",
            self.port(port),
            probe.path.as_deref().unwrap_or("/")
        )
    }

    /// Its exit status, once it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// What it printed so far (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for LocalContainer {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A ConfigMap file as the container would read it on loopback: YAML and JSON rewritten value by
/// value, anything else as it is.
fn rewrite_file(key: &str, text: &str, rewrite: &Rewrite) -> String {
    if !(key.ends_with(".yaml") || key.ends_with(".yml") || key.ends_with(".json")) {
        return text.to_owned();
    }
    let value: Value = serde_yaml_ng::from_str(text).unwrap_or_else(|e| panic!("{key}: {e}"));
    serde_yaml_ng::to_string(&rewrite.value(value)).expect("a value serializes")
}

/// An environment variable's `valueFrom`, on loopback.
fn resolve(container: &Container<'_>, manifests: &Manifests, name: &str, from: &Value) -> String {
    if let Some(path) = from["fieldRef"]["fieldPath"].as_str() {
        return match path {
            "status.podIP" | "status.hostIP" => "127.0.0.1".to_owned(),
            "metadata.name" => name.to_owned(),
            "metadata.namespace" => "default".to_owned(),
            "spec.nodeName" => "localhost".to_owned(),
            other => panic!("{container}: fieldRef {other} is not played on loopback"),
        };
    }
    if let Some(r) = from.get("configMapKeyRef") {
        let (map, key) = (
            r["name"].as_str().unwrap_or_default(),
            r["key"].as_str().unwrap_or_default(),
        );
        return manifests
            .config_map_value(map, key)
            .unwrap_or_else(|| panic!("{container}: no key {key} in ConfigMap {map}"))
            .to_owned();
    }
    panic!("{container}: valueFrom {from} is not played on loopback")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_on_declared_ports_and_mount_paths_move() {
        let rewrite = Rewrite {
            mounts: vec![("/etc/switchyard".to_owned(), PathBuf::from("/tmp/v"))],
            ports: BTreeMap::from([(9901, 40001), (80, 40002)]),
        };
        assert_eq!(rewrite.word("0.0.0.0:9901"), "127.0.0.1:40001");
        assert_eq!(rewrite.word("http://127.0.0.1:9901/x"), "http://127.0.0.1:40001/x");
        assert_eq!(rewrite.word("[::]:80"), "127.0.0.1:40002");
        assert_eq!(rewrite.word("0.0.0.0:8080"), "0.0.0.0:8080");
        assert_eq!(rewrite.word("127.0.0.1:8081"), "127.0.0.1:8081");
        assert_eq!(rewrite.word("/etc/switchyard/proxy.yaml"), "/tmp/v/proxy.yaml");
        assert_eq!(
            rewrite.word("/etc/switchyard-admin/token"),
            "/etc/switchyard-admin/token"
        );
    }

    #[test]
    fn variables_expand_as_kubernetes_expands_them() {
        let env = BTreeMap::from([("POD_IP".to_owned(), "10.0.0.7".to_owned())]);
        assert_eq!(expand("http://$(POD_IP):9901", &env), "http://10.0.0.7:9901");
        assert_eq!(expand("$(NOPE) $$(POD_IP) $", &env), "$(NOPE) $(POD_IP) $");
    }
}
