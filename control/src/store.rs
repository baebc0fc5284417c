//! Durable rollout state: one JSON file per rollout in a directory, replaced atomically
//! (written beside, synced, renamed over, directory synced), so a crash at any moment leaves
//! either the old or the new state, never a torn one. No server to install.

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
        /// The record's file.
        path: PathBuf,
        /// What is wrong.
        source: serde_json::Error,
    },
}

/// The directory of records.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens (creating) the directory.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(Self { dir: dir.to_owned() })
    }

    /// Where the records live.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Replaces the record of `name` atomically and durably.
    pub fn save(&self, name: &str, record: &Record) -> std::io::Result<()> {
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
    pub fn remove(&self, name: &str) -> std::io::Result<()> {
        match fs::remove_file(self.path(name)) {
            Ok(()) => File::open(&self.dir)?.sync_all(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every record, by rollout name; unreadable files are reported, not fatal.
    pub fn load_all(&self) -> Vec<(String, Result<Record, LoadError>)> {
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
