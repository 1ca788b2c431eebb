//! Why a module cannot plan, with kinds a caller (and a test) can tell apart.

/// Why a module cannot plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModuleError {
    /// The arguments do not make a valid request (found by [`Module::request`](super::Module),
    /// before any host is contacted).
    #[error(transparent)]
    Args(#[from] ArgError),
    /// The host is not in a state the module can work with.
    #[error("{0}")]
    Host(String),
    /// A probe failed on the host, or a fact could not be parsed from what it printed.
    #[error("could not observe {0}")]
    Observe(String),
    /// A template the module renders refers to something undefined (or is malformed). A
    /// variable that only appears later in the run (facts, registered results) is not an error:
    /// the request waits for it (see [`Module::waits_for`](super::Module::waits_for)).
    #[error("template {file}: {error}")]
    Template {
        file: String,
        error: crate::template::TemplateError,
    },
    /// A bug: the planner read something it did not declare as a probe.
    #[error("internal error: {0} was not observed")]
    NotObserved(String),
    /// A bug: the module's typed request does not match its parameter table.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Arguments that are valid one by one (the parameter table checked their names and types) but
/// do not make a request the module can carry out. The message is for the user; the kind and
/// the parameter are for callers and tests, so a test can assert *which* check fired.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct ArgError {
    pub kind: ArgErrorKind,
    /// The parameter the error is about (empty for [`ArgErrorKind::NothingToDo`]).
    pub param: &'static str,
    pub msg: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgErrorKind {
    /// The parameter's value is not acceptable (a relative path, a malformed name, a bad
    /// regular expression, an out-of-range number).
    Invalid,
    /// The parameter cannot be given together with another one (or with its value).
    Conflict { with: &'static str },
    /// The parameter needs another one that is missing.
    Requires { other: &'static str },
    /// The arguments ask for nothing.
    NothingToDo,
}

impl ArgError {
    pub fn invalid(param: &'static str, msg: impl Into<String>) -> Self {
        ArgError {
            kind: ArgErrorKind::Invalid,
            param,
            msg: msg.into(),
        }
    }
    pub fn conflict(param: &'static str, with: &'static str, msg: impl Into<String>) -> Self {
        ArgError {
            kind: ArgErrorKind::Conflict { with },
            param,
            msg: msg.into(),
        }
    }
    pub fn requires(param: &'static str, other: &'static str, msg: impl Into<String>) -> Self {
        ArgError {
            kind: ArgErrorKind::Requires { other },
            param,
            msg: msg.into(),
        }
    }
    pub fn nothing_to_do(msg: impl Into<String>) -> Self {
        ArgError {
            kind: ArgErrorKind::NothingToDo,
            param: "",
            msg: msg.into(),
        }
    }
}

impl ModuleError {
    /// The argument error, if this is one (tests: `err.arg().unwrap().param`).
    pub fn arg(&self) -> Option<&ArgError> {
        match self {
            ModuleError::Args(a) => Some(a),
            _ => None,
        }
    }
}
