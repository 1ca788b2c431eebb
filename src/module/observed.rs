//! What planners see of a host: probes, what they observed, and the cache of both.

use super::fact::Fact;
use super::ModuleError;
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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

/// All observations available to a planner, keyed by probe, with the typed [`Fact`]s parsed from
/// them. A fact is parsed at most once per observation however many tasks ask for it; dropping or
/// replacing an observation drops what was parsed from it.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    map: HashMap<Probe, Entry>,
    run: RunState,
}

/// What this run has done on the host so far, as the engine knows it (no probe reads it): set
/// before each plan, kept when observations are dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunState {
    /// An earlier task on this host in this run reported `reboot_required`, and no reboot has
    /// happened since.
    pub reboot_required: bool,
}

/// One observation and the facts parsed from it so far.
#[derive(Debug)]
struct Entry {
    seen: Observation,
    parsed: Mutex<Vec<(TypeId, Arc<dyn Any + Send + Sync>)>>,
}

impl Entry {
    fn new(seen: Observation) -> Self {
        Entry {
            seen,
            parsed: Mutex::default(),
        }
    }
    fn seen(&self) -> &Observation {
        &self.seen
    }
}

impl Clone for Entry {
    fn clone(&self) -> Self {
        Entry {
            seen: self.seen.clone(),
            parsed: Mutex::new(
                self.parsed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
            ),
        }
    }
}

impl Observed {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn insert(&mut self, probe: Probe, obs: Observation) {
        self.map.insert(probe, Entry::new(obs));
    }
    pub fn get(&self, probe: &Probe) -> Option<&Observation> {
        self.map.get(probe).map(Entry::seen)
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
    /// What this run has done on the host so far.
    pub fn run(&self) -> RunState {
        self.run
    }
    pub fn set_run(&mut self, run: RunState) {
        self.run = run;
    }
    /// Keep only the observations for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&Probe, &Observation) -> bool) {
        self.map.retain(|p, e| keep(p, e.seen()));
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
        match self.get(&Probe::File(path.to_string())) {
            Some(Observation::File(f)) => Ok(f),
            Some(Observation::Error(e)) => Err(ModuleError::Observe(format!("{path}: {e}"))),
            _ => Err(ModuleError::NotObserved(format!("file {path}"))),
        }
    }
    /// The output of a command the planner declared as a probe.
    pub fn command(&self, cmd: &str) -> Result<&CommandOutput, ModuleError> {
        match self.get(&Probe::Command(cmd.to_string())) {
            Some(Observation::Command(c)) => Ok(c),
            Some(Observation::Error(e)) => Err(ModuleError::Observe(format!("`{cmd}`: {e}"))),
            _ => Err(ModuleError::NotObserved(format!("command `{cmd}`"))),
        }
    }

    /// The typed fact `F` for `key`, parsed from its observation the first time it is asked for.
    /// The planner must have declared `F::probe(key)` among its probes.
    pub fn fact<F: Fact>(&self, key: &F::Key) -> Result<Arc<F>, ModuleError> {
        let probe = F::probe(key);
        let Some(entry) = self.map.get(&probe) else {
            return Err(ModuleError::NotObserved(format!(
                "{} ({})",
                F::NAME,
                describe_probe(&probe)
            )));
        };
        let mut parsed = entry.parsed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, f)) = parsed.iter().find(|(t, _)| *t == TypeId::of::<F>()) {
            return Ok(Arc::clone(f)
                .downcast::<F>()
                .expect("stored under its own type"));
        }
        let fact = match entry.seen() {
            Observation::Error(e) => {
                return Err(ModuleError::Observe(format!(
                    "{}: {e}",
                    describe_probe(&probe)
                )))
            }
            // The probe ran but the host is not as the fact expects (no systemd, a tool
            // missing): a host state, which check mode forgives after earlier changes.
            seen => Arc::new(F::parse(key, seen).map_err(ModuleError::Host)?),
        };
        parsed.push((TypeId::of::<F>(), fact.clone()));
        Ok(fact)
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
    /// Builder for planner tests: what `F::probe(key)` printed on a host (e.g. a fixture).
    pub fn with_fact<F: Fact>(mut self, key: &F::Key, seen: Observation) -> Self {
        self.insert(F::probe(key), seen);
        self
    }
}

fn describe_probe(p: &Probe) -> String {
    match p {
        Probe::File(f) => format!("file {f}"),
        Probe::Command(c) => format!("command `{c}`"),
    }
}
