//! Config file and certificate watch: saving the file hot-reloads the routes (debounced); an
//! invalid file is logged with its problems and counted, and the running table stays. TLS
//! certificate and key files are reloaded the same way. A valid save is the newest word on the
//! routes: the state file is brought up to it, so a restart never brings back an API table
//! published before the edit.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use switchyard_config::{Format, ProxyConfig, load_config};
use tokio::sync::{mpsc, watch};

use crate::admin::Health;
use crate::publish::{NewRoutes, Publisher};
use crate::tls::CertStore;

/// How long the watch waits after a change for more changes before reloading (editors write a
/// file in several steps).
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Starts watching; the returned watcher must be kept alive for the watch to go on.
pub fn spawn(
    config_file: &Path,
    initial: ProxyConfig,
    certs: Vec<Arc<CertStore>>,
    publisher: Arc<Publisher>,
    health: Arc<Health>,
    mut stop: watch::Receiver<bool>,
) -> notify::Result<RecommendedWatcher> {
    let config_file = std::path::absolute(config_file)?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<PathBuf>>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            let _ = tx.send(event.paths);
        }
    })?;
    let mut files: Vec<PathBuf> = vec![config_file.clone()];
    for store in &certs {
        for f in store.files() {
            files.push(std::path::absolute(f)?);
        }
    }
    // Watch directories, not files: editors and `kubectl` replace files by renaming.
    let mut dirs: Vec<PathBuf> = files.iter().filter_map(|f| f.parent().map(Path::to_path_buf)).collect();
    dirs.sort();
    dirs.dedup();
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    tokio::spawn(async move {
        let mut reloader = Reloader {
            config_file,
            initial,
            certs,
            publisher,
            health,
        };
        loop {
            let first = tokio::select! {
                paths = rx.recv() => match paths {
                    Some(p) => p,
                    None => return,
                },
                () = crate::until_stopped(&mut stop) => return,
            };
            let mut touched = first;
            // Debounce: gather changes until the files are quiet for DEBOUNCE.
            loop {
                tokio::select! {
                    more = rx.recv() => match more {
                        Some(p) => touched.extend(p),
                        None => return,
                    },
                    () = tokio::time::sleep(DEBOUNCE) => break,
                }
            }
            reloader.reload(&touched).await;
        }
    });
    Ok(watcher)
}

struct Reloader {
    config_file: PathBuf,
    initial: ProxyConfig,
    certs: Vec<Arc<CertStore>>,
    publisher: Arc<Publisher>,
    health: Arc<Health>,
}

impl Reloader {
    async fn reload(&mut self, touched: &[PathBuf]) {
        if touched.iter().any(|p| p == &self.config_file) {
            self.reload_config().await;
        }
        for store in &self.certs {
            let files = store.files();
            if touched
                .iter()
                .any(|p| files.iter().any(|f| std::path::absolute(f).is_ok_and(|f| &f == p)))
            {
                match store.reload() {
                    Ok(()) => tracing::info!(cert = %files[0].display(), "TLS certificate reloaded"),
                    Err(e) => {
                        self.health.reload_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(error = %e, "TLS certificate reload failed; the certificate in use stays");
                    }
                }
            }
        }
    }

    async fn reload_config(&mut self) {
        let path = self.config_file.display();
        let text = match std::fs::read_to_string(&self.config_file) {
            Ok(t) => t,
            Err(e) => {
                // A rename in progress can leave the file briefly absent; the next event retries.
                self.health.reload_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(file = %path, error = %e, "cannot read the config file; the running table stays");
                return;
            }
        };
        let format = match self.config_file.extension().and_then(|e| e.to_str()) {
            Some("json") => Format::Json,
            Some("yaml" | "yml") => Format::Yaml,
            _ => Format::sniff(&text),
        };
        let loaded = match load_config(&text, format, 0) {
            Ok(l) => l,
            Err(problems) => {
                self.health.reload_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(file = %path, "invalid config file; the running table stays: {problems}");
                return;
            }
        };
        let config = loaded.config;
        let unchanged_elsewhere = ProxyConfig {
            routes: self.initial.routes.clone(),
            ..config.clone()
        } == self.initial;
        if !unchanged_elsewhere {
            tracing::warn!(
                file = %path,
                "only routes are reloaded; changes to listen, admin, trackHeader, timeouts, limits, paths and dns take a restart"
            );
        }
        if config.routes == self.publisher.load().table.spec() {
            self.publisher.config_routes_in_force(&config.routes).await;
            return;
        }
        match self.publisher.publish(NewRoutes::Specs(&config.routes), None).await {
            Ok(version) => {
                self.health.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(file = %path, version, "routing table reloaded from the config file");
            }
            Err(e) => {
                self.health.reload_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(file = %path, error = %e, "config reload not published; the running table stays");
            }
        }
    }
}
