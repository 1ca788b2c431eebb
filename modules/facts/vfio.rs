//! What binding PCI functions to vfio-pci depends on besides the PCI tree: the CPU vendor
//! (which kernel arguments turn the IOMMU on), whether this kernel's devices can be changed at
//! all (a container sees a read-only /sys or none of the host's PCI devices), the tool that
//! rebuilds the initramfs, and the bindings kvmforge already persisted on the host (one udev
//! rule file per PCI address, [`RULES_DIR`]/[`RULE_PREFIX`]ADDRESS.rules).

use crate::module::fact::{stdout_of, Fact};
use crate::module::{Observation, Probe};

/// Where the per-address rules live.
pub const RULES_DIR: &str = "/etc/udev/rules.d";
/// The name of a rule file before its address: udev runs it long before 80-drivers.rules loads
/// the host driver.
pub const RULE_PREFIX: &str = "61-kvmforge-vfio-";

const PROBE: &str = concat!(
    r#"v=-; while read -r k r; do [ "$k" = vendor_id ] && v=${r#*: } && break; done </proc/cpuinfo 2>/dev/null; "#,
    r#"echo "cpu $v"; "#,
    r#"if [ -w /sys/bus/pci/drivers_probe ]; then echo "sysfs writable"; "#,
    r#"elif [ -e /sys/bus/pci/drivers_probe ]; then echo "sysfs read-only"; else echo "sysfs missing"; fi; "#,
    r#"if command -v update-initramfs >/dev/null 2>&1; then echo "initramfs update-initramfs"; "#,
    r#"elif command -v dracut >/dev/null 2>&1; then echo "initramfs dracut"; else echo "initramfs -"; fi; "#,
    r#"for f in /etc/udev/rules.d/61-kvmforge-vfio-*.rules; do [ -e "$f" ] || continue; "#,
    r#"echo "rule ${f##*/}"; while IFS= read -r l || [ -n "$l" ]; do echo "| $l"; done <"$f"; done"#,
);

/// Whether the kernel's PCI devices can be rebound from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sysfs {
    Writable,
    /// /sys is mounted read-only: a container.
    ReadOnly,
    /// No /sys/bus/pci at all: a container without it, or not Linux.
    Missing,
}

/// The tool that rebuilds the initramfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitramfsTool {
    /// Debian, Ubuntu (initramfs-tools).
    UpdateInitramfs,
    /// Fedora, RHEL and their relatives.
    Dracut,
}

/// A persisted binding: one rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistedRule {
    /// The PCI address, from the file name.
    pub address: String,
    pub path: String,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfioHost {
    /// `vendor_id` of /proc/cpuinfo: GenuineIntel, AuthenticAMD, ... (`None` without one).
    pub cpu_vendor: Option<String>,
    pub sysfs: Sysfs,
    pub initramfs: Option<InitramfsTool>,
    pub rules: Vec<PersistedRule>,
}

impl VfioHost {
    pub fn rule(&self, address: &str) -> Option<&PersistedRule> {
        self.rules.iter().find(|r| r.address == address)
    }
}

/// The rule file of an address.
pub fn rule_path(address: &str) -> String {
    format!("{RULES_DIR}/{RULE_PREFIX}{address}.rules")
}

impl Fact for VfioHost {
    const NAME: &'static str = "vfio host";
    type Key = ();
    fn probe(_: &()) -> Probe {
        Probe::Command(PROBE.into())
    }
    fn parse(_: &(), seen: &Observation) -> Result<Self, String> {
        let out = stdout_of(seen)?;
        let mut host = VfioHost {
            cpu_vendor: None,
            sysfs: Sysfs::Missing,
            initramfs: None,
            rules: Vec::new(),
        };
        let mut lines = 0;
        for line in out.lines() {
            if let Some(text) = line.strip_prefix("| ").or(line.strip_prefix('|')) {
                let rule = host
                    .rules
                    .last_mut()
                    .ok_or_else(|| format!("unexpected line {line:?}"))?;
                rule.content.push_str(text);
                rule.content.push('\n');
                continue;
            }
            lines += 1;
            match line.split_once(' ') {
                Some(("cpu", "-")) => {}
                Some(("cpu", v)) => host.cpu_vendor = Some(v.trim().to_string()),
                Some(("sysfs", "writable")) => host.sysfs = Sysfs::Writable,
                Some(("sysfs", "read-only")) => host.sysfs = Sysfs::ReadOnly,
                Some(("sysfs", "missing")) => host.sysfs = Sysfs::Missing,
                Some(("initramfs", "update-initramfs")) => {
                    host.initramfs = Some(InitramfsTool::UpdateInitramfs)
                }
                Some(("initramfs", "dracut")) => host.initramfs = Some(InitramfsTool::Dracut),
                Some(("initramfs", "-")) => {}
                Some(("rule", file)) => {
                    let address = file
                        .strip_prefix(RULE_PREFIX)
                        .and_then(|f| f.strip_suffix(".rules"))
                        .ok_or_else(|| format!("unexpected rule file {file:?}"))?;
                    host.rules.push(PersistedRule {
                        address: address.to_string(),
                        path: format!("{RULES_DIR}/{file}"),
                        content: String::new(),
                    });
                }
                _ => return Err(format!("unexpected line {line:?}")),
            }
        }
        if lines < 3 {
            return Err(format!("incomplete vfio host listing: {out:?}"));
        }
        Ok(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::CommandOutput;
    use crate::modules::facts::fixture;

    fn parse(text: &str) -> VfioHost {
        VfioHost::parse(&(), &Observation::Command(CommandOutput::ok(text))).unwrap()
    }

    /// This machine (read-only), and a lab VM (QEMU `-cpu max` on an AMD host) with two
    /// bindings persisted.
    #[test]
    fn real_hosts() {
        let here = parse(&fixture("vfio_host/machine.txt"));
        assert_eq!(here.cpu_vendor.as_deref(), Some("AuthenticAMD"));
        assert!(here.rules.is_empty());
        let vm = parse(&fixture("vfio_host/vm-bound.txt"));
        assert_eq!(vm.cpu_vendor.as_deref(), Some("AuthenticAMD"));
        assert_eq!(vm.sysfs, Sysfs::Writable);
        assert_eq!(vm.initramfs, Some(InitramfsTool::UpdateInitramfs));
        assert_eq!(vm.rules.len(), 2);
        assert!(vm.rules[0]
            .content
            .contains("ATTR{driver_override}=\"vfio-pci\""));
    }

    #[test]
    fn probe_runs_here() {
        let seen = crate::modules::facts::run_here(&VfioHost::probe(&()));
        VfioHost::parse(&(), &seen).unwrap();
    }

    #[test]
    fn malformed() {
        for bad in [
            "",
            "cpu x\n",
            "cpu x\nsysfs writable\ninitramfs -\nwhat\n",
            "| x\n",
        ] {
            assert!(
                VfioHost::parse(&(), &Observation::Command(CommandOutput::ok(bad))).is_err(),
                "{bad:?}"
            );
        }
    }
}
