//! `vxlan`: a VXLAN overlay joining the hypervisors' bridges, so guests on different hosts share
//! one layer-2 network over a routed underlay (setup-kvm.sh `--vxlan`).
//!
//! The mesh uses head-end replication: no multicast in the underlay, every host lists every
//! other host as an all-zero forwarding entry of its VXLAN device (`bridge fdb append
//! 00:00:00:00:00:00 dev NAME dst PEER`), and broadcasts are copied to each. Those entries are
//! the membership of the mesh, so the module keeps them to exactly the peers asked for.
//!
//! Everything is decided from three host-wide facts read in the shared round trip (the
//! interfaces with their addresses and kinds, the bridge forwarding database, and the routes
//! when the underlay is not given) and the boot-time unit's two files. The live device is
//! reconciled with `ip` and `bridge` commands, one per difference, so adding a peer never
//! interrupts the tunnel to the others; only the settings the kernel cannot change on a live
//! device (VNI, port, local address, underlay) make it delete and re-create the device.
//!
//! Persistence is a oneshot systemd unit, `kvmforge-vxlan-NAME.service`, that runs the same
//! commands at boot. See the module description for why not systemd-networkd, netplan or
//! NetworkManager.

use crate::module::{
    shell_quote, Action, ArgError, Attrs, Change, Fact, FileKind, Module, ModuleError, ModuleSpec,
    NetworkGuard, Observed, Plan, PlanContext, Probe,
};
use crate::modules::args::Presence;
use crate::modules::facts::bridge::{BridgeFdb, FLOOD_MAC};
use crate::modules::facts::ip::{Family, Interface, IpAddrs, IpRoutes, Link};
use crate::params::{Args, ParamKind, ParamSpec};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::net::IpAddr;

pub struct Vxlan;

/// Where systemd looks for administrator units.
const UNIT_DIR: &str = "/etc/systemd/system";
/// What `systemctl enable` links the unit into (its `WantedBy=`).
const WANTS_DIR: &str = "/etc/systemd/system/multi-user.target.wants";
/// Exists exactly when systemd is the running init (`sd_booted()`).
const SYSTEMD_RUNNING: &str = "/run/systemd/system";
/// The largest VNI: 24 bits.
const MAX_VNI: i64 = 16_777_215;
/// Bytes VXLAN adds around a frame: outer IPv4 (20) or IPv6 (40) header, UDP (8), VXLAN (8),
/// inner Ethernet (14).
const OVERHEAD_V4: u32 = 50;
const OVERHEAD_V6: u32 = 70;
/// How long the boot-time unit waits for the underlay and the bridge to appear.
const WAIT_SECONDS: u32 = 60;

static SPEC: ModuleSpec = ModuleSpec {
    name: "vxlan",
    summary: "A VXLAN overlay between hosts, attached to a bridge: live and at boot",
    description: "Keeps a VXLAN device NAME with VNI `id` on UDP port `dstport`, sending from \
`local` over the underlay device `dev`, as a head-end-replication mesh: no multicast in the \
underlay, one all-zero forwarding entry per peer (`bridge fdb append 00:00:00:00:00:00 dev NAME \
dst PEER`), and the forwarding database holds exactly the peers asked for: missing entries are \
added, others removed. `peers` may list every host of the group, this one included: the host's \
own `local` address is dropped from it, so one variable serves all hosts.\n\n\
Defaults come from the host: `dev` is the interface of the default route, `local` the first \
global IPv4 address of `dev` (IPv6 if it has none), `mtu` the underlay's MTU minus the 50 bytes \
VXLAN adds over IPv4 (70 over IPv6), so guests never send frames the underlay must fragment. A \
larger `mtu` than the underlay carries is refused. With `bridge`, the device is made a port of \
that bridge, which must exist (create it first, with a netplan, NetworkManager or libvirt \
network); without it, whatever the device is attached to is left alone.\n\n\
The live device is reconciled one difference at a time, each shown before/after: MTU, learning, \
bridge, up, and each peer entry, so adding a peer does not interrupt the tunnel to the others. \
The VNI, port, local address and underlay cannot be changed on a live device (the kernel refuses \
the first two, older kernels all four): when one of them differs the device is deleted and \
re-created. A different device already called NAME, or another VXLAN device with the same VNI \
and port, fails the task instead of being replaced.\n\n\
At boot the device is re-created by a oneshot systemd unit, `/etc/systemd/system/\
kvmforge-vxlan-NAME.service`, running the same `ip` and `bridge` commands, enabled by its \
`multi-user.target.wants` link and rewritten whenever the device's settings change (then \
`systemctl daemon-reload`). A unit rather than a systemd-networkd `.netdev`: it works whichever \
of networkd, netplan, NetworkManager or ifupdown manages the host, and networkd would need the \
underlay's own `.network` file to name the tunnel (or `Independent=`, systemd 254 and later) and \
cannot change an existing netdev before systemd 257. The unit waits up to 60 s for the underlay \
and the bridge (created later by networkd or libvirt on many hosts) and needs systemd 239 or \
later.\n\n\
Every change is applied guarded: if the controller cannot reach the host afterwards, the host \
restores the unit files and the previous device by itself. `state: absent` deletes the device \
and removes the unit. Results: `name`, `id`, `dev`, `local`, `mtu`, `peers` (as applied), \
`unit`.",
    params: &[
        ParamSpec::required(
            "name",
            ParamKind::Str,
            "The VXLAN device (at most 15 characters: letters, digits, `.`, `_`, `-`)",
        ),
        ParamSpec::optional(
            "id",
            ParamKind::Int,
            "The VNI, 1 to 16777215 (required with state: present)",
        )
        .aliases(&["vni"]),
        ParamSpec::with_default(
            "dstport",
            ParamKind::Int,
            "4789",
            "UDP port of the tunnel (4789 by IANA; every host of the mesh must use the same)",
        )
        .aliases(&["port"]),
        ParamSpec::optional(
            "dev",
            ParamKind::Str,
            "Underlay device (default: the interface of the default route)",
        ),
        ParamSpec::optional(
            "local",
            ParamKind::Str,
            "Source address of the tunnel (default: the first IPv4 address of `dev`)",
        ),
        ParamSpec::with_default(
            "peers",
            ParamKind::List,
            "[]",
            "Underlay addresses of the other hosts; this host's own `local` is dropped from it",
        ),
        ParamSpec::optional(
            "bridge",
            ParamKind::Str,
            "Bridge to attach the device to (must exist)",
        )
        .aliases(&["master"]),
        ParamSpec::optional(
            "mtu",
            ParamKind::Int,
            "MTU of the device, 68 to 65535 (default: underlay MTU minus 50, or 70 over IPv6)",
        ),
        ParamSpec::with_default(
            "learning",
            ParamKind::Bool,
            "false",
            "Learn remote MAC addresses from received packets (off: flood to the peers instead)",
        ),
        ParamSpec::with_default(
            "state",
            ParamKind::Choice(&["present", "absent"]),
            "present",
            "absent deletes the device and its boot-time unit",
        ),
    ],
    free_form: None,
    example: r#"# setup-kvm.sh --vxlan: wsfvxlan0 joins the wsfbr0 bridge of every KVM host.
- name: VXLAN overlay between the KVM hosts
  vxlan:
    name: wsfvxlan0
    id: 20680
    dstport: 20680
    dev: eno1
    mtu: 1450
    bridge: wsfbr0
    # Every host of the group (or '{{hostvars_of "kvm_hosts" "underlay_ip"}}'): each host
    # drops its own address.
    peers: [192.168.121.105, 192.168.121.106, 192.168.121.107]
"#,
};

/// The arguments as the parameter table delivers them.
#[derive(Debug, Deserialize)]
struct Raw {
    name: String,
    id: Option<i64>,
    dstport: i64,
    dev: Option<String>,
    local: Option<String>,
    peers: Vec<String>,
    bridge: Option<String>,
    mtu: Option<i64>,
    learning: bool,
    state: Presence,
}

/// A `vxlan` task's arguments, checked and typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    name: String,
    state: Presence,
    /// 0 when not given (only with `state: absent`).
    vni: u32,
    dstport: u16,
    dev: Option<String>,
    local: Option<IpAddr>,
    peers: BTreeSet<IpAddr>,
    bridge: Option<String>,
    mtu: Option<u32>,
    learning: bool,
}

impl Request {
    fn unit(&self) -> String {
        format!("kvmforge-vxlan-{}.service", self.name)
    }
    fn unit_path(&self) -> String {
        format!("{UNIT_DIR}/{}", self.unit())
    }
    fn wants_path(&self) -> String {
        format!("{WANTS_DIR}/{}", self.unit())
    }
}

/// A network device name as the kernel takes it (IFNAMSIZ less the terminating NUL), limited to
/// characters that need no quoting in a shell command nor escaping in a systemd unit name.
fn ifname(param: &'static str, name: &str) -> Result<(), ArgError> {
    let valid = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(ArgError::invalid(
            param,
            format!(
                "{param} {name:?} is not a usable device name (1 to 15 letters, digits, `.`, `_`, `-`, not starting with `-`)"
            ),
        ))
    }
}

/// A unicast address usable as a tunnel endpoint.
fn endpoint(param: &'static str, s: &str) -> Result<IpAddr, ArgError> {
    let addr: IpAddr = s
        .trim()
        .parse()
        .map_err(|_| ArgError::invalid(param, format!("{param}: {s:?} is not an IP address")))?;
    if addr.is_unspecified() || addr.is_multicast() || addr.is_loopback() {
        return Err(ArgError::invalid(
            param,
            format!(
                "{param}: {addr} cannot be a tunnel endpoint (unspecified, loopback or multicast)"
            ),
        ));
    }
    if let IpAddr::V4(v4) = addr {
        if v4.is_broadcast() {
            return Err(ArgError::invalid(
                param,
                format!("{param}: {addr} cannot be a tunnel endpoint (broadcast)"),
            ));
        }
    }
    Ok(addr)
}

fn family(addr: IpAddr) -> Family {
    if addr.is_ipv4() {
        Family::Inet
    } else {
        Family::Inet6
    }
}

fn family_name(addr: IpAddr) -> &'static str {
    if addr.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// The settings fixed when a VXLAN device is created.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tunnel {
    vni: u32,
    dstport: u16,
    local: Option<IpAddr>,
    dev: Option<String>,
    /// A point-to-point peer or a multicast group: not how this module builds a mesh, kept to
    /// re-create a device it replaces.
    remote: Option<IpAddr>,
    group: Option<IpAddr>,
    external: bool,
}

/// Everything the module manages about one device.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Device {
    tunnel: Tunnel,
    learning: bool,
    mtu: u32,
    master: Option<String>,
    up: bool,
    peers: BTreeSet<IpAddr>,
}

impl Device {
    /// The device as observed.
    fn observed(link: &Link, fdb: &BridgeFdb) -> Option<Device> {
        let v = link.vxlan()?;
        Some(Device {
            tunnel: Tunnel {
                vni: v.id,
                dstport: v.dstport,
                local: v.local,
                dev: v.dev.clone(),
                remote: v.remote,
                group: v.group,
                external: v.external,
            },
            learning: v.learning,
            mtu: link.mtu,
            master: link.master.clone(),
            up: link.is_up(),
            peers: fdb.flood_remotes(&link.name),
        })
    }

    /// As `ip` and `bridge` would show it, one setting a line: the before/after of `--diff`.
    fn describe(&self, name: &str) -> String {
        let t = &self.tunnel;
        let mut s = format!("{name}: vxlan id {} dstport {}", t.vni, t.dstport);
        for (word, v) in [("local", t.local), ("remote", t.remote), ("group", t.group)] {
            if let Some(a) = v {
                s.push_str(&format!(" {word} {a}"));
            }
        }
        if let Some(d) = &t.dev {
            s.push_str(&format!(" dev {d}"));
        }
        if t.external {
            s.push_str(" external");
        }
        s.push_str(if self.learning {
            " learning\n"
        } else {
            " nolearning\n"
        });
        s.push_str(&format!("mtu {}\n", self.mtu));
        match &self.master {
            Some(m) => s.push_str(&format!("master {m}\n")),
            None => s.push_str("nomaster\n"),
        }
        s.push_str(if self.up { "up\n" } else { "down\n" });
        for p in &self.peers {
            s.push_str(&format!("peer {p}\n"));
        }
        s
    }

    /// The commands that create the device as it is described, in the order that makes it
    /// usable last: created, sized, attached, its peers known, then up.
    fn create(&self, name: &str) -> Vec<String> {
        let t = &self.tunnel;
        let mut add = format!("ip link add {name} type vxlan");
        if !t.external {
            add.push_str(&format!(" id {}", t.vni));
        }
        add.push_str(&format!(" dstport {}", t.dstport));
        for (word, v) in [("local", t.local), ("remote", t.remote), ("group", t.group)] {
            if let Some(a) = v {
                add.push_str(&format!(" {word} {a}"));
            }
        }
        if let Some(d) = &t.dev {
            add.push_str(&format!(" dev {}", shell_quote(d)));
        }
        if t.external {
            add.push_str(" external");
        }
        if !self.learning {
            add.push_str(" nolearning");
        }
        let mut cmds = vec![add, format!("ip link set {name} mtu {}", self.mtu)];
        if let Some(m) = &self.master {
            cmds.push(master_cmd(name, Some(m)));
        }
        cmds.extend(self.peers.iter().map(|p| fdb_cmd("append", name, *p)));
        if self.up {
            cmds.push(format!("ip link set {name} up"));
        }
        cmds
    }
}

fn master_cmd(name: &str, master: Option<&str>) -> String {
    match master {
        Some(m) => format!("ip link set {name} master {}", shell_quote(m)),
        None => format!("ip link set {name} nomaster"),
    }
}

fn fdb_cmd(verb: &str, name: &str, peer: IpAddr) -> String {
    format!("bridge fdb {verb} {FLOOD_MAC} dev {name} dst {peer}")
}

fn learning_cmd(name: &str, on: bool) -> String {
    format!(
        "ip link set {name} type vxlan {}",
        if on { "learning" } else { "nolearning" }
    )
}

fn tunnel_differences(have: &Tunnel, want: &Tunnel) -> Vec<String> {
    let opt = |v: &Option<IpAddr>| v.map_or("none".to_string(), |a| a.to_string());
    let mut out = Vec::new();
    if have.vni != want.vni || have.external != want.external {
        let vni = |t: &Tunnel| {
            if t.external {
                "external".to_string()
            } else {
                t.vni.to_string()
            }
        };
        out.push(format!("id {} -> {}", vni(have), vni(want)));
    }
    if have.dstport != want.dstport {
        out.push(format!("dstport {} -> {}", have.dstport, want.dstport));
    }
    if have.local != want.local {
        out.push(format!(
            "local {} -> {}",
            opt(&have.local),
            opt(&want.local)
        ));
    }
    if have.dev != want.dev {
        let d = |d: &Option<String>| d.clone().unwrap_or_else(|| "none".into());
        out.push(format!("dev {} -> {}", d(&have.dev), d(&want.dev)));
    }
    if have.remote.is_some() {
        out.push(format!("remote {} -> none", opt(&have.remote)));
    }
    if have.group.is_some() {
        out.push(format!("group {} -> none", opt(&have.group)));
    }
    out
}

/// The boot-time unit: the same commands as a live creation, after waiting for what the device
/// needs, and deleting a leftover device so that a restart gives exactly this state.
fn unit_text(name: &str, want: &Device, bridge: Option<&str>) -> String {
    let t = &want.tunnel;
    let dev = t.dev.as_deref().unwrap_or_default();
    let mut wait = format!("ip link show dev {dev} >/dev/null 2>&1");
    if let Some(b) = bridge {
        wait.push_str(&format!(" && ip link show dev {b} >/dev/null 2>&1"));
    }
    let mut s = format!(
        "# Written by kvmforge (vxlan): re-creates the VXLAN overlay {name} at boot.\n\
         # The next run overwrites changes made here: change the playbook instead.\n\
         [Unit]\n\
         Description=VXLAN overlay {name} (VNI {vni}, port {port}, over {dev})\n\
         After=network.target\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         RemainAfterExit=yes\n\
         # The underlay and the bridge may appear after this unit starts (networkd, libvirt).\n\
         ExecStartPre=timeout {WAIT_SECONDS} sh -c 'until {wait}; do sleep 1; done'\n\
         ExecStartPre=-ip link del {name}\n",
        vni = t.vni,
        port = t.dstport,
    );
    let mut device = want.clone();
    device.master = bridge.map(str::to_string);
    for cmd in device.create(name) {
        s.push_str(&format!("ExecStart={cmd}\n"));
    }
    s.push_str(&format!(
        "ExecStop=-ip link del {name}\n\n[Install]\nWantedBy=multi-user.target\n"
    ));
    s
}

fn host(msg: impl Into<String>) -> ModuleError {
    ModuleError::Host(msg.into())
}

fn kind_of(link: &Link) -> String {
    link.kind_name()
        .map(|k| format!("a {k} device"))
        .unwrap_or_else(|| "a physical device".into())
}

impl Module for Vxlan {
    type Request = Request;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn request(&self, args: Args, _ctx: &PlanContext) -> Result<Request, ModuleError> {
        let raw: Raw = args.parse()?;
        ifname("name", &raw.name)?;
        let vni = match (raw.id, raw.state) {
            (None, Presence::Present) => {
                return Err(ArgError::requires(
                    "state",
                    "id",
                    "state: present needs id, the VNI of the overlay",
                )
                .into())
            }
            (None, Presence::Absent) => 0,
            (Some(id), _) if (1..=MAX_VNI).contains(&id) => id as u32,
            (Some(id), _) => {
                return Err(ArgError::invalid(
                    "id",
                    format!("id (the VNI) must be 1 to {MAX_VNI}, got {id}"),
                )
                .into())
            }
        };
        if !(1..=65535).contains(&raw.dstport) {
            return Err(ArgError::invalid(
                "dstport",
                format!(
                    "dstport must be a UDP port, 1 to 65535, got {}",
                    raw.dstport
                ),
            )
            .into());
        }
        if let Some(dev) = &raw.dev {
            ifname("dev", dev)?;
            if *dev == raw.name {
                return Err(ArgError::conflict(
                    "dev",
                    "name",
                    "dev is the underlay the tunnel is sent over: it cannot be the VXLAN device itself",
                )
                .into());
            }
        }
        if let Some(bridge) = &raw.bridge {
            ifname("bridge", bridge)?;
            if *bridge == raw.name {
                return Err(ArgError::conflict(
                    "bridge",
                    "name",
                    "the VXLAN device cannot be its own bridge",
                )
                .into());
            }
        }
        let local = raw
            .local
            .as_deref()
            .map(|l| endpoint("local", l))
            .transpose()?;
        let mut peers = BTreeSet::new();
        for p in &raw.peers {
            peers.insert(endpoint("peers", p)?);
        }
        let families: BTreeSet<bool> = peers.iter().map(IpAddr::is_ipv4).collect();
        if families.len() > 1 {
            return Err(ArgError::invalid(
                "peers",
                "peers mixes IPv4 and IPv6 addresses: a tunnel has one address family",
            )
            .into());
        }
        if let (Some(l), Some(p)) = (local, peers.iter().next()) {
            if l.is_ipv4() != p.is_ipv4() {
                return Err(ArgError::conflict(
                    "peers",
                    "local",
                    format!(
                        "peers are {} but local {l} is {}: a tunnel has one address family",
                        family_name(*p),
                        family_name(l)
                    ),
                )
                .into());
            }
        }
        let mtu = match raw.mtu {
            None => None,
            Some(m) if (68..=65535).contains(&m) => Some(m as u32),
            Some(m) => {
                return Err(
                    ArgError::invalid("mtu", format!("mtu must be 68 to 65535, got {m}")).into(),
                )
            }
        };
        Ok(Request {
            name: raw.name,
            state: raw.state,
            vni,
            dstport: raw.dstport as u16,
            dev: raw.dev,
            local,
            peers,
            bridge: raw.bridge,
            mtu,
            learning: raw.learning,
        })
    }

    fn probes(&self, req: &Request) -> Vec<Probe> {
        let mut probes = vec![IpAddrs::probe(&()), BridgeFdb::probe(&())];
        if req.state == Presence::Present && req.dev.is_none() {
            probes.push(IpRoutes::probe(&()));
        }
        probes.extend(
            [
                req.unit_path(),
                req.wants_path(),
                WANTS_DIR.to_string(),
                SYSTEMD_RUNNING.to_string(),
            ]
            .map(Probe::File),
        );
        probes
    }

    fn plan(&self, req: &Request, observed: &Observed) -> Result<Plan, ModuleError> {
        let addrs = observed.fact::<IpAddrs>(&())?;
        let fdb = observed.fact::<BridgeFdb>(&())?;
        let current = match addrs.get(&req.name) {
            None => None,
            Some(i) => Some(Device::observed(&i.link, &fdb).ok_or_else(|| {
                host(format!(
                    "{} exists and is {}, not a VXLAN device: choose another name",
                    req.name,
                    kind_of(&i.link)
                ))
            })?),
        };
        match req.state {
            Presence::Present => plan_present(req, observed, &addrs, current),
            Presence::Absent => plan_absent(req, observed, current),
        }
    }
}

/// The underlay device: as given, or the default route's.
fn underlay(req: &Request, observed: &Observed) -> Result<String, ModuleError> {
    if let Some(d) = &req.dev {
        return Ok(d.clone());
    }
    let routes = observed.fact::<IpRoutes>(&())?;
    let route = match req.local {
        Some(l) => routes.default_route(family(l)),
        None => routes
            .default_route(Family::Inet)
            .or_else(|| routes.default_route(Family::Inet6)),
    };
    route.and_then(|r| r.dev.clone()).ok_or_else(|| {
        host("this host has no default route through a device to take the underlay from: give dev")
    })
}

/// The tunnel's source address: as given (it must be one of the host's), or the underlay's
/// first global address, IPv4 first.
fn local_address(req: &Request, addrs: &IpAddrs, under: &Interface) -> Result<IpAddr, ModuleError> {
    if let Some(l) = req.local {
        if addrs.owner_of(l).is_none() {
            return Err(host(format!(
                "local {l} is not an address of this host (the tunnel's source must be one of its addresses)"
            )));
        }
        return Ok(l);
    }
    let global = |fam: Family| {
        under
            .global_addresses()
            .find(|a| a.family == fam && !a.tentative)
            .map(|a| a.local)
    };
    global(Family::Inet)
        .or_else(|| global(Family::Inet6))
        .ok_or_else(|| {
            host(format!(
                "{} has no global address to send the tunnel from: give local",
                under.link.name
            ))
        })
}

fn plan_present(
    req: &Request,
    observed: &Observed,
    addrs: &IpAddrs,
    current: Option<Device>,
) -> Result<Plan, ModuleError> {
    let name = req.name.as_str();
    if observed.file(SYSTEMD_RUNNING)?.kind != FileKind::Dir {
        return Err(host(
            "this host does not run systemd: the overlay is re-created at boot by a systemd unit",
        ));
    }
    let dev = underlay(req, observed)?;
    let under = addrs.get(&dev).ok_or_else(|| {
        host(format!(
            "the underlay device {dev} does not exist on this host"
        ))
    })?;
    if dev == name {
        return Err(host(format!(
            "the default route goes through {name} itself: give dev, the underlay"
        )));
    }
    let local = local_address(req, addrs, under)?;
    let peers: BTreeSet<IpAddr> = req.peers.iter().copied().filter(|p| *p != local).collect();
    if let Some(p) = peers.iter().find(|p| p.is_ipv4() != local.is_ipv4()) {
        return Err(host(format!(
            "peer {p} is {} but the local address {local} is {}: a tunnel has one address family",
            family_name(*p),
            family_name(local)
        )));
    }
    let overhead = if local.is_ipv4() {
        OVERHEAD_V4
    } else {
        OVERHEAD_V6
    };
    let room = under.link.mtu.saturating_sub(overhead);
    let mtu = req.mtu.unwrap_or(room);
    if mtu > room || mtu < 68 {
        return Err(host(format!(
            "mtu {mtu} does not fit: {dev}'s MTU {} carries frames of at most {room} bytes through VXLAN over {} ({overhead} bytes of headers)",
            under.link.mtu,
            family_name(local)
        )));
    }
    if let Some(b) = &req.bridge {
        match addrs.get(b) {
            None => {
                return Err(host(format!(
                    "bridge {b} does not exist on this host: create it before the overlay (this module attaches the device to a bridge, it does not create one)"
                )))
            }
            Some(i) if i.link.bridge().is_none() => {
                return Err(host(format!(
                    "{b} is {}, not a bridge: the overlay can only be attached to a bridge",
                    kind_of(&i.link)
                )))
            }
            Some(_) => {}
        }
    }
    if let Some(other) = addrs.interfaces.iter().find(|i| {
        i.link.name != name
            && i.link
                .vxlan()
                .is_some_and(|v| v.id == req.vni && v.dstport == req.dstport && !v.external)
    }) {
        return Err(host(format!(
            "VNI {} on port {} is already carried by {}: the kernel allows one device per VNI and port",
            req.vni, req.dstport, other.link.name
        )));
    }

    let want = Device {
        tunnel: Tunnel {
            vni: req.vni,
            dstport: req.dstport,
            local: Some(local),
            dev: Some(dev.clone()),
            remote: None,
            group: None,
            external: false,
        },
        learning: req.learning,
        mtu,
        // Without `bridge`, whatever the device is attached to is left alone.
        master: req
            .bridge
            .clone()
            .or_else(|| current.as_ref().and_then(|c| c.master.clone())),
        up: true,
        peers,
    };

    let mut plan = Plan::ok();
    let mut live: Vec<(Change, Vec<String>)> = Vec::new();
    // Commands that bring back the device as it was, for a rollback.
    let mut undo: Vec<String> = Vec::new();
    let mut creates = false;
    match &current {
        None => {
            creates = true;
            live.push((
                Change::new(format!(
                    "create VXLAN {name} (VNI {}, port {}, {local} over {dev}, {} peers)",
                    req.vni,
                    req.dstport,
                    want.peers.len()
                )),
                want.create(name),
            ));
        }
        Some(have) if have.tunnel != want.tunnel => {
            let mut cmds = vec![format!("ip link del {name}")];
            cmds.extend(want.create(name));
            live.push((
                Change::new(format!(
                    "re-create {name}: {} (cannot change on a live device)",
                    tunnel_differences(&have.tunnel, &want.tunnel).join(", ")
                )),
                cmds,
            ));
            undo.push(format!("ip link del {name}"));
            undo.extend(have.create(name));
        }
        Some(have) => {
            if have.mtu != want.mtu {
                live.push((
                    Change::new(format!("{name}: mtu {} -> {}", have.mtu, want.mtu)),
                    vec![format!("ip link set {name} mtu {}", want.mtu)],
                ));
                undo.push(format!("ip link set {name} mtu {}", have.mtu));
            }
            if have.learning != want.learning {
                let word = |on| if on { "learning" } else { "nolearning" };
                live.push((
                    Change::new(format!(
                        "{name}: {} -> {}",
                        word(have.learning),
                        word(want.learning)
                    )),
                    vec![learning_cmd(name, want.learning)],
                ));
                undo.push(learning_cmd(name, have.learning));
            }
            if have.master != want.master {
                live.push((
                    Change::new(format!(
                        "{name}: attach to {} (was {})",
                        want.master.as_deref().unwrap_or("none"),
                        have.master.as_deref().unwrap_or("not attached")
                    )),
                    vec![master_cmd(name, want.master.as_deref())],
                ));
                undo.push(master_cmd(name, have.master.as_deref()));
            }
            for p in want.peers.difference(&have.peers) {
                live.push((
                    Change::new(format!("{name}: add peer {p}")),
                    vec![fdb_cmd("append", name, *p)],
                ));
                undo.push(fdb_cmd("del", name, *p));
            }
            for p in have.peers.difference(&want.peers) {
                live.push((
                    Change::new(format!("{name}: remove peer {p} (not in peers)")),
                    vec![fdb_cmd("del", name, *p)],
                ));
                undo.push(fdb_cmd("append", name, *p));
            }
            if !have.up {
                live.push((
                    Change::new(format!("{name}: up (was down)")),
                    vec![format!("ip link set {name} up")],
                ));
                undo.push(format!("ip link set {name} down"));
            }
        }
    }
    let before = current
        .as_ref()
        .map(|c| c.describe(name))
        .unwrap_or_default();
    for (i, (change, cmds)) in live.into_iter().enumerate() {
        let change = if i == 0 {
            change.with_diff(
                &format!("{name} (live)"),
                before.clone(),
                want.describe(name),
            )
        } else {
            change
        };
        plan.change(change, cmds.into_iter().map(Action::run));
    }

    // At boot: the unit and its enablement link.
    let unit_path = req.unit_path();
    let text = unit_text(name, &want, req.bridge.as_deref());
    let unit = observed.file(&unit_path)?;
    let unit_changed = unit.content.as_deref() != Some(text.as_bytes());
    if unit_changed {
        let verb = if unit.exists() { "update" } else { "create" };
        plan.change(
            Change::new(format!("{verb} {unit_path} (re-creates {name} at boot)")).with_diff(
                &unit_path,
                unit.text(),
                text.clone(),
            ),
            [Action::write(&unit_path, text, Attrs::default(), false)],
        );
    }
    let wants = observed.file(&req.wants_path())?;
    if wants.link_target.as_deref() != Some(unit_path.as_str()) {
        let mut actions = Vec::new();
        if !observed.file(WANTS_DIR)?.exists() {
            actions.push(Action::MakeDir {
                path: WANTS_DIR.into(),
                attrs: Attrs::default(),
            });
        }
        actions.push(Action::Symlink {
            target: unit_path.clone(),
            link: req.wants_path(),
        });
        plan.change(
            Change::new(format!("enable {} at boot", req.unit())),
            actions,
        );
    }
    if unit_changed {
        plan.actions.push(Action::run("systemctl daemon-reload"));
    }

    if plan.changed() {
        plan.guard = Some(NetworkGuard {
            reapply: reapply(undo),
            creates_devices: if creates {
                vec![name.to_string()]
            } else {
                vec![]
            },
            also_saves: vec![],
        });
    }
    Ok(finish(plan, req, &want))
}

fn plan_absent(
    req: &Request,
    observed: &Observed,
    current: Option<Device>,
) -> Result<Plan, ModuleError> {
    let name = req.name.as_str();
    let mut plan = Plan::ok();
    let mut undo = Vec::new();
    if let Some(have) = &current {
        plan.change(
            Change::new(format!("delete VXLAN {name}")).with_diff(
                &format!("{name} (live)"),
                have.describe(name),
                "",
            ),
            [Action::run(format!("ip link del {name}"))],
        );
        undo = have.create(name);
    }
    let unit_path = req.unit_path();
    let unit = observed.file(&unit_path)?;
    let wants = observed.file(&req.wants_path())?;
    let systemd = observed.file(SYSTEMD_RUNNING)?.kind == FileKind::Dir;
    if wants.link_target.is_some() || wants.exists() {
        plan.change(
            Change::new(format!("disable {} at boot", req.unit())),
            [Action::Remove {
                path: req.wants_path(),
            }],
        );
    }
    if unit.exists() {
        let mut actions = Vec::new();
        if systemd {
            // After the device is gone: stopping runs the unit's own (tolerant) deletion.
            actions.push(Action::run(format!("systemctl stop -- {}", req.unit())));
        }
        actions.push(Action::Remove {
            path: unit_path.clone(),
        });
        if systemd {
            actions.push(Action::run("systemctl daemon-reload"));
        }
        plan.change(
            Change::new(format!("remove {unit_path}")).with_diff(&unit_path, unit.text(), ""),
            actions,
        );
    }
    if plan.changed() {
        plan.guard = Some(NetworkGuard {
            reapply: reapply(undo),
            creates_devices: vec![],
            also_saves: vec![],
        });
    }
    Ok(plan.with_data("name", name))
}

/// The rollback's command: systemd rereads the restored unit, then the device is put back as it
/// was. Every step runs even if one fails, so as much as possible comes back.
fn reapply(undo: Vec<String>) -> String {
    let mut steps = vec!["systemctl daemon-reload".to_string()];
    steps.extend(undo);
    steps.join("; ")
}

fn finish(plan: Plan, req: &Request, want: &Device) -> Plan {
    let t = &want.tunnel;
    plan.with_data("name", req.name.as_str())
        .with_data("id", t.vni)
        .with_data("dev", t.dev.clone().unwrap_or_default())
        .with_data("local", t.local.map(|l| l.to_string()).unwrap_or_default())
        .with_data("mtu", want.mtu)
        .with_data(
            "peers",
            want.peers.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        )
        .with_data("unit", req.unit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::{ArgErrorKind, CommandOutput, FileState, Observation};
    use crate::modules::facts::fixture;
    use crate::modules::testing::{arg_error, commands, req, runs};
    use serde_json::{json, Value};

    /// The unit and its link as a previous run left them.
    fn installed(observed: Observed, req: &Request, unit: &str) -> Observed {
        observed
            .with_file(&req.unit_path(), FileState::file(unit))
            .with_file(
                &req.wants_path(),
                FileState {
                    link_target: Some(req.unit_path()),
                    ..FileState::file(unit)
                },
            )
    }

    fn seen(file: &str) -> Observation {
        Observation::Command(CommandOutput::ok(&fixture(file)))
    }

    /// A host as captured in a network namespace (`tests/facts/*/vxlan-CASE.json`): `eth0`
    /// 10.0.0.11/24 and fd00:10::11/64, MTU 1500, default route via 10.0.0.1, bridge `br-ov`.
    /// `fresh`: no overlay; `meshed`: wsfvxlan0 as setup-kvm.sh makes it, peers .12 and .13;
    /// `drifted`: the same with MTU 1400, peer .13 deleted and .14 added by hand; `other`:
    /// wsfvxlan0 with VNI 100 on port 4789, learning, detached, down, peer .12.
    fn host_state(case: &str) -> Observed {
        Observed::new()
            .with_fact::<IpAddrs>(&(), seen(&format!("ip_addrs/vxlan-{case}.json")))
            .with_fact::<IpRoutes>(&(), seen(&format!("ip_routes/vxlan-{case}.json")))
            .with_fact::<BridgeFdb>(&(), seen(&format!("bridge_fdb/vxlan-{case}.json")))
            .with_file(SYSTEMD_RUNNING, FileState::dir())
            .with_file(WANTS_DIR, FileState::dir())
    }

    /// Without the unit files (a host the module never ran on).
    fn bare(case: &str, r: &Request) -> Observed {
        host_state(case)
            .with_file(&r.unit_path(), FileState::absent())
            .with_file(&r.wants_path(), FileState::absent())
    }

    fn seeds() -> Value {
        json!({"name": "wsfvxlan0", "id": 20680, "dstport": 20680, "dev": "eth0",
               "bridge": "br-ov", "peers": ["10.0.0.11", "10.0.0.12", "10.0.0.13"]})
    }

    fn with(mut base: Value, extra: Value) -> Value {
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    }

    fn written(p: &Plan) -> String {
        p.actions
            .iter()
            .find_map(|a| match a {
                Action::WriteFile { content, .. } => {
                    Some(String::from_utf8(content.clone()).unwrap())
                }
                _ => None,
            })
            .expect("a unit file written")
    }

    const CREATE: [&str; 6] = [
        "ip link add wsfvxlan0 type vxlan id 20680 dstport 20680 local 10.0.0.11 dev eth0 nolearning",
        "ip link set wsfvxlan0 mtu 1450",
        "ip link set wsfvxlan0 master br-ov",
        "bridge fdb append 00:00:00:00:00:00 dev wsfvxlan0 dst 10.0.0.12",
        "bridge fdb append 00:00:00:00:00:00 dev wsfvxlan0 dst 10.0.0.13",
        "ip link set wsfvxlan0 up",
    ];

    #[test]
    fn probes() {
        let r = req(&Vxlan, seeds());
        assert_eq!(
            Vxlan.probes(&r),
            vec![
                IpAddrs::probe(&()),
                BridgeFdb::probe(&()),
                Probe::File("/etc/systemd/system/kvmforge-vxlan-wsfvxlan0.service".into()),
                Probe::File(
                    "/etc/systemd/system/multi-user.target.wants/kvmforge-vxlan-wsfvxlan0.service"
                        .into()
                ),
                Probe::File(WANTS_DIR.into()),
                Probe::File(SYSTEMD_RUNNING.into()),
            ]
        );
        // The routes only when the underlay is to be found from them.
        let r = req(&Vxlan, json!({"name": "vx0", "id": 5}));
        assert!(Vxlan.probes(&r).contains(&IpRoutes::probe(&())));
    }

    #[test]
    fn fresh_host_gets_the_device_the_unit_and_a_guard() {
        let r = req(&Vxlan, seeds());
        let p = Vxlan.plan(&r, &bare("fresh", &r)).unwrap();
        let mut expect: Vec<String> = CREATE.iter().map(|s| s.to_string()).collect();
        expect.push("systemctl daemon-reload".into());
        assert_eq!(commands(&p), expect);
        assert_eq!(
            p.changes[0].summary,
            "create VXLAN wsfvxlan0 (VNI 20680, port 20680, 10.0.0.11 over eth0, 2 peers)"
        );
        let diff = p.changes[0].diff.as_ref().unwrap();
        assert_eq!(diff.before, "");
        assert_eq!(
            diff.after,
            "wsfvxlan0: vxlan id 20680 dstport 20680 local 10.0.0.11 dev eth0 nolearning\n\
             mtu 1450\nmaster br-ov\nup\npeer 10.0.0.12\npeer 10.0.0.13\n"
        );
        assert_eq!(
            written(&p),
            "# Written by kvmforge (vxlan): re-creates the VXLAN overlay wsfvxlan0 at boot.\n\
             # The next run overwrites changes made here: change the playbook instead.\n\
             [Unit]\n\
             Description=VXLAN overlay wsfvxlan0 (VNI 20680, port 20680, over eth0)\n\
             After=network.target\n\
             \n\
             [Service]\n\
             Type=oneshot\n\
             RemainAfterExit=yes\n\
             # The underlay and the bridge may appear after this unit starts (networkd, libvirt).\n\
             ExecStartPre=timeout 60 sh -c 'until ip link show dev eth0 >/dev/null 2>&1 && ip link show dev br-ov >/dev/null 2>&1; do sleep 1; done'\n\
             ExecStartPre=-ip link del wsfvxlan0\n\
             ExecStart=ip link add wsfvxlan0 type vxlan id 20680 dstport 20680 local 10.0.0.11 dev eth0 nolearning\n\
             ExecStart=ip link set wsfvxlan0 mtu 1450\n\
             ExecStart=ip link set wsfvxlan0 master br-ov\n\
             ExecStart=bridge fdb append 00:00:00:00:00:00 dev wsfvxlan0 dst 10.0.0.12\n\
             ExecStart=bridge fdb append 00:00:00:00:00:00 dev wsfvxlan0 dst 10.0.0.13\n\
             ExecStart=ip link set wsfvxlan0 up\n\
             ExecStop=-ip link del wsfvxlan0\n\
             \n\
             [Install]\n\
             WantedBy=multi-user.target\n"
        );
        assert!(p.actions.contains(&Action::Symlink {
            target: r.unit_path(),
            link: r.wants_path()
        }));
        assert_eq!(
            p.guard,
            Some(NetworkGuard {
                reapply: "systemctl daemon-reload".into(),
                creates_devices: vec!["wsfvxlan0".into()],
                also_saves: vec![],
            })
        );
        assert_eq!(p.data["peers"], json!(["10.0.0.12", "10.0.0.13"]));
        assert_eq!(p.data["mtu"], json!(1450));
    }

    /// The device the fresh plan makes, captured after running its commands, with the files it
    /// wrote: nothing left to do.
    #[test]
    fn second_run_is_ok() {
        let r = req(&Vxlan, seeds());
        let first = Vxlan.plan(&r, &bare("fresh", &r)).unwrap();
        let after = installed(host_state("meshed"), &r, &written(&first));
        let p = Vxlan.plan(&r, &after).unwrap();
        assert!(!p.changed(), "{:?}", p.changes);
        assert!(p.actions.is_empty() && p.guard.is_none());
        // Peers given without this host's own address: the same.
        let r2 = req(
            &Vxlan,
            with(seeds(), json!({"peers": "10.0.0.13 10.0.0.12"})),
        );
        assert!(!Vxlan.plan(&r2, &after).unwrap().changed());
    }

    #[test]
    fn drift_is_reported_and_corrected() {
        let r = req(&Vxlan, seeds());
        let first = Vxlan.plan(&r, &bare("fresh", &r)).unwrap();
        let drifted = installed(host_state("drifted"), &r, &written(&first));
        let p = Vxlan.plan(&r, &drifted).unwrap();
        let summaries: Vec<_> = p.changes.iter().map(|c| c.summary.as_str()).collect();
        assert_eq!(
            summaries,
            [
                "wsfvxlan0: mtu 1400 -> 1450",
                "wsfvxlan0: add peer 10.0.0.13",
                "wsfvxlan0: remove peer 10.0.0.14 (not in peers)"
            ]
        );
        assert_eq!(
            runs(&p),
            [
                "ip link set wsfvxlan0 mtu 1450",
                "bridge fdb append 00:00:00:00:00:00 dev wsfvxlan0 dst 10.0.0.13",
                "bridge fdb del 00:00:00:00:00:00 dev wsfvxlan0 dst 10.0.0.14",
            ]
        );
        let diff = p.changes[0].diff.as_ref().unwrap();
        assert!(diff.before.contains("mtu 1400\n") && diff.before.contains("peer 10.0.0.14\n"));
        assert!(diff.after.contains("mtu 1450\n") && diff.after.contains("peer 10.0.0.13\n"));
        let guard = p.guard.unwrap();
        assert_eq!(
            guard.reapply,
            "systemctl daemon-reload; ip link set wsfvxlan0 mtu 1400; \
             bridge fdb del 00:00:00:00:00:00 dev wsfvxlan0 dst 10.0.0.13; \
             bridge fdb append 00:00:00:00:00:00 dev wsfvxlan0 dst 10.0.0.14"
        );
        assert!(guard.creates_devices.is_empty());
    }

    #[test]
    fn removing_a_peer_removes_its_entry_and_rewrites_the_unit() {
        let r = req(&Vxlan, seeds());
        let first = Vxlan.plan(&r, &bare("fresh", &r)).unwrap();
        let meshed = installed(host_state("meshed"), &r, &written(&first));
        let r = req(
            &Vxlan,
            with(seeds(), json!({"peers": ["10.0.0.11", "10.0.0.12"]})),
        );
        let p = Vxlan.plan(&r, &meshed).unwrap();
        assert_eq!(
            commands(&p),
            [
                "bridge fdb del 00:00:00:00:00:00 dev wsfvxlan0 dst 10.0.0.13",
                "systemctl daemon-reload"
            ]
        );
        let unit = p.changes[1].diff.as_ref().unwrap();
        assert!(unit.before.contains("dst 10.0.0.13\n"));
        assert!(!unit.after.contains("10.0.0.13"));
        assert_eq!(
            p.changes[1].summary,
            "update /etc/systemd/system/kvmforge-vxlan-wsfvxlan0.service (re-creates wsfvxlan0 at boot)"
        );
    }

    #[test]
    fn settings_fixed_at_creation_re_create_the_device() {
        let r = req(&Vxlan, seeds());
        let p = Vxlan.plan(&r, &bare("other", &r)).unwrap();
        assert_eq!(
            p.changes[0].summary,
            "re-create wsfvxlan0: id 100 -> 20680, dstport 4789 -> 20680 (cannot change on a live device)"
        );
        let cmds = commands(&p);
        assert_eq!(cmds[0], "ip link del wsfvxlan0");
        assert_eq!(cmds[1..7], CREATE);
        let guard = p.guard.unwrap();
        assert!(guard.creates_devices.is_empty());
        assert_eq!(
            guard.reapply,
            "systemctl daemon-reload; ip link del wsfvxlan0; \
             ip link add wsfvxlan0 type vxlan id 100 dstport 4789 local 10.0.0.11 dev eth0; \
             ip link set wsfvxlan0 mtu 1450; \
             bridge fdb append 00:00:00:00:00:00 dev wsfvxlan0 dst 10.0.0.12"
        );
    }

    #[test]
    fn learning_and_a_detached_or_down_device_are_fixed_live() {
        let r = req(
            &Vxlan,
            json!({"name": "wsfvxlan0", "id": 100, "dev": "eth0", "learning": true,
                   "bridge": "br-ov", "peers": ["10.0.0.12"]}),
        );
        let p = Vxlan.plan(&r, &bare("other", &r)).unwrap();
        assert_eq!(
            commands(&p)[..2],
            [
                "ip link set wsfvxlan0 master br-ov",
                "ip link set wsfvxlan0 up"
            ]
        );
        let r = req(
            &Vxlan,
            json!({"name": "wsfvxlan0", "id": 100, "dev": "eth0", "peers": ["10.0.0.12"]}),
        );
        let p = Vxlan.plan(&r, &bare("other", &r)).unwrap();
        assert_eq!(
            commands(&p)[..2],
            [
                "ip link set wsfvxlan0 type vxlan nolearning",
                "ip link set wsfvxlan0 up"
            ]
        );
        // Without `bridge` the unit attaches nothing.
        assert!(!written(&p).contains("master"));
    }

    #[test]
    fn defaults_come_from_the_host() {
        // dev from the default route, local its first IPv4 address, mtu 1500 - 50.
        let r = req(
            &Vxlan,
            json!({"name": "vx7", "id": 7, "peers": ["10.0.0.12"]}),
        );
        let p = Vxlan.plan(&r, &bare("fresh", &r)).unwrap();
        assert_eq!(
            commands(&p)[..2],
            [
                "ip link add vx7 type vxlan id 7 dstport 4789 local 10.0.0.11 dev eth0 nolearning",
                "ip link set vx7 mtu 1450"
            ]
        );
        // An IPv6 underlay costs 20 bytes more.
        let r = req(
            &Vxlan,
            json!({"name": "vx7", "id": 7, "local": "fd00:10::11", "dev": "eth0",
                   "peers": ["fd00:10::12", "fd00:10::11"]}),
        );
        let p = Vxlan.plan(&r, &bare("fresh", &r)).unwrap();
        assert_eq!(
            commands(&p)[..3],
            [
                "ip link add vx7 type vxlan id 7 dstport 4789 local fd00:10::11 dev eth0 nolearning",
                "ip link set vx7 mtu 1430",
                "bridge fdb append 00:00:00:00:00:00 dev vx7 dst fd00:10::12"
            ]
        );
        // A host without a default route needs dev.
        let r = req(&Vxlan, json!({"name": "vx7", "id": 7}));
        let o = bare("fresh", &r).with_fact::<IpRoutes>(&(), seen("ip_routes/plain.json"));
        let e = Vxlan.plan(&r, &o).unwrap_err();
        assert!(e.to_string().contains("no default route"), "{e}");
    }

    #[test]
    fn host_states_it_cannot_work_with_fail_clearly() {
        let fails = |args: Value, says: &str| {
            let r = req(&Vxlan, args);
            match Vxlan.plan(&r, &bare("meshed", &r)) {
                Err(ModuleError::Host(m)) => assert!(m.contains(says), "{m}"),
                other => panic!("{other:?}"),
            }
        };
        fails(
            with(seeds(), json!({"bridge": "br-nope"})),
            "bridge br-nope does not exist on this host",
        );
        fails(
            with(seeds(), json!({"bridge": "eth0p"})),
            "eth0p is a veth device, not a bridge",
        );
        fails(
            with(seeds(), json!({"mtu": 1451})),
            "mtu 1451 does not fit: eth0's MTU 1500 carries frames of at most 1450 bytes",
        );
        fails(
            with(seeds(), json!({"dev": "eth9"})),
            "underlay device eth9 does not exist",
        );
        fails(
            with(seeds(), json!({"local": "10.0.0.99"})),
            "local 10.0.0.99 is not an address of this host",
        );
        fails(
            json!({"name": "br-ov", "id": 20680, "dev": "eth0"}),
            "br-ov exists and is a bridge device, not a VXLAN device",
        );
        fails(
            with(seeds(), json!({"name": "vx2"})),
            "VNI 20680 on port 20680 is already carried by wsfvxlan0",
        );
        fails(
            json!({"name": "vx2", "id": 1, "dev": "eth0", "peers": ["fd00::2"]}),
            "peer fd00::2 is IPv6 but the local address 10.0.0.11 is IPv4",
        );
        let r = req(&Vxlan, seeds());
        let o = bare("fresh", &r).with_file(SYSTEMD_RUNNING, FileState::absent());
        let e = Vxlan.plan(&r, &o).unwrap_err();
        assert!(e.to_string().contains("does not run systemd"), "{e}");
    }

    #[test]
    fn absent_deletes_the_device_and_the_unit() {
        let r = req(&Vxlan, seeds());
        let first = Vxlan.plan(&r, &bare("fresh", &r)).unwrap();
        let meshed = installed(host_state("meshed"), &r, &written(&first));
        let gone = req(&Vxlan, json!({"name": "wsfvxlan0", "state": "absent"}));
        let p = Vxlan.plan(&gone, &meshed).unwrap();
        assert_eq!(
            p.actions,
            vec![
                Action::run("ip link del wsfvxlan0"),
                Action::Remove {
                    path: r.wants_path()
                },
                Action::run("systemctl stop -- kvmforge-vxlan-wsfvxlan0.service"),
                Action::Remove {
                    path: r.unit_path()
                },
                Action::run("systemctl daemon-reload"),
            ]
        );
        let guard = p.guard.unwrap();
        assert_eq!(
            guard.reapply,
            format!("systemctl daemon-reload; {}", CREATE.join("; "))
        );
        // Nothing there: ok.
        let p = Vxlan.plan(&gone, &bare("fresh", &gone)).unwrap();
        assert!(!p.changed() && p.guard.is_none());
        // Not a VXLAN device: refused rather than deleted.
        let e = Vxlan
            .plan(
                &req(&Vxlan, json!({"name": "br-ov", "state": "absent"})),
                &bare("fresh", &gone),
            )
            .unwrap_err();
        assert!(e.to_string().contains("not a VXLAN device"), "{e}");
    }

    #[test]
    fn bad_arguments_are_refused_before_contact() {
        let invalid = |extra: Value, param: &str, says: &str| {
            let e = arg_error(&Vxlan, with(seeds(), extra.clone()));
            assert_eq!((e.kind, e.param), (ArgErrorKind::Invalid, param), "{extra}");
            assert!(e.msg.contains(says), "{}", e.msg);
        };
        invalid(json!({"id": 0}), "id", "1 to 16777215, got 0");
        invalid(json!({"id": 16777216}), "id", "got 16777216");
        invalid(json!({"id": -1}), "id", "got -1");
        invalid(json!({"dstport": 0}), "dstport", "1 to 65535, got 0");
        invalid(json!({"dstport": 65536}), "dstport", "got 65536");
        invalid(json!({"mtu": 67}), "mtu", "68 to 65535, got 67");
        invalid(json!({"mtu": 70000}), "mtu", "got 70000");
        invalid(json!({"local": "10.0.0"}), "local", "not an IP address");
        invalid(
            json!({"local": "239.1.1.1"}),
            "local",
            "cannot be a tunnel endpoint",
        );
        invalid(
            json!({"peers": ["10.0.0.12", "host3"]}),
            "peers",
            "\"host3\" is not an IP address",
        );
        invalid(
            json!({"peers": ["0.0.0.0"]}),
            "peers",
            "cannot be a tunnel endpoint",
        );
        invalid(
            json!({"peers": ["10.0.0.12", "fd00::12"]}),
            "peers",
            "mixes IPv4 and IPv6",
        );
        invalid(
            json!({"name": "a-name-longer-than-15"}),
            "name",
            "not a usable device name",
        );
        invalid(json!({"name": "vx 0"}), "name", "not a usable device name");
        invalid(
            json!({"dev": "eth0;reboot"}),
            "dev",
            "not a usable device name",
        );
        invalid(
            json!({"bridge": "-br"}),
            "bridge",
            "not a usable device name",
        );
        let e = arg_error(&Vxlan, json!({"name": "vx0"}));
        assert_eq!(
            (e.kind, e.param),
            (ArgErrorKind::Requires { other: "id" }, "state")
        );
        let e = arg_error(&Vxlan, with(seeds(), json!({"local": "fd00::11"})));
        assert_eq!(
            (e.kind, e.param),
            (ArgErrorKind::Conflict { with: "local" }, "peers")
        );
        let e = arg_error(&Vxlan, with(seeds(), json!({"dev": "wsfvxlan0"})));
        assert_eq!(
            (e.kind, e.param),
            (ArgErrorKind::Conflict { with: "name" }, "dev")
        );
        // Removal needs only the name.
        req(&Vxlan, json!({"name": "vx0", "state": "absent"}));
    }
}
