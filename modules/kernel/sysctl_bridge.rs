//! `sysctl_bridge`: whether bridged traffic passes through the host's netfilter rules.
//!
//! With br_netfilter loaded, the kernel defaults `net.bridge.bridge-nf-call-*` to 1: frames of
//! guests on a Linux bridge are run through the host's iptables/ip6tables/arptables, so a host
//! firewall silently filters (or NATs) VM traffic. The keys only exist while br_netfilter is
//! loaded, and systemd-sysctl runs once at boot, often before the module is loaded (Docker and
//! Kubernetes load it on demand), so a sysctl.d file alone is not enough: a udev rule re-applies it
//! whenever the module appears.

use crate::module::{
    Action, Attrs, Change, FileKind, Module, ModuleError, ModuleSpec, Observed, Plan, PlanContext,
    Probe,
};
use crate::modules::support;
use crate::params::{Args, ParamKind, ParamSpec};

pub struct SysctlBridge;

static SPEC: ModuleSpec = ModuleSpec {
    name: "sysctl_bridge",
    summary: "Keep bridged guest traffic out of (or in) the host's iptables, persistently",
    description: "Manages the three `net.bridge.bridge-nf-call-{ip6tables,iptables,arptables}` \
keys (0 for bridged VMs: otherwise their traffic goes through the host's firewall rules). It \
writes `path` (default /etc/sysctl.d/bridge.conf) with exactly one `key = value` line per key \
under a header comment, and with `udev: true` the rule file `udev_rule` with one line per kernel \
module in `modules`, `ACTION==\"add\", SUBSYSTEM==\"module\", KERNEL==\"br_netfilter\", \
RUN+=\"/sbin/sysctl -p PATH\"`, so the values are applied whenever the module loads (the keys \
live in br_netfilter on kernels since 3.18, in bridge before; /sbin/sysctl exists on RHEL and, \
through the /usr merge, on Debian and Ubuntu). Both files are compared as a whole and rewritten \
only when different; `udevadm control --reload-rules` runs only when the rule file changed \
(and is skipped where udevadm is missing). When br_netfilter is loaded, the live values in \
/proc/sys/net/bridge are compared too and `sysctl -w` sets only the keys that differ; when it is \
not, nothing is set live and `msg` says the values apply when it loads.\n\n\
`state: absent` removes the sysctl file and (with `udev: true`) the rule; live values are left \
alone until br_netfilter is reloaded or the host reboots (the kernel default is 1).",
    params: &[
        ParamSpec::with_default(
            "value",
            ParamKind::Int,
            "0",
            "0 or 1 for all three keys (0: bridged traffic bypasses the host firewall)",
        ),
        ParamSpec::optional(
            "ip6tables",
            ParamKind::Int,
            "Override for bridge-nf-call-ip6tables",
        ),
        ParamSpec::optional(
            "iptables",
            ParamKind::Int,
            "Override for bridge-nf-call-iptables",
        ),
        ParamSpec::optional(
            "arptables",
            ParamKind::Int,
            "Override for bridge-nf-call-arptables",
        ),
        ParamSpec::with_default(
            "path",
            ParamKind::Str,
            "/etc/sysctl.d/bridge.conf",
            "The sysctl.d file holding the three keys",
        ),
        ParamSpec::with_default(
            "udev",
            ParamKind::Bool,
            "true",
            "Manage the udev rule that applies the file when the module loads",
        ),
        ParamSpec::with_default(
            "udev_rule",
            ParamKind::Str,
            "/etc/udev/rules.d/99-bridge.rules",
            "The udev rule file (must end in .rules)",
        ),
        ParamSpec::with_default(
            "modules",
            ParamKind::List,
            "[bridge, br_netfilter]",
            "Kernel modules whose loading re-applies the file (one rule line each)",
        ),
        ParamSpec::with_default(
            "state",
            ParamKind::Choice(&["present", "absent"]),
            "present",
            "absent removes the files (live values are kept)",
        ),
    ],
    free_form: None,
    example: r#"- name: Bridged VMs bypass the host firewall
  sysctl_bridge:
    value: 0
"#,
};

/// The keys in the order they are written.
const KEYS: [&str; 3] = ["ip6tables", "iptables", "arptables"];

/// `udevadm` is absent in minimal containers; its failure must not fail the task (udev picks
/// up rule changes on its own too, only later).
const UDEV_RELOAD: &str = "command -v udevadm >/dev/null && udevadm control --reload-rules || true";

fn key(table: &str) -> String {
    format!("net.bridge.bridge-nf-call-{table}")
}

fn proc_path(table: &str) -> String {
    format!("/proc/sys/net/bridge/bridge-nf-call-{table}")
}

struct Request {
    /// (table, value) in [`KEYS`] order.
    values: Vec<(&'static str, i64)>,
    path: String,
    /// The rule file, when udev rules are managed.
    rule: Option<String>,
    /// Kernel module names as udev sees them (underscores).
    modules: Vec<String>,
    present: bool,
}

fn request(args: &Args) -> Result<Request, ModuleError> {
    let default = args.int("value").unwrap_or(0);
    let mut values = Vec::new();
    for table in KEYS {
        let v = args.int(table).unwrap_or(default);
        if v != 0 && v != 1 {
            let name = if args.has(table) { table } else { "value" };
            return Err(ModuleError::Args(format!("{name} must be 0 or 1, got {v}")));
        }
        values.push((table, v));
    }
    let path = args.req_str("path").to_string();
    // The path is embedded in a udev rule's double-quoted RUN string.
    if !path.starts_with('/')
        || path
            .chars()
            .any(|c| c.is_whitespace() || "\"\\'$`".contains(c))
    {
        return Err(ModuleError::Args(format!(
            "path must be an absolute path without spaces or quotes, got {path:?}"
        )));
    }
    let rule = if args.bool("udev") {
        let rule = args.req_str("udev_rule").to_string();
        if !rule.starts_with('/') || !rule.ends_with(".rules") {
            return Err(ModuleError::Args(format!(
                "udev_rule must be an absolute path ending in .rules (udev ignores other files), got {rule:?}"
            )));
        }
        Some(rule)
    } else {
        None
    };
    let modules: Vec<String> = args
        .list("modules")
        .iter()
        .map(|m| m.replace('-', "_"))
        .collect();
    if rule.is_some() && modules.is_empty() {
        return Err(ModuleError::Args(
            "modules must name at least one kernel module when udev is true".into(),
        ));
    }
    if let Some(m) = modules
        .iter()
        .find(|m| !m.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    {
        return Err(ModuleError::Args(format!(
            "invalid kernel module name {m:?}"
        )));
    }
    Ok(Request {
        values,
        path,
        rule,
        modules,
        present: args.req_str("state") == "present",
    })
}

fn sysctl_content(r: &Request) -> String {
    let mut s = String::from(
        "# Managed by kvmforge (sysctl_bridge). 0: traffic of bridged guests does not pass\n\
         # through the host's ip6tables/iptables/arptables rules.\n",
    );
    for (table, v) in &r.values {
        s.push_str(&format!("{} = {v}\n", key(table)));
    }
    s
}

fn rule_content(r: &Request) -> String {
    let mut s = format!(
        "# Managed by kvmforge (sysctl_bridge): apply {} when a bridge module loads;\n\
         # its keys do not exist before.\n",
        r.path
    );
    for m in &r.modules {
        s.push_str(&format!(
            "ACTION==\"add\", SUBSYSTEM==\"module\", KERNEL==\"{m}\", RUN+=\"/sbin/sysctl -p {}\"\n",
            r.path
        ));
    }
    s
}

impl Module for SysctlBridge {
    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn probes(&self, args: &Args, _ctx: &PlanContext) -> Result<Vec<Probe>, ModuleError> {
        let r = request(args)?;
        let mut probes = vec![Probe::File(r.path.clone())];
        probes.extend(r.rule.clone().map(Probe::File));
        if r.present {
            probes.extend(KEYS.iter().map(|t| Probe::File(proc_path(t))));
        }
        Ok(probes)
    }

    fn plan(
        &self,
        args: &Args,
        observed: &Observed,
        _ctx: &PlanContext,
    ) -> Result<Plan, ModuleError> {
        let r = request(args)?;
        let mut plan = Plan::ok().with_data("path", r.path.clone());
        let sysctl_state = observed.file(&r.path)?;
        let rule_state = match &r.rule {
            Some(rule) => Some((rule.as_str(), observed.file(rule)?)),
            None => None,
        };

        if !r.present {
            support::ensure_absent(&mut plan, &r.path, sysctl_state);
            if let Some((rule, state)) = rule_state {
                let before = plan.actions.len();
                support::ensure_absent(&mut plan, rule, state);
                if plan.actions.len() > before {
                    plan.actions.push(Action::run(UDEV_RELOAD));
                }
            }
            return Ok(plan);
        }

        let attrs = Attrs::default();
        support::ensure_content(
            &mut plan,
            &r.path,
            sysctl_state,
            sysctl_content(&r).as_bytes(),
            &attrs,
            false,
        )?;
        if let Some((rule, state)) = rule_state {
            let before = plan.actions.len();
            support::ensure_content(
                &mut plan,
                rule,
                state,
                rule_content(&r).as_bytes(),
                &attrs,
                false,
            )?;
            if plan.actions.len() > before {
                plan.actions.push(Action::run(UDEV_RELOAD));
            }
        }

        // Live values, when the module providing them is loaded.
        let mut loaded = false;
        let mut set = Vec::new();
        for (table, v) in &r.values {
            let path = proc_path(table);
            let live = observed.file(&path)?;
            match live.kind {
                FileKind::Absent => continue,
                FileKind::File => {}
                _ => return Err(ModuleError::Host(format!("{path} is not a sysctl key"))),
            }
            loaded = true;
            let current = support::sysctl_value(&live.text());
            if current != v.to_string() {
                plan.changes.push(
                    Change::new(format!(
                        "set {} = {v} (live value was {current})",
                        key(table)
                    ))
                    .with_diff(
                        &path,
                        format!("{current}\n"),
                        format!("{v}\n"),
                    ),
                );
                set.push((key(table), v.to_string()));
            }
        }
        if !set.is_empty() {
            plan.actions
                .push(Action::run(support::sysctl_set_cmd(&set)));
        }
        if !loaded {
            plan.msg = Some(
                "br_netfilter is not loaded: the values apply when it loads".to_string()
                    + if r.rule.is_some() {
                        " (udev rule)"
                    } else {
                        " and sysctl runs"
                    },
            );
        }
        Ok(plan.with_data("loaded", loaded))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::FileState;
    use serde_json::json;

    const CONF: &str = "/etc/sysctl.d/bridge.conf";
    const RULE: &str = "/etc/udev/rules.d/99-bridge.rules";

    const CONF_ZERO: &str =
        "# Managed by kvmforge (sysctl_bridge). 0: traffic of bridged guests does not pass
# through the host's ip6tables/iptables/arptables rules.
net.bridge.bridge-nf-call-ip6tables = 0
net.bridge.bridge-nf-call-iptables = 0
net.bridge.bridge-nf-call-arptables = 0
";
    const RULE_DEFAULT: &str = "# Managed by kvmforge (sysctl_bridge): apply /etc/sysctl.d/bridge.conf when a bridge module loads;
# its keys do not exist before.
ACTION==\"add\", SUBSYSTEM==\"module\", KERNEL==\"bridge\", RUN+=\"/sbin/sysctl -p /etc/sysctl.d/bridge.conf\"
ACTION==\"add\", SUBSYSTEM==\"module\", KERNEL==\"br_netfilter\", RUN+=\"/sbin/sysctl -p /etc/sysctl.d/bridge.conf\"
";

    fn args(v: serde_json::Value) -> Args {
        Args::from_json(SPEC.params, v).unwrap()
    }

    fn plan(a: &Args, obs: &Observed) -> Plan {
        SysctlBridge.plan(a, obs, &PlanContext::default()).unwrap()
    }

    fn live(obs: Observed, values: [Option<&str>; 3]) -> Observed {
        let mut obs = obs;
        for (t, v) in KEYS.iter().zip(values) {
            let state = match v {
                Some(v) => FileState::file(format!("{v}\n")),
                None => FileState::absent(),
            };
            obs = obs.with_file(&proc_path(t), state);
        }
        obs
    }

    #[test]
    fn fresh_host_with_module_loaded() {
        let a = args(json!({}));
        assert_eq!(
            SysctlBridge.probes(&a, &PlanContext::default()).unwrap(),
            vec![
                Probe::File(CONF.into()),
                Probe::File(RULE.into()),
                Probe::File("/proc/sys/net/bridge/bridge-nf-call-ip6tables".into()),
                Probe::File("/proc/sys/net/bridge/bridge-nf-call-iptables".into()),
                Probe::File("/proc/sys/net/bridge/bridge-nf-call-arptables".into()),
            ]
        );
        let obs = Observed::new()
            .with_file(CONF, FileState::absent())
            .with_file(RULE, FileState::absent());
        let p = plan(&a, &live(obs, [Some("1"), Some("1"), Some("0")]));
        assert_eq!(
            p.actions,
            vec![
                Action::write(CONF, CONF_ZERO, Attrs::default(), false),
                Action::write(RULE, RULE_DEFAULT, Attrs::default(), false),
                Action::run(UDEV_RELOAD),
                Action::run(
                    "sysctl -w net.bridge.bridge-nf-call-ip6tables=0 net.bridge.bridge-nf-call-iptables=0"
                ),
            ]
        );
        assert_eq!(p.changes.len(), 4);
        assert_eq!(p.data["loaded"], json!(true));
        assert_eq!(p.msg, None);
    }

    #[test]
    fn converged_host_is_ok() {
        let obs = Observed::new()
            .with_file(CONF, FileState::file(CONF_ZERO))
            .with_file(RULE, FileState::file(RULE_DEFAULT));
        let p = plan(
            &args(json!({})),
            &live(obs, [Some("0"), Some("0"), Some("0")]),
        );
        assert!(!p.changed(), "{:?}", p.changes);
        assert!(p.actions.is_empty());
    }

    #[test]
    fn module_not_loaded_writes_files_only() {
        let obs = Observed::new()
            .with_file(CONF, FileState::file(CONF_ZERO))
            .with_file(RULE, FileState::absent());
        let p = plan(&args(json!({})), &live(obs, [None, None, None]));
        assert_eq!(
            p.actions,
            vec![
                Action::write(RULE, RULE_DEFAULT, Attrs::default(), false),
                Action::run(UDEV_RELOAD)
            ]
        );
        assert_eq!(p.data["loaded"], json!(false));
        assert!(p.msg.unwrap().contains("not loaded"));
    }

    #[test]
    fn drifted_file_and_one_live_key() {
        let drifted = CONF_ZERO.replace("iptables = 0", "iptables = 1");
        let obs = Observed::new()
            .with_file(CONF, FileState::file(drifted))
            .with_file(RULE, FileState::file(RULE_DEFAULT));
        let p = plan(
            &args(json!({})),
            &live(obs, [Some("0"), Some("0"), Some("1")]),
        );
        assert_eq!(
            p.actions,
            vec![
                Action::write(CONF, CONF_ZERO, Attrs::default(), false),
                Action::run("sysctl -w net.bridge.bridge-nf-call-arptables=0"),
            ]
        );
    }

    #[test]
    fn overrides_custom_paths_and_no_udev() {
        let a = args(json!({
            "value": 0, "arptables": 1, "path": "/etc/sysctl.d/90-br.conf", "udev": false
        }));
        let probes = SysctlBridge.probes(&a, &PlanContext::default()).unwrap();
        assert!(!probes.contains(&Probe::File(RULE.into())));
        let obs = Observed::new().with_file("/etc/sysctl.d/90-br.conf", FileState::absent());
        let p = plan(&a, &live(obs, [Some("0"), Some("0"), Some("1")]));
        let Action::WriteFile { path, content, .. } = &p.actions[0] else {
            panic!("{:?}", p.actions)
        };
        assert_eq!(path, "/etc/sysctl.d/90-br.conf");
        assert!(String::from_utf8_lossy(content)
            .ends_with("bridge-nf-call-iptables = 0\nnet.bridge.bridge-nf-call-arptables = 1\n"));
        assert_eq!(p.actions.len(), 1, "{:?}", p.actions);
        assert!(p.msg.is_none());
    }

    #[test]
    fn rule_uses_configured_path_and_modules() {
        let a = args(json!({"path": "/etc/sysctl.d/90-br.conf", "modules": ["br-netfilter"]}));
        let r = request(&a).unwrap();
        assert_eq!(
            rule_content(&r).lines().nth(2),
            Some("ACTION==\"add\", SUBSYSTEM==\"module\", KERNEL==\"br_netfilter\", RUN+=\"/sbin/sysctl -p /etc/sysctl.d/90-br.conf\"")
        );
        assert_eq!(rule_content(&r).lines().count(), 3);
    }

    #[test]
    fn absent_removes_both_files_and_reloads_udev() {
        let a = args(json!({"state": "absent"}));
        assert_eq!(
            SysctlBridge.probes(&a, &PlanContext::default()).unwrap(),
            vec![Probe::File(CONF.into()), Probe::File(RULE.into())]
        );
        let obs = Observed::new()
            .with_file(CONF, FileState::file(CONF_ZERO))
            .with_file(RULE, FileState::file(RULE_DEFAULT));
        let p = plan(&a, &obs);
        assert_eq!(
            p.actions,
            vec![
                Action::Remove { path: CONF.into() },
                Action::Remove { path: RULE.into() },
                Action::run(UDEV_RELOAD),
            ]
        );
        let obs = Observed::new()
            .with_file(CONF, FileState::absent())
            .with_file(RULE, FileState::absent());
        assert!(!plan(&a, &obs).changed());
        // Only the sysctl file left: no udev reload.
        let obs = obs.with_file(CONF, FileState::file(CONF_ZERO));
        assert_eq!(
            plan(&a, &obs).actions,
            vec![Action::Remove { path: CONF.into() }]
        );
    }

    #[test]
    fn bad_arguments_are_caught_before_contact() {
        let ctx = PlanContext::default();
        for bad in [
            json!({"value": 2}),
            json!({"iptables": -1}),
            json!({"path": "bridge.conf"}),
            json!({"path": "/etc/sysctl.d/my bridge.conf"}),
            json!({"path": "/etc/sysctl.d/\"x.conf"}),
            json!({"udev_rule": "/etc/udev/rules.d/99-bridge"}),
            json!({"modules": []}),
            json!({"modules": ["br\"x"]}),
        ] {
            assert!(
                SysctlBridge.probes(&args(bad.clone()), &ctx).is_err(),
                "{bad}"
            );
        }
        assert!(SysctlBridge
            .probes(&args(json!({"modules": [], "udev": false})), &ctx)
            .is_ok());
    }

    #[test]
    fn unusable_host_state_is_an_error() {
        let obs = Observed::new()
            .with_file(CONF, FileState::dir())
            .with_file(RULE, FileState::absent());
        let obs = live(obs, [None, None, None]);
        assert!(SysctlBridge
            .plan(&args(json!({})), &obs, &PlanContext::default())
            .is_err());
    }
}
