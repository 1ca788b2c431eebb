//! Virtualization on a host: the CPU's vmx/svm flag, /dev/kvm, the kvm modules and their nested
//! setting, IOMMU groups, and libvirt's own `virt-host-validate qemu` verdict when it is installed.

use crate::module::fact::{command_output, Fact};
use crate::module::{Observation, Probe};

/// One read-only script. `flag vmx|svm` when the first CPU's flags in /proc/cpuinfo have it,
/// `dev_kvm present|absent`, `loaded M` for kvm, kvm_intel, kvm_amd in /proc/modules, `module M`
/// when /sys/module/M exists (loaded or built in), `nested M VALUE`, `iommu_groups N`, then
/// `validate missing` or the output of `LC_ALL=C virt-host-validate qemu` (C locale: the item
/// texts and PASS/WARN/FAIL are matched in English) between `validate begin` and
/// `validate end RC`.
const PROBE: &str = r#"f=$(grep -m1 '^flags' /proc/cpuinfo); for x in vmx svm; do case " ${f#*:} " in *" $x "*) echo "flag $x";; esac; done; if [ -c /dev/kvm ]; then echo "dev_kvm present"; else echo "dev_kvm absent"; fi; [ -r /proc/modules ] && while read -r m _; do case $m in kvm|kvm_intel|kvm_amd) echo "loaded $m";; esac; done < /proc/modules; for m in kvm kvm_intel kvm_amd; do [ -d "/sys/module/$m" ] && echo "module $m"; [ -r "/sys/module/$m/parameters/nested" ] && echo "nested $m $(cat "/sys/module/$m/parameters/nested")"; done; n=0; for g in /sys/kernel/iommu_groups/*; do [ -d "$g" ] && n=$((n+1)); done; echo "iommu_groups $n"; if command -v virt-host-validate >/dev/null 2>&1; then echo "validate begin"; LC_ALL=C virt-host-validate qemu 2>&1; echo "validate end $?"; else echo "validate missing"; fi"#;

/// A verdict of virt-host-validate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Verdict {
    #[serde(rename = "PASS")]
    Pass,
    #[serde(rename = "WARN")]
    Warn,
    #[serde(rename = "FAIL")]
    Fail,
}

/// One line of virt-host-validate: `QEMU: Checking for hardware virtualization : FAIL (...)`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    /// What was checked, without `Checking `: `for hardware virtualization`,
    /// `if device /dev/kvm exists`.
    pub item: String,
    pub verdict: Verdict,
    /// The explanation in parentheses, if any.
    pub detail: Option<String>,
}

/// Virtualization on a host, as the probe found it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VirtHost {
    /// `vmx` (Intel VT-x) or `svm` (AMD-V), when the CPU shows one.
    pub cpu_flag: Option<String>,
    pub dev_kvm: bool,
    /// kvm, kvm_intel, kvm_amd: in /proc/modules or built in (/sys/module).
    pub modules: Vec<String>,
    /// `(module, value)` of kvm_intel's or kvm_amd's `nested` parameter (`Y`/`N`, `1`/`0`).
    pub nested: Vec<(String, String)>,
    /// Number of IOMMU groups (0: no IOMMU enabled, so no PCI passthrough).
    pub iommu_groups: u32,
    /// virt-host-validate's items; `None` when it is not installed.
    pub validate: Option<Vec<Check>>,
}

impl VirtHost {
    /// Whether the nested setting of the loaded vendor module is on.
    pub fn nested_enabled(&self) -> Option<bool> {
        self.nested
            .first()
            .map(|(_, v)| matches!(v.as_str(), "Y" | "y" | "1"))
    }
}

/// `  QEMU: Checking for X   : WARN (detail)`.
fn parse_check(line: &str) -> Option<Check> {
    let (_, rest) = line.trim().split_once(": Checking ")?;
    let (item, result) = rest.rsplit_once(" : ")?;
    let result = result.trim();
    let (word, detail) = match result.split_once(' ') {
        Some((w, d)) => (w, Some(d.trim())),
        None => (result, None),
    };
    let verdict = match word {
        "PASS" => Verdict::Pass,
        "WARN" => Verdict::Warn,
        "FAIL" => Verdict::Fail,
        _ => return None,
    };
    let detail = detail
        .map(|d| d.trim_start_matches('(').trim_end_matches(')').to_string())
        .filter(|d| !d.is_empty());
    Some(Check {
        item: item.trim().to_string(),
        verdict,
        detail,
    })
}

impl Fact for VirtHost {
    const NAME: &'static str = "virtualization support";
    type Key = ();

    fn probe(_: &()) -> Probe {
        Probe::Command(PROBE.into())
    }

    fn parse(_: &(), seen: &Observation) -> Result<Self, String> {
        let out = &command_output(seen)?.stdout;
        let mut v = VirtHost::default();
        let mut in_validate = false;
        let mut checks = Vec::new();
        for line in out.lines() {
            if in_validate {
                if line.starts_with("validate end") {
                    in_validate = false;
                    v.validate = Some(std::mem::take(&mut checks));
                } else if let Some(c) = parse_check(line) {
                    checks.push(c);
                }
                continue;
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.as_slice() {
                ["flag", x] if v.cpu_flag.is_none() => v.cpu_flag = Some(x.to_string()),
                ["dev_kvm", state] => v.dev_kvm = *state == "present",
                ["loaded", m] | ["module", m] if !v.modules.iter().any(|x| x == m) => {
                    v.modules.push(m.to_string());
                }
                ["nested", m, value] => v.nested.push((m.to_string(), value.to_string())),
                ["iommu_groups", n] => v.iommu_groups = n.parse().unwrap_or(0),
                ["validate", "begin"] => in_validate = true,
                _ => {}
            }
        }
        if in_validate {
            // Cut short (killed, or the probe's output truncated): what was read still counts.
            v.validate = Some(checks);
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::CommandOutput;
    use crate::modules::facts::{fixture, run_here};

    pub fn parse(file: &str) -> VirtHost {
        let out = CommandOutput::ok(&fixture(&format!("virt_host/{file}")));
        VirtHost::parse(&(), &Observation::Command(out)).unwrap()
    }

    /// The lab VM under TCG with `-cpu max`: QEMU exposes AMD-V, so kvm_amd loads with nested on;
    /// only WARN items (no IOMMU ACPI table, unknown secure guest support).
    #[test]
    fn vm_under_tcg() {
        let v = parse("vm-tcg-svm.txt");
        assert_eq!(v.cpu_flag.as_deref(), Some("svm"));
        assert!(v.dev_kvm);
        assert_eq!(v.modules, ["kvm_amd", "kvm"]);
        assert_eq!(v.nested_enabled(), Some(true));
        assert_eq!(v.iommu_groups, 6);
        let checks = v.validate.unwrap();
        assert_eq!(checks.len(), 13);
        assert_eq!(
            checks[0],
            Check {
                item: "for hardware virtualization".into(),
                verdict: Verdict::Pass,
                detail: None
            }
        );
        assert!(checks.iter().all(|c| c.verdict != Verdict::Fail));
        assert_eq!(
            checks[11].detail.as_deref(),
            Some("No ACPI IVRS table found, IOMMU either disabled in BIOS or not supported by this hardware platform")
        );
    }

    /// A lab container: no CPU flag, no /dev/kvm, virt-host-validate fails the hardware check.
    #[test]
    fn container_fails_hardware_virtualization() {
        let v = parse("nspawn-container.txt");
        assert_eq!(v.cpu_flag, None);
        assert!(!v.dev_kvm);
        assert!(v.modules.is_empty());
        let checks = v.validate.unwrap();
        let fails: Vec<&Check> = checks
            .iter()
            .filter(|c| c.verdict == Verdict::Fail)
            .collect();
        assert_eq!(fails.len(), 1);
        assert_eq!(fails[0].item, "for hardware virtualization");
        assert!(fails[0]
            .detail
            .as_deref()
            .unwrap()
            .starts_with("Host not compatible with KVM"));
    }

    #[test]
    fn without_virt_host_validate() {
        let out = "dev_kvm absent\niommu_groups 0\nvalidate missing\n";
        let v = VirtHost::parse(&(), &Observation::Command(CommandOutput::ok(out))).unwrap();
        assert_eq!(v.validate, None);
        assert_eq!(v.nested_enabled(), None);
    }

    #[test]
    fn probe_runs_here() {
        let v = VirtHost::parse(&(), &run_here(&VirtHost::probe(&()))).unwrap();
        let _ = v;
    }
}
