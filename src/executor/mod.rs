//! Runs plays on hosts.
//!
//! Each host runs its own task list independently (no lockstep), up to `forks` hosts at once.
//! Round trips are the cost that matters, so per host the executor:
//! - collects the probes of as many upcoming tasks as it can render (conditions waiting for
//!   facts or registered results count as true for this) and observes them, with the facts, in
//!   ONE remote invocation;
//! - renders and plans each task for real from those observations, without touching the host;
//! - queues the actions of changed tasks, predicting their effect, and sends them with the next
//!   observation the host needs or when a task's result is needed (see [`host`]).
//!
//! A run that changes nothing costs about one invocation per host, a run that changes files
//! about two, and check mode is the same run without the applies.

mod guard;
mod host;
mod predict;
mod prepare;
mod reboot;
mod workers;

pub use host::describe;

use crate::connection::{self, Become, Connection, ConnectionError};
use crate::error::Error;
use crate::facts;
use crate::inventory::{Host, Inventory};
use crate::output::{Event, HostStats, Reporter};
use crate::playbook::{Play, Playbook};
use crate::vars::Layers;
use host::HostPlay;
use prepare::{load_vars_files, render, Prepared};
use rayon::prelude::*;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

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
    /// The facts to gather with the first observation of each host (none: no facts).
    pub gather_facts: facts::Wanted,
    /// The `groups` variable (every group's hosts), when the play refers to it: it is as big as
    /// the inventory, and copying it into every task's context on every host would make a run
    /// cost grow with the square of the hosts.
    pub groups: Option<Value>,
    /// The `hostvars` variable (every inventory host's variables), when the play refers to it.
    pub hostvars: Option<Value>,
    /// What validation rendered for each host, by task, where the rendering is final (see
    /// [`prepare::Rendered`]): the run uses it instead of rendering the task again. A task is
    /// one of the play's own, so its address identifies it.
    rendered: HashMap<String, HashMap<usize, Prepared>>,
}

/// The key of a task of the play in [`PlayTarget::rendered`].
fn task_key(task: &crate::playbook::Task) -> usize {
    task as *const crate::playbook::Task as usize
}

impl PlayTarget<'_> {
    /// Validation's rendering of `task` (of this play) for `host`, when it is final.
    fn rendered(&self, host: &str, task: &crate::playbook::Task) -> Option<&Prepared> {
        self.rendered.get(host)?.get(&task_key(task))
    }
}

/// Whether anything a play renders may refer to the variable `name` (`hostvars`, `groups`):
/// any of its texts ([`play_texts`]). A false positive only costs providing a variable that is
/// not used.
fn play_mentions(
    name: &str,
    target: (&Play, &Map<String, Value>),
    pb: &Playbook,
    hosts: &[Host],
    extra: &Map<String, Value>,
) -> bool {
    play_texts(target, pb, hosts, extra, &mut |t| {
        t.is_none_or(|t| t.contains(name))
    })
}

/// Show `f` every text of the play a template may be in: its tasks' and handlers' arguments
/// and conditions, its variables and `vars_files`, the variables of its hosts and the command
/// line, and the files its tasks render as templates (as each module declares them), `None` for
/// one that cannot be read. Stops at the first for which `f` says true, and says whether there
/// was one.
fn play_texts(
    target: (&Play, &Map<String, Value>),
    pb: &Playbook,
    hosts: &[Host],
    extra: &Map<String, Value>,
    f: &mut dyn FnMut(Option<&str>) -> bool,
) -> bool {
    let (play, vars_files) = target;
    fn walk(v: &Value, f: &mut dyn FnMut(Option<&str>) -> bool) -> bool {
        match v {
            Value::String(s) => f(Some(s)),
            Value::Array(a) => a.iter().any(|x| walk(x, f)),
            Value::Object(m) => m.iter().any(|(k, x)| f(Some(k)) || walk(x, f)),
            _ => false,
        }
    }
    fn vars(m: &Map<String, Value>, f: &mut dyn FnMut(Option<&str>) -> bool) -> bool {
        m.values().any(|v| walk(v, f))
    }
    play.tasks.iter().chain(&play.handlers).any(|t| {
        let rendered = match t.args.as_object() {
            Some(raw) => match t.module.rendered_files(raw, &pb.dir) {
                Some(files) => files
                    .iter()
                    .any(|p| f(std::fs::read_to_string(p).ok().as_deref())),
                None => f(None),
            },
            None => false,
        };
        rendered
            || walk(&t.args, f)
            || [&t.when, &t.loop_, &t.changed_when, &t.failed_when]
                .into_iter()
                .flatten()
                .any(|v| walk(v, f))
            || vars(&t.vars, f)
    }) || vars(&play.vars, f)
        || vars(vars_files, f)
        || vars(extra, f)
        || hosts.iter().any(|h| vars(&h.vars, f))
}

/// The facts the play's templates refer to (see [`facts::Wanted::in_text`]).
fn play_facts(
    target: (&Play, &Map<String, Value>),
    pb: &Playbook,
    hosts: &[Host],
    extra: &Map<String, Value>,
) -> facts::Wanted {
    let mut wanted = facts::Wanted::NONE;
    play_texts(target, pb, hosts, extra, &mut |t| {
        wanted = match t {
            Some(t) => wanted.union(facts::Wanted::in_text(t)),
            None => facts::Wanted::ALL,
        };
        wanted == facts::Wanted::ALL
    });
    wanted
}

/// `inventory_hostname`, `group_names`, and `groups` when the play uses it.
fn magic(host: &Host, groups: Option<&Value>, hostvars: Option<&Value>) -> Map<String, Value> {
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
    if let Some(g) = groups {
        m.insert("groups".into(), g.clone());
    }
    if let Some(h) = hostvars {
        m.insert("hostvars".into(), h.clone());
    }
    m
}

/// Every inventory host's variables, by host name (`hostvars.NAME.VAR`, or
/// `{{hostvars_of "GROUP" "VAR"}}` for one variable of every host of a group).
fn hostvars(inv: &Inventory) -> Value {
    Value::Object(
        inv.hosts
            .iter()
            .map(|h| (h.name.clone(), Value::Object(h.vars.clone())))
            .collect(),
    )
}

/// Every group with its hosts, in inventory order.
fn groups(inv: &Inventory) -> Value {
    let mut groups: Map<String, Value> =
        inv.groups.keys().map(|g| (g.clone(), json!([]))).collect();
    for h in &inv.hosts {
        for g in &h.groups {
            if let Some(Value::Array(members)) = groups.get_mut(g) {
                members.push(json!(h.name));
            }
        }
    }
    Value::Object(groups)
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
    let mut run_facts = facts::Wanted::NONE;
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
        let hostvars = play_mentions(
            "hostvars",
            (play, &vars_files),
            pb,
            &hosts,
            &opts.extra_vars,
        )
        .then(|| hostvars(inv));
        // `hostvars_of` reads `groups` too.
        let groups = (hostvars.is_some()
            || play_mentions("groups", (play, &vars_files), pb, &hosts, &opts.extra_vars))
        .then(|| groups(inv));
        // Rendering every task for every host is pure CPU: spread it over the cores.
        type HostResult = (Vec<(String, String)>, HashMap<usize, Prepared>);
        let found: Vec<HostResult> = hosts
            .par_iter()
            .map(|host| {
                if let Err(e) = host.connection() {
                    return (vec![(e.to_string(), host.name.clone())], HashMap::new());
                }
                let layers = Layers {
                    inventory: host.vars.clone(),
                    facts: None,
                    play: play.vars.clone(),
                    vars_files: vars_files.clone(),
                    registered: Map::new(),
                    extra: opts.extra_vars.clone(),
                    magic: magic(host, groups.as_ref(), hostvars.as_ref()),
                };
                let mut problems = Vec::new();
                let rendered = play
                    .tasks
                    .iter()
                    .chain(&play.handlers)
                    .filter_map(|t| match render(t, &layers, &pending, false, &pb.dir) {
                        Ok(r) => match r.prepared {
                            Prepared::Failed(msg) => {
                                problems.push((
                                    format!(
                                        "play `{}`, task `{}`: {msg}",
                                        play.name,
                                        t.display_name()
                                    ),
                                    host.name.clone(),
                                ));
                                None
                            }
                            p => r.settled.then(|| (task_key(t), p)),
                        },
                        Err(_) => None,
                    })
                    .collect();
                (problems, rendered)
            })
            .collect();
        let mut rendered = HashMap::new();
        for (host, (found, prepared)) in hosts.iter().zip(found) {
            for (key, host) in found {
                match problems.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, hs)) => hs.push(host),
                    None => problems.push((key, vec![host])),
                }
            }
            rendered.insert(host.name.clone(), prepared);
        }
        // Facts are gathered once per host, and reach later plays through `hostvars`: what
        // every play reads is gathered (set below, when all are known).
        let reads = play_facts((play, &vars_files), pb, &hosts, &opts.extra_vars);
        run_facts = run_facts.union(reads);
        let gather_facts = match play.gather_facts {
            Some(true) => facts::Wanted::ALL,
            Some(false) => facts::Wanted::NONE,
            None => reads,
        };
        targets.push(PlayTarget {
            play,
            hosts,
            vars_files,
            gather_facts,
            groups,
            hostvars,
            rendered,
        });
    }
    for t in &mut targets {
        if !t.gather_facts.is_empty() {
            t.gather_facts = t.gather_facts.union(run_facts);
        }
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
    /// The address a confirmed network change moved the host to (`confirm_address`).
    address: Option<String>,
    /// A play has reached it (the recap lists only these).
    played: bool,
}

impl HostState {
    fn connection(&mut self, opts: &Options) -> Result<&mut Box<dyn Connection>, ConnectionError> {
        if self.conn.is_none() {
            let mut spec = self
                .host
                .connection()
                .map_err(|e| ConnectionError::Unreachable(e.to_string()))?;
            if let Some(a) = &self.address {
                spec.address = a.clone();
            }
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
    /// `hostvars` for the play being run: the inventory's, plus the facts and registered
    /// results of plays that have finished.
    hostvars: Mutex<Option<Value>>,
}

/// `hostvars` with what earlier plays found out: each host's `facts` and registered results.
fn hostvars_after_plays(base: &Value, states: &BTreeMap<String, Mutex<HostState>>) -> Value {
    let mut hv = base.clone();
    if let Value::Object(hosts) = &mut hv {
        for (name, st) in states {
            // A host being connected to ahead of its play has nothing to add yet.
            let st = match st.try_lock() {
                Ok(st) => st,
                Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => continue,
            };
            if let Some(Value::Object(vars)) = hosts.get_mut(name) {
                if let Some(f) = &st.facts {
                    vars.insert("facts".into(), f.clone());
                }
                vars.extend(st.registered.clone());
            }
        }
    }
    hv
}

/// The plays, one after the other.
fn run_plays(targets: &[PlayTarget], states: &BTreeMap<String, Mutex<HostState>>, shared: &Shared) {
    for target in targets {
        *shared.hostvars.lock().unwrap() = target
            .hostvars
            .as_ref()
            .map(|base| hostvars_after_plays(base, states));
        let names: Vec<String> = target.hosts.iter().map(|h| h.name.clone()).collect();
        shared.reporter.report(&Event::Play {
            name: &target.play.name,
            hosts: &names,
            check: shared.opts.check,
        });
        let active: Vec<&Mutex<HostState>> = target
            .hosts
            .iter()
            .map(|h| &states[&h.name])
            .filter(|s| {
                let mut st = s.lock().unwrap_or_else(|e| e.into_inner());
                st.played = true;
                !st.out
            })
            .collect();
        shared.hosts_done.store(0, Ordering::SeqCst);
        shared.hosts_total.store(active.len(), Ordering::SeqCst);
        let mut start = 0;
        let mut batch_no = 0;
        while start < active.len() {
            if shared.abort.load(Ordering::SeqCst) || shared.interrupted.load(Ordering::SeqCst) {
                break;
            }
            let size = match target.play.serial.as_slice() {
                [] => active.len(),
                s => s[batch_no.min(s.len() - 1)].size(active.len()),
            };
            let batch = &active[start..(start + size).min(active.len())];
            workers::for_each(batch.to_vec(), shared.opts.forks, |st| {
                let mut st = st.lock().unwrap_or_else(|e| e.into_inner());
                HostPlay::new(shared, target, &mut st).run();
                shared.hosts_done.fetch_add(1, Ordering::SeqCst);
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
        if shared.abort.load(Ordering::SeqCst) || shared.interrupted.load(Ordering::SeqCst) {
            break;
        }
    }
}

/// Connect to the hosts that only later plays use while the first play runs: their SSH
/// handshakes (through a jump host that the first play configures, say) then overlap with it
/// instead of following it. A host whose connection fails here is connected to again when its
/// play reaches it, which reports the failure. The first play's hosts connect as it starts.
fn preconnect(
    targets: &[PlayTarget],
    states: &BTreeMap<String, Mutex<HostState>>,
    opts: &Options,
    interrupted: &AtomicBool,
) {
    let first: HashSet<&str> = targets
        .first()
        .map(|t| t.hosts.iter().map(|h| h.name.as_str()).collect())
        .unwrap_or_default();
    let later: Vec<&Mutex<HostState>> = states
        .iter()
        .filter(|(name, _)| !first.contains(name.as_str()))
        .map(|(_, st)| st)
        .collect();
    workers::for_each(later, opts.forks, |st| {
        if interrupted.load(Ordering::SeqCst) {
            return;
        }
        let mut st = st.lock().unwrap_or_else(|e| e.into_inner());
        if !st.played && !st.out {
            let _ = st.connection(opts);
        }
    });
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
    // Every host of the run has its state from the start, so that the hosts of later plays can
    // be connected to while the first play runs (see `preconnect`).
    let mut states: BTreeMap<String, Mutex<HostState>> = BTreeMap::new();
    for h in targets.iter().flat_map(|t| &t.hosts) {
        states.entry(h.name.clone()).or_insert_with(|| {
            Mutex::new(HostState {
                host: h.clone(),
                conn: None,
                facts: None,
                registered: Map::new(),
                stats: HostStats::default(),
                out: false,
                address: None,
                played: false,
            })
        });
    }
    let shared = Shared {
        pb,
        opts,
        reporter,
        abort: AtomicBool::new(false),
        hosts_done: Default::default(),
        hosts_total: Default::default(),
        interrupted,
        hostvars: Mutex::new(None),
    };
    std::thread::scope(|scope| {
        scope.spawn(|| preconnect(&targets, &states, opts, interrupted));
        run_plays(&targets, &states, &shared);
    });
    let finished: Vec<(String, HostState)> = states
        .into_iter()
        .map(|(name, st)| (name, st.into_inner().unwrap_or_else(|e| e.into_inner())))
        .collect();
    let stats = finished
        .iter()
        .filter(|(_, st)| st.played)
        .map(|(name, st)| {
            let mut stats = st.stats.clone();
            stats.invocations = st.conn.as_ref().map_or(0, |c| c.invocations());
            (name.clone(), stats)
        })
        .collect();
    // Closing a connection waits for its master to exit: close them all at once.
    workers::for_each(finished, opts.forks, drop);
    Ok(Summary {
        stats,
        interrupted: interrupted.load(Ordering::SeqCst),
    })
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

    /// Facts are gathered once per host and read by later plays through `hostvars`: every
    /// play that gathers takes what any play reads; a play that reads none gathers none.
    #[test]
    fn facts_gathered_are_those_the_run_reads() {
        let dir = tempfile::tempdir().unwrap();
        let pb = Playbook::parse(
            r#"
- hosts: a
  tasks:
    - copy: { dest: /tmp/x, content: "{{ facts.kernel }}" }
- hosts: b
  tasks:
    - copy: { dest: /tmp/x, content: "{{ hostvars.a.facts.os_family }}" }
      when: eq facts.distribution "debian"
- hosts: a
  tasks:
    - copy: { dest: /tmp/x, content: "nothing" }
- hosts: b
  gather_facts: true
  tasks:
    - copy: { dest: /tmp/x, content: "nothing" }
"#,
            &dir.path().join("p.yaml"),
        )
        .unwrap();
        let inv = Inventory::parse(
            "all:\n  hosts:\n    a: { connection: local }\n    b: { connection: local }\n",
            &dir.path().join("i.yaml"),
        )
        .unwrap();
        let targets = validate(&pb, &inv, &Options::default()).unwrap();
        let both = facts::Wanted::field("kernel")
            .unwrap()
            .union(facts::Wanted::field("os_family").unwrap());
        let got: Vec<facts::Wanted> = targets.iter().map(|t| t.gather_facts).collect();
        assert_eq!(got, [both, both, facts::Wanted::NONE, facts::Wanted::ALL]);
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
