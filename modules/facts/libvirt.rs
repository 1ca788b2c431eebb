//! libvirt: one virtual network or storage pool, its definition and its state, from `virsh`.
//!
//! Every reading of one network, or of one pool, is one probe that starts one `virsh` process
//! for several commands (virsh runs the commands of one argument separated by `;`, each after an
//! `echo KF-SEP <section>` line, and goes on after one fails), so the facts of the same object
//! share its output and it is observed once:
//!
//! - a network ([`network_probe`]): `net-dumpxml --inactive`, the persistent definition the next
//!   start will use (a planner compares the user's wish to that, not to a running copy that
//!   `net-update --live` may have changed), `net-info` (active, persistent, autostart), the
//!   running definition (`net-dumpxml`) and the ids of the running domains (`list --id`); when
//!   domains run, one more `virsh` prints `domname` and `domiflist` of each, for the guests on
//!   the network. [`LibvirtNetwork`] reads the first two sections.
//! - a pool ([`pool_probe`]): `pool-dumpxml --inactive`, `pool-info` (state, persistent,
//!   autostart) and `vol-list`; when the pool lists volumes, one more `virsh` prints the
//!   `vol-dumpxml` of each. [`LibvirtPool`] reads the first two sections,
//!   [`super::libvirt_volume::LibvirtVolumes`] the state and the volumes.
//!
//! Whether the object exists is decided from virsh's message (`Network not found`, `Storage
//! pool not found`) and the missing section, not from the exit code: virsh's exit code is the
//! last command's.
//!
//! `virsh` runs with `-c qemu:///system`: without it, a non-root user (a `become` to someone
//! else, or none) or `LIBVIRT_DEFAULT_URI` would read `qemu:///session`, another set of networks
//! and pools. `LC_ALL=C` keeps the `Active:` labels and the error texts in English.
//!
//! The XML is parsed into the fields planners compare, and kept whole in `xml` for `register`
//! and for what is not typed here.

use super::ip::{Family, Prefix};
use crate::module::fact::{command_output, Fact};
use crate::module::{shell_quote, CommandOutput, Observation, Probe};
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

/// The probe of a network, shared by every fact of it: one `virsh` for its inactive and running
/// definitions, `net-info` and the ids of the running domains, then, when domains run, one more
/// for the name and the interfaces of each (ids are digits: nothing to quote). The exit code is
/// the first `virsh`'s.
pub fn network_probe(name: &str) -> Probe {
    let n = shell_quote(&virsh_quote(name));
    Probe::Command(format!(
        r#"set -f; n={n}; out=$({VIRSH} "echo KF-SEP inactive; net-dumpxml --inactive --network $n; echo KF-SEP info; net-info --network $n; echo KF-SEP live; net-dumpxml --network $n; echo KF-SEP running; list --id"); rc=$?; printf '%s\n' "$out"; b=; for d in ${{out##*'KF-SEP running'}}; do case $d in *[!0-9]*) ;; *) b="$b echo KF-SEP domain $d; domname --domain $d; domiflist --domain $d;" ;; esac; done; [ -z "$b" ] || {VIRSH} "$b"; exit $rc"#
    ))
}

/// The probe of a pool, shared by every fact of it: one `virsh` for its inactive definition,
/// `pool-info` and `vol-list`, then, when volumes are listed (an inactive pool lists none), one
/// more for the `vol-dumpxml` of each. The names are cut from `vol-list`'s table (after its
/// `---` line) at the first run of three spaces, the column gap, and quoted for virsh with shell
/// builtins. The exit code is the first `virsh`'s.
pub fn pool_probe(name: &str) -> Probe {
    let p = shell_quote(&virsh_quote(name));
    Probe::Command(format!(
        r#"set -f; p={p}; out=$({VIRSH} "echo KF-SEP inactive; pool-dumpxml --inactive --pool $p; echo KF-SEP info; pool-info --pool $p; echo KF-SEP volumes; vol-list --pool $p"); rc=$?; printf '%s\n' "$out"; nl='
'; l=${{out##*'KF-SEP volumes'}}$nl; case $l in *"$nl"-*) l=${{l#*"$nl"-*"$nl"}} ;; *) l= ;; esac; b=; while [ -n "$l" ]; do v=${{l%%"$nl"*}}; l=${{l#"$v"}}; l=${{l#"$nl"}}; v=${{v# }}; v=${{v%%'   '*}}; [ -n "$v" ] || continue; q=; while :; do case $v in *\'*) q=$q${{v%%\'*}}\'\\\'\'; v=${{v#*\'}} ;; *) q=$q$v; break ;; esac; done; b="$b echo KF-SEP 'volume $q'; vol-dumpxml --pool $p --vol '$q';"; done; [ -z "$b" ] || {VIRSH} "$b"; exit $rc"#
    ))
}

/// `s` as one argument for virsh's own command parser, which reads single quotes (and `\'`
/// outside them) as a POSIX shell does; a plain name as it is.
pub fn virsh_quote(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
    if s.starts_with(|c: char| c.is_ascii_alphanumeric()) && s.chars().all(plain) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The sections of a batch's output: the text after each `KF-SEP <label>` line, up to the next.
pub fn sections(stdout: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut open: Option<(&str, usize)> = None;
    let mut at = 0;
    for line in stdout.split_inclusive('\n') {
        let start = at;
        at += line.len();
        if let Some(label) = line.trim_end_matches('\n').strip_prefix("KF-SEP ") {
            if let Some((l, s)) = open {
                out.push((l, &stdout[s..start]));
            }
            open = Some((label, at));
        }
    }
    if let Some((l, s)) = open {
        out.push((l, &stdout[s..]));
    }
    out
}

/// The text of the first section `label`, when it has `marker` in it.
pub fn section<'a>(all: &[(&str, &'a str)], label: &str, marker: &str) -> Option<&'a str> {
    all.iter()
        .find(|(l, _)| *l == label)
        .map(|(_, t)| *t)
        .filter(|t| t.contains(marker))
}

/// The error of a reading virsh could not make: virsh missing, libvirtd unreachable, or what
/// virsh said.
pub fn virsh_failure(out: &CommandOutput, what: &str) -> String {
    if out.rc == 127 {
        return "virsh not found: libvirt-clients is not installed".into();
    }
    let last = out
        .stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    if out.stderr.contains("failed to connect to the hypervisor") {
        return format!(
            "cannot connect to libvirtd (virsh -c qemu:///system, exit code {}): {last}",
            out.rc
        );
    }
    format!("virsh printed no {what} (exit code {}): {last}", out.rc)
}

impl Fact for LibvirtNetwork {
    const NAME: &'static str = "libvirt network";
    type Key = str;
    fn probe(name: &str) -> Probe {
        network_probe(name)
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
        pool_probe(name)
    }
    fn parse(_: &str, seen: &Observation) -> Result<Self, String> {
        let Some((xml, info)) = virsh_reading(seen, "pool", "Storage pool not found")? else {
            return Ok(LibvirtPool(None));
        };
        parse_pool(xml, &info).map(|p| LibvirtPool(Some(p)))
    }
}

/// The `Key: value` lines of `virsh net-info` or `pool-info`.
pub type Info<'a> = HashMap<&'a str, &'a str>;

/// The `Key: value` lines of a text.
pub fn info_lines(text: &str) -> Info<'_> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect()
}

/// The inactive XML document (root element `root`) and the info lines of a network's or pool's
/// probe, or `None` when virsh said `not_found` and printed no document.
fn virsh_reading<'a>(
    seen: &'a Observation,
    root: &str,
    not_found: &str,
) -> Result<Option<(&'a str, Info<'a>)>, String> {
    let out = command_output(seen)?;
    if out.rc == 127 {
        return Err(virsh_failure(out, root));
    }
    let all = sections(&out.stdout);
    let end = format!("</{root}>");
    let Some(xml) = section(&all, "inactive", &end) else {
        if out.stderr.contains(not_found) {
            return Ok(None);
        }
        return Err(virsh_failure(out, &format!("<{root}> document")));
    };
    let xml = xml[..xml.rfind(&end).unwrap_or(0) + end.len()].trim_start();
    let info = section(&all, "info", ":").ok_or_else(|| virsh_failure(out, "info"))?;
    Ok(Some((xml, info_lines(info))))
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

/// The output of the probes, assembled from fixtures of the single `virsh` commands (the real
/// output of the earlier probes, one command after the other) with the separators the probes
/// print: `echo KF-SEP <label>` prints its line, each command its output and a blank line.
#[cfg(test)]
pub mod testing {
    /// One section: `echo KF-SEP <label>; <command>`.
    pub fn section(label: &str, text: &str) -> String {
        format!("KF-SEP {label}\n{text}")
    }

    /// A fixture of `*-dumpxml --inactive` then `*-info`, split after the document.
    fn split<'a>(fixture: &'a str, root: &str) -> (&'a str, &'a str) {
        let end = format!("</{root}>\n");
        fixture.split_at(fixture.find(&end).expect("a document") + end.len())
    }

    /// A network's probe: the fixture's definition and `net-info`; `live` as the running
    /// definition (the fixture's own when `None`, as for a network that runs what is defined);
    /// `running` as `list --id` and the domain sections printed it.
    pub fn network(fixture: &str, live: Option<&str>, running: &str) -> String {
        let (xml, info) = split(fixture, "network");
        let live = live.map_or(xml.to_string(), |l| format!("{}\n", l.trim_end()));
        [
            section("inactive", &format!("{xml}\n")),
            section("info", info.trim_start()),
            section("live", &format!("{live}\n")),
            section("running", running),
        ]
        .concat()
    }

    /// A pool's probe: a pool fixture's definition and `pool-info`, then the volumes of a volumes
    /// fixture (whose `== volume NAME` lines were the earlier probe's separators). The
    /// `vol-list` table, which only the probe's shell reads, is left out.
    pub fn pool(fixture: &str, volumes: &str) -> String {
        let (xml, info) = split(fixture, "pool");
        let vols = volumes
            .find("== volume ")
            .map_or("", |i| &volumes[i..])
            .replace("== volume ", "KF-SEP volume ");
        [
            section("inactive", &format!("{xml}\n")),
            section("info", info.trim_start()),
            section("volumes", ""),
            vols,
        ]
        .concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{CommandOutput, ModuleError, Observed};
    use crate::modules::facts::fixture;

    fn network(file: &str) -> Network {
        let text = testing::network(&fixture(&format!("libvirt_network/{file}")), None, "\n");
        let n = LibvirtNetwork::parse("", &Observation::Command(CommandOutput::ok(&text)));
        n.unwrap().0.expect("defined")
    }
    fn pool(file: &str) -> Pool {
        let text = testing::pool(&fixture(&format!("libvirt_pool/{file}")), "");
        let p = LibvirtPool::parse("", &Observation::Command(CommandOutput::ok(&text)));
        p.unwrap().0.expect("defined")
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn prefix(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    #[test]
    fn probes() {
        let Probe::Command(net) = LibvirtNetwork::probe("default") else {
            unreachable!()
        };
        assert_eq!(
            net,
            r#"set -f; n=default; out=$(LC_ALL=C virsh -c qemu:///system "echo KF-SEP inactive; net-dumpxml --inactive --network $n; echo KF-SEP info; net-info --network $n; echo KF-SEP live; net-dumpxml --network $n; echo KF-SEP running; list --id"); rc=$?; printf '%s\n' "$out"; b=; for d in ${out##*'KF-SEP running'}; do case $d in *[!0-9]*) ;; *) b="$b echo KF-SEP domain $d; domname --domain $d; domiflist --domain $d;" ;; esac; done; [ -z "$b" ] || LC_ALL=C virsh -c qemu:///system "$b"; exit $rc"#
        );
        // A name quoted for virsh, then for the shell.
        let Probe::Command(pool) = LibvirtPool::probe("my 'pool\"") else {
            unreachable!()
        };
        assert!(pool.starts_with(r#"set -f; p=''\''my '\''\'\'''\''pool"'\'''; out=$(LC_ALL=C virsh -c qemu:///system "echo KF-SEP inactive; pool-dumpxml --inactive --pool $p; echo KF-SEP info; pool-info --pool $p; echo KF-SEP volumes; vol-list --pool $p"); rc=$?;"#), "{pool}");
        assert!(pool.ends_with(r#"b="$b echo KF-SEP 'volume $q'; vol-dumpxml --pool $p --vol '$q';"; done; [ -z "$b" ] || LC_ALL=C virsh -c qemu:///system "$b"; exit $rc"#), "{pool}");
        assert_eq!(virsh_quote("my 'pool\""), r#"'my '\''pool"'"#);
        assert_eq!(virsh_quote("images-2.x"), "images-2.x");
        assert_eq!(virsh_quote("-x"), "'-x'");
    }

    /// Every reading of one network (or one pool) is the same probe, so it runs once.
    #[test]
    fn facts_of_one_object_share_its_probe() {
        use super::super::libvirt_volume::LibvirtVolumes;
        assert_eq!(LibvirtPool::probe("a b"), LibvirtVolumes::probe("a b"));
        assert_ne!(LibvirtPool::probe("a b"), LibvirtPool::probe("a c"));
    }

    /// The probes run with virsh's test driver (`test:///`, in the virsh process, no daemon), on a
    /// node with a network and a pool whose names have a space and quotes and a volume with a
    /// quote in its name: what virsh's own parser reads of the quoting, the sections, the
    /// volumes of the second batch, a running domain with an interface on a network. Skipped
    /// when virsh is not installed. The test driver supports no `--inactive`: those sections
    /// are empty here.
    #[test]
    fn probes_run_with_the_virsh_test_driver() {
        use super::super::libvirt_volume::LibvirtVolumes;
        use crate::modules::libvirt::network::{LibvirtNetworkGuests, LibvirtNetworkLive};
        if std::process::Command::new("virsh")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("virsh is not installed: skipped");
            return;
        }
        let node = format!(
            "test://{}/tests/facts/libvirt_test_driver/node.xml",
            env!("CARGO_MANIFEST_DIR")
        );
        // A `virsh` first in PATH that logs each start, to count them.
        let dir = std::env::temp_dir().join(format!("kf-virsh-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("log");
        let real = String::from_utf8(
            std::process::Command::new("sh")
                .args(["-c", "command -v virsh"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let wrapper = dir.join("virsh");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\necho x >> '{}'\nexec {} \"$@\"\n",
                log.display(),
                real.trim()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!(
            "{}:{}",
            dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let started = || {
            let n = std::fs::read_to_string(&log).map_or(0, |l| l.lines().count());
            let _ = std::fs::remove_file(&log);
            n
        };
        let run = |probe: Probe, uri: &str, shell: &str| {
            let Probe::Command(cmd) = probe else {
                unreachable!()
            };
            let out = std::process::Command::new(shell)
                .args(["-c", &cmd.replace("qemu:///system", uri)])
                .env("PATH", &path)
                .output()
                .unwrap();
            Observation::Command(CommandOutput {
                rc: out.status.code().unwrap_or(-1),
                stdout: String::from_utf8(out.stdout).unwrap(),
                stderr: String::from_utf8(out.stderr).unwrap(),
            })
        };
        let shells = ["sh", "bash"].into_iter().filter(|s| {
            std::process::Command::new(s)
                .args(["-c", "true"])
                .status()
                .is_ok()
        });
        started();
        for shell in shells {
            // A pool with two volumes: a second virsh for their XML.
            let name = "vm 'images\"";
            let seen = run(LibvirtVolumes::probe(name), &node, shell);
            let v = LibvirtVolumes::parse(name, &seen).unwrap().0.unwrap();
            assert!(v.running(), "{seen:?}");
            let names: Vec<_> = v.volumes.iter().map(|v| v.name.as_str()).collect();
            assert_eq!(names, ["base.qcow2", "it's a disk.raw"], "{seen:?}");
            assert_eq!(started(), 2);
            // A pool without volumes, a network on a host without domains: one virsh each.
            let seen = run(LibvirtVolumes::probe("cold"), &node, shell);
            assert_eq!(
                LibvirtVolumes::parse("cold", &seen)
                    .unwrap()
                    .0
                    .unwrap()
                    .volumes,
                []
            );
            assert_eq!(started(), 1);
            let seen = run(LibvirtNetworkLive::probe("lab net"), &node, shell);
            let live = LibvirtNetworkLive::parse("lab net", &seen)
                .unwrap()
                .0
                .unwrap();
            assert!(live.contains("<name>lab net</name>"), "{live}");
            assert_eq!(
                LibvirtNetworkGuests::parse("lab net", &seen).unwrap().0,
                [] as [&str; 0]
            );
            assert_eq!(started(), 1);
            // test:///default runs domain `test` with an interface on `default`: a second
            // virsh for the domains.
            let seen = run(
                LibvirtNetworkGuests::probe("default"),
                "test:///default",
                shell,
            );
            let g = LibvirtNetworkGuests::parse("default", &seen).unwrap();
            assert_eq!(g.0, ["test"], "{seen:?}");
            assert_eq!(started(), 2);
            let seen = run(LibvirtNetwork::probe("nosuch"), "test:///default", shell);
            assert_eq!(
                LibvirtNetwork::parse("nosuch", &seen).unwrap(),
                LibvirtNetwork(None)
            );
            let seen = run(LibvirtPool::probe("nosuch"), "test:///default", shell);
            assert_eq!(
                LibvirtPool::parse("nosuch", &seen).unwrap(),
                LibvirtPool(None)
            );
            assert_eq!(
                LibvirtVolumes::parse("nosuch", &seen).unwrap(),
                LibvirtVolumes(None)
            );
            started();
        }
        let _ = std::fs::remove_dir_all(&dir);
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
            "cannot connect to libvirtd (virsh -c qemu:///system, exit code 1): \
             error: Failed to connect socket to '/var/run/libvirt/libvirt-sock'",
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

    /// Not found is told by virsh's message and the missing section, whatever the exit code
    /// (the last command's: `list --id` succeeded). The output of the probe run with virsh's
    /// test driver for a network it does not have.
    #[test]
    fn not_found_in_a_batch_that_succeeded() {
        let seen = Observation::Command(CommandOutput {
            rc: 0,
            stdout: fixture("libvirt_network/test-driver-nosuch.txt"),
            stderr: fixture("libvirt_network/test-driver-nosuch.stderr"),
        });
        assert_eq!(
            LibvirtNetwork::parse("nosuch", &seen),
            Ok(LibvirtNetwork(None))
        );
        // Another error leaves the section empty too, but is one.
        let Observation::Command(mut other) = seen else {
            unreachable!()
        };
        other.stderr = "error: internal error: something else\n".into();
        assert_eq!(
            LibvirtNetwork::parse("nosuch", &Observation::Command(other)),
            Err("virsh printed no <network> document (exit code 0): \
                 error: internal error: something else"
                .into())
        );
    }

    #[test]
    fn sections_of_a_batch() {
        let out = "KF-SEP a\n<x/>\n\nKF-SEP b\nName: n\nKF-SEP volume it's 2\n";
        assert_eq!(
            sections(out),
            [("a", "<x/>\n\n"), ("b", "Name: n\n"), ("volume it's 2", "")]
        );
        assert_eq!(sections("no separator\n"), []);
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
