//! `kvm_check`: whether a host can run KVM guests, as facts and a verdict. It reads only and
//! never reports a change: a gate at the top of a play, and registered values for `when:`.

use crate::module::{Fact, Module, ModuleError, ModuleSpec, Observed, Plan, PlanContext, Probe};
use crate::modules::facts::virt::{Check, Verdict, VirtHost};
use crate::params::{Args, ParamKind, ParamSpec};
use serde::Deserialize;
use serde_json::json;

pub struct KvmCheck;

static SPEC: ModuleSpec = ModuleSpec {
    name: "kvm_check",
    summary: "Check that a host can run KVM guests (CPU, /dev/kvm, modules, nested, IOMMU, virt-host-validate)",
    description: "Reads, never changes anything, and is never `changed`. It looks at the CPU's \
virtualization flag (`vmx` for Intel VT-x, `svm` for AMD-V, from /proc/cpuinfo), /dev/kvm, whether \
kvm and kvm_intel or kvm_amd are loaded (/proc/modules, or built in: /sys/module), their `nested` \
parameter, and the IOMMU groups in /sys/kernel/iommu_groups (none: no PCI passthrough).\n\n\
When libvirt's `virt-host-validate` is installed (libvirt-clients on Debian and Ubuntu, \
libvirt-client on RHEL) its `qemu` checks are the verdict: each line becomes an item with \
PASS, WARN or FAIL (run with LC_ALL=C, so the texts are libvirt's English ones). Without it the \
module makes its own items in the same words: `for hardware virtualization` (the CPU flag), `if \
device /dev/kvm exists`, `if the kvm module is loaded` (FAIL when missing) and `for device \
assignment IOMMU support` (WARN without IOMMU groups).\n\n\
The task fails when an item is FAIL, naming each, unless `ignore` lists it: an entry matches an \
item whose text contains it, ignoring case (`hardware virtualization` ignores `for hardware \
virtualization`, the FAIL of a nested test VM without VT-x). WARN items never fail. Everything \
is registered: `cpu_flag`, `vendor` (intel, amd or null), `dev_kvm`, `kvm_modules`, `nested` \
(true, false, or null when no vendor module is loaded), `iommu_groups`, `iommu`, `checks` (each \
`{item, verdict, detail}`), `fails`, `warnings`, `ignored` and `validate` (whether \
virt-host-validate ran).",
    params: &[ParamSpec::optional(
        "ignore",
        ParamKind::List,
        "FAIL items that do not fail the task, matched by their text (case-insensitive substring)",
    )],
    free_form: None,
    example: r#"- name: the host can run KVM guests (IOMMU warnings are fine)
  kvm_check:
    ignore: [secure guest support]
  register: kvm
"#,
};

/// A `kvm_check` task's arguments.
#[derive(Deserialize)]
pub struct Request {
    ignore: Option<Vec<String>>,
}

impl Request {
    fn ignores(&self, item: &str) -> bool {
        let item = item.to_lowercase();
        self.ignore
            .iter()
            .flatten()
            .any(|i| !i.trim().is_empty() && item.contains(&i.trim().to_lowercase()))
    }
}

/// The module's own items when virt-host-validate is not installed, worded like libvirt's.
fn own_checks(v: &VirtHost) -> Vec<Check> {
    let check = |item: &str, ok: bool, fail: Verdict, detail: &str| Check {
        item: item.into(),
        verdict: if ok { Verdict::Pass } else { fail },
        detail: (!ok).then(|| detail.to_string()),
    };
    vec![
        check(
            "for hardware virtualization",
            v.cpu_flag.is_some(),
            Verdict::Fail,
            "the CPU shows neither vmx nor svm in /proc/cpuinfo: enable VT-x or AMD-V in the firmware",
        ),
        check(
            "if device /dev/kvm exists",
            v.dev_kvm,
            Verdict::Fail,
            "load kvm_intel or kvm_amd",
        ),
        check(
            "if the kvm module is loaded",
            v.modules.iter().any(|m| m == "kvm"),
            Verdict::Fail,
            "kvm is neither loaded nor built into the kernel",
        ),
        check(
            "for device assignment IOMMU support",
            v.iommu_groups > 0,
            Verdict::Warn,
            "no IOMMU groups: enable VT-d or AMD-Vi in the firmware and intel_iommu=on on the kernel command line",
        ),
    ]
}

impl Module for KvmCheck {
    type Request = Request;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn request(&self, args: Args, _ctx: &PlanContext) -> Result<Request, ModuleError> {
        args.parse()
    }

    fn probes(&self, _req: &Request) -> Vec<Probe> {
        vec![VirtHost::probe(&())]
    }

    fn plan(&self, req: &Request, observed: &Observed) -> Result<Plan, ModuleError> {
        let v = observed.fact::<VirtHost>(&())?;
        let checks = v.validate.clone().unwrap_or_else(|| own_checks(&v));
        let text = |c: &Check| match &c.detail {
            Some(d) => format!("{} ({d})", c.item),
            None => c.item.clone(),
        };
        let (ignored, fails): (Vec<&Check>, Vec<&Check>) = checks
            .iter()
            .filter(|c| c.verdict == Verdict::Fail)
            .partition(|c| req.ignores(&c.item));
        let warnings: Vec<&Check> = checks
            .iter()
            .filter(|c| c.verdict == Verdict::Warn)
            .collect();
        let source = if v.validate.is_some() {
            "virt-host-validate qemu"
        } else {
            "kvm_check (virt-host-validate is not installed)"
        };
        if !fails.is_empty() {
            let list: Vec<String> = fails.iter().map(|c| format!("  - {}", text(c))).collect();
            return Err(ModuleError::Host(format!(
                "this host cannot run KVM guests as expected: {source} reports FAIL for\n{}\n\
                 (list an item in `ignore` to accept it)",
                list.join("\n")
            )));
        }
        let vendor = match v.cpu_flag.as_deref() {
            Some("vmx") => Some("intel"),
            Some("svm") => Some("amd"),
            _ => None,
        };
        let nested = v.nested_enabled();
        let mut parts = vec![match &v.cpu_flag {
            Some(f) => format!("CPU {f}"),
            None => "no vmx/svm".into(),
        }];
        parts.push(if v.dev_kvm { "/dev/kvm" } else { "no /dev/kvm" }.into());
        if let Some((m, _)) = v.nested.first() {
            parts.push(format!(
                "{m} nested {}",
                if nested == Some(true) { "on" } else { "off" }
            ));
        }
        parts.push(format!("{} IOMMU groups", v.iommu_groups));
        let mut msg = format!("{}; {source}: {} FAIL", parts.join(", "), fails.len());
        if !ignored.is_empty() {
            msg.push_str(&format!(
                " ({} ignored: {})",
                ignored.len(),
                ignored
                    .iter()
                    .map(|c| c.item.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        msg.push_str(&format!(", {} WARN", warnings.len()));
        let mut plan = Plan::ok()
            .with_data("cpu_flag", v.cpu_flag.clone())
            .with_data("vendor", vendor)
            .with_data("dev_kvm", v.dev_kvm)
            .with_data("kvm_modules", v.modules.clone())
            .with_data("nested", nested)
            .with_data("iommu_groups", v.iommu_groups)
            .with_data("iommu", v.iommu_groups > 0)
            .with_data("checks", json!(checks))
            .with_data("fails", fails.iter().map(|c| text(c)).collect::<Vec<_>>())
            .with_data(
                "ignored",
                ignored.iter().map(|c| text(c)).collect::<Vec<_>>(),
            )
            .with_data(
                "warnings",
                warnings.iter().map(|c| text(c)).collect::<Vec<_>>(),
            )
            .with_data("validate", v.validate.is_some());
        plan.msg = Some(msg);
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{CommandOutput, Observation};
    use crate::modules::facts::fixture;
    use crate::modules::testing::{plan, req};

    fn host(out: &str) -> Observed {
        Observed::new().with_fact::<VirtHost>(&(), Observation::Command(CommandOutput::ok(out)))
    }

    #[test]
    fn vm_with_only_warnings_passes_and_registers_everything() {
        let seen = host(&fixture("virt_host/vm-tcg-svm.txt"));
        let p = plan(&KvmCheck, json!({}), &seen).unwrap();
        assert!(!p.changed() && p.actions.is_empty());
        assert_eq!(p.data["cpu_flag"], json!("svm"));
        assert_eq!(p.data["vendor"], json!("amd"));
        assert_eq!(p.data["nested"], json!(true));
        assert_eq!(p.data["iommu"], json!(true));
        assert_eq!(p.data["kvm_modules"], json!(["kvm_amd", "kvm"]));
        assert_eq!(p.data["fails"], json!([]));
        assert_eq!(p.data["warnings"].as_array().unwrap().len(), 2);
        assert_eq!(
            p.data["checks"][0],
            json!({"item": "for hardware virtualization", "verdict": "PASS", "detail": null})
        );
        assert_eq!(
            p.msg.as_deref(),
            Some("CPU svm, /dev/kvm, kvm_amd nested on, 6 IOMMU groups; virt-host-validate qemu: 0 FAIL, 2 WARN")
        );
    }

    #[test]
    fn container_fails_unless_ignored() {
        let seen = host(&fixture("virt_host/nspawn-container.txt"));
        let e = plan(&KvmCheck, json!({}), &seen).unwrap_err();
        let ModuleError::Host(m) = &e else {
            panic!("{e:?}")
        };
        assert!(
            m.contains("FAIL for\n  - for hardware virtualization (Host not compatible with KVM"),
            "{m}"
        );
        let p = plan(
            &KvmCheck,
            json!({"ignore": ["Hardware Virtualization"]}),
            &seen,
        )
        .unwrap();
        assert!(!p.changed());
        assert_eq!(p.data["fails"], json!([]));
        assert_eq!(p.data["ignored"].as_array().unwrap().len(), 1);
        assert_eq!(p.data["dev_kvm"], json!(false));
        assert_eq!(p.data["nested"], json!(null));
        assert!(p
            .msg
            .unwrap()
            .contains("1 ignored: for hardware virtualization"));
    }

    #[test]
    fn own_items_without_virt_host_validate() {
        let seen = host("flag vmx\ndev_kvm present\nloaded kvm_intel\nloaded kvm\nmodule kvm\nmodule kvm_intel\nnested kvm_intel N\niommu_groups 0\nvalidate missing\n");
        let p = plan(&KvmCheck, json!({}), &seen).unwrap();
        assert_eq!(p.data["vendor"], json!("intel"));
        assert_eq!(p.data["nested"], json!(false));
        assert_eq!(p.data["validate"], json!(false));
        assert_eq!(p.data["warnings"].as_array().unwrap().len(), 1);
        let seen = host("dev_kvm absent\niommu_groups 0\nvalidate missing\n");
        let e = plan(&KvmCheck, json!({}), &seen).unwrap_err().to_string();
        assert!(
            e.contains("kvm_check (virt-host-validate is not installed)"),
            "{e}"
        );
        assert!(e.contains("if device /dev/kvm exists"), "{e}");
        let r = req(
            &KvmCheck,
            json!({"ignore": ["hardware", "/dev/kvm", "kvm module"]}),
        );
        assert!(KvmCheck.plan(&r, &seen).is_ok());
    }
}
