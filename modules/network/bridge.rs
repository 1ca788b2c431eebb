//! The Linux bridge both `netplan_bridge` and `nm_bridge` configure: one typed model, built and
//! checked once before any host is contacted, so the two renderers share every rule about what a
//! valid bridge is.
//!
//! The parameters are netplan's (`interfaces`, `addresses`, `routes`, `nameservers`,
//! `parameters`), because that is what people write today; `nm_bridge` maps the same model onto
//! NetworkManager keyfiles. Structured parameters arrive as plain YAML ([`ParamKind::Data`]) and
//! are given their shape here, so a malformed route is an argument error naming `routes`, not a
//! deserialization failure.

use crate::module::{shell_quote, Action, ArgError, ModuleError};
use crate::modules::args::Presence;
use crate::modules::facts::ip::{Family, IpAddrs, IpLinks, Prefix};
use crate::params::{ParamKind, ParamSpec};
use serde::Deserialize;
use serde_json::Value;
use std::net::IpAddr;
use std::time::Duration;

/// Smallest MTU of an IPv4 link (RFC 791) and the largest the kernel's bridge accepts.
pub const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=65535;
/// The longest Linux interface name (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

/// How many parameters the bridge modules share.
pub const SHARED_COUNT: usize = 13;

/// The parameters both bridge modules share, in `kvmforge doc` order.
pub const SHARED: [ParamSpec; SHARED_COUNT] = [
    ParamSpec::required(
        "name",
        ParamKind::Str,
        "Bridge device name (`br0`), at most 15 characters",
    ),
    ParamSpec::with_default(
        "state",
        ParamKind::Choice(&["present", "absent"]),
        "present",
        "`absent` removes the bridge's configuration, deletes the device and gives its ports back",
    ),
    ParamSpec::with_default(
        "interfaces",
        ParamKind::Data,
        "[]",
        "Ports: NIC names, or VLAN sub-interfaces `{vlan: ID, link: NIC}` (device `NIC.ID`)",
    )
    .aliases(&["ports"]),
    ParamSpec::with_default(
        "addresses",
        ParamKind::Data,
        "[]",
        "Static addresses in CIDR form (`192.168.121.105/24`); the prefix is required",
    ),
    ParamSpec::with_default(
        "dhcp4",
        ParamKind::Bool,
        "false",
        "Get an IPv4 address by DHCP",
    ),
    ParamSpec::with_default(
        "dhcp6",
        ParamKind::Bool,
        "false",
        "Get an IPv6 address by DHCPv6/router advertisements",
    ),
    ParamSpec::with_default(
        "routes",
        ParamKind::Data,
        "[]",
        "Routes: list of `{to, via, metric, on_link, table}`; `to: default` is the default route",
    ),
    ParamSpec::optional(
        "gateway4",
        ParamKind::Str,
        "Deprecated in netplan: becomes a default route (`routes: [{to: default, via: ...}]`)",
    ),
    ParamSpec::optional(
        "gateway6",
        ParamKind::Str,
        "Deprecated in netplan: becomes an IPv6 default route",
    ),
    ParamSpec::optional(
        "nameservers",
        ParamKind::Data,
        "DNS: `{addresses: [IP, ...], search: [domain, ...]}`",
    ),
    ParamSpec::optional("mtu", ParamKind::Int, "MTU of the bridge (68 to 65535)"),
    ParamSpec::optional(
        "macaddress",
        ParamKind::Str,
        "MAC address of the bridge (`52:54:00:12:34:56`); default: chosen by the kernel",
    ),
    ParamSpec::with_default(
        "parameters",
        ParamKind::Data,
        "{}",
        "Bridge settings `{stp, forward_delay, hello_time, max_age, priority, ageing_time}` \
(seconds); unset ones take the defaults stp: false, forward_delay: 0, hello_time: 2, max_age: 20, \
priority: 32768, ageing_time: 300. Always written out",
    ),
];

/// A module's parameter table: the shared ones, then the module's own (`M` is
/// [`SHARED_COUNT`] + `N`).
pub const fn with_shared<const N: usize, const M: usize>(own: [ParamSpec; N]) -> [ParamSpec; M] {
    assert!(M == SHARED_COUNT + N, "M must be SHARED_COUNT + N");
    let mut out = [SHARED[0]; M];
    let mut i = 0;
    while i < SHARED_COUNT {
        out[i] = SHARED[i];
        i += 1;
    }
    let mut j = 0;
    while j < N {
        out[SHARED_COUNT + j] = own[j];
        j += 1;
    }
    out
}

/// The arguments as they arrive (structured ones still plain YAML): the shared parameters and
/// each module's own (absent from the other module's table, so always `None` there).
#[derive(Debug, Deserialize)]
pub struct RawBridge {
    /// netplan_bridge: the file to write.
    #[serde(default)]
    pub file: Option<String>,
    /// netplan_bridge: the backend netplan renders the bridge for.
    #[serde(default)]
    pub renderer: Option<String>,
    /// netplan_bridge: rewrite other netplan files that configure the bridge's NICs.
    #[serde(default)]
    pub take_over: Option<bool>,
    pub name: String,
    pub state: Presence,
    pub interfaces: Value,
    pub addresses: Value,
    pub dhcp4: bool,
    pub dhcp6: bool,
    pub routes: Value,
    pub gateway4: Option<String>,
    pub gateway6: Option<String>,
    pub nameservers: Option<Value>,
    pub mtu: Option<i64>,
    pub macaddress: Option<String>,
    pub parameters: Value,
}

/// A bridge port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Port {
    /// A NIC enslaved as it is (untagged traffic).
    Nic(String),
    /// A VLAN sub-interface `LINK.ID` created on a NIC and enslaved: the bridge carries that
    /// VLAN's traffic untagged, so guests need not know about tagging.
    Vlan { id: u16, link: String },
}

impl Port {
    /// The device that becomes the bridge's port.
    pub fn device(&self) -> String {
        match self {
            Port::Nic(n) => n.clone(),
            Port::Vlan { id, link } => format!("{link}.{id}"),
        }
    }
    /// The physical NIC under the port.
    pub fn nic(&self) -> &str {
        match self {
            Port::Nic(n) | Port::Vlan { link: n, .. } => n,
        }
    }
}

/// One route through the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `0.0.0.0/0` or `::/0` for a default route.
    pub to: Prefix,
    pub via: Option<IpAddr>,
    pub metric: Option<u32>,
    /// The gateway is reachable on the bridge although no address's subnet covers it.
    pub on_link: bool,
    pub table: Option<u32>,
}

impl Route {
    pub fn is_default(&self) -> bool {
        self.to.len == 0
    }
}

/// DNS settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Nameservers {
    pub addresses: Vec<IpAddr>,
    pub search: Vec<String>,
}

impl Nameservers {
    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty() && self.search.is_empty()
    }
}

/// Bridge (and spanning tree) settings, in seconds where they are times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeParams {
    pub stp: bool,
    pub forward_delay: u32,
    pub hello_time: u32,
    pub max_age: u32,
    pub priority: u32,
    pub ageing_time: u32,
}

impl Default for BridgeParams {
    /// STP off and no forward delay: a hypervisor bridge has one uplink and guests' taps, so
    /// there is no loop for STP to break, and a forward delay only holds every new guest's
    /// network back (NetworkManager's default 15 s; netplan turns STP on whenever `parameters:`
    /// is present). The rest are the kernel's defaults.
    fn default() -> Self {
        BridgeParams {
            stp: false,
            forward_delay: 0,
            hello_time: 2,
            max_age: 20,
            priority: 32768,
            ageing_time: 300,
        }
    }
}

/// A checked bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    pub name: String,
    pub state: Presence,
    pub ports: Vec<Port>,
    pub addresses: Vec<Prefix>,
    pub dhcp4: bool,
    pub dhcp6: bool,
    pub routes: Vec<Route>,
    pub nameservers: Nameservers,
    pub mtu: Option<u32>,
    /// Lower case.
    pub macaddress: Option<String>,
    pub params: BridgeParams,
    /// Notes for the result message (`gateway4` is deprecated, ...).
    pub notes: Vec<String>,
}

impl Bridge {
    /// The VLAN devices the bridge's ports create.
    pub fn vlan_devices(&self) -> Vec<String> {
        self.ports
            .iter()
            .filter(|p| matches!(p, Port::Vlan { .. }))
            .map(Port::device)
            .collect()
    }
    /// The NICs enslaved directly (not through a VLAN).
    pub fn enslaved_nics(&self) -> Vec<&str> {
        self.ports
            .iter()
            .filter_map(|p| match p {
                Port::Nic(n) => Some(n.as_str()),
                Port::Vlan { .. } => None,
            })
            .collect()
    }
    /// Every NIC under the bridge, each once, in order.
    pub fn nics(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for p in &self.ports {
            if !out.contains(&p.nic()) {
                out.push(p.nic());
            }
        }
        out
    }
    /// The devices the change creates: the bridge and its VLAN devices.
    pub fn created_devices(&self) -> Vec<String> {
        let mut out = vec![self.name.clone()];
        out.extend(self.vlan_devices());
        out
    }
    /// The static addresses of one family.
    pub fn addresses_of(&self, family: Family) -> impl Iterator<Item = &Prefix> {
        self.addresses.iter().filter(move |a| a.family() == family)
    }
}

/// A string that is a valid Linux interface name, or an error naming `param`.
pub fn check_ifname(param: &'static str, name: &str) -> Result<(), ArgError> {
    if name.is_empty()
        || name.len() > IFNAME_MAX
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c.is_whitespace() || c == '/' || c == ':' || c == '%' || c.is_control())
    {
        return Err(ArgError::invalid(
            param,
            format!(
                "{param}: {name:?} is not an interface name (1 to {IFNAME_MAX} characters, no \
spaces, `/`, `:` or `%`)"
            ),
        ));
    }
    Ok(())
}

/// A MAC address `xx:xx:xx:xx:xx:xx`, lower-cased.
pub fn check_mac(param: &'static str, mac: &str) -> Result<String, ArgError> {
    let Some(mac) = crate::modules::args::mac_address(mac) else {
        return Err(ArgError::invalid(
            param,
            format!("{param}: {mac:?} is not a MAC address (six hex pairs separated by `:`)"),
        ));
    };
    let first = u8::from_str_radix(&mac[..2], 16).expect("checked hex");
    if first & 1 == 1 {
        return Err(ArgError::invalid(
            param,
            format!("{param}: {mac} is a multicast address; a device needs a unicast one"),
        ));
    }
    Ok(mac)
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn uint(param: &'static str, what: &str, v: &Value) -> Result<u64, ArgError> {
    scalar(v)
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or_else(|| {
            ArgError::invalid(
                param,
                format!("{param}: {what} must be a whole number, got {v}"),
            )
        })
}

fn boolean(param: &'static str, what: &str, v: &Value) -> Result<bool, ArgError> {
    crate::params::parse_bool(v)
        .filter(|_| !v.is_null())
        .ok_or_else(|| {
            ArgError::invalid(param, format!("{param}: {what} must be a boolean, got {v}"))
        })
}

/// A list parameter: a YAML list, or one scalar as a list of one.
fn list<'a>(param: &'static str, v: &'a Value) -> Result<Vec<&'a Value>, ArgError> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(a) => Ok(a.iter().collect()),
        Value::String(_) | Value::Number(_) => Ok(vec![v]),
        _ => Err(ArgError::invalid(
            param,
            format!("{param} must be a list, got a mapping"),
        )),
    }
}

/// A mapping's keys with `-` read as `_` (netplan writes `forward-delay`, `on-link`).
fn mapping<'a>(
    param: &'static str,
    what: &str,
    v: &'a Value,
    known: &[&str],
) -> Result<Vec<(String, &'a Value)>, ArgError> {
    let Value::Object(m) = v else {
        return Err(ArgError::invalid(
            param,
            format!("{param}: {what} must be a mapping, got {v}"),
        ));
    };
    let mut out = Vec::new();
    for (k, val) in m {
        let key = k.replace('-', "_");
        let key = if key == "aging_time" {
            "ageing_time".to_string()
        } else {
            key
        };
        if !known.contains(&key.as_str()) {
            let hint = crate::params::did_you_mean(&key, known.iter().copied())
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            return Err(ArgError::invalid(
                param,
                format!(
                    "{param}: unknown key `{k}` in {what}{hint}; known: {}",
                    known.join(", ")
                ),
            ));
        }
        if out.iter().any(|(o, _)| *o == key) {
            return Err(ArgError::invalid(
                param,
                format!("{param}: `{k}` is given twice in {what}"),
            ));
        }
        out.push((key, val));
    }
    Ok(out)
}

fn ports(v: &Value) -> Result<Vec<Port>, ArgError> {
    const P: &str = "interfaces";
    let mut out: Vec<Port> = Vec::new();
    for item in list(P, v)? {
        let port = match item {
            Value::Object(_) => {
                let mut id = None;
                let mut link = None;
                for (k, val) in mapping(P, "a VLAN port", item, &["vlan", "id", "link"])? {
                    match k.as_str() {
                        "vlan" | "id" => id = Some(uint(P, "vlan", val)?),
                        _ => link = scalar(val),
                    }
                }
                let (Some(id), Some(link)) = (id, link) else {
                    return Err(ArgError::invalid(
                        P,
                        format!("interfaces: a VLAN port needs `vlan` and `link`, got {item}"),
                    ));
                };
                if !(1..=4094).contains(&id) {
                    return Err(ArgError::invalid(
                        P,
                        format!("interfaces: VLAN id {id} on {link} is outside 1..4094"),
                    ));
                }
                check_ifname(P, &link)?;
                let port = Port::Vlan {
                    id: id as u16,
                    link,
                };
                check_ifname(P, &port.device()).map_err(|_| {
                    ArgError::invalid(
                        P,
                        format!(
                            "interfaces: the VLAN device name {:?} is longer than {IFNAME_MAX} \
characters",
                            port.device()
                        ),
                    )
                })?;
                port
            }
            other => {
                let name = scalar(other).ok_or_else(|| {
                    ArgError::invalid(P, format!("interfaces: {other} is not an interface"))
                })?;
                check_ifname(P, &name)?;
                Port::Nic(name)
            }
        };
        if out.iter().any(|p| p.device() == port.device()) {
            return Err(ArgError::invalid(
                P,
                format!("interfaces: {} is listed twice", port.device()),
            ));
        }
        out.push(port);
    }
    Ok(out)
}

fn address(param: &'static str, s: &str) -> Result<Prefix, ArgError> {
    if !s.contains('/') {
        return Err(ArgError::invalid(
            param,
            format!("{param}: {s} has no prefix length (write it as `{s}/24` or whatever the subnet is)"),
        ));
    }
    s.parse::<Prefix>()
        .map_err(|e| ArgError::invalid(param, format!("{param}: {e}")))
}

fn ip(param: &'static str, what: &str, s: &str) -> Result<IpAddr, ArgError> {
    s.trim().parse().map_err(|_| {
        ArgError::invalid(param, format!("{param}: {what} {s:?} is not an IP address"))
    })
}

/// The IP version of an address.
pub fn family_of(ip: &IpAddr) -> Family {
    if ip.is_ipv4() {
        Family::Inet
    } else {
        Family::Inet6
    }
}

/// Whether `addr` lies in the subnet of `net`.
pub fn in_subnet(net: &Prefix, addr: &IpAddr) -> bool {
    match (net.addr, addr) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = if net.len == 0 {
                0
            } else {
                u32::MAX << (32 - net.len)
            };
            u32::from(n) & mask == u32::from(*a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = if net.len == 0 {
                0
            } else {
                u128::MAX << (128 - net.len)
            };
            u128::from(n) & mask == u128::from(*a) & mask
        }
        _ => false,
    }
}

fn routes(v: &Value) -> Result<Vec<Route>, ArgError> {
    const P: &str = "routes";
    let mut out = Vec::new();
    for item in list(P, v)? {
        let mut to = None;
        let mut via = None;
        let mut metric = None;
        let mut on_link = false;
        let mut table = None;
        for (k, val) in mapping(
            P,
            "a route",
            item,
            &["to", "via", "metric", "on_link", "table"],
        )? {
            match k.as_str() {
                "to" => to = Some(scalar(val).unwrap_or_default()),
                "via" => via = Some(ip(P, "via", &scalar(val).unwrap_or_default())?),
                "metric" => {
                    metric =
                        Some(u32::try_from(uint(P, "metric", val)?).map_err(|_| {
                            ArgError::invalid(P, "routes: metric must fit in 32 bits")
                        })?)
                }
                "on_link" => on_link = boolean(P, "on_link", val)?,
                _ => {
                    let t = uint(P, "table", val)?;
                    if !(1..=u32::MAX as u64).contains(&t) {
                        return Err(ArgError::invalid(
                            P,
                            "routes: table must be 1 to 4294967295",
                        ));
                    }
                    table = Some(t as u32);
                }
            }
        }
        let to = to.ok_or_else(|| ArgError::invalid(P, format!("routes: {item} has no `to`")))?;
        let to = match to.as_str() {
            "default" => Prefix::any(match via {
                Some(IpAddr::V6(_)) => Family::Inet6,
                _ => Family::Inet,
            }),
            s => {
                let p: Prefix = s
                    .parse()
                    .map_err(|e| ArgError::invalid(P, format!("routes: to: {e}")))?;
                if p.addr != network(&p) {
                    return Err(ArgError::invalid(
                        P,
                        format!(
                            "routes: to: {s} has host bits set (the network is {})",
                            Prefix {
                                addr: network(&p),
                                len: p.len
                            }
                        ),
                    ));
                }
                p
            }
        };
        if let Some(via) = via {
            if family_of(&via) != to.family() {
                return Err(ArgError::invalid(
                    P,
                    format!("routes: via {via} and to {to} are of different IP versions"),
                ));
            }
        }
        out.push(Route {
            to,
            via,
            metric,
            on_link,
            table,
        });
    }
    Ok(out)
}

/// The network address of a prefix (host bits cleared).
pub fn network(p: &Prefix) -> IpAddr {
    match p.addr {
        IpAddr::V4(a) => {
            let mask = if p.len == 0 {
                0
            } else {
                u32::MAX << (32 - p.len)
            };
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = if p.len == 0 {
                0
            } else {
                u128::MAX << (128 - p.len)
            };
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

fn nameservers(v: Option<&Value>) -> Result<Nameservers, ArgError> {
    const P: &str = "nameservers";
    let mut out = Nameservers::default();
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(out);
    };
    for (k, val) in mapping(P, "nameservers", v, &["addresses", "search"])? {
        let mut items = Vec::new();
        for item in list(P, val)? {
            let s = scalar(item).ok_or_else(|| {
                ArgError::invalid(P, format!("nameservers: {item} is not a scalar"))
            })?;
            // A list rendered by a template reads back as one: `"{{default dns ''}}"` is
            // "8.8.8.8 1.1.1.1", or nothing at all.
            items.extend(
                s.split(|c: char| c.is_whitespace() || c == ',')
                    .filter(|x| !x.is_empty())
                    .map(str::to_string),
            );
        }
        for s in items {
            if k == "addresses" {
                out.addresses.push(ip(P, "address", &s)?);
            } else {
                if s.is_empty() || s.contains(char::is_whitespace) || s.contains(';') {
                    return Err(ArgError::invalid(
                        P,
                        format!("nameservers: search domain {s:?} is not a domain name"),
                    ));
                }
                out.search.push(s);
            }
        }
    }
    Ok(out)
}

fn params(v: &Value) -> Result<BridgeParams, ArgError> {
    const P: &str = "parameters";
    let mut out = BridgeParams::default();
    if v.is_null() {
        return Ok(out);
    }
    let keys = [
        "stp",
        "forward_delay",
        "hello_time",
        "max_age",
        "priority",
        "ageing_time",
    ];
    let mut fd_given = false;
    for (k, val) in mapping(P, "parameters", v, &keys)? {
        let ranged = |lo: u64, hi: u64| -> Result<u32, ArgError> {
            let n = uint(P, &k, val)?;
            if !(lo..=hi).contains(&n) {
                return Err(ArgError::invalid(
                    P,
                    format!("parameters: {k} must be {lo} to {hi}, got {n}"),
                ));
            }
            Ok(n as u32)
        };
        match k.as_str() {
            "stp" => out.stp = boolean(P, "stp", val)?,
            "forward_delay" => {
                fd_given = true;
                out.forward_delay = ranged(0, 30)?
            }
            "hello_time" => out.hello_time = ranged(1, 10)?,
            "max_age" => out.max_age = ranged(6, 40)?,
            "priority" => out.priority = ranged(0, 65535)?,
            _ => out.ageing_time = ranged(0, 1_000_000)?,
        }
    }
    if out.stp && out.forward_delay < 2 {
        if fd_given {
            return Err(ArgError::invalid(
                P,
                format!(
                    "parameters: with stp the kernel needs forward_delay 2 to 30, got {}",
                    out.forward_delay
                ),
            ));
        }
        // STP asked for without a delay: the smallest the kernel accepts.
        out.forward_delay = 2;
    }
    Ok(out)
}

impl RawBridge {
    /// Check everything and build the bridge. Each error names its parameter.
    pub fn build(&self) -> Result<Bridge, ModuleError> {
        check_ifname("name", &self.name)?;
        let ports = ports(&self.interfaces)?;
        if ports
            .iter()
            .any(|p| p.device() == self.name || p.nic() == self.name)
        {
            return Err(ArgError::invalid(
                "interfaces",
                format!(
                    "interfaces: the bridge {} cannot be its own port",
                    self.name
                ),
            )
            .into());
        }
        let mut addresses = Vec::new();
        for item in list("addresses", &self.addresses)? {
            let s = scalar(item).ok_or_else(|| {
                ArgError::invalid("addresses", format!("addresses: {item} is not an address"))
            })?;
            let a = address("addresses", s.trim())?;
            if addresses.contains(&a) {
                return Err(ArgError::invalid(
                    "addresses",
                    format!("addresses: {a} is listed twice"),
                )
                .into());
            }
            addresses.push(a);
        }
        let mut routes = routes(&self.routes)?;
        let mut notes = Vec::new();
        for (param, gw, family) in [
            ("gateway4", &self.gateway4, Family::Inet),
            ("gateway6", &self.gateway6, Family::Inet6),
        ] {
            let Some(gw) = gw else { continue };
            let via = ip(param, "gateway", gw)?;
            if family_of(&via) != family {
                return Err(ArgError::invalid(
                    param,
                    format!(
                        "{param}: {via} is not an IPv{} address",
                        if family == Family::Inet { 4 } else { 6 }
                    ),
                )
                .into());
            }
            if routes
                .iter()
                .any(|r| r.is_default() && r.to.family() == family)
            {
                return Err(ArgError::conflict(
                    param,
                    "routes",
                    format!("{param} and a default route in routes both set the default gateway"),
                )
                .into());
            }
            notes.push(format!(
                "{param} is deprecated in netplan: written as routes: [{{to: default, via: {via}}}]"
            ));
            routes.push(Route {
                to: Prefix::any(family),
                via: Some(via),
                metric: None,
                on_link: false,
                table: None,
            });
        }
        for r in &routes {
            let Some(via) = r.via else { continue };
            if r.on_link {
                continue;
            }
            let family = r.to.family();
            let nets: Vec<&Prefix> = addresses.iter().filter(|a| a.family() == family).collect();
            let dhcp = if family == Family::Inet {
                self.dhcp4
            } else {
                self.dhcp6
            };
            if nets.iter().any(|n| in_subnet(n, &via)) {
                continue;
            }
            // With DHCP (and no static address of the family) the subnet is the lease's: not
            // knowable here.
            if nets.is_empty() && dhcp {
                continue;
            }
            let which = if nets.is_empty() {
                "the bridge has no address of that family".to_string()
            } else {
                format!(
                    "it is outside {}",
                    nets.iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            return Err(ArgError::invalid(
                "routes",
                format!(
                    "routes: gateway {via} for {} is not reachable: {which}; set on_link: true if \
it is reachable on the bridge anyway",
                    if r.is_default() {
                        "default".to_string()
                    } else {
                        r.to.to_string()
                    }
                ),
            )
            .into());
        }
        let mtu = match self.mtu {
            None => None,
            Some(m) if m >= 0 && MTU_RANGE.contains(&(m as u32)) => Some(m as u32),
            Some(m) => {
                return Err(ArgError::invalid(
                    "mtu",
                    format!(
                        "mtu must be {} to {}, got {m}",
                        MTU_RANGE.start(),
                        MTU_RANGE.end()
                    ),
                )
                .into())
            }
        };
        if let Some(m) = mtu {
            if m < 1280 && (self.dhcp6 || addresses.iter().any(|a| a.family() == Family::Inet6)) {
                return Err(ArgError::invalid(
                    "mtu",
                    format!("mtu {m} is below IPv6's minimum of 1280, and the bridge has IPv6"),
                )
                .into());
            }
        }
        let macaddress = match &self.macaddress {
            Some(m) => Some(check_mac("macaddress", m.trim())?),
            None => None,
        };
        Ok(Bridge {
            name: self.name.clone(),
            state: self.state,
            ports,
            addresses,
            dhcp4: self.dhcp4,
            dhcp6: self.dhcp6,
            routes,
            nameservers: nameservers(self.nameservers.as_ref())?,
            mtu,
            macaddress,
            params: params(&self.parameters)?,
            notes,
        })
    }
}

fn secs(d: Duration) -> u32 {
    d.as_secs() as u32
}

/// How the live bridge differs from the request (extra ports, such as guests' taps, are fine),
/// and whether its bridge settings are among the differences.
pub fn live_drift(b: &Bridge, links: &IpLinks, addrs: &IpAddrs) -> (Vec<String>, bool) {
    let mut out = Vec::new();
    let Some(link) = links.get(&b.name) else {
        return (vec![format!("bridge {} does not exist", b.name)], false);
    };
    let Some(info) = link.bridge() else {
        return (
            vec![format!(
                "{} exists but is a {} device, not a bridge",
                b.name,
                link.kind_name().unwrap_or("physical")
            )],
            false,
        );
    };
    for p in &b.ports {
        let dev = p.device();
        match links.get(&dev) {
            None => out.push(format!("port {dev} does not exist")),
            Some(l) if l.master.as_deref() != Some(&b.name) => out.push(format!(
                "{dev} is not a port of {}{}",
                b.name,
                l.master
                    .as_deref()
                    .map(|m| format!(" (it is in {m})"))
                    .unwrap_or_default()
            )),
            _ => {}
        }
    }
    if let Some(iface) = addrs.get(&b.name) {
        for a in &b.addresses {
            if !iface.has(*a) {
                out.push(format!("{} lacks address {a}", b.name));
            }
        }
    }
    if let Some(m) = b.mtu {
        if link.mtu != m {
            out.push(format!("{} has MTU {} instead of {m}", b.name, link.mtu));
        }
    }
    if let Some(mac) = &b.macaddress {
        if link.mac.as_deref().map(str::to_ascii_lowercase).as_deref() != Some(mac.as_str()) {
            out.push(format!(
                "{} has MAC {} instead of {mac}",
                b.name,
                link.mac.as_deref().unwrap_or("none")
            ));
        }
    }
    let p = &b.params;
    let mut params = Vec::new();
    if info.stp != p.stp {
        params.push(format!("stp {}", if info.stp { "on" } else { "off" }));
    }
    // Without STP the kernel forwards at once and never uses the STP timers, and
    // NetworkManager leaves them at the kernel's defaults: compare them only with STP on.
    if p.stp && secs(info.forward_delay) != p.forward_delay {
        params.push(format!("forward delay {}s", secs(info.forward_delay)));
    }
    if p.stp && secs(info.hello_time) != p.hello_time {
        params.push(format!("hello time {}s", secs(info.hello_time)));
    }
    if p.stp && secs(info.max_age) != p.max_age {
        params.push(format!("max age {}s", secs(info.max_age)));
    }
    if u32::from(info.priority) != p.priority {
        params.push(format!("priority {}", info.priority));
    }
    // During an STP topology change the kernel reports its short ageing, not the configured one.
    if !info.topology_change && secs(info.ageing_time) != p.ageing_time {
        params.push(format!("ageing time {}s", secs(info.ageing_time)));
    }
    let params_drift = !params.is_empty();
    if params_drift {
        out.push(format!("{} runs with {}", b.name, params.join(", ")));
    }
    (out, params_drift)
}

/// `ip link set` for the bridge settings: networkd sets them when it creates a bridge, not on an
/// existing one.
pub fn set_params(b: &Bridge) -> Action {
    let p = &b.params;
    Action::run(format!(
        "ip link set dev {} type bridge stp_state {} forward_delay {} hello_time {} max_age {} priority {} ageing_time {}",
        shell_quote(&b.name),
        u8::from(p.stp),
        p.forward_delay * 100,
        p.hello_time * 100,
        p.max_age * 100,
        p.priority,
        p.ageing_time * 100
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::ArgErrorKind;
    use serde_json::json;

    fn build(v: Value) -> Result<Bridge, ModuleError> {
        let mut base = json!({
            "name": "br0", "state": "present", "interfaces": [], "addresses": [],
            "dhcp4": false, "dhcp6": false, "routes": [], "parameters": {}
        });
        for (k, val) in v.as_object().unwrap() {
            base[k] = val.clone();
        }
        let raw: RawBridge = serde_json::from_value(base).unwrap();
        raw.build()
    }

    fn err(v: Value) -> ArgError {
        match build(v.clone()) {
            Err(ModuleError::Args(a)) => a,
            other => panic!("{v}: expected an argument error, got {other:?}"),
        }
    }

    #[test]
    fn seed_bridge_is_accepted() {
        let b = build(json!({
            "interfaces": ["enp136s0f3"],
            "addresses": ["192.168.121.105/24"],
            "routes": [{"to": "default", "via": "192.168.121.101", "metric": 100, "on-link": true}],
            "nameservers": {"addresses": ["8.8.8.8"], "search": ["lab"]},
            "mtu": 1500,
            "parameters": {"stp": false, "forward-delay": 0}
        }))
        .unwrap();
        assert_eq!(b.ports, [Port::Nic("enp136s0f3".into())]);
        assert_eq!(b.routes[0].to.to_string(), "0.0.0.0/0");
        assert!(b.routes[0].on_link);
        assert_eq!(b.params, BridgeParams::default());
        assert_eq!(b.created_devices(), ["br0"]);
    }

    #[test]
    fn nameservers_rendered_from_a_list_variable() {
        // `addresses: "{{default dns ''}}"`: a list renders space-separated, an unset one empty.
        let b = build(
            json!({"nameservers": {"addresses": "8.8.8.8 1.1.1.1", "search": "a.lab, b.lab"}}),
        )
        .unwrap();
        assert_eq!(b.nameservers.addresses.len(), 2);
        assert_eq!(b.nameservers.search, ["a.lab", "b.lab"]);
        let b = build(json!({"nameservers": {"addresses": ""}})).unwrap();
        assert!(b.nameservers.addresses.is_empty());
        assert_eq!(b.nameservers, build(json!({})).unwrap().nameservers);
    }

    #[test]
    fn vlan_ports() {
        let b = build(
            json!({"name": "virbr1.223", "interfaces": [{"vlan": 223, "link": "ens802f1"}],
                             "parameters": {"ageing_time": 0}}),
        )
        .unwrap();
        assert_eq!(b.ports[0].device(), "ens802f1.223");
        assert_eq!(b.vlan_devices(), ["ens802f1.223"]);
        assert_eq!(b.created_devices(), ["virbr1.223", "ens802f1.223"]);
        assert_eq!(b.params.ageing_time, 0);
        assert!(b.enslaved_nics().is_empty());
        assert_eq!(b.nics(), ["ens802f1"]);
    }

    #[test]
    fn gateway4_becomes_a_default_route_with_a_note() {
        let b = build(json!({"addresses": ["10.0.0.5/24"], "gateway4": "10.0.0.1"})).unwrap();
        assert_eq!(b.routes.len(), 1);
        assert!(b.routes[0].is_default());
        assert!(b.notes[0].contains("deprecated"), "{:?}", b.notes);
        let e = err(json!({"addresses": ["10.0.0.5/24"], "gateway4": "10.0.0.1",
                           "routes": [{"to": "default", "via": "10.0.0.2"}]}));
        assert_eq!(e.kind, ArgErrorKind::Conflict { with: "routes" });
    }

    #[test]
    fn each_rejected_input_names_its_parameter() {
        for (v, param, words) in [
            (
                json!({"addresses": ["192.168.1.5"]}),
                "addresses",
                "no prefix",
            ),
            (
                json!({"addresses": ["192.168.1.5/33"]}),
                "addresses",
                "prefix length",
            ),
            (
                json!({"addresses": ["10.0.0.5/24"], "routes": [{"to": "default", "via": "10.0.1.1"}]}),
                "routes",
                "not reachable",
            ),
            (
                json!({"routes": [{"to": "default", "via": "10.0.1.1"}]}),
                "routes",
                "no address",
            ),
            (
                json!({"routes": [{"to": "10.1.0.1/16", "via": "10.0.1.1", "on_link": true}]}),
                "routes",
                "host bits",
            ),
            (
                json!({"routes": [{"via": "10.0.1.1"}]}),
                "routes",
                "no `to`",
            ),
            (
                json!({"routes": [{"to": "default", "gw": "10.0.1.1"}]}),
                "routes",
                "unknown key",
            ),
            (
                json!({"routes": [{"to": "::/0", "via": "10.0.1.1", "on_link": true}]}),
                "routes",
                "different IP versions",
            ),
            (json!({"mtu": 67}), "mtu", "68 to 65535"),
            (json!({"mtu": 65536}), "mtu", "68 to 65535"),
            (json!({"mtu": 1000, "dhcp6": true}), "mtu", "1280"),
            (
                json!({"interfaces": ["eth0", "eth0"]}),
                "interfaces",
                "listed twice",
            ),
            (
                json!({"interfaces": [{"vlan": 5, "link": "eth0"}, {"id": 5, "link": "eth0"}]}),
                "interfaces",
                "listed twice",
            ),
            (
                json!({"interfaces": [{"vlan": 0, "link": "eth0"}]}),
                "interfaces",
                "1..4094",
            ),
            (
                json!({"interfaces": [{"vlan": 4095, "link": "eth0"}]}),
                "interfaces",
                "1..4094",
            ),
            (
                json!({"interfaces": [{"vlan": 10}]}),
                "interfaces",
                "needs `vlan` and `link`",
            ),
            (
                json!({"interfaces": [{"vlan": 1000, "link": "enp136s0f3np0"}]}),
                "interfaces",
                "longer than 15",
            ),
            (json!({"interfaces": ["br0"]}), "interfaces", "own port"),
            (
                json!({"interfaces": ["a b"]}),
                "interfaces",
                "not an interface name",
            ),
            (
                json!({"macaddress": "52:54:00:12:34"}),
                "macaddress",
                "not a MAC",
            ),
            (
                json!({"macaddress": "zz:54:00:12:34:56"}),
                "macaddress",
                "not a MAC",
            ),
            (
                json!({"macaddress": "01:00:5e:00:00:01"}),
                "macaddress",
                "multicast",
            ),
            (
                json!({"name": "a-very-long-bridge0"}),
                "name",
                "interface name",
            ),
            (
                json!({"parameters": {"stp": true, "forward_delay": 0}}),
                "parameters",
                "2 to 30",
            ),
            (
                json!({"parameters": {"hello_time": 0}}),
                "parameters",
                "1 to 10",
            ),
            (
                json!({"parameters": {"forward_dely": 0}}),
                "parameters",
                "did you mean `forward_delay`",
            ),
            (
                json!({"parameters": "stp"}),
                "parameters",
                "must be a mapping",
            ),
            (
                json!({"nameservers": {"addresses": ["dns.example"]}}),
                "nameservers",
                "not an IP",
            ),
            (json!({"gateway4": "fe80::1"}), "gateway4", "not an IPv4"),
        ] {
            let e = err(v.clone());
            assert_eq!(e.param, param, "{v}: {e}");
            assert!(e.msg.contains(words), "{v}: {}", e.msg);
        }
    }

    #[test]
    fn on_link_and_dhcp_gateways_are_accepted() {
        build(json!({"addresses": ["10.0.0.5/24"], "routes": [{"to": "default", "via": "10.9.9.9", "on_link": true}]})).unwrap();
        build(json!({"dhcp4": true, "routes": [{"to": "10.9.0.0/16", "via": "10.9.9.9"}]}))
            .unwrap();
        // STP without a delay gets the smallest the kernel accepts.
        let b = build(json!({"parameters": {"stp": true}})).unwrap();
        assert_eq!(b.params.forward_delay, 2);
    }

    #[test]
    fn subnets() {
        let n: Prefix = "192.168.121.0/24".parse().unwrap();
        assert!(in_subnet(&n, &"192.168.121.101".parse().unwrap()));
        assert!(!in_subnet(&n, &"192.168.122.1".parse().unwrap()));
        let n: Prefix = "2001:db8::5/64".parse().unwrap();
        assert!(in_subnet(&n, &"2001:db8::1".parse().unwrap()));
        assert!(!in_subnet(&n, &"192.168.122.1".parse().unwrap()));
    }
}
