use super::*;
use crate::module::{ArgErrorKind, CommandOutput, FileState, Observation};
use crate::modules::facts::fixture;
use crate::modules::facts::netplan::MARK;
use crate::modules::testing::{arg_error, commands as runs_of, req};
use serde_json::json;

const UDEV: &str = "netplan=/usr/sbin/netplan\nnetworkctl=/usr/bin/networkctl\nudev=yes\n";

fn seed() -> Value {
    json!({
        "name": "br0",
        "interfaces": ["enp136s0f3"],
        "addresses": ["192.168.121.105/24"],
        "routes": [{"to": "default", "via": "192.168.121.101", "on_link": true, "metric": 100}],
        "nameservers": {"addresses": ["8.8.8.8"]},
        "mtu": 1500,
        "parameters": {"stp": false, "forward_delay": 0}
    })
}

fn with(mut base: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

/// The netplan probe's output for these files.
fn listing(files: &[(&str, &str)]) -> String {
    files
        .iter()
        .map(|(p, t)| format!("{MARK}{p} mode=600 ###\n{t}\n"))
        .collect()
}

/// The files a listing holds.
fn files_of(listing_text: &str) -> Vec<(String, String)> {
    let c =
        NetplanConfig::parse(&(), &Observation::Command(CommandOutput::ok(listing_text))).unwrap();
    c.files.into_iter().map(|f| (f.path, f.text)).collect()
}

fn observed(netplan: &str, ip: &str, host: &str) -> Observed {
    Observed::new()
        .with_file(CLOUD_CFG_DIR, FileState::dir())
        .with_file(CLOUD_NETWORK_OFF, FileState::absent())
        .with_fact::<NetplanConfig>(&(), Observation::Command(CommandOutput::ok(netplan)))
        .with_fact::<NetplanHost>(&(), Observation::Command(CommandOutput::ok(host)))
        .with_fact::<IpLinks>(
            &(),
            Observation::Command(CommandOutput::ok(&fixture(&format!("ip_links/{ip}.json")))),
        )
        .with_fact::<IpAddrs>(
            &(),
            Observation::Command(CommandOutput::ok(&fixture(&format!("ip_addrs/{ip}.json")))),
        )
}

/// The netplan listing after a plan's file actions (the commands are the engine's business).
fn after(netplan: &str, plan: &Plan) -> String {
    let mut files = files_of(netplan);
    for a in &plan.actions {
        match a {
            Action::WriteFile {
                path,
                content,
                attrs,
                ..
            } => {
                assert_eq!(attrs.mode, Some(0o600), "{path}");
                let text = String::from_utf8(content.clone()).unwrap();
                match files.iter_mut().find(|(p, _)| p == path) {
                    Some(f) => f.1 = text,
                    None => files.push((path.clone(), text)),
                }
            }
            Action::Remove { path } => files.retain(|(p, _)| p != path),
            _ => {}
        }
    }
    files.sort();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    listing(&refs)
}

fn writes_of(p: &Plan) -> Vec<(String, bool)> {
    p.actions
        .iter()
        .filter_map(|a| match a {
            Action::WriteFile { path, backup, .. } => Some((path.clone(), *backup)),
            _ => None,
        })
        .collect()
}

fn written(p: &Plan, path: &str) -> String {
    p.actions
        .iter()
        .find_map(|a| match a {
            Action::WriteFile {
                path: w, content, ..
            } if w == path => Some(String::from_utf8(content.clone()).unwrap()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{path} not written"))
}

const OURS: &str = "/etc/netplan/60-kvmforge-br0.yaml";

#[test]
fn renders_the_seed_bridge() {
    let r = req(&NetplanBridge, seed());
    let text = render(&r.bridge, "networkd");
    let yaml = parse_yaml(&text).unwrap();
    let net = &yaml["network"];
    assert_eq!(net["version"], json!(2));
    assert!(
        net.get("renderer").is_none(),
        "never a global renderer: {text}"
    );
    assert_eq!(
        net["ethernets"]["enp136s0f3"],
        json!({"renderer": "networkd", "dhcp4": false, "dhcp6": false})
    );
    let br = &net["bridges"]["br0"];
    assert_eq!(br["interfaces"], json!(["enp136s0f3"]));
    assert_eq!(br["addresses"], json!(["192.168.121.105/24"]));
    assert_eq!(
        br["routes"],
        json!([{"to": "0.0.0.0/0", "via": "192.168.121.101", "metric": 100, "on-link": true}])
    );
    assert_eq!(br["nameservers"], json!({"addresses": ["8.8.8.8"]}));
    assert_eq!(br["mtu"], json!(1500));
    assert_eq!(
        br["parameters"],
        json!({"stp": false, "forward-delay": 0, "hello-time": 2, "max-age": 20,
               "priority": 32768, "ageing-time": 300})
    );
    assert!(
        text.contains("      parameters:\n        stp: false\n        forward-delay: 0\n"),
        "{text}"
    );
    assert!(
        text.contains("      routes:\n        - to: 0.0.0.0/0\n          via: 192.168.121.101\n"),
        "{text}"
    );
}

#[test]
fn renders_vlan_ports_and_quotes_what_yaml_11_would_misread() {
    let r = req(
        &NetplanBridge,
        json!({"name": "virbr1.223", "interfaces": [{"vlan": 223, "link": "ens802f1"}],
               "parameters": {"ageing_time": 0}, "macaddress": "52:54:00:12:34:56",
               "addresses": ["2001:db8::5/64"]}),
    );
    let text = render(&r.bridge, "networkd");
    let net = parse_yaml(&text).unwrap()["network"].clone();
    assert_eq!(
        net["ethernets"]["ens802f1"],
        json!({"renderer": "networkd"})
    );
    assert_eq!(
        net["vlans"]["ens802f1.223"],
        json!({"renderer": "networkd", "id": 223, "link": "ens802f1", "dhcp4": false, "dhcp6": false})
    );
    let br = &net["bridges"]["virbr1.223"];
    assert_eq!(br["interfaces"], json!(["ens802f1.223"]));
    assert_eq!(br["parameters"]["ageing-time"], json!(0));
    // All digits: a base-60 number to YAML 1.1 unless quoted.
    assert!(text.contains("macaddress: \"52:54:00:12:34:56\""), "{text}");
    assert_eq!(br["macaddress"], json!("52:54:00:12:34:56"));
    assert_eq!(br["addresses"], json!(["2001:db8::5/64"]));
    for s in ["no", "yes", "1:30", "0755", "", "- x", "a: b", "#x", "~"] {
        let v = json!({ "k": s });
        assert_eq!(parse_yaml(&emit(&v)).unwrap(), v, "{s:?}");
    }
}

#[test]
fn installer_address_on_the_nic_is_refused_naming_file_and_key() {
    let o = observed(
        &fixture("netplan/ubuntu-22.04-installer.txt"),
        "bridge-seed-before",
        UDEV,
    );
    let e = NetplanBridge
        .plan(&req(&NetplanBridge, seed()), &o)
        .unwrap_err();
    let m = e.to_string();
    assert!(
        m.contains("/etc/netplan/00-installer-config.yaml: network.ethernets.enp136s0f3 gives enp136s0f3, a port of br0, addresses, routes, nameservers"),
        "{m}"
    );
    // The hand-made bridge file of the same host defines br0 too.
    assert!(
        m.contains("/etc/netplan/bridge.yaml: network.bridges.br0 also defines br0"),
        "{m}"
    );
    assert!(m.contains("take_over: true"), "{m}");
}

#[test]
fn take_over_rewrites_the_other_files_and_converges() {
    let np = fixture("netplan/ubuntu-22.04-installer.txt");
    let r = req(&NetplanBridge, with(seed(), json!({"take_over": true})));
    let o = observed(&np, "bridge-seed-before", UDEV);
    let p = NetplanBridge.plan(&r, &o).unwrap();
    assert_eq!(
        writes_of(&p),
        [
            (OURS.to_string(), false),
            ("/etc/netplan/00-installer-config.yaml".to_string(), true),
            ("/etc/netplan/bridge.yaml".to_string(), true),
        ]
    );
    let runs = runs_of(&p);
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(
        runs[0].contains("netplan generate --root-dir"),
        "validation first: {runs:?}"
    );
    assert!(matches!(p.actions[0], Action::Run { .. }));
    assert_eq!(runs[1], "netplan apply");
    // The installer file keeps its other NIC, loses enp136s0f3's stanza.
    let installer = parse_yaml(&written(&p, "/etc/netplan/00-installer-config.yaml")).unwrap();
    assert_eq!(
        installer["network"],
        json!({"ethernets": {"enp136s0f2": {"dhcp4": true}}, "version": 2})
    );
    let hand = parse_yaml(&written(&p, "/etc/netplan/bridge.yaml")).unwrap();
    assert!(hand["network"].get("bridges").is_none(), "{hand}");
    assert_eq!(
        p.guard,
        Some(NetworkGuard {
            reapply: "netplan apply".into(),
            creates_devices: vec!["br0".into()],
            also_saves: vec![],
        })
    );
    let msg = p.msg.clone().unwrap();
    assert!(
        msg.contains(
            "took over network.ethernets.enp136s0f3 from /etc/netplan/00-installer-config.yaml"
        ),
        "{msg}"
    );
    assert!(msg.contains("`netplan apply`"), "{msg}");
    let d = p.changes[0].diff.as_ref().unwrap();
    assert_eq!((d.label.as_str(), d.before.as_str()), (OURS, ""));
    // Second run: the files as written and the bridge as the kernel then has it.
    let o = observed(&after(&np, &p), "bridge-seed-after", UDEV);
    let p2 = NetplanBridge.plan(&r, &o).unwrap();
    assert!(!p2.changed(), "{:?}", p2.changes);
    assert!(p2.actions.is_empty() && p2.guard.is_none());
}

#[test]
fn cloud_init_stanza_found_by_mac_keeps_its_rename() {
    // 50-cloud-init.yaml as cloud-init writes it, for the seed's NIC.
    let np = fixture("netplan/ubuntu-22.04-cloud-init.txt")
        .replace("enp1s0", "enp136s0f3")
        .replace("52:54:00:4e:9a:07", "3C:FD:FE:9E:5A:13");
    let o = observed(&np, "bridge-seed-before", UDEV);
    let e = NetplanBridge
        .plan(&req(&NetplanBridge, seed()), &o)
        .unwrap_err();
    assert!(e.to_string().contains("/etc/netplan/50-cloud-init.yaml: network.ethernets.enp136s0f3 gives enp136s0f3, a port of br0, dhcp4"), "{e}");
    let r = req(&NetplanBridge, with(seed(), json!({"take_over": true})));
    let p = NetplanBridge.plan(&r, &o).unwrap();
    // cloud-init would write the file again at boot: its network configuration goes off too.
    assert_eq!(
        writes_of(&p),
        [
            (OURS.to_string(), false),
            ("/etc/netplan/50-cloud-init.yaml".to_string(), true),
            (CLOUD_NETWORK_OFF.to_string(), true),
        ]
    );
    assert!(written(&p, CLOUD_NETWORK_OFF).ends_with("network: {config: disabled}\n"));
    assert!(
        !runs_of(&p)[0].contains("cloud.cfg.d"),
        "not part of netplan's check"
    );
    let ci = parse_yaml(&written(&p, "/etc/netplan/50-cloud-init.yaml")).unwrap();
    assert_eq!(
        ci["network"]["ethernets"]["enp136s0f3"],
        json!({"match": {"macaddress": "3C:FD:FE:9E:5A:13"}, "set-name": "enp136s0f3"})
    );
    // Already disabled (as many images ship it): not written again. No cloud-init: a note.
    let o2 = observed(&np, "bridge-seed-before", UDEV).with_file(
        CLOUD_NETWORK_OFF,
        FileState::file("network: {config: disabled}\n"),
    );
    let p = NetplanBridge.plan(&r, &o2).unwrap();
    assert_eq!(writes_of(&p).len(), 2);
    let o3 =
        observed(&np, "bridge-seed-before", UDEV).with_file(CLOUD_CFG_DIR, FileState::absent());
    let p = NetplanBridge.plan(&r, &o3).unwrap();
    assert_eq!(writes_of(&p).len(), 2);
    assert!(p
        .msg
        .unwrap()
        .contains("may write 50-cloud-init.yaml again at boot"));
    // A stanza under another ID that matches the NIC by MAC address counts too.
    let np = listing(&[(
        "/etc/netplan/50-cloud-init.yaml",
        "network:\n  version: 2\n  ethernets:\n    nic0:\n      match:\n        macaddress: 3c:fd:fe:9e:5a:13\n      dhcp4: true\n",
    )]);
    let e = NetplanBridge
        .plan(
            &req(&NetplanBridge, seed()),
            &observed(&np, "bridge-seed-before", UDEV),
        )
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("network.ethernets.nic0 gives enp136s0f3"),
        "{e}"
    );
}

#[test]
fn ubuntu_2404_run_file_shadows_etc_and_other_nics_are_no_conflict() {
    // The 24.04 files configure enp1s0 and enp2s0: a bridge on enp136s0f3 does not compete.
    let np = fixture("netplan/ubuntu-24.04-desktop.txt");
    let o = observed(&np, "bridge-seed-before", UDEV);
    let p = NetplanBridge
        .plan(&req(&NetplanBridge, seed()), &o)
        .unwrap();
    assert_eq!(writes_of(&p), [(OURS.to_string(), false)]);
    // A NetworkManager stanza matching the NIC by name is taken over whole.
    let np = np.replace("name: \"enp2s0\"", "name: \"enp136s0f3\"");
    let o = observed(&np, "bridge-seed-before", UDEV);
    let r = req(&NetplanBridge, with(seed(), json!({"take_over": true})));
    let p = NetplanBridge.plan(&r, &o).unwrap();
    let path = "/etc/netplan/90-NM-3a1d6c2e-5f3b-4c1e-9a57-1f0d1c2b3a4d.yaml";
    let nm = parse_yaml(&written(&p, path)).unwrap();
    assert_eq!(nm["network"], json!({"version": 2}));
}

#[test]
fn file_in_lib_is_shadowed_from_etc() {
    let np = listing(&[(
        "/lib/netplan/00-vendor.yaml",
        "network:\n  version: 2\n  ethernets:\n    enp136s0f3:\n      dhcp4: true\n",
    )]);
    let r = req(&NetplanBridge, with(seed(), json!({"take_over": true})));
    let p = NetplanBridge
        .plan(&r, &observed(&np, "bridge-seed-before", UDEV))
        .unwrap();
    assert_eq!(
        writes_of(&p)[1],
        ("/etc/netplan/00-vendor.yaml".to_string(), true)
    );
}

#[test]
fn comparison_is_semantic() {
    let r = req(&NetplanBridge, seed());
    // The same settings in another order, flow style, with comments: nothing to do.
    let text = "# mine\nnetwork:\n  bridges:\n    br0:\n      parameters: {ageing-time: 300, priority: 32768, max-age: 20, hello-time: 2, forward-delay: 0, stp: no}\n      mtu: 1500\n      nameservers: {addresses: [8.8.8.8]}\n      routes: [{to: 0.0.0.0/0, via: 192.168.121.101, metric: 100, on-link: yes}]\n      dhcp6: false\n      dhcp4: false\n      addresses: [192.168.121.105/24]\n      interfaces: [enp136s0f3]\n      renderer: networkd\n  ethernets:\n    enp136s0f3: {renderer: networkd, dhcp4: off, dhcp6: off}\n  version: 2\n";
    let np = listing(&[(OURS, text)]);
    let p = NetplanBridge
        .plan(&r, &observed(&np, "bridge-seed-after", UDEV))
        .unwrap();
    assert!(!p.changed(), "{:?}", p.changes);
    // A real difference is an update with the file's diff.
    let np = listing(&[(OURS, &text.replace("mtu: 1500", "mtu: 9000"))]);
    let p = NetplanBridge
        .plan(&r, &observed(&np, "bridge-seed-after", UDEV))
        .unwrap();
    assert_eq!(p.changes[0].summary, format!("update {OURS}"));
    let d = p.changes[0].diff.as_ref().unwrap();
    assert!(d.before.contains("mtu: 9000") && d.after.contains("mtu: 1500"));
    // The bridge exists: its settings are set live too (networkd only sets them on creation).
    assert!(runs_of(&p)
        .last()
        .unwrap()
        .starts_with("ip link set dev br0 type bridge stp_state 0 forward_delay 0"));
}

#[test]
fn readable_file_gets_its_mode_and_nothing_else() {
    let r = req(&NetplanBridge, seed());
    let np = listing(&[(OURS, &render(&r.bridge, "networkd"))]).replace("mode=600", "mode=644");
    let p = NetplanBridge
        .plan(&r, &observed(&np, "bridge-seed-after", UDEV))
        .unwrap();
    assert_eq!(p.changes.len(), 1);
    assert_eq!(p.changes[0].summary, format!("mode 0644 -> 0600 on {OURS}"));
    assert!(
        matches!(&p.actions[..], [Action::SetAttrs { path, attrs }] if path == OURS && attrs.mode == Some(0o600))
    );
    assert!(p.guard.is_none(), "no network change");
}

#[test]
fn drift_is_reapplied_without_rewriting() {
    let r = req(&NetplanBridge, seed());
    let np = listing(&[(OURS, &render(&r.bridge, "networkd"))]);
    let p = NetplanBridge
        .plan(&r, &observed(&np, "bridge-seed-drift", UDEV))
        .unwrap();
    assert_eq!(p.changes.len(), 1);
    let s = &p.changes[0].summary;
    assert!(s.starts_with("re-apply: "), "{s}");
    assert!(s.contains("enp136s0f3 is not a port of br0"), "{s}");
    assert!(s.contains("br0 lacks address 192.168.121.105/24"), "{s}");
    assert!(s.contains("br0 runs with stp on"), "{s}");
    assert!(
        !s.contains("forward delay"),
        "STP off: its timers are not compared: {s}"
    );
    assert_eq!(
        runs_of(&p),
        [
            "netplan apply".to_string(),
            "ip link set dev br0 type bridge stp_state 0 forward_delay 0 hello_time 200 max_age 2000 priority 32768 ageing_time 30000".to_string()
        ]
    );
    assert!(writes_of(&p).is_empty());
    assert!(p.guard.is_some());
}

/// `ip_links/bridge-seed-*.json` were recorded with iproute2 6.1 in a network namespace set up
/// as the seed hosts are (before the bridge, after it, after drift by hand). The kernel they
/// were recorded on has no 8021q, so the VLAN devices were veth devices of the same names,
/// relabelled `vlan` (kind, id, link) in the recording.
#[test]
fn vlan_bridges_converge() {
    let args = json!({"name": "virbr1.223", "interfaces": [{"vlan": 223, "link": "ens802f1"}],
                      "parameters": {"ageing_time": 0}});
    let r = req(&NetplanBridge, args);
    let file = "/etc/netplan/60-kvmforge-virbr1.223.yaml";
    let p = NetplanBridge
        .plan(&r, &observed("", "bridge-seed-before", UDEV))
        .unwrap();
    assert_eq!(writes_of(&p), [(file.to_string(), false)]);
    assert_eq!(
        p.guard.as_ref().unwrap().creates_devices,
        ["virbr1.223", "ens802f1.223"]
    );
    let np = listing(&[(file, &written(&p, file))]);
    let p = NetplanBridge
        .plan(&r, &observed(&np, "bridge-seed-after", UDEV))
        .unwrap();
    assert!(!p.changed(), "{:?}", p.changes);
    // Another file defining the same VLAN competes.
    let np = listing(&[
        (file, &render(&r.bridge, "networkd")),
        (
            "/etc/netplan/70-vlans.yaml",
            "network:\n  version: 2\n  vlans:\n    vlan223:\n      id: 223\n      link: ens802f1\n",
        ),
    ]);
    let e = NetplanBridge
        .plan(&r, &observed(&np, "bridge-seed-after", UDEV))
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("network.vlans.vlan223 also defines VLAN 223 on ens802f1"),
        "{e}"
    );
    // Taken over, with the dots in the IDs: the hand-made VLAN bridge goes, the rest stays.
    let hand = "network:\n  version: 2\n  ethernets:\n    ens802f1:\n      dhcp4: true\n  vlans:\n    ens802f1.223:\n      id: 223\n      link: ens802f1\n  bridges:\n    virbr1.223:\n      interfaces: [ens802f1.223]\n    virbr1.224:\n      interfaces: [ens802f1.223, ens802f1]\n";
    let np = listing(&[("/etc/netplan/01-vlans.yaml", hand)]);
    let r = req(
        &NetplanBridge,
        json!({"name": "virbr1.223", "interfaces": [{"vlan": 223, "link": "ens802f1"}], "take_over": true}),
    );
    let p = NetplanBridge
        .plan(&r, &observed(&np, "bridge-seed-after", UDEV))
        .unwrap();
    let rest = parse_yaml(&written(&p, "/etc/netplan/01-vlans.yaml")).unwrap();
    assert_eq!(
        rest["network"],
        json!({"version": 2, "ethernets": {"ens802f1": {"dhcp4": true}},
               "bridges": {"virbr1.224": {"interfaces": ["ens802f1"]}}})
    );
    assert!(p.msg.unwrap().contains(
        "took over network.bridges.virbr1.223, network.bridges.virbr1.224.interfaces, network.vlans.ens802f1.223 from /etc/netplan/01-vlans.yaml"
    ));
}

#[test]
fn without_udev_networkd_applies_directly() {
    let host = fixture("netplan/host-container.txt");
    let r = req(&NetplanBridge, seed());
    let p = NetplanBridge
        .plan(&r, &observed("", "bridge-seed-before", &host))
        .unwrap();
    let apply = "netplan generate && networkctl reload && networkctl reconfigure enp136s0f3";
    assert_eq!(runs_of(&p)[1], apply);
    assert_eq!(p.guard.as_ref().unwrap().reapply, apply);
    assert!(p.msg.unwrap().contains("no udev on this host"));
    // An existing bridge is reconfigured too.
    let np = listing(&[(OURS, "network: {version: 2}\n")]);
    let p = NetplanBridge
        .plan(&r, &observed(&np, "bridge-seed-after", &host))
        .unwrap();
    assert!(runs_of(&p)[1].ends_with("networkctl reconfigure enp136s0f3 br0"));
    let e = NetplanBridge
        .plan(
            &r,
            &observed(
                "",
                "bridge-seed-before",
                "netplan=/usr/sbin/netplan\nnetworkctl=\nudev=no\n",
            ),
        )
        .unwrap_err();
    assert!(e.to_string().contains("no networkctl"), "{e}");
    let e = NetplanBridge
        .plan(
            &r,
            &observed(
                "",
                "bridge-seed-before",
                "netplan=\nnetworkctl=\nudev=yes\n",
            ),
        )
        .unwrap_err();
    assert!(e.to_string().contains("netplan is not installed"), "{e}");
}

#[test]
fn missing_nic_is_a_host_error() {
    let r = req(
        &NetplanBridge,
        with(seed(), json!({"interfaces": ["eno1"]})),
    );
    let e = NetplanBridge
        .plan(&r, &observed("", "bridge-seed-before", UDEV))
        .unwrap_err();
    assert_eq!(
        e,
        ModuleError::Host("interfaces: eno1 does not exist on this host".into())
    );
}

#[test]
fn gateway4_note_is_in_the_message() {
    let r = req(
        &NetplanBridge,
        json!({"name": "br0", "interfaces": ["enp136s0f3"], "addresses": ["192.168.121.105/24"],
               "gateway4": "192.168.121.101"}),
    );
    let p = NetplanBridge
        .plan(&r, &observed("", "bridge-seed-before", UDEV))
        .unwrap();
    assert!(p.msg.clone().unwrap().contains("gateway4 is deprecated"));
    let text = written(&p, OURS);
    assert!(
        text.contains("- to: 0.0.0.0/0\n          via: 192.168.121.101\n"),
        "{text}"
    );
}

#[test]
fn absent_removes_the_file_and_deletes_the_device() {
    let r = req(&NetplanBridge, json!({"name": "br0", "state": "absent"}));
    let full = req(&NetplanBridge, seed());
    let np = listing(&[(OURS, &render(&full.bridge, "networkd"))]);
    let p = NetplanBridge
        .plan(&r, &observed(&np, "bridge-seed-after", UDEV))
        .unwrap();
    assert!(
        matches!(&p.actions[0], Action::Run { cmd, .. } if cmd.contains("rm -f \"$d\"/etc/netplan/60-kvmforge-br0.yaml"))
    );
    assert_eq!(p.actions[1], Action::Remove { path: OURS.into() });
    assert_eq!(
        runs_of(&p)[1..],
        [
            "netplan apply".to_string(),
            "if ip link show dev br0 >/dev/null 2>&1; then ip link delete dev br0; fi".to_string()
        ]
    );
    let g = p.guard.as_ref().unwrap();
    assert_eq!(g.reapply, "netplan apply");
    assert!(g.creates_devices.is_empty());
    assert_eq!(p.changes[0].diff.as_ref().unwrap().after, "");
    // Once gone, nothing to do.
    let p = NetplanBridge
        .plan(&r, &observed(&after(&np, &p), "bridge-seed-before", UDEV))
        .unwrap();
    assert!(!p.changed() && p.actions.is_empty());
    // A bridge another file defines is not deleted.
    let np = listing(&[(
        "/etc/netplan/bridge.yaml",
        "network:\n  version: 2\n  bridges:\n    br0: {}\n",
    )]);
    let p = NetplanBridge
        .plan(&r, &observed(&np, "bridge-seed-after", UDEV))
        .unwrap();
    assert!(!p.changed());
    // Without udev, the NICs the file enslaved are reconfigured.
    let np = listing(&[(OURS, &render(&full.bridge, "networkd"))]);
    let p = NetplanBridge
        .plan(
            &r,
            &observed(
                &np,
                "bridge-seed-after",
                &fixture("netplan/host-container.txt"),
            ),
        )
        .unwrap();
    assert_eq!(
        p.guard.unwrap().reapply,
        "netplan generate && networkctl reload && networkctl reconfigure enp136s0f3"
    );
}

#[test]
fn file_must_be_read_by_netplan() {
    for f in [
        "/etc/netplan/sub/x.yaml",
        "/etc/netplan/x.yml",
        "/tmp/x.yaml",
        "etc/netplan/x.yaml",
    ] {
        let e = arg_error(&NetplanBridge, with(seed(), json!({"file": f})));
        assert_eq!((e.kind, e.param), (ArgErrorKind::Invalid, "file"), "{f}");
    }
    let r = req(
        &NetplanBridge,
        with(seed(), json!({"file": "/run/netplan/br0.yaml"})),
    );
    assert_eq!(r.file, "/run/netplan/br0.yaml");
}

#[test]
fn bridge_validation_reaches_the_module() {
    let e = arg_error(
        &NetplanBridge,
        with(seed(), json!({"addresses": ["192.168.121.105"]})),
    );
    assert_eq!((e.kind, e.param), (ArgErrorKind::Invalid, "addresses"));
    let e = arg_error(
        &NetplanBridge,
        with(
            seed(),
            json!({"routes": [{"to": "default", "via": "10.1.1.1"}]}),
        ),
    );
    assert_eq!(e.param, "routes");
}

/// The staged check with this machine's netplan, when it has one: a valid bridge passes, an
/// invalid one fails with netplan's own message.
#[test]
fn staged_configuration_is_checked_by_real_netplan() {
    if std::process::Command::new("netplan")
        .arg("--help")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: netplan is not installed here");
        return;
    }
    let run = |cmd: &str| {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .output()
            .unwrap()
    };
    let r = req(&NetplanBridge, seed());
    let installer = files_of(&fixture("netplan/ubuntu-22.04-installer.txt"));
    let mut writes = vec![(OURS.to_string(), render(&r.bridge, "networkd"))];
    writes.extend(installer.iter().cloned());
    let out = run(&validate_command(&writes, &[]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vlan = req(
        &NetplanBridge,
        json!({"name": "virbr1.223", "interfaces": [{"vlan": 223, "link": "ens802f1"}], "parameters": {"ageing_time": 0}}),
    );
    let out = run(&validate_command(
        &[(
            "/etc/netplan/60-kvmforge-virbr1.223.yaml".into(),
            render(&vlan.bridge, "networkd"),
        )],
        &[],
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = render(&r.bridge, "networkd").replace("mtu: 1500", "mtu: lots");
    let out = run(&validate_command(&[(OURS.into(), bad)], &[]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mtu") && err.contains("netplan rejects the new configuration"),
        "{err}"
    );
}
