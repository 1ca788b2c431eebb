//! `copy`: a file with given content (inline or from the controller).

use super::edit;
use crate::module::{
    ArgError, Attrs, FileKind, Module, ModuleError, ModuleSpec, Observed, Plan, PlanContext, Probe,
};
use crate::params::{Args, ParamKind, ParamSpec};
use serde::Deserialize;
use std::path::{Path, PathBuf};

pub struct Copy;

static SPEC: ModuleSpec = ModuleSpec {
    name: "copy",
    summary: "Ensure a file has the given content, mode and ownership",
    description: "Writes `content` (or the controller file `src`, relative to the playbook's \
directory or its `files/` folder) to `dest` atomically (temporary file, then rename). The file is \
only written when its content differs; mode, owner and group are corrected on their own when only \
they differ. An existing file keeps its mode and owner unless given. With `backup: true` the old \
file is kept as `DEST.TIMESTAMP~`. A `dest` ending in `/` or naming an existing directory receives \
the file under the basename of `src`.",
    params: &[
        ParamSpec::required("dest", ParamKind::Str, "Path of the file on the host")
            .aliases(&["path"]),
        ParamSpec::optional(
            "content",
            ParamKind::Str,
            "The file's content (exclusive with src)",
        ),
        ParamSpec::optional(
            "src",
            ParamKind::Str,
            "A file on the controller to copy (exclusive with content)",
        ),
        ParamSpec::optional("mode", ParamKind::Mode, "Permissions, e.g. \"0644\""),
        ParamSpec::optional("owner", ParamKind::Str, "Owning user"),
        ParamSpec::optional("group", ParamKind::Str, "Owning group"),
        ParamSpec::with_default(
            "backup",
            ParamKind::Bool,
            "false",
            "Keep a timestamped copy of the old file",
        ),
        ParamSpec::optional(
            "validate",
            ParamKind::Str,
            "Command that checks the new file before it replaces the old one; %s is the staged \
             file (e.g. \"visudo -cf %s\"). A failure leaves the old file and fails the task",
        ),
        ParamSpec::with_default(
            "force",
            ParamKind::Bool,
            "true",
            "Replace the content of an existing file; false only creates missing files",
        ),
    ],
    free_form: None,
    example: r#"- name: Proxy for apt
  copy:
    dest: /etc/apt/apt.conf.d/proxy.conf
    content: |
      Acquire::http::Proxy "http://192.168.121.101:3128";
    mode: "0644"
"#,
};

/// The controller file `src` names: in the playbook directory, else in its `subdir` (`files`
/// or `templates`). An absolute `src` is looked for as it is (joining keeps it unchanged).
pub fn find_src(playbook_dir: &Path, src: &str, subdir: &str) -> Option<PathBuf> {
    [playbook_dir.join(src), playbook_dir.join(subdir).join(src)]
        .into_iter()
        .find(|p| p.is_file())
}

/// A note for `-v` when a relative `src` reaches outside the playbook's folder (`../../x`): it
/// works, but whoever reads the run should see which controller file it read.
pub fn outside_playbook(ctx: &PlanContext, src: &str, path: &Path) -> Option<String> {
    if Path::new(src).is_absolute() {
        return None;
    }
    let dir = ctx.playbook_dir.canonicalize().ok()?;
    let file = path.canonicalize().ok()?;
    (!file.starts_with(&dir)).then(|| {
        format!(
            "src {src} is {}, outside the playbook's folder {}",
            file.display(),
            dir.display()
        )
    })
}

/// Resolve a controller-side source path (see [`find_src`]); an error on `src` when there is
/// no such file.
pub fn resolve_src(ctx: &PlanContext, src: &str, subdir: &str) -> Result<PathBuf, ArgError> {
    find_src(&ctx.playbook_dir, src, subdir).ok_or_else(|| {
        ArgError::invalid(
            "src",
            if Path::new(src).is_absolute() {
                format!("src {src} does not exist on the controller")
            } else {
                format!(
                    "src {src} not found in {} or its {subdir}/ folder",
                    ctx.playbook_dir.display()
                )
            },
        )
    })
}

/// A `copy` task's arguments as the parameter table delivers them.
#[derive(Debug, Deserialize)]
struct Params {
    dest: String,
    content: Option<String>,
    src: Option<String>,
    mode: Option<u32>,
    owner: Option<String>,
    group: Option<String>,
    backup: bool,
    force: bool,
    validate: Option<String>,
}

/// A `copy` task's arguments with the content to write (read from `src` on the controller).
#[derive(Debug)]
pub struct Request {
    dest: String,
    /// Where the file goes when `dest` turns out to be a directory.
    dest_in_dir: Option<String>,
    content: Vec<u8>,
    attrs: Attrs,
    backup: bool,
    force: bool,
    validate: Option<String>,
    /// Shown with `-v`: `src` was read from outside the playbook's folder.
    note: Option<String>,
}

impl Module for Copy {
    type Request = Request;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn request(&self, args: Args, ctx: &PlanContext) -> Result<Request, ModuleError> {
        let p: Params = args.parse()?;
        let mut note = None;
        let (content, src_name) = match (p.content, p.src) {
            (Some(_), Some(_)) => {
                return Err(ArgError::conflict(
                    "content",
                    "src",
                    "give either content or src, not both",
                )
                .into())
            }
            (None, None) => {
                return Err(ArgError::requires(
                    "dest",
                    "content",
                    "one of content or src is required",
                )
                .into())
            }
            (Some(c), None) => (c.into_bytes(), None),
            (None, Some(src)) => {
                let path = resolve_src(ctx, &src, "files")?;
                note = outside_playbook(ctx, &src, &path);
                let bytes = std::fs::read(&path).map_err(|e| {
                    ArgError::invalid("src", format!("cannot read {}: {e}", path.display()))
                })?;
                (
                    bytes,
                    path.file_name().map(|n| n.to_string_lossy().into_owned()),
                )
            }
        };
        let dest_in_dir = src_name.map(|n| format!("{}/{n}", p.dest.trim_end_matches('/')));
        let (dest, dest_in_dir) = if p.dest.ends_with('/') {
            let Some(d) = dest_in_dir else {
                return Err(ArgError::requires(
                    "dest",
                    "src",
                    "dest ends with / but there is no src to name the file",
                )
                .into());
            };
            (d, None)
        } else {
            (p.dest, dest_in_dir)
        };
        Ok(Request {
            dest,
            dest_in_dir,
            content,
            attrs: Attrs {
                mode: p.mode,
                owner: p.owner,
                group: p.group,
            },
            backup: p.backup,
            validate: edit::validate_command(p.validate)?,
            force: p.force,
            note,
        })
    }

    fn probes(&self, r: &Request) -> Vec<Probe> {
        let mut probes = vec![Probe::File(r.dest.clone())];
        probes.extend(r.dest_in_dir.clone().map(Probe::File));
        probes
    }

    fn plan(&self, r: &Request, observed: &Observed) -> Result<Plan, ModuleError> {
        let mut dest = r.dest.as_str();
        let mut state = observed.file(dest)?;
        if state.kind == FileKind::Dir {
            if let Some(inner) = &r.dest_in_dir {
                state = observed.file(inner)?;
                dest = inner;
            }
        }
        let mut plan = Plan::ok();
        if state.exists() && !r.force {
            edit::ensure_attrs(&mut plan, dest, state, &r.attrs);
        } else {
            edit::ensure_content(&mut plan, dest, state, &r.content, &r.attrs, r.backup)?;
            edit::validate_writes(&mut plan, r.validate.as_deref());
        }
        if plan.msg.is_none() {
            plan.msg = r.note.clone();
        }
        Ok(plan.with_data("dest", dest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{Action, ArgErrorKind, FileState};
    use crate::modules::testing::{arg_error, plan, req, request_in};
    use serde_json::json;

    #[test]
    fn creates_missing_file() {
        let a = json!({"dest": "/etc/x", "content": "hi\n", "mode": "0600"});
        let obs = Observed::new().with_file("/etc/x", FileState::absent());
        let p = plan(&Copy, a, &obs).unwrap();
        assert_eq!(p.changes.len(), 1);
        assert_eq!(
            p.actions,
            vec![Action::write(
                "/etc/x",
                "hi\n",
                Attrs {
                    mode: Some(0o600),
                    ..Attrs::default()
                },
                false
            )]
        );
    }

    #[test]
    fn same_content_is_ok() {
        let a = json!({"dest": "/etc/x", "content": "hi\n"});
        let obs = Observed::new().with_file("/etc/x", FileState::file("hi\n"));
        assert!(!plan(&Copy, a, &obs).unwrap().changed());
    }

    #[test]
    fn force_false_keeps_existing_content() {
        let a = json!({"dest": "/etc/x", "content": "new\n", "force": false});
        let obs = Observed::new().with_file("/etc/x", FileState::file("old\n"));
        assert!(!plan(&Copy, a, &obs).unwrap().changed());
    }

    #[test]
    fn content_and_src_conflict_is_caught_before_contact() {
        let e = arg_error(&Copy, json!({"dest": "/etc/x", "content": "a", "src": "b"}));
        assert_eq!(
            (e.kind, e.param),
            (ArgErrorKind::Conflict { with: "src" }, "content")
        );
        let e = arg_error(&Copy, json!({"dest": "/etc/x"}));
        assert_eq!(
            (e.kind, e.param),
            (ArgErrorKind::Requires { other: "content" }, "dest")
        );
    }

    #[test]
    fn src_into_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("files")).unwrap();
        std::fs::write(dir.path().join("files/bridge.conf"), "x=1\n").unwrap();
        let ctx = PlanContext {
            playbook_dir: dir.path().into(),
            ..Default::default()
        };
        let a = request_in(
            &Copy,
            json!({"dest": "/etc/sysctl.d", "src": "bridge.conf"}),
            &ctx,
        )
        .unwrap();
        assert_eq!(
            Copy.probes(&a),
            vec![
                Probe::File("/etc/sysctl.d".into()),
                Probe::File("/etc/sysctl.d/bridge.conf".into())
            ]
        );
        let obs = Observed::new()
            .with_file("/etc/sysctl.d", FileState::dir())
            .with_file("/etc/sysctl.d/bridge.conf", FileState::absent());
        let p = Copy.plan(&a, &obs).unwrap();
        assert_eq!(p.actions[0].path(), Some("/etc/sysctl.d/bridge.conf"));
        assert_eq!(
            p.actions[0],
            Action::write(
                "/etc/sysctl.d/bridge.conf",
                "x=1\n",
                Attrs::default(),
                false
            )
        );
    }

    #[test]
    fn validate_checks_the_staged_file_and_needs_its_placeholder() {
        let a = req(
            &Copy,
            json!({"dest": "/etc/sudoers.d/kf", "content": "x\n", "validate": "visudo -cf %s"}),
        );
        let p = Copy
            .plan(
                &a,
                &Observed::new().with_file("/etc/sudoers.d/kf", FileState::absent()),
            )
            .unwrap();
        assert_eq!(
            p.actions,
            vec![
                Action::write("/etc/sudoers.d/kf", "x\n", Attrs::default(), false)
                    .validated("visudo -cf %s")
            ]
        );
        let e = arg_error(
            &Copy,
            json!({"dest": "/etc/x", "content": "x", "validate": "visudo -c"}),
        );
        assert_eq!((e.kind, e.param), (ArgErrorKind::Invalid, "validate"));
    }

    #[test]
    fn controller_files_are_read_before_contact() {
        let ctx = PlanContext {
            playbook_dir: "/nonexistent-playbook".into(),
            ..Default::default()
        };
        for (args, msg) in [
            (
                json!({"dest": "/etc/x", "src": "nope.conf"}),
                "src nope.conf not found in /nonexistent-playbook or its files/ folder",
            ),
            (
                json!({"dest": "/etc/x", "src": "/nonexistent/nope.conf"}),
                "src /nonexistent/nope.conf does not exist on the controller",
            ),
        ] {
            let Err(ModuleError::Args(e)) = request_in(&Copy, args, &ctx) else {
                panic!("expected an argument error")
            };
            assert_eq!((e.kind, e.param), (ArgErrorKind::Invalid, "src"));
            assert_eq!(e.msg, msg);
        }
        let e = arg_error(&Copy, json!({"dest": "/etc/", "content": "x"}));
        assert_eq!(
            (e.kind, e.param),
            (ArgErrorKind::Requires { other: "src" }, "dest")
        );
    }

    #[test]
    fn dest_ending_in_a_slash_names_the_file_after_src() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.conf"), "a\n").unwrap();
        let ctx = PlanContext {
            playbook_dir: dir.path().into(),
            ..Default::default()
        };
        let a = request_in(&Copy, json!({"dest": "/etc/d/", "src": "a.conf"}), &ctx).unwrap();
        assert_eq!(Copy.probes(&a), vec![Probe::File("/etc/d/a.conf".into())]);
    }
}
