//! Errors a user can cause with a configuration: every one names the field it is about.

use std::fmt;

/// One problem in a configuration, located by its field path
/// (`routes[0].tracks[1].weight`). An empty path means the whole document.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FieldError {
    /// Where the problem is, e.g. `routes[2].rules[0].track` (empty, or absent when read: the
    /// whole document).
    #[serde(default)]
    pub path: String,
    /// What is wrong and, where it helps, what would be right.
    pub message: String,
}

impl FieldError {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one configuration, in document order. Never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<FieldError>);

impl ConfigErrors {
    /// The problems, in the order they were found.
    pub fn errors(&self) -> &[FieldError] {
        &self.0
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(f, "{n} problem{}:", if n == 1 { "" } else { "s" })?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

/// Collects problems while a document is read, validated and compiled, so that all of them are
/// reported at once.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    list: Vec<FieldError>,
}

impl Problems {
    /// How many problems were found so far.
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    pub(crate) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.list.push(FieldError::new(path, message));
    }

    /// Whether a problem was already reported at `path` or at one of its parents. Checks that
    /// build on a field skip it then, so that one mistake is reported once, not as a cascade.
    pub(crate) fn covers(&self, path: &str) -> bool {
        self.list.iter().any(|e| {
            path.starts_with(e.path.as_str()) && matches!(path.as_bytes().get(e.path.len()), None | Some(b'.' | b'['))
        })
    }

    /// Adds the problems of `later` checks that are not under a path already reported: a field
    /// that could not be read is reported once, not again by every check that builds on it.
    pub(crate) fn add_uncovered(&mut self, later: Problems) {
        for e in later.list {
            if !self.covers(&e.path) {
                self.list.push(e);
            }
        }
    }

    /// The problems as an error, for a caller that knows something failed.
    pub(crate) fn into_errors(mut self) -> ConfigErrors {
        if self.list.is_empty() {
            self.push("", "the document could not be read");
        }
        ConfigErrors(self.list)
    }

    pub(crate) fn into_result<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.list.is_empty() {
            Ok(value)
        } else {
            Err(ConfigErrors(self.list))
        }
    }
}
