//! `sysctl`: one kernel parameter, persisted in a sysctl.d file and set on the running kernel.
//!
//! The persisted value (a line in `sysctl_file`) and the live value (`/proc/sys/...`) are
//! compared separately: a host where someone ran `sysctl -w` by hand, or where the file was
//! written but never applied, is corrected on exactly the side that drifted.

use super::sysctl_keys::{self, Drift};
use crate::module::{
    ArgError, Attrs, Module, ModuleError, ModuleSpec, Observed, Plan, PlanContext, Probe,
};
use crate::modules::args;
use crate::modules::args::Presence;
use crate::modules::files::edit;
use crate::params::{Args, ParamKind, ParamSpec};
use serde::Deserialize;

pub struct Sysctl;

static SPEC: ModuleSpec = ModuleSpec {
    name: "sysctl",
    summary: "Set a kernel parameter persistently (sysctl.d) and on the running kernel",
    description: "Keeps one `name = value` line for the key in `sysctl_file` (default \
/etc/sysctl.d/99-kvmforge.conf, unlike Ansible's /etc/sysctl.conf) and, with `reload: true`, the \
live value in /proc/sys. Both sides are compared separately and whitespace-normalised (the kernel \
prints `net.ipv4.ip_local_port_range` as `32768<TAB>60999`): when the file differs, only the line \
for this key is replaced (whether written `a.b=c`, `a.b = c` or `a/b/c = ...`; later duplicates of \
the key are dropped) or appended, and the rest of the file is kept byte for byte; when the live \
value differs, `sysctl -w name=value` sets just this key. Nothing is written or run when both \
match (unlike Ansible, which runs `sysctl -p FILE` after a file change and so also applies the \
file's other keys, and does not check the live value otherwise). `yes`/`true` and `no`/`false` \
values mean 1 and 0, as in Ansible.\n\n\
A key that does not exist in /proc/sys (typically because the kernel module providing it, such \
as br_netfilter for net.bridge.*, is not loaded) is still persisted; the live value is not set \
and the result's `msg` says so. It takes effect when the key's module is loaded before \
systemd-sysctl runs at boot (load it through modules-load.d, see `kernel_module`). \
`state: absent` removes the key's lines from the file (and the file once it is empty) and leaves \
the live value alone: the old value stays until the next boot. Note that sysctl.d files apply in \
file name order across /etc, /run and /usr/lib, so a file sorting later (such as Debian's \
99-sysctl.conf link to /etc/sysctl.conf) overrides this one at boot. Setting the live value needs \
the `sysctl` command (procps).",
    params: &[
        ParamSpec::required(
            "name",
            ParamKind::Str,
            "The key, `net.ipv4.ip_forward` or `net/ipv4/ip_forward`",
        )
        .aliases(&["key"]),
        ParamSpec::optional(
            "value",
            ParamKind::Scalar,
            "The value (required with state=present); several fields separated by spaces",
        )
        .aliases(&["val"]),
        ParamSpec::with_default(
            "state",
            ParamKind::Choice(&["present", "absent"]),
            "present",
            "absent removes the key from sysctl_file (the live value is not touched)",
        ),
        ParamSpec::with_default(
            "sysctl_file",
            ParamKind::Str,
            "/etc/sysctl.d/99-kvmforge.conf",
            "The file the key is persisted in",
        ),
        ParamSpec::with_default(
            "reload",
            ParamKind::Bool,
            "true",
            "Also set the live value (`sysctl -w`) when it differs",
        ),
    ],
    free_form: None,
    example: r#"- name: Let the host route between VM networks
  sysctl:
    name: net.ipv4.ip_forward
    value: 1
"#,
};

/// A `sysctl` task's arguments as given.
#[derive(Deserialize)]
struct Params {
    name: String,
    value: Option<String>,
    state: Presence,
    sysctl_file: String,
    reload: bool,
}

/// A `sysctl` task's arguments, checked.
pub struct Request {
    /// The key in dotted form, as written to the file and given to `sysctl -w`.
    dotted: String,
    /// The key in path form: what lines in the file are matched by.
    path: String,
    /// The normalised value; `None` for state=absent.
    value: Option<String>,
    file: String,
    reload: bool,
}

/// A value as sysctl compares it: booleans as Ansible maps them, whitespace normalised.
fn normalise_value(v: &str) -> String {
    match v.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" => "1".into(),
        "no" | "false" => "0".into(),
        _ => sysctl_keys::sysctl_value(v),
    }
}

/// The key in path form, checked: one key, no wildcards, no empty or relative components (the
/// path names a file under /proc/sys).
fn key_path(name: &str) -> Result<String, ArgError> {
    let bad = |why: &str| ArgError::invalid("name", format!("invalid sysctl name {name:?}: {why}"));
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name
        .chars()
        .any(|c| c.is_whitespace() || "=*?[]".contains(c))
    {
        return Err(bad("it must be one key, without spaces, `=` or wildcards"));
    }
    let path = sysctl_keys::sysctl_path(name);
    if path
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(bad("empty or relative component"));
    }
    Ok(path)
}

/// The key (path form) and value of a sysctl.d line: `key = value`, `key=value`, and
/// `-key = value` (systemd's "ignore failure" prefix). Comments (`#`, `;`) and other lines are
/// not settings.
fn parse_line(line: &str) -> Option<(String, &str)> {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
        return None;
    }
    let (k, v) = t.split_once('=')?;
    let k = k.trim();
    let k = k.strip_prefix('-').unwrap_or(k).trim();
    Some((sysctl_keys::sysctl_path(k), v.trim()))
}

/// The file with the key set to `req.value` (or removed when `None`). A matching line that
/// already holds the value is kept as written; the text is returned unchanged when nothing
/// needs to change, so a missing final newline alone is not a change.
fn edited(text: &str, req: &Request) -> String {
    let (lines, _) = edit::lines(text);
    let mut out = Vec::with_capacity(lines.len() + 1);
    let mut kept = false;
    let mut modified = false;
    for line in lines {
        let Some((key, current)) = parse_line(&line) else {
            out.push(line);
            continue;
        };
        if key != req.path {
            out.push(line);
            continue;
        }
        match &req.value {
            Some(value) if !kept => {
                kept = true;
                if sysctl_keys::sysctl_value(current) == *value {
                    out.push(line);
                } else {
                    let dash = if line.trim_start().starts_with('-') {
                        "-"
                    } else {
                        ""
                    };
                    out.push(format!("{dash}{} = {value}", req.dotted));
                    modified = true;
                }
            }
            // A later duplicate (it would override the first) or state=absent.
            _ => modified = true,
        }
    }
    if let (Some(value), false) = (&req.value, kept) {
        out.push(format!("{} = {value}", req.dotted));
        modified = true;
    }
    if modified {
        edit::unlines(&out)
    } else {
        text.to_string()
    }
}

impl Module for Sysctl {
    type Request = Request;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn request(&self, args: Args, _ctx: &PlanContext) -> Result<Request, ModuleError> {
        let p: Params = args.parse()?;
        let name = p.name.trim();
        let path = key_path(name)?;
        let value = match (p.state, p.value) {
            (Presence::Absent, _) => None,
            (Presence::Present, None) => {
                return Err(ArgError::requires(
                    "state",
                    "value",
                    "value is required when state is present",
                )
                .into())
            }
            (Presence::Present, Some(v)) => {
                let v = normalise_value(&v);
                if v.is_empty() {
                    return Err(
                        ArgError::invalid("value", format!("value for {name} is empty")).into(),
                    );
                }
                Some(v)
            }
        };
        args::absolute_path("sysctl_file", &p.sysctl_file)?;
        Ok(Request {
            dotted: sysctl_keys::sysctl_dotted(name),
            path,
            value,
            file: p.sysctl_file,
            reload: p.reload,
        })
    }

    fn probes(&self, r: &Request) -> Vec<Probe> {
        let mut probes = vec![Probe::File(r.file.clone())];
        if r.value.is_some() {
            probes.push(Probe::File(sysctl_keys::proc_path(&r.dotted)));
        }
        probes
    }

    fn plan(&self, r: &Request, observed: &Observed) -> Result<Plan, ModuleError> {
        let mut plan = Plan::ok()
            .with_data("name", r.dotted.clone())
            .with_data("sysctl_file", r.file.clone());

        // The persisted value.
        let state = observed.file(&r.file)?;
        match edit::existing_text(&r.file, state)? {
            None if r.value.is_none() => {}
            current => {
                let current = current.unwrap_or_default();
                let desired = edited(&current, r);
                if desired.is_empty() && desired != current {
                    edit::ensure_absent(&mut plan, &r.file, state);
                } else if desired != current || !state.exists() {
                    edit::ensure_content(
                        &mut plan,
                        &r.file,
                        state,
                        desired.as_bytes(),
                        &Attrs::default(),
                        false,
                    )?;
                }
            }
        }

        // The live value.
        let Some(value) = &r.value else {
            return Ok(plan);
        };
        plan.data.insert("value".into(), value.clone().into());
        let live = sysctl_keys::live_value(observed, &r.dotted)?;
        plan.data.insert("live_value".into(), live.clone().into());
        match live {
            Some(current) if current == *value => {}
            Some(current) if r.reload => sysctl_keys::set_live(
                &mut plan,
                &[Drift {
                    key: r.dotted.clone(),
                    live: current,
                    wanted: value.clone(),
                }],
            ),
            Some(current) => {
                plan.msg = Some(format!(
                    "the live value of {} is {current}; not set because reload is false",
                    r.dotted
                ));
            }
            None => {
                plan.msg = Some(format!(
                    "{} does not exist in /proc/sys (is the kernel module providing it loaded?): \
                     persisted in {} but not set live",
                    r.dotted, r.file
                ));
            }
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{Action, ArgErrorKind, FileState};
    use crate::modules::testing::{arg_error, req};
    use serde_json::json;

    const FILE: &str = "/etc/sysctl.d/99-kvmforge.conf";
    const FWD: &str = "/proc/sys/net/ipv4/ip_forward";

    fn args(v: serde_json::Value) -> Request {
        req(&Sysctl, v)
    }

    fn plan(r: &Request, obs: &Observed) -> Plan {
        Sysctl.plan(r, obs).unwrap()
    }

    fn fwd() -> Request {
        args(json!({"name": "net.ipv4.ip_forward", "value": 1}))
    }

    #[test]
    fn fresh_host_writes_file_and_sets_live_value() {
        let a = fwd();
        assert_eq!(
            Sysctl.probes(&a),
            vec![Probe::File(FILE.into()), Probe::File(FWD.into())]
        );
        let obs = Observed::new()
            .with_file(FILE, FileState::absent())
            .with_file(FWD, FileState::file("0\n"));
        let p = plan(&a, &obs);
        assert_eq!(p.changes.len(), 2);
        assert_eq!(
            p.actions,
            vec![
                Action::write(FILE, "net.ipv4.ip_forward = 1\n", Attrs::default(), false),
                Action::run("sysctl -w net.ipv4.ip_forward=1"),
            ]
        );
        assert_eq!(p.data["live_value"], json!("0"));
        assert!(!p.reboot_required);
    }

    #[test]
    fn converged_host_is_ok() {
        let obs = Observed::new()
            .with_file(FILE, FileState::file("# routing\nnet.ipv4.ip_forward=1\n"))
            .with_file(FWD, FileState::file("1\n"));
        let p = plan(&fwd(), &obs);
        assert!(!p.changed(), "{:?}", p.changes);
        assert!(p.actions.is_empty());
        assert_eq!(p.msg, None);
    }

    #[test]
    fn only_live_value_drifted() {
        let obs = Observed::new()
            .with_file(FILE, FileState::file("net.ipv4.ip_forward = 1\n"))
            .with_file(FWD, FileState::file("0\n"));
        let p = plan(&fwd(), &obs);
        assert_eq!(
            p.actions,
            vec![Action::run("sysctl -w net.ipv4.ip_forward=1")]
        );
    }

    #[test]
    fn only_file_drifted_replaces_just_that_line() {
        let before = "vm.swappiness = 10\nnet/ipv4/ip_forward=0\n# end\n";
        let obs = Observed::new()
            .with_file(FILE, FileState::file(before))
            .with_file(FWD, FileState::file("1\n"));
        let p = plan(&fwd(), &obs);
        assert_eq!(
            p.actions,
            vec![Action::write(
                FILE,
                "vm.swappiness = 10\nnet.ipv4.ip_forward = 1\n# end\n",
                Attrs::default(),
                false
            )]
        );
        let d = p.changes[0].diff.as_ref().unwrap();
        assert_eq!(d.before, before);
    }

    #[test]
    fn reload_false_leaves_live_value() {
        let a = args(json!({"name": "net.ipv4.ip_forward", "value": "yes", "reload": false}));
        let obs = Observed::new()
            .with_file(FILE, FileState::file("net.ipv4.ip_forward = 1\n"))
            .with_file(FWD, FileState::file("0\n"));
        let p = plan(&a, &obs);
        assert!(!p.changed());
        assert!(p.msg.unwrap().contains("reload is false"));
    }

    #[test]
    fn multi_field_values_compare_whitespace_normalised() {
        let a = args(json!({"key": "net.ipv4.ip_local_port_range", "value": "32768   60999"}));
        let live = "/proc/sys/net/ipv4/ip_local_port_range";
        let obs = Observed::new()
            .with_file(
                FILE,
                FileState::file("net.ipv4.ip_local_port_range=32768\t60999\n"),
            )
            .with_file(live, FileState::file("32768\t60999\n"));
        assert!(!plan(&a, &obs).changed());
        let obs = obs
            .with_file(FILE, FileState::absent())
            .with_file(live, FileState::file("1024\t65000\n"));
        let p = plan(&a, &obs);
        assert_eq!(
            p.actions,
            vec![
                Action::write(
                    FILE,
                    "net.ipv4.ip_local_port_range = 32768 60999\n",
                    Attrs::default(),
                    false
                ),
                Action::run("sysctl -w 'net.ipv4.ip_local_port_range=32768 60999'"),
            ]
        );
    }

    #[test]
    fn duplicates_are_dropped_and_dash_prefix_kept() {
        let obs = Observed::new()
            .with_file(
                FILE,
                FileState::file("-net.ipv4.ip_forward = 0\nnet.ipv4.ip_forward = 1\n"),
            )
            .with_file(FWD, FileState::file("1\n"));
        let p = plan(&fwd(), &obs);
        assert_eq!(
            p.actions,
            vec![Action::write(
                FILE,
                "-net.ipv4.ip_forward = 1\n",
                Attrs::default(),
                false
            )]
        );
        // Applying it converges.
        let obs = obs.with_file(FILE, FileState::file("-net.ipv4.ip_forward = 1\n"));
        assert!(!plan(&fwd(), &obs).changed());
    }

    #[test]
    fn missing_final_newline_alone_is_not_a_change() {
        let obs = Observed::new()
            .with_file(FILE, FileState::file("net.ipv4.ip_forward = 1"))
            .with_file(FWD, FileState::file("1\n"));
        assert!(!plan(&fwd(), &obs).changed());
    }

    #[test]
    fn slash_key_with_dotted_interface_name() {
        let a = args(json!({"name": "net/ipv4/conf/eth0.100/rp_filter", "value": 2}));
        assert_eq!(
            Sysctl.probes(&a)[1],
            Probe::File("/proc/sys/net/ipv4/conf/eth0.100/rp_filter".into())
        );
        let obs = Observed::new()
            .with_file(
                FILE,
                FileState::file("net.ipv4.conf.eth0/100.rp_filter = 1\n"),
            )
            .with_file(
                "/proc/sys/net/ipv4/conf/eth0.100/rp_filter",
                FileState::file("1\n"),
            );
        let p = plan(&a, &obs);
        assert_eq!(
            p.actions,
            vec![
                Action::write(
                    FILE,
                    "net.ipv4.conf.eth0/100.rp_filter = 2\n",
                    Attrs::default(),
                    false
                ),
                Action::run("sysctl -w net.ipv4.conf.eth0/100.rp_filter=2"),
            ]
        );
    }

    #[test]
    fn key_missing_from_proc_is_persisted_with_a_message() {
        let a = args(json!({"name": "net.bridge.bridge-nf-call-iptables", "value": 0}));
        let obs = Observed::new()
            .with_file(FILE, FileState::absent())
            .with_file(
                "/proc/sys/net/bridge/bridge-nf-call-iptables",
                FileState::absent(),
            );
        let p = plan(&a, &obs);
        assert_eq!(
            p.actions,
            vec![Action::write(
                FILE,
                "net.bridge.bridge-nf-call-iptables = 0\n",
                Attrs::default(),
                false
            )]
        );
        assert!(p.msg.unwrap().contains("does not exist in /proc/sys"));
        assert_eq!(p.data["live_value"], serde_json::Value::Null);
        // Second run: persisted, still not loaded: ok, message kept.
        let obs = obs.with_file(
            FILE,
            FileState::file("net.bridge.bridge-nf-call-iptables = 0\n"),
        );
        let p = plan(&a, &obs);
        assert!(!p.changed());
        assert!(p.msg.is_some());
    }

    #[test]
    fn absent_removes_line_only() {
        let a = args(json!({"name": "net.ipv4.ip_forward", "state": "absent"}));
        assert_eq!(Sysctl.probes(&a), vec![Probe::File(FILE.into())]);
        let obs = Observed::new().with_file(
            FILE,
            FileState::file("vm.swappiness=10\nnet.ipv4.ip_forward = 1\n"),
        );
        let p = plan(&a, &obs);
        assert_eq!(
            p.actions,
            vec![Action::write(
                FILE,
                "vm.swappiness=10\n",
                Attrs::default(),
                false
            )]
        );
        // The last key goes with the file.
        let obs = Observed::new().with_file(FILE, FileState::file("net.ipv4.ip_forward = 1\n"));
        assert_eq!(
            plan(&a, &obs).actions,
            vec![Action::Remove { path: FILE.into() }]
        );
        // Nothing to remove.
        let obs = Observed::new().with_file(FILE, FileState::absent());
        assert!(!plan(&a, &obs).changed());
        let obs = Observed::new().with_file(FILE, FileState::file("vm.swappiness=10\n"));
        assert!(!plan(&a, &obs).changed());
        let obs = Observed::new().with_file(FILE, FileState::file(""));
        assert!(!plan(&a, &obs).changed());
    }

    #[test]
    fn bad_arguments_are_caught_before_contact() {
        let invalid = ArgErrorKind::Invalid;
        for (bad, kind, param) in [
            (
                json!({"name": "net.ipv4.ip_forward"}),
                ArgErrorKind::Requires { other: "value" },
                "state",
            ),
            (
                json!({"name": "net.ipv4.ip_forward", "value": "  "}),
                invalid,
                "value",
            ),
            (
                json!({"name": "net.ipv4.*.forwarding", "value": 1}),
                invalid,
                "name",
            ),
            (json!({"name": "net..ipv4", "value": 1}), invalid, "name"),
            (
                json!({"name": "../../etc/passwd", "value": 1}),
                invalid,
                "name",
            ),
            (json!({"name": "a = b", "value": 1}), invalid, "name"),
            (
                json!({"name": "vm.swappiness", "value": 1, "sysctl_file": "sysctl.conf"}),
                invalid,
                "sysctl_file",
            ),
        ] {
            let e = arg_error(&Sysctl, bad.clone());
            assert_eq!((e.kind, e.param), (kind, param), "{bad}");
        }
    }

    #[test]
    fn unusable_host_state_is_an_error() {
        let a = args(json!({"name": "net.ipv4", "value": 1}));
        let obs = Observed::new()
            .with_file(FILE, FileState::absent())
            .with_file("/proc/sys/net/ipv4", FileState::dir());
        assert!(matches!(Sysctl.plan(&a, &obs), Err(ModuleError::Host(_))));
        let obs = Observed::new()
            .with_file(FILE, FileState::dir())
            .with_file(FWD, FileState::file("1\n"));
        assert!(matches!(
            Sysctl.plan(&fwd(), &obs),
            Err(ModuleError::Host(_))
        ));
    }
}
