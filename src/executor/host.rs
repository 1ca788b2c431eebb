//! One host running one play.
//!
//! Round trips are the cost that matters, so a host never talks to its machine just to apply one
//! task. Each task is rendered, planned from observations and, if it changes something, its
//! actions join a pending batch while the cache is updated with their predicted effect. The batch
//! goes out with the next observation the host needs anyway — or when a task's result is needed
//! (`register`, `changed_when`, `failed_when`, `ignore_errors`) — as one script: actions first,
//! then the probes. Results are reported in task order once their actions have run.

use super::guard;
use super::predict;
use super::prepare::{prepare, Item, Prepared};
use super::reboot;
use super::{PlayTarget, Shared};
use crate::connection::ConnectionError;
use crate::module::{
    Action, CommandOutput, ModuleError, NetworkGuard, Observed, Plan, Probe, Reboot, RunState,
};
use crate::output::{Event, Status, TaskResult};
use crate::playbook::{Play, Task};
use crate::remote::{ActionOutcome, Script};
use crate::template;
use crate::vars::Layers;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashSet};
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// The outcome of one task item.
struct Outcome {
    status: Status,
    plan: Plan,
    msg: Option<String>,
    command: Option<CommandOutput>,
    detail: Vec<String>,
    /// Its actions in the pending batch, not applied yet.
    unsettled: Option<Range<usize>>,
    /// Never ran: the host failed before it. Not reported.
    dropped: bool,
}

impl Outcome {
    fn new(status: Status, plan: Plan, msg: Option<String>) -> Self {
        Outcome {
            status,
            plan,
            msg,
            command: None,
            detail: Vec::new(),
            unsettled: None,
            dropped: false,
        }
    }
    fn dropped() -> Self {
        Outcome {
            dropped: true,
            ..Outcome::new(Status::Skipped, Plan::ok(), None)
        }
    }
}

/// A planned task waiting to be reported.
struct Queued<'a> {
    task: &'a Task,
    started: Instant,
    items: Vec<(Item, Outcome)>,
    /// Failed before planning any item (message), or an empty loop (`None`).
    early: Option<Option<String>>,
    /// Every item is planned.
    complete: bool,
}

pub(super) struct HostPlay<'s, 'a> {
    shared: &'s Shared<'a>,
    target: &'a PlayTarget<'a>,
    play: &'a Play,
    state: &'s mut super::HostState,
    layers: Layers,
    cache: Observed,
    become_default: bool,
    /// The login user is root.
    login_root: bool,
    /// Check mode found a change on this host in this play: later tasks may depend on it.
    would_change: bool,
    gather_facts: crate::facts::Wanted,
    /// Actions planned but not applied yet, all under `pending_become`.
    pending: Vec<Action>,
    pending_become: bool,
    queue: Vec<Queued<'a>>,
    notified: BTreeSet<String>,
    /// A task on this host reported `reboot_required` and no reboot has happened since.
    reboot_pending: bool,
}

impl<'s, 'a> HostPlay<'s, 'a> {
    pub(super) fn new(
        shared: &'s Shared<'a>,
        target: &'a PlayTarget<'a>,
        state: &'s mut super::HostState,
    ) -> Self {
        let layers = Layers {
            inventory: state.host.vars.clone(),
            facts: state.facts.clone(),
            play: target.play.vars.clone(),
            vars_files: target.vars_files.clone(),
            registered: state.registered.clone(),
            extra: shared.opts.extra_vars.clone(),
            magic: super::magic(
                &state.host,
                target.groups.as_ref(),
                shared
                    .hostvars
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref(),
            ),
        };
        let spec = state.host.connection().ok();
        let become_default = spec.as_ref().and_then(|c| c.become_).unwrap_or(false);
        let login_root = match &spec {
            Some(c) if c.kind == crate::inventory::ConnectionKind::Local => {
                nix::unistd::geteuid().is_root()
            }
            Some(c) => c.user.as_deref() == Some("root"),
            None => false,
        };
        let reboot_pending = state.stats.reboot_required;
        HostPlay {
            shared,
            target,
            play: target.play,
            state,
            layers,
            cache: Observed::new(),
            become_default,
            login_root,
            would_change: false,
            gather_facts: target.gather_facts,
            pending: Vec::new(),
            pending_become: false,
            queue: Vec::new(),
            notified: BTreeSet::new(),
            reboot_pending,
        }
    }

    fn stopped(&self) -> bool {
        self.state.out
            || self.shared.abort.load(Ordering::SeqCst)
            || self.shared.interrupted.load(Ordering::SeqCst)
    }

    pub(super) fn run(mut self) {
        if self.state.out {
            return;
        }
        let tasks: Vec<&'a Task> = self
            .play
            .tasks
            .iter()
            .filter(|t| super::tags_select(&t.tags, &self.play.tags, self.shared.opts))
            .collect();
        self.run_tasks(&tasks);
        if self.stopped() {
            return;
        }
        let notified = std::mem::take(&mut self.notified);
        let handlers: Vec<&'a Task> = self
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

    fn as_root(&self, become_: bool) -> bool {
        become_ || self.login_root
    }

    /// Run tasks in order, then apply and report whatever is still pending.
    fn run_tasks(&mut self, tasks: &[&'a Task]) {
        let mut speculated: Vec<Option<Vec<Probe>>> = vec![None; tasks.len()];
        for i in 0..tasks.len() {
            if self.stopped() {
                break;
            }
            if speculated[i].is_none() && !self.speculate_from(tasks, &mut speculated, i) {
                break;
            }
            self.shared.reporter.report(&Event::Progress {
                host: &self.state.host.name,
                task: &tasks[i].display_name(),
                done: self.shared.hosts_done.load(Ordering::SeqCst),
                total: self.shared.hosts_total.load(Ordering::SeqCst),
            });
            let later: Vec<Probe> = speculated[i + 1..]
                .iter()
                .flatten()
                .flatten()
                .cloned()
                .collect();
            self.run_task(tasks[i], &later);
        }
        self.flush(tasks.last().copied(), &[]);
    }

    /// Validation's final rendering of `task` for this host, if it has one.
    fn rendered(&self, task: &Task) -> Option<&'a Prepared> {
        self.target.rendered(&self.state.host.name, task)
    }

    fn need_facts(&self) -> bool {
        !self.gather_facts.is_empty() && self.state.facts.is_none()
    }

    /// Collect the probes of tasks from `i` on (until `become` changes) and observe them, with
    /// facts if still needed, in one invocation. A task whose condition waits for facts or a
    /// registered result still contributes its probes (a wasted read at worst); one whose
    /// arguments wait contributes none and is observed when it runs. Returns false when the host
    /// cannot go on.
    fn speculate_from(
        &mut self,
        tasks: &[&'a Task],
        speculated: &mut [Option<Vec<Probe>>],
        i: usize,
    ) -> bool {
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
            let probes = match self.rendered(tasks[k]) {
                Some(Prepared::Items(items)) => items
                    .iter()
                    .flat_map(|it| it.probes.iter().cloned())
                    .collect(),
                Some(Prepared::Failed(_) | Prepared::Unknown(_)) => Vec::new(),
                None => {
                    match prepare(tasks[k], &self.layers, &pending, true, &self.shared.pb.dir) {
                        Ok(Prepared::Items(items)) => {
                            items.into_iter().flat_map(|it| it.probes).collect()
                        }
                        _ => Vec::new(),
                    }
                }
            };
            speculated[k] = Some(probes);
        }
        let wanted = self.missing_probes(speculated[i..].iter().flatten().flatten());
        let facts = self.need_facts();
        if facts || !wanted.is_empty() {
            return self.exchange(wanted, facts, become_, tasks[i]);
        }
        true
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

    /// One round trip: the pending actions, then `probes` (and facts). Outcomes of the pending
    /// actions settle the queued tasks, which are reported. A connection failure is reported on
    /// the first task waiting for the trip, or on `blame`. Returns false when the host is out.
    fn exchange(&mut self, probes: Vec<Probe>, facts: bool, become_: bool, blame: &Task) -> bool {
        if !self.pending.is_empty() && self.pending_become != become_ {
            let own = self.pending_become;
            if !self.trip(Vec::new(), false, own, blame) {
                return false;
            }
        }
        self.trip(probes, facts, become_, blame)
    }

    fn trip(&mut self, probes: Vec<Probe>, facts: bool, become_: bool, blame: &Task) -> bool {
        if self.shared.interrupted.load(Ordering::SeqCst) {
            // After Ctrl-C nothing new starts: queued changes that have not gone out are dropped.
            self.pending.clear();
            for q in &mut self.queue {
                for (_, o) in &mut q.items {
                    if o.unsettled.is_some() {
                        *o = Outcome::dropped();
                    }
                }
            }
            self.report_ready();
            return false;
        }
        let script = Script {
            actions: std::mem::take(&mut self.pending),
            probes,
            facts: if facts {
                self.gather_facts
            } else {
                crate::facts::Wanted::NONE
            },
            become_,
        };
        if script.is_empty() {
            self.report_ready();
            return !self.state.out;
        }
        let opts = self.shared.opts;
        match self.state.connection(opts).and_then(|c| c.execute(&script)) {
            Err(e) => {
                self.cache.clear();
                if !self.settle_failed_trip(&e) {
                    self.connection_failed(blame, e);
                }
                self.state.out = true;
            }
            Ok(report) => {
                self.settle(&script.actions, &report.actions);
                if report.complete {
                    for (p, o) in script.probes.iter().zip(report.observations) {
                        self.cache.insert(p.clone(), o);
                    }
                    if let Some(f) = report.facts {
                        let v = serde_json::to_value(f).unwrap_or(Value::Null);
                        self.state.facts = Some(v.clone());
                        self.layers.facts = Some(v);
                    }
                } else {
                    // Something failed part-way: what the host looks like now is not known.
                    self.cache.clear();
                }
            }
        }
        self.report_ready();
        !self.state.out
    }

    /// Give each queued item whose actions just ran its outcome; drop what never ran because an
    /// earlier action failed.
    fn settle(&mut self, actions: &[Action], outcomes: &[ActionOutcome]) {
        let mut host_failed = false;
        for q in &mut self.queue {
            for (_, o) in &mut q.items {
                if host_failed {
                    *o = Outcome::dropped();
                    continue;
                }
                let Some(range) = o.unsettled.take() else {
                    continue;
                };
                let mut error = None;
                for (n, (a, r)) in actions[range.clone()]
                    .iter()
                    .zip(&outcomes[range])
                    .enumerate()
                {
                    match r {
                        ActionOutcome::Done => {}
                        ActionOutcome::Ran(c) => {
                            register_output(&mut o.plan, n, c);
                            if c.rc != 0 {
                                error = Some(format!(
                                    "command failed with exit code {}: {}",
                                    c.rc,
                                    last_line(&c.stderr)
                                        .or_else(|| last_line(&c.stdout))
                                        .unwrap_or_default()
                                ));
                            }
                            o.command = Some(c.clone());
                        }
                        ActionOutcome::Failed(m) => {
                            error.get_or_insert_with(|| format!("{}: {}", describe(a), m.trim()));
                        }
                        ActionOutcome::NotRun => {
                            // Nothing failed before it, yet it did not run: the host stopped.
                            error.get_or_insert_with(|| {
                                format!("{}: the host stopped before this action ran", describe(a))
                            });
                            break;
                        }
                    }
                }
                if let Some(e) = error {
                    o.status = Status::Failed;
                    o.msg = Some(e);
                    // A failed command may be forgiven by failed_when; anything later did not run.
                    host_failed = true;
                }
            }
        }
    }

    /// A trip failed on the connection: the first waiting item carries the error, the others
    /// never ran. Returns whether any item carried it.
    fn settle_failed_trip(&mut self, e: &ConnectionError) -> bool {
        let mut carried = false;
        let outcome = self.connection_outcome(e.clone());
        let mut outcome = Some(outcome);
        for q in &mut self.queue {
            for (_, o) in &mut q.items {
                if o.unsettled.take().is_some() {
                    match outcome.take() {
                        Some(c) => {
                            *o = c;
                            carried = true;
                        }
                        None => *o = Outcome::dropped(),
                    }
                } else if carried {
                    *o = Outcome::dropped();
                }
            }
        }
        carried
    }

    /// Apply what is pending (observing `later` in the same trip) and report everything queued.
    fn flush(&mut self, blame: Option<&Task>, later: &[Probe]) {
        if self.pending.is_empty() {
            self.report_ready();
            return;
        }
        let wanted = self.missing_probes(later);
        let become_ = self.pending_become;
        let blame = blame
            .or_else(|| self.queue.last().map(|q| q.task))
            .expect("pending actions belong to a task");
        self.exchange(wanted, false, become_, blame);
    }

    /// Render, observe if needed and plan one task, queueing its changes.
    fn run_task(&mut self, task: &'a Task, later: &[Probe]) {
        let started = Instant::now();
        let prepared = match self.rendered(task) {
            Some(p) => p.clone(),
            None => prepare(
                task,
                &self.layers,
                &BTreeSet::new(),
                false,
                &self.shared.pb.dir,
            )
            .unwrap_or_else(|p| Prepared::Failed(format!("`{p}` is not available"))),
        };
        let items = match prepared {
            Prepared::Unknown(msg) if self.shared.opts.check => {
                let skipped = Item {
                    label: None,
                    item: None,
                    skip: true,
                    request: None,
                    probes: Vec::new(),
                };
                let why = format!("cannot be checked before earlier changes are made: {msg}");
                self.queue.push(Queued {
                    task,
                    started,
                    items: vec![(
                        skipped,
                        Outcome::new(Status::Skipped, Plan::ok(), Some(why)),
                    )],
                    early: None,
                    complete: true,
                });
                self.report_ready();
                return;
            }
            Prepared::Failed(msg) | Prepared::Unknown(msg) => {
                self.queue.push(Queued {
                    task,
                    started,
                    items: Vec::new(),
                    early: Some(Some(msg)),
                    complete: true,
                });
                self.flush(Some(task), later);
                return;
            }
            Prepared::Items(items) if items.is_empty() => {
                self.queue.push(Queued {
                    task,
                    started,
                    items: Vec::new(),
                    early: Some(None),
                    complete: true,
                });
                self.report_ready();
                return;
            }
            Prepared::Items(items) => items,
        };
        self.queue.push(Queued {
            task,
            started,
            items: Vec::new(),
            early: None,
            complete: false,
        });
        let probes_after: Vec<Vec<Probe>> = (0..items.len())
            .map(|n| {
                items[n + 1..]
                    .iter()
                    .flat_map(|it| it.probes.iter().cloned())
                    .chain(later.iter().cloned())
                    .collect()
            })
            .collect();
        for (item, after) in items.into_iter().zip(probes_after) {
            let outcome = if item.skip {
                Outcome::new(Status::Skipped, Plan::ok(), Some("condition false".into()))
            } else {
                self.plan_item(task, &item, &after)
            };
            let stop = matches!(outcome.status, Status::Unreachable) || outcome.dropped;
            self.queue
                .last_mut()
                .expect("queued above")
                .items
                .push((item, outcome));
            if stop || self.state.out {
                break;
            }
        }
        self.queue.last_mut().expect("queued above").complete = true;
        let failed = self
            .queue
            .last()
            .is_some_and(|q| q.items.iter().any(|(_, o)| o.status == Status::Failed));
        let needs_result = task.register.is_some()
            || task.changed_when.is_some()
            || task.failed_when.is_some()
            || task.ignore_errors
            || self.play.any_errors_fatal;
        if failed || needs_result {
            self.flush(Some(task), later);
        } else {
            self.report_ready();
        }
    }

    fn plan_item(&mut self, task: &'a Task, item: &Item, after: &[Probe]) -> Outcome {
        let become_ = self.become_for(task);
        // What speculation could not know, or an earlier change made uncertain: observe it (with
        // the pending actions, and whatever later items are missing too).
        if item.probes.iter().any(|p| !self.cache.contains(p)) {
            let wanted = self.missing_probes(item.probes.iter().chain(after));
            if !self.exchange(wanted, false, become_, task) || self.stopped() {
                return Outcome::dropped();
            }
        }
        let request = item
            .request
            .as_ref()
            .expect("items that are not skipped have a request");
        self.cache.set_run(RunState {
            reboot_required: self.reboot_pending,
        });
        let plan = match task.module.plan(request, &self.cache) {
            Ok(p) => p,
            // In check mode earlier changes were not made, so a host state they would have
            // created (a package's unit or group) cannot be checked yet: say so, don't fail.
            Err(e @ ModuleError::Host(_)) if self.shared.opts.check && self.would_change => {
                return Outcome::new(
                    Status::Skipped,
                    Plan::ok(),
                    Some(format!(
                        "cannot be checked before earlier changes are made: {e}"
                    )),
                )
            }
            Err(e) => {
                return Outcome::new(
                    Status::Failed,
                    Plan::ok(),
                    Some(format!("module `{}`: {e}", task.module.spec().name)),
                )
            }
        };
        if plan.changed() && !self.shared.opts.check && self.needs_run_lock(become_) {
            // The first change on this host: take the run lock, observe again under it, and plan
            // again from that (see `remote::RunLock`).
            if !self.take_run_lock(task, item, after, become_) || self.stopped() {
                return Outcome::dropped();
            }
            return self.plan_item(task, item, after);
        }
        self.reboot_pending |= plan.reboot_required;
        if !plan.changed() {
            let msg = plan.msg.clone();
            return Outcome::new(Status::Ok, plan, msg);
        }
        if self.shared.opts.check {
            if plan.runs_unconditionally {
                return Outcome::new(Status::Skipped, plan, Some("not run in check mode".into()));
            }
            self.would_change = true;
            let mut msg = plan.msg.clone();
            if plan.guard.is_some() {
                let note = format!(
                    "a network change: would be applied with a rollback armed ({} s unless confirmed)",
                    task.rollback_timeout.unwrap_or(guard::DEFAULT_TIMEOUT)
                );
                msg = Some(match msg {
                    Some(m) => format!("{m}; {note}"),
                    None => note,
                });
            }
            return Outcome::new(Status::Changed, plan, msg);
        }
        if let Some(g) = plan.guard.clone() {
            return self.apply_guarded(task, item, plan, g, become_);
        }
        if let Some(r) = plan.reboot.clone() {
            return self.apply_reboot(task, plan, &r, become_);
        }
        if !self.pending.is_empty() && self.pending_become != become_ {
            let own = self.pending_become;
            if !self.trip(Vec::new(), false, own, task) {
                return Outcome::dropped();
            }
        }
        let start = self.pending.len();
        self.pending.extend(plan.actions.iter().cloned());
        self.pending_become = become_;
        let as_root = self.as_root(become_);
        predict::apply(&mut self.cache, &plan.actions, as_root);
        let msg = plan.msg.clone();
        let mut o = Outcome::new(Status::Changed, plan, msg);
        o.detail = o.plan.actions.iter().map(describe).collect();
        o.unsettled = Some(start..self.pending.len());
        o
    }

    /// The connection wants the run lock taken before a change with `become_`.
    fn needs_run_lock(&self, become_: bool) -> bool {
        self.state
            .conn
            .as_ref()
            .is_some_and(|c| c.needs_run_lock(become_))
    }

    /// Take the run lock for `become_` and observe, under it, what this item and the tasks
    /// after it need: nothing observed before the lock is planned from. Returns false when the
    /// host cannot go on.
    fn take_run_lock(&mut self, task: &Task, item: &Item, after: &[Probe], become_: bool) -> bool {
        if self.shared.interrupted.load(Ordering::SeqCst) {
            return false;
        }
        // Changes pending under the other privilege's lock go out first.
        if !self.pending.is_empty() {
            let own = self.pending_become;
            if !self.trip(Vec::new(), false, own, task) {
                return false;
            }
        }
        self.cache.clear();
        let script = Script {
            actions: Vec::new(),
            probes: self.missing_probes(item.probes.iter().chain(after)),
            facts: crate::facts::Wanted::NONE,
            become_,
        };
        let opts = self.shared.opts;
        match self
            .state
            .connection(opts)
            .and_then(|c| c.hold_lock(&script))
        {
            Ok(report) => {
                for (p, o) in script.probes.iter().zip(report.observations) {
                    self.cache.insert(p.clone(), o);
                }
                true
            }
            Err(e) => {
                self.connection_failed(task, e);
                false
            }
        }
    }

    /// A network change: applied on its own, with a rollback armed on the host, and confirmed
    /// over a new connection (see `guard`).
    fn apply_guarded(
        &mut self,
        task: &'a Task,
        item: &Item,
        plan: Plan,
        g: NetworkGuard,
        become_: bool,
    ) -> Outcome {
        // Earlier changes go out first: the rollback restores this change only.
        if !self.pending.is_empty() {
            let own = self.pending_become;
            if !self.trip(Vec::new(), false, own, task) {
                return Outcome::dropped();
            }
        }
        if !self.as_root(become_) {
            return Outcome::new(
                Status::Failed,
                plan,
                Some("a network change needs root: set `become: true`".into()),
            );
        }
        // `verify` and `confirm_address` may refer to variables, like module arguments.
        let render = |s: &Option<String>| -> Result<Option<String>, String> {
            let Some(s) = s else { return Ok(None) };
            if !crate::template::is_template(s) {
                return Ok(Some(s.clone()));
            }
            let item = item.item.as_ref().map(|v| (task.loop_var.as_str(), v));
            let ctx = self
                .layers
                .context(&task.vars, item, &BTreeSet::new())
                .map_err(|e| format!("{e:?}"))?;
            crate::template::render(s, &ctx)
                .map_err(|e| e.to_string())
                .map(Some)
        };
        let (verify, confirm_address) = match (render(&task.verify), render(&task.confirm_address))
        {
            (Ok(v), Ok(c)) => (v, c),
            (Err(e), _) | (_, Err(e)) => {
                return Outcome::new(
                    Status::Failed,
                    plan,
                    Some(format!("verify/confirm_address: {e}")),
                )
            }
        };
        let settings = guard::Settings {
            timeout: task.rollback_timeout.unwrap_or(guard::DEFAULT_TIMEOUT),
            verify: verify.as_deref(),
            confirm_address: confirm_address.as_deref(),
        };
        let result = guard::apply(
            self.state,
            self.shared.opts,
            &plan.actions,
            &g,
            &settings,
            become_,
        );
        // Whatever happened, what the host looks like now must be observed again.
        self.cache.clear();
        let mut detail: Vec<String> = plan.actions.iter().map(describe).collect();
        detail.extend(result.steps.iter().map(|s| format!("guard: {s}")));
        let (status, msg, report) = match result.result {
            guard::Guarded::Confirmed(r) => (Status::Changed, plan.msg.clone(), Some(r)),
            guard::Guarded::Failed { report, msg } => (Status::Failed, Some(msg), report),
            guard::Guarded::RolledBack(msg) => (Status::Failed, Some(msg), None),
            guard::Guarded::Lost(msg) => {
                self.state.out = true;
                (Status::Unreachable, Some(msg), None)
            }
        };
        let mut o = Outcome::new(status, plan, msg);
        o.detail = detail;
        if let Some(r) = report {
            // The actions' own outcomes: a failing command says why.
            for (n, out) in r.actions.iter().enumerate() {
                if let ActionOutcome::Ran(c) = out {
                    register_output(&mut o.plan, n, c);
                }
            }
            for (a, out) in o.plan.actions.iter().zip(&r.actions) {
                match out {
                    ActionOutcome::Ran(c) => {
                        if c.rc != 0 && o.status == Status::Changed {
                            o.status = Status::Failed;
                            o.msg = Some(format!("{}: exit code {}", describe(a), c.rc));
                        }
                        o.command = Some(c.clone());
                    }
                    ActionOutcome::Failed(m) if o.msg.is_none() => {
                        o.msg = Some(format!("{}: {}", describe(a), m.trim()))
                    }
                    _ => {}
                }
            }
        }
        o
    }

    /// A reboot: what is pending goes out first, then the host reboots and is waited for (see
    /// `reboot`).
    fn apply_reboot(&mut self, task: &'a Task, plan: Plan, r: &Reboot, become_: bool) -> Outcome {
        if !self.pending.is_empty() {
            let own = self.pending_become;
            if !self.trip(Vec::new(), false, own, task) {
                return Outcome::dropped();
            }
        }
        let result = reboot::apply(self.state, self.shared.opts, r, become_);
        // A new boot: nothing observed before it holds.
        self.cache.clear();
        let mut detail: Vec<String> = vec![format!("reboot: {}", r.trigger)];
        detail.extend(result.steps.iter().map(|s| format!("reboot: {s}")));
        let mut o = match result.result {
            Ok(msg) => {
                self.reboot_pending = false;
                Outcome::new(Status::Changed, plan, Some(msg))
            }
            Err(msg) => Outcome::new(Status::Failed, plan, Some(msg)),
        };
        o.detail = detail;
        o
    }

    fn connection_outcome(&mut self, e: ConnectionError) -> Outcome {
        let unreachable = e.is_unreachable();
        if unreachable {
            self.state.out = true;
        }
        // Ctrl-C also reaches the ssh processes of invocations in flight: that is the
        // interruption, not the host going away. Their writes were atomic: nothing half-done.
        if self.shared.interrupted.load(Ordering::SeqCst) {
            self.state.out = true;
            return Outcome::new(
                Status::Failed,
                Plan::ok(),
                Some(format!("interrupted ({e})")),
            );
        }
        let status = if unreachable {
            Status::Unreachable
        } else {
            Status::Failed
        };
        Outcome::new(status, Plan::ok(), Some(e.to_string()))
    }

    /// A failure no queued task carries: report it on `task`.
    fn connection_failed(&mut self, task: &Task, e: ConnectionError) {
        let o = self.connection_outcome(e);
        self.report(task, None, &o, false, std::time::Duration::ZERO);
        self.count(o.status, false, false);
        if o.status == Status::Failed {
            self.host_failed();
        }
        self.state.out = true;
    }

    /// Report, in order, every queued task whose items have all settled.
    fn report_ready(&mut self) {
        while self
            .queue
            .first()
            .is_some_and(|q| q.complete && q.items.iter().all(|(_, o)| o.unsettled.is_none()))
        {
            let q = self.queue.remove(0);
            self.finish(q);
        }
    }

    fn report(
        &self,
        task: &Task,
        label: Option<String>,
        o: &Outcome,
        ignored: bool,
        duration: std::time::Duration,
    ) {
        let censored = task.no_log;
        let hide = |s: Option<String>| {
            if censored {
                s.map(|_| "(censored: no_log)".to_string())
            } else {
                s
            }
        };
        let r = TaskResult {
            host: self.state.host.name.clone(),
            task: task.display_name(),
            item: if censored {
                label.map(|_| "(censored)".into())
            } else {
                label
            },
            status: o.status,
            ignored,
            changes: if censored {
                o.plan
                    .changes
                    .iter()
                    .map(|_| crate::module::Change::new("(censored: no_log)"))
                    .collect()
            } else {
                o.plan.changes.clone()
            },
            msg: hide(o.msg.clone()),
            reboot_required: o.plan.reboot_required,
            duration,
            detail: if censored {
                Vec::new()
            } else {
                o.detail.clone()
            },
            censored,
        };
        self.shared.reporter.report(&Event::Result(&r));
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

    /// Evaluate changed_when/failed_when, report each item, register, count, and collect the
    /// handlers to notify.
    fn finish(&mut self, q: Queued<'a>) {
        let task = q.task;
        if let Some(msg) = q.early {
            let failed = msg.is_some();
            let status = if failed {
                Status::Failed
            } else {
                Status::Skipped
            };
            let ignored = failed && task.ignore_errors;
            let o = Outcome::new(
                status,
                Plan::ok(),
                msg.clone().or(Some("empty loop".into())),
            );
            self.report(task, None, &o, ignored, q.started.elapsed());
            self.count(status, ignored, false);
            let mut result = json!({"changed": false, "failed": failed, "skipped": !failed});
            if let Some(m) = msg {
                result["msg"] = json!(m);
            }
            self.register(task, result);
            if failed && !ignored {
                self.host_failed();
            }
            return;
        }
        let mut any_changed = false;
        let mut any_failed = false;
        let mut all_skipped = true;
        let mut registered = Vec::new();
        let n = q.items.len();
        for (item, mut o) in q.items {
            if o.dropped {
                continue;
            }
            let mut value = result_value(&o);
            if let Some(v) = &item.item {
                value["item"] = v.clone();
            }
            if o.status != Status::Skipped && o.status != Status::Unreachable {
                self.apply_conditions(task, &item, &mut o, &value);
                value["changed"] = json!(o.status == Status::Changed);
                value["failed"] = json!(o.status == Status::Failed);
            }
            let ignored = o.status == Status::Failed && task.ignore_errors;
            let duration = if n == 1 {
                q.started.elapsed()
            } else {
                std::time::Duration::ZERO
            };
            self.report(task, item.label.clone(), &o, ignored, duration);
            self.count(o.status, ignored, o.plan.reboot_required);
            if o.plan.reboot.is_some() && o.status == Status::Changed && !self.shared.opts.check {
                // The reboot this run needed has happened.
                self.state.stats.reboot_required = false;
            }
            any_changed |= o.status == Status::Changed;
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
        if any_changed {
            self.notified.extend(task.notify.iter().cloned());
        }
        if any_failed {
            self.host_failed();
        }
    }

    fn apply_conditions(&self, task: &Task, item: &Item, o: &mut Outcome, value: &Value) {
        if task.changed_when.is_none() && task.failed_when.is_none() {
            return;
        }
        let loop_item = item.item.as_ref().map(|v| (task.loop_var.as_str(), v));
        let mut vars = match self.layers.context(&task.vars, loop_item, &BTreeSet::new()) {
            Ok(v) => v,
            Err(e) => {
                o.status = Status::Failed;
                o.msg = Some(match e {
                    crate::vars::Unresolved::Error(e) => e.to_string(),
                    crate::vars::Unresolved::Pending(p) => format!("`{p}` is not available"),
                });
                return;
            }
        };
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
                    o.msg = o.plan.msg.clone();
                }
                Ok(_) => {}
                Err(e) => {
                    o.status = Status::Failed;
                    o.msg = Some(format!("failed_when: {e}"));
                }
            }
        }
    }
}

fn last_line(s: &str) -> Option<String> {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
}

/// What action `n` of a plan printed, registered when the plan asks for it
/// ([`Plan::data_from_output`]); a failed command registers nothing.
fn register_output(plan: &mut Plan, n: usize, c: &CommandOutput) {
    if c.rc != 0 {
        return;
    }
    for (key, _) in plan.data_from_output.iter().filter(|(_, i)| *i == n) {
        let value = c.stdout.strip_suffix('\n').unwrap_or(&c.stdout);
        plan.data.insert(key.clone(), json!(value));
    }
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
    fn a_plan_registers_what_its_command_printed() {
        let mut plan = Plan::ok();
        plan.actions.push(Action::run("true"));
        plan.data_from("public_key", "cat key.pub");
        plan = plan.with_data("key", "key");
        register_output(&mut plan, 0, &CommandOutput::ok("not this\n"));
        assert!(!plan.data.contains_key("public_key"));
        register_output(&mut plan, 1, &CommandOutput::failed(1, "no"));
        assert!(!plan.data.contains_key("public_key"));
        register_output(&mut plan, 1, &CommandOutput::ok("ssh-ed25519 AAAA x\n"));
        assert_eq!(plan.data["public_key"], json!("ssh-ed25519 AAAA x"));
        assert_eq!(plan.data["key"], json!("key"));
    }
}
