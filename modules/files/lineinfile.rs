//! `lineinfile`: one line in a file is present (or replaced), or lines are absent.

use super::edit::{self, InsertAt, Lines};
use crate::module::{
    ArgError, Attrs, Module, ModuleError, ModuleSpec, Observed, Plan, PlanContext, Probe,
};
use crate::modules::args::Presence;
use crate::params::{Args, ParamKind, ParamSpec};
use regex::bytes::{Captures, Regex};
use serde::Deserialize;

pub struct LineInFile;

static SPEC: ModuleSpec = ModuleSpec {
    name: "lineinfile",
    summary:
        "Ensure a line is in a file (replacing a matching line), or that matching lines are not",
    description: "Edits one line of an existing text file; the rest of the file is kept byte for \
byte and the file is only written (atomically) when a line actually changes.\n\n\
With `state: present` and `regexp`, the last line matching `regexp` (the first with \
`firstmatch`) is replaced by `line`; if it already equals `line` nothing happens. When `regexp` \
matches no line, or is not given, `line` is added unless a line equal to it already exists \
(lines are never duplicated): at the end of the file, or after the last line matching \
`insertafter` / before the last line matching `insertbefore` (the first with `firstmatch`; at \
the end when nothing matches; `BOF` means the beginning). With `backrefs: true` the matched \
line's groups fill `\\1` or `\\g<name>` in `line` (Python syntax, as in Ansible), and nothing is \
written when `regexp` matches no line.\n\n\
With `state: absent` every line matching `regexp` (or, without `regexp`, equal to `line`) is \
removed. Regular expressions use Rust's `regex` syntax (Python's, minus look-around and \
backreferences inside the pattern) and are searched for anywhere in a line. Lines are compared \
ignoring a trailing `\\r`. A missing file is an error unless `create: true` (missing parent \
directories are created too); with `state: absent` a missing file is fine. A file lacking a final \
newline keeps lacking it unless the edit is at its end.",
    params: &[
        ParamSpec::required("path", ParamKind::Str, "The file to edit").aliases(&["dest", "name"]),
        ParamSpec::optional(
            "regexp",
            ParamKind::Str,
            "Regular expression selecting the line to replace or remove",
        )
        .aliases(&["regex"]),
        ParamSpec::optional(
            "line",
            ParamKind::Str,
            "The line (required with state=present)",
        )
        .aliases(&["value"]),
        ParamSpec::with_default(
            "state",
            ParamKind::Choice(&["present", "absent"]),
            "present",
            "Whether the line must be there",
        ),
        ParamSpec::optional(
            "insertafter",
            ParamKind::Str,
            "Regular expression, or EOF: where a new line goes",
        ),
        ParamSpec::optional(
            "insertbefore",
            ParamKind::Str,
            "Regular expression, or BOF: where a new line goes",
        ),
        ParamSpec::with_default(
            "create",
            ParamKind::Bool,
            "false",
            "Create the file if it is missing",
        ),
        ParamSpec::with_default(
            "backrefs",
            ParamKind::Bool,
            "false",
            "Expand \\1 and \\g<name> in line from the regexp match; never add a line",
        ),
        ParamSpec::with_default(
            "firstmatch",
            ParamKind::Bool,
            "false",
            "Use the first match of regexp/insertafter/insertbefore instead of the last",
        ),
        ParamSpec::with_default(
            "backup",
            ParamKind::Bool,
            "false",
            "Keep a timestamped copy of the old file",
        ),
        ParamSpec::optional("mode", ParamKind::Mode, "Permissions, e.g. \"0644\""),
        ParamSpec::optional("owner", ParamKind::Str, "Owning user"),
        ParamSpec::optional("group", ParamKind::Str, "Owning group"),
    ],
    free_form: None,
    example: r#"- name: Let libvirt run QEMU as libvirt-qemu
  lineinfile:
    path: /etc/libvirt/qemu.conf
    regexp: '^#?\s*user\s*='
    line: 'user = "libvirt-qemu"'
"#,
};

/// A piece of a `backrefs` replacement.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(Vec<u8>),
    Group(usize),
    Named(String),
}

/// Parse Python's `re` replacement syntax (`\1`, `\12`, `\g<1>`, `\g<name>`, `\\`, `\t`, ...)
/// against the groups `re` has, so a bad reference is reported before any host is contacted.
fn parse_replacement(template: &str, re: &Regex) -> Result<Vec<Piece>, String> {
    let groups = re.captures_len();
    let mut out = Vec::new();
    let mut lit = Vec::new();
    let bytes = template.as_bytes();
    let mut i = 0;
    let group = |n: usize| {
        if n < groups {
            Ok(Piece::Group(n))
        } else {
            Err(format!(
                "invalid group reference {n} in line (the regexp has {} groups)",
                groups - 1
            ))
        }
    };
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'\\' {
            lit.push(b);
            i += 1;
            continue;
        }
        let Some(&next) = bytes.get(i + 1) else {
            return Err("line ends with a lone backslash (write \\\\ for one)".into());
        };
        i += 2;
        let is_oct = |c: u8| (b'0'..=b'7').contains(&c);
        let piece = match next {
            b'g' => {
                let rest = &template[i..];
                let Some(end) = rest.strip_prefix('<').and_then(|r| r.find('>')) else {
                    return Err("\\g must be followed by <name> or <number>".into());
                };
                let name = &rest[1..=end];
                i += end + 2;
                match name.parse::<usize>() {
                    Ok(n) => group(n)?,
                    Err(_) if re.capture_names().flatten().any(|g| g == name) => {
                        Piece::Named(name.into())
                    }
                    Err(_) => return Err(format!("unknown group name `{name}` in line")),
                }
            }
            // Octal escape: \0, \0N, \0NN.
            b'0' => {
                let mut v = 0u32;
                let mut n = 0;
                while n < 2 && bytes.get(i).copied().is_some_and(is_oct) {
                    v = v * 8 + u32::from(bytes[i] - b'0');
                    i += 1;
                    n += 1;
                }
                Piece::Literal(vec![v as u8])
            }
            b'1'..=b'9' => {
                let d2 = bytes.get(i).copied().filter(u8::is_ascii_digit);
                let d3 = bytes.get(i + 1).copied();
                match d2 {
                    // Three octal digits are a character, as in Python.
                    Some(d2) if is_oct(next) && is_oct(d2) && d3.is_some_and(is_oct) => {
                        let v = u32::from(next - b'0') * 64
                            + u32::from(d2 - b'0') * 8
                            + u32::from(d3.unwrap() - b'0');
                        if v > 0o377 {
                            return Err(format!("octal escape \\{v:o} is out of range"));
                        }
                        i += 2;
                        Piece::Literal(vec![v as u8])
                    }
                    Some(d2) => {
                        i += 1;
                        group(usize::from(next - b'0') * 10 + usize::from(d2 - b'0'))?
                    }
                    None => group(usize::from(next - b'0'))?,
                }
            }
            b'n' | b'r' => {
                return Err(
                    "line must be a single line: \\n and \\r escapes are not allowed".into(),
                )
            }
            b'\\' => Piece::Literal(b"\\".to_vec()),
            b't' => Piece::Literal(b"\t".to_vec()),
            b'a' => Piece::Literal(b"\x07".to_vec()),
            b'b' => Piece::Literal(b"\x08".to_vec()),
            b'f' => Piece::Literal(b"\x0c".to_vec()),
            b'v' => Piece::Literal(b"\x0b".to_vec()),
            c if c.is_ascii_alphabetic() => {
                return Err(format!("bad escape \\{} in line", c as char))
            }
            // Python keeps other escapes (`\.`, `\&`) as they are.
            c => Piece::Literal(vec![b'\\', c]),
        };
        match piece {
            Piece::Literal(l) => lit.extend(l),
            other => {
                if !lit.is_empty() {
                    out.push(Piece::Literal(std::mem::take(&mut lit)));
                }
                out.push(other);
            }
        }
    }
    if !lit.is_empty() {
        out.push(Piece::Literal(lit));
    }
    Ok(out)
}

/// The replacement with the match's groups filled in (a group that did not take part is empty,
/// as in Python 3.5+).
fn expand(pieces: &[Piece], caps: &Captures) -> Vec<u8> {
    let mut out = Vec::new();
    for p in pieces {
        match p {
            Piece::Literal(l) => out.extend_from_slice(l),
            Piece::Group(n) => {
                out.extend_from_slice(caps.get(*n).map_or(&b""[..], |m| m.as_bytes()))
            }
            Piece::Named(n) => {
                out.extend_from_slice(caps.name(n).map_or(&b""[..], |m| m.as_bytes()))
            }
        }
    }
    out
}

/// A `lineinfile` task's arguments as the parameter table delivers them.
#[derive(Debug, Deserialize)]
struct Params {
    path: String,
    regexp: Option<String>,
    line: Option<String>,
    state: Presence,
    insertafter: Option<String>,
    insertbefore: Option<String>,
    create: bool,
    backrefs: bool,
    firstmatch: bool,
    backup: bool,
    mode: Option<u32>,
    owner: Option<String>,
    group: Option<String>,
}

/// A `lineinfile` task's arguments, checked, with its regular expressions compiled.
#[derive(Debug)]
pub struct Request {
    path: String,
    present: bool,
    regexp: Option<Regex>,
    line: Option<Vec<u8>>,
    /// Set when `backrefs: true`.
    replacement: Option<Vec<Piece>>,
    insert: InsertAt,
    firstmatch: bool,
    create: bool,
    backup: bool,
    attrs: Attrs,
}

impl Request {
    fn from_params(p: Params) -> Result<Self, ModuleError> {
        let present = p.state == Presence::Present;
        let regexp = match p.regexp.as_deref() {
            Some("") => {
                return Err(ArgError::invalid(
                    "regexp",
                    "regexp is empty: it would match every line",
                )
                .into())
            }
            Some(re) => Some(edit::regex(re, "regexp")?),
            None => None,
        };
        let line = p.line;
        if line.as_ref().is_some_and(|l| l.contains('\n')) {
            return Err(ArgError::invalid(
                "line",
                "line must be a single line (it contains a newline); use blockinfile for several lines",
            )
            .into());
        }
        if present && line.is_none() {
            return Err(
                ArgError::requires("state", "line", "line is required with state=present").into(),
            );
        }
        if !present && regexp.is_none() && line.is_none() {
            return Err(ArgError::requires(
                "state",
                "regexp",
                "state=absent needs regexp or line to know which lines to remove",
            )
            .into());
        }
        let backrefs = present && p.backrefs;
        let replacement = match (&regexp, backrefs) {
            (None, true) => {
                return Err(
                    ArgError::requires("backrefs", "regexp", "backrefs needs regexp").into(),
                )
            }
            (Some(re), true) => Some(
                parse_replacement(line.as_deref().unwrap_or_default(), re)
                    .map_err(|m| ArgError::invalid("line", m))?,
            ),
            _ => None,
        };
        Ok(Request {
            path: p.path,
            present,
            regexp,
            line: line.map(String::into_bytes),
            replacement,
            insert: InsertAt::from_params(p.insertafter.as_deref(), p.insertbefore.as_deref())?,
            firstmatch: p.firstmatch,
            create: present && p.create,
            backup: p.backup,
            attrs: Attrs {
                mode: p.mode,
                owner: p.owner,
                group: p.group,
            },
        })
    }
}

/// What the edit did to the lines, for the result message.
enum Edit {
    Unchanged(&'static str),
    Changed(&'static str),
}

fn edit_present(r: &Request, lines: &mut Lines) -> Edit {
    let line = r.line.as_deref().unwrap_or_default();
    if let Some(re) = &r.regexp {
        let mut hits = lines
            .lines
            .iter()
            .enumerate()
            .filter(|(_, l)| re.is_match(l))
            .map(|(i, _)| i);
        let hit = if r.firstmatch {
            hits.next()
        } else {
            hits.next_back()
        };
        if let Some(i) = hit {
            let new = match &r.replacement {
                Some(pieces) => expand(
                    pieces,
                    &re.captures(&lines.lines[i]).expect("matched above"),
                ),
                None => line.to_vec(),
            };
            if edit::strip_cr(&lines.lines[i]) == new.as_slice() {
                return Edit::Unchanged("line already present");
            }
            lines.splice(i..i + 1, vec![new]);
            return Edit::Changed("line replaced");
        }
        if r.replacement.is_some() {
            // Without a match the backreferences have nothing to expand from.
            return Edit::Unchanged("regexp matched no line; nothing to do with backrefs");
        }
    }
    if lines.lines.iter().any(|l| edit::strip_cr(l) == line) {
        return Edit::Unchanged("line already present");
    }
    let at = r.insert.position(lines, r.firstmatch);
    lines.splice(at..at, vec![line.to_vec()]);
    Edit::Changed("line added")
}

fn edit_absent(r: &Request, lines: &mut Lines) -> usize {
    match (&r.regexp, &r.line) {
        (Some(re), _) => lines.remove_matching(|l| re.is_match(l)),
        (None, Some(line)) => lines.remove_matching(|l| edit::strip_cr(l) == line.as_slice()),
        (None, None) => 0,
    }
}

impl Module for LineInFile {
    type Request = Request;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn request(&self, args: Args, _ctx: &PlanContext) -> Result<Request, ModuleError> {
        Request::from_params(args.parse()?)
    }

    fn probes(&self, r: &Request) -> Vec<Probe> {
        edit::edit_probes(&r.path, r.create)
    }

    fn plan(&self, r: &Request, observed: &Observed) -> Result<Plan, ModuleError> {
        let path = r.path.as_str();
        let state = observed.file(path)?;
        edit::editable(path, state)?;
        let mut plan = Plan::ok();
        if !state.exists() {
            if !r.present {
                plan.msg = Some(format!("{path} does not exist"));
                return Ok(plan.with_data("found", 0));
            }
            if !r.create {
                return Err(ModuleError::Host(format!(
                    "{path} does not exist (set create: true to create it)"
                )));
            }
        }
        let mut lines = Lines::parse(state.content.as_deref().unwrap_or_default());
        let (changed, msg) = if r.present {
            match edit_present(r, &mut lines) {
                Edit::Changed(m) => (true, m.to_string()),
                Edit::Unchanged(m) => (false, m.to_string()),
            }
        } else {
            let found = edit_absent(r, &mut lines);
            plan = plan.with_data("found", found);
            (found > 0, format!("{found} line(s) removed"))
        };
        if changed {
            edit::write_edited(
                &mut plan,
                path,
                state,
                observed,
                &lines.to_bytes(),
                &r.attrs,
                r.backup,
            )?;
        } else if state.exists() {
            edit::ensure_attrs(&mut plan, path, state, &r.attrs);
        }
        plan.msg = Some(msg);
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{Action, ArgErrorKind, FileState};
    use crate::modules::testing::{arg_error, content, converge, req};
    use serde_json::json;

    const P: &str = "/etc/x.conf";

    /// Plan against a file holding `before`, check the second run is `ok`, and return the
    /// content after the first run (`before` when nothing was written) and the plan.
    fn run(a: serde_json::Value, before: &str) -> (String, Plan) {
        let a = req(&LineInFile, a);
        let obs = Observed::new().with_file(P, FileState::file(before));
        let (p, after) = converge(&LineInFile, &a, &obs);
        (content(&after, P), p)
    }

    fn after(a: serde_json::Value, before: &str) -> String {
        run(a, before).0
    }

    #[test]
    fn appends_a_missing_line_once() {
        let (text, p) = run(
            json!({"path": P, "line": "net.ipv4.ip_forward = 1"}),
            "a = 1\n",
        );
        assert_eq!(text, "a = 1\nnet.ipv4.ip_forward = 1\n");
        assert_eq!(p.changes[0].summary, format!("update {P}"));
        assert_eq!(p.msg.as_deref(), Some("line added"));
        assert_eq!(
            p.actions,
            vec![Action::write(
                P,
                "a = 1\nnet.ipv4.ip_forward = 1\n",
                Attrs::default(),
                false
            )]
        );
    }

    #[test]
    fn existing_exact_line_is_never_duplicated() {
        let before = "x\nnet.ipv4.ip_forward = 1\ny\n";
        let (text, p) = run(
            json!({"path": P, "line": "net.ipv4.ip_forward = 1"}),
            before,
        );
        assert_eq!(text, before);
        assert!(p.actions.is_empty());
        // Also when a regexp is given that matches nothing, and insertafter points elsewhere.
        let a = json!({"path": P, "regexp": "^nomatch", "line": "net.ipv4.ip_forward = 1", "insertafter": "^y"});
        assert_eq!(after(a, before), before);
        // CRLF files compare like LF ones.
        assert_eq!(
            after(json!({"path": P, "line": "b"}), "a\r\nb\r\n"),
            "a\r\nb\r\n"
        );
    }

    #[test]
    fn regexp_replaces_the_last_match_or_the_first_with_firstmatch() {
        let before = "#user = \"root\"\nuser = \"root\"\ngroup = \"root\"\n";
        let a = json!({"path": P, "regexp": "^#?user\\s*=", "line": "user = \"libvirt-qemu\""});
        let (text, p) = run(a, before);
        assert_eq!(
            text,
            "#user = \"root\"\nuser = \"libvirt-qemu\"\ngroup = \"root\"\n"
        );
        assert_eq!(p.msg.as_deref(), Some("line replaced"));
        let a = json!({"path": P, "regexp": "^#?user\\s*=", "line": "user = \"libvirt-qemu\"", "firstmatch": true});
        assert_eq!(
            after(a, before),
            "user = \"libvirt-qemu\"\nuser = \"root\"\ngroup = \"root\"\n"
        );
    }

    #[test]
    fn matching_line_already_equal_is_ok() {
        let before = "PermitRootLogin no\n";
        let (text, p) = run(
            json!({"path": P, "regexp": "^PermitRootLogin", "line": "PermitRootLogin no"}),
            before,
        );
        assert_eq!(text, before);
        assert!(!p.changed());
        assert_eq!(p.msg.as_deref(), Some("line already present"));
        // A CRLF line is the same line: not rewritten.
        let before = "a\r\nPermitRootLogin no\r\n";
        let a = json!({"path": P, "regexp": "^PermitRootLogin", "line": "PermitRootLogin no"});
        assert!(!run(a, before).1.changed());
    }

    #[test]
    fn regexp_without_match_inserts_per_insertafter_and_insertbefore() {
        let before = "[a]\nk=1\n[b]\nk=2\n[a]\n";
        let line = |extra: serde_json::Value| {
            let mut a = json!({"path": P, "regexp": "^new=", "line": "new=1"});
            a.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            after(a, before)
        };
        assert_eq!(line(json!({})), format!("{before}new=1\n"));
        assert_eq!(
            line(json!({"insertafter": "EOF"})),
            format!("{before}new=1\n")
        );
        assert_eq!(
            line(json!({"insertbefore": "BOF"})),
            format!("new=1\n{before}")
        );
        assert_eq!(
            line(json!({"insertafter": "BOF"})),
            format!("new=1\n{before}")
        );
        // Last match by default, first with firstmatch, for both directions.
        assert_eq!(
            line(json!({"insertafter": "^\\[a\\]"})),
            "[a]\nk=1\n[b]\nk=2\n[a]\nnew=1\n"
        );
        assert_eq!(
            line(json!({"insertafter": "^\\[a\\]", "firstmatch": true})),
            "[a]\nnew=1\nk=1\n[b]\nk=2\n[a]\n"
        );
        assert_eq!(
            line(json!({"insertbefore": "^k="})),
            "[a]\nk=1\n[b]\nnew=1\nk=2\n[a]\n"
        );
        assert_eq!(
            line(json!({"insertbefore": "^k=", "firstmatch": true})),
            "[a]\nnew=1\nk=1\n[b]\nk=2\n[a]\n"
        );
        // No match for the insert regexp: end of file.
        assert_eq!(
            line(json!({"insertbefore": "^zzz"})),
            format!("{before}new=1\n")
        );
    }

    #[test]
    fn regex_special_characters_and_quotes_are_literal_in_line() {
        let line = r#"exec "$@" 'a\1' && echo ${HOME} | tr [a-z] * \n"#;
        let before = "first\n";
        let (text, p) = run(json!({"path": P, "line": line}), before);
        assert_eq!(text, format!("first\n{line}\n"));
        assert!(matches!(&p.actions[0], Action::WriteFile { .. }));
        // An escaped regexp finds such a line again.
        let re = format!("^{}$", regex::escape(line));
        assert_eq!(
            after(json!({"path": P, "regexp": re, "line": line}), &text),
            text
        );
    }

    #[test]
    fn backrefs_expand_groups() {
        let before = "GRUB_CMDLINE_LINUX=\"quiet\"\n";
        let a = json!({
            "path": P, "regexp": "^(GRUB_CMDLINE_LINUX=\"(?P<args>[^\"]*?))(?: intel_iommu=on)?\"$",
            "line": "\\1 intel_iommu=on\"", "backrefs": true
        });
        assert_eq!(
            after(a, before),
            "GRUB_CMDLINE_LINUX=\"quiet intel_iommu=on\"\n"
        );
        let a = json!({
            "path": P, "regexp": "^GRUB_CMDLINE_LINUX=\"(?P<args>.*?)( x)?\"$",
            "line": "GRUB_CMDLINE_LINUX=\"\\g<args> x\"", "backrefs": true
        });
        assert_eq!(after(a.clone(), before), "GRUB_CMDLINE_LINUX=\"quiet x\"\n");
        // `$` and `${1}` in line are literal text, not the regex crate's syntax. (This regexp
        // matches its own result differently, so only one run is checked.)
        let a = req(
            &LineInFile,
            json!({"path": P, "regexp": "^(a)=(.*)$", "line": "\\1=$2 ${1} \\\\ \\g<2>", "backrefs": true}),
        );
        let obs = Observed::new().with_file(P, FileState::file("a=b\n"));
        let p = LineInFile.plan(&a, &obs).unwrap();
        assert_eq!(
            p.actions,
            vec![Action::write(
                P,
                "a=$2 ${1} \\ b\n",
                Attrs::default(),
                false
            )]
        );
    }

    #[test]
    fn backrefs_without_match_write_nothing() {
        let before = "other\n";
        let a = json!({"path": P, "regexp": "^(x)=", "line": "\\1=1", "backrefs": true});
        let (text, p) = run(a, before);
        assert_eq!(text, before);
        assert!(!p.changed());
        // Not even to a missing file with create: true.
        let a = req(
            &LineInFile,
            json!({"path": P, "regexp": "^(x)=", "line": "\\1=1", "backrefs": true, "create": true}),
        );
        let obs = Observed::new()
            .with_file(P, FileState::absent())
            .with_file("/etc", FileState::dir());
        assert!(LineInFile.plan(&a, &obs).unwrap().actions.is_empty());
    }

    #[test]
    fn replacement_syntax() {
        let re = Regex::new("(?P<k>a)(b)?").unwrap();
        let p = |t: &str| parse_replacement(t, &re);
        assert_eq!(
            p("x\\1\\2y").unwrap(),
            vec![
                Piece::Literal(b"x".to_vec()),
                Piece::Group(1),
                Piece::Group(2),
                Piece::Literal(b"y".to_vec())
            ]
        );
        assert_eq!(
            p("\\g<k>\\g<0>").unwrap(),
            vec![Piece::Named("k".into()), Piece::Group(0)]
        );
        assert_eq!(
            p("\\t\\.\\&\\101").unwrap(),
            vec![Piece::Literal(b"\t\\.\\&A".to_vec())]
        );
        assert!(p("\\3").unwrap_err().contains("invalid group reference 3"));
        assert!(p("\\12").is_err());
        assert!(p("\\g<nope>").unwrap_err().contains("nope"));
        assert!(p("\\g<k").is_err());
        assert!(p("\\n").is_err());
        assert!(p("\\q").is_err());
        assert!(p("end\\").is_err());
        // A group that did not take part expands to nothing.
        let caps = re.captures(b"a").unwrap();
        assert_eq!(expand(&p("[\\1|\\2]").unwrap(), &caps), b"[a|]");
    }

    #[test]
    fn absent_removes_every_matching_line() {
        let before = "keep\nPermitRootLogin yes\n#x\nPermitRootLogin no\nend";
        let (text, p) = run(
            json!({"path": P, "regexp": "^PermitRootLogin", "state": "absent"}),
            before,
        );
        assert_eq!(text, "keep\n#x\nend");
        assert_eq!(p.data["found"], json!(2));
        // By exact line without regexp; regex characters in line are literal.
        let (text, _) = run(
            json!({"path": P, "line": "a.*b", "state": "absent"}),
            "a.*b\naxxb\n",
        );
        assert_eq!(text, "axxb\n");
        // Nothing to remove: ok.
        let (text, p) = run(json!({"path": P, "line": "zzz", "state": "absent"}), "a\n");
        assert_eq!((text.as_str(), p.changed()), ("a\n", false));
        // Missing file: ok.
        let a = req(
            &LineInFile,
            json!({"path": P, "regexp": "x", "state": "absent"}),
        );
        let obs = Observed::new().with_file(P, FileState::absent());
        assert!(!LineInFile.plan(&a, &obs).unwrap().changed());
    }

    #[test]
    fn missing_file_is_an_error_unless_create() {
        let a = req(&LineInFile, json!({"path": "/etc/new/x.conf", "line": "a"}));
        let obs = Observed::new().with_file("/etc/new/x.conf", FileState::absent());
        let e = LineInFile.plan(&a, &obs).unwrap_err();
        assert!(
            matches!(&e, ModuleError::Host(m) if m.contains("create: true")),
            "{e}"
        );

        let a = req(
            &LineInFile,
            json!({"path": "/etc/new/x.conf", "line": "a", "create": true, "mode": "0600"}),
        );
        assert_eq!(
            LineInFile.probes(&a),
            vec![
                Probe::File("/etc/new/x.conf".into()),
                Probe::File("/etc/new".into())
            ]
        );
        let obs = obs.with_file("/etc/new", FileState::absent());
        let (p, after) = converge(&LineInFile, &a, &obs);
        assert_eq!(
            p.actions,
            vec![
                Action::MakeDir {
                    path: "/etc/new".into(),
                    attrs: Attrs::default()
                },
                Action::write(
                    "/etc/new/x.conf",
                    "a\n",
                    Attrs {
                        mode: Some(0o600),
                        ..Attrs::default()
                    },
                    false
                ),
            ]
        );
        assert_eq!(content(&after, "/etc/new/x.conf"), "a\n");
        // Existing parent: just the file.
        let obs = Observed::new()
            .with_file("/etc/new/x.conf", FileState::absent())
            .with_file("/etc/new", FileState::dir());
        let p = LineInFile.plan(&a, &obs).unwrap();
        assert_eq!(p.actions.len(), 1);
    }

    #[test]
    fn unusable_paths_are_errors() {
        let a = req(&LineInFile, json!({"path": P, "line": "a", "create": true}));
        for st in [
            FileState::dir(),
            FileState {
                content: None,
                size: 1 << 30,
                ..FileState::file("")
            },
        ] {
            let obs = Observed::new()
                .with_file(P, st)
                .with_file("/etc", FileState::dir());
            assert!(matches!(
                LineInFile.plan(&a, &obs),
                Err(ModuleError::Host(_))
            ));
        }
    }

    #[test]
    fn attrs_only_and_backup() {
        let (_, p) = run(json!({"path": P, "line": "a", "mode": "0600"}), "a\n");
        assert_eq!(
            p.actions,
            vec![Action::SetAttrs {
                path: P.into(),
                attrs: Attrs {
                    mode: Some(0o600),
                    ..Attrs::default()
                }
            }]
        );
        let (_, p) = run(json!({"path": P, "line": "b", "backup": true}), "a\n");
        assert!(matches!(
            &p.actions[0],
            Action::WriteFile { backup: true, .. }
        ));
    }

    #[test]
    fn rest_of_file_is_kept_byte_for_byte() {
        let a = req(
            &LineInFile,
            json!({"path": P, "regexp": "^b=", "line": "b=2"}),
        );
        let before: &[u8] = b"a=\xff\xfe\r\nb=1\n\n  trailing  \nno-final-newline";
        let obs = Observed::new().with_file(P, FileState::file(before));
        let (_, state) = converge(&LineInFile, &a, &obs);
        assert_eq!(
            state.file(P).unwrap().content.as_deref().unwrap(),
            b"a=\xff\xfe\r\nb=2\n\n  trailing  \nno-final-newline"
        );
        // Appending to a file without final newline adds one first.
        assert_eq!(after(json!({"path": P, "line": "z"}), "a"), "a\nz\n");
        // An empty file.
        assert_eq!(after(json!({"path": P, "line": "z"}), ""), "z\n");
    }

    #[test]
    fn writes_through_a_symlink_to_its_target() {
        let a = req(
            &LineInFile,
            json!({"path": "/etc/resolv.conf", "line": "options edns0"}),
        );
        let st = FileState {
            link_target: Some("../run/resolv.conf".into()),
            ..FileState::file("nameserver 1.1.1.1\n")
        };
        let obs = Observed::new().with_file("/etc/resolv.conf", st);
        let p = LineInFile.plan(&a, &obs).unwrap();
        assert_eq!(p.actions[0].path(), Some("/etc/../run/resolv.conf"));
    }

    #[test]
    fn bad_argument_combinations_are_caught_before_contact() {
        let invalid = ArgErrorKind::Invalid;
        let requires = |other| ArgErrorKind::Requires { other };
        for (bad, kind, param) in [
            (json!({"path": P}), requires("line"), "state"),
            (
                json!({"path": P, "state": "absent"}),
                requires("regexp"),
                "state",
            ),
            (
                json!({"path": P, "line": "a", "regexp": ""}),
                invalid,
                "regexp",
            ),
            (
                json!({"path": P, "line": "a", "regexp": "("}),
                invalid,
                "regexp",
            ),
            (
                json!({"path": P, "line": "a", "regexp": "(?=x)"}),
                invalid,
                "regexp",
            ),
            (
                json!({"path": P, "line": "a", "insertafter": "["}),
                invalid,
                "insertafter",
            ),
            (
                json!({"path": P, "line": "a", "insertafter": "x", "insertbefore": "y"}),
                ArgErrorKind::Conflict {
                    with: "insertbefore",
                },
                "insertafter",
            ),
            (
                json!({"path": P, "line": "a", "backrefs": true}),
                requires("regexp"),
                "backrefs",
            ),
            (
                json!({"path": P, "line": "\\2", "regexp": "(a)", "backrefs": true}),
                invalid,
                "line",
            ),
            (json!({"path": P, "line": "two\nlines"}), invalid, "line"),
        ] {
            let e = arg_error(&LineInFile, bad.clone());
            assert_eq!((e.kind, e.param), (kind, param), "{bad}");
        }
        let r = req(&LineInFile, json!({"dest": P, "regex": "x", "value": "y"}));
        assert_eq!(r.path, P);
    }
}
