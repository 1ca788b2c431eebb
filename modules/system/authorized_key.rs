//! `authorized_key`: public keys in a user's `authorized_keys`, as Ansible's module of the same
//! name manages them.
//!
//! A key is identified by its type and base64 body, never by its comment or options: the same
//! key with other options or another comment is the same entry, whose line is replaced in place.
//! Everything else in the file (other keys, comments, blank lines) is kept where it is, unless
//! `exclusive` asks for exactly these keys.
//!
//! The file's path is relative to the user's home by default, which only the host knows, so one
//! probe (the [`UserFile`] fact) resolves the home and reads the file and its directory.

use crate::module::{Action, Fact};
use crate::module::{
    ArgError, Attrs, Change, FileKind, Module, ModuleError, ModuleSpec, Observed, Plan,
    PlanContext, Probe,
};
use crate::modules::args::{absolute_path, Presence};
use crate::modules::facts::accounts::{UserFile, UserFileQuery};
use crate::modules::facts::ssh::is_key_type;
use crate::modules::files::edit::ensure_attrs;
use crate::params::{Args, ParamKind, ParamSpec};
use serde::Deserialize;
use serde_json::Value;

pub struct AuthorizedKey;

/// The default file, relative to the user's home.
const DEFAULT_PATH: &str = ".ssh/authorized_keys";

static SPEC: ModuleSpec = ModuleSpec {
    name: "authorized_key",
    summary: "Public keys allowed to log in as a user (authorized_keys), as in Ansible",
    description: "Adds (`state: present`) or removes (`absent`) the public keys in `key` (one per \
line, or a list) in the user's `~/.ssh/authorized_keys` (`path` for another file; the home comes \
from the host's account database). A key is identified by its type and base64 body: an entry of \
the same key whose options or comment differ from the line asked for is replaced in place, as \
Ansible does, so `key_options` (which replace the options written in `key`) can be changed on an \
existing key. Duplicate entries of a wanted key are removed. Every other line, comments and \
blank lines included, is kept where it is; with `exclusive: true` every other key line is \
removed (comments stay).\n\n\
The file is written atomically with mode 0600, owned by the user and the user's primary group \
(sshd's StrictModes refuses keys in a file others can write). With `manage_dir` (the default) \
the file's directory is created, or corrected, with mode 0700 owned by the user. A user that \
does not exist fails the task. Results: `user`, `path`, `keys` (the lines asked for).",
    params: &[
        ParamSpec::required("user", ParamKind::Str, "The user whose keys these are"),
        ParamSpec::required(
            "key",
            ParamKind::Data,
            "Public key lines (`TYPE BASE64 [COMMENT]`, optionally with options first): a string of one or more lines, or a list",
        ),
        ParamSpec::with_default(
            "state",
            ParamKind::Choice(&["present", "absent"]),
            "present",
            "absent removes these keys",
        ),
        ParamSpec::optional(
            "key_options",
            ParamKind::Str,
            "Options for every key (`restrict,port-forwarding,permitopen=\"10.0.0.5:22\"`), in place of those written in key",
        ),
        ParamSpec::with_default(
            "exclusive",
            ParamKind::Bool,
            "false",
            "Remove every other key from the file",
        ),
        ParamSpec::optional(
            "path",
            ParamKind::Str,
            "The file (default: ~USER/.ssh/authorized_keys)",
        ),
        ParamSpec::with_default(
            "manage_dir",
            ParamKind::Bool,
            "true",
            "Create the file's directory (mode 0700, owned by the user) and correct its mode and owner",
        ),
    ],
    free_form: None,
    example: r#"- name: The jump host's tunnel may forward to this host's sshd, and do nothing else
  authorized_key:
    user: root
    key: "{{ hostvars.jump.tunnel_v1.public_key }}"
    key_options: restrict,port-forwarding,permitopen="192.168.121.105:22"
"#,
};

/// One key line of an authorized_keys file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLine {
    /// Options before the key (`restrict,command="x y"`), as written.
    pub options: Option<String>,
    pub kind: String,
    pub body: String,
    pub comment: Option<String>,
}

impl KeyLine {
    /// Parse a line; `None` for comments, blank lines and anything that is not a key.
    pub fn parse(line: &str) -> Option<KeyLine> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let (options, rest) = if is_key_type(line.split_whitespace().next()) {
            (None, line)
        } else {
            let (opts, rest) = split_options(line)?;
            (Some(opts.to_string()), rest.trim_start())
        };
        let mut words = rest.splitn(3, [' ', '\t']);
        let kind = words.next().filter(|k| is_key_type(Some(k)))?;
        let body = words.next().filter(|b| {
            !b.is_empty()
                && b.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'='))
        })?;
        let comment = words
            .next()
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string);
        Some(KeyLine {
            options,
            kind: kind.into(),
            body: body.into(),
            comment,
        })
    }

    /// The same key (type and body), whatever its options and comment.
    fn same_key(&self, other: &KeyLine) -> bool {
        self.kind == other.kind && self.body == other.body
    }

    fn render(&self) -> String {
        let mut s = String::new();
        if let Some(o) = &self.options {
            s.push_str(o);
            s.push(' ');
        }
        s.push_str(&self.kind);
        s.push(' ');
        s.push_str(&self.body);
        if let Some(c) = &self.comment {
            s.push(' ');
            s.push_str(c);
        }
        s
    }

    /// Short, for change summaries: the type, the end of the body and the comment.
    fn describe(&self) -> String {
        let tail = &self.body[self.body.len().saturating_sub(12)..];
        match &self.comment {
            Some(c) => format!("{} ...{tail} ({c})", self.kind),
            None => format!("{} ...{tail}", self.kind),
        }
    }
}

/// The options at the start of a line, up to the first blank outside double quotes (in which
/// `\"` is a quote), and the rest. `None` when a quote is never closed.
fn split_options(line: &str) -> Option<(&str, &str)> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ' ' | '\t' if !quoted => return Some((&line[..i], &line[i..])),
            _ => {}
        }
    }
    (!quoted).then_some((line, ""))
}

#[derive(Debug, Deserialize)]
struct Raw {
    user: String,
    key: Value,
    state: Presence,
    key_options: Option<String>,
    exclusive: bool,
    path: Option<String>,
    manage_dir: bool,
}

/// An `authorized_key` task's arguments, checked and typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    user: String,
    keys: Vec<KeyLine>,
    state: Presence,
    exclusive: bool,
    /// Absolute, or relative to the home.
    path: String,
    manage_dir: bool,
}

impl Request {
    fn query(&self) -> UserFileQuery {
        UserFileQuery {
            user: self.user.clone(),
            path: self.path.clone(),
        }
    }
}

/// The lines of `key`: a string of lines or a list of them.
fn key_lines(v: &Value) -> Result<Vec<String>, ArgError> {
    let bad = || {
        ArgError::invalid(
            "key",
            "key must be public key lines: a string (one key a line) or a list of strings",
        )
    };
    let texts: Vec<&str> = match v {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().ok_or_else(bad))
            .collect::<Result<_, _>>()?,
        _ => return Err(bad()),
    };
    Ok(texts
        .iter()
        .flat_map(|t| t.lines())
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

fn user_name(user: &str) -> Result<(), ArgError> {
    let ok = !user.is_empty()
        && !user.starts_with('-')
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '$'));
    if ok {
        Ok(())
    } else {
        Err(ArgError::invalid(
            "user",
            format!("user {user:?} is not a user name (letters, digits, `.`, `_`, `-`)"),
        ))
    }
}

impl Module for AuthorizedKey {
    type Request = Request;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn request(&self, args: Args, _ctx: &PlanContext) -> Result<Request, ModuleError> {
        let raw: Raw = args.parse()?;
        user_name(&raw.user)?;
        let options = match raw.key_options.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(o) => {
                if o.contains(['\n', '\r']) || split_options(o) != Some((o, "")) {
                    return Err(ArgError::invalid(
                        "key_options",
                        format!("key_options {o:?} must be one comma-separated list of options without blanks outside double quotes, and every quote closed"),
                    )
                    .into());
                }
                Some(o.to_string())
            }
        };
        let mut keys: Vec<KeyLine> = Vec::new();
        for (n, line) in key_lines(&raw.key)?.iter().enumerate() {
            let Some(mut k) = KeyLine::parse(line) else {
                let shown: String = line.chars().take(40).collect();
                return Err(ArgError::invalid(
                    "key",
                    format!(
                        "key line {} is not a public key (TYPE BASE64 [COMMENT], options first if any): {shown:?}",
                        n + 1
                    ),
                )
                .into());
            };
            if options.is_some() {
                k.options = options.clone();
            }
            if !keys.iter().any(|have| have.same_key(&k)) {
                keys.push(k);
            }
        }
        if keys.is_empty() {
            return Err(ArgError::invalid(
                "key",
                "key holds no public key (an empty value: was the variable it comes from set?)",
            )
            .into());
        }
        if raw.exclusive && raw.state == Presence::Absent {
            return Err(ArgError::conflict(
                "exclusive",
                "state",
                "exclusive keeps only the given keys: it cannot be combined with state: absent",
            )
            .into());
        }
        let path = match raw.path {
            Some(p) => {
                absolute_path("path", &p)?;
                if p.ends_with('/') {
                    return Err(ArgError::invalid(
                        "path",
                        format!("path must name a file, got the directory {p:?}"),
                    )
                    .into());
                }
                p
            }
            None => DEFAULT_PATH.to_string(),
        };
        Ok(Request {
            user: raw.user,
            keys,
            state: raw.state,
            exclusive: raw.exclusive,
            path,
            manage_dir: raw.manage_dir,
        })
    }

    fn probes(&self, req: &Request) -> Vec<Probe> {
        vec![UserFile::probe(&req.query())]
    }

    fn plan(&self, req: &Request, observed: &Observed) -> Result<Plan, ModuleError> {
        let UserFile::Found {
            primary,
            path,
            dir_path,
            dir,
            file,
            ..
        } = &*observed.fact::<UserFile>(&req.query())?
        else {
            return Err(ModuleError::Host(format!(
                "user {} does not exist on this host (create it first, e.g. with the user module)",
                req.user
            )));
        };
        let owned = Attrs {
            mode: Some(0o600),
            owner: Some(req.user.clone()),
            group: Some(primary.clone()),
        };
        let mut plan = Plan::ok();
        let present = req.state == Presence::Present;
        match dir.kind {
            FileKind::Dir => {
                if req.manage_dir && present {
                    ensure_attrs(
                        &mut plan,
                        dir_path,
                        dir,
                        &Attrs {
                            mode: Some(0o700),
                            ..owned.clone()
                        },
                    );
                }
            }
            FileKind::Absent if !present => {}
            FileKind::Absent if req.manage_dir => plan.change(
                Change::new(format!("create {dir_path} (0700, owned by {})", req.user)),
                [Action::MakeDir {
                    path: dir_path.clone(),
                    attrs: Attrs {
                        mode: Some(0o700),
                        ..owned.clone()
                    },
                }],
            ),
            FileKind::Absent => {
                return Err(ModuleError::Host(format!(
                    "{dir_path} does not exist (manage_dir: true creates it)"
                )))
            }
            _ => {
                return Err(ModuleError::Host(format!(
                    "{dir_path} exists and is not a directory"
                )))
            }
        }
        match file.kind {
            FileKind::File | FileKind::Absent => {}
            FileKind::Dir => return Err(ModuleError::Host(format!("{path} is a directory"))),
            FileKind::Other => {
                return Err(ModuleError::Host(format!(
                    "{path} exists and is not a regular file"
                )))
            }
        }
        let before = file.text();
        let (lines, changes) = edit(&before, req);
        let after = if lines.is_empty() {
            String::new()
        } else {
            lines.join("\n") + "\n"
        };
        if !changes.is_empty() && after != before {
            // The diff and the write go with the first key change.
            let mut changes = changes.into_iter();
            let first = changes.next().expect("not empty");
            plan.change(
                Change::new(first).with_diff(path, before.clone(), after.clone()),
                [Action::write(path, after, owned, false)],
            );
            plan.changes.extend(changes.map(Change::new));
        } else if present && file.exists() {
            ensure_attrs(&mut plan, path, file, &owned);
        }
        let keys: Vec<String> = req.keys.iter().map(KeyLine::render).collect();
        Ok(plan
            .with_data("user", req.user.as_str())
            .with_data("path", path.as_str())
            .with_data("keys", keys))
    }
}

/// The file's lines after the request, and a summary of each key change.
fn edit(before: &str, req: &Request) -> (Vec<String>, Vec<String>) {
    let mut lines: Vec<String> = before.lines().map(str::to_string).collect();
    let mut changes = Vec::new();
    let wanted = |k: &KeyLine| req.keys.iter().find(|w| w.same_key(k));
    let mut seen: Vec<&KeyLine> = Vec::new();
    let mut out = Vec::with_capacity(lines.len() + req.keys.len());
    for line in lines.drain(..) {
        let Some(have) = KeyLine::parse(&line) else {
            out.push(line);
            continue;
        };
        match (wanted(&have), req.state) {
            (Some(_), Presence::Absent) => {
                changes.push(format!("remove key {}", have.describe()));
            }
            (Some(want), Presence::Present) => {
                if seen.iter().any(|s| s.same_key(want)) {
                    changes.push(format!("remove duplicate of key {}", have.describe()));
                } else if have.options != want.options || have.comment != want.comment {
                    let what = if have.options != want.options {
                        "options"
                    } else {
                        "comment"
                    };
                    changes.push(format!("replace key {} ({what} differ)", want.describe()));
                    out.push(want.render());
                    seen.push(want);
                } else {
                    out.push(line);
                    seen.push(want);
                }
            }
            (None, _) if req.exclusive => {
                changes.push(format!("remove key {} (exclusive)", have.describe()));
            }
            (None, _) => out.push(line),
        }
    }
    if req.state == Presence::Present {
        for want in &req.keys {
            if !seen.iter().any(|s| s.same_key(want)) {
                changes.push(format!("add key {}", want.describe()));
                out.push(want.render());
            }
        }
    }
    (out, changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{ArgErrorKind, CommandOutput, FileState, Observation};
    use crate::modules::facts::fixture;
    use crate::modules::testing::{arg_error, req};
    use serde_json::json;

    const K1: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKf1 kvmforge-tunnel-v1";
    const K2: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKf2 ops@laptop";

    /// root, home /root, primary group root: the probe's output with `file` as the file.
    fn host(dir: &str, file: Option<(&str, &str)>) -> String {
        let mut s = String::from("passwd\troot:x:0:0:root:/root:/bin/bash\nprimary\troot\n");
        s += &format!("dir\t{dir}\n");
        match file {
            None => s += "file\tabsent\n",
            Some((stat, content)) => s += &format!("file\t{stat}\ncontent\n{content}"),
        }
        s
    }

    fn seen(r: &Request, out: &str) -> Observed {
        Observed::new()
            .with_fact::<UserFile>(&r.query(), Observation::Command(CommandOutput::ok(out)))
    }

    fn written(p: &Plan) -> (String, Attrs) {
        p.actions
            .iter()
            .find_map(|a| match a {
                Action::WriteFile {
                    content,
                    attrs,
                    path,
                    ..
                } => {
                    assert_eq!(path, "/root/.ssh/authorized_keys");
                    Some((String::from_utf8(content.clone()).unwrap(), attrs.clone()))
                }
                _ => None,
            })
            .expect("a write")
    }

    fn summaries(p: &Plan) -> Vec<&str> {
        p.changes.iter().map(|c| c.summary.as_str()).collect()
    }

    const DIR: &str = "700\troot\troot\tdirectory";
    const FILE: &str = "600\troot\troot\tregular file";

    /// The file as the fixture has it: a comment, the lab key, a blank line, K2 with options.
    fn existing() -> String {
        fixture("user_file/authorized_keys")
    }

    #[test]
    fn adds_to_a_missing_file_and_directory() {
        let r = req(&AuthorizedKey, json!({"user": "root", "key": K1}));
        let p = AuthorizedKey
            .plan(&r, &seen(&r, &host("absent", None)))
            .unwrap();
        assert_eq!(
            summaries(&p),
            [
                "create /root/.ssh (0700, owned by root)",
                "add key ssh-ed25519 ...NTE5AAAAIKf1 (kvmforge-tunnel-v1)"
            ]
        );
        let (text, attrs) = written(&p);
        assert_eq!(text, format!("{K1}\n"));
        assert_eq!(
            attrs,
            Attrs {
                mode: Some(0o600),
                owner: Some("root".into()),
                group: Some("root".into())
            }
        );
        assert_eq!(p.data["path"], json!("/root/.ssh/authorized_keys"));
    }

    #[test]
    fn adds_with_options_and_keeps_everything_else() {
        let r = req(
            &AuthorizedKey,
            json!({"user": "root", "key": K1,
                   "key_options": "restrict,port-forwarding,permitopen=\"192.168.121.105:22\""}),
        );
        let p = AuthorizedKey
            .plan(&r, &seen(&r, &host(DIR, Some((FILE, &existing())))))
            .unwrap();
        let (text, _) = written(&p);
        assert_eq!(
            text,
            format!(
                "{}restrict,port-forwarding,permitopen=\"192.168.121.105:22\" {K1}\n",
                existing()
            )
        );
        let d = p.changes[0].diff.as_ref().unwrap();
        assert_eq!(
            (d.before.as_str(), d.after.as_str()),
            (existing().as_str(), text.as_str())
        );
        // Run again on the result: ok.
        let again = AuthorizedKey
            .plan(&r, &seen(&r, &host(DIR, Some((FILE, &text)))))
            .unwrap();
        assert!(!again.changed(), "{:?}", again.changes);
    }

    #[test]
    fn other_options_or_comment_replace_the_line_in_place() {
        // K2 is in the file with `no-pty`: given without options, its line is replaced.
        let r = req(&AuthorizedKey, json!({"user": "root", "key": K2}));
        let p = AuthorizedKey
            .plan(&r, &seen(&r, &host(DIR, Some((FILE, &existing())))))
            .unwrap();
        assert_eq!(
            summaries(&p),
            ["replace key ssh-ed25519 ...NTE5AAAAIKf2 (ops@laptop) (options differ)"]
        );
        let (text, _) = written(&p);
        assert_eq!(text, existing().replace(&format!("no-pty {K2}"), K2));
        // Another comment for the same key: replaced too.
        let r = req(
            &AuthorizedKey,
            json!({"user": "root", "key": K2.replace("ops@laptop", "ops@desk"),
                   "key_options": "no-pty"}),
        );
        let p = AuthorizedKey
            .plan(&r, &seen(&r, &host(DIR, Some((FILE, &existing())))))
            .unwrap();
        assert_eq!(
            summaries(&p),
            ["replace key ssh-ed25519 ...NTE5AAAAIKf2 (ops@desk) (comment differ)"]
        );
    }

    #[test]
    fn exclusive_keeps_only_these_keys_and_the_comments() {
        let r = req(
            &AuthorizedKey,
            json!({"user": "root", "key": [K1], "exclusive": true}),
        );
        let p = AuthorizedKey
            .plan(&r, &seen(&r, &host(DIR, Some((FILE, &existing())))))
            .unwrap();
        let (text, _) = written(&p);
        assert_eq!(text, format!("# keys of the lab\n\n{K1}\n"),);
        assert_eq!(p.changes.len(), 3, "{:?}", summaries(&p));
    }

    #[test]
    fn absent_removes_every_copy_and_only_it() {
        let file = format!("{}{K2}\n", existing());
        let r = req(
            &AuthorizedKey,
            json!({"user": "root", "key": K2, "state": "absent"}),
        );
        let p = AuthorizedKey
            .plan(&r, &seen(&r, &host(DIR, Some((FILE, &file)))))
            .unwrap();
        let (text, _) = written(&p);
        assert!(
            !text.contains("IKf2") && text.starts_with("# keys of the lab\n"),
            "{text}"
        );
        assert_eq!(p.changes.len(), 2);
        // Not there, or no file at all: ok.
        let p = AuthorizedKey
            .plan(&r, &seen(&r, &host(DIR, Some((FILE, &text)))))
            .unwrap();
        assert!(!p.changed());
        let p = AuthorizedKey
            .plan(&r, &seen(&r, &host("absent", None)))
            .unwrap();
        assert!(!p.changed() && p.actions.is_empty());
    }

    #[test]
    fn duplicates_are_collapsed_and_modes_corrected() {
        let file = format!("{K1}\n{K1}\n");
        let r = req(&AuthorizedKey, json!({"user": "root", "key": K1}));
        let p = AuthorizedKey
            .plan(
                &r,
                &seen(
                    &r,
                    &host(
                        "755\troot\troot\tdirectory",
                        Some(("644\troot\troot\tregular file", &file)),
                    ),
                ),
            )
            .unwrap();
        assert_eq!(written(&p).0, format!("{K1}\n"));
        assert!(
            p.actions.contains(&Action::SetAttrs {
                path: "/root/.ssh".into(),
                attrs: Attrs {
                    mode: Some(0o700),
                    owner: Some("root".into()),
                    group: Some("root".into())
                }
            }),
            "{:?}",
            p.actions
        );
        // Only the mode wrong: fixed without a write.
        let p = AuthorizedKey
            .plan(
                &r,
                &seen(
                    &r,
                    &host(
                        DIR,
                        Some(("644\troot\troot\tregular file", &format!("{K1}\n"))),
                    ),
                ),
            )
            .unwrap();
        assert_eq!(
            p.actions,
            vec![Action::SetAttrs {
                path: "/root/.ssh/authorized_keys".into(),
                attrs: Attrs {
                    mode: Some(0o600),
                    owner: Some("root".into()),
                    group: Some("root".into())
                }
            }]
        );
    }

    #[test]
    fn host_states_it_cannot_work_with() {
        let r = req(&AuthorizedKey, json!({"user": "nobody2", "key": K1}));
        let e = AuthorizedKey.plan(&r, &seen(&r, "")).unwrap_err();
        assert!(e.to_string().contains("user nobody2 does not exist"), "{e}");
        let r = req(
            &AuthorizedKey,
            json!({"user": "root", "key": K1, "manage_dir": false}),
        );
        let e = AuthorizedKey
            .plan(&r, &seen(&r, &host("absent", None)))
            .unwrap_err();
        assert!(e.to_string().contains("manage_dir: true creates it"), "{e}");
    }

    #[test]
    fn a_path_of_its_own() {
        let r = req(
            &AuthorizedKey,
            json!({"user": "root", "key": K1, "path": "/etc/ssh/keys/root"}),
        );
        assert_eq!(r.query().path, "/etc/ssh/keys/root");
        let p = AuthorizedKey.plan(&r, &seen(&r, &host(DIR, None))).unwrap();
        assert!(
            matches!(&p.actions[0], Action::WriteFile { path, .. } if path == "/etc/ssh/keys/root")
        );
    }

    #[test]
    fn key_lines_parse_like_sshd() {
        let k = KeyLine::parse(r#"command="echo a b",no-pty ssh-rsa AAAAB3== my key"#).unwrap();
        assert_eq!(k.options.as_deref(), Some(r#"command="echo a b",no-pty"#));
        assert_eq!((k.kind.as_str(), k.body.as_str()), ("ssh-rsa", "AAAAB3=="));
        assert_eq!(k.comment.as_deref(), Some("my key"));
        assert_eq!(
            k.render(),
            r#"command="echo a b",no-pty ssh-rsa AAAAB3== my key"#
        );
        assert_eq!(KeyLine::parse("# ssh-rsa AAAA"), None);
        assert_eq!(KeyLine::parse("ssh-rsa not/base64!"), None);
        assert_eq!(KeyLine::parse(r#"command="unclosed ssh-rsa AAAA"#), None);
        assert!(KeyLine::parse("sk-ssh-ed25519@openssh.com AAAA x").is_some());
    }

    #[test]
    fn bad_arguments_name_their_parameter() {
        let invalid = |args: Value, param: &str, says: &str| {
            let e = arg_error(&AuthorizedKey, args.clone());
            assert_eq!((e.kind, e.param), (ArgErrorKind::Invalid, param), "{args}");
            assert!(e.msg.contains(says), "{}", e.msg);
        };
        invalid(
            json!({"user": "root", "key": "not a key"}),
            "key",
            "key line 1 is not a public key",
        );
        invalid(
            json!({"user": "root", "key": ""}),
            "key",
            "holds no public key",
        );
        invalid(
            json!({"user": "root", "key": {"a": 1}}),
            "key",
            "a string (one key a line) or a list",
        );
        invalid(
            json!({"user": "ro ot", "key": K1}),
            "user",
            "not a user name",
        );
        invalid(
            json!({"user": "root", "key": K1, "path": "keys"}),
            "path",
            "absolute path",
        );
        invalid(
            json!({"user": "root", "key": K1, "key_options": "no-pty, restrict"}),
            "key_options",
            "without blanks",
        );
        let e = arg_error(
            &AuthorizedKey,
            json!({"user": "root", "key": K1, "state": "absent", "exclusive": true}),
        );
        assert_eq!(
            (e.kind, e.param),
            (ArgErrorKind::Conflict { with: "state" }, "exclusive")
        );
        // Several lines, in one string or a list, and the same key twice counts once.
        let r = req(
            &AuthorizedKey,
            json!({"user": "root", "key": format!("{K1}\n\n{K2}\n{K1}")}),
        );
        assert_eq!(r.keys.len(), 2);
    }

    #[test]
    fn probe_runs_in_a_real_shell() {
        let q = UserFileQuery {
            user: "root".into(),
            path: ".kf-no-such-dir/authorized_keys".into(),
        };
        match UserFile::parse(&q, &crate::modules::facts::run_here(&UserFile::probe(&q))).unwrap() {
            UserFile::Found {
                path,
                dir,
                file,
                primary,
                ..
            } => {
                assert!(path.ends_with("/.kf-no-such-dir/authorized_keys"), "{path}");
                assert!(!dir.exists() && !file.exists());
                assert_eq!(primary, "root");
            }
            other => panic!("{other:?}"),
        }
        let q = UserFileQuery {
            user: "no-such-user-kf".into(),
            path: DEFAULT_PATH.into(),
        };
        assert_eq!(
            UserFile::parse(&q, &crate::modules::facts::run_here(&UserFile::probe(&q))).unwrap(),
            UserFile::NoUser
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("keys");
        std::fs::write(&f, "a\ncontent\nb").unwrap();
        let q = UserFileQuery {
            user: "root".into(),
            path: f.display().to_string(),
        };
        match UserFile::parse(&q, &crate::modules::facts::run_here(&UserFile::probe(&q))).unwrap() {
            UserFile::Found { file, dir: d, .. } => {
                assert_eq!(file.text(), "a\ncontent\nb");
                assert_eq!(d.kind, FileKind::Dir);
                assert_eq!(
                    *file,
                    FileState {
                        mode: file.mode,
                        ..FileState::file("a\ncontent\nb")
                    }
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
