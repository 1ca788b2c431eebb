//! `copy`: a file with given content (inline or from the controller).

use crate::module::{
    Attrs, FileKind, Module, ModuleError, ModuleSpec, Observed, Plan, PlanContext, Probe,
};
use crate::modules::support;
use crate::params::{Args, ParamKind, ParamSpec};
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

/// Resolve a controller-side source path: absolute, else against the playbook directory, then
/// its `subdir` (`files` or `templates`).
pub fn resolve_src(ctx: &PlanContext, src: &str, subdir: &str) -> Result<PathBuf, ModuleError> {
    let p = Path::new(src);
    if p.is_absolute() {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(ModuleError::Args(format!(
                "src {src} does not exist on the controller"
            )))
        };
    }
    for candidate in [
        ctx.playbook_dir.join(src),
        ctx.playbook_dir.join(subdir).join(src),
    ] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(ModuleError::Args(format!(
        "src {src} not found in {} or its {subdir}/ folder",
        ctx.playbook_dir.display()
    )))
}

struct Request {
    dest: String,
    /// Where the file goes when `dest` turns out to be a directory.
    dest_in_dir: Option<String>,
    content: Vec<u8>,
}

fn request(args: &Args, ctx: &PlanContext) -> Result<Request, ModuleError> {
    let dest = args.req_str("dest").to_string();
    let (content, src_name) = match (args.str("content"), args.str("src")) {
        (Some(_), Some(_)) => {
            return Err(ModuleError::Args(
                "give either content or src, not both".into(),
            ))
        }
        (None, None) => {
            return Err(ModuleError::Args(
                "one of content or src is required".into(),
            ))
        }
        (Some(c), None) => (c.as_bytes().to_vec(), None),
        (None, Some(src)) => {
            let path = resolve_src(ctx, src, "files")?;
            let bytes = std::fs::read(&path)
                .map_err(|e| ModuleError::Args(format!("cannot read {}: {e}", path.display())))?;
            (
                bytes,
                path.file_name().map(|n| n.to_string_lossy().into_owned()),
            )
        }
    };
    let dest_in_dir = src_name.map(|n| format!("{}/{n}", dest.trim_end_matches('/')));
    if dest.ends_with('/') {
        let Some(d) = dest_in_dir else {
            return Err(ModuleError::Args(
                "dest ends with / but there is no src to name the file".into(),
            ));
        };
        return Ok(Request {
            dest: d,
            dest_in_dir: None,
            content,
        });
    }
    Ok(Request {
        dest,
        dest_in_dir,
        content,
    })
}

impl Module for Copy {
    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn probes(&self, args: &Args, ctx: &PlanContext) -> Result<Vec<Probe>, ModuleError> {
        let r = request(args, ctx)?;
        let mut probes = vec![Probe::File(r.dest)];
        probes.extend(r.dest_in_dir.map(Probe::File));
        Ok(probes)
    }

    fn plan(
        &self,
        args: &Args,
        observed: &Observed,
        ctx: &PlanContext,
    ) -> Result<Plan, ModuleError> {
        let r = request(args, ctx)?;
        let mut dest = r.dest;
        let mut state = observed.file(&dest)?;
        if state.kind == FileKind::Dir {
            if let Some(inner) = r.dest_in_dir {
                state = observed.file(&inner)?;
                dest = inner;
            }
        }
        let attrs = Attrs::from_args(args);
        let mut plan = Plan::ok();
        if state.exists() && !args.bool("force") {
            support::ensure_attrs(&mut plan, &dest, state, &attrs);
        } else {
            support::ensure_content(
                &mut plan,
                &dest,
                state,
                &r.content,
                &attrs,
                args.bool("backup"),
            )?;
        }
        Ok(plan.with_data("dest", dest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{Action, FileState};
    use serde_json::json;

    fn args(v: serde_json::Value) -> Args {
        Args::from_json(SPEC.params, v).unwrap()
    }

    #[test]
    fn creates_missing_file() {
        let a = args(json!({"dest": "/etc/x", "content": "hi\n", "mode": "0600"}));
        let obs = Observed::new().with_file("/etc/x", FileState::absent());
        let p = Copy.plan(&a, &obs, &PlanContext::default()).unwrap();
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
        let a = args(json!({"dest": "/etc/x", "content": "hi\n"}));
        let obs = Observed::new().with_file("/etc/x", FileState::file("hi\n"));
        assert!(!Copy
            .plan(&a, &obs, &PlanContext::default())
            .unwrap()
            .changed());
    }

    #[test]
    fn force_false_keeps_existing_content() {
        let a = args(json!({"dest": "/etc/x", "content": "new\n", "force": false}));
        let obs = Observed::new().with_file("/etc/x", FileState::file("old\n"));
        assert!(!Copy
            .plan(&a, &obs, &PlanContext::default())
            .unwrap()
            .changed());
    }

    #[test]
    fn content_and_src_conflict_is_caught_before_contact() {
        let a = args(json!({"dest": "/etc/x", "content": "a", "src": "b"}));
        assert!(Copy.probes(&a, &PlanContext::default()).is_err());
        let a = args(json!({"dest": "/etc/x"}));
        assert!(Copy.probes(&a, &PlanContext::default()).is_err());
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
        let a = args(json!({"dest": "/etc/sysctl.d", "src": "bridge.conf"}));
        assert_eq!(
            Copy.probes(&a, &ctx).unwrap(),
            vec![
                Probe::File("/etc/sysctl.d".into()),
                Probe::File("/etc/sysctl.d/bridge.conf".into())
            ]
        );
        let obs = Observed::new()
            .with_file("/etc/sysctl.d", FileState::dir())
            .with_file("/etc/sysctl.d/bridge.conf", FileState::absent());
        let p = Copy.plan(&a, &obs, &ctx).unwrap();
        assert_eq!(p.actions[0].path(), Some("/etc/sysctl.d/bridge.conf"));
    }
}
