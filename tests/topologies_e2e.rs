//! End to end over real SSH: the shipped topology playbooks (`playbooks/kvm-cluster-vxlan.yaml`,
//! `vlan-bridges.yaml`, `fedora-hypervisor.yaml`), run unchanged against lab hosts with an
//! inventory of the lab's addresses: they converge, a second run changes nothing, and drift made
//! by hand is found in check mode and corrected. Each check has a lab of its own; the VLAN one
//! boots a QEMU VM (containers share a kernel without 802.1Q). The lab runs Debian only, so the
//! Fedora playbook's dnf steps are checked in check mode on a Debian host made to look like
//! Fedora (its os-release, no apt, an rpm that knows no package). Needs root; skipped loudly
//! otherwise.

#[path = "support/lab.rs"]
mod lab;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use lab::{exit_code as code, output_text as text};

fn events(o: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

/// Hosts that reported a change (or would, in check mode), in a run that must not have failed.
fn changed_hosts(o: &Output, hosts: &[&str]) -> Vec<String> {
    let all = events(o);
    let recap = all
        .iter()
        .rev()
        .find(|e| e["event"] == "recap")
        .unwrap_or_else(|| panic!("no recap: {}", text(o)));
    let mut out = Vec::new();
    for h in hosts {
        let s = &recap["hosts"][h];
        assert_eq!(s["failed"], 0, "{h}: {}", text(o));
        assert_eq!(s["unreachable"], 0, "{h}: {}", text(o));
        if s["changed"].as_u64().unwrap_or(0) > 0 {
            out.push(h.to_string());
        }
    }
    out
}

/// The result events of one task (by name prefix) on one host.
fn results<'a>(all: &'a [Value], host: &str, task: &str) -> Vec<&'a Value> {
    all.iter()
        .filter(|e| {
            e["event"] == "result"
                && e["host"] == host
                && e["task"].as_str().is_some_and(|t| t.starts_with(task))
        })
        .collect()
}

fn playbook(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("playbooks")
        .join(format!("{name}.yaml"))
}

/// A run directory with an inventory of lab hosts in the group `kvm_hosts`.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    /// `hosts`: (name, extra YAML lines of that host, already indented by 10); `vars`: the
    /// group's variables as YAML lines indented by 8.
    fn new(lab: &lab::Lab, hosts: &[(&str, String)], vars: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let known = dir.path().join("known_hosts");
        std::fs::copy(&lab.known_hosts, &known).unwrap();
        let mut inv = format!(
            "all:\n  vars:\n    user: root\n    key: {}\n    known_hosts: {}\n  children:\n    kvm_hosts:\n      vars:\n{vars}      hosts:\n",
            lab.key.display(),
            known.display()
        );
        for (h, extra) in hosts {
            inv.push_str(&format!(
                "        {h}:\n          host: {}\n{extra}",
                lab.addr(h)
            ));
        }
        std::fs::write(dir.path().join("inventory.yaml"), inv).unwrap();
        Site { dir }
    }

    fn run(&self, name: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_kvmforge"))
            .arg("run")
            .arg(playbook(name))
            .arg("-i")
            .arg(self.dir.path().join("inventory.yaml"))
            .args(["--connect-timeout", "10", "--output", "json"])
            .args(args)
            .output()
            .unwrap()
    }
}

fn on(lab: &lab::Lab, host: &str, cmd: &str) -> String {
    let out = lab.ssh(host, cmd);
    assert!(out.status.success(), "{host}: `{cmd}`: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------------------------------------
// kvm-cluster-vxlan

const VXLAN_HOSTS: [&str; 3] = ["h1", "h2", "h3"];

fn overlay_pings(lab: &lab::Lab) {
    for (i, from) in VXLAN_HOSTS.iter().enumerate() {
        for j in 0..VXLAN_HOSTS.len() {
            if i == j {
                continue;
            }
            let to = format!("172.22.0.1{}", j + 1);
            let out = lab.ssh(from, &format!("ping -c 2 -w 15 {to}"));
            assert!(
                out.status.success(),
                "{from} cannot reach {to} over the overlay: {}",
                text(&out)
            );
        }
    }
}

fn flood_peers(lab: &lab::Lab, host: &str) -> Vec<String> {
    let mut v: Vec<String> = on(lab, host, "bridge fdb show dev wsfvxlan0")
        .lines()
        .filter(|l| l.starts_with("00:00:00:00:00:00 dst "))
        .map(|l| l.split_whitespace().nth(2).unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn kvm_cluster_vxlan_meshes_three_hosts() {
    let t0 = Instant::now();
    let Some(lab) = lab::Lab::up("e2e-topo-vxlan", 3, None) else {
        return;
    };
    let hosts: Vec<(&str, String)> = VXLAN_HOSTS
        .iter()
        .enumerate()
        .map(|(i, h)| {
            (
                *h,
                format!(
                    "          vxlan_underlay_ip: {}\n          vxlan_address: 172.22.0.1{}/24\n",
                    lab.addr(h),
                    i + 1
                ),
            )
        })
        .collect();
    // The lab has no default route: the underlay device is named.
    let site = Site::new(&lab, &hosts, "        vxlan_dev: eth0\n");

    let first = site.run("kvm-cluster-vxlan", &["--detailed-exitcode"]);
    assert_eq!(code(&first), 8, "{}", text(&first));
    assert_eq!(changed_hosts(&first, &VXLAN_HOSTS), VXLAN_HOSTS);
    eprintln!("vxlan: converged in {:.1?}", t0.elapsed());
    let v = "virsh -q -c qemu:///system";
    for (i, h) in VXLAN_HOSTS.iter().enumerate() {
        let xml = on(&lab, h, &format!("{v} net-dumpxml wsfbr0"));
        for want in [
            "<bridge name='wsfbr0' stp='on'",
            "<mtu size='1450'/>",
            &format!("<ip address='172.22.0.1{}' prefix='24'", i + 1),
        ] {
            assert!(xml.contains(want), "{h}: no `{want}` in {xml}");
        }
        assert!(!xml.contains("<forward"), "{h}: not isolated: {xml}");
        let link = on(&lab, h, "ip -d link show wsfvxlan0");
        for want in [
            "mtu 1450",
            "master wsfbr0",
            "vxlan id 20680",
            "dstport 20680",
            "nolearning",
        ] {
            assert!(link.contains(want), "{h}: no `{want}` in {link}");
        }
        let mut others: Vec<String> = VXLAN_HOSTS
            .iter()
            .filter(|o| *o != h)
            .map(|o| lab.addr(o).to_string())
            .collect();
        others.sort();
        assert_eq!(flood_peers(&lab, h), others, "{h}");
        assert!(on(&lab, h, "ip -d link show wsfbr0").contains("stp_state 1"));
    }
    overlay_pings(&lab);
    eprintln!("vxlan: all pairs ping: {:.1?}", t0.elapsed());

    let again = site.run("kvm-cluster-vxlan", &["--detailed-exitcode"]);
    assert_eq!(code(&again), 0, "{}", text(&again));

    // Drift: a peer's flood entry deleted on h2, wsfbr0's autostart switched off on h3.
    let a3 = lab.addr("h3").to_string();
    on(
        &lab,
        "h2",
        &format!("bridge fdb del 00:00:00:00:00:00 dev wsfvxlan0 dst {a3}"),
    );
    on(&lab, "h3", &format!("{v} net-autostart --disable wsfbr0"));
    let check = site.run("kvm-cluster-vxlan", &["--check", "--detailed-exitcode"]);
    assert_eq!(code(&check), 8, "{}", text(&check));
    assert_eq!(changed_hosts(&check, &VXLAN_HOSTS), ["h2", "h3"]);
    assert_eq!(flood_peers(&lab, "h2"), [lab.addr("h1").to_string()]);
    let fix = site.run("kvm-cluster-vxlan", &["--detailed-exitcode"]);
    assert_eq!(code(&fix), 8, "{}", text(&fix));
    assert_eq!(changed_hosts(&fix, &VXLAN_HOSTS), ["h2", "h3"]);
    assert!(flood_peers(&lab, "h2").contains(&a3));
    assert!(on(&lab, "h3", &format!("{v} net-info wsfbr0"))
        .lines()
        .any(|l| l.starts_with("Autostart:") && l.ends_with("yes")));
    overlay_pings(&lab);
    let settled = site.run("kvm-cluster-vxlan", &["--detailed-exitcode"]);
    assert_eq!(code(&settled), 0, "{}", text(&settled));
    eprintln!("vxlan: done in {:.1?}", t0.elapsed());
}

// ---------------------------------------------------------------------------------------------
// vlan-bridges

/// The VLAN bridges of `bridges` ((vlan, name)) are up on q1's lan1, with ageing time 0 and no
/// address.
fn vlan_bridges_up(lab: &lab::Lab, bridges: &[(u32, &str)]) {
    for (vlan, name) in bridges {
        let links = on(
            lab,
            "q1",
            &format!(
                "ip -d link show lan1.{vlan}; ip -d link show {name}; ip -4 addr show dev {name}"
            ),
        );
        for want in [
            format!("vlan protocol 802.1Q id {vlan}"),
            format!("master {name}"),
            "ageing_time 0".to_string(),
        ] {
            assert!(links.contains(&want), "no `{want}` in {links}");
        }
        assert!(!links.contains("inet "), "the host has an address: {links}");
    }
}

/// Which of the two bridge tasks ran (the other is skipped), by its module's task name.
fn renderer_used(o: &Output) -> &'static str {
    let all = events(o);
    let ran = |task: &str| {
        results(&all, "q1", task)
            .iter()
            .any(|e| e["status"] != "skipped")
    };
    match (
        ran("One bridge per VLAN, as NetworkManager"),
        ran("One bridge per VLAN, with netplan"),
    ) {
        (true, false) => "nm",
        (false, true) => "netplan",
        other => panic!("renderer tasks ran: {other:?}: {}", text(o)),
    }
}

#[test]
fn vlan_bridges_with_netplan_then_networkmanager_on_a_vm() {
    let t0 = Instant::now();
    let Some(lab) = lab::Lab::up_with("e2e-topo-vlan", 0, None, &[lab::Vm::default()]) else {
        return;
    };
    eprintln!("vlan: VM up in {:.1?}", t0.elapsed());
    let netplan_bridges = [(223, "br223"), (2368, "br2368")];
    let vars = |bridges: &[(u32, &str)]| {
        let mut s = "        vlan_nic: lan1\n        vlan_bridges:\n".to_string();
        for (vlan, name) in bridges {
            s.push_str(&format!("          - {{vlan: {vlan}, name: {name}}}\n"));
        }
        s
    };
    // NetworkManager runs on the VM, managing nothing: stopped, the host is a netplan host.
    on(&lab, "q1", "systemctl stop NetworkManager");
    let site = Site::new(&lab, &[("q1", String::new())], &vars(&netplan_bridges));
    let first = site.run("vlan-bridges", &["--detailed-exitcode"]);
    assert_eq!(code(&first), 8, "{}", text(&first));
    assert_eq!(renderer_used(&first), "netplan");
    vlan_bridges_up(&lab, &netplan_bridges);
    assert!(on(&lab, "q1", "ls /etc/netplan").contains("br223"));
    eprintln!("vlan: netplan bridges up in {:.1?}", t0.elapsed());
    let again = site.run("vlan-bridges", &["--detailed-exitcode"]);
    assert_eq!(code(&again), 0, "{}", text(&again));

    // Drift: both bridges learn MACs for 300 s again.
    on(
        &lab,
        "q1",
        "ip link set br223 type bridge ageing_time 30000 && ip link set br2368 type bridge ageing_time 30000",
    );
    let check = site.run("vlan-bridges", &["--check", "--detailed-exitcode"]);
    assert_eq!(code(&check), 8, "{}", text(&check));
    let would: Vec<String> = events(&check)
        .iter()
        .filter(|e| e["event"] == "result" && e["changed"] == true)
        .map(|e| {
            // a loop item is reported as its JSON text
            let item: Value = serde_json::from_str(e["item"].as_str().unwrap_or("null")).unwrap();
            item["name"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    assert_eq!(would, ["br223", "br2368"], "{}", text(&check));
    let fix = site.run("vlan-bridges", &["--detailed-exitcode"]);
    assert_eq!(code(&fix), 8, "{}", text(&fix));
    vlan_bridges_up(&lab, &netplan_bridges);
    eprintln!("vlan: netplan drift corrected in {:.1?}", t0.elapsed());

    // The netplan bridges go, and NetworkManager takes lan1 (netplan's udev rules mark it
    // unmanaged once `netplan apply` ran: overridden, as an administrator handing the NIC over
    // would): now the playbook makes the bridges as NetworkManager profiles.
    let absent = site.dir.path().join("absent.yaml");
    std::fs::write(
        &absent,
        "- hosts: kvm_hosts\n  gather_facts: false\n  tasks:\n    - netplan_bridge: { name: \"{{ item }}\", state: absent }\n      loop: [br223, br2368]\n      rollback_timeout: 90\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kvmforge"))
        .arg("run")
        .arg(&absent)
        .arg("-i")
        .arg(site.dir.path().join("inventory.yaml"))
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let setup = lab.ssh(
        "q1",
        "printf '[Match]\\nName=lan1\\n\\n[Link]\\nUnmanaged=yes\\n' > /etc/systemd/network/05-lan1-unmanaged.network && \
         networkctl reload && ip addr flush dev lan1 && \
         sed -i 's/^unmanaged-devices=.*/unmanaged-devices=interface-name:lan0/' /etc/NetworkManager/conf.d/90-kvmforge-lab.conf && \
         systemctl start NetworkManager && sleep 2 && \
         nmcli device set lan1 managed yes && \
         for i in $(seq 100); do nmcli -t -f DEVICE,STATE device | grep -q '^lan1:disconnected$' && exit 0; sleep 0.3; done; \
         nmcli -t device; exit 1",
    );
    assert!(setup.status.success(), "{}", text(&setup));
    let nm_bridges = [(224, "br224"), (2369, "br2369")];
    let site = Site::new(&lab, &[("q1", String::new())], &vars(&nm_bridges));
    let first = site.run("vlan-bridges", &["--detailed-exitcode"]);
    assert_eq!(code(&first), 8, "{}", text(&first));
    assert_eq!(renderer_used(&first), "nm");
    vlan_bridges_up(&lab, &nm_bridges);
    assert!(on(&lab, "q1", "nmcli -t -f NAME connection show --active").contains("br224"));
    eprintln!("vlan: NetworkManager bridges up in {:.1?}", t0.elapsed());
    let again = site.run("vlan-bridges", &["--detailed-exitcode"]);
    assert_eq!(code(&again), 0, "{}", text(&again));
    on(
        &lab,
        "q1",
        "ip link set br2369 type bridge ageing_time 30000",
    );
    let check = site.run("vlan-bridges", &["--check", "--detailed-exitcode"]);
    assert_eq!(code(&check), 8, "{}", text(&check));
    let fix = site.run("vlan-bridges", &["--detailed-exitcode"]);
    assert_eq!(code(&fix), 8, "{}", text(&fix));
    vlan_bridges_up(&lab, &nm_bridges);
    eprintln!("vlan: done in {:.1?}", t0.elapsed());
}

// ---------------------------------------------------------------------------------------------
// fedora-hypervisor

/// Group variables of the Fedora playbook for a lab host. The lab has no package mirror: the
/// packages are the ones its image has.
const FEDORA_VARS: &str = "        kvm_user: okd
        virt_packages: [libvirt-daemon-system, libvirt-clients, qemu-utils]
        pool_name: okd
        pool_path: /home/okd/okd/images
        volumes:
          - {name: services.0.qcow2, capacity: 2G}
          - {name: bootstrap.0.qcow2, capacity: 1G}
          - {name: master-0.0.qcow2, capacity: 1G}
        network:
          name: okd
          subnet: 192.168.200.0/24
          hosts:
            - {name: services, mac: \"52:54:00:00:c8:fe\", ip: 192.168.200.254}
            - {name: bootstrap, mac: \"52:54:00:00:c8:10\", ip: 192.168.200.10}
            - {name: master-0, mac: \"52:54:00:00:c8:11\", ip: 192.168.200.11}
";

#[test]
fn fedora_hypervisor_on_a_debian_lab_host() {
    let t0 = Instant::now();
    let Some(lab) = lab::Lab::up("e2e-topo-fedora", 1, None) else {
        return;
    };
    let site = Site::new(&lab, &[("h1", String::new())], FEDORA_VARS);
    let pid0 = on(&lab, "h1", "systemctl show -p MainPID --value libvirtd");
    let first = site.run("fedora-hypervisor", &["--detailed-exitcode"]);
    assert_eq!(code(&first), 8, "{}", text(&first));
    eprintln!("fedora: converged in {:.1?}", t0.elapsed());
    // qemu.conf changed: libvirtd restarted by the handler, running with QEMU as okd.
    assert_ne!(
        on(&lab, "h1", "systemctl show -p MainPID --value libvirtd"),
        pid0
    );
    let conf = on(
        &lab,
        "h1",
        "grep -E '^(user|group) ' /etc/libvirt/qemu.conf",
    );
    assert!(
        conf.contains("user = \"okd\"") && conf.contains("group = \"okd\""),
        "{conf}"
    );
    let groups = on(&lab, "h1", "id -nG okd");
    for g in ["libvirt", "kvm", "sudo"] {
        assert!(groups.split_whitespace().any(|x| x == g), "{groups}");
    }
    // okd's login shell talks to the system libvirtd without -c.
    let env = on(
        &lab,
        "h1",
        "su - okd -c 'echo $LIBVIRT_DEFAULT_URI; virsh uri'",
    );
    assert_eq!(env, "qemu:///system\nqemu:///system\n\n", "{env}");
    let v = "virsh -q -c qemu:///system";
    let net = on(&lab, "h1", &format!("{v} net-dumpxml okd"));
    for want in [
        "<forward mode='nat'",
        "<ip address='192.168.200.1' prefix='24'>",
        "<host mac='52:54:00:00:c8:10' name='bootstrap' ip='192.168.200.10'/>",
        "<host mac='52:54:00:00:c8:fe' name='services' ip='192.168.200.254'/>",
    ] {
        assert!(net.contains(want), "no `{want}` in {net}");
    }
    assert!(on(&lab, "h1", &format!("{v} net-list")).contains("okd"));
    let vols = on(&lab, "h1", &format!("{v} vol-list okd"));
    for n in ["services.0.qcow2", "bootstrap.0.qcow2", "master-0.0.qcow2"] {
        assert!(
            vols.contains(&format!("/home/okd/okd/images/{n}")),
            "{vols}"
        );
    }
    let info = on(
        &lab,
        "h1",
        "qemu-img info --output=json /home/okd/okd/images/services.0.qcow2",
    );
    assert!(
        info.contains("\"format\": \"qcow2\"") && info.contains("\"virtual-size\": 2147483648"),
        "{info}"
    );

    let again = site.run("fedora-hypervisor", &["--detailed-exitcode"]);
    assert_eq!(code(&again), 0, "{}", text(&again));

    // Drift: a node's fixed lease deleted, the environment line removed, okd out of libvirt.
    on(
        &lab,
        "h1",
        &format!(
            "{v} net-update okd delete ip-dhcp-host \"<host mac='52:54:00:00:c8:11' name='master-0' ip='192.168.200.11'/>\" --live --config && \
             sed -i '/LIBVIRT_DEFAULT_URI/d' ~okd/.profile && gpasswd -d okd libvirt"
        ),
    );
    let check = site.run("fedora-hypervisor", &["--check", "--detailed-exitcode"]);
    assert_eq!(code(&check), 8, "{}", text(&check));
    let all = events(&check);
    for task in [
        "The VM admin",
        "virsh in the admin's login shells",
        "The cluster's NAT network",
    ] {
        let r = results(&all, "h1", task);
        assert!(
            r.iter().any(|e| e["changed"] == true),
            "{task}: no drift found: {}",
            text(&check)
        );
    }
    assert!(!on(&lab, "h1", &format!("{v} net-dumpxml okd")).contains("master-0"));
    let fix = site.run("fedora-hypervisor", &["--detailed-exitcode"]);
    assert_eq!(code(&fix), 8, "{}", text(&fix));
    assert!(on(&lab, "h1", &format!("{v} net-dumpxml okd"))
        .contains("<host mac='52:54:00:00:c8:11' name='master-0' ip='192.168.200.11'/>"));
    assert_eq!(
        on(&lab, "h1", "su - okd -c 'virsh uri'"),
        "qemu:///system\n\n"
    );
    let settled = site.run("fedora-hypervisor", &["--detailed-exitcode"]);
    assert_eq!(code(&settled), 0, "{}", text(&settled));
    eprintln!("fedora: done in {:.1?}", t0.elapsed());
}

/// The lab has no Fedora or RHEL host: a Debian host is given Fedora's os-release, apt is hidden
/// and rpm/dnf are stand-ins that know no package, so the engine's facts say RedHat/dnf and the
/// playbook's RedHat branch is planned for real, in check mode: the virtualization group and
/// dnf packages, wheel, ~/.bash_profile. Nothing is installed.
#[test]
fn fedora_hypervisor_redhat_branch_planned_on_a_host_dressed_as_fedora() {
    let Some(lab) = lab::Lab::up("e2e-topo-fedora-dnf", 1, None) else {
        return;
    };
    on(
        &lab,
        "h1",
        "rm -f /etc/os-release && printf 'NAME=\"Fedora Linux\"\\nVERSION=\"40 (Server Edition)\"\\nID=fedora\\nVERSION_ID=40\\nPLATFORM_ID=\"platform:f40\"\\n' > /etc/os-release && \
         mv /usr/bin/apt-get /usr/bin/apt-get.hidden && \
         printf '#!/bin/sh\\nexit 1\\n' > /usr/local/bin/rpm && cp /usr/local/bin/rpm /usr/local/bin/dnf && \
         chmod 755 /usr/local/bin/rpm /usr/local/bin/dnf && groupadd wheel",
    );
    let site = Site::new(
        &lab,
        &[("h1", String::new())],
        &FEDORA_VARS.replace(
            "        virt_packages: [libvirt-daemon-system, libvirt-clients, qemu-utils]\n",
            "",
        ),
    );
    let check = site.run(
        "fedora-hypervisor",
        &["--check", "--detailed-exitcode", "-v"],
    );
    assert_eq!(code(&check), 8, "{}", text(&check));
    let all = events(&check);
    let one = |task: &str| -> &Value {
        let r = results(&all, "h1", task);
        assert_eq!(r.len(), 1, "{task}: {}", text(&check));
        r[0]
    };
    let group = one("The virtualization group");
    assert_eq!(group["status"], "skipped", "{group}");
    assert!(
        group.to_string().contains("dnf -y install @virtualization"),
        "{group}"
    );
    let rh = one("Virtualization packages (Fedora, RHEL)");
    assert_eq!(rh["changed"], true, "{rh}");
    // apt is hidden and rpm answers: the package manager can only be dnf.
    assert_eq!(
        rh["changes"][0]["summary"], "install qemu-kvm, libvirt, virt-install",
        "{rh}"
    );
    assert_eq!(
        one("Virtualization packages (Debian, Ubuntu)")["status"],
        "skipped"
    );
    let user = one("The VM admin");
    assert!(
        user.to_string().contains("wheel") && user.to_string().contains("libvirt"),
        "{user}"
    );
    // In check mode okd does not exist yet: where its profile is is known only once it does.
    let profile = one("virsh in the admin's login shells");
    assert_ne!(profile["status"], "failed", "{profile}");
    for task in [
        "QEMU runs as the admin",
        "The storage pool",
        "The cluster's NAT network",
    ] {
        assert_eq!(one(task)["changed"], true, "{task}: {}", text(&check));
    }
    assert!(
        !on(&lab, "h1", "getent passwd okd || true").contains("okd"),
        "check mode created the user"
    );
}
