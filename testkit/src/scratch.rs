//! A temporary directory of one test's own, removed when dropped.

use std::path::{Path, PathBuf};

/// A directory under the system's temporary directory, named after the process and the test.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    /// Creates (afresh) the directory for `test`.
    pub fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("switchyard-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        Self(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A file in the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
