//! `file`: a path's type (file, directory, symlink, nothing) and its attributes.

use super::edit;
use crate::module::{
    shell_quote, Action, ArgError, Attrs, Change, FileKind, FileState, Module, ModuleError,
    ModuleSpec, Observed, Plan, PlanContext, Probe,
};
use crate::params::{Args, ParamKind, ParamSpec};
use serde::Deserialize;

pub struct File;

static SPEC: ModuleSpec = ModuleSpec {
    name: "file",
    summary: "Ensure a path is a file, directory or symlink with given attributes, or is absent",
    description: "Compares the path's type, mode, owner and group (following symlinks, except for \
`state: link`) with what is asked and changes only what differs.\n\n\
`file` (the default) manages the attributes of an existing regular file and fails if it is \
missing: it never creates one (use `touch` or `copy`). When `state` is omitted and the path is an \
existing directory, the directory's attributes are managed instead, as in Ansible. `directory` \
creates the directory and its missing parents (`mkdir -p`; mode, owner and group apply to the \
last component) and fails if something else is in the way. `absent` removes a file, symlink or \
whole directory tree. `touch` creates an empty file when nothing is there; an existing path only \
gets its attributes corrected, so its timestamps are left alone and the task stays `ok`. `link` \
makes `path` a symlink to `src` (compared as text with the link's current target, relative \
targets resolve against the link's directory) and replaces a link pointing elsewhere; a file or \
empty directory in the way is only replaced with `force: true`, which also allows a link to a \
target that does not exist (yet).",
    params: &[
        ParamSpec::required("path", ParamKind::Str, "The path to manage").aliases(&["dest", "name"]),
        ParamSpec::optional(
            "state",
            ParamKind::Choice(&["file", "directory", "absent", "touch", "link"]),
            "What the path must be (default: file, or directory for an existing directory)",
        ),
        ParamSpec::optional("mode", ParamKind::Mode, "Permissions, e.g. \"0755\""),
        ParamSpec::optional("owner", ParamKind::Str, "Owning user"),
        ParamSpec::optional("group", ParamKind::Str, "Owning group"),
        ParamSpec::optional("src", ParamKind::Str, "Target of the symlink (state=link only)"),
        ParamSpec::with_default(
            "force",
            ParamKind::Bool,
            "false",
            "With state=link: replace a file or empty directory at path, and allow a missing target",
        ),
    ],
    free_form: None,
    example: r#"- name: Directory for VM images
  file:
    path: /var/lib/kvmforge/images
    state: directory
    mode: "0750"
    owner: root
    group: kvm
"#,
};

/// What the path must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum State {
    File,
    Directory,
    Absent,
    Touch,
    Link,
}

/// A `file` task's arguments as the parameter table delivers them.
#[derive(Debug, Deserialize)]
struct Params {
    path: String,
    state: Option<State>,
    mode: Option<u32>,
    owner: Option<String>,
    group: Option<String>,
    src: Option<String>,
    force: bool,
}

/// A `file` task's arguments, checked.
#[derive(Debug)]
pub struct Request {
    path: String,
    /// `None` when `state` was not given.
    state: Option<State>,
    attrs: Attrs,
    /// The link's target with `state: link`.
    link: Option<LinkTarget>,
    force: bool,
}

/// A symlink's target as given, and where that is on the host.
#[derive(Debug)]
struct LinkTarget {
    src: String,
    /// Relative targets resolve against the link's directory.
    on_host: String,
}

impl Module for File {
    type Request = Request;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn request(&self, args: Args, _ctx: &PlanContext) -> Result<Request, ModuleError> {
        let p: Params = args.parse()?;
        if p.path.is_empty() {
            return Err(ArgError::invalid("path", "path must not be empty").into());
        }
        let attrs = Attrs {
            mode: p.mode,
            owner: p.owner,
            group: p.group,
        };
        let link = match (p.state, p.src) {
            (Some(State::Link), None) => {
                return Err(ArgError::requires(
                    "state",
                    "src",
                    "state=link needs src (the link's target)",
                )
                .into())
            }
            (Some(State::Link), Some(src)) if src.is_empty() => {
                return Err(ArgError::invalid("src", "src must not be empty").into())
            }
            (Some(State::Link), Some(src)) => {
                let on_host = edit::write_target(
                    &p.path,
                    &FileState {
                        link_target: Some(src.clone()),
                        ..FileState::absent()
                    },
                );
                Some(LinkTarget { src, on_host })
            }
            (_, Some(_)) => {
                return Err(
                    ArgError::conflict("src", "state", "src is only used with state=link").into(),
                )
            }
            (_, None) => None,
        };
        if link.is_some() {
            // A symlink's own mode means nothing on Linux, and the engine's attribute changes
            // follow links: they would silently change the target instead.
            let given = [
                ("mode", attrs.mode.is_some()),
                ("owner", attrs.owner.is_some()),
                ("group", attrs.group.is_some()),
            ];
            if let Some((param, _)) = given.into_iter().find(|(_, given)| *given) {
                return Err(ArgError::conflict(
                    param,
                    "state",
                    "mode, owner and group cannot be set with state=link; manage the link's target with its own task",
                )
                .into());
            }
        }
        Ok(Request {
            path: p.path,
            state: p.state,
            attrs,
            link,
            force: p.force,
        })
    }

    fn probes(&self, r: &Request) -> Vec<Probe> {
        let mut probes = vec![Probe::File(r.path.clone())];
        // Without force a missing target is an error, so it is looked at.
        if let (Some(link), false) = (&r.link, r.force) {
            probes.push(Probe::File(link.on_host.clone()));
        }
        probes
    }

    fn plan(&self, r: &Request, observed: &Observed) -> Result<Plan, ModuleError> {
        let path = r.path.as_str();
        let st = observed.file(path)?;
        let state = r.state.unwrap_or(if st.kind == FileKind::Dir {
            State::Directory
        } else {
            State::File
        });
        let mut plan = Plan::ok();
        match state {
            State::File => match st.kind {
                FileKind::File => edit::ensure_attrs(&mut plan, path, st, &r.attrs),
                FileKind::Absent if st.link_target.is_none() => {
                    return Err(ModuleError::Host(format!(
                        "{path} does not exist (state=file does not create files: use state=touch or copy)"
                    )))
                }
                _ => return Err(ModuleError::Host(format!("{path} is {}, not a regular file", describe(st)))),
            },
            State::Directory => match st.kind {
                FileKind::Dir => edit::ensure_attrs(&mut plan, path, st, &r.attrs),
                FileKind::Absent if st.link_target.is_none() => plan.change(
                    Change::new(format!("create directory {path}")),
                    [Action::MakeDir { path: path.into(), attrs: r.attrs.clone() }],
                ),
                _ => return Err(ModuleError::Host(format!("{path} is {}, not a directory", describe(st)))),
            },
            State::Absent => edit::ensure_absent(&mut plan, path, st),
            State::Touch => match st.kind {
                // Writing here would replace the link with a file rather than create its target.
                FileKind::Other if st.link_target.is_some() => {
                    return Err(ModuleError::Host(format!("{path} is {}", describe(st))))
                }
                FileKind::Absent => plan.change(
                    Change::new(format!("create empty file {path}")),
                    [Action::write(path, Vec::new(), r.attrs.clone(), false)],
                ),
                // Existing paths only get their attributes: no timestamp update, so `ok`.
                _ => edit::ensure_attrs(&mut plan, path, st, &r.attrs),
            },
            State::Link => plan_link(&mut plan, r, st, observed)?,
        }
        Ok(plan.with_data("path", path))
    }
}

fn plan_link(
    plan: &mut Plan,
    r: &Request,
    st: &FileState,
    observed: &Observed,
) -> Result<(), ModuleError> {
    let path = r.path.as_str();
    let LinkTarget { src, on_host } = r.link.as_ref().expect("checked in request");
    let link = Action::Symlink {
        target: src.clone(),
        link: path.into(),
    };
    if st.link_target.as_ref() == Some(src) {
        return Ok(());
    }
    if !r.force && !observed.file(on_host)?.exists() {
        return Err(ModuleError::Host(format!(
            "link target {on_host} does not exist (set force: true to create the link anyway)"
        )));
    }
    match (&st.link_target, st.kind) {
        (Some(old), _) => plan.change(
            Change::new(format!("relink {path}: {old} -> {src}")),
            [link],
        ),
        (None, FileKind::Absent) => {
            plan.change(Change::new(format!("link {path} -> {src}")), [link])
        }
        (None, _) if !r.force => {
            return Err(ModuleError::Host(format!(
                "{path} is {}, not a symlink (set force: true to replace it)",
                describe(st)
            )))
        }
        (None, FileKind::Dir) => plan.change(
            // rmdir, never a recursive removal: only an empty directory is replaced.
            Change::new(format!(
                "replace empty directory {path} with a link to {src}"
            )),
            [Action::run(format!("rmdir -- {}", shell_quote(path))), link],
        ),
        (None, _) => plan.change(
            Change::new(format!(
                "replace {} {path} with a link to {src}",
                describe(st)
            ))
            .with_diff(path, st.text(), ""),
            [Action::Remove { path: path.into() }, link],
        ),
    }
    Ok(())
}

/// What is at a path, for messages.
fn describe(st: &FileState) -> String {
    match (&st.link_target, st.kind) {
        (Some(t), FileKind::Other | FileKind::Absent) => format!("a dangling symlink to {t}"),
        (Some(t), FileKind::Dir) => format!("a symlink to the directory {t}"),
        (Some(t), _) => format!("a symlink to {t}"),
        (None, FileKind::File) => "a regular file".into(),
        (None, FileKind::Dir) => "a directory".into(),
        (None, FileKind::Other) => "a special file".into(),
        (None, FileKind::Absent) => "absent".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::ArgErrorKind;
    use crate::modules::testing::{arg_error, content, converge, req};
    use serde_json::json;

    fn link(target: &str, kind: FileKind) -> FileState {
        FileState {
            kind,
            link_target: Some(target.into()),
            ..if kind == FileKind::Dir {
                FileState::dir()
            } else {
                FileState::file("x")
            }
        }
    }

    fn mode(m: u32) -> Attrs {
        Attrs {
            mode: Some(m),
            ..Attrs::default()
        }
    }

    #[test]
    fn directory_is_created_with_attrs_and_then_ok() {
        let a = req(
            &File,
            json!({"path": "/srv/images", "state": "directory", "mode": "0750", "group": "kvm"}),
        );
        let obs = Observed::new().with_file("/srv/images", FileState::absent());
        let (p, _) = converge(&File, &a, &obs);
        assert_eq!(p.changes[0].summary, "create directory /srv/images");
        assert_eq!(
            p.actions,
            vec![Action::MakeDir {
                path: "/srv/images".into(),
                attrs: Attrs {
                    mode: Some(0o750),
                    owner: None,
                    group: Some("kvm".into())
                },
            }]
        );
    }

    #[test]
    fn directory_attrs_drift() {
        let a = req(
            &File,
            json!({"path": "/srv", "state": "directory", "mode": "0700", "owner": "root"}),
        );
        let obs = Observed::new().with_file("/srv", FileState::dir());
        let (p, _) = converge(&File, &a, &obs);
        assert_eq!(p.changes[0].summary, "/srv: mode 0755 -> 0700");
        assert_eq!(
            p.actions,
            vec![Action::SetAttrs {
                path: "/srv".into(),
                attrs: Attrs {
                    owner: Some("root".into()),
                    ..mode(0o700)
                }
            }]
        );
    }

    #[test]
    fn directory_over_a_file_is_an_error() {
        let a = req(&File, json!({"path": "/srv", "state": "directory"}));
        let obs = Observed::new().with_file("/srv", FileState::file("x"));
        let e = File.plan(&a, &obs).unwrap_err();
        assert_eq!(
            e,
            ModuleError::Host("/srv is a regular file, not a directory".into())
        );
        // A symlink to a directory is followed, like a directory.
        let obs = Observed::new().with_file("/srv", link("/data/srv", FileKind::Dir));
        assert!(!File.plan(&a, &obs).unwrap().changed());
    }

    #[test]
    fn state_file_manages_attrs_but_never_creates() {
        let a = req(
            &File,
            json!({"path": "/etc/x", "mode": "0600", "owner": "libvirt-qemu"}),
        );
        let obs = Observed::new().with_file("/etc/x", FileState::file("data"));
        let (p, after) = converge(&File, &a, &obs);
        assert_eq!(
            p.changes[0].summary,
            "/etc/x: mode 0644 -> 0600, owner root -> libvirt-qemu"
        );
        assert_eq!(content(&after, "/etc/x"), "data");

        let obs = Observed::new().with_file("/etc/x", FileState::absent());
        let e = File.plan(&a, &obs).unwrap_err();
        assert!(
            matches!(&e, ModuleError::Host(m) if m.contains("does not exist")),
            "{e}"
        );
        let a = req(&File, json!({"path": "/etc/x", "state": "file"}));
        let obs = Observed::new().with_file("/etc/x", FileState::dir());
        assert!(File.plan(&a, &obs).is_err());
    }

    #[test]
    fn omitted_state_on_a_directory_manages_the_directory() {
        let a = req(&File, json!({"path": "/srv", "mode": "0700"}));
        let obs = Observed::new().with_file("/srv", FileState::dir());
        let p = File.plan(&a, &obs).unwrap();
        assert_eq!(
            p.actions,
            vec![Action::SetAttrs {
                path: "/srv".into(),
                attrs: mode(0o700)
            }]
        );
    }

    #[test]
    fn absent_removes_files_trees_and_dangling_links() {
        let a = req(&File, json!({"path": "/tmp/x", "state": "absent"}));
        for st in [
            FileState::file("a"),
            FileState::dir(),
            link("/nowhere", FileKind::Other),
        ] {
            let obs = Observed::new().with_file("/tmp/x", st);
            let (p, _) = converge(&File, &a, &obs);
            assert_eq!(
                p.actions,
                vec![Action::Remove {
                    path: "/tmp/x".into()
                }]
            );
        }
        let obs = Observed::new().with_file("/tmp/x", FileState::absent());
        assert!(!File.plan(&a, &obs).unwrap().changed());
    }

    #[test]
    fn touch_creates_once_then_only_fixes_attrs() {
        let a = req(
            &File,
            json!({"path": "/var/log/x.log", "state": "touch", "mode": "0640"}),
        );
        let obs = Observed::new().with_file("/var/log/x.log", FileState::absent());
        let (p, after) = converge(&File, &a, &obs);
        assert_eq!(
            p.actions,
            vec![Action::write("/var/log/x.log", "", mode(0o640), false)]
        );
        assert_eq!(after.file("/var/log/x.log").unwrap().mode, 0o640);

        // An existing file with content is not rewritten, not even "touched".
        let obs =
            Observed::new().with_file("/var/log/x.log", FileState::file("log\n").with_mode(0o640));
        assert!(!File.plan(&a, &obs).unwrap().changed());
        let obs = Observed::new().with_file("/var/log/x.log", FileState::file("log\n"));
        let p = File.plan(&a, &obs).unwrap();
        assert_eq!(
            p.actions,
            vec![Action::SetAttrs {
                path: "/var/log/x.log".into(),
                attrs: mode(0o640)
            }]
        );
        // Nor is a directory.
        let obs = Observed::new().with_file("/var/log/x.log", FileState::dir().with_mode(0o640));
        assert!(!File.plan(&a, &obs).unwrap().changed());
        // A dangling symlink is not silently replaced by a file.
        let obs = Observed::new().with_file("/var/log/x.log", link("/gone", FileKind::Other));
        assert!(File.plan(&a, &obs).is_err());
    }

    #[test]
    fn link_created_when_missing() {
        let a = req(
            &File,
            json!({"path": "/etc/nginx/sites-enabled/app", "state": "link", "src": "../sites-available/app"}),
        );
        assert_eq!(
            File.probes(&a),
            vec![
                Probe::File("/etc/nginx/sites-enabled/app".into()),
                Probe::File("/etc/nginx/sites-enabled/../sites-available/app".into()),
            ]
        );
        let obs = Observed::new()
            .with_file("/etc/nginx/sites-enabled/app", FileState::absent())
            .with_file(
                "/etc/nginx/sites-enabled/../sites-available/app",
                FileState::file("cfg"),
            );
        let (p, _) = converge(&File, &a, &obs);
        assert_eq!(
            p.changes[0].summary,
            "link /etc/nginx/sites-enabled/app -> ../sites-available/app"
        );
        assert_eq!(
            p.actions,
            vec![Action::Symlink {
                target: "../sites-available/app".into(),
                link: "/etc/nginx/sites-enabled/app".into()
            }]
        );
    }

    #[test]
    fn link_with_right_target_is_ok_and_wrong_target_is_replaced() {
        let a = req(
            &File,
            json!({"path": "/usr/local/bin/vm", "state": "link", "src": "/opt/vm/bin/vm"}),
        );
        let target = ("/opt/vm/bin/vm", FileState::file("#!/bin/sh"));
        let obs = Observed::new()
            .with_file("/usr/local/bin/vm", link("/opt/vm/bin/vm", FileKind::File))
            .with_file(target.0, target.1.clone());
        assert!(!File.plan(&a, &obs).unwrap().changed());
        // Even when the target has gone missing since: the link is as asked.
        let obs = Observed::new()
            .with_file("/usr/local/bin/vm", link("/opt/vm/bin/vm", FileKind::Other))
            .with_file(target.0, FileState::absent());
        assert!(!File.plan(&a, &obs).unwrap().changed());

        let obs = Observed::new()
            .with_file("/usr/local/bin/vm", link("/opt/old/vm", FileKind::File))
            .with_file(target.0, target.1);
        let (p, _) = converge(&File, &a, &obs);
        assert_eq!(
            p.changes[0].summary,
            "relink /usr/local/bin/vm: /opt/old/vm -> /opt/vm/bin/vm"
        );
        assert_eq!(p.actions.len(), 1);
    }

    #[test]
    fn link_to_missing_target_needs_force() {
        let a = req(
            &File,
            json!({"path": "/etc/l", "state": "link", "src": "/opt/later"}),
        );
        let obs = Observed::new()
            .with_file("/etc/l", FileState::absent())
            .with_file("/opt/later", FileState::absent());
        let e = File.plan(&a, &obs).unwrap_err();
        assert!(
            matches!(&e, ModuleError::Host(m) if m.contains("force")),
            "{e}"
        );
        let a = req(
            &File,
            json!({"path": "/etc/l", "state": "link", "src": "/opt/later", "force": true}),
        );
        assert_eq!(File.probes(&a), vec![Probe::File("/etc/l".into())]);
        let obs = Observed::new().with_file("/etc/l", FileState::absent());
        let (p, _) = converge(&File, &a, &obs);
        assert_eq!(
            p.actions,
            vec![Action::Symlink {
                target: "/opt/later".into(),
                link: "/etc/l".into()
            }]
        );
    }

    #[test]
    fn link_over_a_file_or_directory_needs_force() {
        let a = req(
            &File,
            json!({"path": "/etc/l", "state": "link", "src": "/opt/t"}),
        );
        let obs = Observed::new()
            .with_file("/etc/l", FileState::file("old"))
            .with_file("/opt/t", FileState::file("new"));
        let e = File.plan(&a, &obs).unwrap_err();
        assert_eq!(
            e,
            ModuleError::Host(
                "/etc/l is a regular file, not a symlink (set force: true to replace it)".into()
            )
        );

        let a = req(
            &File,
            json!({"path": "/etc/l", "state": "link", "src": "/opt/t", "force": true}),
        );
        let p = File.plan(&a, &obs).unwrap();
        let link = Action::Symlink {
            target: "/opt/t".into(),
            link: "/etc/l".into(),
        };
        assert_eq!(
            p.actions,
            vec![
                Action::Remove {
                    path: "/etc/l".into()
                },
                link.clone()
            ]
        );

        // A directory is only ever removed with rmdir, which refuses a non-empty one.
        let obs = Observed::new().with_file("/etc/l", FileState::dir());
        let p = File.plan(&a, &obs).unwrap();
        assert_eq!(p.actions, vec![Action::run("rmdir -- /etc/l"), link]);
        let a = req(
            &File,
            json!({"path": "/etc/it's dir", "state": "link", "src": "/opt/t", "force": true}),
        );
        let obs = Observed::new().with_file("/etc/it's dir", FileState::dir());
        assert_eq!(
            File.plan(&a, &obs).unwrap().actions[0],
            Action::run(r"rmdir -- '/etc/it'\''s dir'")
        );
    }

    #[test]
    fn bad_argument_combinations_are_caught_before_contact() {
        let conflict = |with| ArgErrorKind::Conflict { with };
        for (bad, kind, param) in [
            (
                json!({"path": "/x", "state": "link"}),
                ArgErrorKind::Requires { other: "src" },
                "state",
            ),
            (
                json!({"path": "/x", "state": "link", "src": ""}),
                ArgErrorKind::Invalid,
                "src",
            ),
            (
                json!({"path": "/x", "state": "link", "src": "/y", "mode": "0644"}),
                conflict("state"),
                "mode",
            ),
            (
                json!({"path": "/x", "state": "link", "src": "/y", "owner": "root"}),
                conflict("state"),
                "owner",
            ),
            (
                json!({"path": "/x", "state": "directory", "src": "/y"}),
                conflict("state"),
                "src",
            ),
            (json!({"path": "/x", "src": "/y"}), conflict("state"), "src"),
            (json!({"path": ""}), ArgErrorKind::Invalid, "path"),
        ] {
            let e = arg_error(&File, bad.clone());
            assert_eq!((e.kind, e.param), (kind, param), "{bad}");
        }
        assert!(Args::from_json(SPEC.params, json!({"path": "/x", "state": "hard"})).is_err());
        assert!(Args::from_json(SPEC.params, json!({"dest": "/x", "state": "touch"})).is_ok());
    }
}
