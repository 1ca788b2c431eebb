//! `template`: a file rendered on the controller from a Handlebars template.

use crate::module::{Attrs, Module, ModuleError, ModuleSpec, Observed, Plan, PlanContext, Probe};
use crate::modules::copy::resolve_src;
use crate::modules::support;
use crate::params::{Args, ParamKind, ParamSpec};

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

/// Read and render the template. Errors name the template file, and for an undefined variable
/// the variable.
fn render(args: &Args, ctx: &PlanContext) -> Result<Vec<u8>, ModuleError> {
    let src = args.req_str("src");
    let path = resolve_src(ctx, src, "templates")?;
    let shown = path.display();
    let bytes = std::fs::read(&path)
        .map_err(|e| ModuleError::Args(format!("cannot read template {shown}: {e}")))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| ModuleError::Args(format!("template {shown} is not UTF-8 text")))?;
    crate::template::render(&text, &ctx.vars)
        .map(String::into_bytes)
        .map_err(|error| ModuleError::Template {
            file: shown.to_string(),
            error,
        })
}

impl Module for Template {
    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn probes(&self, args: &Args, ctx: &PlanContext) -> Result<Vec<Probe>, ModuleError> {
        match render(args, ctx) {
            // Rendered for real when the task runs; the destination is known already.
            Err(ModuleError::Template { error, .. })
                if error
                    .undefined_root()
                    .is_some_and(|r| ctx.pending.contains(r)) => {}
            other => {
                other?;
            }
        }
        Ok(vec![Probe::File(args.req_str("dest").to_string())])
    }

    fn plan(
        &self,
        args: &Args,
        observed: &Observed,
        ctx: &PlanContext,
    ) -> Result<Plan, ModuleError> {
        let content = render(args, ctx)?;
        let dest = args.req_str("dest");
        let state = observed.file(dest)?;
        let mut plan = Plan::ok();
        support::ensure_content(
            &mut plan,
            dest,
            state,
            &content,
            &Attrs::from_args(args),
            args.bool("backup"),
        )?;
        Ok(plan.with_data("dest", dest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{Action, FileState};
    use crate::modules::support::sim;
    use serde_json::json;

    fn args(v: serde_json::Value) -> Args {
        Args::from_json(SPEC.params, v).unwrap()
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
        let a = args(json!({"src": "t.hbs", "dest": "/etc/x"}));
        assert!(Template.probes(&a, &ctx).is_err());
        ctx.pending.insert("facts".into());
        assert_eq!(
            Template.probes(&a, &ctx).unwrap(),
            vec![Probe::File("/etc/x".into())]
        );
    }

    #[test]
    fn renders_and_creates_then_ok() {
        let (_d, ctx) = playbook(
            "bridge.hbs",
            "auto {{ bridge }}\niface {{ bridge }} inet manual\n  bridge_ports {{join ports \" \"}}\n",
            json!({"bridge": "br0", "ports": ["eno1", "eno2"]}),
        );
        let a = args(
            json!({"src": "bridge.hbs", "dest": "/etc/network/interfaces.d/br0", "mode": "0644"}),
        );
        assert_eq!(
            Template.probes(&a, &ctx).unwrap(),
            vec![Probe::File("/etc/network/interfaces.d/br0".into())]
        );
        let obs = Observed::new().with_file("/etc/network/interfaces.d/br0", FileState::absent());
        let (p, _) = sim::converge(&Template, &a, &obs, &ctx);
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
        let a = args(json!({"src": "t", "dest": "/etc/libvirt/libvirtd.conf", "backup": true}));
        let obs = Observed::new().with_file(
            "/etc/libvirt/libvirtd.conf",
            FileState::file("listen_tls = 1\n"),
        );
        let (p, after) = sim::converge(&Template, &a, &obs, &ctx);
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
            sim::content(&after, "/etc/libvirt/libvirtd.conf"),
            "listen_tls = 0\n"
        );
    }

    #[test]
    fn values_are_not_escaped_and_only_attrs_fix_attrs() {
        let (_d, ctx) = playbook("t", "pw=\"{{ pw }}\"\n", json!({"pw": "a'b\"<&>$(x)"}));
        let a = args(json!({"src": "t", "dest": "/etc/x", "mode": "0600"}));
        let obs = Observed::new().with_file("/etc/x", FileState::file("pw=\"a'b\"<&>$(x)\"\n"));
        let p = Template.plan(&a, &obs, &ctx).unwrap();
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
        let a = args(json!({"src": "qemu.conf.hbs", "dest": "/etc/libvirt/qemu.conf"}));
        let e = Template.probes(&a, &ctx).unwrap_err();
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
        let a = args(json!({"src": "nope.hbs", "dest": "/etc/x"}));
        assert!(
            matches!(Template.probes(&a, &ctx), Err(ModuleError::Args(m)) if m.contains("nope.hbs"))
        );
        let a = args(json!({"src": "bad.hbs", "dest": "/etc/x"}));
        let e = Template.probes(&a, &ctx).unwrap_err();
        assert!(matches!(e, ModuleError::Template { .. }), "{e:?}");
        assert!(e.to_string().contains("bad.hbs"), "{e}");
    }

    #[test]
    fn directory_at_dest_is_an_error() {
        let (_d, ctx) = playbook("t", "x\n", json!({}));
        let a = args(json!({"src": "t", "path": "/etc/x"}));
        let obs = Observed::new().with_file("/etc/x", FileState::dir());
        assert!(matches!(
            Template.plan(&a, &obs, &ctx),
            Err(ModuleError::Host(_))
        ));
    }
}
