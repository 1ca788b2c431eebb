//! iproute2: the host's links, addresses and routes, read as JSON (`ip -j`).
//!
//! Three facts, one command each, all host-wide (key `()`): [`IpLinks`] says which devices exist
//! and how they are wired (bridges and their ports, VXLAN tunnels), [`IpAddrs`] adds the
//! addresses on them, [`IpRoutes`] is the main routing table of both families. JSON because its
//! keys are stable across iproute2 versions and it carries the per-kind details
//! (`linkinfo.info_data`) that the text form prints as free-form words.
//!
//! Only what a planner decides on is typed. Counters, timers and address lifetimes, which change
//! from one reading to the next on an unchanged host, are not kept.

use crate::module::fact::{stdout_of, Fact};
use crate::module::{Observation, Probe};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

/// Every link with its kind-specific details, from `ip -j -d link show`.
#[derive(Debug, Clone, PartialEq)]
pub struct IpLinks {
    pub links: Vec<Link>,
}

/// Every link with its addresses, from `ip -j -d addr show`. `-d` makes each interface carry the
/// same [`Link`] as [`IpLinks`], so a planner that needs addresses and kinds reads one fact.
#[derive(Debug, Clone, PartialEq)]
pub struct IpAddrs {
    pub interfaces: Vec<Interface>,
}

/// The main routing table, IPv4 then IPv6, from `ip -j -4 route show table main` and
/// `ip -j -6 route show table main` (`ip route` alone lists IPv4 only).
#[derive(Debug, Clone, PartialEq)]
pub struct IpRoutes {
    pub routes: Vec<Route>,
}

/// One network device.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawLink")]
pub struct Link {
    pub name: String,
    pub ifindex: u32,
    /// The interface flags as printed: `UP` (administratively up), `LOWER_UP` (carrier),
    /// `NO-CARRIER`, `BROADCAST`, `POINTOPOINT`, ...
    pub flags: Vec<String>,
    pub mtu: u32,
    pub operstate: OperState,
    /// The link-layer address; `None` for devices without one (a `tun` in tun mode).
    pub mac: Option<String>,
    /// The bridge (or bond) this device is a port of.
    pub master: Option<String>,
    /// The device this one is tied to when it is in the same namespace: a veth's peer.
    pub link: Option<String>,
    /// What kind of virtual device it is; `None` for physical NICs and loopback.
    pub kind: Option<LinkKind>,
    /// The kind of the master's port (`bridge`, `bond`) when the device is enslaved.
    pub port_kind: Option<String>,
    /// The port's settings when the master is a bridge.
    pub bridge_port: Option<BridgePort>,
}

/// The operational state (RFC 2863) as `ip` prints it. Loopback, tun and VXLAN devices that are
/// up report `UNKNOWN`: test [`Link::is_up`] for the administrative state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum OperState {
    Unknown,
    NotPresent,
    Down,
    LowerLayerDown,
    Testing,
    Dormant,
    Up,
}

/// A virtual device's kind (`linkinfo.info_kind`) and the details of the kinds planners manage.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkKind {
    Bridge(BridgeInfo),
    Vxlan(VxlanInfo),
    Tun(TunInfo),
    /// Any other kind (`veth`, `dummy`, `vlan`, `bond`, `macvtap`, ...), by name; its details are
    /// not read.
    Other(String),
}

/// A bridge's settings. The kernel keeps times in centiseconds (`ip link add br0 type bridge
/// forward_delay 400` is 4 s); they are converted here so that planners compare durations.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BridgeInfo {
    /// Spanning tree on (`stp_state` 1: in the kernel, 2: by a user-space daemon).
    #[serde(rename = "stp_state", deserialize_with = "nonzero")]
    pub stp: bool,
    #[serde(deserialize_with = "centiseconds")]
    pub forward_delay: Duration,
    #[serde(deserialize_with = "centiseconds")]
    pub hello_time: Duration,
    #[serde(deserialize_with = "centiseconds")]
    pub max_age: Duration,
    /// How long learned addresses stay. While a spanning-tree topology change is under way the
    /// kernel reports the short ageing it uses meanwhile (twice the forward delay), not the
    /// configured one: see [`BridgeInfo::topology_change`].
    #[serde(deserialize_with = "centiseconds")]
    pub ageing_time: Duration,
    #[serde(deserialize_with = "nonzero")]
    pub topology_change: bool,
    pub priority: u16,
    #[serde(deserialize_with = "nonzero")]
    pub vlan_filtering: bool,
    #[serde(deserialize_with = "nonzero")]
    pub mcast_snooping: bool,
}

/// A VXLAN device's settings. iproute2 prints IPv6 endpoints under `local6`, `remote6` and
/// `group6`; they land in the same fields.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct VxlanInfo {
    /// The VNI (0 for an `external` device, whose VNI comes with each packet's metadata).
    pub id: u32,
    /// The source address of the tunnel.
    #[serde(alias = "local6")]
    pub local: Option<IpAddr>,
    /// The one peer of a point-to-point tunnel. Meshes leave it unset and list their peers as
    /// all-zero forwarding entries instead (see [`super::bridge::BridgeFdb::flood_remotes`]).
    #[serde(alias = "remote6")]
    pub remote: Option<IpAddr>,
    /// The multicast group that floods unknown destinations.
    #[serde(alias = "group6")]
    pub group: Option<IpAddr>,
    /// The underlay device (`dev` when creating it).
    #[serde(rename = "link")]
    pub dev: Option<String>,
    /// The UDP destination port (4789 by IANA, 8472 by the Linux default).
    #[serde(rename = "port")]
    pub dstport: u16,
    /// Source addresses of received packets are learned into the forwarding database.
    pub learning: bool,
    /// Collect-metadata mode (`external`).
    #[serde(default)]
    pub external: bool,
}

/// A tun/tap device's settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TunInfo {
    #[serde(rename = "type")]
    pub mode: TunMode,
    /// Survives the process that opened it (`ip tuntap add` creates persistent devices).
    pub persist: bool,
    pub multi_queue: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TunMode {
    Tun,
    Tap,
}

/// A bridge port's settings (`linkinfo.info_slave_data`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BridgePort {
    pub state: PortState,
    pub priority: u16,
    pub cost: u32,
    pub learning: bool,
    pub flood: bool,
    pub hairpin: bool,
    /// ARP/ND suppression, for VXLAN ports of EVPN bridges.
    #[serde(default)]
    pub neigh_suppress: bool,
    #[serde(default)]
    pub isolated: bool,
}

/// A bridge port's spanning-tree state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortState {
    Disabled,
    Listening,
    Learning,
    Forwarding,
    Blocking,
}

/// One interface of [`IpAddrs`]: the link and its addresses.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Interface {
    #[serde(flatten)]
    pub link: Link,
    #[serde(rename = "addr_info")]
    pub addresses: Vec<Address>,
}

/// One address of an interface.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Address {
    pub family: Family,
    pub local: IpAddr,
    pub prefixlen: u8,
    /// The other end of a point-to-point address (`ip addr add A peer B`).
    #[serde(rename = "address")]
    pub peer: Option<IpAddr>,
    pub broadcast: Option<IpAddr>,
    pub scope: Scope,
    pub label: Option<String>,
    /// Has a lifetime (DHCP, SLAAC, or `valid_lft`): it goes away unless renewed.
    #[serde(default)]
    pub dynamic: bool,
    /// IPv6 duplicate address detection has not finished: the address is not usable yet.
    #[serde(default)]
    pub tentative: bool,
    #[serde(default)]
    pub deprecated: bool,
    #[serde(default)]
    pub noprefixroute: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Inet,
    Inet6,
}

/// An address or route scope. `ip` prints `global` for the kernel's `universe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Global,
    Site,
    Link,
    Host,
    Nowhere,
    /// A numeric scope without a name in `/etc/iproute2/rt_scopes`.
    #[serde(other)]
    Other,
}

/// One route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub family: Family,
    pub kind: RouteType,
    /// The destination; the default route is `0.0.0.0/0` or `::/0`.
    pub dst: Prefix,
    /// `None` for on-link routes, and for multipath routes (whose next hops are not read).
    pub gateway: Option<IpAddr>,
    /// `None` for routes without a device (`unreachable`, multipath).
    pub dev: Option<String>,
    /// Who installed it: `kernel`, `static`, `dhcp`, `ra`, ... (`boot` when `ip` prints none).
    pub protocol: String,
    pub scope: Scope,
    pub prefsrc: Option<IpAddr>,
    /// The metric (`0` when `ip` prints none).
    pub metric: u32,
    /// Route flags as printed: `onlink`, `linkdown`, ...
    pub flags: Vec<String>,
}

/// The route type, printed by `ip` only when it is not `unicast`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteType {
    Unicast,
    Local,
    Broadcast,
    Anycast,
    Multicast,
    Blackhole,
    Unreachable,
    Prohibit,
    Throw,
    Nat,
    Xresolve,
}

/// An address with a prefix length: `192.168.50.0/24`. Parses and prints as `ip` writes it (a
/// bare address is a host prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl Link {
    /// Administratively up (`ip link set DEV up`).
    pub fn is_up(&self) -> bool {
        self.has_flag("UP")
    }
    /// The lower layer reports a carrier.
    pub fn has_carrier(&self) -> bool {
        self.has_flag("LOWER_UP")
    }
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
    /// The kind's name (`bridge`, `vxlan`, `veth`, ...).
    pub fn kind_name(&self) -> Option<&str> {
        self.kind.as_ref().map(LinkKind::name)
    }
    pub fn bridge(&self) -> Option<&BridgeInfo> {
        match &self.kind {
            Some(LinkKind::Bridge(b)) => Some(b),
            _ => None,
        }
    }
    pub fn vxlan(&self) -> Option<&VxlanInfo> {
        match &self.kind {
            Some(LinkKind::Vxlan(v)) => Some(v),
            _ => None,
        }
    }
}

impl LinkKind {
    pub fn name(&self) -> &str {
        match self {
            LinkKind::Bridge(_) => "bridge",
            LinkKind::Vxlan(_) => "vxlan",
            LinkKind::Tun(_) => "tun",
            LinkKind::Other(name) => name,
        }
    }
}

impl IpLinks {
    pub fn get(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }
    /// The ports of a bridge (or bond), in ifindex order.
    pub fn ports<'a>(&'a self, master: &'a str) -> impl Iterator<Item = &'a Link> + 'a {
        self.links
            .iter()
            .filter(move |l| l.master.as_deref() == Some(master))
    }
    /// The devices of one kind (`bridge`, `vxlan`, ...).
    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Link> + 'a {
        self.links
            .iter()
            .filter(move |l| l.kind_name() == Some(kind))
    }
    /// The VXLAN device carrying a VNI, whatever its name.
    pub fn vxlan_by_id(&self, vni: u32) -> Option<&Link> {
        self.links
            .iter()
            .find(|l| l.vxlan().is_some_and(|v| v.id == vni && !v.external))
    }
}

impl IpAddrs {
    pub fn get(&self, name: &str) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.link.name == name)
    }
    /// The interface holding an address, with the address (to find the local VTEP address's
    /// device, or an address already configured elsewhere).
    pub fn owner_of(&self, addr: IpAddr) -> Option<(&Interface, &Address)> {
        self.interfaces
            .iter()
            .find_map(|i| i.addresses.iter().find(|a| a.local == addr).map(|a| (i, a)))
    }
}

impl Interface {
    /// Whether the interface has exactly this address and prefix length.
    pub fn has(&self, cidr: Prefix) -> bool {
        self.addresses.iter().any(|a| a.prefix() == cidr)
    }
    /// The global (not link-local, not loopback) addresses.
    pub fn global_addresses(&self) -> impl Iterator<Item = &Address> {
        self.addresses.iter().filter(|a| a.scope == Scope::Global)
    }
}

impl Address {
    /// The address with its prefix length (`192.168.50.1/24`), as netplan and `ip addr add`
    /// write it.
    pub fn prefix(&self) -> Prefix {
        Prefix {
            addr: self.local,
            len: self.prefixlen,
        }
    }
}

impl IpRoutes {
    /// The default route of a family that the kernel uses: the unicast one with the lowest
    /// metric.
    pub fn default_route(&self, family: Family) -> Option<&Route> {
        self.routes
            .iter()
            .filter(|r| r.family == family && r.kind == RouteType::Unicast && r.dst.len == 0)
            .min_by_key(|r| r.metric)
    }
    /// The routes through a device.
    pub fn via_dev<'a>(&'a self, dev: &'a str) -> impl Iterator<Item = &'a Route> + 'a {
        self.routes
            .iter()
            .filter(move |r| r.dev.as_deref() == Some(dev))
    }
}

impl Route {
    /// The gateway is reached on the device without a covering on-link route (`onlink`).
    pub fn onlink(&self) -> bool {
        self.flags.iter().any(|f| f == "onlink")
    }
}

impl Prefix {
    /// The whole address space of a family: the destination of a default route.
    pub fn any(family: Family) -> Prefix {
        let addr = match family {
            Family::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Family::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        Prefix { addr, len: 0 }
    }
    pub fn family(&self) -> Family {
        match self.addr {
            IpAddr::V4(_) => Family::Inet,
            IpAddr::V6(_) => Family::Inet6,
        }
    }
}

impl FromStr for Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            "" => max,
            n => n
                .parse()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| format!("`{s}`: the prefix length must be 0 to {max}"))?,
        };
        Ok(Prefix { addr, len })
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl Fact for IpLinks {
    const NAME: &'static str = "ip links";
    type Key = ();
    fn probe(_: &()) -> Probe {
        Probe::Command("ip -j -d link show".into())
    }
    fn parse(_: &(), seen: &Observation) -> Result<Self, String> {
        Ok(IpLinks {
            links: json(stdout_of(seen)?)?,
        })
    }
}

impl Fact for IpAddrs {
    const NAME: &'static str = "ip addresses";
    type Key = ();
    fn probe(_: &()) -> Probe {
        Probe::Command("ip -j -d addr show".into())
    }
    fn parse(_: &(), seen: &Observation) -> Result<Self, String> {
        Ok(IpAddrs {
            interfaces: json(stdout_of(seen)?)?,
        })
    }
}

impl Fact for IpRoutes {
    const NAME: &'static str = "ip routes";
    type Key = ();
    /// Two commands, one per family, because `ip route` has no way to list both at once.
    fn probe(_: &()) -> Probe {
        Probe::Command("ip -j -4 route show table main && ip -j -6 route show table main".into())
    }
    fn parse(_: &(), seen: &Observation) -> Result<Self, String> {
        let out = stdout_of(seen)?;
        let lists: Vec<Vec<RawRoute>> = serde_json::Deserializer::from_str(out)
            .into_iter()
            .collect::<Result<_, _>>()
            .map_err(|e| format!("unexpected `ip -j route` output: {e}"))?;
        let [v4, v6]: [Vec<RawRoute>; 2] = lists.try_into().map_err(|l: Vec<_>| {
            format!("expected two route lists (IPv4, IPv6), got {}", l.len())
        })?;
        let mut routes = Vec::new();
        for (family, list) in [(Family::Inet, v4), (Family::Inet6, v6)] {
            for raw in list {
                routes.push(raw.into_route(family)?);
            }
        }
        Ok(IpRoutes { routes })
    }
}

/// `ip -j` output as a list of `T`.
fn json<T: DeserializeOwned>(out: &str) -> Result<Vec<T>, String> {
    serde_json::from_str(out).map_err(|e| format!("unexpected `ip -j` output: {e}"))
}

/// A link as `ip -j` prints it, before its kind-specific details are typed.
#[derive(Deserialize)]
struct RawLink {
    ifname: String,
    ifindex: u32,
    flags: Vec<String>,
    mtu: u32,
    operstate: OperState,
    address: Option<String>,
    master: Option<String>,
    link: Option<String>,
    linkinfo: Option<RawLinkInfo>,
}

#[derive(Default, Deserialize)]
struct RawLinkInfo {
    info_kind: Option<String>,
    info_data: Option<serde_json::Value>,
    info_slave_kind: Option<String>,
    info_slave_data: Option<serde_json::Value>,
}

impl TryFrom<RawLink> for Link {
    type Error = String;
    fn try_from(raw: RawLink) -> Result<Self, String> {
        let name = raw.ifname;
        let info = raw.linkinfo.unwrap_or_default();
        let kind = match info.info_kind {
            None => None,
            Some(k) => Some(match k.as_str() {
                "bridge" => LinkKind::Bridge(details(&name, "bridge", info.info_data)?),
                "vxlan" => LinkKind::Vxlan(details(&name, "vxlan", info.info_data)?),
                "tun" => LinkKind::Tun(details(&name, "tun", info.info_data)?),
                _ => LinkKind::Other(k),
            }),
        };
        let bridge_port = match info.info_slave_kind.as_deref() {
            Some("bridge") => Some(details(&name, "bridge port", info.info_slave_data)?),
            _ => None,
        };
        Ok(Link {
            name,
            ifindex: raw.ifindex,
            flags: raw.flags,
            mtu: raw.mtu,
            operstate: raw.operstate,
            mac: raw.address,
            master: raw.master,
            link: raw.link,
            kind,
            port_kind: info.info_slave_kind,
            bridge_port,
        })
    }
}

/// The kind-specific details of a link (`info_data`, `info_slave_data`) as `T`.
fn details<T: DeserializeOwned>(
    link: &str,
    what: &str,
    data: Option<serde_json::Value>,
) -> Result<T, String> {
    let data = data.unwrap_or_default();
    T::deserialize(&data).map_err(|e| format!("{link}: unexpected {what} details {data}: {e}"))
}

/// A route as `ip -j route` prints it: fields at their default are left out.
#[derive(Deserialize)]
struct RawRoute {
    #[serde(rename = "type")]
    kind: Option<RouteType>,
    dst: String,
    gateway: Option<IpAddr>,
    dev: Option<String>,
    protocol: Option<String>,
    scope: Option<Scope>,
    prefsrc: Option<IpAddr>,
    metric: Option<u32>,
    #[serde(default)]
    flags: Vec<String>,
}

impl RawRoute {
    fn into_route(self, family: Family) -> Result<Route, String> {
        let dst = match self.dst.as_str() {
            "default" => Prefix::any(family),
            d => d.parse::<Prefix>()?,
        };
        Ok(Route {
            family,
            kind: self.kind.unwrap_or(RouteType::Unicast),
            dst,
            gateway: self.gateway,
            dev: self.dev,
            protocol: self.protocol.unwrap_or_else(|| "boot".into()),
            scope: self.scope.unwrap_or(Scope::Global),
            prefsrc: self.prefsrc,
            metric: self.metric.unwrap_or(0),
            flags: self.flags,
        })
    }
}

/// A kernel boolean printed as a number (`"stp_state": 1`).
fn nonzero<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(u32::deserialize(d)? != 0)
}

/// A bridge time, which the kernel reports in centiseconds (USER_HZ).
fn centiseconds<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    Ok(Duration::from_millis(u64::deserialize(d)? * 10))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{CommandOutput, ModuleError, Observed};
    use crate::modules::facts::fixture;

    fn seen(file: &str) -> Observation {
        Observation::Command(CommandOutput::ok(&fixture(file)))
    }
    fn links(case: &str) -> IpLinks {
        IpLinks::parse(&(), &seen(&format!("ip_links/{case}.json"))).unwrap()
    }
    fn addrs(case: &str) -> IpAddrs {
        IpAddrs::parse(&(), &seen(&format!("ip_addrs/{case}.json"))).unwrap()
    }
    fn routes(case: &str) -> IpRoutes {
        IpRoutes::parse(&(), &seen(&format!("ip_routes/{case}.json"))).unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn prefix(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    const CASES: [&str; 4] = ["plain", "bridged", "vxlan-mesh", "machine"];

    #[test]
    fn every_fixture_parses() {
        for case in CASES {
            assert!(!links(case).links.is_empty(), "{case}");
            assert!(!addrs(case).interfaces.is_empty(), "{case}");
            assert!(!routes(case).routes.is_empty(), "{case}");
        }
    }

    #[test]
    fn plain_host() {
        let l = links("plain");
        let eth0 = l.get("eth0").unwrap();
        assert_eq!(eth0.kind_name(), Some("veth"));
        assert!(eth0.is_up() && eth0.has_carrier());
        assert_eq!(eth0.operstate, OperState::Up);
        assert_eq!((eth0.mtu, eth0.master.as_deref()), (1500, None));
        let lo = l.get("lo").unwrap();
        assert_eq!((lo.kind.as_ref(), lo.operstate), (None, OperState::Unknown));
        let a = addrs("plain");
        let eth0 = a.get("eth0").unwrap();
        assert_eq!(eth0.addresses.len(), 1);
        let addr = &eth0.addresses[0];
        assert_eq!(addr.prefix(), prefix("10.213.6.11/24"));
        assert_eq!(addr.broadcast, Some(ip("10.213.6.255")));
        assert_eq!((addr.family, addr.scope), (Family::Inet, Scope::Global));
        assert!(!addr.dynamic);
        let r = routes("plain");
        assert_eq!(r.routes.len(), 1);
        assert_eq!(r.default_route(Family::Inet), None);
        assert_eq!(r.routes[0].dst, prefix("10.213.6.0/24"));
        assert_eq!(r.routes[0].prefsrc, Some(ip("10.213.6.11")));
        assert_eq!(r.routes[0].protocol, "kernel");
        assert_eq!(r.routes[0].scope, Scope::Link);
    }

    #[test]
    fn bridge_with_stp_and_ports() {
        let l = links("bridged");
        let br0 = l.get("br0").unwrap();
        assert_eq!(
            br0.bridge(),
            Some(&BridgeInfo {
                stp: true,
                forward_delay: Duration::from_secs(4),
                hello_time: Duration::from_secs(2),
                max_age: Duration::from_secs(20),
                ageing_time: Duration::from_secs(8),
                topology_change: true,
                priority: 32768,
                vlan_filtering: false,
                mcast_snooping: true,
            })
        );
        assert_eq!(br0.mtu, 1450);
        let ports: Vec<_> = l.ports("br0").map(|p| p.name.as_str()).collect();
        assert_eq!(ports, ["veth0", "tap0", "vx100"]);
        let veth0 = l.get("veth0").unwrap();
        assert_eq!(veth0.link.as_deref(), Some("veth1"));
        assert_eq!(veth0.port_kind.as_deref(), Some("bridge"));
        let port = veth0.bridge_port.as_ref().unwrap();
        assert_eq!(
            (port.state, port.cost, port.priority),
            (PortState::Forwarding, 2, 32)
        );
        assert!(port.learning && port.flood && !port.hairpin && !port.neigh_suppress);
        let tap0 = l.get("tap0").unwrap();
        assert!(matches!(
            &tap0.kind,
            Some(LinkKind::Tun(TunInfo {
                mode: TunMode::Tap,
                persist: true,
                multi_queue: false
            }))
        ));
        assert_eq!(tap0.master.as_deref(), Some("br0"));
        let br1 = l.get("br1").unwrap().bridge().unwrap();
        assert!(!br1.stp);
        assert_eq!(br1.forward_delay, Duration::from_secs(15));
        assert_eq!(
            (br1.ageing_time, br1.topology_change),
            (Duration::from_secs(300), false)
        );
        assert!(!l.get("br1").unwrap().is_up());
        assert_eq!(l.of_kind("bridge").count(), 2);
    }

    #[test]
    fn bridge_addresses_and_routes() {
        let a = addrs("bridged");
        let br0 = a.get("br0").unwrap();
        assert_eq!(br0.link.kind_name(), Some("bridge"));
        assert!(br0.has(prefix("192.168.50.2/24")));
        assert!(br0.has(prefix("fd00:50::2/64")));
        assert!(!br0.has(prefix("192.168.50.2/16")));
        let leased = br0
            .addresses
            .iter()
            .find(|a| a.local == ip("192.168.51.2"))
            .unwrap();
        assert!(leased.dynamic);
        assert_eq!(br0.global_addresses().count(), 3);
        let (owner, _) = a.owner_of(ip("10.213.4.12")).unwrap();
        assert_eq!(owner.link.name, "eth0");
        assert!(a.owner_of(ip("10.0.0.1")).is_none());

        let r = routes("bridged");
        let v4 = r.default_route(Family::Inet).unwrap();
        assert_eq!(
            (
                v4.gateway,
                v4.dev.as_deref(),
                v4.protocol.as_str(),
                v4.metric
            ),
            (Some(ip("10.213.4.1")), Some("eth0"), "static", 0)
        );
        let v6 = r.default_route(Family::Inet6).unwrap();
        assert_eq!(
            (v6.gateway, v6.dev.as_deref(), v6.metric, v6.dst),
            (Some(ip("fd00:50::1")), Some("br0"), 1024, prefix("::/0"))
        );
        let onlink = r
            .routes
            .iter()
            .find(|r| r.dst == prefix("172.16.9.0/24"))
            .unwrap();
        assert!(onlink.onlink());
        assert_eq!(onlink.protocol, "boot");
        let via = r
            .routes
            .iter()
            .find(|r| r.dst == prefix("192.168.60.0/24"))
            .unwrap();
        assert_eq!((via.gateway, via.metric), (Some(ip("192.168.50.1")), 100));
        assert!(!via.onlink());
        assert_eq!(r.via_dev("br0").count(), 7);
    }

    #[test]
    fn vxlan_devices() {
        let l = links("vxlan-mesh");
        let vx100 = l.get("vx100").unwrap().vxlan().unwrap();
        assert_eq!(
            vx100,
            &VxlanInfo {
                id: 100,
                local: Some(ip("10.213.4.11")),
                remote: None,
                group: None,
                dev: Some("eth0".into()),
                dstport: 4789,
                learning: false,
                external: false,
            }
        );
        assert_eq!(l.get("vx100").unwrap().master.as_deref(), Some("br0"));
        let vx200 = l.get("vx200").unwrap().vxlan().unwrap();
        assert_eq!((vx200.group, vx200.learning), (Some(ip("239.1.1.1")), true));
        let vx300 = l.get("vx300").unwrap().vxlan().unwrap();
        assert_eq!(
            (vx300.remote, vx300.dstport),
            (Some(ip("10.213.4.12")), 8472)
        );
        let vx600 = l.get("vx600").unwrap().vxlan().unwrap();
        assert_eq!(
            (vx600.local, vx600.remote),
            (Some(ip("fd00:4::11")), Some(ip("fd00:4::12")))
        );
        let vxe = l.get("vxe").unwrap().vxlan().unwrap();
        assert!(vxe.external);
        assert_eq!(l.vxlan_by_id(300).unwrap().name, "vx300");
        assert!(l.vxlan_by_id(0).is_none());
        assert_eq!(l.of_kind("vxlan").count(), 5);
        let tun0 = l.get("tun0").unwrap();
        assert_eq!(tun0.mac, None);
        assert!(matches!(&tun0.kind, Some(LinkKind::Tun(t)) if t.mode == TunMode::Tun));
        let a = addrs("vxlan-mesh");
        let p2p = &a.get("tun0").unwrap().addresses[0];
        assert_eq!(
            (p2p.local, p2p.peer),
            (ip("10.8.0.1"), Some(ip("10.8.0.2")))
        );
        let r = routes("vxlan-mesh");
        let host = r.via_dev("tun0").next().unwrap();
        assert_eq!(host.dst, prefix("10.8.0.2/32"));
        assert_eq!(r.default_route(Family::Inet6), None);
    }

    #[test]
    fn this_machine() {
        let l = links("machine");
        let eth0 = l.get("eth0").unwrap();
        assert_eq!((eth0.kind.as_ref(), eth0.mtu), (None, 1400));
        assert_eq!(eth0.mac.as_deref(), Some("02:fc:00:00:00:01"));
        assert_eq!(l.get("ifb0").unwrap().kind_name(), Some("ifb"));
        let a = addrs("machine");
        let v6: Vec<_> = a
            .get("eth0")
            .unwrap()
            .addresses
            .iter()
            .map(|a| (a.prefix(), a.scope))
            .collect();
        assert_eq!(
            v6[1..],
            [
                (prefix("fd00::2/64"), Scope::Global),
                (prefix("fe80::fc:ff:fe00:1/64"), Scope::Link)
            ]
        );
        let r = routes("machine");
        assert_eq!(
            r.default_route(Family::Inet).unwrap().gateway,
            Some(ip("192.0.2.1"))
        );
        let unreachable = r
            .routes
            .iter()
            .find(|r| r.kind == RouteType::Unreachable)
            .unwrap();
        assert_eq!(
            (unreachable.dst, unreachable.dev.as_ref()),
            (prefix("10.213.0.0/16"), None)
        );
        assert_eq!(
            r.default_route(Family::Inet6).unwrap().gateway,
            Some(ip("fd00::1"))
        );
    }

    #[test]
    fn prefixes() {
        assert_eq!(prefix("10.0.0.5"), prefix("10.0.0.5/32"));
        assert_eq!(prefix("fe80::1").len, 128);
        assert_eq!(prefix("fd00::/64").to_string(), "fd00::/64");
        assert_eq!(Prefix::any(Family::Inet).to_string(), "0.0.0.0/0");
        assert_eq!(prefix("::/0").family(), Family::Inet6);
        assert!("10.0.0.0/33"
            .parse::<Prefix>()
            .unwrap_err()
            .contains("0 to 32"));
        assert!("br0"
            .parse::<Prefix>()
            .unwrap_err()
            .contains("not an IP address"));
    }

    #[test]
    fn probes_and_failures() {
        assert_eq!(
            IpLinks::probe(&()),
            Probe::Command("ip -j -d link show".into())
        );
        assert_eq!(
            IpAddrs::probe(&()),
            Probe::Command("ip -j -d addr show".into())
        );
        let o = Observed::new()
            .with_fact::<IpLinks>(
                &(),
                Observation::Command(CommandOutput::failed(127, "sh: 1: ip: not found\n")),
            )
            .with_fact::<IpAddrs>(&(), Observation::Command(CommandOutput::ok("Usage: ip")))
            .with_fact::<IpRoutes>(&(), Observation::Command(CommandOutput::ok("[]\n")));
        let fails = |r: Result<(), ModuleError>, says: &str| match r {
            Err(ModuleError::Host(m)) => assert!(m.contains(says), "{m}"),
            other => panic!("{other:?}"),
        };
        fails(o.fact::<IpLinks>(&()).map(drop), "ip: not found");
        fails(
            o.fact::<IpAddrs>(&()).map(drop),
            "unexpected `ip -j` output",
        );
        fails(
            o.fact::<IpRoutes>(&()).map(drop),
            "expected two route lists (IPv4, IPv6), got 1",
        );
        let bad_kind = r#"[{"ifindex":3,"ifname":"br9","flags":[],"mtu":1500,"operstate":"DOWN","linkinfo":{"info_kind":"bridge","info_data":{"stp_state":"on"}}}]"#;
        let e =
            IpLinks::parse(&(), &Observation::Command(CommandOutput::ok(bad_kind))).unwrap_err();
        assert!(e.contains("br9: unexpected bridge details"), "{e}");
    }
}
