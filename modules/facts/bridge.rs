//! The forwarding databases of bridges and VXLAN devices, from `bridge -j fdb show`.
//!
//! A VXLAN mesh without multicast floods unknown destinations to every peer listed as an
//! all-zero entry of the VXLAN device (`bridge fdb append 00:00:00:00:00:00 dev vx100 dst PEER`,
//! head-end replication): these entries are the mesh's membership, and no other command shows
//! them. One host-wide reading (key `()`) serves every device: `bridge fdb show dev X` fails
//! when X does not exist yet, which is exactly when a planner needs to know.

use crate::module::fact::{stdout_of, Fact};
use crate::module::{Observation, Probe};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::net::IpAddr;

/// The MAC address of the entries that flood to a remote (head-end replication).
pub const FLOOD_MAC: &str = "00:00:00:00:00:00";

/// Every forwarding entry of the host.
#[derive(Debug, Clone, PartialEq)]
pub struct BridgeFdb {
    pub entries: Vec<FdbEntry>,
}

/// One forwarding entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FdbEntry {
    /// Lowercase, as the kernel prints it.
    pub mac: String,
    /// The device the entry forwards to: a bridge port, or a VXLAN device for its own table.
    #[serde(rename = "ifname")]
    pub dev: String,
    /// The remote tunnel endpoint of a VXLAN entry.
    pub dst: Option<IpAddr>,
    /// The bridge whose table holds the entry; `None` for a device's own table (`self`).
    pub master: Option<String>,
    pub vlan: Option<u16>,
    /// The VNI of an entry of a VXLAN device that does not use the device's own.
    pub vni: Option<u32>,
    /// The underlay device of a multicast `dst`.
    #[serde(rename = "viaIf")]
    pub via: Option<String>,
    /// `self`, `master`, `extern_learn`, `offload`, `sticky`, ...
    #[serde(default)]
    pub flags: Vec<String>,
    pub state: FdbState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FdbState {
    /// Never ages out (`permanent`, and the local addresses of the bridge's ports).
    Permanent,
    /// Added by hand without `permanent`: never ages out either, but is not a local address.
    Static,
    /// Learned and about to age out.
    Stale,
    /// Learned from traffic (`bridge` prints an empty state), or any state it has no name for.
    #[serde(other)]
    Learned,
}

impl FdbEntry {
    /// In the device's own table (`bridge fdb add ... self`), where VXLAN remotes live.
    pub fn is_self(&self) -> bool {
        self.flags.iter().any(|f| f == "self")
    }
}

impl BridgeFdb {
    /// The entries forwarding to a device.
    pub fn on<'a>(&'a self, dev: &'a str) -> impl Iterator<Item = &'a FdbEntry> + 'a {
        self.entries.iter().filter(move |e| e.dev == dev)
    }
    /// The remotes a VXLAN device floods unknown destinations to: its all-zero entries' `dst`.
    pub fn flood_remotes(&self, dev: &str) -> BTreeSet<IpAddr> {
        self.on(dev)
            .filter(|e| e.mac == FLOOD_MAC)
            .filter_map(|e| e.dst)
            .collect()
    }
    /// The entry for a MAC address on a device (and remote, for VXLAN devices).
    pub fn find(&self, mac: &str, dev: &str, dst: Option<IpAddr>) -> Option<&FdbEntry> {
        self.entries
            .iter()
            .find(|e| e.dev == dev && e.mac.eq_ignore_ascii_case(mac) && e.dst == dst)
    }
}

impl Fact for BridgeFdb {
    const NAME: &'static str = "bridge fdb";
    type Key = ();
    fn probe(_: &()) -> Probe {
        Probe::Command("bridge -j fdb show".into())
    }
    fn parse(_: &(), seen: &Observation) -> Result<Self, String> {
        let entries = serde_json::from_str(stdout_of(seen)?)
            .map_err(|e| format!("unexpected `bridge -j fdb show` output: {e}"))?;
        Ok(BridgeFdb { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{CommandOutput, ModuleError, Observed};
    use crate::modules::facts::fixture;

    fn fdb(case: &str) -> BridgeFdb {
        let out = CommandOutput::ok(&fixture(&format!("bridge_fdb/{case}.json")));
        BridgeFdb::parse(&(), &Observation::Command(out)).unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn every_fixture_parses() {
        for case in ["plain", "bridged", "vxlan-mesh", "machine"] {
            assert!(!fdb(case).entries.is_empty(), "{case}");
        }
    }

    #[test]
    fn vxlan_head_end_replication() {
        let f = fdb("vxlan-mesh");
        assert_eq!(
            f.flood_remotes("vx100"),
            BTreeSet::from([ip("10.213.4.12"), ip("10.213.4.13")])
        );
        assert_eq!(
            f.flood_remotes("vx300"),
            BTreeSet::from([ip("10.213.4.12")])
        );
        assert!(f.flood_remotes("br0").is_empty());
        let flood = f.find(FLOOD_MAC, "vx100", Some(ip("10.213.4.13"))).unwrap();
        assert!(flood.is_self());
        assert_eq!(
            (flood.state, flood.master.as_deref()),
            (FdbState::Permanent, None)
        );
        let group = f.find(FLOOD_MAC, "vx200", Some(ip("239.1.1.1"))).unwrap();
        assert_eq!(group.via.as_deref(), Some("eth0"));
        let pinned = f
            .find("AA:BB:CC:00:00:01", "vx100", Some(ip("10.213.4.12")))
            .unwrap();
        assert_eq!(pinned.state, FdbState::Permanent);
        assert!(f.find("aa:bb:cc:00:00:01", "vx100", None).is_none());
    }

    #[test]
    fn bridge_table_entries() {
        let f = fdb("vxlan-mesh");
        let manual = f.find("02:00:00:00:00:99", "vx100", None).unwrap();
        assert_eq!(manual.master.as_deref(), Some("br0"));
        assert_eq!(manual.state, FdbState::Static);
        assert!(!manual.is_self());
        let learned = f.find("ce:42:08:53:2d:bd", "vx100", None).unwrap();
        assert_eq!((learned.state, learned.vlan), (FdbState::Learned, None));
        let b = fdb("bridged");
        let stale = b.find("ce:42:08:53:2d:bd", "veth0", None).unwrap();
        assert_eq!(stale.state, FdbState::Stale);
        assert_eq!(
            b.flood_remotes("vx100"),
            BTreeSet::from([ip("10.213.4.11")])
        );
        assert_eq!(b.on("tap0").count(), 3);
    }

    #[test]
    fn failures() {
        let o = Observed::new().with_fact::<BridgeFdb>(
            &(),
            Observation::Command(CommandOutput::failed(127, "sh: 1: bridge: not found\n")),
        );
        match o.fact::<BridgeFdb>(&()) {
            Err(ModuleError::Host(m)) => assert!(m.contains("bridge: not found"), "{m}"),
            other => panic!("{other:?}"),
        }
        let e =
            BridgeFdb::parse(&(), &Observation::Command(CommandOutput::ok("garbage"))).unwrap_err();
        assert!(
            e.starts_with("unexpected `bridge -j fdb show` output"),
            "{e}"
        );
        assert_eq!(
            BridgeFdb::probe(&()),
            Probe::Command("bridge -j fdb show".into())
        );
    }
}
