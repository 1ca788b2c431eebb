//! The module contract.
//!
//! A module is a pure planner. It never touches a host. Given its validated arguments it names
//! what it needs to see ([`Probe`]s); given what the engine observed it computes a [`Plan`]: the
//! changes (with before/after text for `--diff`), the [`Action`]s that make them, and whether a
//! reboot is needed. The engine batches the probes of many tasks into one remote invocation and
//! applies actions in as few as it can, so a run that changes nothing costs one round trip per
//! host, check mode is free, and every planner is unit-testable with no host at all.

use crate::params::{Args, ParamSpec};
use std::collections::HashMap;

/// Static description of a module: what the engine validates against and `kvmforge doc` prints.
#[derive(Debug)]
pub struct ModuleSpec {
    pub name: &'static str,
    /// One line.
    pub summary: &'static str,
    /// A paragraph or two: behaviour a sysadmin must know (idempotence, what is compared).
    pub description: &'static str,
    pub params: &'static [ParamSpec],
    /// When the task gives a plain string instead of a mapping (`command: ls -l`), it is the
    /// value of this parameter.
    pub free_form: Option<&'static str>,
    /// A YAML task using the module.
    pub example: &'static str,
}

/// Something a planner needs to see on the host. Equal probes from different tasks are
/// observed once.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Probe {
    /// Type, mode, owner, group and (for regular files up to [`MAX_CONTENT`]) the content of a
    /// path, following symlinks; the link target too when the path is a symlink.
    File(String),
    /// The exit code, stdout and stderr of a read-only shell command (run with `sh -c`, stdin
    /// from /dev/null). Must not change the host: it also runs in check mode.
    Command(String),
}

/// Files larger than this are observed without content (planners see `content: None`).
pub const MAX_CONTENT: u64 = 8 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Absent,
    File,
    Dir,
    /// Anything else that exists: device, socket, fifo, a dangling symlink.
    Other,
}

/// What a [`Probe::File`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    pub kind: FileKind,
    pub mode: u32,
    pub owner: String,
    pub group: String,
    pub size: u64,
    /// The target when the path itself is a symlink.
    pub link_target: Option<String>,
    /// Content of a regular file no larger than [`MAX_CONTENT`].
    pub content: Option<Vec<u8>>,
}

impl FileState {
    pub fn absent() -> Self {
        FileState {
            kind: FileKind::Absent,
            mode: 0,
            owner: String::new(),
            group: String::new(),
            size: 0,
            link_target: None,
            content: None,
        }
    }
    /// A regular file owned by root with mode 0644 (tests).
    pub fn file(content: impl Into<Vec<u8>>) -> Self {
        let content = content.into();
        FileState {
            kind: FileKind::File,
            mode: 0o644,
            owner: "root".into(),
            group: "root".into(),
            size: content.len() as u64,
            link_target: None,
            content: Some(content),
        }
    }
    /// A directory owned by root with mode 0755 (tests).
    pub fn dir() -> Self {
        FileState {
            kind: FileKind::Dir,
            mode: 0o755,
            ..FileState::file(Vec::new())
        }
        .without_content()
    }
    fn without_content(mut self) -> Self {
        self.content = None;
        self
    }
    pub fn with_mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }
    pub fn with_owner(mut self, owner: &str, group: &str) -> Self {
        self.owner = owner.into();
        self.group = group.into();
        self
    }
    pub fn exists(&self) -> bool {
        self.kind != FileKind::Absent
    }
    /// The content as text (lossy), or empty when absent.
    pub fn text(&self) -> String {
        self.content
            .as_deref()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .unwrap_or_default()
    }
}

/// What a [`Probe::Command`] saw.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandOutput {
    pub rc: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CommandOutput {
    pub fn ok(stdout: &str) -> Self {
        CommandOutput {
            rc: 0,
            stdout: stdout.into(),
            stderr: String::new(),
        }
    }
    pub fn failed(rc: i32, stderr: &str) -> Self {
        CommandOutput {
            rc,
            stdout: String::new(),
            stderr: stderr.into(),
        }
    }
}

/// What a probe observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    File(FileState),
    Command(CommandOutput),
    /// The probe itself failed (e.g. permission denied reading a file).
    Error(String),
}

/// All observations available to a planner, keyed by probe.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    map: HashMap<Probe, Observation>,
}

impl Observed {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn insert(&mut self, probe: Probe, obs: Observation) {
        self.map.insert(probe, obs);
    }
    pub fn get(&self, probe: &Probe) -> Option<&Observation> {
        self.map.get(probe)
    }
    pub fn remove(&mut self, probe: &Probe) {
        self.map.remove(probe);
    }
    pub fn contains(&self, probe: &Probe) -> bool {
        self.map.contains_key(probe)
    }
    pub fn clear(&mut self) {
        self.map.clear();
    }
    /// Keep only the observations for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&Probe, &Observation) -> bool) {
        self.map.retain(|p, o| keep(p, o));
    }
    /// Forget every observation a write to `path` may have changed.
    pub fn invalidate_path(&mut self, path: &str) {
        self.map.retain(|p, _| match p {
            Probe::File(f) => {
                f != path && !f.starts_with(&format!("{}/", path.trim_end_matches('/')))
            }
            Probe::Command(_) => false,
        });
    }
    /// The state of a file the planner declared as a probe.
    pub fn file(&self, path: &str) -> Result<&FileState, ModuleError> {
        match self.map.get(&Probe::File(path.to_string())) {
            Some(Observation::File(f)) => Ok(f),
            Some(Observation::Error(e)) => Err(ModuleError::Observe(format!("{path}: {e}"))),
            _ => Err(ModuleError::NotObserved(format!("file {path}"))),
        }
    }
    /// The output of a command the planner declared as a probe.
    pub fn command(&self, cmd: &str) -> Result<&CommandOutput, ModuleError> {
        match self.map.get(&Probe::Command(cmd.to_string())) {
            Some(Observation::Command(c)) => Ok(c),
            Some(Observation::Error(e)) => Err(ModuleError::Observe(format!("`{cmd}`: {e}"))),
            _ => Err(ModuleError::NotObserved(format!("command `{cmd}`"))),
        }
    }

    /// Builder for planner tests: `Observed::new().with_file("/etc/x", FileState::file("a"))`.
    pub fn with_file(mut self, path: &str, state: FileState) -> Self {
        self.insert(Probe::File(path.into()), Observation::File(state));
        self
    }
    pub fn with_command(mut self, cmd: &str, out: CommandOutput) -> Self {
        self.insert(Probe::Command(cmd.into()), Observation::Command(out));
        self
    }
}

/// A before/after pair for `--diff`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diff {
    /// What is compared, usually a path.
    pub label: String,
    pub before: String,
    pub after: String,
}

/// One change a task makes, described for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub summary: String,
    pub diff: Option<Diff>,
}

impl Change {
    pub fn new(summary: impl Into<String>) -> Self {
        Change {
            summary: summary.into(),
            diff: None,
        }
    }
    pub fn with_diff(
        mut self,
        label: &str,
        before: impl Into<String>,
        after: impl Into<String>,
    ) -> Self {
        self.diff = Some(Diff {
            label: label.into(),
            before: before.into(),
            after: after.into(),
        });
        self
    }
}

/// Ownership and permissions to set; `None` keeps what is there (or the default for new paths).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attrs {
    pub mode: Option<u32>,
    pub owner: Option<String>,
    pub group: Option<String>,
}

impl Attrs {
    pub fn from_args(args: &Args) -> Self {
        Attrs {
            mode: args.mode("mode"),
            owner: args.str("owner").map(str::to_string),
            group: args.str("group").map(str::to_string),
        }
    }
    /// The changes needed to bring an existing path's attributes to these.
    pub fn differences(&self, state: &FileState) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(m) = self.mode {
            if state.mode != m {
                out.push(format!("mode {:04o} -> {:04o}", state.mode, m));
            }
        }
        if let Some(o) = &self.owner {
            if &state.owner != o {
                out.push(format!("owner {} -> {}", state.owner, o));
            }
        }
        if let Some(g) = &self.group {
            if &state.group != g {
                out.push(format!("group {} -> {}", state.group, g));
            }
        }
        out
    }
}

/// An operation the engine performs on the host. File writes are atomic: a temporary file in the
/// same directory, then rename; an existing file's mode and owner are kept unless given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    WriteFile {
        path: String,
        content: Vec<u8>,
        attrs: Attrs,
        /// Copy the old file to `PATH.YYYYMMDDTHHMMSS~` first.
        backup: bool,
    },
    SetAttrs {
        path: String,
        attrs: Attrs,
    },
    /// `mkdir -p`, then attributes on the last component.
    MakeDir {
        path: String,
        attrs: Attrs,
    },
    /// Remove a file, symlink or directory tree.
    Remove {
        path: String,
    },
    /// Create or replace a symlink at `link` pointing to `target`.
    Symlink {
        target: String,
        link: String,
    },
    /// Run a shell command (`sh -c`); a non-zero exit fails the task.
    Run {
        cmd: String,
        chdir: Option<String>,
    },
}

impl Action {
    pub fn run(cmd: impl Into<String>) -> Self {
        Action::Run {
            cmd: cmd.into(),
            chdir: None,
        }
    }
    pub fn write(path: &str, content: impl Into<Vec<u8>>, attrs: Attrs, backup: bool) -> Self {
        Action::WriteFile {
            path: path.into(),
            content: content.into(),
            attrs,
            backup,
        }
    }
    /// The path this action modifies, if it is a file-system action.
    pub fn path(&self) -> Option<&str> {
        match self {
            Action::WriteFile { path, .. }
            | Action::SetAttrs { path, .. }
            | Action::MakeDir { path, .. }
            | Action::Remove { path } => Some(path),
            Action::Symlink { link, .. } => Some(link),
            Action::Run { .. } => None,
        }
    }
}

/// What a module decided.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Empty means the host is already as asked: `ok`.
    pub changes: Vec<Change>,
    /// What makes the changes, in order.
    pub actions: Vec<Action>,
    /// The change only takes effect after a reboot (e.g. a kernel argument not in /proc/cmdline).
    pub reboot_required: bool,
    /// Handlers to notify when this plan changes something, beyond the task's own `notify`.
    pub notify: Vec<String>,
    /// The outcome cannot be known without running it (a plain `command`): check mode reports
    /// the task as skipped instead of guessing.
    pub runs_unconditionally: bool,
    /// Extra values for `register` (merged into the task result).
    pub data: serde_json::Map<String, serde_json::Value>,
    /// A human message for the result line.
    pub msg: Option<String>,
}

impl Plan {
    pub fn ok() -> Self {
        Plan::default()
    }
    pub fn changed(&self) -> bool {
        !self.changes.is_empty()
    }
    /// Add a change with the actions that make it.
    pub fn change(&mut self, change: Change, actions: impl IntoIterator<Item = Action>) {
        self.changes.push(change);
        self.actions.extend(actions);
    }
    pub fn with_data(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.data.insert(key.into(), value.into());
        self
    }
}

/// Why a module cannot plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModuleError {
    /// The arguments are valid individually but not together (checked before any host is
    /// contacted, through [`Module::probes`]).
    #[error("{0}")]
    Args(String),
    /// The host is not in a state the module can work with.
    #[error("{0}")]
    Host(String),
    #[error("could not observe {0}")]
    Observe(String),
    /// A template the module renders refers to something undefined (or is malformed). The
    /// engine retries when the variable is one that appears later (facts, registered results).
    #[error("template {file}: {error}")]
    Template {
        file: String,
        error: crate::template::TemplateError,
    },
    /// A bug: the planner read something it did not declare as a probe.
    #[error("internal error: {0} was not observed")]
    NotObserved(String),
}

/// Context a planner may need beyond its arguments.
#[derive(Debug, Clone, Default)]
pub struct PlanContext {
    /// Directory of the playbook: relative `src` paths resolve against it (then `files/` and
    /// `templates/` inside it).
    pub playbook_dir: std::path::PathBuf,
    /// The task's variables, for modules that render templates themselves.
    /// Shared with the executor's copy: a task's context can be large (`groups` lists every host).
    pub vars: std::sync::Arc<serde_json::Value>,
    /// Variables that exist later in the run but not yet (`facts` before they are gathered,
    /// results not yet registered). `probes()` of a module rendering its own template should
    /// still return its probes when rendering fails only for one of these.
    pub pending: std::collections::BTreeSet<String>,
}

/// A built-in module. Implementations are stateless unit structs registered in `modules/`.
pub trait Module: Sync + Send {
    fn spec(&self) -> &'static ModuleSpec;
    /// What must be observed. Also the place for cross-parameter validation: it runs before any
    /// host is contacted, so an `Err` here is reported at validation time.
    fn probes(&self, args: &Args, ctx: &PlanContext) -> Result<Vec<Probe>, ModuleError>;
    /// From the arguments and the observed state, what to do.
    fn plan(
        &self,
        args: &Args,
        observed: &Observed,
        ctx: &PlanContext,
    ) -> Result<Plan, ModuleError>;
}

/// Quote a string for a POSIX shell: the one way every module builds command lines, so quotes in
/// user data never break or inject into a command.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./_-".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_is_safe() {
        assert_eq!(shell_quote("abc"), "abc");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
    }

    #[test]
    fn invalidate_path_drops_file_and_children_and_all_commands() {
        let mut o = Observed::new()
            .with_file("/etc/a", FileState::file("x"))
            .with_file("/etc/a/b", FileState::file("x"))
            .with_file("/etc/ab", FileState::file("x"))
            .with_command("true", CommandOutput::ok(""));
        o.invalidate_path("/etc/a");
        assert!(!o.contains(&Probe::File("/etc/a".into())));
        assert!(!o.contains(&Probe::File("/etc/a/b".into())));
        assert!(o.contains(&Probe::File("/etc/ab".into())));
        assert!(!o.contains(&Probe::Command("true".into())));
    }
}
