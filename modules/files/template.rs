//! `template`: a file rendered on the controller from a Handlebars template.

use super::copy::{find_src, outside_playbook, resolve_src};
use super::edit;
use crate::module::{
    ArgError, Attrs, Module, ModuleError, ModuleSpec, Observed, Plan, PlanContext, Probe,
};
use crate::params::{Args, ParamKind, ParamSpec};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

pub struct Template;

static SPEC: ModuleSpec = ModuleSpec {
    name: "template",
    summary: "Render a template on the controller and ensure a file has the result",
    description: "Renders the controller file `src` (relative to the playbook's directory or its \
`templates/` folder) with the task's variables, using Handlebars in strict mode: a variable that \
is not defined is an error naming it and the template, reported before the host is changed. The \
result is then handled exactly like `copy` content: `dest` is written atomically only when its \
content differs from the rendering, mode, owner and group are corrected on their own when only \
they differ, an existing file keeps its mode and owner unless given, and `backup: true` keeps the \
old file as `DEST.TIMESTAMP~`.",
    params: &[
        ParamSpec::required("src", ParamKind::Str, "Template file on the controller"),
        ParamSpec::required("dest", ParamKind::Str, "Path of the file on the host")
            .aliases(&["path"]),
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
    ],
    free_form: None,
    example: r#"- name: libvirt daemon configuration
  template:
    src: libvirtd.conf.hbs
    dest: /etc/libvirt/libvirtd.conf
    mode: "0644"
    backup: true
"#,
};

/// A `template` task's arguments as the parameter table delivers them.
#[derive(Debug, Deserialize)]
struct Params {
    src: String,
    dest: String,
    mode: Option<u32>,
    owner: Option<String>,
    group: Option<String>,
    backup: bool,
    validate: Option<String>,
}

/// A `template` task's arguments with the template rendered for this host.
#[derive(Debug)]
pub struct Request {
    dest: String,
    content: Content,
    attrs: Attrs,
    backup: bool,
    validate: Option<String>,
    /// Shown with `-v`: the template was read from outside the playbook's folder.
    note: Option<String>,
}

/// The rendered template, or the variable it waits for (see [`Module::waits_for`]).
#[derive(Debug)]
enum Content {
    Rendered(Vec<u8>),
    Waits(String),
}

/// Read and render the template. Errors name the template file, and for an undefined variable
/// the variable (the engine tries again later when that variable is one still to come).
fn render(src: &str, ctx: &PlanContext) -> Result<Vec<u8>, ModuleError> {
    let path = resolve_src(ctx, src, "templates")?;
    let shown = path.display();
    let bytes = std::fs::read(&path)
        .map_err(|e| ArgError::invalid("src", format!("cannot read template {shown}: {e}")))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| ArgError::invalid("src", format!("template {shown} is not UTF-8 text")))?;
    crate::template::render(&text, &ctx.vars)
        .map(String::into_bytes)
        .map_err(|error| ModuleError::Template {
            file: shown.to_string(),
            error,
        })
}

impl Module for Template {
    type Request = Request;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn request(&self, args: Args, ctx: &PlanContext) -> Result<Request, ModuleError> {
        let p: Params = args.parse()?;
        let note = find_src(&ctx.playbook_dir, &p.src, "templates")
            .and_then(|path| outside_playbook(ctx, &p.src, &path));
        let content = match render(&p.src, ctx) {
            Ok(bytes) => Content::Rendered(bytes),
            Err(ModuleError::Template { error, .. })
                if error
                    .undefined_root()
                    .is_some_and(|r| ctx.pending.contains(r)) =>
            {
                Content::Waits(error.undefined_root().unwrap_or_default().to_string())
            }
            Err(e) => return Err(e),
        };
        Ok(Request {
            content,
            dest: p.dest,
            attrs: Attrs {
                mode: p.mode,
                owner: p.owner,
                group: p.group,
            },
            backup: p.backup,
            validate: edit::validate_command(p.validate)?,
            note,
        })
    }

    fn probes(&self, r: &Request) -> Vec<Probe> {
        vec![Probe::File(r.dest.clone())]
    }

    fn waits_for<'r>(&self, r: &'r Request) -> Option<&'r str> {
        match &r.content {
            Content::Waits(var) => Some(var),
            Content::Rendered(_) => None,
        }
    }

    fn plan(&self, r: &Request, observed: &Observed) -> Result<Plan, ModuleError> {
        let Content::Rendered(content) = &r.content else {
            return Err(ModuleError::Internal(format!(
                "template for {} planned before its variables exist",
                r.dest
            )));
        };
        let dest = r.dest.as_str();
        let state = observed.file(dest)?;
        let mut plan = Plan::ok();
        edit::ensure_content(&mut plan, dest, state, content, &r.attrs, r.backup)?;
        edit::validate_writes(&mut plan, r.validate.as_deref());
        if plan.msg.is_none() {
            plan.msg = r.note.clone();
        }
        Ok(plan.with_data("dest", dest))
    }

    /// The template file `src` names, found where [`resolve_src`] looks for it in the playbook
    /// directory; unknown while `src` is itself templated, or when there is no such file (the
    /// task then fails on its own).
    fn rendered_files(
        &self,
        raw_args: &Map<String, Value>,
        playbook_dir: &Path,
    ) -> Option<Vec<PathBuf>> {
        let src = raw_args.get("src")?.as_str()?;
        if crate::template::is_template(src) {
            return None;
        }
        find_src(playbook_dir, src, "templates").map(|f| vec![f])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{Action, ArgErrorKind, FileState};
    use crate::modules::testing::{content, converge, request_in};
    use serde_json::json;

    fn req(v: serde_json::Value, ctx: &PlanContext) -> Request {
        request_in(&Template, v, ctx).unwrap_or_else(|e| panic!("request: {e}"))
    }

    /// A playbook directory with `templates/NAME` holding `text`, and `vars`.
    fn playbook(
        name: &str,
        text: &str,
        vars: serde_json::Value,
    ) -> (tempfile::TempDir, PlanContext) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("templates")).unwrap();
        std::fs::write(dir.path().join("templates").join(name), text).unwrap();
        let ctx = PlanContext {
            playbook_dir: dir.path().into(),
            vars: vars.into(),
            ..Default::default()
        };
        (dir, ctx)
    }

    #[test]
    fn pending_variables_still_give_probes_but_others_fail() {
        let (_d, mut ctx) = playbook("t.hbs", "{{ facts.kernel }}\n", json!({}));
        let a = json!({"src": "t.hbs", "dest": "/etc/x"});
        match request_in(&Template, a.clone(), &ctx) {
            Err(ModuleError::Template { error, .. }) => {
                assert_eq!(error.undefined_root(), Some("facts"))
            }
            other => panic!("{other:?}"),
        }
        ctx.pending.insert("facts".into());
        let r = req(a, &ctx);
        assert_eq!(Template.waits_for(&r), Some("facts"));
        assert_eq!(Template.probes(&r), vec![Probe::File("/etc/x".into())]);
        assert!(Template.plan(&r, &Observed::new()).is_err());
    }

    #[test]
    fn renders_and_creates_then_ok() {
        let (_d, ctx) = playbook(
            "bridge.hbs",
            "auto {{ bridge }}\niface {{ bridge }} inet manual\n  bridge_ports {{join ports \" \"}}\n",
            json!({"bridge": "br0", "ports": ["eno1", "eno2"]}),
        );
        let a = req(
            json!({"src": "bridge.hbs", "dest": "/etc/network/interfaces.d/br0", "mode": "0644"}),
            &ctx,
        );
        assert_eq!(
            Template.probes(&a),
            vec![Probe::File("/etc/network/interfaces.d/br0".into())]
        );
        let obs = Observed::new().with_file("/etc/network/interfaces.d/br0", FileState::absent());
        let (p, _) = converge(&Template, &a, &obs);
        assert_eq!(p.changes[0].summary, "create /etc/network/interfaces.d/br0");
        assert_eq!(
            p.actions,
            vec![Action::write(
                "/etc/network/interfaces.d/br0",
                "auto br0\niface br0 inet manual\n  bridge_ports eno1 eno2\n",
                Attrs {
                    mode: Some(0o644),
                    ..Attrs::default()
                },
                false
            )]
        );
    }

    #[test]
    fn drift_is_rewritten_with_diff_and_backup() {
        let (_d, ctx) = playbook("t", "listen_tls = {{ tls }}\n", json!({"tls": 0}));
        let a = req(
            json!({"src": "t", "dest": "/etc/libvirt/libvirtd.conf", "backup": true}),
            &ctx,
        );
        let obs = Observed::new().with_file(
            "/etc/libvirt/libvirtd.conf",
            FileState::file("listen_tls = 1\n"),
        );
        let (p, after) = converge(&Template, &a, &obs);
        let d = p.changes[0].diff.as_ref().unwrap();
        assert_eq!(
            (d.before.as_str(), d.after.as_str()),
            ("listen_tls = 1\n", "listen_tls = 0\n")
        );
        assert!(matches!(
            &p.actions[0],
            Action::WriteFile { backup: true, .. }
        ));
        assert_eq!(
            content(&after, "/etc/libvirt/libvirtd.conf"),
            "listen_tls = 0\n"
        );
    }

    #[test]
    fn values_are_not_escaped_and_only_attrs_fix_attrs() {
        let (_d, ctx) = playbook("t", "pw=\"{{ pw }}\"\n", json!({"pw": "a'b\"<&>$(x)"}));
        let a = req(json!({"src": "t", "dest": "/etc/x", "mode": "0600"}), &ctx);
        let obs = Observed::new().with_file("/etc/x", FileState::file("pw=\"a'b\"<&>$(x)\"\n"));
        let p = Template.plan(&a, &obs).unwrap();
        assert_eq!(
            p.actions,
            vec![Action::SetAttrs {
                path: "/etc/x".into(),
                attrs: Attrs {
                    mode: Some(0o600),
                    ..Attrs::default()
                }
            }]
        );
    }

    #[test]
    fn undefined_variable_is_an_argument_error_naming_variable_and_template() {
        let (_d, ctx) = playbook("qemu.conf.hbs", "user = \"{{ qemu.user }}\"\n", json!({}));
        let a = json!({"src": "qemu.conf.hbs", "dest": "/etc/libvirt/qemu.conf"});
        let e = request_in(&Template, a, &ctx).unwrap_err();
        let ModuleError::Template { .. } = &e else {
            panic!("{e:?}")
        };
        let msg = e.to_string();
        assert!(
            msg.contains("`qemu.user` is not defined") && msg.contains("qemu.conf.hbs"),
            "{msg}"
        );
    }

    #[test]
    fn missing_template_and_syntax_errors_are_caught_before_contact() {
        let (_d, ctx) = playbook("bad.hbs", "{{#if x}}unclosed\n", json!({"x": true}));
        let a = json!({"src": "nope.hbs", "dest": "/etc/x"});
        let Err(ModuleError::Args(e)) = request_in(&Template, a, &ctx) else {
            panic!("expected an argument error")
        };
        assert_eq!((e.kind, e.param), (ArgErrorKind::Invalid, "src"));
        assert!(e.msg.contains("nope.hbs"), "{e}");
        let a = json!({"src": "bad.hbs", "dest": "/etc/x"});
        let e = request_in(&Template, a, &ctx).unwrap_err();
        assert!(matches!(e, ModuleError::Template { .. }), "{e:?}");
        assert!(e.to_string().contains("bad.hbs"), "{e}");
    }

    #[test]
    fn directory_at_dest_is_an_error() {
        let (_d, ctx) = playbook("t", "x\n", json!({}));
        let a = req(json!({"src": "t", "path": "/etc/x"}), &ctx);
        let obs = Observed::new().with_file("/etc/x", FileState::dir());
        assert!(matches!(Template.plan(&a, &obs), Err(ModuleError::Host(_))));
    }

    #[test]
    fn rendered_files_are_found_from_the_raw_src() {
        let (d, _ctx) = playbook("in-templates.hbs", "x\n", json!({}));
        std::fs::write(d.path().join("beside.hbs"), "y\n").unwrap();
        std::fs::write(d.path().join("templates/beside.hbs"), "z\n").unwrap();
        let files =
            |raw: serde_json::Value| Template.rendered_files(raw.as_object().unwrap(), d.path());
        assert_eq!(
            files(json!({"src": "in-templates.hbs", "dest": "/x"})),
            Some(vec![d.path().join("templates/in-templates.hbs")])
        );
        // The playbook directory comes first.
        assert_eq!(
            files(json!({"src": "beside.hbs", "dest": "/x"})),
            Some(vec![d.path().join("beside.hbs")])
        );
        assert_eq!(files(json!({"src": "{{ name }}.hbs", "dest": "/x"})), None);
        assert_eq!(files(json!({"src": "nope.hbs", "dest": "/x"})), None);
        assert_eq!(files(json!({"dest": "/x"})), None);
    }
}
