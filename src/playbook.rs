//! Playbooks: a list of plays, each a list of tasks.
//!
//! Parsing goes through serde visitors rather than a generic YAML tree so that every structural
//! error — an unknown key, an unknown module or parameter, a wrong type — is raised while the
//! parser still knows where it is, and is reported as `file:line:column` with a did-you-mean.

use crate::error::{yaml_error, Error};
use crate::inventory::yaml_to_json;
use crate::module::DynModule;
use crate::modules;
use crate::params::{check_names, did_you_mean, did_you_mean_suffix};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;
use std::path::{Path, PathBuf};

pub const PLAY_KEYS: &[&str] = &[
    "name",
    "hosts",
    "vars",
    "vars_files",
    "become",
    "gather_facts",
    "serial",
    "any_errors_fatal",
    "max_fail_percentage",
    "tasks",
    "handlers",
    "tags",
];

pub const TASK_KEYS: &[&str] = &[
    "name",
    "when",
    "loop",
    "with_items",
    "loop_control",
    "register",
    "notify",
    "listen",
    "tags",
    "become",
    "ignore_errors",
    "changed_when",
    "failed_when",
    "no_log",
    "vars",
    "rollback_timeout",
    "verify",
    "confirm_address",
];

/// Batch sizes for rolling changes: a number of hosts or a percentage of the play's hosts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Serial {
    Count(usize),
    Percent(f64),
}

impl Serial {
    pub fn size(&self, total: usize) -> usize {
        match *self {
            Serial::Count(n) => n.max(1),
            Serial::Percent(p) => ((total as f64 * p / 100.0).floor() as usize).max(1),
        }
    }
}

pub struct Task {
    pub name: Option<String>,
    pub module: &'static dyn DynModule,
    /// Arguments as written (may contain templates); a string for free-form modules.
    pub args: Value,
    pub when: Option<Value>,
    pub loop_: Option<Value>,
    pub loop_var: String,
    pub register: Option<String>,
    pub notify: Vec<String>,
    /// Extra names a handler answers to.
    pub listen: Vec<String>,
    pub tags: Vec<String>,
    pub become_: Option<bool>,
    pub ignore_errors: bool,
    pub changed_when: Option<Value>,
    pub failed_when: Option<Value>,
    pub no_log: bool,
    pub vars: Map<String, Value>,
    /// Network changes: seconds the host waits for the controller's confirmation before it
    /// rolls the change back (default 60).
    pub rollback_timeout: Option<u64>,
    /// Network changes: a command that must succeed on the host, over a new connection, for the
    /// change to be confirmed (e.g. `ping -c1 -W2 192.168.121.1`).
    pub verify: Option<String>,
    /// Network changes: the address the host answers at after the change, when it moves.
    pub confirm_address: Option<String>,
}

impl fmt::Debug for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Task")
            .field("name", &self.display_name())
            .field("args", &self.args)
            .finish()
    }
}

impl Task {
    /// The name shown in output: the task's name, or `module: args` when it has none.
    pub fn display_name(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => {
                let args = match &self.args {
                    Value::String(s) => s.clone(),
                    Value::Object(m) => m
                        .iter()
                        .take(3)
                        .map(|(k, v)| {
                            format!(
                                "{k}={}",
                                v.as_str()
                                    .map(str::to_string)
                                    .unwrap_or_else(|| v.to_string())
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(" "),
                    _ => String::new(),
                };
                let mut s = format!("{}: {args}", self.module.spec().name);
                if s.len() > 80 {
                    s.truncate(77);
                    s.push_str("...");
                }
                s
            }
        }
    }
}

#[derive(Debug)]
pub struct Play {
    pub name: String,
    pub hosts: String,
    pub vars: Map<String, Value>,
    pub vars_files: Vec<String>,
    pub become_: Option<bool>,
    /// `Some` when the play says; otherwise facts are gathered when the play refers to them.
    pub gather_facts: Option<bool>,
    pub serial: Vec<Serial>,
    pub any_errors_fatal: bool,
    pub max_fail_percentage: Option<f64>,
    pub tasks: Vec<Task>,
    pub handlers: Vec<Task>,
    pub tags: Vec<String>,
}

#[derive(Debug)]
pub struct Playbook {
    pub path: PathBuf,
    /// Relative `src:` and `vars_files:` resolve against this directory.
    pub dir: PathBuf,
    pub plays: Vec<Play>,
}

impl Playbook {
    pub fn load(path: &Path) -> Result<Playbook, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Io(path.to_path_buf(), e.to_string()))?;
        Playbook::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Playbook, Error> {
        let plays: Option<Plays> =
            serde_yaml::from_str(text).map_err(|e| locate(text, path, &e))?;
        let plays = plays.map(|p| p.0).unwrap_or_default();
        if plays.is_empty() {
            return Err(Error::Playbook(format!(
                "{}: the playbook has no plays",
                path.display()
            )));
        }
        for play in &plays {
            let mut names = std::collections::HashSet::new();
            for h in &play.handlers {
                if let Some(n) = &h.name {
                    if !names.insert(n.clone()) {
                        return Err(Error::Playbook(format!(
                            "{}: play `{}`: two handlers are named `{n}`",
                            path.display(),
                            play.name
                        )));
                    }
                }
            }
            for t in play.tasks.iter().chain(&play.handlers) {
                for n in &t.notify {
                    let known = play
                        .handlers
                        .iter()
                        .any(|h| h.name.as_deref() == Some(n) || h.listen.contains(n));
                    if !known {
                        let all = play.handlers.iter().filter_map(|h| h.name.as_deref());
                        return Err(Error::Playbook(format!(
                            "{}: play `{}`, task `{}`: notifies `{n}`, but no handler has that name{}",
                            path.display(),
                            play.name,
                            t.display_name(),
                            did_you_mean_suffix(&did_you_mean(n, all))
                        )));
                    }
                }
            }
        }
        let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        Ok(Playbook {
            dir: abs.parent().map(Path::to_path_buf).unwrap_or_default(),
            path: path.to_path_buf(),
            plays,
        })
    }
}

/// serde_yaml locates errors raised by our visitors at the start of the enclosing mapping. When
/// the error is about a key, point at that key instead: the user's typo is on that line.
fn locate(text: &str, path: &Path, e: &serde_yaml::Error) -> Error {
    let Error::Yaml(formatted) = yaml_error(path, e) else {
        unreachable!("yaml_error returns Error::Yaml")
    };
    let msg = e.to_string();
    let msg = msg.split(" at line ").next().unwrap_or(&msg);
    // Drop serde_yaml's `.[0].tasks[1]: ` path prefix: the location says it better.
    let msg = match msg.strip_prefix('.').and_then(|m| m.split_once(": ")) {
        Some((_, rest)) => rest,
        None => msg,
    };
    let subject = msg.find("unknown").map_or(msg, |i| &msg[i..]);
    let (Some(loc), Some(key)) = (e.location(), subject.split('`').nth(1)) else {
        return Error::Yaml(formatted);
    };
    let keyed =
        msg.contains("unknown") || msg.contains("given twice") || msg.contains("one module");
    if keyed {
        for (i, line) in text.lines().enumerate().skip(loc.line().saturating_sub(1)) {
            if let Some(col) = key_column(line, key) {
                return Error::Yaml(format!("{}:{}:{}: {msg}", path.display(), i + 1, col));
            }
        }
    }
    Error::Yaml(format!(
        "{}:{}:{}: {msg}",
        path.display(),
        loc.line(),
        loc.column()
    ))
}

/// The 1-based column where `key:` appears as a mapping key on this line.
fn key_column(line: &str, key: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = line[from..].find(key) {
        let at = from + i;
        let before = line[..at].trim_end_matches(['"', '\'']);
        let after = line[at + key.len()..].trim_start_matches(['"', '\'']);
        let starts = before.is_empty() || before.ends_with([' ', '{', ',', '-']);
        if starts && after.starts_with(':') {
            return Some(at + 1);
        }
        from = at + key.len();
    }
    None
}

// ---- deserialisation ----------------------------------------------------------------------

struct Plays(Vec<Play>);

impl<'de> serde::Deserialize<'de> for Plays {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Plays;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of plays")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Plays, A::Error> {
                let mut plays = Vec::new();
                while let Some(p) = seq.next_element::<Play>()? {
                    plays.push(p);
                }
                Ok(Plays(plays))
            }
        }
        d.deserialize_seq(V)
    }
}

fn unknown_key<E: de::Error>(what: &str, key: &str, known: &[&str], extra: &[&str]) -> E {
    let hint = did_you_mean(key, known.iter().chain(extra).copied());
    E::custom(format!(
        "unknown {what} `{key}`{}",
        did_you_mean_suffix(&hint)
    ))
}

fn json<E: de::Error>(v: serde_yaml::Value) -> Result<Value, E> {
    yaml_to_json(&v).map_err(E::custom)
}

fn bool_value<E: de::Error>(key: &str, v: serde_yaml::Value) -> Result<bool, E> {
    let v = json(v)?;
    crate::params::parse_bool(&v).ok_or_else(|| {
        E::custom(format!(
            "`{key}` must be true or false: {}",
            crate::params::not_a_bool(&v)
        ))
    })
}

/// A string or a list of strings.
fn string_list<E: de::Error>(key: &str, v: serde_yaml::Value) -> Result<Vec<String>, E> {
    match json(v)? {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(vec![s]),
        Value::Array(a) => a
            .into_iter()
            .map(|x| match x {
                Value::String(s) => Ok(s),
                Value::Number(n) => Ok(n.to_string()),
                _ => Err(E::custom(format!(
                    "`{key}` must be a string or a list of strings"
                ))),
            })
            .collect(),
        _ => Err(E::custom(format!(
            "`{key}` must be a string or a list of strings"
        ))),
    }
}

fn mapping<E: de::Error>(key: &str, v: serde_yaml::Value) -> Result<Map<String, Value>, E> {
    match json(v)? {
        Value::Null => Ok(Map::new()),
        Value::Object(m) => Ok(m),
        _ => Err(E::custom(format!("`{key}` must be a mapping"))),
    }
}

fn string<E: de::Error>(key: &str, v: serde_yaml::Value) -> Result<String, E> {
    match json(v)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(E::custom(format!("`{key}` must be a string"))),
    }
}

fn serial<E: de::Error>(v: serde_yaml::Value) -> Result<Vec<Serial>, E> {
    let one = |v: &Value| -> Result<Serial, E> {
        match v {
            Value::Number(n) if n.as_u64().is_some_and(|n| n > 0) => {
                Ok(Serial::Count(n.as_u64().unwrap() as usize))
            }
            Value::String(s) => {
                let t = s.trim();
                if let Some(p) = t.strip_suffix('%') {
                    match p.trim().parse::<f64>() {
                        Ok(p) if p > 0.0 && p <= 100.0 => Ok(Serial::Percent(p)),
                        _ => Err(E::custom(format!(
                            "serial `{s}` must be a percentage between 0% and 100%"
                        ))),
                    }
                } else {
                    t.parse::<usize>()
                        .ok()
                        .filter(|n| *n > 0)
                        .map(Serial::Count)
                        .ok_or_else(|| {
                            E::custom(format!(
                                "serial `{s}` must be a positive number or a percentage"
                            ))
                        })
                }
            }
            _ => Err(E::custom(
                "serial must be a positive number, a percentage or a list of them",
            )),
        }
    };
    match json(v)? {
        Value::Array(a) => a.iter().map(one).collect(),
        other => Ok(vec![one(&other)?]),
    }
}

impl<'de> serde::Deserialize<'de> for Play {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Play;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a play (a mapping with hosts and tasks)")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Play, A::Error> {
                let mut play = Play {
                    name: String::new(),
                    hosts: String::new(),
                    vars: Map::new(),
                    vars_files: Vec::new(),
                    become_: None,
                    gather_facts: None,
                    serial: Vec::new(),
                    any_errors_fatal: false,
                    max_fail_percentage: None,
                    tasks: Vec::new(),
                    handlers: Vec::new(),
                    tags: Vec::new(),
                };
                let mut has_hosts = false;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "tasks" => play.tasks = map.next_value::<TaskList>()?.0,
                        "handlers" => play.handlers = map.next_value::<TaskList>()?.0,
                        k => {
                            let v: serde_yaml::Value = map.next_value()?;
                            match k {
                                "name" => play.name = string(k, v)?,
                                "hosts" => {
                                    has_hosts = true;
                                    play.hosts = string_list(k, v)?.join(":")
                                }
                                "vars" => play.vars = mapping(k, v)?,
                                "vars_files" => play.vars_files = string_list(k, v)?,
                                "become" => play.become_ = Some(bool_value(k, v)?),
                                "gather_facts" => play.gather_facts = Some(bool_value(k, v)?),
                                "serial" => play.serial = serial(v)?,
                                "any_errors_fatal" => play.any_errors_fatal = bool_value(k, v)?,
                                "max_fail_percentage" => {
                                    play.max_fail_percentage = Some(
                                        json(v)?
                                            .as_f64()
                                            .filter(|p| (0.0..=100.0).contains(p))
                                            .ok_or_else(|| de::Error::custom("max_fail_percentage must be a number from 0 to 100"))?,
                                    )
                                }
                                "tags" => play.tags = string_list(k, v)?,
                                other => {
                                    let hint = if modules::find(other).is_some() || TASK_KEYS.contains(&other) {
                                        format!("unknown play key `{other}` (tasks go under `tasks:`)")
                                    } else {
                                        unknown_key::<A::Error>("play key", other, PLAY_KEYS, &[]).to_string()
                                    };
                                    return Err(de::Error::custom(hint));
                                }
                            }
                        }
                    }
                }
                if !has_hosts || play.hosts.is_empty() {
                    return Err(de::Error::custom(format!(
                        "play `{}` has no `hosts:` (which hosts it runs on)",
                        play.name
                    )));
                }
                if play.name.is_empty() {
                    play.name = play.hosts.clone();
                }
                Ok(play)
            }
        }
        d.deserialize_map(V)
    }
}

struct TaskList(Vec<Task>);

impl<'de> serde::Deserialize<'de> for TaskList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TaskList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of tasks")
            }
            fn visit_unit<E: de::Error>(self) -> Result<TaskList, E> {
                Ok(TaskList(Vec::new()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TaskList, A::Error> {
                let mut tasks = Vec::new();
                while let Some(t) = seq.next_element::<Task>()? {
                    tasks.push(t);
                }
                Ok(TaskList(tasks))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> serde::Deserialize<'de> for Task {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Task;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a task (a mapping with a module and its arguments)")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Task, A::Error> {
                let mut module: Option<(&'static dyn DynModule, Value)> = None;
                let mut t = Task {
                    name: None,
                    module: modules::ALL[0],
                    args: Value::Null,
                    when: None,
                    loop_: None,
                    loop_var: "item".into(),
                    register: None,
                    notify: Vec::new(),
                    listen: Vec::new(),
                    tags: Vec::new(),
                    become_: None,
                    ignore_errors: false,
                    changed_when: None,
                    failed_when: None,
                    no_log: false,
                    vars: Map::new(),
                    rollback_timeout: None,
                    verify: None,
                    confirm_address: None,
                };
                while let Some(key) = map.next_key::<String>()? {
                    if let Some(m) = modules::find(&key) {
                        if let Some((prev, _)) = &module {
                            return Err(de::Error::custom(format!(
                                "a task runs one module, but this one has `{}` and `{key}`",
                                prev.spec().name
                            )));
                        }
                        let args = map.next_value_seed(ArgsSeed(m))?;
                        module = Some((m, args));
                        continue;
                    }
                    if !TASK_KEYS.contains(&key.as_str()) {
                        let names: Vec<&str> = modules::names().collect();
                        return Err(unknown_key("task key or module", &key, TASK_KEYS, &names));
                    }
                    let v: serde_yaml::Value = map.next_value()?;
                    let k = key.as_str();
                    match k {
                        "name" => t.name = Some(string(k, v)?),
                        "when" => t.when = Some(json(v)?),
                        "loop" | "with_items" => t.loop_ = Some(json(v)?),
                        "loop_control" => {
                            let m = mapping::<A::Error>(k, v)?;
                            for (lk, lv) in m {
                                match (lk.as_str(), lv) {
                                    ("loop_var", Value::String(s)) => t.loop_var = s,
                                    ("label", _) => {}
                                    (other, _) => {
                                        return Err(unknown_key(
                                            "loop_control key",
                                            other,
                                            &["loop_var", "label"],
                                            &[],
                                        ))
                                    }
                                }
                            }
                        }
                        "register" => {
                            let r = string::<A::Error>(k, v)?;
                            if r.is_empty()
                                || !r.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                            {
                                return Err(de::Error::custom(format!(
                                    "register name `{r}` must be letters, digits and _"
                                )));
                            }
                            t.register = Some(r)
                        }
                        "notify" => t.notify = string_list(k, v)?,
                        "listen" => t.listen = string_list(k, v)?,
                        "tags" => t.tags = string_list(k, v)?,
                        "become" => t.become_ = Some(bool_value(k, v)?),
                        "ignore_errors" => t.ignore_errors = bool_value(k, v)?,
                        "changed_when" => t.changed_when = Some(json(v)?),
                        "failed_when" => t.failed_when = Some(json(v)?),
                        "no_log" => t.no_log = bool_value(k, v)?,
                        "vars" => t.vars = mapping(k, v)?,
                        "rollback_timeout" => {
                            let n = match &v {
                                serde_yaml::Value::Number(n) => n.as_u64(),
                                _ => None,
                            };
                            match n {
                                Some(n) if (10..=3600).contains(&n) => t.rollback_timeout = Some(n),
                                _ => {
                                    return Err(de::Error::custom(format!(
                                        "rollback_timeout must be a number of seconds from 10 to 3600, not {}",
                                        serde_yaml::to_string(&v).unwrap_or_default().trim()
                                    )))
                                }
                            }
                        }
                        "verify" => t.verify = Some(string::<A::Error>(k, v)?),
                        "confirm_address" => t.confirm_address = Some(string::<A::Error>(k, v)?),
                        _ => unreachable!("checked against TASK_KEYS"),
                    }
                }
                let Some((m, args)) = module else {
                    return Err(de::Error::custom(format!(
                        "task `{}` has no module (one of: {})",
                        t.name.as_deref().unwrap_or("unnamed"),
                        modules::names().collect::<Vec<_>>().join(", ")
                    )));
                };
                t.module = m;
                t.args = args;
                Ok(t)
            }
        }
        d.deserialize_map(V)
    }
}

/// Deserialises a module's arguments, checking parameter names as they are read so an unknown
/// one is reported at its own line.
struct ArgsSeed(&'static dyn DynModule);

impl<'de> DeserializeSeed<'de> for ArgsSeed {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ArgsSeed {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "the arguments of `{}` (a mapping of parameters)",
            self.0.spec().name
        )
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Object(Map::new()))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        match self.0.spec().free_form {
            Some(p) => Ok(Value::Object(
                [(p.to_string(), Value::String(s.to_string()))]
                    .into_iter()
                    .collect(),
            )),
            None => Err(E::custom(format!(
                "`{}` takes a mapping of parameters, not a string (see `kvmforge doc {}`)",
                self.0.spec().name,
                self.0.spec().name
            ))),
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let spec = self.0.spec();
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            check_names(spec.params, &key)
                .map_err(|e| de::Error::custom(format!("module `{}`: {e}", spec.name)))?;
            let v: serde_yaml::Value = map.next_value()?;
            if out.insert(key.clone(), json(v)?).is_some() {
                return Err(de::Error::custom(format!(
                    "parameter `{key}` is given twice"
                )));
            }
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Playbook, String> {
        Playbook::parse(text, Path::new("site.yaml")).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_a_play() {
        let pb = parse(
            r#"
- name: KVM
  hosts: kvm:&gpu
  become: yes
  serial: "50%"
  vars: { a: 1 }
  tasks:
    - name: bridge conf
      copy: { dest: /etc/x, content: "a" }
      notify: reload
      tags: [net]
      when: "eq facts.os_family 'Debian'"
    - copy: {dest: /y, content: b}
      register: out
      changed_when: false
  handlers:
    - name: reload
      copy: {dest: /z, content: c}
"#,
        )
        .unwrap();
        let p = &pb.plays[0];
        assert_eq!(p.hosts, "kvm:&gpu");
        assert_eq!(p.become_, Some(true));
        assert_eq!(p.serial, vec![Serial::Percent(50.0)]);
        assert_eq!(p.tasks.len(), 2);
        assert_eq!(p.tasks[0].notify, vec!["reload"]);
        assert_eq!(p.tasks[1].args["content"], "b");
        assert_eq!(p.tasks[1].display_name(), "copy: dest=/y content=b");
        assert_eq!(p.tasks[1].changed_when, Some(Value::Bool(false)));
        assert_eq!(Serial::Percent(50.0).size(5), 2);
    }

    #[test]
    fn unknown_module_suggests_and_names_line_and_column() {
        let e = parse("- hosts: all\n  tasks:\n    - name: x\n      cpoy:\n        dest: /x\n")
            .unwrap_err();
        assert!(e.starts_with("site.yaml:4:"), "{e}");
        assert!(
            e.contains("unknown task key or module `cpoy` (did you mean `copy`?)"),
            "{e}"
        );
    }

    #[test]
    fn unknown_parameter_is_located() {
        let e =
            parse("- hosts: all\n  tasks:\n    - copy:\n        dest: /x\n        contnet: a\n")
                .unwrap_err();
        assert!(e.starts_with("site.yaml:5:"), "{e}");
        assert!(
            e.contains("unknown parameter `contnet` (did you mean `content`?)"),
            "{e}"
        );
    }

    #[test]
    fn unknown_task_key_and_play_key() {
        let e =
            parse("- hosts: all\n  tasks:\n    - copy: {dest: /x, content: a}\n      wehn: x\n")
                .unwrap_err();
        assert!(e.contains("`wehn` (did you mean `when`?)"), "{e}");
        let e = parse("- hosts: all\n  taks: []\n").unwrap_err();
        assert!(
            e.contains("unknown play key `taks` (did you mean `tasks`?)"),
            "{e}"
        );
        let e = parse("- hosts: all\n  copy: {dest: /x}\n").unwrap_err();
        assert!(e.contains("tasks go under `tasks:`"), "{e}");
    }

    #[test]
    fn syntax_error_has_location() {
        let e = parse("- hosts: all\n  tasks:\n    - copy: {dest: /x\n").unwrap_err();
        assert!(e.starts_with("site.yaml:"), "{e}");
        let loc: Vec<&str> = e.splitn(4, ':').collect();
        assert!(
            loc[1].parse::<u32>().is_ok() && loc[2].parse::<u32>().is_ok(),
            "{e}"
        );
    }

    #[test]
    fn structural_errors() {
        assert!(parse("- tasks: []\n")
            .unwrap_err()
            .contains("has no `hosts:`"));
        assert!(parse("- hosts: all\n  tasks:\n    - name: x\n")
            .unwrap_err()
            .contains("has no module"));
        assert!(
            parse("- hosts: all\n  tasks:\n    - copy: {dest: /x}\n      copy: {dest: /y}\n")
                .unwrap_err()
                .contains("one module")
        );
        let e = parse("- hosts: all\n  tasks:\n    - copy: {dest: /x, content: a}\n      notify: restat\n  handlers:\n    - name: restart\n      copy: {dest: /x, content: a}\n").unwrap_err();
        assert!(e.contains("did you mean `restart`"), "{e}");
        assert!(parse("- hosts: all\n  serial: 0\n  tasks: []\n")
            .unwrap_err()
            .contains("serial"));
        assert!(parse("- hosts: all\n  tasks:\n    - copy: a string\n")
            .unwrap_err()
            .contains("takes a mapping"));
        assert!(parse("").unwrap_err().contains("no plays"));
    }
}
