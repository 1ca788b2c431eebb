//! `libvirt_network`: a libvirt virtual network, its definition, whether it runs and whether it
//! starts at boot.
//!
//! Decided from the network's persistent definition and `net-info` ([`LibvirtNetwork`]) and,
//! for `state: active`, the definition it runs with ([`LibvirtNetworkLive`]), so a restart left
//! pending by an earlier run is still seen; all from the network's one probe, with the guests
//! on it ([`LibvirtNetworkGuests`]). The wanted definition is rendered as XML and both
//! are brought to a canonical form before they are compared, so what libvirt fills in by itself
//! (the uuid, the bridge's generated MAC, `stp='on' delay='0'`, a netmask for a prefix) is never
//! a difference. A difference only in DHCP hosts and ranges or DNS hosts is applied with
//! `net-update` (guests keep their connectivity); any other difference redefines the network,
//! and a running network takes a new definition only when restarted.

use crate::module::fact::command_output;
use crate::module::{
    shell_quote, Action, ArgError, Change, Fact, Module, ModuleError, ModuleSpec, Observation,
    Observed, Plan, PlanContext, Probe,
};
use crate::modules::args::{inside, ip_bits, mac_address};
use crate::modules::facts::libvirt::{
    network_probe, section, sections, virsh_failure, LibvirtNetwork,
};
use crate::params::{Args, ParamKind, ParamSpec};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

pub struct LibvirtNetworkModule;

const VIRSH: &str = "virsh -c qemu:///system";

static SPEC: ModuleSpec = ModuleSpec {
    name: "libvirt_network",
    summary: "Manage a libvirt virtual network: NAT, routed, bridged or isolated, its DHCP and DNS",
    description: "Observes the network with one `virsh` (`-c qemu:///system`) running \
`net-dumpxml --inactive`, `net-info`, `net-dumpxml` (the running definition) and `list --id`, and, \
when domains run, one more with `domname` and `domiflist` of each (the guests a restart would \
disconnect). The definition is rendered from the typed parameters (or taken whole from \
`xml`) and compared with the persistent definition after both are canonicalised: the uuid, the \
bridge's MAC address libvirt generates, a bridge name libvirt chose when `bridge` is not given, \
`stp='on' delay='0'` defaults, a netmask written as a prefix, and the order of elements are not \
differences. `--diff` shows the canonical XML before and after.\n\n\
A missing network is defined (`net-define` from a temporary file on the host, checked first with \
`virt-xml-validate` when it is installed), started (`state: active`) and marked for autostart. \
When only DHCP hosts, DHCP ranges or DNS hosts differ, each entry is deleted or added with \
`virsh net-update ... --config` (and `--live` on a running network): no restart, guests keep \
their connectivity. Any other difference redefines the network; a running network keeps its old \
configuration until it is restarted, which disconnects its guests, so that is done only with \
`restart: true` (`net-destroy` + `net-start`). Without it the task reports the restart as \
pending in its message and in the result's `restart_pending`, and the new definition is used the \
next time the network starts. Since the running definition is read too, the restart stays pending on later runs until it is done, and `restart: true` \
on a later run still applies it.\n\n\
`autostart` is managed whatever the state. `state: inactive` stops a running network (guests \
lose connectivity), `absent` stops and undefines it. `forward: bridge` attaches guests to an \
existing host bridge (`bridge`, e.g. br0, made with netplan_bridge or nm_bridge): libvirt then \
has no address, DHCP or DNS of its own. `forward: none` is an isolated network. \
Results: `xml` holds the wanted definition, `restart_pending` whether a running network still \
uses an older definition.",
    params: &[
        ParamSpec::required("name", ParamKind::Str, "Network name").aliases(&["network"]),
        ParamSpec::optional(
            "forward",
            ParamKind::Choice(&["nat", "route", "bridge", "open", "none"]),
            "How guests reach the outside: nat (default), route, bridge (onto an existing host bridge), open, none (isolated)",
        ),
        ParamSpec::optional(
            "bridge",
            ParamKind::Str,
            "The bridge libvirt creates (default: one libvirt names virbrN); with forward: bridge the existing host bridge, required",
        ),
        ParamSpec::optional("stp", ParamKind::Bool, "Spanning tree on the bridge libvirt creates (default on)"),
        ParamSpec::optional("delay", ParamKind::Int, "The bridge's forward delay in seconds (default 0)"),
        ParamSpec::optional("mtu", ParamKind::Int, "MTU of the bridge (68-65535)"),
        ParamSpec::optional("address", ParamKind::Str, "The host's address on the network (e.g. 192.168.122.1)")
            .aliases(&["ip"]),
        ParamSpec::optional("prefix", ParamKind::Int, "Prefix length of address (default 24 for IPv4, 64 for IPv6)"),
        ParamSpec::optional("dhcp_start", ParamKind::Str, "First address DHCP hands out"),
        ParamSpec::optional("dhcp_end", ParamKind::Str, "Last address DHCP hands out"),
        ParamSpec::optional(
            "hosts",
            ParamKind::Data,
            "Static DHCP leases: a list of {mac, ip, name (optional)}",
        ),
        ParamSpec::optional("dns", ParamKind::Bool, "libvirt's dnsmasq answers DNS (default on)"),
        ParamSpec::optional("domain", ParamKind::Str, "DNS domain of the guests"),
        ParamSpec::with_default("autostart", ParamKind::Bool, "true", "Start the network at boot"),
        ParamSpec::with_default(
            "state",
            ParamKind::Choice(&["active", "inactive", "absent"]),
            "active",
            "active defines and starts, inactive defines and stops, absent stops and undefines",
        ),
        ParamSpec::with_default(
            "restart",
            ParamKind::Bool,
            "false",
            "Restart a running network to apply a new definition (disconnects its guests)",
        ),
        ParamSpec::optional(
            "xml",
            ParamKind::Str,
            "The whole definition as XML, instead of the typed parameters",
        ),
    ],
    free_form: None,
    example: r#"# Guests bridged onto the host's br0 (made with netplan_bridge).
- name: bridged network onto br0
  libvirt_network:
    name: host-bridge
    forward: bridge
    bridge: br0
# A NAT network with fixed MAC/IP leases for the cluster's nodes.
- name: NAT network for the cluster
  libvirt_network:
    name: okd
    forward: nat
    bridge: okd
    address: 192.168.200.1
    prefix: 24
    domain: okd.example.com
    dhcp_start: 192.168.200.100
    dhcp_end: 192.168.200.254
    hosts:
      - {mac: "52:54:00:00:00:10", name: bootstrap, ip: 192.168.200.10}
      - {mac: "52:54:00:00:00:11", name: master-0, ip: 192.168.200.11}
      - {mac: "52:54:00:00:00:12", name: master-1, ip: 192.168.200.12}
"#,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ForwardArg {
    Nat,
    Route,
    Bridge,
    Open,
    None,
}

impl ForwardArg {
    fn word(self) -> &'static str {
        match self {
            ForwardArg::Nat => "nat",
            ForwardArg::Route => "route",
            ForwardArg::Bridge => "bridge",
            ForwardArg::Open => "open",
            ForwardArg::None => "none",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum NetState {
    Active,
    Inactive,
    Absent,
}

/// The arguments as the parameter table gives them.
#[derive(Debug, Deserialize)]
struct Raw {
    name: String,
    forward: Option<ForwardArg>,
    bridge: Option<String>,
    stp: Option<bool>,
    delay: Option<i64>,
    mtu: Option<i64>,
    address: Option<String>,
    prefix: Option<i64>,
    dhcp_start: Option<String>,
    dhcp_end: Option<String>,
    hosts: Option<Value>,
    dns: Option<bool>,
    domain: Option<String>,
    autostart: bool,
    state: NetState,
    restart: bool,
    xml: Option<String>,
}

/// A `libvirt_network` task's arguments, typed.
#[derive(Debug)]
pub struct Request {
    name: String,
    /// The wanted definition as given to `net-define`.
    xml: String,
    /// Its canonical form.
    want: El,
    autostart: bool,
    state: NetState,
    restart: bool,
}

/// A static DHCP lease.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostArg {
    mac: String,
    ip: String,
    name: Option<String>,
}

fn invalid(param: &'static str, msg: impl Into<String>) -> ModuleError {
    ArgError::invalid(param, msg).into()
}

impl Module for LibvirtNetworkModule {
    type Request = Request;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn request(&self, args: Args, _ctx: &PlanContext) -> Result<Request, ModuleError> {
        let raw: Raw = args.parse()?;
        let name = raw.name.trim();
        if name.is_empty() || name.contains('/') || name != raw.name {
            return Err(invalid(
                "name",
                format!("{:?} is not a network name", raw.name),
            ));
        }
        let el = match &raw.xml {
            Some(xml) => {
                let typed = [
                    ("forward", raw.forward.is_some()),
                    ("bridge", raw.bridge.is_some()),
                    ("stp", raw.stp.is_some()),
                    ("delay", raw.delay.is_some()),
                    ("mtu", raw.mtu.is_some()),
                    ("address", raw.address.is_some()),
                    ("prefix", raw.prefix.is_some()),
                    ("dhcp_start", raw.dhcp_start.is_some()),
                    ("dhcp_end", raw.dhcp_end.is_some()),
                    ("hosts", raw.hosts.is_some()),
                    ("dns", raw.dns.is_some()),
                    ("domain", raw.domain.is_some()),
                ];
                if let Some((p, _)) = typed.iter().find(|(_, set)| *set) {
                    return Err(ArgError::conflict(
                        "xml",
                        p,
                        "xml is the whole definition: give it or the typed parameters, not both",
                    )
                    .into());
                }
                let doc = roxmltree::Document::parse(xml)
                    .map_err(|e| invalid("xml", format!("invalid XML: {e}")))?;
                let el = El::from_node(doc.root_element());
                if el.tag != "network" {
                    return Err(invalid(
                        "xml",
                        format!("the root element is <{}>, not <network>", el.tag),
                    ));
                }
                match el.child("name").map(|n| n.text.as_str()) {
                    Some(n) if n == name => {}
                    Some(n) => {
                        return Err(invalid(
                            "xml",
                            format!("the XML names network {n:?}, not {name:?}"),
                        ))
                    }
                    None => return Err(invalid("xml", "the XML has no <name>")),
                }
                el
            }
            None => typed_definition(&raw)?,
        };
        let xml = match &raw.xml {
            Some(x) => x.trim().to_string(),
            None => el.render(),
        };
        Ok(Request {
            name: raw.name.clone(),
            want: el.canonical(None),
            xml,
            autostart: raw.autostart,
            state: raw.state,
            restart: raw.restart,
        })
    }

    fn probes(&self, req: &Request) -> Vec<Probe> {
        // The network's probe also reads its running definition and guests
        // (`LibvirtNetworkLive`, `LibvirtNetworkGuests` share it).
        vec![LibvirtNetwork::probe(&req.name)]
    }

    fn plan(&self, req: &Request, observed: &Observed) -> Result<Plan, ModuleError> {
        let fact = observed.fact::<LibvirtNetwork>(&req.name)?;
        let name = req.name.as_str();
        let label = format!("libvirt network {name}");
        let q = shell_quote(name);
        let mut plan = Plan::ok();
        let mut pending = false;

        let Some(net) = fact.get() else {
            if req.state == NetState::Absent {
                return Ok(plan.with_data("restart_pending", false));
            }
            plan.change(
                Change::new(format!("define network {name}")).with_diff(
                    &label,
                    "",
                    req.want.render(),
                ),
                [define(&req.xml)],
            );
            if req.state == NetState::Active {
                plan.change(
                    Change::new(format!("start network {name}")),
                    [Action::run(format!("{VIRSH} net-start --network {q}"))],
                );
            }
            if req.autostart {
                plan.change(
                    Change::new(format!("autostart network {name}")),
                    [Action::run(format!("{VIRSH} net-autostart --network {q}"))],
                );
            }
            return Ok(finish(plan, req, false));
        };

        if req.state == NetState::Absent {
            if net.active {
                plan.change(
                    Change::new(format!("stop network {name}")),
                    [Action::run(format!("{VIRSH} net-destroy --network {q}"))],
                );
            }
            if net.persistent {
                plan.change(
                    Change::new(format!("undefine network {name}")).with_diff(
                        &label,
                        El::parse(&net.xml)?.canonical(None).render(),
                        "",
                    ),
                    [Action::run(format!("{VIRSH} net-undefine --network {q}"))],
                );
            }
            return Ok(plan.with_data("restart_pending", false));
        }

        let have = El::parse(&net.xml)?.canonical(Some(&req.want));
        let (have_rest, have_entries) = have.split_entries();
        let (want_rest, want_entries) = req.want.split_entries();
        if have != req.want || !net.persistent {
            let change =
                Change::new(String::new()).with_diff(&label, have.render(), req.want.render());
            if have_rest == want_rest && net.persistent {
                // Only DHCP or DNS entries differ: update them in place.
                let flags = if net.active {
                    "--live --config"
                } else {
                    "--config"
                };
                let mut actions = Vec::new();
                let mut what = Vec::new();
                for (verb, list, other) in [
                    ("delete", &have_entries, &want_entries),
                    ("add", &want_entries, &have_entries),
                ] {
                    for e in list.iter().filter(|e| !other.contains(e)) {
                        let parent = match e.parent {
                            0 => String::new(),
                            i => format!(" --parent-index {i}"),
                        };
                        actions.push(Action::run(format!(
                            "{VIRSH} net-update --network {q} {verb} {} {}{parent} {flags}",
                            e.section,
                            shell_quote(&e.el.render_line()),
                        )));
                        what.push(format!("{verb} {}", e.describe()));
                    }
                }
                plan.change(
                    Change {
                        summary: format!("update network {name}: {}", what.join(", ")),
                        ..change
                    },
                    actions,
                );
            } else {
                let summary = if net.persistent {
                    format!("redefine network {name}")
                } else {
                    format!("define network {name} (it was only running, not defined)")
                };
                // libvirt refuses a second network of the same name: a redefinition carries
                // the existing uuid.
                plan.change(
                    Change { summary, ..change },
                    [define(&with_uuid(&req.xml, &net.xml))],
                );
            }
        }

        // A running network keeps the definition it was started with: compare that one (which
        // an earlier run may have left behind) with the wish.
        if net.active && req.state == NetState::Active {
            let live = observed.fact::<LibvirtNetworkLive>(name)?;
            let stale = match live.0.as_deref() {
                Some(xml) => {
                    El::parse(xml)?.canonical(Some(&req.want)).split_entries().0 != want_rest
                }
                None => false,
            };
            if stale && req.restart {
                plan.change(
                    Change::new(format!(
                        "restart network {name} to apply its new definition (its guests lose connectivity)"
                    )),
                    [
                        Action::run(format!("{VIRSH} net-destroy --network {q}")),
                        Action::run(format!("{VIRSH} net-start --network {q}")),
                    ],
                );
            } else if stale {
                pending = true;
                let guests = observed.fact::<LibvirtNetworkGuests>(name)?;
                let attached = match guests.0.as_slice() {
                    [] => "no running guest is attached".to_string(),
                    g => format!("running guests attached: {}", g.join(", ")),
                };
                plan.msg = Some(format!(
                    "restart pending: network {name} is running with an older definition; the new one \
                     takes effect when it is restarted (restart: true does it now, disconnecting its \
                     guests; {attached})"
                ));
                plan = plan.with_data("guests", guests.0.clone());
            }
        }

        match req.state {
            NetState::Active if !net.active => {
                plan.change(
                    Change::new(format!("start network {name}")),
                    [Action::run(format!("{VIRSH} net-start --network {q}"))],
                );
            }
            NetState::Inactive if net.active => {
                plan.change(
                    Change::new(format!(
                        "stop network {name} (its guests lose connectivity)"
                    )),
                    [Action::run(format!("{VIRSH} net-destroy --network {q}"))],
                );
            }
            _ => {}
        }
        if net.autostart != req.autostart || (!net.persistent && req.autostart) {
            let (verb, flag) = if req.autostart {
                ("autostart", "")
            } else {
                ("no autostart for", " --disable")
            };
            plan.change(
                Change::new(format!("{verb} network {name}")),
                [Action::run(format!(
                    "{VIRSH} net-autostart --network {q}{flag}"
                ))],
            );
        }
        Ok(finish(plan, req, pending))
    }
}

/// The definition a network runs with (`net-dumpxml` without `--inactive`; for a network that
/// is not running, its persistent one): after a redefinition without restart it is the old one
/// until the network is restarted. `None` when libvirt has no network of that name. Read from
/// the network's probe, with [`LibvirtNetwork`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibvirtNetworkLive(pub Option<String>);

impl Fact for LibvirtNetworkLive {
    const NAME: &'static str = "running libvirt network";
    type Key = str;
    fn probe(name: &str) -> Probe {
        network_probe(name)
    }
    fn parse(_: &str, seen: &Observation) -> Result<Self, String> {
        let out = command_output(seen)?;
        let all = sections(&out.stdout);
        let Some(live) = section(&all, "live", "</network>") else {
            if out.rc != 127 && out.stderr.contains("Network not found") {
                return Ok(LibvirtNetworkLive(None));
            }
            return Err(virsh_failure(out, "<network> document"));
        };
        let end = live.rfind("</network>").unwrap_or(0) + "</network>".len();
        Ok(LibvirtNetworkLive(Some(
            live[..end].trim_start().to_string(),
        )))
    }
}

/// The running domains with an interface on a network (`domiflist`: type `network`, source the
/// network's name): the guests a restart of the network disconnects. Read from the network's
/// probe, with [`LibvirtNetwork`]: a `domname` and a `domiflist` of each running domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibvirtNetworkGuests(pub Vec<String>);

impl Fact for LibvirtNetworkGuests {
    const NAME: &'static str = "guests on a libvirt network";
    type Key = str;
    fn probe(name: &str) -> Probe {
        network_probe(name)
    }
    fn parse(name: &str, seen: &Observation) -> Result<Self, String> {
        let out = command_output(seen)?;
        if out.rc == 127 {
            return Err(virsh_failure(out, "domains"));
        }
        let guests = sections(&out.stdout)
            .into_iter()
            .filter(|(l, _)| l.starts_with("domain "))
            .filter_map(|(_, text)| {
                // `domname`'s line, then `domiflist`'s table; a domain that stopped in between
                // printed neither.
                let mut lines = text.lines().skip_while(|l| l.trim().is_empty());
                let domain = lines.next()?.trim();
                let rows = lines.skip_while(|l| !l.starts_with("---")).skip(1);
                rows.filter_map(interface_row)
                    .any(|(kind, source)| kind == "network" && source == name)
                    .then(|| domain.to_string())
            })
            .collect();
        Ok(LibvirtNetworkGuests(guests))
    }
}

/// The type and source of a `domiflist` row (`vnet0   network   my net   virtio   52:54:...`):
/// the source is what lies between the type and the last two columns, spaces and all.
fn interface_row(row: &str) -> Option<(&str, &str)> {
    fn first(s: &str) -> Option<(&str, &str)> {
        s.trim_start().split_once(char::is_whitespace)
    }
    fn last(s: &str) -> Option<(&str, &str)> {
        s.trim_end().rsplit_once(char::is_whitespace)
    }
    let (_iface, rest) = first(row)?;
    let (kind, rest) = first(rest)?;
    let (rest, _mac) = last(rest)?;
    let (source, _model) = last(rest)?;
    Some((kind, source.trim()))
}

fn finish(plan: Plan, req: &Request, pending: bool) -> Plan {
    plan.with_data("name", req.name.as_str())
        .with_data("xml", req.xml.as_str())
        .with_data("restart_pending", pending)
}

/// `want` with the uuid of the existing definition `have`, unless it names one itself.
fn with_uuid(want: &str, have: &str) -> String {
    if want.contains("<uuid>") {
        return want.to_string();
    }
    let uuid = have
        .split("<uuid>")
        .nth(1)
        .and_then(|r| r.split("</uuid>").next())
        .map(str::trim);
    match (uuid, want.find("</name>")) {
        (Some(u), Some(i)) if !u.is_empty() => {
            let at = i + "</name>".len();
            format!("{}\n  <uuid>{u}</uuid>{}", &want[..at], &want[at..])
        }
        _ => want.to_string(),
    }
}

/// `net-define` of `xml` from a temporary file, validated first when `virt-xml-validate` (and the
/// `xmllint` it runs) is
/// installed, so an invalid definition fails before anything is defined.
fn define(xml: &str) -> Action {
    Action::run(format!(
        "(f=$(mktemp) && trap 'rm -f \"$f\"' EXIT && printf '%s\\n' {} > \"$f\" && \
         {{ ! command -v virt-xml-validate >/dev/null || ! command -v xmllint >/dev/null || virt-xml-validate \"$f\" network; }} && \
         {VIRSH} net-define --file \"$f\")",
        shell_quote(xml)
    ))
}

// ---------------------------------------------------------------------------------------------
// The typed parameters.

fn parse_ip(param: &'static str, s: &str) -> Result<IpAddr, ModuleError> {
    s.trim()
        .parse()
        .map_err(|_| invalid(param, format!("{s:?} is not an IP address")))
}

fn uint(
    param: &'static str,
    v: Option<i64>,
    range: std::ops::RangeInclusive<i64>,
) -> Result<Option<u32>, ModuleError> {
    match v {
        None => Ok(None),
        Some(n) if range.contains(&n) => Ok(Some(n as u32)),
        Some(n) => Err(invalid(
            param,
            format!("{n} is out of range ({}-{})", range.start(), range.end()),
        )),
    }
}

/// The definition the typed parameters describe, checked.
fn typed_definition(raw: &Raw) -> Result<El, ModuleError> {
    let forward = raw.forward.unwrap_or(ForwardArg::Nat);
    let delay = uint("delay", raw.delay, 0..=3600)?;
    let mtu = uint("mtu", raw.mtu, 68..=65535)?;
    if let Some(d) = &raw.domain {
        if d.is_empty() || d.contains(|c: char| c.is_whitespace() || c == '/') {
            return Err(invalid("domain", format!("{d:?} is not a domain name")));
        }
    }
    if let Some(b) = &raw.bridge {
        if b.is_empty() || b.len() > 15 || b.contains(|c: char| c == '/' || c.is_whitespace()) {
            return Err(invalid("bridge", format!("{b:?} is not a bridge name")));
        }
    }
    let hosts: Vec<HostArg> = match &raw.hosts {
        None | Some(Value::Null) => Vec::new(),
        Some(v @ Value::Array(_)) => serde_json::from_value(v.clone())
            .map_err(|e| invalid("hosts", format!("each host is {{mac, ip, name}}: {e}")))?,
        Some(_) => return Err(invalid("hosts", "hosts is a list of {mac, ip, name}")),
    };
    if forward == ForwardArg::Bridge {
        if raw.bridge.is_none() {
            return Err(ArgError::requires(
                "forward",
                "bridge",
                "forward: bridge attaches guests to an existing host bridge: name it in bridge (e.g. br0)",
            )
            .into());
        }
        for (p, set) in [
            ("address", raw.address.is_some()),
            ("prefix", raw.prefix.is_some()),
            ("dhcp_start", raw.dhcp_start.is_some()),
            ("dhcp_end", raw.dhcp_end.is_some()),
            ("hosts", !hosts.is_empty()),
            ("dns", raw.dns.is_some()),
            ("domain", raw.domain.is_some()),
            ("stp", raw.stp.is_some()),
            ("delay", raw.delay.is_some()),
        ] {
            if set {
                return Err(ArgError::conflict(
                    p,
                    "forward",
                    "with forward: bridge the host bridge's own network serves the guests: libvirt has no address, DHCP, DNS or bridge settings",
                )
                .into());
            }
        }
    }
    let address = raw
        .address
        .as_deref()
        .map(|a| parse_ip("address", a))
        .transpose()?;
    let ip_el = match address {
        None => {
            for (p, set) in [
                ("prefix", raw.prefix.is_some()),
                ("dhcp_start", raw.dhcp_start.is_some()),
                ("dhcp_end", raw.dhcp_end.is_some()),
                ("hosts", !hosts.is_empty()),
            ] {
                if set {
                    return Err(ArgError::requires(
                        p,
                        "address",
                        "DHCP and a prefix need the network's address",
                    )
                    .into());
                }
            }
            None
        }
        Some(addr) => {
            let width = ip_bits(addr).1 as i64;
            let len = uint("prefix", raw.prefix, 1..=width)?.unwrap_or(if addr.is_ipv4() {
                24
            } else {
                64
            }) as u8;
            let (b, w) = ip_bits(addr);
            let host = w - len;
            if (2..128).contains(&host) {
                let mask = (1u128 << host) - 1;
                if b & mask == 0 || (addr.is_ipv4() && b & mask == mask) {
                    return Err(invalid(
                        "address",
                        format!(
                            "{addr} is the network's {} address of /{len}, not a host's",
                            if b & mask == 0 { "own" } else { "broadcast" }
                        ),
                    ));
                }
            }
            let mut ip = El::new("ip")
                .attr("address", addr.to_string())
                .attr("prefix", len.to_string());
            if addr.is_ipv6() {
                ip = ip.attr("family", "ipv6");
            }
            let mut dhcp = El::new("dhcp");
            match (&raw.dhcp_start, &raw.dhcp_end) {
                (None, None) => {}
                (Some(_), None) => {
                    return Err(ArgError::requires(
                        "dhcp_start",
                        "dhcp_end",
                        "a DHCP range needs both ends",
                    )
                    .into())
                }
                (None, Some(_)) => {
                    return Err(ArgError::requires(
                        "dhcp_end",
                        "dhcp_start",
                        "a DHCP range needs both ends",
                    )
                    .into())
                }
                (Some(s), Some(e)) => {
                    let (s, e) = (parse_ip("dhcp_start", s)?, parse_ip("dhcp_end", e)?);
                    for (p, a) in [("dhcp_start", s), ("dhcp_end", e)] {
                        if !inside(addr, len, a) {
                            return Err(invalid(
                                p,
                                format!("{a} is outside the network {addr}/{len}"),
                            ));
                        }
                    }
                    if ip_bits(s).0 > ip_bits(e).0 {
                        return Err(invalid(
                            "dhcp_start",
                            format!("the range starts at {s}, after its end {e}"),
                        ));
                    }
                    dhcp.kids.push(
                        El::new("range")
                            .attr("start", s.to_string())
                            .attr("end", e.to_string()),
                    );
                }
            }
            let (mut ips, mut macs) = (HashSet::new(), HashSet::new());
            for h in &hosts {
                let mac = h.mac.trim().to_ascii_lowercase();
                if mac_address(&mac).is_none() {
                    return Err(invalid(
                        "hosts",
                        format!("{:?} is not a MAC address", h.mac),
                    ));
                }
                let a = parse_ip("hosts", &h.ip)?;
                if addr.is_ipv6() {
                    return Err(invalid(
                        "hosts",
                        "fixed MAC/IP leases are for IPv4 networks",
                    ));
                }
                if !inside(addr, len, a) || a == addr {
                    return Err(invalid(
                        "hosts",
                        format!("{a} ({mac}) is not a guest address of {addr}/{len}"),
                    ));
                }
                if !ips.insert(a) {
                    return Err(invalid("hosts", format!("{a} is given to two hosts")));
                }
                if !macs.insert(mac.clone()) {
                    return Err(invalid("hosts", format!("{mac} is given twice")));
                }
                let mut el = El::new("host").attr("mac", mac);
                if let Some(n) = h.name.as_deref().filter(|n| !n.is_empty()) {
                    el = el.attr("name", n);
                }
                dhcp.kids.push(el.attr("ip", a.to_string()));
            }
            if !dhcp.kids.is_empty() {
                ip.kids.push(dhcp);
            }
            Some(ip)
        }
    };

    let mut net = El::new("network");
    net.kids.push(El::new("name").text(&raw.name));
    if forward != ForwardArg::None {
        net.kids
            .push(El::new("forward").attr("mode", forward.word()));
    }
    let mut bridge = El::new("bridge");
    if let Some(b) = &raw.bridge {
        bridge = bridge.attr("name", b);
    }
    if forward != ForwardArg::Bridge {
        bridge = bridge
            .attr("stp", if raw.stp.unwrap_or(true) { "on" } else { "off" })
            .attr("delay", delay.unwrap_or(0).to_string());
    }
    net.kids.push(bridge);
    if let Some(m) = mtu {
        net.kids.push(El::new("mtu").attr("size", m.to_string()));
    }
    if let Some(d) = raw.domain.as_deref() {
        net.kids.push(El::new("domain").attr("name", d));
    }
    if raw.dns == Some(false) {
        net.kids.push(El::new("dns").attr("enable", "no"));
    }
    net.kids.extend(ip_el);
    Ok(net)
}

// ---------------------------------------------------------------------------------------------
// Network XML as a plain tree, canonicalised for comparison.

#[derive(Debug, Clone, PartialEq, Eq)]
struct El {
    tag: String,
    attrs: BTreeMap<String, String>,
    text: String,
    kids: Vec<El>,
}

/// A DHCP host or range, or a DNS host: what `net-update` changes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    section: &'static str,
    /// Index of the `<ip>` (among the network's `<ip>` elements) it belongs to.
    parent: usize,
    el: El,
}

impl Entry {
    fn describe(&self) -> String {
        let a = |k: &str| self.el.attrs.get(k).map(String::as_str).unwrap_or("");
        match self.section {
            "ip-dhcp-host" => format!("DHCP host {} {}", a("mac"), a("ip")),
            "ip-dhcp-range" => format!("DHCP range {}-{}", a("start"), a("end")),
            _ => format!("DNS host {}", a("ip")),
        }
    }
}

impl El {
    fn new(tag: &str) -> El {
        El {
            tag: tag.into(),
            attrs: BTreeMap::new(),
            text: String::new(),
            kids: Vec::new(),
        }
    }
    fn attr(mut self, k: &str, v: impl Into<String>) -> El {
        self.attrs.insert(k.into(), v.into());
        self
    }
    fn text(mut self, t: &str) -> El {
        self.text = t.into();
        self
    }
    fn child(&self, tag: &str) -> Option<&El> {
        self.kids.iter().find(|k| k.tag == tag)
    }
    fn child_mut(&mut self, tag: &str) -> Option<&mut El> {
        self.kids.iter_mut().find(|k| k.tag == tag)
    }
    fn parse(xml: &str) -> Result<El, ModuleError> {
        let doc = roxmltree::Document::parse(xml)
            .map_err(|e| ModuleError::Host(format!("invalid network XML from virsh: {e}")))?;
        Ok(El::from_node(doc.root_element()))
    }
    fn from_node(n: roxmltree::Node) -> El {
        El {
            tag: n.tag_name().name().into(),
            attrs: n
                .attributes()
                .map(|a| (a.name().into(), a.value().into()))
                .collect(),
            text: n
                .children()
                .filter(|c| c.is_text())
                .filter_map(|c| c.text())
                .collect::<String>()
                .trim()
                .into(),
            kids: n
                .children()
                .filter(|c| c.is_element())
                .map(El::from_node)
                .collect(),
        }
    }

    /// The form two definitions are compared in. With `want`, what libvirt chose where the wanted
    /// definition leaves the choice to it (a bridge's name) is dropped too.
    fn canonical(&self, want: Option<&El>) -> El {
        let mut n = self.clone();
        // A running network counts the guests attached (`connections='2'`).
        n.attrs.remove("connections");
        n.kids.retain(|k| k.tag != "uuid" && k.tag != "mac");
        let mode = n
            .child("forward")
            .map(|f| f.attrs.get("mode").cloned().unwrap_or_else(|| "nat".into()));
        if let Some(f) = n.child_mut("forward") {
            f.attrs
                .insert("mode".into(), mode.clone().unwrap_or_default());
            let dev = f.attrs.get("dev").cloned();
            for k in &mut f.kids {
                k.attrs.remove("connections");
            }
            f.kids
                .retain(|k| !(k.tag == "interface" && k.attrs.get("dev") == dev.as_ref()));
            f.kids
                .retain(|k| !(k.tag == "nat" && k.kids.is_empty() && k.attrs.is_empty()));
        }
        let creates_bridge = matches!(mode.as_deref(), None | Some("nat" | "route" | "open"));
        if creates_bridge && n.child("bridge").is_none() {
            // libvirt names one (virbrN) and prints it.
            n.kids.push(El::new("bridge"));
        }
        if let Some(b) = n.child_mut("bridge") {
            if creates_bridge {
                b.attrs.entry("stp".into()).or_insert_with(|| "on".into());
                b.attrs.entry("delay".into()).or_insert_with(|| "0".into());
            }
            let libvirt_named = want.is_some_and(|w| {
                w.child("bridge")
                    .is_none_or(|wb| !wb.attrs.contains_key("name"))
            });
            if libvirt_named {
                b.attrs.remove("name");
            }
        }
        if let Some(d) = n.child_mut("dns") {
            if d.attrs.get("enable").map(String::as_str) == Some("yes") {
                d.attrs.remove("enable");
            }
        }
        n.kids
            .retain(|k| !(k.tag == "dns" && k.attrs.is_empty() && k.kids.is_empty()));
        for ip in n.kids.iter_mut().filter(|k| k.tag == "ip") {
            if let Some(m) = ip.attrs.remove("netmask") {
                if let Ok(v4) = m.parse::<std::net::Ipv4Addr>() {
                    ip.attrs
                        .insert("prefix".into(), u32::from(v4).leading_ones().to_string());
                }
            }
            if ip.attrs.get("family").map(String::as_str) == Some("ipv4") {
                ip.attrs.remove("family");
            }
            if let Some(mac) = ip.child_mut("dhcp") {
                for h in mac.kids.iter_mut().filter(|h| h.tag == "host") {
                    if let Some(m) = h.attrs.get_mut("mac") {
                        *m = m.to_ascii_lowercase();
                    }
                }
            }
        }
        n.sort();
        n
    }

    /// Children in a fixed order: by tag, keeping the order of equal tags (several `<ip>`).
    fn sort(&mut self) {
        self.kids.sort_by(|a, b| a.tag.cmp(&b.tag));
        for k in &mut self.kids {
            k.sort();
        }
    }

    /// The definition without its DHCP and DNS host entries, and those entries.
    fn split_entries(&self) -> (El, Vec<Entry>) {
        let mut rest = self.clone();
        let mut entries = Vec::new();
        let mut ip_index = 0;
        for k in &mut rest.kids {
            match k.tag.as_str() {
                "ip" => {
                    if let Some(d) = k.child_mut("dhcp") {
                        for e in d.kids.drain(..) {
                            let section = if e.tag == "host" {
                                "ip-dhcp-host"
                            } else {
                                "ip-dhcp-range"
                            };
                            entries.push(Entry {
                                section,
                                parent: ip_index,
                                el: e,
                            });
                        }
                    }
                    ip_index += 1;
                }
                "dns" => {
                    let (hosts, other): (Vec<El>, Vec<El>) =
                        k.kids.drain(..).partition(|e| e.tag == "host");
                    k.kids = other;
                    entries.extend(hosts.into_iter().map(|el| Entry {
                        section: "dns-host",
                        parent: 0,
                        el,
                    }));
                }
                _ => {}
            }
        }
        (rest, entries)
    }

    fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0, true);
        out
    }

    /// On one line with double quotes, for `net-update` (values are escaped, so no quote in
    /// the rendering is part of a value).
    fn render_line(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0, false);
        out.replace('\'', "\"")
    }

    fn write(&self, out: &mut String, depth: usize, pretty: bool) {
        let indent = if pretty {
            "  ".repeat(depth)
        } else {
            String::new()
        };
        out.push_str(&indent);
        out.push('<');
        out.push_str(&self.tag);
        for (k, v) in &self.attrs {
            out.push_str(&format!(" {k}='{}'", escape(v)));
        }
        if self.kids.is_empty() && self.text.is_empty() {
            out.push_str("/>");
        } else if self.kids.is_empty() {
            out.push_str(&format!(">{}</{}>", escape(&self.text), self.tag));
        } else {
            out.push('>');
            if pretty {
                out.push('\n');
            }
            for k in &self.kids {
                k.write(out, depth + 1, pretty);
            }
            out.push_str(&indent);
            out.push_str(&format!("</{}>", self.tag));
        }
        if pretty {
            out.push('\n');
        }
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{ArgErrorKind, CommandOutput, Observation};
    use crate::modules::facts::fixture;
    use crate::modules::facts::libvirt::testing;
    use crate::modules::testing::{arg_error, req, runs};
    use serde_json::json;

    const M: LibvirtNetworkModule = LibvirtNetworkModule;

    /// The reading of a network, and its running definition (the same, as on a host where
    /// nothing is pending), no domain running.
    fn seen(name: &str, file: &str) -> Observed {
        let text = fixture(&format!("libvirt_network/{file}"));
        if file.ends_with(".stderr") {
            return Observed::new().with_fact::<LibvirtNetwork>(
                name,
                Observation::Command(CommandOutput::failed(1, &text)),
            );
        }
        let live = &text[..text.find("</network>").unwrap() + "</network>".len()];
        running(name, &text, live, "\n")
    }

    /// A network defined as in `text` (a fixture of the definition and `net-info`), running
    /// `live`, with the domains of `domains` (what `list --id` and the domain sections print).
    fn running(name: &str, text: &str, live: &str, domains: &str) -> Observed {
        let out = testing::network(text, Some(live), domains);
        Observed::new()
            .with_fact::<LibvirtNetwork>(name, Observation::Command(CommandOutput::ok(&out)))
    }

    fn plan(args: serde_json::Value, file: &str) -> Plan {
        let r = req(&M, args);
        M.plan(&r, &seen(&r.name, file)).unwrap()
    }

    /// setup-kvm.sh's default network.
    fn default_net() -> serde_json::Value {
        json!({"name": "default", "forward": "nat", "bridge": "virbr0", "address": "192.168.122.1",
               "prefix": 24, "dhcp_start": "192.168.122.2", "dhcp_end": "192.168.122.254"})
    }

    fn with(mut base: serde_json::Value, more: serde_json::Value) -> serde_json::Value {
        for (k, v) in more.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    }

    #[test]
    fn probe_is_the_network_fact() {
        let r = req(&M, json!({"name": "default"}));
        assert_eq!(M.probes(&r), vec![LibvirtNetwork::probe("default")]);
        // The running definition and the guests are read by the same probe.
        assert_eq!(
            LibvirtNetworkLive::probe("my net"),
            LibvirtNetwork::probe("my net")
        );
        assert_eq!(
            LibvirtNetworkGuests::probe("my net"),
            LibvirtNetwork::probe("my net")
        );
        let r = req(&M, json!({"name": "my net", "state": "absent"}));
        assert_eq!(M.probes(&r), vec![LibvirtNetwork::probe("my net")]);
    }

    /// One running domain with an interface on the network, as the probe printed it with
    /// virsh's test driver (domain `test` on network `default`).
    #[test]
    fn guests_on_a_network() {
        let seen = Observation::Command(CommandOutput::ok(&fixture(
            "libvirt_network/test-driver-default.txt",
        )));
        let g = LibvirtNetworkGuests::parse("default", &seen).unwrap();
        assert_eq!(g.0, ["test"]);
        assert_eq!(
            LibvirtNetworkGuests::parse("other", &seen).unwrap().0,
            [] as [&str; 0]
        );
        let live = LibvirtNetworkLive::parse("default", &seen)
            .unwrap()
            .0
            .unwrap();
        assert!(live.starts_with("<network>") && live.ends_with("</network>"));
        assert!(live.contains("<name>default</name>"));
        // A source with spaces, and rows that are not on networks.
        assert_eq!(
            interface_row(" vnet3       network   lab net   virtio   52:54:00:6b:3c:58"),
            Some(("network", "lab net"))
        );
        assert_eq!(
            interface_row(" vnet4       bridge    br0       virtio   52:54:00:6b:3c:59"),
            Some(("bridge", "br0"))
        );
        assert_eq!(interface_row(""), None);
    }

    #[test]
    fn default_network_from_nothing() {
        let p = plan(default_net(), "not-found.stderr");
        let cmds = runs(&p);
        assert_eq!(cmds.len(), 3);
        assert!(
            cmds[0].contains("virt-xml-validate \"$f\" network"),
            "{}",
            cmds[0]
        );
        assert!(cmds[0].contains("virsh -c qemu:///system net-define --file \"$f\""));
        assert_eq!(
            req(&M, default_net()).xml,
            "<network>\n  <name>default</name>\n  <forward mode='nat'/>\n  \
             <bridge delay='0' name='virbr0' stp='on'/>\n  \
             <ip address='192.168.122.1' prefix='24'>\n    <dhcp>\n      \
             <range end='192.168.122.254' start='192.168.122.2'/>\n    </dhcp>\n  </ip>\n</network>\n"
        );
        assert!(cmds[0].contains("<range end='\\''192.168.122.254'\\''"));
        assert_eq!(
            cmds[1..],
            [
                "virsh -c qemu:///system net-start --network default",
                "virsh -c qemu:///system net-autostart --network default"
            ]
        );
        let d = p.changes[0].diff.as_ref().unwrap();
        assert_eq!(
            (d.label.as_str(), d.before.as_str()),
            ("libvirt network default", "")
        );
        assert_eq!(p.data["restart_pending"], json!(false));
    }

    #[test]
    fn equal_definitions_are_ok() {
        // The fixture was defined by libvirt from the same wish: uuid, MAC and netmask differ
        // only in form. It is neither running nor started at boot.
        let p = plan(default_net(), "default.txt");
        assert_eq!(
            runs(&p),
            [
                "virsh -c qemu:///system net-start --network default",
                "virsh -c qemu:///system net-autostart --network default"
            ]
        );
        let p = plan(
            with(
                default_net(),
                json!({"state": "inactive", "autostart": false}),
            ),
            "default.txt",
        );
        assert!(!p.changed(), "{:?}", p.changes);
        // Without a bridge name, libvirt's virbr0 is fine.
        let mut a = with(
            default_net(),
            json!({"state": "inactive", "autostart": false}),
        );
        a.as_object_mut().unwrap().remove("bridge");
        assert!(!plan(a, "default.txt").changed());
        // The nat fixture, given whole as XML (without its uuid and MAC).
        let fx = fixture("libvirt_network/nat.txt");
        let xml: String = fx[..fx.find("</network>").unwrap() + 10]
            .lines()
            .filter(|l| !l.contains("<uuid>") && !l.contains("<mac "))
            .collect::<Vec<_>>()
            .join("\n");
        let p = plan(
            json!({"name": "nat1", "xml": xml, "state": "inactive"}),
            "nat.txt",
        );
        assert!(!p.changed(), "{:?}", p.changes);
    }

    #[test]
    fn dhcp_host_added_is_a_net_update() {
        let a = with(
            default_net(),
            json!({"state": "inactive", "autostart": false,
                   "hosts": [{"mac": "52:54:00:00:00:10", "name": "vm10", "ip": "192.168.122.10"}]}),
        );
        let p = plan(a, "default.txt");
        assert_eq!(
            runs(&p),
            [
                "virsh -c qemu:///system net-update --network default add ip-dhcp-host \
              '<host ip=\"192.168.122.10\" mac=\"52:54:00:00:00:10\" name=\"vm10\"/>' --config"
            ]
        );
        assert!(p.changes[0]
            .summary
            .contains("add DHCP host 52:54:00:00:00:10 192.168.122.10"));
        assert_eq!(p.data["restart_pending"], json!(false));
        // A running network is updated live too; a second range of the nat fixture goes.
        let fx =
            fixture("libvirt_network/nat.txt").replace("Active:         no", "Active:         yes");
        let xml: String = fx[..fx.find("</network>").unwrap() + 10]
            .lines()
            .filter(|l| !l.contains("210"))
            .collect::<Vec<_>>()
            .join("\n");
        let r = req(&M, json!({"name": "nat1", "xml": xml}));
        let obs = running(
            "nat1",
            &fx,
            &fx[..fx.find("</network>").unwrap() + 10],
            "\n",
        );
        let p = M.plan(&r, &obs).unwrap();
        assert_eq!(
            runs(&p),
            [
                "virsh -c qemu:///system net-update --network nat1 delete ip-dhcp-range \
              '<range end=\"192.168.100.220\" start=\"192.168.100.210\"/>' --live --config"
            ]
        );
    }

    fn isolated() -> serde_json::Value {
        json!({"name": "isolated", "forward": "none", "bridge": "virbr9", "stp": false, "delay": 2,
               "dns": false, "address": "10.99.0.1", "prefix": 24, "autostart": false})
    }

    #[test]
    fn forward_change_on_a_running_network() {
        assert!(!plan(isolated(), "isolated-active.txt").changed());
        let p = plan(
            with(isolated(), json!({"forward": "nat"})),
            "isolated-active.txt",
        );
        let cmds = runs(&p);
        assert_eq!(cmds.len(), 1);
        assert!(cmds[0].contains("net-define"));
        assert_eq!(p.changes[0].summary, "redefine network isolated");
        let d = p.changes[0].diff.as_ref().unwrap();
        assert!(!d.before.contains("forward") && d.after.contains("<forward mode='nat'/>"));
        assert_eq!(p.data["restart_pending"], json!(true));
        assert!(p.msg.as_deref().unwrap().contains("restart: true"));

        let p = plan(
            with(isolated(), json!({"forward": "nat", "restart": true})),
            "isolated-active.txt",
        );
        assert_eq!(
            runs(&p)[1..],
            [
                "virsh -c qemu:///system net-destroy --network isolated",
                "virsh -c qemu:///system net-start --network isolated"
            ]
        );
        assert_eq!(p.data["restart_pending"], json!(false));
    }

    /// A redefinition left pending by an earlier run stays pending, and is applied by a restart.
    #[test]
    fn pending_restart_is_seen_again() {
        let fx = fixture("libvirt_network/isolated-active.txt");
        // The definition was changed to NAT; the network still runs isolated, with guests.
        let defined = fx.replace("<bridge ", "<forward mode='nat'/>\n  <bridge ");
        let live = fx[..fx.find("</network>").unwrap() + 10]
            .replace("<network>", "<network connections='2'>");
        let want = with(isolated(), json!({"forward": "nat"}));
        let p = M
            .plan(
                &req(&M, want.clone()),
                &running("isolated", &defined, &live, "\n"),
            )
            .unwrap();
        assert!(!p.changed());
        assert_eq!(p.data["restart_pending"], json!(true));
        assert!(p.msg.as_deref().unwrap().starts_with("restart pending"));
        assert!(p
            .msg
            .as_deref()
            .unwrap()
            .contains("no running guest is attached"));
        // The guests a restart would cut off are named.
        // Two running domains, each with an interface on the network, a third on another one:
        // the test driver's domain section, renamed and moved onto `isolated`.
        let test = fixture("libvirt_network/test-driver-default.txt");
        let domain = &test[test.find("KF-SEP domain 1").unwrap()..];
        let on = |id: &str, name: &str, net: &str| {
            domain
                .replace("domain 1", &format!("domain {id}"))
                .replace("\ntest\n", &format!("\n{name}\n"))
                .replace("network   default", &format!("network   {net}"))
        };
        let domains = format!(
            "3\n4\n7\n{}{}{}",
            on("3", "okd-bootstrap", "isolated"),
            on("4", "other-net", "default"),
            on("7", "okd-master-0", "isolated")
        );
        let with_guests = running("isolated", &defined, &live, &domains);
        let p = M.plan(&req(&M, want.clone()), &with_guests).unwrap();
        assert!(
            p.msg
                .as_deref()
                .unwrap()
                .contains("running guests attached: okd-bootstrap, okd-master-0"),
            "{:?}",
            p.msg
        );
        assert_eq!(p.data["guests"], json!(["okd-bootstrap", "okd-master-0"]));
        let p = M
            .plan(
                &req(&M, with(want, json!({"restart": true}))),
                &running("isolated", &defined, &live, "\n"),
            )
            .unwrap();
        assert_eq!(
            runs(&p),
            [
                "virsh -c qemu:///system net-destroy --network isolated",
                "virsh -c qemu:///system net-start --network isolated"
            ]
        );
        // Attached guests alone are no difference.
        let p = M
            .plan(&req(&M, isolated()), &running("isolated", &fx, &live, "\n"))
            .unwrap();
        assert!(!p.changed() && p.data["restart_pending"] == json!(false));
    }

    #[test]
    fn bridge_onto_br0() {
        let a = json!({"name": "host-bridge", "forward": "bridge", "bridge": "br0", "autostart": false,
                       "state": "inactive"});
        assert!(!plan(a.clone(), "bridge.txt").changed());
        let p = plan(
            with(a, json!({"state": "active", "autostart": true})),
            "not-found.stderr",
        );
        assert_eq!(
            req(&M, json!({"name": "host-bridge", "forward": "bridge", "bridge": "br0"})).xml,
            "<network>\n  <name>host-bridge</name>\n  <forward mode='bridge'/>\n  <bridge name='br0'/>\n</network>\n"
        );
        assert_eq!(runs(&p).len(), 3);
    }

    #[test]
    fn isolated_network_with_stp_and_mtu() {
        // setup-kvm.sh's wsfbr0.
        let a = json!({"name": "wsfbr0", "forward": "none", "bridge": "wsfbr0", "stp": true,
                       "mtu": 1450, "dns": false, "address": "172.22.0.2", "prefix": 24});
        assert_eq!(
            req(&M, a.clone()).xml,
            "<network>\n  <name>wsfbr0</name>\n  <bridge delay='0' name='wsfbr0' stp='on'/>\n  \
             <mtu size='1450'/>\n  <dns enable='no'/>\n  <ip address='172.22.0.2' prefix='24'/>\n</network>\n"
        );
        let p = plan(a.clone(), "not-found.stderr");
        assert_eq!(p.changes.len(), 3);
        // Once defined and started, libvirt prints it with a uuid and a MAC: nothing to do.
        let xml = req(&M, a.clone()).xml.replace(
            "  <bridge",
            "  <uuid>5d6f1c9e-0000-4000-8000-000000000001</uuid>\n  <bridge",
        );
        let xml = xml.replace("  <mtu", "  <mac address='52:54:00:12:34:56'/>\n  <mtu");
        let info = "Name: wsfbr0\nUUID: 5d6f1c9e-0000-4000-8000-000000000001\n\
                    Active: yes\nPersistent: yes\nAutostart: yes\nBridge: wsfbr0\n";
        let p = M
            .plan(
                &req(&M, a),
                &running("wsfbr0", &format!("{xml}\n{info}"), &xml, "\n"),
            )
            .unwrap();
        assert!(!p.changed(), "{:?}", p.changes);
    }

    /// DNS hosts and the ranges of a second `<ip>` are entries too.
    #[test]
    fn dns_hosts_and_ipv6_ranges_are_updated_in_place() {
        let fx = fixture("libvirt_network/nat.txt");
        let xml: String = fx[..fx.find("</network>").unwrap() + 10]
            .replace("fd00:100::1ff", "fd00:100::2ff")
            .replace(
                "    <host ip='192.168.100.10'>",
                "    <host ip='192.168.100.12'>\n      <hostname>vm12</hostname>\n    </host>\n    \
                 <host ip='192.168.100.10'>",
            );
        let p = plan(
            json!({"name": "nat1", "xml": xml, "state": "inactive"}),
            "nat.txt",
        );
        assert_eq!(
            runs(&p),
            [
                "virsh -c qemu:///system net-update --network nat1 delete ip-dhcp-range \
                 '<range end=\"fd00:100::1ff\" start=\"fd00:100::100\"/>' --parent-index 1 --config",
                "virsh -c qemu:///system net-update --network nat1 add dns-host \
                 '<host ip=\"192.168.100.12\"><hostname>vm12</hostname></host>' --config",
                "virsh -c qemu:///system net-update --network nat1 add ip-dhcp-range \
                 '<range end=\"fd00:100::2ff\" start=\"fd00:100::100\"/>' --parent-index 1 --config",
            ]
        );
    }

    #[test]
    fn inactive_and_absent() {
        let p = plan(
            with(isolated(), json!({"state": "inactive"})),
            "isolated-active.txt",
        );
        assert_eq!(
            runs(&p),
            ["virsh -c qemu:///system net-destroy --network isolated"]
        );
        let p = plan(
            json!({"name": "isolated", "state": "absent"}),
            "isolated-active.txt",
        );
        assert_eq!(
            runs(&p),
            [
                "virsh -c qemu:///system net-destroy --network isolated",
                "virsh -c qemu:///system net-undefine --network isolated"
            ]
        );
        assert_eq!(p.changes[1].diff.as_ref().unwrap().after, "");
        let p = plan(json!({"name": "default", "state": "absent"}), "default.txt");
        assert_eq!(
            runs(&p),
            ["virsh -c qemu:///system net-undefine --network default"]
        );
        assert!(!plan(
            json!({"name": "nosuch", "state": "absent"}),
            "not-found.stderr"
        )
        .changed());
        // autostart alone.
        let p = plan(
            with(isolated(), json!({"autostart": true})),
            "isolated-active.txt",
        );
        assert_eq!(
            runs(&p),
            ["virsh -c qemu:///system net-autostart --network isolated"]
        );
    }

    #[test]
    fn transient_network_is_defined() {
        let r = req(
            &M,
            json!({"name": "transient", "forward": "none", "autostart": false}),
        );
        let p = M.plan(&r, &seen("transient", "transient.txt")).unwrap();
        assert!(runs(&p)[0].contains("net-define"));
    }

    #[test]
    fn failures_of_the_host() {
        let r = req(&M, default_net());
        let obs = Observed::new().with_fact::<LibvirtNetwork>(
            "default",
            Observation::Command(CommandOutput::failed(
                1,
                &fixture("libvirt_network/no-daemon.stderr"),
            )),
        );
        assert!(matches!(M.plan(&r, &obs), Err(ModuleError::Host(_))));
    }

    #[test]
    fn argument_errors() {
        let e = |a: serde_json::Value| arg_error(&M, a);
        let check = |a: serde_json::Value, param: &str| {
            let err = e(a);
            assert_eq!(err.param, param, "{err:?}");
            err
        };
        check(
            with(default_net(), json!({"address": "192.168.122.0"})),
            "address",
        );
        check(
            with(default_net(), json!({"address": "192.168.122.255"})),
            "address",
        );
        check(with(default_net(), json!({"address": "nope"})), "address");
        check(with(default_net(), json!({"prefix": 33})), "prefix");
        check(
            with(default_net(), json!({"dhcp_start": "192.168.123.2"})),
            "dhcp_start",
        );
        check(
            with(default_net(), json!({"dhcp_end": "192.168.121.254"})),
            "dhcp_end",
        );
        check(
            with(
                default_net(),
                json!({"dhcp_start": "192.168.122.200", "dhcp_end": "192.168.122.100"}),
            ),
            "dhcp_start",
        );
        let err = check(
            json!({"name": "n", "address": "10.0.0.1", "dhcp_start": "10.0.0.2"}),
            "dhcp_start",
        );
        assert_eq!(err.kind, ArgErrorKind::Requires { other: "dhcp_end" });
        check(
            with(
                default_net(),
                json!({"hosts": [{"mac": "52:54:00:00:00", "ip": "192.168.122.5"}]}),
            ),
            "hosts",
        );
        check(
            with(
                default_net(),
                json!({"hosts": [{"mac": "52:54:00:00:00:01", "ip": "10.0.0.5"}]}),
            ),
            "hosts",
        );
        check(
            with(
                default_net(),
                json!({"hosts": [{"mac": "52:54:00:00:00:01", "ip": "192.168.122.5"},
                                                   {"mac": "52:54:00:00:00:02", "ip": "192.168.122.5"}]}),
            ),
            "hosts",
        );
        check(with(default_net(), json!({"hosts": "x"})), "hosts");
        check(
            with(
                default_net(),
                json!({"hosts": [{"mac": "52:54:00:00:00:01"}]}),
            ),
            "hosts",
        );
        let err = check(json!({"name": "b", "forward": "bridge"}), "forward");
        assert_eq!(err.kind, ArgErrorKind::Requires { other: "bridge" });
        let err = check(
            json!({"name": "b", "forward": "bridge", "bridge": "br0", "address": "10.0.0.1"}),
            "address",
        );
        assert_eq!(err.kind, ArgErrorKind::Conflict { with: "forward" });
        check(
            json!({"name": "b", "forward": "bridge", "bridge": "br0", "dhcp_start": "10.0.0.1"}),
            "dhcp_start",
        );
        check(with(default_net(), json!({"mtu": 10})), "mtu");
        check(with(default_net(), json!({"mtu": 70000})), "mtu");
        check(json!({"name": "n", "prefix": 24}), "prefix");
        let err = check(
            json!({"name": "n", "xml": "<network><name>n</name></network>", "forward": "nat"}),
            "xml",
        );
        assert_eq!(err.kind, ArgErrorKind::Conflict { with: "forward" });
        check(
            json!({"name": "n", "xml": "<network><name>m</name></network>"}),
            "xml",
        );
        check(json!({"name": "n", "xml": "<pool/>"}), "xml");
        check(json!({"name": "n", "xml": "<network"}), "xml");
        check(json!({"name": "a/b"}), "name");
        check(with(default_net(), json!({"domain": "a b"})), "domain");
        check(
            with(default_net(), json!({"bridge": "a-very-long-bridge-name"})),
            "bridge",
        );
        check(with(default_net(), json!({"delay": -1})), "delay");
    }
}
