//! Storage in use: which block devices hold the root file system, /boot, swap, every mounted
//! file system, LVM physical volumes and RAID members, and which PCI functions those devices
//! hang off.
//!
//! Handing a PCI function to another driver (vfio-pci) removes every block device below it at
//! once, so a planner must know, before it unbinds anything, whether the function carries
//! something the running system needs. Sysfs answers without any tool: each
//! `/sys/class/block/X` links to its place in the device tree
//! (`/sys/devices/pci0000:00/0000:00:04.0/nvme/nvme0/nvme0n1/nvme0n1p2`), whose PCI components
//! are the function and every bridge above it; device-mapper and md devices name what they are
//! built on in `slaves/`, native NVMe multipath heads in `multipath/`. Mounts are matched by the
//! device number in /proc/self/mountinfo (which also covers a root shown as `/dev/root`); swap
//! and LVM physical volumes by their resolved device paths. `pvs` is read when LVM is installed,
//! so a physical volume counts even while none of its logical volumes is active.

use crate::module::fact::{stdout_of, Fact};
use crate::module::{Observation, Probe};
use std::collections::BTreeSet;

/// One line per block device (`block NAME MAJ:MIN PATH SLAVES HOLDERS DMNAME`), one per path
/// of a multipath head (`mpath NAME PATH`), then mountinfo lines (`mount ...`), swap devices
/// (`swap /dev/X`) and physical volumes (`pv /dev/X VG`). `-` for what is absent.
const PROBE: &str = concat!(
    r#"for b in /sys/class/block/*; do [ -r "$b/dev" ] || continue; n=${b##*/}; read -r d <"$b/dev"; "#,
    r#"p=$(readlink -f "$b"); s=; for x in "$b"/slaves/*; do [ -e "$x" ] && s="$s${s:+,}${x##*/}"; done; "#,
    r#"h=; for x in "$b"/holders/*; do [ -e "$x" ] && h="$h${h:+,}${x##*/}"; done; "#,
    r#"m=; [ -r "$b/dm/name" ] && read -r m <"$b/dm/name"; "#,
    r#"echo "block $n $d ${p#/sys/devices/} ${s:--} ${h:--} ${m:--}"; "#,
    r#"for x in "$b"/multipath/*; do [ -e "$x" ] && q=$(readlink -f "$x") && echo "mpath $n ${q#/sys/devices/}"; done; "#,
    r#"done; "#,
    r#"while IFS= read -r l; do echo "mount $l"; done </proc/self/mountinfo; "#,
    r#"while read -r f rest; do [ -b "$f" ] && echo "swap $(readlink -f "$f")"; done </proc/swaps; "#,
    r#"if command -v pvs >/dev/null 2>&1; then "#,
    r#"pvs --noheadings -o pv_name,vg_name 2>/dev/null | while read -r p v; do "#,
    r#"[ -b "$p" ] && echo "pv $(readlink -f "$p") ${v:--}"; done; fi; true"#,
);

/// What the running system uses a block device for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum StorageUse {
    /// A mounted file system, by mount point (`/`, `/boot`, `/var/lib/libvirt`).
    Mount(String),
    Swap,
    /// An LVM physical volume of this volume group (empty: in none yet).
    PhysicalVolume(String),
    /// A member of this md RAID array.
    RaidMember(String),
    /// Built upon by this device-mapper device (encryption, multipath, an LVM volume not
    /// mounted) that is not mounted itself.
    HeldBy(String),
}

impl StorageUse {
    /// "holds / (nvme0n1p2)" etc.: what the device does, for messages.
    pub fn what(&self, device: &str) -> String {
        match self {
            StorageUse::Mount(m) => format!("holds {m} ({device})"),
            StorageUse::Swap => format!("holds swap ({device})"),
            StorageUse::PhysicalVolume(vg) if vg.is_empty() => {
                format!("holds an LVM physical volume ({device})")
            }
            StorageUse::PhysicalVolume(vg) => {
                format!("holds an LVM physical volume of volume group {vg} ({device})")
            }
            StorageUse::RaidMember(md) => format!("holds a member of RAID array {md} ({device})"),
            StorageUse::HeldBy(dm) => format!("holds {device}, which {dm} is built on"),
        }
    }
    /// Why losing the device is not acceptable, for messages.
    pub fn consequence(&self) -> String {
        match self {
            StorageUse::Mount(m) if m == "/" => "would take the root file system away".into(),
            StorageUse::Mount(m) if m == "/boot" || m.starts_with("/boot/") => {
                format!("would take {m} away (kernel and boot loader updates would break)")
            }
            StorageUse::Mount(m) => format!("would pull the file system on {m} from under it"),
            StorageUse::Swap => {
                "would take swap away, and with it the memory of whatever is swapped out".into()
            }
            StorageUse::PhysicalVolume(_) => {
                "would take storage away from its volume group and every logical volume on it"
                    .into()
            }
            StorageUse::RaidMember(md) => format!("would degrade or stop {md}"),
            StorageUse::HeldBy(dm) => format!("would take {dm} away"),
        }
    }
}

/// A block device the system uses, and where it sits on the PCI buses.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StorageUser {
    pub what: StorageUse,
    /// The device as the kernel names it (`nvme0n1p2`, `md0`, `dm-0`).
    pub device: String,
    /// The PCI functions the data lives on, each with the bridges above it, outermost first
    /// (`[0000:00:1c.0, 0000:05:00.0]`). Empty for devices on no PCI function (loop, ram).
    pub pci_paths: Vec<Vec<String>>,
}

/// The storage the running system uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StorageInUse {
    pub users: Vec<StorageUser>,
}

impl StorageInUse {
    /// The uses of storage on this PCI function or below it (when it is a bridge).
    pub fn on_pci<'a>(&'a self, address: &'a str) -> impl Iterator<Item = &'a StorageUser> + 'a {
        self.users.iter().filter(move |u| {
            u.pci_paths
                .iter()
                .any(|p| p.iter().any(|a| a.eq_ignore_ascii_case(address)))
        })
    }
}

/// Whether a path component is a PCI address (`0000:05:00.0`).
pub fn is_pci_address(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && s.char_indices()
            .all(|(i, c)| [4, 7, 10].contains(&i) || c.is_ascii_hexdigit())
}

/// The PCI functions in a sysfs device path, outermost first.
pub fn pci_chain(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|c| is_pci_address(c))
        .map(str::to_string)
        .collect()
}

#[derive(Debug)]
struct Block {
    name: String,
    devno: String,
    path: String,
    slaves: Vec<String>,
    holders: Vec<String>,
    dm_name: Option<String>,
    mpaths: Vec<String>,
}

fn list(s: &str) -> Vec<String> {
    match s {
        "-" => Vec::new(),
        s => s.split(',').map(str::to_string).collect(),
    }
}

/// Undo mountinfo's octal escapes (`\040` is a space).
fn unescape(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push(u8::from_str_radix(&s[i + 1..i + 4], 8).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Tree {
    blocks: Vec<Block>,
}

impl Tree {
    fn get(&self, name: &str) -> Option<&Block> {
        self.blocks.iter().find(|b| b.name == name)
    }
    /// The block device a `/dev/...` path names (as the probe resolved it).
    fn by_dev_path(&self, path: &str) -> Option<&Block> {
        let name = path.strip_prefix("/dev/")?;
        match name.strip_prefix("mapper/") {
            Some(dm) => self
                .blocks
                .iter()
                .find(|b| b.dm_name.as_deref() == Some(dm)),
            None => self.get(name),
        }
    }
    /// The PCI paths the data of a device lives on, through the devices it is built on.
    fn pci_paths(&self, block: &Block, depth: usize) -> Vec<Vec<String>> {
        let mut out: Vec<Vec<String>> = Vec::new();
        let own = pci_chain(&block.path);
        if !own.is_empty() {
            out.push(own);
        }
        for p in &block.mpaths {
            let chain = pci_chain(p);
            if !chain.is_empty() && !out.contains(&chain) {
                out.push(chain);
            }
        }
        if depth < 16 {
            for s in &block.slaves {
                if let Some(b) = self.get(s) {
                    for chain in self.pci_paths(b, depth + 1) {
                        if !out.contains(&chain) {
                            out.push(chain);
                        }
                    }
                }
            }
        }
        out
    }
}

impl Fact for StorageInUse {
    const NAME: &'static str = "storage in use";
    type Key = ();
    fn probe(_: &()) -> Probe {
        Probe::Command(PROBE.into())
    }
    fn parse(_: &(), seen: &Observation) -> Result<Self, String> {
        let out = stdout_of(seen)?;
        let mut tree = Tree { blocks: Vec::new() };
        let mut mounts: Vec<(String, String, String)> = Vec::new();
        let mut swaps = Vec::new();
        let mut pvs = Vec::new();
        let bad = |l: &str| format!("unexpected line in the storage listing: {l:?}");
        for line in out.lines() {
            let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
            match kind {
                "block" => {
                    let f: Vec<&str> = rest.split(' ').collect();
                    let [name, devno, path, slaves, holders, dm] = f[..] else {
                        return Err(bad(line));
                    };
                    tree.blocks.push(Block {
                        name: name.into(),
                        devno: devno.into(),
                        path: path.into(),
                        slaves: list(slaves),
                        holders: list(holders),
                        dm_name: (dm != "-").then(|| dm.to_string()),
                        mpaths: Vec::new(),
                    });
                }
                "mpath" => {
                    let (name, path) = rest.split_once(' ').ok_or_else(|| bad(line))?;
                    let b = tree
                        .blocks
                        .iter_mut()
                        .find(|b| b.name == name)
                        .ok_or_else(|| bad(line))?;
                    b.mpaths.push(path.to_string());
                }
                "mount" => {
                    // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE ...
                    let f: Vec<&str> = rest.split(' ').collect();
                    let sep = f.iter().position(|x| *x == "-").ok_or_else(|| bad(line))?;
                    if f.len() < 5 || f.len() < sep + 3 {
                        return Err(bad(line));
                    }
                    mounts.push((f[2].into(), unescape(f[4]), f[sep + 2].into()));
                }
                "swap" => swaps.push(rest.to_string()),
                "pv" => {
                    let (dev, vg) = rest.split_once(' ').unwrap_or((rest, "-"));
                    pvs.push((dev.to_string(), if vg == "-" { "" } else { vg }.to_string()));
                }
                _ => return Err(bad(line)),
            }
        }
        if tree.blocks.is_empty() && mounts.is_empty() {
            return Err("no block devices and no mounts listed: is /sys mounted?".into());
        }

        let mut users = BTreeSet::new();
        let mut add = |what: StorageUse, b: &Block| {
            users.insert(StorageUser {
                what,
                device: b.name.clone(),
                pci_paths: tree.pci_paths(b, 0),
            });
        };
        let mut mounted = BTreeSet::new();
        for (devno, mountpoint, source) in &mounts {
            let block = tree
                .blocks
                .iter()
                .find(|b| &b.devno == devno)
                .or_else(|| tree.by_dev_path(source));
            if let Some(b) = block {
                mounted.insert(b.name.clone());
                add(StorageUse::Mount(mountpoint.clone()), b);
            }
        }
        for s in &swaps {
            if let Some(b) = tree.by_dev_path(s) {
                mounted.insert(b.name.clone());
                add(StorageUse::Swap, b);
            }
        }
        for (dev, vg) in &pvs {
            if let Some(b) = tree.by_dev_path(dev) {
                add(StorageUse::PhysicalVolume(vg.clone()), b);
            }
        }
        for b in &tree.blocks {
            if b.name.starts_with("md") {
                for s in &b.slaves {
                    if let Some(m) = tree.get(s) {
                        add(StorageUse::RaidMember(b.name.clone()), m);
                    }
                }
            }
            // device-mapper devices in use but neither mounted nor swap themselves (those are
            // covered through the mount or the swap)
            for h in &b.holders {
                if h.starts_with("dm-") && !mounted.contains(h) {
                    let dm = tree.get(h);
                    let label = match dm.and_then(|d| d.dm_name.as_deref()) {
                        Some(n) => format!("{h} ({n})"),
                        None => h.clone(),
                    };
                    add(StorageUse::HeldBy(label), b);
                }
            }
        }
        Ok(StorageInUse {
            users: users.into_iter().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::CommandOutput;
    use crate::modules::facts::fixture;

    fn parse(text: &str) -> StorageInUse {
        StorageInUse::parse(&(), &Observation::Command(CommandOutput::ok(text))).unwrap()
    }

    #[test]
    fn pci_addresses_in_paths() {
        assert!(is_pci_address("0000:05:00.0"));
        assert!(!is_pci_address("pci0000:00"));
        assert!(!is_pci_address("nvme0n1"));
        assert_eq!(
            pci_chain("pci0000:00/0000:00:1c.0/0000:05:00.0/nvme/nvme0/nvme0n1/nvme0n1p2"),
            ["0000:00:1c.0", "0000:05:00.0"]
        );
        assert!(pci_chain("virtual/block/dm-0").is_empty());
        assert_eq!(unescape(r"/srv/my\040disk"), "/srv/my disk");
    }

    /// The probe is plain POSIX sh: run it here (read-only) and parse what it prints.
    #[test]
    fn probe_runs_here() {
        let seen = crate::modules::facts::run_here(&StorageInUse::probe(&()));
        StorageInUse::parse(&(), &seen).unwrap();
    }

    #[test]
    fn malformed_listings_fail() {
        for bad in ["", "block x\n", "what is this\n", "mount 1 2 3\n"] {
            assert!(
                StorageInUse::parse(&(), &Observation::Command(CommandOutput::ok(bad))).is_err(),
                "{bad:?}"
            );
        }
    }

    /// A lab VM booting from NVMe: / on nvme0n1p1 of 0000:00:01.0, three more NVMe drives
    /// (one behind a pci-bridge) unused.
    #[test]
    fn vm_booting_from_nvme() {
        let s = parse(&fixture("storage_in_use/vm-nvme-root.txt"));
        let root: Vec<&StorageUser> = s.on_pci("0000:00:01.0").collect();
        assert_eq!(
            root,
            [&StorageUser {
                what: StorageUse::Mount("/".into()),
                device: "nvme0n1p1".into(),
                pci_paths: vec![vec!["0000:00:01.0".into()]],
            }]
        );
        for spare in [
            "0000:00:03.0",
            "0000:00:04.0",
            "0000:00:05.0",
            "0000:01:01.0",
        ] {
            assert_eq!(s.on_pci(spare).count(), 0, "{spare}");
        }
        assert_eq!(root[0].what.what(&root[0].device), "holds / (nvme0n1p1)");
    }

    /// This machine: / on a virtio disk.
    #[test]
    fn machine() {
        let s = parse(&fixture("storage_in_use/machine.txt"));
        assert!(s
            .on_pci("0000:00:02.0")
            .any(|u| u.what == StorageUse::Mount("/".into()) && u.device == "vda"));
    }

    /// LVM on md RAID 1 over two NVMe drives behind a bridge, swap on an LV, a PV not active.
    #[test]
    fn stacked_devices() {
        let out = "block nvme0n1 259:0 pci0000:00/0000:00:1d.0/0000:3b:00.0/nvme/nvme0/nvme0n1 - md0 -\n\
                   block nvme1n1 259:1 pci0000:00/0000:00:1d.0/0000:3c:00.0/nvme/nvme1/nvme1n1 - md0 -\n\
                   block md0 9:0 virtual/block/md0 nvme0n1,nvme1n1 dm-0,dm-1 -\n\
                   block dm-0 253:0 virtual/block/dm-0 md0 - vg0-root\n\
                   block dm-1 253:1 virtual/block/dm-1 md0 - vg0-swap\n\
                   block sda 8:0 pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block/sda - - -\n\
                   mount 25 1 253:0 / / rw,relatime shared:1 - ext4 /dev/mapper/vg0-root rw\n\
                   swap /dev/dm-1\n\
                   pv /dev/md0 vg0\n\
                   pv /dev/sda vg1\n";
        let s = parse(out);
        let on = |a: &str| -> Vec<String> { s.on_pci(a).map(|u| u.what.what(&u.device)).collect() };
        assert_eq!(
            on("0000:3b:00.0"),
            [
                "holds / (dm-0)",
                "holds swap (dm-1)",
                "holds an LVM physical volume of volume group vg0 (md0)",
                "holds a member of RAID array md0 (nvme0n1)"
            ]
        );
        // the bridge above both drives carries all of it
        assert_eq!(on("0000:00:1d.0").len(), 5);
        assert_eq!(
            on("0000:00:17.0"),
            ["holds an LVM physical volume of volume group vg1 (sda)"]
        );
    }
}
