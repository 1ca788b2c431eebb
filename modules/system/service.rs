//! `service`: a systemd unit's run state, enablement and mask.
//!
//! Everything is decided from one `systemctl show` of the unit (the [`UnitState`] fact), so an
//! unchanged service costs nothing beyond the shared probe round trip.
//!
//! This is the worked example of the module contract: a typed [`Request`] built and checked once
//! (`request`), the fact it needs (`probes`), and a planner that reads only the request and the
//! fact (`plan`), with tests for each from fixtures of real `systemctl show` output.

use crate::module::{
    shell_quote, Action, ArgError, Change, Fact, Module, ModuleError, ModuleSpec, Observed, Plan,
    PlanContext, Probe,
};
use crate::modules::facts::systemd::UnitState;
use crate::params::{Args, ParamKind, ParamSpec};
use serde::Deserialize;

pub struct Service;

static SPEC: ModuleSpec = ModuleSpec {
    name: "service",
    summary: "Manage a systemd unit: started/stopped, enabled, masked",
    description: "Observes the unit with `systemctl show` (LoadState, ActiveState, SubState, \
UnitFileState, NeedDaemonReload, TriggeredBy; for an inactive unit with trigger sockets, their \
ActiveState). `name` is passed to systemctl as given; systemctl appends \
`.service` when it has no unit suffix, so `libvirtd` and `libvirtd.service` are the same unit, \
and an alias name reports the state of the unit it points to.\n\n\
`state: started` starts the unit unless ActiveState is active, activating, reloading or \
refreshing, or it is inactive and a socket that starts it on demand is listening (Debian's \
libvirtd exits after two idle minutes and its sockets bring it back: a drift check from cron \
would otherwise start it on every run; the result's `msg` says so); `stopped` stops it when it is running or deactivating. `restarted` and `reloaded` \
always restart/reload (a unit that is not running is started instead), so they always report a \
change: use them in handlers. Starts wait for the unit, so a failing start fails the task.\n\n\
`enabled` compares UnitFileState: only `enabled` counts as enabled (an `enabled-runtime` unit is \
enabled persistently). Units whose state is static, indirect, generated, alias or transient (or \
that have no unit file) cannot be enabled or disabled: nothing is done, nothing is reported as \
changed, and the result message says so. `masked: true` masks the unit persistently (after \
stopping or disabling it); `masked: false` unmasks a masked unit first.\n\n\
`daemon_reload: true` runs `systemctl daemon-reload` before anything else, but only when systemd \
reports NeedDaemonReload for this unit (its unit file or drop-ins changed on disk), so the task \
stays idempotent; without it a stale unit is reported in the message. New unit files are found \
without a reload.\n\n\
A unit that does not exist fails the task unless the requested state is compatible with its \
absence (stopped, not enabled, masked or not masked). Results: `status` holds the observed \
properties. With only `name`, nothing is changed and the unit is only observed, as with \
Ansible's systemd module: `register` it to decide later tasks from `status.ActiveState` \
(`active`, `inactive`, ...) or `status.LoadState` (`not-found` when there is no such unit).",
    params: &[
        ParamSpec::required("name", ParamKind::Str, "Unit name (`.service` is implied)")
            .aliases(&["service", "unit"]),
        ParamSpec::optional(
            "state",
            ParamKind::Choice(&["started", "stopped", "restarted", "reloaded"]),
            "Run state; restarted/reloaded always act",
        ),
        ParamSpec::optional("enabled", ParamKind::Bool, "Start at boot"),
        ParamSpec::optional(
            "masked",
            ParamKind::Bool,
            "Masked (cannot be started at all)",
        ),
        ParamSpec::with_default(
            "daemon_reload",
            ParamKind::Bool,
            "false",
            "Run `systemctl daemon-reload` first when the unit's files changed on disk",
        )
        .aliases(&["daemon-reload"]),
    ],
    free_form: None,
    example: r#"- name: libvirt runs now and at boot
  service:
    name: libvirtd
    state: started
    enabled: true
"#,
};

/// The run state asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RunState {
    Started,
    Stopped,
    Restarted,
    Reloaded,
}

impl RunState {
    /// States that need the unit to run.
    fn runs(self) -> bool {
        self != RunState::Stopped
    }
    fn word(self) -> &'static str {
        match self {
            RunState::Started => "started",
            RunState::Stopped => "stopped",
            RunState::Restarted => "restarted",
            RunState::Reloaded => "reloaded",
        }
    }
}

/// A `service` task's arguments, typed.
#[derive(Debug, Deserialize)]
pub struct Request {
    name: String,
    state: Option<RunState>,
    enabled: Option<bool>,
    masked: Option<bool>,
    daemon_reload: bool,
}

/// UnitFileStates that `systemctl enable/disable` cannot change.
const FIXED: &[&str] = &["static", "indirect", "generated", "alias", "transient", ""];

fn systemctl(verb: impl std::fmt::Display, name: &str) -> Action {
    Action::run(format!("systemctl {verb} -- {}", shell_quote(name)))
}

impl Module for Service {
    type Request = Request;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn request(&self, args: Args, _ctx: &PlanContext) -> Result<Request, ModuleError> {
        let req: Request = args.parse()?;
        let name = &req.name;
        if name.trim().is_empty() {
            return Err(ArgError::invalid("name", "name must not be empty").into());
        }
        if name.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(ArgError::invalid("name", format!("{name:?} is not a unit name")).into());
        }
        if req.masked == Some(true) {
            if let Some(state) = req.state.filter(|s| s.runs()) {
                return Err(ArgError::conflict(
                    "masked",
                    "state",
                    format!("a masked unit cannot be {}", state.word()),
                )
                .into());
            }
            if req.enabled == Some(true) {
                return Err(ArgError::conflict(
                    "masked",
                    "enabled",
                    "a masked unit cannot be enabled",
                )
                .into());
            }
        }
        Ok(req)
    }

    fn probes(&self, req: &Request) -> Vec<Probe> {
        vec![UnitState::probe(&req.name)]
    }

    fn plan(&self, req: &Request, observed: &Observed) -> Result<Plan, ModuleError> {
        let status = observed.fact::<UnitState>(&req.name)?;
        // Act on the canonical unit: systemctl refuses to enable or disable through an alias.
        let unit = status.id.as_str();
        let (active, file_state) = (
            status.active_state.as_str(),
            status.unit_file_state.as_str(),
        );
        let state = req.state;
        let needs_unit = state.is_some_and(RunState::runs) || req.enabled == Some(true);
        let mut plan = Plan::ok();
        let mut notes = Vec::new();

        if !status.exists() {
            // Nothing to stop, disable or unmask; masking a missing unit is fine (it
            // pre-empts a later install), anything that needs the unit is not.
            if needs_unit {
                return Err(ModuleError::Host(format!("unit {} not found", req.name)));
            }
            if req.masked == Some(true) {
                plan.change(
                    Change::new(format!("mask {unit}")),
                    [systemctl("mask", unit)],
                );
            }
            return Ok(finish(plan, &status, notes));
        }

        if status.need_daemon_reload {
            if req.daemon_reload {
                plan.change(
                    Change::new(format!("daemon-reload ({unit} changed on disk)")),
                    [Action::run("systemctl daemon-reload")],
                );
            } else {
                notes.push(format!(
                    "{unit} changed on disk; systemd still uses the old unit (daemon_reload: true reloads it)"
                ));
            }
        }

        let is_masked = status.masked();
        let mut unmasking = false;
        if is_masked {
            match req.masked {
                Some(false) => {
                    plan.change(
                        Change::new(format!("unmask {unit}")),
                        [systemctl(runtime("unmask", file_state), unit)],
                    );
                    unmasking = true;
                }
                Some(true) => {}
                None if needs_unit => {
                    return Err(ModuleError::Host(format!(
                        "unit {unit} is masked (masked: false unmasks it)"
                    )));
                }
                None => {}
            }
        }

        match req.enabled {
            // A mask hides the enablement underneath; after unmasking, enable regardless
            // (harmless when already enabled) so one run converges.
            Some(true) if unmasking => {
                plan.change(
                    Change::new(format!("enable {unit}")),
                    [systemctl("enable", unit)],
                );
            }
            Some(want) if !is_masked => {
                if FIXED.contains(&file_state) {
                    let what = if file_state.is_empty() {
                        "no unit file"
                    } else {
                        file_state
                    };
                    notes.push(format!(
                        "{unit} cannot be {} ({what})",
                        if want { "enabled" } else { "disabled" }
                    ));
                } else if want && file_state != "enabled" {
                    plan.change(
                        Change::new(format!("enable {unit} (was {file_state})")),
                        [systemctl("enable", unit)],
                    );
                } else if !want && file_state != "disabled" {
                    // Runtime enablement lives in /run and is only removed with --runtime.
                    plan.change(
                        Change::new(format!("disable {unit} (was {file_state})")),
                        [systemctl(runtime("disable", file_state), unit)],
                    );
                }
            }
            _ => {}
        }

        let running = status.running();
        let run_verb = match state {
            // Idle and listening: it starts on the next connection, by its own design
            // (Debian's libvirtd exits after two idle minutes); starting it would only be
            // undone by the next idle spell, and a drift check would never be clean.
            Some(RunState::Started) if status.on_demand() => {
                notes.push(format!(
                    "{unit} is idle and starts on demand ({} listening)",
                    status.listening_triggers.join(", ")
                ));
                None
            }
            Some(RunState::Started) if !running => Some("start"),
            Some(RunState::Stopped) if running || active == "deactivating" => Some("stop"),
            Some(RunState::Restarted | RunState::Reloaded) if !running => Some("start"),
            Some(RunState::Restarted) => Some("restart"),
            Some(RunState::Reloaded) => Some("reload"),
            _ => None,
        };
        if let Some(verb) = run_verb {
            plan.change(
                Change::new(format!("{verb} {unit} (was {active})")),
                [systemctl(verb, unit)],
            );
        }

        if req.masked == Some(true) && file_state != "masked" {
            plan.change(
                Change::new(format!("mask {unit} (was {file_state})")),
                [systemctl("mask", unit)],
            );
        }
        Ok(finish(plan, &status, notes))
    }
}

/// `VERB --runtime` for a state that lives in /run (`enabled-runtime`, `masked-runtime`, ...).
fn runtime(verb: &'static str, file_state: &str) -> String {
    if file_state.ends_with("-runtime") {
        format!("{verb} --runtime")
    } else {
        verb.to_string()
    }
}

fn finish(mut plan: Plan, status: &UnitState, notes: Vec<String>) -> Plan {
    if !notes.is_empty() {
        plan.msg = Some(notes.join("; "));
    }
    let props: serde_json::Map<String, serde_json::Value> = status
        .properties
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    plan.with_data("name", status.id.as_str())
        .with_data("status", props)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{ArgErrorKind, CommandOutput, Observation};
    use crate::modules::facts::fixture;
    use crate::modules::testing::{arg_error, req, runs};
    use serde_json::json;

    fn show(load: &str, active: &str, file: &str) -> String {
        format!(
            "LoadState={load}\nActiveState={active}\nSubState=x\nUnitFileState={file}\nNeedDaemonReload=no\n"
        )
    }

    fn plan(a: serde_json::Value, stdout: &str) -> Result<Plan, ModuleError> {
        let r = req(&Service, a);
        let obs = Observed::new()
            .with_fact::<UnitState>(&r.name, Observation::Command(CommandOutput::ok(stdout)));
        Service.plan(&r, &obs)
    }

    /// Debian's libvirtd exits after two idle minutes and its sockets start it again: a
    /// drift check from cron finds it idle, not stopped. A failed or stopped one without a
    /// listening socket is still started; `restarted` still restarts.
    #[test]
    fn an_idle_socket_activated_daemon_counts_as_started() {
        let idle = fixture("systemd_unit/libvirtd-idle.txt")
            + "\n"
            + &fixture("systemd_unit/libvirtd-sockets.txt");
        let p = plan(
            json!({"name": "libvirtd", "state": "started", "enabled": true}),
            &idle,
        )
        .unwrap();
        assert!(!p.changed(), "{p:?}");
        assert_eq!(
            p.msg.as_deref(),
            Some("libvirtd.service is idle and starts on demand (libvirtd.socket listening)")
        );
        let p = plan(json!({"name": "libvirtd", "state": "restarted"}), &idle).unwrap();
        assert_eq!(runs(&p), ["systemctl start -- libvirtd.service"]);
        // No socket listening: started.
        let p = plan(
            json!({"name": "libvirtd", "state": "started"}),
            &fixture("systemd_unit/libvirtd-idle.txt"),
        )
        .unwrap();
        assert_eq!(runs(&p), ["systemctl start -- libvirtd.service"]);
    }

    #[test]
    fn probe_is_the_unit_fact() {
        let r = req(&Service, json!({"name": "getty@tty1", "state": "started"}));
        assert_eq!(Service.probes(&r), vec![UnitState::probe("getty@tty1")]);
    }

    #[test]
    fn real_hosts_units() {
        let p = plan(
            json!({"name": "sshd", "state": "started", "enabled": true}),
            &fixture("systemd_unit/sshd-alias.txt"),
        )
        .unwrap();
        assert!(!p.changed());
        assert_eq!(p.data["name"], json!("ssh.service"));
        let p = plan(
            json!({"name": "ssh", "state": "started", "enabled": true}),
            &fixture("systemd_unit/ssh-stopped-disabled.txt"),
        )
        .unwrap();
        assert_eq!(
            runs(&p),
            vec![
                "systemctl enable -- ssh.service",
                "systemctl start -- ssh.service"
            ]
        );
        let p = plan(
            json!({"name": "ssh", "state": "restarted", "daemon_reload": true}),
            &fixture("systemd_unit/need-daemon-reload.txt"),
        )
        .unwrap();
        assert_eq!(
            runs(&p),
            vec![
                "systemctl daemon-reload",
                "systemctl restart -- ssh.service"
            ]
        );
    }

    #[test]
    fn fresh_unit_is_enabled_then_started() {
        let p = plan(
            json!({"name": "libvirtd", "state": "started", "enabled": true}),
            &show("loaded", "inactive", "disabled"),
        )
        .unwrap();
        assert_eq!(
            runs(&p),
            vec![
                "systemctl enable -- libvirtd",
                "systemctl start -- libvirtd"
            ]
        );
        assert_eq!(p.changes.len(), 2);
        assert_eq!(p.data["status"]["ActiveState"], json!("inactive"));
    }

    #[test]
    fn name_only_observes_and_registers_the_status() {
        let p = plan(
            json!({"name": "NetworkManager"}),
            &show("loaded", "active", "enabled"),
        )
        .unwrap();
        assert!(!p.changed());
        assert!(p.actions.is_empty());
        assert_eq!(p.data["status"]["ActiveState"], json!("active"));
        let p = plan(
            json!({"name": "NetworkManager"}),
            &show("not-found", "inactive", ""),
        )
        .unwrap();
        assert!(!p.changed());
        assert_eq!(p.data["status"]["LoadState"], json!("not-found"));
    }

    #[test]
    fn converged_unit_is_ok() {
        let a = json!({"name": "libvirtd", "state": "started", "enabled": true});
        for active in ["active", "activating", "reloading"] {
            let p = plan(a.clone(), &show("loaded", active, "enabled")).unwrap();
            assert!(!p.changed(), "{active}");
        }
        let p = plan(
            json!({"name": "x", "state": "stopped", "enabled": false}),
            &show("loaded", "failed", "disabled"),
        )
        .unwrap();
        assert!(!p.changed());
    }

    #[test]
    fn drift_is_corrected() {
        let p = plan(
            json!({"name": "x", "state": "stopped", "enabled": false}),
            &show("loaded", "active", "enabled"),
        )
        .unwrap();
        assert_eq!(
            runs(&p),
            vec!["systemctl disable -- x", "systemctl stop -- x"]
        );
        let p = plan(
            json!({"name": "x", "state": "stopped"}),
            &show("loaded", "deactivating", "enabled"),
        )
        .unwrap();
        assert_eq!(runs(&p), vec!["systemctl stop -- x"]);
        let p = plan(
            json!({"name": "x", "enabled": true}),
            &show("loaded", "active", "enabled-runtime"),
        )
        .unwrap();
        assert_eq!(runs(&p), vec!["systemctl enable -- x"]);
        let p = plan(
            json!({"name": "x", "state": "started"}),
            &show("loaded", "failed", "enabled"),
        )
        .unwrap();
        assert_eq!(runs(&p), vec!["systemctl start -- x"]);
    }

    #[test]
    fn alias_names_act_on_the_canonical_unit() {
        let out = format!("Id=ssh.service\n{}", show("loaded", "inactive", "disabled"));
        let p = plan(
            json!({"name": "sshd", "state": "started", "enabled": true}),
            &out,
        )
        .unwrap();
        assert_eq!(
            runs(&p),
            vec![
                "systemctl enable -- ssh.service",
                "systemctl start -- ssh.service"
            ]
        );
        assert_eq!(p.data["name"], json!("ssh.service"));
    }

    #[test]
    fn runtime_enablement_is_removed_with_runtime_flag() {
        let p = plan(
            json!({"name": "x", "enabled": false}),
            &show("loaded", "inactive", "enabled-runtime"),
        )
        .unwrap();
        assert_eq!(runs(&p), vec!["systemctl disable --runtime -- x"]);
    }

    #[test]
    fn restarted_and_reloaded_always_act() {
        let p = plan(
            json!({"name": "x", "state": "restarted"}),
            &show("loaded", "active", "enabled"),
        )
        .unwrap();
        assert_eq!(runs(&p), vec!["systemctl restart -- x"]);
        let p = plan(
            json!({"name": "x", "state": "reloaded"}),
            &show("loaded", "active", "enabled"),
        )
        .unwrap();
        assert_eq!(runs(&p), vec!["systemctl reload -- x"]);
        let p = plan(
            json!({"name": "x", "state": "reloaded"}),
            &show("loaded", "inactive", "enabled"),
        )
        .unwrap();
        assert_eq!(runs(&p), vec!["systemctl start -- x"]);
    }

    #[test]
    fn static_units_are_left_alone_with_a_note() {
        for fs in ["static", "indirect", "generated", ""] {
            let p = plan(
                json!({"name": "x", "enabled": true}),
                &show("loaded", "active", fs),
            )
            .unwrap();
            assert!(!p.changed(), "{fs}");
            assert!(
                p.msg.as_deref().unwrap().contains("cannot be enabled"),
                "{fs}"
            );
        }
    }

    #[test]
    fn missing_unit_fails_only_when_needed() {
        let nf = show("not-found", "inactive", "");
        let e = plan(json!({"name": "nope", "state": "started"}), &nf).unwrap_err();
        assert_eq!(e, ModuleError::Host("unit nope not found".into()));
        assert!(plan(json!({"name": "nope", "enabled": true}), &nf).is_err());
        let p = plan(
            json!({"name": "nope", "state": "stopped", "enabled": false}),
            &nf,
        )
        .unwrap();
        assert!(!p.changed());
        let p = plan(json!({"name": "nope", "masked": true}), &nf).unwrap();
        assert_eq!(runs(&p), vec!["systemctl mask -- nope"]);
    }

    #[test]
    fn masking_and_unmasking() {
        let p = plan(
            json!({"name": "x", "state": "stopped", "masked": true}),
            &show("loaded", "active", "enabled"),
        )
        .unwrap();
        assert_eq!(runs(&p), vec!["systemctl stop -- x", "systemctl mask -- x"]);
        let p = plan(
            json!({"name": "x", "state": "stopped", "masked": true}),
            &show("masked", "inactive", "masked"),
        )
        .unwrap();
        assert!(!p.changed());
        let e = plan(
            json!({"name": "x", "state": "started"}),
            &show("masked", "inactive", "masked"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("masked"), "{e}");
        let p = plan(
            json!({"name": "x", "state": "started", "enabled": true, "masked": false}),
            &show("masked", "inactive", "masked"),
        )
        .unwrap();
        assert_eq!(
            runs(&p),
            vec![
                "systemctl unmask -- x",
                "systemctl enable -- x",
                "systemctl start -- x"
            ]
        );
        let p = plan(
            json!({"name": "x", "masked": false}),
            &show("masked", "inactive", "masked-runtime"),
        )
        .unwrap();
        assert_eq!(runs(&p), vec!["systemctl unmask --runtime -- x"]);
        // A masked unit is not enabled: disabling it is already done.
        let p = plan(
            json!({"name": "x", "enabled": false}),
            &show("masked", "inactive", "masked"),
        )
        .unwrap();
        assert!(!p.changed());
    }

    #[test]
    fn daemon_reload_only_when_systemd_needs_it() {
        let stale =
            "LoadState=loaded\nActiveState=active\nUnitFileState=enabled\nNeedDaemonReload=yes\n";
        let p = plan(
            json!({"name": "x", "state": "restarted", "daemon_reload": true}),
            stale,
        )
        .unwrap();
        assert_eq!(
            runs(&p),
            vec!["systemctl daemon-reload", "systemctl restart -- x"]
        );
        let p = plan(
            json!({"name": "x", "state": "started", "daemon_reload": true}),
            &show("loaded", "active", "enabled"),
        )
        .unwrap();
        assert!(!p.changed());
        let p = plan(json!({"name": "x", "state": "started"}), stale).unwrap();
        assert!(!p.changed());
        assert!(p.msg.unwrap().contains("changed on disk"));
    }

    #[test]
    fn host_without_systemd_fails_clearly() {
        let r = req(&Service, json!({"name": "x", "state": "started"}));
        let obs = Observed::new().with_fact::<UnitState>(
            "x",
            Observation::Command(CommandOutput::failed(127, "sh: systemctl: not found")),
        );
        let e = Service.plan(&r, &obs).unwrap_err();
        assert!(e.to_string().contains("does not run systemd"), "{e}");
        let obs = Observed::new().with_fact::<UnitState>(
            "x",
            Observation::Command(CommandOutput::failed(
                1,
                "System has not been booted with systemd as init system (PID 1).",
            )),
        );
        let e = Service.plan(&r, &obs).unwrap_err();
        assert!(e.to_string().contains("not been booted"), "{e}");
        assert!(plan(json!({"name": "x", "state": "started"}), "garbage").is_err());
    }

    #[test]
    fn contradictory_arguments_are_caught_before_contact() {
        let conflict = |with| ArgErrorKind::Conflict { with };
        for (v, kind, param) in [
            (
                json!({"name": "x", "state": "started", "masked": true}),
                conflict("state"),
                "masked",
            ),
            (
                json!({"name": "x", "enabled": true, "masked": true}),
                conflict("enabled"),
                "masked",
            ),
            (
                json!({"name": "", "state": "started"}),
                ArgErrorKind::Invalid,
                "name",
            ),
            (
                json!({"name": "a b", "state": "started"}),
                ArgErrorKind::Invalid,
                "name",
            ),
        ] {
            let e = arg_error(&Service, v.clone());
            assert_eq!((e.kind, e.param), (kind, param), "{v}");
        }
    }
}
