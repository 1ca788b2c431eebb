//! Errors in what the user gave us: all of them are found before any host is contacted and
//! end the run with exit code 1.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A YAML syntax or structure error, already formatted as `file:line:column: message`.
    #[error("{0}")]
    Yaml(String),
    #[error("{}: {}", .0.display(), .1)]
    Io(PathBuf, String),
    #[error("inventory: {0}")]
    Inventory(String),
    #[error("host pattern: {0}")]
    Pattern(String),
    /// A playbook problem found after parsing (undefined variable, bad arguments), with the
    /// play, task and host it concerns.
    #[error("{0}")]
    Playbook(String),
    /// Several problems found by validation, one per line.
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
    #[error("{0}")]
    Usage(String),
}

/// Format a serde_yaml error as `file:line:column: message`.
pub fn yaml_error(path: &Path, e: &serde_yaml::Error) -> Error {
    let msg = e.to_string();
    // serde_yaml appends " at line L column C" to the message; the location goes in front.
    let msg = match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg,
    };
    match e.location() {
        Some(l) => Error::Yaml(format!(
            "{}:{}:{}: {msg}",
            path.display(),
            l.line(),
            l.column()
        )),
        None => Error::Yaml(format!("{}: {msg}", path.display())),
    }
}
