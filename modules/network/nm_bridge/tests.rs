use super::*;
use crate::module::{CommandOutput, Observation};
use crate::modules::facts::fixture;
use crate::modules::testing::{commands as runs_of, req};
use serde_json::{json, Value};

const BR: &str = "/etc/NetworkManager/system-connections/br0.nmconnection";
const PORT: &str = "/etc/NetworkManager/system-connections/br0-port-enp136s0f3.nmconnection";
/// The profile the seed host had on its NIC, and the UUIDs the bridge's profiles got.
const MGMT: &str = "831e019b-e32a-44d7-9140-106895563f17";
const BR_UUID: &str = "1ad0412b-409a-8275-85fb-547b3aef410e";
const PORT_UUID: &str = "8c17de74-b77c-8e93-91e6-f7ee64a99c39";

fn seed() -> Value {
    json!({
        "name": "br0",
        "interfaces": ["enp136s0f3"],
        "addresses": ["192.168.121.105/24"],
        "routes": [{"to": "default", "via": "192.168.121.101", "on_link": true, "metric": 100}],
        "nameservers": {"addresses": ["8.8.8.8"], "search": ["lab"]},
        "mtu": 1500,
        "parameters": {"stp": false, "forward_delay": 0}
    })
}

fn observed(nm: &str, ip: &str) -> Observed {
    Observed::new()
        .with_fact::<NmState>(&(), Observation::Command(CommandOutput::ok(nm)))
        .with_fact::<IpLinks>(
            &(),
            Observation::Command(CommandOutput::ok(&fixture(&format!("ip_links/{ip}.json")))),
        )
        .with_fact::<IpAddrs>(
            &(),
            Observation::Command(CommandOutput::ok(&fixture(&format!("ip_addrs/{ip}.json")))),
        )
}

fn plan(args: Value, nm: &str, ip: &str) -> Result<Plan, ModuleError> {
    NmBridge.plan(&req(&NmBridge, args), &observed(nm, ip))
}

fn written(p: &Plan, path: &str) -> Settings {
    p.actions
        .iter()
        .find_map(|a| match a {
            Action::WriteFile {
                path: w,
                content,
                attrs,
                ..
            } if w == path => {
                assert_eq!(attrs.mode, Some(0o600));
                Some(parse_keyfile(std::str::from_utf8(content).unwrap()).unwrap())
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("{path} not written"))
}

#[test]
fn renders_the_seed_bridge_as_keyfiles() {
    let r = req(&NmBridge, seed());
    let s = parse_keyfile(&render_bridge(&r.bridge, BR_UUID)).unwrap();
    let get = |sec: &str, k: &str| s[sec].get(k).map(String::as_str);
    assert_eq!(get("connection", "type"), Some("bridge"));
    assert_eq!(get("connection", "interface-name"), Some("br0"));
    assert_eq!(get("connection", "autoconnect-slaves"), Some("1"));
    assert_eq!(get("ethernet", "mtu"), Some("1500"));
    assert_eq!(get("bridge", "stp"), Some("false"));
    assert_eq!(get("bridge", "forward-delay"), Some("0"));
    assert_eq!(get("bridge", "ageing-time"), Some("300"));
    assert_eq!(get("ipv4", "method"), Some("manual"));
    assert_eq!(get("ipv4", "address1"), Some("192.168.121.105/24"));
    assert_eq!(get("ipv4", "route1"), Some("0.0.0.0/0,192.168.121.101,100"));
    assert_eq!(get("ipv4", "route1_options"), Some("onlink=true"));
    assert_eq!(get("ipv4", "dns"), Some("8.8.8.8;"));
    assert_eq!(get("ipv4", "dns-search"), Some("lab;"));
    assert_eq!(get("ipv6", "method"), Some("disabled"));
    let p = parse_keyfile(&render_port(&r.bridge, &r.bridge.ports[0], PORT_UUID)).unwrap();
    assert_eq!(p["connection"]["type"], "ethernet");
    assert_eq!(p["connection"]["master"], "br0");
    assert_eq!(p["connection"]["slave-type"], "bridge");
    assert_eq!(p["connection"]["autoconnect-priority"], "100");
    assert!(p.contains_key("bridge-port"));
}

#[test]
fn vlan_ports_and_ip_methods() {
    let r = req(
        &NmBridge,
        json!({"name": "virbr1.223", "interfaces": [{"vlan": 223, "link": "ens802f1"}],
               "parameters": {"ageing_time": 0}}),
    );
    let b = parse_keyfile(&render_bridge(&r.bridge, "u")).unwrap();
    assert_eq!(b["ipv4"]["method"], "disabled");
    assert_eq!(b["ipv6"]["method"], "disabled");
    assert_eq!(b["bridge"]["ageing-time"], "0");
    assert!(!b.contains_key("ethernet"));
    let p = parse_keyfile(&render_port(&r.bridge, &r.bridge.ports[0], "u")).unwrap();
    assert_eq!(p["connection"]["type"], "vlan");
    assert_eq!(p["connection"]["interface-name"], "ens802f1.223");
    assert_eq!(p["connection"]["id"], "virbr1.223-port-ens802f1.223");
    assert_eq!(p["vlan"]["parent"], "ens802f1");
    assert_eq!(p["vlan"]["id"], "223");
    let r = req(
        &NmBridge,
        json!({"name": "br1", "dhcp4": true, "addresses": ["2001:db8::5/64"],
               "routes": [{"to": "2001:db8:1::/48", "via": "2001:db8::1", "table": 7}],
               "nameservers": {"addresses": ["2001:db8::53"]}, "macaddress": "52:54:00:ab:cd:ef"}),
    );
    let b = parse_keyfile(&render_bridge(&r.bridge, "u")).unwrap();
    assert_eq!(b["ipv4"]["method"], "auto");
    assert_eq!(b["ipv6"]["method"], "manual");
    assert_eq!(b["ipv6"]["address1"], "2001:db8::5/64");
    assert_eq!(b["ipv6"]["route1"], "2001:db8:1::/48,2001:db8::1");
    assert_eq!(b["ipv6"]["route1_options"], "table=7");
    assert_eq!(b["ipv6"]["dns"], "2001:db8::53;");
    assert!(!b["ipv4"].contains_key("dns"));
    assert_eq!(b["ethernet"]["cloned-mac-address"], "52:54:00:AB:CD:EF");
}

#[test]
fn first_run_on_the_seed_host_keeps_its_profile_for_the_rollback() {
    let p = plan(
        seed(),
        &fixture("networkmanager/seed-before.txt"),
        "nm-seed-before",
    )
    .unwrap();
    let summaries: Vec<&str> = p.changes.iter().map(|c| c.summary.as_str()).collect();
    assert_eq!(
        summaries,
        [format!("create {BR}"), format!("create {PORT}")]
    );
    assert_eq!(written(&p, BR)["connection"]["uuid"], BR_UUID);
    assert_eq!(written(&p, PORT)["connection"]["uuid"], PORT_UUID);
    assert_eq!(
        runs_of(&p),
        [format!(
            "nmcli connection reload && nmcli connection up uuid {BR_UUID} && nmcli connection up uuid {PORT_UUID}"
        )]
    );
    assert_eq!(
        p.guard,
        Some(NetworkGuard {
            reapply: format!("nmcli connection reload && nmcli connection up uuid {MGMT}"),
            creates_devices: vec!["br0".into()],
            also_saves: vec![],
        })
    );
    let msg = p.msg.unwrap();
    assert!(
        msg.contains("\"mgmt\" on enp136s0f3 kept, inactive"),
        "{msg}"
    );
    assert!(
        msg.contains("\"Wired connection 6\" on enp136s0f3 kept"),
        "{msg}"
    );
    assert_eq!(p.changes[0].diff.as_ref().unwrap().before, "");
}

#[test]
fn second_run_is_ok() {
    // The files as written, activated by NetworkManager 1.42 (which leaves the kernel's 15 s
    // forward delay on a bridge without STP: unused, and not compared).
    let p = plan(
        seed(),
        &fixture("networkmanager/seed-after.txt"),
        "nm-seed-after",
    )
    .unwrap();
    assert!(!p.changed(), "{:?}", p.changes);
    assert!(p.actions.is_empty() && p.guard.is_none());
    assert_eq!(p.data["uuid"], json!(BR_UUID));
}

#[test]
fn comparison_is_by_sections_and_keys_and_keeps_the_uuid() {
    let after = fixture("networkmanager/seed-after.txt");
    // Keys reordered, comments and blank lines changed, another UUID (made by hand): same
    // profile.
    let reordered = after
        .replace(
            "stp=false\nforward-delay=0\n",
            "forward-delay=0\n# no STP\nstp=false\n",
        )
        .replace(BR_UUID, "00000000-1111-2222-3333-444444444444");
    let p = plan(seed(), &reordered, "nm-seed-after").unwrap();
    // The UUID in nmcli's table changed with it; only the activation differs.
    assert!(
        p.changes.iter().all(|c| c.diff.is_none()),
        "{:?}",
        p.changes
    );
    // A real change is an update with the file's diff, and keeps the host's UUID.
    let p = plan(
        json!({"name": "br0", "interfaces": ["enp136s0f3"], "addresses": ["192.168.121.105/24"],
               "routes": [{"to": "default", "via": "192.168.121.101", "on_link": true, "metric": 100}],
               "nameservers": {"addresses": ["8.8.8.8"], "search": ["lab"]}, "mtu": 9000}),
        &after,
        "nm-seed-after",
    )
    .unwrap();
    assert_eq!(p.changes[0].summary, format!("update {BR}"));
    let d = p.changes[0].diff.as_ref().unwrap();
    assert!(d.before.contains("mtu=1500") && d.after.contains("mtu=9000"));
    assert_eq!(written(&p, BR)["connection"]["uuid"], BR_UUID);
    assert_eq!(
        p.guard.unwrap().reapply,
        format!("nmcli connection reload && nmcli connection up uuid {PORT_UUID} && nmcli connection up uuid {BR_UUID}")
    );
}

#[test]
fn readable_keyfile_and_inactive_profile_are_fixed() {
    let after = fixture("networkmanager/seed-after.txt");
    let p = plan(
        seed(),
        &after.replace("br0.nmconnection mode=600", "br0.nmconnection mode=644"),
        "nm-seed-after",
    )
    .unwrap();
    assert!(p.changes[0]
        .summary
        .starts_with(&format!("set mode 0600 on {BR}")));
    let inactive = after.replace(
        &format!("br0:{BR_UUID}:bridge:br0:yes"),
        &format!("br0:{BR_UUID}:bridge::no"),
    );
    let p = plan(seed(), &inactive, "nm-seed-after").unwrap();
    assert_eq!(p.changes.len(), 1);
    assert_eq!(p.changes[0].summary, "re-activate: not active: br0");
    assert_eq!(runs_of(&p).len(), 1);
    // The live bridge drifted (a port taken out by hand).
    let p = plan(seed(), &after, "nm-seed-before").unwrap();
    assert!(
        p.changes[0].summary.contains("bridge br0 does not exist"),
        "{:?}",
        p.changes
    );
}

#[test]
fn ports_no_longer_asked_for_lose_their_profile() {
    let after = fixture("networkmanager/seed-after.txt");
    let extra = format!(
        "### keyfile: {DIR}/br0-port-uplink3.nmconnection mode=600 ###\n[connection]\nid=br0-port-uplink3\nuuid=aaaaaaaa-1111-2222-3333-444444444444\ntype=ethernet\ninterface-name=uplink3\nmaster=br0\nslave-type=bridge\n\n{after}"
    )
    .replace(
        "### nmcli ###\n",
        "### nmcli ###\nbr0-port-uplink3:aaaaaaaa-1111-2222-3333-444444444444:802-3-ethernet:uplink3:yes\n",
    );
    let p = plan(seed(), &extra, "nm-seed-after").unwrap();
    assert_eq!(
        p.changes[0].summary,
        format!("remove {DIR}/br0-port-uplink3.nmconnection (no longer a port)")
    );
    assert_eq!(
        p.actions[..2],
        [
            Action::run("nmcli connection down uuid aaaaaaaa-1111-2222-3333-444444444444"),
            Action::Remove {
                path: format!("{DIR}/br0-port-uplink3.nmconnection")
            }
        ]
    );
}

#[test]
fn competing_profiles_are_refused_naming_the_file() {
    let before = fixture("networkmanager/seed-before.txt");
    let other = format!(
        "### keyfile: {DIR}/bridge-br0.nmconnection mode=600 ###\n[connection]\nid=bridge-br0\ntype=bridge\ninterface-name=br0\n\n{before}"
    );
    let e = plan(seed(), &other, "nm-seed-before").unwrap_err();
    assert!(
        e.to_string().contains(&format!(
            "{DIR}/bridge-br0.nmconnection: connection.interface-name=br0"
        )),
        "{e}"
    );
    let other = format!(
        "### keyfile: {DIR}/bond-port.nmconnection mode=600 ###\n[connection]\nid=bond-port\ntype=ethernet\ninterface-name=enp136s0f3\ncontroller=bond0\nport-type=bond\n\n{before}"
    );
    let e = plan(seed(), &other, "nm-seed-before").unwrap_err();
    assert!(
        e.to_string().contains("makes enp136s0f3 a port of bond0"),
        "{e}"
    );
    // A profile bound by MAC address to the NIC is an owner, not a competitor.
    let other = format!(
        "### keyfile: {DIR}/by-mac.nmconnection mode=600 ###\n[connection]\nid=by-mac\ntype=ethernet\nautoconnect-priority=500\n\n[ethernet]\nmac-address=3C:FD:FE:9E:5A:13\n\n{before}"
    );
    let p = plan(seed(), &other, "nm-seed-before").unwrap();
    assert!(p
        .msg
        .unwrap()
        .contains("autoconnect-priority 500 may win its NIC back at boot"));
}

#[test]
fn vlan_bridge_on_a_fresh_host() {
    let args = json!({"name": "virbr1.223", "interfaces": [{"vlan": 223, "link": "ens802f1"}],
                      "parameters": {"ageing_time": 0}});
    let p = plan(
        args,
        &fixture("networkmanager/auto-wired-connections.txt"),
        "bridge-seed-before",
    )
    .unwrap();
    let port = format!("{DIR}/virbr1.223-port-ens802f1.223.nmconnection");
    assert_eq!(written(&p, &port)["vlan"]["id"], "223");
    let g = p.guard.unwrap();
    assert_eq!(g.creates_devices, ["virbr1.223", "ens802f1.223"]);
    assert_eq!(g.reapply, "nmcli connection reload");
}

#[test]
fn networkmanager_not_running_is_a_host_error() {
    let e = plan(
        seed(),
        &fixture("networkmanager/not-running.txt"),
        "nm-seed-before",
    )
    .unwrap_err();
    assert!(
        matches!(&e, ModuleError::Host(m) if m.contains("NetworkManager does not answer")),
        "{e}"
    );
    let e = plan(
        json!({"name": "br0", "interfaces": ["eno1"]}),
        &fixture("networkmanager/seed-before.txt"),
        "nm-seed-before",
    )
    .unwrap_err();
    assert_eq!(
        e,
        ModuleError::Host("interfaces: eno1 does not exist on this host".into())
    );
}

#[test]
fn absent_takes_the_bridge_down_and_gives_the_nic_back() {
    let args = json!({"name": "br0", "state": "absent"});
    let p = plan(
        args.clone(),
        &fixture("networkmanager/seed-after.txt"),
        "nm-seed-after",
    )
    .unwrap();
    assert_eq!(
        p.actions,
        [
            Action::run(format!("nmcli connection down uuid {BR_UUID}")),
            Action::Remove { path: BR.into() },
            Action::Remove { path: PORT.into() },
            Action::run("nmcli connection reload"),
            Action::run("if ip link show dev br0 >/dev/null 2>&1; then ip link delete dev br0; fi"),
            Action::run("nmcli device connect enp136s0f3 || true"),
        ]
    );
    let g = p.guard.unwrap();
    assert_eq!(
        g.reapply,
        format!("nmcli connection reload && nmcli connection up uuid {BR_UUID}")
    );
    assert!(g.creates_devices.is_empty());
    let p = plan(
        args,
        &fixture("networkmanager/seed-before.txt"),
        "nm-seed-before",
    )
    .unwrap();
    assert!(!p.changed() && p.actions.is_empty());
}

#[test]
fn uuids_are_stable_and_well_formed() {
    let u = uuid_for("br0");
    assert_eq!(u, BR_UUID);
    assert_eq!(u.len(), 36);
    assert_eq!(&u[14..15], "8");
    assert!("89ab".contains(&u[19..20]));
    assert_ne!(uuid_for("br1"), u);
}
