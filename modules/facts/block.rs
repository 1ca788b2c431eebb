//! Block devices: what a device already carries (a file system, an LVM physical volume, a
//! partition table), read with `blkid -p` from the device itself rather than from a cache, so a
//! device is never formatted over data the cache does not know about.

use crate::module::fact::{command_output, Fact};
use crate::module::{shell_quote, Observation, Probe};

/// Printed by the probe when the path is not a block device.
const MISSING: &str = "kvmforge-no-block-device";

/// What `blkid -p` finds on a device.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlockSignature {
    /// The path is a block device.
    pub exists: bool,
    /// `TYPE`: ext4, xfs, LVM2_member, linux_raid_member, swap, ...
    pub kind: Option<String>,
    /// `PTTYPE`: a partition table (gpt, dos).
    pub partition_table: Option<String>,
}

impl BlockSignature {
    /// Nothing blkid recognises is on the device.
    pub fn blank(&self) -> bool {
        self.kind.is_none() && self.partition_table.is_none()
    }

    /// "a file system (ext4)", "an LVM physical volume", "a gpt partition table".
    pub fn describe(&self) -> String {
        match (&self.kind, &self.partition_table) {
            (Some(t), _) if t == "LVM2_member" => "an LVM physical volume".into(),
            (Some(t), _) if t == "linux_raid_member" => "a software RAID member".into(),
            (Some(t), _) if t == "swap" => "swap space".into(),
            (Some(t), _) => format!("a file system ({t})"),
            (None, Some(p)) => format!("a {p} partition table"),
            (None, None) => "nothing".into(),
        }
    }
}

impl Fact for BlockSignature {
    const NAME: &'static str = "block device signature";
    type Key = str;

    /// `blkid -p -o export` of the device; its exit code 2 means "nothing found".
    fn probe(dev: &str) -> Probe {
        let q = shell_quote(dev);
        Probe::Command(format!(
            "if [ -b {q} ]; then LC_ALL=C blkid -p -o export -- {q}; rc=$?; [ $rc -eq 2 ] || exit $rc; \
             else echo {MISSING}; fi"
        ))
    }

    fn parse(dev: &str, seen: &Observation) -> Result<Self, String> {
        let out = command_output(seen)?;
        if out.rc != 0 {
            return Err(format!(
                "blkid -p {dev} failed (exit {}): {}",
                out.rc,
                out.stderr.trim()
            ));
        }
        if out.stdout.trim() == MISSING {
            return Ok(BlockSignature::default());
        }
        let mut sig = BlockSignature {
            exists: true,
            ..Default::default()
        };
        for line in out.stdout.lines() {
            match line.split_once('=') {
                Some(("TYPE", v)) => sig.kind = Some(v.to_string()),
                Some(("PTTYPE", v)) => sig.partition_table = Some(v.to_string()),
                _ => {}
            }
        }
        Ok(sig)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::CommandOutput;
    use crate::modules::facts::fixture;

    fn parse(text: &str) -> BlockSignature {
        BlockSignature::parse("/dev/x", &Observation::Command(CommandOutput::ok(text))).unwrap()
    }

    #[test]
    fn signatures_from_real_devices() {
        let ext4 = parse(&fixture("block/blkid-ext4.txt"));
        assert!(ext4.exists && !ext4.blank());
        assert_eq!(ext4.describe(), "a file system (ext4)");
        let pv = parse(&fixture("block/blkid-lvm.txt"));
        assert_eq!(pv.kind.as_deref(), Some("LVM2_member"));
        assert_eq!(pv.describe(), "an LVM physical volume");
        let gpt = parse(&fixture("block/blkid-gpt.txt"));
        assert_eq!(gpt.describe(), "a gpt partition table");
        let blank = parse("");
        assert!(blank.exists && blank.blank());
        assert!(!parse(MISSING).exists);
    }

    /// The probe against this machine's own blkid: a file that is no block device.
    #[test]
    fn probe_runs_here() {
        let seen = crate::modules::facts::run_here(&BlockSignature::probe("/etc/hostname"));
        let sig = BlockSignature::parse("/etc/hostname", &seen).unwrap();
        assert!(!sig.exists);
    }
}
