//! The proxy's state file: the last routing table it published, kept across restarts, so that a
//! proxy killed mid-rollout comes back serving the controller's table rather than its config
//! file's (which may still send users to a candidate the controller has since aborted).
//!
//! The file is one JSON [`StateDocument`]: the table's routes, version and source, and the
//! [`RoutesDigest`] of the config file's routes it was published over. At start, [`restore`]
//! serves the stored table only while the config file's routes still have that digest: an edit
//! an operator made while the proxy was down wins over an older API table. [`StateFile::save`]
//! replaces the file atomically and durably (written beside, synced, renamed over, directory
//! synced), and a lock file beside it (`<state file>.lock`) keeps two running proxies from
//! sharing one state file.
//!
//! [`resume`] is the start-up shell around those: where the file is, what to serve, what to log.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use switchyard_config::schema::{RouteSpec, StateFileSpec};
use switchyard_config::{ConfigErrors, Format, RoutingTable, load_routes};

/// The format this proxy writes and reads; a state file of another is ignored and replaced.
pub const FORMAT: u32 = 1;

/// What `admin.stateFile` left out means: this suffix on the config file's name, in its directory.
pub const BESIDE_CONFIG_SUFFIX: &str = ".state.json";

/// A digest of routes as the config file gave them: xxh3-128 of their canonical JSON (the
/// schema's own serialization, with defaults filled in), so the file's layout, comments, key
/// order and YAML-or-JSON do not count as changes; what a route does does. It detects edits, it
/// is no defence: whoever can write the state file can make the proxy serve anything anyway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RoutesDigest(String);

impl RoutesDigest {
    /// The digest of `routes`.
    pub fn of(routes: &[RouteSpec]) -> Self {
        // The schema's types serialize to JSON without fail: string keys only, and serde_json
        // writes a non-finite number as null (validation refuses those anyway).
        let json = serde_json::to_vec(routes).expect("routes serialize to JSON");
        Self(format!("xxh3-128:{:032x}", xxhash_rust::xxh3::xxh3_128(&json)))
    }
}

/// Who published the table a state file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TableSource {
    /// `PUT /routes` (a controller, or an operator with curl).
    AdminApi,
    /// The config file, read at start or by the watch.
    ConfigFile,
}

impl TableSource {
    fn describe(self) -> &'static str {
        match self {
            Self::AdminApi => "the admin API (PUT /routes)",
            Self::ConfigFile => "the config file",
        }
    }
}

/// The state file's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StateDocument {
    /// [`FORMAT`].
    pub format: u32,
    /// The table's version.
    pub version: u64,
    /// Who published it.
    pub source: TableSource,
    /// The config file's routes when it was published.
    pub config_routes_digest: RoutesDigest,
    /// The table's routes, as `GET /routes` serves them.
    pub routes: serde_json::Value,
}

impl StateDocument {
    /// The document that keeps `table`, published by `source` over config file routes of digest
    /// `config_routes`.
    pub fn new(table: &RoutingTable, source: TableSource, config_routes: RoutesDigest) -> Self {
        Self {
            format: FORMAT,
            version: table.version(),
            source,
            config_routes_digest: config_routes,
            routes: serde_json::to_value(table.spec()).expect("routes serialize to JSON"),
        }
    }

    /// The file's bytes: pretty JSON, for an operator who opens it.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("a state document serializes to JSON");
        bytes.push(b'\n');
        bytes
    }

    /// Reads a state file's bytes; `path` is for the message of a problem.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self, StateError> {
        // The format first, so that a later format with other fields is named as such.
        #[derive(Deserialize)]
        struct Head {
            format: u32,
        }
        let malformed = |e: serde_json::Error| StateError::Malformed {
            path: path.to_owned(),
            cause: e.to_string(),
        };
        let head: Head = serde_json::from_slice(bytes).map_err(malformed)?;
        if head.format != FORMAT {
            return Err(StateError::Format {
                path: path.to_owned(),
                found: head.format,
            });
        }
        serde_json::from_slice(bytes).map_err(malformed)
    }

    /// The stored table, compiled at its version; its routes are validated like a `PUT`'s.
    pub fn table(&self) -> Result<RoutingTable, ConfigErrors> {
        let document = serde_json::json!({ "routes": self.routes }).to_string();
        load_routes(&document, Format::Json, self.version)
    }
}

/// What a starting proxy serves.
#[derive(Debug)]
pub enum Restore {
    /// The stored table: the config file's routes are still those it was published over.
    Stored {
        /// The table, at its stored version.
        table: RoutingTable,
        /// Who published it.
        source: TableSource,
    },
    /// The config file's routes, as table `version`.
    ConfigFile {
        /// 1, or the stored version plus one when the stored table is known but set aside, so
        /// that versions keep rising across the restart.
        version: u64,
        /// Why not the stored table.
        why: ConfigWins,
    },
}

/// Why a starting proxy serves its config file's routes.
#[derive(Debug)]
pub enum ConfigWins {
    /// There is no state file yet.
    NoStateFile,
    /// The state file cannot be read or is not a state document.
    Unusable(StateError),
    /// The stored table (version `stored`) no longer validates.
    InvalidTable {
        /// Its version.
        stored: u64,
        /// Its problems.
        problems: ConfigErrors,
    },
    /// The config file's routes changed after the stored table (version `stored`) was
    /// published: the operator's edit is newer.
    ConfigEdited {
        /// Its version.
        stored: u64,
    },
}

/// What to serve at start, from what the state file held and the digest of the config file's
/// routes now. Pure.
pub fn restore(stored: Result<Option<StateDocument>, StateError>, config_routes: &RoutesDigest) -> Restore {
    let document = match stored {
        Ok(Some(document)) => document,
        Ok(None) => {
            return Restore::ConfigFile {
                version: 1,
                why: ConfigWins::NoStateFile,
            };
        }
        Err(e) => {
            return Restore::ConfigFile {
                version: 1,
                why: ConfigWins::Unusable(e),
            };
        }
    };
    let next = document.version.saturating_add(1);
    if document.config_routes_digest != *config_routes {
        return Restore::ConfigFile {
            version: next,
            why: ConfigWins::ConfigEdited {
                stored: document.version,
            },
        };
    }
    match document.table() {
        Ok(table) => Restore::Stored {
            table,
            source: document.source,
        },
        Err(problems) => Restore::ConfigFile {
            version: next,
            why: ConfigWins::InvalidTable {
                stored: document.version,
                problems,
            },
        },
    }
}

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading failed.
    #[error("cannot read the state file {}: {source}", path.display())]
    Read {
        /// The state file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file is not a state document (torn by hand, or not written by a proxy).
    #[error("the state file {} is not a valid state document ({cause})", path.display())]
    Malformed {
        /// The state file.
        path: PathBuf,
        /// What the JSON reader said.
        cause: String,
    },
    /// The file is of another format (written by another version of the proxy).
    #[error("the state file {} is of format {found}, and this proxy reads format {FORMAT}", path.display())]
    Format {
        /// The state file.
        path: PathBuf,
        /// The format it names.
        found: u32,
    },
    /// Writing failed; nothing was replaced.
    #[error(
        "cannot write the state file {}: {source}; make its directory exist and be writable by the \
         proxy, or point admin.stateFile (or --state-file) elsewhere",
        path.display()
    )]
    Write {
        /// The state file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Another running process holds the lock beside the state file.
    #[error(
        "the state file {} is in use by another running proxy (it holds {}); give each proxy its own \
         admin.stateFile",
        path.display(),
        lock.display()
    )]
    InUse {
        /// The state file.
        path: PathBuf,
        /// Its lock file.
        lock: PathBuf,
    },
    /// The proxy shut down before the file was written.
    #[error("the proxy is shutting down; the state file {} was not written", path.display())]
    ShuttingDown {
        /// The state file.
        path: PathBuf,
    },
}

/// The state file of one running proxy.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    /// The lock file, locked, once it could be; kept open for the proxy's life, since closing it
    /// releases the lock.
    lock: Mutex<Option<File>>,
}

impl StateFile {
    /// The state file at `path`; nothing is touched until [`Self::lock`], [`Self::read`] or
    /// [`Self::save`].
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            lock: Mutex::new(None),
        }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn beside(&self, suffix: &str) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_owned();
        name.push(suffix);
        self.path.with_file_name(name)
    }

    fn directory(&self) -> &Path {
        match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        }
    }

    /// Takes the lock beside the file (creating the lock file) unless this proxy holds it
    /// already. Advisory (`flock`): it keeps out another proxy, not an editor.
    pub fn lock(&self) -> Result<(), StateError> {
        let mut held = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        if held.is_some() {
            return Ok(());
        }
        let lock = self.beside(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
            .map_err(|source| StateError::Write {
                path: self.path.clone(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => {
                *held = Some(file);
                Ok(())
            }
            Err(TryLockError::WouldBlock) => Err(StateError::InUse {
                path: self.path.clone(),
                lock,
            }),
            Err(TryLockError::Error(source)) => Err(StateError::Write {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// The stored document, `None` if there is no file.
    pub fn read(&self) -> Result<Option<StateDocument>, StateError> {
        match fs::read(&self.path) {
            Ok(bytes) => StateDocument::parse(&bytes, &self.path).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Read {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Replaces the file with `document`, atomically and durably: when this returns `Ok`, the
    /// document survives a crash of the process or of the machine; on any error the file is
    /// what it was. Blocks for the syncs (milliseconds on a local disk).
    pub fn save(&self, document: &StateDocument) -> Result<(), StateError> {
        self.lock()?;
        let staged = self.beside(".tmp");
        let written = (|| {
            let mut file = File::create(&staged)?;
            file.write_all(&document.to_bytes())?;
            file.sync_all()?;
            drop(file);
            fs::rename(&staged, &self.path)?;
            // The rename is durable once the directory's entry is.
            File::open(self.directory())?.sync_all()
        })();
        written.map_err(|source| {
            let _ = fs::remove_file(&staged);
            StateError::Write {
                path: self.path.clone(),
                source,
            }
        })
    }

    /// Removes the file (a missing one is fine), so that a restart serves the config file's
    /// routes.
    pub fn remove(&self) -> io::Result<()> {
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Where the state file is: `cli` (the `--state-file` flag) over `setting` (`admin.stateFile`);
/// when neither names one, beside `config_file`. The flag is `true` when the place was chosen (a
/// path that must work) rather than defaulted (a place that may not).
pub fn location(setting: &StateFileSpec, cli: Option<&Path>, config_file: Option<&Path>) -> Option<(PathBuf, bool)> {
    if let Some(path) = cli {
        return Some((path.to_owned(), true));
    }
    match setting {
        StateFileSpec::Path(path) => Some((PathBuf::from(path), true)),
        StateFileSpec::Off => None,
        StateFileSpec::BesideConfig => {
            let config_file = config_file?;
            let mut name = config_file.file_name()?.to_owned();
            name.push(BESIDE_CONFIG_SUFFIX);
            Some((config_file.with_file_name(name), false))
        }
    }
}

/// What a starting proxy serves, and the state file it keeps publishing into.
#[derive(Debug)]
pub struct Resumed {
    /// The table to start with.
    pub table: RoutingTable,
    /// Who published it.
    pub source: TableSource,
    /// The state file, if the proxy keeps one.
    pub state: Option<StateFile>,
    /// The digest of the config file's routes.
    pub config_routes: RoutesDigest,
}

/// Opens the state file at `location`, picks the table to start with (the config file's is
/// `config_table`, compiled from `config_routes`), logs what it chose and why, and rewrites the
/// file when the config file's routes won. Never fails on the file's content or on a place that
/// was only defaulted; fails only when a chosen state file is locked by another running proxy.
pub fn resume(
    location: Option<(PathBuf, bool)>,
    config_table: RoutingTable,
    config_routes: &[RouteSpec],
) -> Result<Resumed, StateError> {
    let digest = RoutesDigest::of(config_routes);
    let from_config = |table| Resumed {
        table,
        source: TableSource::ConfigFile,
        state: None,
        config_routes: digest.clone(),
    };
    let Some((path, chosen)) = location else {
        return Ok(from_config(config_table));
    };
    let state = StateFile::new(path);
    let without = |e: &StateError| {
        tracing::warn!(
            "{e}; meanwhile this proxy keeps no state file, so after a restart it serves its config \
             file's routes (a candidate since aborted included) until the controller publishes again; \
             admin.stateFile: false turns this warning off"
        );
    };
    let refused = |e: &StateError| {
        tracing::error!(
            "{e}; until it can be written, tables sent to PUT /routes are refused (500) and the table \
             in force stays"
        );
    };
    let locked = match state.lock() {
        Ok(()) => Ok(()),
        Err(e @ StateError::InUse { .. }) if chosen => return Err(e),
        // A chosen place that does not work now may later (a volume mounted late): the proxy
        // keeps trying at every PUT, and meanwhile serves what it can read.
        Err(e) if chosen => Err(e),
        Err(e) => {
            without(&e);
            return Ok(from_config(config_table));
        }
    };
    let at = state.path().display().to_string();
    let version = match restore(state.read(), &digest) {
        Restore::Stored { table, source } => {
            tracing::info!(
                state_file = %at,
                version = table.version(),
                "serving routing table version {} from the state file, as before the restart: {} \
                 published it and the config file's routes are unchanged since",
                table.version(),
                source.describe()
            );
            if let Err(e) = &locked {
                refused(e);
            }
            return Ok(Resumed {
                table,
                source,
                state: Some(state),
                config_routes: digest,
            });
        }
        Restore::ConfigFile { version, why } => {
            match why {
                ConfigWins::NoStateFile if locked.is_err() => {}
                ConfigWins::NoStateFile => tracing::info!(
                    state_file = %at,
                    "no state file yet: serving the config file's routes; every table published from \
                     now on is kept there"
                ),
                ConfigWins::Unusable(e) => tracing::warn!(
                    state_file = %at,
                    "{e}; ignoring it and serving the config file's routes as version {version}"
                ),
                ConfigWins::InvalidTable { stored, problems } => tracing::warn!(
                    state_file = %at,
                    "the state file's table (version {stored}) no longer validates, so the config \
                     file's routes are served as version {version}: {problems}"
                ),
                ConfigWins::ConfigEdited { stored } => tracing::warn!(
                    state_file = %at,
                    "the config file's routes changed after the state file's table (version {stored}) \
                     was published: the edit wins, and the config file's routes are served as version \
                     {version}"
                ),
            }
            version
        }
    };
    let table = config_table.with_version(version);
    // What the file held must not outlive the config file's win.
    let saved = locked.and_then(|()| state.save(&StateDocument::new(&table, TableSource::ConfigFile, digest.clone())));
    match saved {
        Ok(()) => {}
        Err(e) if chosen => {
            let _ = state.remove();
            refused(&e);
        }
        Err(e) => {
            let _ = state.remove();
            without(&e);
            return Ok(from_config(table));
        }
    }
    Ok(Resumed {
        table,
        source: TableSource::ConfigFile,
        state: Some(state),
        config_routes: digest,
    })
}

#[cfg(test)]
mod tests;
