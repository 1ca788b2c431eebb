//! libvirt: one virtual network or storage pool, its definition and its state, from `virsh`.
//!
//! Each fact is keyed by the network's or pool's name and read by one probe of two `virsh`
//! calls: `net-dumpxml --inactive` (`pool-dumpxml --inactive`), the persistent definition that
//! the next start will use (a planner compares the user's wish to that, not to a running copy
//! that `net-update --live` may have changed), then `net-info` (`pool-info`) for whether it is
//! active, persistent and started at boot. Putting both in one fact keeps what a planner needs
//! to decide define/start/autostart in one reading.
//!
//! `virsh` runs with `-c qemu:///system`: without it, a non-root user (a `become` to someone
//! else, or none) or `LIBVIRT_DEFAULT_URI` would read `qemu:///session`, another set of networks
//! and pools. `LC_ALL=C` keeps the `Active:` labels and the error texts in English.
//!
//! The XML is parsed into the fields planners compare, and kept whole in `xml` for `register`
//! and for what is not typed here.

use super::ip::{Family, Prefix};
use crate::module::fact::{command_output, stdout_of, Fact};
use crate::module::{shell_quote, Observation, Probe};
use roxmltree::{Document, Node};
use std::collections::HashMap;
use std::net::IpAddr;

const VIRSH: &str = "LC_ALL=C virsh -c qemu:///system";

/// A network by name: `None` when libvirt has no network of that name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibvirtNetwork(pub Option<Network>);

/// A storage pool by name: `None` when libvirt has no pool of that name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibvirtPool(pub Option<Pool>);

/// A defined (or transient) virtual network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub name: String,
    pub uuid: String,
    /// How guests reach the outside; `None` for an isolated network.
    pub forward: Option<Forward>,
    /// The host bridge: the one libvirt creates (NAT, route, isolated networks), or the existing
    /// one guests are attached to (`forward mode='bridge'`). Macvtap and hostdev networks have
    /// none.
    pub bridge: Option<NetworkBridge>,
    pub mtu: Option<u32>,
    /// The bridge's MAC address (libvirt generates one when the definition has none).
    pub mac: Option<String>,
    /// The DNS domain of the guests (`<domain name=...>`).
    pub domain: Option<String>,
    /// libvirt's dnsmasq answers DNS (`<dns enable='no'/>` turns it off).
    pub dns: bool,
    pub ips: Vec<NetworkIp>,
    pub active: bool,
    /// Defined (`net-define`), not just running (`net-create`).
    pub persistent: bool,
    pub autostart: bool,
    /// The definition as `virsh net-dumpxml --inactive` printed it.
    pub xml: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub mode: ForwardMode,
    /// The device NAT or routed traffic must leave by (`<forward dev=...>`).
    pub dev: Option<String>,
    /// The devices of a macvtap pool (`<interface dev=...>`); libvirt also lists `dev` here.
    pub interfaces: Vec<String>,
    /// The physical function whose virtual functions a hostdev network hands out.
    pub pf: Option<String>,
}

/// `<forward mode=...>`; `nat` when the element has no mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardMode {
    Nat,
    Route,
    Open,
    Bridge,
    Private,
    Vepa,
    Passthrough,
    Hostdev,
    /// A mode this version does not know.
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkBridge {
    pub name: Option<String>,
    /// Spanning tree on the bridge libvirt creates (libvirt prints none for existing bridges).
    pub stp: Option<bool>,
    /// Its forward delay in seconds.
    pub delay: Option<u32>,
}

/// One `<ip>` of a network: the host's address on the bridge and the DHCP service behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkIp {
    /// The address with its prefix length, from `prefix` or `netmask` (`192.168.122.1/24`).
    pub address: Prefix,
    pub dhcp_ranges: Vec<DhcpRange>,
    pub dhcp_hosts: Vec<DhcpHost>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpRange {
    pub start: IpAddr,
    pub end: IpAddr,
}

/// A static DHCP lease: a MAC (or, for IPv6, a name or id) mapped to an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpHost {
    pub mac: Option<String>,
    pub name: Option<String>,
    pub ip: Option<IpAddr>,
}

/// A defined storage pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// `dir`, `fs`, `netfs`, `logical`, `disk`, `iscsi`, `rbd`, `zfs`, ...
    pub pool_type: String,
    pub name: String,
    pub uuid: String,
    /// Where the volumes appear on the host.
    pub target_path: Option<String>,
    pub source: PoolSource,
    /// Sizes in bytes; libvirt reports 0 for a pool that is not running.
    pub capacity: Option<u64>,
    pub allocation: Option<u64>,
    pub available: Option<u64>,
    pub state: PoolState,
    pub persistent: bool,
    pub autostart: bool,
    /// The definition as `virsh pool-dumpxml --inactive` printed it.
    pub xml: String,
}

/// Where a pool's storage comes from; which fields are set depends on the pool type.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PoolSource {
    /// Block devices (`fs`, `logical`, `disk`).
    pub devices: Vec<String>,
    /// The exported directory of a `netfs` pool.
    pub dir: Option<String>,
    /// Servers (`netfs`, `iscsi`, `rbd`).
    pub hosts: Vec<String>,
    /// The volume group of a `logical` pool, the pool of `rbd` or `zfs`.
    pub name: Option<String>,
    /// The file system (`ext4`, `nfs`) or the label format (`lvm2`, `gpt`).
    pub format: Option<String>,
}

/// `State:` of `virsh pool-info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolState {
    Inactive,
    Building,
    Running,
    Degraded,
    Inaccessible,
}

impl LibvirtNetwork {
    pub fn get(&self) -> Option<&Network> {
        self.0.as_ref()
    }
}

impl LibvirtPool {
    pub fn get(&self) -> Option<&Pool> {
        self.0.as_ref()
    }
}

impl Network {
    /// The bridge's name, whichever way the network uses it.
    pub fn bridge_name(&self) -> Option<&str> {
        self.bridge.as_ref()?.name.as_deref()
    }
    /// The first address of a family.
    pub fn ip(&self, family: Family) -> Option<&NetworkIp> {
        self.ips.iter().find(|ip| ip.address.family() == family)
    }
}

impl PoolState {
    /// Started: libvirt counts degraded and inaccessible pools as active too.
    pub fn active(self) -> bool {
        matches!(
            self,
            PoolState::Running | PoolState::Degraded | PoolState::Inaccessible
        )
    }
}

impl Fact for LibvirtNetwork {
    const NAME: &'static str = "libvirt network";
    type Key = str;
    fn probe(name: &str) -> Probe {
        let name = shell_quote(name);
        Probe::Command(format!(
            "{VIRSH} net-dumpxml --inactive --network {name} && {VIRSH} net-info --network {name}"
        ))
    }
    fn parse(_: &str, seen: &Observation) -> Result<Self, String> {
        let Some((xml, info)) = virsh_reading(seen, "network", "Network not found")? else {
            return Ok(LibvirtNetwork(None));
        };
        parse_network(xml, &info).map(|n| LibvirtNetwork(Some(n)))
    }
}

impl Fact for LibvirtPool {
    const NAME: &'static str = "libvirt pool";
    type Key = str;
    fn probe(name: &str) -> Probe {
        let name = shell_quote(name);
        Probe::Command(format!(
            "{VIRSH} pool-dumpxml --inactive --pool {name} && {VIRSH} pool-info --pool {name}"
        ))
    }
    fn parse(_: &str, seen: &Observation) -> Result<Self, String> {
        let Some((xml, info)) = virsh_reading(seen, "pool", "Storage pool not found")? else {
            return Ok(LibvirtPool(None));
        };
        parse_pool(xml, &info).map(|p| LibvirtPool(Some(p)))
    }
}

/// The `Key: value` lines of `virsh net-info` or `pool-info`.
type Info<'a> = HashMap<&'a str, &'a str>;

/// The XML document (root element `root`) and the `Key: value` lines printed after it, or
/// `None` when virsh said `not_found`.
fn virsh_reading<'a>(
    seen: &'a Observation,
    root: &str,
    not_found: &str,
) -> Result<Option<(&'a str, Info<'a>)>, String> {
    let out = command_output(seen)?;
    if out.rc == 127 {
        return Err("virsh not found: libvirt-clients is not installed".into());
    }
    if out.rc != 0 && out.stderr.contains(not_found) {
        return Ok(None);
    }
    let stdout = stdout_of(seen)?;
    let end = format!("</{root}>");
    let split = stdout
        .rfind(&end)
        .map(|i| i + end.len())
        .ok_or_else(|| format!("no <{root}> document in virsh's output"))?;
    let (xml, info) = stdout.split_at(split);
    let info = info
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    Ok(Some((xml.trim_start(), info)))
}

fn parse_network(xml: &str, info: &Info) -> Result<Network, String> {
    let doc = Document::parse(xml).map_err(|e| format!("invalid network XML: {e}"))?;
    let net = doc.root_element();
    let forward = child(net, "forward").map(|f| Forward {
        mode: match f.attribute("mode").unwrap_or("nat") {
            "nat" => ForwardMode::Nat,
            "route" => ForwardMode::Route,
            "open" => ForwardMode::Open,
            "bridge" => ForwardMode::Bridge,
            "private" => ForwardMode::Private,
            "vepa" => ForwardMode::Vepa,
            "passthrough" => ForwardMode::Passthrough,
            "hostdev" => ForwardMode::Hostdev,
            other => ForwardMode::Other(other.into()),
        },
        dev: attr(Some(f), "dev"),
        interfaces: children(f, "interface")
            .filter_map(|i| attr(Some(i), "dev"))
            .collect(),
        pf: attr(child(f, "pf"), "dev"),
    });
    let bridge = child(net, "bridge")
        .map(|b| {
            Ok::<_, String>(NetworkBridge {
                name: attr(Some(b), "name"),
                stp: b.attribute("stp").map(|s| s == "on"),
                delay: number(Some(b), "delay")?,
            })
        })
        .transpose()?;
    Ok(Network {
        name: text(net, "name")?,
        uuid: text(net, "uuid")?,
        forward,
        bridge,
        mtu: number(child(net, "mtu"), "size")?,
        mac: attr(child(net, "mac"), "address"),
        domain: attr(child(net, "domain"), "name"),
        dns: child(net, "dns").and_then(|d| d.attribute("enable")) != Some("no"),
        ips: children(net, "ip")
            .map(network_ip)
            .collect::<Result<_, _>>()?,
        active: yes(info, "Active")?,
        persistent: yes(info, "Persistent")?,
        autostart: yes(info, "Autostart")?,
        xml: xml.to_string(),
    })
}

fn network_ip(ip: Node) -> Result<NetworkIp, String> {
    let addr: IpAddr = ip_attr(Some(ip), "address")?.ok_or("an <ip> without address")?;
    let len = match (ip.attribute("prefix"), ip.attribute("netmask")) {
        (Some(p), _) => p.parse().map_err(|_| format!("bad prefix {p:?}"))?,
        (None, Some(m)) => netmask_len(m)?,
        // libvirt's default: the classful length for IPv4, 64 for IPv6.
        (None, None) => match addr {
            IpAddr::V4(a) if a.octets()[0] < 128 => 8,
            IpAddr::V4(a) if a.octets()[0] < 192 => 16,
            IpAddr::V4(_) => 24,
            IpAddr::V6(_) => 64,
        },
    };
    let dhcp = child(ip, "dhcp");
    let dhcp_ranges = dhcp
        .into_iter()
        .flat_map(|d| children(d, "range"))
        .map(|r| {
            Ok(DhcpRange {
                start: ip_attr(Some(r), "start")?.ok_or("a DHCP range without start")?,
                end: ip_attr(Some(r), "end")?.ok_or("a DHCP range without end")?,
            })
        })
        .collect::<Result<_, String>>()?;
    let dhcp_hosts = dhcp
        .into_iter()
        .flat_map(|d| children(d, "host"))
        .map(|h| {
            Ok(DhcpHost {
                mac: attr(Some(h), "mac"),
                name: attr(Some(h), "name"),
                ip: ip_attr(Some(h), "ip")?,
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(NetworkIp {
        address: Prefix { addr, len },
        dhcp_ranges,
        dhcp_hosts,
    })
}

/// `255.255.255.0` → 24.
fn netmask_len(mask: &str) -> Result<u8, String> {
    let bits = mask
        .parse::<std::net::Ipv4Addr>()
        .map(u32::from)
        .map_err(|_| format!("bad netmask {mask:?}"))?;
    if bits.leading_ones() + bits.trailing_zeros() != 32 {
        return Err(format!("bad netmask {mask:?}"));
    }
    Ok(bits.leading_ones() as u8)
}

fn parse_pool(xml: &str, info: &Info) -> Result<Pool, String> {
    let doc = Document::parse(xml).map_err(|e| format!("invalid pool XML: {e}"))?;
    let pool = doc.root_element();
    let source = child(pool, "source").map_or_else(PoolSource::default, |s| PoolSource {
        devices: children(s, "device")
            .filter_map(|d| attr(Some(d), "path"))
            .collect(),
        dir: attr(child(s, "dir"), "path"),
        hosts: children(s, "host")
            .filter_map(|h| attr(Some(h), "name"))
            .collect(),
        name: child(s, "name").and_then(|n| n.text()).map(str::to_string),
        format: attr(child(s, "format"), "type"),
    });
    let state = match info.get("State").copied() {
        Some("inactive") => PoolState::Inactive,
        Some("building") => PoolState::Building,
        Some("running") => PoolState::Running,
        Some("degraded") => PoolState::Degraded,
        Some("inaccessible") => PoolState::Inaccessible,
        other => {
            return Err(format!(
                "unexpected pool state {other:?} in `virsh pool-info`"
            ))
        }
    };
    Ok(Pool {
        pool_type: attr(Some(pool), "type").ok_or("a <pool> without type")?,
        name: text(pool, "name")?,
        uuid: text(pool, "uuid")?,
        target_path: child(pool, "target")
            .and_then(|t| child(t, "path"))
            .and_then(|p| p.text())
            .map(str::to_string),
        source,
        capacity: bytes(pool, "capacity")?,
        allocation: bytes(pool, "allocation")?,
        available: bytes(pool, "available")?,
        state,
        persistent: yes(info, "Persistent")?,
        autostart: yes(info, "Autostart")?,
        xml: xml.to_string(),
    })
}

fn child<'a, 'i>(node: Node<'a, 'i>, tag: &str) -> Option<Node<'a, 'i>> {
    node.children().find(|c| c.has_tag_name(tag))
}

fn children<'a, 'i: 'a>(
    node: Node<'a, 'i>,
    tag: &'a str,
) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    node.children().filter(move |c| c.has_tag_name(tag))
}

fn attr(node: Option<Node>, name: &str) -> Option<String> {
    node?.attribute(name).map(str::to_string)
}

/// The text of a required child element (`<name>`, `<uuid>`).
fn text(node: Node, tag: &str) -> Result<String, String> {
    child(node, tag)
        .and_then(|n| n.text())
        .map(|t| t.trim().to_string())
        .ok_or_else(|| format!("no <{tag}> in <{}>", node.tag_name().name()))
}

fn number(node: Option<Node>, name: &str) -> Result<Option<u32>, String> {
    attr(node, name)
        .map(|v| v.parse().map_err(|_| format!("bad {name}={v:?}")))
        .transpose()
}

fn ip_attr(node: Option<Node>, name: &str) -> Result<Option<IpAddr>, String> {
    attr(node, name)
        .map(|v| v.parse().map_err(|_| format!("bad address {name}={v:?}")))
        .transpose()
}

/// A size element, which libvirt always prints in bytes.
fn bytes(node: Node, tag: &str) -> Result<Option<u64>, String> {
    let Some(n) = child(node, tag) else {
        return Ok(None);
    };
    let bad = || format!("unexpected <{tag}>: {:?}", n.text());
    if n.attribute("unit").is_some_and(|u| u != "bytes") {
        return Err(bad());
    }
    n.text()
        .unwrap_or("")
        .trim()
        .parse()
        .map(Some)
        .map_err(|_| bad())
}

/// A `yes`/`no` line of `virsh net-info` or `pool-info`.
fn yes(info: &Info, key: &str) -> Result<bool, String> {
    match info.get(key).copied() {
        Some("yes") => Ok(true),
        Some("no") => Ok(false),
        other => Err(format!("unexpected {key}: {other:?} in virsh's info")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{CommandOutput, ModuleError, Observed};
    use crate::modules::facts::fixture;

    fn network(file: &str) -> Network {
        let out = CommandOutput::ok(&fixture(&format!("libvirt_network/{file}")));
        let n = LibvirtNetwork::parse("", &Observation::Command(out)).unwrap();
        n.0.expect("defined")
    }
    fn pool(file: &str) -> Pool {
        let out = CommandOutput::ok(&fixture(&format!("libvirt_pool/{file}")));
        let p = LibvirtPool::parse("", &Observation::Command(out)).unwrap();
        p.0.expect("defined")
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn prefix(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    #[test]
    fn probes() {
        assert_eq!(
            LibvirtNetwork::probe("default"),
            Probe::Command(
                "LC_ALL=C virsh -c qemu:///system net-dumpxml --inactive --network default \
                 && LC_ALL=C virsh -c qemu:///system net-info --network default"
                    .into()
            )
        );
        assert_eq!(
            LibvirtPool::probe("my pool"),
            Probe::Command(
                "LC_ALL=C virsh -c qemu:///system pool-dumpxml --inactive --pool 'my pool' \
                 && LC_ALL=C virsh -c qemu:///system pool-info --pool 'my pool'"
                    .into()
            )
        );
    }

    #[test]
    fn nat_network() {
        let n = network("nat.txt");
        assert_eq!(n.name, "nat1");
        assert_eq!(n.uuid, "aeb943db-2f4c-46d7-a87c-dc9f7d8ad822");
        assert_eq!(
            n.forward,
            Some(Forward {
                mode: ForwardMode::Nat,
                dev: Some("eth0".into()),
                interfaces: vec!["eth0".into()],
                pf: None,
            })
        );
        assert_eq!(
            n.bridge,
            Some(NetworkBridge {
                name: Some("virbr1".into()),
                stp: Some(true),
                delay: Some(0),
            })
        );
        assert_eq!(
            (n.mtu, n.mac.as_deref()),
            (Some(9000), Some("52:54:00:aa:bb:01"))
        );
        assert_eq!((n.domain.as_deref(), n.dns), (Some("lab.example"), true));
        assert_eq!((n.active, n.persistent, n.autostart), (false, true, true));
        let v4 = n.ip(Family::Inet).unwrap();
        assert_eq!(v4.address, prefix("192.168.100.1/24"));
        assert_eq!(
            v4.dhcp_ranges,
            [
                DhcpRange {
                    start: ip("192.168.100.100"),
                    end: ip("192.168.100.199")
                },
                DhcpRange {
                    start: ip("192.168.100.210"),
                    end: ip("192.168.100.220")
                },
            ]
        );
        assert_eq!(
            v4.dhcp_hosts,
            [
                DhcpHost {
                    mac: Some("52:54:00:00:00:10".into()),
                    name: Some("vm10".into()),
                    ip: Some(ip("192.168.100.10")),
                },
                DhcpHost {
                    mac: Some("52:54:00:00:00:11".into()),
                    name: None,
                    ip: Some(ip("192.168.100.11")),
                },
            ]
        );
        let v6 = n.ip(Family::Inet6).unwrap();
        assert_eq!(v6.address, prefix("fd00:100::1/64"));
        assert_eq!(v6.dhcp_ranges[0].end, ip("fd00:100::1ff"));
        assert!(n.xml.starts_with("<network>") && n.xml.ends_with("</network>"));
        assert!(n.xml.contains("<port start='1024' end='65535'/>"));
    }

    #[test]
    fn bridged_routed_and_default_networks() {
        let b = network("bridge.txt");
        let fwd = b.forward.as_ref().unwrap();
        assert_eq!((&fwd.mode, fwd.dev.as_ref()), (&ForwardMode::Bridge, None));
        assert_eq!(b.bridge_name(), Some("br0"));
        assert_eq!(b.bridge.as_ref().unwrap().stp, None);
        assert!(b.ips.is_empty() && b.mac.is_none() && !b.active);
        let r = network("route.txt");
        let fwd = r.forward.as_ref().unwrap();
        assert_eq!(
            (&fwd.mode, fwd.dev.as_deref()),
            (&ForwardMode::Route, Some("br0"))
        );
        assert_eq!(r.ips[0].address, prefix("10.55.0.1/24"));
        let d = network("default.txt");
        assert_eq!(d.forward.as_ref().unwrap().mode, ForwardMode::Nat);
        assert_eq!(d.bridge_name(), Some("virbr0"));
        assert_eq!(d.ips[0].address, prefix("192.168.122.1/24"));
        assert_eq!((d.active, d.autostart), (false, false));
    }

    #[test]
    fn isolated_transient_macvtap_and_hostdev_networks() {
        let i = network("isolated-active.txt");
        assert_eq!(i.forward, None);
        assert!(i.active && !i.dns);
        let br = i.bridge.as_ref().unwrap();
        assert_eq!((br.stp, br.delay), (Some(false), Some(2)));
        assert_eq!(i.ips[0].address, prefix("10.99.0.1/24"));
        assert!(i.ips[0].dhcp_ranges.is_empty());
        let t = network("transient.txt");
        assert!(t.active && !t.persistent && t.ips.is_empty());
        let m = network("macvtap.txt");
        assert_eq!(m.bridge, None);
        assert_eq!(m.forward.as_ref().unwrap().interfaces, ["eth1", "eth2"]);
        let h = network("hostdev.txt");
        let fwd = h.forward.unwrap();
        assert_eq!(
            (fwd.mode, fwd.pf.as_deref()),
            (ForwardMode::Hostdev, Some("eth3"))
        );
    }

    #[test]
    fn pools() {
        let d = pool("dir-active.txt");
        assert_eq!((d.pool_type.as_str(), d.name.as_str()), ("dir", "images"));
        assert_eq!(d.target_path.as_deref(), Some("/tmp/kf-images"));
        assert_eq!(d.source, PoolSource::default());
        assert_eq!(
            (d.capacity, d.allocation, d.available),
            (Some(270553174016), Some(22114840576), Some(248438333440))
        );
        assert!(d.state.active() && d.persistent && d.autostart);
        let f = pool("fs.txt");
        assert_eq!(f.source.devices, ["/dev/vdb1"]);
        assert_eq!(f.source.format.as_deref(), Some("ext4"));
        assert_eq!((f.state, f.capacity), (PoolState::Inactive, Some(0)));
        assert!(!f.state.active() && !f.autostart);
        let l = pool("logical.txt");
        assert_eq!(l.source.name.as_deref(), Some("vg0"));
        assert_eq!(l.source.format.as_deref(), Some("lvm2"));
        assert_eq!(l.target_path.as_deref(), Some("/dev/vg0"));
        let n = pool("netfs.txt");
        assert_eq!(n.source.hosts, ["nas.example"]);
        assert_eq!(n.source.dir.as_deref(), Some("/export/images"));
        assert_eq!(n.source.format.as_deref(), Some("nfs"));
        assert!(n.xml.starts_with("<pool type='netfs'>"));
    }

    /// What virsh printed for a missing network or pool, with no daemon, and without virsh.
    #[test]
    fn absent_and_failures() {
        let failed =
            |file: &str, rc| Observation::Command(CommandOutput::failed(rc, &fixture(file)));
        let o = Observed::new()
            .with_fact::<LibvirtNetwork>("nosuch", failed("libvirt_network/not-found.stderr", 1))
            .with_fact::<LibvirtPool>("nosuch", failed("libvirt_pool/not-found.stderr", 1))
            .with_fact::<LibvirtNetwork>("down", failed("libvirt_network/no-daemon.stderr", 1))
            .with_fact::<LibvirtNetwork>("none", failed("libvirt_network/no-virsh.stderr", 127))
            .with_fact::<LibvirtPool>("other", failed("libvirt_network/not-found.stderr", 1));
        assert_eq!(o.fact::<LibvirtNetwork>("nosuch").unwrap().get(), None);
        assert_eq!(o.fact::<LibvirtPool>("nosuch").unwrap().get(), None);
        let fails = |e: ModuleError, says: &str| match e {
            ModuleError::Host(m) => assert!(m.contains(says), "{m}"),
            other => panic!("{other:?}"),
        };
        fails(
            o.fact::<LibvirtNetwork>("down").unwrap_err(),
            "exit code 1: error: Failed to connect socket to '/var/run/libvirt/libvirt-sock'",
        );
        fails(
            o.fact::<LibvirtNetwork>("none").unwrap_err(),
            "virsh not found: libvirt-clients is not installed",
        );
        // A network's "not found" is not a pool's.
        fails(
            o.fact::<LibvirtPool>("other").unwrap_err(),
            "Network not found",
        );
    }

    #[test]
    fn netmasks() {
        assert_eq!(netmask_len("255.255.255.0"), Ok(24));
        assert_eq!(netmask_len("255.255.240.0"), Ok(20));
        assert_eq!(netmask_len("0.0.0.0"), Ok(0));
        assert!(netmask_len("255.0.255.0").is_err());
        assert!(netmask_len("fff").is_err());
    }
}
