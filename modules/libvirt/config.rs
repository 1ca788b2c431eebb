//! `libvirt_config`: settings in libvirt's configuration files (qemu.conf, libvirtd.conf, the
//! modular daemons' virtqemud.conf, ...), written in libvirt's own syntax.
//!
//! The file is parsed with libvirt's grammar ([`ConfFile::parse`]) into typed entries with their
//! byte spans, so values are compared semantically and an edit replaces exactly the entry (or
//! the commented default) it concerns; every other byte of the file is kept.

use crate::module::{
    ArgError, Attrs, Fact, Module, ModuleError, ModuleSpec, Observed, Plan, PlanContext, Probe,
};
use crate::modules::facts::systemd::UnitState;
use crate::modules::files::edit;
use crate::params::{Args, ParamKind, ParamSpec};
use serde::Deserialize;
use std::fmt;

pub struct LibvirtConfig;

static SPEC: ModuleSpec = ModuleSpec {
    name: "libvirt_config",
    summary: "Set values in libvirt's configuration files (qemu.conf, libvirtd.conf, virtqemud.conf, ...)",
    description: "`settings` maps keys to values, written in libvirt's syntax: strings as \
`key = \"value\"`, integers as `key = 1`, booleans as 0/1 (as libvirt reads them), lists of \
strings as `key = [ \"a\", \"b\" ]`. Key names are `[a-z_0-9]+`; any other value shape (a \
mapping, a nested list, null) is refused before any host is contacted.\n\n\
The file is parsed with libvirt's grammar (single, double and triple-quoted strings, integers, \
lists spanning lines with comments inside) and values are compared semantically, so a setting \
written differently but meaning the same is left alone. A setting already present is changed \
in place; one whose commented default exists (`#user = \"root\"`, also a commented list spanning \
lines) replaces that comment; any other is appended at the end. Every other line and comment is \
kept. A key set twice in the file is an error naming both lines; a file libvirt could not parse \
is an error naming the line. The file is written atomically, keeping its mode and owner; a \
missing file is created.\n\n\
`file` is a bare name under /etc/libvirt/ or an absolute path. The module does not restart \
anything: give the task a `notify:`. The result's `daemon` says which daemon reads the file: \
for the driver files (qemu.conf, lxc.conf, libxl.conf, network.conf) `libvirtd`, or the \
modular daemon (virtqemud, ...) on hosts running the modular daemons (virtqemud.service \
active; or, with neither running, virtqemud.service enabled and libvirtd.service not); for a \
daemon's own file (libvirtd.conf, virtqemud.conf, virtlogd.conf, ...) that daemon. Without \
systemd to ask it is null and the result message says so.",
    params: &[
        ParamSpec::with_default(
            "file",
            ParamKind::Str,
            "qemu.conf",
            "The file: a bare name under /etc/libvirt/, or an absolute path",
        )
        .aliases(&["path"]),
        ParamSpec::required(
            "settings",
            ParamKind::Data,
            "Mapping of key to value (string, integer, boolean, list of strings)",
        ),
        ParamSpec::with_default(
            "backup",
            ParamKind::Bool,
            "false",
            "Keep a timestamped copy of the old file",
        ),
    ],
    free_form: None,
    example: r#"- name: QEMU runs as okd, without a security driver, with 2M and 1G huge pages
  libvirt_config:
    file: qemu.conf
    settings:
      user: okd
      group: okd
      security_driver: none
      hugetlbfs_mount: [/dev/hugepages, /dev/hugepages1G]
  notify: restart libvirt
"#,
};

/// A value in a libvirt configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfValue {
    Str(String),
    Int(i64),
    List(Vec<ConfValue>),
}

impl fmt::Display for ConfValue {
    /// libvirt's syntax. Strings are double-quoted, or single-quoted when they contain `"`
    /// (libvirt strings have no escapes; [`check_string`] refuses what neither quote can hold).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfValue::Str(s) if s.contains('"') => write!(f, "'{s}'"),
            ConfValue::Str(s) => write!(f, "\"{s}\""),
            ConfValue::Int(i) => write!(f, "{i}"),
            ConfValue::List(items) if items.is_empty() => f.write_str("[]"),
            ConfValue::List(items) => {
                f.write_str("[ ")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str(" ]")
            }
        }
    }
}

/// One `key = value` of a parsed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: ConfValue,
    /// Byte range of `key = value` in the file.
    pub span: std::ops::Range<usize>,
    /// 1-based line the entry starts on.
    pub line: usize,
}

/// A libvirt configuration file, parsed: its entries in order (comments and blank lines are
/// what lies between their spans).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfFile {
    pub entries: Vec<Entry>,
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn line(&self) -> usize {
        1 + self.s[..self.i.min(self.s.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
    }
    fn err(&self, what: &str) -> String {
        format!("line {}: {what}", self.line())
    }
    /// Spaces and tabs (and `\r`).
    fn spaces(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r')) {
            self.i += 1;
        }
    }
    fn comment(&mut self) {
        if self.peek() == Some(b'#') {
            while !matches!(self.peek(), None | Some(b'\n')) {
                self.i += 1;
            }
        }
    }
    /// Spaces, comments and newlines (between list items and between entries).
    fn blanks(&mut self) {
        loop {
            self.spaces();
            self.comment();
            if self.peek() == Some(b'\n') {
                self.i += 1;
            } else {
                return;
            }
        }
    }
    fn name(&mut self) -> Result<String, String> {
        let start = self.i;
        if !self
            .peek()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        {
            return Err(self.err("expected a setting name"));
        }
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.')
        {
            self.i += 1;
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }
    fn string(&mut self) -> Result<ConfValue, String> {
        let (delim, len): (&[u8], usize) = if self.s[self.i..].starts_with(b"\"\"\"") {
            (b"\"\"\"", 3)
        } else if self.peek() == Some(b'\'') {
            (b"'", 1)
        } else {
            (b"\"", 1)
        };
        self.i += len;
        let start = self.i;
        loop {
            if self.i >= self.s.len() {
                return Err(self.err("unterminated string"));
            }
            if self.s[self.i..].starts_with(delim) {
                break;
            }
            if len == 1 && self.s[self.i] == b'\n' {
                return Err(self.err("unterminated string"));
            }
            self.i += 1;
        }
        let text = String::from_utf8_lossy(&self.s[start..self.i]).into_owned();
        self.i += len;
        Ok(ConfValue::Str(text))
    }
    fn int(&mut self) -> Result<ConfValue, String> {
        let start = self.i;
        if matches!(self.peek(), Some(b'-' | b'+')) {
            self.i += 1;
        }
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).unwrap_or_default();
        text.parse()
            .map(ConfValue::Int)
            .map_err(|_| self.err(&format!("`{text}` is not a number")))
    }
    fn value(&mut self, in_list: bool) -> Result<ConfValue, String> {
        match self.peek() {
            Some(b'"' | b'\'') => self.string(),
            Some(b'0'..=b'9' | b'-' | b'+') => self.int(),
            Some(b'[') if !in_list => {
                self.i += 1;
                let mut items = Vec::new();
                self.blanks();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(ConfValue::List(items));
                }
                loop {
                    items.push(self.value(true)?);
                    self.blanks();
                    match self.peek() {
                        Some(b',') => {
                            self.i += 1;
                            self.blanks();
                            if self.peek() == Some(b']') {
                                self.i += 1;
                                return Ok(ConfValue::List(items));
                            }
                        }
                        Some(b']') => {
                            self.i += 1;
                            return Ok(ConfValue::List(items));
                        }
                        None => return Err(self.err("unterminated list")),
                        _ => return Err(self.err("expected `,` or `]` in a list")),
                    }
                }
            }
            Some(b'[') => Err(self.err("lists cannot be nested")),
            None => Err(self.err("expected a value")),
            Some(c) => Err(self.err(&format!("unexpected `{}`", c as char))),
        }
    }
}

impl ConfFile {
    /// Parse libvirt's configuration grammar (as `virConfParse` reads it): `name = value`
    /// entries separated by newlines or `;`, `#` comments, values that are strings (`"..."`,
    /// `'...'`, `"""..."""`, without escapes), integers, or lists of those (spanning lines,
    /// with comments inside).
    pub fn parse(text: &str) -> Result<ConfFile, String> {
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
        };
        let mut entries = Vec::new();
        loop {
            p.blanks();
            while p.peek() == Some(b';') {
                p.i += 1;
                p.blanks();
            }
            if p.peek().is_none() {
                return Ok(ConfFile { entries });
            }
            let start = p.i;
            let line = p.line();
            let key = p.name()?;
            p.spaces();
            if p.peek() != Some(b'=') {
                return Err(p.err(&format!("expected `=` after {key}")));
            }
            p.i += 1;
            p.spaces();
            let value = p.value(false)?;
            let end = p.i;
            p.spaces();
            p.comment();
            if !matches!(p.peek(), None | Some(b'\n') | Some(b';')) {
                return Err(p.err("expected the end of the line after the value"));
            }
            entries.push(Entry {
                key,
                value,
                span: start..end,
                line,
            });
        }
    }

    /// The entries setting `key`.
    pub fn get<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries.iter().filter(move |e| e.key == key)
    }
}

/// Where `#key = ...` (libvirt's commented default: `#` directly followed by the key) lies in
/// `text`: the byte range of its lines without the final newline. A commented list spans the
/// following `#` lines until the value is complete. The last such comment wins (prose examples
/// come before the default).
pub fn commented_default(text: &str, key: &str) -> Option<std::ops::Range<usize>> {
    let mut offsets = Vec::new();
    let mut pos = 0;
    for l in text.split_inclusive('\n') {
        offsets.push((pos, l.trim_end_matches('\n')));
        pos += l.len();
    }
    let is_default = |l: &str| {
        l.strip_prefix('#')
            .and_then(|r| r.strip_prefix(key))
            .is_some_and(|r| r.trim_start().starts_with('='))
    };
    let first = offsets.iter().rposition(|(_, l)| is_default(l))?;
    let (start, line) = offsets[first];
    let mut body = line[1..].to_string();
    let mut last = first;
    // A value that does not parse on its own line continues on the next commented lines.
    while ConfFile::parse(&body).is_err() && last + 1 < offsets.len() && last < first + 64 {
        let next = offsets[last + 1].1;
        let Some(rest) = next.strip_prefix('#') else {
            break;
        };
        body.push('\n');
        body.push_str(rest);
        last += 1;
    }
    if ConfFile::parse(&body).is_err() {
        last = first;
    }
    let (s, l) = offsets[last];
    Some(start..s + l.len())
}

/// A `libvirt_config` task's arguments, typed.
#[derive(Debug)]
pub struct Request {
    /// Absolute path of the file.
    path: String,
    settings: Vec<(String, ConfValue)>,
    backup: bool,
}

impl Request {
    /// `settings` for the file at `path` (absolute), for a module that keeps settings of its own
    /// in a libvirt file (huge page mounts in qemu.conf) with [`LibvirtConfig`]'s `probes` and
    /// `plan`, so the file is edited by the same rules as a `libvirt_config` task.
    pub fn settings(path: &str, settings: Vec<(String, ConfValue)>) -> Request {
        Request {
            path: path.to_string(),
            settings,
            backup: false,
        }
    }
}

#[derive(Deserialize)]
struct RawRequest {
    file: String,
    settings: serde_json::Value,
    backup: bool,
}

/// A string libvirt can read back: one line, not containing both kinds of quote.
fn check_string(key: &str, s: &str) -> Result<(), ModuleError> {
    if s.contains('\n') || s.contains('\r') {
        return Err(
            ArgError::invalid("settings", format!("{key}: a value must be one line")).into(),
        );
    }
    if s.contains('"') && s.contains('\'') {
        return Err(ArgError::invalid(
            "settings",
            format!("{key}: libvirt strings have no escapes, so a value cannot hold both ' and \""),
        )
        .into());
    }
    Ok(())
}

fn conf_value(key: &str, v: &serde_json::Value, in_list: bool) -> Result<ConfValue, ModuleError> {
    use serde_json::Value;
    let bad = |what: &str| -> ModuleError {
        ArgError::invalid(
            "settings",
            format!("{key}: {what} (values are strings, integers, booleans or lists of strings)"),
        )
        .into()
    };
    Ok(match v {
        Value::String(s) => {
            check_string(key, s)?;
            ConfValue::Str(s.clone())
        }
        Value::Bool(b) if !in_list => ConfValue::Int(i64::from(*b)),
        Value::Number(n) if !in_list => ConfValue::Int(
            n.as_i64()
                .ok_or_else(|| bad(&format!("{n} is not an integer")))?,
        ),
        Value::Array(items) if !in_list => ConfValue::List(
            items
                .iter()
                .map(|x| conf_value(key, x, true))
                .collect::<Result<_, _>>()?,
        ),
        Value::Null => return Err(bad("no value")),
        Value::Object(_) => return Err(bad("a mapping is not a libvirt value")),
        _ if in_list => return Err(bad("list items must be strings")),
        _ => return Err(bad("unsupported value")),
    })
}

/// The daemon that reads a configuration file, from its name and, for the driver files, the
/// libvirtd/virtqemud units' state.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reader {
    /// The file belongs to this daemon.
    Daemon(&'static str),
    /// A driver's file: libvirtd, or this modular daemon when the host runs those.
    Driver(&'static str),
    Unknown,
}

fn reader(path: &str) -> Reader {
    let name = path.rsplit('/').next().unwrap_or(path);
    const DAEMONS: &[&str] = &[
        "libvirtd",
        "virtqemud",
        "virtlxcd",
        "virtxend",
        "virtchd",
        "virtnetworkd",
        "virtstoraged",
        "virtnodedevd",
        "virtnwfilterd",
        "virtsecretd",
        "virtinterfaced",
        "virtproxyd",
        "virtlogd",
        "virtlockd",
    ];
    if let Some(d) = name
        .strip_suffix(".conf")
        .and_then(|stem| DAEMONS.iter().find(|d| **d == stem))
    {
        return Reader::Daemon(d);
    }
    match name {
        "qemu.conf" => Reader::Driver("virtqemud"),
        "lxc.conf" => Reader::Driver("virtlxcd"),
        "libxl.conf" => Reader::Driver("virtxend"),
        "network.conf" => Reader::Driver("virtnetworkd"),
        _ => Reader::Unknown,
    }
}

/// Whether the host runs libvirt's modular daemons: virtqemud.service active; or, with neither
/// running (socket activation), virtqemud.service enabled and libvirtd.service not. `None` when
/// systemd could not tell.
fn modular(observed: &Observed) -> Option<bool> {
    let libvirtd = observed.fact::<UnitState>("libvirtd.service").ok()?;
    let virtqemud = observed.fact::<UnitState>("virtqemud.service").ok()?;
    if virtqemud.running() {
        return Some(true);
    }
    if libvirtd.running() {
        return Some(false);
    }
    let enabled = |u: &UnitState| u.unit_file_state.starts_with("enabled");
    Some(if enabled(&virtqemud) && !enabled(&libvirtd) {
        true
    } else if libvirtd.exists() {
        false
    } else {
        virtqemud.exists()
    })
}

impl Module for LibvirtConfig {
    type Request = Request;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn request(&self, args: Args, _ctx: &PlanContext) -> Result<Request, ModuleError> {
        let raw: RawRequest = args.parse()?;
        let file = raw.file.trim();
        let path = if file.starts_with('/') {
            file.to_string()
        } else if !file.is_empty() && !file.contains('/') && file != "." && file != ".." {
            format!("/etc/libvirt/{file}")
        } else {
            return Err(ArgError::invalid(
                "file",
                format!("{file:?}: give a file name under /etc/libvirt/ or an absolute path"),
            )
            .into());
        };
        let serde_json::Value::Object(map) = &raw.settings else {
            return Err(ArgError::invalid(
                "settings",
                "settings must be a mapping of key to value",
            )
            .into());
        };
        if map.is_empty() {
            return Err(ArgError::nothing_to_do("nothing to do: settings is empty").into());
        }
        let mut settings = Vec::new();
        for (key, v) in map {
            if key.is_empty()
                || !key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(ArgError::invalid(
                    "settings",
                    format!("{key:?} is not a libvirt setting name ([a-z_0-9]+)"),
                )
                .into());
            }
            settings.push((key.clone(), conf_value(key, v, false)?));
        }
        Ok(Request {
            path,
            settings,
            backup: raw.backup,
        })
    }

    fn probes(&self, req: &Request) -> Vec<Probe> {
        let mut probes = edit::edit_probes(&req.path, true);
        if let Reader::Driver(_) = reader(&req.path) {
            probes.push(UnitState::probe("libvirtd.service"));
            probes.push(UnitState::probe("virtqemud.service"));
        }
        probes
    }

    fn plan(&self, req: &Request, observed: &Observed) -> Result<Plan, ModuleError> {
        let state = observed.file(&req.path)?;
        edit::editable(&req.path, state)?;
        let text = edit::existing_text(&req.path, state)?.unwrap_or_default();
        let conf =
            ConfFile::parse(&text).map_err(|e| ModuleError::Host(format!("{}: {e}", req.path)))?;

        let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::new();
        let mut appended = String::new();
        let mut changed = Vec::new();
        for (key, want) in &req.settings {
            let found: Vec<&Entry> = conf.get(key).collect();
            let line = format!("{key} = {want}");
            match found.as_slice() {
                [] => {
                    changed.push(key.as_str());
                    match commented_default(&text, key) {
                        Some(range) => edits.push((range, line)),
                        None => {
                            appended.push_str(&line);
                            appended.push('\n');
                        }
                    }
                }
                [e] if &e.value == want => {}
                [e] => {
                    changed.push(key.as_str());
                    edits.push((e.span.clone(), line));
                }
                [a, b, ..] => {
                    return Err(ModuleError::Host(format!(
                        "{}: {key} is set twice, on lines {} and {}; remove one",
                        req.path, a.line, b.line
                    )))
                }
            }
        }

        let mut plan = Plan::ok();
        if !changed.is_empty() {
            let mut new = text.clone();
            edits.sort_by_key(|(r, _)| std::cmp::Reverse(r.start));
            for (range, line) in edits {
                new.replace_range(range, &line);
            }
            if !appended.is_empty() {
                if !new.is_empty() && !new.ends_with('\n') {
                    new.push('\n');
                }
                new.push_str(&appended);
            }
            edit::write_edited(
                &mut plan,
                &req.path,
                state,
                observed,
                new.as_bytes(),
                &Attrs::default(),
                req.backup,
            )?;
            if let Some(c) = plan.changes.last_mut() {
                c.summary = format!("{} ({})", c.summary, changed.join(", "));
            }
        }

        let daemon = match reader(&req.path) {
            Reader::Daemon(d) => Some(d),
            Reader::Driver(modular_daemon) => match modular(observed) {
                Some(true) => Some(modular_daemon),
                Some(false) => Some("libvirtd"),
                None => None,
            },
            Reader::Unknown => None,
        };
        plan.msg = Some(match daemon {
            Some(d) if plan.changed() => format!("read by {d}: restart it to apply"),
            Some(d) => format!("read by {d}"),
            None => match reader(&req.path) {
                Reader::Driver(m) => {
                    format!("read by libvirtd or {m}: systemd could not tell which runs here")
                }
                _ => "the daemon reading this file is not known".to_string(),
            },
        });
        Ok(plan
            .with_data("path", req.path.as_str())
            .with_data("daemon", daemon.map(str::to_string))
            .with_data(
                "changed_keys",
                changed.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{ArgErrorKind, CommandOutput, FileState, Observation};
    use crate::modules::facts::fixture;
    use crate::modules::testing::{arg_error, content, converge, req};
    use serde_json::json;

    const QEMU: &str = "/etc/libvirt/qemu.conf";

    fn unit(active: &str, file_state: &str) -> Observation {
        let load = if file_state.is_empty() {
            "not-found"
        } else {
            "loaded"
        };
        Observation::Command(CommandOutput::ok(&format!(
            "LoadState={load}\nActiveState={active}\nSubState=x\nUnitFileState={file_state}\nNeedDaemonReload=no\n"
        )))
    }

    /// A host with `path` holding `text` and the monolithic daemon running.
    fn host(path: &str, text: &str) -> Observed {
        Observed::new()
            .with_file(path, FileState::file(text).with_mode(0o600))
            .with_file("/etc/libvirt", FileState::dir())
            .with_fact::<UnitState>("libvirtd.service", unit("active", "enabled"))
            .with_fact::<UnitState>("virtqemud.service", unit("inactive", ""))
    }

    fn run(args: serde_json::Value, seen: &Observed) -> (Plan, String) {
        let r = req(&LibvirtConfig, args);
        let (p, after) = converge(&LibvirtConfig, &r, seen);
        let text = content(&after, &r.path);
        (p, text)
    }

    /// Lines that differ between two texts (line-wise, same line count assumed).
    fn changed_lines(a: &str, b: &str) -> Vec<(String, String)> {
        a.lines()
            .zip(b.lines())
            .filter(|(x, y)| x != y)
            .map(|(x, y)| (x.to_string(), y.to_string()))
            .collect()
    }

    #[test]
    fn parses_the_real_debian_files() {
        for f in ["qemu.conf", "libvirtd.conf"] {
            let text = fixture(&format!("libvirt_conf/{f}"));
            let conf = ConfFile::parse(&text).unwrap();
            assert!(
                conf.entries.is_empty(),
                "{f}: every setting is commented out"
            );
        }
        // Every commented default of the real files parses once uncommented, lists spanning
        // lines included.
        for (f, count) in [("qemu.conf", 90), ("libvirtd.conf", 40)] {
            let text = fixture(&format!("libvirt_conf/{f}"));
            let keys: Vec<&str> = text
                .lines()
                .filter_map(|l| l.strip_prefix('#')?.split_once(" = ").map(|(k, _)| k))
                .filter(|k| {
                    k.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                })
                .collect();
            assert!(keys.len() > count, "{f}: {}", keys.len());
            for key in keys {
                let r = commented_default(&text, key).unwrap();
                let body: String = text[r]
                    .lines()
                    .map(|l| l.strip_prefix('#').unwrap())
                    .collect::<Vec<_>>()
                    .join("\n");
                let conf = ConfFile::parse(&body).unwrap_or_else(|e| panic!("{f} {key}: {e}"));
                assert_eq!(conf.entries.len(), 1, "{f} {key}");
            }
        }
        let qemu = fixture("libvirt_conf/qemu.conf");
        let default = |key| {
            let r = commented_default(&qemu, key).unwrap();
            let body = qemu[r].replace("\n#", "\n");
            ConfFile::parse(&body[1..]).unwrap().entries.remove(0).value
        };
        let s = |x: &str| ConfValue::Str(x.into());
        assert_eq!(default("user"), s("libvirt-qemu"));
        assert_eq!(default("namespaces"), ConfValue::List(vec![s("mount")]));
        assert_eq!(default("max_files"), ConfValue::Int(0));
        let ConfValue::List(nvram) = default("nvram") else {
            panic!()
        };
        assert_eq!(nvram.len(), 4);
        let ConfValue::List(acl) = default("cgroup_device_acl") else {
            panic!()
        };
        assert_eq!(acl.len(), 7);
    }

    #[test]
    fn grammar() {
        let text = "a = \"x y\" # c\nb=-12;c = 'say \"hi\"'\nl = [ # first\n  \"p\",\n  # gap\n  \"q\", ]\nt = \"\"\"multi\nline\"\"\"\ne = []\n";
        let conf = ConfFile::parse(text).unwrap();
        let got: Vec<(&str, &ConfValue, usize)> = conf
            .entries
            .iter()
            .map(|e| (e.key.as_str(), &e.value, e.line))
            .collect();
        let s = |x: &str| ConfValue::Str(x.into());
        assert_eq!(
            got,
            vec![
                ("a", &s("x y"), 1),
                ("b", &ConfValue::Int(-12), 2),
                ("c", &s("say \"hi\""), 2),
                ("l", &ConfValue::List(vec![s("p"), s("q")]), 3),
                ("t", &s("multi\nline"), 7),
                ("e", &ConfValue::List(vec![]), 9),
            ]
        );
        assert_eq!(&text[conf.entries[0].span.clone()], "a = \"x y\"");
        for (bad, says) in [
            ("a = \"x\n", "line 1: unterminated string"),
            ("a = [\"x\"\nb = 1\n", "line 2: expected `,` or `]`"),
            ("a = [[\"x\"]]", "nested"),
            ("a 1", "expected `=`"),
            ("a = 1 b\n", "end of the line"),
            ("= 1", "setting name"),
            ("a = yes", "unexpected `y`"),
        ] {
            let e = ConfFile::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn values_are_written_in_libvirt_syntax() {
        let s = |x: &str| ConfValue::Str(x.into());
        assert_eq!(s("okd").to_string(), "\"okd\"");
        assert_eq!(s("a\"b").to_string(), "'a\"b'");
        assert_eq!(ConfValue::Int(1).to_string(), "1");
        assert_eq!(
            ConfValue::List(vec![s("a"), s("b")]).to_string(),
            "[ \"a\", \"b\" ]"
        );
        for v in [
            s("a\"b"),
            s("x"),
            ConfValue::List(vec![s("a")]),
            ConfValue::Int(-3),
        ] {
            let conf = ConfFile::parse(&format!("k = {v}\n")).unwrap();
            assert_eq!(conf.entries[0].value, v);
        }
    }

    #[test]
    fn seed_settings_replace_the_real_commented_defaults_in_place() {
        let before = fixture("libvirt_conf/qemu.conf");
        let (p, after) = run(
            json!({"settings": {
                "user": "okd", "group": "okd", "security_driver": "none",
                "hugetlbfs_mount": ["/dev/hugepages", "/dev/hugepages1G"]}}),
            &host(QEMU, &before),
        );
        assert_eq!(
            changed_lines(&before, &after),
            vec![
                (
                    "#security_driver = \"selinux\"".into(),
                    "security_driver = \"none\"".into()
                ),
                ("#user = \"libvirt-qemu\"".into(), "user = \"okd\"".into()),
                ("#group = \"libvirt-qemu\"".into(), "group = \"okd\"".into()),
                (
                    "#hugetlbfs_mount = \"/dev/hugepages\"".into(),
                    "hugetlbfs_mount = [ \"/dev/hugepages\", \"/dev/hugepages1G\" ]".into()
                ),
            ]
        );
        assert_eq!(before.lines().count(), after.lines().count());
        assert_eq!(p.changes.len(), 1);
        let d = p.changes[0].diff.as_ref().unwrap();
        assert_eq!(
            (d.before.as_str(), d.after.as_str()),
            (before.as_str(), after.as_str())
        );
        assert!(p.changes[0]
            .summary
            .contains("user, group, security_driver, hugetlbfs_mount"));
        // The file's mode is kept: no attributes are forced.
        assert!(matches!(&p.actions[0],
            crate::module::Action::WriteFile { path, attrs, .. } if path == QEMU && *attrs == Attrs::default()));
        assert_eq!(p.data["daemon"], json!("libvirtd"));
        assert_eq!(
            p.msg.as_deref(),
            Some("read by libvirtd: restart it to apply")
        );
        let parsed = ConfFile::parse(&after).unwrap();
        assert_eq!(parsed.entries.len(), 4);
    }

    #[test]
    fn a_commented_list_spanning_lines_is_replaced_whole() {
        let before = fixture("libvirt_conf/qemu.conf");
        let (_, after) = run(
            json!({"settings": {"cgroup_device_acl": ["/dev/null", "/dev/kvm", "/dev/vfio/vfio"]}}),
            &host(QEMU, &before),
        );
        assert!(after.contains(
            "#\ncgroup_device_acl = [ \"/dev/null\", \"/dev/kvm\", \"/dev/vfio/vfio\" ]\n#\n# RDMA"
        ));
        assert!(!after.contains("#    \"/dev/random\", \"/dev/urandom\","));
        assert_eq!(before.lines().count() - 4, after.lines().count());
    }

    #[test]
    fn present_settings_change_in_place_and_equal_ones_are_ok() {
        let text = "# top\nuser = \"root\"  # who\nmax_files = 1024\nnamespaces = [\n  \"mount\" ]\ntail = 1";
        let (p, after) = run(
            json!({"settings": {"user": "okd", "max_files": 32768, "namespaces": [], "tail": 1, "new_key": true}}),
            &host(QEMU, text),
        );
        assert_eq!(
            after,
            "# top\nuser = \"okd\"  # who\nmax_files = 32768\nnamespaces = []\ntail = 1\nnew_key = 1\n"
        );
        assert_eq!(
            p.data["changed_keys"],
            json!(["user", "max_files", "namespaces", "new_key"])
        );
        // The same values written differently are the same.
        let same = "user='okd'\nmax_files = +32768\nnamespaces = [ ]\ntail=1\nnew_key = 1\n";
        let r = req(
            &LibvirtConfig,
            json!({"settings": {"user": "okd", "max_files": 32768, "namespaces": [], "tail": true, "new_key": 1}}),
        );
        let p = LibvirtConfig.plan(&r, &host(QEMU, same)).unwrap();
        assert!(!p.changed(), "{:?}", p.changes);
        assert_eq!(p.msg.as_deref(), Some("read by libvirtd"));
    }

    #[test]
    fn new_keys_are_appended_and_a_missing_file_is_created() {
        let (_, after) = run(
            json!({"file": "libvirtd.conf", "settings": {"unix_sock_group": "libvirt", "log_level": 3}}),
            &host("/etc/libvirt/libvirtd.conf", "x = 1"),
        );
        assert_eq!(
            after,
            "x = 1\nunix_sock_group = \"libvirt\"\nlog_level = 3\n"
        );
        let seen = Observed::new()
            .with_file("/etc/libvirt/virtqemud.conf", FileState::absent())
            .with_file("/etc/libvirt", FileState::dir());
        let (p, after) = run(
            json!({"file": "virtqemud.conf", "settings": {"log_outputs": "1:journald"}}),
            &seen,
        );
        assert_eq!(after, "log_outputs = \"1:journald\"\n");
        assert_eq!(p.data["daemon"], json!("virtqemud"));
    }

    #[test]
    fn a_key_set_twice_names_both_lines() {
        let text = "# c\nuser = \"a\"\n\nuser = \"b\"\n";
        let r = req(&LibvirtConfig, json!({"settings": {"user": "a"}}));
        let e = LibvirtConfig.plan(&r, &host(QEMU, text)).unwrap_err();
        assert_eq!(
            e,
            ModuleError::Host(format!(
                "{QEMU}: user is set twice, on lines 2 and 4; remove one"
            ))
        );
        let e = LibvirtConfig
            .plan(&r, &host(QEMU, "user = \"a\n"))
            .unwrap_err();
        assert!(e.to_string().contains("line 1: unterminated string"), "{e}");
    }

    #[test]
    fn the_reading_daemon_comes_from_the_units() {
        let r = req(&LibvirtConfig, json!({"settings": {"user": "okd"}}));
        let base = |l: Observation, v: Observation| {
            Observed::new()
                .with_file(QEMU, FileState::file("user = \"okd\"\n"))
                .with_fact::<UnitState>("libvirtd.service", l)
                .with_fact::<UnitState>("virtqemud.service", v)
        };
        for (l, v, want) in [
            (
                unit("active", "enabled"),
                unit("inactive", "disabled"),
                json!("libvirtd"),
            ),
            (
                unit("inactive", "disabled"),
                unit("active", "enabled"),
                json!("virtqemud"),
            ),
            (
                unit("inactive", "disabled"),
                unit("inactive", "enabled"),
                json!("virtqemud"),
            ),
            (
                unit("inactive", "enabled"),
                unit("inactive", ""),
                json!("libvirtd"),
            ),
            (
                Observation::Command(CommandOutput::failed(127, "sh: systemctl: not found")),
                unit("inactive", ""),
                json!(null),
            ),
        ] {
            let p = LibvirtConfig.plan(&r, &base(l, v)).unwrap();
            assert!(!p.changed());
            assert_eq!(p.data["daemon"], want);
            if want.is_null() {
                assert!(p.msg.unwrap().contains("libvirtd or virtqemud"));
            }
        }
        assert_eq!(
            LibvirtConfig.probes(&r),
            vec![
                Probe::File(QEMU.into()),
                Probe::File("/etc/libvirt".into()),
                UnitState::probe("libvirtd.service"),
                UnitState::probe("virtqemud.service"),
            ]
        );
        let own = req(
            &LibvirtConfig,
            json!({"file": "/srv/virtlogd.conf", "settings": {"max_size": 1}}),
        );
        assert_eq!(own.path, "/srv/virtlogd.conf");
        assert_eq!(LibvirtConfig.probes(&own).len(), 2);
    }

    #[test]
    fn argument_errors_before_contact() {
        for (v, kind, says) in [
            (
                json!({"settings": "user"}),
                ArgErrorKind::Invalid,
                "mapping",
            ),
            (
                json!({"settings": ["user"]}),
                ArgErrorKind::Invalid,
                "mapping",
            ),
            (json!({"settings": {}}), ArgErrorKind::NothingToDo, "empty"),
            (
                json!({"settings": {"User": "x"}}),
                ArgErrorKind::Invalid,
                "[a-z_0-9]+",
            ),
            (
                json!({"settings": {"a-b": "x"}}),
                ArgErrorKind::Invalid,
                "[a-z_0-9]+",
            ),
            (
                json!({"settings": {"user": null}}),
                ArgErrorKind::Invalid,
                "no value",
            ),
            (
                json!({"settings": {"user": {"a": 1}}}),
                ArgErrorKind::Invalid,
                "mapping",
            ),
            (
                json!({"settings": {"l": [["a"]]}}),
                ArgErrorKind::Invalid,
                "list items",
            ),
            (
                json!({"settings": {"l": [1]}}),
                ArgErrorKind::Invalid,
                "list items",
            ),
            (
                json!({"settings": {"x": 1.5}}),
                ArgErrorKind::Invalid,
                "not an integer",
            ),
            (
                json!({"settings": {"x": "a\nb"}}),
                ArgErrorKind::Invalid,
                "one line",
            ),
            (
                json!({"settings": {"x": "a'\""}}),
                ArgErrorKind::Invalid,
                "both",
            ),
            (
                json!({"file": "sub/qemu.conf", "settings": {"x": 1}}),
                ArgErrorKind::Invalid,
                "absolute",
            ),
            (
                json!({"file": "", "settings": {"x": 1}}),
                ArgErrorKind::Invalid,
                "absolute",
            ),
        ] {
            let e = arg_error(&LibvirtConfig, v.clone());
            assert_eq!(e.kind, kind, "{v}");
            assert!(e.to_string().contains(says), "{v}: {e}");
        }
    }
}
