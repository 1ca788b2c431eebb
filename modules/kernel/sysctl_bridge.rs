//! `sysctl_bridge`: whether bridged traffic passes through the host's netfilter rules.
//!
//! With br_netfilter loaded, the kernel defaults `net.bridge.bridge-nf-call-*` to 1: frames of
//! guests on a Linux bridge are run through the host's iptables/ip6tables/arptables, so a host
//! firewall silently filters (or NATs) VM traffic. The keys only exist while br_netfilter is
//! loaded, and systemd-sysctl runs once at boot, often before the module is loaded (Docker and
//! Kubernetes load it on demand), so a sysctl.d file alone is not enough: a udev rule re-applies it
//! whenever the module appears.

use super::module_name;
use super::sysctl_keys::{self, Drift};
use crate::module::{
    Action, ArgError, Attrs, Module, ModuleError, ModuleSpec, Observed, Plan, PlanContext, Probe,
};
use crate::modules::args::Presence;
use crate::modules::files::edit;
use crate::params::{Args, ParamKind, ParamSpec};
use serde::Deserialize;

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

/// A `sysctl_bridge` task's arguments as given.
#[derive(Deserialize)]
struct Params {
    value: i64,
    ip6tables: Option<i64>,
    iptables: Option<i64>,
    arptables: Option<i64>,
    path: String,
    udev: bool,
    udev_rule: String,
    modules: Vec<String>,
    state: Presence,
}

/// A `sysctl_bridge` task's arguments, checked.
pub struct Request {
    /// (table, value) in [`KEYS`] order.
    values: Vec<(&'static str, i64)>,
    path: String,
    /// The rule file, when udev rules are managed.
    rule: Option<String>,
    /// Kernel module names as udev sees them (underscores).
    modules: Vec<String>,
    present: bool,
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
    type Request = Request;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn request(&self, args: Args, _ctx: &PlanContext) -> Result<Request, ModuleError> {
        let p: Params = args.parse()?;
        let mut values = Vec::new();
        for (table, given) in KEYS.into_iter().zip([p.ip6tables, p.iptables, p.arptables]) {
            let (name, v) = match given {
                Some(v) => (table, v),
                None => ("value", p.value),
            };
            if v != 0 && v != 1 {
                return Err(
                    ArgError::invalid(name, format!("{name} must be 0 or 1, got {v}")).into(),
                );
            }
            values.push((table, v));
        }
        // The path is embedded in a udev rule's double-quoted RUN string.
        if !p.path.starts_with('/')
            || p.path
                .chars()
                .any(|c| c.is_whitespace() || "\"\\'$`".contains(c))
        {
            return Err(ArgError::invalid(
                "path",
                format!(
                    "path must be an absolute path without spaces or quotes, got {:?}",
                    p.path
                ),
            )
            .into());
        }
        let rule = if p.udev {
            let rule = p.udev_rule;
            if !rule.starts_with('/') || !rule.ends_with(".rules") {
                return Err(ArgError::invalid(
                    "udev_rule",
                    format!(
                        "udev_rule must be an absolute path ending in .rules (udev ignores other files), got {rule:?}"
                    ),
                )
                .into());
            }
            Some(rule)
        } else {
            None
        };
        if rule.is_some() && p.modules.is_empty() {
            return Err(ArgError::invalid(
                "modules",
                "modules must name at least one kernel module when udev is true",
            )
            .into());
        }
        let modules = p
            .modules
            .iter()
            .map(|m| module_name("modules", m))
            .collect::<Result<_, _>>()?;
        Ok(Request {
            values,
            path: p.path,
            rule,
            modules,
            present: p.state == Presence::Present,
        })
    }

    fn probes(&self, r: &Request) -> Vec<Probe> {
        let mut probes = vec![Probe::File(r.path.clone())];
        probes.extend(r.rule.clone().map(Probe::File));
        if r.present {
            probes.extend(
                KEYS.iter()
                    .map(|t| Probe::File(sysctl_keys::proc_path(&key(t)))),
            );
        }
        probes
    }

    fn plan(&self, r: &Request, observed: &Observed) -> Result<Plan, ModuleError> {
        let mut plan = Plan::ok().with_data("path", r.path.clone());
        let sysctl_state = observed.file(&r.path)?;
        let rule_state = match &r.rule {
            Some(rule) => Some((rule.as_str(), observed.file(rule)?)),
            None => None,
        };

        if !r.present {
            edit::ensure_absent(&mut plan, &r.path, sysctl_state);
            if let Some((rule, state)) = rule_state {
                let before = plan.actions.len();
                edit::ensure_absent(&mut plan, rule, state);
                if plan.actions.len() > before {
                    plan.actions.push(Action::run(UDEV_RELOAD));
                }
            }
            return Ok(plan);
        }

        let attrs = Attrs::default();
        edit::ensure_content(
            &mut plan,
            &r.path,
            sysctl_state,
            sysctl_content(r).as_bytes(),
            &attrs,
            false,
        )?;
        if let Some((rule, state)) = rule_state {
            let before = plan.actions.len();
            edit::ensure_content(
                &mut plan,
                rule,
                state,
                rule_content(r).as_bytes(),
                &attrs,
                false,
            )?;
            if plan.actions.len() > before {
                plan.actions.push(Action::run(UDEV_RELOAD));
            }
        }

        // Live values, when the module providing them is loaded.
        let mut loaded = false;
        let mut drift = Vec::new();
        for (table, v) in &r.values {
            let Some(live) = sysctl_keys::live_value(observed, &key(table))? else {
                continue;
            };
            loaded = true;
            if live != v.to_string() {
                drift.push(Drift {
                    key: key(table),
                    live,
                    wanted: v.to_string(),
                });
            }
        }
        sysctl_keys::set_live(&mut plan, &drift);
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
    use crate::module::{ArgErrorKind, FileState};
    use crate::modules::testing::{arg_error, req};
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

    fn args(v: serde_json::Value) -> Request {
        req(&SysctlBridge, v)
    }

    fn plan(r: &Request, obs: &Observed) -> Plan {
        SysctlBridge.plan(r, obs).unwrap()
    }

    fn live(obs: Observed, values: [Option<&str>; 3]) -> Observed {
        let mut obs = obs;
        for (t, v) in KEYS.iter().zip(values) {
            let state = match v {
                Some(v) => FileState::file(format!("{v}\n")),
                None => FileState::absent(),
            };
            obs = obs.with_file(&sysctl_keys::proc_path(&key(t)), state);
        }
        obs
    }

    #[test]
    fn fresh_host_with_module_loaded() {
        let a = args(json!({}));
        assert_eq!(
            SysctlBridge.probes(&a),
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
        let probes = SysctlBridge.probes(&a);
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
        assert_eq!(
            rule_content(&a).lines().nth(2),
            Some("ACTION==\"add\", SUBSYSTEM==\"module\", KERNEL==\"br_netfilter\", RUN+=\"/sbin/sysctl -p /etc/sysctl.d/90-br.conf\"")
        );
        assert_eq!(rule_content(&a).lines().count(), 3);
    }

    #[test]
    fn absent_removes_both_files_and_reloads_udev() {
        let a = args(json!({"state": "absent"}));
        assert_eq!(
            SysctlBridge.probes(&a),
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
        for (bad, param) in [
            (json!({"value": 2}), "value"),
            (json!({"iptables": -1}), "iptables"),
            (json!({"path": "bridge.conf"}), "path"),
            (json!({"path": "/etc/sysctl.d/my bridge.conf"}), "path"),
            (json!({"path": "/etc/sysctl.d/\"x.conf"}), "path"),
            (
                json!({"udev_rule": "/etc/udev/rules.d/99-bridge"}),
                "udev_rule",
            ),
            (json!({"modules": []}), "modules"),
            (json!({"modules": ["br\"x"]}), "modules"),
            (json!({"modules": ["-r"]}), "modules"),
            (json!({"modules": [""], "udev": false}), "modules"),
        ] {
            let e = arg_error(&SysctlBridge, bad.clone());
            assert_eq!((e.kind, e.param), (ArgErrorKind::Invalid, param), "{bad}");
        }
        let e = arg_error(&SysctlBridge, json!({"value": 0, "arptables": 3}));
        assert_eq!(e.msg, "arptables must be 0 or 1, got 3");
        assert!(crate::modules::testing::request(
            &SysctlBridge,
            json!({"modules": [], "udev": false})
        )
        .is_ok());
    }

    #[test]
    fn unusable_host_state_is_an_error() {
        let obs = Observed::new()
            .with_file(CONF, FileState::dir())
            .with_file(RULE, FileState::absent());
        let obs = live(obs, [None, None, None]);
        assert!(SysctlBridge.plan(&args(json!({})), &obs).is_err());
    }
}
