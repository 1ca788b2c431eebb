//! Host facts, gathered by a shell fragment that rides along with the first observation of a
//! play (no extra round trip) and exposed to templates as `facts.*`.

use serde::Serialize;
use std::collections::BTreeMap;

/// The readings the facts are made of: a key in the `KF facts` stream, the shell that prints
/// its value, and the `facts.*` fields made from it. Two readings print a second key from the
/// same command's output or alongside it (`kernel` then `arch`, `links` then `addrs`). Reads only /proc, /sys, /etc/os-release and a few
/// standard commands; every read tolerates absence. What the shell can read itself (sysfs
/// attributes, symlink targets through `cd -P`, /proc/cmdline) is read with builtins: on a host
/// with many PCI devices this is the difference between a handful of programs and five per
/// device. Only the readings a run's templates use are taken (see [`Wanted`]).
const READINGS: &[(&str, &str, &[&str])] = &[
    ("hostname", r#"{ [ -r /proc/sys/kernel/hostname ] && read -r kf_v </proc/sys/kernel/hostname && printf %s "$kf_v"; } 2>/dev/null || hostname 2>/dev/null"#, &["hostname"]),
    ("os_release", "cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release 2>/dev/null", &["os_family", "distribution", "distribution_version", "distribution_codename"]),
    ("kernel", r#"set -- $(uname -rm); printf %s "$1"; kf_k arch; printf %s "$2""#, &["kernel", "arch"]),
    ("cpu_flags", "grep -m1 -E '^flags' /proc/cpuinfo 2>/dev/null", &["virtualization_flag"]),
    ("cpus", "nproc 2>/dev/null || grep -c ^processor /proc/cpuinfo", &["cpus"]),
    ("meminfo", "grep -E '^(MemTotal|HugePages_Total|Hugepagesize):' /proc/meminfo 2>/dev/null", &["memory_mb", "hugepages_total", "hugepage_size_kb"]),
    ("links", "ip -o link show 2>/dev/null; kf_k addrs; ip -o addr show 2>/dev/null", &["interfaces"]),
    ("route", "ip route show default 2>/dev/null", &["default_interface", "default_gateway"]),
    ("pci", r#"for d in /sys/bus/pci/devices/*; do [ -e "$d/vendor" ] || continue; kf_ve=; kf_de=; kf_cl=; kf_dr=-; kf_g=-; read -r kf_ve <"$d/vendor"; read -r kf_de <"$d/device"; read -r kf_cl <"$d/class"; [ -L "$d/driver" ] && cd -P "$d/driver" && kf_dr=${PWD##*/}; [ -L "$d/iommu_group" ] && cd -P "$d/iommu_group" && kf_g=${PWD##*/}; echo "${d##*/} $kf_ve $kf_de $kf_cl $kf_dr $kf_g"; done 2>/dev/null"#, &["pci_devices"]),
    ("iommu_groups", r#"set -- /sys/kernel/iommu_groups/*; if [ -e "$1" ]; then echo $#; else echo 0; fi"#, &["iommu_enabled"]),
    ("cmdline", r#"[ -r /proc/cmdline ] && read -r kf_v </proc/cmdline && printf %s "$kf_v""#, &["cmdline"]),
    ("pkg_mgr", "if command -v apt-get >/dev/null 2>&1; then echo apt; elif command -v dnf >/dev/null 2>&1; then echo dnf; elif command -v yum >/dev/null 2>&1; then echo yum; fi", &["pkg_mgr"]),
    ("init", r#"if [ -d /run/systemd/system ]; then echo systemd; elif [ -r /proc/1/comm ]; then read -r kf_v </proc/1/comm && printf %s "$kf_v"; fi"#, &["init_system"]),
    ("virt", "systemd-detect-virt 2>/dev/null", &["virtualization_type"]),
    ("kvm", "[ -e /dev/kvm ] && echo yes", &["kvm_available"]),
    ("user", r#"printf %s "${SUDO_USER:-$(id -un 2>/dev/null)}""#, &["user"]),
    ("grub", "{ command -v update-grub || command -v grub2-mkconfig || command -v grub-mkconfig; } >/dev/null 2>&1 && echo yes", &["grub_available"]),
];

/// Which readings to take: the facts a run's templates refer to. Gathering every fact costs a
/// dozen programs on each host (`systemd-detect-virt`, three `ip`, `uname`, `nproc`, ...) where
/// a playbook that only asks `facts.os_family` needs one `cat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wanted(u32);

impl Wanted {
    pub const NONE: Wanted = Wanted(0);
    pub const ALL: Wanted = Wanted((1 << READINGS.len()) - 1);

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn union(self, other: Wanted) -> Wanted {
        Wanted(self.0 | other.0)
    }

    /// The readings for the field `facts.NAME`, or None for a name that is not a fact.
    pub fn field(name: &str) -> Option<Wanted> {
        READINGS
            .iter()
            .position(|(_, _, fields)| fields.contains(&name))
            .map(|i| Wanted(1 << i))
    }

    /// What `text` (a template, or anything a template may be in) needs: each `facts.NAME`
    /// adds that fact; `facts` any other way (`{{ facts }}`, `get 'facts' ...`, an unknown
    /// name) needs them all.
    pub fn in_text(text: &str) -> Wanted {
        let mut w = Wanted::NONE;
        let mut rest = text;
        while let Some(at) = rest.find("facts") {
            let before = rest[..at].chars().next_back();
            let after = &rest[at + "facts".len()..];
            rest = after;
            // `gather_facts`, `my_facts`: another word.
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let name: String = after
                .strip_prefix('.')
                .map(|n| {
                    n.chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect()
                })
                .unwrap_or_default();
            match Wanted::field(&name) {
                Some(f) => w = w.union(f),
                None => return Wanted::ALL,
            }
        }
        w
    }

    /// Shell fragment printing one `KF facts =BASE64` record with the wanted readings: a
    /// NUL-separated stream of keys, each followed by its value (`\0KEY\0VALUE...`), encoded by
    /// one `base64`. It runs as a pipeline stage, so its `cd` and `set --` stay in that subshell.
    pub fn script(self) -> String {
        let mut s = String::from("kf_k() { printf '\\0%s\\0' \"$1\"; }\nprintf 'KF facts ='; {\n");
        for (i, (key, shell, _)) in READINGS.iter().enumerate() {
            if self.0 & (1 << i) != 0 {
                s.push_str("kf_k ");
                s.push_str(key);
                s.push_str("; ");
                s.push_str(shell);
                s.push('\n');
            }
        }
        s.push_str("kf_k end; } | kf_b64; echo\n");
        s
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Interface {
    pub mac: String,
    pub mtu: u32,
    /// `UP`, `DOWN`, `UNKNOWN` as `ip link` reports it.
    pub state: String,
    /// Addresses in CIDR notation (`10.0.0.5/24`, `fe80::1/64`).
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PciDevice {
    /// `0000:3b:00.0`
    pub address: String,
    /// `144d:a80a`, as `lspci -nn` and `vfio-pci.ids=` write it.
    pub id: String,
    pub vendor: String,
    pub device: String,
    /// Class code, e.g. `010802` for NVMe.
    pub class: String,
    /// The bound driver, empty when none.
    pub driver: String,
    /// The IOMMU group, empty when the IOMMU is off.
    pub iommu_group: String,
}

/// What a host is. Serialised as the `facts` variable.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Facts {
    pub hostname: String,
    /// `Debian` (Debian, Ubuntu, …), `RedHat` (Fedora, RHEL, Rocky, …), or the distribution's ID.
    pub os_family: String,
    /// os-release `ID`: `debian`, `ubuntu`, `fedora`, `rhel`, …
    pub distribution: String,
    pub distribution_version: String,
    pub distribution_codename: String,
    pub kernel: String,
    pub arch: String,
    pub cpus: u32,
    /// `vmx` (Intel VT-x), `svm` (AMD-V) or empty.
    pub virtualization_flag: String,
    /// /dev/kvm exists.
    pub kvm_available: bool,
    /// systemd-detect-virt's answer (`none`, `kvm`, `systemd-nspawn`, …).
    pub virtualization_type: String,
    pub memory_mb: u64,
    pub hugepages_total: u64,
    pub hugepage_size_kb: u64,
    pub interfaces: BTreeMap<String, Interface>,
    /// Interface of the default route, empty when there is none.
    pub default_interface: String,
    pub default_gateway: String,
    pub pci_devices: Vec<PciDevice>,
    pub iommu_enabled: bool,
    pub cmdline: String,
    /// `apt`, `dnf`, `yum` or empty.
    pub pkg_mgr: String,
    /// `systemd` or PID 1's name.
    pub init_system: String,
    /// The login user (before become: sudo's `SUDO_USER` when running through sudo).
    pub user: String,
    /// A GRUB configuration generator (update-grub, grub2-mkconfig) is installed.
    pub grub_available: bool,
}

fn os_release(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_string(),
                v.trim().trim_matches(['"', '\'']).to_string(),
            )
        })
        .collect()
}

fn os_family(id: &str, like: &str) -> String {
    let all: Vec<&str> = std::iter::once(id).chain(like.split_whitespace()).collect();
    if all.iter().any(|x| matches!(*x, "debian" | "ubuntu")) {
        "Debian".into()
    } else if all
        .iter()
        .any(|x| matches!(*x, "rhel" | "fedora" | "centos"))
    {
        "RedHat".into()
    } else if all.iter().any(|x| x.contains("suse")) {
        "Suse".into()
    } else {
        id.to_string()
    }
}

/// Parse `ip -o link show` and `ip -o addr show` output.
fn interfaces(links: &str, addrs: &str) -> BTreeMap<String, Interface> {
    let mut out: BTreeMap<String, Interface> = BTreeMap::new();
    for line in links.lines() {
        let mut f = line.split_whitespace();
        let (Some(_), Some(name)) = (f.next(), f.next()) else {
            continue;
        };
        let name = name.trim_end_matches(':');
        let name = name.split('@').next().unwrap_or(name).to_string();
        let words: Vec<&str> = line.split_whitespace().collect();
        let after = |key: &str| {
            words
                .iter()
                .position(|w| *w == key)
                .and_then(|i| words.get(i + 1))
                .map(|s| s.to_string())
                .unwrap_or_default()
        };
        let mac = words
            .iter()
            .position(|w| w.starts_with("link/"))
            .and_then(|i| words.get(i + 1))
            .map(|s| s.to_string())
            .unwrap_or_default();
        out.insert(
            name,
            Interface {
                mac,
                mtu: after("mtu").parse().unwrap_or(0),
                state: after("state"),
                addresses: Vec::new(),
            },
        );
    }
    for line in addrs.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 || !(f[2] == "inet" || f[2] == "inet6") {
            continue;
        }
        let name = f[1].split('@').next().unwrap_or(f[1]);
        out.entry(name.to_string())
            .or_default()
            .addresses
            .push(f[3].to_string());
    }
    out
}

fn kb(meminfo: &str, key: &str) -> u64 {
    meminfo
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn pci(text: &str) -> Vec<PciDevice> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 6 {
                return None;
            }
            let hex = |s: &str| s.trim_start_matches("0x").to_string();
            let dash = |s: &str| {
                if s == "-" {
                    String::new()
                } else {
                    s.to_string()
                }
            };
            Some(PciDevice {
                address: f[0].to_string(),
                id: format!("{}:{}", hex(f[1]), hex(f[2])),
                vendor: hex(f[1]),
                device: hex(f[2]),
                class: hex(f[3]),
                driver: dash(f[4]),
                iommu_group: dash(f[5]),
            })
        })
        .collect()
}

/// Build facts from the `(key, value)` pairs the script printed.
/// The pairs of a `KF facts` stream (see [`Wanted::script`]).
pub fn pairs(stream: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(stream);
    let mut fields = text.split('\0').skip(1);
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (fields.next(), fields.next()) {
        if k != "end" {
            out.push((k.to_string(), v.to_string()));
        }
    }
    out
}

pub fn parse(pairs: &[(String, String)]) -> Facts {
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let osr = os_release(&get("os_release"));
    let osv = |k: &str| osr.get(k).cloned().unwrap_or_default();
    let meminfo = get("meminfo");
    let flags = get("cpu_flags");
    let flag_words: Vec<&str> = flags.split_whitespace().collect();
    let route = get("route");
    let route_words: Vec<&str> = route
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let after = |key: &str| {
        route_words
            .iter()
            .position(|w| *w == key)
            .and_then(|i| route_words.get(i + 1))
            .map(|s| s.to_string())
            .unwrap_or_default()
    };
    Facts {
        hostname: get("hostname"),
        os_family: os_family(&osv("ID"), &osv("ID_LIKE")),
        distribution: osv("ID"),
        distribution_version: osv("VERSION_ID"),
        distribution_codename: osv("VERSION_CODENAME"),
        kernel: get("kernel"),
        arch: get("arch"),
        cpus: get("cpus").parse().unwrap_or(0),
        virtualization_flag: ["vmx", "svm"]
            .into_iter()
            .find(|f| flag_words.contains(f))
            .unwrap_or_default()
            .to_string(),
        kvm_available: get("kvm") == "yes",
        virtualization_type: get("virt"),
        memory_mb: kb(&meminfo, "MemTotal:") / 1024,
        hugepages_total: kb(&meminfo, "HugePages_Total:"),
        hugepage_size_kb: kb(&meminfo, "Hugepagesize:"),
        interfaces: interfaces(&get("links"), &get("addrs")),
        default_interface: after("dev"),
        default_gateway: after("via"),
        pci_devices: pci(&get("pci")),
        iommu_enabled: get("iommu_groups").parse::<u32>().unwrap_or(0) > 0,
        cmdline: get("cmdline"),
        pkg_mgr: get("pkg_mgr"),
        init_system: get("init"),
        user: get("user"),
        grub_available: get("grub") == "yes",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn only_the_facts_templates_read_are_gathered() {
        let w = Wanted::in_text("{{#if (eq facts.os_family \"Debian\")}}x{{/if}}");
        assert_eq!(w, Wanted::field("distribution").unwrap());
        let script = w.script();
        assert!(
            script.contains("kf_k os_release; cat /etc/os-release"),
            "{script}"
        );
        assert!(!script.contains("systemd-detect-virt") && !script.contains("uname"));
        // Two facts from one reading, and one from another fact's reading.
        let w = Wanted::in_text("facts.kernel facts.arch hostvars.h1.facts.default_gateway");
        let script = w.script();
        assert!(script.contains("uname -rm") && script.contains("ip route show default"));
        assert!(!script.contains("ip -o link"));
        // Other words that contain the name are not facts.
        assert!(Wanted::in_text("gather_facts: my_facts.x").is_empty());
        // `facts` any other way, or a name that is not a fact: all of them.
        for t in [
            "{{ facts }}",
            "{{get 'facts' 'cpus'}}",
            "facts.[cpus]",
            "facts.cpu",
        ] {
            assert_eq!(Wanted::in_text(t), Wanted::ALL, "{t}");
        }
        // Every field of Facts belongs to a reading.
        let all = serde_json::to_value(Facts::default()).unwrap();
        for name in all.as_object().unwrap().keys() {
            assert!(Wanted::field(name).is_some(), "{name}");
        }
        assert!(Wanted::ALL.script().contains("kf_k addrs; ip -o addr show"));
    }

    /// A reading not taken leaves its facts empty, the others are whole.
    #[test]
    fn facts_from_some_readings() {
        let f = parse(&pairs(&[("os_release", "ID=debian\nVERSION_ID=12\n")]));
        assert_eq!(
            (f.os_family.as_str(), f.distribution_version.as_str()),
            ("Debian", "12")
        );
        assert_eq!((f.kernel.as_str(), f.cpus), ("", 0));
    }

    #[test]
    fn parses_a_debian_kvm_host() {
        let f = parse(&pairs(&[
            ("hostname", "kvm1"),
            ("os_release", "ID=debian\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\n"),
            ("cpu_flags", "flags : fpu vme vmx sse"),
            ("meminfo", "MemTotal:       16384000 kB\nHugePages_Total:       4\nHugepagesize:    2048 kB"),
            ("links", "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\\    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00\n2: host0@if7: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000\\    link/ether 4a:1b:2c:3d:4e:5f brd ff:ff:ff:ff:ff:ff link-netnsid 0"),
            ("addrs", "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever\n2: host0    inet 10.1.0.5/24 brd 10.1.0.255 scope global host0\\       valid_lft forever preferred_lft forever"),
            ("route", "default via 10.1.0.1 dev host0 proto static"),
            ("pci", "0000:3b:00.0 0x144d 0xa80a 0x010802 nvme 12\n0000:00:02.0 0x8086 0x3e92 0x030000 - -"),
            ("iommu_groups", "40"),
            ("pkg_mgr", "apt"),
        ]));
        assert_eq!(f.os_family, "Debian");
        assert_eq!(f.distribution_version, "12");
        assert_eq!(f.virtualization_flag, "vmx");
        assert_eq!(f.memory_mb, 16000);
        assert_eq!(f.hugepages_total, 4);
        assert_eq!(f.interfaces["host0"].mac, "4a:1b:2c:3d:4e:5f");
        assert_eq!(f.interfaces["host0"].mtu, 1500);
        assert_eq!(f.interfaces["host0"].addresses, vec!["10.1.0.5/24"]);
        assert_eq!(f.default_interface, "host0");
        assert_eq!(f.default_gateway, "10.1.0.1");
        assert_eq!(f.pci_devices[0].id, "144d:a80a");
        assert_eq!(f.pci_devices[0].iommu_group, "12");
        assert_eq!(f.pci_devices[1].driver, "");
        assert!(f.iommu_enabled);
    }

    #[test]
    fn os_family_from_id_like() {
        assert_eq!(os_family("rocky", "rhel centos fedora"), "RedHat");
        assert_eq!(os_family("linuxmint", "ubuntu debian"), "Debian");
        assert_eq!(os_family("arch", ""), "arch");
    }
}
