//! Durable rollout state, one JSON record per rollout: by default in a directory, each file
//! replaced atomically (written beside, synced, renamed over, directory synced), so a crash at
//! any moment leaves either the old or the new state, never a torn one, with no server to
//! install; or (feature `fleet`, `serve --etcd`) in etcd, where replicas of the controller find
//! it, every write fenced by the leader's election key.
//!
//! Saving never waits: the controller saves under its lock. A file is written there and then;
//! etcd writes are queued and written in order by one task, the latest record of a rollout
//! replacing one not yet written, and [`Store::flush`] waits until what was saved is stored. The
//! controller flushes before it answers a command and before it publishes traffic, so no proxy
//! serves a step that a new leader would not find.

use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::state::RolloutState;

/// Everything kept about one rollout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// The spec as applied (YAML or JSON text), read again on start.
    pub spec_text: String,
    /// Whether `spec_text` is JSON.
    pub spec_is_json: bool,
    /// The rollout's state.
    pub state: RolloutState,
    /// The analyses' running state.
    pub analysis: crate::controller::AnalysisRun,
}

/// Why a stored record could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The record's file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a record of this version of Switchyard.
    #[error("{} is not a rollout record: {source}", path.display())]
    Parse {
        /// The record's file (or etcd key).
        path: PathBuf,
        /// What is wrong.
        source: serde_json::Error,
    },
}

#[cfg(feature = "fleet")]
mod etcd;

/// Where records are kept.
#[derive(Debug, Clone)]
pub struct Store {
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Files(Files),
    /// Keeps nothing: a controller that only shows what another one stored.
    Detached,
    #[cfg(feature = "fleet")]
    Etcd(std::sync::Arc<etcd::Writer>),
}

impl Store {
    /// Opens (creating) a directory of records.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(Self {
            kind: Kind::Files(Files { dir: dir.to_owned() }),
        })
    }

    /// A store that keeps nothing, for a controller that only reads.
    pub fn detached() -> Self {
        Self { kind: Kind::Detached }
    }

    /// Records in etcd, through `fleet` (its fence guards every write).
    #[cfg(feature = "fleet")]
    pub fn etcd(fleet: std::sync::Arc<crate::fleet::Fleet>) -> Self {
        Self {
            kind: Kind::Etcd(etcd::Writer::start(fleet)),
        }
    }

    /// Where the records live, for a person.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Files(f) => f.dir.display().to_string(),
            Kind::Detached => "nowhere (read only)".to_owned(),
            #[cfg(feature = "fleet")]
            Kind::Etcd(w) => format!("etcd {}", w.describe()),
        }
    }

    /// Replaces the record of `name` (in etcd: queued, see [`Store::flush`]).
    pub fn save(&self, name: &str, record: &Record) -> std::io::Result<()> {
        match &self.kind {
            Kind::Files(f) => f.save(name, record),
            Kind::Detached => Err(read_only()),
            #[cfg(feature = "fleet")]
            Kind::Etcd(w) => {
                let bytes = serde_json::to_vec(record).map_err(std::io::Error::other)?;
                w.queue(name, Some(bytes))
            }
        }
    }

    /// Removes the record of `name`; a record already gone is no error.
    pub fn remove(&self, name: &str) -> std::io::Result<()> {
        match &self.kind {
            Kind::Files(f) => f.remove(name),
            Kind::Detached => Err(read_only()),
            #[cfg(feature = "fleet")]
            Kind::Etcd(w) => w.queue(name, None),
        }
    }

    /// Waits until everything saved so far is stored: at once for files; for etcd, until the
    /// writes are confirmed, or fail because this controller no longer leads.
    pub async fn flush(&self) -> std::io::Result<()> {
        match &self.kind {
            Kind::Files(_) | Kind::Detached => Ok(()),
            #[cfg(feature = "fleet")]
            Kind::Etcd(w) => w.flush().await,
        }
    }

    /// Every record, by rollout name; unreadable ones are reported, not fatal.
    pub async fn load(&self) -> std::io::Result<Vec<(String, Result<Record, LoadError>)>> {
        match &self.kind {
            Kind::Files(f) => Ok(f.load_all()),
            Kind::Detached => Ok(Vec::new()),
            #[cfg(feature = "fleet")]
            Kind::Etcd(w) => w.load().await,
        }
    }

    /// Every record in a directory store (an etcd store answers with none: use
    /// [`Store::load`]).
    pub fn load_all(&self) -> Vec<(String, Result<Record, LoadError>)> {
        match &self.kind {
            Kind::Files(f) => f.load_all(),
            Kind::Detached => Vec::new(),
            #[cfg(feature = "fleet")]
            Kind::Etcd(_) => Vec::new(),
        }
    }

    /// Turns true when a fenced write was refused: this controller no longer leads.
    #[cfg(feature = "fleet")]
    pub fn lost(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        match &self.kind {
            Kind::Files(_) | Kind::Detached => None,
            Kind::Etcd(w) => Some(w.lost()),
        }
    }

    /// Ends a leader's term: its store writes nothing more, and a command waiting for its
    /// change to be stored is told it was not.
    #[cfg(feature = "fleet")]
    pub fn end_term(&self) {
        if let Kind::Etcd(w) = &self.kind {
            w.end_term();
        }
    }
}

fn read_only() -> std::io::Error {
    std::io::Error::other("this controller only shows rollouts; the leader changes them")
}

/// A directory of records.
#[derive(Debug, Clone)]
struct Files {
    dir: PathBuf,
}

impl Files {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Replaces the record of `name` atomically and durably.
    fn save(&self, name: &str, record: &Record) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
        let tmp = self.dir.join(format!(".{name}.json.tmp"));
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, self.path(name))?;
        File::open(&self.dir)?.sync_all()
    }

    /// Removes the record of `name`, durably; a record already gone is no error.
    fn remove(&self, name: &str) -> std::io::Result<()> {
        match fs::remove_file(self.path(name)) {
            Ok(()) => File::open(&self.dir)?.sync_all(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every record, by rollout name; unreadable files are reported, not fatal.
    fn load_all(&self) -> Vec<(String, Result<Record, LoadError>)> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(name) = name.strip_suffix(".json").filter(|n| !n.starts_with('.')) else {
                continue;
            };
            let record = fs::read(&path)
                .map_err(|source| LoadError::Read {
                    path: path.clone(),
                    source,
                })
                .and_then(|b| {
                    serde_json::from_slice(&b).map_err(|source| LoadError::Parse {
                        path: path.clone(),
                        source,
                    })
                });
            out.push((name.to_owned(), record));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}
