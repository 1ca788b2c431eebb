//! systemd: the state of one unit, from `systemctl show`.

use crate::module::fact::{command_output, Fact};
use crate::module::{shell_quote, Observation, Probe};
use std::collections::BTreeMap;

/// The properties the probe asks for.
const PROPERTIES: &str =
    "Id,LoadState,ActiveState,SubState,UnitFileState,NeedDaemonReload,TriggeredBy";

/// ActiveStates in which a unit counts as running (systemd ≥ 254 adds `refreshing`).
const RUNNING: &[&str] = &["active", "activating", "reloading", "refreshing"];

/// One systemd unit as `systemctl show -p Id,LoadState,... -- UNIT` reports it. The key is the
/// unit name as the user gave it (`libvirtd`, `getty@tty1`, an alias): systemctl appends
/// `.service` when it has no suffix and resolves aliases, and [`UnitState::id`] is the unit it
/// resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitState {
    /// The canonical unit name (`ssh.service` for `sshd`); the key itself when systemd did not say.
    pub id: String,
    /// `loaded`, `not-found`, `masked`, `error`, ...
    pub load_state: String,
    /// `active`, `inactive`, `failed`, `activating`, `deactivating`, ...
    pub active_state: String,
    pub sub_state: String,
    /// `enabled`, `disabled`, `static`, `masked`, `enabled-runtime`, ... (empty: no unit file).
    pub unit_file_state: String,
    /// The unit's files changed on disk since systemd loaded them.
    pub need_daemon_reload: bool,
    /// Every property as printed, for `register`.
    pub properties: BTreeMap<String, String>,
    /// For an inactive unit, the sockets that start it on demand and are listening (e.g.
    /// `libvirtd.socket`: Debian's libvirtd exits after two idle minutes and comes back on the
    /// next connection). Empty otherwise.
    pub listening_triggers: Vec<String>,
}

impl UnitState {
    pub fn exists(&self) -> bool {
        self.load_state != "not-found"
    }
    pub fn running(&self) -> bool {
        RUNNING.contains(&self.active_state.as_str())
    }
    /// Not running now, but a listening socket starts it on the next connection.
    pub fn on_demand(&self) -> bool {
        self.active_state == "inactive" && !self.listening_triggers.is_empty()
    }
    /// Masked, persistently or at runtime.
    pub fn masked(&self) -> bool {
        self.unit_file_state.starts_with("masked") || self.load_state == "masked"
    }
}

impl Fact for UnitState {
    const NAME: &'static str = "systemd unit";
    type Key = str;

    /// `systemctl show` of the unit; only when it is inactive and socket-activated, a second
    /// `show` of its sockets, after a blank line.
    fn probe(unit: &str) -> Probe {
        Probe::Command(format!(
            "kf_u=$(systemctl show -p {PROPERTIES} -- {}) || exit; printf '%s\\n' \"$kf_u\"; \
             case $kf_u in *ActiveState=inactive*) ;; *) exit 0 ;; esac; \
             kf_t=$(printf '%s\\n' \"$kf_u\" | sed -n 's/^TriggeredBy=//p'); \
             [ -z \"$kf_t\" ] || {{ echo; systemctl show -p Id,ActiveState -- $kf_t; }}",
            shell_quote(unit)
        ))
    }

    fn parse(unit: &str, seen: &Observation) -> Result<Self, String> {
        let out = command_output(seen)?;
        match out.rc {
            0 => {}
            127 => return Err("systemctl not found: this host does not run systemd".into()),
            rc => {
                return Err(format!(
                    "`systemctl show` failed (rc {rc}): {}",
                    out.stderr.trim()
                ))
            }
        }
        let mut blocks = out.stdout.split("\n\n");
        let properties: BTreeMap<String, String> = blocks
            .next()
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let prop = |k: &str| properties.get(k).cloned().unwrap_or_default();
        let (load_state, active_state) = (prop("LoadState"), prop("ActiveState"));
        if load_state.is_empty() || active_state.is_empty() {
            return Err(format!(
                "unexpected `systemctl show` output for {unit}: {:?}",
                out.stdout.trim()
            ));
        }
        let listening_triggers = if active_state == "inactive" {
            // Sorted: systemd lists a unit's triggers in no fixed order, and the names end
            // up in messages that should read the same on every run.
            let mut ids: Vec<String> = blocks
                .filter(|b| b.lines().any(|l| l.trim() == "ActiveState=active"))
                .filter_map(|b| b.lines().find_map(|l| l.trim().strip_prefix("Id=")))
                .map(String::from)
                .collect();
            ids.sort();
            ids
        } else {
            Vec::new()
        };
        Ok(UnitState {
            id: match prop("Id") {
                id if id.is_empty() => unit.to_string(),
                id => id,
            },
            load_state,
            active_state,
            sub_state: prop("SubState"),
            unit_file_state: prop("UnitFileState"),
            need_daemon_reload: prop("NeedDaemonReload") == "yes",
            listening_triggers,
            properties,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{CommandOutput, ModuleError, Observed};
    use crate::modules::facts::fixture;

    fn parse(unit: &str, file: &str) -> UnitState {
        let out = CommandOutput::ok(&fixture(&format!("systemd_unit/{file}")));
        UnitState::parse(unit, &Observation::Command(out)).unwrap()
    }

    /// The probe with a stand-in `systemctl` that answers as a Debian host whose libvirtd
    /// exited after its idle timeout (its sockets listening), or as one where it runs.
    fn probe_with(unit_state: &str, unit: &str) -> (UnitState, String) {
        probe_with_sockets(unit_state, unit, "libvirtd-sockets.txt")
    }

    fn probe_with_sockets(unit_state: &str, unit: &str, sockets: &str) -> (UnitState, String) {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("calls");
        let fake = dir.path().join("systemctl");
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\necho \"$*\" >> '{}'\ncase \"$*\" in\n\
                 *TriggeredBy*) cat '{}' ;;\n\
                 *) cat '{}' ;;\nesac\n",
                log.display(),
                crate::modules::facts::fixture_path(&format!("systemd_unit/{unit_state}"))
                    .display(),
                crate::modules::facts::fixture_path(&format!("systemd_unit/{sockets}")).display(),
            ),
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let Probe::Command(cmd) = UnitState::probe(unit) else {
            panic!()
        };
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()))
            .output()
            .unwrap();
        let seen = Observation::Command(CommandOutput {
            rc: out.status.code().unwrap(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
        (
            UnitState::parse(unit, &seen).unwrap(),
            std::fs::read_to_string(&log).unwrap(),
        )
    }

    #[test]
    fn probe_is_one_quoted_show_and_asks_for_sockets_only_when_idle() {
        let Probe::Command(c) = UnitState::probe("getty@tty1") else {
            panic!()
        };
        assert!(c.starts_with(
            "kf_u=$(systemctl show -p Id,LoadState,ActiveState,SubState,UnitFileState,NeedDaemonReload,TriggeredBy -- getty@tty1)"
        ));
        assert!(matches!(UnitState::probe("a b"), Probe::Command(c) if c.contains("-- 'a b')")));
        // Idle libvirtd: its three sockets are asked about, one listens.
        let (u, calls) = probe_with("libvirtd-idle.txt", "libvirtd");
        assert_eq!(calls.lines().count(), 2, "{calls}");
        assert!(calls.ends_with(
            "show -p Id,ActiveState -- libvirtd-ro.socket libvirtd.socket libvirtd-admin.socket\n"
        ));
        assert_eq!(u.active_state, "inactive");
        assert_eq!(u.listening_triggers, ["libvirtd.socket"]);
        assert!(u.on_demand() && !u.running());
        // All three listening (systemd lists them in no fixed order): named sorted.
        let (u, _) =
            probe_with_sockets("libvirtd-idle.txt", "libvirtd", "libvirtd-sockets-all.txt");
        assert_eq!(
            u.listening_triggers,
            [
                "libvirtd-admin.socket",
                "libvirtd-ro.socket",
                "libvirtd.socket"
            ]
        );
        assert_eq!(
            u.properties["Id"], "libvirtd.service",
            "the unit's block only"
        );
        // Running: one call, no sockets.
        let (u, calls) = probe_with("ssh-running-enabled.txt", "ssh");
        assert_eq!(calls.lines().count(), 1);
        assert!(u.listening_triggers.is_empty() && !u.on_demand());
        // Inactive without sockets: nothing more to ask.
        let (u, calls) = probe_with("ssh-stopped-disabled.txt", "ssh");
        assert_eq!(calls.lines().count(), 1);
        assert!(!u.on_demand());
    }

    #[test]
    fn running_enabled_unit() {
        let u = parse("ssh", "ssh-running-enabled.txt");
        assert_eq!(u.id, "ssh.service");
        assert!(u.exists() && u.running() && !u.masked() && !u.need_daemon_reload);
        assert_eq!(u.unit_file_state, "enabled");
        assert_eq!(u.properties["SubState"], "running");
    }

    #[test]
    fn alias_resolves_to_the_canonical_unit() {
        assert_eq!(parse("sshd", "sshd-alias.txt").id, "ssh.service");
    }

    #[test]
    fn stopped_disabled_and_runtime_enabled() {
        let u = parse("ssh", "ssh-stopped-disabled.txt");
        assert!(!u.running());
        assert_eq!(u.unit_file_state, "disabled");
        assert_eq!(
            parse("ssh", "enabled-runtime.txt").unit_file_state,
            "enabled-runtime"
        );
    }

    #[test]
    fn missing_masked_static_and_stale_units() {
        let u = parse("nosuchunit", "not-found.txt");
        assert!(!u.exists());
        assert_eq!(u.unit_file_state, "");
        assert!(parse("e2scrub_reap", "masked.txt").masked());
        assert!(parse("getty@tty1", "template-instance.txt").masked());
        assert_eq!(
            parse("systemd-journald", "journald-static.txt").unit_file_state,
            "static"
        );
        assert!(parse("ssh", "need-daemon-reload.txt").need_daemon_reload);
    }

    #[test]
    fn hosts_without_systemd_and_garbage() {
        let o = Observed::new()
            .with_fact::<UnitState>(
                "x",
                Observation::Command(CommandOutput::failed(127, "sh: systemctl: not found")),
            )
            .with_fact::<UnitState>(
                "y",
                Observation::Command(CommandOutput::failed(
                    1,
                    "System has not been booted with systemd as init system (PID 1).",
                )),
            )
            .with_fact::<UnitState>("z", Observation::Command(CommandOutput::ok("garbage")));
        for (unit, says) in [
            ("x", "does not run systemd"),
            ("y", "not been booted"),
            ("z", "unexpected"),
        ] {
            match o.fact::<UnitState>(unit) {
                Err(ModuleError::Host(m)) => assert!(m.contains(says), "{m}"),
                other => panic!("{other:?}"),
            }
        }
    }
}
