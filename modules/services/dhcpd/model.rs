//! The DHCP service both backends render: interfaces, global options and subnets with their
//! ranges, routers and fixed leases, checked as a whole before any host is contacted.
//!
//! Every check names the place in the arguments it is about (`subnets[0].ranges[1]`), because
//! a list of subnets with lists of ranges and hosts is where a typo hides: the user reads the
//! path and goes straight to the entry.

use crate::module::ArgError;
use crate::modules::args::{inside, mac_address};
use crate::modules::network::bridge::check_ifname;
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr};

/// A checked DHCP service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dhcp {
    pub interfaces: Vec<String>,
    pub domain_name: Option<String>,
    pub dns_servers: Vec<Ipv4Addr>,
    pub default_lease_time: u32,
    pub max_lease_time: u32,
    pub authoritative: bool,
    pub subnets: Vec<Subnet>,
}

/// One IPv4 subnet served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    /// The network address (no host bits).
    pub network: Ipv4Addr,
    pub len: u8,
    /// Inclusive, first <= last, inside the network, not overlapping.
    pub ranges: Vec<(Ipv4Addr, Ipv4Addr)>,
    pub routers: Vec<Ipv4Addr>,
    pub dns_servers: Vec<Ipv4Addr>,
    pub hosts: Vec<Host>,
}

/// A fixed lease: this MAC always gets this address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    /// Lower-cased `xx:xx:xx:xx:xx:xx`.
    pub mac: String,
    pub ip: Ipv4Addr,
}

impl Subnet {
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(mask(self.len))
    }
    fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask(self.len))
    }
    fn contains(&self, a: Ipv4Addr) -> bool {
        inside(IpAddr::V4(self.network), self.len, IpAddr::V4(a))
    }
    /// The network's own or broadcast address, which no host may have (a /31 or /32 has none).
    fn reserved(&self, a: Ipv4Addr) -> bool {
        self.len <= 30 && (a == self.network || a == self.broadcast())
    }
}

/// Addresses as both daemons list them: `a, b`.
pub fn joined(addrs: &[Ipv4Addr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len)
    }
}

/// The arguments as the parameter table gives them, before the checks.
pub struct Raw<'a> {
    pub interfaces: &'a [String],
    pub domain_name: Option<&'a str>,
    pub dns_servers: &'a [String],
    pub default_lease_time: i64,
    pub max_lease_time: i64,
    pub authoritative: bool,
    pub subnets: &'a Value,
}

fn invalid(param: &'static str, msg: String) -> ArgError {
    ArgError::invalid(param, msg)
}

const SUBNET_KEYS: &[&str] = &["network", "ranges", "routers", "dns_servers", "hosts"];
const HOST_KEYS: &[&str] = &["name", "mac", "ip"];

impl Dhcp {
    pub fn check(raw: Raw) -> Result<Dhcp, ArgError> {
        if raw.interfaces.is_empty() {
            return Err(invalid(
                "interfaces",
                "interfaces: name the interfaces to serve (e.g. [eth1]); a DHCP server answering \
on every interface would also answer on the front network"
                    .into(),
            ));
        }
        for (i, name) in raw.interfaces.iter().enumerate() {
            check_ifname("interfaces", name)?;
            // Debian's init script reads the list from a shell assignment.
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return Err(invalid(
                    "interfaces",
                    format!("interfaces: {name:?}: an interface served by DHCP is named with letters, digits, `.`, `_` and `-`"),
                ));
            }
            if raw.interfaces[..i].contains(name) {
                return Err(invalid(
                    "interfaces",
                    format!("interfaces: {name} is listed twice"),
                ));
            }
        }
        if let Some(d) = raw.domain_name {
            check_domain("domain_name", "domain_name", d)?;
        }
        let dns_servers = raw
            .dns_servers
            .iter()
            .enumerate()
            .map(|(i, s)| ipv4("dns_servers", &format!("dns_servers[{i}]"), s))
            .collect::<Result<Vec<_>, _>>()?;
        let lease = |param: &'static str, v: i64| -> Result<u32, ArgError> {
            u32::try_from(v).ok().filter(|v| *v > 0).ok_or_else(|| {
                invalid(
                    param,
                    format!(
                        "{param}: {v} is not a number of seconds from 1 to {}",
                        u32::MAX
                    ),
                )
            })
        };
        let default_lease_time = lease("default_lease_time", raw.default_lease_time)?;
        let max_lease_time = lease("max_lease_time", raw.max_lease_time)?;
        if default_lease_time > max_lease_time {
            return Err(ArgError::conflict(
                "default_lease_time",
                "max_lease_time",
                format!(
                    "default_lease_time ({default_lease_time} s) is longer than max_lease_time ({max_lease_time} s)"
                ),
            ));
        }
        let subnets = subnets(raw.subnets)?;
        Ok(Dhcp {
            interfaces: raw.interfaces.to_vec(),
            domain_name: raw.domain_name.map(str::to_string),
            dns_servers,
            default_lease_time,
            max_lease_time,
            authoritative: raw.authoritative,
            subnets,
        })
    }
}

/// A domain name both daemons take as it is: letters, digits, `-` and `.`, so it never needs
/// quoting in dhcpd.conf.
fn check_domain(param: &'static str, path: &str, d: &str) -> Result<(), ArgError> {
    let ok = !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(invalid(
            param,
            format!("{path}: {d:?} is not a domain name (labels of letters, digits and `-`, separated by `.`)"),
        ))
    }
}

fn ipv4(param: &'static str, path: &str, s: &str) -> Result<Ipv4Addr, ArgError> {
    s.trim()
        .parse()
        .map_err(|_| invalid(param, format!("{path}: {s:?} is not an IPv4 address")))
}

/// A scalar as text.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A list of addresses: a YAML list, or one address.
fn addresses(path: &str, v: Option<&Value>) -> Result<Vec<Ipv4Addr>, ArgError> {
    let items: Vec<&Value> = match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.iter().collect(),
        Some(one @ Value::String(_)) => vec![one],
        Some(other) => {
            return Err(invalid(
                "subnets",
                format!("{path}: expected a list of addresses, got {other}"),
            ))
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let at = format!("{path}[{i}]");
            let s = scalar(v)
                .ok_or_else(|| invalid("subnets", format!("{at}: {v} is not an address")))?;
            ipv4("subnets", &at, &s)
        })
        .collect()
}

/// The keys of a mapping, each known.
fn fields<'a>(
    path: &str,
    what: &str,
    v: &'a Value,
    known: &[&str],
) -> Result<&'a serde_json::Map<String, Value>, ArgError> {
    let Value::Object(m) = v else {
        return Err(invalid(
            "subnets",
            format!(
                "{path}: {what} is a mapping of {}, got {v}",
                known.join(", ")
            ),
        ));
    };
    if let Some(k) = m.keys().find(|k| !known.contains(&k.as_str())) {
        let hint = crate::params::did_you_mean(k, known.iter().copied())
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        return Err(invalid(
            "subnets",
            format!(
                "{path}: unknown key `{k}`{hint}; a {what} has {}",
                known.join(", ")
            ),
        ));
    }
    Ok(m)
}

fn list<'a>(path: &str, v: Option<&'a Value>) -> Result<Vec<&'a Value>, ArgError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => Ok(a.iter().collect()),
        Some(other) => Err(invalid(
            "subnets",
            format!("{path}: expected a list, got {other}"),
        )),
    }
}

fn subnets(v: &Value) -> Result<Vec<Subnet>, ArgError> {
    let Value::Array(items) = v else {
        return Err(invalid(
            "subnets",
            format!("subnets: expected a list of subnets ({{network, ranges, routers, dns_servers, hosts}}), got {v}"),
        ));
    };
    if items.is_empty() {
        return Err(invalid(
            "subnets",
            "subnets: give at least one subnet to serve".into(),
        ));
    }
    let mut out: Vec<Subnet> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("subnets[{i}]");
        let m = fields(&at, "subnet", item, SUBNET_KEYS)?;
        let subnet = subnet(&at, m)?;
        if let Some(j) = out
            .iter()
            .position(|o| o.contains(subnet.network) || subnet.contains(o.network))
        {
            return Err(invalid(
                "subnets",
                format!(
                    "{at}.network: {}/{} overlaps subnets[{j}] ({}/{})",
                    subnet.network, subnet.len, out[j].network, out[j].len
                ),
            ));
        }
        out.push(subnet);
    }
    // A MAC or an address given to two hosts, in any subnets.
    let all: Vec<(String, &Host)> = out
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            s.hosts
                .iter()
                .enumerate()
                .map(move |(k, h)| (format!("subnets[{i}].hosts[{k}]"), h))
        })
        .collect();
    for (n, (at, h)) in all.iter().enumerate() {
        for (other, o) in &all[..n] {
            let clash = if o.mac == h.mac {
                Some(format!("{at}.mac: {} is already the MAC of {other}", h.mac))
            } else if o.ip == h.ip {
                Some(format!(
                    "{at}.ip: {} is already the address of {other}",
                    h.ip
                ))
            } else if o.name == h.name {
                Some(format!(
                    "{at}.name: {:?} is already the name of {other}",
                    h.name
                ))
            } else {
                None
            };
            if let Some(msg) = clash {
                return Err(invalid("subnets", msg));
            }
        }
    }
    Ok(out)
}

fn subnet(at: &str, m: &serde_json::Map<String, Value>) -> Result<Subnet, ArgError> {
    let path = format!("{at}.network");
    let net = m.get("network").ok_or_else(|| {
        invalid(
            "subnets",
            format!("{path}: missing: the subnet's network in CIDR form (192.168.121.0/24)"),
        )
    })?;
    let net =
        scalar(net).ok_or_else(|| invalid("subnets", format!("{path}: {net} is not a network")))?;
    let (addr, len) = net.trim().split_once('/').ok_or_else(|| {
        invalid(
            "subnets",
            format!("{path}: {net:?} has no prefix length (write it as {net}/24, or whatever the subnet is)"),
        )
    })?;
    let addr = ipv4("subnets", &path, addr)?;
    let len: u8 = len.parse().ok().filter(|l| *l <= 32).ok_or_else(|| {
        invalid(
            "subnets",
            format!("{path}: {net:?}: the prefix length must be 0 to 32"),
        )
    })?;
    let network = Ipv4Addr::from(u32::from(addr) & mask(len));
    if network != addr {
        return Err(invalid(
            "subnets",
            format!("{path}: {net} has host bits set: the network is {network}/{len}"),
        ));
    }
    let mut s = Subnet {
        network,
        len,
        ranges: Vec::new(),
        routers: Vec::new(),
        dns_servers: Vec::new(),
        hosts: Vec::new(),
    };
    let cidr = format!("{network}/{len}");
    let host_address = |path: &str, a: Ipv4Addr, s: &Subnet| -> Result<(), ArgError> {
        if !s.contains(a) {
            return Err(invalid(
                "subnets",
                format!("{path}: {a} is outside the subnet {cidr}"),
            ));
        }
        if s.reserved(a) {
            return Err(invalid(
                "subnets",
                format!(
                    "{path}: {a} is the {} address of {cidr}, not a host's",
                    if a == s.network {
                        "network's own"
                    } else {
                        "broadcast"
                    }
                ),
            ));
        }
        Ok(())
    };

    for (k, r) in list(&format!("{at}.ranges"), m.get("ranges"))?
        .into_iter()
        .enumerate()
    {
        let path = format!("{at}.ranges[{k}]");
        let (first, last) = range(&path, r)?;
        host_address(&path, first, &s)?;
        host_address(&path, last, &s)?;
        if first > last {
            return Err(invalid(
                "subnets",
                format!("{path}: the range starts at {first}, after its end {last}"),
            ));
        }
        if let Some(j) = s.ranges.iter().position(|(f, l)| first <= *l && *f <= last) {
            return Err(invalid(
                "subnets",
                format!(
                    "{path}: {first}-{last} overlaps {at}.ranges[{j}] ({}-{})",
                    s.ranges[j].0, s.ranges[j].1
                ),
            ));
        }
        s.ranges.push((first, last));
    }
    let routers_at = format!("{at}.routers");
    s.routers = addresses(&routers_at, m.get("routers"))?;
    for (k, r) in s.routers.iter().enumerate() {
        host_address(&format!("{routers_at}[{k}]"), *r, &s)?;
    }
    s.dns_servers = addresses(&format!("{at}.dns_servers"), m.get("dns_servers"))?;
    for (k, h) in list(&format!("{at}.hosts"), m.get("hosts"))?
        .into_iter()
        .enumerate()
    {
        let hat = format!("{at}.hosts[{k}]");
        let hm = fields(&hat, "host", h, HOST_KEYS)?;
        let get = |key: &str| -> Result<String, ArgError> {
            let v = hm.get(key).ok_or_else(|| {
                invalid(
                    "subnets",
                    format!("{hat}.{key}: missing: a host has name, mac and ip"),
                )
            })?;
            scalar(v).ok_or_else(|| invalid("subnets", format!("{hat}.{key}: {v} is not a {key}")))
        };
        let name = get("name")?;
        if name.is_empty()
            || name.len() > 63
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(
                "subnets",
                format!("{hat}.name: {name:?} is not a host name (letters, digits, `-` and `_`)"),
            ));
        }
        let raw_mac = get("mac")?;
        let mac = mac_address(raw_mac.trim()).ok_or_else(|| {
            invalid(
                "subnets",
                format!(
                    "{hat}.mac: {raw_mac:?} is not a MAC address (six hex pairs separated by `:`)"
                ),
            )
        })?;
        let ip = ipv4("subnets", &format!("{hat}.ip"), &get("ip")?)?;
        host_address(&format!("{hat}.ip"), ip, &s)?;
        if let Some(j) = s.ranges.iter().position(|(f, l)| *f <= ip && ip <= *l) {
            return Err(invalid(
                "subnets",
                format!(
                    "{hat}.ip: {ip} is inside {at}.ranges[{j}] ({}-{}): a fixed address must be outside the ranges, or the server may lease it to another host",
                    s.ranges[j].0, s.ranges[j].1
                ),
            ));
        }
        s.hosts.push(Host { name, mac, ip });
    }
    Ok(s)
}

/// `[first, last]` or `first-last`.
fn range(path: &str, v: &Value) -> Result<(Ipv4Addr, Ipv4Addr), ArgError> {
    let ends: Option<(String, String)> = match v {
        Value::Array(a) if a.len() == 2 => scalar(&a[0]).zip(scalar(&a[1])),
        Value::String(s) => s
            .split_once('-')
            .map(|(a, b)| (a.to_string(), b.to_string())),
        _ => None,
    };
    let (a, b) = ends.ok_or_else(|| {
        invalid(
            "subnets",
            format!("{path}: a range is [first, last] or \"first-last\", got {v}"),
        )
    })?;
    Ok((ipv4("subnets", path, &a)?, ipv4("subnets", path, &b)?))
}
