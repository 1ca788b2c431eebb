//! `vfio_bind`: PCI functions handed to vfio-pci for passthrough to guests, now and at every
//! boot, with the checks that keep the host bootable and reachable.
//!
//! The mistakes this module exists to prevent are the ones that cost a server: binding the NVMe
//! controller holding the root file system, or the NIC carrying SSH, takes them away from the
//! running system at once; binding by vendor:device captures identical siblings; an unbind
//! without `driver_override` leaves a device without a driver; a group with one function still
//! on its host driver cannot be given to a guest. So every request is checked against what the
//! host uses, read from sysfs, before anything is changed, and bindings are kept per PCI
//! address.

use crate::module::{
    shell_quote, Action, ArgError, Attrs, Change, Fact, Module, ModuleError, ModuleSpec, Observed,
    Plan, PlanContext, Probe,
};
use crate::modules::args::Presence;
use crate::modules::facts::ip::{Family, IpAddrs, IpRoutes};
use crate::modules::facts::netdev::{NetDevices, SshSession};
use crate::modules::facts::pci::{parse_id, PciDevice, PciTree};
use crate::modules::facts::storage::StorageInUse;
use crate::modules::facts::vfio::{rule_path, InitramfsTool, Sysfs, VfioHost};
use crate::modules::files::edit;
use crate::modules::kernel::grub_cmdline::{self, GrubCmdline};
use crate::params::{Args, ParamKind, ParamSpec};
use serde::Deserialize;
use std::collections::BTreeSet;

pub struct VfioBind;

static SPEC: ModuleSpec = ModuleSpec {
    name: "vfio_bind",
    summary: "Hand PCI devices to vfio-pci for passthrough, now and at boot, refusing any the host itself needs",
    description: "Give `devices` as PCI addresses (`0000:05:00.0`, or `05:00.0` for domain 0) or \
as vendor:device ids (`144d:a80a`). An id stands for every function with that id on the host; \
the addresses it matched are in the result (`devices`). Prefer addresses: three identical NVMe \
drives have one id, and binding by id would take all three.\n\n\
Before anything is changed, every requested device is checked, and the task fails naming the \
device, what uses it and what binding it would do, when it or a PCI bridge above it carries \
something the running system needs: the root file system, /boot, swap, any mounted file \
system, an LVM physical volume, a RAID member, a device-mapper device, the NIC of the SSH \
session the run arrives through, or the NIC of the default route (through bridges, bonds and \
VLANs). The same holds for a device sharing an IOMMU group with such a device, because a group \
goes to vfio-pci as a whole. The IOMMU group is the smallest unit the hardware can isolate: \
every other function in a requested device's group must be requested too (PCI bridges in the \
group stay with their driver, as the kernel allows), else the task lists the missing ones.\n\n\
When the IOMMU is off (no IOMMU groups), the task says so and puts the kernel arguments that \
turn it on into /etc/default/grub.d/97-kvmforge-vfio.cfg (`intel_iommu=on iommu=pt` on Intel \
CPUs, `iommu=pt` on AMD, whose IOMMU the kernel enables by itself), like `grub_cmdline` does, \
and sets `reboot_required`; the groups are checked on the first run after that reboot. If the \
kernel already has those arguments and there are still no groups, the IOMMU is off in the \
firmware (VT-d, AMD-Vi), and the task says that instead.\n\n\
Binding is kept per address, never by id: /etc/udev/rules.d/61-kvmforge-vfio-ADDRESS.rules \
sets `driver_override` to vfio-pci when the device appears. At boot the host driver can be \
faster than udev (an NVMe driver in the initramfs binds every controller the moment it \
loads), so /etc/modprobe.d/kvmforge-vfio.conf makes the host driver load vfio-pci first \
(`softdep nvme pre: vfio-pci`) and loading vfio-pci runs \
/usr/local/sbin/kvmforge-vfio-override, which sets the override of every persisted address \
before vfio-pci and then the host driver look at the devices. vfio-pci is also loaded at boot \
(/etc/modules-load.d/kvmforge-vfio.conf), and the script, the rules and vfio-pci go into the \
initramfs (an initramfs-tools hook, or a dracut.conf.d file), which is rebuilt with \
`update-initramfs -u` or `dracut -f` only when one of these files changed. `options vfio-pci \
ids=` is added only for an id that exactly one device on the host has: it also catches the \
device where the override cannot be set in time, but it would catch every other device with \
that id, present or added later, so identical siblings are never bound through it.\n\n\
Live: the device gets `driver_override`, is unbound from its driver and probed again; the task \
fails unless it is then on vfio-pci. A GPU still on its host driver is not unbound live \
(unbinding a driver that runs a console can hang the host); it is left to the next boot and \
`reboot_required` is set. A device already on vfio-pci with its files in place is `ok`. Check \
mode changes nothing: the plan comes from what was read.\n\n\
`state: absent` clears `driver_override`, unbinds the devices from vfio-pci and lets the \
kernel probe them again (their own drivers take them back), removes their rule files, the \
shared files once no binding is left, and rebuilds the initramfs. Unbinding a device a guest \
still uses waits for the guest; after 10 seconds the task fails saying so.\n\n\
In a container (a read-only /sys, or none of the host's PCI devices visible) the kernel's \
devices cannot be changed: the task fails saying so.",
    params: &[
        ParamSpec::required(
            "devices",
            ParamKind::List,
            "PCI addresses (0000:05:00.0) or vendor:device ids (144d:a80a)",
        ),
        ParamSpec::with_default(
            "state",
            ParamKind::Choice(&["present", "absent"]),
            "present",
            "present binds the devices to vfio-pci, absent gives them back to their drivers",
        ),
    ],
    free_form: None,
    example: r#"- name: Two of the three Samsung NVMe drives to vfio-pci (the third holds /)
  vfio_bind:
    devices:
      - 0000:05:00.0
      - 0000:06:00.0
"#,
};

/// The overrides script that loading vfio-pci runs (`install` in modprobe.d).
const SCRIPT: &str = "/usr/local/sbin/kvmforge-vfio-override";
const MODPROBE: &str = "/etc/modprobe.d/kvmforge-vfio.conf";
const MODULES_LOAD: &str = "/etc/modules-load.d/kvmforge-vfio.conf";
const HOOK: &str = "/etc/initramfs-tools/hooks/kvmforge-vfio";
const DRACUT: &str = "/etc/dracut.conf.d/kvmforge-vfio.conf";
const GRUB_DROPIN: &str = "/etc/default/grub.d/97-kvmforge-vfio.cfg";
const VFIO: &str = "vfio-pci";

/// Only POSIX sh without any other tool: it also runs in the initramfs, where there may be
/// nothing but klibc's sh and modprobe.
const SCRIPT_TEXT: &str = r#"#!/bin/sh
# kvmforge vfio_bind: modprobe runs this instead of loading vfio-pci (install in
# /etc/modprobe.d/kvmforge-vfio.conf), also in the initramfs. It sets
# driver_override of every PCI address with a rule file
# /etc/udev/rules.d/61-kvmforge-vfio-ADDRESS.rules before vfio-pci loads, and the
# softdeps there load vfio-pci before the host drivers: the host drivers never
# see these devices, even when they load before udev has run the rules.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
for f in /etc/udev/rules.d/61-kvmforge-vfio-*.rules; do
	[ -e "$f" ] || continue
	a=${f##*/61-kvmforge-vfio-}
	a=${a%.rules}
	o=/sys/bus/pci/devices/$a/driver_override
	if [ -w "$o" ]; then echo vfio-pci >"$o"; fi
done
exec modprobe --ignore-install vfio-pci "$@"
"#;

const HOOK_TEXT: &str = r#"#!/bin/sh
# kvmforge vfio_bind: vfio-pci, the override script and the per-address rules in
# the initramfs, so devices go to vfio-pci before their host drivers load there.
PREREQ=""
prereqs() { echo "$PREREQ"; }
case $1 in prereqs) prereqs; exit 0 ;; esac
. /usr/share/initramfs-tools/hook-functions
manual_add_modules vfio-pci
copy_file script /usr/local/sbin/kvmforge-vfio-override
for f in /etc/udev/rules.d/61-kvmforge-vfio-*.rules; do
	[ -e "$f" ] && copy_file rules "$f"
done
exit 0
"#;

/// How a task names devices.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Selector {
    /// Full address, lowercase: `0000:05:00.0`.
    Address(String),
    Id(u16, u16),
}

#[derive(Deserialize)]
struct Params {
    devices: Vec<String>,
    state: Presence,
}

/// A `vfio_bind` task's arguments, checked.
pub struct Request {
    devices: Vec<Selector>,
    present: bool,
    /// The kernel arguments that turn the IOMMU on, planned through `grub_cmdline`.
    grub_intel: grub_cmdline::Request,
    grub_amd: grub_cmdline::Request,
}

/// `0000:05:00.0` or `05:00.0`, as the full lowercase address.
fn parse_address(s: &str) -> Option<String> {
    let full = match s.matches(':').count() {
        1 => format!("0000:{s}"),
        2 => s.to_string(),
        _ => return None,
    };
    crate::modules::facts::storage::is_pci_address(&full).then(|| full.to_ascii_lowercase())
}

fn selector(s: &str) -> Result<Selector, ArgError> {
    let s = s.trim();
    if let Some(a) = parse_address(s) {
        return Ok(Selector::Address(a));
    }
    if let Ok((v, d)) = parse_id(s) {
        return Ok(Selector::Id(v, d));
    }
    Err(ArgError::invalid(
        "devices",
        format!(
            "{s:?} is neither a PCI address (0000:05:00.0, or 05:00.0 in domain 0) nor a \
             vendor:device id (144d:a80a)"
        ),
    ))
}

/// "0000:00:04.0 (144d:a80a, nvme)".
fn label(d: &PciDevice) -> String {
    format!(
        "{} ({}, {})",
        d.address,
        d.id(),
        d.driver.as_deref().unwrap_or("no driver")
    )
}

/// Something the running system needs, on a PCI function.
struct SystemUse {
    /// The function and the bridges above it, outermost first.
    pci_path: Vec<String>,
    /// "holds / (nvme0n1p2)".
    what: String,
    /// "would take the root file system away".
    consequence: String,
}

/// Everything the running system needs that sits on PCI functions.
fn system_uses(observed: &Observed) -> Result<Vec<SystemUse>, ModuleError> {
    let mut uses = Vec::new();
    for u in &observed.fact::<StorageInUse>(&())?.users {
        for path in &u.pci_paths {
            uses.push(SystemUse {
                pci_path: path.clone(),
                what: u.what.what(&u.device),
                consequence: u.what.consequence(),
            });
        }
    }
    let net = observed.fact::<NetDevices>(&())?;
    let addrs = observed.fact::<IpAddrs>(&())?;
    let ssh = observed.fact::<SshSession>(&())?;
    if let Some(local) = ssh.local {
        if let Some((iface, _)) = addrs.owner_of(local) {
            let name = &iface.link.name;
            for (nic, path) in net.pci_under(name) {
                let via = if &nic == name {
                    nic.clone()
                } else {
                    format!("{nic} under {name}")
                };
                uses.push(SystemUse {
                    pci_path: path,
                    what: format!("carries this SSH session ({local} on {via})"),
                    consequence: "would cut the connection and leave the host unreachable".into(),
                });
            }
        }
    }
    let routes = observed.fact::<IpRoutes>(&())?;
    for family in [Family::Inet, Family::Inet6] {
        let Some(dev) = routes.default_route(family).and_then(|r| r.dev.clone()) else {
            continue;
        };
        for (nic, path) in net.pci_under(&dev) {
            let via = if nic == dev {
                nic.clone()
            } else {
                format!("{nic} under {dev}")
            };
            let v = if family == Family::Inet {
                "IPv4"
            } else {
                "IPv6"
            };
            uses.push(SystemUse {
                pci_path: path,
                what: format!("carries the {v} default route ({via})"),
                consequence: "would cut the host off the network".into(),
            });
        }
    }
    Ok(uses)
}

/// Why a device must not go to vfio-pci, one sentence per reason.
fn refusals(pci: &PciTree, wanted: &[&PciDevice], uses: &[SystemUse]) -> Vec<String> {
    let mut out = Vec::new();
    let on = |u: &SystemUse, a: &str| u.pci_path.iter().any(|p| p.eq_ignore_ascii_case(a));
    for d in wanted {
        if d.is_pci_bridge() {
            out.push(format!(
                "{} is a PCI bridge: bridges stay with their driver; request the devices behind it",
                label(d)
            ));
            continue;
        }
        for u in uses.iter().filter(|u| on(u, &d.address)) {
            let function = u.pci_path.last().map(String::as_str).unwrap_or_default();
            if function.eq_ignore_ascii_case(&d.address) {
                out.push(format!(
                    "{} {}: binding it to vfio-pci {}",
                    label(d),
                    u.what,
                    u.consequence
                ));
            } else {
                out.push(format!(
                    "{} is a bridge above {function}, which {}: binding it to vfio-pci {}",
                    label(d),
                    u.what,
                    u.consequence
                ));
            }
        }
        let Some(group) = d.iommu_group else { continue };
        for m in pci.group(group).filter(|m| m.address != d.address) {
            if m.is_pci_bridge() || wanted.iter().any(|w| w.address == m.address) {
                continue;
            }
            for u in uses.iter().filter(|u| on(u, &m.address)) {
                out.push(format!(
                    "{} shares IOMMU group {group} with {}, which {}: the group goes to vfio-pci \
                     as a whole, and that {}",
                    label(d),
                    label(m),
                    u.what,
                    u.consequence
                ));
            }
        }
    }
    out.dedup();
    out
}

/// The other endpoints of the requested devices' groups that are not requested.
fn incomplete_groups(pci: &PciTree, wanted: &[&PciDevice]) -> Vec<String> {
    let mut out = Vec::new();
    let mut groups = BTreeSet::new();
    for d in wanted {
        let Some(g) = d.iommu_group else {
            out.push(format!(
                "{} is in no IOMMU group: the IOMMU does not cover it, so it cannot be passed \
                 through",
                label(d)
            ));
            continue;
        };
        if !groups.insert(g) {
            continue;
        }
        let missing: Vec<String> = pci
            .group(g)
            .filter(|m| !m.is_pci_bridge() && !wanted.iter().any(|w| w.address == m.address))
            .map(label)
            .collect();
        if !missing.is_empty() {
            let requested: Vec<&str> = wanted
                .iter()
                .filter(|w| w.iommu_group == Some(g))
                .map(|w| w.address.as_str())
                .collect();
            out.push(format!(
                "IOMMU group {g} (with {}) goes to vfio-pci as a whole, but {} {} not \
                 requested: add {} to devices (the group is the smallest unit the IOMMU can \
                 isolate; a group with a function left on its host driver cannot be given to a \
                 guest)",
                requested.join(", "),
                missing.join(", "),
                if missing.len() == 1 { "is" } else { "are" },
                if missing.len() == 1 { "it" } else { "them" },
            ));
        }
    }
    out
}

/// The rule file's content for a device.
fn rule_text(address: &str, id: &str, host_driver: Option<&str>) -> String {
    format!(
        "# kvmforge vfio_bind: {address} goes to vfio-pci, not to its host driver.\n\
         # id: {id}\n\
         # host driver: {}\n\
         ACTION==\"add\", SUBSYSTEM==\"pci\", KERNEL==\"{address}\", ATTR{{driver_override}}=\"vfio-pci\"\n",
        host_driver.unwrap_or("unknown")
    )
}

/// `# key: value` of a rule file.
fn rule_field<'a>(content: &'a str, key: &str) -> Option<&'a str> {
    content.lines().find_map(|l| {
        l.strip_prefix("# ")
            .and_then(|l| l.strip_prefix(key))
            .and_then(|l| l.strip_prefix(": "))
            .map(str::trim)
            .filter(|v| *v != "unknown" && !v.is_empty())
    })
}

/// /etc/modprobe.d/kvmforge-vfio.conf for the persisted rules.
fn modprobe_text(rules: &[(String, String)], pci: &PciTree) -> String {
    let mut drivers = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for (_, content) in rules {
        if let Some(d) = rule_field(content, "host driver").filter(|d| *d != VFIO) {
            drivers.insert(d.to_string());
        }
        if let Some((v, d)) = rule_field(content, "id").and_then(|i| parse_id(i).ok()) {
            if pci.with_id(v, d).count() == 1 {
                ids.insert(format!("{v:04x}:{d:04x}"));
            }
        }
    }
    let mut s = String::from(
        "# kvmforge vfio_bind: vfio-pci before the host drivers of the devices in\n\
         # /etc/udev/rules.d/61-kvmforge-vfio-*.rules, with their driver_override set first.\n",
    );
    s.push_str(&format!("install vfio-pci {SCRIPT} $CMDLINE_OPTS\n"));
    for d in drivers {
        s.push_str(&format!("softdep {d} pre: vfio-pci\n"));
    }
    if !ids.is_empty() {
        s.push_str(
            "# ids found on exactly one device of this host (never for identical siblings)\n",
        );
        s.push_str(&format!(
            "options vfio-pci ids={}\n",
            ids.into_iter().collect::<Vec<_>>().join(",")
        ));
    }
    s
}

fn dracut_text(rules: &[(String, String)]) -> String {
    let mut items = vec![SCRIPT.to_string()];
    items.extend(rules.iter().map(|(a, _)| rule_path(a)));
    format!(
        "# kvmforge vfio_bind: vfio-pci, the override script and the per-address rules in the initramfs\n\
         add_drivers+=\" vfio-pci \"\n\
         install_items+=\" {} \"\n",
        items.join(" ")
    )
}

/// Bind one device live and check the result.
fn bind_command(address: &str) -> String {
    let a = shell_quote(address);
    format!(
        "a={a}; d=/sys/bus/pci/devices/$a; modprobe vfio-pci && echo vfio-pci >\"$d/driver_override\" && \
         if [ -e \"$d/driver\" ]; then echo \"$a\" >\"$d/driver/unbind\"; fi && \
         {{ echo \"$a\" >/sys/bus/pci/drivers_probe; true; }}; r=$(readlink \"$d/driver\"); r=${{r##*/}}; \
         if [ \"$r\" != vfio-pci ]; then echo \"$a is on ${{r:-no driver}} instead of vfio-pci after binding it \
         (dmesg says why)\" >&2; exit 1; fi"
    )
}

/// Give one device back to its driver and check it left vfio-pci.
fn release_command(address: &str) -> String {
    let a = shell_quote(address);
    format!(
        "a={a}; d=/sys/bus/pci/devices/$a; echo >\"$d/driver_override\" && \
         r=$(readlink \"$d/driver\"); if [ \"${{r##*/}}\" = vfio-pci ]; then \
         timeout 10 sh -c 'echo \"$1\" >\"$2/driver/unbind\"' sh \"$a\" \"$d\" || \
         {{ echo \"$a is still in use through vfio (a running guest?): stop it first\" >&2; exit 1; }}; fi; \
         echo \"$a\" >/sys/bus/pci/drivers_probe; r=$(readlink \"$d/driver\"); r=${{r##*/}}; \
         if [ \"$r\" = vfio-pci ]; then echo \"$a went back to vfio-pci: vfio-pci.ids= or options vfio-pci \
         ids= outside kvmforge claim it\" >&2; exit 1; fi"
    )
}

impl Request {
    /// The devices these selectors name on this host, in order, each once.
    fn resolve<'p>(&self, pci: &'p PciTree) -> Result<Vec<&'p PciDevice>, ModuleError> {
        let mut out: Vec<&PciDevice> = Vec::new();
        let mut errors = Vec::new();
        for s in &self.devices {
            let found: Vec<&PciDevice> = match s {
                Selector::Address(a) => pci.get(a).into_iter().collect(),
                Selector::Id(v, d) => pci.with_id(*v, *d).collect(),
            };
            if found.is_empty() && self.present {
                errors.push(match s {
                    Selector::Address(a) => format!("there is no PCI device {a} on this host"),
                    Selector::Id(v, d) => {
                        format!("no PCI device on this host has the id {v:04x}:{d:04x}")
                    }
                });
            }
            for d in found {
                if !out.iter().any(|o| o.address == d.address) {
                    out.push(d);
                }
            }
        }
        if !errors.is_empty() {
            return Err(ModuleError::Host(format!(
                "{} (lspci -Dnn lists them)",
                errors.join("; ")
            )));
        }
        Ok(out)
    }
}

impl Module for VfioBind {
    type Request = Request;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn request(&self, args: Args, _ctx: &PlanContext) -> Result<Request, ModuleError> {
        let p: Params = args.parse()?;
        if p.devices.is_empty() {
            return Err(
                ArgError::invalid("devices", "devices must name at least one device").into(),
            );
        }
        let devices = p
            .devices
            .iter()
            .map(|d| selector(d))
            .collect::<Result<Vec<_>, _>>()?;
        let grub = |args: &[&str]| {
            grub_cmdline::Request::present(
                args.iter().map(|a| a.to_string()).collect(),
                GRUB_DROPIN,
            )
        };
        Ok(Request {
            devices,
            present: p.state == Presence::Present,
            grub_intel: grub(&["intel_iommu=on", "iommu=pt"])?,
            grub_amd: grub(&["iommu=pt"])?,
        })
    }

    fn probes(&self, r: &Request) -> Vec<Probe> {
        let mut probes = vec![
            PciTree::probe(&()),
            VfioHost::probe(&()),
            Probe::File(SCRIPT.into()),
            Probe::File(MODPROBE.into()),
            Probe::File(MODULES_LOAD.into()),
            Probe::File(HOOK.into()),
            Probe::File(DRACUT.into()),
        ];
        if r.present {
            probes.extend([
                StorageInUse::probe(&()),
                NetDevices::probe(&()),
                SshSession::probe(&()),
                IpAddrs::probe(&()),
                IpRoutes::probe(&()),
            ]);
            probes.extend(GrubCmdline.probes(&r.grub_intel));
        }
        probes
    }

    fn plan(&self, r: &Request, observed: &Observed) -> Result<Plan, ModuleError> {
        let host = observed.fact::<VfioHost>(&())?;
        let pci = observed.fact::<PciTree>(&())?;
        match host.sysfs {
            Sysfs::Writable if !pci.devices.is_empty() => {}
            Sysfs::ReadOnly => {
                return Err(ModuleError::Host(
                    "/sys is read-only here (a container?): vfio_bind changes the kernel's PCI \
                     devices and cannot do that from inside a container; run it on the host"
                        .into(),
                ))
            }
            _ => {
                return Err(ModuleError::Host(
                    "no PCI devices are visible in /sys/bus/pci here (a container?): vfio_bind \
                     changes the kernel's PCI devices and cannot do that from here; run it on \
                     the host"
                        .into(),
                ))
            }
        }
        let wanted = r.resolve(&pci)?;
        let mut addresses: Vec<String> = wanted.iter().map(|d| d.address.clone()).collect();
        if !r.present {
            for s in &r.devices {
                if let Selector::Address(a) = s {
                    if !addresses.contains(a) {
                        addresses.push(a.clone());
                    }
                }
            }
        }
        let mut plan = Plan::ok().with_data("devices", addresses.clone());
        let mut notes: Vec<String> = Vec::new();

        if r.present {
            let uses = system_uses(observed)?;
            let refused = refusals(&pci, &wanted, &uses);
            if !refused.is_empty() {
                return Err(ModuleError::Host(format!(
                    "refusing to bind, nothing was changed: {}",
                    refused.join("; ")
                )));
            }
            if pci.iommu_enabled() {
                let incomplete = incomplete_groups(&pci, &wanted);
                if !incomplete.is_empty() {
                    return Err(ModuleError::Host(format!(
                        "refusing to bind, nothing was changed: {}",
                        incomplete.join("; ")
                    )));
                }
            }
        }

        // The persisted rules once this task is done.
        let mut rules: Vec<(String, String)> = host
            .rules
            .iter()
            .filter(|p| !addresses.contains(&p.address))
            .map(|p| (p.address.clone(), p.content.clone()))
            .collect();
        let mut persist_changed = false;
        if r.present {
            for d in &wanted {
                let old = host.rule(&d.address);
                let host_driver = d
                    .driver
                    .as_deref()
                    .filter(|x| *x != VFIO)
                    .or_else(|| old.and_then(|o| rule_field(&o.content, "host driver")));
                let text = rule_text(&d.address, &d.id(), host_driver);
                let path = rule_path(&d.address);
                if old.map(|o| o.content.as_str()) != Some(text.as_str()) {
                    let before = old.map(|o| o.content.clone()).unwrap_or_default();
                    let verb = if old.is_some() { "update" } else { "create" };
                    plan.change(
                        Change::new(format!("{verb} {path}")).with_diff(
                            &path,
                            before,
                            text.clone(),
                        ),
                        [Action::write(&path, text.clone(), Attrs::default(), false)],
                    );
                    persist_changed = true;
                }
                rules.push((d.address.clone(), text));
            }
        } else {
            for a in &addresses {
                if let Some(old) = host.rule(a) {
                    plan.change(
                        Change::new(format!("remove {}", old.path)).with_diff(
                            &old.path,
                            old.content.clone(),
                            "",
                        ),
                        [Action::Remove {
                            path: old.path.clone(),
                        }],
                    );
                    persist_changed = true;
                }
            }
        }
        rules.sort();

        // The files every binding shares.
        let exec = Attrs {
            mode: Some(0o755),
            ..Attrs::default()
        };
        let plain = Attrs::default();
        let mut shared: Vec<(&str, Option<String>, &Attrs)> = vec![
            (SCRIPT, Some(SCRIPT_TEXT.to_string()), &exec),
            (MODPROBE, Some(modprobe_text(&rules, &pci)), &plain),
            (
                MODULES_LOAD,
                Some("# kvmforge vfio_bind: vfio-pci at boot\nvfio-pci\n".into()),
                &plain,
            ),
        ];
        match host.initramfs {
            Some(InitramfsTool::UpdateInitramfs) => {
                shared.push((HOOK, Some(HOOK_TEXT.to_string()), &exec))
            }
            Some(InitramfsTool::Dracut) => shared.push((DRACUT, Some(dracut_text(&rules)), &plain)),
            None => {}
        }
        let before = plan.changes.len();
        for (path, content, attrs) in shared {
            let state = observed.file(path)?;
            match content.filter(|_| !rules.is_empty()) {
                Some(text) => {
                    let n = plan.changes.len();
                    edit::ensure_content(&mut plan, path, state, text.as_bytes(), attrs, false)?;
                    if plan.changes.len() == n {
                        // right content, perhaps not executable
                        edit::ensure_attrs(&mut plan, path, state, attrs);
                    }
                }
                None => edit::ensure_absent(&mut plan, path, state),
            }
        }
        persist_changed |= plan.changes.len() > before;

        // Live.
        let mut live = Vec::new();
        if r.present {
            if !pci.iommu_enabled() {
                let grub_req = match host.cpu_vendor.as_deref() {
                    Some("GenuineIntel") => &r.grub_intel,
                    Some("AuthenticAMD") | Some("HygonGenuine") => &r.grub_amd,
                    other => {
                        return Err(ModuleError::Host(format!(
                            "the IOMMU is off (no IOMMU groups) and this CPU ({}) is neither \
                             Intel nor AMD: turn the IOMMU on in the firmware and on the kernel \
                             command line, reboot, and run this again",
                            other.unwrap_or("vendor unknown")
                        )))
                    }
                };
                let grub = GrubCmdline.plan(grub_req, observed)?;
                if !grub.reboot_required {
                    return Err(ModuleError::Host(
                        "the IOMMU is off (no IOMMU groups) although the running kernel has the \
                         arguments that turn it on: it is disabled in the firmware (VT-d on \
                         Intel, AMD-Vi/IOMMU on AMD); enable it there and reboot"
                            .into(),
                    ));
                }
                notes.push(
                    "the IOMMU is off (no IOMMU groups): the kernel arguments that turn it on \
                     are planned, and the devices go to vfio-pci at the next boot (their IOMMU \
                     groups are checked on the first run after it)"
                        .into(),
                );
                plan.changes.extend(grub.changes);
                plan.actions.extend(grub.actions);
                plan.reboot_required = true;
                for (k, v) in grub.data {
                    plan.data.insert(k, v);
                }
            } else {
                for d in &wanted {
                    if d.driver.as_deref() == Some(VFIO) {
                        continue;
                    }
                    if d.class >> 16 == 0x03 && d.driver.is_some() {
                        notes.push(format!(
                            "{} is a display device on its host driver: not unbound live \
                             (that can hang the host while it drives a console); it goes to \
                             vfio-pci at the next boot",
                            label(d)
                        ));
                        plan.reboot_required = true;
                        continue;
                    }
                    live.push(d);
                }
            }
        }
        if persist_changed {
            match host.initramfs {
                Some(InitramfsTool::UpdateInitramfs) => plan.change(
                    Change::new("rebuild the initramfs"),
                    [Action::run("update-initramfs -u")],
                ),
                Some(InitramfsTool::Dracut) => plan.change(
                    Change::new("rebuild the initramfs"),
                    [Action::run("dracut -f")],
                ),
                None => {}
            }
        }
        if r.present {
            for d in live {
                plan.change(
                    Change::new(format!("bind {} to vfio-pci", label(d))),
                    [Action::run(bind_command(&d.address))],
                );
            }
        } else {
            for d in &wanted {
                if d.driver.as_deref() == Some(VFIO) || d.driver_override.as_deref() == Some(VFIO) {
                    plan.change(
                        Change::new(format!("give {} back to its driver", label(d))),
                        [Action::run(release_command(&d.address))],
                    );
                }
            }
        }
        if !notes.is_empty() {
            plan.msg = Some(notes.join("; "));
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{ArgErrorKind, CommandOutput, FileState, Observation};
    use crate::modules::facts::fixture;
    use crate::modules::facts::grub::GrubTools;
    use crate::modules::testing::{arg_error, commands as runs, req};
    use serde_json::json;

    const SHARED: [&str; 5] = [SCRIPT, MODPROBE, MODULES_LOAD, HOOK, DRACUT];

    fn cmd(text: &str) -> Observation {
        Observation::Command(CommandOutput::ok(text))
    }

    /// A lab VM (q35 with an IOMMU, read with the probes): root on the NVMe drive at
    /// 0000:00:01.0, two more drives of the same id at 00:03.0 and 00:04.0, an NVMe drive and
    /// an e1000 NIC behind a pci-bridge (00:05.0, all three in IOMMU group 5), SSH arriving on
    /// lan0 (00:06.0). The same layout as seed 004's three Samsung 144d:a80a drives, one of
    /// them holding /.
    fn vm(pci: &str, vfio: &str) -> Observed {
        let mut o = Observed::new()
            .with_fact::<PciTree>(&(), cmd(pci))
            .with_fact::<StorageInUse>(&(), cmd(&fixture("storage_in_use/vm-nvme-root.txt")))
            .with_fact::<NetDevices>(&(), cmd(&fixture("net_devices/vm.txt")))
            .with_fact::<SshSession>(&(), cmd(&fixture("ssh_session/vm.txt")))
            .with_fact::<IpAddrs>(&(), cmd(&fixture("ip_addrs/vfio-vm.json")))
            .with_fact::<IpRoutes>(&(), cmd(&fixture("ip_routes/vfio-vm.json")))
            .with_fact::<VfioHost>(&(), cmd(vfio))
            .with_file(
                "/etc/default/grub",
                FileState::file("GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX=\"console=ttyS0\"\n"),
            )
            .with_file(GRUB_DROPIN, FileState::absent())
            .with_file(
                "/proc/cmdline",
                FileState::file("BOOT_IMAGE=/boot/vmlinuz ro console=ttyS0\n"),
            )
            .with_fact::<GrubTools>(&(), cmd(&fixture("grub_tools/debian12-grub2-common.txt")));
        for f in SHARED {
            o = o.with_file(f, FileState::absent());
        }
        o
    }

    fn fresh_vm() -> Observed {
        vm(
            &fixture("pci_tree/vm-nvme-root.txt"),
            &fixture("vfio_host/vm.txt"),
        )
    }

    fn plan(args: serde_json::Value, o: &Observed) -> Result<Plan, ModuleError> {
        VfioBind.plan(&req(&VfioBind, args), o)
    }

    fn refusal(args: serde_json::Value, o: &Observed) -> String {
        match plan(args, o) {
            Err(ModuleError::Host(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn written(p: &Plan, path: &str) -> Option<String> {
        p.actions.iter().find_map(|a| match a {
            Action::WriteFile {
                path: w, content, ..
            } if w == path => Some(String::from_utf8_lossy(content).into_owned()),
            _ => None,
        })
    }

    #[test]
    fn arguments() {
        let e = arg_error(&VfioBind, json!({"devices": ["nvme0"]}));
        assert_eq!((e.kind, e.param), (ArgErrorKind::Invalid, "devices"));
        assert!(e.msg.contains("neither a PCI address"), "{}", e.msg);
        assert!(arg_error(&VfioBind, json!({"devices": []}))
            .msg
            .contains("at least one"));
        let r = req(
            &VfioBind,
            json!({"devices": ["05:00.0", "0000:0A:00.1", "144d:a80a"]}),
        );
        assert_eq!(
            r.devices,
            [
                Selector::Address("0000:05:00.0".into()),
                Selector::Address("0000:0a:00.1".into()),
                Selector::Id(0x144d, 0xa80a)
            ]
        );
    }

    /// Binding by id would take the drive holding / with the other two: refused, naming it.
    #[test]
    fn by_id_refused_when_a_match_holds_root() {
        let m = refusal(json!({"devices": ["1b36:0010"]}), &fresh_vm());
        assert_eq!(
            m,
            "refusing to bind, nothing was changed: 0000:00:01.0 (1b36:0010, nvme) holds / \
             (nvme0n1p1): binding it to vfio-pci would take the root file system away"
        );
    }

    /// The other two by address: persisted per address, the initramfs rebuilt, bound live.
    #[test]
    fn spare_drives_by_address() {
        let p = plan(json!({"devices": ["0000:00:03.0", "00:04.0"]}), &fresh_vm()).unwrap();
        assert_eq!(p.data["devices"], json!(["0000:00:03.0", "0000:00:04.0"]));
        assert!(!p.reboot_required);
        let rule = written(&p, "/etc/udev/rules.d/61-kvmforge-vfio-0000:00:03.0.rules").unwrap();
        assert!(rule.contains(
            "ACTION==\"add\", SUBSYSTEM==\"pci\", KERNEL==\"0000:00:03.0\", ATTR{driver_override}=\"vfio-pci\""
        ), "{rule}");
        let conf = written(&p, MODPROBE).unwrap();
        assert!(conf.contains("softdep nvme pre: vfio-pci\n"), "{conf}");
        assert!(
            conf.contains(&format!("install vfio-pci {SCRIPT}")),
            "{conf}"
        );
        // three drives share the id: never bound through ids=
        assert!(!conf.contains("ids="), "{conf}");
        assert_eq!(
            written(&p, MODULES_LOAD).unwrap().lines().last(),
            Some("vfio-pci")
        );
        assert_eq!(written(&p, SCRIPT).unwrap(), SCRIPT_TEXT);
        assert_eq!(written(&p, HOOK).unwrap(), HOOK_TEXT);
        assert!(written(&p, DRACUT).is_none() && written(&p, GRUB_DROPIN).is_none());
        let runs = runs(&p);
        assert_eq!(runs[0], "update-initramfs -u");
        assert_eq!(runs[1], bind_command("0000:00:03.0"));
        assert_eq!(runs[2], bind_command("0000:00:04.0"));
        assert_eq!(runs.len(), 3);
        assert!(runs[1].contains("echo vfio-pci >\"$d/driver_override\""));
    }

    /// On vfio-pci with the files in place (read back from the VM after the run): ok.
    #[test]
    fn already_bound_is_ok() {
        let first = plan(json!({"devices": ["0000:00:03.0", "00:04.0"]}), &fresh_vm()).unwrap();
        let mut after = vm(
            &fixture("pci_tree/vm-nvme-root-bound.txt"),
            &fixture("vfio_host/vm-bound.txt"),
        );
        for f in [SCRIPT, MODPROBE, MODULES_LOAD, HOOK] {
            let mode = if f == SCRIPT || f == HOOK {
                0o755
            } else {
                0o644
            };
            after = after.with_file(
                f,
                FileState::file(written(&first, f).unwrap()).with_mode(mode),
            );
        }
        let again = plan(json!({"devices": ["0000:00:03.0", "00:04.0"]}), &after).unwrap();
        assert!(!again.changed(), "{:?}", again.changes);
        assert!(again.actions.is_empty() && !again.reboot_required);
        // a lost executable bit is put back, nothing else
        let lost = after
            .clone()
            .with_file(SCRIPT, FileState::file(SCRIPT_TEXT));
        let p = plan(json!({"devices": ["0000:00:03.0", "00:04.0"]}), &lost).unwrap();
        assert_eq!(p.changes.len(), 2, "{:?}", p.changes);
        assert!(matches!(p.actions[0], Action::SetAttrs { .. }));
        assert_eq!(runs(&p), ["update-initramfs -u"]);

        // and back: overrides cleared, devices reprobed, every file gone
        let back = plan(
            json!({"devices": ["0000:00:03.0", "0000:00:04.0"], "state": "absent"}),
            &after,
        )
        .unwrap();
        let removed: Vec<&str> = back
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Remove { path } => Some(path.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            removed,
            [
                "/etc/udev/rules.d/61-kvmforge-vfio-0000:00:03.0.rules",
                "/etc/udev/rules.d/61-kvmforge-vfio-0000:00:04.0.rules",
                SCRIPT,
                MODPROBE,
                MODULES_LOAD,
                HOOK
            ]
        );
        assert_eq!(
            runs(&back),
            [
                "update-initramfs -u".to_string(),
                release_command("0000:00:03.0"),
                release_command("0000:00:04.0")
            ]
        );
        // giving back one of two keeps the shared files
        let one = plan(
            json!({"devices": ["0000:00:03.0"], "state": "absent"}),
            &after,
        )
        .unwrap();
        assert_eq!(one.changes.len(), 3, "{:?}", one.changes);
        // absent on a host without any binding: ok
        let none = plan(
            json!({"devices": ["0000:00:03.0"], "state": "absent"}),
            &fresh_vm(),
        )
        .unwrap();
        assert!(!none.changed());
    }

    /// An NVMe drive and an e1000 behind one pci-bridge share group 5 with the bridge: one
    /// alone is refused naming the other; both together are fine, the bridge stays.
    #[test]
    fn whole_group_but_not_its_bridge() {
        let m = refusal(json!({"devices": ["0000:01:01.0"]}), &fresh_vm());
        assert!(
            m.contains(
                "IOMMU group 5 (with 0000:01:01.0) goes to vfio-pci as a whole, but \
                        0000:01:02.0 (8086:100e, e1000) is not requested"
            ),
            "{m}"
        );
        assert!(!m.contains("0000:00:05.0"), "{m}");
        let p = plan(
            json!({"devices": ["0000:01:01.0", "0000:01:02.0"]}),
            &fresh_vm(),
        )
        .unwrap();
        let conf = written(&p, MODPROBE).unwrap();
        assert!(
            conf.contains("softdep e1000 pre: vfio-pci\nsoftdep nvme pre: vfio-pci\n"),
            "{conf}"
        );
        // the e1000 is the only one of its id: ids= for it, not for the NVMe drive
        assert!(conf.contains("options vfio-pci ids=8086:100e\n"), "{conf}");
        let bridge = refusal(json!({"devices": ["0000:00:05.0"]}), &fresh_vm());
        assert!(
            bridge.contains("0000:00:05.0 (1b36:0001, no driver) is a PCI bridge"),
            "{bridge}"
        );
    }

    /// A GPU and its audio function in one group: the GPU alone names the audio function.
    #[test]
    fn gpu_without_its_audio_function() {
        let pci = "iommu_groups 40\n\
                   0000:00:01.0 0x8086 0x1901 0x1028 0x07a1 0x060400 pcieport (null) 2\n\
                   0000:01:00.0 0x10de 0x1eb8 0x10de 0x12a2 0x030200 nvidia (null) 14\n\
                   0000:01:00.1 0x10de 0x10f8 0x10de 0x12a2 0x040300 snd_hda_intel (null) 14\n";
        let o = vm(pci, &fixture("vfio_host/vm.txt"));
        let m = refusal(json!({"devices": ["01:00.0"]}), &o);
        assert!(
            m.contains("but 0000:01:00.1 (10de:10f8, snd_hda_intel) is not requested: add it"),
            "{m}"
        );
        // both: persisted, the audio function bound live, the GPU left to the next boot
        let p = plan(json!({"devices": ["01:00.0", "01:00.1"]}), &o).unwrap();
        assert!(p.reboot_required);
        assert!(
            p.msg.as_deref().unwrap().contains("display device"),
            "{:?}",
            p.msg
        );
        assert_eq!(runs(&p)[1..], [bind_command("0000:01:00.1")]);
        let conf = written(&p, MODPROBE).unwrap();
        assert!(
            conf.contains("softdep nvidia pre: vfio-pci\nsoftdep snd_hda_intel pre: vfio-pci\n")
        );
        assert!(
            conf.contains("options vfio-pci ids=10de:10f8,10de:1eb8\n"),
            "{conf}"
        );
    }

    /// The NIC of the SSH session, and of the default route.
    #[test]
    fn network_of_the_host_refused() {
        let m = refusal(json!({"devices": ["0000:00:06.0"]}), &fresh_vm());
        assert_eq!(
            m,
            "refusing to bind, nothing was changed: 0000:00:06.0 (1af4:1000, virtio-pci) carries \
             this SSH session (10.213.2.251 on lan0): binding it to vfio-pci would cut the \
             connection and leave the host unreachable"
        );
        let routes = "[{\"dst\":\"default\",\"gateway\":\"10.213.3.1\",\"dev\":\"lan1\",\
                      \"flags\":[]}]\n[]\n";
        let o = fresh_vm().with_fact::<IpRoutes>(&(), cmd(routes));
        let m = refusal(json!({"devices": ["0000:00:07.0"]}), &o);
        assert!(
            m.ends_with(
                "0000:00:07.0 (1af4:1000, virtio-pci) carries the IPv4 default route \
                             (lan1): binding it to vfio-pci would cut the host off the network"
            ),
            "{m}"
        );
    }

    /// A drive behind the bridge mounted: it, the bridge above it and its group mate refused.
    #[test]
    fn mounted_drive_behind_a_bridge() {
        let storage = fixture("storage_in_use/vm-nvme-root.txt")
            + "mount 90 27 259:4 / /var/lib/libvirt rw,relatime shared:40 - ext4 /dev/nvme3n1 rw\n";
        let o = fresh_vm().with_fact::<StorageInUse>(&(), cmd(&storage));
        let m = refusal(json!({"devices": ["0000:01:01.0", "0000:01:02.0"]}), &o);
        assert!(
            m.contains(
                "0000:01:01.0 (1b36:0010, nvme) holds /var/lib/libvirt (nvme3n1): \
                            binding it to vfio-pci would pull the file system on /var/lib/libvirt \
                            from under it"
            ),
            "{m}"
        );
        let m = refusal(json!({"devices": ["0000:01:02.0"]}), &o);
        assert!(
            m.contains(
                "0000:01:02.0 (8086:100e, e1000) shares IOMMU group 5 with \
                            0000:01:01.0 (1b36:0010, nvme), which holds /var/lib/libvirt"
            ),
            "{m}"
        );
    }

    /// No IOMMU groups: the kernel arguments for this CPU, persisted, nothing live.
    #[test]
    fn iommu_off_plans_kernel_arguments() {
        let pci: String = fixture("pci_tree/vm-nvme-root.txt")
            .lines()
            .map(|l| match l.strip_prefix("iommu_groups") {
                Some(_) => "iommu_groups 0".to_string(),
                None => format!("{} -", l.rsplit_once(' ').unwrap().0),
            })
            .collect::<Vec<_>>()
            .join("\n");
        for (cpu, args) in [
            ("GenuineIntel", "intel_iommu=on iommu=pt"),
            ("AuthenticAMD", "iommu=pt"),
        ] {
            let vfio = fixture("vfio_host/vm.txt").replace("AuthenticAMD", cpu);
            let o = vm(&pci, &vfio);
            let p = plan(json!({"devices": ["0000:00:03.0"]}), &o).unwrap();
            assert!(p.reboot_required);
            assert!(
                p.msg.as_deref().unwrap().starts_with("the IOMMU is off"),
                "{:?}",
                p.msg
            );
            let dropin = written(&p, GRUB_DROPIN).unwrap();
            assert!(
                dropin.contains(&format!(
                    "GRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX {args}\""
                )),
                "{dropin}"
            );
            assert_eq!(runs(&p), ["update-grub", "update-initramfs -u"]);
            assert!(written(&p, "/etc/udev/rules.d/61-kvmforge-vfio-0000:00:03.0.rules").is_some());
            // the arguments already there and still no groups: the firmware
            let booted = o.clone().with_file(
                "/proc/cmdline",
                FileState::file(format!("BOOT_IMAGE=/boot/vmlinuz ro {args}\n")),
            );
            let m = refusal(json!({"devices": ["0000:00:03.0"]}), &booted);
            assert!(m.contains("disabled in the firmware"), "{m}");
        }
    }

    #[test]
    fn containers_and_missing_devices() {
        let ro = fixture("vfio_host/vm.txt").replace("sysfs writable", "sysfs read-only");
        let m = refusal(
            json!({"devices": ["0000:00:03.0"]}),
            &vm(&fixture("pci_tree/vm-nvme-root.txt"), &ro),
        );
        assert!(
            m.starts_with("/sys is read-only here (a container?)"),
            "{m}"
        );
        let m = refusal(
            json!({"devices": ["0000:00:03.0"]}),
            &vm("iommu_groups 0\n", &fixture("vfio_host/vm.txt")),
        );
        assert!(m.starts_with("no PCI devices are visible"), "{m}");
        let m = refusal(
            json!({"devices": ["0000:09:00.0", "10de:1eb8"]}),
            &fresh_vm(),
        );
        assert_eq!(
            m,
            "there is no PCI device 0000:09:00.0 on this host; no PCI device on this host has \
             the id 10de:1eb8 (lspci -Dnn lists them)"
        );
    }

    #[test]
    fn probes_cover_what_is_read() {
        let r = req(&VfioBind, json!({"devices": ["0000:00:03.0"]}));
        let probes = VfioBind.probes(&r);
        for f in SHARED {
            assert!(probes.contains(&Probe::File(f.into())), "{f}");
        }
        assert!(probes.contains(&Probe::File(GRUB_DROPIN.into())));
        assert!(probes.contains(&StorageInUse::probe(&())));
        let absent = req(
            &VfioBind,
            json!({"devices": ["0000:00:03.0"], "state": "absent"}),
        );
        assert!(!VfioBind.probes(&absent).contains(&StorageInUse::probe(&())));
    }
}
