//! The module contract.
//!
//! A module is a pure planner. It never touches a host. The engine hands it a task's arguments,
//! checked against its parameter table, and the module turns them into its typed request
//! ([`Module::request`], once per task and host, before any host is contacted: every argument
//! error surfaces at validation). From the request it names what it needs to see
//! ([`Module::probes`], usually the probes of typed [`Fact`]s); from the request and what the
//! engine observed it computes a [`Plan`]: the changes (with before/after text for `--diff`),
//! the [`Action`]s that make them, and whether a reboot is needed. The engine batches the probes
//! of many tasks into one remote invocation and applies actions in as few as it can, so a run
//! that changes nothing costs one round trip per host, check mode is free, and every planner is
//! unit-testable with no host at all.
//!
//! How to write one is in the README ("Writing a module"); `modules/system/service.rs` is the
//! worked example.

mod error;
pub mod fact;
mod observed;

pub use error::{ArgError, ArgErrorKind, ModuleError};
pub use fact::Fact;
pub use observed::*;

use crate::params::{Args, ParamSpec};
use serde_json::{Map, Value};
use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
        /// A command that checks the new content before it replaces the old file: `%s` in it is
        /// the staged file's path (a temporary file next to the target, so a service's own
        /// checker reads it where its confinement allows). A non-zero exit leaves the old file
        /// untouched and fails the task with the command's output.
        validate: Option<String>,
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
            validate: None,
        }
    }
    /// This write checked by `cmd` before it replaces anything (see [`Action::WriteFile`]).
    pub fn validated(mut self, cmd: impl Into<String>) -> Self {
        if let Action::WriteFile { validate, .. } = &mut self {
            *validate = Some(cmd.into());
        }
        self
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
    /// Values for `register` that only exist once the actions have run (a key generated on the
    /// host): each `(key, n)` registers the stdout of the plan's action `n`, a command, without
    /// its trailing newline, under `key`, in place of `data[key]` (which is what check mode,
    /// where nothing runs, reports). See [`Plan::data_from`].
    pub data_from_output: Vec<(String, usize)>,
    /// A human message for the result line.
    pub msg: Option<String>,
    /// The actions change the host's networking: apply them guarded (see [`NetworkGuard`]).
    pub guard: Option<NetworkGuard>,
    /// The plan reboots the host: the engine applies what is pending, triggers the reboot and
    /// waits for the host to come back (see [`Reboot`]).
    pub reboot: Option<Reboot>,
}

/// A reboot the engine carries out: run `trigger` (which must return at once, leaving the
/// reboot to happen a moment later so the SSH command ends cleanly), close the connection, wait
/// until a new connection finds a `/proc/sys/kernel/random/boot_id` other than `boot_id`, then
/// run `test_command` there and check that /proc/cmdline has every word of `verify_cmdline`.
/// Any of that failing within `timeout` seconds fails the task.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reboot {
    pub trigger: String,
    pub boot_id: String,
    pub timeout: u64,
    pub test_command: Option<String>,
    pub verify_cmdline: Vec<String>,
}

/// How to undo a network change. A plan carrying one is applied by the engine with a safety
/// net: everything the actions write or remove (and `also_saves`) is saved on the host, a
/// rollback is armed there that survives the SSH session dying, the actions run, and a NEW
/// connection from the controller must then confirm the host (plus the task's `verify:`
/// command). Unconfirmed within the task's `rollback_timeout`, the host restores the saved
/// files, deletes the devices the change created and runs `reapply`; the task fails saying so.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkGuard {
    /// Shell command that makes the restored configuration live again (`netplan apply`,
    /// `nmcli connection reload && nmcli connection up 'Wired connection 1'`, ...).
    pub reapply: String,
    /// Network devices the change creates (`br0`, `vxlan0`): a rollback deletes those that did
    /// not exist before the change.
    pub creates_devices: Vec<String>,
    /// Files changed other than by the plan's own file actions (a tool that writes its own
    /// configuration), saved and restored like them.
    pub also_saves: Vec<String>,
}

impl NetworkGuard {
    /// Every path the guarded plan may change: the file actions' and `also_saves`.
    pub fn saved_paths(&self, actions: &[Action]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in actions
            .iter()
            .filter_map(Action::path)
            .chain(self.also_saves.iter().map(String::as_str))
        {
            if !out.iter().any(|o| o == p) {
                out.push(p.to_string());
            }
        }
        out
    }
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
    /// Add a command whose output is registered under `key` once it has run (see
    /// [`Plan::data_from_output`]).
    pub fn data_from(&mut self, key: &str, cmd: impl Into<String>) {
        self.data_from_output
            .push((key.to_string(), self.actions.len()));
        self.actions.push(Action::run(cmd));
    }
}

/// What a module may use, beyond its arguments, to build its request on the controller.
#[derive(Debug, Clone, Default)]
pub struct PlanContext {
    /// Directory of the playbook: relative `src` paths resolve against it (then `files/` and
    /// `templates/` inside it).
    pub playbook_dir: PathBuf,
    /// The task's variables, for modules that render templates themselves.
    /// Shared with the executor's copy: a task's context can be large (`groups` lists every host).
    pub vars: Arc<Value>,
    /// Variables that exist later in the run but not yet (`facts` before they are gathered,
    /// results not yet registered). A module rendering its own template that refers to one of
    /// these still builds its request, marked with [`Module::waits_for`], so its probes can be
    /// observed early.
    pub pending: std::collections::BTreeSet<String>,
}

/// A built-in module: a stateless unit struct registered in `modules/mod.rs`.
pub trait Module: Sync + Send + 'static {
    /// The task's arguments as the module works with them: typed fields, choices as enums, paths
    /// checked, templates rendered. Built once per task and host by [`Module::request`].
    type Request: Send + Sync + 'static;

    fn spec(&self) -> &'static ModuleSpec;

    /// Turn arguments (already checked against [`ModuleSpec::params`]: names, types, defaults)
    /// into a request, checking what the table cannot: combinations, formats, controller-side
    /// files. Runs before any host is contacted, so every `Err` here is reported by validation.
    /// Typically `let req: Request = args.parse()?;` then checks.
    fn request(&self, args: Args, ctx: &PlanContext) -> Result<Self::Request, ModuleError>;

    /// What must be observed for this request (see [`Fact::probe`]).
    fn probes(&self, req: &Self::Request) -> Vec<Probe>;

    /// From the request and the observed state, what to do.
    fn plan(&self, req: &Self::Request, observed: &Observed) -> Result<Plan, ModuleError>;

    /// The variable this request still waits for, if it was built before that variable exists
    /// (a template referring to `facts` before they are gathered, see [`PlanContext::pending`]).
    /// Such a request is only used for its probes, which the engine observes early with the
    /// first round trip; the task is rendered again for real when it runs. Never planned.
    fn waits_for<'r>(&self, req: &'r Self::Request) -> Option<&'r str> {
        let _ = req;
        None
    }

    /// Controller-side files this task renders as templates, from its arguments as written
    /// (before rendering). The engine looks into them for the variables a play uses (`facts`,
    /// `groups`) to decide what to provide. `None`: they cannot be known before rendering, so
    /// assume they use everything.
    fn rendered_files(
        &self,
        raw_args: &Map<String, Value>,
        playbook_dir: &Path,
    ) -> Option<Vec<PathBuf>> {
        let _ = (raw_args, playbook_dir);
        Some(Vec::new())
    }
}

/// A module's request with its type erased, as the engine carries it between
/// [`DynModule::request`] and [`DynModule::plan`]. Cheap to clone.
#[derive(Clone)]
pub struct Request(Arc<dyn Any + Send + Sync>);

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Request(..)")
    }
}

/// [`Module`] as the engine sees it: the same calls with the request type erased, so modules of
/// different request types live in one registry.
pub trait DynModule: Sync + Send {
    fn spec(&self) -> &'static ModuleSpec;
    fn request(&self, args: Args, ctx: &PlanContext) -> Result<Request, ModuleError>;
    fn probes(&self, req: &Request) -> Vec<Probe>;
    fn plan(&self, req: &Request, observed: &Observed) -> Result<Plan, ModuleError>;
    fn waits_for<'r>(&self, req: &'r Request) -> Option<&'r str>;
    fn rendered_files(
        &self,
        raw_args: &Map<String, Value>,
        playbook_dir: &Path,
    ) -> Option<Vec<PathBuf>>;
}

impl<M: Module> DynModule for M {
    fn spec(&self) -> &'static ModuleSpec {
        Module::spec(self)
    }
    fn request(&self, args: Args, ctx: &PlanContext) -> Result<Request, ModuleError> {
        Ok(Request(Arc::new(Module::request(self, args, ctx)?)))
    }
    fn probes(&self, req: &Request) -> Vec<Probe> {
        Module::probes(self, typed::<M>(req))
    }
    fn plan(&self, req: &Request, observed: &Observed) -> Result<Plan, ModuleError> {
        Module::plan(self, typed::<M>(req), observed)
    }
    fn waits_for<'r>(&self, req: &'r Request) -> Option<&'r str> {
        Module::waits_for(self, typed::<M>(req))
    }
    fn rendered_files(
        &self,
        raw_args: &Map<String, Value>,
        playbook_dir: &Path,
    ) -> Option<Vec<PathBuf>> {
        Module::rendered_files(self, raw_args, playbook_dir)
    }
}

fn typed<M: Module>(req: &Request) -> &M::Request {
    req.0
        .downcast_ref::<M::Request>()
        .expect("a request is only handed back to the module that made it")
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
