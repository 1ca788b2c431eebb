//! Runs plays on hosts.
//!
//! Each host runs its own task list independently (no lockstep), up to `forks` hosts at once.
//! Round trips are the cost that matters, so per host the executor:
//! - renders as many upcoming tasks as it can (stopping at one that needs a result registered by
//!   an earlier task, or facts not yet gathered) and observes all their probes, plus facts, in
//!   ONE remote invocation;
//! - plans each task from those observations without touching the host;
//! - applies a task's actions in one invocation that also re-observes whatever later tasks
//!   need and the actions may have changed.
//!
//! A run that changes nothing therefore costs about one invocation per host, and check mode is
//! the same run without the applies.

use crate::connection::{self, Become, Connection, ConnectionError};
use crate::error::Error;
use crate::inventory::{self, Host, Inventory};
use crate::module::{Action, ModuleError, Observation, Observed, Plan, PlanContext, Probe};
use crate::output::{Event, HostStats, Reporter, Status, TaskResult};
use crate::params::Args;
use crate::playbook::{Play, Playbook, Task};
use crate::remote::{ActionOutcome, Script};
use crate::template::{self, TemplateError};
use crate::vars::{Layers, Unresolved};
use rayon::prelude::*;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// How a run behaves (from the command line).
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub check: bool,
    pub diff: bool,
    pub limit: Option<String>,
    pub tags: Vec<String>,
    pub skip_tags: Vec<String>,
    pub extra_vars: Map<String, Value>,
    pub forks: usize,
    pub verbose: u8,
    pub become_: Become,
    pub connect: connection::ConnectOptions,
}

/// Exit codes, documented in the README.
pub mod exit {
    pub const OK: i32 = 0;
    pub const INVALID: i32 = 1;
    pub const FAILED: i32 = 2;
    pub const UNREACHABLE: i32 = 4;
    pub const CHANGED: i32 = 8;
    pub const INTERRUPTED: i32 = 130;
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub stats: BTreeMap<String, HostStats>,
    pub interrupted: bool,
}

impl Summary {
    /// The process exit code: 130 when interrupted; else 2 for failed tasks, 4 for unreachable
    /// hosts (OR-ed), else 0 — or 8 with `detailed` when something changed (or, in check mode,
    /// would change).
    pub fn exit_code(&self, detailed: bool) -> i32 {
        let mut code = 0;
        if self.stats.values().any(|s| s.failed > 0) {
            code |= exit::FAILED;
        }
        if self.stats.values().any(|s| s.unreachable > 0) {
            code |= exit::UNREACHABLE;
        }
        if self.interrupted {
            return exit::INTERRUPTED;
        }
        if code == 0 && detailed && self.stats.values().any(|s| s.changed > 0) {
            code = exit::CHANGED;
        }
        code
    }
}

/// A play with the hosts it will run on.
pub struct PlayTarget<'a> {
    pub play: &'a Play,
    pub hosts: Vec<Host>,
    pub vars_files: Map<String, Value>,
}

fn magic(host: &Host, inv: &Inventory) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("inventory_hostname".into(), json!(host.name));
    m.insert(
        "group_names".into(),
        json!(host
            .groups
            .iter()
            .filter(|g| *g != "all")
            .collect::<Vec<_>>()),
    );
    let groups: Map<String, Value> = inv
        .groups
        .keys()
        .map(|g| {
            let members: Vec<&str> = inv
                .hosts
                .iter()
                .filter(|h| h.groups.contains(g))
                .map(|h| h.name.as_str())
                .collect();
            (g.clone(), json!(members))
        })
        .collect();
    m.insert("groups".into(), Value::Object(groups));
    m
}

/// Does the task run under the requested tags?
fn tags_select(task_tags: &[String], play_tags: &[String], opts: &Options) -> bool {
    let tags: Vec<&str> = task_tags
        .iter()
        .chain(play_tags)
        .map(String::as_str)
        .collect();
    if opts.skip_tags.iter().any(|s| tags.contains(&s.as_str())) {
        return false;
    }
    if tags.contains(&"never") && !opts.tags.iter().any(|t| tags.contains(&t.as_str())) {
        return false;
    }
    if opts.tags.is_empty() || opts.tags.iter().any(|t| t == "all") || tags.contains(&"always") {
        return true;
    }
    opts.tags.iter().any(|t| tags.contains(&t.as_str()))
}

/// One host's view of one task, ready to plan.
#[derive(Debug, Clone)]
struct Item {
    label: Option<String>,
    item: Option<Value>,
    skip: bool,
    args: Args,
    probes: Vec<Probe>,
    ctx: PlanContext,
    vars: Value,
}

#[derive(Debug, Clone)]
enum Prepared {
    Items(Vec<Item>),
    /// An error that fails the task when it is reached.
    Failed(String),
}

/// Render a task for one host. `Err(name)` when it depends on something pending.
/// With `speculative`, a condition that waits for something pending counts as true: the task's
/// probes are wanted early, and the condition is evaluated for real when the task runs.
fn prepare(
    task: &Task,
    layers: &Layers,
    pending: &BTreeSet<String>,
    speculative: bool,
    playbook_dir: &std::path::Path,
) -> Result<Prepared, String> {
    let fail = |e: Unresolved| match e {
        Unresolved::Pending(p) => Err(p),
        Unresolved::Error(e) => Ok(Prepared::Failed(e.to_string())),
    };
    let base = match layers.context(&task.vars, None, pending) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let items: Vec<Option<Value>> = match &task.loop_ {
        None => vec![None],
        Some(l) => match template::render_value(l, &base) {
            Ok(Value::Array(a)) => a.into_iter().map(Some).collect(),
            Ok(Value::Null) => Vec::new(),
            Ok(other) => {
                return Ok(Prepared::Failed(format!(
                    "loop must be a list, got {}",
                    serde_json::to_string(&other).unwrap_or_default()
                )))
            }
            Err(e) => return fail(Unresolved::from(e, pending)),
        },
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let vars = match &item {
            None => base.clone(),
            Some(v) => {
                let mut c = base.clone();
                c[task.loop_var.as_str()] = v.clone();
                c
            }
        };
        let label = item.as_ref().map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        let render_err = |e: TemplateError| fail(Unresolved::from(e, pending));
        let skip = match &task.when {
            None => false,
            Some(w) => match template::condition(w, &vars) {
                Ok(b) => !b,
                Err(e) => match Unresolved::from(e, pending) {
                    Unresolved::Pending(_) if speculative => false,
                    other => return fail(other),
                },
            },
        };
        let ctx = PlanContext {
            playbook_dir: playbook_dir.to_path_buf(),
            vars: vars.clone(),
            pending: pending.clone(),
        };
        if skip {
            out.push(Item {
                label,
                item,
                skip,
                args: Args::default(),
                probes: Vec::new(),
                ctx,
                vars,
            });
            continue;
        }
        let raw = match template::render_value(&task.args, &vars) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Ok(Prepared::Failed("arguments must be a mapping".into())),
            Err(e) => return render_err(e),
        };
        let spec = task.module.spec();
        let args = match Args::validate(spec.params, &raw) {
            Ok(a) => a,
            Err(e) => return Ok(Prepared::Failed(format!("module `{}`: {e}", spec.name))),
        };
        let probes = match task.module.probes(&args, &ctx) {
            Ok(p) => p,
            Err(ModuleError::Template { error, .. })
                if error.undefined_root().is_some_and(|r| pending.contains(r)) =>
            {
                return Err(error.undefined_root().unwrap_or_default().to_string())
            }
            Err(e) => return Ok(Prepared::Failed(format!("module `{}`: {e}", spec.name))),
        };
        out.push(Item {
            label,
            item,
            skip,
            args,
            probes,
            ctx,
            vars,
        });
    }
    Ok(Prepared::Items(out))
}

/// Load a play's `vars_files` (relative to the playbook).
fn load_vars_files(play: &Play, pb: &Playbook) -> Result<Map<String, Value>, Error> {
    let mut m = Map::new();
    for f in &play.vars_files {
        let p = pb.dir.join(f);
        m.extend(inventory::load_vars_file(&p)?);
    }
    Ok(m)
}

/// Resolve every play's hosts and check every task for every host, contacting no host:
/// unknown variables, bad argument values and impossible argument combinations are all found
/// here. Facts and registered results are not known yet; templates needing them are checked
/// when they run.
pub fn validate<'a>(
    pb: &'a Playbook,
    inv: &Inventory,
    opts: &Options,
) -> Result<Vec<PlayTarget<'a>>, Error> {
    let limit: Option<HashSet<String>> = match &opts.limit {
        Some(l) => Some(inv.select(l)?.into_iter().map(|h| h.name).collect()),
        None => None,
    };
    let mut targets = Vec::new();
    let mut problems: Vec<(String, Vec<String>)> = Vec::new();
    let mut registers: BTreeSet<String> = BTreeSet::new();
    for play in &pb.plays {
        let mut hosts = inv
            .select(&play.hosts)
            .map_err(|e| Error::Playbook(format!("play `{}`: {e}", play.name)))?;
        if let Some(l) = &limit {
            hosts.retain(|h| l.contains(&h.name));
        }
        let vars_files = load_vars_files(play, pb)?;
        for t in play.tasks.iter().chain(&play.handlers) {
            if let Some(r) = &t.register {
                registers.insert(r.clone());
            }
        }
        let mut pending = registers.clone();
        pending.insert("facts".into());
        for host in &hosts {
            if let Err(e) = host.connection() {
                problems.push((e.to_string(), vec![host.name.clone()]));
                continue;
            }
            let layers = Layers {
                inventory: host.vars.clone(),
                facts: None,
                play: play.vars.clone(),
                vars_files: vars_files.clone(),
                registered: Map::new(),
                extra: opts.extra_vars.clone(),
                magic: magic(host, inv),
            };
            for t in play.tasks.iter().chain(&play.handlers) {
                if let Ok(Prepared::Failed(msg)) = prepare(t, &layers, &pending, false, &pb.dir) {
                    let key = format!("play `{}`, task `{}`: {msg}", play.name, t.display_name());
                    match problems.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, hs)) => hs.push(host.name.clone()),
                        None => problems.push((key, vec![host.name.clone()])),
                    }
                }
            }
        }
        targets.push(PlayTarget {
            play,
            hosts,
            vars_files,
        });
    }
    if !problems.is_empty() {
        return Err(Error::Invalid(
            problems
                .into_iter()
                .map(|(msg, hosts)| {
                    let shown: Vec<&str> = hosts.iter().take(5).map(String::as_str).collect();
                    let more = if hosts.len() > 5 {
                        format!(" and {} more", hosts.len() - 5)
                    } else {
                        String::new()
                    };
                    let (head, tail) = msg.split_once(": ").unwrap_or((&msg, ""));
                    let label = if hosts.len() == 1 { "host" } else { "hosts" };
                    format!(
                        "{}: {head}, {label} {}{more}: {tail}",
                        pb.path.display(),
                        shown.join(", ")
                    )
                })
                .collect(),
        ));
    }
    Ok(targets)
}

/// Per-host state that lives across plays.
struct HostState {
    host: Host,
    conn: Option<Box<dyn Connection>>,
    facts: Option<Value>,
    registered: Map<String, Value>,
    stats: HostStats,
    /// Failed or unreachable: takes no further part in the run.
    out: bool,
}

impl HostState {
    fn connection(&mut self, opts: &Options) -> Result<&mut Box<dyn Connection>, ConnectionError> {
        if self.conn.is_none() {
            let spec = self
                .host
                .connection()
                .map_err(|e| ConnectionError::Unreachable(e.to_string()))?;
            self.conn = Some(connection::connect(
                &self.host.name,
                &spec,
                &opts.become_,
                &opts.connect,
            )?);
        }
        Ok(self.conn.as_mut().expect("just set"))
    }
}

/// Everything shared by the hosts of a run.
struct Shared<'a> {
    pb: &'a Playbook,
    opts: &'a Options,
    reporter: &'a dyn Reporter,
    /// Set by `any_errors_fatal`: no host starts another task.
    abort: AtomicBool,
    /// Hosts that finished the current play, and how many it has.
    hosts_done: std::sync::atomic::AtomicUsize,
    hosts_total: std::sync::atomic::AtomicUsize,
    interrupted: &'a AtomicBool,
}

/// Run a validated playbook.
pub fn run(
    pb: &Playbook,
    inv: &Inventory,
    opts: &Options,
    reporter: &dyn Reporter,
    interrupted: &AtomicBool,
) -> Result<Summary, Error> {
    let targets = validate(pb, inv, opts)?;
    let mut states: BTreeMap<String, Mutex<HostState>> = BTreeMap::new();
    let shared = Shared {
        pb,
        opts,
        reporter,
        abort: AtomicBool::new(false),
        hosts_done: Default::default(),
        hosts_total: Default::default(),
        interrupted,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.forks.max(1))
        .build()
        .map_err(|e| Error::Usage(format!("cannot start workers: {e}")))?;
    for target in &targets {
        let names: Vec<String> = target.hosts.iter().map(|h| h.name.clone()).collect();
        reporter.report(&Event::Play {
            name: &target.play.name,
            hosts: &names,
            check: opts.check,
        });
        for h in &target.hosts {
            states.entry(h.name.clone()).or_insert_with(|| {
                Mutex::new(HostState {
                    host: h.clone(),
                    conn: None,
                    facts: None,
                    registered: Map::new(),
                    stats: HostStats::default(),
                    out: false,
                })
            });
        }
        let active: Vec<&Mutex<HostState>> = target
            .hosts
            .iter()
            .map(|h| &states[&h.name])
            .filter(|s| !s.lock().unwrap().out)
            .collect();
        shared.hosts_done.store(0, Ordering::SeqCst);
        shared.hosts_total.store(active.len(), Ordering::SeqCst);
        let mut start = 0;
        let mut batch_no = 0;
        while start < active.len() {
            if shared.abort.load(Ordering::SeqCst) || interrupted.load(Ordering::SeqCst) {
                break;
            }
            let size = match target.play.serial.as_slice() {
                [] => active.len(),
                s => s[batch_no.min(s.len() - 1)].size(active.len()),
            };
            let batch = &active[start..(start + size).min(active.len())];
            pool.install(|| {
                batch.par_iter().for_each(|st| {
                    let mut st = st.lock().unwrap_or_else(|e| e.into_inner());
                    HostPlay::new(&shared, target, inv, &mut st).run();
                    shared.hosts_done.fetch_add(1, Ordering::SeqCst);
                })
            });
            let failed = batch.iter().filter(|s| s.lock().unwrap().out).count();
            if let Some(max) = target.play.max_fail_percentage {
                if failed as f64 * 100.0 / batch.len() as f64 > max {
                    shared.abort.store(true, Ordering::SeqCst);
                }
            }
            start += size;
            batch_no += 1;
        }
        if shared.abort.load(Ordering::SeqCst) || interrupted.load(Ordering::SeqCst) {
            break;
        }
    }
    let stats = states
        .into_iter()
        .map(|(name, st)| {
            let st = st.into_inner().unwrap_or_else(|e| e.into_inner());
            let mut stats = st.stats;
            stats.invocations = st.conn.as_ref().map_or(0, |c| c.invocations());
            (name, stats)
        })
        .collect();
    Ok(Summary {
        stats,
        interrupted: interrupted.load(Ordering::SeqCst),
    })
}

/// The result of one task item before it is reported.
struct Outcome {
    status: Status,
    plan: Plan,
    msg: Option<String>,
    command: Option<crate::module::CommandOutput>,
    detail: Vec<String>,
}

/// One host running one play.
struct HostPlay<'s, 'a> {
    shared: &'s Shared<'a>,
    play: &'a Play,
    state: &'s mut HostState,
    layers: Layers,
    cache: Observed,
    become_default: bool,
    /// Check mode found a change on this host in this play: later tasks may depend on it.
    would_change: bool,
}

impl<'s, 'a> HostPlay<'s, 'a> {
    fn new(
        shared: &'s Shared<'a>,
        target: &'a PlayTarget<'a>,
        inv: &Inventory,
        state: &'s mut HostState,
    ) -> Self {
        let layers = Layers {
            inventory: state.host.vars.clone(),
            facts: state.facts.clone(),
            play: target.play.vars.clone(),
            vars_files: target.vars_files.clone(),
            registered: state.registered.clone(),
            extra: shared.opts.extra_vars.clone(),
            magic: magic(&state.host, inv),
        };
        let become_default = state
            .host
            .connection()
            .ok()
            .and_then(|c| c.become_)
            .unwrap_or(false);
        HostPlay {
            shared,
            play: target.play,
            state,
            layers,
            cache: Observed::new(),
            become_default,
            would_change: false,
        }
    }

    fn stopped(&self) -> bool {
        self.state.out
            || self.shared.abort.load(Ordering::SeqCst)
            || self.shared.interrupted.load(Ordering::SeqCst)
    }

    fn run(mut self) {
        if self.state.out {
            return;
        }
        let tasks: Vec<&Task> = self
            .play
            .tasks
            .iter()
            .filter(|t| tags_select(&t.tags, &self.play.tags, self.shared.opts))
            .collect();
        let notified = self.run_tasks(&tasks);
        if self.stopped() {
            return;
        }
        let handlers: Vec<&Task> = self
            .play
            .handlers
            .iter()
            .filter(|h| {
                h.name.as_ref().is_some_and(|n| notified.contains(n))
                    || h.listen.iter().any(|l| notified.contains(l))
            })
            .collect();
        if !handlers.is_empty() {
            self.run_tasks(&handlers);
        }
    }

    fn become_for(&self, task: &Task) -> bool {
        task.become_
            .or(self.play.become_)
            .unwrap_or(self.become_default)
    }

    /// Run tasks in order; returns the handler names they notified.
    ///
    /// Observation runs ahead of execution: [`Self::speculate_from`] collects the probes of as
    /// many upcoming tasks as it can and observes them together. Execution then renders each task
    /// for real with everything known by then, and observes only what speculation missed.
    fn run_tasks(&mut self, tasks: &[&Task]) -> BTreeSet<String> {
        let mut notified = BTreeSet::new();
        let mut speculated: Vec<Option<Vec<Probe>>> = vec![None; tasks.len()];
        for i in 0..tasks.len() {
            if self.stopped() {
                break;
            }
            if speculated[i].is_none() {
                if let Err(e) = self.speculate_from(tasks, &mut speculated, i) {
                    self.connection_failed(tasks[i], e);
                    break;
                }
            }
            self.shared.reporter.report(&Event::Progress {
                host: &self.state.host.name,
                task: &tasks[i].display_name(),
                done: self.shared.hosts_done.load(Ordering::SeqCst),
                total: self.shared.hosts_total.load(Ordering::SeqCst),
            });
            let prepared = prepare(
                tasks[i],
                &self.layers,
                &BTreeSet::new(),
                false,
                &self.shared.pb.dir,
            )
            .unwrap_or_else(|p| Prepared::Failed(format!("`{p}` is not available")));
            let later: Vec<Probe> = speculated[i + 1..]
                .iter()
                .flatten()
                .flatten()
                .cloned()
                .collect();
            if self.execute(tasks[i], prepared, &later) {
                notified.extend(tasks[i].notify.iter().cloned());
            }
        }
        notified
    }

    fn need_facts(&self) -> bool {
        self.play.gather_facts && self.state.facts.is_none()
    }

    /// Collect the probes of tasks from `i` on (until `become` changes) and observe them, with
    /// facts if still needed, in one invocation. A task whose condition waits for facts or a
    /// registered result still contributes its probes (a wasted read at worst); one whose
    /// arguments wait contributes none and is observed when it runs.
    fn speculate_from(
        &mut self,
        tasks: &[&Task],
        speculated: &mut [Option<Vec<Probe>>],
        i: usize,
    ) -> Result<(), ConnectionError> {
        let mut pending: BTreeSet<String> = tasks[i..]
            .iter()
            .filter_map(|t| t.register.clone())
            .collect();
        if self.need_facts() {
            pending.insert("facts".into());
        }
        let become_ = self.become_for(tasks[i]);
        for k in i..tasks.len() {
            if self.become_for(tasks[k]) != become_ {
                break;
            }
            let probes = match prepare(tasks[k], &self.layers, &pending, true, &self.shared.pb.dir)
            {
                Ok(Prepared::Items(items)) => items.into_iter().flat_map(|it| it.probes).collect(),
                _ => Vec::new(),
            };
            speculated[k] = Some(probes);
        }
        let wanted = self.missing_probes(speculated[i..].iter().flatten().flatten());
        let facts = self.need_facts();
        if facts || !wanted.is_empty() {
            self.observe(wanted, facts, become_)?;
        }
        Ok(())
    }

    /// Probes not in the cache, without duplicates.
    fn missing_probes<'p>(&self, probes: impl IntoIterator<Item = &'p Probe>) -> Vec<Probe> {
        let mut seen = HashSet::new();
        probes
            .into_iter()
            .filter(|p| !self.cache.contains(p) && seen.insert((*p).clone()))
            .cloned()
            .collect()
    }

    fn observe(
        &mut self,
        probes: Vec<Probe>,
        facts: bool,
        become_: bool,
    ) -> Result<(), ConnectionError> {
        let script = Script {
            actions: Vec::new(),
            probes,
            facts,
            become_,
        };
        let opts = self.shared.opts;
        let report = self.state.connection(opts)?.execute(&script)?;
        self.absorb(&script, report.observations, report.facts);
        Ok(())
    }

    fn absorb(
        &mut self,
        script: &Script,
        observations: Vec<Observation>,
        facts: Option<crate::facts::Facts>,
    ) {
        for (p, o) in script.probes.iter().zip(observations) {
            self.cache.insert(p.clone(), o);
        }
        if let Some(f) = facts {
            let v = serde_json::to_value(f).unwrap_or(Value::Null);
            self.state.facts = Some(v.clone());
            self.layers.facts = Some(v);
        }
    }

    fn connection_failed(&mut self, task: &Task, e: ConnectionError) {
        let unreachable = matches!(
            e,
            ConnectionError::Unreachable(_) | ConnectionError::Timeout(_)
        );
        let status = if unreachable {
            Status::Unreachable
        } else {
            Status::Failed
        };
        self.report(
            task,
            None,
            status,
            &Plan::ok(),
            Some(e.to_string()),
            Vec::new(),
            false,
            std::time::Duration::ZERO,
        );
        if unreachable {
            self.state.stats.unreachable += 1;
        } else {
            self.state.stats.failed += 1;
        }
        self.state.out = true;
        if self.play.any_errors_fatal {
            self.shared.abort.store(true, Ordering::SeqCst);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn report(
        &self,
        task: &Task,
        label: Option<String>,
        status: Status,
        plan: &Plan,
        msg: Option<String>,
        detail: Vec<String>,
        ignored: bool,
        duration: std::time::Duration,
    ) {
        let censored = task.no_log;
        let r = TaskResult {
            host: self.state.host.name.clone(),
            task: task.display_name(),
            item: if censored {
                label.map(|_| "(censored)".into())
            } else {
                label
            },
            status,
            ignored,
            changes: if censored {
                plan.changes
                    .iter()
                    .map(|_| crate::module::Change::new("(censored: no_log)"))
                    .collect()
            } else {
                plan.changes.clone()
            },
            msg: if censored {
                msg.map(|_| "(censored: no_log)".into())
            } else {
                msg
            },
            reboot_required: plan.reboot_required,
            duration,
            detail: if censored { Vec::new() } else { detail },
            censored,
        };
        self.shared.reporter.report(&Event::Result(&r));
    }

    /// Execute one task. Returns whether it changed something.
    fn execute(&mut self, task: &Task, prepared: Prepared, later: &[Probe]) -> bool {
        let started = Instant::now();
        let items = match prepared {
            Prepared::Failed(msg) => {
                self.finish(task, Some(msg), started);
                return false;
            }
            Prepared::Items(items) => items,
        };
        if items.is_empty() {
            self.finish(task, None, started);
            return false;
        }
        let mut results = Vec::with_capacity(items.len());
        for (n, item) in items.iter().enumerate() {
            let outcome = if item.skip {
                Outcome {
                    status: Status::Skipped,
                    plan: Plan::ok(),
                    msg: Some("condition false".into()),
                    command: None,
                    detail: Vec::new(),
                }
            } else {
                // What later items of this task and later tasks will want to see.
                let after: Vec<Probe> = items[n + 1..]
                    .iter()
                    .flat_map(|it| it.probes.iter().cloned())
                    .chain(later.iter().cloned())
                    .collect();
                self.run_item(task, item, &after)
            };
            results.push((item, outcome));
            if self.state.out {
                break;
            }
        }
        self.finish_items(task, results, started)
    }

    fn run_item(&mut self, task: &Task, item: &Item, later: &[Probe]) -> Outcome {
        let become_ = self.become_for(task);
        let failed = |msg: String| Outcome {
            status: Status::Failed,
            plan: Plan::ok(),
            msg: Some(msg),
            command: None,
            detail: Vec::new(),
        };
        // What speculation could not know, or an earlier change invalidated: observe it, with
        // whatever later tasks are missing too.
        if item.probes.iter().any(|p| !self.cache.contains(p)) {
            let wanted = self.missing_probes(item.probes.iter().chain(later));
            if let Err(e) = self.observe(wanted, false, become_) {
                return self.connection_outcome(e);
            }
        }
        let plan = match task.module.plan(&item.args, &self.cache, &item.ctx) {
            Ok(p) => p,
            // In check mode earlier changes were not made, so a host state they would have
            // created (a package's unit or group) cannot be checked yet: say so, don't fail.
            Err(e @ ModuleError::Host(_)) if self.shared.opts.check && self.would_change => {
                return Outcome {
                    status: Status::Skipped,
                    plan: Plan::ok(),
                    msg: Some(format!(
                        "cannot be checked before earlier changes are made: {e}"
                    )),
                    command: None,
                    detail: Vec::new(),
                }
            }
            Err(e) => return failed(format!("module `{}`: {e}", task.module.spec().name)),
        };
        let mut detail = Vec::new();
        if !plan.changed() {
            return Outcome {
                status: Status::Ok,
                msg: plan.msg.clone(),
                plan,
                command: None,
                detail,
            };
        }
        if self.shared.opts.check {
            let status = if plan.runs_unconditionally {
                Status::Skipped
            } else {
                Status::Changed
            };
            let msg = if plan.runs_unconditionally {
                Some("not run in check mode".into())
            } else {
                plan.msg.clone()
            };
            return Outcome {
                status,
                msg,
                plan,
                command: None,
                detail,
            };
        }
        // Apply, and in the same invocation re-observe what later tasks need and this may change.
        let mut after = self.cache.clone();
        for a in &plan.actions {
            match a.path() {
                Some(path) => after.invalidate_path(path),
                None => after.clear(),
            }
        }
        let reobserve: Vec<Probe> = {
            let saved = std::mem::replace(&mut self.cache, after);
            let wanted = self.missing_probes(later);
            let after = std::mem::replace(&mut self.cache, saved);
            self.cache = after;
            wanted
        };
        let script = Script {
            actions: plan.actions.clone(),
            probes: reobserve,
            facts: false,
            become_,
        };
        for a in &plan.actions {
            detail.push(describe(a));
        }
        let opts = self.shared.opts;
        let report = match self.state.connection(opts).and_then(|c| c.execute(&script)) {
            Ok(r) => r,
            Err(e) => return self.connection_outcome(e),
        };
        let mut command = None;
        let mut error = None;
        for (a, o) in plan.actions.iter().zip(&report.actions) {
            match o {
                ActionOutcome::Done => {}
                ActionOutcome::Ran(c) => {
                    if c.rc != 0 {
                        error = Some(format!(
                            "command failed with exit code {}: {}",
                            c.rc,
                            first_line(&c.stderr)
                                .unwrap_or_else(|| first_line(&c.stdout).unwrap_or_default())
                        ));
                    }
                    command = Some(c.clone());
                }
                ActionOutcome::Failed(m) => {
                    error = Some(format!("{}: {}", describe(a), m.trim()));
                }
                ActionOutcome::NotRun => {
                    if error.is_none() {
                        error = Some(format!(
                            "{}: the host stopped before this action",
                            describe(a)
                        ));
                    }
                }
            }
        }
        if report.complete {
            self.absorb(&script, report.observations, None);
        }
        Outcome {
            status: if error.is_some() {
                Status::Failed
            } else {
                Status::Changed
            },
            msg: error.or_else(|| plan.msg.clone()),
            plan,
            command,
            detail,
        }
    }

    fn connection_outcome(&mut self, e: ConnectionError) -> Outcome {
        let unreachable = matches!(
            e,
            ConnectionError::Unreachable(_) | ConnectionError::Timeout(_)
        );
        if unreachable {
            self.state.out = true;
        }
        // Ctrl-C also reaches the ssh processes of invocations in flight: that is the
        // interruption, not the host going away. Their writes were atomic: nothing half-done.
        if self.shared.interrupted.load(Ordering::SeqCst) {
            self.state.out = true;
            return Outcome {
                status: Status::Failed,
                plan: Plan::ok(),
                msg: Some(format!("interrupted ({e})")),
                command: None,
                detail: Vec::new(),
            };
        }
        Outcome {
            status: if unreachable {
                Status::Unreachable
            } else {
                Status::Failed
            },
            plan: Plan::ok(),
            msg: Some(e.to_string()),
            command: None,
            detail: Vec::new(),
        }
    }

    /// Report a task that produced no items (failed before planning, or an empty loop).
    fn finish(&mut self, task: &Task, msg: Option<String>, started: Instant) {
        let status = if msg.is_some() {
            Status::Failed
        } else {
            Status::Skipped
        };
        let failed = status == Status::Failed;
        let ignored = failed && task.ignore_errors;
        self.report(
            task,
            None,
            status,
            &Plan::ok(),
            msg.clone().or(Some("empty loop".into())),
            Vec::new(),
            ignored,
            started.elapsed(),
        );
        self.count(status, ignored, false);
        let mut result = json!({"changed": false, "failed": failed, "skipped": !failed});
        if let Some(m) = msg {
            result["msg"] = json!(m);
        }
        self.register(task, result);
        if failed && !ignored {
            self.host_failed();
        }
    }

    fn count(&mut self, status: Status, ignored: bool, reboot: bool) {
        let s = &mut self.state.stats;
        match status {
            Status::Ok => s.ok += 1,
            Status::Changed => s.changed += 1,
            Status::Skipped => s.skipped += 1,
            Status::Failed if ignored => s.ignored += 1,
            Status::Failed => s.failed += 1,
            Status::Unreachable => s.unreachable += 1,
        }
        s.reboot_required |= reboot;
    }

    fn host_failed(&mut self) {
        self.state.out = true;
        if self.play.any_errors_fatal {
            self.shared.abort.store(true, Ordering::SeqCst);
        }
    }

    fn register(&mut self, task: &Task, value: Value) {
        if let Some(r) = &task.register {
            self.state.registered.insert(r.clone(), value.clone());
            self.layers.registered.insert(r.clone(), value);
        }
    }

    /// Evaluate changed_when/failed_when, report each item, register, and count.
    fn finish_items(
        &mut self,
        task: &Task,
        results: Vec<(&Item, Outcome)>,
        started: Instant,
    ) -> bool {
        let mut any_changed = false;
        let mut any_failed = false;
        let mut all_skipped = true;
        let mut registered = Vec::new();
        let n = results.len();
        for (item, mut o) in results {
            let mut value = result_value(&o);
            if let Some(v) = &item.item {
                value["item"] = v.clone();
            }
            if o.status != Status::Skipped && o.status != Status::Unreachable {
                let mut vars = item.vars.clone();
                vars["result"] = value.clone();
                if let Some(r) = &task.register {
                    vars[r.as_str()] = value.clone();
                }
                if let Some(cw) = &task.changed_when {
                    match template::condition(cw, &vars) {
                        Ok(true) if o.status == Status::Ok => o.status = Status::Changed,
                        Ok(false) if o.status == Status::Changed => o.status = Status::Ok,
                        Ok(_) => {}
                        Err(e) => {
                            o.status = Status::Failed;
                            o.msg = Some(format!("changed_when: {e}"));
                        }
                    }
                }
                if let Some(fw) = &task.failed_when {
                    match template::condition(fw, &vars) {
                        Ok(true) => {
                            if o.status != Status::Failed {
                                o.msg = Some("failed_when condition is true".into());
                            }
                            o.status = Status::Failed
                        }
                        Ok(false) if o.status == Status::Failed && o.command.is_some() => {
                            o.status = if o.plan.changed() {
                                Status::Changed
                            } else {
                                Status::Ok
                            };
                        }
                        Ok(_) => {}
                        Err(e) => {
                            o.status = Status::Failed;
                            o.msg = Some(format!("failed_when: {e}"));
                        }
                    }
                }
                value["changed"] = json!(o.status == Status::Changed);
                value["failed"] = json!(o.status == Status::Failed);
            }
            let ignored = o.status == Status::Failed && task.ignore_errors;
            let duration = if n == 1 {
                started.elapsed()
            } else {
                std::time::Duration::ZERO
            };
            let reboot = o.plan.reboot_required;
            self.report(
                task,
                item.label.clone(),
                o.status,
                &o.plan,
                o.msg.clone(),
                o.detail.clone(),
                ignored,
                duration,
            );
            self.count(o.status, ignored, reboot);
            any_changed |= o.status == Status::Changed;
            self.would_change |= self.shared.opts.check && o.status == Status::Changed;
            any_failed |= o.status == Status::Failed && !ignored;
            all_skipped &= o.status == Status::Skipped;
            if o.status == Status::Unreachable {
                self.state.out = true;
            }
            registered.push(value);
        }
        let value = if task.loop_.is_some() {
            json!({"changed": any_changed, "failed": any_failed, "skipped": all_skipped, "results": registered})
        } else {
            registered.pop().unwrap_or(Value::Null)
        };
        self.register(task, value);
        if any_failed {
            self.host_failed();
        }
        any_changed
    }
}

fn first_line(s: &str) -> Option<String> {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
}

/// The registered value of one task item.
fn result_value(o: &Outcome) -> Value {
    let mut v = json!({
        "changed": o.status == Status::Changed,
        "failed": o.status == Status::Failed,
        "skipped": o.status == Status::Skipped,
        "reboot_required": o.plan.reboot_required,
        "changes": o.plan.changes.iter().map(|c| c.summary.clone()).collect::<Vec<_>>(),
    });
    if let Some(m) = &o.msg {
        v["msg"] = json!(m);
    }
    if let Some(c) = &o.command {
        v["rc"] = json!(c.rc);
        v["stdout"] = json!(c.stdout.trim_end_matches('\n'));
        v["stderr"] = json!(c.stderr.trim_end_matches('\n'));
        v["stdout_lines"] = json!(c.stdout.lines().collect::<Vec<_>>());
        v["stderr_lines"] = json!(c.stderr.lines().collect::<Vec<_>>());
    }
    for (k, x) in &o.plan.data {
        v[k.as_str()] = x.clone();
    }
    v
}

/// A one-line description of an action for `-v` and error messages.
pub fn describe(a: &Action) -> String {
    match a {
        Action::WriteFile { path, content, .. } => {
            format!("write {path} ({} bytes)", content.len())
        }
        Action::SetAttrs { path, attrs } => format!("set attributes of {path} {attrs:?}"),
        Action::MakeDir { path, .. } => format!("mkdir -p {path}"),
        Action::Remove { path } => format!("remove {path}"),
        Action::Symlink { target, link } => format!("link {link} -> {target}"),
        Action::Run { cmd, chdir } => match chdir {
            Some(d) => format!("run (in {d}): {cmd}"),
            None => format!("run: {cmd}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        let mut s = Summary::default();
        s.stats.insert(
            "a".into(),
            HostStats {
                changed: 1,
                ..Default::default()
            },
        );
        assert_eq!(s.exit_code(false), 0);
        assert_eq!(s.exit_code(true), 8);
        s.stats.insert(
            "b".into(),
            HostStats {
                failed: 1,
                ..Default::default()
            },
        );
        assert_eq!(s.exit_code(true), 2);
        s.stats.insert(
            "c".into(),
            HostStats {
                unreachable: 1,
                ..Default::default()
            },
        );
        assert_eq!(s.exit_code(true), 6);
    }

    #[test]
    fn tag_selection() {
        let opts = |tags: &[&str], skip: &[&str]| Options {
            tags: tags.iter().map(|s| s.to_string()).collect(),
            skip_tags: skip.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(tags_select(&t(&["net"]), &[], &opts(&[], &[])));
        assert!(tags_select(&t(&["net"]), &[], &opts(&["net"], &[])));
        assert!(!tags_select(&t(&["grub"]), &[], &opts(&["net"], &[])));
        assert!(!tags_select(&t(&["net"]), &[], &opts(&[], &["net"])));
        assert!(tags_select(&t(&["always"]), &[], &opts(&["net"], &[])));
        assert!(!tags_select(&t(&["never"]), &[], &opts(&[], &[])));
        assert!(tags_select(
            &t(&["never", "debug"]),
            &[],
            &opts(&["debug"], &[])
        ));
        assert!(tags_select(&[], &t(&["net"]), &opts(&["net"], &[])));
    }
}
