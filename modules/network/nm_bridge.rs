//! `nm_bridge`: the same bridge as `netplan_bridge`, as NetworkManager connection profiles.
//!
//! One keyfile for the bridge and one per port, in `/etc/NetworkManager/system-connections`,
//! compared with what is there as sections and keys (not bytes), and NetworkManager's own view
//! (`nmcli -t ... connection show`) for whether they are active: a second run changes nothing.
//!
//! The profiles that had the NICs before (NetworkManager's automatic "Wired connection 1", a
//! saved "mgmt" profile) are kept as they are: the port profile takes the device when it is
//! activated, and outranks them at boot (`autoconnect-priority`). Keeping them means a rollback
//! only has to remove the new files and bring the old profile up again.

use super::bridge::{live_drift, set_params, with_shared, Bridge, Port, RawBridge, SHARED_COUNT};
use crate::module::{
    shell_quote, Action, Attrs, Change, Fact, Module, ModuleError, ModuleSpec, NetworkGuard,
    Observed, Plan, PlanContext, Probe,
};
use crate::modules::args::Presence;
use crate::modules::facts::ip::{Family, IpAddrs, IpLinks};
use crate::modules::facts::networkmanager::{parse_keyfile, Keyfile, NmState, Settings};
use crate::params::{Args, ParamSpec};

pub struct NmBridge;

/// Where the profiles are written.
pub const DIR: &str = "/etc/NetworkManager/system-connections";

/// The port profiles' `connection.autoconnect-priority`: above the default 0 of saved profiles
/// and NetworkManager's automatic ones (-999), so at boot the port wins the NIC.
pub const PORT_PRIORITY: i32 = 100;

static PARAMS: [ParamSpec; SHARED_COUNT] = with_shared::<0, SHARED_COUNT>([]);

static SPEC: ModuleSpec = ModuleSpec {
    name: "nm_bridge",
    summary:
        "A Linux bridge as NetworkManager profiles: ports (NICs or VLANs), addresses, routes, STP",
    description: "Writes keyfiles in /etc/NetworkManager/system-connections (mode 0600; \
NetworkManager ignores keyfiles others can read): NAME.nmconnection for the bridge and \
NAME-port-DEVICE.nmconnection per port, a VLAN port `{vlan: 223, link: ens802f1}` being a \
`type=vlan` profile with vlan.parent and vlan.id. IPv4 and IPv6 are `disabled` without \
addresses or DHCP (a bridge only for guests), `manual` with addresses, `auto` with DHCP. STP, \
forward delay and ageing time are always written: NetworkManager's defaults (STP on, 15 s \
forward delay) hold every new guest's network back. Then `nmcli connection reload` and \
`nmcli connection up` of the bridge and its ports.\n\n\
Profiles that already own an enslaved NIC (NetworkManager's automatic \"Wired connection 1\", \
a saved profile for that NIC) are kept, untouched: activating the port takes the NIC from them, \
and the ports' autoconnect-priority 100 outranks them at boot. The result message names them. \
A profile that defines the same bridge device or makes the NIC a port of another bridge or bond \
is refused, naming its file. The change runs under the network guard: if the host does not \
answer afterwards, the files are restored, the bridge deleted, and the profiles that were active \
on the NICs brought up again (`nmcli connection up uuid ...`).\n\n\
Idempotent: the files are compared as keyfile sections and keys (a profile's existing UUID is \
kept), and the profiles must be active with the live bridge as asked (ports, static addresses, \
STP and timers, MTU, MAC); drift re-activates. Ports removed from `interfaces` lose their \
profile. `state: absent` takes the bridge down, removes its profiles, and lets NetworkManager \
connect the NICs with their own profiles again.",
    params: &PARAMS,
    free_form: None,
    example: r#"- name: One bridge per guest VLAN on the second NIC, no address on the host
  nm_bridge:
    name: "virbr1.{{ item }}"
    interfaces:
      - vlan: "{{ item }}"
        link: ens802f1
    parameters:
      ageing_time: 0              # never forget a guest's MAC
  loop: [223, 2368]
"#,
};

/// An `nm_bridge` request.
#[derive(Debug)]
pub struct Request {
    bridge: Bridge,
}

impl Module for NmBridge {
    type Request = Request;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn request(&self, args: Args, _ctx: &PlanContext) -> Result<Request, ModuleError> {
        let raw: RawBridge = args.parse()?;
        Ok(Request {
            bridge: raw.build()?,
        })
    }

    fn probes(&self, _req: &Request) -> Vec<Probe> {
        vec![
            NmState::probe(&()),
            IpLinks::probe(&()),
            IpAddrs::probe(&()),
        ]
    }

    fn plan(&self, req: &Request, observed: &Observed) -> Result<Plan, ModuleError> {
        let nm = observed.fact::<NmState>(&())?;
        let links = observed.fact::<IpLinks>(&())?;
        let addrs = observed.fact::<IpAddrs>(&())?;
        nm.connections().map_err(ModuleError::Host)?;
        match req.bridge.state {
            Presence::Present => present(&req.bridge, &nm, &links, &addrs),
            Presence::Absent => absent(&req.bridge, &nm, &links),
        }
    }
}

/// The bridge's profile path.
pub fn bridge_path(name: &str) -> String {
    format!("{DIR}/{name}.nmconnection")
}

/// A port's profile path.
pub fn port_path(name: &str, device: &str) -> String {
    format!("{DIR}/{name}-port-{device}.nmconnection")
}

/// A UUID derived from the profile's name, so a profile written twice on a fresh host gets the
/// same one (a profile already on the host keeps its own).
pub fn uuid_for(id: &str) -> String {
    // Two FNV-1a passes with different offsets: 128 stable bits, no extra dependency.
    let mut a: u64 = 0xcbf2_9ce4_8422_2325;
    let mut b: u64 = 0x6c62_272e_07bb_0142;
    for byte in "kvmforge nm_bridge ".bytes().chain(id.bytes()) {
        a = (a ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        b = (b ^ u64::from(byte))
            .wrapping_mul(0x0000_0100_0000_01b3)
            .rotate_left(5);
    }
    let n = (u128::from(a) << 64) | u128::from(b);
    // RFC 9562 version 8 (custom), variant 10.
    let n = (n & !(0xf << 76) & !(0x3 << 62)) | (0x8 << 76) | (0x2 << 62);
    let h = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// One profile to write.
#[derive(Debug, Clone)]
struct Profile {
    path: String,
    id: String,
    /// The device it is for.
    device: String,
    uuid: String,
    text: String,
}

fn header(b: &Bridge) -> String {
    format!(
        "# Bridge {} for guests, written by kvmforge (nm_bridge): edit the playbook, not this file.\n",
        b.name
    )
}

/// The keyfile text for the bridge.
pub fn render_bridge(b: &Bridge, uuid: &str) -> String {
    let mut s = header(b);
    s.push_str(&format!(
        "[connection]\nid={0}\nuuid={uuid}\ntype=bridge\ninterface-name={0}\nautoconnect=true\nautoconnect-slaves=1\n\n",
        b.name
    ));
    if b.mtu.is_some() || b.macaddress.is_some() {
        s.push_str("[ethernet]\n");
        if let Some(m) = &b.macaddress {
            s.push_str(&format!("cloned-mac-address={}\n", m.to_ascii_uppercase()));
        }
        if let Some(m) = b.mtu {
            s.push_str(&format!("mtu={m}\n"));
        }
        s.push('\n');
    }
    let p = &b.params;
    s.push_str(&format!(
        "[bridge]\nstp={}\nforward-delay={}\nhello-time={}\nmax-age={}\npriority={}\nageing-time={}\n",
        p.stp, p.forward_delay, p.hello_time, p.max_age, p.priority, p.ageing_time
    ));
    s.push('\n');
    for family in [Family::Inet, Family::Inet6] {
        let (section, dhcp) = match family {
            Family::Inet => ("ipv4", b.dhcp4),
            Family::Inet6 => ("ipv6", b.dhcp6),
        };
        let addrs: Vec<String> = b.addresses_of(family).map(|a| a.to_string()).collect();
        let method = if dhcp {
            "auto"
        } else if !addrs.is_empty() {
            "manual"
        } else {
            "disabled"
        };
        s.push_str(&format!("[{section}]\nmethod={method}\n"));
        for (i, a) in addrs.iter().enumerate() {
            s.push_str(&format!("address{}={a}\n", i + 1));
        }
        let routes = b.routes.iter().filter(|r| r.to.family() == family);
        for (i, r) in routes.enumerate() {
            let n = i + 1;
            let mut line = format!("route{n}={}", r.to);
            match (r.via, r.metric) {
                (Some(v), Some(m)) => line.push_str(&format!(",{v},{m}")),
                (Some(v), None) => line.push_str(&format!(",{v}")),
                (None, Some(m)) => line.push_str(&format!(
                    ",{},{m}",
                    if family == Family::Inet {
                        "0.0.0.0"
                    } else {
                        "::"
                    }
                )),
                (None, None) => {}
            }
            s.push_str(&line);
            s.push('\n');
            let mut opts = Vec::new();
            if r.on_link {
                opts.push("onlink=true".to_string());
            }
            if let Some(t) = r.table {
                opts.push(format!("table={t}"));
            }
            if !opts.is_empty() {
                s.push_str(&format!("route{n}_options={}\n", opts.join(",")));
            }
        }
        let dns: Vec<String> = b
            .nameservers
            .addresses
            .iter()
            .filter(|a| super::bridge::family_of(a) == family)
            .map(|a| a.to_string())
            .collect();
        if !dns.is_empty() {
            s.push_str(&format!("dns={};\n", dns.join(";")));
        }
        if family == Family::Inet && !b.nameservers.search.is_empty() {
            s.push_str(&format!("dns-search={};\n", b.nameservers.search.join(";")));
        }
        s.push('\n');
    }
    s.pop();
    s
}

/// The keyfile text for one port.
pub fn render_port(b: &Bridge, port: &Port, uuid: &str) -> String {
    let dev = port.device();
    let kind = match port {
        Port::Nic(_) => "ethernet",
        Port::Vlan { .. } => "vlan",
    };
    let mut s = header(b);
    s.push_str(&format!(
        "[connection]\nid={0}-port-{dev}\nuuid={uuid}\ntype={kind}\ninterface-name={dev}\nmaster={0}\nslave-type=bridge\nautoconnect=true\nautoconnect-priority={PORT_PRIORITY}\n\n",
        b.name
    ));
    match port {
        Port::Nic(_) => s.push_str("[ethernet]\n\n"),
        Port::Vlan { id, link } => s.push_str(&format!("[vlan]\nparent={link}\nid={id}\n\n")),
    }
    s.push_str("[bridge-port]\n");
    s
}

/// A keyfile's settings without its UUID (kept from the host) for comparison.
fn comparable(settings: &Settings) -> Settings {
    let mut s = settings.clone();
    if let Some(c) = s.get_mut("connection") {
        c.remove("uuid");
    }
    s
}

/// Our profile's UUID: the one on the host, else one derived from its name.
fn uuid_of(nm: &NmState, path: &str, id: &str) -> String {
    nm.keyfile(path)
        .and_then(Keyfile::uuid)
        .map(str::to_string)
        .or_else(|| {
            // A profile of that name saved under another file name: NetworkManager would have
            // two; take over its UUID so there stays one.
            nm.connections
                .as_ref()
                .ok()?
                .iter()
                .find(|c| c.name == id && nm.by_uuid(&c.uuid).is_none_or(|k| k.path == path))
                .map(|c| c.uuid.clone())
        })
        .unwrap_or_else(|| uuid_for(id))
}

fn profiles(b: &Bridge, nm: &NmState) -> Vec<Profile> {
    let path = bridge_path(&b.name);
    let uuid = uuid_of(nm, &path, &b.name);
    let mut out = vec![Profile {
        text: render_bridge(b, &uuid),
        path,
        id: b.name.clone(),
        device: b.name.clone(),
        uuid,
    }];
    for p in &b.ports {
        let path = port_path(&b.name, &p.device());
        let id = format!("{}-port-{}", b.name, p.device());
        let uuid = uuid_of(nm, &path, &id);
        out.push(Profile {
            text: render_port(b, p, &uuid),
            path,
            id,
            device: p.device(),
            uuid,
        });
    }
    out
}

/// Our port profiles on the host (current or left from ports no longer asked for).
fn our_port_files<'a>(b: &Bridge, nm: &'a NmState) -> Vec<&'a Keyfile> {
    let prefix = format!("{DIR}/{}-port-", b.name);
    nm.keyfiles
        .iter()
        .filter(|k| k.path.starts_with(&prefix) && k.path.ends_with(".nmconnection"))
        .collect()
}

/// Whether a profile is bound to a device: by `interface-name`, or by the NIC's MAC address.
fn binds(k: &Keyfile, dev: &str, mac: Option<&str>) -> bool {
    if k.get("connection", "interface-name") == Some(dev) {
        return true;
    }
    match (k.get("ethernet", "mac-address"), mac) {
        (Some(want), Some(mac)) => want.eq_ignore_ascii_case(mac),
        _ => false,
    }
}

fn q(s: &str) -> String {
    shell_quote(s)
}

fn present(
    b: &Bridge,
    nm: &NmState,
    links: &IpLinks,
    addrs: &IpAddrs,
) -> Result<Plan, ModuleError> {
    for nic in b.nics() {
        if links.get(nic).is_none() {
            return Err(ModuleError::Host(format!(
                "interfaces: {nic} does not exist on this host"
            )));
        }
    }
    let want = profiles(b, nm);
    let ours: Vec<&str> = want.iter().map(|p| p.path.as_str()).collect();
    let our_uuids: Vec<&str> = want.iter().map(|p| p.uuid.as_str()).collect();
    let ports: Vec<String> = b.ports.iter().map(Port::device).collect();

    // Profiles that compete for the bridge's devices, and profiles that merely owned the NICs.
    let mut refused = Vec::new();
    let mut owners: Vec<&Keyfile> = Vec::new();
    for k in &nm.keyfiles {
        if ours.contains(&k.path.as_str()) || k.uuid().is_some_and(|u| our_uuids.contains(&u)) {
            continue;
        }
        if our_port_files(b, nm).iter().any(|o| o.path == k.path) {
            continue;
        }
        let kind = k.get("connection", "type").unwrap_or("");
        if k.get("connection", "interface-name") == Some(b.name.as_str()) {
            refused.push(format!(
                "{}: connection.interface-name={} (profile {:?})",
                k.path,
                b.name,
                k.id().unwrap_or("")
            ));
            continue;
        }
        for dev in &ports {
            let mac = links.get(dev).and_then(|l| l.mac.as_deref());
            if !binds(k, dev, mac) {
                continue;
            }
            match k.controller() {
                Some(m) if m != b.name => refused.push(format!(
                    "{}: profile {:?} makes {dev} a port of {m}",
                    k.path,
                    k.id().unwrap_or("")
                )),
                Some(_) => {}
                None if kind == "vlan" || kind == "ethernet" || kind == "802-3-ethernet" => {
                    owners.push(k)
                }
                None => {}
            }
        }
    }
    if !refused.is_empty() {
        return Err(ModuleError::Host(format!(
            "other NetworkManager profiles compete with bridge {}: {}; delete them first",
            b.name,
            refused.join("; ")
        )));
    }

    let mut plan = Plan::ok();
    let mut writes = Vec::new();
    for p in &want {
        let have = nm.keyfile(&p.path);
        let same_text = have.is_some_and(|k| {
            parse_keyfile(&p.text).is_ok_and(|s| comparable(&s) == comparable(&k.settings))
        });
        let mode_ok = have.is_some_and(|k| k.mode == 0o600);
        if same_text && mode_ok {
            continue;
        }
        let summary = match have {
            None => format!("create {}", p.path),
            Some(_) if same_text => format!(
                "set mode 0600 on {} (NetworkManager ignores readable keyfiles)",
                p.path
            ),
            Some(_) => format!("update {}", p.path),
        };
        plan.changes.push(Change::new(summary).with_diff(
            &p.path,
            have.map(|k| k.text.clone()).unwrap_or_default(),
            p.text.clone(),
        ));
        writes.push(Action::write(
            &p.path,
            p.text.clone(),
            Attrs {
                mode: Some(0o600),
                owner: Some("root".into()),
                group: Some("root".into()),
            },
            false,
        ));
    }
    // Ports no longer asked for.
    let mut removes = Vec::new();
    for k in our_port_files(b, nm) {
        if !ours.contains(&k.path.as_str()) {
            plan.changes.push(
                Change::new(format!("remove {} (no longer a port)", k.path)).with_diff(
                    &k.path,
                    k.text.clone(),
                    "",
                ),
            );
            removes.push(k);
        }
    }

    // Live: every profile active where it should be, and the bridge as asked.
    let conns = nm.connections().map_err(ModuleError::Host)?;
    let mut inactive = Vec::new();
    for p in &want {
        let up = conns.iter().any(|c| {
            c.uuid == p.uuid && c.active && c.device.as_deref() == Some(p.device.as_str())
        });
        if !up {
            inactive.push(p.id.clone());
        }
    }
    let (drift, params_drift) = live_drift(b, links, addrs);
    if writes.is_empty() && removes.is_empty() && inactive.is_empty() && drift.is_empty() {
        return Ok(plan.with_data("uuid", want[0].uuid.as_str()));
    }
    if writes.is_empty() && removes.is_empty() {
        let mut what = Vec::new();
        if !inactive.is_empty() {
            what.push(format!("not active: {}", inactive.join(", ")));
        }
        what.extend(drift.iter().cloned());
        plan.changes
            .push(Change::new(format!("re-activate: {}", what.join("; "))));
    }

    // Removed ports go down first, while NetworkManager still knows them.
    for k in &removes {
        if let Some(u) = k.uuid() {
            if conns.iter().any(|c| c.uuid == u && c.active) {
                plan.actions
                    .push(Action::run(format!("nmcli connection down uuid {}", q(u))));
            }
        }
        plan.actions.push(Action::Remove {
            path: k.path.clone(),
        });
    }
    plan.actions.extend(writes);
    let mut up = vec!["nmcli connection reload".to_string()];
    for p in &want {
        up.push(format!("nmcli connection up uuid {}", q(&p.uuid)));
    }
    plan.actions.push(Action::run(up.join(" && ")));
    if params_drift {
        plan.actions.push(set_params(b));
    }

    // What to bring back if the host is lost: the profiles active on the NICs (and the bridge's
    // own, when it was already up) before the change.
    let mut previous: Vec<String> = Vec::new();
    for dev in ports.iter().chain(std::iter::once(&b.name)) {
        if let Some(c) = nm.active_on(dev) {
            if !previous.contains(&c.uuid) {
                previous.push(c.uuid.clone());
            }
        }
    }
    let mut reapply = vec!["nmcli connection reload".to_string()];
    reapply.extend(
        previous
            .iter()
            .map(|u| format!("nmcli connection up uuid {}", q(u))),
    );
    let mut notes = b.notes.clone();
    let mut kept: Vec<String> = Vec::new();
    for k in &owners {
        let name = k.id().unwrap_or("?");
        let dev = k.get("connection", "interface-name").unwrap_or("its NIC");
        let prio: i32 = k
            .get("connection", "autoconnect-priority")
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let line = if k.autoconnect() && prio >= PORT_PRIORITY {
            format!("{name:?} ({}) kept, but its autoconnect-priority {prio} may win {dev} back at boot", k.path)
        } else {
            format!("{name:?} on {dev} kept, inactive: the bridge port takes the device")
        };
        if !kept.contains(&line) {
            kept.push(line);
        }
    }
    notes.extend(kept);
    plan.msg = Some(notes.join("; "));
    plan.guard = Some(NetworkGuard {
        reapply: reapply.join(" && "),
        creates_devices: b.created_devices(),
        also_saves: Vec::new(),
    });
    Ok(plan
        .with_data("uuid", want[0].uuid.as_str())
        .with_data("reapply", reapply.join(" && ")))
}

fn absent(b: &Bridge, nm: &NmState, links: &IpLinks) -> Result<Plan, ModuleError> {
    let mut plan = Plan::ok();
    let conns = nm.connections().map_err(ModuleError::Host)?;
    let mut files: Vec<&Keyfile> = Vec::new();
    if let Some(k) = nm.keyfile(&bridge_path(&b.name)) {
        files.push(k);
    }
    files.extend(our_port_files(b, nm));
    let device = links.get(&b.name).is_some();
    if files.is_empty() && !device {
        return Ok(plan);
    }
    // The NICs to give back: the request's, and those our port profiles name.
    let mut nics: Vec<String> = b.enslaved_nics().iter().map(|s| s.to_string()).collect();
    for k in &files {
        if k.get("connection", "type") == Some("ethernet") {
            if let Some(dev) = k.get("connection", "interface-name") {
                if !nics.iter().any(|n| n == dev) {
                    nics.push(dev.to_string());
                }
            }
        }
    }
    let bridge_uuid = nm
        .keyfile(&bridge_path(&b.name))
        .and_then(Keyfile::uuid)
        .map(str::to_string);
    if let Some(u) = &bridge_uuid {
        if conns.iter().any(|c| &c.uuid == u && c.active) {
            plan.actions
                .push(Action::run(format!("nmcli connection down uuid {}", q(u))));
        }
    }
    for k in &files {
        plan.change(
            Change::new(format!("remove {}", k.path)).with_diff(&k.path, k.text.clone(), ""),
            [Action::Remove {
                path: k.path.clone(),
            }],
        );
    }
    let mut cmd = vec!["nmcli connection reload".to_string()];
    if !files.is_empty() {
        plan.actions.push(Action::run(cmd.join(" && ")));
    }
    if device {
        plan.change(
            Change::new(format!("delete device {}", b.name)),
            [Action::run(format!(
                "if ip link show dev {0} >/dev/null 2>&1; then ip link delete dev {0}; fi",
                q(&b.name)
            ))],
        );
    }
    for vlan in b.vlan_devices() {
        if links.get(&vlan).is_some() {
            plan.change(
                Change::new(format!("delete device {vlan}")),
                [Action::run(format!(
                    "if ip link show dev {0} >/dev/null 2>&1; then ip link delete dev {0}; fi",
                    q(&vlan)
                ))],
            );
        }
    }
    for nic in &nics {
        // NetworkManager picks the NIC's best remaining profile; a NIC it does not manage
        // stays as it is.
        plan.actions.push(Action::run(format!(
            "nmcli device connect {} || true",
            q(nic)
        )));
    }
    cmd.clear();
    cmd.push("nmcli connection reload".into());
    if let Some(u) = &bridge_uuid {
        cmd.push(format!("nmcli connection up uuid {}", q(u)));
    }
    let mut notes = b.notes.clone();
    if !nics.is_empty() {
        notes.push(format!(
            "{} handed back to NetworkManager's other profiles",
            nics.join(", ")
        ));
    }
    if !notes.is_empty() {
        plan.msg = Some(notes.join("; "));
    }
    plan.guard = Some(NetworkGuard {
        reapply: cmd.join(" && "),
        creates_devices: Vec::new(),
        also_saves: Vec::new(),
    });
    Ok(plan)
}

#[cfg(test)]
mod tests;
