//! `netplan_bridge`: a Linux bridge configured through netplan, one file per bridge.
//!
//! The plan is built from three readings: every netplan file on the host ([`NetplanConfig`]), so
//! the bridge's NICs are not also given addresses or DHCP by another file (Ubuntu's
//! `50-cloud-init.yaml` or `00-installer-config.yaml` usually does); the live devices
//! ([`IpLinks`], [`IpAddrs`]), so a bridge that drifted from its file (a port removed, an
//! address changed by hand) is re-applied; and the tools the host has ([`NetplanHost`]), to
//! apply with `netplan apply` or, without udev, with networkd directly.
//!
//! Everything is staged: the new configuration is checked with `netplan generate` in a scratch
//! copy of the host's netplan folders before any file is written, and the change runs under the
//! engine's network guard, which restores the files and re-applies them if the host cannot be
//! reached afterwards.

use super::bridge::{live_drift, set_params, with_shared, Bridge, Port, RawBridge, SHARED_COUNT};
use crate::module::{
    shell_quote, Action, ArgError, Attrs, Change, Fact, Module, ModuleError, ModuleSpec,
    NetworkGuard, Observed, Plan, PlanContext, Probe,
};
use crate::modules::args::{absolute_path, Presence};
use crate::modules::facts::ip::{IpAddrs, IpLinks};
use crate::modules::facts::netplan::{parse_yaml, NetplanConfig, NetplanFile, NetplanHost, DIRS};
use crate::params::{Args, ParamKind, ParamSpec};
use serde_json::{json, Map, Value};

pub struct NetplanBridge;

/// cloud-init's configuration folder, and the file that stops it writing the network
/// configuration (`50-cloud-init.yaml`) again at boot, as its own header says to.
const CLOUD_CFG_DIR: &str = "/etc/cloud/cloud.cfg.d";
const CLOUD_NETWORK_OFF: &str = "/etc/cloud/cloud.cfg.d/99-disable-network-config.cfg";
const CLOUD_NETWORK_OFF_TEXT: &str =
    "# Written by kvmforge's netplan_bridge when it took over 50-cloud-init.yaml: cloud-init\n\
# would otherwise write the NIC's old configuration again at boot.\nnetwork: {config: disabled}\n";

const OWN: usize = 3;
static PARAMS: [ParamSpec; SHARED_COUNT + OWN] = with_shared([
    ParamSpec::optional(
        "file",
        ParamKind::Str,
        "The netplan file to write (default `/etc/netplan/60-kvmforge-NAME.yaml`)",
    ),
    ParamSpec::with_default(
        "renderer",
        ParamKind::Choice(&["networkd", "NetworkManager"]),
        "networkd",
        "Backend netplan renders the bridge for (set on the bridge's own stanzas, never globally)",
    ),
    ParamSpec::with_default(
        "take_over",
        ParamKind::Bool,
        "false",
        "Rewrite other netplan files that give the bridge's NICs an address or DHCP (kept as \
`FILE.TIMESTAMP~`) instead of failing",
    ),
]);

static SPEC: ModuleSpec = ModuleSpec {
    name: "netplan_bridge",
    summary:
        "A Linux bridge configured with netplan: ports (NICs or VLANs), addresses, routes, STP",
    description: "Writes one netplan file per bridge (mode 0600, as netplan wants): `ethernets:` \
for the enslaved NICs with DHCP off, `vlans:` for VLAN ports (`{vlan: 223, link: ens802f1}` is \
the device `ens802f1.223`; its link NIC is declared with the same renderer, because networkd \
only creates a VLAN from the link's own configuration, and keeps whatever else configures it), \
and the bridge under `bridges:`. Bridge `parameters` are always \
written out in full: netplan turns STP on as soon as `parameters:` appears, and with STP on every \
new guest's port waits out the forward delay before it forwards. A hypervisor's bridge (one \
uplink, guests' taps) has no loop for STP to break, so the defaults are stp: false, \
forward_delay: 0.\n\n\
Other netplan files are read first (/lib, /etc and /run/netplan, with netplan's precedence). When \
one still gives an enslaved NIC an address, DHCP or routes (Ubuntu's 50-cloud-init.yaml or \
00-installer-config.yaml), puts it in another bridge or bond, or defines the same bridge or VLAN, \
the task fails naming the file and key; with `take_over: true` that file is rewritten without \
them instead (a `set-name` rename is kept; the old file stays as FILE.TIMESTAMP~; comments are \
not kept). Taking over 50-cloud-init.yaml also disables cloud-init's network configuration \
(/etc/cloud/cloud.cfg.d/99-disable-network-config.cfg), as that file's header says, or cloud-init \
would write it again at boot.\n\n\
The new configuration is checked with `netplan generate` in a scratch copy of the netplan \
folders before anything is written, so an invalid one fails with netplan's message and nothing \
changed. It is applied with `netplan apply`; on hosts without udev (containers), where that \
fails, with `netplan generate`, `networkctl reload` and `networkctl reconfigure` of the NICs. \
The change runs under the network guard: if the host does not answer afterwards, the old files \
come back and are applied again, and the bridge is deleted.\n\n\
Idempotent: the file is compared as YAML, not as text, and the live bridge is checked against \
it (it exists, its ports, static addresses, STP, ageing time, MTU, MAC; the STP timers when STP is on); drift is re-applied. \
Extra ports (guests' taps) are left alone. `state: absent` removes the file, applies, and \
deletes the bridge and its VLAN devices.",
    params: &PARAMS,
    free_form: None,
    example: r#"- name: br0 carries the host's address; guests bridge onto the VM network
  netplan_bridge:
    name: br0
    interfaces: [enp136s0f3]
    addresses: [192.168.121.105/24]
    routes:
      - to: default
        via: 192.168.121.101      # the jump host
        on_link: true
        metric: 100
    nameservers:
      addresses: [8.8.8.8]
    mtu: 1500
    parameters:
      stp: false
      forward_delay: 0
    take_over: true               # drop enp136s0f3's address from 00-installer-config.yaml
"#,
};

/// A `netplan_bridge` request.
#[derive(Debug)]
pub struct Request {
    bridge: Bridge,
    file: String,
    renderer: String,
    take_over: bool,
}

impl Module for NetplanBridge {
    type Request = Request;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn request(&self, args: Args, _ctx: &PlanContext) -> Result<Request, ModuleError> {
        let raw: RawBridge = args.parse()?;
        let bridge = raw.build()?;
        let file = raw
            .file
            .clone()
            .unwrap_or_else(|| format!("/etc/netplan/60-kvmforge-{}.yaml", bridge.name));
        absolute_path("file", &file)?;
        let in_dir = DIRS.iter().any(|d| {
            file.strip_prefix(d)
                .and_then(|r| r.strip_prefix('/'))
                .is_some_and(|n| !n.contains('/'))
        });
        if !in_dir || !file.ends_with(".yaml") {
            return Err(ArgError::invalid(
                "file",
                format!(
                    "file: {file} is not read by netplan: it must be a .yaml file directly in {}",
                    DIRS.join(", ")
                ),
            )
            .into());
        }
        Ok(Request {
            bridge,
            file,
            renderer: raw.renderer.clone().unwrap_or_else(|| "networkd".into()),
            take_over: raw.take_over.unwrap_or(false),
        })
    }

    fn probes(&self, _req: &Request) -> Vec<Probe> {
        vec![
            NetplanConfig::probe(&()),
            NetplanHost::probe(&()),
            IpLinks::probe(&()),
            IpAddrs::probe(&()),
            Probe::File(CLOUD_CFG_DIR.into()),
            Probe::File(CLOUD_NETWORK_OFF.into()),
        ]
    }

    fn plan(&self, req: &Request, observed: &Observed) -> Result<Plan, ModuleError> {
        let config = observed.fact::<NetplanConfig>(&())?;
        let host = observed.fact::<NetplanHost>(&())?;
        let links = observed.fact::<IpLinks>(&())?;
        let addrs = observed.fact::<IpAddrs>(&())?;
        if host.netplan.is_none() {
            return Err(ModuleError::Host(
                "netplan is not installed on this host (package netplan.io)".into(),
            ));
        }
        match req.bridge.state {
            Presence::Present => present(req, &config, &host, &links, &addrs, observed),
            Presence::Absent => absent(req, &config, &host, &links),
        }
    }
}

/// The netplan YAML for a bridge.
pub fn render(b: &Bridge, renderer: &str) -> String {
    let mut ethernets = Map::new();
    let mut vlans = Map::new();
    for p in &b.ports {
        match p {
            Port::Nic(n) => {
                ethernets.insert(
                    n.clone(),
                    json!({"renderer": renderer, "dhcp4": false, "dhcp6": false}),
                );
            }
            Port::Vlan { id, link } => {
                // The VLAN's link NIC keeps whatever else configures it (its untagged traffic,
                // often the host's own address). It is declared with the same renderer: networkd
                // creates a VLAN only from its link's configuration (`VLAN=` in the link's
                // .network), so a link left to NetworkManager would never get it.
                ethernets
                    .entry(link.clone())
                    .or_insert_with(|| json!({"renderer": renderer}));
                vlans.insert(
                    p.device(),
                    json!({"renderer": renderer, "id": id, "link": link, "dhcp4": false, "dhcp6": false}),
                );
            }
        }
    }
    let mut br = Map::new();
    br.insert("renderer".into(), json!(renderer));
    br.insert(
        "interfaces".into(),
        json!(b.ports.iter().map(Port::device).collect::<Vec<_>>()),
    );
    if !b.addresses.is_empty() {
        br.insert(
            "addresses".into(),
            json!(b
                .addresses
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()),
        );
    }
    br.insert("dhcp4".into(), json!(b.dhcp4));
    br.insert("dhcp6".into(), json!(b.dhcp6));
    if !b.routes.is_empty() {
        let routes: Vec<Value> = b
            .routes
            .iter()
            .map(|r| {
                let mut m = Map::new();
                m.insert("to".into(), json!(r.to.to_string()));
                if let Some(v) = r.via {
                    m.insert("via".into(), json!(v.to_string()));
                }
                if let Some(x) = r.metric {
                    m.insert("metric".into(), json!(x));
                }
                if r.on_link {
                    m.insert("on-link".into(), json!(true));
                }
                if let Some(t) = r.table {
                    m.insert("table".into(), json!(t));
                }
                Value::Object(m)
            })
            .collect();
        br.insert("routes".into(), Value::Array(routes));
    }
    if !b.nameservers.is_empty() {
        let mut ns = Map::new();
        if !b.nameservers.addresses.is_empty() {
            ns.insert(
                "addresses".into(),
                json!(b
                    .nameservers
                    .addresses
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()),
            );
        }
        if !b.nameservers.search.is_empty() {
            ns.insert("search".into(), json!(b.nameservers.search));
        }
        br.insert("nameservers".into(), Value::Object(ns));
    }
    if let Some(m) = b.mtu {
        br.insert("mtu".into(), json!(m));
    }
    if let Some(m) = &b.macaddress {
        br.insert("macaddress".into(), json!(m));
    }
    let p = &b.params;
    br.insert(
        "parameters".into(),
        json!({
            "stp": p.stp,
            "forward-delay": p.forward_delay,
            "hello-time": p.hello_time,
            "max-age": p.max_age,
            "priority": p.priority,
            "ageing-time": p.ageing_time,
        }),
    );
    let mut network = Map::new();
    network.insert("version".into(), json!(2));
    if !ethernets.is_empty() {
        network.insert("ethernets".into(), Value::Object(ethernets));
    }
    if !vlans.is_empty() {
        network.insert("vlans".into(), Value::Object(vlans));
    }
    let mut bridges = Map::new();
    bridges.insert(b.name.clone(), Value::Object(br));
    network.insert("bridges".into(), Value::Object(bridges));
    format!(
        "# Bridge {} for guests, written by kvmforge (netplan_bridge): edit the playbook, not this \
file.\n{}",
        b.name,
        emit(&json!({ "network": network }))
    )
}

/// A small YAML emitter: block style, two-space indents, strings quoted whenever a YAML 1.1
/// reader (netplan's libyaml, PyYAML) could take them for something else (`52:54:00:12:34:56`
/// is a base-60 number to YAML 1.1, `no` a boolean).
pub fn emit(v: &Value) -> String {
    let mut out = String::new();
    emit_into(&mut out, v, 0);
    out
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let plain = !s.is_empty()
                && matches!(crate::yaml11::resolve_plain(s), crate::yaml11::Yaml::Str(_))
                && !s.contains(": ")
                && !s.contains(" #")
                && !s.ends_with(':')
                && !s.contains(':')
                && !s.starts_with(|c: char| "-?:,[]{}#&*!|>'\"%@`~ ".contains(c))
                && !s.ends_with(' ')
                && !s.chars().any(|c| c.is_control());
            if plain {
                s.clone()
            } else {
                serde_json::to_string(s).expect("a string")
            }
        }
        Value::Array(a) if a.is_empty() => "[]".into(),
        Value::Object(m) if m.is_empty() => "{}".into(),
        _ => unreachable!("not a scalar"),
    }
}

fn is_scalar(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => true,
    }
}

fn emit_into(out: &mut String, v: &Value, indent: usize) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, val) in m {
                let key = scalar(&Value::String(k.clone()));
                if is_scalar(val) {
                    out.push_str(&format!("{pad}{key}: {}\n", scalar(val)));
                } else {
                    out.push_str(&format!("{pad}{key}:\n"));
                    emit_into(out, val, indent + 2);
                }
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for item in a {
                if is_scalar(item) {
                    out.push_str(&format!("{pad}- {}\n", scalar(item)));
                } else {
                    // The item's first line goes after the dash, the rest indented under it.
                    let mut inner = String::new();
                    emit_into(&mut inner, item, indent + 2);
                    let inner = inner.trim_start_matches(' ');
                    out.push_str(&format!("{pad}- {inner}"));
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
    }
}

/// What in another netplan file competes with the bridge for its devices.
#[derive(Debug, Clone, PartialEq)]
struct Conflict {
    file: String,
    /// `ethernets`, `bridges`, `bonds`, `vlans`.
    kind: &'static str,
    /// The stanza's ID.
    id: String,
    /// The stanza lists the bridge's ports among its `interfaces` (rather than being one).
    members: bool,
    why: String,
}

impl Conflict {
    /// Where it is: `network.ethernets.enp1s0`, `network.bridges.br1.interfaces`.
    fn key(&self) -> String {
        let tail = if self.members { ".interfaces" } else { "" };
        format!("network.{}.{}{tail}", self.kind, self.id)
    }
}

/// Keys that give a device an address or routes.
const IP_KEYS: &[&str] = &[
    "addresses",
    "dhcp4",
    "dhcp6",
    "gateway4",
    "gateway6",
    "routes",
    "nameservers",
];

fn truthy(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(m)) => !m.is_empty(),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Number(_)) => true,
        _ => false,
    }
}

/// Whether an `ethernets:` stanza with this ID applies to the NIC.
fn stanza_matches(id: &str, stanza: &Value, nic: &str, mac: Option<&str>) -> bool {
    let s = |k: &str| stanza.get(k).and_then(Value::as_str);
    let m = |k: &str| {
        stanza
            .get("match")
            .and_then(|m| m.get(k))
            .and_then(Value::as_str)
    };
    if stanza.get("match").is_some() {
        if s("set-name") == Some(nic) || m("name") == Some(nic) {
            return true;
        }
        if let (Some(want), Some(mac)) = (m("macaddress"), mac) {
            return want.eq_ignore_ascii_case(mac)
                && (s("set-name").is_none() || s("set-name") == Some(nic));
        }
        return false;
    }
    id == nic
}

fn conflicts(req: &Request, config: &NetplanConfig, links: &IpLinks) -> Vec<Conflict> {
    let b = &req.bridge;
    let mut out = Vec::new();
    let ours: Vec<String> = b.ports.iter().map(Port::device).collect();
    for f in config.effective() {
        if f.path == req.file {
            continue;
        }
        let mut add = |kind: &'static str, id: &str, members: bool, why: String| {
            out.push(Conflict {
                file: f.path.clone(),
                kind,
                id: id.to_string(),
                members,
                why,
            })
        };
        if let Some(eths) = f.section("ethernets") {
            for nic in b.enslaved_nics() {
                let mac = links.get(nic).and_then(|l| l.mac.as_deref());
                for (id, stanza) in eths {
                    if !stanza_matches(id, stanza, nic, mac) {
                        continue;
                    }
                    let given: Vec<&str> = IP_KEYS
                        .iter()
                        .copied()
                        .filter(|k| truthy(stanza.get(*k)))
                        .collect();
                    if !given.is_empty() {
                        add(
                            "ethernets",
                            id,
                            false,
                            format!("gives {nic}, a port of {}, {}", b.name, given.join(", ")),
                        );
                    }
                }
            }
        }
        for kind in ["bridges", "bonds"] as [&'static str; 2] {
            let Some(devs) = f.section(kind) else {
                continue;
            };
            for (id, stanza) in devs {
                if kind == "bridges" && *id == b.name {
                    add("bridges", id, false, format!("also defines {id}"));
                    continue;
                }
                let members: Vec<&str> = stanza
                    .get("interfaces")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                for m in members.iter().filter(|m| ours.iter().any(|o| o == *m)) {
                    add(kind, id, true, format!("makes {m} a port of {id} too"));
                }
            }
        }
        if let Some(vlans) = f.section("vlans") {
            for p in &b.ports {
                let Port::Vlan { id: vid, link } = p else {
                    continue;
                };
                for (id, stanza) in vlans {
                    let same = *id == p.device()
                        || (stanza.get("id").and_then(Value::as_u64) == Some(*vid as u64)
                            && stanza.get("link").and_then(Value::as_str) == Some(link));
                    if same {
                        add(
                            "vlans",
                            id,
                            false,
                            format!("also defines VLAN {vid} on {link}"),
                        );
                    }
                }
            }
        }
    }
    out
}

/// The file without what competes with the bridge, as netplan will read it.
fn without(req: &Request, f: &NetplanFile, found: &[&Conflict]) -> Value {
    let mut v = f.yaml.clone().unwrap_or(Value::Null);
    let ours: Vec<String> = req.bridge.ports.iter().map(Port::device).collect();
    let Some(net) = v.get_mut("network").and_then(Value::as_object_mut) else {
        return v;
    };
    for c in found {
        let Some(section) = net.get_mut(c.kind).and_then(Value::as_object_mut) else {
            continue;
        };
        if c.members {
            if let Some(list) = section
                .get_mut(&c.id)
                .and_then(|s| s.get_mut("interfaces"))
                .and_then(Value::as_array_mut)
            {
                list.retain(|m| !m.as_str().is_some_and(|m| ours.iter().any(|o| o == m)));
            }
        } else if c.kind == "ethernets"
            && section
                .get(&c.id)
                .is_some_and(|s| s.get("set-name").is_some())
        {
            // A stanza that renames the NIC keeps the rename (and its match): only what gives
            // the NIC an address goes. Any other stanza for the NIC goes whole.
            if let Some(s) = section.get_mut(&c.id).and_then(Value::as_object_mut) {
                for k in IP_KEYS {
                    s.remove(*k);
                }
            }
        } else {
            section.remove(&c.id);
        }
        if section.is_empty() {
            net.remove(c.kind);
        }
    }
    v
}

/// Where a taken-over file is rewritten: in place, except that a file in /lib/netplan is
/// shadowed by one of the same name in /etc/netplan (the package's file stays untouched).
fn takeover_path(f: &NetplanFile) -> String {
    if f.dir() == "/lib/netplan" {
        format!("/etc/netplan/{}", f.name())
    } else {
        f.path.clone()
    }
}

/// How to apply on this host, and the sentence saying so.
fn apply_command(
    host: &NetplanHost,
    renderer: &str,
    nics: &[&str],
    links: &IpLinks,
    bridge: &str,
) -> Result<(String, String), ModuleError> {
    if host.udev || renderer == "NetworkManager" {
        return Ok((
            "netplan apply".into(),
            "applied with `netplan apply`".into(),
        ));
    }
    if !host.networkctl {
        return Err(ModuleError::Host(
            "this host has no udev, so `netplan apply` cannot work, and no networkctl to apply \
with systemd-networkd instead"
                .into(),
        ));
    }
    let mut devs: Vec<String> = nics
        .iter()
        .filter(|n| links.get(n).is_some())
        .map(|n| n.to_string())
        .collect();
    if links.get(bridge).is_some() {
        devs.push(bridge.to_string());
    }
    let mut cmd = "netplan generate && networkctl reload".to_string();
    if !devs.is_empty() {
        cmd.push_str(" && networkctl reconfigure ");
        cmd.push_str(
            &devs
                .iter()
                .map(|d| shell_quote(d))
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    Ok((
        cmd,
        "no udev on this host (a container?): applied with `netplan generate`, `networkctl reload` \
and `networkctl reconfigure` instead of `netplan apply`"
            .into(),
    ))
}

/// The command that checks the staged configuration: the host's netplan folders copied into a
/// scratch root, the new files written there (or removed), and `netplan generate` run on it.
fn validate_command(writes: &[(String, String)], removes: &[String]) -> String {
    let mut s = String::from(
        "d=$(mktemp -d) && trap 'rm -rf \"$d\"' EXIT && for s in lib etc run; do mkdir -p \"$d/$s/netplan\" && \
for f in /$s/netplan/*.yaml; do if [ -f \"$f\" ]; then cp \"$f\" \"$d/$s/netplan/\" || exit 1; fi; done; done",
    );
    for (path, content) in writes {
        s.push_str(&format!(
            " && printf '%s' {} > \"$d\"{}",
            shell_quote(content),
            shell_quote(path)
        ));
    }
    for path in removes {
        s.push_str(&format!(" && rm -f \"$d\"{}", shell_quote(path)));
    }
    s.push_str(
        " && chmod 600 \"$d\"/*/netplan/*.yaml 2>/dev/null; netplan generate --root-dir \"$d\" || \
{ echo 'netplan rejects the new configuration (nothing was changed)' >&2; exit 1; }",
    );
    s
}

fn present(
    req: &Request,
    config: &NetplanConfig,
    host: &NetplanHost,
    links: &IpLinks,
    addrs: &IpAddrs,
    observed: &Observed,
) -> Result<Plan, ModuleError> {
    let b = &req.bridge;
    for nic in b.nics() {
        if links.get(nic).is_none() {
            return Err(ModuleError::Host(format!(
                "interfaces: {nic} does not exist on this host"
            )));
        }
    }
    let mut plan = Plan::ok();
    let mut notes = b.notes.clone();
    let mut writes: Vec<(String, String)> = Vec::new();
    let mut changes = Vec::new();

    // Other files first: they decide whether the change can be made at all.
    let found = conflicts(req, config, links);
    if !found.is_empty() && !req.take_over {
        let lines: Vec<String> = found
            .iter()
            .map(|c| format!("{}: {} {}", c.file, c.key(), c.why))
            .collect();
        return Err(ModuleError::Host(format!(
            "other netplan configuration competes with bridge {}: {}; remove it, or set \
take_over: true to rewrite those files without it",
            b.name,
            lines.join("; ")
        )));
    }
    let mut cloud_init = false;
    let mut files: Vec<&str> = found.iter().map(|c| c.file.as_str()).collect();
    files.dedup();
    for path in files {
        let f = config
            .get(path)
            .expect("conflicts come from observed files");
        let mine: Vec<&Conflict> = found.iter().filter(|c| c.file == path).collect();
        let target = takeover_path(f);
        let text = format!(
            "# {} without what kvmforge's netplan_bridge {} took over ({}); the original is kept \
as a backup beside it.\n{}",
            f.path,
            b.name,
            mine.iter().map(|c| c.key()).collect::<Vec<_>>().join(", "),
            emit(&without(req, f, &mine))
        );
        notes.push(format!(
            "took over {} from {}",
            mine.iter().map(|c| c.key()).collect::<Vec<_>>().join(", "),
            f.path
        ));
        changes.push(
            Change::new(format!(
                "rewrite {target} without {}",
                mine.iter().map(|c| c.key()).collect::<Vec<_>>().join(", ")
            ))
            .with_diff(&target, f.text.clone(), text.clone()),
        );
        writes.push((target, text));
        if f.name() == "50-cloud-init.yaml" {
            cloud_init = true;
        }
    }
    // cloud-init writes 50-cloud-init.yaml again at boot unless its network configuration is
    // disabled: taking the file over means disabling that too.
    let mut extra = Vec::new();
    if cloud_init {
        let dir = observed.file(CLOUD_CFG_DIR)?;
        let cfg = observed.file(CLOUD_NETWORK_OFF)?;
        let disabled = cfg.exists()
            && parse_yaml(&cfg.text()).is_ok_and(|v| v["network"]["config"] == json!("disabled"));
        if !dir.exists() {
            notes.push(format!(
                "{CLOUD_CFG_DIR} does not exist: if cloud-init runs here, it may write \
50-cloud-init.yaml again at boot"
            ));
        } else if !disabled {
            changes.push(
                Change::new(format!(
                    "disable cloud-init's network configuration ({CLOUD_NETWORK_OFF}), or it \
writes 50-cloud-init.yaml again at boot"
                ))
                .with_diff(CLOUD_NETWORK_OFF, cfg.text(), CLOUD_NETWORK_OFF_TEXT),
            );
            extra.push(Action::write(
                CLOUD_NETWORK_OFF,
                CLOUD_NETWORK_OFF_TEXT,
                Attrs {
                    mode: Some(0o644),
                    ..Attrs::default()
                },
                true,
            ));
        }
    }

    // Our file, compared as YAML.
    let want = render(b, &req.renderer);
    let have = config.get(&req.file);
    let same = have.is_some_and(|f| f.yaml.as_ref().ok() == parse_yaml(&want).ok().as_ref());
    if !same {
        let before = have.map(|f| f.text.clone()).unwrap_or_default();
        let verb = if have.is_some() { "update" } else { "create" };
        changes.insert(
            0,
            Change::new(format!("{verb} {}", req.file)).with_diff(&req.file, before, want.clone()),
        );
        writes.insert(0, (req.file.clone(), want));
    }

    // Same content but readable by all: netplan warns (the file may hold secrets); fixing the
    // mode changes nothing in the network.
    if let Some(f) = have.filter(|f| same && f.mode != 0o600) {
        plan.change(
            Change::new(format!("mode {:04o} -> 0600 on {}", f.mode, req.file)),
            [Action::SetAttrs {
                path: req.file.clone(),
                attrs: Attrs {
                    mode: Some(0o600),
                    ..Attrs::default()
                },
            }],
        );
    }

    let (drift, params_drift) = live_drift(b, links, addrs);
    if writes.is_empty() && drift.is_empty() {
        return Ok(plan.with_data("file", req.file.as_str()));
    }
    let (apply, how) = apply_command(host, &req.renderer, &b.nics(), links, &b.name)?;
    if !drift.is_empty() && writes.is_empty() {
        changes.push(Change::new(format!("re-apply: {}", drift.join("; "))));
    } else if !drift.is_empty() && links.get(&b.name).is_some() {
        notes.push(format!("live state: {}", drift.join("; ")));
    }
    if !writes.is_empty() {
        plan.actions
            .push(Action::run(validate_command(&writes, &[])));
    }
    for (path, content) in &writes {
        let backup = *path != req.file;
        plan.actions.push(Action::write(
            path,
            content.clone(),
            Attrs {
                mode: Some(0o600),
                ..Attrs::default()
            },
            backup,
        ));
    }
    plan.actions.extend(extra);
    plan.actions.push(Action::run(apply.clone()));
    if params_drift || (links.get(&b.name).and_then(|l| l.bridge()).is_some() && !same) {
        plan.actions.push(set_params(b));
    }
    plan.changes.extend(changes);
    notes.push(how);
    plan.msg = Some(notes.join("; "));
    plan.guard = Some(NetworkGuard {
        reapply: apply.clone(),
        creates_devices: b.created_devices(),
        also_saves: Vec::new(),
    });
    Ok(plan
        .with_data("file", req.file.as_str())
        .with_data("apply", apply))
}

fn absent(
    req: &Request,
    config: &NetplanConfig,
    host: &NetplanHost,
    links: &IpLinks,
) -> Result<Plan, ModuleError> {
    let b = &req.bridge;
    let mut plan = Plan::ok();
    let ours = config.get(&req.file);
    // What our file created: its VLAN devices and NICs, besides what the request names.
    let mut vlans = b.vlan_devices();
    let mut nics: Vec<String> = b.nics().iter().map(|s| s.to_string()).collect();
    if let Some(f) = ours {
        for id in f
            .section("vlans")
            .map(|m| m.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            if !vlans.contains(&id) {
                vlans.push(id);
            }
        }
        for id in f
            .section("ethernets")
            .map(|m| m.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            if !nics.contains(&id) {
                nics.push(id);
            }
        }
    }
    // A device another file still defines is not ours to delete.
    let defined_elsewhere = |kind: &str, id: &str| {
        config
            .effective()
            .iter()
            .any(|f| f.path != req.file && f.section(kind).is_some_and(|m| m.contains_key(id)))
    };
    let mut deletes = Vec::new();
    if links.get(&b.name).is_some() && !defined_elsewhere("bridges", &b.name) {
        deletes.push(b.name.clone());
    }
    for v in &vlans {
        if links.get(v).is_some() && !defined_elsewhere("vlans", v) {
            deletes.push(v.clone());
        }
    }
    if ours.is_none() && deletes.is_empty() {
        return Ok(plan);
    }
    let nic_refs: Vec<&str> = nics.iter().map(String::as_str).collect();
    let (apply, how) = apply_command(host, &req.renderer, &nic_refs, links, "")?;
    if let Some(f) = ours {
        plan.change(
            Change::new(format!("remove {}", req.file)).with_diff(&req.file, f.text.clone(), ""),
            [
                Action::run(validate_command(&[], std::slice::from_ref(&req.file))),
                Action::Remove {
                    path: req.file.clone(),
                },
            ],
        );
    }
    plan.actions.push(Action::run(apply.clone()));
    for d in &deletes {
        plan.change(
            Change::new(format!("delete device {d}")),
            [Action::run(format!(
                "if ip link show dev {0} >/dev/null 2>&1; then ip link delete dev {0}; fi",
                shell_quote(d)
            ))],
        );
    }
    let mut notes = b.notes.clone();
    notes.push(how);
    plan.msg = Some(notes.join("; "));
    plan.guard = Some(NetworkGuard {
        reapply: apply.clone(),
        creates_devices: Vec::new(),
        also_saves: Vec::new(),
    });
    Ok(plan
        .with_data("file", req.file.as_str())
        .with_data("apply", apply))
}

#[cfg(test)]
mod tests;
