//! `reboot`: reboot the host when a change needs it, wait for it, and check the new boot.
//!
//! The planner decides whether to reboot from what the run knows (an earlier task on this host
//! reported `reboot_required`: [`RunState`](crate::module::RunState)) and what the host says
//! (/var/run/reboot-required, written by Debian's package scripts). The reboot itself, the wait
//! and the checks on the new boot are the engine's (see [`Reboot`]): they span connections.

use crate::module::{
    ArgError, Change, Module, ModuleError, ModuleSpec, Observed, Plan, PlanContext, Probe, Reboot,
};
use crate::params::{Args, ParamKind, ParamSpec};
use serde::Deserialize;

pub struct RebootModule;

/// Debian's and Ubuntu's flag file: a package (a new kernel, libc) wants a reboot.
const FLAG: &str = "/var/run/reboot-required";
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";
const CMDLINE: &str = "/proc/cmdline";

static SPEC: ModuleSpec = ModuleSpec {
    name: "reboot",
    summary: "Reboot the host when a change needs it, wait for it to come back, check the new boot",
    description: "With `when_required: true` (the default) the host reboots only when an earlier \
task on it in this run reported `reboot_required` (grub_cmdline with an argument missing from \
/proc/cmdline, vfio_bind, hugepages, ...) or /var/run/reboot-required exists; otherwise the task \
is `ok`. `when_required: false` always reboots.\n\n\
The reboot is scheduled two seconds ahead (a transient systemd timer, or a detached `sleep` \
without systemd) so the command returns cleanly before the connection goes. The engine then \
closes the connection and tries new ones with growing pauses (2 s up to 10 s) until one reads a \
boot id (/proc/sys/kernel/random/boot_id) other than the one before: a host still answering with \
the old id has not gone down yet. On the new boot `test_command` must succeed and every word of \
`verify_cmdline` must be in /proc/cmdline (the check people do by hand after adding kernel \
arguments), else the task fails saying which. All of that within `reboot_timeout` seconds, or \
the task fails with the last reason the host gave. Other hosts carry on meanwhile; use the play's \
`serial` for a rolling reboot across a cluster. Without a reboot, `verify_cmdline` is checked \
against the running kernel. Check mode says whether it would reboot and why. A host reached with \
`connection: local` is never rebooted.",
    params: &[
        ParamSpec::with_default(
            "when_required",
            ParamKind::Bool,
            "true",
            "Reboot only when an earlier task reported reboot_required or /var/run/reboot-required exists",
        ),
        ParamSpec::with_default(
            "reboot_timeout",
            ParamKind::Int,
            "600",
            "Seconds to wait for the host to go down, come back and pass its checks",
        ),
        ParamSpec::with_default(
            "test_command",
            ParamKind::Str,
            "whoami",
            "Command that must succeed on the new boot",
        ),
        ParamSpec::optional(
            "verify_cmdline",
            ParamKind::List,
            "Words that must be in /proc/cmdline after the reboot (e.g. [intel_iommu=on, iommu=pt])",
        ),
    ],
    free_form: None,
    example: r#"# after a grub_cmdline task adding intel_iommu=on iommu=pt:
- name: reboot if that needs it, and check the kernel took the arguments
  reboot:
    verify_cmdline: [intel_iommu=on, iommu=pt]
    reboot_timeout: 900
"#,
};

/// A `reboot` task's arguments, typed.
#[derive(Debug, Deserialize)]
pub struct Request {
    when_required: bool,
    reboot_timeout: u64,
    test_command: String,
    verify_cmdline: Option<Vec<String>>,
}

/// Schedules the reboot two seconds ahead and returns at once.
const TRIGGER: &str =
    "if [ -d /run/systemd/system ] && command -v systemd-run >/dev/null 2>&1; then \
systemd-run --quiet --on-active=2 --timer-property=AccuracySec=100ms systemctl reboot; \
else nohup sh -c 'sleep 2; reboot' >/dev/null 2>&1 </dev/null & fi";

impl Module for RebootModule {
    type Request = Request;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn request(&self, args: Args, _ctx: &PlanContext) -> Result<Request, ModuleError> {
        let r: Request = args.parse()?;
        if !(10..=86_400).contains(&r.reboot_timeout) {
            return Err(ArgError::invalid(
                "reboot_timeout",
                format!(
                    "reboot_timeout {} is not between 10 and 86400 seconds",
                    r.reboot_timeout
                ),
            )
            .into());
        }
        if r.test_command.trim().is_empty() {
            return Err(ArgError::invalid("test_command", "test_command must not be empty").into());
        }
        for w in r.verify_cmdline.iter().flatten() {
            if w.is_empty() || w.chars().any(char::is_whitespace) {
                return Err(ArgError::invalid(
                    "verify_cmdline",
                    format!("{w:?} is not one kernel command line word"),
                )
                .into());
            }
        }
        Ok(r)
    }

    fn probes(&self, _r: &Request) -> Vec<Probe> {
        [FLAG, BOOT_ID, CMDLINE]
            .into_iter()
            .map(|p| Probe::File(p.into()))
            .collect()
    }

    fn plan(&self, r: &Request, observed: &Observed) -> Result<Plan, ModuleError> {
        let mut reasons = Vec::new();
        if observed.run().reboot_required {
            reasons.push("an earlier task needs a reboot");
        }
        if observed.file(FLAG)?.exists() {
            reasons.push("/var/run/reboot-required exists");
        }
        if !r.when_required {
            reasons.push("asked for (when_required: false)");
        }
        let verify = r.verify_cmdline.clone().unwrap_or_default();
        if reasons.is_empty() {
            let cmdline = observed.file(CMDLINE)?.text();
            let words: Vec<&str> = cmdline.split_whitespace().collect();
            let missing: Vec<&str> = verify
                .iter()
                .map(String::as_str)
                .filter(|w| !words.contains(w))
                .collect();
            if !missing.is_empty() {
                return Err(ModuleError::Host(format!(
                    "no reboot is required, yet the running kernel's command line lacks {} \
                     (/proc/cmdline: {}): were the arguments added to the boot loader?",
                    missing.join(" "),
                    cmdline.trim()
                )));
            }
            let mut plan = Plan::ok().with_data("rebooted", false);
            plan.msg = Some("no reboot required".into());
            return Ok(plan);
        }
        let boot_id = observed.file(BOOT_ID)?.text().trim().to_string();
        if boot_id.is_empty() {
            return Err(ModuleError::Host(format!(
                "{BOOT_ID} cannot be read: without it a reboot cannot be told from a host that never went down"
            )));
        }
        let mut plan = Plan::ok().with_data("rebooted", true);
        plan.change(Change::new(format!("reboot: {}", reasons.join(", "))), []);
        plan.reboot = Some(Reboot {
            trigger: TRIGGER.into(),
            boot_id,
            timeout: r.reboot_timeout,
            test_command: Some(r.test_command.clone()),
            verify_cmdline: verify,
        });
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{ArgErrorKind, FileState, RunState};
    use crate::modules::testing::{arg_error, req};
    use serde_json::json;

    const M: RebootModule = RebootModule;

    fn host(flag: bool, cmdline: &str) -> Observed {
        Observed::new()
            .with_file(
                FLAG,
                if flag {
                    FileState::file("*** System restart required ***\n")
                } else {
                    FileState::absent()
                },
            )
            .with_file(
                BOOT_ID,
                FileState::file("5a1e7c53-7f5e-4a4e-9d2a-1a4ad3b3c0de\n"),
            )
            .with_file(CMDLINE, FileState::file(cmdline))
    }

    const CMD: &str = "BOOT_IMAGE=/boot/vmlinuz-6.1.0-26-amd64 root=UUID=6b1f ro console=ttyS0\n";

    #[test]
    fn reboots_only_when_required() {
        let r = req(&M, json!({}));
        let p = M.plan(&r, &host(false, CMD)).unwrap();
        assert!(!p.changed() && p.reboot.is_none());
        assert_eq!(p.msg.as_deref(), Some("no reboot required"));

        let p = M.plan(&r, &host(true, CMD)).unwrap();
        assert_eq!(
            p.changes[0].summary,
            "reboot: /var/run/reboot-required exists"
        );
        let rb = p.reboot.unwrap();
        assert_eq!(rb.boot_id, "5a1e7c53-7f5e-4a4e-9d2a-1a4ad3b3c0de");
        assert_eq!(rb.timeout, 600);
        assert_eq!(rb.test_command.as_deref(), Some("whoami"));

        let mut o = host(false, CMD);
        o.set_run(RunState {
            reboot_required: true,
        });
        let p = M.plan(&r, &o).unwrap();
        assert_eq!(
            p.changes[0].summary,
            "reboot: an earlier task needs a reboot"
        );
        assert!(p.actions.is_empty(), "the engine reboots, not an action");

        let p = M
            .plan(&req(&M, json!({"when_required": false})), &host(false, CMD))
            .unwrap();
        assert!(p.reboot.is_some());
    }

    #[test]
    fn verify_cmdline_without_a_reboot_checks_the_running_kernel() {
        let r = req(
            &M,
            json!({"verify_cmdline": ["intel_iommu=on", "iommu=pt"]}),
        );
        let Err(ModuleError::Host(m)) = M.plan(&r, &host(false, CMD)) else {
            panic!("expected a host error")
        };
        assert!(m.contains("lacks intel_iommu=on iommu=pt"), "{m}");
        let with = CMD.replace("ro ", "ro intel_iommu=on iommu=pt ");
        assert!(!M.plan(&r, &host(false, &with)).unwrap().changed());
        let p = M.plan(&r, &host(true, CMD)).unwrap();
        assert_eq!(
            p.reboot.unwrap().verify_cmdline,
            ["intel_iommu=on", "iommu=pt"]
        );
    }

    #[test]
    fn bad_arguments_name_their_parameter() {
        let e = arg_error(&M, json!({"reboot_timeout": 1}));
        assert_eq!((e.kind, e.param), (ArgErrorKind::Invalid, "reboot_timeout"));
        let e = arg_error(&M, json!({"test_command": " "}));
        assert_eq!(e.param, "test_command");
    }

    /// The trigger schedules and returns; its syntax is checked by the local shell.
    #[test]
    fn trigger_is_valid_shell() {
        let st = std::process::Command::new("sh")
            .args(["-n", "-c", TRIGGER])
            .status()
            .unwrap();
        assert!(st.success());
    }
}
