//! PCI: every function on the host's PCI buses with its driver and IOMMU group, read from sysfs.
//!
//! Passthrough planners (vfio-pci binding, `vfio-pci.ids=`, driver overrides) decide from the ids,
//! the bound driver and the IOMMU group of each function. `lspci` is not installed everywhere and
//! does not show groups, so the probe reads `/sys/bus/pci/devices/*` itself with POSIX `sh`
//! builtins (plus `readlink` for the two symlinks): one line per function, fields separated by
//! single spaces, `-` for anything absent. No field can contain a space: sysfs prints ids as hex
//! and driver names are single words.

use crate::module::fact::{stdout_of, Fact};
use crate::module::{Observation, Probe};

/// Prints `iommu_groups N` (the number of entries of `/sys/kernel/iommu_groups`: 0 when the
/// IOMMU is off), then per function: address, vendor, device, subsystem vendor, subsystem
/// device, class, driver, driver_override, iommu group. `read` (a builtin) instead of `cat`
/// keeps it to two forks per function on hosts with hundreds of them.
const PROBE: &str = concat!(
    r#"n=0; for g in /sys/kernel/iommu_groups/*; do [ -e "$g" ] && n=$((n+1)); done; "#,
    r#"echo "iommu_groups $n"; "#,
    r#"pci_val() { v=; read -r v 2>/dev/null <"$1"; printf ' %s' "${v:--}"; }; "#,
    r#"pci_link() { v=; [ -L "$1" ] && v=$(readlink "$1"); v=${v##*/}; printf ' %s' "${v:--}"; }; "#,
    r#"for d in /sys/bus/pci/devices/*; do [ -e "$d/vendor" ] || continue; printf '%s' "${d##*/}"; "#,
    r#"for f in vendor device subsystem_vendor subsystem_device class; do pci_val "$d/$f"; done; "#,
    r#"pci_link "$d/driver"; pci_val "$d/driver_override"; pci_link "$d/iommu_group"; echo; done"#,
);

/// The PCI functions of a host, in address order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciTree {
    pub devices: Vec<PciDevice>,
    /// How many IOMMU groups exist: 0 when the IOMMU is off (not enabled in firmware or on the
    /// kernel command line), and then no device can be passed through.
    pub iommu_groups: usize,
}

/// One PCI function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciDevice {
    /// Domain, bus, device and function: `0000:3b:00.0`.
    pub address: String,
    pub vendor: u16,
    pub device: u16,
    pub subsystem_vendor: Option<u16>,
    pub subsystem_device: Option<u16>,
    /// Base class, subclass and programming interface: `0x010802` is an NVMe controller.
    pub class: u32,
    /// The bound driver (`vfio-pci`, `nvme`, ...).
    pub driver: Option<String>,
    /// The driver forced by `driver_override`, which wins over id matching at the next probe.
    pub driver_override: Option<String>,
    pub iommu_group: Option<u32>,
}

impl PciDevice {
    /// `vendor:device` in lowercase hex, as `lspci -nn` and `vfio-pci.ids=` write it.
    pub fn id(&self) -> String {
        format!("{:04x}:{:04x}", self.vendor, self.device)
    }
    /// A PCI-to-PCI bridge (class 0x0604). Bridges share their downstream devices' IOMMU group
    /// but stay with their own driver when the devices are passed through.
    pub fn is_pci_bridge(&self) -> bool {
        self.class >> 8 == 0x0604
    }
}

impl PciTree {
    pub fn iommu_enabled(&self) -> bool {
        self.iommu_groups > 0
    }
    /// The function at an address; the domain may be left out (`3b:00.0`), as `lspci` does.
    pub fn get(&self, address: &str) -> Option<&PciDevice> {
        let full = match address.matches(':').count() {
            1 => format!("0000:{address}"),
            _ => address.to_string(),
        };
        self.devices
            .iter()
            .find(|d| d.address.eq_ignore_ascii_case(&full))
    }
    /// The functions with a vendor and device id.
    pub fn with_id(&self, vendor: u16, device: u16) -> impl Iterator<Item = &PciDevice> {
        self.devices
            .iter()
            .filter(move |d| d.vendor == vendor && d.device == device)
    }
    /// The functions of an IOMMU group: all of them go to a guest together.
    pub fn group(&self, group: u32) -> impl Iterator<Item = &PciDevice> {
        self.devices
            .iter()
            .filter(move |d| d.iommu_group == Some(group))
    }
}

/// Parse a `vendor:device` id (`10de:1eb8`) as users and `vfio-pci.ids=` write it.
pub fn parse_id(id: &str) -> Result<(u16, u16), String> {
    let bad = || format!("`{id}` is not a PCI id like 10de:1eb8");
    let (vendor, device) = id.split_once(':').ok_or_else(bad)?;
    let hex = |s: &str| {
        (s.len() == 4)
            .then(|| u16::from_str_radix(s, 16).ok())
            .flatten()
            .ok_or_else(bad)
    };
    Ok((hex(vendor)?, hex(device)?))
}

impl Fact for PciTree {
    const NAME: &'static str = "pci devices";
    type Key = ();
    fn probe(_: &()) -> Probe {
        Probe::Command(PROBE.into())
    }
    fn parse(_: &(), seen: &Observation) -> Result<Self, String> {
        let out = stdout_of(seen)?;
        let mut lines = out.lines();
        let iommu_groups = lines
            .next()
            .and_then(|l| l.strip_prefix("iommu_groups "))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("unexpected PCI listing: {:?}", out.lines().next()))?;
        let devices = lines
            .map(|l| parse_device(l).ok_or_else(|| format!("unexpected PCI device line {l:?}")))
            .collect::<Result<_, _>>()?;
        Ok(PciTree {
            devices,
            iommu_groups,
        })
    }
}

/// One line of the probe's listing.
fn parse_device(line: &str) -> Option<PciDevice> {
    let fields: Vec<&str> = line.split(' ').collect();
    let [address, vendor, device, sub_vendor, sub_device, class, driver, driver_override, group] =
        fields[..]
    else {
        return None;
    };
    let hex = |s: &str| u32::from_str_radix(s.strip_prefix("0x")?, 16).ok();
    let id = |s: &str| hex(s).and_then(|n| u16::try_from(n).ok());
    let optional_id = |s: &str| match s {
        "-" => Some(None),
        s => id(s).map(Some),
    };
    // `(null)` is what an unset driver_override reads as.
    let word = |s: &str| (s != "-" && s != "(null)").then(|| s.to_string());
    Some(PciDevice {
        address: address.to_string(),
        vendor: id(vendor)?,
        device: id(device)?,
        subsystem_vendor: optional_id(sub_vendor)?,
        subsystem_device: optional_id(sub_device)?,
        class: hex(class)?,
        driver: word(driver),
        driver_override: word(driver_override),
        iommu_group: match group {
            "-" => None,
            g => Some(g.parse().ok()?),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{CommandOutput, ModuleError, Observed};
    use crate::modules::facts::fixture;

    fn tree(file: &str) -> PciTree {
        let out = CommandOutput::ok(&fixture(&format!("pci_tree/{file}")));
        PciTree::parse(&(), &Observation::Command(out)).unwrap()
    }

    /// This machine (a virtual machine with virtio devices and no IOMMU), checked by hand
    /// against `/sys/class/net/eth0/device` (0000:00:03.0, virtio-pci, class 0x020000).
    #[test]
    fn machine_without_iommu() {
        let t = tree("machine.txt");
        assert_eq!(t.devices.len(), 6);
        assert!(!t.iommu_enabled());
        let host_bridge = t.get("00:00.0").unwrap();
        assert_eq!(host_bridge.id(), "8086:0d57");
        assert_eq!(
            (host_bridge.class, host_bridge.driver.as_deref()),
            (0x060000, None)
        );
        assert_eq!(
            (host_bridge.subsystem_vendor, host_bridge.subsystem_device),
            (Some(0), Some(0))
        );
        assert!(!host_bridge.is_pci_bridge());
        let nic = t.get("0000:00:03.0").unwrap();
        assert_eq!(
            nic,
            &PciDevice {
                address: "0000:00:03.0".into(),
                vendor: 0x1af4,
                device: 0x1041,
                subsystem_vendor: Some(0x1af4),
                subsystem_device: Some(0x1041),
                class: 0x020000,
                driver: Some("virtio-pci".into()),
                driver_override: None,
                iommu_group: None,
            }
        );
        assert_eq!(t.with_id(0x1af4, 0x1041).count(), 1);
        assert_eq!(t.with_id(0x1af4, 0x9999).count(), 0);
        assert!(t.get("0000:00:09.0").is_none());
        assert_eq!(t.group(0).count(), 0);
    }

    /// A line as the probe prints it for a function bound to vfio-pci by an override in group
    /// 14 (the machine above has no IOMMU, so this is the only way to exercise those fields).
    #[test]
    fn iommu_fields() {
        let out = "iommu_groups 40\n\
                   0000:01:00.0 0x10de 0x1eb8 0x10de 0x12a2 0x030200 vfio-pci vfio-pci 14\n\
                   0000:01:00.1 0x10de 0x10f8 - - 0x040300 - (null) 14\n\
                   0000:00:01.0 0x8086 0x1901 0x1028 0x07a1 0x060400 pcieport (null) 2\n";
        let t = PciTree::parse(&(), &Observation::Command(CommandOutput::ok(out))).unwrap();
        assert!(t.iommu_enabled());
        let members: Vec<_> = t.group(14).map(|d| d.address.as_str()).collect();
        assert_eq!(members, ["0000:01:00.0", "0000:01:00.1"]);
        let gpu = t.get("01:00.0").unwrap();
        assert_eq!(gpu.driver_override.as_deref(), Some("vfio-pci"));
        let audio = t.get("01:00.1").unwrap();
        assert_eq!(
            (audio.driver.as_ref(), audio.subsystem_vendor),
            (None, None)
        );
        assert!(t.get("00:01.0").unwrap().is_pci_bridge());
    }

    #[test]
    fn ids() {
        assert_eq!(parse_id("10de:1EB8"), Ok((0x10de, 0x1eb8)));
        for bad in ["10de", "10de:1eb", "10de:xyzw", "0x10de:1eb8"] {
            assert!(
                parse_id(bad).unwrap_err().contains("is not a PCI id"),
                "{bad}"
            );
        }
    }

    #[test]
    fn malformed_listings_fail() {
        let o = Observed::new().with_fact::<PciTree>(
            &(),
            Observation::Command(CommandOutput::ok(
                "iommu_groups 0\n0000:00:00.0 0x8086 0x0d57\n",
            )),
        );
        match o.fact::<PciTree>(&()) {
            Err(ModuleError::Host(m)) => {
                assert!(m.contains("unexpected PCI device line"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        let e = PciTree::parse(&(), &Observation::Command(CommandOutput::ok(""))).unwrap_err();
        assert!(e.contains("unexpected PCI listing"), "{e}");
    }

    /// The probe is plain POSIX sh: run it here (read-only) and parse what it prints.
    #[test]
    fn probe_runs_under_sh() {
        let Probe::Command(cmd) = PciTree::probe(&()) else {
            unreachable!()
        };
        let out = std::process::Command::new("sh")
            .args(["-c", &cmd])
            .output()
            .unwrap();
        let out = CommandOutput::ok(&String::from_utf8(out.stdout).unwrap());
        PciTree::parse(&(), &Observation::Command(out)).unwrap();
    }
}
