//! A systemd unit that a module writes itself (the boot-time unit of `vxlan`, the service of
//! `ssh_tunnel`): its file under `/etc/systemd/system`, its `multi-user.target.wants` link, and
//! `systemctl daemon-reload` when the file changes, planned from file probes alone.
//!
//! Enablement is the link itself rather than `systemctl enable`, so it is a file action: check
//! mode predicts it, and a network guard saves and restores it with the unit file. Starting and
//! stopping stay with the module, which knows when its service must (re)start.

use crate::module::{
    shell_quote, Action, Attrs, Change, FileKind, ModuleError, Observed, Plan, Probe,
};

/// Where systemd looks for administrator units.
pub const UNIT_DIR: &str = "/etc/systemd/system";
/// What enabling links the unit into (its `WantedBy=`).
pub const WANTS_DIR: &str = "/etc/systemd/system/multi-user.target.wants";
/// Exists exactly when systemd is the running init (`sd_booted()`).
pub const SYSTEMD_RUNNING: &str = "/run/systemd/system";

/// One unit written by a module, `NAME.service`, wanted by `multi-user.target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFile {
    /// The unit's name with its suffix (`kvmforge-vxlan-wsfvxlan0.service`).
    pub unit: String,
}

impl UnitFile {
    pub fn new(unit: impl Into<String>) -> Self {
        UnitFile { unit: unit.into() }
    }

    pub fn path(&self) -> String {
        format!("{UNIT_DIR}/{}", self.unit)
    }

    /// The enablement link.
    pub fn wants_path(&self) -> String {
        format!("{WANTS_DIR}/{}", self.unit)
    }

    /// What [`UnitFile::install`] and [`UnitFile::remove`] read.
    pub fn probes(&self) -> Vec<Probe> {
        [
            self.path(),
            self.wants_path(),
            WANTS_DIR.to_string(),
            SYSTEMD_RUNNING.to_string(),
        ]
        .map(Probe::File)
        .into()
    }

    /// Whether systemd runs this host.
    pub fn systemd_running(observed: &Observed) -> Result<bool, ModuleError> {
        Ok(observed.file(SYSTEMD_RUNNING)?.kind == FileKind::Dir)
    }

    /// `systemctl VERB -- UNIT`.
    pub fn systemctl(&self, verb: &str) -> Action {
        Action::run(format!("systemctl {verb} -- {}", shell_quote(&self.unit)))
    }

    /// Plan the unit to hold `text` and to be enabled: the write (with a diff, summarised with
    /// `purpose`, e.g. "re-creates wsfvxlan0 at boot"), the link, then `systemctl daemon-reload`
    /// when the file changed. Returns whether it did: the caller restarts what runs it.
    pub fn install(
        &self,
        plan: &mut Plan,
        observed: &Observed,
        text: &str,
        purpose: &str,
    ) -> Result<bool, ModuleError> {
        let path = self.path();
        let unit = observed.file(&path)?;
        let changed = unit.content.as_deref() != Some(text.as_bytes());
        if changed {
            let verb = if unit.exists() { "update" } else { "create" };
            plan.change(
                Change::new(format!("{verb} {path} ({purpose})")).with_diff(
                    &path,
                    unit.text(),
                    text,
                ),
                [Action::write(&path, text, Attrs::default(), false)],
            );
        }
        let wants = observed.file(&self.wants_path())?;
        if wants.link_target.as_deref() != Some(path.as_str()) {
            let mut actions = Vec::new();
            if !observed.file(WANTS_DIR)?.exists() {
                actions.push(Action::MakeDir {
                    path: WANTS_DIR.into(),
                    attrs: Attrs::default(),
                });
            }
            actions.push(Action::Symlink {
                target: path.clone(),
                link: self.wants_path(),
            });
            plan.change(
                Change::new(format!("enable {} at boot", self.unit)),
                actions,
            );
        }
        if changed {
            plan.actions.push(Action::run("systemctl daemon-reload"));
        }
        Ok(changed)
    }

    /// Plan the unit away: the link, then (under systemd) the unit stopped, the file removed and
    /// systemd told. Returns whether the unit file existed.
    pub fn remove(&self, plan: &mut Plan, observed: &Observed) -> Result<bool, ModuleError> {
        let path = self.path();
        let unit = observed.file(&path)?;
        let wants = observed.file(&self.wants_path())?;
        let systemd = Self::systemd_running(observed)?;
        if wants.link_target.is_some() || wants.exists() {
            plan.change(
                Change::new(format!("disable {} at boot", self.unit)),
                [Action::Remove {
                    path: self.wants_path(),
                }],
            );
        }
        if !unit.exists() {
            return Ok(false);
        }
        let mut actions = Vec::new();
        if systemd {
            actions.push(self.systemctl("stop"));
        }
        actions.push(Action::Remove { path: path.clone() });
        if systemd {
            actions.push(Action::run("systemctl daemon-reload"));
        }
        plan.change(
            Change::new(format!("remove {path}")).with_diff(&path, unit.text(), ""),
            actions,
        );
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::FileState;
    use crate::modules::testing::apply;

    fn unit() -> UnitFile {
        UnitFile::new("kvmforge-x.service")
    }

    fn fresh() -> Observed {
        Observed::new()
            .with_file(&unit().path(), FileState::absent())
            .with_file(&unit().wants_path(), FileState::absent())
            .with_file(WANTS_DIR, FileState::absent())
            .with_file(SYSTEMD_RUNNING, FileState::dir())
    }

    #[test]
    fn install_writes_links_and_reloads_once() {
        let u = unit();
        let mut p = Plan::ok();
        assert!(u.install(&mut p, &fresh(), "[Unit]\n", "runs x").unwrap());
        assert_eq!(
            p.changes
                .iter()
                .map(|c| c.summary.as_str())
                .collect::<Vec<_>>(),
            [
                "create /etc/systemd/system/kvmforge-x.service (runs x)",
                "enable kvmforge-x.service at boot"
            ]
        );
        assert_eq!(
            p.actions.last(),
            Some(&Action::run("systemctl daemon-reload"))
        );
        assert!(p.actions.contains(&Action::MakeDir {
            path: WANTS_DIR.into(),
            attrs: Attrs::default()
        }));
        // The state after it, with the link as the engine makes it: nothing to do.
        let after = apply(&fresh(), &p.actions[..p.actions.len() - 1]).with_file(
            &u.wants_path(),
            FileState {
                link_target: Some(u.path()),
                ..FileState::file("[Unit]\n")
            },
        );
        let mut again = Plan::ok();
        assert!(!u.install(&mut again, &after, "[Unit]\n", "runs x").unwrap());
        assert!(!again.changed() && again.actions.is_empty());
        // Removal: link, stop, file, reload.
        let mut gone = Plan::ok();
        assert!(u.remove(&mut gone, &after).unwrap());
        assert_eq!(
            gone.actions,
            vec![
                Action::Remove {
                    path: u.wants_path()
                },
                Action::run("systemctl stop -- kvmforge-x.service"),
                Action::Remove { path: u.path() },
                Action::run("systemctl daemon-reload"),
            ]
        );
        let mut nothing = Plan::ok();
        assert!(!u.remove(&mut nothing, &fresh()).unwrap());
        assert!(!nothing.changed());
    }
}
